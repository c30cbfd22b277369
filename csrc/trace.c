/* SPDX-License-Identifier: MIT */
/*
 * A recorded access order as the workload's plan (WPC_PATTERN_TRACE).
 *
 * The trace's entries are in the order recorded. Each workload thread replays
 * its own entries in that order: order[begin[t]..begin[t + 1]) holds thread
 * t's, a stable partition of the trace by thread. Per entry, entry_flags
 * says whether it writes and whether it is a first touch: no earlier entry
 * of the trace, of any thread, names its page. Only first touches are timed
 * (latency every/sample) and counted in touched_pages; every entry is
 * replayed, so the touch phase's elapsed time is the whole trace's.
 *
 * A write by thread t stores wpc_write_value(seed, page, t) at word slot
 * (page, t), as every other pattern's writes do, so the value does not
 * depend on how often or when the thread wrote: the model and the verifier
 * need only which threads wrote each page.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int wpc_plan_trace(struct wpc_plan *plan, uint64_t npages, const struct wpc_workload *w)
{
	const struct wpc_trace *tr = w->trace;
	uint64_t fill[WPC_MAX_THREADS] = { 0 };
	uint8_t *seen;

	if (!tr || !tr->count || !tr->page || !tr->write || !tr->thread || w->overlap)
		return -EINVAL;
	for (uint64_t i = 0; i < tr->count; i++)
		if (tr->page[i] >= npages || tr->thread[i] >= w->threads)
			return -EINVAL;

	plan->order = malloc(sizeof(*plan->order) * tr->count);
	plan->entry_flags = malloc(tr->count);
	seen = calloc((npages + 7) / 8, 1);
	if (!plan->order || !plan->entry_flags || !seen) {
		free(seen);
		return -ENOMEM;
	}
	for (uint64_t i = 0; i < tr->count; i++)
		fill[tr->thread[i]]++;
	plan->begin[0] = 0;
	for (int t = 0; t < w->threads; t++) {
		plan->begin[t + 1] = plan->begin[t] + fill[t];
		fill[t] = plan->begin[t];
	}
	for (uint64_t i = 0; i < tr->count; i++) {
		uint64_t page = tr->page[i];
		int t = tr->thread[i];
		uint64_t at = fill[t]++;
		uint8_t flags = tr->write[i] ? WPC_ENTRY_WRITE : 0;

		if (!(seen[page / 8] & (1u << (page % 8)))) {
			seen[page / 8] |= (uint8_t)(1u << (page % 8));
			flags |= WPC_ENTRY_FIRST;
			plan->firsts[t]++;
		}
		plan->order[at] = page;
		plan->entry_flags[at] = flags;
	}
	free(seen);
	plan->count = tr->count;
	plan->overlap = false;
	plan->write_all = false;
	plan->write_set = NULL;
	return 0;
}
