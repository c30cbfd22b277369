/* SPDX-License-Identifier: MIT */
/*
 * The program tests/test_capture.py captures: an anonymous mapping whose
 * accesses after a signal come in an order the test knows.
 *
 *   capture_target PAGES THREADS ACCESSES SEED
 *
 * Maps PAGES pages (MAP_PRIVATE|MAP_ANONYMOUS, between two PROT_NONE guard
 * pages so that the kernel merges no other memory into its VMA), writes into
 * every page a pattern of its index (fill_word below), prints the mapping's
 * address in hex and "ready", then waits for SIGUSR1. On it, THREADS threads take turns
 * (access k is made by thread k % THREADS, after access k - 1 is done):
 * access k touches page order(k) and writes it when k % 3 == 0, else reads it;
 * then access ACCESSES writes the page access 1 read. order() is a seeded
 * permutation without repeats (see known_order in the test). It prints "done"
 * and waits to be killed.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096

static uint8_t *region;
static long pages, threads, accesses;
static uint64_t seed;
static atomic_long turn;
static volatile uint64_t sink;

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static uint64_t fill_word(long page, long word)
{
	return mix((uint64_t)page * 4099 + (uint64_t)word);
}

static long *order;

static void access_page(long k)
{
	volatile uint64_t *word = (volatile uint64_t *)(region + order[k] * PAGE);

	if (k % 3 == 0)
		*word = 0xdecafbadull + (uint64_t)k;
	else
		sink += *word;
}

static void *taker(void *arg)
{
	long t = (long)arg;

	for (long k = t; k <= accesses; k += threads) {
		while (atomic_load(&turn) != k)
			sched_yield();
		if (k == accesses)
			*(volatile uint64_t *)(region + order[1] * PAGE + 8) = 1;
		else
			access_page(k);
		atomic_store(&turn, k + 1);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	pthread_t tids[64];
	sigset_t set;
	int sig;

	if (argc != 5)
		return 2;
	pages = atol(argv[1]);
	threads = atol(argv[2]);
	accesses = atol(argv[3]);
	seed = strtoull(argv[4], NULL, 0);
	if (pages < 2 || threads < 1 || threads > 64 || accesses < 2 || accesses > pages)
		return 2;
	region = mmap(NULL, (size_t)(pages + 2) * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	order = calloc((size_t)pages, sizeof(*order));
	if (region == MAP_FAILED || !order)
		return 1;
	region += PAGE;
	if (mprotect(region, (size_t)pages * PAGE, PROT_READ | PROT_WRITE))
		return 1;
	for (long p = 0; p < pages; p++) {
		order[p] = p;
		for (long w = 0; w < PAGE / 8; w++)
			((uint64_t *)(region + p * PAGE))[w] = fill_word(p, w);
	}
	for (long i = pages - 1; i > 0; i--) {	/* Fisher-Yates with mix(seed + i) */
		long j = (long)(mix(seed + (uint64_t)i) % (uint64_t)(i + 1));
		long tmp = order[i];

		order[i] = order[j];
		order[j] = tmp;
	}
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);
	printf("%lx\nready\n", (unsigned long)region);
	fflush(stdout);
	sigwait(&set, &sig);
	for (long t = 0; t < threads; t++)
		if (pthread_create(&tids[t], NULL, taker, (void *)t))
			return 1;
	for (long t = 0; t < threads; t++)
		pthread_join(tids[t], NULL);
	printf("done\n");
	fflush(stdout);
	for (;;)
		pause();
}
