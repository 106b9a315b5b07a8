//! The ioctls themselves, on a borrowed descriptor: what [`Device`] and
//! [`Peer`] do for each call. Public (through [`crate::raw`]) only with the
//! `raw` feature.
//!
//! [`Device`]: crate::Device
//! [`Peer`]: crate::Peer

#![cfg_attr(not(feature = "raw"), allow(dead_code))]

use crate::{as_iovecs, sys, Info, Op, RemoteIoVec, Target, Transfer};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// `CMA_IOC_INFO` on `fd` (the device or a peer fd).
pub fn info(fd: BorrowedFd<'_>) -> io::Result<Info> {
    let mut raw = sys::cma_info::default();
    // SAFETY: CMA_IOC_INFO writes exactly one `struct cma_info` to the
    // pointer, which points to a live, writable `cma_info`.
    unsafe { sys::ioctl(fd, sys::CMA_IOC_INFO, &mut raw as *mut _ as usize) }?;
    Ok(raw.into())
}

/// `CMA_IOC_ATTACH` on the device `fd`: returns the new peer fd, which the
/// caller owns.
pub fn attach(fd: BorrowedFd<'_>, target: Target<'_>) -> io::Result<RawFd> {
    let (pid, flags) = target.raw();
    let args = sys::cma_attach {
        pid,
        flags: flags as u32,
        ..Default::default()
    };
    // SAFETY: CMA_IOC_ATTACH reads one live `cma_attach` and returns a
    // new fd.
    unsafe { sys::ioctl(fd, sys::CMA_IOC_ATTACH, &args as *const _ as usize) }
}

/// `CMA_IOC_GRANT` on the device `fd`: consent to copies by `peer` (a pid,
/// or a pidfd with `CMA_GRANT_PIDFD`), or by any permitted peer if `None`.
pub fn grant(fd: BorrowedFd<'_>, peer: Option<Target<'_>>) -> io::Result<()> {
    let (pid, flags) = match peer {
        None => (0, 0),
        Some(Target::Pid(pid)) => (pid, 0),
        Some(Target::PidFd(pidfd)) => (pidfd.as_raw_fd(), sys::CMA_GRANT_PIDFD),
    };
    let args = sys::cma_grant {
        pid,
        flags,
        ..Default::default()
    };
    // SAFETY: CMA_IOC_GRANT reads one `cma_grant` from a live struct.
    unsafe { sys::ioctl(fd, sys::CMA_IOC_GRANT, &args as *const _ as usize) }.map(drop)
}

/// `CMA_IOC_GRANT` on the device `fd` with `CMA_GRANT_DESCENDANTS`: consent
/// to copies by the processes descended from the one `launcher` (a pidfd)
/// refers to, down to `generations` (0 and 1: its children).
pub fn grant_descendants(
    fd: BorrowedFd<'_>,
    launcher: BorrowedFd<'_>,
    generations: u32,
) -> io::Result<()> {
    let args = sys::cma_grant {
        pid: launcher.as_raw_fd(),
        flags: sys::CMA_GRANT_PIDFD | sys::CMA_GRANT_DESCENDANTS,
        reserved: [generations.into(), 0, 0],
    };
    // SAFETY: CMA_IOC_GRANT reads one `cma_grant` from a live struct.
    unsafe { sys::ioctl(fd, sys::CMA_IOC_GRANT, &args as *const _ as usize) }.map(drop)
}

/// `CMA_IOC_REVOKE` on the device `fd`.
pub fn revoke(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: CMA_IOC_REVOKE takes no argument.
    unsafe { sys::ioctl(fd, sys::CMA_IOC_REVOKE, 0) }.map(drop)
}

/// Issues `CMA_IOC_READ`/`CMA_IOC_WRITE` on `fd` with `args`.
///
/// # Safety
///
/// For [`Op::Read`], the local ranges `args` describes are written by the
/// kernel: they must not overlap memory Rust code holds references to, other
/// than buffers lent for this purpose. (Invalid addresses are safe: the
/// kernel reports `EFAULT`.)
pub unsafe fn copy_args(fd: BorrowedFd<'_>, op: Op, args: &mut sys::cma_copy) -> io::Result<()> {
    // SAFETY: `args` is a live, writable `cma_copy`; see the caller's
    // guarantee for the memory it points to.
    unsafe { sys::ioctl(fd, op.cmd(), args as *mut _ as usize) }.map(drop)
}

/// Where copy ioctls go: a file (`/dev/cma` or a peer fd) and how requests
/// on it name the target (zero for a peer fd).
#[derive(Clone, Copy, Debug)]
pub struct Channel<'a> {
    fd: BorrowedFd<'a>,
    pid: i32,
    flags: u64,
}

impl<'a> Channel<'a> {
    /// Copies through `fd`: `/dev/cma` with `Some(target)`, or a peer fd
    /// with `None` (the target it was attached to).
    pub fn new(fd: BorrowedFd<'a>, target: Option<Target<'_>>) -> Channel<'a> {
        let (pid, flags) = target.map_or((0, 0), |t| t.raw());
        Channel { fd, pid, flags }
    }

    pub(crate) fn readv(
        self,
        local: &mut [IoSliceMut<'_>],
        remote: &[RemoteIoVec],
    ) -> io::Result<usize> {
        // SAFETY: every local iovec is a live, exclusively borrowed buffer.
        unsafe { self.copy_any(Op::Read, as_iovecs(local), as_iovecs(remote)) }
    }

    pub(crate) fn writev(self, local: &[IoSlice<'_>], remote: &[RemoteIoVec]) -> io::Result<usize> {
        // SAFETY: every local iovec is a live buffer, only read by a write.
        unsafe { self.copy_any(Op::Write, as_iovecs(local), as_iovecs(remote)) }
    }

    pub(crate) fn readv_report(
        self,
        local: &mut [IoSliceMut<'_>],
        remote: &[RemoteIoVec],
    ) -> io::Result<Transfer> {
        // SAFETY: every local iovec is a live, exclusively borrowed buffer.
        unsafe { self.copy_raw(Op::Read, as_iovecs(local), as_iovecs(remote)) }
    }

    pub(crate) fn writev_report(
        self,
        local: &[IoSlice<'_>],
        remote: &[RemoteIoVec],
    ) -> io::Result<Transfer> {
        // SAFETY: every local iovec is a live buffer, only read by a write.
        unsafe { self.copy_raw(Op::Write, as_iovecs(local), as_iovecs(remote)) }
    }

    /// One copy, by whichever ioctl costs least: `CMA_IOC_READ1`/`WRITE1`
    /// for one range on each side (falling back to the vectored ioctl on a
    /// module without it), the vectored one otherwise. Returns the bytes.
    ///
    /// # Safety
    ///
    /// As for [`copy_args`].
    unsafe fn copy_any(
        self,
        op: Op,
        local: &[sys::cma_iovec],
        remote: &[sys::cma_iovec],
    ) -> io::Result<usize> {
        if let ([l], [r]) = (local, remote) {
            if l.len == r.len && l.len <= sys::CMA_COPY1_MAX {
                // SAFETY: the caller's guarantee, for the same range.
                match unsafe { self.copy1_raw(op, l.base, r.base, l.len) } {
                    Err(e) if e.raw_os_error() == Some(libc::ENOTTY) => {}
                    other => return other.map(|n| n as usize),
                }
            }
        }
        // SAFETY: the caller's guarantee.
        let t = unsafe { self.copy_raw(op, local, remote) }?;
        Ok(t.bytes as usize)
    }

    /// One copy with `process_vm_readv(2)`'s exact contract
    /// (`CMA_COPY_PVM`): the iovec arrays are passed to the kernel as they
    /// are (a `struct iovec` has the layout of a `struct cma_iovec`), and it
    /// checks them, in the system call's order, with its errnos. Returns the
    /// bytes copied (at most `CMA_COPY1_MAX`).
    ///
    /// # Safety
    ///
    /// As for [`copy_args`], for the memory the local iovecs name. The
    /// arrays themselves may be anything: the kernel reads them.
    pub unsafe fn pvm_raw(
        self,
        op: Op,
        local: *const libc::iovec,
        local_cnt: u32,
        remote: *const libc::iovec,
        remote_cnt: u32,
    ) -> io::Result<usize> {
        let mut args = sys::cma_copy {
            local_iov: local as u64,
            remote_iov: remote as u64,
            local_cnt,
            remote_cnt,
            pid: self.pid,
            flags: self.flags | sys::CMA_COPY_PVM,
            ..Default::default()
        };
        // SAFETY: `args` is a live `cma_copy` (with CMA_COPY_PVM the kernel
        // only reads it); the caller vouches for the memory it describes.
        let n = unsafe { sys::ioctl(self.fd, op.cmd(), &mut args as *mut _ as usize) }?;
        Ok(n as usize)
    }

    /// Issues one vectored copy and returns the full [`Transfer`] report.
    ///
    /// # Safety
    ///
    /// As for [`copy_args`].
    pub unsafe fn copy_raw(
        self,
        op: Op,
        local: &[sys::cma_iovec],
        remote: &[sys::cma_iovec],
    ) -> io::Result<Transfer> {
        let mut args = sys::cma_copy::describe(local, remote, self.pid, self.flags)?;
        // SAFETY: `args` is a live `cma_copy`; its iovec arrays are live for
        // the call; the caller vouches for the memory they describe.
        unsafe { copy_args(self.fd, op, &mut args) }?;
        Ok(Transfer::from(&args))
    }

    /// Issues one single-range copy and returns the bytes copied.
    ///
    /// # Safety
    ///
    /// As for [`copy_args`], for the local range.
    pub unsafe fn copy1_raw(self, op: Op, local: u64, remote: u64, len: u64) -> io::Result<u64> {
        let args = sys::cma_copy1 {
            local,
            remote,
            len,
            pid: self.pid,
            flags: self.flags as u32,
        };
        // SAFETY: the command reads one live `cma_copy1`; the caller vouches
        // for the memory it describes.
        let n = unsafe { sys::ioctl(self.fd, op.cmd1(), &args as *const _ as usize) }?;
        Ok(n as u64)
    }

    /// Whether the target could be copied from and to: `Ok(())`, or
    /// `EPERM`/`ESRCH`.
    pub fn probe(self) -> io::Result<()> {
        // SAFETY: no iovecs: nothing is read or written.
        unsafe { self.copy_raw(Op::Read, &[], &[]) }.map(drop)
    }
}
