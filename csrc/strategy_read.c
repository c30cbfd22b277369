/* SPDX-License-Identifier: MIT */
/*
 * `read`: anonymous memory filled eagerly with pread(). Detached from the
 * moment restore returns, at the price of loading every page up front.
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

#define READ_CALL_BYTES (8u << 20)

static int read_restore(struct wpc_run *run)
{
	void *p = mmap(NULL, run->region_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);

	if (p == MAP_FAILED)
		return wpc_fail(run, errno, "mmap of %zu anonymous bytes failed: %s", run->region_len,
				strerror(errno));
	run->region = p;

	for (uint64_t done = 0; done < run->image_size;) {
		uint64_t want = run->image_size - done;
		ssize_t got = pread(run->image_fd, run->region + done,
				    want < READ_CALL_BYTES ? want : READ_CALL_BYTES, (off_t)done);

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			return wpc_fail(run, got ? errno : ENODATA, "reading the image at byte %llu: %s",
					(unsigned long long)done,
					got ? strerror(errno) : "unexpected end of file");
		done += (uint64_t)got;
	}
	wpc_run_mark_detached(run);
	return 0;
}

static void read_teardown(struct wpc_run *run)
{
	if (run->region)
		munmap(run->region, run->region_len);
	run->region = NULL;
}

const struct wpc_strategy wpc_strategy_read = {
	.name = "read",
	.family = "baseline",
	.description = "anonymous memory filled eagerly with pread(); detached from the start",
	.restore = read_restore,
	.teardown = read_teardown,
};
