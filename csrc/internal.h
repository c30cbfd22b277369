/* SPDX-License-Identifier: MIT */
/*
 * Shared by the C core's files, never by Python: the run context, the
 * strategy table's row type, and small helpers.
 */
#ifndef WPC_INTERNAL_H
#define WPC_INTERNAL_H

#include <errno.h>
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

static inline uint64_t wpc_now_ns(void)
{
	struct timespec ts;

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

/* ---- parameters ---- */

enum wpc_param_kind {
	WPC_PARAM_SIZE,
	WPC_PARAM_INT,
	WPC_PARAM_CHOICE,
	WPC_PARAM_STRING,
};

#define WPC_PARAM_STRING_LEN 256

/*
 * The union of every strategy's parameters. A strategy's spec table names
 * the fields it reads; a choice is stored as its index in `choices`, so
 * each strategy keeps an enum in the same order as its choices string.
 */
struct wpc_params {
	uint64_t chunk;
	int fixup;
	int handler_cpu;
	int order;
	int64_t loader_threads;
	char path[WPC_PARAM_STRING_LEN];
	int kernel_faults;	/* uffd: enum wpc_kernel_faults (uffd_loader.h) */
	int64_t fault_delay_us;	/* uffd: simulated source latency, microseconds */
	uint64_t page;		/* uffd-hybrid: 4 KiB or 2 MiB (hugetlb) region pages */
};

struct wpc_param_spec {
	const char *name;
	enum wpc_param_kind kind;
	const char *choices;	/* "a|b|c"; for sizes, the allowed sizes; NULL: any */
	const char *default_value;
	const char *help;
	size_t offset;		/* offsetof(struct wpc_params, field) */
	int64_t min, max;	/* WPC_PARAM_INT, WPC_PARAM_SIZE (0, 0: unbounded) */
};

/* Handler placement, shared by every strategy with a handler thread. */
enum wpc_handler_cpu {
	WPC_HANDLER_SAME,
	WPC_HANDLER_OTHER,
	WPC_HANDLER_ANY,
};
#define WPC_HANDLER_CPU_CHOICES "same|other|any"

struct wpc_run;

/* One row of the strategy table (strategy_table.c). */
struct wpc_strategy {
	const char *name;
	const char *family;
	const char *description;
	const struct wpc_param_spec *params;	/* terminated by a NULL name; may be NULL */
	/* 0 if the strategy can run here; else -errno and an actionable why. */
	int (*probe)(const struct wpc_params *p, char *why, size_t len);
	/* Make the region usable; may start background work. */
	int (*restore)(struct wpc_run *run);
	/* Finish until the region is detached (NULL: already detached). */
	int (*fixup)(struct wpc_run *run);
	/* Set bit p of bitmap for every page known written since restore (NULL: unknown). */
	int (*dirty_pages)(struct wpc_run *run, uint8_t *bitmap);
	/* Undo everything restore and fixup set up; called once, also after failures. */
	void (*teardown)(struct wpc_run *run);
};

extern const struct wpc_strategy *const wpc_strategies[];
extern const size_t wpc_strategy_rows;

const struct wpc_strategy *wpc_strategy_lookup(const char *name);
int wpc_params_parse(const struct wpc_strategy *s, const char *text, struct wpc_params *out,
		     char *why, size_t len);

/* ---- the run ---- */

struct wpc_plan {
	uint64_t *order;		/* pages in the order the workload touches them */
	uint64_t count;
	uint64_t begin[WPC_MAX_THREADS + 1];	/* thread t walks order[begin[t]..begin[t+1]) */
	bool overlap;
};

struct wpc_run {
	struct wpc_config cfg;
	char *image_path;
	char *params_text;
	const struct wpc_strategy *strategy;
	struct wpc_params params;

	int image_fd;
	dev_t image_dev;
	ino_t image_ino;
	uint64_t image_size;

	uint8_t *region;		/* set by restore */
	size_t region_len;		/* image size rounded up to WPC_PAGE */
	uint64_t npages;

	struct wpc_plan plan;
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
};

int wpc_fail(struct wpc_run *run, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void wpc_why(char *why, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void wpc_counter_add(struct wpc_run *run, const char *name, uint64_t delta);
void wpc_counter_set(struct wpc_run *run, const char *name, uint64_t value);
void wpc_run_mark_detached(struct wpc_run *run);
int wpc_run_add_image_identity(struct wpc_run *run, int fd);

/* CPU placement: the i-th CPU this process may use, and pinning. */
int wpc_cpu_nth(const struct wpc_run *run, int i);
int wpc_pin_self(int cpu);
/* The CPU a handler should use for placement p, relative to workload thread 0. */
int wpc_handler_cpu_for(const struct wpc_run *run, int placement);

/* ---- building blocks ---- */

int wpc_plan_build(struct wpc_plan *plan, uint64_t npages, const struct wpc_workload *w);
void wpc_plan_free(struct wpc_plan *plan);
int wpc_workload_touch(struct wpc_run *run);
int wpc_verify_bytes(struct wpc_run *run);
int wpc_verify_dirty(struct wpc_run *run);

struct wpc_maps_report {
	int64_t region_vmas;
	int64_t foreign_vmas;	/* in the region but not anonymous memory */
	bool image_mapped;
};
int wpc_maps_inspect(const struct wpc_run *run, struct wpc_maps_report *out);

/*
 * Replace [addr, addr + len) by an anonymous copy of its current contents:
 * copy into a fresh anonymous mapping, then mremap it over the original.
 */
int wpc_copy_and_remap(void *addr, size_t len);

/* Open a userfaultfd and negotiate `features` (mode_flags: O_CLOEXEC, UFFD_USER_MODE_ONLY...). */
int wpc_uffd_open(int flags, uint64_t features, uint64_t *available);

#endif /* WPC_INTERNAL_H */
