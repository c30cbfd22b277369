/* SPDX-License-Identifier: MIT */
/*
 * The image copied into a memfd (shmem), for the strategies that restore
 * from one (uffd-wp: synchronous write-protect needs shmem, not a file's
 * mapping; uffd-minor: MINOR faults need page-cache pages in shmem). One way,
 * timed the same way for both, so their restore times compare.
 *
 * sendfile(2): one copy in the kernel from the image's page cache into
 * shmem pages, each allocated by the copy itself. Measured here (512 MiB,
 * page cache hot, median of 21 interleaved runs, load average ~3 from other
 * work): sendfile 258 ms; pread into a 1 MiB buffer and pwrite to the memfd
 * 278 ms; mapping the memfd and pread(2)ing into it (a page fault and a
 * zeroed page per 4 KiB before the copy) 514 ms; copy_file_range refuses
 * (EXDEV). With it uffd-minor's 64 MiB restore went from 59 ms to 30 ms,
 * uffd-wp's (30 ms) as before.
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include "internal.h"

static int fill(struct wpc_run *run, int fd)
{
	off_t off = 0;

	while ((uint64_t)off < run->image_size) {
		ssize_t n = sendfile(fd, run->image_fd, &off, run->image_size - (uint64_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return wpc_fail(run, n ? errno : ENODATA, "copying the image into the memfd at "
					"byte %lld: %s", (long long)off,
					n ? strerror(errno) : "unexpected end of file");
	}
	return 0;
}

int wpc_run_image_memfd(struct wpc_run *run, size_t len, int *out)
{
	uint64_t t0 = wpc_now_ns();
	int fd = memfd_create("wpcompare-image", MFD_CLOEXEC);
	int ret;

	*out = fd;
	if (fd < 0)
		return wpc_fail(run, errno, "memfd_create failed: %s", strerror(errno));
	if (ftruncate(fd, (off_t)len) < 0)
		return wpc_fail(run, errno, "cannot size the memfd to %zu bytes: %s (tmpfs full?)",
				len, strerror(errno));
	ret = fill(run, fd);
	if (ret)
		return ret;
	wpc_counter_set(run, "memfd_fill_ns", wpc_now_ns() - t0);
	ret = wpc_run_add_image_identity(run, fd);
	if (ret)
		return wpc_fail(run, -ret, "cannot record the memfd as the image: %s", strerror(-ret));
	return 0;
}
