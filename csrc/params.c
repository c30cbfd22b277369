/* SPDX-License-Identifier: MIT */
/*
 * Strategy parameters: "name=value,name=value" parsed against a strategy's
 * spec table into its own parameter struct. Knows specs, not strategies: the
 * table (strategy_table.c) hands it both.
 */
#include <ctype.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static int parse_size(const char *text, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);

	if (end == text || errno || text[0] == '-')
		return -EINVAL;
	uint64_t mult = 1;
	switch (toupper((unsigned char)*end)) {
	case 'K': mult = 1ull << 10; end++; break;
	case 'M': mult = 1ull << 20; end++; break;
	case 'G': mult = 1ull << 30; end++; break;
	case '\0': break;
	default: return -EINVAL;
	}
	/* "KiB" and "KB" as the Python driver's parse_size takes them; a lone "i" is not a unit. */
	if (toupper((unsigned char)*end) == 'I' && toupper((unsigned char)end[1]) == 'B')
		end += 2;
	else if (toupper((unsigned char)*end) == 'B')
		end++;
	if (*end || (v && mult > UINT64_MAX / v))
		return -EINVAL;
	*out = (uint64_t)v * mult;
	return 0;
}

/* Index of `value` in "a|b|c", or -1. */
static int choice_index(const char *choices, const char *value, size_t vlen)
{
	int idx = 0;

	for (const char *p = choices; *p; idx++) {
		const char *bar = strchr(p, '|');
		size_t n = bar ? (size_t)(bar - p) : strlen(p);

		if (n == vlen && !strncmp(p, value, n))
			return idx;
		if (!bar)
			break;
		p = bar + 1;
	}
	return -1;
}

static bool size_allowed(const char *choices, uint64_t v)
{
	char item[32];

	for (const char *p = choices; *p;) {
		const char *bar = strchr(p, '|');
		size_t n = bar ? (size_t)(bar - p) : strlen(p);
		uint64_t allowed;

		if (n < sizeof(item)) {
			memcpy(item, p, n);
			item[n] = '\0';
			if (!parse_size(item, &allowed) && allowed == v)
				return true;
		}
		if (!bar)
			break;
		p = bar + 1;
	}
	return false;
}

static void list_names(const struct wpc_param_spec *specs, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (const struct wpc_param_spec *ps = specs; ps && ps->name; ps++) {
		int n = snprintf(buf + used, len - used, "%s%s", used ? ", " : "", ps->name);
		if (n < 0 || (size_t)n >= len - used)
			break;
		used += (size_t)n;
	}
	if (!used)
		snprintf(buf, len, "none");
}

static int set_one(const char *owner, const struct wpc_param_spec *ps, const char *value,
		   size_t vlen, void *out, char *why, size_t len)
{
	char text[WPC_PARAM_STRING_LEN];
	char *field = (char *)out + ps->offset;

	if (vlen >= sizeof(text)) {
		wpc_why(why, len, "%s: value of %s is too long", owner, ps->name);
		return -EINVAL;
	}
	memcpy(text, value, vlen);
	text[vlen] = '\0';

	switch (ps->kind) {
	case WPC_PARAM_SIZE: {
		uint64_t v;
		if (parse_size(text, &v) ||
		    (ps->choices && !size_allowed(ps->choices, v)) ||
		    (ps->max && (v < (uint64_t)ps->min || v > (uint64_t)ps->max))) {
			if (ps->choices)
				wpc_why(why, len, "%s: %s=%s is not valid; use one of %s", owner,
					ps->name, text, ps->choices);
			else
				wpc_why(why, len, "%s: %s=%s is not a valid size (e.g. 4K, 64K, 2M)",
					owner, ps->name, text);
			return -EINVAL;
		}
		memcpy(field, &v, sizeof(v));
		return 0;
	}
	case WPC_PARAM_INT: {
		char *end;
		errno = 0;
		long long v = strtoll(text, &end, 10);
		if (end == text || *end || errno || (ps->max && (v < ps->min || v > ps->max))) {
			wpc_why(why, len, "%s: %s=%s is not an integer in [%" PRId64 ", %" PRId64 "]",
				owner, ps->name, text, ps->min, ps->max);
			return -EINVAL;
		}
		int64_t v64 = v;
		memcpy(field, &v64, sizeof(v64));
		return 0;
	}
	case WPC_PARAM_CHOICE: {
		int idx = choice_index(ps->choices, text, vlen);
		if (idx < 0) {
			wpc_why(why, len, "%s: %s=%s is not valid; use one of %s", owner, ps->name,
				text, ps->choices);
			return -EINVAL;
		}
		memcpy(field, &idx, sizeof(idx));
		return 0;
	}
	case WPC_PARAM_STRING:
		memcpy(field, text, vlen + 1);
		return 0;
	}
	return -EINVAL;
}

static const struct wpc_param_spec *find_spec(const struct wpc_param_spec *specs, const char *name,
					      size_t nlen)
{
	for (const struct wpc_param_spec *ps = specs; ps && ps->name; ps++)
		if (strlen(ps->name) == nlen && !strncmp(ps->name, name, nlen))
			return ps;
	return NULL;
}

int wpc_params_parse(const char *owner, const struct wpc_param_spec *specs, const char *text,
		     void *out, char *why, size_t len)
{
	int ret;

	/* The caller's struct comes zeroed (wpc_choice_parse); the defaults go in first. */
	for (const struct wpc_param_spec *ps = specs; ps && ps->name; ps++) {
		ret = set_one(owner, ps, ps->default_value, strlen(ps->default_value), out, why, len);
		if (ret)
			return ret;
	}
	if (!text)
		return 0;

	for (const char *p = text; *p;) {
		const char *comma = strchr(p, ',');
		size_t n = comma ? (size_t)(comma - p) : strlen(p);
		const char *eq = memchr(p, '=', n);

		if (n) {
			char names[256];
			const struct wpc_param_spec *ps = eq ? find_spec(specs, p, (size_t)(eq - p)) : NULL;

			if (!ps) {
				list_names(specs, names, sizeof(names));
				wpc_why(why, len, "%s: unknown parameter '%.*s'; valid parameters: %s",
					owner, (int)(eq ? eq - p : (ptrdiff_t)n), p, names);
				return -EINVAL;
			}
			ret = set_one(owner, ps, eq + 1, n - (size_t)(eq + 1 - p), out, why, len);
			if (ret)
				return ret;
		}
		if (!comma)
			break;
		p = comma + 1;
	}
	return 0;
}
