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

static const char *const feature_names[] = {
	[0] = "UFFD_FEATURE_PAGEFAULT_FLAG_WP",
	[1] = "UFFD_FEATURE_EVENT_FORK",
	[2] = "UFFD_FEATURE_EVENT_REMAP",
	[3] = "UFFD_FEATURE_EVENT_REMOVE",
	[4] = "UFFD_FEATURE_MISSING_HUGETLBFS",
	[5] = "UFFD_FEATURE_MISSING_SHMEM",
	[6] = "UFFD_FEATURE_EVENT_UNMAP",
	[7] = "UFFD_FEATURE_SIGBUS",
	[8] = "UFFD_FEATURE_THREAD_ID",
	[9] = "UFFD_FEATURE_MINOR_HUGETLBFS",
	[10] = "UFFD_FEATURE_MINOR_SHMEM",
	[11] = "UFFD_FEATURE_EXACT_ADDRESS",
	[12] = "UFFD_FEATURE_WP_HUGETLBFS_SHMEM",
	[13] = "UFFD_FEATURE_WP_UNPOPULATED",
	[14] = "UFFD_FEATURE_POISON",
	[15] = "UFFD_FEATURE_WP_ASYNC",
	[16] = "UFFD_FEATURE_MOVE",
};

const char *wpc_uffd_feature_name(int bit)
{
	if (bit < 0 || (size_t)bit >= WPC_ARRAY_SIZE(feature_names))
		return NULL;
	return feature_names[bit];
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
	if (fd < 0)
		return fd;
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int err = errno;
		close(fd);
		return -err;
	}
	if (available)
		*available = api.features & ~masked;
	return fd;
}

int wpc_uffd_open_why(int err, int flags, char *why, size_t len)
{
	if (err == -EPERM && (flags & UFFD_USER_MODE_ONLY)) {
		wpc_why(why, len, "userfaultfd(2) is refused even with UFFD_USER_MODE_ONLY (a seccomp "
			"filter or a security module) and /dev/userfaultfd is absent or not accessible: "
			"lift the filter, or grant access to /dev/userfaultfd");
		return -EPERM;
	}
	if (err == -EPERM) {
		wpc_why(why, len, "a userfaultfd handling kernel-mode faults needs CAP_SYS_PTRACE, "
			"`sysctl vm.unprivileged_userfaultfd=1` or access to /dev/userfaultfd");
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
	if (fd < 0)
		return fd;
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int err = errno;
		close(fd);
		return -err;
	}
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
