/* SPDX-License-Identifier: MIT */
/*
 * Eager fills (fill.c): how every strategy that copies a whole region at
 * once does it, so each can run at its mechanism's best and the published
 * way stays the default. One engine: a destination, a source, a method,
 * shares split among threads, transparent huge pages or not.
 *
 * The parameters, the same in every strategy that fills eagerly:
 *   fill     the method. From the image file into fresh anonymous memory
 *            (read, uffd-wp-anon): pread (the default, as published),
 *            memcpy (from a read-only mapping of the image) or uffdio-copy
 *            (the destination registered MISSING on a userfaultfd and filled
 *            with UFFDIO_COPY from a mapping of the image: the kernel
 *            allocates each page and copies into it, no zeroing first).
 *            From the region itself into a fresh shadow that is then moved
 *            over it (the whole-region fixups of mmap, mmap-populate,
 *            mmap-wp-async): memcpy (the default) or uffdio-copy. The
 *            region's written pages differ from the image, so the image is
 *            never a source there.
 *   threads  copy threads, each a contiguous 2 MiB-aligned share; 0: one
 *            per CPU this process may use; default 1 (as published).
 *   thp      yes: MADV_HUGEPAGE on a 2 MiB-aligned anonymous destination;
 *            no (the default): MADV_NOHUGEPAGE. Not with uffdio-copy, which
 *            places 4 KiB pages (the strategy's check refuses it).
 * Counters: fill_threads (threads that copied), fill_huge_pages (2 MiB
 * pages the destination holds after the fill, from /proc/self/smaps'
 * AnonHugePages of its range; read inside the timed phase; absent where
 * smaps cannot be read), fill_ns.
 *
 * The memfd copies of uffd-wp and uffd-minor (memfd.c) take fill=sendfile
 * (sendfile per share, each thread through an open file description of its
 * own) or uffdio-copy, and threads=; shmem is no anonymous destination, so
 * no thp. Counter memfd_fill_threads (memfd_fill_ns is memfd.c's).
 */
#ifndef WPC_FILL_H
#define WPC_FILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The method, whatever the choice set it was picked from. */
enum wpc_fill_method {
	WPC_FILL_PREAD,
	WPC_FILL_MEMCPY,
	WPC_FILL_UFFDIO_COPY,
	WPC_FILL_SENDFILE,
};

enum wpc_fill_thp {
	WPC_FILL_THP_NO,
	WPC_FILL_THP_YES,
};

/* Choices, in the order of the index params.c stores (fill.c maps them to the method). */
#define WPC_FILL_FROM_IMAGE_CHOICES "pread|memcpy|uffdio-copy"
#define WPC_FILL_FROM_REGION_CHOICES "memcpy|uffdio-copy"
#define WPC_FILL_INTO_MEMFD_CHOICES "sendfile|uffdio-copy"

/* Which choice set a strategy's fill indexes: what fills what. */
enum wpc_fill_kind {
	WPC_FILL_FROM_IMAGE,	/* fresh anonymous memory from the image file */
	WPC_FILL_FROM_REGION,	/* a whole-region fixup's shadow from the region itself */
	WPC_FILL_INTO_MEMFD,	/* a memfd (shmem) from the image file: no thp */
};

struct wpc_fill_params {
	int fill;		/* index into the strategy's choice set */
	int64_t threads;	/* 0: one per CPU this process may use */
	int thp;		/* enum wpc_fill_thp */
};

#define WPC_FILL_THREADS_HELP									\
	"threads sharing the eager copy, each a contiguous 2 MiB-aligned share; 0: one per CPU "	\
	"this process may use"
#define WPC_FILL_THP_HELP									\
	"yes: the anonymous destination 2 MiB-aligned with MADV_HUGEPAGE (skipped where THP is "	\
	"never); no: MADV_NOHUGEPAGE. Counter fill_huge_pages says what it got"

#define WPC_FILL_THP_SPEC(type, member)								\
	{ "thp", WPC_PARAM_CHOICE, "no|yes", "no", WPC_FILL_THP_HELP,				\
	  offsetof(type, member.thp), 0, 0 }

#define WPC_FILL_THREADS_SPEC_HELP(type, member, help)						\
	{ "threads", WPC_PARAM_INT, NULL, "1", help, offsetof(type, member.threads), 0,		\
	  WPC_MAX_THREADS }
#define WPC_FILL_THREADS_SPEC(type, member)							\
	WPC_FILL_THREADS_SPEC_HELP(type, member, WPC_FILL_THREADS_HELP)

/* fill, threads, thp of a strategy that fills fresh anonymous memory from the image. */
#define WPC_FILL_FROM_IMAGE_PARAM_SPECS(type, member)						\
	{ "fill", WPC_PARAM_CHOICE, WPC_FILL_FROM_IMAGE_CHOICES, "pread",			\
	  "how the image reaches the anonymous region: pread; memcpy from a read-only mapping "	\
	  "of the image; uffdio-copy: UFFDIO_COPY from that mapping into the region registered "	\
	  "MISSING (no zeroing of fresh pages)",						\
	  offsetof(type, member.fill), 0, 0 },							\
	WPC_FILL_THREADS_SPEC(type, member),							\
	WPC_FILL_THP_SPEC(type, member)

/* fill and threads of the memfd copy of the image (uffd-wp, uffd-minor). */
#define WPC_FILL_INTO_MEMFD_PARAM_SPECS(type, member)						\
	{ "fill", WPC_PARAM_CHOICE, WPC_FILL_INTO_MEMFD_CHOICES, "sendfile",			\
	  "how the image reaches the memfd: sendfile (each thread through an open file "		\
	  "description of its own); uffdio-copy: UFFDIO_COPY from a mapping of the image into a "	\
	  "shared mapping of the memfd registered MISSING",					\
	  offsetof(type, member.fill), 0, 0 },							\
	WPC_FILL_THREADS_SPEC(type, member)

/* fill, threads, thp of a whole-region fixup (copy the region into a shadow, mremap it over). */
#define WPC_FILL_FROM_REGION_PARAM_SPECS(type, member)						\
	{ "fill", WPC_PARAM_CHOICE, WPC_FILL_FROM_REGION_CHOICES, "memcpy",			\
	  "how the fixup copies the region (written pages included) into its anonymous shadow: "	\
	  "memcpy; uffdio-copy: UFFDIO_COPY from the region into the shadow registered MISSING",	\
	  offsetof(type, member.fill), 0, 0 },							\
	WPC_FILL_THREADS_SPEC(type, member),							\
	WPC_FILL_THP_SPEC(type, member)

struct wpc_run;
struct wpc_needs;

/*
 * What a fill adds to the strategy's needs (needs_for): THP for thp=yes,
 * a user-mode userfaultfd offering UFFDIO_COPY for uffdio-copy (on shmem:
 * UFFD_FEATURE_MISSING_SHMEM). kind: which choice set p->fill indexes.
 */
void wpc_fill_needs(const struct wpc_fill_params *p, enum wpc_fill_kind kind,
		    struct wpc_needs *needs);
/* A strategy's check: thp=yes with uffdio-copy is refused (it places 4 KiB pages). */
int wpc_fill_check(const struct wpc_fill_params *p, enum wpc_fill_kind kind, char *why,
		   size_t len);
/*
 * run->region (run->region_len bytes) as fresh anonymous memory holding the
 * image, filled as p says; detached from here on. 0 or wpc_fail()'s -errno.
 */
int wpc_fill_anonymous_from_image(struct wpc_run *run, const struct wpc_fill_params *p);
/*
 * Replace [addr, addr + len) by an anonymous copy of its current contents,
 * filled as p says (from the region). 0 or wpc_fail()'s -errno with the reason.
 */
int wpc_fill_copy_and_remap(struct wpc_run *run, const struct wpc_fill_params *p, void *addr,
			    size_t len);

/*
 * The image into memfd (len bytes, sized already, so its tail reads zeros)
 * as p says (NULL: sendfile, one thread). 0 or wpc_fail()'s -errno.
 */
int wpc_fill_memfd_from_image(struct wpc_run *run, const struct wpc_fill_params *p, int memfd,
			      size_t len);
/* The image into dst with pread, in shares of nthreads threads (the bounds' copy); wpc_fail()'s -errno. */
int wpc_fill_pread_image(struct wpc_run *run, uint8_t *dst, int nthreads, int *used);

/*
 * The copier every eager fill shares: [0, len) split into contiguous
 * 2 MiB-aligned shares, one per thread (nthreads 0: run->ncpus), the
 * calling thread copying share 0, every started thread joined. copy_share
 * copies [off, off + len) and returns 0 or -errno. Returns 0 or the first
 * share's -errno (*failed_off: where that share began), or -errno of
 * pthread_create; *used: threads that copied.
 */
typedef int (*wpc_copy_share_fn)(void *ctx, uint64_t off, uint64_t len);
int wpc_copy_in_shares(uint64_t len, int nthreads, wpc_copy_share_fn copy_share, void *ctx,
		       int *used, uint64_t *failed_off);
/* Threads asked for: threads, or one per CPU this process may use for 0. */
int wpc_fill_thread_count(const struct wpc_run *run, int64_t threads);
/* 2 MiB pages backing [addr, addr + len), from /proc/self/smaps (AnonHugePages); -errno. */
int64_t wpc_anon_huge_pages(const void *addr, size_t len);

#endif /* WPC_FILL_H */
