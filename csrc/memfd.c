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
 * uffd-wp's (30 ms) as before. That is the default; fill= and threads= of
 * the two strategies choose otherwise (fill.c: sendfile per share through
 * open file descriptions of their own, or UFFDIO_COPY into a shared
 * mapping of the memfd registered MISSING).
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

int wpc_run_image_memfd(struct wpc_run *run, size_t len, const struct wpc_fill_params *p,
			int *out)
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
	ret = wpc_fill_memfd_from_image(run, p, fd, len);
	if (ret)
		return ret;
	wpc_counter_set(run, "memfd_fill_ns", wpc_now_ns() - t0);
	ret = wpc_run_add_image_identity(run, fd);
	if (ret)
		return wpc_fail(run, -ret, "cannot record the memfd as the image: %s", strerror(-ret));
	return 0;
}
