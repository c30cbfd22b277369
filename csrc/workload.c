/* SPDX-License-Identifier: MIT */
/*
 * The workload: the application's first access to each page it touches.
 * Orders are built before the phase starts so the loop does nothing but
 * access (and, in an instrumented pass, read the clock and count): the
 * elapsed time of a pass with no clock inside is what the application takes.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <time.h>
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
	case WPC_PATTERN_TRACE: {
		int ret = wpc_plan_trace(plan, npages, w);

		if (ret)
			wpc_plan_free(plan);
		return ret;
	}
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
	free(plan->entry_flags);
	plan->order = NULL;
	plan->write_set = NULL;
	plan->entry_flags = NULL;
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

		if (wpc_plan_writes(&plan, i) && !(bitmap[page / 8] & (1u << (page % 8)))) {
			bitmap[page / 8] |= (uint8_t)(1u << (page % 8));
			written++;
		}
	}
	wpc_plan_free(&plan);
	return written;
}

int64_t wpc_plan_pages(const struct wpc_workload *w, uint64_t npages, uint64_t *order, uint64_t *begin,
		       uint8_t *written)
{
	struct wpc_plan plan;
	int ret = wpc_plan_build(&plan, npages, w);

	if (ret)
		return ret;
	memcpy(order, plan.order, plan.count * sizeof(*order));
	memcpy(begin, plan.begin, ((size_t)w->threads + 1) * sizeof(*begin));
	for (uint64_t i = 0; written && i < plan.count; i++)
		written[i] = wpc_plan_writes(&plan, i);
	wpc_plan_free(&plan);
	return (int64_t)plan.count;
}

/*
 * Releases every workload thread at once, or none if one failed to start.
 * Threads wait in two stages: blocked (no CPU taken) until the pass is
 * called, then spinning until all have arrived, so they start together.
 */
struct start_gate {
	pthread_mutex_t lock;
	pthread_cond_t called_cond;
	bool called;		/* under lock: come to the gate */
	atomic_int ready;
	atomic_int state;	/* 0 wait, 1 go, -1 abandon */
};

static void gate_init(struct start_gate *g)
{
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->called_cond, NULL);
	g->called = false;
	atomic_init(&g->ready, 0);
	atomic_init(&g->state, 0);
}

static void gate_destroy(struct start_gate *g)
{
	pthread_cond_destroy(&g->called_cond);
	pthread_mutex_destroy(&g->lock);
}

static bool gate_pass(struct start_gate *g)
{
	int s;

	pthread_mutex_lock(&g->lock);
	while (!g->called)
		pthread_cond_wait(&g->called_cond, &g->lock);
	pthread_mutex_unlock(&g->lock);
	atomic_fetch_add(&g->ready, 1);
	while (!(s = atomic_load_explicit(&g->state, memory_order_acquire)))
		sched_yield();
	return s > 0;
}

static void gate_open(struct start_gate *g, int expected, int state)
{
	pthread_mutex_lock(&g->lock);
	g->called = true;
	pthread_cond_broadcast(&g->called_cond);
	pthread_mutex_unlock(&g->lock);
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
	int latency;			/* enum wpc_latency of this pass */
	uint64_t accesses;
	uint64_t checksum;
	uint64_t start_ns, end_ns;	/* read once each, outside the loop */
	uint64_t clock_reads;		/* test-only count (WPCOMPARE_COUNT_CLOCK_READS) */
	struct wpc_hist hist;
};

/*
 * Where a thread's accesses are and what each one does, copied out of the
 * plan and passed by value: the compiler keeps it in registers, so a write's
 * volatile store does not force the loop to reload it from memory.
 */
struct access_plan {
	const uint64_t *order;
	const uint8_t *write_set;	/* WPC_OP_MIXED; NULL otherwise */
	const uint8_t *flags;		/* WPC_PATTERN_TRACE: per entry; NULL otherwise */
	bool write_all;
	uint8_t *region;
	uint64_t seed;
	int thread;
};

static inline volatile uint64_t *page_word(struct access_plan ap, uint64_t page)
{
	return (volatile uint64_t *)(ap.region + page * WPC_PAGE) + wpc_word_slot(page, ap.thread);
}

static inline void access_page(struct access_plan ap, uint64_t i, uint64_t *sum)
{
	uint64_t page = ap.order[i];

	if (ap.flags ? ap.flags[i] & WPC_ENTRY_WRITE : wpc_writes_page(ap.write_all, ap.write_set, page))
		*page_word(ap, page) = wpc_write_value(ap.seed, page, ap.thread);
	else
		*sum += *page_word(ap, page);
}

/*
 * The application's loop: accesses and nothing else, no clock. A loop per
 * op, so that one that only reads (or only writes) does not test which on
 * every access: measured here, the test alone cost a random read pass over
 * 512 MiB a tenth of its time.
 */
static uint64_t touch_plain(struct access_plan ap, uint64_t first, uint64_t last)
{
	uint64_t sum = 0;

	if (ap.flags || ap.write_set) {
		for (uint64_t i = first; i < last; i++)
			access_page(ap, i, &sum);
	} else if (ap.write_all) {
		for (uint64_t i = first; i < last; i++)
			*page_word(ap, ap.order[i]) = wpc_write_value(ap.seed, ap.order[i], ap.thread);
	} else {
		for (uint64_t i = first; i < last; i++)
			sum += *page_word(ap, ap.order[i]);
	}
	return sum;
}

/* A trace's entry that is not its page's first touch: replayed, never timed. */
static inline bool untimed_entry(struct access_plan ap, uint64_t i)
{
	return ap.flags && !(ap.flags[i] & WPC_ENTRY_FIRST);
}

/* Every first access between two clock reads: the whole distribution, at the price of serialising them. */
static uint64_t touch_timed(struct access_plan ap, uint64_t first, uint64_t last, struct wpc_hist *hist)
{
	uint64_t sum = 0;

	for (uint64_t i = first; i < last; i++) {
		if (untimed_entry(ap, i)) {
			access_page(ap, i, &sum);
			continue;
		}
		uint64_t t0 = wpc_now_ns();

		access_page(ap, i, &sum);
		wpc_hist_record(hist, wpc_now_ns() - t0);
	}
	return sum;
}

/*
 * Gaps between timed accesses drawn uniformly from [1, 2 * every - 1]
 * (mean `every`) from the thread's own seeded sequence: a fixed period would
 * time the same offset of every chunk or huge page of a sequential order.
 */
static uint64_t touch_sampled(struct access_plan ap, uint64_t first, uint64_t last, uint32_t every,
			      struct wpc_hist *hist)
{
	uint64_t state = wpc_mix64(ap.seed ^ 0x5a3b1e5ull ^ ((uint64_t)ap.thread << 32));
	uint64_t span = 2 * (uint64_t)every - 1;
	uint64_t sum = 0;
	uint64_t next = first + wpc_mix64(state++) % every;

	for (uint64_t i = first; i < last; i++) {
		if (i != next || untimed_entry(ap, i)) {
			access_page(ap, i, &sum);
			next += i == next;	/* a trace's repeat: time the next first touch */
			continue;
		}
		uint64_t t0 = wpc_now_ns();

		access_page(ap, i, &sum);
		wpc_hist_record(hist, wpc_now_ns() - t0);
		next = i + 1 + wpc_mix64(state++) % span;
	}
	return sum;
}

static void *touch_thread(void *arg)
{
	struct toucher *tc = arg;
	struct wpc_run *run = tc->run;
	const struct wpc_plan *plan = &run->plan;
	uint64_t first = plan->overlap ? 0 : plan->begin[tc->index];
	uint64_t last = plan->overlap ? plan->count : plan->begin[tc->index + 1];

	if (tc->cpu >= 0)
		tc->pin_err = wpc_pin_self(tc->cpu);
	if (!gate_pass(tc->gate))
		return NULL;

	/* Read after the gate: a crew parked before restore starts with no region. */
	struct access_plan ap = { .order = plan->order, .write_set = plan->write_set,
				  .flags = plan->entry_flags, .write_all = plan->write_all, .region = run->region,
				  .seed = run->cfg.workload.seed, .thread = tc->index };
	uint64_t reads_before = wpc_thread_clock_reads;

	tc->start_ns = wpc_now_ns();
	switch (tc->latency) {
	case WPC_LATENCY_EVERY:
		tc->checksum = touch_timed(ap, first, last, &tc->hist);
		break;
	case WPC_LATENCY_SAMPLE:
		tc->checksum = touch_sampled(ap, first, last, run->cfg.latency_every, &tc->hist);
		break;
	default:
		tc->checksum = touch_plain(ap, first, last);
		break;
	}
	tc->end_ns = wpc_now_ns();
	tc->accesses = plan->entry_flags ? plan->firsts[tc->index] : last - first;
	tc->clock_reads = wpc_thread_clock_reads - reads_before;
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

/* What one pass of the workload threads produced, merged. */
struct pass_totals {
	int latency;			/* in: enum wpc_latency */
	uint64_t ns;			/* first thread's start to last thread's end */
	uint64_t end_ns;		/* CLOCK_MONOTONIC at the last thread's end */
	uint64_t accesses;
	uint64_t checksum;
	uint64_t clock_reads;
	int app_cpu;
	struct wpc_hist *hist;		/* merged into; the caller's (NULL: latency NONE) */
};

/*
 * The workload threads of one pass, started (pinned, then blocked: no CPU
 * taken) before the pass is called. The first touch's crew is started
 * before restore's clock, as a restored application's threads exist before
 * its memory is restored: thread creation and pinning are in no figure,
 * touch's time to touched or any time to detached.
 */
struct wpc_crew {
	struct toucher *tcs;
	struct start_gate gate;
	int nthreads;
	int started;
	int create_err;		/* -errno of the pthread_create that failed */
};

static int crew_start(struct wpc_run *run, int latency, struct wpc_crew **out)
{
	int nthreads = run->cfg.workload.threads;
	struct wpc_crew *crew = calloc(1, sizeof(*crew));

	*out = NULL;
	if (crew)
		crew->tcs = calloc((size_t)nthreads, sizeof(*crew->tcs));
	if (!crew || !crew->tcs) {
		free(crew);
		return wpc_fail(run, ENOMEM, "out of memory for %d workload threads", nthreads);
	}
	gate_init(&crew->gate);
	crew->nthreads = nthreads;
	for (int t = 0; t < nthreads; t++) {
		struct toucher *tc = &crew->tcs[t];

		tc->run = run;
		tc->gate = &crew->gate;
		tc->index = t;
		tc->latency = latency;
		tc->cpu = run->cfg.workload.pin_threads ? wpc_cpu_nth(run, t) : -1;
		wpc_hist_reset(&tc->hist);
		crew->create_err = -pthread_create(&tc->tid, NULL, touch_thread, tc);
		if (crew->create_err)
			break;
		crew->started++;
	}
	*out = crew;
	return 0;
}

static void crew_free(struct wpc_crew *crew)
{
	gate_destroy(&crew->gate);
	free(crew->tcs);
	free(crew);
}

/* A crew whose pass never comes (restore failed, or the run ends without touch). */
static void crew_dismiss(struct wpc_crew *crew)
{
	gate_open(&crew->gate, crew->started, -1);
	for (int t = 0; t < crew->started; t++)
		pthread_join(crew->tcs[t].tid, NULL);
	crew_free(crew);
}

/*
 * One pass of the crew over its part of the order. Used for the first touch
 * and, untimed inside, for the steady-state pass, so the two differ only in
 * the state of the memory they find. The crew is freed, unless the run is
 * abandoned (its stuck threads still write into it).
 */
static int crew_pass(struct wpc_run *run, struct wpc_crew *crew, struct pass_totals *out)
{
	int nthreads = crew->nthreads;
	struct toucher *tcs = crew->tcs;
	int ret = crew->create_err;

	gate_open(&crew->gate, crew->started, crew->started == nthreads ? 1 : -1);
	int health = join_workload(run, tcs, crew->started);

	if (health)
		return health;

	if (ret) {
		int started = crew->started;

		crew_free(crew);
		return wpc_fail(run, -ret, "cannot start workload thread %d of %d", started, nthreads);
	}

	uint64_t start = UINT64_MAX, end = 0;

	out->app_cpu = tcs[0].cpu;
	out->checksum = 0;
	out->accesses = 0;
	out->clock_reads = 0;
	for (int t = 0; t < nthreads; t++) {
		start = tcs[t].start_ns < start ? tcs[t].start_ns : start;
		end = tcs[t].end_ns > end ? tcs[t].end_ns : end;
		out->checksum += tcs[t].checksum;
		out->accesses += tcs[t].accesses;
		out->clock_reads += tcs[t].clock_reads;
		if (out->hist)
			wpc_hist_merge(out->hist, &tcs[t].hist);
		if (tcs[t].pin_err && !ret)
			ret = wpc_fail(run, -tcs[t].pin_err, "cannot pin workload thread %d to CPU %d",
				       t, tcs[t].cpu);
	}
	/* A pass of no accesses still took its threads' start-up to end: never report 0. */
	out->ns = end > start ? end - start : 1;
	out->end_ns = end;
	crew_free(crew);
	return ret;
}

int wpc_workload_park(struct wpc_run *run)
{
	if (run->crew)
		return 0;
	return crew_start(run, run->cfg.latency, &run->crew);
}

void wpc_workload_dismiss(struct wpc_run *run)
{
	if (run->crew)
		crew_dismiss(run->crew);
	run->crew = NULL;
}

int wpc_workload_touch(struct wpc_run *run)
{
	struct wpc_result *res = run->res;
	struct pass_totals pass = { .latency = run->cfg.latency,
				    .hist = run->cfg.latency == WPC_LATENCY_NONE ? NULL : &res->touch };
	int ret = wpc_workload_park(run);
	struct wpc_crew *crew = run->crew;

	if (ret)
		return ret;
	run->crew = NULL;
	ret = crew_pass(run, crew, &pass);
	if (pass.ns) {
		res->phase[WPC_PHASE_TOUCH].ns = (int64_t)pass.ns;
		res->time_to_touched_ns = (int64_t)(pass.end_ns - run->restore_start_ns);
		res->app_cpu = pass.app_cpu;
		res->checksum += pass.checksum;
		res->touched_pages = pass.accesses;
		if (wpc_clock_counting)
			wpc_counter_set(run, "touch_clock_reads", pass.clock_reads);
	}
	return ret;
}

int wpc_workload_steady(struct wpc_run *run, uint64_t *ns)
{
	struct pass_totals pass = { .latency = WPC_LATENCY_NONE };
	struct wpc_crew *crew;
	int ret = crew_start(run, WPC_LATENCY_NONE, &crew);

	if (ret)
		return ret;
	ret = crew_pass(run, crew, &pass);
	*ns = pass.ns;
	return ret;
}
