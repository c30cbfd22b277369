/* SPDX-License-Identifier: MIT */
/*
 * The workload: the application's first access to each page it touches,
 * every one timed. Orders are built before the phase starts so the timed loop
 * does nothing but access, read the clock and count.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int wpc_plan_build(struct wpc_plan *plan, uint64_t npages, const struct wpc_workload *w)
{
	uint64_t count;

	memset(plan, 0, sizeof(*plan));
	if (w->threads < 1 || w->threads > WPC_MAX_THREADS || !npages)
		return -EINVAL;

	switch (w->pattern) {
	case WPC_PATTERN_SEQ:
	case WPC_PATTERN_RANDOM:
		count = npages;
		break;
	case WPC_PATTERN_SPARSE:
		if (!(w->fraction > 0.0 && w->fraction <= 1.0))
			return -EINVAL;
		count = (uint64_t)((double)npages * w->fraction + 0.5);
		if (!count)
			count = 1;
		break;
	case WPC_PATTERN_STRIDE:
		if (!w->stride)
			return -EINVAL;
		count = (npages + w->stride - 1) / w->stride;
		break;
	default:
		return -EINVAL;
	}

	plan->order = malloc(sizeof(*plan->order) * (w->pattern == WPC_PATTERN_SPARSE ? npages : count));
	if (!plan->order)
		return -ENOMEM;

	if (w->pattern == WPC_PATTERN_STRIDE) {
		for (uint64_t i = 0; i < count; i++)
			plan->order[i] = i * w->stride;
	} else {
		for (uint64_t i = 0; i < npages; i++)
			plan->order[i] = i;
	}
	if (w->pattern == WPC_PATTERN_RANDOM || w->pattern == WPC_PATTERN_SPARSE) {
		uint64_t state = wpc_mix64(w->seed ^ 0x5eedull);
		for (uint64_t i = npages - 1; i > 0; i--) {
			uint64_t j = wpc_mix64(state + i) % (i + 1);
			uint64_t tmp = plan->order[i];
			plan->order[i] = plan->order[j];
			plan->order[j] = tmp;
		}
	}

	plan->count = count;
	plan->overlap = w->overlap != 0;
	for (int t = 0; t <= w->threads; t++)
		plan->begin[t] = plan->overlap ? (t ? count : 0) : count * (uint64_t)t / (uint64_t)w->threads;
	return 0;
}

void wpc_plan_free(struct wpc_plan *plan)
{
	free(plan->order);
	plan->order = NULL;
}

int64_t wpc_plan_pages(const struct wpc_workload *w, uint64_t npages, uint64_t *order, uint64_t *begin)
{
	struct wpc_plan plan;
	int ret = wpc_plan_build(&plan, npages, w);

	if (ret)
		return ret;
	memcpy(order, plan.order, plan.count * sizeof(*order));
	memcpy(begin, plan.begin, ((size_t)w->threads + 1) * sizeof(*begin));
	wpc_plan_free(&plan);
	return (int64_t)plan.count;
}

int wpc_workload_writes_page(const struct wpc_workload *w, uint64_t page, int thread)
{
	return wpc_workload_writes(w, page, thread);
}

/* Releases every workload thread at once, or none if one failed to start. */
struct start_gate {
	atomic_int ready;
	atomic_int state;	/* 0 wait, 1 go, -1 abandon */
};

static bool gate_pass(struct start_gate *g)
{
	int s;

	atomic_fetch_add(&g->ready, 1);
	while (!(s = atomic_load_explicit(&g->state, memory_order_acquire)))
		sched_yield();
	return s > 0;
}

static void gate_open(struct start_gate *g, int expected, int state)
{
	while (atomic_load(&g->ready) < expected)
		sched_yield();
	atomic_store_explicit(&g->state, state, memory_order_release);
}

struct toucher {
	pthread_t tid;
	struct wpc_run *run;
	struct start_gate *gate;
	int index;
	int cpu;
	int pin_err;
	uint64_t checksum;
	struct wpc_hist hist;
};

static void *touch_thread(void *arg)
{
	struct toucher *tc = arg;
	struct wpc_run *run = tc->run;
	const struct wpc_plan *plan = &run->plan;
	uint64_t first = plan->overlap ? 0 : plan->begin[tc->index];
	uint64_t last = plan->overlap ? plan->count : plan->begin[tc->index + 1];
	const struct wpc_workload *w = &run->cfg.workload;
	uint64_t seed = w->seed;
	uint64_t sum = 0;

	if (tc->cpu >= 0)
		tc->pin_err = wpc_pin_self(tc->cpu);
	if (!gate_pass(tc->gate))
		return NULL;

	for (uint64_t i = first; i < last; i++) {
		uint64_t page = plan->order[i];
		volatile uint64_t *word = (volatile uint64_t *)(run->region + page * WPC_PAGE) +
					  wpc_word_slot(page, tc->index);
		bool write = wpc_workload_writes(w, page, tc->index);
		uint64_t value = write ? wpc_write_value(seed, page, tc->index) : 0;
		uint64_t t0 = wpc_now_ns();

		if (write)
			*word = value;
		else
			sum += *word;
		uint64_t t1 = wpc_now_ns();
		wpc_hist_record(&tc->hist, t1 - t0);
	}
	tc->checksum = sum;
	return NULL;
}

/*
 * Join the workload threads. With a strategy that can tell, check every
 * HEALTH_POLL_NS that it can still serve their faults: if not, the threads
 * stay where they are (blocked in the kernel, using run and tcs) and the run
 * is abandoned, failing now with the strategy's reason.
 */
#define HEALTH_POLL_NS 10000000L

static int join_workload(struct wpc_run *run, struct toucher *tcs, int started)
{
	for (int t = 0; t < started; t++) {
		if (!run->strategy->health) {
			pthread_join(tcs[t].tid, NULL);
			continue;
		}
		for (;;) {
			struct timespec deadline;

			clock_gettime(CLOCK_REALTIME, &deadline);
			deadline.tv_nsec += HEALTH_POLL_NS;
			if (deadline.tv_nsec >= 1000000000L) {
				deadline.tv_sec++;
				deadline.tv_nsec -= 1000000000L;
			}
			if (!pthread_timedjoin_np(tcs[t].tid, NULL, &deadline))
				break;
			int ret = run->strategy->health(run);
			if (ret) {
				run->abandoned = true;
				return ret;
			}
		}
	}
	return 0;
}

int wpc_workload_touch(struct wpc_run *run)
{
	int nthreads = run->cfg.workload.threads;
	struct toucher *tcs = calloc((size_t)nthreads, sizeof(*tcs));
	struct start_gate gate = { 0 };
	int started = 0, ret = 0;

	if (!tcs)
		return wpc_fail(run, ENOMEM, "out of memory for %d workload threads", nthreads);

	for (int t = 0; t < nthreads; t++) {
		tcs[t].run = run;
		tcs[t].gate = &gate;
		tcs[t].index = t;
		tcs[t].cpu = run->cfg.workload.pin_threads ? wpc_cpu_nth(run, t) : -1;
		wpc_hist_reset(&tcs[t].hist);
		ret = -pthread_create(&tcs[t].tid, NULL, touch_thread, &tcs[t]);
		if (ret)
			break;
		started++;
	}
	gate_open(&gate, started, started == nthreads ? 1 : -1);
	uint64_t t0 = wpc_now_ns();
	int health = join_workload(run, tcs, started);
	uint64_t t1 = wpc_now_ns();

	if (health)
		return health;	/* tcs stays: the stuck threads still write into it */

	if (ret) {
		free(tcs);
		return wpc_fail(run, -ret, "cannot start workload thread %d of %d", started, nthreads);
	}

	run->res->phase[WPC_PHASE_TOUCH].ns = (int64_t)(t1 - t0);
	run->res->app_cpu = tcs[0].cpu;
	for (int t = 0; t < nthreads; t++) {
		run->res->checksum += tcs[t].checksum;
		wpc_hist_merge(&run->res->touch, &tcs[t].hist);
		if (tcs[t].pin_err && !ret)
			ret = wpc_fail(run, -tcs[t].pin_err, "cannot pin workload thread %d to CPU %d",
				       t, tcs[t].cpu);
	}
	run->res->touched_pages = run->res->touch.count;
	free(tcs);
	return ret;
}
