/* SPDX-License-Identifier: MIT */
/*
 * userfaultfd loading machinery shared by the uffd strategies (uffd_loader.c):
 * open and register, a handler thread that resolves faults, proactive loader
 * threads, the fault-order record, and the end of it all (load the rest, drop
 * the image view, detach).
 *
 * Kept out of internal.h because only the uffd strategy files need it; the
 * rest of the core sees nothing but the strategy rows.
 */
#ifndef WPC_UFFD_LOADER_H
#define WPC_UFFD_LOADER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "handler.h"
#include "internal.h"

/* How a missing range gets its bytes. */
enum wpc_uffd_fill {
	WPC_FILL_COPY,		/* UFFDIO_COPY straight from the read-only image view */
	WPC_FILL_MOVE,		/* pread into a staging buffer, then UFFDIO_MOVE its pages */
	WPC_FILL_CONTINUE,	/* UFFDIO_CONTINUE: the page already sits in the memfd */
};

/*
 * Parameter kernel-faults: may the kernel (syscalls) fault on not-yet-loaded
 * pages? In the order of WPC_KFAULTS_CHOICES; strategy_uffd.c turns it into
 * the wpc_uffd_access its runs need.
 */
enum wpc_kernel_faults {
	WPC_KFAULTS_AUTO,	/* yes if privileges allow, else UFFD_USER_MODE_ONLY */
	WPC_KFAULTS_YES,
	WPC_KFAULTS_NO,		/* always UFFD_USER_MODE_ONLY */
};
#define WPC_KFAULTS_CHOICES "auto|yes|no"

/* Parameter order of uffd-hybrid's loader. */
enum wpc_loader_order {
	WPC_ORDER_SEQUENTIAL,
	WPC_ORDER_RECORDED,
};
#define WPC_ORDER_CHOICES "sequential|recorded"

/* Parameter zero: how a unit whose image bytes are all zero is placed. */
enum wpc_zero_mode {
	WPC_ZERO_COPY,		/* like any other: copied */
	WPC_ZERO_ZEROPAGE,	/* UFFDIO_ZEROPAGE (wpc_uffd_map_zeros) */
};
#define WPC_ZERO_PARAM_SPEC(type)						\
	{ "zero", WPC_PARAM_CHOICE, "copy|zeropage", "copy",			\
	  "pages of the image that are all zero: copied like the others (copy), or mapped "	\
	  "to the shared zero page with UFFDIO_ZEROPAGE (zeropage; a first write copies it); " \
	  "zeropage finds them at restore: holes of a sparse image unread, the rest read once", \
	  offsetof(type, zero), 0, 0 }

/* The ioctl zero=zeropage places with: the registered range must offer it. */
static inline void wpc_uffd_zero_needs(int zero, struct wpc_needs *needs)
{
	if (zero == WPC_ZERO_ZEROPAGE)
		needs->uffd_ioctls |= 1ull << _UFFDIO_ZEROPAGE;
}

#define WPC_LOADER_MAX_THREADS 8
/* CRIU lazy-pages' background transfer: start small, double while undisturbed. */
#define WPC_LOADER_MIN_XFER (64u << 10)
#define WPC_LOADER_MAX_XFER (4u << 20)

/* Counted by every thread that resolves or loads; published as result counters. */
struct wpc_uffd_stats {
	_Atomic uint64_t faults;	/* fault messages (or SIGBUS) served */
	_Atomic uint64_t eexist;	/* copies that found a page already there */
	_Atomic uint64_t eagain;	/* copies retried because the mm was changing */
	_Atomic uint64_t wakes;		/* UFFDIO_WAKE issued */
	_Atomic uint64_t stale;		/* faults whose page was loaded by the time we saw them */
	_Atomic uint64_t handler_pages;	/* 4 KiB pages placed by fault handling */
	_Atomic uint64_t loader_pages;	/* ... by the proactive loader */
	_Atomic uint64_t fixup_pages;	/* ... by fixup (whatever was still missing) */
	_Atomic uint64_t zeropage_pages;	/* of all those, mapped to the zero page (UFFDIO_ZEROPAGE) */
	_Atomic uint64_t zero_written;	/* zero units a write faulted on: copied, not the zero page */
};

struct wpc_uffd;

struct wpc_loader {
	pthread_t tid;
	struct wpc_uffd *u;
	int index;
	int nice;			/* 0, or raised where it shares the handler's CPU */
	bool started;
	uint8_t *staging;		/* WPC_FILL_MOVE: WPC_LOADER_MAX_XFER bytes */
};

struct wpc_uffd {
	struct wpc_run *run;
	enum wpc_uffd_fill fill;
	int fd;				/* the userfaultfd; -1 closed */
	bool user_mode_only;
	bool sigbus;			/* UFFD_FEATURE_SIGBUS: no handler thread, nobody waits */
	bool signal_installed;		/* uffd-sigbus: our SIGBUS handler is in place */

	size_t unit;			/* region page size: 4 KiB or 2 MiB (hugetlb) */
	size_t map_len;			/* region mapping length: region_len rounded to unit */
	size_t chunk;			/* fault-around: bytes resolved per fault, multiple of unit */
	uint64_t nunits;
	uint64_t fault_delay_ns;	/* simulated source latency per batch of faults */

	/* Read-only MAP_SHARED view of the image (WPC_FILL_COPY), map_len long. */
	uint8_t *view;
	_Atomic int view_users;		/* resolvers inside a copy from the view */
	_Atomic bool view_closing;	/* set once every unit is loaded */
	int memfd;			/* WPC_FILL_CONTINUE: the image copy; -1 none */
	uint8_t *staging;		/* WPC_FILL_MOVE: the handler's staging buffer, chunk long */

	/*
	 * Parameter zero=zeropage: one byte per (4 KiB) unit, 1 where the image's
	 * bytes are all zero; such units are placed with UFFDIO_ZEROPAGE (the
	 * shared zero page, read-only: the first write copies it into a page of
	 * the region's own, with no userfault since the pte is present). NULL:
	 * every unit is copied.
	 */
	uint8_t *zero;

	/* One byte per unit, set once the unit holds its bytes (a hint: the kernel arbitrates). */
	_Atomic uint8_t *loaded;
	_Atomic uint64_t nloaded;

	struct wpc_handler handler;
	int handler_cpu;		/* the handler's CPU; -1: not pinned */
	struct wpc_hist *hist;		/* service times: the handler thread's, or uffd-sigbus's SIGBUS handlers' */
	_Atomic uint64_t fault_gen;	/* bumped per fault: loaders fall back to small transfers */

	/* uffd-hybrid: the loader threads and their work queue. */
	struct wpc_loader loaders[WPC_LOADER_MAX_THREADS];
	int nloaders;
	_Atomic int loaders_running;
	_Atomic bool loaders_stop;
	_Atomic uint64_t seq_cursor;	/* next byte offset for sequential loading */
	uint64_t *prefetch;		/* recorded order: unit indices to load first */
	uint64_t nprefetch;
	_Atomic uint64_t prefetch_next;

	/* The order in which units first faulted, for order=recorded next time. */
	uint64_t *fault_order;
	_Atomic uint64_t nfault_order;
	_Atomic uint8_t *fault_seen;

	_Atomic int err;		/* first failure of a thread (errno), reported by fixup */
	const char *err_what;		/* what that thread was doing */
	bool hist_published;
	uint64_t pause_ns;		/* the part of fixup the application must wait for */
	struct wpc_uffd_stats st;
};

/*
 * Set up: everything but the region. The userfaultfd is opened as the run's
 * strategy needs (wpc_run_open_uffd): its mode and UFFD_FEATURE_* bits.
 */
int wpc_uffd_init(struct wpc_run *run, struct wpc_uffd *u, enum wpc_uffd_fill fill, size_t unit);
/* Register [region, region + map_len) in `mode` (UFFDIO_REGISTER_MODE_*), check its ioctls. */
int wpc_uffd_register(struct wpc_uffd *u, uint64_t mode);
/* Map the read-only shared view of the image that WPC_FILL_COPY copies from. */
int wpc_uffd_map_view(struct wpc_uffd *u);
/*
 * zero=zeropage: find the image's zero pages (wpc_image_zero_map), timed, so
 * that their faults map the zero page instead of copying; 4 KiB units only.
 */
int wpc_uffd_map_zeros(struct wpc_uffd *u);
/* Start the handler thread at the placement asked (enum wpc_handler_cpu). */
int wpc_uffd_start_handler(struct wpc_uffd *u, int placement);
/* Start n proactive loader threads (uffd-hybrid); they prefetch u->prefetch first. */
int wpc_uffd_start_loaders(struct wpc_uffd *u, int n);
/* Record the order in which pages first fault (for wpc_uffd_save_order). */
int wpc_uffd_record_faults(struct wpc_uffd *u);

/*
 * The strategies' health op: 0 while faults can be served; else the run
 * fails (a recorded error, or the handler thread gone).
 */
int wpc_uffd_health(struct wpc_uffd *u);
/*
 * Resolve the fault at addr (the handler's, or the SIGBUS path's from the
 * faulting thread): 0 or -errno. write: a write fault (a zero unit is then
 * copied, not mapped to the zero page); the SIGBUS path cannot tell, false.
 */
int wpc_uffd_resolve(struct wpc_uffd *u, uintptr_t addr, bool wake, bool write);

/* Record a fatal resolver error; the faulting thread is never handed an empty page (uffd_loader.c). */
void wpc_uffd_give_up(struct wpc_uffd *u, int err, const char *what);

/* Fixup: load what is missing, drop the view, mark detached, stop the handler. */
int wpc_uffd_finish(struct wpc_uffd *u);
/* Write the fault order to path (atomically), read one back. */
int wpc_uffd_save_order(struct wpc_uffd *u, const char *path);
int wpc_uffd_load_order(struct wpc_uffd *u, const char *path);
/* Copy counters and the handler histogram into the run's result. */
void wpc_uffd_publish(struct wpc_uffd *u);
/* Undo everything, in an order that leaves no thread blocked. Safe on a partial init. */
void wpc_uffd_teardown(struct wpc_uffd *u);

#endif /* WPC_UFFD_LOADER_H */
