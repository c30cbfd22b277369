/* SPDX-License-Identifier: MIT */
/*
 * Strategies from shared objects built against wpcompare_plugin.h: loaded
 * (dlopen, the one entry point, the ABI version), every row validated, and
 * each turned into a struct wpc_strategy appended after the built-in table,
 * so that strategy_table.c's one lookup serves both and a plugin row is run,
 * probed, verified and reported like any other.
 *
 * Loaded in the parent, before any run: a worker is forked from it and
 * inherits the mapping and the rows. Loading is not thread-safe (the parent
 * is single-threaded when it loads) and never undone: a loaded object stays
 * mapped for the life of the process, since its rows point into it.
 *
 * The plugin's callbacks have the built-in ops' signatures (struct wpc_run
 * is opaque to it), so a row's ops are the plugin's functions themselves;
 * only what the plugin reads of the run, and the building blocks it uses,
 * go through the services table below.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "handler.h"
#include "internal.h"
#include "wpcompare_plugin.h"

/* The public enums say the same numbers as the internal ones: rows are copied, not translated. */
_Static_assert(WPC_PLUGIN_PARAM_SIZE == (int)WPC_PARAM_SIZE && WPC_PLUGIN_PARAM_INT == (int)WPC_PARAM_INT &&
	       WPC_PLUGIN_PARAM_CHOICE == (int)WPC_PARAM_CHOICE &&
	       WPC_PLUGIN_PARAM_STRING == (int)WPC_PARAM_STRING, "param kinds");
_Static_assert(WPC_PLUGIN_UFFD_NONE == (int)WPC_UFFD_NONE && WPC_PLUGIN_UFFD_USER_MODE == (int)WPC_UFFD_USER_MODE &&
	       WPC_PLUGIN_UFFD_AUTO == (int)WPC_UFFD_AUTO &&
	       WPC_PLUGIN_UFFD_KERNEL_MODE == (int)WPC_UFFD_KERNEL_MODE, "uffd access");
_Static_assert(WPC_PLUGIN_HANDLER_SAME == (int)WPC_HANDLER_SAME && WPC_PLUGIN_HANDLER_OTHER == (int)WPC_HANDLER_OTHER &&
	       WPC_PLUGIN_HANDLER_ANY == (int)WPC_HANDLER_ANY, "handler placement");
_Static_assert(WPC_PLUGIN_STRING_LEN == WPC_PARAM_STRING_LEN, "string parameter length");
_Static_assert(WPC_PLUGIN_NAME_MAX <= WPC_NAME_LEN, "names fit a result's name");

#define MAX_PLUGINS 16
#define MAX_PLUGIN_ROWS 64

struct plugin_row {
	struct wpc_strategy strategy;
	struct wpc_param_spec params[WPC_PLUGIN_MAX_PARAMS + 1];
};

struct plugin_file {
	dev_t dev;
	ino_t ino;
};

static struct plugin_row *plugin_rows[MAX_PLUGIN_ROWS];
static size_t nplugin_rows;
static struct plugin_file plugin_files[MAX_PLUGINS];
static size_t nplugin_files;

size_t wpc_plugin_row_count(void)
{
	return nplugin_rows;
}

const struct wpc_strategy *wpc_plugin_row(size_t index)
{
	return index < nplugin_rows ? &plugin_rows[index]->strategy : NULL;
}

/* ---- the services table ---- */

static const void *host_params(const struct wpc_run *run)
{
	return run->params;
}

static void *host_priv(const struct wpc_run *run)
{
	return run->priv;
}

static void host_set_priv(struct wpc_run *run, void *priv)
{
	run->priv = priv;
}

static uint8_t *host_region(const struct wpc_run *run)
{
	return run->region;
}

static void host_set_region(struct wpc_run *run, void *addr)
{
	run->region = addr;
}

static size_t host_region_len(const struct wpc_run *run)
{
	return run->region_len;
}

static int host_image_fd(const struct wpc_run *run)
{
	return run->image_fd;
}

static uint64_t host_image_size(const struct wpc_run *run)
{
	return run->image_size;
}

static uint64_t host_now_ns(void)
{
	return wpc_now_ns();
}

/* The handler with the plugin's ops in the internal form and its histogram, freed together. */
struct plugin_handler {
	struct wpc_handler handler;
	struct wpc_handler_ops ops;
	struct wpc_hist hist;
};

static int host_handler_start(struct wpc_run *run, int uffd, int placement,
			      const struct wpc_plugin_handler_ops *ops, void *owner,
			      struct wpc_handler **out)
{
	struct plugin_handler *ph = calloc(1, sizeof(*ph));
	int ret;

	*out = NULL;
	if (!ph)
		return wpc_fail(run, ENOMEM, "out of memory for the fault handler");
	wpc_handler_init(&ph->handler);
	/* Written (faulted in) here, so the handler thread's first record takes no page fault. */
	wpc_hist_reset(&ph->hist);
	ph->handler.hist = &ph->hist;
	ph->ops = (struct wpc_handler_ops){
		.serve = ops->serve,
		.orphaned = ops->orphaned,
		.stranded = ops->stranded,
		.released = ops->released,
	};
	ret = wpc_handler_start(&ph->handler, run, uffd, placement, &ph->ops, owner);
	if (ret) {
		wpc_handler_destroy(&ph->handler);
		free(ph);
		return ret;
	}
	*out = &ph->handler;
	return 0;
}

static struct plugin_handler *plugin_handler_of(struct wpc_handler *h)
{
	return (struct plugin_handler *)((char *)h - offsetof(struct plugin_handler, handler));
}

static void host_handler_publish(struct wpc_handler *h)
{
	wpc_handler_publish(h, h->run);
	wpc_hist_merge(&h->run->res->handler, &plugin_handler_of(h)->hist);
}

static void host_handler_free(struct wpc_handler *h)
{
	if (!h)
		return;
	wpc_handler_stop(h);
	wpc_handler_destroy(h);
	free(plugin_handler_of(h));
}

/* The chunks with the plugin's degrade, which takes its owner, not the chunks. */
struct plugin_chunks {
	struct wpc_chunks chunks;
	int (*degrade)(void *owner);
	void *owner;
};

static struct plugin_chunks *plugin_chunks_of(struct wpc_chunks *c)
{
	return (struct plugin_chunks *)((char *)c - offsetof(struct plugin_chunks, chunks));
}

static int host_chunks_degrade(struct wpc_chunks *c)
{
	struct plugin_chunks *pc = plugin_chunks_of(c);

	return pc->degrade ? pc->degrade(pc->owner) : -EOPNOTSUPP;
}

static int host_chunks_create(struct wpc_run *run, size_t chunk, int source_fd,
			      int (*degrade)(void *owner), void *owner, struct wpc_chunks **out)
{
	struct plugin_chunks *pc = calloc(1, sizeof(*pc));
	int ret;

	*out = NULL;
	if (!pc)
		return -ENOMEM;
	ret = wpc_chunks_init(&pc->chunks, run, chunk, source_fd);
	if (ret) {
		wpc_chunks_destroy(&pc->chunks);
		free(pc);
		return ret;
	}
	pc->degrade = degrade;
	pc->owner = owner;
	pc->chunks.degrade = host_chunks_degrade;
	pc->chunks.owner = pc;
	*out = &pc->chunks;
	return 0;
}

static bool host_chunks_contains(const struct wpc_chunks *c, uintptr_t addr)
{
	return wpc_chunks_contains(c, addr);
}

static int64_t host_chunks_pause_ns(const struct wpc_chunks *c)
{
	return (int64_t)c->pause_ns;
}

static void host_chunks_free(struct wpc_chunks *c)
{
	if (!c)
		return;
	wpc_chunks_destroy(c);
	free(plugin_chunks_of(c));
}

/* ABI 1's memfd copy: the published one (sendfile, one thread), as built-in strategies' default. */
static int host_image_memfd(struct wpc_run *run, size_t len, int *memfd)
{
	return wpc_run_image_memfd(run, len, NULL, memfd);
}

static const struct wpc_plugin_host host = {
	.abi_version = WPC_PLUGIN_ABI_VERSION,
	.size = sizeof(struct wpc_plugin_host),
	.fail = wpc_fail,
	.mark_detached = wpc_run_mark_detached,
	.counter_add = wpc_counter_add,
	.counter_set = wpc_counter_set,
	.params = host_params,
	.priv = host_priv,
	.set_priv = host_set_priv,
	.region = host_region,
	.set_region = host_set_region,
	.region_len = host_region_len,
	.unmap_region = wpc_run_unmap_region,
	.image_fd = host_image_fd,
	.image_size = host_image_size,
	.read_image = wpc_run_read_image,
	.pread_full = wpc_pread_full,
	.image_memfd = host_image_memfd,
	.mremap = wpc_mremap,
	.now_ns = host_now_ns,
	.open_uffd = wpc_run_open_uffd,
	.uffd_register = wpc_run_uffd_register,
	.uffd_unregister = wpc_uffd_unregister,
	.uffd_wake = wpc_uffd_wake,
	.uffd_writeprotect = wpc_uffd_writeprotect,
	.handler_start = host_handler_start,
	.handler_stop = wpc_handler_stop,
	.handler_health = wpc_handler_health,
	.handler_error = wpc_handler_error,
	.handler_publish = host_handler_publish,
	.handler_free = host_handler_free,
	.chunks_create = host_chunks_create,
	.chunks_contains = host_chunks_contains,
	.chunks_write_fault = wpc_chunks_write_fault,
	.chunks_give_up = wpc_chunks_give_up,
	.chunks_record = wpc_chunks_record,
	.chunks_start_background = wpc_chunks_start_background,
	.chunks_finish = wpc_chunks_finish,
	.chunks_stop = wpc_chunks_stop,
	.chunks_publish = wpc_chunks_publish,
	.chunks_dirty = wpc_chunks_dirty,
	.chunks_pause_ns = host_chunks_pause_ns,
	.chunks_free = host_chunks_free,
};

/* ---- validation ---- */

/* [a-z0-9][a-z0-9-]*, shorter than WPC_PLUGIN_NAME_MAX. */
static bool good_name(const char *name)
{
	size_t n = name ? strlen(name) : 0;

	if (!n || n >= WPC_PLUGIN_NAME_MAX || name[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!islower((unsigned char)name[i]) && !isdigit((unsigned char)name[i]) && name[i] != '-')
			return false;
	return true;
}

static bool name_taken(const char *name)
{
	return wpc_strategy_lookup(name) != NULL;
}

/* The bytes a parameter of this kind occupies in the parameter struct, and their alignment. */
static size_t param_field_size(int kind, size_t *align)
{
	switch (kind) {
	case WPC_PARAM_SIZE:
	case WPC_PARAM_INT:
		*align = 8;
		return 8;
	case WPC_PARAM_CHOICE:
		*align = sizeof(int);
		return sizeof(int);
	case WPC_PARAM_STRING:
		*align = 1;
		return WPC_PARAM_STRING_LEN;
	}
	return 0;
}

static int check_params(const struct wpc_plugin_row *r, struct plugin_row *out, char *why, size_t len)
{
	size_t n = 0;

	for (const struct wpc_plugin_param *p = r->params; p && p->name; p++, n++) {
		size_t align, size = param_field_size((int)p->kind, &align);

		if (n == WPC_PLUGIN_MAX_PARAMS) {
			wpc_why(why, len, "row '%s' has more than %d parameters", r->name,
				WPC_PLUGIN_MAX_PARAMS);
			return -EINVAL;
		}
		if (!good_name(p->name)) {
			wpc_why(why, len, "row '%s': parameter name '%s' is not [a-z0-9][a-z0-9-]*",
				r->name, p->name);
			return -EINVAL;
		}
		for (size_t k = 0; k < n; k++)
			if (!strcmp(out->params[k].name, p->name)) {
				wpc_why(why, len, "row '%s': parameter '%s' given twice", r->name, p->name);
				return -EINVAL;
			}
		if (!size) {
			wpc_why(why, len, "row '%s': parameter '%s' has unknown kind %d", r->name,
				p->name, (int)p->kind);
			return -EINVAL;
		}
		if (p->offset % align || p->offset > r->params_size || size > r->params_size - p->offset) {
			wpc_why(why, len, "row '%s': parameter '%s' at offset %zu does not fit "
				"params_size %zu", r->name, p->name, p->offset, r->params_size);
			return -EINVAL;
		}
		if (!p->default_value || !p->help ||
		    (p->kind == WPC_PLUGIN_PARAM_CHOICE && (!p->choices || !*p->choices))) {
			wpc_why(why, len, "row '%s': parameter '%s' lacks a default, a help text or "
				"(a choice) its choices", r->name, p->name);
			return -EINVAL;
		}
		out->params[n] = (struct wpc_param_spec){
			.name = p->name,
			.kind = (enum wpc_param_kind)p->kind,
			.choices = p->choices,
			.default_value = p->default_value,
			.help = p->help,
			.offset = p->offset,
			.min = p->min,
			.max = p->max,
		};
	}
	if (n && !r->params_size) {
		wpc_why(why, len, "row '%s' has parameters but params_size 0", r->name);
		return -EINVAL;
	}

	/* Every default must parse, as wpc_choice_parse will parse them before each run. */
	void *scratch = r->params_size ? calloc(1, r->params_size) : NULL;
	char reason[WPC_REASON_LEN];
	int ret;

	if (r->params_size && !scratch) {
		wpc_why(why, len, "out of memory");
		return -ENOMEM;
	}
	ret = wpc_params_parse(r->name, out->params, NULL, scratch, reason, sizeof(reason));
	free(scratch);
	if (ret)
		wpc_why(why, len, "row '%s': a default does not parse: %s", r->name, reason);
	return ret;
}

static int check_row(const struct wpc_plugin_row *r, struct plugin_row *out, char *why, size_t len)
{
	if (!good_name(r->name)) {
		wpc_why(why, len, "row name '%s' is not [a-z0-9][a-z0-9-]* of at most %d characters",
			r->name ? r->name : "(null)", WPC_PLUGIN_NAME_MAX - 1);
		return -EINVAL;
	}
	if (name_taken(r->name)) {
		wpc_why(why, len, "strategy '%s' is already defined (a built-in, or an earlier "
			"plugin or row): rename it", r->name);
		return -EEXIST;
	}
	if (!good_name(r->family) || !strcmp(r->family, "bound")) {
		wpc_why(why, len, "row '%s': family '%s' is not [a-z0-9][a-z0-9-]*, or is the "
			"reserved 'bound'", r->name, r->family ? r->family : "(null)");
		return -EINVAL;
	}
	if (!r->description || !*r->description) {
		wpc_why(why, len, "row '%s' has no description", r->name);
		return -EINVAL;
	}
	if (!r->restore || !r->teardown) {
		wpc_why(why, len, "row '%s' lacks a required callback (%s)", r->name,
			!r->restore ? "restore" : "teardown");
		return -EINVAL;
	}
	if ((unsigned)r->needs.uffd > WPC_PLUGIN_UFFD_KERNEL_MODE) {
		wpc_why(why, len, "row '%s': needs.uffd %d is not an enum wpc_plugin_uffd_access",
			r->name, (int)r->needs.uffd);
		return -EINVAL;
	}
	return check_params(r, out, why, len);
}

static struct plugin_row *make_row(const struct wpc_plugin_row *r)
{
	struct plugin_row *row = calloc(1, sizeof(*row));

	if (!row)
		return NULL;
	row->strategy = (struct wpc_strategy){
		.name = r->name,
		.family = r->family,
		.description = r->description,
		.params = row->params,
		.params_size = r->params_size,
		.needs = {
			.uffd = (enum wpc_uffd_access)r->needs.uffd,
			.uffd_features = r->needs.uffd_features,
			.uffd_ioctls = r->needs.uffd_ioctls,
			.without_privilege = r->needs.without_privilege,
			.pagemap_scan = r->needs.pagemap_scan,
			.hugetlb_2m = r->needs.hugetlb_2m,
			.thp = r->needs.thp,
			.other_cpu = r->needs.other_cpu,
		},
		.check = r->check,
		.prepare = r->prepare,
		.restore = r->restore,
		.fixup = r->fixup,
		.dirty_pages = r->dirty_pages,
		.teardown = r->teardown,
		.fixup_pause_ns = r->fixup_pause_ns,
		.health = r->health,
	};
	return row;
}

/* Validate every row of p; on success append them all, else append none. */
static int add_rows(const struct wpc_plugin *p, char *why, size_t len)
{
	struct plugin_row *rows[WPC_PLUGIN_MAX_ROWS] = { 0 };
	size_t before = nplugin_rows;
	int ret = 0;

	if (!p->rows || !p->nrows || p->nrows > WPC_PLUGIN_MAX_ROWS) {
		wpc_why(why, len, "it returns %u rows; a plugin has 1 to %d", p->nrows,
			WPC_PLUGIN_MAX_ROWS);
		return -EINVAL;
	}
	if (nplugin_rows + p->nrows > MAX_PLUGIN_ROWS) {
		wpc_why(why, len, "more than %d plugin strategies in all", MAX_PLUGIN_ROWS);
		return -E2BIG;
	}
	for (uint32_t i = 0; i < p->nrows && !ret; i++) {
		rows[i] = make_row(&p->rows[i]);
		if (!rows[i]) {
			wpc_why(why, len, "out of memory");
			ret = -ENOMEM;
			break;
		}
		ret = check_row(&p->rows[i], rows[i], why, len);
		/* Visible to the collision check of this plugin's later rows, withdrawn on failure. */
		if (!ret)
			plugin_rows[nplugin_rows++] = rows[i];
	}
	if (ret) {
		nplugin_rows = before;
		for (uint32_t i = 0; i < p->nrows; i++)
			free(rows[i]);
	}
	return ret;
}

int wpc_plugin_load(const char *path, char *why, size_t len)
{
	char reason[WPC_REASON_LEN] = "";
	struct stat st;
	void *handle;
	int ret;

	if (!path || stat(path, &st) < 0) {
		int err = path ? errno : EINVAL;
		wpc_why(why, len, "plugin %s: %s", path ? path : "(null)", strerror(err));
		return -err;
	}
	for (size_t i = 0; i < nplugin_files; i++)
		if (plugin_files[i].dev == st.st_dev && plugin_files[i].ino == st.st_ino)
			return 0;	/* loaded already (named twice, or by the environment too) */
	if (nplugin_files == MAX_PLUGINS) {
		wpc_why(why, len, "plugin %s: more than %d plugins", path, MAX_PLUGINS);
		return -E2BIG;
	}

	handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!handle) {
		const char *error = dlerror();
		wpc_why(why, len, "plugin %s: cannot load it: %s", path, error ? error : "unknown error");
		return -ENOEXEC;
	}
	dlerror();
	wpc_plugin_entry_fn entry = (wpc_plugin_entry_fn)dlsym(handle, WPC_PLUGIN_ENTRY);
	if (!entry) {
		wpc_why(why, len, "plugin %s: no entry point %s(): define it as wpcompare_plugin.h "
			"says (`wpcompare include-dir`)", path, WPC_PLUGIN_ENTRY);
		dlclose(handle);
		return -ENOENT;
	}
	const struct wpc_plugin *p = entry(WPC_PLUGIN_ABI_VERSION, &host);
	if (!p) {
		wpc_why(why, len, "plugin %s: its entry point refused to load (returned NULL) under "
			"plugin ABI version %d", path, WPC_PLUGIN_ABI_VERSION);
		dlclose(handle);
		return -EPROTO;
	}
	if (p->abi_version != WPC_PLUGIN_ABI_VERSION) {
		wpc_why(why, len, "plugin %s: built for plugin ABI version %u, this wpcompare has "
			"version %d: rebuild it against `wpcompare include-dir`", path,
			p->abi_version, WPC_PLUGIN_ABI_VERSION);
		dlclose(handle);
		return -EPROTO;
	}
	ret = add_rows(p, reason, sizeof(reason));
	if (ret) {
		wpc_why(why, len, "plugin %s: %s", path, reason);
		dlclose(handle);
		return ret;
	}
	plugin_files[nplugin_files++] = (struct plugin_file){ .dev = st.st_dev, .ino = st.st_ino };
	return (int)p->nrows;
}
