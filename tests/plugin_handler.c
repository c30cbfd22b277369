/* SPDX-License-Identifier: MIT */
/*
 * A userfaultfd MISSING strategy as a plugin, on the host's shared
 * fault-handler thread: proof that open_uffd, uffd_register and the
 * handler_* slots are what a uffd handler needs. Each missing page is read
 * from the image and placed with UFFDIO_COPY; the fixup places the rest.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "wpcompare_plugin.h"

#define PAGE 4096

struct handler_ctx {
	struct wpc_run *run;
	int uffd;
	bool registered;
	struct wpc_handler *handler;
	uint8_t *page;			/* the handler thread's staging page */
	uint64_t copies;		/* by the handler thread; read after it is stopped */
};

static const struct wpc_plugin_host *host;

/* Page at addr from the image into staging, then UFFDIO_COPY; EEXIST: placed already. */
static int place(struct handler_ctx *ctx, uint8_t *staging, uintptr_t addr)
{
	uint64_t off = addr - (uintptr_t)host->region(ctx->run), size = host->image_size(ctx->run);
	size_t in_image = off < size ? (size - off < PAGE ? size - off : PAGE) : 0;
	int ret;

	memset(staging + in_image, 0, PAGE - in_image);
	ret = host->pread_full(host->image_fd(ctx->run), staging, in_image, off);
	if (ret)
		return ret;
	struct uffdio_copy copy = { .dst = addr, .src = (uintptr_t)staging, .len = PAGE };
	if (ioctl(ctx->uffd, UFFDIO_COPY, &copy) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

static bool serve(void *owner, const struct uffd_msg *msg)
{
	struct handler_ctx *ctx = owner;

	if (msg->event != UFFD_EVENT_PAGEFAULT)
		return false;
	if (!place(ctx, ctx->page, msg->arg.pagefault.address & ~(uint64_t)(PAGE - 1)))
		ctx->copies++;
	return true;
}

static const struct wpc_plugin_handler_ops ops = {
	.serve = serve,
	.stranded = "faulting threads wait for pages nobody places",
};

static int handler_restore(struct wpc_run *run)
{
	struct handler_ctx *ctx = calloc(1, sizeof(*ctx));
	size_t len = host->region_len(run);
	bool user_mode_only;
	int ret;

	if (!ctx)
		return host->fail(run, ENOMEM, "out of memory");
	ctx->run = run;
	ctx->uffd = -1;
	host->set_priv(run, ctx);
	ctx->page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ctx->page == MAP_FAILED) {
		ctx->page = NULL;
		return host->fail(run, errno, "mmap: %s", strerror(errno));
	}
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return host->fail(run, errno, "mmap: %s", strerror(errno));
	host->set_region(run, p);
	ctx->uffd = host->open_uffd(run, O_NONBLOCK, &user_mode_only);
	if (ctx->uffd < 0)
		return ctx->uffd;
	ret = host->uffd_register(run, ctx->uffd, p, len, UFFDIO_REGISTER_MODE_MISSING);
	if (ret)
		return ret;
	ctx->registered = true;
	host->mark_detached(run);	/* anonymous from the start */
	return host->handler_start(run, ctx->uffd, WPC_PLUGIN_HANDLER_ANY, &ops, ctx, &ctx->handler);
}

static int handler_health(struct wpc_run *run)
{
	struct handler_ctx *ctx = host->priv(run);

	return host->handler_health(ctx->handler);
}

static int handler_fixup(struct wpc_run *run)
{
	struct handler_ctx *ctx = host->priv(run);
	uint8_t *region = host->region(run);
	uint8_t staging[PAGE] __attribute__((aligned(PAGE)));
	int ret;

	host->handler_stop(ctx->handler);
	ret = host->handler_error(ctx->handler);
	if (ret)
		return ret;
	host->handler_publish(ctx->handler);
	for (size_t off = 0; off < host->region_len(run); off += PAGE) {
		ret = place(ctx, staging, (uintptr_t)(region + off));
		if (ret)
			return host->fail(run, -ret, "placing the page at %zu: %s", off, strerror(-ret));
	}
	host->counter_set(run, "handler_copies", ctx->copies);
	return 0;
}

static void handler_teardown(struct wpc_run *run)
{
	struct handler_ctx *ctx = host->priv(run);

	if (!ctx) {
		host->unmap_region(run);
		return;
	}
	host->handler_free(ctx->handler);
	if (ctx->registered)
		host->uffd_unregister(ctx->uffd, host->region(run), host->region_len(run));
	if (ctx->uffd >= 0)
		close(ctx->uffd);
	host->unmap_region(run);
	if (ctx->page)
		munmap(ctx->page, PAGE);
	free(ctx);
	host->set_priv(run, NULL);
}

static const struct wpc_plugin_row rows[] = {
	{
		.name = "plugin-handler",
		.family = "uffd",
		.description = "userfaultfd MISSING on the host's handler thread (a test plugin)",
		.needs = {
			.uffd = WPC_PLUGIN_UFFD_USER_MODE,
			.uffd_ioctls = 1ull << _UFFDIO_COPY,
		},
		.restore = handler_restore,
		.fixup = handler_fixup,
		.health = handler_health,
		.teardown = handler_teardown,
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
