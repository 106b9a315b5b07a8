// SPDX-License-Identifier: GPL-2.0

//! `CMA_IOC_READ` / `CMA_IOC_WRITE` and their one-range forms `CMA_IOC_READ1`
//! / `CMA_IOC_WRITE1`, on `/dev/cma` or on a peer fd: read and validate the
//! request, find the target, run the copy engine, report the result.

use crate::access::{self, TargetId};
use crate::compat::transmute::from_bytes_copy;
use crate::compat::uaccess::{user_ptr, UserSlice};
use crate::engine::{self, Caches, Direction, IoVec};
use crate::file::DevFile;
use crate::mm::MmRef;
use crate::peer::Peer;
use crate::uapi;
use crate::user::{self, IoctlArg};
use core::mem::size_of;
use kernel::prelude::*;

/// The most iovecs on either side (`CMA_MAX_IOV`, which is `UIO_MAXIOV`).
const MAX_IOV: u32 = uapi::CMA_MAX_IOV;

/// Which file a copy ioctl came in on, which says how its target is named.
#[derive(Clone, Copy)]
pub(crate) enum Via<'a> {
    /// `/dev/cma`: by the request's pid or pidfd.
    Device(&'a DevFile),
    /// A peer fd: the target attached to; the request's pid and
    /// `CMA_COPY_PIDFD` must be zero.
    Peer(&'a Peer),
}

/// The target a request names, not yet looked up. Building it validates the
/// naming fields (`EINVAL`), before any other work.
enum Named<'a> {
    Id(TargetId, &'a DevFile),
    Peer(&'a Peer),
}

impl<'a> Named<'a> {
    fn new(via: Via<'a>, pid: i32, pidfd: bool) -> Result<Named<'a>> {
        Ok(match via {
            Via::Device(f) => Named::Id(TargetId::new(pid, pidfd), f),
            Via::Peer(_) if pid != 0 || pidfd => return Err(EINVAL),
            Via::Peer(p) => Named::Peer(p),
        })
    }

    /// Looks the target up and checks access.
    fn open(&self) -> Result<MmRef> {
        match self {
            Named::Id(id, f) => access::open(*id, f.registry()),
            Named::Peer(p) => p.target(),
        }
    }

    /// The page caches the copy may use: the peer fd's of its target's
    /// pages, and the caller's own pages' of the `/dev/cma` file the
    /// request (or its peer fd) came from.
    fn caches(&self) -> Caches<'a> {
        match self {
            Named::Id(_, f) => Caches {
                target: None,
                own: Some(f.own_cache()),
            },
            Named::Peer(p) => Caches {
                target: Some(p.cache()),
                own: Some(p.own_cache()),
            },
        }
    }
}

/// Handles one copy ioctl whose `struct cma_copy` is at `arg`.
pub(crate) fn ioctl(via: Via<'_>, arg: IoctlArg, dir: Direction) -> Result<isize> {
    let mut req: uapi::cma_copy = arg.read()?;
    if req.flags & !u64::from(uapi::CMA_COPY_FLAGS_ALL) != 0
        || req.pad != 0
        || req.pad2 != 0
        || req.reserved != [0; 2]
    {
        return Err(EINVAL);
    }
    if req.flags & u64::from(uapi::CMA_COPY_PVM) != 0 {
        return ioctl_pvm(via, &req, dir);
    }
    if req.local_cnt > MAX_IOV || req.remote_cnt > MAX_IOV {
        return Err(EINVAL);
    }
    let named = Named::new(
        via,
        req.pid,
        req.flags & u64::from(uapi::CMA_COPY_PIDFD) != 0,
    )?;
    let local = read_iovecs(req.local_iov, req.local_cnt)?;
    check_total(&local)?;
    let remote = read_iovecs(req.remote_iov, req.remote_cnt)?;
    check_total(&remote)?;
    // The result goes where the request came from. Make sure it can before
    // any byte moves: a write that changed the target and then could not
    // say how much would leave the caller no way to learn it.
    arg.write(&req)?;

    let outcome = if local.is_empty() && remote.is_empty() {
        // A probe: may the caller reach the target at all?
        named.open()?;
        engine::Outcome {
            bytes: 0,
            error: None,
        }
    } else if engine::total(&local) == 0 || engine::total(&remote) == 0 {
        // Nothing to move: like process_vm_readv, succeed without the target.
        engine::Outcome {
            bytes: 0,
            error: None,
        }
    } else {
        engine::copy(&named.open()?, named.caches(), dir, &local, &remote)
    };

    let (remote_index, remote_offset) = engine::position(&remote, outcome.bytes);
    let (local_index, local_offset) = engine::position(&local, outcome.bytes);
    // The casts are lossless: `usize` is 64 bits (`uapi.rs` asserts it), and
    // an index is at most its count, at most `MAX_IOV`.
    req.bytes = outcome.bytes as u64;
    // OVERFLOW: an `Error` is an errno in `-MAX_ERRNO..=-1`: its negation fits.
    req.error = outcome.error.map_or(0, |e| -e.to_errno());
    req.remote_index = remote_index as u32;
    req.remote_offset = remote_offset as u64;
    req.local_index = local_index as u32;
    req.local_offset = local_offset as u64;
    arg.write(&req)?;
    match outcome.error {
        Some(e) if outcome.bytes == 0 => Err(e),
        _ => Ok(0),
    }
}

/// `MAX_RW_COUNT`: the most bytes one `process_vm_readv` call moves.
const MAX_RW_COUNT: usize = uapi::CMA_COPY1_MAX as usize;

/// A copy with `CMA_COPY_PVM`: `process_vm_rw()`'s checks in its order
/// (`mm/process_vm_access.c`), so that a drop-in `process_vm_readv` built on
/// this ioctl answers every call as the system call would. Returns the bytes
/// copied; writes nothing back.
fn ioctl_pvm(via: Via<'_>, req: &uapi::cma_copy, dir: Direction) -> Result<isize> {
    let named = Named::new(
        via,
        req.pid,
        req.flags & u64::from(uapi::CMA_COPY_PIDFD) != 0,
    )?;
    // import_iovec(): every range must be user memory (one range is checked
    // after capping, several before), and the total is capped.
    let mut local = import_iovecs(req.local_iov, req.local_cnt)?;
    if local.len() == 1 {
        cap_total(&mut local);
    }
    if local.iter().any(|v| !user::access_ok(v.base, v.len)) {
        return Err(EFAULT);
    }
    cap_total(&mut local);
    if engine::total(&local) == 0 {
        return Ok(0);
    }
    let mut remote = import_iovecs(req.remote_iov, req.remote_cnt)?;
    // process_vm_rw_core() returns before the lookup if no remote page is named.
    if remote.iter().all(|v| v.len == 0) {
        return Ok(0);
    }
    // No more than MAX_RW_COUNT bytes can move, so capping the remote side
    // too changes nothing the caller sees, and keeps its total in range.
    cap_total(&mut remote);
    let outcome = engine::copy(&named.open()?, named.caches(), dir, &local, &remote);
    match outcome.error {
        // The system call reports every failure of the copy itself as EFAULT.
        Some(_) if outcome.bytes == 0 => Err(EFAULT),
        // At most MAX_RW_COUNT bytes, so the count fits.
        _ => Ok(outcome.bytes as isize),
    }
}

/// Shortens `iovs` so that their total is at most `MAX_RW_COUNT`, as
/// `import_iovec()` does.
fn cap_total(iovs: &mut [IoVec]) {
    let mut left = MAX_RW_COUNT;
    for v in iovs {
        v.len = v.len.min(left);
        // OVERFLOW: `v.len <= left` just above.
        left -= v.len;
    }
}

/// Handles one single-range copy ioctl whose `struct cma_copy1` is at `arg`.
/// Returns the bytes copied.
pub(crate) fn ioctl1(via: Via<'_>, arg: IoctlArg, dir: Direction) -> Result<isize> {
    let req: uapi::cma_copy1 = arg.read()?;
    if req.flags & !uapi::CMA_COPY1_FLAGS_ALL != 0 {
        return Err(EINVAL);
    }
    let named = Named::new(via, req.pid, req.flags & uapi::CMA_COPY_PIDFD != 0)?;
    // Lossless: at most `CMA_COPY1_MAX`. The addresses below are `u64` as
    // `usize` (64 bits): any value; one that wraps faults in the copy.
    let len = req.len.min(uapi::CMA_COPY1_MAX.into()) as usize;
    if len == 0 {
        return Ok(0);
    }
    let local = [IoVec {
        base: req.local as usize,
        len,
    }];
    let remote = [IoVec {
        base: req.remote as usize,
        len,
    }];
    let outcome = engine::copy(&named.open()?, named.caches(), dir, &local, &remote);
    match outcome.error {
        Some(e) if outcome.bytes == 0 => Err(e),
        // `len <= CMA_COPY1_MAX`, so the count fits.
        _ => Ok(outcome.bytes as isize),
    }
}

/// Iovec arrays up to this long are read without allocating (UIO_FASTIOV).
const FAST_IOV: usize = 8;

/// The iovecs of one side of a request: inline when few, else on the heap.
enum IoVecs {
    Inline([IoVec; FAST_IOV], usize),
    Heap(KVec<IoVec>),
}

impl core::ops::DerefMut for IoVecs {
    fn deref_mut(&mut self) -> &mut [IoVec] {
        match self {
            // PANIC: `n <= FAST_IOV`: only `read_iovecs` makes an `Inline`,
            // for a count of at most `FAST_IOV`, and nothing changes `n`.
            IoVecs::Inline(a, n) => &mut a[..*n],
            IoVecs::Heap(v) => v,
        }
    }
}

impl core::ops::Deref for IoVecs {
    type Target = [IoVec];

    fn deref(&self) -> &[IoVec] {
        match self {
            // PANIC: `n <= FAST_IOV`, as in `deref_mut`.
            IoVecs::Inline(a, n) => &a[..*n],
            IoVecs::Heap(v) => v,
        }
    }
}

/// Size of one `struct cma_iovec` (and of a `struct iovec`).
const IOV_SIZE: usize = size_of::<uapi::cma_iovec>();

/// Reads `cnt` iovecs from the caller's address `ptr`, lengths unchecked.
/// `EFAULT` if any part of the array is unreadable. The callers have checked
/// `cnt <= MAX_IOV`; `EINVAL` should the size still not fit.
fn read_iovecs(ptr: u64, cnt: u32) -> Result<IoVecs> {
    let cnt = cnt as usize;
    let size = cnt.checked_mul(IOV_SIZE).ok_or(EINVAL)?;
    let mut reader = UserSlice::new(user_ptr(ptr as usize), size).reader();
    if cnt <= FAST_IOV {
        let mut raw = [0u8; FAST_IOV * IOV_SIZE];
        // `size <= FAST_IOV * IOV_SIZE` here, so this is `Some`.
        reader.read_slice(raw.get_mut(..size).ok_or(EINVAL)?)?;
        let mut iovs = [IoVec { base: 0, len: 0 }; FAST_IOV];
        for (i, slot) in iovs.iter_mut().enumerate().take(cnt) {
            *slot = parse_iovec(&raw, i);
        }
        return Ok(IoVecs::Inline(iovs, cnt));
    }
    let mut raw = KVec::new();
    // Reads exactly `size` bytes: `cnt` whole iovecs.
    reader.read_all(&mut raw, GFP_KERNEL)?;
    let mut iovs = KVec::with_capacity(cnt, GFP_KERNEL)?;
    for i in 0..cnt {
        iovs.push(parse_iovec(&raw, i), GFP_KERNEL)?;
    }
    Ok(IoVecs::Heap(iovs))
}

/// `EINVAL` if a length, or the running total, of `iovs` exceeds `isize::MAX`
/// (`SSIZE_MAX`, as `rw_copy_check_uvector()` refused): past this check,
/// [`engine::total`] and every sum of lengths or offsets within `iovs` fit.
fn check_total(iovs: &[IoVec]) -> Result {
    let mut total: usize = 0;
    for v in iovs {
        total = total
            .checked_add(v.len)
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or(EINVAL)?;
    }
    Ok(())
}

/// Reads `cnt` iovecs as `iovec_from_user()` does: `EINVAL` for more than
/// `UIO_MAXIOV`; then, element by element, `EFAULT` for one that cannot be
/// read and `EINVAL` for a length over `isize::MAX`, whichever comes first.
fn import_iovecs(ptr: u64, cnt: u32) -> Result<IoVecs> {
    if cnt > MAX_IOV {
        return Err(EINVAL);
    }
    // OVERFLOW: `cnt <= MAX_IOV` (1024) just above; times 16.
    if !user::access_ok(ptr as usize, cnt as usize * IOV_SIZE) {
        return Err(EFAULT);
    }
    let bad_len = |iovs: &[IoVec]| iovs.iter().any(|v| v.len > isize::MAX as usize);
    match read_iovecs(ptr, cnt) {
        Ok(iovs) if bad_len(&iovs) => Err(EINVAL),
        Ok(iovs) => Ok(iovs),
        Err(e) if e != EFAULT => Err(e),
        Err(_) => {
            // Part of the array is unreadable: a bad length before the
            // unreadable element still decides, as in the element-wise read.
            for i in 0..cnt as usize {
                // OVERFLOW: `i < cnt <= MAX_IOV`; the address may wrap (it
                // then faults).
                let one = read_iovecs(ptr.wrapping_add((i * IOV_SIZE) as u64), 1)?;
                if bad_len(&one) {
                    return Err(EINVAL);
                }
            }
            // All readable now: the caller changed its mapping meanwhile.
            Err(EFAULT)
        }
    }
}

/// Decodes `struct cma_iovec` number `i` of `raw`, as the bytes the caller
/// wrote (`FromBytes`: every pattern is a value). An iovec not wholly in
/// `raw` reads as empty, which cannot happen for the callers: `raw` holds
/// `cnt * IOV_SIZE` bytes and `i < cnt`.
fn parse_iovec(raw: &[u8], i: usize) -> IoVec {
    let v = raw
        .chunks_exact(IOV_SIZE)
        .nth(i)
        .and_then(from_bytes_copy::<uapi::cma_iovec>)
        .unwrap_or(uapi::cma_iovec { base: 0, len: 0 });
    // The ABI's `__u64`s are `usize` on the 64-bit kernels the module
    // requires (`uapi.rs` asserts it).
    IoVec {
        base: v.base as usize,
        len: v.len as usize,
    }
}
