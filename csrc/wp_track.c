/* SPDX-License-Identifier: MIT */
/*
 * Write tracking with userfaultfd write-protection, shared by uffd-wp-anon
 * and mmap-wp-async: registering and protecting a range, and reading the
 * kernel's written set back with PAGEMAP_SCAN. Whether the kernel offers
 * them is probe.c's to say (wpc_needs_check).
 *
 * The end of the file holds a test-only tracker (declared in wpcompare.h)
 * that arms the same tracking on a bare mapping, so tests can check the
 * kernel behaviour the strategies rely on without a run around it.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

#define SCAN_VEC_LEN 256	/* regions per PAGEMAP_SCAN call; the walk resumes at walk_end */

void wpc_uffd_release(int uffd, bool registered, void *addr, size_t len)
{
	if (registered)
		wpc_uffd_unregister(uffd, addr, len);
	if (uffd >= 0)
		close(uffd);
}

int wpc_uffd_unregister(int uffd, void *addr, size_t len)
{
	struct uffdio_range range = { .start = (uintptr_t)addr, .len = len };

	return ioctl(uffd, UFFDIO_UNREGISTER, &range) < 0 ? -errno : 0;
}

int wpc_uffd_wake(int uffd, void *addr, size_t len)
{
	struct uffdio_range range = { .start = (uintptr_t)addr, .len = len };

	return ioctl(uffd, UFFDIO_WAKE, &range) < 0 ? -errno : 0;
}

int wpc_uffd_writeprotect(int uffd, void *addr, size_t len, bool protect)
{
	struct uffdio_writeprotect wp = {
		.range = { .start = (uintptr_t)addr, .len = len },
		/* Unprotecting without DONTWAKE also wakes the writers blocked on the range. */
		.mode = protect ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
	};

	return ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0 ? -errno : 0;
}

int wpc_pagemap_open(void)
{
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	return fd < 0 ? -errno : fd;
}

static void set_bits(uint8_t *bitmap, uint64_t first, uint64_t end)
{
	for (uint64_t p = first; p < end; p++)
		bitmap[p / 8] |= (uint8_t)(1u << (p % 8));
}

int64_t wpc_pagemap_written(int pagemap_fd, void *base, size_t len, bool rearm, uint8_t *bitmap,
			    struct wpc_scan_stats *st)
{
	struct page_region vec[SCAN_VEC_LEN];
	uint64_t lo = (uintptr_t)base, hi = lo + len, at = lo;
	int64_t pages = 0;

	while (at < hi) {
		struct pm_scan_arg arg = {
			.size = sizeof(arg),
			/* Fail rather than report "written" for memory nobody is tracking. */
			.flags = PM_SCAN_CHECK_WPASYNC | (rearm ? PM_SCAN_WP_MATCHING : 0),
			.start = at,
			.end = hi,
			.vec = (uintptr_t)vec,
			.vec_len = SCAN_VEC_LEN,
			.category_mask = PAGE_IS_WRITTEN,
			.return_mask = PAGE_IS_WRITTEN,
		};
		int n = ioctl(pagemap_fd, PAGEMAP_SCAN, &arg);

		/*
		 * No retry: a walk cut short may already have re-armed pages it
		 * did not report, so the caller must treat the set as lost.
		 */
		if (n < 0)
			return -errno;
		if (st) {
			st->calls++;
			st->regions += (uint64_t)n;
		}
		for (int i = 0; i < n; i++) {
			uint64_t first = (vec[i].start - lo) / WPC_PAGE, end = (vec[i].end - lo) / WPC_PAGE;

			if (bitmap)
				set_bits(bitmap, first, end);
			pages += (int64_t)(end - first);
		}
		/* The kernel stops early only with a full vector; anything else would loop forever. */
		if (arg.walk_end <= at || (arg.walk_end < hi && (uint64_t)n < SCAN_VEC_LEN))
			return -EIO;
		at = arg.walk_end;
	}
	return pages;
}

/* ---- test-only tracker (wpcompare.h) ---- */

struct wpc_wp_tracker {
	uint8_t *addr;
	size_t len;
	int uffd;
	int pagemap_fd;
};

void wpc_wp_tracker_close(struct wpc_wp_tracker *t)
{
	if (!t)
		return;
	if (t->addr)
		munmap(t->addr, t->len);
	if (t->uffd >= 0)
		close(t->uffd);
	if (t->pagemap_fd >= 0)
		close(t->pagemap_fd);
	free(t);
}

int wpc_wp_tracker_open(int fd, uint64_t len, int populate, struct wpc_wp_tracker **out, char *why,
			size_t why_len)
{
	/* What mmap-wp-async needs, so the tests see the kernel the strategy would. */
	static const struct wpc_needs needs = {
		.uffd = WPC_UFFD_USER_MODE,
		.uffd_features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED,
		.uffd_ioctls = 1ull << _UFFDIO_WRITEPROTECT,
		.pagemap_scan = true,
	};
	struct wpc_wp_tracker *t = calloc(1, sizeof(*t));
	int flags = MAP_PRIVATE | (fd < 0 ? MAP_ANONYMOUS : 0) | (populate ? MAP_POPULATE : 0);
	int ret;

	*out = NULL;
	if (!t)
		return -ENOMEM;
	t->uffd = t->pagemap_fd = -1;
	t->len = wpc_align_up(len, WPC_PAGE);
	ret = wpc_needs_check(&needs, 0, why, why_len);
	if (ret)
		goto fail;

	void *p = mmap(NULL, t->len, PROT_READ | PROT_WRITE, flags, fd, 0);
	if (p == MAP_FAILED) {
		ret = -errno;
		wpc_why(why, why_len, "mmap of %zu bytes failed: %s", t->len, strerror(-ret));
		goto fail;
	}
	t->addr = p;
	t->uffd = ret = wpc_uffd_open_for(&needs, 0, NULL, why, why_len);
	if (ret >= 0)
		ret = wpc_uffd_register_for(&needs, t->uffd, t->addr, t->len, UFFDIO_REGISTER_MODE_WP,
					    why, why_len);
	if (ret < 0)
		goto fail;
	t->pagemap_fd = ret = wpc_pagemap_open();
	if (ret >= 0)
		ret = wpc_uffd_writeprotect(t->uffd, t->addr, t->len, true);
	if (ret < 0) {
		wpc_why(why, why_len, "arming WP_ASYNC tracking failed: %s", strerror(-ret));
		goto fail;
	}
	*out = t;
	return 0;
fail:
	wpc_wp_tracker_close(t);
	return ret;
}

uintptr_t wpc_wp_tracker_addr(const struct wpc_wp_tracker *t)
{
	return (uintptr_t)t->addr;
}

int64_t wpc_wp_tracker_scan(struct wpc_wp_tracker *t, int rearm, uint8_t *bitmap)
{
	return wpc_pagemap_written(t->pagemap_fd, t->addr, t->len, rearm, bitmap, NULL);
}

struct stress_writer {
	pthread_t tid;
	struct wpc_wp_tracker *t;
	atomic_int *writing;		/* writers that have made their first write */
	atomic_bool *stop;
	int index;
	uint64_t seed;
	uint64_t writes;
};

/* Write one word of seeded random pages until told to stop. */
static void *stress_write(void *arg)
{
	struct stress_writer *w = arg;
	uint64_t npages = w->t->len / WPC_PAGE;
	uint64_t i = 0;

	do {
		uint64_t page = wpc_mix64(w->seed ^ wpc_mix64(i * WPC_MAX_THREADS + (uint64_t)w->index)) % npages;
		volatile uint64_t *word = (volatile uint64_t *)(w->t->addr + page * WPC_PAGE) + w->index;

		*word = ++i;
		if (i == 1)
			atomic_fetch_add(w->writing, 1);
	} while (!atomic_load_explicit(w->stop, memory_order_relaxed));
	w->writes = i;
	return NULL;
}

/* One checkpoint round: re-arm what was written and copy it into the shadow. */
static int64_t stress_round(struct wpc_wp_tracker *t, uint8_t *bitmap, uint8_t *shadow)
{
	uint64_t npages = t->len / WPC_PAGE;
	int64_t n;

	memset(bitmap, 0, (npages + 7) / 8);
	n = wpc_pagemap_written(t->pagemap_fd, t->addr, t->len, true, bitmap, NULL);
	for (uint64_t p = 0; n > 0 && p < npages; p++)
		if (bitmap[p / 8] & (1u << (p % 8)))
			memcpy(shadow + p * WPC_PAGE, t->addr + p * WPC_PAGE, WPC_PAGE);
	return n;
}

/*
 * One epoch: writers start, `rounds` rounds run while all of them write, the
 * writers stop, a last round runs, and the shadow must equal the region.
 */
static int stress_epoch(struct wpc_wp_tracker *t, int threads, uint64_t rounds, uint64_t seed,
			uint8_t *bitmap, uint8_t *shadow, uint64_t *writes, uint64_t *lost_pages)
{
	uint64_t npages = t->len / WPC_PAGE;
	struct stress_writer w[WPC_MAX_THREADS];
	atomic_int writing = 0;
	atomic_bool stop = false;
	int started = 0, ret = 0;
	int64_t n;

	for (int i = 0; i < threads; i++) {
		w[i] = (struct stress_writer){ .t = t, .writing = &writing, .stop = &stop, .index = i,
					       .seed = seed };
		ret = -pthread_create(&w[i].tid, NULL, stress_write, &w[i]);
		if (ret)
			break;
		started++;
	}
	/* Every round runs while every writer is writing: the race is certain, not likely. */
	while (!ret && atomic_load(&writing) < started)
		sched_yield();
	for (uint64_t r = 0; !ret && r < rounds; r++) {
		n = stress_round(t, bitmap, shadow);
		if (n < 0)
			ret = (int)n;
	}
	atomic_store(&stop, true);
	for (int i = 0; i < started; i++) {
		pthread_join(w[i].tid, NULL);
		*writes += w[i].writes;
	}
	if (ret)
		return ret;
	/* Writers are done: a last round must bring the shadow level with the region. */
	n = stress_round(t, bitmap, shadow);
	if (n < 0)
		return (int)n;
	for (uint64_t p = 0; p < npages; p++)
		if (memcmp(shadow + p * WPC_PAGE, t->addr + p * WPC_PAGE, WPC_PAGE)) {
			(*lost_pages)++;
			/* Count each loss once: later epochs start level again. */
			memcpy(shadow + p * WPC_PAGE, t->addr + p * WPC_PAGE, WPC_PAGE);
		}
	return 0;
}

int wpc_wp_tracker_stress(struct wpc_wp_tracker *t, int threads, uint64_t rounds, uint64_t seed,
			  uint64_t *writes, uint64_t *lost_pages)
{
	enum { EPOCH_ROUNDS = 50 };
	uint64_t npages = t->len / WPC_PAGE;
	uint8_t *bitmap = calloc((npages + 7) / 8, 1);
	uint8_t *shadow = malloc(t->len);
	int ret = 0;
	int64_t n;

	*writes = *lost_pages = 0;
	if (threads < 1 || threads > WPC_MAX_THREADS) {
		ret = -EINVAL;
		goto out;
	}
	if (!bitmap || !shadow) {
		ret = -ENOMEM;
		goto out;
	}
	/* Start from a clean round: nothing written, shadow equal to the region. */
	n = wpc_pagemap_written(t->pagemap_fd, t->addr, t->len, true, NULL, NULL);
	if (n < 0) {
		ret = (int)n;
		goto out;
	}
	memcpy(shadow, t->addr, t->len);
	/* Writes lost to a race land near the end of an epoch: many short epochs find them. */
	for (uint64_t done = 0; !ret && done < rounds; done += EPOCH_ROUNDS)
		ret = stress_epoch(t, threads, rounds - done < EPOCH_ROUNDS ? rounds - done : EPOCH_ROUNDS,
				   seed + done, bitmap, shadow, writes, lost_pages);
out:
	free(bitmap);
	free(shadow);
	return ret;
}
