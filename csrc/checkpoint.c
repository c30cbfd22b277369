/* SPDX-License-Identifier: MIT */
/*
 * Checkpoints: the restored region written into the next image.
 *
 * A full dump write()s the whole region, image_size bytes. An incremental
 * dump write()s only the pages the strategy's dirty set names and takes every
 * other page from the image this run restored from with copy_file_range,
 * which shares extents (a reflink) where the filesystem can (btrfs, XFS) and
 * elsewhere copies inside the kernel without a trip through user space. A
 * filesystem that refuses it (EXDEV across mounts, EOPNOTSUPP, ENOSYS on old
 * kernels) gets read()+write() instead, and the stats say so.
 *
 * Either way the image is written to a temp file next to its final name and
 * renamed once complete, so no reader ever finds a half-written image. There
 * is no fsync: a checkpointer hands its pages to the page cache (CRIU does
 * not sync either), and writeback would measure the disk, not the strategy.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* write() and copy_file_range move at most ~2 GiB per call. */
#define MAX_IO_BYTES (1ull << 30)
#define FALLBACK_BUF_BYTES (1u << 20)

struct dump {
	int fd;
	int prev_fd;
	const uint8_t *memory;
	uint64_t size;
	const char *tmp;
	uint8_t *bounce;		/* read()+write() fallback buffer, allocated on first need */
	struct wpc_dump_stats *st;
	char *why;
	size_t len;
};

static int write_at(struct dump *d, const uint8_t *src, uint64_t bytes, uint64_t off)
{
	for (uint64_t done = 0; done < bytes;) {
		uint64_t want = bytes - done < MAX_IO_BYTES ? bytes - done : MAX_IO_BYTES;
		ssize_t n = pwrite(d->fd, src + done, want, (off_t)(off + done));

		d->st->write_calls++;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = errno;
			wpc_why(d->why, d->len, "writing %s at byte %llu: %s", d->tmp,
				(unsigned long long)(off + done), strerror(err));
			return -err;
		}
		done += (uint64_t)n;
	}
	return 0;
}

static int short_previous(struct dump *d, uint64_t at)
{
	wpc_why(d->why, d->len, "the previous image ends before byte %llu of %llu: it was truncated "
		"or replaced while the checkpoint needed it", (unsigned long long)at,
		(unsigned long long)d->size);
	return -EIO;
}

static int copy_by_read_write(struct dump *d, uint64_t off, uint64_t bytes)
{
	if (!d->bounce && !(d->bounce = malloc(FALLBACK_BUF_BYTES))) {
		wpc_why(d->why, d->len, "out of memory for the read/write fallback buffer");
		return -ENOMEM;
	}
	for (uint64_t done = 0; done < bytes;) {
		uint64_t want = bytes - done < FALLBACK_BUF_BYTES ? bytes - done : FALLBACK_BUF_BYTES;
		ssize_t got = pread(d->prev_fd, d->bounce, want, (off_t)(off + done));

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0) {
			int err = errno;
			wpc_why(d->why, d->len, "reading the previous image at byte %llu: %s",
				(unsigned long long)(off + done), strerror(err));
			return -err;
		}
		if (got == 0)
			return short_previous(d, off + done);
		int ret = write_at(d, d->bounce, (uint64_t)got, off + done);

		if (ret)
			return ret;
		d->st->bytes_fallback += (uint64_t)got;
		done += (uint64_t)got;
	}
	return 0;
}

static bool copy_unsupported(int err)
{
	return err == EXDEV || err == EOPNOTSUPP || err == ENOSYS;
}

static int copy_at(struct dump *d, uint64_t off, uint64_t bytes)
{
	loff_t in = (loff_t)off, out = (loff_t)off;
	uint64_t done = 0;

	while (done < bytes && !d->st->fallback_errno) {
		uint64_t want = bytes - done < MAX_IO_BYTES ? bytes - done : MAX_IO_BYTES;
		ssize_t n = copy_file_range(d->prev_fd, &in, d->fd, &out, want, 0);

		d->st->copy_calls++;
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && copy_unsupported(errno)) {
			d->st->fallback_errno = errno;
			break;
		}
		if (n < 0) {
			int err = errno;
			wpc_why(d->why, d->len, "copy_file_range from the previous image at byte %llu: %s",
				(unsigned long long)(off + done), strerror(err));
			return -err;
		}
		if (n == 0)
			return short_previous(d, off + done);
		d->st->bytes_copied += (uint64_t)n;
		done += (uint64_t)n;
		in = out = (loff_t)(off + done);
	}
	return done < bytes ? copy_by_read_write(d, off + done, bytes - done) : 0;
}

static bool page_dirty(const uint8_t *dirty, uint64_t page)
{
	return dirty[page / 8] >> (page % 8) & 1;
}

/* Runs of dirty pages from memory, runs of clean ones from the previous image, in file order. */
static int write_incremental(struct dump *d, const uint8_t *dirty)
{
	uint64_t npages = wpc_align_up(d->size, WPC_PAGE) / WPC_PAGE;
	struct stat st;

	if (fstat(d->prev_fd, &st) < 0) {
		int err = errno;
		wpc_why(d->why, d->len, "cannot stat the previous image: %s", strerror(err));
		return -err;
	}
	if ((uint64_t)st.st_size != d->size) {
		wpc_why(d->why, d->len, "the previous image is %lld bytes, this one %llu: an incremental "
			"dump needs images of one size", (long long)st.st_size,
			(unsigned long long)d->size);
		return -EINVAL;
	}
	for (uint64_t p = 0; p < npages;) {
		bool is_dirty = page_dirty(dirty, p);
		uint64_t q = p + 1;
		int ret;

		while (q < npages && page_dirty(dirty, q) == is_dirty)
			q++;
		uint64_t off = p * WPC_PAGE;
		uint64_t end = q * WPC_PAGE < d->size ? q * WPC_PAGE : d->size;

		if (is_dirty) {
			d->st->dirty_pages += q - p;
			ret = write_at(d, d->memory + off, end - off, off);
			if (!ret)
				d->st->bytes_written += end - off;
		} else {
			ret = copy_at(d, off, end - off);
		}
		if (ret)
			return ret;
		p = q;
	}
	return 0;
}

static int write_full(struct dump *d)
{
	int ret = write_at(d, d->memory, d->size, 0);

	if (!ret) {
		d->st->bytes_written = d->size;
		d->st->dirty_pages = wpc_align_up(d->size, WPC_PAGE) / WPC_PAGE;
	}
	return ret;
}

/* The image into a temp file next to path, renamed over path once complete. */
static int dump_to(const char *path, const uint8_t *memory, uint64_t size, const uint8_t *dirty,
		   int prev_fd, struct wpc_dump_stats *st, char *why, size_t len)
{
	size_t plen = strlen(path);
	char *tmp = malloc(plen + 16);
	struct dump d = { .fd = -1, .prev_fd = prev_fd, .memory = memory, .size = size, .st = st,
			  .why = why, .len = len };
	int ret;

	if (!tmp) {
		wpc_why(why, len, "out of memory for the name of %s", path);
		return -ENOMEM;
	}
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, ".tmp.XXXXXX", 12);
	d.tmp = tmp;
	d.fd = mkostemp(tmp, O_CLOEXEC);
	if (d.fd < 0) {
		ret = -errno;
		wpc_why(why, len, "cannot create %s: %s", tmp, strerror(errno));
		free(tmp);
		return ret;
	}
	ret = dirty ? write_incremental(&d, dirty) : write_full(&d);
	if (close(d.fd) < 0 && !ret) {
		ret = -errno;
		wpc_why(why, len, "closing %s: %s", tmp, strerror(errno));
	}
	if (!ret && rename(tmp, path) < 0) {
		ret = -errno;
		wpc_why(why, len, "renaming %s to %s: %s", tmp, path, strerror(errno));
	}
	if (ret)
		unlink(tmp);
	free(d.bounce);
	free(tmp);
	return ret;
}

static void stats_reset(struct wpc_dump_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->ns = -1;
	st->dirty_ns = -1;
}

int wpc_dump_image(const void *memory, uint64_t size, const uint8_t *dirty, const char *prev_path,
		   const char *path, struct wpc_dump_stats *out, char *why, size_t len)
{
	int prev_fd = -1, ret;
	uint64_t t0;

	stats_reset(out);
	if (!size) {
		wpc_why(why, len, "an image needs at least one byte");
		return -EINVAL;
	}
	if (dirty) {
		prev_fd = prev_path ? open(prev_path, O_RDONLY | O_CLOEXEC) : -1;
		if (prev_fd < 0) {
			ret = prev_path ? -errno : -EINVAL;
			wpc_why(why, len, "an incremental dump needs the previous image: %s%s%s",
				prev_path ? prev_path : "none given", prev_path ? ": " : "",
				prev_path ? strerror(-ret) : "");
			return ret;
		}
	}
	t0 = wpc_now_ns();
	ret = dump_to(path, memory, size, dirty, prev_fd, out, why, len);
	if (!ret)
		out->ns = (int64_t)(wpc_now_ns() - t0);
	if (prev_fd >= 0)
		close(prev_fd);
	return ret;
}

int wpc_run_checkpoint(struct wpc_run *run, const char *path, int incremental,
		       struct wpc_dump_stats *out)
{
	uint8_t *dirty = NULL;
	uint64_t t0, t1;
	int ret;

	stats_reset(out);
	if (!run->region)
		return wpc_fail(run, EINVAL, "checkpoint before a successful restore");
	if (incremental && !run->strategy->dirty_pages)
		return wpc_fail(run, EOPNOTSUPP, "%s reports no dirty set: only a full dump is possible",
				run->strategy->name);
	if (incremental && !(dirty = calloc((run->npages + 7) / 8, 1)))
		return wpc_fail(run, ENOMEM, "out of memory for the dirty bitmap");

	t0 = wpc_now_ns();
	if (incremental) {
		ret = run->strategy->dirty_pages(run, dirty);
		if (ret)
			goto out;
	}
	t1 = wpc_now_ns();
	ret = dump_to(path, run->region, run->image_size, dirty, run->image_fd, out, run->res->reason,
		      sizeof(run->res->reason));
	if (!ret) {
		out->ns = (int64_t)(wpc_now_ns() - t0);
		out->dirty_ns = incremental ? (int64_t)(t1 - t0) : -1;
	}
out:
	free(dirty);
	return ret;
}
