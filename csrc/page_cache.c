/* SPDX-License-Identifier: MIT */
/*
 * What the page cache holds of the image: every lazy strategy's first
 * access depends on it. A file read back through readahead sits in large
 * folios, and one fault maps a whole folio; a file just written in small
 * writes sits in small folios, and a fault maps only the fault-around
 * window (64 KiB by default). The same mmap pass then costs 8-15x more.
 *
 * Read three ways: mincore (how much is cached), one read pass over a
 * private mapping with no clock inside (its faults and its time, the plain
 * loop every touch figure is checked against), and, where /proc/kpageflags
 * can be read (root), the folio size of every page.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define PAGEMAP_PRESENT (1ULL << 63)
#define PAGEMAP_PFN_MASK ((1ULL << 55) - 1)
#define KPF_COMPOUND_HEAD 15
#define KPF_COMPOUND_TAIL 16
#define KPF_BATCH 512

struct mapped_file {
	int fd;
	size_t len;
	uint64_t pages;
	uint8_t *map;
};

static int map_file(const char *path, struct mapped_file *f)
{
	struct stat st;

	memset(f, 0, sizeof(*f));
	f->fd = open(path, O_RDONLY | O_CLOEXEC);
	if (f->fd < 0)
		return -errno;
	if (fstat(f->fd, &st) < 0 || !st.st_size) {
		int ret = st.st_size ? -errno : 0;

		close(f->fd);
		f->fd = -1;
		return ret;
	}
	f->len = (size_t)st.st_size;
	f->pages = (f->len + WPC_PAGE - 1) / WPC_PAGE;
	f->map = mmap(NULL, f->len, PROT_READ, MAP_PRIVATE, f->fd, 0);
	if (f->map == MAP_FAILED) {
		int ret = -errno;

		close(f->fd);
		f->fd = -1;
		f->map = NULL;
		return ret;
	}
	return 0;
}

static void unmap_file(struct mapped_file *f)
{
	if (f->map)
		munmap(f->map, f->len);
	if (f->fd >= 0)
		close(f->fd);
	f->map = NULL;
	f->fd = -1;
}

static int count_resident(const struct mapped_file *f, uint64_t *resident)
{
	unsigned char *vec = malloc(f->pages);
	int ret = 0;

	*resident = 0;
	if (!vec)
		return -ENOMEM;
	if (mincore(f->map, f->len, vec) < 0)
		ret = -errno;
	for (uint64_t i = 0; !ret && i < f->pages; i++)
		*resident += vec[i] & 1;
	free(vec);
	return ret;
}

int wpc_image_residency(const char *path, uint64_t *resident, uint64_t *total)
{
	struct mapped_file f;
	int ret = map_file(path, &f);

	*resident = *total = 0;
	if (ret || !f.map)
		return ret;
	ret = count_resident(&f, resident);
	if (!ret)
		*total = f.pages;
	unmap_file(&f);
	return ret;
}

static uint64_t thread_faults(void)
{
	struct rusage ru;

	getrusage(RUSAGE_THREAD, &ru);
	return (uint64_t)(ru.ru_minflt + ru.ru_majflt);
}

/* One read of every page in order, as the mmap strategy's touch would: faults and ns. */
static void read_pass(const struct mapped_file *f, struct wpc_cache_state *out)
{
	uint64_t sum = 0, faults = thread_faults();
	uint64_t t0 = wpc_now_ns();

	for (uint64_t i = 0; i < f->pages; i++)
		sum += *(volatile const uint8_t *)(f->map + i * WPC_PAGE);
	out->pass_ns = (int64_t)(wpc_now_ns() - t0);
	out->pass_faults = (int64_t)(thread_faults() - faults);
	__asm__ volatile("" : : "r"(sum));
}

/* Flags of pfn from /proc/kpageflags, read KPF_BATCH at a time. */
struct kpf_reader {
	int fd;
	uint64_t first;		/* pfn of flags[0] */
	size_t have;
	uint64_t flags[KPF_BATCH];
};

static int kpf_flags(struct kpf_reader *r, uint64_t pfn, uint64_t *flags)
{
	if (pfn < r->first || pfn >= r->first + r->have) {
		ssize_t n = pread(r->fd, r->flags, sizeof(r->flags), (off_t)(pfn * 8));

		if (n < 8)
			return n < 0 ? -errno : -ENODATA;
		r->first = pfn;
		r->have = (size_t)n / 8;
	}
	*flags = r->flags[pfn - r->first];
	return 0;
}

static int order_of(uint64_t pages)
{
	int order = 0;

	while ((1ULL << order) < pages && order < WPC_FOLIO_ORDERS - 1)
		order++;
	return order;
}

/*
 * Pages by the order of the folio holding them, from the PFNs the read pass
 * mapped: a compound head and the tails that follow it at consecutive PFNs
 * are one folio; a page with neither flag is a folio of its own.
 */
static int count_folios(const struct mapped_file *f, struct wpc_cache_state *out)
{
	uint64_t *pfns = malloc(f->pages * sizeof(*pfns));
	struct kpf_reader *kpf = calloc(1, sizeof(*kpf));
	int pagemap = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	int ret = 0;

	if (!pfns || !kpf || pagemap < 0) {
		ret = pagemap < 0 ? -errno : -ENOMEM;
		goto out;
	}
	kpf->fd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
	if (kpf->fd < 0) {
		ret = -errno;
		goto out;
	}
	ret = wpc_pread_full(pagemap, pfns, f->pages * sizeof(*pfns),
			     (uint64_t)(uintptr_t)f->map / WPC_PAGE * sizeof(*pfns));
	for (uint64_t i = 0; !ret && i < f->pages;) {
		uint64_t pfn = pfns[i] & PAGEMAP_PFN_MASK, flags, n = 1;

		/* Without CAP_SYS_ADMIN the kernel hides PFNs as 0. */
		if (!(pfns[i] & PAGEMAP_PRESENT) || !pfn) {
			ret = -EPERM;
			break;
		}
		ret = kpf_flags(kpf, pfn, &flags);
		if (!ret && flags >> KPF_COMPOUND_HEAD & 1) {
			for (; i + n < f->pages; n++) {
				uint64_t next = pfns[i + n] & PAGEMAP_PFN_MASK, tail;

				if (next != pfn + n || kpf_flags(kpf, next, &tail) ||
				    !(tail >> KPF_COMPOUND_TAIL & 1))
					break;
			}
		}
		out->folio_pages[order_of(n)] += n;
		i += n;
	}
	if (kpf->fd >= 0)
		close(kpf->fd);
out:
	if (pagemap >= 0)
		close(pagemap);
	free(kpf);
	free(pfns);
	return ret;
}

int wpc_cache_probe(const char *path, struct wpc_cache_state *out, char *why, size_t len)
{
	struct mapped_file f;
	int ret = map_file(path, &f);

	memset(out, 0, sizeof(*out));
	out->pass_faults = -1;
	out->pass_ns = -1;
	if (ret) {
		wpc_why(why, len, "cannot map %s to read its page-cache state: %s", path, strerror(-ret));
		return ret;
	}
	if (!f.map)
		return 0;
	out->pages = f.pages;
	ret = count_resident(&f, &out->resident);
	if (ret) {
		wpc_why(why, len, "mincore on %s: %s", path, strerror(-ret));
		goto out;
	}
	/* A pass over pages not cached would read them in: the state would change under it. */
	if (out->resident == out->pages) {
		read_pass(&f, out);
		out->folios_known = count_folios(&f, out) == 0;
		if (!out->folios_known)
			memset(out->folio_pages, 0, sizeof(out->folio_pages));
	}
out:
	unmap_file(&f);
	return ret;
}
