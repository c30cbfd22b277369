/* SPDX-License-Identifier: MIT */
/*
 * userfaultfd restore strategies served by a handler thread:
 *
 *   uffd         anonymous region, MISSING faults resolved by UFFDIO_COPY from
 *                a read-only shared view of the image
 *   uffd-huge    the same on MAP_HUGETLB 2 MiB pages
 *   uffd-hybrid  uffd plus proactive loader threads (CRIU lazy-pages style),
 *                optionally prefetching a recorded fault order first
 *   uffd-move    pages pread into a staging buffer and moved in (UFFDIO_MOVE)
 *   uffd-minor   the image copied into a memfd, mapped MAP_PRIVATE: MINOR
 *                faults map its pages (UFFDIO_CONTINUE), the first write
 *                copies on write
 *
 * The region is anonymous from the start (except uffd-minor's), but until
 * every page is loaded the process still needs the image: fixup loads what
 * is left and drops the view, and only then is the run detached.
 * uffd-sigbus lives in strategy_uffd_sigbus.c.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "uffd_loader.h"

#define CHUNK_CHOICES "4K|8K|16K|32K|64K|128K|256K|512K|1M|2M"

/*
 * The parameters of the whole family (one struct: each row's specs name the
 * fields it takes; the others stay zero).
 */
struct uffd_params {
	uint64_t chunk;			/* fault-around bytes; 0: one page of the region */
	int handler_cpu;		/* enum wpc_handler_cpu */
	int kernel_faults;		/* enum wpc_kernel_faults */
	int64_t fault_delay_us;
	/* uffd-hybrid only */
	int64_t loader_threads;
	int order;			/* enum wpc_loader_order */
	char path[WPC_PARAM_STRING_LEN];
	uint64_t page;			/* region page size: 4 KiB or 2 MiB (hugetlb) */
	/* uffd-minor only: the memfd copy at restore */
	struct wpc_fill_params memfd_fill;
	int zero;			/* enum wpc_zero_mode (uffd, uffd-move, uffd-hybrid) */
};

#define PARAM_CHUNK								\
	{ "chunk", WPC_PARAM_SIZE, CHUNK_CHOICES, "4K",				\
	  "bytes resolved per fault (fault-around), the aligned block around the "	\
	  "faulting page", offsetof(struct uffd_params, chunk), 0, 0 }
#define PARAM_HANDLER_CPU WPC_HANDLER_CPU_PARAM_SPEC(struct uffd_params)
#define PARAM_ZERO WPC_ZERO_PARAM_SPEC(struct uffd_params)
#define PARAM_KERNEL_FAULTS							\
	{ "kernel-faults", WPC_PARAM_CHOICE, WPC_KFAULTS_CHOICES, "auto",	\
	  "also serve faults taken inside syscalls (needs privilege); no: "	\
	  "UFFD_USER_MODE_ONLY, a syscall on a page not yet loaded fails with EFAULT; " \
	  "auto: yes where permitted", offsetof(struct uffd_params, kernel_faults), 0, 0 }
#define PARAM_FAULT_DELAY							\
	{ "fault-delay", WPC_PARAM_INT, NULL, "0",				\
	  "microseconds between a fault's arrival and the handler reading it (and "	\
	  "any others queued meanwhile): a simulated remote page source; tests use it " \
	  "to hold faults in flight",						\
	  offsetof(struct uffd_params, fault_delay_us), 0, 10000000 }

struct uffd_kind {
	enum wpc_uffd_fill fill;
	uint64_t register_mode;
};

/* ---- what each row needs ---- */

/* Placing units with UFFDIO_COPY; the range offers UFFDIO_WAKE with it. */
#define COPY_IOCTLS (1ull << _UFFDIO_COPY)

static const enum wpc_uffd_access kernel_faults_access[] = {
	[WPC_KFAULTS_AUTO] = WPC_UFFD_AUTO,
	[WPC_KFAULTS_YES] = WPC_UFFD_KERNEL_MODE,
	[WPC_KFAULTS_NO] = WPC_UFFD_USER_MODE,
};

static void uffd_needs_for(const void *params, struct wpc_needs *needs)
{
	const struct uffd_params *p = params;

	needs->uffd = kernel_faults_access[p->kernel_faults];
	needs->without_privilege = "kernel-faults=auto or no works without";
	needs->other_cpu = p->handler_cpu == WPC_HANDLER_OTHER;
	wpc_uffd_zero_needs(p->zero, needs);
	if (p->page == WPC_HUGE_PAGE) {
		needs->uffd_features |= UFFD_FEATURE_MISSING_HUGETLBFS;
		needs->hugetlb_2m = true;
	}
}

static void uffd_minor_needs_for(const void *params, struct wpc_needs *needs)
{
	const struct uffd_params *p = params;

	uffd_needs_for(params, needs);
	wpc_fill_needs(&p->memfd_fill, WPC_FILL_INTO_MEMFD, needs);
}

static int uffd_hybrid_check(const void *params, char *why, size_t len)
{
	const struct uffd_params *p = params;

	if (p->order == WPC_ORDER_RECORDED && !p->path[0]) {
		wpc_why(why, len, "uffd-hybrid: order=recorded needs path=FILE, written by an "
			"earlier run with order=sequential,path=FILE");
		return -EINVAL;
	}
	if (p->zero == WPC_ZERO_ZEROPAGE && p->page == WPC_HUGE_PAGE) {
		wpc_why(why, len, "uffd-hybrid: zero=zeropage needs page=4K (UFFDIO_ZEROPAGE has no "
			"hugetlb form); drop one of them");
		return -EINVAL;
	}
	return 0;
}

/* ---- the region ---- */

static int map_anonymous(struct wpc_run *run, struct wpc_uffd *u)
{
	bool huge = u->unit == WPC_HUGE_PAGE;
	void *p = mmap(NULL, u->map_len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | (huge ? MAP_HUGETLB : 0), -1, 0);

	if (p == MAP_FAILED && huge && errno == ENOMEM) {
		struct wpc_huge_pool pool;
		char why[WPC_REASON_LEN];

		if (wpc_huge_pool(&pool))
			return wpc_fail(run, ENOMEM, "mmap of %zu bytes of 2 MiB huge pages: out of "
					"huge pages", u->map_len);
		wpc_huge_pool_shortfall(&pool, (long)(u->map_len / WPC_HUGE_PAGE), why, sizeof(why));
		return wpc_fail(run, ENOMEM, "mmap of the hugetlb region failed: %s", why);
	}
	if (p == MAP_FAILED)
		return wpc_fail(run, errno, "mmap of a %zu-byte %sregion: %s", u->map_len,
				huge ? "hugetlb " : "", strerror(errno));
	run->region = p;
	return 0;
}

/*
 * uffd-minor's source: the image copied once into a memfd (the state a VMM
 * or a checkpointer that keeps images in tmpfs starts from; memfd.c). Restore
 * pays for the copy; the region then maps the memfd MAP_PRIVATE, so a read
 * maps the shmem page itself and a write copies it, leaving the memfd
 * untouched.
 */
static int map_memfd(struct wpc_run *run, struct wpc_uffd *u)
{
	const struct uffd_params *params = run->params;
	void *p;
	int ret = wpc_run_image_memfd(run, u->map_len, &params->memfd_fill, &u->memfd);

	if (ret)
		return ret;
	p = mmap(NULL, u->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE, u->memfd, 0);
	if (p == MAP_FAILED)
		return wpc_fail(run, errno, "mmap of the memfd region: %s", strerror(errno));
	run->region = p;
	return 0;
}

/* ---- restore ---- */

static int restore_with(struct wpc_run *run, const struct uffd_kind *k, size_t unit)
{
	const struct uffd_params *p = run->params;
	struct wpc_uffd *u = calloc(1, sizeof(*u));
	int ret;

	if (!u)
		return wpc_fail(run, ENOMEM, "out of memory for the userfaultfd state");
	run->priv = u;
	ret = wpc_uffd_init(run, u, k->fill, unit);
	if (ret)
		return ret;
	u->chunk = p->chunk > unit ? p->chunk : unit;
	u->fault_delay_ns = (uint64_t)p->fault_delay_us * 1000u;

	ret = k->fill == WPC_FILL_CONTINUE ? map_memfd(run, u) : map_anonymous(run, u);
	if (!ret && p->zero == WPC_ZERO_ZEROPAGE)
		ret = wpc_uffd_map_zeros(u);
	if (!ret)
		ret = wpc_uffd_register(u, k->register_mode);
	if (!ret && k->fill == WPC_FILL_COPY)
		ret = wpc_uffd_map_view(u);
	if (!ret && k->fill == WPC_FILL_MOVE) {
		u->staging = mmap(NULL, u->chunk, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (u->staging == MAP_FAILED) {
			u->staging = NULL;
			ret = wpc_fail(run, errno, "mmap of the staging buffer: %s", strerror(errno));
		}
	}
	if (!ret)
		ret = wpc_uffd_start_handler(u, p->handler_cpu);
	return ret;
}

static const struct uffd_kind kind_copy = {
	.fill = WPC_FILL_COPY, .register_mode = UFFDIO_REGISTER_MODE_MISSING,
};
static const struct uffd_kind kind_move = {
	.fill = WPC_FILL_MOVE, .register_mode = UFFDIO_REGISTER_MODE_MISSING,
};
static const struct uffd_kind kind_minor = {
	.fill = WPC_FILL_CONTINUE, .register_mode = UFFDIO_REGISTER_MODE_MINOR,
};

static int uffd_restore(struct wpc_run *run)
{
	return restore_with(run, &kind_copy, WPC_PAGE);
}

static int uffd_huge_restore(struct wpc_run *run)
{
	return restore_with(run, &kind_copy, WPC_HUGE_PAGE);
}

static int uffd_move_restore(struct wpc_run *run)
{
	return restore_with(run, &kind_move, WPC_PAGE);
}

static int uffd_minor_restore(struct wpc_run *run)
{
	return restore_with(run, &kind_minor, WPC_PAGE);
}

static int uffd_hybrid_restore(struct wpc_run *run)
{
	const struct uffd_params *p = run->params;
	int ret = restore_with(run, &kind_copy, p->page == WPC_HUGE_PAGE ? WPC_HUGE_PAGE : WPC_PAGE);
	struct wpc_uffd *u = run->priv;

	if (ret)
		return ret;
	if (p->order == WPC_ORDER_RECORDED)
		ret = wpc_uffd_load_order(u, p->path);
	else if (p->path[0])
		ret = wpc_uffd_record_faults(u);
	if (!ret)
		ret = wpc_uffd_start_loaders(u, (int)p->loader_threads);
	return ret;
}

/* ---- fixup and teardown ---- */

static int uffd_fixup(struct wpc_run *run)
{
	struct wpc_uffd *u = run->priv;
	int ret = wpc_uffd_finish(u);

	wpc_uffd_publish(u);
	return ret;
}

/*
 * Loading the rest runs alongside the application (its faults are still
 * served); so do unmapping the view and stopping the handler. Nothing in this
 * fixup needs the application stopped, except uffd-minor's copy-and-remap.
 */
static int64_t uffd_fixup_pause_ns(struct wpc_run *run)
{
	struct wpc_uffd *u = run->priv;

	return u ? (int64_t)u->pause_ns : run->res->phase[WPC_PHASE_FIXUP].ns;
}

static int uffd_hybrid_fixup(struct wpc_run *run)
{
	const struct uffd_params *p = run->params;
	int ret = uffd_fixup(run);

	/* After detaching, so the file write is not counted as time to detached. */
	if (!ret && p->order == WPC_ORDER_SEQUENTIAL && p->path[0])
		ret = wpc_uffd_save_order(run->priv, p->path);
	return ret;
}

/*
 * Every page is mapped (read-only where only read): copy the region into
 * anonymous memory and move it over, then the memfd is mapped nowhere.
 */
static int uffd_minor_fixup(struct wpc_run *run)
{
	static const struct wpc_fill_params published_fixup = { .threads = 1 };	/* memcpy */
	struct wpc_uffd *u = run->priv;
	int ret = uffd_fixup(run);

	if (ret)
		return ret;
	/* A write landing between the copy and the remap would be lost: the application waits. */
	uint64_t t0 = wpc_now_ns();
	/* fill.c's whole-region copy as `mmap` publishes it; its reason says what failed. */
	ret = wpc_fill_copy_and_remap(run, &published_fixup, run->region, u->map_len);
	u->pause_ns = wpc_now_ns() - t0;
	wpc_counter_set(run, "fixup_pause_ns", u->pause_ns);
	if (ret)
		return ret;
	close(u->memfd);
	u->memfd = -1;
	wpc_run_mark_detached(run);
	return 0;
}

static int uffd_health(struct wpc_run *run)
{
	return run->priv ? wpc_uffd_health(run->priv) : 0;
}

static void uffd_teardown(struct wpc_run *run)
{
	struct wpc_uffd *u = run->priv;

	if (u)
		wpc_uffd_teardown(u);
	free(u);
	run->priv = NULL;
}

/* ---- the rows ---- */

/* uffd and uffd-move. */
static const struct wpc_param_spec uffd_param_specs[] = {
	PARAM_CHUNK,
	PARAM_HANDLER_CPU,
	PARAM_KERNEL_FAULTS,
	PARAM_FAULT_DELAY,
	PARAM_ZERO,
	{ 0 },
};

/*
 * uffd-minor: its pages are the memfd's, so no zero= (a zero page there is a
 * shmem page); fill= and threads= are its memfd copy's.
 */
static const struct wpc_param_spec uffd_minor_param_specs[] = {
	PARAM_CHUNK,
	PARAM_HANDLER_CPU,
	PARAM_KERNEL_FAULTS,
	PARAM_FAULT_DELAY,
	WPC_FILL_INTO_MEMFD_PARAM_SPECS(struct uffd_params, memfd_fill),
	{ 0 },
};

static const struct wpc_param_spec uffd_huge_param_specs[] = {
	PARAM_HANDLER_CPU,
	PARAM_KERNEL_FAULTS,
	PARAM_FAULT_DELAY,
	{ 0 },
};

static const struct wpc_param_spec uffd_hybrid_param_specs[] = {
	PARAM_CHUNK,
	PARAM_HANDLER_CPU,
	{ "loader-threads", WPC_PARAM_INT, NULL, "1",
	  "proactive loader threads (0: none, e.g. to record a complete fault order)",
	  offsetof(struct uffd_params, loader_threads), 0, WPC_LOADER_MAX_THREADS },
	{ "order", WPC_PARAM_CHOICE, WPC_ORDER_CHOICES, "sequential",
	  "what loaders load: the region in address order from its end down (sequential), or "
	  "first the fault order an earlier run recorded in path, then the rest so",
	  offsetof(struct uffd_params, order), 0, 0 },
	{ "path", WPC_PARAM_STRING, NULL, "",
	  "fault-order file: order=sequential writes this run's fault order there, "
	  "order=recorded prefetches it", offsetof(struct uffd_params, path), 0, 0 },
	{ "page", WPC_PARAM_SIZE, "4K|2M", "4K",
	  "region page size; 2M uses MAP_HUGETLB pages", offsetof(struct uffd_params, page), 0, 0 },
	PARAM_KERNEL_FAULTS,
	PARAM_FAULT_DELAY,
	PARAM_ZERO,
	{ 0 },
};

const struct wpc_strategy wpc_strategy_uffd = {
	.name = "uffd",
	.family = "userfaultfd",
	.description = "anonymous region; a handler thread resolves MISSING faults with "
		       "UFFDIO_COPY from a read-only view of the image; fixup loads the rest",
	.params = uffd_param_specs,
	.params_size = sizeof(struct uffd_params),
	.needs = { .uffd = WPC_UFFD_AUTO, .uffd_ioctls = COPY_IOCTLS },
	.needs_for = uffd_needs_for,
	.restore = uffd_restore,
	.fixup = uffd_fixup,
	.fixup_pause_ns = uffd_fixup_pause_ns,
	.teardown = uffd_teardown,
	.health = uffd_health,
};

const struct wpc_strategy wpc_strategy_uffd_huge = {
	.name = "uffd-huge",
	.family = "userfaultfd",
	.description = "uffd on MAP_HUGETLB 2 MiB pages: one UFFDIO_COPY per 2 MiB",
	.params = uffd_huge_param_specs,
	.params_size = sizeof(struct uffd_params),
	.needs = { .uffd = WPC_UFFD_AUTO, .uffd_features = UFFD_FEATURE_MISSING_HUGETLBFS,
		   .uffd_ioctls = COPY_IOCTLS, .hugetlb_2m = true },
	.needs_for = uffd_needs_for,
	.restore = uffd_huge_restore,
	.fixup = uffd_fixup,
	.fixup_pause_ns = uffd_fixup_pause_ns,
	.teardown = uffd_teardown,
	.health = uffd_health,
};

const struct wpc_strategy wpc_strategy_uffd_hybrid = {
	.name = "uffd-hybrid",
	.family = "userfaultfd",
	.description = "uffd plus proactive loader threads on CPUs other than the handler's "
		       "(64 KiB growing to 4 MiB while no fault interrupts, CRIU lazy-pages "
		       "style), optionally prefetching a recorded fault order first; detached "
		       "when the loaders finish",
	.params = uffd_hybrid_param_specs,
	.params_size = sizeof(struct uffd_params),
	.needs = { .uffd = WPC_UFFD_AUTO, .uffd_ioctls = COPY_IOCTLS },
	.check = uffd_hybrid_check,
	.needs_for = uffd_needs_for,
	.restore = uffd_hybrid_restore,
	.fixup = uffd_hybrid_fixup,
	.fixup_pause_ns = uffd_fixup_pause_ns,
	.teardown = uffd_teardown,
	.health = uffd_health,
};

const struct wpc_strategy wpc_strategy_uffd_move = {
	.name = "uffd-move",
	.family = "userfaultfd",
	.description = "anonymous region; faults resolved by pread into a staging buffer and "
		       "UFFDIO_MOVE of its pages; the image is never mapped",
	.params = uffd_param_specs,
	.params_size = sizeof(struct uffd_params),
	.needs = { .uffd = WPC_UFFD_AUTO, .uffd_features = UFFD_FEATURE_MOVE,
		   .uffd_ioctls = 1ull << _UFFDIO_MOVE },
	.needs_for = uffd_needs_for,
	.restore = uffd_move_restore,
	.fixup = uffd_fixup,
	.fixup_pause_ns = uffd_fixup_pause_ns,
	.teardown = uffd_teardown,
	.health = uffd_health,
};

const struct wpc_strategy wpc_strategy_uffd_minor = {
	.name = "uffd-minor",
	.family = "userfaultfd",
	.description = "image copied into a memfd at restore, mapped MAP_PRIVATE; MINOR faults "
		       "map its pages (UFFDIO_CONTINUE), the first write copies on write; fixup "
		       "copies the region off the memfd",
	.params = uffd_minor_param_specs,
	.params_size = sizeof(struct uffd_params),
	.needs = { .uffd = WPC_UFFD_AUTO, .uffd_features = UFFD_FEATURE_MINOR_SHMEM,
		   .uffd_ioctls = 1ull << _UFFDIO_CONTINUE },
	.needs_for = uffd_minor_needs_for,
	.restore = uffd_minor_restore,
	.fixup = uffd_minor_fixup,
	.fixup_pause_ns = uffd_fixup_pause_ns,
	.teardown = uffd_teardown,
	.health = uffd_health,
};
