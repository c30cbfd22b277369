/* SPDX-License-Identifier: MIT */
/*
 * The reference wpcompare's touch figure is checked against: a plain C loop
 * reading one word of every page of a MAP_PRIVATE mapping of the image, in
 * the order wpcompare's workload uses, with no clock inside the loop and
 * nothing of wpcompare linked in. Built and run by scripts/check_touch.py.
 *
 *   plain_touch IMAGE ORDER_FILE CPU  ->  one line: ns faults
 *
 * ORDER_FILE holds the page indices (uint64, native endian) in touch order.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define SLOT_SPAN (PAGE / 8 - 64)	/* wpcompare's word slot of thread 0 in a page */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * Out of main on purpose: GCC compiles main as code run once and turns the
 * modulo below into a division instruction there, a multiply elsewhere (as in
 * wpcompare's core). Measured here (512 MiB, random order, read-back cache,
 * 21 interleaved passes): the division's loop 3.41 ms, the multiply's 3.93 ms,
 * no slot arithmetic at all 3.90 ms; the division throttles the loop into a
 * faster pass, so the two would not be the same application.
 */
static __attribute__((noinline)) uint64_t touch(const uint8_t *region, const uint64_t *order,
						size_t count)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < count; i++)
		sum += *((volatile const uint64_t *)(region + order[i] * PAGE) + (order[i] * 37) % SLOT_SPAN);
	return sum;
}

static long faults(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_minflt + ru.ru_majflt;
}

int main(int argc, char **argv)
{
	struct stat st;
	cpu_set_t cpus;

	if (argc != 4) {
		fprintf(stderr, "usage: plain_touch IMAGE ORDER_FILE CPU\n");
		return 2;
	}
	int image = open(argv[1], O_RDONLY), order_fd = open(argv[2], O_RDONLY);

	if (image < 0 || order_fd < 0 || fstat(order_fd, &st) < 0) {
		perror("open");
		return 1;
	}
	size_t count = (size_t)st.st_size / 8;
	uint64_t *order = malloc((size_t)st.st_size);

	if (!order || read(order_fd, order, (size_t)st.st_size) != st.st_size) {
		perror("read order");
		return 1;
	}
	CPU_ZERO(&cpus);
	CPU_SET(atoi(argv[3]), &cpus);
	if (sched_setaffinity(0, sizeof(cpus), &cpus) < 0) {
		perror("sched_setaffinity");
		return 1;
	}
	fstat(image, &st);
	size_t len = ((size_t)st.st_size + PAGE - 1) / PAGE * PAGE;
	/* As the mmap strategy maps it. */
	uint8_t *region = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, image, 0);

	if (region == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	long f0 = faults();
	uint64_t t0 = now_ns();
	uint64_t sum = touch(region, order, count);
	uint64_t t1 = now_ns();
	long f1 = faults();

	printf("%llu %ld %llu\n", (unsigned long long)(t1 - t0), f1 - f0, (unsigned long long)(sum & 1));
	munmap(region, len);
	free(order);
	return 0;
}
