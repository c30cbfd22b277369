/* SPDX-License-Identifier: MIT */
/*
 * sigsegv-prefault: a SIGSEGV copy-and-remap strategy built outside
 * wpcompare, against wpcompare_plugin.h only.
 *
 * How it differs from the built-in sigsegv: the shadow the chunks are copied
 * into is allocated and faulted in with MADV_POPULATE_WRITE before the
 * restore (the prepare callback, untimed, as a restorer would keep it
 * ready), so a write fault's copy takes no page faults of its own; each
 * chunk is read from the image file with pread() into the shadow and
 * mremapped over the region; a thread that faults on a chunk another is
 * moving yields until it is moved (no futex); there is no background thread:
 * the fixup phase moves every chunk nobody wrote (the checkpoint pays it).
 *
 * No lost write: a chunk stays read-only until its copy is mremapped over
 * it, so a write either lands in the new anonymous pages or faults and
 * waits. The copy comes from the image, which is what a chunk nobody wrote
 * holds.
 *
 * Built with -DPREFAULT_BROKEN it is sigsegv-prefault-broken, the twin that
 * loses writes: its fault handler marks the chunk done and makes it
 * writable in place before the copy has landed, and leaves the copy to the
 * fixup phase, which then mremaps the image's bytes over every write made
 * to the chunk meanwhile.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/mman.h>
#include <ucontext.h>

#include "wpcompare_plugin.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#ifdef PREFAULT_BROKEN
#define PREFAULT_NAME "sigsegv-prefault-broken"
#define PREFAULT_DESCRIPTION "BROKEN on purpose (loses writes): sigsegv-prefault whose handler " \
			     "lets the writer in before the chunk's copy has landed"
#else
#define PREFAULT_NAME "sigsegv-prefault"
#define PREFAULT_DESCRIPTION "read-only MAP_PRIVATE image; a write's SIGSEGV handler preads its " \
			     "chunk into a shadow faulted in before restore (MADV_POPULATE_WRITE) " \
			     "and mremaps it over; the fixup phase moves the rest"
#endif

enum chunk_state { CHUNK_FRESH, CHUNK_MOVING, CHUNK_DONE };

struct prefault_params {
	uint64_t chunk;
};

struct prefault_ctx {
	uint8_t *region;
	uint8_t *shadow;
	size_t region_len;
	size_t chunk;
	uint64_t nchunks;
	int image_fd;
	uint64_t image_size;
	_Atomic uint32_t *state;	/* enum chunk_state per chunk */
	_Atomic uint8_t *written;	/* a write faulted on the chunk */
	_Atomic uint8_t *moved;		/* its copy is mremapped over it */
	_Atomic uint64_t write_faults;
	_Atomic int error;		/* first -errno of a move; the fixup reports it */
	_Atomic uint64_t error_chunk;
	bool installed;
};

static const struct wpc_plugin_host *host;
/* What the signal handler reaches: one region per process (one run per worker). */
static struct prefault_ctx *_Atomic active;
static struct sigaction previous;

static size_t chunk_bytes(const struct prefault_ctx *ctx, uint64_t idx)
{
	size_t off = (size_t)idx * ctx->chunk;

	return ctx->region_len - off < ctx->chunk ? ctx->region_len - off : ctx->chunk;
}

/* The image's bytes of chunk idx into the shadow, then the shadow over the region. Async-signal-safe. */
static int copy_and_remap(struct prefault_ctx *ctx, uint64_t idx)
{
	size_t off = (size_t)idx * ctx->chunk, len = chunk_bytes(ctx, idx);
	uint64_t in_image = off < ctx->image_size ? ctx->image_size - off : 0;
	int ret;

	ret = host->pread_full(ctx->image_fd, ctx->shadow + off, in_image < len ? in_image : len, off);
	if (ret)
		return ret;
	if (host->mremap(ctx->shadow + off, len, len, MREMAP_MAYMOVE | MREMAP_FIXED,
			 ctx->region + off) == MAP_FAILED)
		return -errno;
	atomic_store(&ctx->moved[idx], 1);
	return 0;
}

/* After a failed move: the chunk writable in place, so the writer goes on; the fixup fails the run. */
static void give_up(struct prefault_ctx *ctx, uint64_t idx, int err)
{
	int none = 0;

	if (atomic_compare_exchange_strong(&ctx->error, &none, err))
		atomic_store(&ctx->error_chunk, idx);
	mprotect(ctx->region + idx * ctx->chunk, chunk_bytes(ctx, idx), PROT_READ | PROT_WRITE);
}

/* Return once chunk idx is anonymous (or given up). Async-signal-safe. */
static void move_chunk(struct prefault_ctx *ctx, uint64_t idx)
{
	uint32_t fresh = CHUNK_FRESH;

	if (!atomic_compare_exchange_strong(&ctx->state[idx], &fresh, CHUNK_MOVING)) {
		/* The mover never waits for anything, so this ends. */
		while (atomic_load(&ctx->state[idx]) != CHUNK_DONE)
			sched_yield();
		return;
	}
	int ret = copy_and_remap(ctx, idx);
	if (ret)
		give_up(ctx, idx, ret);
	atomic_store(&ctx->state[idx], CHUNK_DONE);
}

#ifdef PREFAULT_BROKEN
/* The bug: done, and writable, before the copy has landed (fixup will land it, from the image). */
static void write_fault(struct prefault_ctx *ctx, uint64_t idx)
{
	uint32_t fresh = CHUNK_FRESH;

	if (atomic_compare_exchange_strong(&ctx->state[idx], &fresh, CHUNK_DONE))
		mprotect(ctx->region + idx * ctx->chunk, chunk_bytes(ctx, idx), PROT_READ | PROT_WRITE);
}
#else
static void write_fault(struct prefault_ctx *ctx, uint64_t idx)
{
	move_chunk(ctx, idx);
}
#endif

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

/* Not ours: what the previous disposition would do (SIG_DFL: the fault recurs and kills). */
static void chain(int sig, siginfo_t *si, void *uctx)
{
	if (previous.sa_flags & SA_SIGINFO) {
		previous.sa_sigaction(sig, si, uctx);
		return;
	}
	if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
		previous.sa_handler(sig);
		return;
	}
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	sigemptyset(&dfl.sa_mask);
	sigaction(sig, &dfl, NULL);
	raise(sig);
}

/* Async-signal-safe: atomics, pread, mremap, mprotect, sched_yield. */
static void on_sigsegv(int sig, siginfo_t *si, void *uctx)
{
	struct prefault_ctx *ctx = atomic_load(&active);
	uintptr_t addr = (uintptr_t)si->si_addr;
	int saved_errno = errno;

	if (ctx && si->si_code == SEGV_ACCERR && addr - (uintptr_t)ctx->region < ctx->region_len &&
	    is_write_fault(uctx)) {
		uint64_t idx = (addr - (uintptr_t)ctx->region) / ctx->chunk;

		atomic_store(&ctx->written[idx], 1);
		atomic_fetch_add(&ctx->write_faults, 1);
		write_fault(ctx, idx);
		errno = saved_errno;
		return;
	}
	errno = saved_errno;
	chain(sig, si, uctx);
}

static int prefault_prepare(struct wpc_run *run)
{
	const struct prefault_params *params = host->params(run);
	struct prefault_ctx *ctx = calloc(1, sizeof(*ctx));

	if (!ctx)
		return host->fail(run, ENOMEM, "out of memory for the " PREFAULT_NAME " context");
	host->set_priv(run, ctx);
	ctx->region_len = host->region_len(run);
	ctx->chunk = params->chunk;
	ctx->nchunks = (ctx->region_len + ctx->chunk - 1) / ctx->chunk;
	ctx->image_fd = host->image_fd(run);
	ctx->image_size = host->image_size(run);
	ctx->state = calloc(ctx->nchunks, sizeof(*ctx->state));
	ctx->written = calloc(ctx->nchunks, sizeof(*ctx->written));
	ctx->moved = calloc(ctx->nchunks, sizeof(*ctx->moved));
	if (!ctx->state || !ctx->written || !ctx->moved)
		return host->fail(run, ENOMEM, "out of memory for %llu chunk states",
				  (unsigned long long)ctx->nchunks);

	void *shadow = mmap(NULL, ctx->region_len, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (shadow == MAP_FAILED)
		return host->fail(run, errno, "mmap of a %zu-byte shadow failed: %s", ctx->region_len,
				  strerror(errno));
	ctx->shadow = shadow;
	uint64_t t0 = host->now_ns();
	if (madvise(shadow, ctx->region_len, MADV_POPULATE_WRITE) < 0) {
		/* Before 5.14 (EINVAL): fault it in by hand, as the madvise would. */
		if (errno != EINVAL)
			return host->fail(run, errno, "MADV_POPULATE_WRITE of the shadow failed: %s",
					  strerror(errno));
		for (size_t off = 0; off < ctx->region_len; off += 4096)
			((volatile uint8_t *)shadow)[off] = 0;
	}
	host->counter_set(run, "shadow_populate_ns", host->now_ns() - t0);
	return 0;
}

static int prefault_restore(struct wpc_run *run)
{
	struct prefault_ctx *ctx = host->priv(run);
	struct prefault_ctx *none = NULL;

	void *p = mmap(NULL, ctx->region_len, PROT_READ, MAP_PRIVATE, ctx->image_fd, 0);
	if (p == MAP_FAILED)
		return host->fail(run, errno, "mmap of the image failed: %s", strerror(errno));
	host->set_region(run, p);
	ctx->region = p;

	struct sigaction sa = {
		.sa_sigaction = on_sigsegv,
		.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART,
	};
	/* Nothing interrupts the handler: a thread moving a chunk must not wait for itself. */
	sigfillset(&sa.sa_mask);
	if (!atomic_compare_exchange_strong(&active, &none, ctx))
		return host->fail(run, EBUSY, "another " PREFAULT_NAME " region is active in this process");
	if (sigaction(SIGSEGV, &sa, &previous) < 0) {
		int err = errno;
		atomic_store(&active, NULL);
		return host->fail(run, err, "cannot install the SIGSEGV handler: %s", strerror(err));
	}
	ctx->installed = true;
	return 0;
}

static int prefault_fixup(struct wpc_run *run)
{
	struct prefault_ctx *ctx = host->priv(run);
	uint64_t fixup_moves = 0;

	for (uint64_t idx = 0; idx < ctx->nchunks; idx++) {
#ifdef PREFAULT_BROKEN
		/* The chunks its handler marked done still wait for their copy: it lands now. */
		if (atomic_load(&ctx->moved[idx]))
			continue;
		atomic_store(&ctx->state[idx], CHUNK_FRESH);
#else
		if (atomic_load(&ctx->state[idx]) != CHUNK_FRESH)
			continue;
#endif
		move_chunk(ctx, idx);
		fixup_moves++;
	}
	host->counter_add(run, "write_faults", atomic_load(&ctx->write_faults));
	host->counter_add(run, "fixup_moves", fixup_moves);
	int err = atomic_load(&ctx->error);
	if (err)
		return host->fail(run, -err, "moving chunk %llu failed: %s; it was made writable in place",
				  (unsigned long long)atomic_load(&ctx->error_chunk), strerror(-err));
	host->mark_detached(run);
	return 0;
}

static int prefault_dirty_pages(struct wpc_run *run, uint8_t *bitmap)
{
	struct prefault_ctx *ctx = host->priv(run);
	uint64_t pages_per_chunk = ctx->chunk / 4096, npages = ctx->region_len / 4096;

	for (uint64_t idx = 0; idx < ctx->nchunks; idx++) {
		if (!atomic_load(&ctx->written[idx]))
			continue;
		for (uint64_t p = idx * pages_per_chunk; p < (idx + 1) * pages_per_chunk && p < npages; p++)
			bitmap[p / 8] |= (uint8_t)(1u << (p % 8));
	}
	return 0;
}

static void prefault_teardown(struct wpc_run *run)
{
	struct prefault_ctx *ctx = host->priv(run);
	struct sigaction current;

	if (ctx && ctx->installed) {
		/* Put the previous handler back only if ours is still the one installed. */
		if (sigaction(SIGSEGV, NULL, &current) == 0 && (current.sa_flags & SA_SIGINFO) &&
		    current.sa_sigaction == on_sigsegv)
			sigaction(SIGSEGV, &previous, NULL);
		atomic_store(&active, NULL);
	}
	host->unmap_region(run);
	if (!ctx)
		return;
	/*
	 * What is left of the shadow: a moved piece is the region's now, and its
	 * hole in the shadow may hold someone else's mapping since.
	 */
	for (uint64_t idx = 0; ctx->shadow && idx < ctx->nchunks; idx++)
		if (!ctx->moved || !atomic_load(&ctx->moved[idx]))
			munmap(ctx->shadow + idx * ctx->chunk, chunk_bytes(ctx, idx));
	free((void *)ctx->state);
	free((void *)ctx->written);
	free((void *)ctx->moved);
	free(ctx);
	host->set_priv(run, NULL);
}

static const struct wpc_plugin_param prefault_params_spec[] = {
	{ "chunk", WPC_PLUGIN_PARAM_SIZE, "4K|64K|2M", "64K",
	  "bytes read and remapped per write fault and per fixup step",
	  offsetof(struct prefault_params, chunk), 0, 0 },
	{ NULL },
};

static const struct wpc_plugin_row rows[] = {
	{
		.name = PREFAULT_NAME,
		.family = "sigsegv",
		.description = PREFAULT_DESCRIPTION,
		.params = prefault_params_spec,
		.params_size = sizeof(struct prefault_params),
		.prepare = prefault_prepare,
		.restore = prefault_restore,
		.fixup = prefault_fixup,
		.dirty_pages = prefault_dirty_pages,
		.teardown = prefault_teardown,
	},
};

static const struct wpc_plugin plugin = {
	.abi_version = WPC_PLUGIN_ABI_VERSION,
	.nrows = 1,
	.rows = rows,
};

const struct wpc_plugin *wpcompare_plugin(uint32_t host_abi, const struct wpc_plugin_host *services);

const struct wpc_plugin *wpcompare_plugin(uint32_t host_abi, const struct wpc_plugin_host *services)
{
	if (host_abi != WPC_PLUGIN_ABI_VERSION)
		return NULL;
	host = services;
	return &plugin;
}
