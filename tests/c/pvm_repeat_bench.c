// SPDX-License-Identifier: GPL-2.0
/*
 * pvm_repeat_bench: the same process_vm_readv of SIZE bytes, repeated, from
 * a forked child's buffer: what an MPI library does for a buffer it reads
 * again and again. Run plain, it measures the system call; under
 * libcma-preload.so, /dev/cma (with CMA_PRELOAD_MAPS=0, every call an
 * ioctl; by default, from the fourth call on, a memcpy() through a map).
 *
 *   pvm_repeat_bench SIZE CALLS
 *
 * Prints "SIZE CALLS NS_PER_CALL MB_PER_S"; exits 1 if a call fails or the
 * bytes read are not the child's.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	size_t size, calls, i;
	int ready[2];
	char *theirs, *ours;
	double t0, t1;
	pid_t child;

	if (argc != 3) {
		fprintf(stderr, "usage: %s SIZE CALLS\n", argv[0]);
		return 2;
	}
	size = strtoul(argv[1], NULL, 0);
	calls = strtoul(argv[2], NULL, 0);
	theirs = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ours = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (theirs == MAP_FAILED || ours == MAP_FAILED || pipe(ready))
		return 1;
	child = fork();
	if (child == 0) {
		/* Its own copy, written: private pages of the child. */
		char *buf = mmap(theirs, size, PROT_READ | PROT_WRITE,
				 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);

		if (buf != theirs)
			_exit(1);
		memset(buf, 0x5a, size);
		/* The parent is no ancestor-only reader under Yama's scope 1. */
		prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
		if (write(ready[1], "r", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	if (child < 0 || read(ready[0], &i, 1) != 1)
		return 1;
	{
		struct iovec l = { ours, size }, r = { theirs, size };

		t0 = now();
		for (i = 0; i < calls; i++)
			if (process_vm_readv(child, &l, 1, &r, 1, 0) != (ssize_t)size) {
				perror("process_vm_readv");
				kill(child, SIGKILL);
				return 1;
			}
		t1 = now();
	}
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	for (i = 0; i < size; i++)
		if (ours[i] != 0x5a)
			return 1;
	printf("%zu %zu %.0f %.1f\n", size, calls, (t1 - t0) / calls * 1e9,
	       size * (double)calls / (t1 - t0) / 1e6);
	return 0;
}
