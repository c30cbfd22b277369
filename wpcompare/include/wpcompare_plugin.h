/* SPDX-License-Identifier: MIT */
/*
 * wpcompare plugin ABI: a strategy built outside wpcompare, loaded with
 * `wpcompare run --plugin PATH.so` (or WPCOMPARE_PLUGINS=a.so:b.so).
 *
 * Build against this header only (`cc -I"$(wpcompare include-dir)" -shared
 * -fPIC ...`): a plugin links against nothing of wpcompare. Everything it
 * needs from the host comes through the services table handed to its entry
 * point, and its rows give the host the same callbacks a built-in strategy
 * has (csrc/internal.h, struct wpc_strategy), with the same meaning.
 *
 * The one entry point:
 *
 *	const struct wpc_plugin *wpcompare_plugin(uint32_t host_abi,
 *						  const struct wpc_plugin_host *host);
 *
 * called once, in the wpcompare process, before any run (runs are forked
 * from it and inherit the loaded plugin). Keep `host` (it stays valid for
 * the life of the process) and return the plugin's description, or NULL to
 * refuse to load (host_abi != WPC_PLUGIN_ABI_VERSION, for instance).
 *
 * Version rule. WPC_PLUGIN_ABI_VERSION names the layout and meaning of every
 * type and callback in this file. Any change to them (a member added,
 * removed, moved or retyped anywhere, a slot added to the services table, a
 * callback whose contract changes) increments it by one. The host loads
 * only a plugin whose struct wpc_plugin says exactly its own version: there
 * is no range, so a plugin is rebuilt against the new header when wpcompare
 * changes it. The first member of struct wpc_plugin, abi_version, is the one
 * thing never moved: the host reads it before anything else.
 *
 * Threads and signals. restore, prepare, fixup, dirty_pages, fixup_pause_ns
 * and teardown run on the run's main thread; health on the same thread,
 * polled while the workload threads touch the region. A SIGSEGV or SIGBUS
 * handler the plugin installs runs on the faulting workload thread; it may
 * use only async-signal-safe calls, and of the host's services only those
 * marked "async-signal-safe" below. The host's fault-handler thread
 * (handler_start) calls the plugin's serve on that thread, with every signal
 * blocked. The background thread of chunks_start_background is the host's.
 *
 * What the host guarantees: one run per process (a fresh forked worker), so
 * a plugin may keep its state in globals; restore is called once, after
 * prepare, and teardown exactly once after restore was called, also when a
 * phase failed (unless workload threads are stuck in a fault nobody serves:
 * then the process exits without teardown); the parameter struct is parsed
 * from the row's specs before the run and is read-only; counters and the
 * reason go into the row's result; a worker that crashes becomes a failed
 * row naming its signal.
 */
#ifndef WPCOMPARE_PLUGIN_H
#define WPCOMPARE_PLUGIN_H

#include <linux/userfaultfd.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WPC_PLUGIN_ABI_VERSION 1
#define WPC_PLUGIN_ENTRY "wpcompare_plugin"
/* At most this many rows per plugin, and this many parameters per row. */
#define WPC_PLUGIN_MAX_ROWS 16
#define WPC_PLUGIN_MAX_PARAMS 16
/* A name or family: [a-z0-9][a-z0-9-]*, shorter than this. */
#define WPC_PLUGIN_NAME_MAX 32
#define WPC_PLUGIN_STRING_LEN 256

/* Opaque: the host's run, fault-handler thread and chunked copy-and-remap state. */
struct wpc_run;
struct wpc_handler;
struct wpc_chunks;

/*
 * One parameter, parsed into the row's parameter struct at `offset`: SIZE a
 * uint64_t ("4K", "2M"; `choices` lists the allowed sizes, NULL: any), INT an
 * int64_t (min..max; 0, 0: unbounded), CHOICE an int (index of the value in
 * "a|b|c"), STRING a char[WPC_PLUGIN_STRING_LEN].
 */
enum wpc_plugin_param_kind {
	WPC_PLUGIN_PARAM_SIZE,
	WPC_PLUGIN_PARAM_INT,
	WPC_PLUGIN_PARAM_CHOICE,
	WPC_PLUGIN_PARAM_STRING,
};

struct wpc_plugin_param {
	const char *name;		/* [a-z0-9][a-z0-9-]*; NULL ends the array */
	enum wpc_plugin_param_kind kind;
	const char *choices;
	const char *default_value;	/* required, and must parse */
	const char *help;		/* required */
	size_t offset;
	int64_t min, max;
};

/* How the row's userfaultfd is opened (what decides the privilege it needs). */
enum wpc_plugin_uffd_access {
	WPC_PLUGIN_UFFD_NONE,
	WPC_PLUGIN_UFFD_USER_MODE,	/* UFFD_USER_MODE_ONLY: no privilege needed */
	WPC_PLUGIN_UFFD_AUTO,		/* kernel-mode faults too where permitted */
	WPC_PLUGIN_UFFD_KERNEL_MODE,	/* kernel-mode faults, or the row is skipped */
};

/*
 * What every run of the row needs. The host checks it before a run and
 * makes the row `skipped` with the reason if this machine lacks it.
 */
struct wpc_plugin_needs {
	enum wpc_plugin_uffd_access uffd;
	uint64_t uffd_features;		/* UFFD_FEATURE_* bits UFFDIO_API must grant */
	uint64_t uffd_ioctls;		/* 1 << _UFFDIO_* the registered range must offer */
	const char *without_privilege;	/* KERNEL_MODE: what works without, for the reason */
	bool pagemap_scan;
	bool hugetlb_2m;
	bool thp;
	bool other_cpu;			/* a second CPU for a handler thread */
};

/* Where handler_start puts the fault-handler thread (csrc/handler.h). */
enum wpc_plugin_handler_cpu {
	WPC_PLUGIN_HANDLER_SAME,
	WPC_PLUGIN_HANDLER_OTHER,
	WPC_PLUGIN_HANDLER_ANY,
};

/*
 * One strategy. Callbacks take the host's run; read it, and fail it, through
 * the services table. Each returns 0 or the -errno of host->fail().
 */
struct wpc_plugin_row {
	const char *name;		/* unique among built-in and loaded strategies */
	const char *family;		/* groups rows in reports; "bound" is reserved */
	const char *description;
	const struct wpc_plugin_param *params;	/* NULL-name terminated; may be NULL */
	size_t params_size;		/* sizeof the parameter struct; 0 with no params */
	struct wpc_plugin_needs needs;
	/* Optional: a check no need expresses; 0 or -errno with why. Parent process too. */
	int (*check)(const void *params, char *why, size_t len);
	/* Optional, untimed, before restore: what the restorer has ready (a populated shadow). */
	int (*prepare)(struct wpc_run *run);
	/* Required, timed: make region_len bytes at set_region() usable; may start background work. */
	int (*restore)(struct wpc_run *run);
	/* Optional, timed: finish until the region is detached (NULL: detached at restore). */
	int (*fixup)(struct wpc_run *run);
	/* Optional: set bit p of bitmap for every page written since restore. */
	int (*dirty_pages)(struct wpc_run *run, uint8_t *bitmap);
	/* Required: undo everything; once, also after a failure. */
	void (*teardown)(struct wpc_run *run);
	/* Optional: of the fixup phase just ended, the ns the application could not run (NULL: all). */
	int64_t (*fixup_pause_ns)(struct wpc_run *run);
	/* Optional: 0 while faults are still served, else host->fail()'s -errno. */
	int (*health)(struct wpc_run *run);
};

/* What the host's fault-handler thread calls (csrc/handler.h, struct wpc_handler_ops). */
struct wpc_plugin_handler_ops {
	/* One message, on the handler thread: true if it was a fault served (timed). */
	bool (*serve)(void *owner, const struct uffd_msg *msg);
	/* Optional: the handler ends on an error; release every waiter and return true. */
	bool (*orphaned)(void *owner, int err);
	const char *stranded;		/* for the reason: what a handler gone leaves blocked */
	const char *released;		/* for the reason: what orphaned did */
};

/*
 * The host's services. Pointers are valid for the life of the process.
 * Those marked async-signal-safe may be called from a signal handler.
 */
struct wpc_plugin_host {
	uint32_t abi_version;		/* WPC_PLUGIN_ABI_VERSION of the host */
	uint32_t size;			/* sizeof(struct wpc_plugin_host) of the host */

	/* ---- the run ---- */
	/* Record the run's one-line reason (printf-style); returns -err (-EIO for 0). */
	int (*fail)(struct wpc_run *run, int err, const char *fmt, ...)
		__attribute__((format(printf, 3, 4)));
	/* The region is anonymous and maps the image nowhere from now on. Async-signal-safe. */
	void (*mark_detached)(struct wpc_run *run);
	/* Counters in the row's result (at most 24 names in a run). Main thread. */
	void (*counter_add)(struct wpc_run *run, const char *name, uint64_t delta);
	void (*counter_set)(struct wpc_run *run, const char *name, uint64_t value);
	/* The row's parameter struct, parsed; NULL with params_size 0. */
	const void *(*params)(const struct wpc_run *run);
	/* The plugin's own per-run state. */
	void *(*priv)(const struct wpc_run *run);
	void (*set_priv)(struct wpc_run *run, void *priv);
	/* The region: restore maps region_len bytes and hands the address to set_region. */
	uint8_t *(*region)(const struct wpc_run *run);
	void (*set_region)(struct wpc_run *run, void *addr);
	size_t (*region_len)(const struct wpc_run *run);	/* image size rounded up to 4 KiB */
	void (*unmap_region)(struct wpc_run *run);		/* munmap it, if mapped */

	/* ---- the image ---- */
	int (*image_fd)(const struct wpc_run *run);		/* read-only, open for the run */
	uint64_t (*image_size)(const struct wpc_run *run);	/* bytes; the region's tail is zeros */
	/* pread() the whole image into dst (image_size bytes); 0 or fail()'s -errno. */
	int (*read_image)(struct wpc_run *run, uint8_t *dst);
	/* pread() exactly len bytes at off: 0, -errno, -ENODATA at end of file. Async-signal-safe. */
	int (*pread_full)(int fd, void *buf, size_t len, uint64_t off);
	/* The image copied into a new memfd of len bytes (recorded as the image); *memfd is yours to close. */
	int (*image_memfd)(struct wpc_run *run, size_t len, int *memfd);
	/* mremap(2) honouring the test-only ENOMEM injection. Async-signal-safe. */
	void *(*mremap)(void *old_addr, size_t old_len, size_t new_len, int flags, void *new_addr);
	/* CLOCK_MONOTONIC in ns. Async-signal-safe. */
	uint64_t (*now_ns)(void);

	/* ---- userfaultfd, opened and registered as the row's needs say ---- */
	/* A userfaultfd (flags: O_NONBLOCK...; O_CLOEXEC added): the fd, or fail()'s -errno. */
	int (*open_uffd)(struct wpc_run *run, int flags, bool *user_mode_only);
	/* UFFDIO_REGISTER [addr, addr + len) in mode: 0 or fail()'s -errno. */
	int (*uffd_register)(struct wpc_run *run, int uffd, void *addr, size_t len, uint64_t mode);
	/* These three: 0 or -errno, no reason recorded. */
	int (*uffd_unregister)(int uffd, void *addr, size_t len);
	int (*uffd_wake)(int uffd, void *addr, size_t len);
	int (*uffd_writeprotect)(int uffd, void *addr, size_t len, bool protect);

	/* ---- the shared fault-handler thread (csrc/handler.c) ---- */
	/*
	 * Start it on uffd (O_NONBLOCK, yours to close after handler_free) at
	 * placement (enum wpc_plugin_handler_cpu); ops and owner stay valid
	 * until handler_free. 0 and *out, or fail()'s -errno.
	 */
	int (*handler_start)(struct wpc_run *run, int uffd, int placement,
			     const struct wpc_plugin_handler_ops *ops, void *owner,
			     struct wpc_handler **out);
	/* Serve what is queued, then stop and join it (safe twice). */
	void (*handler_stop)(struct wpc_handler *h);
	/* For the row's health: 0 while it serves, else fail()'s -errno. */
	int (*handler_health)(struct wpc_handler *h);
	/* After handler_stop: 0, or fail()'s -errno if an error ended it. */
	int (*handler_error)(struct wpc_handler *h);
	/* Its counters and service-time histogram into the result. */
	void (*handler_publish)(struct wpc_handler *h);
	/* Stop it if running, and free it. */
	void (*handler_free)(struct wpc_handler *h);

	/* ---- chunked copy-and-remap (csrc/chunk_fixup.c), after set_region ---- */
	/*
	 * Chunks of `chunk` bytes over the region; each moved by copying it
	 * (pread from source_fd, or memcpy from the region if -1) into a shadow
	 * and mremapping the copy over. A chunk must stay unwritable (read-only,
	 * write-protected) until moved. degrade(owner): after a failed remap,
	 * make the whole region writable in place. 0 and *out, or -errno.
	 */
	int (*chunks_create)(struct wpc_run *run, size_t chunk, int source_fd,
			     int (*degrade)(void *owner), void *owner, struct wpc_chunks **out);
	/* Whether addr is in the region. Async-signal-safe. */
	bool (*chunks_contains)(const struct wpc_chunks *c, uintptr_t addr);
	/* A write hit addr: returns once its chunk is anonymous. Async-signal-safe. */
	int (*chunks_write_fault)(struct wpc_chunks *c, uintptr_t addr);
	/* Stop all copying after error err (-errno) on chunk idx. Async-signal-safe. */
	void (*chunks_give_up)(struct wpc_chunks *c, uint64_t idx, int err);
	/* One fault's service time into the handler histogram. Async-signal-safe. */
	void (*chunks_record)(struct wpc_chunks *c, uint64_t ns);
	/* A host thread moves the chunks nobody wrote while the workload runs. */
	int (*chunks_start_background)(struct wpc_chunks *c);
	/* Fixup: join the background thread, move the rest (batched: coalesce runs). */
	int (*chunks_finish)(struct wpc_chunks *c, bool batched);
	void (*chunks_stop)(struct wpc_chunks *c);
	/* Counters and histogram into the result. */
	void (*chunks_publish)(struct wpc_chunks *c);
	/* The dirty set (pages of chunks written since restore) into bitmap. */
	int (*chunks_dirty)(struct wpc_chunks *c, uint8_t *bitmap);
	/* Of chunks_finish, the ns after the background thread was joined. */
	int64_t (*chunks_pause_ns)(const struct wpc_chunks *c);
	/* Stop, and free everything but the region (unmap that with unmap_region). */
	void (*chunks_free)(struct wpc_chunks *c);
};

/* What the entry point returns: static storage, valid for the life of the process. */
struct wpc_plugin {
	uint32_t abi_version;		/* WPC_PLUGIN_ABI_VERSION; first, always */
	uint32_t nrows;			/* 1..WPC_PLUGIN_MAX_ROWS */
	const struct wpc_plugin_row *rows;
};

typedef const struct wpc_plugin *(*wpc_plugin_entry_fn)(uint32_t host_abi,
							const struct wpc_plugin_host *host);

#endif /* WPCOMPARE_PLUGIN_H */
