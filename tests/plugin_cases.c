/* SPDX-License-Identifier: MIT */
/*
 * Plugins that the host must refuse, or whose run must fail, one per CASE_*
 * macro (tests/test_plugin.py builds each with -DCASE_...). Apart from the
 * flaw it is built with, each is a plain working strategy: read() the image
 * into anonymous memory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>

#include "wpcompare_plugin.h"

static const struct wpc_plugin_host *host;

#ifdef CASE_SEGV_RESTORE
/* NULL, and volatile so the compiler cannot see that restore writes through it. */
static int *volatile nowhere;
#endif

#ifdef CASE_UNDEFINED_SYMBOL
/* A symbol of the extension, which a plugin must not link against: dlopen(RTLD_NOW) fails. */
extern int wpc_fail_in_the_extension(void);
#endif

static __attribute__((unused)) int case_restore(struct wpc_run *run)
{
#ifdef CASE_SEGV_RESTORE
	*nowhere = 1;
#endif
#ifdef CASE_UNDEFINED_SYMBOL
	if (wpc_fail_in_the_extension())
		return -EIO;
#endif
	size_t len = host->region_len(run);
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return host->fail(run, errno, "mmap failed: %s", strerror(errno));
	host->set_region(run, p);
	int ret = host->read_image(run, p);
	if (ret)
		return ret;
	host->mark_detached(run);
	return 0;
}

static void case_teardown(struct wpc_run *run)
{
	host->unmap_region(run);
}

struct case_params {
	uint64_t size;
};

static const struct wpc_plugin_param case_params_spec[] = {
#ifdef CASE_PARAM_OUTSIDE
	/* Its field lies past params_size. */
	{ "size", WPC_PLUGIN_PARAM_SIZE, NULL, "4K", "a size", sizeof(struct case_params), 0, 0 },
#else
	{ "size", WPC_PLUGIN_PARAM_SIZE, NULL, "4K", "a size", offsetof(struct case_params, size), 0, 0 },
#endif
	{ NULL },
};

#ifdef CASE_COLLISION
#define CASE_NAME "mmap"
#elif defined(CASE_BAD_NAME)
#define CASE_NAME "Bad Name"
#else
#define CASE_NAME "plugin-case"
#endif

static const struct wpc_plugin_row rows[] = {
	{
		.name = CASE_NAME,
		.family = "case",
		.description = "reads the image into anonymous memory (a test plugin)",
		.params = case_params_spec,
		.params_size = sizeof(struct case_params),
#ifndef CASE_NO_RESTORE
		.restore = case_restore,
#endif
		.teardown = case_teardown,
	},
};

static const struct wpc_plugin plugin = {
#ifdef CASE_WRONG_ABI
	.abi_version = WPC_PLUGIN_ABI_VERSION + 1,
#else
	.abi_version = WPC_PLUGIN_ABI_VERSION,
#endif
	.nrows = 1,
	.rows = rows,
};

#ifdef CASE_NO_ENTRY
#define ENTRY wpcompare_plugin_misspelt
#else
#define ENTRY wpcompare_plugin
#endif

const struct wpc_plugin *ENTRY(uint32_t host_abi, const struct wpc_plugin_host *services);

const struct wpc_plugin *ENTRY(uint32_t host_abi, const struct wpc_plugin_host *services)
{
	(void)host_abi;		/* CASE_WRONG_ABI must reach the host's own check */
	host = services;
	return &plugin;
}
