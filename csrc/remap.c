/* SPDX-License-Identifier: MIT */
/*
 * Copy-and-remap: the move every fixup ends with. The copy lands in a fresh
 * anonymous mapping and mremap() moves those pages over the original range,
 * which drops the original's reference to the image in the same step. The
 * whole-region copy is fill.c's (wpc_fill_copy_and_remap), a chunk's
 * chunk_fixup.c's; both move with wpc_mremap.
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

/* Async-signal-safe, as mremap itself: sigsegv handlers move chunks with it. */
void *wpc_mremap(void *old_addr, size_t old_len, size_t new_len, int flags, void *new_addr)
{
	if (wpc_inject_mremap_enomem()) {
		errno = ENOMEM;
		return MAP_FAILED;
	}
	return mremap(old_addr, old_len, new_len, flags, new_addr);
}
