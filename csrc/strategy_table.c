/* SPDX-License-Identifier: MIT */
/*
 * The strategy table: one row per strategy, like the case table of the
 * kernel's uffd-unit-tests.c. Adding a strategy is adding its file and a row
 * here; the runner and the Python driver discover rows through this table.
 */
#include <string.h>

#include "internal.h"

extern const struct wpc_strategy wpc_strategy_mmap;
extern const struct wpc_strategy wpc_strategy_mmap_populate;
extern const struct wpc_strategy wpc_strategy_read;
extern const struct wpc_strategy wpc_strategy_sigsegv;
extern const struct wpc_strategy wpc_strategy_uffd_wp;
extern const struct wpc_strategy wpc_strategy_uffd_wp_anon;
extern const struct wpc_strategy wpc_strategy_mmap_wp_async;
extern const struct wpc_strategy wpc_strategy_uffd;
extern const struct wpc_strategy wpc_strategy_uffd_huge;
extern const struct wpc_strategy wpc_strategy_uffd_sigbus;
extern const struct wpc_strategy wpc_strategy_uffd_hybrid;
extern const struct wpc_strategy wpc_strategy_uffd_move;
extern const struct wpc_strategy wpc_strategy_uffd_minor;
extern const struct wpc_strategy wpc_strategy_bound_copy;
extern const struct wpc_strategy wpc_strategy_bound_fresh;

const struct wpc_strategy *const wpc_strategies[] = {
	&wpc_strategy_mmap,
	&wpc_strategy_mmap_populate,
	&wpc_strategy_read,
	&wpc_strategy_sigsegv,
	&wpc_strategy_uffd_wp,
	&wpc_strategy_uffd_wp_anon,
	&wpc_strategy_mmap_wp_async,
	&wpc_strategy_uffd,
	&wpc_strategy_uffd_huge,
	&wpc_strategy_uffd_sigbus,
	&wpc_strategy_uffd_hybrid,
	&wpc_strategy_uffd_move,
	&wpc_strategy_uffd_minor,
	&wpc_strategy_bound_copy,
	&wpc_strategy_bound_fresh,
};

const size_t wpc_strategy_rows = WPC_ARRAY_SIZE(wpc_strategies);

const struct wpc_strategy *wpc_strategy_lookup(const char *name)
{
	int idx = name ? wpc_strategy_find(name) : -ENOENT;

	return idx < 0 ? NULL : wpc_strategies[idx];
}

int wpc_strategy_find(const char *name)
{
	for (size_t i = 0; i < wpc_strategy_rows; i++)
		if (!strcmp(wpc_strategies[i]->name, name))
			return (int)i;
	return -ENOENT;
}

int wpc_strategy_count(void)
{
	return (int)wpc_strategy_rows;
}

int wpc_strategy_get(int index, struct wpc_strategy_info *out)
{
	if (index < 0 || (size_t)index >= wpc_strategy_rows)
		return -ENOENT;

	const struct wpc_strategy *s = wpc_strategies[index];
	int n = 0;

	while (s->params && s->params[n].name)
		n++;
	out->name = s->name;
	out->family = s->family;
	out->description = s->description;
	out->nparams = n;
	return 0;
}

int wpc_strategy_param(int index, int param, struct wpc_param_info *out)
{
	static const char *const kinds[] = {
		[WPC_PARAM_SIZE] = "size",
		[WPC_PARAM_INT] = "int",
		[WPC_PARAM_CHOICE] = "choice",
		[WPC_PARAM_STRING] = "string",
	};
	struct wpc_strategy_info info;
	int ret = wpc_strategy_get(index, &info);

	if (ret)
		return ret;
	if (param < 0 || param >= info.nparams)
		return -ENOENT;

	const struct wpc_param_spec *ps = &wpc_strategies[index]->params[param];
	out->name = ps->name;
	out->kind = kinds[ps->kind];
	out->choices = ps->choices;
	out->default_value = ps->default_value;
	out->help = ps->help;
	return 0;
}

int wpc_strategy_probe(const char *strategy, const char *params, uint64_t image_bytes, char *why,
		       size_t len)
{
	const struct wpc_strategy *s = wpc_strategy_lookup(strategy);
	struct wpc_params p;
	int ret;

	if (!s) {
		wpc_why(why, len, "unknown strategy '%s'; see 'wpcompare list'", strategy);
		return -ENOENT;
	}
	memset(&p, 0, sizeof(p));
	ret = wpc_params_parse(s->name, s->params, params, &p, why, len);
	if (ret)
		return ret;
	p.image_bytes = image_bytes;
	if (why && len)
		why[0] = '\0';
	return s->probe ? s->probe(&p, why, len) : 0;
}

int wpc_params_validate(const char *strategy, const char *params, char *why, size_t len)
{
	const struct wpc_strategy *s = wpc_strategy_lookup(strategy);
	struct wpc_params p;

	if (!s) {
		wpc_why(why, len, "unknown strategy '%s'; see 'wpcompare list'", strategy);
		return -ENOENT;
	}
	memset(&p, 0, sizeof(p));
	return wpc_params_parse(s->name, s->params, params, &p, why, len);
}
