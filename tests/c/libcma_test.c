// SPDX-License-Identifier: GPL-2.0
/*
 * The C API (libcma.so, include/libcma.h) against a real second process,
 * with the kernel's kselftest harness. Built with `pkg-config --cflags --libs
 * cma`, as a C user would build against it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libcma.h>

#include "kselftest_harness.h"

#define PAGE 4096
#define PAGES 4

/*
 * A child holding PAGES pages: page i filled with 'a' + i, except the last,
 * which it unmaps. It waits until the parent closes its pipe.
 */
FIXTURE(peer)
{
	int dev;
	pid_t pid;
	int hold;
	char *remote;
	char local[PAGES * PAGE];
};

FIXTURE_SETUP(peer)
{
	int fds[2], ready[2];
	char c;

	self->dev = cma_open();
	ASSERT_LE(0, self->dev) TH_LOG("cma_open: %s", strerror(errno));
	self->remote = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, self->remote);
	for (int i = 0; i < PAGES; i++)
		memset(self->remote + i * PAGE, 'a' + i, PAGE);
	ASSERT_EQ(0, pipe(fds));
	ASSERT_EQ(0, pipe(ready));
	self->pid = fork();
	ASSERT_LE(0, self->pid);
	if (self->pid == 0) {
		close(fds[1]);
		munmap(self->remote + (PAGES - 1) * PAGE, PAGE);
		write(ready[1], "r", 1);
		read(fds[0], &c, 1);
		_exit(0);
	}
	close(fds[0]);
	close(ready[1]);
	ASSERT_EQ(1, read(ready[0], &c, 1));
	close(ready[0]);
	self->hold = fds[1];
	memset(self->local, 0, sizeof(self->local));
}

FIXTURE_TEARDOWN(peer)
{
	close(self->hold);
	waitpid(self->pid, NULL, 0);
	cma_close(self->dev);
}

TEST_F(peer, info_matches_header)
{
	uint32_t abi = 0, max_iov = 0;
	uint64_t features = 0;

	ASSERT_EQ(0, cma_info(self->dev, &abi, &max_iov, &features));
	EXPECT_EQ(CMA_ABI_VERSION, abi);
	EXPECT_EQ(CMA_MAX_IOV, max_iov);
	EXPECT_EQ(CMA_FEAT_ALL, features);
	EXPECT_EQ(0, cma_info(self->dev, NULL, NULL, NULL));
	EXPECT_EQ(-1, cma_info(-1, &abi, NULL, NULL));
	EXPECT_EQ(EBADF, errno);
}

TEST_F(peer, readv_gathers_and_reports)
{
	struct iovec l[2] = { { self->local, 100 }, { self->local + PAGE, 200 } };
	struct iovec r[2] = { { self->remote + 10, 150 }, { self->remote + PAGE, 150 } };
	struct cma_report rep;

	ASSERT_EQ(300, cma_readv(self->dev, self->pid, 0, l, 2, r, 2, &rep));
	EXPECT_EQ(300, rep.bytes);
	EXPECT_EQ(0, rep.error);
	EXPECT_EQ(2, rep.remote_index);
	EXPECT_EQ(2, rep.local_index);
	EXPECT_EQ('a', self->local[0]);
	EXPECT_EQ('a', self->local[99]);
	EXPECT_EQ('a', self->local[PAGE]);
	EXPECT_EQ('b', self->local[PAGE + 50]);
	EXPECT_EQ(0, self->local[PAGE + 200]);
}

TEST_F(peer, partial_copy_says_where)
{
	/* The third page is readable, the fourth is gone in the child. */
	struct iovec l = { self->local, 2 * PAGE };
	struct iovec r = { self->remote + 2 * PAGE + 96, 2 * PAGE };
	struct cma_report rep;

	ASSERT_EQ(PAGE - 96, cma_readv(self->dev, self->pid, 0, &l, 1, &r, 1, &rep));
	EXPECT_EQ(PAGE - 96, rep.bytes);
	EXPECT_EQ(EFAULT, rep.error);
	EXPECT_EQ(0, rep.remote_index);
	EXPECT_EQ(PAGE - 96, rep.remote_offset);
	EXPECT_EQ(0, rep.local_index);
	EXPECT_EQ(PAGE - 96, rep.local_offset);
	EXPECT_EQ('c', self->local[0]);
	/* Nothing at all: the errno, and NULL for the report is fine. */
	r.iov_base = self->remote + 3 * PAGE;
	EXPECT_EQ(-1, cma_readv(self->dev, self->pid, 0, &l, 1, &r, 1, NULL));
	EXPECT_EQ(EFAULT, errno);
}

TEST_F(peer, write_then_read_back)
{
	char msg[64] = "written through libcma";
	char back[64] = { 0 };
	struct iovec l = { msg, sizeof(msg) }, r = { self->remote + 5, sizeof(msg) };

	ASSERT_EQ(sizeof(msg), cma_writev(self->dev, self->pid, 0, &l, 1, &r, 1, NULL));
	ASSERT_EQ(sizeof(back), cma_read(self->dev, self->pid, 0, back, (uintptr_t)self->remote + 5,
					 sizeof(back)));
	EXPECT_STREQ(msg, back);
	ASSERT_EQ(3, cma_write(self->dev, self->pid, 0, "xyz", (uintptr_t)self->remote, 3));
	ASSERT_EQ(4, cma_read(self->dev, self->pid, 0, back, (uintptr_t)self->remote, 4));
	EXPECT_EQ(0, memcmp(back, "xyza", 4));
}

TEST_F(peer, attach_copies_through_peer_fd)
{
	int peer = cma_attach(self->dev, self->pid, 0);
	struct iovec l = { self->local, 10 }, r = { self->remote + PAGE, 10 };

	ASSERT_LE(0, peer) TH_LOG("cma_attach: %s", strerror(errno));
	EXPECT_EQ(10, cma_readv(peer, 0, 0, &l, 1, &r, 1, NULL));
	EXPECT_EQ('b', self->local[9]);
	EXPECT_EQ(10, cma_read(peer, 0, 0, self->local, (uintptr_t)self->remote + 2 * PAGE, 10));
	EXPECT_EQ('c', self->local[0]);
	EXPECT_EQ(0, cma_probe(peer, 0, 0));
	/* A peer fd names its target itself. */
	EXPECT_EQ(-1, cma_read(peer, self->pid, 0, self->local, (uintptr_t)self->remote, 10));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(0, cma_close(peer));
}

TEST_F(peer, pidfd_names_target)
{
	int pidfd = syscall(SYS_pidfd_open, self->pid, 0);

	ASSERT_LE(0, pidfd);
	EXPECT_EQ(8, cma_read(self->dev, pidfd, CMA_COPY_PIDFD, self->local,
			      (uintptr_t)self->remote + PAGE, 8));
	EXPECT_EQ('b', self->local[7]);
	EXPECT_EQ(0, cma_probe(self->dev, pidfd, CMA_COPY_PIDFD));
	EXPECT_LE(0, cma_attach(self->dev, pidfd, CMA_COPY_PIDFD));
	close(pidfd);
}

TEST_F(peer, bad_arguments)
{
	struct iovec l = { self->local, 10 }, r = { self->remote, 10 };

	EXPECT_EQ(-1, cma_readv(self->dev, self->pid, 1 << 5, &l, 1, &r, 1, NULL));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, cma_readv(self->dev, self->pid, 0, &l, 1025, &r, 1, NULL));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, cma_readv(self->dev, self->pid, 0, NULL, 1, &r, 1, NULL));
	EXPECT_EQ(EFAULT, errno);
	EXPECT_EQ(-1, cma_attach(self->dev, self->pid, 1 << 7));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, cma_grant(-1, 0));
	EXPECT_EQ(EBADF, errno);
}

TEST_F(peer, probe_grant_revoke)
{
	pid_t dead = fork();

	if (dead == 0)
		_exit(0);
	waitpid(dead, NULL, 0);
	EXPECT_EQ(0, cma_probe(self->dev, self->pid, 0));
	EXPECT_EQ(-1, cma_probe(self->dev, dead, 0));
	EXPECT_EQ(ESRCH, errno);
	EXPECT_EQ(0, cma_grant(self->dev, 0));
	EXPECT_EQ(0, cma_grant(self->dev, self->pid));
	EXPECT_EQ(0, cma_revoke(self->dev));
}

TEST_F(peer, grant_by_pidfd)
{
	int pidfd = syscall(SYS_pidfd_open, self->pid, 0);
	int gone_fd;
	pid_t gone;

	ASSERT_LE(0, pidfd);
	EXPECT_EQ(0, cma_grant_pidfd(self->dev, pidfd));
	EXPECT_EQ(0, cma_grant_pidfd(self->dev, pidfd));
	EXPECT_EQ(0, cma_revoke(self->dev));
	/* Not a pidfd, no fd at all. */
	EXPECT_EQ(-1, cma_grant_pidfd(self->dev, self->dev));
	EXPECT_EQ(EBADF, errno);
	EXPECT_EQ(-1, cma_grant_pidfd(self->dev, -1));
	EXPECT_EQ(EBADF, errno);
	EXPECT_EQ(-1, cma_grant_pidfd(-1, pidfd));
	EXPECT_EQ(EBADF, errno);
	/* A process that exited and was reaped: ESRCH, whoever has its pid now. */
	gone = fork();
	ASSERT_LE(0, gone);
	if (gone == 0)
		_exit(0);
	gone_fd = syscall(SYS_pidfd_open, gone, 0);
	ASSERT_LE(0, gone_fd);
	ASSERT_EQ(gone, waitpid(gone, NULL, 0));
	EXPECT_EQ(-1, cma_grant_pidfd(self->dev, gone_fd));
	EXPECT_EQ(ESRCH, errno);
	close(gone_fd);
	close(pidfd);
}

TEST_F(peer, map)
{
	int pfd = cma_attach(self->dev, self->pid, 0);
	const struct cma_map_status *st;
	uint64_t gen;
	char *m;

	ASSERT_LE(0, pfd);
	/* The status page comes with the first map. */
	EXPECT_EQ(MAP_FAILED, (void *)cma_map_status(pfd));
	EXPECT_EQ(ENODEV, errno);
	m = cma_map(pfd, (uintptr_t)self->remote, 2 * PAGE, PROT_READ | PROT_WRITE);
	ASSERT_NE(MAP_FAILED, m) TH_LOG("cma_map: %s", strerror(errno));
	st = cma_map_status(pfd);
	ASSERT_NE(MAP_FAILED, (void *)st);
	EXPECT_EQ('a', m[0]);
	EXPECT_EQ('b', m[PAGE]);
	/* The target's pages are shared copy-on-write with this process (it
	 * forked): the first write breaks that in the target, a change of its
	 * mapping, which moves the generation. */
	m[1] = 'z';
	gen = st->generation;
	EXPECT_EQ('z', m[1]);
	EXPECT_EQ('b', m[PAGE]);
	EXPECT_EQ(0, st->unstable);
	EXPECT_EQ(gen, st->generation);
	EXPECT_EQ(1, cma_read(self->dev, self->pid, 0, self->local, (uintptr_t)self->remote + 1, 1));
	EXPECT_EQ('z', self->local[0]);
	/* The page the target does not map reads as zeros, and says so. */
	EXPECT_EQ(MAP_FAILED, cma_map(pfd, (uintptr_t)self->remote, 3, PROT_READ));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(0, cma_unmap(m, 2 * PAGE));
	m = cma_map(pfd, (uintptr_t)self->remote + (PAGES - 1) * PAGE, PAGE, PROT_READ);
	ASSERT_NE(MAP_FAILED, m);
	EXPECT_EQ(0, m[0]);
	EXPECT_LT(0, st->holes);
	EXPECT_EQ(0, cma_unmap(m, PAGE));
	EXPECT_EQ(0, cma_unmap((void *)st, PAGE));
	close(pfd);
}

TEST_F(peer, grant_descendants)
{
	int pidfd = syscall(SYS_pidfd_open, getppid(), 0);

	ASSERT_LE(0, pidfd);
	/* The test's launcher, and so this process and its siblings. */
	EXPECT_EQ(0, cma_grant_descendants(self->dev, pidfd, 1));
	EXPECT_EQ(0, cma_grant_descendants(self->dev, pidfd, CMA_GRANT_MAX_GENERATIONS));
	EXPECT_EQ(0, cma_revoke(self->dev));
	EXPECT_EQ(-1, cma_grant_descendants(self->dev, pidfd, CMA_GRANT_MAX_GENERATIONS + 1));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, cma_grant_descendants(self->dev, self->dev, 1));
	EXPECT_EQ(EBADF, errno);
	EXPECT_EQ(-1, cma_grant_descendants(-1, pidfd, 1));
	EXPECT_EQ(EBADF, errno);
	close(pidfd);
}

TEST_HARNESS_MAIN
