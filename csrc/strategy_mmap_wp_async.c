/* SPDX-License-Identifier: MIT */
/*
 * `mmap-wp-async`: the lazy MAP_PRIVATE mapping of `mmap`, with the kernel
 * recording first writes for us.
 *
 * A userfaultfd with UFFD_FEATURE_WP_ASYNC (and WP_UNPOPULATED, so pages not
 * yet faulted in are protected too, by PTE markers) is registered
 * UFFDIO_REGISTER_MODE_WP over the region, which WP_ASYNC permits on any
 * memory, a regular file mapping included, and the whole range is
 * write-protected. No thread handles anything: a write fault on a protected
 * page clears the protection and proceeds (for a file page, with the usual
 * copy-on-write), and the cleared bit is the record. PAGEMAP_SCAN with
 * PAGE_IS_WRITTEN reads the written set back.
 *
 * Fixup is where a checkpointer would collect that set, so it scans there,
 * timed (counters, ns, one scan each):
 *   scan_ns          the whole region, reporting written pages (the dirty set)
 *   rearm_scan_ns    the same with PM_SCAN_WP_MATCHING, protecting them again
 *   clean_scan_ns    once more after the re-arm; written_after_rearm must be 0
 * (rearm=no skips the last two). Then, as `mmap`, the region is copied into
 * anonymous memory and remapped (fill=, threads=, thp= as `mmap`'s:
 * fill.c); it is unregistered first (unregister_ns), because a registered file mapping gets no fault-around: the copy would
 * take one read fault per untouched page instead of one per 16 (measured:
 * 128 MiB, 10 % of pages read, 62259 faults in fixup instead of 32911 and
 * about 1.3x the time). Unregistering costs little when few pages were
 * written and tens of ms per 128 MiB when all were.
 *
 * The same registration slows the workload too: reads fault one page at a
 * time for the same reason, and a first write to a page not yet faulted in
 * takes two faults (measured: 2 minor faults per page written): resolving
 * the PTE marker installs the copied page still write-protected, and the
 * retried write faults again to clear the protection. Mapping the pages
 * before protecting them does not avoid it: MADV_POPULATE_READ maps every
 * page, but registering and protecting the file mapping leaves only those of
 * small folios mapped (measured, 512 MiB read back in 2 MiB folios: 11,776
 * of 131,072 pages still present after restore, and a write pass as slow).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

#define WP_ASYNC_FEATURES (UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED)

enum wp_async_rearm {
	REARM_YES,
	REARM_NO,
};

struct wp_async_params {
	int rearm;		/* enum wp_async_rearm */
	struct wpc_fill_params fill;	/* of the whole-region copy-and-remap */
};

struct wp_async {
	int uffd;
	int pagemap_fd;
	bool registered;
	uint8_t *dirty;		/* the written set, collected by fixup before the remap ends tracking */
	bool dirty_final;
};

static const struct wpc_param_spec wp_async_param_specs[] = {
	{ "rearm", WPC_PARAM_CHOICE, "yes|no", "yes",
	  "in fixup, also time a re-arming scan (PM_SCAN_WP_MATCHING) and the scan after it",
	  offsetof(struct wp_async_params, rearm), 0, 0 },
	WPC_FILL_FROM_REGION_PARAM_SPECS(struct wp_async_params, fill),
	{ NULL, 0, NULL, NULL, NULL, 0, 0, 0 },
};

static void wp_async_needs_for(const void *params, struct wpc_needs *needs)
{
	const struct wp_async_params *p = params;

	wpc_fill_needs(&p->fill, WPC_FILL_FROM_REGION, needs);
}

static int wp_async_check(const void *params, char *why, size_t len)
{
	const struct wp_async_params *p = params;

	return wpc_fill_check(&p->fill, WPC_FILL_FROM_REGION, why, len);
}

static int wp_async_restore(struct wpc_run *run)
{
	struct wp_async *wa = calloc(1, sizeof(*wa));
	uint64_t t0;

	if (!wa)
		return wpc_fail(run, ENOMEM, "out of memory for the strategy state");
	run->priv = wa;
	wa->uffd = wa->pagemap_fd = -1;
	wa->dirty = calloc((run->npages + 7) / 8, 1);
	if (!wa->dirty)
		return wpc_fail(run, ENOMEM, "out of memory for the dirty bitmap");

	void *p = mmap(NULL, run->region_len, PROT_READ | PROT_WRITE, MAP_PRIVATE, run->image_fd, 0);
	if (p == MAP_FAILED)
		return wpc_fail(run, errno, "mmap of the image failed: %s", strerror(errno));
	run->region = p;

	wa->pagemap_fd = wpc_pagemap_open();
	if (wa->pagemap_fd < 0)
		return wpc_fail(run, -wa->pagemap_fd, "cannot open /proc/self/pagemap: %s",
				strerror(-wa->pagemap_fd));
	t0 = wpc_now_ns();
	wa->uffd = wpc_run_open_uffd(run, 0, NULL);
	if (wa->uffd < 0)
		return wa->uffd;
	/*
	 * WP_ASYNC permits a write-protect registration of a regular file's
	 * mapping too. Nothing is populated yet: protecting writes a marker into
	 * every PTE of the region.
	 */
	return wpc_run_uffd_protect_region(run, wa->uffd, &wa->registered, t0);
}

static int scan_fail(struct wpc_run *run, int64_t err, const char *what)
{
	return wpc_fail(run, (int)-err, "PAGEMAP_SCAN (%s) of the region failed: %s", what,
			strerror((int)-err));
}

/* The re-arm measurements: it must report what the plain scan did, and leave nothing written. */
static int time_rearm(struct wpc_run *run, struct wp_async *wa)
{
	size_t bytes = (run->npages + 7) / 8;
	uint8_t *again = calloc(bytes, 1);
	uint64_t t0, t1, t2, differ = 0;
	int64_t n;
	int ret = 0;

	if (!again)
		return wpc_fail(run, ENOMEM, "out of memory for the re-arm check");
	t0 = wpc_now_ns();
	n = wpc_pagemap_written(wa->pagemap_fd, run->region, run->region_len, true, again, NULL);
	t1 = wpc_now_ns();
	if (n < 0) {
		ret = scan_fail(run, n, "re-arming");
		goto out;
	}
	for (size_t i = 0; i < bytes; i++)
		differ += (uint64_t)__builtin_popcount(again[i] ^ wa->dirty[i]);
	n = wpc_pagemap_written(wa->pagemap_fd, run->region, run->region_len, false, NULL, NULL);
	t2 = wpc_now_ns();
	if (n < 0) {
		ret = scan_fail(run, n, "after re-arm");
		goto out;
	}
	wpc_counter_set(run, "rearm_scan_ns", t1 - t0);
	wpc_counter_set(run, "rearm_differ_pages", differ);
	wpc_counter_set(run, "clean_scan_ns", t2 - t1);
	wpc_counter_set(run, "written_after_rearm", (uint64_t)n);
out:
	free(again);
	return ret;
}

static int wp_async_fixup(struct wpc_run *run)
{
	const struct wp_async_params *params = run->params;
	struct wp_async *wa = run->priv;
	struct wpc_scan_stats st = { 0 };
	uint64_t t0, t1, t2, t3;
	int64_t n;
	int ret;

	t0 = wpc_now_ns();
	n = wpc_pagemap_written(wa->pagemap_fd, run->region, run->region_len, false, wa->dirty, &st);
	t1 = wpc_now_ns();
	if (n < 0)
		return scan_fail(run, n, "written pages");
	wa->dirty_final = true;
	wpc_counter_set(run, "scan_ns", t1 - t0);
	wpc_counter_set(run, "scan_calls", st.calls);
	wpc_counter_set(run, "scan_regions", st.regions);
	wpc_counter_set(run, "written_pages", (uint64_t)n);

	if (params->rearm == REARM_YES) {
		ret = time_rearm(run, wa);
		if (ret)
			return ret;
	}

	t1 = wpc_now_ns();
	ret = wpc_uffd_unregister(wa->uffd, run->region, run->region_len);
	if (ret)
		return wpc_fail(run, -ret, "UFFDIO_UNREGISTER of the region failed: %s", strerror(-ret));
	wa->registered = false;
	t2 = wpc_now_ns();
	ret = wpc_fill_copy_and_remap(run, &params->fill, run->region, run->region_len);
	if (ret)
		return ret;
	t3 = wpc_now_ns();
	wpc_counter_set(run, "unregister_ns", t2 - t1);
	wpc_counter_set(run, "copy_remap_ns", t3 - t2);
	return 0;
}

static int wp_async_dirty_pages(struct wpc_run *run, uint8_t *bitmap)
{
	struct wp_async *wa = run->priv;
	int64_t n;

	if (wa->dirty_final) {
		memcpy(bitmap, wa->dirty, (run->npages + 7) / 8);
		return 0;
	}
	/* No fixup ran: the region is still tracked, ask the kernel now. */
	n = wpc_pagemap_written(wa->pagemap_fd, run->region, run->region_len, false, bitmap, NULL);
	return n < 0 ? scan_fail(run, n, "written pages") : 0;
}

static void wp_async_teardown(struct wpc_run *run)
{
	struct wp_async *wa = run->priv;

	if (wa) {
		wpc_uffd_release(wa->uffd, wa->registered, run->region, run->region_len);
		if (wa->pagemap_fd >= 0)
			close(wa->pagemap_fd);
		free(wa->dirty);
		free(wa);
		run->priv = NULL;
	}
	wpc_run_unmap_region(run);
}

const struct wpc_strategy wpc_strategy_mmap_wp_async = {
	.name = "mmap-wp-async",
	.family = "uffd",
	.description = "lazy MAP_PRIVATE mapping with userfaultfd WP_ASYNC: the kernel resolves and "
		       "records first writes, PAGEMAP_SCAN reads the written set; fixup as mmap",
	.params = wp_async_param_specs,
	.params_size = sizeof(struct wp_async_params),
	/* No handler thread: nothing waits in the kernel, so user mode only and no privilege. */
	.needs = { .uffd = WPC_UFFD_USER_MODE, .uffd_features = WP_ASYNC_FEATURES,
		   .uffd_ioctls = 1ull << _UFFDIO_WRITEPROTECT, .pagemap_scan = true },
	.needs_for = wp_async_needs_for,
	.check = wp_async_check,
	.restore = wp_async_restore,
	.fixup = wp_async_fixup,
	.dirty_pages = wp_async_dirty_pages,
	.teardown = wp_async_teardown,
};
