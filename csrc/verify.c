/* SPDX-License-Identifier: MIT */
/*
 * Verification: every byte of the region against the image plus the writes
 * the workload is known to have made, and a strategy's dirty set against the
 * pages really written.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define READ_BLOCK_PAGES 256

/* Bitmask of the workload threads that wrote each page (0 for a page only read). */
static uint64_t *writer_masks(const struct wpc_run *run)
{
	const struct wpc_plan *plan = &run->plan;
	uint64_t *masks = calloc(run->npages, sizeof(*masks));

	if (!masks || run->cfg.workload.op == WPC_OP_READ)
		return masks;
	for (int t = 0; t < run->cfg.workload.threads; t++) {
		uint64_t first = plan->overlap ? 0 : plan->begin[t];
		uint64_t last = plan->overlap ? plan->count : plan->begin[t + 1];

		for (uint64_t i = first; i < last; i++)
			if (wpc_workload_writes(&run->cfg.workload, plan->order[i], t))
				masks[plan->order[i]] |= 1ull << t;
	}
	return masks;
}

/* Expected image bytes of pages [first, first + n) into buf. */
static int expected_image(const struct wpc_run *run, uint64_t first, uint64_t n, uint8_t *buf)
{
	uint64_t off = first * WPC_PAGE;
	uint64_t want = n * WPC_PAGE;
	uint64_t have = off < run->image_size ? run->image_size - off : 0;

	if (have > want)
		have = want;
	if (run->cfg.image_seed >= 0) {
		for (uint64_t p = 0; p < n; p++)
			wpc_image_fill_page((uint64_t)run->cfg.image_seed, run->cfg.image_kind,
					    first + p, buf + p * WPC_PAGE);
	} else {
		for (uint64_t done = 0; done < have;) {
			ssize_t got = pread(run->image_fd, buf + done, have - done, (off_t)(off + done));
			if (got < 0 && errno == EINTR)
				continue;
			if (got < 0)
				return -errno;
			if (got == 0)
				return -ENODATA;
			done += (uint64_t)got;
		}
	}
	/* The file ends inside its last page; the mapping reads zeros past it. */
	memset(buf + have, 0, want - have);
	return 0;
}

int wpc_verify_bytes(struct wpc_run *run)
{
	struct wpc_result *res = run->res;
	uint64_t *masks = writer_masks(run);
	uint8_t *buf = malloc(READ_BLOCK_PAGES * WPC_PAGE);
	uint64_t seed = run->cfg.workload.seed;
	int ret = 0;

	if (!masks || !buf) {
		ret = wpc_fail(run, ENOMEM, "out of memory for verification");
		goto out;
	}
	res->mismatched_pages = 0;
	res->first_mismatch_page = -1;
	for (uint64_t first = 0; first < run->npages; first += READ_BLOCK_PAGES) {
		uint64_t n = run->npages - first < READ_BLOCK_PAGES ? run->npages - first
								       : READ_BLOCK_PAGES;

		ret = expected_image(run, first, n, buf);
		if (ret) {
			ret = wpc_fail(run, -ret, "cannot read image page %llu for verification: %s",
				       (unsigned long long)first, strerror(-ret));
			goto out;
		}
		for (uint64_t p = 0; p < n; p++) {
			uint64_t page = first + p;
			uint64_t *words = (uint64_t *)(buf + p * WPC_PAGE);

			for (uint64_t m = masks[page]; m; m &= m - 1) {
				int t = __builtin_ctzll(m);
				words[wpc_word_slot(page, t)] = wpc_write_value(seed, page, t);
			}
			if (memcmp(words, run->region + page * WPC_PAGE, WPC_PAGE)) {
				if (!res->mismatched_pages)
					res->first_mismatch_page = (int64_t)page;
				res->mismatched_pages++;
			}
		}
	}
	res->verified = res->mismatched_pages == 0;
	if (!res->verified)
		ret = wpc_fail(run, EIO, "%llu of %llu pages differ from the image plus the workload's "
			       "writes; first at page %lld",
			       (unsigned long long)res->mismatched_pages,
			       (unsigned long long)run->npages, (long long)res->first_mismatch_page);
out:
	free(masks);
	free(buf);
	return ret;
}

int wpc_verify_dirty(struct wpc_run *run)
{
	struct wpc_result *res = run->res;
	uint64_t *masks = writer_masks(run);
	uint8_t *bitmap = calloc((run->npages + 7) / 8, 1);
	int ret;

	if (!masks || !bitmap) {
		ret = wpc_fail(run, ENOMEM, "out of memory for the dirty-set check");
		goto out;
	}
	ret = run->strategy->dirty_pages(run, bitmap);
	if (ret)
		goto out;
	res->dirty_known = 1;
	for (uint64_t p = 0; p < run->npages; p++) {
		bool reported = bitmap[p / 8] & (1u << (p % 8));
		bool written = masks[p] != 0;

		res->dirty_reported += reported;
		res->dirty_missing += written && !reported;
		res->dirty_extra += reported && !written;
	}
	if (res->dirty_missing)
		ret = wpc_fail(run, EIO, "dirty set misses %llu written pages: a checkpoint would lose them",
			       (unsigned long long)res->dirty_missing);
out:
	free(masks);
	free(bitmap);
	return ret;
}
