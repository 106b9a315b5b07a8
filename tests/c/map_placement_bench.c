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
 * into the destination with glibc's memcpy() and with a plain AVX2 loop, in
 * an order that changes per round; the best of the rounds is printed per
 * source and way (MB/s), with the map's PMD count. If the map tracks its own source and the sources differ among
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
#include <immintrin.h>

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

/* A plain AVX2 loop (the bench's `vecloop`): what glibc's memcpy() does
 * not decide by the distance between the buffers. */
__attribute__((target("avx2"))) static void *vecloop(void *d, const void *s, size_t len)
{
	char *dst = d;
	const char *src = s;
	size_t i;

	for (i = 0; i + 128 <= len; i += 128) {
		__m256i a = _mm256_loadu_si256((const __m256i *)(src + i));
		__m256i b = _mm256_loadu_si256((const __m256i *)(src + i + 32));
		__m256i c = _mm256_loadu_si256((const __m256i *)(src + i + 64));
		__m256i e = _mm256_loadu_si256((const __m256i *)(src + i + 96));

		_mm256_storeu_si256((__m256i *)(dst + i), a);
		_mm256_storeu_si256((__m256i *)(dst + i + 32), b);
		_mm256_storeu_si256((__m256i *)(dst + i + 64), c);
		_mm256_storeu_si256((__m256i *)(dst + i + 96), e);
	}
	return memcpy(dst + i, src + i, len - i);
}

typedef void *(*copy_fn)(void *, const void *, size_t);

/* MB/s of @copy()s of @len bytes from @src to @dst, repeated for 256 MiB
 * at least (as `make bench` repeats a copy for 30 ms at least). */
static double copy_rate(copy_fn copy, char *dst, const char *src, size_t len)
{
	size_t i, times = len >= (256UL << 20) ? 1 : (256UL << 20) / len;
	double t0 = now();

	for (i = 0; i < times; i++) {
		copy(dst, src, len);
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
	/* Per source: memcpy() local, through the map; vecloop the same. */
	double best[MAX_BUFFERS][4] = { { 0 } };
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
			size_t j = (i + r) % n, w;

			for (w = 0; w < 4; w++) {
				size_t way = (r + i) % 2 ? w : 3 - w;
				copy_fn copy = way < 2 ? memcpy : vecloop;
				double rate = copy_rate(copy, dst, way % 2 ? map[j] : src[j], len);

				if (rate > best[j][way])
					best[j][way] = rate;
			}
		}
	}
	st = cma_map_status(peer);
	printf("# %zu MiB, %zu sources, %zu rounds, PMDs mapped: %llu; best MB/s per source:\n"
	       "#          memcpy: local    map  map/local | vecloop: local    map  map/local | from the destination (MiB mod 256): local map\n",
	       len >> 20, n, rounds, st ? (unsigned long long)st->pmds : 0ULL);
	for (i = 0; i < n; i++)
		printf("source %zu:       %6.0f %6.0f  %6.2f   |         %6.0f %6.0f  %6.2f   | %3lu %3lu\n",
		       i, best[i][0], best[i][1], best[i][1] / best[i][0], best[i][2], best[i][3],
		       best[i][3] / best[i][2], offset_mib(src[i], dst), offset_mib(map[i], dst));
	return 0;
}
