/* SPDX-License-Identifier: MIT */
/*
 * uffd-sigbus: the region is registered MISSING with UFFD_FEATURE_SIGBUS, so
 * a fault on a page not yet loaded raises SIGBUS in the faulting thread
 * instead of waking a handler thread. The signal handler places the page
 * itself (UFFDIO_COPY from the image view) and returns; the access is
 * retried. No context switch, no handler thread, nobody to wake.
 *
 * Faults taken inside the kernel (a syscall on a page not yet loaded) cannot
 * be delivered as a signal and fail with EFAULT, so the userfaultfd is opened
 * UFFD_USER_MODE_ONLY: nothing is lost and no privilege is needed.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "uffd_loader.h"

struct sigbus_params {
	uint64_t chunk;		/* fault-around bytes resolved per SIGBUS */
	int zero;		/* enum wpc_zero_mode */
};

/*
 * The signal handler's only way to its run: a handler takes no argument.
 * One uffd-sigbus run per process at a time (sigbus_claimed); sigbus_owner is
 * published once the region can be served, and sigbus_active counts handlers
 * that may still be using it, so teardown can wait for them before freeing.
 */
static atomic_bool sigbus_claimed;
static struct wpc_uffd *_Atomic sigbus_owner;
static _Atomic int sigbus_active;
static struct sigaction sigbus_prev;

/* A SIGBUS that is not ours goes where it would have gone without us. */
static void chain(int sig, siginfo_t *si, void *uc)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };

	if (sigbus_prev.sa_flags & SA_SIGINFO) {
		sigbus_prev.sa_sigaction(sig, si, uc);
		return;
	}
	if (sigbus_prev.sa_handler == SIG_IGN && si->si_code <= 0)
		return;		/* sent, not a fault: ignoring it is what was asked */
	if (sigbus_prev.sa_handler != SIG_DFL && sigbus_prev.sa_handler != SIG_IGN) {
		sigbus_prev.sa_handler(sig);
		return;
	}
	/* The default action: terminate, as the signal would have without us. */
	sigemptyset(&dfl.sa_mask);
	sigaction(sig, &dfl, NULL);
	raise(sig);
}

/*
 * A fault that cannot be resolved has no bytes to give: returning would fault
 * again, forever, and unregistering would hand the thread an empty page to
 * read as if it were the image's. Say why on stderr and die by SIGBUS (the
 * default action, taken when the access is retried), as a lazily mapped
 * image that cannot be read dies. Async-signal-safe.
 */
static void die_unresolved(struct wpc_uffd *u, int err)
{
	static const char what[] = "wpcompare: uffd-sigbus: a fault could not be resolved (errno ";
	char digits[12];
	int n = 0;
	struct sigaction dfl = { .sa_handler = SIG_DFL };

	wpc_uffd_give_up(u, err, "resolving a fault in the SIGBUS handler");
	for (int v = err > 0 ? err : -err; n == 0 || v; v /= 10)
		digits[sizeof(digits) - 1 - n++] = (char)('0' + v % 10);
	if (write(2, what, sizeof(what) - 1) < 0 ||
	    write(2, digits + sizeof(digits) - n, (size_t)n) < 0 || write(2, "): dying by SIGBUS\n", 19) < 0) {
		/* Nothing better to do: the signal below still says what happened. */
	}
	sigemptyset(&dfl.sa_mask);
	sigaction(SIGBUS, &dfl, NULL);
}

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	int saved_errno = errno;
	bool ours = false;

	atomic_fetch_add(&sigbus_active, 1);
	struct wpc_uffd *u = atomic_load(&sigbus_owner);
	uintptr_t addr = (uintptr_t)si->si_addr;

	if (u && si->si_code == BUS_ADRERR && addr >= (uintptr_t)u->run->region &&
	    addr < (uintptr_t)u->run->region + u->map_len) {
		uint64_t t0 = wpc_now_ns();
		int ret;

		ours = true;
		atomic_fetch_add_explicit(&u->st.faults, 1, memory_order_relaxed);
		ret = wpc_uffd_resolve(u, addr, false, false);
		if (ret)
			die_unresolved(u, -ret);
		wpc_hist_record_concurrent(u->hist, wpc_now_ns() - t0);
	}
	atomic_fetch_sub(&sigbus_active, 1);
	if (!ours)
		chain(sig, si, uc);
	errno = saved_errno;
}

static int sigbus_restore(struct wpc_run *run)
{
	const struct sigbus_params *params = run->params;
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO | SA_RESTART };
	struct wpc_uffd *u;
	bool unclaimed = false;
	int ret;

	if (!atomic_compare_exchange_strong(&sigbus_claimed, &unclaimed, true))
		return wpc_fail(run, EBUSY, "another uffd-sigbus run is active in this process; "
				"run one at a time");
	u = calloc(1, sizeof(*u));
	if (!u) {
		atomic_store(&sigbus_claimed, false);
		return wpc_fail(run, ENOMEM, "out of memory for the userfaultfd state");
	}
	run->priv = u;
	ret = wpc_uffd_init(run, u, WPC_FILL_COPY, WPC_PAGE);
	if (ret)
		return ret;
	u->chunk = params->chunk > WPC_PAGE ? params->chunk : WPC_PAGE;

	void *p = mmap(NULL, u->map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return wpc_fail(run, errno, "mmap of the region: %s", strerror(errno));
	run->region = p;
	ret = params->zero == WPC_ZERO_ZEROPAGE ? wpc_uffd_map_zeros(u) : 0;
	if (!ret)
		ret = wpc_uffd_register(u, UFFDIO_REGISTER_MODE_MISSING);
	if (!ret)
		ret = wpc_uffd_map_view(u);
	if (ret)
		return ret;

	/* The handler runs on whichever thread faults; thread 0's CPU stands for them. */
	run->res->handler_cpu = run->cfg.workload.pin_threads ? wpc_cpu_nth(run, 0) : -1;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &sigbus_prev) < 0)
		return wpc_fail(run, errno, "sigaction(SIGBUS): %s", strerror(errno));
	u->signal_installed = true;
	atomic_store(&sigbus_owner, u);
	return 0;
}

static int sigbus_fixup(struct wpc_run *run)
{
	struct wpc_uffd *u = run->priv;
	int ret = wpc_uffd_finish(u);

	wpc_uffd_publish(u);
	return ret;
}

/* Loading the rest runs alongside the application: its faults are still served. */
static int64_t sigbus_fixup_pause_ns(struct wpc_run *run)
{
	return run->priv ? 0 : run->res->phase[WPC_PHASE_FIXUP].ns;
}

static void sigbus_teardown(struct wpc_run *run)
{
	struct wpc_uffd *u = run->priv;

	if (!u)
		return;
	if (u->signal_installed) {
		sigaction(SIGBUS, &sigbus_prev, NULL);
		atomic_store(&sigbus_owner, NULL);
		while (atomic_load(&sigbus_active))
			sched_yield();
	}
	wpc_uffd_teardown(u);
	free(u);
	run->priv = NULL;
	atomic_store(&sigbus_claimed, false);
}

static const struct wpc_param_spec sigbus_param_specs[] = {
	{ "chunk", WPC_PARAM_SIZE, "4K|8K|16K|32K|64K|128K|256K|512K|1M|2M", "4K",
	  "bytes resolved per fault (fault-around), the aligned block around the faulting page",
	  offsetof(struct sigbus_params, chunk), 0, 0 },
	WPC_ZERO_PARAM_SPEC(struct sigbus_params),
	{ 0 },
};

static void sigbus_needs_for(const void *params, struct wpc_needs *needs)
{
	const struct sigbus_params *p = params;

	wpc_uffd_zero_needs(p->zero, needs);
}

const struct wpc_strategy wpc_strategy_uffd_sigbus = {
	.name = "uffd-sigbus",
	.family = "userfaultfd",
	.description = "anonymous region registered with UFFD_FEATURE_SIGBUS: the faulting "
		       "thread copies its own page in a SIGBUS handler, no context switch",
	.params = sigbus_param_specs,
	.params_size = sizeof(struct sigbus_params),
	/*
	 * A fault inside a syscall cannot be delivered as a signal: user mode
	 * only, so nothing waits for a handler that is not there, and no privilege.
	 */
	.needs = { .uffd = WPC_UFFD_USER_MODE, .uffd_features = UFFD_FEATURE_SIGBUS,
		   .uffd_ioctls = 1ull << _UFFDIO_COPY },
	.needs_for = sigbus_needs_for,
	.restore = sigbus_restore,
	.fixup = sigbus_fixup,
	.fixup_pause_ns = sigbus_fixup_pause_ns,
	.teardown = sigbus_teardown,
};
