/* SPDX-License-Identifier: MIT */
/*
 * The model of a chain of checkpoints: what every page must hold after
 * cycles 1..n, computed from the base image (the generator's, or a real
 * image file the chain started from and never writes) and the cycles'
 * workloads alone, never from a later image file, so a file that lost a
 * write cannot vouch for itself. Also the check of an image file against it, which names the page
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
	if (m->base_fd >= 0)
		close(m->base_fd);
	m->base_fd = -1;
	if (m->writers)
		for (int j = 0; j < m->ncycles; j++)
			free(m->writers[j]);
	free(m->writers);
	free(m->write_seeds);
	m->writers = NULL;
	m->write_seeds = NULL;
}

/* The base image file: open, and exactly image_size bytes (the chain's images all are). */
static int open_base(struct wpc_model *m, const char *base_path, char *why, size_t len)
{
	struct stat st;

	m->base_fd = open(base_path, O_RDONLY | O_CLOEXEC);
	if (m->base_fd < 0) {
		int err = errno;

		wpc_why(why, len, "cannot open the base image %s: %s; give the image file the "
			"chain started from", base_path, strerror(err));
		return -err;
	}
	if (fstat(m->base_fd, &st) < 0) {
		int err = errno;

		wpc_why(why, len, "cannot stat the base image %s: %s", base_path, strerror(err));
		return -err;
	}
	if ((uint64_t)st.st_size != m->image_size) {
		wpc_why(why, len, "the base image %s is %lld bytes, the chain's images %llu: it changed "
			"since the chain started; give a copy nothing writes to", base_path,
			(long long)st.st_size, (unsigned long long)m->image_size);
		return -EINVAL;
	}
	return 0;
}

int wpc_model_build(struct wpc_model *m, uint64_t seed, int kind, const char *base_path,
		    uint64_t image_size, const struct wpc_workload *cycles, int ncycles,
		    char *why, size_t len)
{
	int ret;

	memset(m, 0, sizeof(*m));
	m->base_fd = -1;
	m->seed = seed;
	m->kind = kind;
	m->image_size = image_size;
	m->npages = wpc_align_up(image_size, WPC_PAGE) / WPC_PAGE;
	if (ncycles < 0 || (ncycles && !cycles)) {
		wpc_why(why, len, "invalid model: %d cycle(s)", ncycles);
		return -EINVAL;
	}
	if (base_path) {
		ret = open_base(m, base_path, why, len);
		if (ret)
			goto fail;
	}
	if (!ncycles)
		return 0;
	m->writers = calloc((size_t)ncycles, sizeof(*m->writers));
	m->write_seeds = calloc((size_t)ncycles, sizeof(*m->write_seeds));
	ret = -ENOMEM;
	if (!m->writers || !m->write_seeds)
		goto fail_nomem;
	m->ncycles = ncycles;
	for (int j = 0; j < ncycles; j++) {
		struct wpc_plan plan;

		ret = wpc_plan_build(&plan, m->npages, &cycles[j]);
		if (ret) {
			wpc_why(why, len, ret == -ENOMEM ? "out of memory for the model of %d cycle(s)"
				: "invalid workload in cycle %d of the model", ret == -ENOMEM ? ncycles : j + 1);
			goto fail;
		}
		m->writers[j] = wpc_plan_writer_masks(&plan, cycles[j].threads, m->npages);
		m->write_seeds[j] = cycles[j].seed;
		wpc_plan_free(&plan);
		ret = -ENOMEM;
		if (!m->writers[j])
			goto fail_nomem;
	}
	return 0;
fail_nomem:
	wpc_why(why, len, "out of memory for the model of %d cycle(s)", ncycles);
fail:
	wpc_model_free(m);
	return ret;
}

/*
 * The base's bytes of pages [first, first + n) into buf, zeros past the
 * image's end: the generator's, or the base file's.
 */
static int base_pages(const struct wpc_model *m, uint64_t first, uint64_t n, uint8_t *buf)
{
	uint64_t off = first * WPC_PAGE;
	uint64_t want = n * WPC_PAGE;
	uint64_t have = off < m->image_size ? m->image_size - off : 0;

	if (m->base_fd < 0) {
		for (uint64_t p = 0; p < n; p++)
			wpc_image_fill_page(m->seed, m->kind, first + p, buf + p * WPC_PAGE);
		return 0;
	}
	if (have > want)
		have = want;
	memset(buf + have, 0, want - have);
	return wpc_pread_full(m->base_fd, buf, have, off);
}

/* Page `page` of buf, which holds its base bytes, after every cycle's writes. */
static void apply_writes(const struct wpc_model *m, uint64_t page, uint8_t *buf)
{
	uint64_t *words = (uint64_t *)buf;
	uint64_t off = page * WPC_PAGE;
	uint64_t have = off < m->image_size ? m->image_size - off : 0;

	for (int j = 0; j < m->ncycles; j++)
		for (uint64_t mask = m->writers[j][page]; mask; mask &= mask - 1) {
			int t = __builtin_ctzll(mask);
			words[wpc_word_slot(page, t)] = wpc_write_value(m->write_seeds[j], page, t);
		}
	/* The file ends inside its last page: a dump keeps nothing past it, a mapping reads zeros. */
	if (have < WPC_PAGE)
		memset(buf + have, 0, WPC_PAGE - have);
}

int wpc_model_pages(const struct wpc_model *m, uint64_t first, uint64_t n, uint8_t *buf)
{
	int ret = base_pages(m, first, n, buf);

	if (ret)
		return ret;
	for (uint64_t p = 0; p < n; p++)
		apply_writes(m, first + p, buf + p * WPC_PAGE);
	return 0;
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
	uint8_t *model = malloc(CHECK_BLOCK_PAGES * WPC_PAGE);
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
		ret = wpc_model_pages(m, first, wpc_align_up(bytes, WPC_PAGE) / WPC_PAGE, model);
		if (ret) {
			wpc_why(why, len, "reading the base image at page %llu: %s",
				(unsigned long long)first, strerror(-ret));
			goto out;
		}
		for (uint64_t p = 0; p * WPC_PAGE < bytes; p++) {
			uint64_t page = first + p;
			size_t n = bytes - p * WPC_PAGE < WPC_PAGE ? bytes - p * WPC_PAGE : WPC_PAGE;
			int64_t word;

			word = wpc_first_differing_word(model + p * WPC_PAGE, file + p * WPC_PAGE, n);
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
		    const char *base_path, const struct wpc_workload *cycles, int ncycles,
		    struct wpc_image_check *out, char *why, size_t len)
{
	struct wpc_model m;
	struct stat st;
	int fd, ret;

	memset(out, 0, sizeof(*out));
	out->first_mismatch_page = -1;
	out->first_mismatch_offset = -1;
	if (!size || (!base_path && kind != WPC_IMAGE_MIXED && kind != WPC_IMAGE_RANDOM)) {
		wpc_why(why, len, "image check: size must be > 0 and kind mixed or random");
		return -EINVAL;
	}
	ret = wpc_model_build(&m, seed, kind, base_path, size, cycles, ncycles, why, len);
	if (ret)
		return ret;
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
