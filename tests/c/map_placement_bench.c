// SPDX-License-Identifier: GPL-2.0
/*
 * map_placement_bench: is a copy through a map slower than a local copy, or
 * are some pages slower than others? A control for the `map` column of
 * `make bench` under TCG, where one copy routine over two buffers of the
 * same size and kind can differ several times over.
 *
 *   map_placement_bench SIZE_MIB BUFFERS ROUNDS
 *
 * BUFFERS source buffers of SIZE_MIB MiB (2 MiB-aligned, MADV_HUGEPAGE,
 * written) and one destination; each source is also mapped through
 * /dev/cma (a peer fd on the process itself, CMA_IOC_MAP, read-only), so
 * that a local copy and a copy through the map read the same physical
 * pages through two page tables. Each round copies every source both ways
 * into the destination, in an order that changes per round; the best of
 * the rounds is printed per source and way (MB/s), with the map's PMD
 * count. If the map tracks its own source and the sources differ among
 * themselves, the differences are the pages', not the map's.
 *
 * Exits 1 if a map fails or shows other bytes than its source.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "libcma.h"

#define HUGE (2UL << 20)
#define MAX_BUFFERS 16

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

/* A 2 MiB-aligned anonymous buffer of @len bytes with THP asked for. */
static char *huge_buffer(size_t len)
{
	char *p = mmap(NULL, len + HUGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	char *a;

	if (p == MAP_FAILED)
		return NULL;
	a = (char *)(((uintptr_t)p + HUGE - 1) & ~(HUGE - 1));
	madvise(a, len, MADV_HUGEPAGE);
	return a;
}

/* MB/s of memcpy()s of @len bytes from @src to @dst, repeated for 256 MiB
 * at least (as `make bench` repeats a copy for 30 ms at least). */
static double copy_rate(char *dst, const char *src, size_t len)
{
	size_t i, times = len >= (256UL << 20) ? 1 : (256UL << 20) / len;
	double t0 = now();

	for (i = 0; i < times; i++) {
		memcpy(dst, src, len);
		__asm__ volatile("" : : "r"(dst) : "memory");
	}
	return (double)len * times / (now() - t0) / 1e6;
}

/* Where @p lies from the destination @d, in MiB modulo 256 MiB (QEMU's
 * software TLB is indexed by virtual page number). */
static unsigned long offset_mib(const char *p, const char *d)
{
	return (((uintptr_t)p - (uintptr_t)d) >> 20) % 256;
}

int main(int argc, char **argv)
{
	double best_local[MAX_BUFFERS] = { 0 }, best_map[MAX_BUFFERS] = { 0 };
	char *src[MAX_BUFFERS], *map[MAX_BUFFERS], *dst;
	const struct cma_map_status *st;
	size_t len, n, rounds, i, r;
	int dev, peer;

	if (argc != 4) {
		fprintf(stderr, "usage: %s SIZE_MIB BUFFERS ROUNDS\n", argv[0]);
		return 2;
	}
	len = strtoul(argv[1], NULL, 0) << 20;
	n = strtoul(argv[2], NULL, 0);
	rounds = strtoul(argv[3], NULL, 0);
	if (!len || !n || n > MAX_BUFFERS || !rounds) {
		fprintf(stderr, "bad arguments\n");
		return 2;
	}
	dev = cma_open();
	if (dev < 0) {
		perror("cma_open");
		return 1;
	}
	peer = cma_attach(dev, getpid(), 0);
	if (peer < 0) {
		perror("cma_attach");
		return 1;
	}
	dst = huge_buffer(len);
	if (!dst)
		return 1;
	memset(dst, 1, len);
	for (i = 0; i < n; i++) {
		src[i] = huge_buffer(len);
		if (!src[i])
			return 1;
		memset(src[i], (int)(i + 2), len);
		map[i] = cma_map(peer, (uintptr_t)src[i], len, PROT_READ);
		if (!map[i]) {
			perror("cma_map");
			return 1;
		}
		if (memcmp(map[i], src[i], len)) {
			fprintf(stderr, "map %zu is not its source\n", i);
			return 1;
		}
	}
	for (r = 0; r < rounds; r++) {
		for (i = 0; i < n; i++) {
			/* A different source first each round, and the two ways
			 * in turn first. */
			size_t j = (i + r) % n;
			double a, b;

			if ((r + i) % 2) {
				a = copy_rate(dst, src[j], len);
				b = copy_rate(dst, map[j], len);
			} else {
				b = copy_rate(dst, map[j], len);
				a = copy_rate(dst, src[j], len);
			}
			if (a > best_local[j])
				best_local[j] = a;
			if (b > best_map[j])
				best_map[j] = b;
		}
	}
	st = cma_map_status(peer);
	printf("# %zu MiB, %zu sources, %zu rounds; best MB/s per source: local, map, map/local; each one's distance from the destination (MiB, mod 256); PMDs mapped: %llu\n",
	       len >> 20, n, rounds, st ? (unsigned long long)st->pmds : 0ULL);
	for (i = 0; i < n; i++)
		printf("source %zu: %8.0f %8.0f %6.2f   %3lu %3lu\n", i, best_local[i], best_map[i],
		       best_map[i] / best_local[i], offset_mib(src[i], dst),
		       offset_mib(map[i], dst));
	return 0;
}
