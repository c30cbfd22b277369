/* SPDX-License-Identifier: MIT */
/*
 * The userfaultfd fault-handler thread (handler.c), one for every strategy
 * that serves faults on a thread of its own (uffd, uffd-huge, uffd-hybrid,
 * uffd-move, uffd-minor, uffd-wp, uffd-wp-anon), and where it runs.
 *
 * Placement (parameter handler-cpu, the same in every one of them):
 *   same   pinned to the CPU workload thread 0 is pinned to: the first CPU
 *          this process may run on (a SIGSEGV or SIGBUS handler runs on the
 *          faulting thread itself, so this is the like-for-like setting);
 *   other  pinned to the second CPU this process may run on. With only one
 *          there is no other CPU: the strategy is skipped (its row's needs_for
 *          sets needs.other_cpu; wpc_needs_check says why) and a run asked for
 *          anyway fails at restore with the same reason
 *          (wpc_handler_cpu_for in context.c words both).
 *          It never falls back to the same CPU or to unpinned: the figures
 *          would then be another placement's under this one's name;
 *   any    not pinned: the scheduler places it.
 * The CPU used is reported as the result's handler_cpu (-1: not pinned).
 */
#ifndef WPC_HANDLER_H
#define WPC_HANDLER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "compat.h"
#include "internal.h"

/* The help of every handler-cpu parameter. */
#define WPC_HANDLER_CPU_HELP								\
	"CPU of the fault handler thread: same (workload thread 0's, as a signal handler "	\
	"runs on the faulting thread), other (the second this process may use; skipped "	\
	"where it may use one) or any (not pinned)"

/* The handler-cpu parameter of a strategy whose params struct has a handler_cpu field. */
#define WPC_HANDLER_CPU_PARAM_SPEC(type)						\
	{ "handler-cpu", WPC_PARAM_CHOICE, WPC_HANDLER_CPU_CHOICES, "same",		\
	  WPC_HANDLER_CPU_HELP, offsetof(type, handler_cpu), 0, 0 }

struct wpc_handler_ops {
	/*
	 * Serve one message, on the handler thread. True if it was a fault
	 * served: its service time (message in hand until serve returned) goes
	 * into the handler histogram. Errors of serving are the strategy's to
	 * record; the handler goes on.
	 */
	bool (*serve)(void *owner, const struct uffd_msg *msg);
	/*
	 * Optional, on the handler thread, when it ends on an error of its own
	 * (poll, read): nobody serves faults any more. Release every waiter
	 * (unprotect, unregister) and return true; false, or no op: waiters
	 * stay blocked and health fails the run at once.
	 */
	bool (*orphaned)(void *owner, int err);
	/* What a handler gone leaves behind, for the reason ("writers ... never woken"). */
	const char *stranded;
	/* What orphaned did, for the reason ("the rest of the region was unprotected in place"). */
	const char *released;
};

struct wpc_handler {
	struct wpc_run *run;
	const struct wpc_handler_ops *ops;
	void *owner;
	int uffd;		/* O_NONBLOCK; the strategy's, never closed here */
	int stop_fd;		/* eventfd: readable once asked to stop */
	int cpu;		/* where it runs; -1: not pinned */
	/* Set before wpc_handler_start: */
	uint64_t delay_ns;	/* before each batch of messages: a simulated slow page source */
	/*
	 * Service time of each fault: the strategy's histogram (one it has
	 * anyway, faulted in already), this thread its only recorder meanwhile.
	 */
	struct wpc_hist *hist;

	pthread_t tid;
	bool started;		/* running, or ended and not joined yet */
	bool gone;		/* ended by itself (an error, a crash, the test hook), joined */

	/* Written by the thread; read once it is joined. */
	int err;		/* positive errno that ended it; 0: none */
	const char *err_what;
	bool released;		/* ops->orphaned released every waiter */
	uint64_t reads;		/* read() calls that returned messages */
	uint64_t faults;	/* faults served */
};

/* Before anything else, so that stop, destroy and publish are safe on it. */
void wpc_handler_init(struct wpc_handler *h);
/*
 * Start the handler on the userfaultfd uffd, at placement (enum
 * wpc_handler_cpu), with every signal blocked; records the CPU as the run's
 * handler_cpu. 0 or wpc_fail()'s -errno.
 */
int wpc_handler_start(struct wpc_handler *h, struct wpc_run *run, int uffd, int placement,
		      const struct wpc_handler_ops *ops, void *owner);
/*
 * Ask it to stop and join it. It serves what is queued first (without
 * delay): a message that arrived late still gets its answer. Safe to call
 * again, and on a handler never started.
 */
void wpc_handler_stop(struct wpc_handler *h);
/*
 * The strategy's health op: 0 while the handler serves faults, or while it
 * is gone but released every waiter; else wpc_fail()'s -errno naming it.
 */
int wpc_handler_health(struct wpc_handler *h);
/* After wpc_handler_stop: 0, or wpc_fail()'s -errno if an error ended the handler. */
int wpc_handler_error(struct wpc_handler *h);
/* Counter fault_reads into the run's result. */
void wpc_handler_publish(struct wpc_handler *h, struct wpc_run *run);
/* Close the stop eventfd (after wpc_handler_stop). */
void wpc_handler_destroy(struct wpc_handler *h);

#endif /* WPC_HANDLER_H */
