/* SPDX-License-Identifier: MIT */
/*
 * `read`: fresh anonymous memory filled eagerly from the image. Detached
 * from the moment restore returns, at the price of loading every page up
 * front. How it is filled is fill.c's: fill=pread (as published),
 * memcpy or uffdio-copy; threads=; thp=.
 */
#include "internal.h"

struct read_params {
	struct wpc_fill_params fill;
};

static const struct wpc_param_spec read_param_specs[] = {
	WPC_FILL_FROM_IMAGE_PARAM_SPECS(struct read_params, fill),
	{ 0 }
};

static void read_needs_for(const void *params, struct wpc_needs *needs)
{
	const struct read_params *p = params;

	wpc_fill_needs(&p->fill, WPC_FILL_FROM_IMAGE, needs);
}

static int read_check(const void *params, char *why, size_t len)
{
	const struct read_params *p = params;

	return wpc_fill_check(&p->fill, WPC_FILL_FROM_IMAGE, why, len);
}

static int read_restore(struct wpc_run *run)
{
	const struct read_params *p = run->params;

	return wpc_fill_anonymous_from_image(run, &p->fill);
}

static void read_teardown(struct wpc_run *run)
{
	wpc_run_unmap_region(run);
}

const struct wpc_strategy wpc_strategy_read = {
	.name = "read",
	.family = "baseline",
	.description = "anonymous memory filled eagerly from the image (pread by default); detached "
		       "from the start",
	.params = read_param_specs,
	.params_size = sizeof(struct read_params),
	.needs_for = read_needs_for,
	.check = read_check,
	.restore = read_restore,
	.teardown = read_teardown,
};
