/* SPDX-License-Identifier: MIT */
/*
 * The userfaultfd fault-handler thread (handler.h says who uses it and what
 * its placements mean).
 *
 * It waits in poll() on the userfaultfd and on an eventfd that asks it to
 * stop, so stopping never depends on a fault arriving. A wakeup reads fault
 * messages in batches (the descriptor is O_NONBLOCK) until a batch comes back
 * short, and hands each to the strategy's serve op; the time serve takes is
 * the fault's service time, measured here the same way for every strategy.
 * Asked to stop, it serves what is still queued, then returns: a writer whose
 * message came late still gets its wake.
 *
 * Its own failures (poll, read) end it: the error is kept, the strategy's
 * orphaned op may release the waiters, and the run hears of it through
 * wpc_handler_health (at once, while the workload runs) or wpc_handler_error
 * (at fixup). A handler that vanished without an error (a crash; the test
 * hook WPCOMPARE_INJECT_HANDLER_EXIT) is found by health as well.
 */
#define _GNU_SOURCE
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "handler.h"

#define MSG_BATCH 64		/* fault messages taken per read() */
#define VANISHED 1		/* drain(): the test-only hook says the handler is gone now */

/* ---- the thread ---- */

static void *ended(struct wpc_handler *h, int err, const char *what)
{
	h->err = err;
	h->err_what = what;
	h->released = h->ops->orphaned && h->ops->orphaned(h->owner, err);
	return NULL;
}

/* Sleep delay_ns unless asked to stop; true if asked to stop. */
static bool delay_or_stop(struct wpc_handler *h)
{
	struct pollfd pfd = { .fd = h->stop_fd, .events = POLLIN };
	struct timespec ts = { .tv_sec = (time_t)(h->delay_ns / 1000000000u),
			       .tv_nsec = (long)(h->delay_ns % 1000000000u) };

	return ppoll(&pfd, 1, &ts, NULL) > 0;
}

/* One message; VANISHED if the test-only hook says the handler must be gone now. */
static int serve_one(struct wpc_handler *h, const struct uffd_msg *msg)
{
	uint64_t t0 = wpc_now_ns();

	if (!h->ops->serve(h->owner, msg))
		return 0;
	wpc_hist_record(h->hist, wpc_now_ns() - t0);
	h->faults++;
	/* Test-only: vanish as a crashed handler would, leaving faults unserved. */
	return wpc_inject_handler_exit(h->faults) ? VANISHED : 0;
}

/*
 * Serve queued messages until a batch comes back short (all: until none is
 * left). 0, VANISHED, or -errno of read().
 */
static int drain(struct wpc_handler *h, bool all)
{
	struct uffd_msg msgs[MSG_BATCH];

	for (;;) {
		/* Test-only: a read() failing as the kernel's would. */
		if (wpc_inject_handler_error(h->faults))
			return -EIO;

		ssize_t n = read(h->uffd, msgs, sizeof(msgs));

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno == EAGAIN ? 0 : -errno;
		h->reads++;
		for (size_t i = 0; i < (size_t)n / sizeof(msgs[0]); i++)
			if (serve_one(h, &msgs[i]))
				return VANISHED;
		if (!all && (size_t)n < sizeof(msgs))
			return 0;
	}
}

static void *handler_main(void *arg)
{
	struct wpc_handler *h = arg;
	struct pollfd pfd[2] = {
		{ .fd = h->uffd, .events = POLLIN },
		{ .fd = h->stop_fd, .events = POLLIN },
	};

	for (;;) {
		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			return ended(h, errno, "polling the userfaultfd");
		}
		if (pfd[0].revents & (POLLERR | POLLHUP | POLLNVAL))
			return ended(h, EIO, "polling the userfaultfd (error or hang-up)");

		bool stopping = pfd[1].revents;
		/*
		 * A slow page source: requests that arrive while one is in
		 * transit travel together, so the delay is per batch.
		 */
		if (!stopping && h->delay_ns)
			stopping = delay_or_stop(h);

		int ret = drain(h, stopping);
		if (ret == VANISHED)
			return NULL;
		if (ret)
			return ended(h, -ret, "reading fault messages");
		if (stopping)
			return NULL;
	}
}

/* ---- its life ---- */

void wpc_handler_init(struct wpc_handler *h)
{
	memset(h, 0, sizeof(*h));
	h->uffd = -1;
	h->stop_fd = -1;
	h->cpu = -1;
}

int wpc_handler_start(struct wpc_handler *h, struct wpc_run *run, int uffd, int placement,
		      const struct wpc_handler_ops *ops, void *owner)
{
	char why[WPC_REASON_LEN];
	int ret;

	h->run = run;
	h->uffd = uffd;
	h->ops = ops;
	h->owner = owner;
	ret = wpc_handler_cpu_for(run->cpus, run->ncpus, placement, &h->cpu, why, sizeof(why));
	if (ret)
		return wpc_fail(run, -ret, "%s", why);
	if (h->stop_fd < 0)
		h->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (h->stop_fd < 0)
		return wpc_fail(run, errno, "eventfd for the fault handler: %s", strerror(errno));
	ret = wpc_thread_start_quiet(&h->tid, h->cpu, handler_main, h);
	if (ret) {
		if (h->cpu >= 0)
			return wpc_fail(run, -ret, "cannot start the userfaultfd handler thread on CPU %d: %s",
					h->cpu, strerror(-ret));
		return wpc_fail(run, -ret, "cannot start the userfaultfd handler thread: %s",
				strerror(-ret));
	}
	h->started = true;
	run->res->handler_cpu = h->cpu;
	return 0;
}

void wpc_handler_stop(struct wpc_handler *h)
{
	uint64_t one = 1;

	if (!h->started)
		return;
	/* An eventfd write fails only on counter overflow, which one write cannot cause. */
	ssize_t n = write(h->stop_fd, &one, sizeof(one));
	(void)n;
	pthread_join(h->tid, NULL);
	h->started = false;
}

static int reason(struct wpc_handler *h)
{
	if (!h->err)
		return wpc_fail(h->run, EPIPE, "the userfaultfd handler thread is gone while the workload "
				"runs: %s", h->ops->stranded);
	return wpc_fail(h->run, h->err, "the userfaultfd handler thread stopped: %s failed: %s; %s",
			h->err_what, strerror(h->err), h->released ? h->ops->released : h->ops->stranded);
}

int wpc_handler_health(struct wpc_handler *h)
{
	if (wpc_thread_exited(h->tid, &h->started))
		h->gone = true;
	if (!h->gone || h->released)
		return 0;
	return reason(h);
}

int wpc_handler_error(struct wpc_handler *h)
{
	return h->err ? reason(h) : 0;
}

void wpc_handler_publish(struct wpc_handler *h, struct wpc_run *run)
{
	wpc_counter_set(run, "fault_reads", h->reads);
}

void wpc_handler_destroy(struct wpc_handler *h)
{
	wpc_handler_stop(h);
	if (h->stop_fd >= 0)
		close(h->stop_fd);
	h->stop_fd = -1;
}
