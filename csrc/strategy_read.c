/* SPDX-License-Identifier: MIT */
/*
 * `read`: anonymous memory filled eagerly with pread(). Detached from the
 * moment restore returns, at the price of loading every page up front.
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

static int read_restore(struct wpc_run *run)
{
	void *p = mmap(NULL, run->region_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);

	if (p == MAP_FAILED)
		return wpc_fail(run, errno, "mmap of %zu anonymous bytes failed: %s", run->region_len,
				strerror(errno));
	run->region = p;

	int ret = wpc_run_read_image(run, run->region);
	if (ret)
		return ret;
	wpc_run_mark_detached(run);
	return 0;
}

static void read_teardown(struct wpc_run *run)
{
	wpc_run_unmap_region(run);
}

const struct wpc_strategy wpc_strategy_read = {
	.name = "read",
	.family = "baseline",
	.description = "anonymous memory filled eagerly with pread(); detached from the start",
	.restore = read_restore,
	.teardown = read_teardown,
};
