/* SPDX-License-Identifier: MIT */
/*
 * The built-in sigsegv (fixup=background, copy=memcpy), written as a plugin
 * with the host's chunked copy-and-remap: proof that the services table's
 * chunks_* slots are the building blocks a real SIGSEGV handler needs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "wpcompare_plugin.h"

struct chunks_params {
	uint64_t chunk;
};

static const struct wpc_plugin_host *host;
static struct wpc_chunks *_Atomic active;
static struct sigaction previous;
static bool installed;

/* Async-signal-safe: only the host's slots marked so. */
static void on_sigsegv(int sig, siginfo_t *si, void *uctx)
{
	struct wpc_chunks *c = atomic_load(&active);
	uintptr_t addr = (uintptr_t)si->si_addr;
	int saved_errno = errno;

	if (c && si->si_code == SEGV_ACCERR && host->chunks_contains(c, addr)) {
		uint64_t t0 = host->now_ns();

		host->chunks_write_fault(c, addr);
		host->chunks_record(c, host->now_ns() - t0);
		errno = saved_errno;
		return;
	}
	errno = saved_errno;
	if (previous.sa_flags & SA_SIGINFO) {
		previous.sa_sigaction(sig, si, uctx);
		return;
	}
	signal(sig, SIG_DFL);	/* the fault recurs and kills */
}

static int degrade(void *owner)
{
	struct wpc_run *run = owner;

	return mprotect(host->region(run), host->region_len(run), PROT_READ | PROT_WRITE) ? -errno : 0;
}

static int chunks_restore(struct wpc_run *run)
{
	const struct chunks_params *params = host->params(run);
	struct wpc_chunks *c;

	void *p = mmap(NULL, host->region_len(run), PROT_READ, MAP_PRIVATE, host->image_fd(run), 0);
	if (p == MAP_FAILED)
		return host->fail(run, errno, "mmap of the image failed: %s", strerror(errno));
	host->set_region(run, p);
	int ret = host->chunks_create(run, params->chunk, -1, degrade, run, &c);
	if (ret)
		return host->fail(run, -ret, "chunks_create: %s", strerror(-ret));
	host->set_priv(run, c);
	atomic_store(&active, c);

	struct sigaction sa = { .sa_sigaction = on_sigsegv, .sa_flags = SA_SIGINFO | SA_RESTART };
	sigfillset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, &previous) < 0)
		return host->fail(run, errno, "sigaction: %s", strerror(errno));
	installed = true;
	ret = host->chunks_start_background(c);
	return ret ? host->fail(run, -ret, "background thread: %s", strerror(-ret)) : 0;
}

static int chunks_fixup(struct wpc_run *run)
{
	struct wpc_chunks *c = host->priv(run);
	int ret = host->chunks_finish(c, false);

	host->chunks_publish(c);
	return ret;
}

static int64_t chunks_pause(struct wpc_run *run)
{
	return host->chunks_pause_ns(host->priv(run));
}

static int chunks_dirty(struct wpc_run *run, uint8_t *bitmap)
{
	return host->chunks_dirty(host->priv(run), bitmap);
}

static void chunks_teardown(struct wpc_run *run)
{
	struct wpc_chunks *c = host->priv(run);

	if (c)
		host->chunks_stop(c);
	if (installed)
		sigaction(SIGSEGV, &previous, NULL);
	installed = false;
	atomic_store(&active, NULL);
	host->unmap_region(run);
	host->chunks_free(c);
	host->set_priv(run, NULL);
}

static const struct wpc_plugin_param params_spec[] = {
	{ "chunk", WPC_PLUGIN_PARAM_SIZE, "4K|64K|2M", "64K", "bytes per move",
	  offsetof(struct chunks_params, chunk), 0, 0 },
	{ NULL },
};

static const struct wpc_plugin_row rows[] = {
	{
		.name = "plugin-chunks",
		.family = "sigsegv",
		.description = "the built-in sigsegv, as a plugin using the host's chunks",
		.params = params_spec,
		.params_size = sizeof(struct chunks_params),
		.restore = chunks_restore,
		.fixup = chunks_fixup,
		.dirty_pages = chunks_dirty,
		.fixup_pause_ns = chunks_pause,
		.teardown = chunks_teardown,
	},
};

static const struct wpc_plugin plugin = { WPC_PLUGIN_ABI_VERSION, 1, rows };

const struct wpc_plugin *wpcompare_plugin(uint32_t host_abi, const struct wpc_plugin_host *services);

const struct wpc_plugin *wpcompare_plugin(uint32_t host_abi, const struct wpc_plugin_host *services)
{
	(void)host_abi;
	host = services;
	return &plugin;
}
