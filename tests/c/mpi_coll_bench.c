// SPDX-License-Identifier: GPL-2.0
/*
 * Collectives with large messages, timed one call at a time: MPI_Scatter and
 * MPI_Alltoall of SIZE bytes per rank, ITERS times each, with the buffers
 * allocated and freed around every call (as a program that mallocs its
 * messages does: glibc returns large blocks to the kernel, so the pages a
 * single-copy mechanism cached keep being invalidated) or, with "reuse",
 * allocated once. Rank 0 prints one line per collective: the median, the
 * slowest call and how many calls took over 4 times the median, in
 * microseconds. The data is checked.
 *
 *   mpi_coll_bench [SIZE [ITERS [fresh|reuse]]]
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int errors;

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* The byte @i of the block rank @src sends rank @dst in call @it. */
static unsigned char byte(int src, int dst, int it, size_t i)
{
	return (unsigned char)(i * 7 + (i >> 12) + src * 31 + dst * 17 + it * 5);
}

static void fill(unsigned char *b, size_t n, int src, int dst, int it)
{
	for (size_t i = 0; i < n; i += 512)
		b[i] = byte(src, dst, it, i);
}

static void check(const unsigned char *b, size_t n, int src, int dst, int it)
{
	for (size_t i = 0; i < n; i += 512)
		if (b[i] != byte(src, dst, it, i)) {
			errors++;
			return;
		}
}

static void report(const char *what, double *t, int iters)
{
	double sorted[iters];
	int slow = 0;

	memcpy(sorted, t, sizeof(sorted));
	qsort(sorted, iters, sizeof(double), cmp);
	for (int i = 0; i < iters; i++)
		slow += t[i] > 4 * sorted[iters / 2];
	printf("%s median_us=%.0f max_us=%.0f over4x=%d calls=%d\n", what,
	       sorted[iters / 2] * 1e6, sorted[iters - 1] * 1e6, slow, iters);
}

int main(int argc, char **argv)
{
	size_t size = argc > 1 ? strtoul(argv[1], NULL, 0) : 4 << 20;
	int iters = argc > 2 ? atoi(argv[2]) : 40;
	int reuse = argc > 3 && !strcmp(argv[3], "reuse");
	int rank, n;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &n);
	if (iters < 1 || size < 512 || size > (1u << 30)) {
		if (!rank)
			fprintf(stderr, "usage: mpi_coll_bench [SIZE [ITERS [fresh|reuse]]]\n");
		MPI_Abort(MPI_COMM_WORLD, 2);
	}
	double scatter[iters], alltoall[iters];
	unsigned char *sb = NULL, *rb = NULL;

	for (int it = 0; it < iters; it++) {
		if (!reuse || !sb) {
			sb = malloc(size * n);
			rb = malloc(size * n);
			if (!sb || !rb)
				MPI_Abort(MPI_COMM_WORLD, 3);
		}
		for (int d = 0; d < n; d++)
			fill(sb + d * size, size, rank, d, it);
		MPI_Barrier(MPI_COMM_WORLD);
		double t0 = MPI_Wtime();

		MPI_Scatter(sb, (int)size, MPI_BYTE, rb, (int)size, MPI_BYTE, it % n,
			    MPI_COMM_WORLD);
		scatter[it] = MPI_Wtime() - t0;
		check(rb, size, it % n, rank, it);
		MPI_Barrier(MPI_COMM_WORLD);
		t0 = MPI_Wtime();
		MPI_Alltoall(sb, (int)size, MPI_BYTE, rb, (int)size, MPI_BYTE, MPI_COMM_WORLD);
		alltoall[it] = MPI_Wtime() - t0;
		for (int s = 0; s < n; s++)
			check(rb + s * size, size, s, rank, it);
		if (!reuse) {
			free(sb);
			free(rb);
			sb = rb = NULL;
		}
	}
	MPI_Allreduce(MPI_IN_PLACE, &errors, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
	if (!rank) {
		report("scatter", scatter, iters);
		report("alltoall", alltoall, iters);
		printf("mpi_coll_bench: %s (%d ranks, %zu bytes, %s)\n", errors ? "BAD DATA" : "ok",
		       n, size, reuse ? "reuse" : "fresh");
	}
	free(sb);
	free(rb);
	MPI_Finalize();
	return errors != 0;
}
