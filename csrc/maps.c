/* SPDX-License-Identifier: MIT */
/*
 * /proc/self/maps inspection: how many VMAs make up the region, whether
 * any of them is not plain anonymous memory, and whether the image (or a
 * copy a strategy registered as the image) is still mapped anywhere.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "internal.h"

static bool is_image(const struct wpc_run *run, unsigned int major_, unsigned int minor_,
		     uint64_t inode)
{
	if (!inode)
		return false;
	if (major(run->image_dev) == major_ && minor(run->image_dev) == minor_ &&
	    run->image_ino == inode)
		return true;
	for (int i = 0; i < run->nextra_images; i++)
		if (major(run->extra_images[i].dev) == major_ &&
		    minor(run->extra_images[i].dev) == minor_ && run->extra_images[i].ino == inode)
			return true;
	return false;
}

/* MAP_ANONYMOUS|MAP_HUGETLB shows an inode on the internal hugetlbfs mount. */
static bool is_anonymous(uint64_t inode, const char *path)
{
	return inode == 0 || !strncmp(path, "/anon_hugepage", 14);
}

static long max_map_count(void)
{
	FILE *f = fopen("/proc/sys/vm/max_map_count", "re");
	long v = -1;

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static long process_vmas(void)
{
	FILE *f = fopen("/proc/self/maps", "re");
	long n = 0;
	int ch;

	if (!f)
		return -1;
	while ((ch = getc(f)) != EOF)
		n += ch == '\n';
	fclose(f);
	return n;
}

/* The process's virtual size in bytes (VmSize), or 0 where /proc/self/statm cannot be read. */
static uint64_t address_space_used(void)
{
	FILE *f = fopen("/proc/self/statm", "re");
	unsigned long long pages = 0;

	if (f) {
		if (fscanf(f, "%llu", &pages) != 1)
			pages = 0;
		fclose(f);
	}
	return (uint64_t)pages * (uint64_t)sysconf(_SC_PAGESIZE);
}

void wpc_enomem_why(size_t want, const char *vma_hint, char *why, size_t len)
{
	long limit = max_map_count(), vmas = process_vmas();
	struct rlimit as;

	if (!getrlimit(RLIMIT_AS, &as) && as.rlim_cur != RLIM_INFINITY) {
		uint64_t used = address_space_used();

		if (!used || used + want + (64u << 20) >= (uint64_t)as.rlim_cur) {
			wpc_why(why, len, "the address-space limit is reached (RLIMIT_AS, `ulimit -v`: %llu "
				"MiB, %llu MiB in use, %zu more bytes asked): raise `ulimit -v`",
				(unsigned long long)(as.rlim_cur >> 20), (unsigned long long)(used >> 20), want);
			return;
		}
	}
	if (limit > 0 && vmas >= 0 && vmas + 16 >= limit) {
		wpc_why(why, len, "the process has %ld VMAs, at vm.max_map_count=%ld: raise it (sysctl "
			"vm.max_map_count=262144) %s", vmas, limit, vma_hint);
		return;
	}
	wpc_why(why, len, "out of memory (%ld VMAs, below vm.max_map_count=%ld; no address-space "
		"limit reached)", vmas, limit);
}

int wpc_maps_fail(struct wpc_run *run, int err)
{
	return wpc_fail(run, -err, "cannot check whether the region is detached: reading "
			"/proc/self/maps failed: %s (%s)", strerror(-err),
			err == -EMFILE || err == -ENFILE ? "out of file descriptors: raise `ulimit -n`"
			: "is /proc mounted?");
}

int wpc_maps_inspect(const struct wpc_run *run, struct wpc_maps_report *out)
{
	FILE *f = fopen("/proc/self/maps", "re");
	uintptr_t rstart = (uintptr_t)run->region, rend = rstart + run->region_len;
	char *line = NULL;
	size_t cap = 0;

	memset(out, 0, sizeof(*out));
	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		uintptr_t start, end;
		unsigned int maj, min;
		uint64_t inode;
		int path_at = 0;

		if (sscanf(line, "%" SCNxPTR "-%" SCNxPTR " %*s %*x %x:%x %" SCNu64 " %n", &start,
			   &end, &maj, &min, &inode, &path_at) < 5)
			continue;
		const char *path = path_at ? line + path_at : "";

		if (is_image(run, maj, min, inode))
			out->image_mapped = true;
		if (run->region && start < rend && end > rstart) {
			out->region_vmas++;
			if (!is_anonymous(inode, path))
				out->foreign_vmas++;
		}
	}
	free(line);
	fclose(f);
	return 0;
}
