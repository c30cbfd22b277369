/* SPDX-License-Identifier: MIT */
/*
 * wpcompare: the public interface of the C measurement core.
 *
 * This file is also the cffi cdef (wpcompare/_build.py reads it, dropping
 * the include guard and #include lines), so it holds only plain declarations
 * and integer #defines.
 *
 * Conventions, as in liburing: every int-returning call returns 0 (or a count)
 * on success and -errno on failure; calls that can fail for a reason a person
 * must read also fill a caller-supplied "why" buffer or the run's
 * result->reason with one line naming the problem and, where there is one,
 * the fix.
 */
#ifndef WPCOMPARE_H
#define WPCOMPARE_H

#include <stddef.h>
#include <stdint.h>

#define WPC_ABI_VERSION 1
#define WPC_IMAGE_PAGE 4096
#define WPC_HIST_BUCKETS 4352
#define WPC_MAX_THREADS 64
#define WPC_MAX_COUNTERS 24
#define WPC_NAME_LEN 32
#define WPC_REASON_LEN 512

enum wpc_op {
	WPC_OP_READ = 0,
	WPC_OP_WRITE = 1,
	WPC_OP_MIXED = 2,	/* write the share write_fraction of the pages, read the rest */
};

enum wpc_pattern_kind {
	WPC_PATTERN_SEQ = 0,
	WPC_PATTERN_RANDOM = 1,
	WPC_PATTERN_SPARSE = 2,
	WPC_PATTERN_STRIDE = 3,
	WPC_PATTERN_TRACE = 4,	/* a recorded order: struct wpc_trace */
};

enum wpc_phase {
	WPC_PHASE_RESTORE = 0,
	WPC_PHASE_TOUCH = 1,
	WPC_PHASE_FIXUP = 2,
	WPC_PHASE_VERIFY = 3,
	WPC_PHASE_COUNT = 4,
};

/*
 * How the touch phase times the workload's first accesses. NONE: no clock
 * inside the loop (each thread reads it once before and once after), so the
 * phase's elapsed time is the application's. EVERY: a clock read before and
 * after every access, into the touch histogram: the full per-page latency
 * distribution, but the reads serialise the accesses, so that pass's elapsed
 * time is inflated. SAMPLE: only accesses about latency_every apart (random
 * gaps, so they do not align with chunk or huge-page boundaries) are timed.
 */
enum wpc_latency {
	WPC_LATENCY_NONE = 0,
	WPC_LATENCY_EVERY = 1,
	WPC_LATENCY_SAMPLE = 2,
};

enum wpc_image_kind {
	WPC_IMAGE_MIXED = 0,	/* random, zero and repeated pages, as heaps are */
	WPC_IMAGE_RANDOM = 1,	/* every page random: the published experiment */
};

/*
 * Log-linear latency histogram (HDR style). Values below 256 ns are exact;
 * above, each power of two is split into 128 buckets, so a bucket spans at
 * most 1/128 of its value (< 0.8 %) up to 2^40 ns (18 minutes).
 */
struct wpc_hist {
	uint64_t count;
	uint64_t min_ns;
	uint64_t max_ns;
	uint64_t sum_ns;
	uint64_t buckets[4352];
};

/*
 * A recorded access order (WPC_PATTERN_TRACE; the file format is
 * wpcompare/trace.py's): entry i accesses page[i], writing if write[i], on
 * workload thread thread[i] (< the workload's threads), entries in the order
 * recorded. Each thread replays its own entries in that order; an entry is
 * a first touch if no earlier entry names its page. The arrays are the
 * caller's and must outlive every run and plan made from it.
 */
struct wpc_trace {
	uint64_t count;
	const uint64_t *page;
	const uint8_t *write;
	const uint8_t *thread;
};

/* What the application does to the region after restore. */
struct wpc_workload {
	int op;			/* enum wpc_op */
	int pattern;		/* enum wpc_pattern_kind */
	double fraction;	/* WPC_PATTERN_SPARSE: share of pages touched */
	uint64_t stride;	/* WPC_PATTERN_STRIDE: touch every stride-th page */
	uint64_t seed;		/* random and sparse orders, written values */
	int threads;		/* 1..WPC_MAX_THREADS; pages split among them */
	int overlap;		/* 1: every thread touches every selected page */
	int pin_threads;	/* 1: thread i runs on the i-th allowed CPU */
	/*
	 * WPC_OP_MIXED: share of the pattern's pages written, in [0, 1]; exactly
	 * round(write_fraction * pages touched) of them, chosen with seed.
	 */
	double write_fraction;
	/* WPC_PATTERN_TRACE: the order (op, write_fraction and overlap do not apply); else NULL. */
	const struct wpc_trace *trace;
};

struct wpc_choice;

struct wpc_config {
	const char *image_path;
	int64_t image_seed;	/* >= 0: generated from this seed; verify against the generator */
	int image_kind;		/* enum wpc_image_kind, with image_seed */
	const char *strategy;	/* a name from the strategy table */
	const char *params;	/* "name=value,name=value" or NULL for defaults */
	/* Non-NULL: the strategy and its parameters parsed already (wpc_choice_parse); strategy and params are not read. */
	const struct wpc_choice *choice;
	struct wpc_workload workload;
	/*
	 * Repeated checkpoints: non-NULL makes this run cycle history_len + 1 of
	 * a chain. The image is then the generated one (image_seed) plus the
	 * writes of the workloads of cycles 1..history_len, oldest first, and the
	 * verifier expects exactly that.
	 */
	const struct wpc_workload *history;
	int history_len;
	/*
	 * A chain on a real image (image_seed < 0): the file the chain started
	 * from, which the verifier reads as the base under the history's
	 * writes (image_path may be a later image, or deleted by now). NULL
	 * otherwise. Its size must be the image's.
	 */
	const char *base_image_path;
	int latency;		/* enum wpc_latency, for the touch phase (the steady pass never times accesses) */
	uint32_t latency_every;	/* WPC_LATENCY_SAMPLE: mean distance between timed accesses, >= 2 */
	/*
	 * > 0: the size the image had when wpcompare first opened it; a file of
	 * another size now (appended to, truncated) is refused, so every run of a
	 * matrix restores the same bytes. 0: whatever size the file has.
	 */
	uint64_t image_bytes;
};

struct wpc_phase_stats {
	int64_t ns;		/* wall time of the phase; -1 if it did not run */
	uint64_t minflt;	/* getrusage deltas over the phase */
	uint64_t majflt;
	int64_t vmas;		/* VMAs overlapping the region after fixup or verify; -1 after restore and touch */
};

struct wpc_counter {
	char name[32];
	uint64_t value;
};

struct wpc_result {
	struct wpc_phase_stats phase[4];
	int64_t time_to_detached_ns;	/* from restore start; -1: never detached */
	int64_t time_to_touched_ns;	/* from restore start to the end of the touch pass; -1: no touch */
	int latency;			/* enum wpc_latency the touch pass ran with */
	uint32_t latency_every;		/* WPC_LATENCY_SAMPLE: its mean distance */

	uint64_t image_bytes;
	uint64_t region_bytes;
	uint64_t tail_bytes;		/* bytes of the last page past the image's end */
	uint64_t pages;			/* WPC_IMAGE_PAGE pages in the region */
	uint64_t touched_pages;		/* first accesses made by the workload (timed or not) */
	uint64_t checksum;		/* sum of the words the workload read */

	int verified;			/* every byte equals image + predicted writes */
	uint64_t mismatched_pages;
	int64_t first_mismatch_page;	/* -1: none */
	int detached;			/* region anonymous and the image mapped nowhere */
	int image_mapped;		/* a VMA anywhere still maps the image */
	int64_t foreign_vmas;		/* VMAs in the region that are not anonymous */

	int dirty_known;		/* the strategy reported a dirty set */
	uint64_t dirty_reported;
	uint64_t dirty_missing;		/* written but not reported: a lost write for a checkpointer */
	uint64_t dirty_extra;		/* reported but not written */

	uint64_t peak_rss_kb;
	int app_cpu;			/* CPU of workload thread 0; -1: unpinned */
	int handler_cpu;		/* CPU of the strategy's handler; -1: none or unpinned */
	struct wpc_hist touch;		/* first accesses as the workload saw them: every one, a sample, or none (latency) */
	struct wpc_hist handler;	/* strategy-side service time, where measured */
	int ncounters;
	struct wpc_counter counters[24];
	char reason[512];
};

/* ---- strategy table ---- */

struct wpc_strategy_info {
	const char *name;
	const char *family;
	const char *description;
	int nparams;
};

struct wpc_param_info {
	const char *name;
	const char *kind;		/* "size", "int", "choice", "string" */
	const char *choices;		/* "a|b|c" for choice and sizes; NULL: any */
	const char *default_value;
	const char *help;
};

int wpc_strategy_count(void);
int wpc_strategy_get(int index, struct wpc_strategy_info *out);
int wpc_strategy_param(int index, int param, struct wpc_param_info *out);
int wpc_strategy_find(const char *name);
int wpc_params_validate(const char *strategy, const char *params, char *why, size_t len);
/*
 * A strategy with its parameters parsed once into the strategy's own struct,
 * then handed to wpc_choice_probe and to wpc_run_create (wpc_config.choice).
 * 0, or -ENOENT (unknown strategy) / -EINVAL (a parameter) and why.
 */
int wpc_choice_parse(const char *strategy, const char *params, struct wpc_choice **out, char *why,
		     size_t len);
void wpc_choice_free(struct wpc_choice *choice);
/*
 * 0: the strategy can run here with these params on an image of image_bytes
 * (0: size not known yet, e.g. for `wpcompare info`); else -errno and why.
 */
int wpc_choice_probe(const struct wpc_choice *choice, uint64_t image_bytes, char *why, size_t len);
/*
 * Load the strategy plugin at path (wpcompare_plugin.h): its entry point, its
 * ABI version and every row checked, then its rows added to the strategy
 * table for every later lookup (and for processes forked later). Returns
 * the rows added (0: that file was loaded already), or -errno and one line
 * naming the file; a refused plugin adds nothing and is unloaded.
 */
int wpc_plugin_load(const char *path, char *why, size_t len);
/* wpc_choice_parse, wpc_choice_probe and wpc_choice_free in one call. */
int wpc_strategy_probe(const char *strategy, const char *params, uint64_t image_bytes, char *why,
		       size_t len);

/* ---- one run: restore -> touch -> fixup -> verify ---- */

struct wpc_run;

int wpc_run_create(const struct wpc_config *cfg, struct wpc_run **out, char *why, size_t len);
int wpc_run_restore(struct wpc_run *run);
int wpc_run_touch(struct wpc_run *run);
int wpc_run_fixup(struct wpc_run *run);
int wpc_run_verify(struct wpc_run *run);
struct wpc_result *wpc_run_result(struct wpc_run *run);
int wpc_run_region(struct wpc_run *run, uintptr_t *addr, uint64_t *len);
void wpc_run_destroy(struct wpc_run *run);

/*
 * The workload's access plan for npages pages, as a run would build it:
 * order[0..count) the pages in touch order (order needs room for npages, or
 * for trace->count entries with WPC_PATTERN_TRACE),
 * begin[0..threads] the split among threads, and, if written is not NULL,
 * written[i] = 1 where the access to order[i] writes. Returns count, or
 * -EINVAL for a workload wpc_run_create would refuse.
 */
int64_t wpc_plan_pages(const struct wpc_workload *w, uint64_t npages, uint64_t *order, uint64_t *begin,
		       uint8_t *written);

/* ---- histograms ---- */

void wpc_hist_reset(struct wpc_hist *h);
/* One recorder at a time (a thread's own histogram). */
void wpc_hist_record(struct wpc_hist *h, uint64_t ns);
/* Any number of threads and signal handlers at once; lock-free. */
void wpc_hist_record_concurrent(struct wpc_hist *h, uint64_t ns);
void wpc_hist_merge(struct wpc_hist *dst, const struct wpc_hist *src);
uint64_t wpc_hist_bucket_low(int index);
uint64_t wpc_hist_bucket_high(int index);
int wpc_hist_index(uint64_t ns);
/* Value at quantile q in [0, 1]: the midpoint of the bucket holding it. */
uint64_t wpc_hist_quantile(const struct wpc_hist *h, double q);

/* ---- images ---- */

/* Write a deterministic image of size bytes to path (created, never replaced half-written). */
int wpc_image_generate(const char *path, uint64_t size, uint64_t seed, int kind, char *why, size_t len);
/* The bytes of generated page `page` (WPC_IMAGE_PAGE of them) into buf. */
void wpc_image_fill_page(uint64_t seed, int kind, uint64_t page, uint8_t *buf);
/*
 * Make the all-zero pages of the image file at path holes (fallocate
 * PUNCH_HOLE, size and bytes unchanged): *punched of its *pages pages.
 */
int wpc_image_punch_zeros(const char *path, uint64_t *punched, uint64_t *pages, char *why, size_t len);
/* Pages of the file resident in the page cache (mincore), and pages in all. */
int wpc_image_residency(const char *path, uint64_t *resident, uint64_t *total);

#define WPC_FOLIO_ORDERS 16

/* What the page cache holds of a file (page_cache.c). */
struct wpc_cache_state {
	uint64_t pages;			/* 4 KiB pages of the file */
	uint64_t resident;		/* of them in the page cache (mincore) */
	/*
	 * One read of every page, in order, through a private mapping, no clock
	 * inside: its faults and elapsed ns. -1: not run, because pages were
	 * missing and the pass would have read them in.
	 */
	int64_t pass_faults;
	int64_t pass_ns;
	int folios_known;		/* folio_pages is filled (needs /proc/kpageflags: root) */
	uint64_t folio_pages[16];	/* pages in folios of order k (4 KiB << k) */
};

int wpc_cache_probe(const char *path, struct wpc_cache_state *out, char *why, size_t len);

/* ---- system probe ---- */

struct wpc_uffd_probe {
	int available;		/* a userfaultfd could be opened somehow */
	int syscall_errno;	/* userfaultfd(2) without UFFD_USER_MODE_ONLY: 0 or errno */
	int user_mode_errno;	/* userfaultfd(2) with UFFD_USER_MODE_ONLY: 0 or errno */
	int devnode_errno;	/* /dev/userfaultfd: 0 or errno */
	uint64_t api;
	uint64_t features;	/* every feature UFFDIO_API reports */
	uint64_t ioctls;
};

int wpc_uffd_probe(struct wpc_uffd_probe *out);
/* Kernel name of feature bit `bit` ("UFFD_FEATURE_MOVE"), or NULL. */
const char *wpc_uffd_feature_name(int bit);
/* The CPUID hypervisor vendor signature ("KVMKVMKVM"): 0; -ENOENT: none; -EOPNOTSUPP: not x86. */
int wpc_hypervisor_vendor(char *out, size_t len);
/* Median cost of one clock_gettime(CLOCK_MONOTONIC) pair, in ns. */
int64_t wpc_timer_overhead_ns(void);

/* ---- repeated checkpoints: restore -> work -> fixup -> checkpoint ---- */

/* One image written from memory (checkpoint.c). */
struct wpc_dump_stats {
	int64_t ns;		/* temp file created .. renamed into place, dirty set included */
	int64_t dirty_ns;	/* asking the strategy for its dirty set; -1: full dump */
	uint64_t dirty_pages;	/* pages written from memory */
	uint64_t bytes_written;	/* write()/pwrite() from memory */
	uint64_t bytes_copied;	/* copy_file_range from the previous image */
	uint64_t bytes_fallback;	/* read()+write() from it where copy_file_range could not */
	int fallback_errno;	/* why copy_file_range was given up (EXDEV, EOPNOTSUPP...); 0: it was not */
	uint64_t write_calls;
	uint64_t copy_calls;
};

/*
 * Write the run's region into a new image at path (a temp file in the same
 * directory, renamed: never half written). incremental 0: the whole region,
 * image_size bytes, with write(). 1: only the pages the strategy's dirty set
 * names, the rest copied from the image this run restored from with
 * copy_file_range; -EOPNOTSUPP if the strategy reports no dirty set.
 */
int wpc_run_checkpoint(struct wpc_run *run, const char *path, int incremental, struct wpc_dump_stats *out);
/*
 * The writer itself, for tests: size bytes of memory into path; dirty NULL
 * writes them all, else bit p set takes page p from memory and the others are
 * copied from prev_path.
 */
int wpc_dump_image(const void *memory, uint64_t size, const uint8_t *dirty, const char *prev_path,
		   const char *path, struct wpc_dump_stats *out, char *why, size_t len);
/* 1 once the strategy has said the region needs the image no more (marked detached, or fixup done). */
int wpc_run_detached(struct wpc_run *run);
/* Of the last fixup phase, the ns the application could not have run: all of it unless the strategy says less. */
int64_t wpc_run_fixup_pause_ns(struct wpc_run *run);
/* The workload once more over the loaded region, no clock inside the loop: the steady-state cost. */
int wpc_run_steady(struct wpc_run *run, int64_t *ns);
/* Pages workload w writes in a region of npages: bit p of bitmap set; the count or -errno. */
int64_t wpc_workload_written_pages(const struct wpc_workload *w, uint64_t npages, uint8_t *bitmap);

struct wpc_image_check {
	uint64_t mismatched_pages;
	int64_t first_mismatch_page;	/* -1: none */
	int64_t first_mismatch_offset;	/* byte offset in the file of its first differing word */
	int first_mismatch_cycle;	/* the cycle whose write that word lost; 0: a byte no cycle wrote */
};

/*
 * Check the image file at path against the model: the generated image of
 * size bytes (seed, kind), or the file base_path if not NULL, plus the
 * writes of cycles[0..ncycles), in order.
 * 0 if equal; -EIO if not, with out filled and why naming the first page and
 * the cycle whose write it lost.
 */
int wpc_image_check(const char *path, uint64_t size, uint64_t seed, int kind,
		    const char *base_path, const struct wpc_workload *cycles, int ncycles,
		    struct wpc_image_check *out, char *why, size_t len);

/*
 * ---- test-only: kernel write tracking outside a run ----
 * For tests/test_wp_tracking.py, not for measurements: arms exactly the tracking
 * mmap-wp-async uses (userfaultfd with UFFD_FEATURE_WP_ASYNC and
 * WP_UNPOPULATED, registered UFFDIO_REGISTER_MODE_WP, the whole range
 * write-protected) on a bare mapping, so tests can check what the kernel
 * reports. fd >= 0: MAP_PRIVATE mapping of the first len bytes of fd; fd < 0:
 * anonymous memory. populate: MAP_POPULATE before protecting.
 */
struct wpc_wp_tracker;

int wpc_wp_tracker_open(int fd, uint64_t len, int populate, struct wpc_wp_tracker **out,
			char *why, size_t why_len);
uintptr_t wpc_wp_tracker_addr(const struct wpc_wp_tracker *t);
/* Pages written since protection (bit p of bitmap set): count or -errno; rearm protects them again. */
int64_t wpc_wp_tracker_scan(struct wpc_wp_tracker *t, int rearm, uint8_t *bitmap);
/*
 * An incremental checkpointer racing `threads` writers, which write one
 * word of seeded random pages without pause: `rounds` rounds of a scan with
 * re-arm that copies every reported page into a shadow, all while every
 * writer is writing. Every 50 rounds the writers stop, one last round runs
 * and the shadow is compared with the region: *lost_pages counts the pages
 * that differed (writes no scan reported). *writes: the writes made in all.
 */
int wpc_wp_tracker_stress(struct wpc_wp_tracker *t, int threads, uint64_t rounds, uint64_t seed,
			  uint64_t *writes, uint64_t *lost_pages);
void wpc_wp_tracker_close(struct wpc_wp_tracker *t);

/*
 * ---- test-only: the concurrent histogram recorder under contention ----
 * threads (1..WPC_MAX_THREADS) threads, released together, record into h
 * with wpc_hist_record_concurrent: thread t the values t * per_thread + 1 ..
 * (t + 1) * per_thread, so h must end as if 1 .. threads * per_thread had
 * been recorded one by one. 0 or -errno.
 */
int wpc_test_hist_contend(struct wpc_hist *h, int threads, uint64_t per_thread);

/*
 * ---- test-only: holding a race in a chosen order ----
 * With WPCOMPARE_INJECT_HOLD=N set when a run is created, every thread that
 * reaches one of these points for chunk (sigsegv, uffd-wp) or unit (uffd
 * family) N takes the next ticket and stops there until the test releases
 * its ticket (WPC_HOLD_LOST only takes a ticket). Unreleased, it goes on
 * after 10 s and wpc_test_hold_expired() says so. Never set it for
 * measurements.
 */
enum wpc_hold_point {
	WPC_HOLD_CLAIM = 1,	/* chunk seen FRESH, before the claim itself */
	WPC_HOLD_COPY = 2,	/* chunk claimed and copied into the shadow, before its mremap */
	WPC_HOLD_RESOLVE = 3,	/* a fault on the unit read by its resolver, before placing it */
	WPC_HOLD_LOST = 4,	/* a claim that found the chunk claimed: noted, never held */
	WPC_HOLD_PLACE = 5,	/* a loader about to place the unit (DONTWAKE, a recorded order) */
	WPC_HOLD_UNWOKEN = 6,	/* ... placed it, before its batch's UFFDIO_WAKE */
	WPC_HOLD_MAX_TICKETS = 64,
};
/* Arrivals so far (tickets 0..n-1); points[i] = where ticket i is (or was) held. */
int wpc_test_hold_arrivals(int *points, int max);
/* Let ticket go on; -1: every ticket, also those still to come. */
void wpc_test_hold_release(int ticket);
int wpc_test_hold_expired(void);

#endif /* WPCOMPARE_H */
