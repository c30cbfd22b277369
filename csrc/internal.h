/* SPDX-License-Identifier: MIT */
/*
 * Shared by the C core's files, never by Python: the run context, the
 * strategy table's row type, and small helpers.
 */
#ifndef WPC_INTERNAL_H
#define WPC_INTERNAL_H

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include <time.h>

#include "wpcompare.h"

#define WPC_PAGE WPC_IMAGE_PAGE
#define WPC_HUGE_PAGE (2UL << 20)
#define WPC_WORDS_PER_PAGE (WPC_PAGE / 8)
/* Thread t's word in page p: (p * 37) % WPC_SLOT_SPAN + t, so threads never share a word. */
#define WPC_SLOT_SPAN (WPC_WORDS_PER_PAGE - WPC_MAX_THREADS)

#define WPC_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/*
 * Test-only (WPCOMPARE_COUNT_CLOCK_READS=1, read by wpc_inject_load): every
 * wpc_now_ns() adds one to its thread's count, so a test can prove that the
 * uninstrumented touch loop reads no clock. Initial-exec TLS: no allocation,
 * safe where a signal handler reads the clock. Unset, one predictable branch.
 */
extern bool wpc_clock_counting;
extern __thread uint64_t wpc_thread_clock_reads __attribute__((tls_model("initial-exec")));

static inline uint64_t wpc_now_ns(void)
{
	struct timespec ts;

	if (__builtin_expect(wpc_clock_counting, 0))
		wpc_thread_clock_reads++;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* splitmix64: the one mixing function behind every seeded choice. */
static inline uint64_t wpc_mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static inline size_t wpc_word_slot(uint64_t page, int thread)
{
	return (size_t)((page * 37) % WPC_SLOT_SPAN) + (size_t)thread;
}

static inline uint64_t wpc_write_value(uint64_t seed, uint64_t page, int thread)
{
	return wpc_mix64(seed ^ wpc_mix64(page * 0x100000001b3ull + (uint64_t)thread + 1));
}

static inline uint64_t wpc_align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

/*
 * Write one line to a caller's why buffer (NULL or 0 length: nowhere). Here,
 * not in context.c: every layer words reasons, the lowest (image.c, probe.c,
 * fault_inject.c) too, and this depends on nothing.
 */
static inline __attribute__((format(printf, 3, 4))) void wpc_why(char *why, size_t len,
								 const char *fmt, ...)
{
	va_list ap;

	if (!why || !len)
		return;
	va_start(ap, fmt);
	vsnprintf(why, len, fmt, ap);
	va_end(ap);
}

/* ---- parameters ---- */

enum wpc_param_kind {
	WPC_PARAM_SIZE,
	WPC_PARAM_INT,
	WPC_PARAM_CHOICE,
	WPC_PARAM_STRING,
};

#define WPC_PARAM_STRING_LEN 256

/*
 * One parameter of a strategy, parsed (params.c) into the strategy's own
 * parameter struct at `offset`, as its kind says: SIZE a uint64_t, INT an
 * int64_t, CHOICE an int (the index of the value in `choices`, so a strategy
 * keeps an enum in the order of its choices string), STRING a
 * char[WPC_PARAM_STRING_LEN].
 */
struct wpc_param_spec {
	const char *name;
	enum wpc_param_kind kind;
	const char *choices;	/* "a|b|c"; for sizes, the allowed sizes; NULL: any */
	const char *default_value;
	const char *help;
	size_t offset;		/* offsetof(the strategy's parameter struct, field) */
	int64_t min, max;	/* WPC_PARAM_INT, WPC_PARAM_SIZE (0, 0: unbounded) */
};

/* Handler placement, shared by every strategy with a handler thread (handler.h says what each means). */
enum wpc_handler_cpu {
	WPC_HANDLER_SAME,
	WPC_HANDLER_OTHER,
	WPC_HANDLER_ANY,
};
#define WPC_HANDLER_CPU_CHOICES "same|other|any"

/* ---- what a strategy needs (checked by wpc_needs_check in probe.c) ---- */

/* How a strategy's userfaultfd must be opened; what it may do decides the privilege it needs. */
enum wpc_uffd_access {
	WPC_UFFD_NONE,		/* no userfaultfd */
	WPC_UFFD_USER_MODE,	/* UFFD_USER_MODE_ONLY: no privilege needed */
	WPC_UFFD_AUTO,		/* kernel-mode faults too where permitted, else user mode only */
	WPC_UFFD_KERNEL_MODE,	/* kernel-mode faults too, or nothing: needs privilege */
};

/*
 * A strategy's requirements, declared in its table row (and, where a
 * parameter changes them, by its needs_for). One place checks them and words
 * the reason a person acts on: wpc_needs_check() before a run, and the
 * openers below (wpc_run_open_uffd) during one, from the one feature table.
 */
struct wpc_needs {
	enum wpc_uffd_access uffd;
	uint64_t uffd_features;		/* UFFD_FEATURE_* bits UFFDIO_API must grant */
	/* 1 << _UFFDIO_* the registered range must offer (checked at UFFDIO_REGISTER). */
	uint64_t uffd_ioctls;
	/* WPC_UFFD_KERNEL_MODE: what works without the privilege, appended to the reason. */
	const char *without_privilege;
	bool pagemap_scan;		/* the PAGEMAP_SCAN ioctl of /proc/PID/pagemap */
	bool hugetlb_2m;		/* 2 MiB hugetlb pages for the whole image */
	bool thp;			/* transparent huge pages not "never" */
	bool other_cpu;			/* handler-cpu=other: a second CPU this process may use */
};

/* 0 if this machine meets `needs` for an image of image_bytes (0: size unknown); else -errno and why. */
int wpc_needs_check(const struct wpc_needs *needs, uint64_t image_bytes, char *why, size_t len);
/*
 * Open a userfaultfd as needs->uffd says, negotiating needs->uffd_features
 * (flags: O_NONBLOCK...; O_CLOEXEC is added). Returns the descriptor and sets
 * *user_mode_only, or -errno with the reason, in the wording of the probe.
 */
int wpc_uffd_open_for(const struct wpc_needs *needs, int flags, bool *user_mode_only, char *why,
		      size_t len);
/*
 * UFFDIO_REGISTER [addr, addr + bytes) in `mode` and check the range offers
 * needs->uffd_ioctls: 0, or -errno and why, worded from the feature table.
 */
int wpc_uffd_register_for(const struct wpc_needs *needs, int uffd, void *addr, size_t bytes,
			  uint64_t mode, char *why, size_t len);

/* The 2 MiB huge-page pool now: every count, or -errno from reading sysfs. */
struct wpc_huge_pool {
	long total;	/* nr_hugepages */
	long free;	/* free_hugepages: includes pages others have reserved */
	long reserved;	/* resv_hugepages: promised to mappings, not yet faulted in */
	long available;	/* free - reserved: what a new mapping can have */
};
int wpc_huge_pool(struct wpc_huge_pool *pool);
/* Why `need` 2 MiB pages cannot be had from pool, and the setting that adds them; -ENOMEM. */
int wpc_huge_pool_shortfall(const struct wpc_huge_pool *pool, long need, char *why, size_t len);
/* 0 if PAGEMAP_SCAN works on /proc/self/pagemap; else -EOPNOTSUPP and why. */
int wpc_pagemap_scan_probe(char *why, size_t len);

struct wpc_run;

/*
 * One row of the strategy table (strategy_table.c): what the strategy is,
 * its parameters (parsed once into a struct of params_size bytes, handed to
 * every op as run->params), what it needs, and its phases.
 */
struct wpc_strategy {
	const char *name;
	const char *family;
	const char *description;
	const struct wpc_param_spec *params;	/* terminated by a NULL name; may be NULL */
	size_t params_size;			/* sizeof the strategy's parameter struct; 0: none */
	struct wpc_needs needs;			/* what every run of it needs */
	/* Optional: the needs for these parameters (a page size, a fault mode), starting from .needs. */
	void (*needs_for)(const void *params, struct wpc_needs *needs);
	/* Optional: a check no need expresses (a parameter that needs another); 0 or -errno and why. */
	int (*check)(const void *params, char *why, size_t len);
	/*
	 * Optional and untimed: what a restorer has ready before its restore
	 * begins (bound-copy's destination, faulted in). Called by
	 * wpc_run_restore before the restore clock starts; teardown undoes it.
	 */
	int (*prepare)(struct wpc_run *run);
	/* Make the region usable; may start background work. */
	int (*restore)(struct wpc_run *run);
	/* Finish until the region is detached (NULL: already detached). */
	int (*fixup)(struct wpc_run *run);
	/* Set bit p of bitmap for every page known written since restore (NULL: unknown). */
	int (*dirty_pages)(struct wpc_run *run, uint8_t *bitmap);
	/* Undo everything restore and fixup set up; called once, also after failures. */
	void (*teardown)(struct wpc_run *run);
	/*
	 * Of the fixup phase that just ended, the ns during which the application
	 * could not have run (a whole-region copy it must not race with, a
	 * stop-the-world step). NULL: all of it. A fixup that runs alongside the
	 * application (a background thread the harness merely waits for) returns
	 * only the part that stops it: this is the pause `wpcompare cycle` reports.
	 */
	int64_t (*fixup_pause_ns)(struct wpc_run *run);
	/*
	 * Optional: 0 while the strategy can still serve the region's faults;
	 * else wpc_fail()'s -errno. Polled while the workload threads run, so
	 * that a fault handler thread that is gone makes the run fail at once,
	 * naming it, instead of leaving the threads blocked in faults nobody
	 * serves (or, had its userfaultfd been closed, reading zeros).
	 */
	int (*health)(struct wpc_run *run);
};

/* A strategy with its parameters parsed: made once, handed to the probe and to the run. */
struct wpc_choice {
	const struct wpc_strategy *strategy;
	void *params;			/* strategy->params_size bytes; NULL if it takes none */
};
/* A copy of src the caller frees with wpc_choice_free (a run keeps its own). */
int wpc_choice_copy(const struct wpc_choice *src, struct wpc_choice **out, char *why, size_t len);

extern const struct wpc_strategy *const wpc_strategies[];
extern const size_t wpc_strategy_rows;

/* Built-in rows and loaded plugins' rows (plugin.c), by name; NULL: none. */
const struct wpc_strategy *wpc_strategy_lookup(const char *name);
/* The rows loaded plugins added (plugin.c), after the built-in ones. */
size_t wpc_plugin_row_count(void);
const struct wpc_strategy *wpc_plugin_row(size_t index);
/* The needs of strategy s with these parameters: its row's, adjusted by its needs_for. */
void wpc_strategy_needs(const struct wpc_strategy *s, const void *params, struct wpc_needs *out);
/*
 * Parse "name=value,..." against specs into out (zeroed, then every default,
 * then the values given); owner names the strategy in the reason.
 */
int wpc_params_parse(const char *owner, const struct wpc_param_spec *specs, const char *text,
		     void *out, char *why, size_t len);

/* ---- the run ---- */

struct wpc_plan {
	uint64_t *order;		/* pages in the order the workload touches them */
	uint64_t count;
	uint64_t begin[WPC_MAX_THREADS + 1];	/* thread t walks order[begin[t]..begin[t+1]) */
	bool overlap;
	bool write_all;			/* WPC_OP_WRITE */
	uint8_t *write_set;		/* WPC_OP_MIXED: bit p set if page p is written */
	/*
	 * WPC_PATTERN_TRACE (trace.c): per entry of order, WPC_ENTRY_WRITE and
	 * WPC_ENTRY_FIRST; firsts[t]: thread t's first touches. NULL otherwise.
	 */
	uint8_t *entry_flags;
	uint64_t firsts[WPC_MAX_THREADS];
};

#define WPC_ENTRY_WRITE 1u	/* the access writes */
#define WPC_ENTRY_FIRST 2u	/* no earlier entry of the trace names its page: a first touch */

/* Whether an access to `page` writes, given a plan's write_all and write_set. */
static inline bool wpc_writes_page(bool write_all, const uint8_t *write_set, uint64_t page)
{
	return write_all || (write_set && (write_set[page / 8] >> (page % 8) & 1));
}

/* Whether the workload's access order[i] is a write. */
static inline bool wpc_plan_writes(const struct wpc_plan *plan, uint64_t i)
{
	if (plan->entry_flags)
		return plan->entry_flags[i] & WPC_ENTRY_WRITE;
	return wpc_writes_page(plan->write_all, plan->write_set, plan->order[i]);
}

struct wpc_run {
	struct wpc_config cfg;
	char *image_path;
	struct wpc_choice *choice;	/* the strategy and its parsed parameters, owned */
	const struct wpc_strategy *strategy;	/* choice->strategy */
	/* choice->params: the strategy's parameter struct (strategy->params_size bytes, owned by the run); NULL: none. */
	const void *params;

	int image_fd;
	dev_t image_dev;
	ino_t image_ino;
	uint64_t image_size;

	uint8_t *region;		/* set by restore */
	size_t region_len;		/* image size rounded up to WPC_PAGE */
	uint64_t npages;

	struct wpc_plan plan;
	struct wpc_crew *crew;		/* the first touch's threads, started before restore */
	int cpus[WPC_MAX_THREADS * 4];	/* CPUs this process may run on */
	int ncpus;

	void *priv;			/* the strategy's own state */
	bool restored;
	bool torn_down;

	uint64_t restore_start_ns;
	/* CLOCK_MONOTONIC ns at which background work detached the region; 0: not yet. */
	_Atomic uint64_t detached_at_ns;
	/* Further inodes that count as "the image" (e.g. a memfd copy of it). */
	struct { dev_t dev; ino_t ino; } extra_images[4];
	int nextra_images;

	struct wpc_result *res;

	struct wpc_workload *history;	/* a copy of cfg.history (cycle runs) */
	char *base_image_path;		/* a copy of cfg.base_image_path; NULL: none */
	bool fixed_up;			/* the strategy's fixup returned success */
	/*
	 * Workload threads may still be blocked in a fault nobody will serve
	 * (health failed during touch). Nothing may be torn down under them:
	 * wpc_run_destroy then leaves everything to the process's exit.
	 */
	bool abandoned;
};

/* ---- the run's context (context.c): failing with a reason, counters, CPUs, threads ---- */

/* Record the run's reason (printf-style) and return -err (-EIO for 0). */
int wpc_fail(struct wpc_run *run, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

void wpc_counter_add(struct wpc_run *run, const char *name, uint64_t delta);
void wpc_counter_set(struct wpc_run *run, const char *name, uint64_t value);
void wpc_run_mark_detached(struct wpc_run *run);
int wpc_run_add_image_identity(struct wpc_run *run, int fd);
/*
 * pread() exactly len bytes at off, retrying short reads and EINTR: 0, -errno, or -ENODATA
 * if the file ends first. A plain loop over a system call: safe in a signal handler.
 */
int wpc_pread_full(int fd, void *buf, size_t len, uint64_t off);
/* pread() the whole image into dst (run->image_size bytes); 0 or wpc_fail()'s -errno. */
int wpc_run_read_image(struct wpc_run *run, uint8_t *dst);
/*
 * The image copied into a new memfd of len (>= image size) bytes, its tail
 * zeros (memfd.c): how every strategy restoring from shmem gets it, timed
 * (counter memfd_fill_ns) and recorded as the image
 * (wpc_run_add_image_identity). *memfd is the descriptor, -1 if none was
 * made; the caller closes it, also after a failure. 0 or wpc_fail()'s -errno.
 */
struct wpc_fill_params;
/* p: fill= and threads= (fill.h); NULL: sendfile, one thread. */
int wpc_run_image_memfd(struct wpc_run *run, size_t len, const struct wpc_fill_params *p,
			int *memfd);
/* munmap() the region if it is mapped (run->region_len bytes) and forget it. */
void wpc_run_unmap_region(struct wpc_run *run);
/* wpc_uffd_open_for() with the run's strategy's needs; the reason goes to the run. */
int wpc_run_open_uffd(struct wpc_run *run, int flags, bool *user_mode_only);
/* wpc_uffd_register_for() of [addr, addr + len) with the run's strategy's needs. */
int wpc_run_uffd_register(struct wpc_run *run, int uffd, void *addr, size_t len, uint64_t mode);
/*
 * The whole region registered for write-protect faults (*registered set, for
 * teardown) and then protected; counters register_ns (from since) and protect_ns.
 */
int wpc_run_uffd_protect_region(struct wpc_run *run, int uffd, bool *registered, uint64_t since);

/* The first max CPUs this process may run on, into cpus; how many (0: unknown). */
int wpc_allowed_cpus(int *cpus, int max);
/* The CPUs this process may run on, into run->cpus. */
void wpc_run_load_cpus(struct wpc_run *run);
/* CPU placement: the i-th CPU this process may use, and pinning. */
int wpc_cpu_nth(const struct wpc_run *run, int i);
int wpc_pin_self(int cpu);
/*
 * The CPU handler placement p (enum wpc_handler_cpu; handler.h says what each
 * means) puts a fault handler thread on, among cpus[0..ncpus): 0 and *cpu
 * (-1: not pinned), or -EOPNOTSUPP and why (other, with one CPU).
 */
int wpc_handler_cpu_for(const int *cpus, int ncpus, int placement, int *cpu, char *why, size_t len);
/*
 * For a health op: whether the handler thread tid, started (*started) and not
 * asked to stop, has exited. If so it is joined here and *started cleared.
 */
bool wpc_thread_exited(pthread_t tid, bool *started);
/* Start a thread that blocks every signal, on `cpu` (-1: anywhere). */
int wpc_thread_start_quiet(pthread_t *tid, int cpu, void *(*fn)(void *), void *arg);

/* ---- building blocks ---- */

int wpc_plan_build(struct wpc_plan *plan, uint64_t npages, const struct wpc_workload *w);
void wpc_plan_free(struct wpc_plan *plan);
/* WPC_PATTERN_TRACE (trace.c): plan->order, begin, entry_flags and firsts from w->trace. */
int wpc_plan_trace(struct wpc_plan *plan, uint64_t npages, const struct wpc_workload *w);
/*
 * Start the first touch's workload threads, blocked until touch: called
 * before restore's clock starts. wpc_workload_dismiss ends them unused.
 */
int wpc_workload_park(struct wpc_run *run);
void wpc_workload_dismiss(struct wpc_run *run);
int wpc_workload_touch(struct wpc_run *run);
/* The same pass again, no clock inside its loop: its wall time only. */
int wpc_workload_steady(struct wpc_run *run, uint64_t *ns);
/* What wpc_image_zero_map found (image.c). */
struct wpc_zero_stats {
	uint64_t zero_pages;	/* pages whose bytes are all zero, holes included */
	uint64_t hole_pages;	/* of them, inside holes (SEEK_HOLE): known zero without reading */
	uint64_t scanned_pages;	/* pages read and checked */
};

/*
 * map[p] = 1 where page p of the image (size bytes of fd) is all zero, else
 * 0; one byte per WPC_PAGE page. Holes are taken as zero unread, the data
 * extents are read and checked: a sparse file costs its data only.
 */
int wpc_image_zero_map(int fd, uint64_t size, uint8_t *map, struct wpc_zero_stats *st);

int wpc_verify_bytes(struct wpc_run *run);
int wpc_verify_dirty(struct wpc_run *run);

/*
 * What memory holds after a chain of cycles (model.c): the base image (the
 * generated one, or the file at base_fd) plus, cycle by cycle, the words each cycle's workload wrote. A later write
 * to the same word replaces an earlier one (thread t always writes word slot
 * (page, t)), so the last cycle that wrote a word says what it must hold.
 */
struct wpc_model {
	uint64_t seed;
	int kind;
	uint64_t image_size;
	uint64_t npages;
	int ncycles;
	uint64_t **writers;	/* writers[j][page]: threads that wrote page in cycle j + 1 */
	uint64_t *write_seeds;	/* cycle j + 1's workload seed: the values it wrote */
	int base_fd;		/* >= 0: the base is this file (a real image), not the generator */
};

/* base_path NULL: the generated image (seed, kind); else that file, image_size bytes. */
int wpc_model_build(struct wpc_model *m, uint64_t seed, int kind, const char *base_path,
		    uint64_t image_size, const struct wpc_workload *cycles, int ncycles,
		    char *why, size_t len);
void wpc_model_free(struct wpc_model *m);
/* The bytes pages [first, first + n) hold after every cycle into buf; zeros past the image's end. */
int wpc_model_pages(const struct wpc_model *m, uint64_t first, uint64_t n, uint8_t *buf);
/* The last cycle (1..ncycles) that wrote word `word` of `page`; 0: none did. */
int wpc_model_word_cycle(const struct wpc_model *m, uint64_t page, size_t word);
/* Bitmask of the threads that write each of npages pages under plan (calloc'd; NULL: no memory). */
uint64_t *wpc_plan_writer_masks(const struct wpc_plan *plan, int threads, uint64_t npages);
/* Index of the first differing 8-byte word of two pages of nbytes; -1 if equal. */
int64_t wpc_first_differing_word(const uint8_t *a, const uint8_t *b, size_t nbytes);

struct wpc_maps_report {
	int64_t region_vmas;
	int64_t foreign_vmas;	/* in the region but not anonymous memory */
	bool image_mapped;
};
int wpc_maps_inspect(const struct wpc_run *run, struct wpc_maps_report *out);
/* Record why /proc/self/maps could not be inspected (err from wpc_maps_inspect); returns wpc_fail()'s -errno. */
int wpc_maps_fail(struct wpc_run *run, int err);
/*
 * Why an mmap or mremap of `want` more bytes failed with ENOMEM, written to why: the
 * address-space limit (RLIMIT_AS), vm.max_map_count (then vma_hint is appended) or memory.
 */
void wpc_enomem_why(size_t want, const char *vma_hint, char *why, size_t len);

/* mremap(2) as every strategy should call it: it honours the test-only ENOMEM injection. */
void *wpc_mremap(void *old_addr, size_t old_len, size_t new_len, int flags, void *new_addr);

/*
 * Test-only fault injection (fault_inject.c), driven by environment
 * variables read once per run by wpc_run_create, never on a fault path:
 *   WPCOMPARE_INJECT_MREMAP_ENOMEM=N   the N-th and every later wpc_mremap()
 *                                      fails with ENOMEM, as the kernel's does
 *                                      once vm.max_map_count is reached
 *   WPCOMPARE_INJECT_HANDLER_EXIT=N    a strategy's fault handler thread
 *                                      exits after serving N faults
 *   WPCOMPARE_INJECT_HANDLER_ERROR=N   ... its read() of fault messages
 *                                      fails with EIO once it has served N
 *                                      faults: the handler's own error path
 *   WPCOMPARE_INJECT_HOLD=N            every thread reaching a hold point
 *                                      (WPC_HOLD_*) for chunk or unit N stops
 *                                      there until the test releases it
 *                                      (wpc_test_hold_release): races made to
 *                                      happen in a chosen order, every time
 *   WPCOMPARE_INJECT_NO_DONTUNMAP=1    chunked copy-and-remap runs as on a
 *                                      kernel without MREMAP_DONTUNMAP
 *   WPCOMPARE_INJECT_LOSE_WRITE=N      before verify, the image's word is put
 *                                      back over page N's first writer's word
 *                                      (wpc_inject_lose_write): a lost write
 *                                      for a checker to catch
 *   WPCOMPARE_COUNT_CLOCK_READS=1      wpc_now_ns() counts its calls per
 *                                      thread; the touch pass reports its
 *                                      threads' total as counter
 *                                      "touch_clock_reads"
 */
int wpc_inject_load(char *why, size_t len);
/* Async-signal-safe: stop at hold point `point` if `unit` is the held one. */
void wpc_inject_hold(int point, uint64_t unit);
bool wpc_inject_no_dontunmap(void);
/* Undo one write of page WPCOMPARE_INJECT_LOSE_WRITE, if set and written (verify, main thread). */
void wpc_inject_lose_write(struct wpc_run *run);
#define WPC_HOLD_EXPIRE_NS (10ull * 1000 * 1000 * 1000)
/* Async-signal-safe: whether this mremap must fail with ENOMEM. */
bool wpc_inject_mremap_enomem(void);
/* Whether a handler thread that has served `served` faults must exit now. */
bool wpc_inject_handler_exit(uint64_t served);
/* Whether a handler thread that has served `served` faults must fail its next read() (EIO). */
bool wpc_inject_handler_error(uint64_t served);

/*
 * Open a userfaultfd and negotiate `features` (mode_flags: O_CLOEXEC,
 * UFFD_USER_MODE_ONLY...), with no reason worded: strategies open theirs with
 * wpc_run_open_uffd, which says why it could not.
 */
int wpc_uffd_open(int flags, uint64_t features, uint64_t *available);

/* ---- chunked copy-and-remap (chunk_fixup.c), shared by sigsegv and uffd-wp ---- */

/*
 * Per-chunk state, one 32-bit word each so it can be a futex. Moves only
 * forward: FRESH -> COPYING [-> WAITED] -> DONE. Whoever wins the CAS
 * FRESH -> COPYING copies and remaps the chunk; everybody else who needs it
 * sleeps on the word until it is DONE.
 */
enum wpc_chunk_state {
	WPC_CHUNK_FRESH = 0,	/* still the image's pages; a write must be caught */
	WPC_CHUNK_COPYING = 1,	/* one thread is copying and remapping it */
	WPC_CHUNK_WAITED = 2,	/* COPYING, and someone sleeps on the futex */
	WPC_CHUNK_DONE = 3,	/* anonymous now (or given up after a failed remap) */
};

/* Per-chunk marks for the dirty set. */
#define WPC_CHUNK_WRITTEN 1u		/* a write faulted on it */
#define WPC_CHUNK_UNWATCHED 2u		/* remapped while the workload may still write it */
#define WPC_CHUNK_MOVED 4u		/* anonymous now (DONE without it: given up) */

/* How a chunk's bytes reach the shadow; same order as WPC_CHUNK_COPY_CHOICES. */
enum wpc_chunk_copy {
	WPC_CHUNK_COPY_MEMCPY,	/* from the region's mapping, as openjdk/crac PR 57 */
	WPC_CHUNK_COPY_READ,	/* pread() from the image (its bytes are the region's) */
};
#define WPC_CHUNK_COPY_CHOICES "memcpy|read"

/*
 * The parameter specs every chunked copy-and-remap strategy takes (sigsegv,
 * uffd-wp), into fields `chunk` (uint64_t) and `fixup` (int) of its struct type.
 */
#define WPC_CHUNK_PARAM_SPECS(type)								\
	{ "chunk", WPC_PARAM_SIZE, "4K|64K|2M", "64K",						\
	  "bytes copied and remapped per write fault and per background step",			\
	  offsetof(type, chunk), 0, 0 },							\
	{ "fixup", WPC_PARAM_CHOICE, "background|at-checkpoint|on-write-only", "background",	\
	  "background: a thread fixes up the rest while the workload runs; at-checkpoint: the "	\
	  "fixup phase does the rest in one batched pass; on-write-only: the fixup phase does "	\
	  "the rest chunk by chunk",								\
	  offsetof(type, fixup), 0, 0 }

struct wpc_chunks;
/* Make every chunk writable in place after a remap failed (see chunk_fixup.c). */
typedef int (*wpc_chunks_degrade_fn)(struct wpc_chunks *c);

struct wpc_chunks {
	struct wpc_run *run;
	uint8_t *region;
	size_t region_len;
	size_t chunk;
	uint64_t nchunks;
	uint8_t *shadow;		/* anonymous, region_len bytes: chunk i is copied to the same offset */
	int source_fd;			/* >= 0: copy with pread() from it; -1: memcpy from the region */
	_Atomic int remap_flags;	/* MREMAP_DONTUNMAP while the kernel takes it */
	_Atomic uint32_t *state;	/* enum wpc_chunk_state per chunk */
	_Atomic uint8_t *marks;		/* WPC_CHUNK_* per chunk */
	_Atomic uint64_t remaining;	/* chunks not yet remapped */

	/* Failure: the first remap error (-errno) stops all copying and degrades once. */
	_Atomic int error;
	_Atomic uint64_t error_chunk;
	_Atomic int inflight;		/* threads between claiming and finishing chunks */
	_Atomic int degraded;		/* 0 no, 1 in progress, 2 done */
	int degrade_error;
	wpc_chunks_degrade_fn degrade;
	void *owner;			/* the strategy's context, for degrade */

	/* Counts, read once the workload and the background thread are done. */
	_Atomic uint64_t faults;
	_Atomic uint64_t by_fault;
	_Atomic uint64_t by_background;
	_Atomic uint64_t at_fixup;
	_Atomic uint64_t waits;

	/* Service time of faults, recorded by any number of handlers at once (wpc_chunks_record). */
	struct wpc_hist *hist;

	pthread_t background;
	bool background_started;
	_Atomic bool stop;
	uint64_t background_ns;
	uint64_t pause_ns;		/* of wpc_chunks_finish, the part after the background thread */
	/* Threads copying each run of a batched (at-checkpoint) sweep; 1 unless set after init. */
	int sweep_threads;
	uint64_t sweep_threads_used;	/* most threads one run of it used (counter fill_threads) */
};

/* source_fd: a file holding the region's bytes at the same offsets, or -1 (memcpy). */
int wpc_chunks_init(struct wpc_chunks *c, struct wpc_run *run, size_t chunk, int source_fd);
void wpc_chunks_destroy(struct wpc_chunks *c);
static inline bool wpc_chunks_contains(const struct wpc_chunks *c, uintptr_t addr)
{
	return addr - (uintptr_t)c->region < c->region_len;
}
/* A write hit addr: return once its chunk is anonymous. Async-signal-safe. */
int wpc_chunks_write_fault(struct wpc_chunks *c, uintptr_t addr);
/*
 * Stop all copying after error err (first one wins) and, once copies in
 * flight are done, let c->degrade make the rest writable in place, so no
 * writer waits forever. Async-signal-safe.
 */
void wpc_chunks_give_up(struct wpc_chunks *c, uint64_t idx, int err);
/* Record one fault's service time. Async-signal-safe. */
void wpc_chunks_record(struct wpc_chunks *c, uint64_t ns);
int wpc_chunks_start_background(struct wpc_chunks *c);
/* Fixup phase: join the background thread, then copy the rest (batched: coalesce runs). */
int wpc_chunks_finish(struct wpc_chunks *c, bool batched);
/* Stop and join the background thread (teardown, failures). */
void wpc_chunks_stop(struct wpc_chunks *c);
/* Counters and the handler histogram into run->res. */
void wpc_chunks_publish(struct wpc_chunks *c);
int wpc_chunks_dirty(struct wpc_chunks *c, uint8_t *bitmap);

/* ---- userfaultfd write-protection and PAGEMAP_SCAN (wp_track.c) ---- */

/*
 * UFFDIO_UNREGISTER. It wakes the threads waiting in MISSING faults on the
 * range, not those in write-protect faults (fs/userfaultfd.c): wake those.
 */
int wpc_uffd_unregister(int uffd, void *addr, size_t len);
/* UFFDIO_WAKE: every thread waiting in a fault on the range retries it. */
int wpc_uffd_wake(int uffd, void *addr, size_t len);
/* protect=false also wakes writers blocked on the range. */
int wpc_uffd_writeprotect(int uffd, void *addr, size_t len, bool protect);
/* Teardown's end of a write-protect userfaultfd: unregistered if it was, closed if open. */
void wpc_uffd_release(int uffd, bool registered, void *addr, size_t len);

struct wpc_scan_stats {
	uint64_t calls;		/* PAGEMAP_SCAN ioctls (one per full result vector) */
	uint64_t regions;	/* runs of contiguous written pages returned */
};
int wpc_pagemap_open(void);
/*
 * Pages of [base, base + len) written since they were write-protected
 * (PAGE_IS_WRITTEN of a WP_ASYNC registration): sets bit (page - base) in
 * bitmap (may be NULL) and returns the count, or -errno. rearm: write-protect
 * them again in the same walk (PM_SCAN_WP_MATCHING).
 */
int64_t wpc_pagemap_written(int pagemap_fd, void *base, size_t len, bool rearm, uint8_t *bitmap,
			    struct wpc_scan_stats *st);

/* ---- eager fills (fill.c): fill=, threads=, thp= ---- */
#include "fill.h"

#endif /* WPC_INTERNAL_H */
