/* SPDX-License-Identifier: MIT */
/*
 * `sigsegv`: the approach of openjdk/crac PR 57. The image is mapped
 * MAP_PRIVATE and read-only; the first write to a chunk raises SIGSEGV; the
 * handler copies the chunk into anonymous memory and remaps the copy over
 * the original (chunk_fixup.c), and the write is retried into the copy. The
 * rest of the region is fixed up by a background thread while the
 * application runs (fixup=background), in the fixup phase in one batched
 * pass (at-checkpoint), or in the fixup phase chunk by chunk
 * (on-write-only: what the background thread would do, paid in the pause).
 *
 * Read-only from the first mmap, not mapped writable and then mprotected as
 * the PR does: the VMA ends up the same (a private mapping keeps
 * VM_MAYWRITE either way), it is one syscall fewer in the measured restore,
 * and nothing can write the region between the two calls. The PR protects
 * after mapping because CRaC maps the heap at its fixed address as part of
 * its ordinary restore path and only then arms the handler.
 *
 * Known limit of the approach (not of this code): a system call that writes
 * into a read-only chunk (read(2) into the region) fails with EFAULT instead
 * of faulting, because the kernel does not raise SIGSEGV for its own
 * accesses. uffd-wp blocks such a write in the kernel until handled.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#include "internal.h"

enum sigsegv_fixup {
	SIGSEGV_FIXUP_BACKGROUND,
	SIGSEGV_FIXUP_AT_CHECKPOINT,
	SIGSEGV_FIXUP_ON_WRITE_ONLY,
};

struct sigsegv_params {
	uint64_t chunk;
	int fixup;		/* enum sigsegv_fixup */
	int copy;		/* enum wpc_chunk_copy */
	struct wpc_fill_params sweep_fill;	/* threads= of the at-checkpoint sweep */
};

struct sigsegv_ctx {
	struct wpc_chunks chunks;
	bool chunks_ready;
	bool installed;
};

/*
 * The state a signal handler must reach, and therefore global: the one
 * region the handler serves, and the handler it chains to.
 *
 * One region per process: a second sigsegv run restored while one is active
 * fails with EBUSY (one run is one process, and a restored process has one
 * heap; serving several would need a lock-free list the handler searches).
 *
 * `previous` stays valid after teardown, so a handler someone installed on
 * top of ours that chains to us still reaches the original one.
 */
static struct sigsegv_ctx *_Atomic sigsegv_active;
static struct sigaction sigsegv_previous;

/* What the previous disposition would have done with this SIGSEGV. */
static void chain_to_previous(int sig, siginfo_t *si, void *uctx)
{
	const struct sigaction *prev = &sigsegv_previous;

	if (prev->sa_flags & SA_SIGINFO) {
		prev->sa_sigaction(sig, si, uctx);
		return;
	}
	if (prev->sa_handler == SIG_IGN && si->si_code <= 0)
		return;		/* sent with kill(): ignoring it is what SIG_IGN means */
	if (prev->sa_handler != SIG_DFL && prev->sa_handler != SIG_IGN) {
		prev->sa_handler(sig);
		return;
	}
	/*
	 * SIG_DFL, or SIG_IGN for a real fault (which the kernel would not let
	 * be ignored either): die by SIGSEGV. The raised signal stays pending
	 * while this handler blocks it and kills the process on return; a real
	 * fault would also simply recur.
	 */
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	sigemptyset(&dfl.sa_mask);
	sigaction(sig, &dfl, NULL);
	raise(sig);
}

/*
 * Is this fault a write? Only a write is ours to serve: an instruction fetch
 * from the region (a jump into the heap: a real bug) is SEGV_ACCERR in the
 * region too, and serving it would move the chunk, return, and fault again
 * forever instead of crashing. x86-64 hands us the page-fault error code;
 * elsewhere a read-only region faults on writes and fetches only, and a
 * fetch from a moved chunk would loop (documented gap).
 */
static bool is_write_fault(const void *uctx)
{
#if defined(__x86_64__)
	const ucontext_t *uc = uctx;

	return uc->uc_mcontext.gregs[REG_ERR] & 2;	/* X86_PF_WRITE */
#else
	(void)uctx;
	return true;
#endif
}

/*
 * Async-signal-safe throughout: an atomic load, clock_gettime, and
 * chunk_fixup's fault path (atomics, memcpy, mremap, futex).
 *
 * Nested faults: SIGSEGV is blocked while this runs (as is every other
 * signal, sa_mask is full), and the kernel kills a thread whose synchronous
 * SIGSEGV is blocked. So a fault inside the handler itself (a bug, or an
 * image truncated under a mapped chunk, which is SIGBUS and kills likewise)
 * terminates the process with that signal instead of recursing or
 * deadlocking on a chunk the thread itself holds.
 */
static void sigsegv_handler(int sig, siginfo_t *si, void *uctx)
{
	struct sigsegv_ctx *ctx = atomic_load_explicit(&sigsegv_active, memory_order_acquire);
	uintptr_t addr = (uintptr_t)si->si_addr;
	int saved_errno = errno;

	/* Only a write to a read-only chunk of our region is ours: SEGV_ACCERR. */
	if (ctx && si->si_code == SEGV_ACCERR && wpc_chunks_contains(&ctx->chunks, addr) &&
	    is_write_fault(uctx)) {
		uint64_t t0 = wpc_now_ns();

		wpc_chunks_write_fault(&ctx->chunks, addr);
		wpc_chunks_record(&ctx->chunks, wpc_now_ns() - t0);
		errno = saved_errno;
		return;
	}
	errno = saved_errno;
	chain_to_previous(sig, si, uctx);
}

static int install_handler(struct wpc_run *run, struct sigsegv_ctx *ctx)
{
	struct sigsegv_ctx *none = NULL;
	struct sigaction sa = {
		.sa_sigaction = sigsegv_handler,
		/* ONSTACK: a previous handler that relies on sigaltstack (stack overflow) still gets it. */
		.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART,
	};

	if (!atomic_compare_exchange_strong(&sigsegv_active, &none, ctx))
		return wpc_fail(run, EBUSY, "another sigsegv region is active in this process; "
				"run one sigsegv restore per process");
	/* Nothing interrupts the handler: see chunk_fixup.c on why a handler must not wait for itself. */
	sigfillset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, &sigsegv_previous) < 0) {
		int err = errno;
		atomic_store(&sigsegv_active, NULL);
		return wpc_fail(run, err, "cannot install the SIGSEGV handler: %s", strerror(err));
	}
	ctx->installed = true;
	return 0;
}

static void uninstall_handler(struct sigsegv_ctx *ctx)
{
	struct sigaction current;

	if (!ctx->installed)
		return;
	/*
	 * Put the previous handler back only if ours is still the one
	 * installed: if someone installed theirs on top, restoring would drop
	 * theirs; they still chain to us, and we to `previous`.
	 */
	if (sigaction(SIGSEGV, NULL, &current) == 0 && (current.sa_flags & SA_SIGINFO) &&
	    current.sa_sigaction == sigsegv_handler)
		sigaction(SIGSEGV, &sigsegv_previous, NULL);
	atomic_store(&sigsegv_active, NULL);
	ctx->installed = false;
}

/* After a failed remap: every chunk writable in place. Whole VMAs only, so it never splits one. */
static int sigsegv_degrade(struct wpc_chunks *c)
{
	return mprotect(c->region, c->region_len, PROT_READ | PROT_WRITE) ? -errno : 0;
}

static int sigsegv_restore(struct wpc_run *run)
{
	const struct sigsegv_params *params = run->params;
	struct sigsegv_ctx *ctx = calloc(1, sizeof(*ctx));
	int ret;

	if (!ctx)
		return wpc_fail(run, ENOMEM, "out of memory for the sigsegv context");
	run->priv = ctx;

	void *p = mmap(NULL, run->region_len, PROT_READ, MAP_PRIVATE, run->image_fd, 0);
	if (p == MAP_FAILED)
		return wpc_fail(run, errno, "mmap of the image failed: %s", strerror(errno));
	run->region = p;

	ret = wpc_chunks_init(&ctx->chunks, run, params->chunk,
			      params->copy == WPC_CHUNK_COPY_READ ? run->image_fd : -1);
	ctx->chunks_ready = true;
	if (ret)
		return wpc_fail(run, -ret, "cannot set up %llu chunks and a %zu-byte shadow: %s",
				(unsigned long long)ctx->chunks.nchunks, run->region_len, strerror(-ret));
	ctx->chunks.sweep_threads = wpc_fill_thread_count(run, params->sweep_fill.threads);
	ctx->chunks.degrade = sigsegv_degrade;
	ctx->chunks.owner = ctx;

	ret = install_handler(run, ctx);
	if (ret)
		return ret;
	if (params->fixup == SIGSEGV_FIXUP_BACKGROUND) {
		ret = wpc_chunks_start_background(&ctx->chunks);
		if (ret)
			return wpc_fail(run, -ret, "cannot start the background fixup thread: %s",
					strerror(-ret));
	}
	return 0;
}

static int sigsegv_fixup(struct wpc_run *run)
{
	const struct sigsegv_params *params = run->params;
	struct sigsegv_ctx *ctx = run->priv;
	int ret = wpc_chunks_finish(&ctx->chunks, params->fixup == SIGSEGV_FIXUP_AT_CHECKPOINT);

	wpc_chunks_publish(&ctx->chunks);
	return ret;
}

/* The sweep after the background thread (all of it at-checkpoint / on-write-only). */
static int64_t sigsegv_fixup_pause_ns(struct wpc_run *run)
{
	struct sigsegv_ctx *ctx = run->priv;

	return ctx ? (int64_t)ctx->chunks.pause_ns : run->res->phase[WPC_PHASE_FIXUP].ns;
}

static int sigsegv_dirty_pages(struct wpc_run *run, uint8_t *bitmap)
{
	struct sigsegv_ctx *ctx = run->priv;

	return wpc_chunks_dirty(&ctx->chunks, bitmap);
}

static void sigsegv_teardown(struct wpc_run *run)
{
	struct sigsegv_ctx *ctx = run->priv;

	if (ctx && ctx->chunks_ready)
		wpc_chunks_stop(&ctx->chunks);
	if (ctx)
		uninstall_handler(ctx);
	wpc_run_unmap_region(run);
	if (ctx && ctx->chunks_ready)
		wpc_chunks_destroy(&ctx->chunks);
	free(ctx);
	run->priv = NULL;
}

static const struct wpc_param_spec sigsegv_param_specs[] = {
	WPC_CHUNK_PARAM_SPECS(struct sigsegv_params),
	{ "copy", WPC_PARAM_CHOICE, WPC_CHUNK_COPY_CHOICES, "memcpy",
	  "memcpy: copy from the mapped region (openjdk/crac PR 57); read: pread() from the image file, "
	  "which leaves the region's page tables empty for mremap",
	  offsetof(struct sigsegv_params, copy), 0, 0 },
	/* Only threads=: the sweep's copy method is copy= already, its shadow is the chunks' own. */
	WPC_FILL_THREADS_SPEC_HELP(struct sigsegv_params, sweep_fill,
				   "threads sharing each run of the fixup=at-checkpoint sweep, "
				   "contiguous 2 MiB-aligned shares; 0: one per CPU this process may "
				   "use; the other fixups copy chunk by chunk and take 1 only"),
	{ NULL },
};

/* threads= splits the at-checkpoint sweep's copies; the other fixups copy chunk by chunk. */
static int sigsegv_check(const void *params, char *why, size_t len)
{
	const struct sigsegv_params *p = params;

	if (p->sweep_fill.threads != 1 && p->fixup != SIGSEGV_FIXUP_AT_CHECKPOINT) {
		wpc_why(why, len, "threads=%lld applies to fixup=at-checkpoint only (its batched "
			"sweep): add fixup=at-checkpoint, or drop threads=",
			(long long)p->sweep_fill.threads);
		return -EINVAL;
	}
	return 0;
}

const struct wpc_strategy wpc_strategy_sigsegv = {
	.name = "sigsegv",
	.family = "sigsegv",
	.description = "read-only MAP_PRIVATE image; a write's SIGSEGV handler copies its chunk into "
		       "anonymous memory and mremaps it over (openjdk/crac PR 57)",
	.params = sigsegv_param_specs,
	.params_size = sizeof(struct sigsegv_params),
	.check = sigsegv_check,
	.restore = sigsegv_restore,
	.fixup = sigsegv_fixup,
	.dirty_pages = sigsegv_dirty_pages,
	.fixup_pause_ns = sigsegv_fixup_pause_ns,
	.teardown = sigsegv_teardown,
};
