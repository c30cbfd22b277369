/* SPDX-License-Identifier: MIT */
/*
 * The physical bounds every other row is read against: not ways to
 * restore, but what this machine needs at least to put the image into
 * anonymous memory, measured the way the strategies are measured.
 *
 *   bound-copy   one copy of the image from the page cache into anonymous
 *                memory that is already faulted in (allocated and zeroed
 *                before restore starts, untimed): memory bandwidth alone.
 *                No detached restore can beat it.
 *   bound-fresh  the same copy into fresh anonymous memory, faulted in by
 *                the copy: what filling new memory costs here (page
 *                allocation and zeroing included).
 *
 * Both copy with pread() in large calls, split among `threads` threads (0:
 * one per CPU this process may use), so the bound is not one CPU's. `page`
 * picks the destination: 4 KiB pages, transparent huge pages
 * (MADV_HUGEPAGE) or hugetlb 2 MiB pages.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* The order of BOUND_PAGE_CHOICES. */
enum bound_page {
	BOUND_PAGE_4K,
	BOUND_PAGE_THP,
	BOUND_PAGE_2M,
};
#define BOUND_PAGE_CHOICES "4K|thp|2M"

struct bound_params {
	int page;		/* enum bound_page */
	int64_t threads;	/* copy threads; 0: one per CPU */
};

struct bound {
	size_t map_len;		/* region_len, rounded up to 2 MiB for hugetlb */
};

static const struct wpc_param_spec bound_param_specs[] = {
	{ "page", WPC_PARAM_CHOICE, BOUND_PAGE_CHOICES, "4K",
	  "destination pages: 4 KiB, transparent huge pages (MADV_HUGEPAGE), or hugetlb 2 MiB",
	  offsetof(struct bound_params, page), 0, 0 },
	{ "threads", WPC_PARAM_INT, NULL, "0",
	  "threads sharing the copy; 0: one per CPU this process may use",
	  offsetof(struct bound_params, threads), 0, WPC_MAX_THREADS },
	{ 0 }
};

static void bound_needs_for(const void *params, struct wpc_needs *needs)
{
	const struct bound_params *p = params;

	needs->thp = p->page == BOUND_PAGE_THP;
	needs->hugetlb_2m = p->page == BOUND_PAGE_2M;
}

/* The anonymous region the image is copied into, of the page kind asked for. */
static int make_destination(struct wpc_run *run)
{
	const struct bound_params *params = run->params;
	bool huge = params->page == BOUND_PAGE_2M;
	struct bound *b = calloc(1, sizeof(*b));
	void *p;

	if (!b)
		return wpc_fail(run, ENOMEM, "out of memory");
	run->priv = b;
	b->map_len = huge ? wpc_align_up(run->region_len, WPC_HUGE_PAGE) : run->region_len;
	p = mmap(NULL, b->map_len, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | (huge ? MAP_HUGETLB : 0), -1, 0);
	if (p == MAP_FAILED)
		return wpc_fail(run, errno, "mmap of %zu anonymous %sbytes: %s", b->map_len,
				huge ? "hugetlb " : "", strerror(errno));
	run->region = p;
	if (params->page == BOUND_PAGE_THP && madvise(p, b->map_len, MADV_HUGEPAGE) < 0)
		return wpc_fail(run, errno, "madvise(MADV_HUGEPAGE): %s", strerror(errno));
	/* Whatever THP's system setting, 4K means 4 KiB pages. */
	if (params->page == BOUND_PAGE_4K && madvise(p, b->map_len, MADV_NOHUGEPAGE) < 0)
		return wpc_fail(run, errno, "madvise(MADV_NOHUGEPAGE): %s", strerror(errno));
	return 0;
}

/* bound-copy's destination, faulted in before restore's clock starts. */
static int bound_copy_prepare(struct wpc_run *run)
{
	int ret = make_destination(run);

	if (ret)
		return ret;
	if (madvise(run->region, ((struct bound *)run->priv)->map_len, MADV_POPULATE_WRITE) < 0)
		return wpc_fail(run, errno, "madvise(MADV_POPULATE_WRITE) to fault in the destination: "
				"%s (needs Linux 5.14)", strerror(errno));
	return 0;
}

/* The image into the region, in 2 MiB-aligned shares, one per thread (fill.c's copier). */
static int copy_image(struct wpc_run *run)
{
	const struct bound_params *params = run->params;
	int used = 0;
	int ret = wpc_fill_pread_image(run, run->region, wpc_fill_thread_count(run, params->threads),
				       &used);

	if (ret)
		return ret;
	wpc_counter_set(run, "copy_threads", (uint64_t)used);
	wpc_run_mark_detached(run);
	return 0;
}

static int bound_fresh_restore(struct wpc_run *run)
{
	int ret = make_destination(run);

	return ret ? ret : copy_image(run);
}

static void bound_teardown(struct wpc_run *run)
{
	struct bound *b = run->priv;

	if (run->region && b)
		munmap(run->region, b->map_len);
	run->region = NULL;
	free(b);
	run->priv = NULL;
}

const struct wpc_strategy wpc_strategy_bound_copy = {
	.name = "bound-copy",
	.family = "bound",
	.description = "physical bound: one copy of the image from the page cache into anonymous "
		       "memory faulted in before restore",
	.params = bound_param_specs,
	.params_size = sizeof(struct bound_params),
	.needs_for = bound_needs_for,
	.prepare = bound_copy_prepare,
	.restore = copy_image,
	.teardown = bound_teardown,
};

const struct wpc_strategy wpc_strategy_bound_fresh = {
	.name = "bound-fresh",
	.family = "bound",
	.description = "physical bound: one copy of the image from the page cache into fresh "
		       "anonymous memory (allocation and zeroing included)",
	.params = bound_param_specs,
	.params_size = sizeof(struct bound_params),
	.needs_for = bound_needs_for,
	.restore = bound_fresh_restore,
	.teardown = bound_teardown,
};
