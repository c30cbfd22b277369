/* SPDX-License-Identifier: MIT */
/*
 * Eager fills: fill.h says what the parameters mean. One copier splits a
 * range into contiguous 2 MiB-aligned shares, one per thread (the bounds
 * copy with it too); each method is one share op.
 *
 * Why the methods (512 MiB, page cache hot, in this VM; issue 15): pread
 * into fresh 4 KiB anonymous pages pays a fault, an allocation and a
 * zeroing per page before the copy (260-470 ms); UFFDIO_COPY into a range
 * registered MISSING allocates and copies in one step without zeroing
 * (130-140 ms in 2 MiB calls); memcpy from a mapping of the source faults
 * both sides per page but copies in user space. A second thread uses the
 * other CPU; THP replaces 512 faults by one where the kernel has a huge
 * page to give (erratic here: fill_huge_pages says what a run got).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

/* pread and memcpy: calls large enough that the call's cost vanishes. */
#define COPY_CALL_BYTES (8UL << 20)
/* UFFDIO_COPY: 2 MiB per call, as measured (issue 15). */
#define UFFDIO_COPY_CALL_BYTES WPC_HUGE_PAGE

/* Index of each choice set's values (fill.h's choice strings), as methods. */
static const enum wpc_fill_method from_image_methods[] = {
	WPC_FILL_PREAD, WPC_FILL_MEMCPY, WPC_FILL_UFFDIO_COPY,
};
static const enum wpc_fill_method from_region_methods[] = {
	WPC_FILL_MEMCPY, WPC_FILL_UFFDIO_COPY,
};
static const enum wpc_fill_method into_memfd_methods[] = {
	WPC_FILL_SENDFILE, WPC_FILL_UFFDIO_COPY,
};

static enum wpc_fill_method method_of(const struct wpc_fill_params *p, enum wpc_fill_kind kind)
{
	switch (kind) {
	case WPC_FILL_FROM_IMAGE:
		return from_image_methods[p->fill];
	case WPC_FILL_FROM_REGION:
		return from_region_methods[p->fill];
	case WPC_FILL_INTO_MEMFD:
		break;
	}
	return into_memfd_methods[p->fill];
}

/* The userfaultfd of a uffdio-copy fill: nobody faults on it, so user mode only, no privilege. */
static const struct wpc_needs uffdio_copy_needs = {
	.uffd = WPC_UFFD_USER_MODE,
	.uffd_ioctls = 1ull << _UFFDIO_COPY,
};
static const struct wpc_needs uffdio_copy_shmem_needs = {
	.uffd = WPC_UFFD_USER_MODE,
	.uffd_features = UFFD_FEATURE_MISSING_SHMEM,
	.uffd_ioctls = 1ull << _UFFDIO_COPY,
};

void wpc_fill_needs(const struct wpc_fill_params *p, enum wpc_fill_kind kind,
		    struct wpc_needs *needs)
{
	const struct wpc_needs *copy = kind == WPC_FILL_INTO_MEMFD ? &uffdio_copy_shmem_needs
								   : &uffdio_copy_needs;

	if (p->thp == WPC_FILL_THP_YES)
		needs->thp = true;
	if (method_of(p, kind) == WPC_FILL_UFFDIO_COPY) {
		/* A strategy opening a userfaultfd of its own already needs at least this one. */
		if (needs->uffd == WPC_UFFD_NONE)
			needs->uffd = copy->uffd;
		needs->uffd_features |= copy->uffd_features;
		needs->uffd_ioctls |= copy->uffd_ioctls;
	}
}

int wpc_fill_check(const struct wpc_fill_params *p, enum wpc_fill_kind kind, char *why,
		   size_t len)
{
	if (p->thp == WPC_FILL_THP_YES && method_of(p, kind) == WPC_FILL_UFFDIO_COPY) {
		wpc_why(why, len, "thp=yes cannot go with fill=uffdio-copy (UFFDIO_COPY places 4 KiB "
			"pages): use fill=%s with thp=yes, or thp=no",
			kind == WPC_FILL_FROM_IMAGE ? "pread or memcpy" : "memcpy");
		return -EINVAL;
	}
	return 0;
}

int wpc_fill_thread_count(const struct wpc_run *run, int64_t threads)
{
	int n = threads ? (int)threads : run->ncpus;

	return n < 1 ? 1 : n;
}

/* ---- the copier ---- */

struct copier {
	pthread_t tid;
	wpc_copy_share_fn copy_share;
	void *ctx;
	uint64_t off, len;
	int ret;
};

static void *copier_main(void *arg)
{
	struct copier *c = arg;

	c->ret = c->len ? c->copy_share(c->ctx, c->off, c->len) : 0;
	return NULL;
}

int wpc_copy_in_shares(uint64_t len, int nthreads, wpc_copy_share_fn copy_share, void *ctx,
		       int *used, uint64_t *failed_off)
{
	struct copier copiers[WPC_MAX_THREADS] = { 0 };
	uint64_t share;
	int started = 0, ret = 0;

	if (nthreads < 1)
		nthreads = 1;
	if (nthreads > WPC_MAX_THREADS)
		nthreads = WPC_MAX_THREADS;
	share = wpc_align_up((len + (uint64_t)nthreads - 1) / (uint64_t)nthreads, WPC_HUGE_PAGE);
	for (int t = 0; t < nthreads; t++) {
		struct copier *c = &copiers[t];

		c->copy_share = copy_share;
		c->ctx = ctx;
		c->off = (uint64_t)t * share;
		c->len = c->off >= len ? 0 : len - c->off;
		c->len = c->len < share ? c->len : share;
		if (t == 0)
			continue;	/* the calling thread copies share 0 itself */
		if (!c->len)
			break;		/* more threads than shares: the rest would idle */
		/* Unpinned, every signal blocked, as every thread of ours (context.c). */
		ret = wpc_thread_start_quiet(&c->tid, -1, copier_main, c);
		if (ret)
			break;
		started++;
	}
	if (!ret)
		copier_main(&copiers[0]);
	for (int t = 1; t <= started; t++)
		pthread_join(copiers[t].tid, NULL);
	*used = started + 1;
	if (ret)
		return ret;
	for (int t = 0; t <= started; t++)
		if (copiers[t].ret) {
			*failed_off = copiers[t].off;
			return copiers[t].ret;
		}
	return 0;
}

/* ---- share ops ---- */

struct fill_job {
	uint8_t *dst;
	const uint8_t *src;	/* memcpy, uffdio-copy */
	int fd;			/* pread, sendfile: the file; uffdio-copy: the userfaultfd */
	int memfd;		/* sendfile: the memfd written */
	uint64_t src_len;	/* bytes the source holds; past them dst keeps its zeros */
};

static int pread_share(void *ctx, uint64_t off, uint64_t len)
{
	struct fill_job *job = ctx;
	uint64_t end = off + len < job->src_len ? off + len : job->src_len;
	int ret = 0;

	for (uint64_t at = off; at < end && !ret; at += COPY_CALL_BYTES) {
		uint64_t want = end - at < COPY_CALL_BYTES ? end - at : COPY_CALL_BYTES;

		ret = wpc_pread_full(job->fd, job->dst + at, want, at);
	}
	return ret;
}

static int memcpy_share(void *ctx, uint64_t off, uint64_t len)
{
	struct fill_job *job = ctx;
	uint64_t end = off + len < job->src_len ? off + len : job->src_len;

	if (end > off)
		memcpy(job->dst + off, job->src + off, end - off);
	return 0;
}

/*
 * Whole pages: [off, off + len) is page-aligned and the source mapping
 * covers it (a file mapping reads zeros past the end of file in its last page).
 */
static int uffdio_copy_share(void *ctx, uint64_t off, uint64_t len)
{
	struct fill_job *job = ctx;
	uint64_t done = 0;

	while (done < len) {
		uint64_t want = len - done < UFFDIO_COPY_CALL_BYTES ? len - done
								      : UFFDIO_COPY_CALL_BYTES;
		struct uffdio_copy copy = {
			.dst = (uintptr_t)(job->dst + off + done),
			.src = (uintptr_t)(job->src + off + done),
			.len = want,
			/* Nobody waits on the destination: no wake-up to pay for. */
			.mode = UFFDIO_COPY_MODE_DONTWAKE,
		};

		if (ioctl(job->fd, UFFDIO_COPY, &copy) < 0) {
			/* EAGAIN: the address space changed meanwhile; copy.copy says how far it got. */
			if (errno != EAGAIN && errno != EINTR)
				return -errno;
			if (copy.copy > 0)
				done += (uint64_t)copy.copy;
			continue;
		}
		done += (uint64_t)copy.copy;
	}
	return 0;
}

/*
 * Share 0 writes through the memfd's own descriptor, as the published
 * single copy did; every other share through an open file description of
 * its own (its own file position), opened from /proc/self/fd.
 */
static int sendfile_share(void *ctx, uint64_t off, uint64_t len)
{
	struct fill_job *job = ctx;
	uint64_t end = off + len < job->src_len ? off + len : job->src_len;
	off_t in = (off_t)off;
	int out = job->memfd, ret = 0;

	if (off) {
		char path[64];

		snprintf(path, sizeof(path), "/proc/self/fd/%d", job->memfd);
		out = open(path, O_WRONLY | O_CLOEXEC);
		if (out < 0)
			return -errno;
	}
	if (lseek(out, (off_t)off, SEEK_SET) < 0)
		ret = -errno;
	while (!ret && (uint64_t)in < end) {
		ssize_t n = sendfile(out, job->fd, &in, end - (uint64_t)in);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			ret = n ? -errno : -ENODATA;
	}
	if (out != job->memfd)
		close(out);
	return ret;
}

/* ---- destinations ---- */

/*
 * Fresh anonymous memory of len bytes for a fill; thp=yes: 2 MiB-aligned and
 * MADV_HUGEPAGE (an unaligned start could hold one huge page fewer), thp=no:
 * MADV_NOHUGEPAGE, whatever THP's system setting. MAP_FAILED and errno on failure.
 */
static void *map_destination(size_t len, int thp, const char **what)
{
	size_t extra = thp == WPC_FILL_THP_YES ? WPC_HUGE_PAGE : 0;
	uint8_t *p = mmap(NULL, len + extra, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			  -1, 0);

	*what = "mmap";
	if (p == MAP_FAILED)
		return MAP_FAILED;
	if (extra) {
		uint8_t *aligned = (uint8_t *)wpc_align_up((uintptr_t)p, WPC_HUGE_PAGE);

		if (aligned > p)
			munmap(p, (size_t)(aligned - p));
		munmap(aligned + len, (size_t)(p + extra - aligned));
		p = aligned;
	}
	*what = thp == WPC_FILL_THP_YES ? "madvise(MADV_HUGEPAGE)" : "madvise(MADV_NOHUGEPAGE)";
	if (madvise(p, len, thp == WPC_FILL_THP_YES ? MADV_HUGEPAGE : MADV_NOHUGEPAGE) < 0) {
		int err = errno;

		munmap(p, len);
		errno = err;
		return MAP_FAILED;
	}
	return p;
}

/*
 * PMD-mapped huge pages of [addr, addr + len) from PAGEMAP_SCAN: walks this
 * range only. smaps generates every mapping's text and walks every page
 * table of the process, inside the phase that is timed (measured: read's
 * 512 MiB restore 325 ms, its detach marked 11 ms before the end).
 * -EOPNOTSUPP before Linux 6.7.
 */
static int64_t scan_huge_pages(const void *addr, size_t len)
{
	struct page_region vec[64];
	uint64_t at = (uintptr_t)addr, hi = at + len, bytes = 0;
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	while (at < hi) {
		struct pm_scan_arg arg = {
			.size = sizeof(arg),
			.start = at,
			.end = hi,
			.vec = (uintptr_t)vec,
			.vec_len = WPC_ARRAY_SIZE(vec),
			.category_mask = PAGE_IS_HUGE | PAGE_IS_PRESENT,
			.return_mask = PAGE_IS_HUGE,
		};
		int n = ioctl(fd, PAGEMAP_SCAN, &arg);

		if (n < 0) {
			int err = errno;

			close(fd);
			return err == ENOTTY || err == EINVAL ? -EOPNOTSUPP : -err;
		}
		for (int i = 0; i < n; i++)
			bytes += vec[i].end - vec[i].start;
		if (arg.walk_end <= at)
			break;
		at = arg.walk_end;
	}
	close(fd);
	return (int64_t)(bytes / WPC_HUGE_PAGE);
}

int64_t wpc_anon_huge_pages(const void *addr, size_t len)
{
	int64_t scanned = scan_huge_pages(addr, len);

	if (scanned != -EOPNOTSUPP)
		return scanned;

	uintptr_t start = (uintptr_t)addr, end = start + len;
	FILE *f = fopen("/proc/self/smaps", "re");
	char line[512];
	bool inside = false;
	uint64_t kb = 0, v;
	unsigned long lo, hi;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		/* A VMA's header line: "lo-hi perms ..."; the others are "Field:   N kB". */
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2)
			inside = lo >= start && hi <= end;
		else if (inside && sscanf(line, "AnonHugePages: %lu kB", &v) == 1)
			kb += v;
	}
	fclose(f);
	return (int64_t)(kb * 1024 / WPC_HUGE_PAGE);
}

/*
 * Counters of a fill that completed into [addr, addr + len). Without
 * /proc/self/smaps the huge pages are unknown: no counter, and the run goes
 * on (its bytes are still checked; the detach check says what /proc lacks).
 */
static int publish(struct wpc_run *run, const void *addr, size_t len, int used, uint64_t t0)
{
	int64_t huge = wpc_anon_huge_pages(addr, len);

	if (huge >= 0)
		wpc_counter_set(run, "fill_huge_pages", (uint64_t)huge);
	wpc_counter_set(run, "fill_threads", (uint64_t)used);
	wpc_counter_set(run, "fill_ns", wpc_now_ns() - t0);
	return 0;
}

/* A userfaultfd with [dst, dst + len) registered MISSING, for UFFDIO_COPY; -errno with why. */
static int open_copy_uffd(const struct wpc_needs *needs, void *dst, size_t len, char *why,
			  size_t why_len)
{
	int fd = wpc_uffd_open_for(needs, 0, NULL, why, why_len);
	int ret;

	if (fd < 0)
		return fd;
	ret = wpc_uffd_register_for(needs, fd, dst, len, UFFDIO_REGISTER_MODE_MISSING, why, why_len);
	if (ret) {
		close(fd);
		return ret;
	}
	return fd;
}

/* Unregister (the range must behave as plain memory from here on) and close. */
static int close_copy_uffd(int fd, void *dst, size_t len)
{
	int ret = wpc_uffd_unregister(fd, dst, len);

	close(fd);
	return ret;
}

/* Fill [dst, dst + len) from the job's source with the method, in shares; -errno with why. */
static int run_method(enum wpc_fill_method method, struct fill_job *job, size_t len, int nthreads,
		      int *used, char *why, size_t why_len)
{
	static const wpc_copy_share_fn ops[] = {
		[WPC_FILL_PREAD] = pread_share,
		[WPC_FILL_MEMCPY] = memcpy_share,
		[WPC_FILL_UFFDIO_COPY] = uffdio_copy_share,
		[WPC_FILL_SENDFILE] = sendfile_share,
	};
	static const char *const names[] = {
		[WPC_FILL_PREAD] = "reading the image",
		[WPC_FILL_MEMCPY] = "memcpy",
		[WPC_FILL_UFFDIO_COPY] = "UFFDIO_COPY",
		/* Where /proc is missing, the open of a share's own description is what fails. */
		[WPC_FILL_SENDFILE] = "sendfile into the memfd (shares past the first reopen it "
				      "through /proc/self/fd)",
	};
	uint64_t failed_off = 0;
	int ret, uffd = -1;

	if (method == WPC_FILL_UFFDIO_COPY) {
		uffd = open_copy_uffd(job->memfd >= 0 ? &uffdio_copy_shmem_needs : &uffdio_copy_needs,
				      job->dst, len, why, why_len);
		if (uffd < 0)
			return uffd;
		job->fd = uffd;
	}
	ret = wpc_copy_in_shares(len, nthreads, ops[method], job, used, &failed_off);
	if (ret)
		wpc_why(why, why_len, "%s of the share at byte %llu failed: %s", names[method],
			(unsigned long long)failed_off,
			ret == -ENODATA ? "unexpected end of file" : strerror(-ret));
	if (uffd >= 0) {
		int unreg = close_copy_uffd(uffd, job->dst, len);

		if (!ret && unreg) {
			wpc_why(why, why_len, "UFFDIO_UNREGISTER after the fill failed: %s",
				strerror(-unreg));
			ret = unreg;
		}
	}
	return ret;
}

int wpc_fill_anonymous_from_image(struct wpc_run *run, const struct wpc_fill_params *p)
{
	enum wpc_fill_method method = method_of(p, WPC_FILL_FROM_IMAGE);
	struct fill_job job = { .fd = run->image_fd, .memfd = -1, .src_len = run->image_size };
	char why[WPC_REASON_LEN] = "";
	uint64_t t0 = wpc_now_ns();
	const char *what;
	void *image = NULL;
	int used = 0, ret;

	job.dst = map_destination(run->region_len, p->thp, &what);
	if (job.dst == MAP_FAILED)
		return wpc_fail(run, errno, "%s of %zu anonymous bytes failed: %s", what,
				run->region_len, strerror(errno));
	run->region = job.dst;
	if (method != WPC_FILL_PREAD) {
		/* Read-only and private: nothing can reach the image's pages through it. */
		image = mmap(NULL, run->region_len, PROT_READ, MAP_PRIVATE, run->image_fd, 0);
		if (image == MAP_FAILED)
			return wpc_fail(run, errno, "mmap of the image to copy from failed: %s",
					strerror(errno));
		job.src = image;
	}
	ret = run_method(method, &job, run->region_len, wpc_fill_thread_count(run, p->threads), &used,
			 why, sizeof(why));
	if (image)
		munmap(image, run->region_len);
	if (ret)
		return wpc_fail(run, -ret, "filling the region from the image: %s", why);
	wpc_run_mark_detached(run);
	return publish(run, run->region, run->region_len, used, t0);
}

int wpc_fill_pread_image(struct wpc_run *run, uint8_t *dst, int nthreads, int *used)
{
	struct fill_job job = { .dst = dst, .fd = run->image_fd, .memfd = -1,
				.src_len = run->image_size };
	char why[WPC_REASON_LEN] = "";
	int ret = run_method(WPC_FILL_PREAD, &job, run->image_size, nthreads, used, why, sizeof(why));

	return ret ? wpc_fail(run, -ret, "%s", why) : 0;
}

int wpc_fill_copy_and_remap(struct wpc_run *run, const struct wpc_fill_params *p, void *addr,
			    size_t len)
{
	enum wpc_fill_method method = method_of(p, WPC_FILL_FROM_REGION);
	/* The source is the region itself: its written pages are not the image's. */
	struct fill_job job = { .src = addr, .fd = -1, .memfd = -1, .src_len = len };
	char why[WPC_REASON_LEN] = "";
	uint64_t t0 = wpc_now_ns();
	const char *what;
	int used = 0, ret;

	job.dst = map_destination(len, p->thp, &what);
	if (job.dst == MAP_FAILED) {
		ret = errno;
		if (ret == ENOMEM)
			wpc_enomem_why(len, "", why, sizeof(why));
		return wpc_fail(run, ret, "%s of the fixup's %zu-byte shadow failed: %s%s%s", what, len,
				strerror(ret), why[0] ? ": " : "", why);
	}
	ret = run_method(method, &job, len, wpc_fill_thread_count(run, p->threads), &used, why,
			 sizeof(why));
	if (ret) {
		munmap(job.dst, len);
		return wpc_fail(run, -ret, "copying the region into its shadow: %s", why);
	}
	if (wpc_mremap(job.dst, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, addr) == MAP_FAILED) {
		ret = errno;
		munmap(job.dst, len);
		if (ret == ENOMEM)
			wpc_enomem_why(len, "", why, sizeof(why));
		return wpc_fail(run, ret, "copy-and-remap of the whole region failed: %s%s%s",
				strerror(ret), why[0] ? ": " : "", why);
	}
	return publish(run, addr, len, used, t0);
}

int wpc_fill_memfd_from_image(struct wpc_run *run, const struct wpc_fill_params *p, int memfd,
			      size_t len)
{
	static const struct wpc_fill_params published = { .fill = 0, .threads = 1 };
	enum wpc_fill_method method;
	/* UFFDIO_COPY copies whole pages: the image's, its last one zero-filled past the end. */
	uint64_t image_pages_len = wpc_align_up(run->image_size, WPC_PAGE);
	struct fill_job job = { .fd = run->image_fd, .memfd = memfd, .src_len = run->image_size };
	char why[WPC_REASON_LEN] = "";
	void *image = NULL, *shared = NULL;
	int used = 0, ret;

	if (!p)
		p = &published;
	method = method_of(p, WPC_FILL_INTO_MEMFD);
	if (method == WPC_FILL_UFFDIO_COPY) {
		image = mmap(NULL, image_pages_len, PROT_READ, MAP_PRIVATE, run->image_fd, 0);
		if (image == MAP_FAILED)
			return wpc_fail(run, errno, "mmap of the image to copy from failed: %s",
					strerror(errno));
		shared = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
		if (shared == MAP_FAILED) {
			ret = errno;
			munmap(image, image_pages_len);
			return wpc_fail(run, ret, "mmap of the memfd to copy into failed: %s",
					strerror(ret));
		}
		job.src = image;
		job.dst = shared;
	}
	ret = run_method(method, &job, method == WPC_FILL_UFFDIO_COPY ? image_pages_len
								     : run->image_size,
			 wpc_fill_thread_count(run, p->threads), &used, why, sizeof(why));
	if (shared) {
		munmap(shared, len);
		munmap(image, image_pages_len);
	}
	if (ret)
		return wpc_fail(run, -ret, "copying the image into the memfd: %s", why);
	/* Its own name: uffd-minor's fixup publishes the fill_* counters of its copy. */
	wpc_counter_set(run, "memfd_fill_threads", (uint64_t)used);
	return 0;
}
