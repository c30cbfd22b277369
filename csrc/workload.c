/* SPDX-License-Identifier: MIT */
/*
 * The workload: the application's first access to each page it touches,
 * every one timed. Orders are built before the phase starts so the timed loop
 * does nothing but access, read the clock and count.
 */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/*
 * WPC_OP_MIXED: exactly round(F * count) of the pages in the order are
 * written, picked by a partial Fisher-Yates shuffle with a salt of their own,
 * so the written share does not depend on the order's shape (seq or random).
 */
static int build_write_set(struct wpc_plan *plan, uint64_t npages, const struct wpc_workload *w)
{
	uint64_t writes = (uint64_t)((double)plan->count * w->write_fraction + 0.5);
	uint64_t *pick;

	plan->write_set = calloc((npages + 7) / 8, 1);
	if (!plan->write_set)
		return -ENOMEM;
	if (writes > plan->count)
		writes = plan->count;
	if (!writes)
		return 0;
	pick = malloc(sizeof(*pick) * plan->count);
	if (!pick)
		return -ENOMEM;
	memcpy(pick, plan->order, sizeof(*pick) * plan->count);

	uint64_t state = wpc_mix64(w->seed ^ 0x3717e5e7ull);
	for (uint64_t i = 0; i < writes; i++) {
		uint64_t j = i + wpc_mix64(state + i) % (plan->count - i);
		uint64_t tmp = pick[i];

		pick[i] = pick[j];
		pick[j] = tmp;
		plan->write_set[pick[i] / 8] |= (uint8_t)(1u << (pick[i] % 8));
	}
	free(pick);
	return 0;
}

int wpc_plan_build(struct wpc_plan *plan, uint64_t npages, const struct wpc_workload *w)
{
	uint64_t count;

	memset(plan, 0, sizeof(*plan));
	if (w->threads < 1 || w->threads > WPC_MAX_THREADS || !npages)
		return -EINVAL;
	if (w->op != WPC_OP_READ && w->op != WPC_OP_WRITE && w->op != WPC_OP_MIXED)
		return -EINVAL;
	if (w->op == WPC_OP_MIXED && !(w->write_fraction >= 0.0 && w->write_fraction <= 1.0))
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
	plan->write_all = w->op == WPC_OP_WRITE;
	if (w->op == WPC_OP_MIXED) {
		int ret = build_write_set(plan, npages, w);
		if (ret) {
			wpc_plan_free(plan);
			return ret;
		}
	}
	return 0;
}

void wpc_plan_free(struct wpc_plan *plan)
{
	free(plan->order);
	free(plan->write_set);
	plan->order = NULL;
	plan->write_set = NULL;
}

int64_t wpc_workload_written_pages(const struct wpc_workload *w, uint64_t npages, uint8_t *bitmap)
{
	struct wpc_plan plan;
	int64_t written = 0;
	int ret = wpc_plan_build(&plan, npages, w);

	if (ret)
		return ret;
	memset(bitmap, 0, (npages + 7) / 8);
	for (uint64_t i = 0; i < plan.count; i++) {
		uint64_t page = plan.order[i];

		if (wpc_plan_writes(&plan, page) && !(bitmap[page / 8] & (1u << (page % 8)))) {
			bitmap[page / 8] |= (uint8_t)(1u << (page % 8));
			written++;
		}
	}
	wpc_plan_free(&plan);
	return written;
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
	uint64_t seed = run->cfg.workload.seed;
	uint64_t sum = 0;

	if (tc->cpu >= 0)
		tc->pin_err = wpc_pin_self(tc->cpu);
	if (!gate_pass(tc->gate))
		return NULL;

	for (uint64_t i = first; i < last; i++) {
		uint64_t page = plan->order[i];
		bool write = wpc_plan_writes(plan, page);
		volatile uint64_t *word = (volatile uint64_t *)(run->region + page * WPC_PAGE) +
					  wpc_word_slot(page, tc->index);
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

/* What one pass of the workload threads produced, merged. */
struct pass_totals {
	uint64_t ns;
	uint64_t checksum;
	int app_cpu;
	struct wpc_hist *hist;		/* merged into; the caller's */
};

/*
 * One pass of every workload thread over its part of the order, every access
 * timed. Used for the first touch and, unchanged, for the steady-state pass,
 * so the two differ only in the state of the memory they find.
 */
static int workload_pass(struct wpc_run *run, struct pass_totals *out)
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
	for (int t = 0; t < started; t++)
		pthread_join(tcs[t].tid, NULL);
	uint64_t t1 = wpc_now_ns();

	if (ret) {
		free(tcs);
		return wpc_fail(run, -ret, "cannot start workload thread %d of %d", started, nthreads);
	}

	out->ns = t1 - t0;
	out->app_cpu = tcs[0].cpu;
	out->checksum = 0;
	for (int t = 0; t < nthreads; t++) {
		out->checksum += tcs[t].checksum;
		wpc_hist_merge(out->hist, &tcs[t].hist);
		if (tcs[t].pin_err && !ret)
			ret = wpc_fail(run, -tcs[t].pin_err, "cannot pin workload thread %d to CPU %d",
				       t, tcs[t].cpu);
	}
	free(tcs);
	return ret;
}

int wpc_workload_touch(struct wpc_run *run)
{
	struct pass_totals pass = { .hist = &run->res->touch };
	int ret = workload_pass(run, &pass);

	if (pass.ns) {
		run->res->phase[WPC_PHASE_TOUCH].ns = (int64_t)pass.ns;
		run->res->app_cpu = pass.app_cpu;
		run->res->checksum += pass.checksum;
		run->res->touched_pages = run->res->touch.count;
	}
	return ret;
}

int wpc_workload_steady(struct wpc_run *run, uint64_t *ns)
{
	struct pass_totals pass = { .hist = malloc(sizeof(*pass.hist)) };
	int ret;

	if (!pass.hist)
		return wpc_fail(run, ENOMEM, "out of memory for the steady-state pass");
	wpc_hist_reset(pass.hist);
	ret = workload_pass(run, &pass);
	free(pass.hist);
	*ns = pass.ns;
	return ret;
}
