/* SPDX-License-Identifier: MIT */
/*
 * One run: restore -> touch -> fixup -> verify, each phase timed here, with
 * its fault counts and the region's VMA count recorded around it.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

static int open_image(struct wpc_run *run, char *why, size_t len)
{
	struct stat st;

	/* No symlink: a cached image's name must be the file itself (user images come resolved). */
	run->image_fd = open(run->image_path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (run->image_fd < 0) {
		int err = errno;
		wpc_why(why, len, "cannot open image %s: %s", run->image_path, strerror(err));
		return -err;
	}
	if (fstat(run->image_fd, &st) < 0) {
		int err = errno;
		wpc_why(why, len, "cannot stat image %s: %s", run->image_path, strerror(err));
		return -err;
	}
	if (!S_ISREG(st.st_mode)) {
		wpc_why(why, len, "image %s is not a regular file: give a file holding the memory image",
			run->image_path);
		return -EINVAL;
	}
	if (st.st_size == 0) {
		wpc_why(why, len, "image %s is empty: give a file with at least one byte", run->image_path);
		return -EINVAL;
	}
	if (run->cfg.image_bytes && (uint64_t)st.st_size != run->cfg.image_bytes) {
		wpc_why(why, len, "image %s is %lld bytes now, not the %llu it had when wpcompare opened "
			"it: something is writing to it; give a copy nothing writes to", run->image_path,
			(long long)st.st_size, (unsigned long long)run->cfg.image_bytes);
		return -ESTALE;
	}
	run->image_dev = st.st_dev;
	run->image_ino = st.st_ino;
	run->image_size = (uint64_t)st.st_size;
	run->region_len = wpc_align_up(run->image_size, WPC_PAGE);
	run->npages = run->region_len / WPC_PAGE;
	return 0;
}

/* The earlier cycles of a chain, kept by the run: the caller's array need not outlive create. */
static int copy_history(struct wpc_run *run, const struct wpc_config *cfg, char *why, size_t len)
{
	run->cfg.history = NULL;
	if (!cfg->history) {
		run->cfg.history_len = 0;
		return 0;
	}
	if (cfg->history_len < 0 ||
	    (cfg->history_len && cfg->image_seed < 0 && !cfg->base_image_path)) {
		wpc_why(why, len, "a run with earlier cycles needs its base image: a generated one "
			"(image_seed >= 0) or the file it started from (base_image_path), and a "
			"history length >= 0");
		return -EINVAL;
	}
	run->history = calloc((size_t)cfg->history_len + 1, sizeof(*run->history));
	if (!run->history) {
		wpc_why(why, len, "out of memory for the history of %d cycles", cfg->history_len);
		return -ENOMEM;
	}
	memcpy(run->history, cfg->history, sizeof(*run->history) * (size_t)cfg->history_len);
	run->cfg.history = run->history;
	return 0;
}

int wpc_run_create(const struct wpc_config *cfg, struct wpc_run **out, char *why, size_t len)
{
	struct wpc_run *run = calloc(1, sizeof(*run));
	int ret;

	*out = NULL;
	if (!run || !(run->res = calloc(1, sizeof(*run->res)))) {
		free(run);
		wpc_why(why, len, "out of memory creating a run");
		return -ENOMEM;
	}
	run->image_fd = -1;
	run->cfg = *cfg;
	run->image_path = strdup(cfg->image_path ? cfg->image_path : "");
	run->cfg.image_path = run->image_path;
	run->base_image_path = cfg->base_image_path ? strdup(cfg->base_image_path) : NULL;
	run->cfg.base_image_path = run->base_image_path;

	if (cfg->latency < WPC_LATENCY_NONE || cfg->latency > WPC_LATENCY_SAMPLE ||
	    (cfg->latency == WPC_LATENCY_SAMPLE && cfg->latency_every < 2)) {
		wpc_why(why, len, "latency must be none, every or sample with a distance >= 2 (not %d, %u)",
			cfg->latency, cfg->latency_every);
		ret = -EINVAL;
		goto fail;
	}
	/* Parsed once: by the caller (cfg->choice, as the worker's probe had it), or here. */
	ret = cfg->choice ? wpc_choice_copy(cfg->choice, &run->choice, why, len)
			  : wpc_choice_parse(cfg->strategy, cfg->params, &run->choice, why, len);
	if (ret)
		goto fail;
	run->strategy = run->choice->strategy;
	run->params = run->choice->params;
	/* The caller's strings and choice need not outlive create: the run keeps its own. */
	run->cfg.strategy = run->strategy->name;
	run->cfg.params = NULL;
	run->cfg.choice = NULL;
	ret = wpc_inject_load(why, len);
	if (ret)
		goto fail;
	ret = copy_history(run, cfg, why, len);
	if (ret)
		goto fail;
	ret = open_image(run, why, len);
	if (ret)
		goto fail;
	ret = wpc_plan_build(&run->plan, run->npages, &cfg->workload);
	if (ret) {
		wpc_why(why, len, ret == -ENOMEM ? "out of memory for the access order"
			: "invalid workload: threads must be 1..%d, sparse fraction in (0, 1], "
			  "stride >= 1, write fraction in [0, 1], a trace's pages inside the region "
			  "and its threads below the workload's", WPC_MAX_THREADS);
		goto fail;
	}
	wpc_run_load_cpus(run);

	struct wpc_result *res = run->res;
	for (int i = 0; i < WPC_PHASE_COUNT; i++) {
		res->phase[i].ns = -1;
		res->phase[i].vmas = -1;
	}
	res->time_to_detached_ns = -1;
	res->time_to_touched_ns = -1;
	res->latency = cfg->latency;
	res->latency_every = cfg->latency == WPC_LATENCY_SAMPLE ? cfg->latency_every : 0;
	res->first_mismatch_page = -1;
	res->app_cpu = -1;
	res->handler_cpu = -1;
	res->image_bytes = run->image_size;
	res->region_bytes = run->region_len;
	res->tail_bytes = run->region_len - run->image_size;
	res->pages = run->npages;
	wpc_hist_reset(&res->touch);
	wpc_hist_reset(&res->handler);

	*out = run;
	return 0;
fail:
	wpc_run_destroy(run);
	return ret;
}

struct phase_clock {
	struct rusage ru;
	uint64_t t0;
};

static void phase_begin(struct phase_clock *pc)
{
	getrusage(RUSAGE_SELF, &pc->ru);
	pc->t0 = wpc_now_ns();
}

static void phase_end(struct wpc_run *run, enum wpc_phase phase, const struct phase_clock *pc,
		      bool set_time)
{
	uint64_t t1 = wpc_now_ns();
	struct rusage ru;
	struct wpc_phase_stats *ps = &run->res->phase[phase];

	getrusage(RUSAGE_SELF, &ru);
	if (set_time)
		ps->ns = (int64_t)(t1 - pc->t0);
	ps->minflt = (uint64_t)(ru.ru_minflt - pc->ru.ru_minflt);
	ps->majflt = (uint64_t)(ru.ru_majflt - pc->ru.ru_majflt);

	/*
	 * The region's VMAs, from /proc/self/maps: not after restore or touch,
	 * whose ends lie inside time to detached (the worker's maps are ~37 KiB
	 * of text for the kernel to generate, 37 read()s, in the ~1 ms measured
	 * between restore's end and touch's start), only once the clocks that
	 * matter have stopped.
	 */
	struct wpc_maps_report maps;
	if ((phase == WPC_PHASE_FIXUP || phase == WPC_PHASE_VERIFY) && run->region &&
	    !wpc_maps_inspect(run, &maps))
		ps->vmas = maps.region_vmas;
}

int wpc_run_restore(struct wpc_run *run)
{
	struct phase_clock pc;
	int ret;

	if (run->restored)
		return wpc_fail(run, EALREADY, "restore called twice");
	run->restored = true;
	if (run->strategy->prepare) {
		ret = run->strategy->prepare(run);
		if (ret)
			return ret;
	}
	ret = wpc_workload_park(run);
	if (ret)
		return ret;
	phase_begin(&pc);
	run->restore_start_ns = pc.t0;
	ret = run->strategy->restore(run);
	phase_end(run, WPC_PHASE_RESTORE, &pc, true);
	return ret;
}

int wpc_run_touch(struct wpc_run *run)
{
	struct phase_clock pc;
	int ret;

	if (!run->region)
		return wpc_fail(run, EINVAL, "touch before a successful restore");
	if (run->abandoned)
		return wpc_fail(run, EINVAL, "touch after the workload was abandoned");
	phase_begin(&pc);
	ret = wpc_workload_touch(run);	/* times itself: its threads were started before restore */
	phase_end(run, WPC_PHASE_TOUCH, &pc, false);
	return ret;
}

int wpc_run_fixup(struct wpc_run *run)
{
	struct phase_clock pc;
	int ret = 0;

	if (!run->region)
		return wpc_fail(run, EINVAL, "fixup before a successful restore");
	if (run->abandoned)
		return wpc_fail(run, EINVAL, "fixup after the workload was abandoned in touch");
	phase_begin(&pc);
	if (run->strategy->fixup)
		ret = run->strategy->fixup(run);
	phase_end(run, WPC_PHASE_FIXUP, &pc, true);
	run->fixed_up = ret == 0;
	if (!ret) {
		uint64_t at = atomic_load(&run->detached_at_ns);
		if (!at)
			at = pc.t0 + (uint64_t)run->res->phase[WPC_PHASE_FIXUP].ns;
		run->res->time_to_detached_ns = (int64_t)(at - run->restore_start_ns);
	}
	return ret;
}

int wpc_run_verify(struct wpc_run *run)
{
	struct phase_clock pc;
	struct wpc_maps_report maps;
	struct rusage ru;
	int ret, dirty_ret = 0;

	if (!run->region)
		return wpc_fail(run, EINVAL, "verify before a successful restore");
	if (run->abandoned)
		return wpc_fail(run, EINVAL, "verify after the workload was abandoned in touch");
	wpc_inject_lose_write(run);
	phase_begin(&pc);
	ret = wpc_verify_bytes(run);
	if (run->strategy->dirty_pages)
		dirty_ret = wpc_verify_dirty(run);
	phase_end(run, WPC_PHASE_VERIFY, &pc, true);

	/* A detach check that could not run is an error, never a "not detached". */
	int maps_ret = wpc_maps_inspect(run, &maps);

	if (maps_ret == 0) {
		run->res->image_mapped = maps.image_mapped;
		run->res->foreign_vmas = maps.foreign_vmas;
		run->res->detached = !maps.image_mapped && maps.foreign_vmas == 0;
	} else {
		maps_ret = wpc_maps_fail(run, maps_ret);
	}
	if (!run->res->detached)
		run->res->time_to_detached_ns = -1;
	getrusage(RUSAGE_SELF, &ru);
	run->res->peak_rss_kb = (uint64_t)ru.ru_maxrss;
	return ret ? ret : dirty_ret ? dirty_ret : maps_ret;
}

int wpc_run_detached(struct wpc_run *run)
{
	return run->fixed_up || atomic_load(&run->detached_at_ns) != 0;
}

int64_t wpc_run_fixup_pause_ns(struct wpc_run *run)
{
	int64_t fixup_ns = run->res->phase[WPC_PHASE_FIXUP].ns;

	if (fixup_ns < 0 || !run->strategy->fixup_pause_ns)
		return fixup_ns;
	return run->strategy->fixup_pause_ns(run);
}

int wpc_run_steady(struct wpc_run *run, int64_t *ns)
{
	uint64_t pass_ns = 0;
	int ret;

	*ns = -1;
	if (!run->region)
		return wpc_fail(run, EINVAL, "steady-state pass before a successful restore");
	if (run->abandoned)
		return wpc_fail(run, EINVAL, "steady-state pass after the workload was abandoned in touch");
	ret = wpc_workload_steady(run, &pass_ns);
	if (!ret)
		*ns = (int64_t)pass_ns;
	return ret;
}

struct wpc_result *wpc_run_result(struct wpc_run *run)
{
	return run->res;
}

int wpc_run_region(struct wpc_run *run, uintptr_t *addr, uint64_t *len)
{
	if (!run->region)
		return -ENOENT;
	*addr = (uintptr_t)run->region;
	*len = run->region_len;
	return 0;
}

void wpc_run_destroy(struct wpc_run *run)
{
	if (!run)
		return;
	/* Threads blocked in the region still use it, the plan and the result: leave all to exit. */
	if (run->abandoned)
		return;
	wpc_workload_dismiss(run);
	if (run->restored && !run->torn_down && run->strategy->teardown) {
		run->torn_down = true;
		run->strategy->teardown(run);
	}
	if (run->image_fd >= 0)
		close(run->image_fd);
	wpc_plan_free(&run->plan);
	free(run->image_path);
	free(run->base_image_path);
	wpc_choice_free(run->choice);
	free(run->history);
	free(run->res);
	free(run);
}
