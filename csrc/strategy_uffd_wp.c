/* SPDX-License-Identifier: MIT */
/*
 * `uffd-wp`: the sigsegv strategy with userfaultfd write-protect faults in
 * place of SIGSEGV. Synchronous write-protect registers only on anonymous,
 * shmem and hugetlbfs memory, not on a regular file's mapping, so restore
 * first copies the image into a memfd (shmem; a memfd rather than a tmpfs
 * file because it needs no mounted tmpfs and vanishes with its last
 * reference). That copy is part of the measured restore (and reported on
 * its own as memfd_fill_ns; memfd.c). The memfd is mapped MAP_PRIVATE, so
 * the image copy is never written, and write-protected as a whole.
 *
 * A write blocks the writer in the kernel and queues a message; the handler
 * thread (handler.c, placed by handler-cpu) copies the chunk into the shadow
 * region and remaps it over (chunk_fixup.c: the same per-chunk state, so the same
 * no-lost-write guarantee: a write-protected chunk cannot change while it is
 * copied), then wakes every writer blocked on that chunk. The moved VMA is
 * not registered with the userfaultfd (registration lives in VMA flags,
 * which differ, so it does not merge with the registered remainder either):
 * later writes to the chunk go straight through. Background fixup as in
 * sigsegv; once every chunk moved, nothing maps the memfd any more.
 *
 * Unlike SIGSEGV, the kernel's own writes into the region (read(2) into a
 * protected chunk) also block until handled instead of failing with EFAULT:
 * the descriptor is opened without UFFD_USER_MODE_ONLY where permitted.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "handler.h"
#include "internal.h"

enum uffd_wp_fixup {
	UFFD_WP_FIXUP_BACKGROUND,
	UFFD_WP_FIXUP_AT_CHECKPOINT,
	UFFD_WP_FIXUP_ON_WRITE_ONLY,
};

#define UFFD_WP_FEATURES \
	(UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_HUGETLBFS_SHMEM | \
	 UFFD_FEATURE_WP_UNPOPULATED)

struct uffd_wp_params {
	uint64_t chunk;
	int fixup;		/* enum uffd_wp_fixup */
	int handler_cpu;	/* enum wpc_handler_cpu */
	int copy;		/* enum wpc_chunk_copy */
	struct wpc_fill_params memfd_fill;	/* of the memfd copy at restore */
};

struct uffd_wp_ctx {
	struct wpc_chunks chunks;
	bool chunks_ready;
	int uffd;
	int memfd_for_read;		/* copy=read: the memfd, else -1 */
	struct wpc_handler handler;
	_Atomic uint64_t wakes;
	_Atomic uint64_t unexpected;
};

static int register_wp(struct wpc_run *run, struct uffd_wp_ctx *ctx)
{
	struct uffdio_writeprotect wp = {
		.range = { .start = (uintptr_t)run->region, .len = run->region_len },
		.mode = UFFDIO_WRITEPROTECT_MODE_WP,
	};
	int ret;

	ctx->uffd = wpc_run_open_uffd(run, O_NONBLOCK, NULL);
	if (ctx->uffd < 0) {
		ret = ctx->uffd;
		ctx->uffd = -1;
		return ret;
	}
	ret = wpc_run_uffd_register(run, ctx->uffd, run->region, run->region_len,
				    UFFDIO_REGISTER_MODE_WP);
	if (ret)
		return ret;
	/* Unpopulated pages too (WP_UNPOPULATED, markers on shmem): nothing is read yet. */
	if (ioctl(ctx->uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
		return wpc_fail(run, errno, "UFFDIO_WRITEPROTECT of the region failed: %s", strerror(errno));
	return 0;
}

static void wake_range(struct uffd_wp_ctx *ctx, uintptr_t start, size_t len)
{
	if (!wpc_uffd_wake(ctx->uffd, (void *)start, len))
		atomic_fetch_add_explicit(&ctx->wakes, 1, memory_order_relaxed);
}

/*
 * After a failed remap: unprotect what was not moved, which also wakes its
 * writers. Only runs of chunks still registered: UFFDIO_WRITEPROTECT fails
 * with ENOENT on a range that contains an unregistered (moved) VMA.
 */
static int uffd_wp_degrade(struct wpc_chunks *c)
{
	struct uffd_wp_ctx *ctx = c->owner;
	int ret = 0;

	for (uint64_t i = 0; i < c->nchunks;) {
		if (atomic_load(&c->marks[i]) & WPC_CHUNK_MOVED) {
			i++;
			continue;
		}
		uint64_t end = i + 1;
		while (end < c->nchunks && !(atomic_load(&c->marks[end]) & WPC_CHUNK_MOVED))
			end++;
		size_t off = (size_t)i * c->chunk;
		size_t stop = (size_t)end * c->chunk < c->region_len ? (size_t)end * c->chunk
								      : c->region_len;
		struct uffdio_writeprotect wp = {
			.range = { .start = (uintptr_t)c->region + off, .len = stop - off },
			.mode = 0,
		};
		if (ioctl(ctx->uffd, UFFDIO_WRITEPROTECT, &wp) < 0 && !ret)
			ret = -errno;
		i = end;
	}
	return ret;
}

static bool serve(void *owner, const struct uffd_msg *msg)
{
	struct uffd_wp_ctx *ctx = owner;
	struct wpc_chunks *c = &ctx->chunks;
	uintptr_t addr = (uintptr_t)msg->arg.pagefault.address;

	if (msg->event != UFFD_EVENT_PAGEFAULT || !(msg->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) ||
	    !wpc_chunks_contains(c, addr)) {
		atomic_fetch_add_explicit(&ctx->unexpected, 1, memory_order_relaxed);
		return false;
	}

	uint64_t idx = (addr - (uintptr_t)c->region) / c->chunk;
	size_t off = (size_t)idx * c->chunk;
	size_t len = c->region_len - off < c->chunk ? c->region_len - off : c->chunk;

	wpc_chunks_write_fault(c, addr);
	/* Every writer blocked anywhere in the chunk: their messages may come later, or never be needed. */
	wake_range(ctx, (uintptr_t)c->region + off, len);
	return true;
}

/* Nobody will serve faults any more: unprotect the rest, or its writers block forever. */
static bool orphaned(void *owner, int err)
{
	struct uffd_wp_ctx *ctx = owner;

	wpc_chunks_give_up(&ctx->chunks, UINT64_MAX, -err);
	return true;
}

static const struct wpc_handler_ops handler_ops = {
	.serve = serve,
	.orphaned = orphaned,
	.stranded = "writers blocked on write-protected chunks would never be woken",
	.released = "the rest of the region was unprotected in place",
};

static int uffd_wp_restore(struct wpc_run *run)
{
	const struct uffd_wp_params *params = run->params;
	struct uffd_wp_ctx *ctx = calloc(1, sizeof(*ctx));
	int memfd = -1, ret;

	if (!ctx)
		return wpc_fail(run, ENOMEM, "out of memory for the uffd-wp context");
	ctx->uffd = -1;
	ctx->memfd_for_read = -1;
	wpc_handler_init(&ctx->handler);
	run->priv = ctx;

	ret = wpc_run_image_memfd(run, run->region_len, &params->memfd_fill, &memfd);
	if (!ret) {
		void *p = mmap(NULL, run->region_len, PROT_READ | PROT_WRITE, MAP_PRIVATE, memfd, 0);
		if (p == MAP_FAILED)
			ret = wpc_fail(run, errno, "mmap of the memfd failed: %s", strerror(errno));
		else
			run->region = p;
	}
	/*
	 * The mapping holds the shmem now; once every chunk moved out, it is
	 * freed. copy=read keeps the descriptor to read chunks from (an open
	 * descriptor is not a mapping: detached still means mapped nowhere).
	 */
	if (!ret && params->copy == WPC_CHUNK_COPY_READ)
		ctx->memfd_for_read = memfd;
	else if (memfd >= 0)
		close(memfd);
	if (ret)
		return ret;

	ret = register_wp(run, ctx);
	if (ret)
		return ret;
	ret = wpc_chunks_init(&ctx->chunks, run, params->chunk, ctx->memfd_for_read);
	ctx->chunks_ready = true;
	if (ret)
		return wpc_fail(run, -ret, "cannot set up %llu chunks and a %zu-byte shadow: %s",
				(unsigned long long)ctx->chunks.nchunks, run->region_len, strerror(-ret));
	ctx->chunks.degrade = uffd_wp_degrade;
	ctx->chunks.owner = ctx;

	ctx->handler.hist = ctx->chunks.hist;
	ret = wpc_handler_start(&ctx->handler, run, ctx->uffd, params->handler_cpu, &handler_ops,
				ctx);
	if (ret)
		return ret;
	if (params->fixup == UFFD_WP_FIXUP_BACKGROUND) {
		ret = wpc_chunks_start_background(&ctx->chunks);
		if (ret)
			return wpc_fail(run, -ret, "cannot start the background fixup thread: %s",
					strerror(-ret));
	}
	return 0;
}

/*
 * A handler that ended on an error unprotected the rest first (orphaned), so
 * no writer waits on it. One that is gone without (a crash, or the test
 * hook) leaves every later writer blocked in the kernel: health says so now.
 */
static int uffd_wp_health(struct wpc_run *run)
{
	struct uffd_wp_ctx *ctx = run->priv;

	return ctx ? wpc_handler_health(&ctx->handler) : 0;
}

static int uffd_wp_fixup(struct wpc_run *run)
{
	const struct uffd_wp_params *params = run->params;
	struct uffd_wp_ctx *ctx = run->priv;
	int ret = wpc_chunks_finish(&ctx->chunks, params->fixup == UFFD_WP_FIXUP_AT_CHECKPOINT);

	/*
	 * Every chunk is anonymous (or unprotected after a failure): no fault
	 * can come any more. Stopping the handler drains late messages, so the
	 * counts and its histogram are final.
	 */
	wpc_handler_stop(&ctx->handler);
	/* A handler that ended on an error: that is the reason, not its consequences. */
	if (ctx->handler.err)
		ret = wpc_handler_error(&ctx->handler);
	wpc_chunks_publish(&ctx->chunks);
	wpc_handler_publish(&ctx->handler, run);
	wpc_counter_set(run, "wakes", atomic_load(&ctx->wakes));
	wpc_counter_set(run, "unexpected_msgs", atomic_load(&ctx->unexpected));
	return ret;
}

/* The sweep after the background thread (all of it at-checkpoint / on-write-only). */
static int64_t uffd_wp_fixup_pause_ns(struct wpc_run *run)
{
	struct uffd_wp_ctx *ctx = run->priv;

	return ctx ? (int64_t)ctx->chunks.pause_ns : run->res->phase[WPC_PHASE_FIXUP].ns;
}

static int uffd_wp_dirty_pages(struct wpc_run *run, uint8_t *bitmap)
{
	struct uffd_wp_ctx *ctx = run->priv;

	return wpc_chunks_dirty(&ctx->chunks, bitmap);
}

static void uffd_wp_teardown(struct wpc_run *run)
{
	struct uffd_wp_ctx *ctx = run->priv;

	if (!ctx)
		return;
	if (ctx->chunks_ready)
		wpc_chunks_stop(&ctx->chunks);
	wpc_handler_destroy(&ctx->handler);
	if (ctx->uffd >= 0)
		close(ctx->uffd);
	if (ctx->memfd_for_read >= 0)
		close(ctx->memfd_for_read);
	wpc_run_unmap_region(run);
	if (ctx->chunks_ready)
		wpc_chunks_destroy(&ctx->chunks);
	free(ctx);
	run->priv = NULL;
}

static void uffd_wp_needs_for(const void *params, struct wpc_needs *needs)
{
	const struct uffd_wp_params *p = params;

	needs->other_cpu = p->handler_cpu == WPC_HANDLER_OTHER;
	wpc_fill_needs(&p->memfd_fill, WPC_FILL_INTO_MEMFD, needs);
}

static const struct wpc_param_spec uffd_wp_param_specs[] = {
	WPC_CHUNK_PARAM_SPECS(struct uffd_wp_params),
	WPC_HANDLER_CPU_PARAM_SPEC(struct uffd_wp_params),
	{ "copy", WPC_PARAM_CHOICE, WPC_CHUNK_COPY_CHOICES, "memcpy",
	  "memcpy: copy from the mapped region (openjdk/crac PR 57); read: pread() from the memfd, "
	  "which leaves the region's page tables empty for mremap",
	  offsetof(struct uffd_wp_params, copy), 0, 0 },
	WPC_FILL_INTO_MEMFD_PARAM_SPECS(struct uffd_wp_params, memfd_fill),
	{ NULL },
};

const struct wpc_strategy wpc_strategy_uffd_wp = {
	.name = "uffd-wp",
	.family = "uffd",
	.description = "image copied into a memfd, mapped MAP_PRIVATE and write-protected; a handler "
		       "thread copies each written chunk into anonymous memory and mremaps it over",
	.params = uffd_wp_param_specs,
	.params_size = sizeof(struct uffd_wp_params),
	/*
	 * Kernel-mode faults or nothing: a read(2) into a protected chunk must
	 * wait for the handler, as an application's write does (see above).
	 */
	.needs = { .uffd = WPC_UFFD_KERNEL_MODE, .uffd_features = UFFD_WP_FEATURES,
		   .uffd_ioctls = 1ull << _UFFDIO_WRITEPROTECT | 1ull << _UFFDIO_WAKE },
	.needs_for = uffd_wp_needs_for,
	.restore = uffd_wp_restore,
	.fixup = uffd_wp_fixup,
	.dirty_pages = uffd_wp_dirty_pages,
	.fixup_pause_ns = uffd_wp_fixup_pause_ns,
	.teardown = uffd_wp_teardown,
	.health = uffd_wp_health,
};
