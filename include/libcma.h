/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * libcma: the C API of /dev/cma (link with -lcma; pkg-config --libs cma).
 *
 * A thin layer over the ioctls of include/uapi/cma.h: every function returns
 * what the ioctl returns, and on failure -1 with errno set (ENOENT from
 * cma_open() means the module is not loaded). The copy functions take
 * struct iovec arrays like process_vm_readv(2).
 *
 * A "target" is named on the device fd by a pid (or, with CMA_COPY_PIDFD in
 * @flags, a pidfd); on a peer fd from cma_attach() it is the attached
 * process, and @target and @flags must be 0.
 */
#ifndef _LIBCMA_H
#define _LIBCMA_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "uapi/cma.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * struct cma_report - how far a vectored copy got (cma_readv(), cma_writev()).
 * @bytes: bytes transferred.
 * @error: 0 if everything was copied, else the errno that stopped it.
 * @remote_index: the remote iovec holding the first byte not transferred.
 * @local_index: likewise, local.
 * @remote_offset: that byte's offset in its remote iovec.
 * @local_offset: likewise, local.
 */
struct cma_report {
	uint64_t bytes;
	int32_t error;
	uint32_t remote_index;
	uint32_t local_index;
	uint32_t pad;
	uint64_t remote_offset;
	uint64_t local_offset;
};

/** Opens /dev/cma (close-on-exec). Returns the fd. */
int cma_open(void);

/** Closes a device or peer fd. */
int cma_close(int fd);

/** The module's ABI version, iovec limit and CMA_FEAT_* bits; any may be NULL. */
int cma_info(int fd, uint32_t *abi_version, uint32_t *max_iov, uint64_t *features);

/**
 * Checks access to @target once and returns a peer fd (close-on-exec) that
 * copies to and from it without naming it again.
 */
int cma_attach(int fd, int target, uint64_t flags);

/**
 * Vectored copy from @target's @remote ranges into the caller's @local
 * ranges. Returns the bytes copied (fewer than asked only if something
 * stopped the copy after some bytes: @report says what and where), or -1
 * with errno if nothing was copied. @report may be NULL.
 */
ssize_t cma_readv(int fd, int target, uint64_t flags, const struct iovec *local,
		  unsigned long local_cnt, const struct iovec *remote, unsigned long remote_cnt,
		  struct cma_report *report);

/** Vectored copy from the caller's @local ranges to @target's @remote ranges. */
ssize_t cma_writev(int fd, int target, uint64_t flags, const struct iovec *local,
		   unsigned long local_cnt, const struct iovec *remote, unsigned long remote_cnt,
		   struct cma_report *report);

/**
 * One contiguous range, the short-message fast path: @len bytes from
 * @remote in @target to @local. Returns the bytes copied (at most
 * CMA_COPY1_MAX per call).
 */
ssize_t cma_read(int fd, int target, uint64_t flags, void *local, uint64_t remote, size_t len);

/** One contiguous range from @local to @remote in @target. */
ssize_t cma_write(int fd, int target, uint64_t flags, const void *local, uint64_t remote,
		  size_t len);

/** Whether @target could be copied from and to now: 0, or -1 with EPERM/ESRCH. */
int cma_probe(int fd, int target, uint64_t flags);

/**
 * Consents to copies by @pid, or by any permitted peer if @pid is 0. The pid
 * is looked up now: if the process meant has exited and its pid was reused,
 * the consent goes to the new process. Where a pidfd is at hand, use
 * cma_grant_pidfd().
 */
int cma_grant(int fd, pid_t pid);

/**
 * Consents to copies by the process @pidfd refers to (pidfd_open(2),
 * CLONE_PIDFD), never a later one given the same pid (CMA_GRANT_PIDFD): -1
 * with ESRCH if it has exited and been reaped, EBADF if @pidfd is not a
 * pidfd, EINVAL from a module without CMA_FEAT_GRANT_PIDFD.
 */
int cma_grant_pidfd(int fd, int pidfd);

/**
 * Consents to copies by the processes descended from the one @pidfd refers
 * to (CMA_GRANT_DESCENDANTS), in whatever user namespace, but not that
 * process itself: its children if @generations is 0 or 1, down to that many
 * generations otherwise (at most CMA_GRANT_MAX_GENERATIONS). An MPI rank
 * names its launcher so, and with it its sibling ranks. -1 with EINVAL for
 * too many generations, or from a module without
 * CMA_FEAT_DESCENDANTS_GRANT; else as cma_grant_pidfd().
 */
int cma_grant_descendants(int fd, int pidfd, uint32_t generations);

/**
 * Maps @len bytes of the target of the peer fd @peer at @addr (both
 * page-aligned) into the caller, shared (CMA_IOC_MAP): @prot is PROT_READ,
 * or PROT_READ | PROT_WRITE. Returns the address, or MAP_FAILED with errno
 * as the ioctl's. Loads and stores then reach the target's pages; see
 * struct cma_map for how the mapping follows the target's changes and
 * cma_map_status() for how a reader knows what it read.
 */
void *cma_map(int peer, uint64_t addr, size_t len, int prot);

/** Unmaps what cma_map() mapped: munmap(2). */
int cma_unmap(void *mapped, size_t len);

/**
 * The status page of the peer fd @peer (struct cma_map_status), mapped
 * read-only, after a first cma_map(); MAP_FAILED with errno else. Unmap it
 * with cma_unmap(page, sysconf(_SC_PAGESIZE)).
 */
const struct cma_map_status *cma_map_status(int peer);

/** Withdraws every consent the calling process has given. */
int cma_revoke(int fd);

#ifdef __cplusplus
}
#endif

#endif /* _LIBCMA_H */
