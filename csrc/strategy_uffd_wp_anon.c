/* SPDX-License-Identifier: MIT */
/*
 * `uffd-wp-anon`: the pure cost of a synchronous write-protect fault.
 *
 * The image is read eagerly into anonymous memory (as `read` does), so the
 * region is detached from the moment restore returns; then the region is
 * registered UFFDIO_REGISTER_MODE_WP and write-protected whole. A first
 * write blocks the writer and queues a fault message; the handler thread
 * records the page as dirty and unprotects it (UFFDIO_WRITEPROTECT mode 0,
 * which also wakes the writer). Nothing is copied or remapped, so what the
 * workload sees on a first write is what an incremental checkpointer pays
 * per page to learn which pages changed.
 *
 * Service time (result->handler) runs from a fault message in hand until
 * the unprotecting ioctl returned, which includes waking the writer: an IPI
 * when the writer sleeps on the other CPU, and with handler-cpu=same usually
 * the writer's own run until its next fault (the woken writer preempts the
 * handler before the ioctl returns). Measured once with the wake split off
 * (DONTWAKE, then UFFDIO_WAKE) the unprotect alone took ~2 us either way, but
 * the extra call slowed the writer, so the single call stays; the touch
 * histogram is the fault's cost to the application.
 *
 * The handler thread is handler.c's. Stopping it happens in fixup (the
 * dirty set is final then, and the registration is dropped so no later
 * write can block on a handler that is gone) or, after a failure, in
 * teardown.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "handler.h"
#include "internal.h"

struct wp_anon_params {
	int handler_cpu;	/* enum wpc_handler_cpu */
	uint64_t chunk;		/* bytes unprotected (and reported dirty) per fault */
	struct wpc_fill_params fill;	/* of the restore, as `read`'s */
};

struct wp_anon {
	struct wpc_run *run;
	int uffd;
	bool registered;
	struct wpc_handler handler;
	uint64_t chunk;			/* bytes unprotected (and reported dirty) per fault */
	uint8_t *dirty;			/* one bit per page; set by the handler before it unprotects */

	/* Written by the handler only; read after it is joined. */
	int err;			/* first fatal error, positive errno; 0: none */
	const char *err_what;
	uint64_t faults;		/* write-protect faults served */
	uint64_t repeat_faults;		/* on a chunk already unprotected (racing writers) */
	uint64_t eagain;		/* UFFDIO_WRITEPROTECT retried on EAGAIN */
	uint64_t unexpected;		/* messages that were not write-protect faults */
	struct wpc_hist hist;		/* per fault: message in hand to unprotect returned */
};

static const struct wpc_param_spec wp_anon_param_specs[] = {
	WPC_HANDLER_CPU_PARAM_SPEC(struct wp_anon_params),
	{ "chunk", WPC_PARAM_SIZE, "4K|16K|64K|256K|2M", "4K",
	  "bytes unprotected per fault; the whole chunk is reported dirty, so chunks above "
	  "4K trade fewer faults for a coarser dirty set",
	  offsetof(struct wp_anon_params, chunk), 0, 0 },
	WPC_FILL_FROM_IMAGE_PARAM_SPECS(struct wp_anon_params, fill),
	{ NULL, 0, NULL, NULL, NULL, 0, 0, 0 },
};

static void wp_anon_needs_for(const void *params, struct wpc_needs *needs)
{
	const struct wp_anon_params *p = params;

	needs->other_cpu = p->handler_cpu == WPC_HANDLER_OTHER;
	wpc_fill_needs(&p->fill, WPC_FILL_FROM_IMAGE, needs);
}

static int wp_anon_check(const void *params, char *why, size_t len)
{
	const struct wp_anon_params *p = params;

	return wpc_fill_check(&p->fill, WPC_FILL_FROM_IMAGE, why, len);
}

/*
 * Nobody will unprotect any more: drop the registration (which clears the
 * write-protection) and wake the writers waiting in write-protect faults,
 * which unregistering alone leaves asleep; they retry onto writable pages.
 */
static int release_writers(struct wp_anon *wa)
{
	struct wpc_run *run = wa->run;
	int ret = wpc_uffd_unregister(wa->uffd, run->region, run->region_len);

	if (!ret)
		wa->registered = false;
	return ret ? ret : wpc_uffd_wake(wa->uffd, run->region, run->region_len);
}

/* The handler could not unprotect: no writer may stay blocked. */
static void handler_fail(struct wp_anon *wa, int err, const char *what)
{
	if (!wa->err) {
		wa->err = err;
		wa->err_what = what;
	}
	release_writers(wa);
}

static void mark_dirty(struct wp_anon *wa, uint64_t first, uint64_t end)
{
	if (__atomic_load_n(&wa->dirty[first / 8], __ATOMIC_RELAXED) & (1u << (first % 8)))
		wa->repeat_faults++;
	for (uint64_t p = first; p < end; p++)
		__atomic_fetch_or(&wa->dirty[p / 8], (uint8_t)(1u << (p % 8)), __ATOMIC_RELAXED);
}

static bool serve_fault(void *owner, const struct uffd_msg *msg)
{
	struct wp_anon *wa = owner;
	struct wpc_run *run = wa->run;
	uint64_t base = (uintptr_t)run->region;
	uint64_t addr = msg->arg.pagefault.address;
	int ret;

	if (msg->event != UFFD_EVENT_PAGEFAULT || !(msg->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) ||
	    addr < base || addr >= base + run->region_len) {
		wa->unexpected++;
		return false;
	}
	uint64_t off = (addr - base) / wa->chunk * wa->chunk;
	uint64_t len = run->region_len - off < wa->chunk ? run->region_len - off : wa->chunk;

	mark_dirty(wa, off / WPC_PAGE, (off + len) / WPC_PAGE);
	/* EAGAIN: the mm is changing under us (fork, mremap); the range is still ours to fix. */
	while ((ret = wpc_uffd_writeprotect(wa->uffd, run->region + off, len, false)) == -EAGAIN)
		wa->eagain++;
	if (ret)
		handler_fail(wa, -ret, "UFFDIO_WRITEPROTECT (unprotect)");
	else
		wa->faults++;
	return true;
}

/* Nobody will serve faults any more: release every writer. */
static bool orphaned(void *owner, int err)
{
	(void)err;
	return release_writers(owner) == 0;
}

static const struct wpc_handler_ops handler_ops = {
	.serve = serve_fault,
	.orphaned = orphaned,
	.stranded = "writers blocked in write-protect faults would never be woken",
	.released = "the region was unregistered and its writers woken",
};

static int wp_anon_restore(struct wpc_run *run)
{
	const struct wp_anon_params *params = run->params;
	struct wp_anon *wa = calloc(1, sizeof(*wa));
	uint64_t t0, t1;
	bool user_mode_only = true;
	int ret;

	if (!wa)
		return wpc_fail(run, ENOMEM, "out of memory for the strategy state");
	run->priv = wa;
	wa->run = run;
	wa->uffd = -1;
	wa->chunk = params->chunk;
	wpc_handler_init(&wa->handler);
	wpc_hist_reset(&wa->hist);
	wa->dirty = calloc((run->npages + 7) / 8, 1);
	if (!wa->dirty)
		return wpc_fail(run, ENOMEM, "out of memory for the dirty bitmap");

	/* As `read` restores: from here on nothing refers to the image. */
	t0 = wpc_now_ns();
	ret = wpc_fill_anonymous_from_image(run, &params->fill);
	if (ret)
		return ret;
	t1 = wpc_now_ns();

	/*
	 * Without UFFD_USER_MODE_ONLY the kernel's own writes into the region
	 * (read(2) into a protected page) wait for the handler like the
	 * application's; user mode only, they would fail with EFAULT. That
	 * needs privilege, so unprivileged runs fall back to user mode only
	 * (the row's WPC_UFFD_AUTO).
	 */
	wa->uffd = wpc_run_open_uffd(run, O_NONBLOCK, &user_mode_only);
	wpc_counter_set(run, "kernel_faults", wa->uffd >= 0 && !user_mode_only);
	if (wa->uffd < 0)
		return wa->uffd;
	wpc_counter_set(run, "read_ns", t1 - t0);
	ret = wpc_run_uffd_protect_region(run, wa->uffd, &wa->registered, t1);
	if (ret)
		return ret;
	wa->handler.hist = &wa->hist;
	return wpc_handler_start(&wa->handler, run, wa->uffd, params->handler_cpu, &handler_ops, wa);
}

/*
 * A handler that ended on an error released the writers first (orphaned),
 * so no writer waits on it. One that is gone without (a crash, or the test
 * hook) leaves every later writer blocked in the kernel: health says so now.
 */
static int wp_anon_health(struct wpc_run *run)
{
	struct wp_anon *wa = run->priv;

	return wa ? wpc_handler_health(&wa->handler) : 0;
}

/* Tracking ends: the dirty set is final, the handler's figures go into the result. */
static int wp_anon_fixup(struct wpc_run *run)
{
	struct wp_anon *wa = run->priv;
	uint64_t t0, t1;
	int ret;

	wpc_handler_stop(&wa->handler);
	wpc_handler_publish(&wa->handler, run);
	wpc_hist_merge(&run->res->handler, &wa->hist);
	wpc_counter_set(run, "wp_faults", wa->faults);
	wpc_counter_set(run, "repeat_faults", wa->repeat_faults);
	wpc_counter_set(run, "wp_eagain", wa->eagain);
	wpc_counter_set(run, "unexpected_msgs", wa->unexpected);
	if (wa->err)
		return wpc_fail(run, wa->err, "fault handler failed in %s: %s", wa->err_what,
				strerror(wa->err));
	ret = wpc_handler_error(&wa->handler);
	if (ret)
		return ret;

	t0 = wpc_now_ns();
	ret = wpc_uffd_unregister(wa->uffd, run->region, run->region_len);
	t1 = wpc_now_ns();
	if (ret)
		return wpc_fail(run, -ret, "UFFDIO_UNREGISTER of the region failed: %s", strerror(-ret));
	wa->registered = false;
	wpc_counter_set(run, "unregister_ns", t1 - t0);
	return 0;
}

static int wp_anon_dirty_pages(struct wpc_run *run, uint8_t *bitmap)
{
	struct wp_anon *wa = run->priv;

	for (uint64_t i = 0; i < (run->npages + 7) / 8; i++)
		bitmap[i] |= __atomic_load_n(&wa->dirty[i], __ATOMIC_RELAXED);
	return 0;
}

static void wp_anon_teardown(struct wpc_run *run)
{
	struct wp_anon *wa = run->priv;

	if (wa) {
		wpc_handler_destroy(&wa->handler);
		wpc_uffd_release(wa->uffd, wa->registered, run->region, run->region_len);
		free(wa->dirty);
		free(wa);
		run->priv = NULL;
	}
	wpc_run_unmap_region(run);
}

const struct wpc_strategy wpc_strategy_uffd_wp_anon = {
	.name = "uffd-wp-anon",
	.family = "uffd",
	.description = "anonymous memory filled with pread(), then write-protected with userfaultfd; "
		       "a handler thread unprotects each first write: the pure cost of a sync WP fault",
	.params = wp_anon_param_specs,
	.params_size = sizeof(struct wp_anon_params),
	.needs = { .uffd = WPC_UFFD_AUTO, .uffd_features = UFFD_FEATURE_PAGEFAULT_FLAG_WP,
		   .uffd_ioctls = 1ull << _UFFDIO_WRITEPROTECT },
	.needs_for = wp_anon_needs_for,
	.check = wp_anon_check,
	.restore = wp_anon_restore,
	.fixup = wp_anon_fixup,
	.dirty_pages = wp_anon_dirty_pages,
	.teardown = wp_anon_teardown,
	.health = wp_anon_health,
};
