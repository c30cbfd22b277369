/* SPDX-License-Identifier: MIT */
/*
 * What the kernel offers: userfaultfd (by each way of opening one), its
 * feature bits by name, the cost of reading the clock, and the hypervisor
 * the machine runs under.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

#include "compat.h"
#include "internal.h"

/*
 * The one table of what the strategies may need from the kernel, with the
 * first release that has it: every reason naming a missing feature, ioctl or
 * interface is worded from here.
 */
enum wpc_feature_kind {
	WPC_FEATURE_UFFD,	/* bit: UFFD_FEATURE_*, granted by UFFDIO_API */
	WPC_FEATURE_UFFD_IOCTL,	/* bit: 1 << _UFFDIO_*, offered by UFFDIO_REGISTER on a range */
	WPC_FEATURE_OTHER,	/* bit: 0 */
};

struct wpc_feature {
	enum wpc_feature_kind kind;
	uint64_t bit;
	const char *name;
	const char *since;	/* first Linux release with it */
};

#define UFFD_FEATURE(f, since) { WPC_FEATURE_UFFD, UFFD_FEATURE_##f, "UFFD_FEATURE_" #f, since }
#define UFFD_IOCTL(op, since) { WPC_FEATURE_UFFD_IOCTL, 1ull << _UFFDIO_##op, "UFFDIO_" #op, since }

static const struct wpc_feature features[] = {	/* userfaultfd features in bit order */
	UFFD_FEATURE(PAGEFAULT_FLAG_WP, "5.7"),
	UFFD_FEATURE(EVENT_FORK, "4.11"),
	UFFD_FEATURE(EVENT_REMAP, "4.11"),
	UFFD_FEATURE(EVENT_REMOVE, "4.11"),
	UFFD_FEATURE(MISSING_HUGETLBFS, "4.11"),
	UFFD_FEATURE(MISSING_SHMEM, "4.11"),
	UFFD_FEATURE(EVENT_UNMAP, "4.11"),
	UFFD_FEATURE(SIGBUS, "4.14"),
	UFFD_FEATURE(THREAD_ID, "4.14"),
	UFFD_FEATURE(MINOR_HUGETLBFS, "5.13"),
	UFFD_FEATURE(MINOR_SHMEM, "5.14"),
	UFFD_FEATURE(EXACT_ADDRESS, "5.18"),
	UFFD_FEATURE(WP_HUGETLBFS_SHMEM, "5.19"),
	UFFD_FEATURE(WP_UNPOPULATED, "6.4"),
	UFFD_FEATURE(POISON, "6.6"),
	UFFD_FEATURE(WP_ASYNC, "6.7"),
	UFFD_FEATURE(MOVE, "6.8"),
	UFFD_IOCTL(WAKE, "4.3"),
	UFFD_IOCTL(COPY, "4.3"),
	UFFD_IOCTL(ZEROPAGE, "4.3"),
	UFFD_IOCTL(WRITEPROTECT, "5.7"),
	UFFD_IOCTL(CONTINUE, "5.13"),
	UFFD_IOCTL(POISON, "6.6"),
	UFFD_IOCTL(MOVE, "6.8"),
	{ WPC_FEATURE_OTHER, 0, "the PAGEMAP_SCAN ioctl on /proc/self/pagemap", "6.7" },
};

static const struct wpc_feature *find_feature(enum wpc_feature_kind kind, uint64_t bit)
{
	for (size_t i = 0; i < WPC_ARRAY_SIZE(features); i++)
		if (features[i].kind == kind && features[i].bit == bit)
			return &features[i];
	return NULL;
}

static const struct wpc_feature *uffd_feature(int bit)
{
	return bit >= 0 && bit < 64 ? find_feature(WPC_FEATURE_UFFD, 1ull << bit) : NULL;
}

const char *wpc_uffd_feature_name(int bit)
{
	const struct wpc_feature *f = uffd_feature(bit);

	return f ? f->name : NULL;
}

static int uffd_syscall(int flags)
{
	int fd = (int)syscall(SYS_userfaultfd, flags);

	return fd < 0 ? -errno : fd;
}

static int uffd_devnode(int flags)
{
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	int fd;

	if (dev < 0)
		return -errno;
	/*
	 * The device hands out descriptors that may handle kernel faults too;
	 * UFFD_USER_MODE_ONLY is passed on, so a caller that asked for it gets it
	 * whichever way the descriptor was opened.
	 */
	fd = ioctl(dev, USERFAULTFD_IOC_NEW, flags);
	fd = fd < 0 ? -errno : fd;
	close(dev);
	return fd;
}

/*
 * After userfaultfd(2) refused (syscall_err: -EPERM not permitted, or
 * blocked by seccomp; -ENOSYS no userfaultfd, or blocked), /dev/userfaultfd.
 * Its own failure decides only when it says something new: a node that is
 * there but not ours (EACCES, EPERM) means "not permitted" (-EPERM, what
 * every caller's fallback to UFFD_USER_MODE_ONLY tests); a missing node
 * (ENOENT, ENODEV, ENXIO) leaves the syscall's answer; anything else
 * (EMFILE, ENOMEM...) is returned as it is.
 */
static int devnode_fallback(int syscall_err, int flags)
{
	int fd = uffd_devnode(flags);

	switch (fd) {
	case -EACCES:
	case -EPERM:
		return -EPERM;
	case -ENOENT:
	case -ENODEV:
	case -ENXIO:
		return syscall_err;
	default:
		return fd;
	}
}

/* UFFDIO_API on a fresh descriptor (or an open error passed on): fd, or -errno with fd closed. */
static int api_handshake(int fd, struct uffdio_api *api)
{
	if (fd < 0)
		return fd;
	if (ioctl(fd, UFFDIO_API, api) < 0) {
		int err = errno;

		close(fd);
		return -err;
	}
	return fd;
}

/*
 * Test-only: WPCOMPARE_UFFD_FEATURE_MASK=0x... names UFFD_FEATURE_* bits to
 * pretend the kernel lacks, so the tests can drive every strategy's skip
 * path on a kernel that has everything. Requesting a masked feature fails
 * as an old kernel would (-EINVAL), and masked bits never appear as
 * available. Unset (the normal case) masks nothing.
 */
static uint64_t masked_features(void)
{
	const char *text = getenv("WPCOMPARE_UFFD_FEATURE_MASK");

	return text && *text ? strtoull(text, NULL, 0) : 0;
}

int wpc_uffd_open(int flags, uint64_t features, uint64_t *available)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };
	uint64_t masked = masked_features();
	int fd;

	if (features & masked)
		return -EINVAL;
	fd = uffd_syscall(flags);
	if (fd == -EACCES)
		fd = -EPERM;	/* a security module's refusal is a refusal too */
	if (fd == -EPERM || fd == -ENOSYS)
		fd = devnode_fallback(fd, flags);
	fd = api_handshake(fd, &api);
	if (fd >= 0 && available)
		*available = api.features & ~masked;
	return fd;
}

/*
 * The reason opening a userfaultfd (flags as tried) failed with err, written to
 * why; returns -EPERM (not permitted), -EOPNOTSUPP (no userfaultfd here) or err.
 * A refusal of kernel-mode faults alone is kernel_mode_refused()'s to word.
 */
static int open_why(int err, int flags, char *why, size_t len)
{
	if (err == -EPERM && (flags & UFFD_USER_MODE_ONLY)) {
		wpc_why(why, len, "userfaultfd(2) is refused even with UFFD_USER_MODE_ONLY (a seccomp "
			"filter or a security module) and /dev/userfaultfd is absent or not accessible: "
			"lift the filter, or grant access to /dev/userfaultfd");
		return -EPERM;
	}
	if (err == -ENOSYS) {
		wpc_why(why, len, "userfaultfd(2) fails with ENOSYS and /dev/userfaultfd is absent: "
			"kernel built without CONFIG_USERFAULTFD, or the system call blocked by a "
			"seccomp filter");
		return -EOPNOTSUPP;
	}
	wpc_why(why, len, "cannot open a userfaultfd: %s", strerror(-err));
	return err;
}

/* ---- what a strategy needs, checked in one place ---- */

static const char *mask_note(void)
{
	const char *mask = getenv("WPCOMPARE_UFFD_FEATURE_MASK");

	return mask && *mask ? " [masked: WPCOMPARE_UFFD_FEATURE_MASK is set]" : "";
}

static int lacks(const struct wpc_feature *f, char *why, size_t len)
{
	wpc_why(why, len, "kernel lacks %s (needs Linux %s)%s", f->name, f->since,
		f->kind == WPC_FEATURE_UFFD ? mask_note() : "");
	return -EOPNOTSUPP;
}

/* The first feature of `need` that `available` lacks, as the table words it; 0 if none. */
static int missing_feature(uint64_t need, uint64_t available, char *why, size_t len)
{
	uint64_t missing = need & ~available;

	if (!missing)
		return 0;
	for (size_t i = 0; i < WPC_ARRAY_SIZE(features); i++)
		if (features[i].kind == WPC_FEATURE_UFFD && (missing & features[i].bit))
			return lacks(&features[i], why, len);
	wpc_why(why, len, "kernel lacks userfaultfd features %#llx%s", (unsigned long long)missing,
		mask_note());
	return -EOPNOTSUPP;
}

int wpc_uffd_register_for(const struct wpc_needs *needs, int uffd, void *addr, size_t bytes,
			  uint64_t mode, char *why, size_t len)
{
	struct uffdio_register reg = {
		.range = { .start = (uintptr_t)addr, .len = bytes },
		.mode = mode,
	};
	uint64_t missing;

	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
		int err = errno;

		wpc_why(why, len, "UFFDIO_REGISTER (%s) of %zu bytes failed: %s",
			mode == UFFDIO_REGISTER_MODE_WP ? "write-protect" :
			mode == UFFDIO_REGISTER_MODE_MINOR ? "minor" : "missing", bytes, strerror(err));
		return -err;
	}
	missing = needs->uffd_ioctls & ~reg.ioctls;
	for (size_t i = 0; missing && i < WPC_ARRAY_SIZE(features); i++) {
		const struct wpc_feature *f = &features[i];

		/* Not always the kernel's age: an ioctl is offered per kind of memory. */
		if (f->kind == WPC_FEATURE_UFFD_IOCTL && (missing & f->bit)) {
			wpc_why(why, len, "the registered range does not offer %s (Linux %s and later "
				"offer it, on the kinds of memory it serves)", f->name, f->since);
			return -EOPNOTSUPP;
		}
	}
	return 0;
}

/* Why kernel-mode faults were refused, and what works without the privilege they need. */
static int kernel_mode_refused(const struct wpc_needs *needs, char *why, size_t len)
{
	wpc_why(why, len, "a userfaultfd handling kernel-mode faults needs CAP_SYS_PTRACE, "
		"`sysctl vm.unprivileged_userfaultfd=1` or access to /dev/userfaultfd%s%s",
		needs->without_privilege ? "; " : "",
		needs->without_privilege ? needs->without_privilege : "");
	return -EPERM;
}

/* Open as needs->uffd says, asking for `features`; *flags_out: the flags that were tried last. */
static int open_by_access(const struct wpc_needs *needs, int flags, uint64_t features,
			  uint64_t *available, int *flags_out)
{
	int fd;

	flags |= O_CLOEXEC;
	if (needs->uffd == WPC_UFFD_USER_MODE)
		flags |= UFFD_USER_MODE_ONLY;
	fd = wpc_uffd_open(flags, features, available);
	/* auto: kernel-mode faults where permitted, else what needs no privilege. */
	if (fd == -EPERM && needs->uffd == WPC_UFFD_AUTO) {
		flags |= UFFD_USER_MODE_ONLY;
		fd = wpc_uffd_open(flags, features, available);
	}
	*flags_out = flags;
	return fd;
}

int wpc_uffd_open_for(const struct wpc_needs *needs, int flags, bool *user_mode_only, char *why,
		      size_t len)
{
	uint64_t available = 0;
	int tried, fd = open_by_access(needs, flags, needs->uffd_features, &available, &tried);

	if (fd >= 0) {
		if (user_mode_only)
			*user_mode_only = tried & UFFD_USER_MODE_ONLY;
		return fd;
	}
	if (fd == -EPERM && !(tried & UFFD_USER_MODE_ONLY))
		return kernel_mode_refused(needs, why, len);
	if (fd != -EINVAL || !needs->uffd_features)
		return open_why(fd, tried, why, len);
	/* UFFDIO_API refused the features: ask for none, to name the one missing. */
	fd = open_by_access(needs, flags, 0, &available, &tried);
	if (fd >= 0) {
		close(fd);
		if (missing_feature(needs->uffd_features, available, why, len))
			return -EOPNOTSUPP;
	}
	wpc_why(why, len, "UFFDIO_API refused features %#llx: %s%s",
		(unsigned long long)needs->uffd_features, strerror(EINVAL), mask_note());
	return -EOPNOTSUPP;
}

/* The userfaultfd a strategy needs can be opened, with its features. */
static int check_uffd(const struct wpc_needs *needs, char *why, size_t len)
{
	uint64_t available = 0;
	int tried, fd = open_by_access(needs, 0, 0, &available, &tried);
	int ret;

	if (fd == -EPERM && !(tried & UFFD_USER_MODE_ONLY))
		return kernel_mode_refused(needs, why, len);
	if (fd < 0)
		return open_why(fd, tried, why, len);
	close(fd);
	ret = missing_feature(needs->uffd_features, available, why, len);
	if (ret || !needs->uffd_features)
		return ret;
	/* Each feature reported is not all of them granted together: ask, as the run will. */
	fd = wpc_uffd_open_for(needs, 0, NULL, why, len);
	if (fd < 0)
		return fd;
	close(fd);
	return 0;
}

static long huge_count(const char *name)
{
	char path[96];
	FILE *f;
	long n = -1;

	snprintf(path, sizeof(path), "/sys/kernel/mm/hugepages/hugepages-2048kB/%s", name);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	if (fscanf(f, "%ld", &n) != 1)
		n = -EIO;
	fclose(f);
	return n;
}

/*
 * Free pages include those another process has reserved (a MAP_PRIVATE or
 * shared hugetlb mapping reserves its pages when made, and takes them off
 * free only when it faults them in): available = free - reserved.
 */
int wpc_huge_pool(struct wpc_huge_pool *pool)
{
	pool->total = huge_count("nr_hugepages");
	pool->free = huge_count("free_hugepages");
	pool->reserved = huge_count("resv_hugepages");
	if (pool->total < 0 || pool->free < 0 || pool->reserved < 0)
		return (int)(pool->total < 0 ? pool->total : pool->free < 0 ? pool->free : pool->reserved);
	pool->available = pool->free > pool->reserved ? pool->free - pool->reserved : 0;
	return 0;
}

/*
 * What is missing and the setting that adds it without taking any page from
 * whoever holds the others: nr_hugepages = current total + missing.
 */
int wpc_huge_pool_shortfall(const struct wpc_huge_pool *pool, long need, char *why, size_t len)
{
	long missing = need > pool->available ? need - pool->available : 1;	/* 1: the pool moved */

	wpc_why(why, len, "not enough free 2 MiB huge pages: %ld needed, %ld available (%ld total, "
		"%ld free, %ld of them reserved by other mappings): run `sysctl vm.nr_hugepages=%ld`",
		need, pool->available, pool->total, pool->free, pool->reserved, pool->total + missing);
	return -ENOMEM;
}

/* Enough free 2 MiB pages for image_bytes (0: at least one)? */
static int check_hugetlb_2m(uint64_t image_bytes, char *why, size_t len)
{
	struct wpc_huge_pool pool;
	long need = (long)((image_bytes + WPC_HUGE_PAGE - 1) / WPC_HUGE_PAGE);
	int ret = wpc_huge_pool(&pool);

	if (ret == -ENOENT) {
		wpc_why(why, len, "kernel offers no 2 MiB hugetlb pages "
			"(/sys/kernel/mm/hugepages/hugepages-2048kB missing)");
		return -EOPNOTSUPP;
	}
	if (ret) {
		wpc_why(why, len, "cannot read the 2 MiB huge-page pool: %s", strerror(-ret));
		return ret;
	}
	if (image_bytes == 0 && pool.available == 0) {
		/* No image size (wpcompare info): the rule, not a number. */
		wpc_why(why, len, "no free 2 MiB huge pages available (%ld total, %ld free, %ld of them "
			"reserved by other mappings): run `sysctl vm.nr_hugepages=N` (N = %ld + image size "
			"/ 2 MiB)", pool.total, pool.free, pool.reserved, pool.total);
		return -ENOMEM;
	}
	if (pool.available < need)
		return wpc_huge_pool_shortfall(&pool, need, why, len);
	return 0;
}

#define THP_ENABLED "/sys/kernel/mm/transparent_hugepage/enabled"

/*
 * Transparent huge pages may be had (MADV_HUGEPAGE): the setting is not "never".
 * Test-only: WPCOMPARE_HIDE_THP=1 makes it answer as a kernel set to "never"
 * would, to exercise the skip path where the setting cannot be changed.
 */
static int check_thp(char *why, size_t len)
{
	char text[128], *open_bracket, *close_bracket;
	const char *hide = getenv("WPCOMPARE_HIDE_THP");
	bool hidden = hide && *hide && strcmp(hide, "0");
	FILE *f = hidden ? NULL : fopen(THP_ENABLED, "re");
	bool read_ok = f && fgets(text, sizeof(text), f);

	if (hidden) {
		snprintf(text, sizeof(text), "always madvise [never]");
		read_ok = true;
	}

	if (f)
		fclose(f);
	/* The setting is the bracketed word: "always [madvise] never". */
	open_bracket = read_ok ? strchr(text, '[') : NULL;
	close_bracket = open_bracket ? strchr(open_bracket, ']') : NULL;
	if (!close_bracket) {
		wpc_why(why, len, "kernel offers no transparent huge pages (%s missing)", THP_ENABLED);
		return -EOPNOTSUPP;
	}
	if (!strncmp(open_bracket + 1, "never]", 6)) {
		wpc_why(why, len, "transparent huge pages are off: as root, `echo madvise > %s`%s",
			THP_ENABLED, hidden ? " [hidden: WPCOMPARE_HIDE_THP is set]" : "");
		return -EOPNOTSUPP;
	}
	return 0;
}

/*
 * Test-only: WPCOMPARE_HIDE_PAGEMAP_SCAN=1 makes the probe answer as a
 * kernel older than 6.7 would, to exercise the skip path.
 */
int wpc_pagemap_scan_probe(char *why, size_t len)
{
	const struct wpc_feature *pagemap_scan = find_feature(WPC_FEATURE_OTHER, 0);
	const char *hide = getenv("WPCOMPARE_HIDE_PAGEMAP_SCAN");
	uint64_t word = 0;
	struct page_region region;
	uint64_t page = (uintptr_t)&word & ~(uint64_t)(WPC_PAGE - 1);
	struct pm_scan_arg arg = {
		.size = sizeof(arg),
		.start = page,
		.end = page + WPC_PAGE,
		.vec = (uintptr_t)&region,
		.vec_len = 1,
		.category_anyof_mask = PAGE_IS_PRESENT,
		.return_mask = PAGE_IS_PRESENT,
	};
	int fd, ret = 0;

	if (hide && *hide && strcmp(hide, "0")) {
		wpc_why(why, len, "kernel lacks %s (needs Linux %s) [hidden: WPCOMPARE_HIDE_PAGEMAP_SCAN "
			"is set]", pagemap_scan->name, pagemap_scan->since);
		return -EOPNOTSUPP;
	}
	fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		wpc_why(why, len, "cannot open /proc/self/pagemap: %s", strerror(errno));
		return -EOPNOTSUPP;
	}
	if (ioctl(fd, PAGEMAP_SCAN, &arg) < 0) {
		if (errno == ENOTTY || errno == EINVAL)
			lacks(pagemap_scan, why, len);
		else
			wpc_why(why, len, "PAGEMAP_SCAN on /proc/self/pagemap failed: %s", strerror(errno));
		ret = -EOPNOTSUPP;
	}
	close(fd);
	return ret;
}

void wpc_strategy_needs(const struct wpc_strategy *s, const void *params, struct wpc_needs *out)
{
	*out = s->needs;
	if (s->needs_for)
		s->needs_for(params, out);
}

/* A fault handler on another CPU than workload thread 0's: the same rule as the run's. */
static int check_other_cpu(char *why, size_t len)
{
	int cpus[2], cpu;

	return wpc_handler_cpu_for(cpus, wpc_allowed_cpus(cpus, 2), WPC_HANDLER_OTHER, &cpu, why, len);
}

int wpc_needs_check(const struct wpc_needs *needs, uint64_t image_bytes, char *why, size_t len)
{
	int ret = 0;

	if (needs->uffd != WPC_UFFD_NONE)
		ret = check_uffd(needs, why, len);
	if (!ret && needs->pagemap_scan)
		ret = wpc_pagemap_scan_probe(why, len);
	if (!ret && needs->hugetlb_2m)
		ret = check_hugetlb_2m(image_bytes, why, len);
	if (!ret && needs->thp)
		ret = check_thp(why, len);
	if (!ret && needs->other_cpu)
		ret = check_other_cpu(why, len);
	return ret;
}

int wpc_uffd_probe(struct wpc_uffd_probe *out)
{
	int fd;

	memset(out, 0, sizeof(*out));
	fd = uffd_syscall(O_CLOEXEC);
	out->syscall_errno = fd < 0 ? -fd : 0;
	if (fd >= 0)
		close(fd);
	fd = uffd_syscall(O_CLOEXEC | UFFD_USER_MODE_ONLY);
	out->user_mode_errno = fd < 0 ? -fd : 0;
	if (fd >= 0)
		close(fd);
	fd = uffd_devnode(O_CLOEXEC);
	out->devnode_errno = fd < 0 ? -fd : 0;
	if (fd >= 0)
		close(fd);

	out->available = !out->syscall_errno || !out->user_mode_errno || !out->devnode_errno;
	if (!out->available)
		return 0;

	/* Asking for no feature makes UFFDIO_API report every feature it has. */
	int flags = O_CLOEXEC | (out->syscall_errno && !out->user_mode_errno ? UFFD_USER_MODE_ONLY : 0);
	struct uffdio_api api = { .api = UFFD_API, .features = 0 };

	fd = out->syscall_errno && out->user_mode_errno ? uffd_devnode(O_CLOEXEC) : uffd_syscall(flags);
	fd = api_handshake(fd, &api);
	if (fd < 0)
		return fd;
	out->api = api.api;
	out->features = api.features & ~masked_features();
	out->ioctls = api.ioctls;
	close(fd);
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int64_t wpc_timer_overhead_ns(void)
{
	enum { SAMPLES = 2001 };
	uint64_t *d = malloc(SAMPLES * sizeof(*d));

	if (!d)
		return -ENOMEM;
	for (int i = 0; i < SAMPLES; i++) {
		uint64_t t0 = wpc_now_ns();
		uint64_t t1 = wpc_now_ns();
		d[i] = t1 - t0;
	}
	qsort(d, SAMPLES, sizeof(*d), cmp_u64);
	int64_t median = (int64_t)d[SAMPLES / 2];
	free(d);
	return median;
}

/*
 * A hypervisor announces itself in CPUID leaf 0x40000000 (ebx, ecx, edx:
 * "KVMKVMKVM", "Microsoft Hv", "VMwareVMware"...) once CPUID.1:ECX bit 31
 * says one is present. It names the hypervisor even where DMI tables and
 * /sys/hypervisor are absent, as in minimal cloud guests.
 */
int wpc_hypervisor_vendor(char *out, size_t len)
{
#if defined(__x86_64__) || defined(__i386__)
	unsigned int eax, ebx, ecx, edx;
	char vendor[13];

	if (len == 0)
		return -EINVAL;
	out[0] = '\0';
	__cpuid(1, eax, ebx, ecx, edx);
	if (!(ecx & (1u << 31)))
		return -ENOENT;
	__cpuid(0x40000000, eax, ebx, ecx, edx);
	memcpy(vendor, &ebx, 4);
	memcpy(vendor + 4, &ecx, 4);
	memcpy(vendor + 8, &edx, 4);
	vendor[12] = '\0';
	snprintf(out, len, "%s", vendor);
	return 0;
#else
	if (len)
		out[0] = '\0';
	return -EOPNOTSUPP;
#endif
}
