/* SPDX-License-Identifier: MIT */
/*
 * Log-linear latency histogram, HDR style: exact below 256 ns, then 128
 * buckets per power of two, so any recorded value is known to within 1/128
 * (0.8 %) of itself from 256 ns to 2^40 ns. Recording is a few instructions
 * and touches one counter, cheap enough to sit inside a timed loop's tail.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <string.h>

#include "internal.h"

#define EXACT_LIMIT 256u
#define SUB_BITS 7	/* 128 buckets per power of two */
#define SUB_COUNT (1u << SUB_BITS)
#define FIRST_MSB 8	/* msb of EXACT_LIMIT */

_Static_assert(WPC_HIST_BUCKETS == EXACT_LIMIT + 32 * SUB_COUNT, "bucket count");

int wpc_hist_index(uint64_t ns)
{
	if (ns < EXACT_LIMIT)
		return (int)ns;

	int msb = 63 - __builtin_clzll(ns);
	int shift = msb - SUB_BITS;
	int idx = (int)EXACT_LIMIT + (msb - FIRST_MSB) * (int)SUB_COUNT +
		  (int)((ns >> shift) - SUB_COUNT);

	return idx < WPC_HIST_BUCKETS ? idx : WPC_HIST_BUCKETS - 1;
}

uint64_t wpc_hist_bucket_low(int index)
{
	if (index < (int)EXACT_LIMIT)
		return (uint64_t)(index < 0 ? 0 : index);

	int group = (index - (int)EXACT_LIMIT) / (int)SUB_COUNT;
	uint64_t mantissa = (uint64_t)((index - (int)EXACT_LIMIT) % (int)SUB_COUNT) + SUB_COUNT;

	return mantissa << (group + FIRST_MSB - SUB_BITS);
}

uint64_t wpc_hist_bucket_high(int index)
{
	if (index < (int)EXACT_LIMIT)
		return wpc_hist_bucket_low(index);
	if (index >= WPC_HIST_BUCKETS - 1)
		return UINT64_MAX;
	return wpc_hist_bucket_low(index + 1) - 1;
}

void wpc_hist_reset(struct wpc_hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min_ns = UINT64_MAX;
}

void wpc_hist_record(struct wpc_hist *h, uint64_t ns)
{
	h->buckets[wpc_hist_index(ns)]++;
	h->count++;
	h->sum_ns += ns;
	if (ns < h->min_ns)
		h->min_ns = ns;
	if (ns > h->max_ns)
		h->max_ns = ns;
}

/*
 * For a histogram several threads or signal handlers record into at once
 * (sigsegv's and uffd-sigbus's handlers run on every faulting thread): every
 * field is updated by an atomic read-modify-write, min and max by
 * compare-and-swap, so no record is lost and no lock is taken (it is
 * async-signal-safe: a handler interrupting a recorder cannot wait for it).
 * Relaxed order: read the histogram only once its recorders are done.
 */
void wpc_hist_record_concurrent(struct wpc_hist *h, uint64_t ns)
{
	uint64_t seen;

	__atomic_fetch_add(&h->buckets[wpc_hist_index(ns)], 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&h->count, 1, __ATOMIC_RELAXED);
	__atomic_fetch_add(&h->sum_ns, ns, __ATOMIC_RELAXED);
	seen = __atomic_load_n(&h->min_ns, __ATOMIC_RELAXED);
	while (ns < seen && !__atomic_compare_exchange_n(&h->min_ns, &seen, ns, true,
							 __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
	seen = __atomic_load_n(&h->max_ns, __ATOMIC_RELAXED);
	while (ns > seen && !__atomic_compare_exchange_n(&h->max_ns, &seen, ns, true,
							 __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

void wpc_hist_merge(struct wpc_hist *dst, const struct wpc_hist *src)
{
	if (!src->count)
		return;
	for (int i = 0; i < WPC_HIST_BUCKETS; i++)
		dst->buckets[i] += src->buckets[i];
	dst->count += src->count;
	dst->sum_ns += src->sum_ns;
	if (src->min_ns < dst->min_ns)
		dst->min_ns = src->min_ns;
	if (src->max_ns > dst->max_ns)
		dst->max_ns = src->max_ns;
}

uint64_t wpc_hist_quantile(const struct wpc_hist *h, double q)
{
	if (!h->count)
		return 0;
	if (q <= 0.0)
		return h->min_ns;
	if (q >= 1.0)
		return h->max_ns;

	uint64_t rank = (uint64_t)(q * (double)h->count);
	if ((double)rank < q * (double)h->count)
		rank++;
	if (rank == 0)
		rank = 1;

	uint64_t seen = 0;
	for (int i = 0; i < WPC_HIST_BUCKETS; i++) {
		seen += h->buckets[i];
		if (seen >= rank) {
			uint64_t low = wpc_hist_bucket_low(i);
			uint64_t high = wpc_hist_bucket_high(i);
			uint64_t mid = low + (high - low) / 2;

			/* The true extremes are known exactly; never report past them. */
			if (mid < h->min_ns)
				mid = h->min_ns;
			if (mid > h->max_ns)
				mid = h->max_ns;
			return mid;
		}
	}
	return h->max_ns;
}

/* ---- test-only: contention (wpcompare.h) ---- */

struct contender {
	struct wpc_hist *h;
	uint64_t first, count;
	_Atomic int *gate;
	pthread_t tid;
};

static void *contend(void *arg)
{
	struct contender *c = arg;

	atomic_fetch_sub(c->gate, 1);
	while (atomic_load(c->gate) > 0)
		sched_yield();	/* until every thread is here: they start recording together */
	for (uint64_t v = c->first; v < c->first + c->count; v++)
		wpc_hist_record_concurrent(c->h, v);
	return NULL;
}

int wpc_test_hist_contend(struct wpc_hist *h, int threads, uint64_t per_thread)
{
	struct contender c[WPC_MAX_THREADS];
	_Atomic int gate = threads;
	int started = 0, ret = 0;

	if (threads < 1 || threads > WPC_MAX_THREADS)
		return -EINVAL;
	for (; started < threads && !ret; started++) {
		c[started] = (struct contender){ .h = h, .first = (uint64_t)started * per_thread + 1,
						 .count = per_thread, .gate = &gate };
		ret = -pthread_create(&c[started].tid, NULL, contend, &c[started]);
	}
	if (ret) {
		/* Open the gate for those started: they record, and are joined. */
		started--;
		atomic_store(&gate, 0);
	}
	for (int t = 0; t < started; t++)
		pthread_join(c[t].tid, NULL);
	return ret;
}
