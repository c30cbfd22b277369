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
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define NEVER INT64_MAX

/* mremaps still allowed to go to the kernel; at or below zero, each fails. */
static _Atomic int64_t mremaps_left = NEVER;
/* Faults a handler thread serves before it exits. */
static _Atomic int64_t handler_faults = NEVER;

bool wpc_clock_counting;
__thread uint64_t wpc_thread_clock_reads __attribute__((tls_model("initial-exec")));

/* N >= 1 from the variable, NEVER when unset; -EINVAL for anything else. */
static int read_count(const char *name, int64_t *out, char *why, size_t len)
{
	const char *text = getenv(name);
	char *end;

	*out = NEVER;
	if (!text || !*text)
		return 0;
	errno = 0;
	long long v = strtoll(text, &end, 10);
	if (errno || *end || v < 1) {
		wpc_why(why, len, "%s=%s: give a whole number >= 1, or unset it", name, text);
		return -EINVAL;
	}
	*out = v;
	return 0;
}

int wpc_inject_load(char *why, size_t len)
{
	int64_t mremap_nth, handler_after;
	int ret = read_count("WPCOMPARE_INJECT_MREMAP_ENOMEM", &mremap_nth, why, len);

	if (!ret)
		ret = read_count("WPCOMPARE_INJECT_HANDLER_EXIT", &handler_after, why, len);
	if (ret)
		return ret;
	const char *count_clock = getenv("WPCOMPARE_COUNT_CLOCK_READS");
	wpc_clock_counting = count_clock && !strcmp(count_clock, "1");
	/* The N-th call fails: N - 1 go through first. */
	atomic_store(&mremaps_left, mremap_nth == NEVER ? NEVER : mremap_nth - 1);
	atomic_store(&handler_faults, handler_after);
	return 0;
}

bool wpc_inject_mremap_enomem(void)
{
	if (atomic_load_explicit(&mremaps_left, memory_order_relaxed) == NEVER)
		return false;
	return atomic_fetch_sub(&mremaps_left, 1) <= 0;
}

bool wpc_inject_handler_exit(uint64_t served)
{
	int64_t after = atomic_load_explicit(&handler_faults, memory_order_relaxed);

	return after != NEVER && served >= (uint64_t)after;
}
