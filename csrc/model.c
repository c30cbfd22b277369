/* SPDX-License-Identifier: MIT */
/*
 * The model of a chain of checkpoints: what every page must hold after
 * cycles 1..n, computed from the generator and the cycles' workloads alone,
 * never from an image file, so a file that lost a write cannot vouch for
 * itself. Also the check of an image file against it, which names the page
 * and the cycle whose write went missing.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define CHECK_BLOCK_PAGES 256

uint64_t *wpc_plan_writer_masks(const struct wpc_plan *plan, int threads, uint64_t npages)
{
	uint64_t *masks = calloc(npages, sizeof(*masks));

	if (!masks || (!plan->write_all && !plan->write_set && !plan->entry_flags))
		return masks;
	for (int t = 0; t < threads; t++) {
		uint64_t first = plan->overlap ? 0 : plan->begin[t];
		uint64_t last = plan->overlap ? plan->count : plan->begin[t + 1];

		for (uint64_t i = first; i < last; i++)
			if (wpc_plan_writes(plan, i))
				masks[plan->order[i]] |= 1ull << t;
	}
	return masks;
}

int64_t wpc_first_differing_word(const uint8_t *a, const uint8_t *b, size_t nbytes)
{
	if (!memcmp(a, b, nbytes))
		return -1;
	for (size_t w = 0; w * 8 < nbytes; w++) {
		size_t n = nbytes - w * 8 < 8 ? nbytes - w * 8 : 8;

		if (memcmp(a + w * 8, b + w * 8, n))
			return (int64_t)w;
	}
	return -1;
}

void wpc_model_free(struct wpc_model *m)
{
	if (m->writers)
		for (int j = 0; j < m->ncycles; j++)
			free(m->writers[j]);
	free(m->writers);
	free(m->write_seeds);
	m->writers = NULL;
	m->write_seeds = NULL;
}

int wpc_model_build(struct wpc_model *m, uint64_t seed, int kind, uint64_t image_size,
		    const struct wpc_workload *cycles, int ncycles)
{
	memset(m, 0, sizeof(*m));
	m->seed = seed;
	m->kind = kind;
	m->image_size = image_size;
	m->npages = wpc_align_up(image_size, WPC_PAGE) / WPC_PAGE;
	if (ncycles < 0 || (ncycles && !cycles))
		return -EINVAL;
	if (!ncycles)
		return 0;
	m->writers = calloc((size_t)ncycles, sizeof(*m->writers));
	m->write_seeds = calloc((size_t)ncycles, sizeof(*m->write_seeds));
	if (!m->writers || !m->write_seeds) {
		wpc_model_free(m);
		return -ENOMEM;
	}
	m->ncycles = ncycles;
	for (int j = 0; j < ncycles; j++) {
		struct wpc_plan plan;
		int ret = wpc_plan_build(&plan, m->npages, &cycles[j]);

		if (ret) {
			wpc_model_free(m);
			return ret;
		}
		m->writers[j] = wpc_plan_writer_masks(&plan, cycles[j].threads, m->npages);
		m->write_seeds[j] = cycles[j].seed;
		wpc_plan_free(&plan);
		if (!m->writers[j]) {
			wpc_model_free(m);
			return -ENOMEM;
		}
	}
	return 0;
}

void wpc_model_page(const struct wpc_model *m, uint64_t page, uint8_t *buf)
{
	uint64_t *words = (uint64_t *)buf;
	uint64_t off = page * WPC_PAGE;
	uint64_t have = off < m->image_size ? m->image_size - off : 0;

	wpc_image_fill_page(m->seed, m->kind, page, buf);
	for (int j = 0; j < m->ncycles; j++)
		for (uint64_t mask = m->writers[j][page]; mask; mask &= mask - 1) {
			int t = __builtin_ctzll(mask);
			words[wpc_word_slot(page, t)] = wpc_write_value(m->write_seeds[j], page, t);
		}
	/* The file ends inside its last page: a dump keeps nothing past it, a mapping reads zeros. */
	if (have < WPC_PAGE)
		memset(buf + have, 0, WPC_PAGE - have);
}

int wpc_model_word_cycle(const struct wpc_model *m, uint64_t page, size_t word)
{
	for (int j = m->ncycles - 1; j >= 0; j--)
		for (uint64_t mask = m->writers[j][page]; mask; mask &= mask - 1)
			if (wpc_word_slot(page, __builtin_ctzll(mask)) == word)
				return j + 1;
	return 0;
}

/* The differences go into why without the file's name: the caller knows which file it checked. */
static int compare_file(int fd, const struct wpc_model *m, struct wpc_image_check *out,
			const char *path, char *why, size_t len)
{
	uint8_t *file = malloc(CHECK_BLOCK_PAGES * WPC_PAGE);
	uint8_t *model = malloc(WPC_PAGE);
	int ret = 0;

	if (!file || !model) {
		ret = -ENOMEM;
		wpc_why(why, len, "out of memory checking %s", path);
		goto out;
	}
	for (uint64_t first = 0; first < m->npages; first += CHECK_BLOCK_PAGES) {
		uint64_t off = first * WPC_PAGE;
		uint64_t bytes = m->image_size - off;

		if (bytes > CHECK_BLOCK_PAGES * WPC_PAGE)
			bytes = CHECK_BLOCK_PAGES * WPC_PAGE;
		ret = wpc_pread_full(fd, file, bytes, off);
		if (ret) {
			wpc_why(why, len, "reading %s at byte %llu: %s", path, (unsigned long long)off,
				strerror(-ret));
			goto out;
		}
		for (uint64_t p = 0; p * WPC_PAGE < bytes; p++) {
			uint64_t page = first + p;
			size_t n = bytes - p * WPC_PAGE < WPC_PAGE ? bytes - p * WPC_PAGE : WPC_PAGE;
			int64_t word;

			wpc_model_page(m, page, model);
			word = wpc_first_differing_word(model, file + p * WPC_PAGE, n);
			if (word < 0)
				continue;
			if (!out->mismatched_pages) {
				out->first_mismatch_page = (int64_t)page;
				out->first_mismatch_offset = (int64_t)(page * WPC_PAGE + (uint64_t)word * 8);
				out->first_mismatch_cycle = wpc_model_word_cycle(m, page, (size_t)word);
			}
			out->mismatched_pages++;
		}
	}
	if (out->mismatched_pages) {
		ret = -EIO;
		if (out->first_mismatch_cycle)
			wpc_why(why, len, "page %lld lost the write of cycle %d (byte %lld); "
				"%llu page(s) differ from the model",
				(long long)out->first_mismatch_page, out->first_mismatch_cycle,
				(long long)out->first_mismatch_offset,
				(unsigned long long)out->mismatched_pages);
		else
			wpc_why(why, len, "page %lld differs from the base image at byte %lld, "
				"which no cycle wrote; %llu page(s) differ from the model",
				(long long)out->first_mismatch_page, (long long)out->first_mismatch_offset,
				(unsigned long long)out->mismatched_pages);
	}
out:
	free(file);
	free(model);
	return ret;
}

int wpc_image_check(const char *path, uint64_t size, uint64_t seed, int kind,
		    const struct wpc_workload *cycles, int ncycles, struct wpc_image_check *out,
		    char *why, size_t len)
{
	struct wpc_model m;
	struct stat st;
	int fd, ret;

	memset(out, 0, sizeof(*out));
	out->first_mismatch_page = -1;
	out->first_mismatch_offset = -1;
	if (!size || (kind != WPC_IMAGE_MIXED && kind != WPC_IMAGE_RANDOM)) {
		wpc_why(why, len, "image check: size must be > 0 and kind mixed or random");
		return -EINVAL;
	}
	ret = wpc_model_build(&m, seed, kind, size, cycles, ncycles);
	if (ret) {
		wpc_why(why, len, ret == -ENOMEM ? "out of memory for the model of %d cycle(s)"
			: "invalid workload among the %d cycle(s) of the model", ncycles);
		return ret;
	}
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		wpc_why(why, len, "cannot open %s: %s", path, strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		wpc_why(why, len, "cannot stat %s: %s", path, strerror(errno));
		goto out;
	}
	if ((uint64_t)st.st_size != size) {
		ret = -EIO;
		wpc_why(why, len, "the file is %lld bytes, the image %llu", (long long)st.st_size,
			(unsigned long long)size);
		goto out;
	}
	ret = compare_file(fd, &m, out, path, why, len);
out:
	if (fd >= 0)
		close(fd);
	wpc_model_free(&m);
	return ret;
}
