/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * cma: single-copy cross-process memory transfer through /dev/cma.
 *
 * This header is the whole ioctl ABI. C users include it directly; the kernel
 * module and the Rust userspace crates take it through bindgen. All fields are
 * fixed-size, naturally aligned and explicitly padded, so the layout is the
 * same for 32- and 64-bit callers.
 *
 * Extensibility: the info ioctl reports the ABI version and a feature
 * bitmask. Every flags field must be zero except for bits a feature defines,
 * and every reserved field must be zero on input; the module rejects anything
 * else with -EINVAL, so that a bit or field can be given a meaning later
 * without breaking old callers.
 */
#ifndef _UAPI_CMA_H
#define _UAPI_CMA_H

#include <linux/ioctl.h>
#include <linux/types.h>

/** Path of the character device the module registers. */
#define CMA_DEVICE_PATH "/dev/cma"

/** ABI version reported by %CMA_IOC_INFO; bumped on every ABI change. */
#define CMA_ABI_VERSION 6

/** ioctl type ("magic") byte; numbers 0x40-0x4f (free in ioctl-number.rst). */
#define CMA_IOC_MAGIC 0xCA

/** The most iovecs on either side of a copy: UIO_MAXIOV, as for process_vm_readv(2). */
#define CMA_MAX_IOV		1024U

/**
 * struct cma_info - what the loaded module supports (%CMA_IOC_INFO).
 * @abi_version: %CMA_ABI_VERSION of the module.
 * @max_iov: the largest iovec count accepted on either side (%CMA_MAX_IOV).
 * @features: bitmask of %CMA_FEAT_* the module implements.
 * @reserved: zero.
 */
struct cma_info {
	__u32 abi_version;
	__u32 max_iov;
	__u64 features;
	__u64 reserved[6];
};

/* Feature bits reported in cma_info.features. */
/** %CMA_IOC_READ and %CMA_IOC_WRITE exist (struct cma_copy). */
#define CMA_FEAT_COPY		(1ULL << 0)
/** %CMA_COPY_PIDFD: the target may be named by a pidfd. */
#define CMA_FEAT_PIDFD		(1ULL << 1)
/** %CMA_IOC_GRANT and %CMA_IOC_REVOKE exist (struct cma_grant). */
#define CMA_FEAT_GRANT		(1ULL << 2)
/** A request with no iovecs on either side probes access to the target. */
#define CMA_FEAT_PROBE		(1ULL << 3)
/** %CMA_IOC_READ1 and %CMA_IOC_WRITE1 exist (struct cma_copy1). */
#define CMA_FEAT_COPY1		(1ULL << 4)
/** %CMA_IOC_ATTACH exists (struct cma_attach) and returns peer fds. */
#define CMA_FEAT_ATTACH		(1ULL << 5)
/** %CMA_COPY_PVM: a vectored copy with process_vm_readv(2)'s exact contract. */
#define CMA_FEAT_PVM		(1ULL << 6)
/** %CMA_GRANT_PIDFD: the peer of a grant may be named by a pidfd. */
#define CMA_FEAT_GRANT_PIDFD	(1ULL << 7)
/**
 * A grant naming its peer by pidfd admits that peer from another user
 * namespace (same kuids, the target's capabilities not reaching the peer).
 */
#define CMA_FEAT_USERNS_GRANT	(1ULL << 8)
/** %CMA_GRANT_DESCENDANTS: a grant may name a launcher's descendants. */
#define CMA_FEAT_DESCENDANTS_GRANT (1ULL << 9)
/** %CMA_IOC_MAP exists (struct cma_map): a target's memory mapped in. */
#define CMA_FEAT_MAP		(1ULL << 10)
/** The status page's @caller_generation moves (older modules leave it 0). */
#define CMA_FEAT_CALLER_GENERATION (1ULL << 11)
/** Every feature bit this header defines (a module reports all of them). */
#define CMA_FEAT_ALL		(CMA_FEAT_COPY | CMA_FEAT_PIDFD | CMA_FEAT_GRANT | \
				 CMA_FEAT_PROBE | CMA_FEAT_COPY1 | CMA_FEAT_ATTACH | \
				 CMA_FEAT_PVM | CMA_FEAT_GRANT_PIDFD | CMA_FEAT_USERNS_GRANT | \
				 CMA_FEAT_DESCENDANTS_GRANT | CMA_FEAT_MAP | \
				 CMA_FEAT_CALLER_GENERATION)

/**
 * struct cma_iovec - one contiguous range, laid out like struct iovec on 64-bit.
 * @base: start address in the owning process.
 * @len: length in bytes (at most SSIZE_MAX).
 */
struct cma_iovec {
	__u64 base;
	__u64 len;
};

/* Flags for cma_copy.flags. Any other bit is rejected with -EINVAL. */
/** cma_copy.pid is a pidfd (pidfd_open(2)) rather than a pid. */
#define CMA_COPY_PIDFD		(1ULL << 0)
/**
 * CMA_COPY_PVM - process_vm_readv(2)'s contract, for drop-in replacements
 * (libcma-preload.so): the checks, their order, the errnos and the result of
 * the system call, so that a caller cannot tell the two apart.
 *
 * In the kernel's order: the local iovecs are read (more than %UIO_MAXIOV:
 * -EINVAL; unreadable: -EFAULT; a length over SSIZE_MAX: -EINVAL; a range
 * that is not user memory: -EFAULT) and their total capped at
 * %CMA_COPY1_MAX (MAX_RW_COUNT) as import_iovec() caps it; if it is zero, the
 * ioctl returns 0 there. Then the remote iovecs are read (the same errors,
 * no range check); if every remote length is zero, it returns 0. Only then is
 * the target looked up (-ESRCH) and access checked (-EPERM); a fault or any
 * other failure of the copy itself is -EFAULT if nothing moved.
 *
 * The ioctl returns the number of bytes copied and writes nothing back to
 * struct cma_copy (its output fields are left as they were).
 */
#define CMA_COPY_PVM		(1ULL << 1)
/** Every bit cma_copy.flags (__u64) may have. */
#define CMA_COPY_FLAGS_ALL	(CMA_COPY_PIDFD | CMA_COPY_PVM)

/**
 * struct cma_copy - a vectored copy between the caller and a target process.
 * @local_iov: in: address of @local_cnt struct cma_iovec in the caller.
 * @remote_iov: in: address (in the caller) of @remote_cnt struct cma_iovec
 *	describing ranges in the target.
 * @local_cnt: in: number of local iovecs, at most cma_info.max_iov
 *	(%CMA_MAX_IOV).
 * @remote_cnt: in: number of remote iovecs, at most cma_info.max_iov.
 * @pid: in: the target: a pid in the caller's pid namespace, or a pidfd
 *	with %CMA_COPY_PIDFD.
 * @pad: in: zero.
 * @flags: in: %CMA_COPY_* flags.
 * @bytes: out: bytes transferred (no 2 GiB cap).
 * @error: out: 0 if every byte was transferred; otherwise the positive errno
 *	that stopped the copy (%EFAULT, %EINTR, %ENOMEM...).
 * @remote_index: out: the remote iovec holding the first byte not
 *	transferred (@remote_cnt if none).
 * @remote_offset: out: that byte's offset within its remote iovec.
 * @local_index: out: likewise for the local side.
 * @local_offset: out: likewise for the local side.
 * @pad2: in: zero.
 * @reserved: in: zero.
 *
 * Bytes are copied in order: the local iovecs, concatenated, are paired with
 * the remote iovecs, concatenated, until either side is exhausted. If nothing
 * was transferred and something went wrong, the ioctl fails with that errno;
 * if some bytes were, it returns 0 and reports the partial count, as
 * process_vm_readv(2) does. A request with @local_cnt and @remote_cnt both
 * zero is a probe: it returns 0 if the target could be copied from (or to),
 * and fails with -ESRCH or -EPERM if not. Any other request whose local or
 * remote total is zero returns 0 without looking at the target.
 *
 * When the target is the caller's own address space (itself, or another
 * thread of it) and the local and remote ranges cannot overlap, it is one
 * copy, as between two processes. When they may (the span from the lowest
 * to the highest address of one side meets the other's), the copy runs
 * through a kernel buffer of %CMA_DIRECT_CHUNK bytes: each chunk is read
 * completely before it is written, so overlapping ranges behave like
 * memmove(3) when the destination is below the source, and like a forward
 * copy in %CMA_DIRECT_CHUNK steps otherwise.
 */
struct cma_copy {
	__u64 local_iov;
	__u64 remote_iov;
	__u32 local_cnt;
	__u32 remote_cnt;
	__s32 pid;
	__u32 pad;
	__u64 flags;
	__u64 bytes;
	__s32 error;
	__u32 remote_index;
	__u64 remote_offset;
	__u32 local_index;
	__u32 pad2;
	__u64 local_offset;
	__u64 reserved[2];
};

/** The most bytes one %CMA_IOC_READ1 or %CMA_IOC_WRITE1 moves (MAX_RW_COUNT). */
#define CMA_COPY1_MAX		0x7ffff000ULL

/**
 * struct cma_copy1 - a copy of one contiguous range (%CMA_IOC_READ1,
 *	%CMA_IOC_WRITE1): the fast path for short messages.
 * @local: in: start of the range in the caller.
 * @remote: in: start of the range in the target.
 * @len: in: bytes to copy; at most %CMA_COPY1_MAX are copied per call, as
 *	read(2) and process_vm_readv(2) cap theirs.
 * @pid: in: the target, as in struct cma_copy.
 * @flags: in: %CMA_COPY_PIDFD or zero.
 *
 * The same copy as struct cma_copy with one iovec on each side, but the
 * module reads only these 32 bytes and writes nothing back: the ioctl
 * returns the number of bytes copied, fewer than @len only if a fault (or a
 * fatal signal) stopped it after some bytes, or fails with the errno that
 * stopped it before any. A zero @len returns 0 without looking at the target.
 */
struct cma_copy1 {
	__u64 local;
	__u64 remote;
	__u64 len;
	__s32 pid;
	__u32 flags;
};

/** Every bit cma_copy1.flags (__u32) may have: %CMA_COPY_PIDFD. */
#define CMA_COPY1_FLAGS_ALL	((__u32)CMA_COPY_PIDFD)

/** Size of the staging steps of a copy within one address space. */
#define CMA_DIRECT_CHUNK	(64 * 1024)

/* Flags for cma_grant.flags. Any other bit is rejected with -EINVAL. */
/**
 * CMA_GRANT_PIDFD - cma_grant.pid is a pidfd (pidfd_open(2)) naming the peer,
 * rather than a pid: the same bit as %CMA_COPY_PIDFD. A pid number may have
 * been reused by another process by the time the grant is made; a pidfd
 * names one process for as long as it is open. Announced by
 * %CMA_FEAT_GRANT_PIDFD.
 */
#define CMA_GRANT_PIDFD		((__u32)CMA_COPY_PIDFD)
/**
 * CMA_GRANT_DESCENDANTS - with %CMA_GRANT_PIDFD only: the peers allowed are
 * the processes descended from the one the pidfd names, not that process
 * itself: its children if cma_grant.reserved[0] is 0 or 1, down to that many
 * generations otherwise (at most %CMA_GRANT_MAX_GENERATIONS, else -EINVAL).
 * An MPI rank names its launcher (mpirun, orted, a PMI proxy, slurmstepd:
 * each starts its ranks as children) and so its sibling ranks, which may be
 * in user namespaces of their own. Descent is judged from the caller's
 * parent links as they are when its access is checked: a process whose
 * parent exited was reparented and no longer descends from that parent (a
 * peer fd, which keeps a decision until the target withdraws a grant, keeps
 * it too). Like a grant naming a process by pidfd, it admits its peers from
 * other user namespaces (see %CMA_FEAT_USERNS_GRANT). Without
 * %CMA_GRANT_PIDFD: -EINVAL. Announced by %CMA_FEAT_DESCENDANTS_GRANT.
 */
#define CMA_GRANT_DESCENDANTS	((__u32)1 << 1)
/** The most generations down a %CMA_GRANT_DESCENDANTS grant may reach. */
#define CMA_GRANT_MAX_GENERATIONS 16
/** Every bit cma_grant.flags (__u32) may have. */
#define CMA_GRANT_FLAGS_ALL	(CMA_GRANT_PIDFD | CMA_GRANT_DESCENDANTS)

/**
 * struct cma_grant - consent to be copied from and to (%CMA_IOC_GRANT).
 * @pid: in: the peer allowed: a pid in the caller's pid namespace (a
 *	process or one of its threads), or 0 for any peer that passes the
 *	credential rule; with %CMA_GRANT_PIDFD, a pidfd naming the peer (a
 *	process or, with PIDFD_THREAD, one of its threads).
 * @flags: in: zero, %CMA_GRANT_PIDFD, or both it and %CMA_GRANT_DESCENDANTS.
 * @reserved: in: zero; with %CMA_GRANT_DESCENDANTS, reserved[0] is how many
 *	generations down the grant reaches (0 and 1: children).
 *
 * Unless the caller of a copy has CAP_SYS_PTRACE over the target (or the
 * module was loaded with require_consent=0), a target must have consented.
 * Grants accumulate; %CMA_IOC_REVOKE withdraws all of the calling process's
 * grants. A grant dies with the process, with its exec(), and when the file
 * it was made on is closed. Consent never widens the credential rule: the
 * peer must still be allowed by ptrace's rules.
 *
 * The peer is looked up when the grant is made, and the grant stays with
 * that process: it does not pass to a later process given the same pid. A
 * pid that names no process is -ESRCH; so is a pidfd whose process has
 * exited and been reaped. A descriptor that is not a pidfd is -EBADF. A
 * negative pid without %CMA_GRANT_PIDFD is -EINVAL.
 *
 * Errors of the registry: a process holds at most 1024 grants (-ENOSPC past
 * that). Processes that share an address space (vfork(2), CLONE_VM without
 * CLONE_THREAD) share one place in the registry: while one of them holds
 * it, a grant by another fails with -EBUSY; it passes to another once its
 * holder has exited, exec()ed, or holds no grant.
 */
struct cma_grant {
	__s32 pid;
	__u32 flags;
	__u64 reserved[3];
};

/**
 * struct cma_attach - open a peer fd on a target (%CMA_IOC_ATTACH).
 * @pid: in: the target, as in struct cma_copy.
 * @flags: in: %CMA_COPY_PIDFD or zero.
 * @reserved: in: zero.
 *
 * Checks access to the target as a copy does (-ESRCH, -EPERM, -EBADF as
 * there) and returns a new file descriptor, close-on-exec, bound to the
 * target's address space: a peer fd. The copy ioctls (%CMA_IOC_READ,
 * %CMA_IOC_WRITE, %CMA_IOC_READ1, %CMA_IOC_WRITE1) and %CMA_IOC_INFO work on
 * a peer fd, with @pid zero and without %CMA_COPY_PIDFD (else -EINVAL), and
 * copy to and from that target without looking it up again: the per-peer
 * setup an MPI library does once per rank.
 *
 * A peer fd never grants more than a copy by pid would. Before each copy the
 * module confirms that nothing the access decision rested on has changed:
 * the calling process and its credentials, the target's credentials, its
 * address space and dumpability, and no consent withdrawn. If anything has,
 * the full check is made again, and fails as a copy by pid would. Once the
 * target has exited or exec()ed, copies fail with -ESRCH: attach again.
 * A peer fd does not keep the target's memory alive after it exits.
 */
struct cma_attach {
	__s32 pid;
	__u32 flags;
	__u64 reserved[3];
};

/** Every bit cma_attach.flags (__u32) may have: %CMA_COPY_PIDFD. */
#define CMA_ATTACH_FLAGS_ALL	((__u32)CMA_COPY_PIDFD)

/**
 * struct cma_map - map a range of the target's memory into the caller
 *	(%CMA_IOC_MAP, on a peer fd only).
 * @addr: in: the target's address of the range, page-aligned, not 0.
 * @len: in: its length in bytes, page-aligned, not 0.
 * @prot: in: PROT_READ, or PROT_READ | PROT_WRITE.
 * @flags: in: zero.
 * @mapped: out: where the range now is in the caller's address space.
 * @reserved: in: zero.
 *
 * Checks access as a copy of the range would (the peer fd's decision,
 * renewed if anything changed) and maps the range shared into the caller,
 * like mmap(2) of the peer fd with @addr as the offset (which works too once
 * a first %CMA_IOC_MAP has been made). munmap(2) unmaps it. Loads and stores
 * reach the target's pages themselves: the memory of an MPI message is read
 * with memcpy(), with no system call once it is mapped.
 *
 * The mapping shows what a copy would, page by page: a page is looked up in
 * the target (faulted in there as a copy would) when the caller first
 * touches it, read-only until the caller writes (a write breaks
 * copy-on-write in the target, as process_vm_writev(2) does). Where the
 * target maps a whole huge page (THP, or hugetlbfs of 2 MiB) at a 2
 * MiB-aligned address, and the caller's mapping is aligned alike (the module
 * chooses such an address), it is mapped whole, as one PMD (counted in @pmds
 * of the status page). When the
 * target's mapping of a page changes (munmap, mremap, mprotect,
 * MADV_DONTNEED, copy-on-write after fork, THP split and collapse,
 * migration, swap, exit), @generation moves and @unstable rises as the
 * change begins, and the change takes effect only after the page is
 * unmapped from the caller, by a work item the change waits for (the
 * kernel lets no unmapping of the caller run inside the target's
 * notifier); @unstable falls when that is done, and the next touch looks
 * the page up again. So a load or store lands in the target's page before
 * the change or in the page it has after it, never in a page it gave up
 * (after fork(), the child never sees a store made after the fork). The
 * wait is bounded (100 ms, and none for a caller whose unmapping timed out
 * until it works again; none for a change that may not block): past it the
 * caller may still reach the old page (kept alive by the module's
 * reference, never freed or reused under it) until @unstable falls. A page
 * is made writable only while no change of it has begun. The target's
 * pages are not pinned: the module holds a page reference
 * only while the page is mapped, and drops it after the first change.
 * Where the target has no page a copy could reach (unmapped, PROT_NONE, a
 * device mapping, the target gone), the caller is not killed: it reads zeros
 * and its writes go nowhere, and the peer fd's status page says so.
 *
 * The status page: mmap(2) of one page of the peer fd at offset 0,
 * PROT_READ, shows a struct cma_map_status. A reader that wants exactly
 * what a copy would give reads @generation, then @unstable, copies, and
 * reads @generation again: if @unstable was not zero or @generation moved,
 * the bytes may not be the
 * target's (a change raced with the copy, or a page was missing), and the
 * copy ioctls say what a copy gives (and which errno).
 *
 * Only the process that attached maps through the fd (its threads; not a
 * child that inherited the fd, one it was passed to, or itself after an
 * exec): -EPERM for anyone else, for the status page too. Mappings are not
 * inherited across fork() and cannot be split, grown or moved (mremap):
 * -EINVAL. Each counts against the caller's address-space limits. Errors:
 * -EINVAL for a bad range, protection or flag, -ENOTTY on /dev/cma itself,
 * -ESRCH once the target has exited or exec()ed, -EPERM as a copy or for a
 * process other than the attaching one, -ENOMEM, -EINTR.
 */
struct cma_map {
	__u64 addr;
	__u64 len;
	__u32 prot;
	__u32 flags;
	__u64 mapped;
	__u64 reserved[2];
};

/**
 * struct cma_map_status - what a peer fd's maps show (its page at offset 0).
 * @generation: moves whenever a mapped range may have changed under a reader.
 * @unstable: not zero while a mapping may show bytes that are not the
 *	target's (a missing page, an unmapping not yet done).
 * @holes: touches that found no target page, since the peer fd was made.
 * @invalidations: changes of the target's mapping that unmapped mapped
 *	ranges, since then.
 * @pmds: huge pages mapped whole (one PMD each), since then.
 * @caller_generation: moves as any change of the address space of the
 *	process that attached (the only one that maps) begins (each invalidation
 *	of its mm: munmap, mremap, mprotect, madvise, fork's write-protection,
 *	migration, swap, an unmapping of one of its maps), before the change
 *	takes effect, and again as it ends. Memory of that process which a copy ioctl read or wrote
 *	whole while @caller_generation stayed the same is mapped, with the
 *	access the copy needed, for as long as @caller_generation stays the
 *	same: the pages a copy reached are present, and no page leaves and no
 *	protection changes without an invalidation. A library can then copy
 *	between such memory and a map with memcpy() and still answer as the
 *	system call would (the preload library's map path). Announced by
 *	%CMA_FEAT_CALLER_GENERATION.
 * @reserved: zero.
 */
struct cma_map_status {
	__u64 generation;
	__u64 unstable;
	__u64 holes;
	__u64 invalidations;
	__u64 pmds;
	__u64 caller_generation;
	__u64 reserved[2];
};

/** Query the module's ABI version and features. */
#define CMA_IOC_INFO	_IOR(CMA_IOC_MAGIC, 0x40, struct cma_info)
/** Copy from the target's remote iovecs to the caller's local iovecs. */
#define CMA_IOC_READ	_IOWR(CMA_IOC_MAGIC, 0x41, struct cma_copy)
/** Copy from the caller's local iovecs to the target's remote iovecs. */
#define CMA_IOC_WRITE	_IOWR(CMA_IOC_MAGIC, 0x42, struct cma_copy)
/** Consent to copies by a peer (or by any permitted peer). */
#define CMA_IOC_GRANT	_IOW(CMA_IOC_MAGIC, 0x43, struct cma_grant)
/** Withdraw every consent the calling process has given. */
#define CMA_IOC_REVOKE	_IO(CMA_IOC_MAGIC, 0x44)
/** Copy one range from the target to the caller; returns the bytes copied. */
#define CMA_IOC_READ1	_IOW(CMA_IOC_MAGIC, 0x45, struct cma_copy1)
/** Copy one range from the caller to the target; returns the bytes copied. */
#define CMA_IOC_WRITE1	_IOW(CMA_IOC_MAGIC, 0x46, struct cma_copy1)
/** Open a peer fd on a target; returns the new fd. */
#define CMA_IOC_ATTACH	_IOW(CMA_IOC_MAGIC, 0x47, struct cma_attach)
/** Map a range of a peer fd's target into the caller (struct cma_map). */
#define CMA_IOC_MAP	_IOWR(CMA_IOC_MAGIC, 0x48, struct cma_map)

#endif /* _UAPI_CMA_H */
