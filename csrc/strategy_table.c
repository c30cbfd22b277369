/* SPDX-License-Identifier: MIT */
/*
 * The strategy table: one row per strategy, like the case table of the
 * kernel's uffd-unit-tests.c. The runner, `wpcompare list`, the presets and
 * every Python caller learn the strategies from here and nowhere else.
 *
 * Adding a strategy (csrc/README.md has the steps in full) takes:
 *   1. csrc/strategy_<name>.c defining `const struct wpc_strategy
 *      wpc_strategy_<name>`: its name, family and description; its parameter
 *      struct and specs (.params, .params_size), parsed once before the
 *      probe and handed to every op as run->params; what it needs
 *      (.needs: userfaultfd mode and features, PAGEMAP_SCAN, huge pages),
 *      which wpc_needs_check words the skip reason from; restore, and the
 *      other ops it has;
 *   2. one ROW(wpc_strategy_<name>) line below;
 *   3. its line in README's strategy list.
 * The build compiles every C file in csrc/, and nothing else names a strategy.
 * A strategy built outside the tree comes in through plugin.c, as rows
 * appended after these: every lookup below reads both.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define STRATEGY_ROWS(ROW)			\
	ROW(wpc_strategy_mmap)			\
	ROW(wpc_strategy_mmap_populate)		\
	ROW(wpc_strategy_read)			\
	ROW(wpc_strategy_sigsegv)		\
	ROW(wpc_strategy_uffd_wp)		\
	ROW(wpc_strategy_uffd_wp_anon)		\
	ROW(wpc_strategy_mmap_wp_async)		\
	ROW(wpc_strategy_uffd)			\
	ROW(wpc_strategy_uffd_huge)		\
	ROW(wpc_strategy_uffd_sigbus)		\
	ROW(wpc_strategy_uffd_hybrid)		\
	ROW(wpc_strategy_uffd_move)		\
	ROW(wpc_strategy_uffd_minor)		\
	ROW(wpc_strategy_bound_copy)		\
	ROW(wpc_strategy_bound_fresh)

#define DECLARE_ROW(row) extern const struct wpc_strategy row;
#define POINT_AT_ROW(row) &row,

STRATEGY_ROWS(DECLARE_ROW)

const struct wpc_strategy *const wpc_strategies[] = {
	STRATEGY_ROWS(POINT_AT_ROW)
};

const size_t wpc_strategy_rows = WPC_ARRAY_SIZE(wpc_strategies);

/*
 * Row `index` of the one table every lookup reads: the built-in rows, then
 * the rows of loaded plugins (plugin.c) in the order they were loaded.
 */
static const struct wpc_strategy *row_at(int index)
{
	if (index < 0)
		return NULL;
	if ((size_t)index < wpc_strategy_rows)
		return wpc_strategies[index];
	return wpc_plugin_row((size_t)index - wpc_strategy_rows);
}

const struct wpc_strategy *wpc_strategy_lookup(const char *name)
{
	int idx = name ? wpc_strategy_find(name) : -ENOENT;

	return idx < 0 ? NULL : row_at(idx);
}

int wpc_strategy_find(const char *name)
{
	for (int i = 0; i < wpc_strategy_count(); i++)
		if (!strcmp(row_at(i)->name, name))
			return i;
	return -ENOENT;
}

int wpc_strategy_count(void)
{
	return (int)(wpc_strategy_rows + wpc_plugin_row_count());
}

int wpc_strategy_get(int index, struct wpc_strategy_info *out)
{
	const struct wpc_strategy *s = row_at(index);

	if (!s)
		return -ENOENT;
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

	const struct wpc_param_spec *ps = &row_at(index)->params[param];
	out->name = ps->name;
	out->kind = kinds[ps->kind];
	out->choices = ps->choices;
	out->default_value = ps->default_value;
	out->help = ps->help;
	return 0;
}

/* ---- a strategy with its parameters, parsed once ---- */

static struct wpc_choice *choice_alloc(const struct wpc_strategy *s)
{
	struct wpc_choice *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->strategy = s;
	/* A zero-size struct is no struct: ops of a strategy without parameters get NULL. */
	if (s->params_size && !(c->params = calloc(1, s->params_size))) {
		free(c);
		return NULL;
	}
	return c;
}

void wpc_choice_free(struct wpc_choice *choice)
{
	if (!choice)
		return;
	free(choice->params);
	free(choice);
}

int wpc_choice_parse(const char *strategy, const char *params, struct wpc_choice **out, char *why,
		     size_t len)
{
	const struct wpc_strategy *s = wpc_strategy_lookup(strategy);
	struct wpc_choice *c;
	int ret;

	*out = NULL;
	if (!s) {
		wpc_why(why, len, "unknown strategy '%s'; see 'wpcompare list'",
			strategy ? strategy : "(null)");
		return -ENOENT;
	}
	c = choice_alloc(s);
	if (!c) {
		wpc_why(why, len, "out of memory for the parameters of %s", s->name);
		return -ENOMEM;
	}
	ret = wpc_params_parse(s->name, s->params, params, c->params, why, len);
	if (ret) {
		wpc_choice_free(c);
		return ret;
	}
	*out = c;
	return 0;
}

int wpc_choice_copy(const struct wpc_choice *src, struct wpc_choice **out, char *why, size_t len)
{
	struct wpc_choice *c = choice_alloc(src->strategy);

	*out = NULL;
	if (!c) {
		wpc_why(why, len, "out of memory for the parameters of %s", src->strategy->name);
		return -ENOMEM;
	}
	if (src->strategy->params_size)
		memcpy(c->params, src->params, src->strategy->params_size);
	*out = c;
	return 0;
}

int wpc_params_validate(const char *strategy, const char *params, char *why, size_t len)
{
	struct wpc_choice *c;
	int ret = wpc_choice_parse(strategy, params, &c, why, len);

	wpc_choice_free(c);
	return ret;
}

int wpc_choice_probe(const struct wpc_choice *choice, uint64_t image_bytes, char *why, size_t len)
{
	const struct wpc_strategy *s = choice->strategy;
	struct wpc_needs needs;
	int ret;

	if (why && len)
		why[0] = '\0';
	if (s->check) {
		ret = s->check(choice->params, why, len);
		if (ret)
			return ret;
	}
	wpc_strategy_needs(s, choice->params, &needs);
	return wpc_needs_check(&needs, image_bytes, why, len);
}

int wpc_strategy_probe(const char *strategy, const char *params, uint64_t image_bytes, char *why,
		       size_t len)
{
	struct wpc_choice *c;
	int ret = wpc_choice_parse(strategy, params, &c, why, len);

	if (!ret)
		ret = wpc_choice_probe(c, image_bytes, why, len);
	wpc_choice_free(c);
	return ret;
}
