/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * xpmem.h: the XPMEM user API, served by cma (libxpmem.so over /dev/cma).
 *
 * Written here from XPMEM's published interface (names, types, constants
 * and calling conventions), so that programs built with XPMEM support (UCX
 * --with-xpmem, Open MPI's and MPICH's XPMEM paths) run on cma's maps
 * without the XPMEM kernel module. Link with -lxpmem (pkg-config cray-xpmem).
 *
 * What differs from XPMEM, and why (cma's security model):
 * - Access is cma's: xpmem_make() consents (CMA_IOC_GRANT) to be reached by
 *   any process that passes cma's credential rule (ptrace's, without its
 *   Yama scope), whatever @permit_value says: a mode can only narrow what a
 *   peer passing that rule may do (a segment made without owner read
 *   permission cannot be got); it never widens it to other users.
 * - A segment's bounds bound what xpmem_get() and xpmem_attach() give, in
 *   this library; the consent the module holds is per process, as all of
 *   cma's consent is. xpmem_remove() of the last segment withdraws it.
 * - Segment ids carry the owner's pid, in the owner's pid namespace: the
 *   getter must see the owner under the same pid (the same pid namespace,
 *   as MPI ranks of one job are).
 * - xpmem_attach() needs @vaddr NULL (the address is chosen for it); an
 *   attachment is a cma map (struct cma_map): it follows the owner's changes
 *   of its mapping, reads zeros where the owner maps nothing, and is not
 *   inherited by fork().
 */
#ifndef _XPMEM_H
#define _XPMEM_H

#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A segment: returned by xpmem_make(), positive. */
typedef int64_t xpmem_segid_t;
/** An access permit to a segment: returned by xpmem_get(), positive. */
typedef int64_t xpmem_apid_t;

/** What xpmem_attach() maps: @offset is an address of the segment's owner. */
struct xpmem_addr {
	xpmem_apid_t apid;
	off_t offset;
};

/** The size of a segment spanning the whole address space. */
#define XPMEM_MAXADDR_SIZE	((size_t)(-1L))

/* xpmem_get() @flags. */
#define XPMEM_RDONLY	0x1
#define XPMEM_RDWR	0x2

/* @permit_type of xpmem_make() and xpmem_get(): @permit_value is a mode. */
#define XPMEM_PERMIT_MODE	0x1

/**
 * xpmem_version() - the API version served (>= 0), or -1 with errno
 * (ENOENT: the cma module is not loaded).
 */
int xpmem_version(void);

/** xpmem_init() - opens /dev/cma; 0, or -1 with errno. Called by the others. */
int xpmem_init(void);

/**
 * xpmem_make() - makes [@vaddr, @vaddr + @size) of the caller a segment
 * others may get, with @permit_type XPMEM_PERMIT_MODE and the mode
 * (S_IRUSR, S_IWUSR, ...) in @permit_value. Returns the segment id, or -1
 * with errno: EINVAL (bad range or permit), ENOSPC (too many segments), or
 * the grant's.
 */
xpmem_segid_t xpmem_make(void *vaddr, size_t size, int permit_type, void *permit_value);

/** xpmem_remove() - removes a segment of the caller's: 0, or -1 (EINVAL). */
int xpmem_remove(xpmem_segid_t segid);

/**
 * xpmem_get() - a permit to attach segment @segid, for XPMEM_RDONLY or
 * XPMEM_RDWR (@flags): checks access to its owner as a cma copy would
 * (CMA_IOC_ATTACH). Returns the permit, or -1 with errno: EINVAL (no such
 * segment, or bad arguments), EACCES (the segment's mode refuses it), or
 * the attach's (ESRCH, EPERM).
 */
xpmem_apid_t xpmem_get(xpmem_segid_t segid, int flags, int permit_type, void *permit_value);

/** xpmem_release() - gives a permit back; attachments made with it stay. */
int xpmem_release(xpmem_apid_t apid);

/**
 * xpmem_attach() - maps @size bytes of the segment's owner at @addr.offset
 * (within the segment) into the caller, readable, and writable if the
 * permit is XPMEM_RDWR. Returns the address of @addr.offset in the caller,
 * or (void *)-1 with errno: EINVAL (outside the segment, @vaddr not NULL,
 * a bad permit), or the map's (struct cma_map).
 */
void *xpmem_attach(struct xpmem_addr addr, size_t size, void *vaddr);

/** xpmem_detach() - unmaps the attachment at @vaddr: 0, or -1 (EINVAL). */
int xpmem_detach(void *vaddr);

#ifdef __cplusplus
}
#endif

#endif /* _XPMEM_H */
