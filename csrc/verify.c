/* SPDX-License-Identifier: MIT */
/*
 * Verification: every byte of the region against the image plus the writes
 * the workload is known to have made, and a strategy's dirty set against the
 * pages really written.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define READ_BLOCK_PAGES 256

/* Bitmask of the workload threads that wrote each page (0 for pages only read). */
static uint64_t *writer_masks(const struct wpc_run *run)
{
	return wpc_plan_writer_masks(&run->plan, run->cfg.workload.threads, run->npages);
}

/*
 * The model applies to a generated image, and to a chain on a real image
 * (its base file): the file this run restored from need not exist any more.
 */
static bool modelled(const struct wpc_run *run)
{
	return run->cfg.image_seed >= 0 || run->cfg.base_image_path;
}

/*
 * Expected image bytes of pages [first, first + n) into buf: the model (the
 * base image plus the writes of earlier cycles, if this run is part of a
 * chain), or else the image file itself.
 */
static int expected_image(const struct wpc_run *run, const struct wpc_model *model, uint64_t first,
			  uint64_t n, uint8_t *buf)
{
	uint64_t off = first * WPC_PAGE;
	uint64_t want = n * WPC_PAGE;
	uint64_t have = off < run->image_size ? run->image_size - off : 0;

	if (have > want)
		have = want;
	if (modelled(run)) {
		int ret = wpc_model_pages(model, first, n, buf);
		if (ret)
			return ret;
	} else {
		int ret = wpc_pread_full(run->image_fd, buf, have, off);
		if (ret)
			return ret;
	}
	/* The file ends inside its last page; the mapping reads zeros past it. */
	memset(buf + have, 0, want - have);
	return 0;
}

/*
 * In a chain, which cycle's write the first differing word of `page` should
 * have held: this run's (history_len + 1) if this run wrote it, else the
 * model's answer; 0 if no cycle wrote it.
 */
static int mismatch_cycle(const struct wpc_run *run, const struct wpc_model *model,
			  const uint64_t *masks, uint64_t page, const uint8_t *expected)
{
	int64_t word = wpc_first_differing_word(expected, run->region + page * WPC_PAGE, WPC_PAGE);

	if (word < 0)
		return 0;
	for (uint64_t m = masks[page]; m; m &= m - 1)
		if (wpc_word_slot(page, __builtin_ctzll(m)) == (size_t)word)
			return run->cfg.history_len + 1;
	return wpc_model_word_cycle(model, page, (size_t)word);
}

/* The workload thread whose write slot `word` of `page` is, among the writers in mask; -1: none. */
static int slot_writer(uint64_t mask, uint64_t page, int64_t word)
{
	for (uint64_t m = mask; m && word >= 0; m &= m - 1)
		if (wpc_word_slot(page, __builtin_ctzll(m)) == (size_t)word)
			return __builtin_ctzll(m);
	return -1;
}

/*
 * Where the first mismatch is, for the reason: its byte offset in the region and
 * whose write it was, so a lost write names the page, the offset and the thread.
 */
static void mismatch_place(char *buf, size_t len, int64_t page, int64_t word, int writer)
{
	long long offset = (long long)page * WPC_PAGE + (word < 0 ? 0 : word * 8);

	if (writer >= 0)
		snprintf(buf, len, "byte offset %lld: the write of workload thread %d was lost",
			 offset, writer);
	else
		snprintf(buf, len, "byte offset %lld differs from the image", offset);
}

int wpc_verify_bytes(struct wpc_run *run)
{
	struct wpc_result *res = run->res;
	uint64_t *masks = writer_masks(run);
	uint8_t *buf = malloc(READ_BLOCK_PAGES * WPC_PAGE);
	uint64_t seed = run->cfg.workload.seed;
	struct wpc_model model = { .base_fd = -1 };
	int first_cycle = 0;
	int64_t first_word = -1;
	int first_writer = -1;
	char where[96];
	int ret = 0;

	if (!masks || !buf) {
		ret = wpc_fail(run, ENOMEM, "out of memory for verification");
		goto out;
	}
	if (modelled(run)) {
		char why[WPC_REASON_LEN];

		ret = wpc_model_build(&model, (uint64_t)run->cfg.image_seed, run->cfg.image_kind,
				      run->cfg.base_image_path, run->image_size, run->history,
				      run->cfg.history_len, why, sizeof(why));
		if (ret) {
			ret = wpc_fail(run, -ret, "cannot build the model of the earlier cycles: %s", why);
			goto out;
		}
	}
	res->mismatched_pages = 0;
	res->first_mismatch_page = -1;
	for (uint64_t first = 0; first < run->npages; first += READ_BLOCK_PAGES) {
		uint64_t n = run->npages - first < READ_BLOCK_PAGES ? run->npages - first
								       : READ_BLOCK_PAGES;

		ret = expected_image(run, &model, first, n, buf);
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
				if (!res->mismatched_pages) {
					res->first_mismatch_page = (int64_t)page;
					if (run->history)
						first_cycle = mismatch_cycle(run, &model, masks, page,
									     (uint8_t *)words);
					first_word = wpc_first_differing_word((uint8_t *)words,
									      run->region + page * WPC_PAGE,
									      WPC_PAGE);
					first_writer = slot_writer(masks[page], page, first_word);
				}
				res->mismatched_pages++;
			}
		}
	}
	res->verified = res->mismatched_pages == 0;
	if (!res->verified)
		mismatch_place(where, sizeof(where), res->first_mismatch_page, first_word,
			       first_writer);
	if (!res->verified && first_cycle)
		ret = wpc_fail(run, EIO, "%llu of %llu pages differ from the image plus the workload's "
			       "writes; first at page %lld (%s), which lost the write of cycle %d",
			       (unsigned long long)res->mismatched_pages,
			       (unsigned long long)run->npages, (long long)res->first_mismatch_page,
			       where, first_cycle);
	else if (!res->verified)
		ret = wpc_fail(run, EIO, "%llu of %llu pages differ from the image plus the workload's "
			       "writes; first at page %lld (%s)",
			       (unsigned long long)res->mismatched_pages,
			       (unsigned long long)run->npages, (long long)res->first_mismatch_page,
			       where);
out:
	wpc_model_free(&model);
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
