// SPDX-License-Identifier: GPL-2.0

//! `CMA_IOC_READ` / `CMA_IOC_WRITE` and their one-range forms `CMA_IOC_READ1`
//! / `CMA_IOC_WRITE1`, on `/dev/cma` or on a peer fd: read and validate the
//! request, find the target, run the copy engine, report the result.

use crate::engine::{self, Direction, IoVec};
use crate::mm::MmRef;
use crate::peer::Peer;
use crate::target::{self, TargetId};
use crate::uapi;
use core::mem::size_of;
use kernel::prelude::*;
use kernel::uaccess::{UserPtr, UserSlice};

/// The most iovecs on either side (`UIO_MAXIOV`).
const MAX_IOV: u32 = kernel::bindings::UIO_MAXIOV;

/// Which file a copy ioctl came in on, which says how its target is named.
#[derive(Clone, Copy)]
pub(crate) enum Via<'a> {
    /// `/dev/cma`: by the request's pid or pidfd.
    Device,
    /// A peer fd: the target attached to; the request's pid and
    /// `CMA_COPY_PIDFD` must be zero.
    Peer(&'a Peer),
}

/// The target a request names, not yet looked up. Building it validates the
/// naming fields (`EINVAL`), before any other work.
enum Named<'a> {
    Id(TargetId),
    Peer(&'a Peer),
}

impl<'a> Named<'a> {
    fn new(via: Via<'a>, pid: i32, pidfd: bool) -> Result<Named<'a>> {
        Ok(match via {
            Via::Device if pidfd => Named::Id(TargetId::PidFd(pid)),
            Via::Device => Named::Id(TargetId::Pid(pid)),
            Via::Peer(_) if pid != 0 || pidfd => return Err(EINVAL),
            Via::Peer(p) => Named::Peer(p),
        })
    }

    /// Looks the target up and checks access.
    fn open(&self) -> Result<MmRef> {
        match self {
            Named::Id(id) => Ok(target::open(*id)?.mm),
            Named::Peer(p) => p.target(),
        }
    }
}

/// Handles one copy ioctl whose `struct cma_copy` is at `arg`.
pub(crate) fn ioctl(via: Via<'_>, arg: UserPtr, dir: Direction) -> Result<isize> {
    let (mut reader, mut writer) = UserSlice::new(arg, size_of::<uapi::cma_copy>()).reader_writer();
    let mut req: uapi::cma_copy = reader.read()?;
    if req.flags & !(uapi::CMA_COPY_FLAGS_ALL as u64) != 0
        || req.pad != 0
        || req.pad2 != 0
        || req.reserved != [0; 2]
        || req.local_cnt > MAX_IOV
        || req.remote_cnt > MAX_IOV
    {
        return Err(EINVAL);
    }
    let named = Named::new(via, req.pid, req.flags & uapi::CMA_COPY_PIDFD as u64 != 0)?;
    let local = read_iovecs(req.local_iov, req.local_cnt)?;
    let remote = read_iovecs(req.remote_iov, req.remote_cnt)?;

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
        engine::copy(&named.open()?, dir, &local, &remote)
    };

    let (remote_index, remote_offset) = engine::position(&remote, outcome.bytes);
    let (local_index, local_offset) = engine::position(&local, outcome.bytes);
    req.bytes = outcome.bytes as u64;
    req.error = outcome.error.map_or(0, |e| -e.to_errno());
    req.remote_index = remote_index as u32;
    req.remote_offset = remote_offset as u64;
    req.local_index = local_index as u32;
    req.local_offset = local_offset as u64;
    writer.write(&req)?;
    match outcome.error {
        Some(e) if outcome.bytes == 0 => Err(e),
        _ => Ok(0),
    }
}

/// Handles one single-range copy ioctl whose `struct cma_copy1` is at `arg`.
/// Returns the bytes copied.
pub(crate) fn ioctl1(via: Via<'_>, arg: UserPtr, dir: Direction) -> Result<isize> {
    let req: uapi::cma_copy1 = UserSlice::new(arg, size_of::<uapi::cma_copy1>())
        .reader()
        .read()?;
    if req.flags & !(uapi::CMA_COPY_FLAGS_ALL as u32) != 0 {
        return Err(EINVAL);
    }
    let named = Named::new(via, req.pid, req.flags & uapi::CMA_COPY_PIDFD as u32 != 0)?;
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
    let outcome = engine::copy(&named.open()?, dir, &local, &remote);
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

impl core::ops::Deref for IoVecs {
    type Target = [IoVec];

    fn deref(&self) -> &[IoVec] {
        match self {
            IoVecs::Inline(a, n) => &a[..*n],
            IoVecs::Heap(v) => v,
        }
    }
}

/// Reads `cnt` iovecs from the caller's address `ptr`. `EINVAL` if a length
/// or the total exceeds `isize::MAX`, `EFAULT` if the array is unreadable.
fn read_iovecs(ptr: u64, cnt: u32) -> Result<IoVecs> {
    const SIZE: usize = size_of::<uapi::cma_iovec>();
    let cnt = cnt as usize;
    let mut reader = UserSlice::new(ptr as UserPtr, cnt * SIZE).reader();
    if cnt <= FAST_IOV {
        let mut raw = [0u8; FAST_IOV * SIZE];
        reader.read_slice(&mut raw[..cnt * SIZE])?;
        let mut iovs = [IoVec { base: 0, len: 0 }; FAST_IOV];
        parse_iovecs(&raw[..cnt * SIZE], |i, v| {
            iovs[i] = v;
            Ok(())
        })?;
        return Ok(IoVecs::Inline(iovs, cnt));
    }
    let mut raw = KVec::new();
    reader.read_all(&mut raw, GFP_KERNEL)?;
    let mut iovs = KVec::with_capacity(cnt, GFP_KERNEL)?;
    parse_iovecs(&raw, |_, v| Ok(iovs.push(v, GFP_KERNEL)?))?;
    Ok(IoVecs::Heap(iovs))
}

/// Decodes raw `struct cma_iovec`s, checking that no length and no running
/// total exceeds `isize::MAX`, and hands each to `put(index, iovec)`.
fn parse_iovecs(raw: &[u8], mut put: impl FnMut(usize, IoVec) -> Result) -> Result {
    let mut total: usize = 0;
    for (i, chunk) in raw.chunks_exact(size_of::<uapi::cma_iovec>()).enumerate() {
        let (base, len) = chunk.split_at(8);
        let base = u64::from_ne_bytes(base.try_into().map_err(|_| EINVAL)?) as usize;
        let len = u64::from_ne_bytes(len.try_into().map_err(|_| EINVAL)?) as usize;
        total = total
            .checked_add(len)
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or(EINVAL)?;
        put(i, IoVec { base, len })?;
    }
    Ok(())
}
