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
 * restored CRaC process must. How it copies is fill.c's: fill=memcpy (as
 * published) or uffdio-copy, threads=, thp= (of the copy).
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

struct mmap_params {
	struct wpc_fill_params fill;	/* of the fixup */
};

static const struct wpc_param_spec mmap_param_specs[] = {
	WPC_FILL_FROM_REGION_PARAM_SPECS(struct mmap_params, fill),
	{ 0 }
};

static void mmap_needs_for(const void *params, struct wpc_needs *needs)
{
	const struct mmap_params *p = params;

	wpc_fill_needs(&p->fill, WPC_FILL_FROM_REGION, needs);
}

static int mmap_check(const void *params, char *why, size_t len)
{
	const struct mmap_params *p = params;

	return wpc_fill_check(&p->fill, WPC_FILL_FROM_REGION, why, len);
}

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

/* The whole-region copy-and-remap, as fill= threads= thp= say (fill.c). */
static int mmap_fixup(struct wpc_run *run)
{
	const struct mmap_params *p = run->params;

	return wpc_fill_copy_and_remap(run, &p->fill, run->region, run->region_len);
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
	.params = mmap_param_specs,
	.params_size = sizeof(struct mmap_params),
	.needs_for = mmap_needs_for,
	.check = mmap_check,
	.restore = mmap_restore,
	.fixup = mmap_fixup,
	.teardown = mmap_teardown,
};

const struct wpc_strategy wpc_strategy_mmap_populate = {
	.name = "mmap-populate",
	.family = "baseline",
	.description = "MAP_PRIVATE|MAP_POPULATE file mapping, every page copied at restore; "
		       "fixup as mmap",
	.params = mmap_param_specs,
	.params_size = sizeof(struct mmap_params),
	.needs_for = mmap_needs_for,
	.check = mmap_check,
	.restore = mmap_populate_restore,
	.fixup = mmap_fixup,
	.teardown = mmap_teardown,
};
