/* SPDX-License-Identifier: MIT */
/*
 * Baselines that map the image: `mmap` (MAP_PRIVATE, lazy: the page cache
 * is mapped on first read, copied on first write) and `mmap-populate`
 * (MAP_POPULATE: on a private writable mapping the kernel pre-faults with
 * write intent, so restore copies every page up front).
 *
 * Either way the region keeps referencing the image, so before a restored
 * process can be checkpointed again its fixup copies the whole region into
 * anonymous memory and moves it over the original with one mremap, as a
 * restored CRaC process must.
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

static int map_image(struct wpc_run *run, int extra_flags)
{
	void *p = mmap(NULL, run->region_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | extra_flags,
		       run->image_fd, 0);

	if (p == MAP_FAILED)
		return wpc_fail(run, errno, "mmap of the image failed: %s", strerror(errno));
	run->region = p;
	return 0;
}

static int mmap_restore(struct wpc_run *run)
{
	return map_image(run, 0);
}

static int mmap_populate_restore(struct wpc_run *run)
{
	return map_image(run, MAP_POPULATE);
}

static int mmap_fixup(struct wpc_run *run)
{
	int ret = wpc_copy_and_remap(run->region, run->region_len);
	char why[WPC_REASON_LEN] = "";

	if (ret == -ENOMEM)
		wpc_enomem_why(run->region_len, "", why, sizeof(why));
	if (ret)
		return wpc_fail(run, -ret, "copy-and-remap of the whole region failed: %s%s%s",
				strerror(-ret), why[0] ? ": " : "", why);
	return 0;
}

static void mmap_teardown(struct wpc_run *run)
{
	wpc_run_unmap_region(run);
}

const struct wpc_strategy wpc_strategy_mmap = {
	.name = "mmap",
	.family = "baseline",
	.description = "MAP_PRIVATE file mapping, loaded lazily; fixup copies the region into "
		       "anonymous memory and remaps it",
	.restore = mmap_restore,
	.fixup = mmap_fixup,
	.teardown = mmap_teardown,
};

const struct wpc_strategy wpc_strategy_mmap_populate = {
	.name = "mmap-populate",
	.family = "baseline",
	.description = "MAP_PRIVATE|MAP_POPULATE file mapping, every page copied at restore; "
		       "fixup as mmap",
	.restore = mmap_populate_restore,
	.fixup = mmap_fixup,
	.teardown = mmap_teardown,
};
