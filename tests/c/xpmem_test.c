// SPDX-License-Identifier: GPL-2.0
/*
 * libxpmem.so (XPMEM's API over cma's maps, include/xpmem.h) between two
 * real processes of an unprivileged uid, with the kernel's kselftest harness.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libcma.h>
#include <xpmem.h>

#include "kselftest_harness.h"

#define PAGE 4096
#define PAGES 4
#define NOBODY 65534

/* The uid the test runs as: an unprivileged one, dumpable (cma's rule
 * needs it), so that consent decides, not CAP_SYS_PTRACE. */
static int become_nobody(void)
{
	if (setresgid(NOBODY, NOBODY, NOBODY) || setresuid(NOBODY, NOBODY, NOBODY))
		return -1;
	return prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
}

/* What the owner tells the test. */
struct made {
	xpmem_segid_t seg;	/* PAGES pages of 'a' + page, mode 0600 */
	xpmem_segid_t whole;	/* the whole address space, mode 0600 */
	xpmem_segid_t rdonly;	/* the same pages, mode 0400 */
	uint64_t buf;
	int err;
};

/*
 * The owner: makes the segments, then answers commands until its pipe
 * closes: 'r' removes every segment (answers '0' or the errno), 'c' answers
 * the first byte of its buffer.
 */
FIXTURE(xp)
{
	pid_t owner;
	int cmd, reply;
	struct made made;
};

FIXTURE_SETUP(xp)
{
	int to[2], from[2];
	char c;

	ASSERT_EQ(0, pipe(to));
	ASSERT_EQ(0, pipe(from));
	self->owner = fork();
	ASSERT_LE(0, self->owner);
	if (self->owner == 0) {
		struct made m = { 0 };
		char *buf;

		close(to[1]);
		close(from[0]);
		buf = mmap(NULL, PAGES * PAGE, PROT_READ | PROT_WRITE,
			   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (buf == MAP_FAILED || become_nobody())
			_exit(1);
		for (int i = 0; i < PAGES; i++)
			memset(buf + i * PAGE, 'a' + i, PAGE);
		m.buf = (uintptr_t)buf;
		m.seg = xpmem_make(buf, PAGES * PAGE, XPMEM_PERMIT_MODE, (void *)0600);
		m.whole = xpmem_make(NULL, XPMEM_MAXADDR_SIZE, XPMEM_PERMIT_MODE, (void *)0600);
		m.rdonly = xpmem_make(buf, PAGES * PAGE, XPMEM_PERMIT_MODE, (void *)0400);
		m.err = m.seg < 0 || m.whole < 0 || m.rdonly < 0 ? errno : 0;
		if (write(from[1], &m, sizeof(m)) != sizeof(m))
			_exit(1);
		while (read(to[0], &c, 1) == 1) {
			if (c == 'r') {
				c = xpmem_remove(m.seg) || xpmem_remove(m.whole) ||
				    xpmem_remove(m.rdonly) ? (char)errno : '0';
			} else {
				c = buf[0];
			}
			if (write(from[1], &c, 1) != 1)
				_exit(1);
		}
		_exit(0);
	}
	close(to[0]);
	close(from[1]);
	self->cmd = to[1];
	self->reply = from[0];
	ASSERT_EQ(sizeof(self->made), read(self->reply, &self->made, sizeof(self->made)));
	ASSERT_EQ(0, self->made.err) TH_LOG("xpmem_make: %s", strerror(self->made.err));
	ASSERT_EQ(0, become_nobody());
}

FIXTURE_TEARDOWN(xp)
{
	close(self->cmd);
	close(self->reply);
	waitpid(self->owner, NULL, 0);
}

static char ask(struct __test_metadata *_metadata, FIXTURE_DATA(xp) *self, char c)
{
	EXPECT_EQ(1, write(self->cmd, &c, 1));
	EXPECT_EQ(1, read(self->reply, &c, 1));
	return c;
}

TEST_F(xp, version_and_ids)
{
	EXPECT_LE(0, xpmem_version());
	EXPECT_LT(0, self->made.seg);
	EXPECT_NE(self->made.seg, self->made.whole);
	/* Not ours to remove: the owner's. */
	EXPECT_EQ(-1, xpmem_remove(self->made.seg));
	EXPECT_EQ(EINVAL, errno);
}

/* Read and write both ways through an attachment, at a page offset and at
 * an unaligned one. */
TEST_F(xp, attach_reads_and_writes)
{
	xpmem_apid_t apid = xpmem_get(self->made.seg, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
	struct xpmem_addr addr = { .apid = apid, .offset = (off_t)self->made.buf };
	char *p, *q;

	ASSERT_LT(0, apid) TH_LOG("xpmem_get: %s", strerror(errno));
	p = xpmem_attach(addr, PAGES * PAGE, NULL);
	ASSERT_NE(MAP_FAILED, p) TH_LOG("xpmem_attach: %s", strerror(errno));
	for (int i = 0; i < PAGES; i++) {
		EXPECT_EQ('a' + i, p[i * PAGE]);
		EXPECT_EQ('a' + i, p[i * PAGE + PAGE - 1]);
	}
	p[0] = 'Z';
	EXPECT_EQ('Z', ask(_metadata, self, 'c'));
	addr.offset = (off_t)self->made.buf + PAGE + 100;
	q = xpmem_attach(addr, 10, NULL);
	ASSERT_NE(MAP_FAILED, q);
	EXPECT_EQ(0, ((uintptr_t)q) % PAGE - 100);
	EXPECT_EQ('b', q[0]);
	EXPECT_EQ(0, xpmem_detach(q));
	EXPECT_EQ(0, xpmem_detach(p));
	EXPECT_EQ(-1, xpmem_detach(p));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(0, xpmem_release(apid));
	EXPECT_EQ(-1, xpmem_release(apid));
	EXPECT_EQ(EINVAL, errno);
}

/* A whole-address-space segment, as UCX, Open MPI and MPICH make it. */
TEST_F(xp, whole_address_space)
{
	xpmem_apid_t apid = xpmem_get(self->made.whole, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
	struct xpmem_addr addr = { .apid = apid, .offset = (off_t)self->made.buf + 2 * PAGE };
	char *p;

	ASSERT_LT(0, apid);
	p = xpmem_attach(addr, 2 * PAGE, NULL);
	ASSERT_NE(MAP_FAILED, p);
	EXPECT_EQ('c', p[0]);
	EXPECT_EQ('d', p[PAGE]);
	EXPECT_EQ(0, xpmem_detach(p));
	EXPECT_EQ(0, xpmem_release(apid));
}

/* Outside the segment, a fixed address, a bad permit or flags: EINVAL; a
 * mode that refuses writing: EACCES for XPMEM_RDWR. */
TEST_F(xp, refusals)
{
	xpmem_apid_t apid = xpmem_get(self->made.seg, XPMEM_RDONLY, XPMEM_PERMIT_MODE, NULL);
	struct xpmem_addr addr = { .apid = apid, .offset = (off_t)self->made.buf };
	char *p;

	ASSERT_LT(0, apid);
	addr.offset = (off_t)self->made.buf + PAGE;
	EXPECT_EQ(MAP_FAILED, xpmem_attach(addr, PAGES * PAGE, NULL));
	EXPECT_EQ(EINVAL, errno);
	addr.offset = (off_t)self->made.buf - PAGE;
	EXPECT_EQ(MAP_FAILED, xpmem_attach(addr, PAGE, NULL));
	EXPECT_EQ(EINVAL, errno);
	addr.offset = (off_t)self->made.buf;
	EXPECT_EQ(MAP_FAILED, xpmem_attach(addr, PAGE, (void *)0x10000000));
	EXPECT_EQ(EINVAL, errno);
	/* Read-only permit: the map is not writable (mprotect cannot widen it). */
	p = xpmem_attach(addr, PAGE, NULL);
	ASSERT_NE(MAP_FAILED, p);
	EXPECT_EQ('a', p[0]);
	EXPECT_EQ(-1, mprotect(p, PAGE, PROT_READ | PROT_WRITE));
	EXPECT_EQ(0, xpmem_detach(p));
	addr.apid = apid + 1000;
	EXPECT_EQ(MAP_FAILED, xpmem_attach(addr, PAGE, NULL));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(0, xpmem_release(apid));

	EXPECT_EQ(-1, xpmem_get(self->made.rdonly, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL));
	EXPECT_EQ(EACCES, errno);
	apid = xpmem_get(self->made.rdonly, XPMEM_RDONLY, XPMEM_PERMIT_MODE, NULL);
	EXPECT_LT(0, apid);
	EXPECT_EQ(0, xpmem_release(apid));
	EXPECT_EQ(-1, xpmem_get(self->made.seg, 3, XPMEM_PERMIT_MODE, NULL));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, xpmem_get(self->made.rdonly + 1, XPMEM_RDONLY, XPMEM_PERMIT_MODE, NULL));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, xpmem_make(NULL, PAGE, 2, (void *)0600));
	EXPECT_EQ(EINVAL, errno);
}

/*
 * Removing the segments: no new permit or attachment, an attachment made
 * before reads zeros, and with the last one the owner's consent goes: a
 * copy from it is refused too.
 */
TEST_F(xp, remove_withdraws)
{
	xpmem_apid_t apid = xpmem_get(self->made.seg, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL);
	struct xpmem_addr addr = { .apid = apid, .offset = (off_t)self->made.buf };
	int dev = cma_open();
	char byte;

	volatile char *p;
	int waited;

	ASSERT_LT(0, apid);
	ASSERT_LE(0, dev);
	p = xpmem_attach(addr, PAGE, NULL);
	ASSERT_NE(MAP_FAILED, p);
	EXPECT_EQ('a', p[0]);
	EXPECT_EQ(1, cma_read(dev, self->owner, 0, &byte, self->made.buf, 1));
	EXPECT_EQ('0', ask(_metadata, self, 'r'));
	/* The attachment goes too: soon (the module's work item), a hole. */
	for (waited = 0; p[0] != 0 && waited < 10000; waited++)
		usleep(1000);
	EXPECT_EQ(0, p[0]);
	EXPECT_EQ(0, xpmem_detach((void *)p));
	EXPECT_EQ(MAP_FAILED, xpmem_attach(addr, PAGE, NULL));
	EXPECT_EQ(EINVAL, errno);
	EXPECT_EQ(-1, xpmem_get(self->made.whole, XPMEM_RDWR, XPMEM_PERMIT_MODE, NULL));
	EXPECT_EQ(EPERM, errno);
	EXPECT_EQ(-1, cma_read(dev, self->owner, 0, &byte, self->made.buf, 1));
	EXPECT_EQ(EPERM, errno);
	EXPECT_EQ(0, xpmem_release(apid));
	cma_close(dev);
}

TEST_HARNESS_MAIN
