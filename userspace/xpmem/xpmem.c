// SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note
/*
 * libxpmem: XPMEM's user API (include/xpmem.h) over cma's maps.
 *
 * A segment is a descriptor in the owner's memory (@segs, never reused),
 * and its id says where: the owner's pid and the descriptor's address. A
 * getter attaches a peer fd to the owner (cma's full access check), reads
 * the descriptor through it (a cma copy: the owner's consent is needed for
 * that too), and maps ranges of the owner through the peer fd (CMA_IOC_MAP).
 * The descriptor is read again at each attach, so a removed segment gives
 * nothing more.
 *
 * Segment id: bit 63 clear, bits 62..41 the owner's pid (pid_max is at most
 * 2^22), bits 40..0 the descriptor's address / 64 (user addresses below
 * 2^47).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "libcma.h"
#include "xpmem.h"

/* 2.0: the API of XPMEM 2 (hjelmn/xpmem and HPE's), served by cma. */
#define CMA_XPMEM_VERSION 0x00020000

#define SEG_MAGIC 0x636d612d78706d6dULL /* "cma-xpmm" */
#define SEGS 1024
#define PID_SHIFT 41
#define ADDR_MASK ((1ULL << PID_SHIFT) - 1)
#define PID_MAX (1LL << 22)

/* A segment, as its getters read it from the owner's memory. */
struct seg_desc {
	uint64_t magic;
	int64_t pid;
	uint64_t vaddr;
	uint64_t size;
	uint32_t mode;
	uint32_t live;
	uint64_t pad[3];
} __attribute__((aligned(64)));

_Static_assert(sizeof(struct seg_desc) == 64, "one descriptor per 64 bytes");

struct permit {
	int peer;		/* peer fd on the owner, or -1: a free slot */
	uint64_t desc;		/* the descriptor's address in the owner */
	int64_t owner;
	bool rdwr;
};

struct attachment {
	char *base;		/* page-aligned; NULL: a free slot */
	size_t len;
	char *user;		/* what xpmem_attach() returned */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int dev = -1;		/* attaches */
static int grant_fd = -1;	/* holds the grant while a segment lives */
static struct seg_desc segs[SEGS];
static unsigned int nsegs, live_segs;
static struct permit *permits;
static size_t npermits;
static struct attachment *atts;
static size_t natts;

/* What the library did, for CMA_XPMEM_STATS (a file each process appends
 * one line to at exit): the tests read it. */
static struct {
	unsigned long makes, removes, gets, releases, attaches, detaches, failed;
	unsigned long attached_bytes;
} stats;

static void count(unsigned long *counter, unsigned long n)
{
	__atomic_fetch_add(counter, n, __ATOMIC_RELAXED);
}

/*
 * A fork child starts with none of this (as XPMEM's refuses its parent's
 * ids in a child): the parent's permits are closed in it, its attachments
 * were not inherited (maps are not), its segments are the parent's, and
 * the grant stays the parent's (closing the child's copy of the fd does not
 * end it; the parent's removal of its last segment does, once the child has
 * let go of the file too).
 */
static void child_after_fork(void)
{
	size_t i;

	for (i = 0; i < npermits; i++)
		if (permits[i].peer >= 0) {
			cma_close(permits[i].peer);
			permits[i].peer = -1;
		}
	for (i = 0; i < natts; i++)
		atts[i].base = NULL;
	for (i = 0; i < nsegs; i++)
		segs[i].live = 0;
	live_segs = 0;
	if (grant_fd >= 0) {
		cma_close(grant_fd);
		grant_fd = -1;
	}
	pthread_mutex_init(&lock, NULL);
}

__attribute__((constructor)) static void setup(void)
{
	pthread_atfork(NULL, NULL, child_after_fork);
}

__attribute__((destructor)) static void report(void)
{
	const char *path = getenv("CMA_XPMEM_STATS");
	char comm[32] = "?", line[512];
	int fd, len;
	FILE *f;

	if (!path || !*path)
		return;
	f = fopen("/proc/self/comm", "re");
	if (f) {
		if (fgets(comm, sizeof(comm), f))
			comm[strcspn(comm, "\n")] = 0;
		fclose(f);
	}
	len = snprintf(line, sizeof(line),
		       "cma-xpmem: pid=%d comm=%s makes=%lu removes=%lu gets=%lu releases=%lu attaches=%lu attached_bytes=%lu detaches=%lu failed=%lu\n",
		       getpid(), comm, stats.makes, stats.removes, stats.gets, stats.releases,
		       stats.attaches, stats.attached_bytes, stats.detaches, stats.failed);
	fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (fd < 0)
		return;
	if (len > 0 && write(fd, line, (size_t)len) < 0)
		len = 0;
	close(fd);
}

static int fail(int err)
{
	count(&stats.failed, 1);
	errno = err;
	return -1;
}

/* @lock held. */
static int init_locked(void)
{
	if (dev < 0)
		dev = cma_open();
	return dev < 0 ? -1 : 0;
}

int xpmem_init(void)
{
	int ret;

	pthread_mutex_lock(&lock);
	ret = init_locked();
	pthread_mutex_unlock(&lock);
	return ret;
}

int xpmem_version(void)
{
	uint64_t features;

	if (xpmem_init())
		return fail(errno);
	if (cma_info(dev, NULL, NULL, &features))
		return fail(errno);
	if (!(features & CMA_FEAT_MAP))
		return fail(EOPNOTSUPP);
	return CMA_XPMEM_VERSION;
}

static int64_t mode_of(int permit_type, void *permit_value)
{
	uintptr_t mode = (uintptr_t)permit_value;

	if (permit_type != XPMEM_PERMIT_MODE || mode & ~(uintptr_t)07777)
		return -1;
	return (int64_t)mode;
}

xpmem_segid_t xpmem_make(void *vaddr, size_t size, int permit_type, void *permit_value)
{
	int64_t mode = mode_of(permit_type, permit_value);
	uintptr_t start = (uintptr_t)vaddr, addr;
	pid_t pid = getpid();
	struct seg_desc *d;
	xpmem_segid_t segid;

	if (mode < 0 || size == 0 || start % (uintptr_t)sysconf(_SC_PAGESIZE))
		return fail(EINVAL);
	/* The whole address space, or a range that does not wrap. */
	if (size != XPMEM_MAXADDR_SIZE && start + size < start)
		return fail(EINVAL);
	if (pid >= PID_MAX)
		return fail(EOVERFLOW);
	pthread_mutex_lock(&lock);
	if (init_locked())
		goto err;
	if (nsegs == SEGS) {
		errno = ENOSPC;
		goto err;
	}
	d = &segs[nsegs];
	addr = (uintptr_t)d;
	if (addr >> (PID_SHIFT + 6)) {
		errno = EOVERFLOW;
		goto err;
	}
	/* Consent first: a segment whose owner cannot be reached is none. */
	if (grant_fd < 0) {
		grant_fd = cma_open();
		if (grant_fd < 0)
			goto err;
		if (cma_grant(grant_fd, 0)) {
			int err = errno;

			cma_close(grant_fd);
			grant_fd = -1;
			errno = err;
			goto err;
		}
	}
	nsegs++;
	live_segs++;
	d->pid = pid;
	d->vaddr = start;
	d->size = size;
	d->mode = (uint32_t)mode;
	__atomic_store_n(&d->live, 1, __ATOMIC_RELEASE);
	__atomic_store_n(&d->magic, SEG_MAGIC, __ATOMIC_RELEASE);
	segid = ((int64_t)pid << PID_SHIFT) | (int64_t)(addr >> 6);
	pthread_mutex_unlock(&lock);
	count(&stats.makes, 1);
	return segid;
err:
	pthread_mutex_unlock(&lock);
	return fail(errno);
}

/* The descriptor @segid names in the caller, or NULL. */
static struct seg_desc *own_seg(xpmem_segid_t segid)
{
	uintptr_t addr = (uintptr_t)(segid & ADDR_MASK) << 6;

	if (segid <= 0 || (segid >> PID_SHIFT) != getpid())
		return NULL;
	if (addr < (uintptr_t)segs || addr >= (uintptr_t)&segs[nsegs])
		return NULL;
	return (struct seg_desc *)addr;
}

int xpmem_remove(xpmem_segid_t segid)
{
	struct seg_desc *d;

	pthread_mutex_lock(&lock);
	d = own_seg(segid);
	if (!d || !d->live) {
		pthread_mutex_unlock(&lock);
		return fail(EINVAL);
	}
	__atomic_store_n(&d->live, 0, __ATOMIC_RELEASE);
	/* The last one: the consent goes with it (the grant dies with its fd). */
	if (--live_segs == 0 && grant_fd >= 0) {
		cma_close(grant_fd);
		grant_fd = -1;
	}
	pthread_mutex_unlock(&lock);
	count(&stats.removes, 1);
	return 0;
}

/* Whether @mode lets a peer (of the owner's uid: cma's rule) have @rdwr. */
static bool mode_admits(uint32_t mode, bool rdwr)
{
	return (mode & S_IRUSR) && (!rdwr || (mode & S_IWUSR));
}

/* Reads the descriptor at @addr of the peer fd @peer's target, and checks it
 * names a live segment of @owner: 0, or -1 with errno. */
static int read_desc(int peer, uint64_t addr, int64_t owner, struct seg_desc *d)
{
	ssize_t n = cma_read(peer, 0, 0, d, addr, sizeof(*d));

	if (n < 0)
		return -1;
	if (n != sizeof(*d) || d->magic != SEG_MAGIC || d->pid != owner)
		return fail(EINVAL);
	if (!d->live)
		return fail(ENOENT);
	return 0;
}

xpmem_apid_t xpmem_get(xpmem_segid_t segid, int flags, int permit_type, void *permit_value)
{
	int64_t owner = segid >> PID_SHIFT;
	uint64_t addr = (uint64_t)(segid & ADDR_MASK) << 6;
	bool rdwr = flags == XPMEM_RDWR;
	struct seg_desc d;
	struct permit *p;
	size_t i;
	int peer;

	if (segid <= 0 || owner == 0 || (flags != XPMEM_RDONLY && flags != XPMEM_RDWR))
		return fail(EINVAL);
	/* XPMEM ignores the getter's permit: the owner's mode decides. */
	(void)permit_type;
	(void)permit_value;
	if (xpmem_init())
		return fail(errno);
	peer = cma_attach(dev, (int)owner, 0);
	if (peer < 0)
		return fail(errno);
	if (read_desc(peer, addr, owner, &d)) {
		int err = errno == ENOENT ? EINVAL : errno;

		cma_close(peer);
		return fail(err);
	}
	if (!mode_admits(d.mode, rdwr)) {
		cma_close(peer);
		return fail(EACCES);
	}
	pthread_mutex_lock(&lock);
	for (i = 0; i < npermits && permits[i].peer >= 0; i++)
		;
	if (i == npermits) {
		p = realloc(permits, (npermits + 16) * sizeof(*p));
		if (!p) {
			pthread_mutex_unlock(&lock);
			cma_close(peer);
			return fail(ENOMEM);
		}
		permits = p;
		for (size_t j = npermits; j < npermits + 16; j++)
			permits[j].peer = -1;
		npermits += 16;
	}
	permits[i] = (struct permit){ .peer = peer, .desc = addr, .owner = owner, .rdwr = rdwr };
	pthread_mutex_unlock(&lock);
	count(&stats.gets, 1);
	return (xpmem_apid_t)i + 1;
}

/* The permit @apid (a copy), @lock held: 0, or -1 (EINVAL). */
static int permit_of(xpmem_apid_t apid, struct permit *out)
{
	if (apid <= 0 || (uint64_t)apid > npermits || permits[apid - 1].peer < 0)
		return fail(EINVAL);
	*out = permits[apid - 1];
	return 0;
}

int xpmem_release(xpmem_apid_t apid)
{
	struct permit p;

	pthread_mutex_lock(&lock);
	if (permit_of(apid, &p)) {
		pthread_mutex_unlock(&lock);
		return -1;
	}
	permits[apid - 1].peer = -1;
	pthread_mutex_unlock(&lock);
	/* Attachments keep the peer fd's file: they stay. */
	cma_close(p.peer);
	count(&stats.releases, 1);
	return 0;
}

void *xpmem_attach(struct xpmem_addr addr, size_t size, void *vaddr)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t offset = (uint64_t)addr.offset, start, end;
	struct attachment *a;
	struct seg_desc d;
	struct permit p;
	char *base;
	size_t i;

	if (vaddr || size == 0 || addr.offset < 0 || offset + size < offset)
		return (void *)(intptr_t)fail(EINVAL);
	pthread_mutex_lock(&lock);
	if (permit_of(addr.apid, &p)) {
		pthread_mutex_unlock(&lock);
		return MAP_FAILED;
	}
	/* The fd stays open while we use it: a release closes it only after
	 * taking the lock, and an attachment made meanwhile keeps its file. */
	p.peer = dup(p.peer);
	pthread_mutex_unlock(&lock);
	if (p.peer < 0)
		return (void *)(intptr_t)fail(errno);
	/* The segment as it is now: removed, or the range outside it, is EINVAL. */
	if (read_desc(p.peer, p.desc, p.owner, &d) ||
	    offset < d.vaddr || (d.size != XPMEM_MAXADDR_SIZE && offset + size - d.vaddr > d.size)) {
		cma_close(p.peer);
		return (void *)(intptr_t)fail(EINVAL);
	}
	start = offset & ~(page - 1);
	end = (offset + size + page - 1) & ~(page - 1);
	if (end < start) {
		cma_close(p.peer);
		return (void *)(intptr_t)fail(EINVAL);
	}
	base = cma_map(p.peer, start, end - start, PROT_READ | (p.rdwr ? PROT_WRITE : 0));
	{
		int err = errno;

		cma_close(p.peer);
		errno = err;
	}
	if (base == MAP_FAILED)
		return (void *)(intptr_t)fail(errno);
	pthread_mutex_lock(&lock);
	for (i = 0; i < natts && atts[i].base; i++)
		;
	if (i == natts) {
		a = realloc(atts, (natts + 64) * sizeof(*a));
		if (!a) {
			pthread_mutex_unlock(&lock);
			cma_unmap(base, end - start);
			return (void *)(intptr_t)fail(ENOMEM);
		}
		atts = a;
		memset(&atts[natts], 0, 64 * sizeof(*a));
		natts += 64;
	}
	atts[i] = (struct attachment){ .base = base, .len = end - start,
				       .user = base + (offset - start) };
	pthread_mutex_unlock(&lock);
	count(&stats.attaches, 1);
	count(&stats.attached_bytes, end - start);
	return base + (offset - start);
}

int xpmem_detach(void *vaddr)
{
	struct attachment a = { 0 };
	size_t i;

	pthread_mutex_lock(&lock);
	for (i = 0; i < natts; i++)
		if (atts[i].base && atts[i].user == vaddr) {
			a = atts[i];
			atts[i].base = NULL;
			break;
		}
	pthread_mutex_unlock(&lock);
	if (!a.base)
		return fail(EINVAL);
	count(&stats.detaches, 1);
	return cma_unmap(a.base, a.len);
}
