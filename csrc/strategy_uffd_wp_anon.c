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
 * The handler waits in poll() on the userfaultfd and an eventfd; the eventfd
 * is how it is told to exit, so stopping it never depends on a fault
 * arriving. Stopping happens in fixup (the dirty set is final then, and the
 * registration is dropped so no later write can block on a handler that is
 * gone) or, after a failure, in teardown.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

#define MSG_BATCH 64	/* fault messages taken per read() */

struct wp_anon_params {
	int handler_cpu;	/* enum wpc_handler_cpu */
	uint64_t chunk;		/* bytes unprotected (and reported dirty) per fault */
};

struct wp_anon {
	int uffd;
	int stop_fd;			/* eventfd: the handler exits when it becomes readable */
	bool registered;
	bool handler_started;
	pthread_t handler;
	int handler_cpu;		/* -1: unpinned */
	atomic_int handler_ready;
	uint64_t chunk;			/* bytes unprotected (and reported dirty) per fault */
	uint8_t *dirty;			/* one bit per page; set by the handler before it unprotects */

	/* Written by the handler only; read after it is joined. */
	int pin_err;
	int err;			/* first fatal error, positive errno; 0: none */
	const char *err_what;
	uint64_t faults;		/* write-protect faults served */
	uint64_t repeat_faults;		/* on a chunk already unprotected (racing writers) */
	uint64_t reads;			/* read() calls that returned messages */
	uint64_t eagain;		/* UFFDIO_WRITEPROTECT retried on EAGAIN */
	uint64_t unexpected;		/* messages that were not write-protect faults */
	struct wpc_hist hist;		/* per fault: message in hand to unprotect returned */
};

static const struct wpc_param_spec wp_anon_param_specs[] = {
	{ "handler-cpu", WPC_PARAM_CHOICE, WPC_HANDLER_CPU_CHOICES, "same",
	  "where the fault handler thread runs relative to workload thread 0",
	  offsetof(struct wp_anon_params, handler_cpu), 0, 0 },
	{ "chunk", WPC_PARAM_SIZE, "4K|16K|64K|256K|2M", "4K",
	  "bytes unprotected per fault; the whole chunk is reported dirty, so chunks above "
	  "4K trade fewer faults for a coarser dirty set",
	  offsetof(struct wp_anon_params, chunk), 0, 0 },
	{ NULL, 0, NULL, NULL, NULL, 0, 0, 0 },
};

/* The handler could not unprotect: drop the registration so no writer stays blocked. */
static void handler_fail(struct wpc_run *run, struct wp_anon *wa, int err, const char *what)
{
	if (!wa->err) {
		wa->err = err;
		wa->err_what = what;
	}
	wpc_uffd_unregister(wa->uffd, run->region, run->region_len);
}

static void mark_dirty(struct wp_anon *wa, uint64_t first, uint64_t end)
{
	if (__atomic_load_n(&wa->dirty[first / 8], __ATOMIC_RELAXED) & (1u << (first % 8)))
		wa->repeat_faults++;
	for (uint64_t p = first; p < end; p++)
		__atomic_fetch_or(&wa->dirty[p / 8], (uint8_t)(1u << (p % 8)), __ATOMIC_RELAXED);
}

static void serve_fault(struct wpc_run *run, struct wp_anon *wa, const struct uffd_msg *msg)
{
	uint64_t t0 = wpc_now_ns();
	uint64_t base = (uintptr_t)run->region;
	uint64_t addr = msg->arg.pagefault.address;
	int ret;

	if (msg->event != UFFD_EVENT_PAGEFAULT || !(msg->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) ||
	    addr < base || addr >= base + run->region_len) {
		wa->unexpected++;
		return;
	}
	uint64_t off = (addr - base) / wa->chunk * wa->chunk;
	uint64_t len = run->region_len - off < wa->chunk ? run->region_len - off : wa->chunk;

	mark_dirty(wa, off / WPC_PAGE, (off + len) / WPC_PAGE);
	/* EAGAIN: the mm is changing under us (fork, mremap); the range is still ours to fix. */
	while ((ret = wpc_uffd_writeprotect(wa->uffd, run->region + off, len, false)) == -EAGAIN)
		wa->eagain++;
	if (ret) {
		handler_fail(run, wa, -ret, "UFFDIO_WRITEPROTECT (unprotect)");
		return;
	}
	wpc_hist_record(&wa->hist, wpc_now_ns() - t0);
	wa->faults++;
}

static void *handler_main(void *arg)
{
	struct wpc_run *run = arg;
	struct wp_anon *wa = run->priv;
	struct uffd_msg msgs[MSG_BATCH];
	struct pollfd pfd[2] = {
		{ .fd = wa->uffd, .events = POLLIN },
		{ .fd = wa->stop_fd, .events = POLLIN },
	};

	if (wa->handler_cpu >= 0)
		wa->pin_err = wpc_pin_self(wa->handler_cpu);
	atomic_store(&wa->handler_ready, 1);

	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			handler_fail(run, wa, errno, "poll");
			break;
		}
		/* Serve faults before looking at the stop request: a blocked writer comes first. */
		if (pfd[0].revents & POLLIN) {
			ssize_t got = read(wa->uffd, msgs, sizeof(msgs));

			if (got < 0 && errno != EAGAIN && errno != EINTR) {
				handler_fail(run, wa, errno, "read of the userfaultfd");
				break;
			}
			if (got > 0) {
				wa->reads++;
				for (size_t i = 0; i < (size_t)got / sizeof(msgs[0]); i++) {
					serve_fault(run, wa, &msgs[i]);
					/* Test-only: vanish as a crashed handler would, faults unserved. */
					if (wpc_inject_handler_exit(wa->faults))
						return NULL;
				}
			}
		}
		if (pfd[1].revents)
			break;
		if (pfd[0].revents & (POLLERR | POLLHUP)) {
			handler_fail(run, wa, EIO, "poll of the userfaultfd");
			break;
		}
	}
	return NULL;
}

static int start_handler(struct wpc_run *run, struct wp_anon *wa)
{
	const struct wp_anon_params *params = run->params;
	int placement = params->handler_cpu;
	int ret;

	wa->handler_cpu = wpc_handler_cpu_for(run, placement);
	if (placement == WPC_HANDLER_OTHER && wa->handler_cpu < 0)
		return wpc_fail(run, EINVAL, "handler-cpu=other needs 2 usable CPUs; this process has %d",
				run->ncpus);
	ret = pthread_create(&wa->handler, NULL, handler_main, run);
	if (ret)
		return wpc_fail(run, ret, "cannot start the fault handler thread: %s", strerror(ret));
	wa->handler_started = true;
	while (!atomic_load(&wa->handler_ready))
		sched_yield();
	if (wa->pin_err)
		return wpc_fail(run, -wa->pin_err, "cannot pin the fault handler to CPU %d: %s",
				wa->handler_cpu, strerror(-wa->pin_err));
	run->res->handler_cpu = wa->handler_cpu;
	return 0;
}

static int wp_anon_restore(struct wpc_run *run)
{
	const struct wp_anon_params *params = run->params;
	struct wp_anon *wa = calloc(1, sizeof(*wa));
	uint64_t t0, t1, t2, t3;
	bool user_mode_only = true;
	int ret;

	if (!wa)
		return wpc_fail(run, ENOMEM, "out of memory for the strategy state");
	run->priv = wa;
	wa->uffd = wa->stop_fd = -1;
	wa->chunk = params->chunk;
	wpc_hist_reset(&wa->hist);
	wa->dirty = calloc((run->npages + 7) / 8, 1);
	if (!wa->dirty)
		return wpc_fail(run, ENOMEM, "out of memory for the dirty bitmap");

	/* As `read` restores: from here on nothing refers to the image. */
	t0 = wpc_now_ns();
	ret = wpc_run_read_into_anonymous(run);
	if (ret)
		return ret;
	t1 = wpc_now_ns();

	wa->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (wa->stop_fd < 0)
		return wpc_fail(run, errno, "eventfd: %s", strerror(errno));
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
	ret = wpc_run_uffd_register(run, wa->uffd, run->region, run->region_len,
				    UFFDIO_REGISTER_MODE_WP);
	if (ret)
		return ret;
	wa->registered = true;
	t2 = wpc_now_ns();
	ret = wpc_uffd_writeprotect(wa->uffd, run->region, run->region_len, true);
	if (ret)
		return wpc_fail(run, -ret, "UFFDIO_WRITEPROTECT of the region failed: %s",
				strerror(-ret));
	t3 = wpc_now_ns();

	wpc_counter_set(run, "read_ns", t1 - t0);
	wpc_counter_set(run, "register_ns", t2 - t1);
	wpc_counter_set(run, "protect_ns", t3 - t2);
	return start_handler(run, wa);
}

static void stop_handler(struct wp_anon *wa)
{
	uint64_t one = 1;

	if (!wa->handler_started)
		return;
	/* An eventfd write fails only on counter overflow, which one write cannot cause. */
	ssize_t n = write(wa->stop_fd, &one, sizeof(one));
	(void)n;
	pthread_join(wa->handler, NULL);
	wa->handler_started = false;
}

/*
 * A handler that ended by handler_fail() unregistered the region first, so no
 * writer waits on it. One that is gone without (a crash, or the test hook)
 * leaves every later writer blocked in the kernel: say so now.
 */
static int wp_anon_health(struct wpc_run *run)
{
	struct wp_anon *wa = run->priv;

	if (!wa || !wpc_thread_exited(wa->handler, &wa->handler_started) || wa->err)
		return 0;
	return wpc_fail(run, EPIPE, "the userfaultfd handler thread is gone while the workload runs: "
			"writers blocked in write-protect faults would never be woken");
}

/* Tracking ends: the dirty set is final, the handler's figures go into the result. */
static int wp_anon_fixup(struct wpc_run *run)
{
	struct wp_anon *wa = run->priv;
	uint64_t t0, t1;

	stop_handler(wa);
	wpc_hist_merge(&run->res->handler, &wa->hist);
	wpc_counter_set(run, "wp_faults", wa->faults);
	wpc_counter_set(run, "repeat_faults", wa->repeat_faults);
	wpc_counter_set(run, "msg_reads", wa->reads);
	wpc_counter_set(run, "wp_eagain", wa->eagain);
	wpc_counter_set(run, "unexpected_msgs", wa->unexpected);
	if (wa->err)
		return wpc_fail(run, wa->err, "fault handler failed in %s: %s", wa->err_what,
				strerror(wa->err));

	t0 = wpc_now_ns();
	int ret = wpc_uffd_unregister(wa->uffd, run->region, run->region_len);
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
		stop_handler(wa);
		if (wa->registered)
			wpc_uffd_unregister(wa->uffd, run->region, run->region_len);
		if (wa->uffd >= 0)
			close(wa->uffd);
		if (wa->stop_fd >= 0)
			close(wa->stop_fd);
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
	.restore = wp_anon_restore,
	.fixup = wp_anon_fixup,
	.dirty_pages = wp_anon_dirty_pages,
	.teardown = wp_anon_teardown,
	.health = wp_anon_health,
};
