/* SPDX-License-Identifier: MIT */
/*
 * The run's context, as every layer below the phases uses it: failing with a
 * reason a person can act on, counters, the CPUs this process may use and
 * pinning, starting and watching threads, and the region's small chores
 * (opening and registering its userfaultfd as the strategy needs, with
 * probe.c). run.c (the phases) and the strategy table are above it;
 * workload.c, verify.c, model.c and every strategy call into it, never into
 * run.c or the table.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "compat.h"
#include "internal.h"

int wpc_fail(struct wpc_run *run, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(run->res->reason, sizeof(run->res->reason), fmt, ap);
	va_end(ap);
	return -(err ? err : EIO);
}

static struct wpc_counter *counter_slot(struct wpc_run *run, const char *name)
{
	struct wpc_result *res = run->res;

	for (int i = 0; i < res->ncounters; i++)
		if (!strcmp(res->counters[i].name, name))
			return &res->counters[i];
	if (res->ncounters == WPC_MAX_COUNTERS)
		return NULL;

	struct wpc_counter *c = &res->counters[res->ncounters++];
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->value = 0;
	return c;
}

void wpc_counter_add(struct wpc_run *run, const char *name, uint64_t delta)
{
	struct wpc_counter *c = counter_slot(run, name);

	if (c)
		c->value += delta;
}

void wpc_counter_set(struct wpc_run *run, const char *name, uint64_t value)
{
	struct wpc_counter *c = counter_slot(run, name);

	if (c)
		c->value = value;
}

void wpc_run_mark_detached(struct wpc_run *run)
{
	uint64_t expected = 0;

	atomic_compare_exchange_strong(&run->detached_at_ns, &expected, wpc_now_ns());
}

int wpc_run_add_image_identity(struct wpc_run *run, int fd)
{
	struct stat st;

	if ((size_t)run->nextra_images >= WPC_ARRAY_SIZE(run->extra_images))
		return -ENOSPC;
	if (fstat(fd, &st) < 0)
		return -errno;
	run->extra_images[run->nextra_images].dev = st.st_dev;
	run->extra_images[run->nextra_images].ino = st.st_ino;
	run->nextra_images++;
	return 0;
}

int wpc_run_read_image(struct wpc_run *run, uint8_t *dst)
{
	int ret = wpc_pread_full(run->image_fd, dst, run->image_size, 0);

	if (ret)
		return wpc_fail(run, -ret, "reading the image: %s",
				ret == -ENODATA ? "unexpected end of file" : strerror(-ret));
	return 0;
}

void wpc_run_unmap_region(struct wpc_run *run)
{
	if (run->region)
		munmap(run->region, run->region_len);
	run->region = NULL;
}

int wpc_run_open_uffd(struct wpc_run *run, int flags, bool *user_mode_only)
{
	struct wpc_needs needs;
	char why[WPC_REASON_LEN];
	int fd;

	wpc_strategy_needs(run->strategy, run->params, &needs);
	fd = wpc_uffd_open_for(&needs, flags, user_mode_only, why, sizeof(why));
	if (fd < 0)
		return wpc_fail(run, -fd, "cannot open the userfaultfd: %s", why);
	return fd;
}

int wpc_run_uffd_register(struct wpc_run *run, int uffd, void *addr, size_t len, uint64_t mode)
{
	struct wpc_needs needs;
	char why[WPC_REASON_LEN];
	int ret;

	wpc_strategy_needs(run->strategy, run->params, &needs);
	ret = wpc_uffd_register_for(&needs, uffd, addr, len, mode, why, sizeof(why));
	return ret ? wpc_fail(run, -ret, "%s", why) : 0;
}

int wpc_run_uffd_protect_region(struct wpc_run *run, int uffd, bool *registered, uint64_t since)
{
	int ret = wpc_run_uffd_register(run, uffd, run->region, run->region_len, UFFDIO_REGISTER_MODE_WP);

	if (ret)
		return ret;
	*registered = true;
	uint64_t protect_start = wpc_now_ns();

	ret = wpc_uffd_writeprotect(uffd, run->region, run->region_len, true);
	if (ret)
		return wpc_fail(run, -ret, "UFFDIO_WRITEPROTECT of the region failed: %s", strerror(-ret));
	wpc_counter_set(run, "register_ns", protect_start - since);
	wpc_counter_set(run, "protect_ns", wpc_now_ns() - protect_start);
	return 0;
}

int wpc_cpu_nth(const struct wpc_run *run, int i)
{
	return run->ncpus ? run->cpus[i % run->ncpus] : -1;
}

int wpc_pin_self(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	return -pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

int wpc_handler_cpu_for(const int *cpus, int ncpus, int placement, int *cpu, char *why, size_t len)
{
	*cpu = -1;
	switch (placement) {
	case WPC_HANDLER_SAME:
		if (ncpus > 0)
			*cpu = cpus[0];
		return 0;
	case WPC_HANDLER_OTHER:
		if (ncpus < 2) {
			wpc_why(why, len, "handler-cpu=other needs a second CPU, and this process may run "
				"on %d (CPU %d): allow it two CPUs (taskset) or use handler-cpu=same",
				ncpus, ncpus ? cpus[0] : -1);
			return -EOPNOTSUPP;
		}
		*cpu = cpus[1];
		return 0;
	default:
		return 0;
	}
}

bool wpc_thread_exited(pthread_t tid, bool *started)
{
	if (!*started || pthread_tryjoin_np(tid, NULL))
		return false;
	*started = false;
	return true;
}

int wpc_allowed_cpus(int *cpus, int max)
{
	cpu_set_t set;
	int n = 0;

	if (sched_getaffinity(0, sizeof(set), &set) < 0)
		return 0;
	for (int c = 0; c < CPU_SETSIZE && n < max; c++)
		if (CPU_ISSET(c, &set))
			cpus[n++] = c;
	return n;
}

void wpc_run_load_cpus(struct wpc_run *run)
{
	run->ncpus = wpc_allowed_cpus(run->cpus, (int)WPC_ARRAY_SIZE(run->cpus));
}

int wpc_thread_start_quiet(pthread_t *tid, int cpu, void *(*fn)(void *), void *arg)
{
	pthread_attr_t attr;
	sigset_t all, old;
	cpu_set_t set;
	int ret;

	ret = -pthread_attr_init(&attr);
	if (ret)
		return ret;
	/* Pinned from its first instruction, so its placement holds for every fault it serves. */
	if (cpu >= 0) {
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		ret = -pthread_attr_setaffinity_np(&attr, sizeof(set), &set);
		if (ret) {
			pthread_attr_destroy(&attr);
			return ret;
		}
	}

	/*
	 * Our threads take no signals: a handler interrupting a thread that
	 * holds a chunk in COPYING, then writing that chunk, would wait for
	 * itself.
	 */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = -pthread_create(tid, &attr, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&attr);
	return ret;
}
