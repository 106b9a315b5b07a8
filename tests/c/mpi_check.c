// SPDX-License-Identifier: GPL-2.0
/*
 * An MPI program that checks every byte it moves: point to point from 4 KiB
 * to 16 MiB (both directions between every pair of ranks), and the vector
 * collectives (MPI_Gatherv, MPI_Scatterv, MPI_Alltoallv) with per-rank sizes
 * large enough for the single-copy path. Built with Open MPI's and MPICH's
 * mpicc; run through libcma-preload.so by tests/mpi.sh. Prints
 * "mpi_check: ok" from rank 0 and exits 0 if all data arrived intact.
 */
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int errors;

/* The byte at @i of a message from @src to @dst in round @round. */
static unsigned char pattern(int src, int dst, int round, size_t i)
{
	return (unsigned char)(i * 31 + src * 7 + dst * 13 + round * 3 + (i >> 12));
}

static void fill(unsigned char *b, size_t n, int src, int dst, int round)
{
	for (size_t i = 0; i < n; i++)
		b[i] = pattern(src, dst, round, i);
}

static void verify(const unsigned char *b, size_t n, int src, int dst, int round,
		   const char *what)
{
	for (size_t i = 0; i < n; i++) {
		if (b[i] != pattern(src, dst, round, i)) {
			fprintf(stderr, "mpi_check: %s %d->%d round %d: byte %zu of %zu is %u, not %u\n",
				what, src, dst, round, i, n, b[i], pattern(src, dst, round, i));
			errors++;
			return;
		}
	}
}

static void point_to_point(int rank, int size)
{
	size_t max = 16 << 20;
	unsigned char *s = malloc(max), *r = malloc(max);
	int round = 0;

	for (size_t n = 4096; n <= max; n *= 4, round++) {
		for (int peer = 0; peer < size; peer++) {
			if (peer == rank)
				continue;
			fill(s, n, rank, peer, round);
			memset(r, 0, n);
			MPI_Sendrecv(s, (int)n, MPI_BYTE, peer, round, r, (int)n, MPI_BYTE, peer,
				     round, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
			verify(r, n, peer, rank, round, "sendrecv");
		}
	}
	free(s);
	free(r);
}

/* Bytes rank @i contributes in the vector collectives: 64 KiB to 448 KiB. */
static int share(int i)
{
	return (64 << 10) * (1 + i % 7) + 8 * i;
}

static void collectives(int rank, int size)
{
	int *counts = calloc(size, sizeof(int)), *displs = calloc(size, sizeof(int));
	int *rcounts = calloc(size, sizeof(int)), *rdispls = calloc(size, sizeof(int));
	size_t total = 0;
	unsigned char *all, *mine;

	for (int i = 0; i < size; i++) {
		counts[i] = share(i);
		displs[i] = (int)total;
		total += counts[i];
	}
	all = malloc(total);
	mine = malloc(share(rank));

	/* Gatherv to each root in turn. */
	for (int root = 0; root < size; root++) {
		fill(mine, share(rank), rank, root, 100);
		memset(all, 0, total);
		MPI_Gatherv(mine, share(rank), MPI_BYTE, all, counts, displs, MPI_BYTE, root,
			    MPI_COMM_WORLD);
		if (rank == root)
			for (int i = 0; i < size; i++)
				verify(all + displs[i], counts[i], i, root, 100, "gatherv");
	}
	/* Scatterv from each root in turn. */
	for (int root = 0; root < size; root++) {
		if (rank == root)
			for (int i = 0; i < size; i++)
				fill(all + displs[i], counts[i], root, i, 200);
		memset(mine, 0, share(rank));
		MPI_Scatterv(all, counts, displs, MPI_BYTE, mine, share(rank), MPI_BYTE, root,
			     MPI_COMM_WORLD);
		verify(mine, share(rank), root, rank, 200, "scatterv");
	}
	/* Alltoallv: rank i sends share(i + j) bytes to rank j. */
	{
		size_t st = 0, rt = 0;
		unsigned char *sb, *rb;

		for (int j = 0; j < size; j++) {
			counts[j] = share(rank + j);
			displs[j] = (int)st;
			st += counts[j];
			rcounts[j] = share(j + rank);
			rdispls[j] = (int)rt;
			rt += rcounts[j];
		}
		sb = malloc(st);
		rb = calloc(1, rt);
		for (int j = 0; j < size; j++)
			fill(sb + displs[j], counts[j], rank, j, 300);
		MPI_Alltoallv(sb, counts, displs, MPI_BYTE, rb, rcounts, rdispls, MPI_BYTE,
			      MPI_COMM_WORLD);
		for (int j = 0; j < size; j++)
			verify(rb + rdispls[j], rcounts[j], j, rank, 300, "alltoallv");
		free(sb);
		free(rb);
	}
	free(all);
	free(mine);
	free(counts);
	free(displs);
	free(rcounts);
	free(rdispls);
}

int main(int argc, char **argv)
{
	int rank, size, total;

	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	point_to_point(rank, size);
	collectives(rank, size);
	MPI_Allreduce(&errors, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
	if (rank == 0)
		printf("mpi_check: %s (%d ranks, %d errors)\n", total ? "FAILED" : "ok", size, total);
	MPI_Finalize();
	return total ? 1 : 0;
}
