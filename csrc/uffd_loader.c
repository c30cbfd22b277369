/* SPDX-License-Identifier: MIT */
/*
 * userfaultfd loading, shared by the uffd strategies.
 *
 * The region is registered with a userfaultfd; a missing (or minor) fault is
 * resolved by placing its unit with one ioctl: UFFDIO_COPY straight from a
 * read-only MAP_SHARED view of the image (one copy, no bounce buffer),
 * UFFDIO_MOVE of pages pread into a staging buffer, or UFFDIO_CONTINUE of a
 * page already in a memfd. The kernel arbitrates between resolvers: a unit
 * someone else placed first answers EEXIST, and the thread waiting on it must
 * then be woken by hand. A byte per unit remembers what is known placed, so
 * loaders skip it; it is a hint, never a lock.
 *
 * Threads: one handler reading fault messages (many per read), optionally
 * proactive loaders, and whoever calls fixup, which loads what is left. The
 * image view is unmapped once every unit is placed and no resolver is inside
 * a copy from it; that moment is "detached".
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compat.h"
#include "handler.h"
#include "uffd_loader.h"

/* Scattered recorded units are placed DONTWAKE in batches of this many, then woken once. */
#define PREFETCH_BATCH 32
#define LOADER_NICE 19
#define ORDER_MAGIC "wpcompare-fault-order v1"

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static uint64_t pages_of(uint64_t bytes)
{
	return bytes / WPC_PAGE;
}

/* ---- opening ---- */

static void set_err(struct wpc_uffd *u, int err, const char *what)
{
	int none = 0;

	/* The first failure wins; later ones are its consequences. */
	if (atomic_compare_exchange_strong(&u->err, &none, err))
		u->err_what = what;
}

int wpc_uffd_init(struct wpc_run *run, struct wpc_uffd *u, enum wpc_uffd_fill fill, size_t unit)
{
	struct wpc_needs needs;

	wpc_strategy_needs(run->strategy, run->params, &needs);
	memset(u, 0, sizeof(*u));
	u->run = run;
	u->fill = fill;
	u->fd = -1;
	u->memfd = -1;
	u->handler_cpu = -1;
	u->unit = unit;
	u->chunk = unit;
	u->map_len = wpc_align_up(run->region_len, unit);
	u->nunits = u->map_len / unit;
	u->sigbus = needs.uffd_features & UFFD_FEATURE_SIGBUS;

	u->loaded = calloc(u->nunits, sizeof(*u->loaded));
	u->hist = malloc(sizeof(*u->hist));
	if (!u->loaded || !u->hist)
		return wpc_fail(run, ENOMEM, "out of memory for the userfaultfd state");
	wpc_hist_reset(u->hist);
	wpc_handler_init(&u->handler);
	u->fd = wpc_run_open_uffd(run, O_NONBLOCK, &u->user_mode_only);
	return u->fd < 0 ? u->fd : 0;
}

int wpc_uffd_register(struct wpc_uffd *u, uint64_t mode)
{
	/* The ioctls a fill uses are in its row's needs: the same check, worded once. */
	return wpc_run_uffd_register(u->run, u->fd, u->run->region, u->map_len, mode);
}

int wpc_uffd_map_view(struct wpc_uffd *u)
{
	struct wpc_run *run = u->run;
	uint8_t *view = mmap(NULL, u->map_len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	/*
	 * A hugetlb region is longer than the file: the view's tail stays
	 * anonymous zeros, so a 2 MiB copy of the last unit never reads past EOF.
	 */
	if (view == MAP_FAILED)
		return wpc_fail(run, errno, "mmap of the image view: %s", strerror(errno));
	if (mmap(view, run->region_len, PROT_READ, MAP_SHARED | MAP_FIXED, run->image_fd, 0) ==
	    MAP_FAILED) {
		int err = errno;
		munmap(view, u->map_len);
		return wpc_fail(run, err, "mmap of the image view: %s", strerror(err));
	}
	u->view = view;
	return 0;
}

int wpc_uffd_map_zeros(struct wpc_uffd *u)
{
	struct wpc_run *run = u->run;
	struct wpc_zero_stats st;
	uint64_t t0 = wpc_now_ns();
	int ret;

	if (u->unit != WPC_PAGE)
		return wpc_fail(run, EINVAL, "zero=zeropage needs 4 KiB pages (UFFDIO_ZEROPAGE has no "
				"hugetlb form): use zero=copy with page=2M");
	u->zero = malloc(u->nunits);
	if (!u->zero)
		return wpc_fail(run, ENOMEM, "out of memory for the zero-page map");
	ret = wpc_image_zero_map(run->image_fd, run->image_size, u->zero, &st);
	if (ret)
		return wpc_fail(run, -ret, "finding the image's zero pages: %s", strerror(-ret));
	wpc_counter_set(run, "zero_map_ns", wpc_now_ns() - t0);
	wpc_counter_set(run, "zero_pages", st.zero_pages);
	wpc_counter_set(run, "zero_hole_pages", st.hole_pages);
	return 0;
}

/* ---- placing units ---- */

static bool unit_zero(const struct wpc_uffd *u, uint64_t off)
{
	return u->zero && u->zero[off / u->unit];
}

/*
 * From off, the bytes up to end whose units are all zero, or all not (one
 * ioctl's worth); all of them where zero pages are copied (!zero_ok).
 */
static uint64_t same_kind(const struct wpc_uffd *u, uint64_t off, uint64_t end, bool zero_ok)
{
	bool zero = unit_zero(u, off);
	uint64_t at = off + u->unit;

	if (!u->zero || !zero_ok)
		return end - off;
	while (at < end && unit_zero(u, at) == zero)
		at += u->unit;
	return at - off;
}

static bool unit_loaded(struct wpc_uffd *u, uint64_t off)
{
	return atomic_load_explicit(&u->loaded[off / u->unit], memory_order_relaxed);
}

static void mark_loaded(struct wpc_uffd *u, uint64_t off, uint64_t len)
{
	for (uint64_t i = off / u->unit; i < (off + len) / u->unit; i++)
		if (!atomic_exchange_explicit(&u->loaded[i], 1, memory_order_relaxed))
			atomic_fetch_add(&u->nloaded, 1);
}

static int wake(struct wpc_uffd *u, uint64_t off, uint64_t len)
{
	atomic_fetch_add_explicit(&u->st.wakes, 1, memory_order_relaxed);
	return wpc_uffd_wake(u->fd, (uint8_t *)u->run->region + off, len);
}

/*
 * The image's bytes for [off, off + len) into staging; zeros past EOF.
 * pread, not a mapping: uffd-move never maps the image at all.
 */
static int stage(struct wpc_uffd *u, uint64_t off, uint64_t len, uint8_t *staging)
{
	struct wpc_run *run = u->run;
	uint64_t have = off < run->image_size ? min_u64(len, run->image_size - off) : 0;

	int ret = wpc_pread_full(run->image_fd, staging, have, off);

	if (ret)
		return ret;
	memset(staging + have, 0, len - have);
	return 0;
}

/*
 * One ioctl over [off, off + len). 0: all placed; else -errno and *done
 * bytes placed first. zero_ok: zero units get UFFDIO_ZEROPAGE.
 */
static int place_once(struct wpc_uffd *u, uint64_t off, uint64_t len, bool dontwake, bool zero_ok,
		      uint8_t *staging, int64_t *done)
{
	uintptr_t dst = (uintptr_t)u->run->region + off;
	int ret;

	*done = 0;
	if (zero_ok && unit_zero(u, off)) {
		struct uffdio_zeropage z = {
			.range = { .start = dst, .len = len },
			.mode = dontwake ? UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0,
		};
		ret = ioctl(u->fd, UFFDIO_ZEROPAGE, &z) < 0 ? -errno : 0;
		*done = z.zeropage > 0 ? z.zeropage : 0;
		atomic_fetch_add_explicit(&u->st.zeropage_pages, pages_of((uint64_t)*done),
					  memory_order_relaxed);
		return ret;
	}
	switch (u->fill) {
	case WPC_FILL_COPY: {
		struct uffdio_copy c = {
			.dst = dst, .src = (uintptr_t)u->view + off, .len = len,
			.mode = dontwake ? UFFDIO_COPY_MODE_DONTWAKE : 0,
		};
		/*
		 * A hugetlb copy from source pages not yet mapped takes the kernel's
		 * slow retry path: 512 MiB took 199 ms here, 140 ms with the source
		 * mapped first. (4 KiB copies gain nothing from it: file fault-around
		 * already maps 64 KiB per miss.) Old kernels: EINVAL, ignored.
		 */
		if (u->unit == WPC_HUGE_PAGE)
			madvise(u->view + off, len, MADV_POPULATE_READ);
		ret = ioctl(u->fd, UFFDIO_COPY, &c) < 0 ? -errno : 0;
		*done = c.copy > 0 ? c.copy : 0;
		return ret;
	}
	case WPC_FILL_CONTINUE: {
		struct uffdio_continue c = {
			.range = { .start = dst, .len = len },
			.mode = dontwake ? UFFDIO_CONTINUE_MODE_DONTWAKE : 0,
		};
		ret = ioctl(u->fd, UFFDIO_CONTINUE, &c) < 0 ? -errno : 0;
		*done = c.mapped > 0 ? c.mapped : 0;
		return ret;
	}
	case WPC_FILL_MOVE: {
		struct uffdio_move m = {
			.dst = dst, .src = (uintptr_t)staging, .len = len,
			.mode = dontwake ? UFFDIO_MOVE_MODE_DONTWAKE : 0,
		};
		ret = stage(u, off, len, staging);
		if (ret)
			return ret;
		ret = ioctl(u->fd, UFFDIO_MOVE, &m) < 0 ? -errno : 0;
		*done = m.move > 0 ? m.move : 0;
		return ret;
	}
	}
	return -EINVAL;
}

/*
 * Make every unit of [off, off + len) present. *placed: bytes this call put
 * there (the rest someone else placed first). Partial copies resume where
 * the kernel stopped; a unit found present is skipped, with any neighbours
 * already known present.
 */
static int place_as(struct wpc_uffd *u, uint64_t off, uint64_t len, bool dontwake, bool zero_ok,
		    uint8_t *staging, size_t staging_len, uint64_t *placed)
{
	uint64_t end = off + len;

	while (off < end) {
		uint64_t want = same_kind(u, off, end, zero_ok);
		int64_t done;
		int ret;

		if (u->fill == WPC_FILL_MOVE && want > staging_len)
			want = staging_len;
		ret = place_once(u, off, want, dontwake, zero_ok, staging, &done);
		if (done > 0) {
			mark_loaded(u, off, (uint64_t)done);
			*placed += (uint64_t)done;
			off += (uint64_t)done;
		}
		switch (ret) {
		case 0:
			break;
		case -EAGAIN:	/* partial, or the mm changing under us: go on from where it stopped */
		case -EBUSY:	/* UFFDIO_MOVE: a source page briefly pinned */
			atomic_fetch_add_explicit(&u->st.eagain, 1, memory_order_relaxed);
			if (!done)
				sched_yield();
			break;
		case -EEXIST:
			atomic_fetch_add_explicit(&u->st.eexist, 1, memory_order_relaxed);
			mark_loaded(u, off, u->unit);
			off += u->unit;
			while (off < end && unit_loaded(u, off))
				off += u->unit;
			break;
		default:
			return ret;
		}
	}
	return 0;
}

static int place(struct wpc_uffd *u, uint64_t off, uint64_t len, bool dontwake,
		 uint8_t *staging, size_t staging_len, uint64_t *placed)
{
	return place_as(u, off, len, dontwake, true, staging, staging_len, placed);
}

/* place() for the units of [off, off + len) not known present, one stretch at a time. */
static int place_missing(struct wpc_uffd *u, uint64_t off, uint64_t len, bool dontwake,
			 uint8_t *staging, size_t staging_len, uint64_t *placed)
{
	uint64_t end = off + len;

	while (off < end) {
		uint64_t run_end;
		int ret;

		while (off < end && unit_loaded(u, off))
			off += u->unit;
		for (run_end = off; run_end < end && !unit_loaded(u, run_end); run_end += u->unit)
			;
		if (run_end == off)
			break;
		ret = place(u, off, run_end - off, dontwake, staging, staging_len, placed);
		if (ret)
			return ret;
		off = run_end;
	}
	return 0;
}

/*
 * A resolver copying from the view holds it open; once view_closing is set
 * (every unit placed) it copies nothing. seq_cst on both sides: whoever
 * closes either sees our count or we see its flag.
 */
static bool view_enter(struct wpc_uffd *u)
{
	if (u->fill != WPC_FILL_COPY)
		return true;
	atomic_fetch_add(&u->view_users, 1);
	if (!atomic_load(&u->view_closing))
		return true;
	atomic_fetch_sub(&u->view_users, 1);
	return false;
}

static void view_exit(struct wpc_uffd *u)
{
	if (u->fill == WPC_FILL_COPY)
		atomic_fetch_sub(&u->view_users, 1);
}

/* Once every unit is placed: unmap the view, and the image is referenced nowhere. */
static void drop_view(struct wpc_uffd *u)
{
	if (atomic_load(&u->nloaded) != u->nunits || atomic_exchange(&u->view_closing, true))
		return;
	while (atomic_load(&u->view_users))
		sched_yield();
	if (u->view)
		munmap(u->view, u->map_len);
	u->view = NULL;
	/* A minor-fault region still maps the memfd: its strategy detaches it. */
	if (u->fill != WPC_FILL_CONTINUE)
		wpc_run_mark_detached(u->run);
}

int wpc_uffd_resolve(struct wpc_uffd *u, uintptr_t addr, bool wake_waiters, bool write)
{
	uint64_t at = (addr - (uintptr_t)u->run->region) / u->unit * u->unit;
	uint64_t c0 = at / u->chunk * u->chunk;
	uint64_t c1 = min_u64(c0 + u->chunk, u->map_len);
	uint64_t placed = 0, around = 0;
	int ret;

	if (!view_enter(u)) {
		/* Everything is placed: a stale message, or a waiter still asleep. */
		atomic_fetch_add_explicit(&u->st.stale, 1, memory_order_relaxed);
		return wake_waiters ? wake(u, at, u->unit) : 0;
	}
	wpc_inject_hold(WPC_HOLD_RESOLVE, at / u->unit);	/* test-only: a fault in flight */
	/*
	 * The faulting unit first, woken by its own copy; then the rest of the
	 * chunk. A write to a zero unit gets a copy of zeros, not the zero page:
	 * it would fault again at once to copy it on write.
	 */
	ret = place_as(u, at, u->unit, !wake_waiters, !write, u->staging, u->chunk, &placed);
	if (write && placed && unit_zero(u, at))
		atomic_fetch_add_explicit(&u->st.zero_written, 1, memory_order_relaxed);
	if (!ret && c1 - c0 > u->unit) {
		ret = place_missing(u, c0, at - c0, true, u->staging, u->chunk, &around);
		if (!ret)
			ret = place_missing(u, at + u->unit, c1 - at - u->unit, true, u->staging,
					    u->chunk, &around);
		/* Threads asleep on pages of the chunk need not wait for their own message. */
		if (around && wake_waiters)
			wake(u, c0, c1 - c0);
	}
	view_exit(u);
	atomic_fetch_add_explicit(&u->st.handler_pages, pages_of(placed + around),
				  memory_order_relaxed);
	/* Someone else placed the faulting unit (EEXIST): its waiter may still sleep. */
	if (!placed && wake_waiters)
		wake(u, at, u->unit);
	return ret;
}

/* ---- the handler thread's side (handler.c runs it) ---- */

static void record_fault(struct wpc_uffd *u, uint64_t off)
{
	uint64_t page = off / WPC_PAGE;

	if (!u->fault_order || page >= u->run->npages ||
	    atomic_exchange_explicit(&u->fault_seen[page], 1, memory_order_relaxed))
		return;
	u->fault_order[atomic_fetch_add(&u->nfault_order, 1)] = page;
}

static bool serve_fault(void *owner, const struct uffd_msg *msg)
{
	struct wpc_uffd *u = owner;
	uintptr_t region = (uintptr_t)u->run->region;
	uint64_t addr = msg->arg.pagefault.address;
	int ret;

	if (msg->event != UFFD_EVENT_PAGEFAULT || addr < region || addr >= region + u->map_len)
		return false;
	atomic_fetch_add_explicit(&u->st.faults, 1, memory_order_relaxed);
	atomic_fetch_add(&u->fault_gen, 1);
	record_fault(u, addr - region);
	ret = wpc_uffd_resolve(u, addr, true, msg->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE);
	if (ret)
		wpc_uffd_give_up(u, -ret, "resolving a fault");
	return true;
}

/*
 * A fault we cannot resolve has no bytes to give. Unregistering would let its
 * thread retry onto plain anonymous memory and read zeros as if they were the
 * image's: data loss an application would never notice. So the error is only
 * recorded: a thread asleep in the kernel stays asleep until the strategy's
 * health check (polled during touch) fails the run, naming the error, and
 * the SIGBUS path dies by SIGBUS (strategy_uffd_sigbus.c). For the same
 * reason a handler that ends has no orphaned op: its waiters stay asleep.
 * Async-signal-safe.
 */
void wpc_uffd_give_up(struct wpc_uffd *u, int err, const char *what)
{
	set_err(u, err, what);
}

static const struct wpc_handler_ops handler_ops = {
	.serve = serve_fault,
	.stranded = "faults on pages not loaded yet would never be served",
};

int wpc_uffd_health(struct wpc_uffd *u)
{
	int err = atomic_load(&u->err);

	if (err)
		return wpc_fail(u->run, err, "userfaultfd %s failed: %s; threads waiting for those "
				"pages were left waiting, not handed empty pages", u->err_what,
				strerror(err));
	return wpc_handler_health(&u->handler);
}

int wpc_uffd_start_handler(struct wpc_uffd *u, int placement)
{
	int ret;

	u->handler.delay_ns = u->fault_delay_ns;
	u->handler.hist = u->hist;
	ret = wpc_handler_start(&u->handler, u->run, u->fd, placement, &handler_ops, u);

	u->handler_cpu = u->handler.cpu;
	return ret;
}

/* ---- proactive loading ---- */

static void prefetch_recorded(struct wpc_uffd *u, uint8_t *staging, size_t staging_len,
			      _Atomic uint64_t *counter)
{
	while (!atomic_load(&u->loaders_stop)) {
		uint64_t first = atomic_fetch_add(&u->prefetch_next, PREFETCH_BATCH);
		uint64_t lo = UINT64_MAX, hi = 0, placed = 0;
		int ret = 0;

		if (first >= u->nprefetch)
			return;
		if (!view_enter(u))
			return;
		for (uint64_t i = first; i < min_u64(first + PREFETCH_BATCH, u->nprefetch) && !ret; i++) {
			uint64_t off = u->prefetch[i] * u->unit;

			if (unit_loaded(u, off))
				continue;
			wpc_inject_hold(WPC_HOLD_PLACE, u->prefetch[i]);	/* test-only */
			ret = place(u, off, u->unit, true, staging, staging_len, &placed);
			lo = min_u64(lo, off);
			hi = off + u->unit > hi ? off + u->unit : hi;
		}
		view_exit(u);
		/* Test-only: a unit placed DONTWAKE whose waiters this batch has not woken yet. */
		for (uint64_t i = first; i < min_u64(first + PREFETCH_BATCH, u->nprefetch); i++)
			wpc_inject_hold(WPC_HOLD_UNWOKEN, u->prefetch[i]);
		/* One wake for the batch: a waiter between lo and hi on an unplaced unit just refaults. */
		if (placed)
			wake(u, lo, hi - lo);
		atomic_fetch_add_explicit(counter, pages_of(placed), memory_order_relaxed);
		if (ret) {
			set_err(u, -ret, "prefetching the recorded order");
			return;
		}
	}
}

/*
 * Sequential background transfer, CRIU lazy-pages style: transfers start at
 * 64 KiB and double up to 4 MiB while no fault arrives; a fault sends them
 * back to 64 KiB, so a loader never holds the CPU long when faults need it.
 * Unlike CRIU it runs from the end of the region down: an application that
 * reads upward (heaps are mostly walked that way) then meets the loader in
 * the middle instead of racing it for the same pages. seq_cursor counts the
 * bytes taken from the top.
 */
static void load_sequential(struct wpc_uffd *u, uint8_t *staging, size_t staging_len,
			    _Atomic uint64_t *counter)
{
	uint64_t min_xfer = wpc_align_up(WPC_LOADER_MIN_XFER, u->unit);
	uint64_t max_xfer = wpc_align_up(WPC_LOADER_MAX_XFER, u->unit);
	uint64_t xfer = min_xfer;
	uint64_t gen = atomic_load(&u->fault_gen);

	while (!atomic_load(&u->loaders_stop)) {
		uint64_t now_gen = atomic_load(&u->fault_gen), placed = 0;
		int ret;

		if (now_gen != gen)
			xfer = min_xfer;
		gen = now_gen;

		uint64_t taken = atomic_fetch_add(&u->seq_cursor, xfer);
		if (taken >= u->map_len)
			return;
		uint64_t end = u->map_len - taken;
		uint64_t off = end > xfer ? end - xfer : 0;
		if (!view_enter(u))
			return;
		ret = place_missing(u, off, end - off, false, staging, staging_len, &placed);
		view_exit(u);
		atomic_fetch_add_explicit(counter, pages_of(placed), memory_order_relaxed);
		if (ret) {
			set_err(u, -ret, "loading the image proactively");
			return;
		}
		if (atomic_load(&u->fault_gen) == gen)
			xfer = min_u64(xfer * 2, max_xfer);
	}
}

static void load_all(struct wpc_uffd *u, uint8_t *staging, size_t staging_len,
		     _Atomic uint64_t *counter)
{
	prefetch_recorded(u, staging, staging_len, counter);
	load_sequential(u, staging, staging_len, counter);
	drop_view(u);
}

static void *loader_main(void *arg)
{
	struct wpc_loader *l = arg;

	/* Sharing the CPU with the handler, a loader must yield to it: faults first. */
	if (l->nice)
		setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), l->nice);
	load_all(l->u, l->staging, WPC_LOADER_MAX_XFER, &l->u->st.loader_pages);
	return NULL;
}

/*
 * Faults first, by placement: a loader never runs on the handler's CPU, so a
 * fault is never queued behind a transfer. Where that leaves no CPU (one CPU,
 * or an unpinned handler) the loader runs niced instead.
 */
static bool loader_cpus(const struct wpc_uffd *u, cpu_set_t *set)
{
	const struct wpc_run *run = u->run;
	int n = 0;

	CPU_ZERO(set);
	if (u->handler_cpu < 0)
		return false;
	for (int i = 0; i < run->ncpus; i++)
		if (run->cpus[i] != u->handler_cpu) {
			CPU_SET(run->cpus[i], set);
			n++;
		}
	return n > 0;
}

static uint8_t *map_staging(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

int wpc_uffd_start_loaders(struct wpc_uffd *u, int n)
{
	pthread_attr_t attr;
	cpu_set_t set;
	bool placed = loader_cpus(u, &set);
	int ret = 0;

	if (n > WPC_LOADER_MAX_THREADS)
		n = WPC_LOADER_MAX_THREADS;
	pthread_attr_init(&attr);
	if (placed)
		pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
	wpc_counter_set(u->run, "loaders_off_handler_cpu", n && placed);
	for (int i = 0; i < n && !ret; i++) {
		struct wpc_loader *l = &u->loaders[i];

		l->u = u;
		l->index = i;
		l->nice = placed ? 0 : LOADER_NICE;
		if (u->fill == WPC_FILL_MOVE && !(l->staging = map_staging(WPC_LOADER_MAX_XFER))) {
			ret = wpc_fail(u->run, errno, "mmap of a loader's staging buffer: %s",
				       strerror(errno));
			break;
		}
		u->nloaders = i + 1;
		ret = pthread_create(&l->tid, &attr, loader_main, l);
		if (ret)
			ret = wpc_fail(u->run, ret, "cannot start loader thread %d: %s", i,
				       strerror(ret));
		l->started = !ret;
	}
	pthread_attr_destroy(&attr);
	return ret;
}

static void join_loaders(struct wpc_uffd *u)
{
	for (int i = 0; i < u->nloaders; i++) {
		struct wpc_loader *l = &u->loaders[i];

		if (l->started)
			pthread_join(l->tid, NULL);
		l->started = false;
		if (l->staging)
			munmap(l->staging, WPC_LOADER_MAX_XFER);
		l->staging = NULL;
	}
}

/* ---- the end: fixup ---- */

int wpc_uffd_finish(struct wpc_uffd *u)
{
	struct wpc_run *run = u->run;
	uint8_t *staging = NULL;
	int err;

	if (u->fill == WPC_FILL_MOVE && !(staging = map_staging(WPC_LOADER_MAX_XFER)))
		return wpc_fail(run, errno, "mmap of the fixup staging buffer: %s", strerror(errno));
	/* The caller loads alongside the loaders (or alone), then waits for them. */
	load_all(u, staging, WPC_LOADER_MAX_XFER, &u->st.fixup_pages);
	join_loaders(u);
	if (staging)
		munmap(staging, WPC_LOADER_MAX_XFER);

	err = atomic_load(&u->err);
	if (!err && atomic_load(&u->nloaded) != u->nunits)
		err = EIO;
	if (err)
		return wpc_fail(run, err, "userfaultfd %s failed: %s",
				u->err_what ? u->err_what : "loading", strerror(err));
	/* The loaders joined: if one of them dropped the view, it is gone by now. */
	drop_view(u);

	/* Nothing can fault any more; messages still queued are stale. */
	wpc_handler_stop(&u->handler);
	close(u->fd);
	u->fd = -1;
	return wpc_handler_error(&u->handler);
}

/* ---- recorded fault order ---- */

int wpc_uffd_record_faults(struct wpc_uffd *u)
{
	u->fault_order = malloc(u->run->npages * sizeof(*u->fault_order));
	u->fault_seen = calloc(u->run->npages, sizeof(*u->fault_seen));
	if (!u->fault_order || !u->fault_seen)
		return wpc_fail(u->run, ENOMEM, "out of memory for the fault-order record");
	return 0;
}

int wpc_uffd_save_order(struct wpc_uffd *u, const char *path)
{
	struct wpc_run *run = u->run;
	uint64_t n = atomic_load(&u->nfault_order);
	char tmp[WPC_PARAM_STRING_LEN + 32];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
	f = fopen(tmp, "we");
	if (!f)
		return wpc_fail(run, errno, "cannot write the fault order to %s: %s", tmp,
				strerror(errno));
	fprintf(f, "%s pages=%" PRIu64 " faults=%" PRIu64 "\n", ORDER_MAGIC, run->npages, n);
	for (uint64_t i = 0; i < n; i++)
		fprintf(f, "%" PRIu64 "\n", u->fault_order[i]);
	if (fflush(f) || ferror(f)) {
		int err = errno ? errno : EIO;
		fclose(f);
		unlink(tmp);
		return wpc_fail(run, err, "writing the fault order to %s: %s", tmp, strerror(err));
	}
	fclose(f);
	if (rename(tmp, path) < 0) {
		int err = errno;
		unlink(tmp);
		return wpc_fail(run, err, "cannot rename %s to %s: %s", tmp, path, strerror(err));
	}
	wpc_counter_set(run, "recorded_faults", n);
	return 0;
}

int wpc_uffd_load_order(struct wpc_uffd *u, const char *path)
{
	struct wpc_run *run = u->run;
	FILE *f = fopen(path, "re");
	uint64_t pages, n, page;
	uint8_t *seen = NULL;
	int ret = 0;

	if (!f)
		return wpc_fail(run, errno, "no recorded fault order at '%s' (%s): record one first "
				"with order=sequential,loader-threads=0,path=%s", path,
				strerror(errno), path);
	if (fscanf(f, ORDER_MAGIC " pages=%" SCNu64 " faults=%" SCNu64, &pages, &n) != 2) {
		ret = wpc_fail(run, EINVAL, "%s is not a wpcompare fault order", path);
		goto out;
	}
	if (pages != run->npages || n > pages) {
		ret = wpc_fail(run, EINVAL, "the fault order in %s is for an image of %" PRIu64
			       " pages, this one has %" PRIu64 ": record it again", path, pages,
			       run->npages);
		goto out;
	}
	u->prefetch = malloc((n ? n : 1) * sizeof(*u->prefetch));
	seen = calloc(u->nunits, 1);
	if (!u->prefetch || !seen) {
		ret = wpc_fail(run, ENOMEM, "out of memory for the recorded order");
		goto out;
	}
	for (uint64_t i = 0; i < n; i++) {
		if (fscanf(f, "%" SCNu64, &page) != 1 || page >= pages) {
			ret = wpc_fail(run, EINVAL, "%s: entry %" PRIu64 " is not a page number below %"
				       PRIu64, path, i, pages);
			goto out;
		}
		/* Recorded in 4 KiB pages; loaded in this run's units, each once. */
		uint64_t unit = page * WPC_PAGE / u->unit;
		if (!seen[unit]) {
			seen[unit] = 1;
			u->prefetch[u->nprefetch++] = unit;
		}
	}
	wpc_counter_set(run, "prefetch_units", u->nprefetch);
out:
	free(seen);
	fclose(f);
	return ret;
}

/* ---- results and teardown ---- */

void wpc_uffd_publish(struct wpc_uffd *u)
{
	struct wpc_run *run = u->run;
	const struct {
		const char *name;
		_Atomic uint64_t *value;
	} counters[] = {
		{ "faults", &u->st.faults },
		{ "eexist", &u->st.eexist },
		{ "eagain", &u->st.eagain },
		{ "wakes", &u->st.wakes },
		{ "stale_faults", &u->st.stale },
		{ "handler_pages", &u->st.handler_pages },
		{ "loader_pages", &u->st.loader_pages },
		{ "fixup_pages", &u->st.fixup_pages },
		{ "zeropage_pages", &u->st.zeropage_pages },
		{ "zero_written_faults", &u->st.zero_written },
	};

	for (size_t i = 0; i < WPC_ARRAY_SIZE(counters); i++)
		wpc_counter_set(run, counters[i].name, atomic_load(counters[i].value));
	wpc_counter_set(run, "user_mode_only", u->user_mode_only);
	wpc_counter_set(run, "chunk_bytes", u->chunk);
	wpc_handler_publish(&u->handler, run);
	if (u->hist && !u->hist_published) {
		wpc_hist_merge(&run->res->handler, u->hist);
		u->hist_published = true;
	}
}

void wpc_uffd_teardown(struct wpc_uffd *u)
{
	struct wpc_run *run = u->run;

	if (!run)
		return;
	atomic_store(&u->loaders_stop, true);
	join_loaders(u);
	wpc_handler_destroy(&u->handler);
	/* Closing the userfaultfd wakes any thread still waiting for a page. */
	if (u->fd >= 0)
		close(u->fd);
	u->fd = -1;
	if (u->view)
		munmap(u->view, u->map_len);
	u->view = NULL;
	if (u->staging)
		munmap(u->staging, u->chunk);
	u->staging = NULL;
	if (run->region)
		munmap(run->region, u->map_len);
	run->region = NULL;
	if (u->memfd >= 0)
		close(u->memfd);
	u->memfd = -1;
	free((void *)u->loaded);
	free(u->zero);
	u->zero = NULL;
	free(u->hist);
	free(u->prefetch);
	free(u->fault_order);
	free((void *)u->fault_seen);
	u->loaded = NULL;
	u->hist = NULL;
	u->prefetch = NULL;
	u->fault_order = NULL;
	u->fault_seen = NULL;
}
