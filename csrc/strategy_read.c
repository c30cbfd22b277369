/* SPDX-License-Identifier: MIT */
/*
 * `read`: anonymous memory filled eagerly with pread(). Detached from the
 * moment restore returns, at the price of loading every page up front.
 */
#include "internal.h"

static void read_teardown(struct wpc_run *run)
{
	wpc_run_unmap_region(run);
}

const struct wpc_strategy wpc_strategy_read = {
	.name = "read",
	.family = "baseline",
	.description = "anonymous memory filled eagerly with pread(); detached from the start",
	.restore = wpc_run_read_into_anonymous,
	.teardown = read_teardown,
};
