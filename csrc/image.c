/* SPDX-License-Identifier: MIT */
/*
 * Deterministic memory images. A page's bytes are a pure function of
 * (seed, kind, page index), so the verifier can regenerate what any page
 * should hold without the file, even after the file is unlinked or truncated.
 * The file is written unnamed (O_TMPFILE) and linked once complete, so no
 * half-written image or temporary file is left behind even by a SIGKILL;
 * where the filesystem lacks O_TMPFILE, a named temporary is removed on
 * failure (but survives a SIGKILL).
 *
 * A "mixed" image imitates a heap: half random pages, a quarter zero pages,
 * a quarter copies of one of 16 template pages (what KSM or a deduplicating
 * checkpointer would see). A "random" image is the published experiment's.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define TEMPLATE_PAGES 16
#define TEMPLATE_SALT 0x7e3a11c0ffee5eedull
#define WRITE_BLOCK (1u << 20)
#define ZERO_SCAN_PAGES 256

static void fill_random(uint64_t stream, uint8_t *buf)
{
	uint64_t *w = (uint64_t *)buf;

	for (size_t i = 0; i < WPC_WORDS_PER_PAGE; i++)
		w[i] = wpc_mix64(stream + i * 0x9e3779b97f4a7c15ull);
}

void wpc_image_fill_page(uint64_t seed, int kind, uint64_t page, uint8_t *buf)
{
	uint64_t h = wpc_mix64(seed ^ wpc_mix64(page));

	if (kind == WPC_IMAGE_RANDOM) {
		fill_random(h, buf);
		return;
	}
	switch (h % 16) {
	case 8 ... 11:
		memset(buf, 0, WPC_PAGE);
		break;
	case 12 ... 15:
		fill_random(wpc_mix64(seed ^ TEMPLATE_SALT ^ ((h >> 8) % TEMPLATE_PAGES)), buf);
		break;
	default:
		fill_random(h, buf);
		break;
	}
}

/*
 * An unnamed file in the directory of path (O_TMPFILE), or -errno where the
 * filesystem has none. Until it is linked it has no name, so a generator
 * killed half-way (SIGKILL, power loss) leaves nothing behind.
 */
static int open_unnamed(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
	int fd;

	if (!dir)
		return -ENOMEM;
	fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
	fd = fd < 0 ? -errno : fd;
	free(dir);
	return fd;
}

/*
 * Give the unnamed file fd the name path. A new name appears complete in
 * one step; an existing file is replaced by rename() from tmp, a name that
 * exists only for the moment between the two calls.
 */
/*
 * linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH but no /proc (it may be
 * unmounted); without the capability it fails with ENOENT and the
 * /proc/self/fd path does the same.
 */
static int link_fd(int fd, const char *proc, const char *name)
{
	if (!linkat(fd, "", AT_FDCWD, name, AT_EMPTY_PATH))
		return 0;
	if (errno != ENOENT)
		return -1;
	return linkat(AT_FDCWD, proc, AT_FDCWD, name, AT_SYMLINK_FOLLOW);
}

static int link_unnamed(int fd, const char *path, char *tmp)
{
	char proc[64];

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if (!link_fd(fd, proc, path))
		return 0;
	if (errno != EEXIST)
		return -errno;
	for (int attempt = 0; attempt < 100; attempt++) {
		size_t plen = strlen(path);
		snprintf(tmp + plen, 16, ".tmp.%06x", (unsigned)(wpc_mix64(wpc_now_ns() + (uint64_t)attempt) & 0xffffff));
		if (!link_fd(fd, proc, tmp)) {
			if (rename(tmp, path) < 0) {
				int err = errno;
				unlink(tmp);
				return -err;
			}
			return 0;
		}
		if (errno != EEXIST)
			return -errno;
	}
	return -EEXIST;
}

int wpc_image_generate(const char *path, uint64_t size, uint64_t seed, int kind, char *why,
		       size_t len)
{
	if (kind != WPC_IMAGE_MIXED && kind != WPC_IMAGE_RANDOM) {
		wpc_why(why, len, "unknown image kind %d", kind);
		return -EINVAL;
	}
	if (size == 0) {
		wpc_why(why, len, "image size is 0: give a size of at least one page (4K)");
		return -EINVAL;
	}

	size_t plen = strlen(path);
	char *tmp = malloc(plen + 16);
	uint8_t *block = malloc(WRITE_BLOCK);
	int fd = -1, ret = 0;
	bool named = false;	/* fd has the name tmp (no O_TMPFILE here): unlink it on failure */

	if (!tmp || !block) {
		ret = -ENOMEM;
		wpc_why(why, len, "out of memory preparing the image writer");
		goto out;
	}
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, ".tmp.XXXXXX", 12);
	fd = open_unnamed(path);
	if (fd == -EOPNOTSUPP || fd == -EISDIR || fd == -EINVAL) {
		fd = mkstemp(tmp);
		named = fd >= 0;
		fd = fd < 0 ? -errno : fd;
	}
	if (fd < 0) {
		ret = fd;
		wpc_why(why, len, "cannot create image %s: %s", path, strerror(-fd));
		goto out;
	}

	uint64_t page = 0, written = 0;
	while (written < size) {
		size_t fill = 0;
		while (fill < WRITE_BLOCK && written + fill < size) {
			wpc_image_fill_page(seed, kind, page++, block + fill);
			fill += WPC_PAGE;
		}
		if (written + fill > size)
			fill = (size_t)(size - written);
		for (size_t off = 0; off < fill;) {
			ssize_t n = write(fd, block + off, fill - off);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				ret = -errno;
				wpc_why(why, len, "writing image %s: %s", path, strerror(errno));
				goto out;
			}
			off += (size_t)n;
		}
		written += fill;
	}
	if (named) {
		if (close(fd) < 0) {
			fd = -1;
			ret = -errno;
			wpc_why(why, len, "closing image %s: %s", tmp, strerror(errno));
			goto out;
		}
		fd = -1;
		if (rename(tmp, path) < 0) {
			ret = -errno;
			wpc_why(why, len, "renaming %s to %s: %s", tmp, path, strerror(errno));
			goto out;
		}
		named = false;
	} else {
		ret = link_unnamed(fd, path, tmp);
		if (ret)
			wpc_why(why, len, "naming image %s: %s", path, strerror(-ret));
	}
out:
	if (fd >= 0)
		close(fd);
	if (named)
		unlink(tmp);
	free(tmp);
	free(block);
	return ret;
}

int wpc_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	for (size_t done = 0; done < len;) {
		ssize_t got = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));

		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			return -errno;
		if (got == 0)
			return -ENODATA;
		done += (size_t)got;
	}
	return 0;
}

/* ---- zero pages ---- */

static bool page_is_zero(const uint8_t *page)
{
	const uint64_t *w = (const uint64_t *)page;

	for (size_t i = 0; i < WPC_WORDS_PER_PAGE; i++)
		if (w[i])
			return false;
	return true;
}

/*
 * The data extents of fd from off (SEEK_DATA/SEEK_HOLE), page aligned
 * outward: [*data, *hole). 0, or -ENXIO when only a hole is left. A
 * filesystem without the seeks (EINVAL) is all data.
 */
static int next_data(int fd, uint64_t off, uint64_t size, uint64_t *data, uint64_t *hole)
{
	off_t d = lseek(fd, (off_t)off, SEEK_DATA);
	off_t h;

	if (d < 0 && errno == ENXIO)
		return -ENXIO;
	if (d < 0 && errno != EINVAL)
		return -errno;
	if (d < 0) {
		*data = off;
		*hole = wpc_align_up(size, WPC_PAGE);
		return 0;
	}
	h = lseek(fd, d, SEEK_HOLE);
	if (h < 0)
		return -errno;
	*data = (uint64_t)d / WPC_PAGE * WPC_PAGE;
	*hole = wpc_align_up((uint64_t)h, WPC_PAGE);
	return 0;
}

/* Read pages [first, first + n) of the image, checking each; zeros past its end. */
static int scan_pages(int fd, uint64_t size, uint64_t first, uint64_t n, uint8_t *block,
		      uint8_t *map, struct wpc_zero_stats *st)
{
	while (n) {
		uint64_t count = n < ZERO_SCAN_PAGES ? n : ZERO_SCAN_PAGES;
		uint64_t off = first * WPC_PAGE;
		uint64_t have = size - off < count * WPC_PAGE ? size - off : count * WPC_PAGE;
		int ret = wpc_pread_full(fd, block, have, off);

		if (ret)
			return ret;
		memset(block + have, 0, count * WPC_PAGE - have);
		for (uint64_t p = 0; p < count; p++) {
			map[first + p] = page_is_zero(block + p * WPC_PAGE);
			st->zero_pages += map[first + p];
		}
		st->scanned_pages += count;
		first += count;
		n -= count;
	}
	return 0;
}

int wpc_image_zero_map(int fd, uint64_t size, uint8_t *map, struct wpc_zero_stats *st)
{
	uint64_t npages = wpc_align_up(size, WPC_PAGE) / WPC_PAGE;
	uint8_t *block = malloc(ZERO_SCAN_PAGES * WPC_PAGE);
	uint64_t page = 0;
	int ret = 0;

	memset(st, 0, sizeof(*st));
	if (!block)
		return -ENOMEM;
	while (page < npages) {
		uint64_t data = 0, hole = 0;

		ret = next_data(fd, page * WPC_PAGE, size, &data, &hole);
		if (ret == -ENXIO) {
			data = hole = npages * WPC_PAGE;
			ret = 0;
		}
		if (ret)
			break;
		/* Pages wholly inside a hole read as zeros: no need to read them. */
		for (; page < data / WPC_PAGE && page < npages; page++)
			map[page] = 1;
		if (hole > npages * WPC_PAGE)
			hole = npages * WPC_PAGE;
		if (page < hole / WPC_PAGE) {
			ret = scan_pages(fd, size, page, hole / WPC_PAGE - page, block, map, st);
			if (ret)
				break;
			page = hole / WPC_PAGE;
		}
	}
	st->hole_pages = npages - st->scanned_pages;
	st->zero_pages += st->hole_pages;
	free(block);
	return ret;
}

int wpc_image_punch_zeros(const char *path, uint64_t *punched, uint64_t *pages, char *why,
			  size_t len)
{
	int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	uint8_t *map = NULL;
	struct wpc_zero_stats st;
	struct stat sb;
	int ret = 0;

	*punched = *pages = 0;
	if (fd < 0) {
		ret = -errno;
		wpc_why(why, len, "cannot open %s for writing: %s", path, strerror(errno));
		return ret;
	}
	if (fstat(fd, &sb) < 0) {
		ret = -errno;
		wpc_why(why, len, "cannot stat %s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		ret = -EINVAL;
		wpc_why(why, len, "%s is not a regular file: give an image file", path);
		goto out;
	}
	*pages = wpc_align_up((uint64_t)sb.st_size, WPC_PAGE) / WPC_PAGE;
	map = malloc(*pages ? *pages : 1);
	if (!map) {
		ret = -ENOMEM;
		wpc_why(why, len, "out of memory for the zero map of %s", path);
		goto out;
	}
	ret = wpc_image_zero_map(fd, (uint64_t)sb.st_size, map, &st);
	if (ret) {
		wpc_why(why, len, "reading %s: %s", path, strerror(-ret));
		goto out;
	}
	/* Whole pages only, so the file keeps its size and every byte its value. */
	for (uint64_t p = 0; p < *pages;) {
		uint64_t end = p;

		while (end < *pages && map[end] && (end + 1) * WPC_PAGE <= (uint64_t)sb.st_size)
			end++;
		if (end > p) {
			if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				      (off_t)(p * WPC_PAGE), (off_t)((end - p) * WPC_PAGE)) < 0) {
				ret = -errno;
				wpc_why(why, len, "punching holes into %s: %s (the filesystem may not "
					"support holes: copy the image to ext4, xfs or tmpfs)", path,
					strerror(errno));
				goto out;
			}
			*punched += end - p;
			p = end;
		} else {
			p++;
		}
	}
out:
	free(map);
	close(fd);
	return ret;
}
