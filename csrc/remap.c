/* SPDX-License-Identifier: MIT */
/*
 * Copy-and-remap: the move every fixup ends with. The copy lands in a fresh
 * anonymous mapping and mremap() moves those pages over the original range,
 * which drops the original's reference to the image in the same step.
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

int wpc_copy_and_remap(void *addr, size_t len)
{
	void *shadow = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (shadow == MAP_FAILED)
		return -errno;
	memcpy(shadow, addr, len);
	if (wpc_mremap(shadow, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, addr) == MAP_FAILED) {
		int err = errno;
		munmap(shadow, len);
		return -err;
	}
	return 0;
}
