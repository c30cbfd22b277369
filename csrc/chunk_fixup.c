/* SPDX-License-Identifier: MIT */
/*
 * Chunked copy-and-remap: what a write-catching strategy does to turn a
 * region that still references its image into anonymous memory, one chunk
 * at a time, while the application keeps running and writing.
 *
 * Moving a chunk: copy it (memcpy from the region, or pread from a file
 * holding the same bytes) into a shadow anonymous region at the SAME
 * offset, then mremap(shadow + off -> region + off). Measured here: a fresh
 * mmap per chunk leaves one VMA per chunk (each its own anon_vma, so nothing
 * merges) and mremap hits vm.max_map_count (65530) at ~256 MiB of 4 KiB
 * chunks. Pieces of one shadow share its anon_vma and their page offsets
 * stay contiguous, so the kernel merges neighbours that land next to each
 * other in the region: a sequential sweep of 512 MiB in 4 KiB chunks ends
 * as one VMA. MREMAP_DONTUNMAP leaves the shadow's VMA whole instead of
 * punching a hole per chunk: without it 4 KiB chunks moved in random order
 * fail at ~27,700 chunks (shadow pieces + region pieces); with it they peak
 * at ~2 VMAs per written run and finish. (4 KiB chunks written at random to
 * half of 512 MiB still need ~65,500 VMAs: file-backed read-only and
 * anonymous writable pieces cannot merge. That is inherent to catching
 * first writes per 4 KiB with VMAs; the run then fails with a reason.)
 *
 * No lost write: a chunk is writable only once it is anonymous. Until then
 * its pages are read-only (sigsegv) or write-protected (uffd-wp), so no
 * write can land in the old pages while they are copied; a writer faults,
 * and returns (or is woken) only when the chunk is DONE, then retries its
 * write into the new pages. Exactly one thread wins FRESH -> COPYING, so two
 * faulting writers, or a writer and the background thread, never both copy
 * or remap a chunk: the loser sleeps on the state word (futex) until DONE.
 *
 * Usable from a SIGSEGV handler: the fault path uses only atomics, memcpy,
 * clock_gettime and raw syscalls (pread, mremap, mprotect/ioctl via
 * degrade, futex, sched_yield). It never takes a lock an interrupted thread
 * may hold (signals arrive in user space, never inside the kernel's locks):
 * the only mutual exclusion is the per-chunk state, and a thread holding a
 * chunk in COPYING never waits for anything, so a signal handler that waits
 * on a chunk always waits for a thread that is making progress. Callers
 * block all signals while they hold a chunk (the sigsegv handler runs with a
 * full sa_mask, our threads block everything), so a handler can never
 * interrupt its own thread's copy and wait for itself.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

static void futex_wait(_Atomic uint32_t *word, uint32_t expected)
{
	/* EAGAIN (changed already) and EINTR both just mean: look again. */
	syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *word)
{
	syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static size_t chunk_len(const struct wpc_chunks *c, uint64_t idx)
{
	size_t off = (size_t)idx * c->chunk;

	return c->region_len - off < c->chunk ? c->region_len - off : c->chunk;
}

int wpc_chunks_init(struct wpc_chunks *c, struct wpc_run *run, size_t chunk, int source_fd)
{
	memset(c, 0, sizeof(*c));
	c->run = run;
	c->source_fd = source_fd;
	c->region = run->region;
	c->region_len = run->region_len;
	c->chunk = chunk;
	c->sweep_threads = 1;
	c->nchunks = (run->region_len + chunk - 1) / chunk;
	atomic_store(&c->remaining, c->nchunks);
	atomic_store(&c->remap_flags, wpc_inject_no_dontunmap() ? 0 : MREMAP_DONTUNMAP);

	/*
	 * NORESERVE: only the chunks copied so far ever hold pages, and each
	 * moves out again at once, so the shadow never costs region_len.
	 */
	c->shadow = mmap(NULL, c->region_len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (c->shadow == MAP_FAILED) {
		c->shadow = NULL;
		return -errno;
	}
	c->state = calloc(c->nchunks, sizeof(*c->state));
	c->marks = calloc(c->nchunks, sizeof(*c->marks));
	c->hist = malloc(sizeof(*c->hist));
	if (!c->state || !c->marks || !c->hist)
		return -ENOMEM;
	wpc_hist_reset(c->hist);
	return 0;
}

void wpc_chunks_destroy(struct wpc_chunks *c)
{
	wpc_chunks_stop(c);
	if (c->shadow)
		munmap(c->shadow, c->region_len);
	c->shadow = NULL;
	free((void *)c->state);
	free((void *)c->marks);
	free(c->hist);
	c->state = NULL;
	c->marks = NULL;
	c->hist = NULL;
}

/*
 * copy=read: the region's bytes straight from the file. Equal to what
 * memcpy would read: the chunk cannot have been written (that is the point
 * of catching writes) and its mapping is private. Past the file's end the
 * shadow keeps its zeros: each shadow offset is filled once, fresh.
 *
 * Why offer it: memcpy from the mapping first faults every page of the
 * chunk into the region's page tables (one minor fault per 4 KiB), which
 * mremap must then tear down again; pread copies in the kernel and leaves
 * the region's page tables empty. pread is a plain system call, as safe in
 * a signal handler as read(); EINTR cannot happen with every signal
 * blocked.
 */
static int read_chunks(struct wpc_chunks *c, size_t off, size_t len)
{
	for (size_t done = 0; done < len;) {
		ssize_t got = pread(c->source_fd, c->shadow + off + done, len - done,
				    (off_t)(off + done));

		if (got < 0)
			return -errno;
		if (got == 0)
			break;		/* end of file: zeros from here */
		done += (size_t)got;
	}
	return 0;
}

/*
 * Copy chunks [first, end) into the shadow and move them over the region in
 * one mremap. The caller owns them (state COPYING).
 */
static int copy_chunks(struct wpc_chunks *c, size_t off, size_t len)
{
	if (c->source_fd >= 0)
		return read_chunks(c, off, len);
	memcpy(c->shadow + off, c->region + off, len);
	return 0;
}

/* A share of a threaded sweep's run of chunks (fill.c's copier); never on a fault path. */
struct sweep_copy {
	struct wpc_chunks *c;
	size_t base;
};

static int copy_sweep_share(void *ctx, uint64_t off, uint64_t len)
{
	struct sweep_copy *sc = ctx;

	return copy_chunks(sc->c, sc->base + off, len);
}

/*
 * nthreads: 0 on a fault path and in a chunk-by-chunk sweep; the batched
 * (at-checkpoint) sweep's thread count otherwise, and above 1 the copy is
 * split among threads (never on a fault path: it starts threads).
 */
static int move_chunks(struct wpc_chunks *c, uint64_t first, uint64_t end, int nthreads)
{
	size_t off = (size_t)first * c->chunk;
	size_t len = (size_t)(end - first - 1) * c->chunk + chunk_len(c, end - 1);
	int flags = atomic_load_explicit(&c->remap_flags, memory_order_relaxed);
	int ret;

	if (nthreads > 1) {
		struct sweep_copy sc = { .c = c, .base = off };
		uint64_t failed_off;
		int used = 0;

		ret = wpc_copy_in_shares(len, nthreads, copy_sweep_share, &sc, &used, &failed_off);
		if ((uint64_t)used > c->sweep_threads_used)
			c->sweep_threads_used = (uint64_t)used;
	} else {
		ret = copy_chunks(c, off, len);
		if (nthreads == 1 && !c->sweep_threads_used)
			c->sweep_threads_used = 1;
	}
	if (ret)
		return ret;
	for (uint64_t i = first; i < end; i++)
		wpc_inject_hold(WPC_HOLD_COPY, i);	/* test-only: a copy in flight */
	for (;;) {
		void *to = wpc_mremap(c->shadow + off, len, len, MREMAP_MAYMOVE | MREMAP_FIXED | flags,
				  c->region + off);
		if (to != MAP_FAILED)
			return 0;
		/* Kernels before 5.7 lack MREMAP_DONTUNMAP: holes in the shadow then. */
		if (errno == EINVAL && (flags & MREMAP_DONTUNMAP)) {
			flags &= ~MREMAP_DONTUNMAP;
			atomic_store(&c->remap_flags, flags);
			continue;
		}
		return -errno;
	}
}

/*
 * Copy-in-flight accounting, so that degrading (making the image's pages
 * writable in place) never happens while a chunk is being copied: a write
 * landing in the old pages between memcpy and mremap would be lost. Both
 * sides use sequentially consistent operations (Dekker): a claimer
 * announces itself then checks for an error; the degrader publishes the
 * error then waits for the claimers to drain.
 */
static bool work_begin(struct wpc_chunks *c)
{
	atomic_fetch_add(&c->inflight, 1);
	if (atomic_load(&c->error)) {
		atomic_fetch_sub(&c->inflight, 1);
		return false;
	}
	return true;
}

static void work_end(struct wpc_chunks *c)
{
	atomic_fetch_sub(&c->inflight, 1);
}

static bool chunk_claim(struct wpc_chunks *c, uint64_t idx)
{
	uint32_t s = WPC_CHUNK_FRESH;

	if (atomic_load_explicit(&c->state[idx], memory_order_relaxed) != WPC_CHUNK_FRESH)
		return false;
	wpc_inject_hold(WPC_HOLD_CLAIM, idx);	/* test-only: two claimers meet here */
	if (atomic_compare_exchange_strong(&c->state[idx], &s, WPC_CHUNK_COPYING))
		return true;
	wpc_inject_hold(WPC_HOLD_LOST, idx);	/* test-only: noted, never held */
	return false;
}

static void chunk_done(struct wpc_chunks *c, uint64_t idx, bool moved)
{
	uint32_t old = atomic_exchange(&c->state[idx], WPC_CHUNK_DONE);

	if (old == WPC_CHUNK_WAITED)
		futex_wake_all(&c->state[idx]);
	/* clock_gettime and a CAS: fine from a signal handler. */
	if (moved && atomic_fetch_sub(&c->remaining, 1) == 1)
		wpc_run_mark_detached(c->run);
}

/*
 * Sleep until chunk idx, which someone is copying, is DONE. Returns at once
 * for a FRESH chunk: nobody is copying it (only after a failure stopped all
 * copying, since states only move forward and the caller lost the claim).
 */
static void chunk_wait(struct wpc_chunks *c, uint64_t idx)
{
	_Atomic uint32_t *word = &c->state[idx];
	uint32_t s = atomic_load(word);

	while (s != WPC_CHUNK_DONE && s != WPC_CHUNK_FRESH) {
		if (s == WPC_CHUNK_COPYING &&
		    !atomic_compare_exchange_weak(word, &s, WPC_CHUNK_WAITED))
			continue;	/* s was reloaded */
		futex_wait(word, WPC_CHUNK_WAITED);
		s = atomic_load(word);
	}
}

/*
 * The first failed remap: remember it, stop everyone from starting new
 * copies, wait for copies in flight, then let the strategy make the rest of
 * the region writable in place so no writer faults forever. The run then
 * fails with the reason (wpc_chunks_finish); the memory stays right.
 */
void wpc_chunks_give_up(struct wpc_chunks *c, uint64_t idx, int err)
{
	int none = 0, idle = 0;

	if (atomic_compare_exchange_strong(&c->error, &none, err))
		atomic_store(&c->error_chunk, idx);
	if (!atomic_compare_exchange_strong(&c->degraded, &idle, 1))
		return;		/* another thread degrades; our writer re-faults until it has */
	while (atomic_load(&c->inflight))
		sched_yield();
	c->degrade_error = c->degrade ? c->degrade(c) : 0;
	atomic_store(&c->degraded, 2);
}

/* Move chunks [first, end), owned by the caller, and finish them. */
static int move_and_finish(struct wpc_chunks *c, uint64_t first, uint64_t end,
			   _Atomic uint64_t *counter, uint8_t mark, int nthreads)
{
	int ret = move_chunks(c, first, end, nthreads);

	if (!ret)
		mark |= WPC_CHUNK_MOVED;
	for (uint64_t i = first; i < end; i++) {
		atomic_fetch_or(&c->marks[i], mark);
		chunk_done(c, i, ret == 0);
	}
	work_end(c);
	if (ret)
		wpc_chunks_give_up(c, first, ret);
	else
		atomic_fetch_add_explicit(counter, end - first, memory_order_relaxed);
	return ret;
}

/* Claim and move chunk idx if nobody has; otherwise wait until it is DONE. */
static int settle_chunk(struct wpc_chunks *c, uint64_t idx, _Atomic uint64_t *counter,
			uint8_t mark, bool wait)
{
	if (work_begin(c)) {
		if (chunk_claim(c, idx))
			return move_and_finish(c, idx, idx + 1, counter, mark, 0);
		work_end(c);
	}
	if (wait && atomic_load(&c->state[idx]) != WPC_CHUNK_DONE) {
		atomic_fetch_add_explicit(&c->waits, 1, memory_order_relaxed);
		chunk_wait(c, idx);
	}
	return 0;
}

int wpc_chunks_write_fault(struct wpc_chunks *c, uintptr_t addr)
{
	uint64_t idx = (addr - (uintptr_t)c->region) / c->chunk;

	atomic_fetch_add_explicit(&c->faults, 1, memory_order_relaxed);
	atomic_fetch_or(&c->marks[idx], WPC_CHUNK_WRITTEN);
	/*
	 * After a failure the chunk may stay FRESH (nobody copies any more):
	 * the writer returns and retries, and succeeds once degrade made the
	 * region writable.
	 */
	return settle_chunk(c, idx, &c->by_fault, 0, true);
}

void wpc_chunks_record(struct wpc_chunks *c, uint64_t ns)
{
	wpc_hist_record_concurrent(c->hist, ns);
}

/*
 * The sweep every fixup ends with. Chunks someone else is copying are left
 * to them (a faulting writer finishes its own chunk); chunks_finish waits
 * for those at the end.
 */
static void sweep(struct wpc_chunks *c, _Atomic uint64_t *counter, uint8_t mark, bool batched)
{
	for (uint64_t i = 0; i < c->nchunks;) {
		if (atomic_load_explicit(&c->stop, memory_order_relaxed) || atomic_load(&c->error))
			return;
		if (!work_begin(c))
			return;
		uint64_t end = i;
		/* Batched: claim the whole run of untouched chunks, move it in one mremap. */
		while (end < c->nchunks && (end == i || batched) && chunk_claim(c, end))
			end++;
		if (end == i) {
			work_end(c);
			i++;
			continue;
		}
		move_and_finish(c, i, end, counter, mark, batched ? c->sweep_threads : 0);
		i = end;
	}
}

static void *background_main(void *arg)
{
	struct wpc_chunks *c = arg;
	uint64_t t0 = wpc_now_ns();

	/*
	 * Marked UNWATCHED: once remapped a chunk is plain writable memory and
	 * a later write by the still-running workload is invisible, so the
	 * dirty set must count it (conservatively) as written.
	 */
	sweep(c, &c->by_background, WPC_CHUNK_UNWATCHED, false);
	c->background_ns = wpc_now_ns() - t0;
	return NULL;
}

int wpc_chunks_start_background(struct wpc_chunks *c)
{
	/* Unpinned: where the scheduler puts it is where a JVM's fixup thread would run too. */
	int ret = wpc_thread_start_quiet(&c->background, -1, background_main, c);

	c->background_started = ret == 0;
	return ret;
}

void wpc_chunks_stop(struct wpc_chunks *c)
{
	if (!c->background_started)
		return;
	atomic_store(&c->stop, true);
	pthread_join(c->background, NULL);
	c->background_started = false;
}

/*
 * mremap says ENOMEM for the VMA limit, for the address-space limit and for
 * memory; a reason must say which (wpc_enomem_why). The kernel refuses a
 * move once the count is within a few VMAs of the limit (move_vma() keeps
 * room to split); after degrade it is still there, as nothing merged since.
 */
static int enomem_reason(struct wpc_chunks *c)
{
	char why[WPC_REASON_LEN];

	wpc_enomem_why(c->chunk, "(written chunks alternate with image chunks) or use a larger chunk",
		       why, sizeof(why));
	return wpc_fail(c->run, ENOMEM, "mremap of chunk %llu (%zu bytes) failed with ENOMEM: %s",
			(unsigned long long)atomic_load(&c->error_chunk), c->chunk, why);
}

int wpc_chunks_finish(struct wpc_chunks *c, bool batched)
{
	struct wpc_run *run = c->run;

	if (c->background_started) {
		/*
		 * Not stopped: fixup waits for the sweep to end by itself. The
		 * application could run meanwhile, so this is no pause: a
		 * checkpoint would just start later.
		 */
		pthread_join(c->background, NULL);
		c->background_started = false;
	}
	uint64_t t0 = wpc_now_ns();
	if (!atomic_load(&c->error)) {
		sweep(c, &c->at_fixup, 0, batched);
		for (uint64_t i = 0; i < c->nchunks && !atomic_load(&c->error); i++)
			chunk_wait(c, i);
	}
	c->pause_ns = wpc_now_ns() - t0;

	/* A degrade still running in the uffd handler thread: its outcome goes into the reason. */
	while (atomic_load(&c->degraded) == 1)
		sched_yield();
	int err = atomic_load(&c->error);
	if (err == -ENOMEM)
		return enomem_reason(c);
	if (err)
		return wpc_fail(run, -err, "mremap of chunk %llu over the region failed: %s%s",
				(unsigned long long)atomic_load(&c->error_chunk), strerror(-err),
				c->degrade_error ? "; making the region writable in place failed too" : "");
	if (atomic_load(&c->remaining))
		return wpc_fail(run, EIO, "%llu chunks were never remapped",
				(unsigned long long)atomic_load(&c->remaining));
	/* Every chunk moved out: the shadow holds nothing any more. */
	munmap(c->shadow, c->region_len);
	c->shadow = NULL;
	return 0;
}

void wpc_chunks_publish(struct wpc_chunks *c)
{
	struct wpc_run *run = c->run;

	wpc_counter_set(run, "chunk_bytes", c->chunk);
	wpc_counter_set(run, "chunks", c->nchunks);
	wpc_counter_set(run, "write_faults", atomic_load(&c->faults));
	wpc_counter_set(run, "chunks_by_fault", atomic_load(&c->by_fault));
	wpc_counter_set(run, "chunks_by_background", atomic_load(&c->by_background));
	wpc_counter_set(run, "chunks_at_fixup", atomic_load(&c->at_fixup));
	wpc_counter_set(run, "waits_on_copy", atomic_load(&c->waits));
	wpc_counter_set(run, "background_ns", c->background_ns);
	wpc_counter_set(run, "fixup_pause_ns", c->pause_ns);
	if (c->sweep_threads_used)
		wpc_counter_set(run, "fill_threads", c->sweep_threads_used);
	wpc_hist_merge(&run->res->handler, c->hist);
	wpc_hist_reset(c->hist);	/* published once */
}

int wpc_chunks_dirty(struct wpc_chunks *c, uint8_t *bitmap)
{
	if (atomic_load(&c->degraded))
		return wpc_fail(c->run, EIO, "dirty set unknown: after a failed remap the region was made "
				"writable and later writes were not caught");
	for (uint64_t i = 0; i < c->nchunks; i++) {
		if (!(atomic_load_explicit(&c->marks[i], memory_order_relaxed) &
		      (WPC_CHUNK_WRITTEN | WPC_CHUNK_UNWATCHED)))
			continue;
		uint64_t first = i * c->chunk / WPC_PAGE;
		uint64_t end = first + chunk_len(c, i) / WPC_PAGE;

		for (uint64_t p = first; p < end; p++)
			bitmap[p / 8] |= (uint8_t)(1u << (p % 8));
	}
	return 0;
}
