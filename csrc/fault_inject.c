/* SPDX-License-Identifier: MIT */
/*
 * Test-only fault injection: failures the kernel produces only in states a
 * test must not create on a shared machine (vm.max_map_count exhausted for
 * everybody) or only through bugs (a fault handler thread that dies), made
 * to happen on demand in this process alone.
 *
 * The settings come from environment variables (internal.h lists them),
 * read once by wpc_run_create. They are globals because the places that
 * consult them run in signal handlers (a sigsegv strategy's mremap), where
 * getenv() and the run context are out of reach. Unset, every check is one
 * relaxed atomic load that says no.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#define NEVER INT64_MAX

/* mremaps still allowed to go to the kernel; at or below zero, each fails. */
static _Atomic int64_t mremaps_left = NEVER;
/* Faults a handler thread serves before it exits. */
static _Atomic int64_t handler_faults = NEVER;
/* Faults a handler thread serves before its next read() fails. */
static _Atomic int64_t handler_error_faults = NEVER;
/* Chunked copy-and-remap behaves as on a kernel without MREMAP_DONTUNMAP. */
static _Atomic bool mremap_dontunmap_off;
/* The page whose first writer's write is undone before verify. */
static _Atomic int64_t lost_write_page = NEVER;

bool wpc_clock_counting;
__thread uint64_t wpc_thread_clock_reads __attribute__((tls_model("initial-exec")));

/*
 * The hold (WPCOMPARE_INJECT_HOLD): the unit whose hold points stop their
 * thread, the arrivals so far (ticket i: the point the i-th arrival reached),
 * and which tickets the test has released (bit i; all ones: every ticket,
 * also later ones). release_gen is the futex held threads sleep on.
 */
static _Atomic int64_t hold_unit = NEVER;
static _Atomic int hold_arrivals;
static _Atomic int hold_points[WPC_HOLD_MAX_TICKETS];
static _Atomic uint64_t hold_released;
static _Atomic uint32_t release_gen;
static _Atomic int hold_expired;

/* N >= min from the variable, NEVER when unset; -EINVAL for anything else. */
static int read_number(const char *name, long long min, int64_t *out, char *why, size_t len)
{
	const char *text = getenv(name);
	char *end;

	*out = NEVER;
	if (!text || !*text)
		return 0;
	errno = 0;
	long long v = strtoll(text, &end, 10);
	if (errno || *end || v < min) {
		wpc_why(why, len, "%s=%s: give a whole number >= %lld, or unset it", name, text, min);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

int wpc_inject_load(char *why, size_t len)
{
	int64_t mremap_nth, handler_after, error_after, unit, no_dontunmap, lost_page;
	int ret = read_number("WPCOMPARE_INJECT_MREMAP_ENOMEM", 1, &mremap_nth, why, len);

	if (!ret)
		ret = read_number("WPCOMPARE_INJECT_HANDLER_EXIT", 1, &handler_after, why, len);
	if (!ret)
		ret = read_number("WPCOMPARE_INJECT_HANDLER_ERROR", 1, &error_after, why, len);
	if (!ret)
		ret = read_number("WPCOMPARE_INJECT_HOLD", 0, &unit, why, len);
	if (!ret)
		ret = read_number("WPCOMPARE_INJECT_NO_DONTUNMAP", 1, &no_dontunmap, why, len);
	if (!ret)
		ret = read_number("WPCOMPARE_INJECT_LOSE_WRITE", 0, &lost_page, why, len);
	if (ret)
		return ret;
	atomic_store(&hold_unit, unit);
	atomic_store(&hold_arrivals, 0);
	atomic_store(&hold_released, 0);
	atomic_store(&hold_expired, 0);
	atomic_store(&mremap_dontunmap_off, no_dontunmap != NEVER);
	const char *count_clock = getenv("WPCOMPARE_COUNT_CLOCK_READS");
	wpc_clock_counting = count_clock && !strcmp(count_clock, "1");
	/* The N-th call fails: N - 1 go through first. */
	atomic_store(&mremaps_left, mremap_nth == NEVER ? NEVER : mremap_nth - 1);
	atomic_store(&handler_faults, handler_after);
	atomic_store(&handler_error_faults, error_after);
	atomic_store(&lost_write_page, lost_page);
	return 0;
}

/*
 * The image's bytes put back over the lowest-numbered writer's word of the chosen page,
 * as a copy-and-remap that copied the page after the write landed, and mapped the copy
 * over it, would leave it: what a checker must catch, on demand. Generated images of
 * runs of their own only (the image's word comes from the generator).
 */
void wpc_inject_lose_write(struct wpc_run *run)
{
	int64_t page = atomic_load(&lost_write_page);
	uint8_t image[WPC_PAGE];
	uint64_t *masks;
	uint64_t value = 0;

	if (page == NEVER || (uint64_t)page >= run->npages || run->cfg.image_seed < 0 ||
	    run->cfg.history_len)
		return;
	masks = wpc_plan_writer_masks(&run->plan, run->cfg.workload.threads, run->npages);
	if (!masks)
		return;
	if (masks[page]) {
		int thread = __builtin_ctzll(masks[page]);
		size_t slot = wpc_word_slot((uint64_t)page, thread);
		uint64_t offset = (uint64_t)page * WPC_PAGE + slot * sizeof(value);

		/* Past the image's end the mapping reads zeros. */
		wpc_image_fill_page((uint64_t)run->cfg.image_seed, run->cfg.image_kind,
				    (uint64_t)page, image);
		if (offset + sizeof(value) <= run->image_size)
			memcpy(&value, image + slot * sizeof(value), sizeof(value));
		memcpy(run->region + offset, &value, sizeof(value));
	}
	free(masks);
}

bool wpc_inject_mremap_enomem(void)
{
	if (atomic_load_explicit(&mremaps_left, memory_order_relaxed) == NEVER)
		return false;
	return atomic_fetch_sub(&mremaps_left, 1) <= 0;
}

bool wpc_inject_handler_error(uint64_t served)
{
	int64_t after = atomic_load_explicit(&handler_error_faults, memory_order_relaxed);

	return after != NEVER && served >= (uint64_t)after;
}

bool wpc_inject_handler_exit(uint64_t served)
{
	int64_t after = atomic_load_explicit(&handler_faults, memory_order_relaxed);

	return after != NEVER && served >= (uint64_t)after;
}

bool wpc_inject_no_dontunmap(void)
{
	return atomic_load_explicit(&mremap_dontunmap_off, memory_order_relaxed);
}

static bool ticket_released(int ticket)
{
	uint64_t released = atomic_load(&hold_released);

	return released == UINT64_MAX || (ticket < 64 && (released >> ticket & 1));
}

/*
 * Async-signal-safe (atomics, futex, clock_gettime): a sigsegv handler
 * holds here. A ticket the test never releases lets its thread go after
 * WPC_HOLD_EXPIRE_NS, so a broken test ends; wpc_test_hold_expired says so.
 */
void wpc_inject_hold(int point, uint64_t unit)
{
	int64_t held = atomic_load_explicit(&hold_unit, memory_order_relaxed);

	if (held == NEVER || (uint64_t)held != unit)
		return;
	int ticket = atomic_fetch_add(&hold_arrivals, 1);
	if (ticket < WPC_HOLD_MAX_TICKETS)
		atomic_store(&hold_points[ticket], point);
	if (point == WPC_HOLD_LOST)
		return;
	uint64_t deadline = wpc_now_ns() + WPC_HOLD_EXPIRE_NS;
	for (;;) {
		uint32_t gen = atomic_load(&release_gen);

		if (ticket_released(ticket))
			return;
		if (wpc_now_ns() > deadline) {
			atomic_store(&hold_expired, 1);
			return;
		}
		struct timespec step = { .tv_sec = 0, .tv_nsec = 50 * 1000 * 1000 };
		syscall(SYS_futex, (uint32_t *)&release_gen, FUTEX_WAIT_PRIVATE, gen, &step, NULL, 0);
	}
}

int wpc_test_hold_arrivals(int *points, int max)
{
	int n = atomic_load(&hold_arrivals);

	for (int i = 0; i < n && i < max && i < WPC_HOLD_MAX_TICKETS; i++)
		points[i] = atomic_load(&hold_points[i]);
	return n;
}

void wpc_test_hold_release(int ticket)
{
	if (ticket < 0)
		atomic_store(&hold_released, UINT64_MAX);
	else if (ticket < 64)
		atomic_fetch_or(&hold_released, 1ull << ticket);
	atomic_fetch_add(&release_gen, 1);
	syscall(SYS_futex, (uint32_t *)&release_gen, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

int wpc_test_hold_expired(void)
{
	return atomic_load(&hold_expired);
}
