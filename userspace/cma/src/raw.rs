//! Calls on raw descriptors and caller-built iovec arrays (the `raw`
//! feature): for the C library (`libcma.so`), the preload library and the
//! test suite, which hold descriptors and arrays from C or build malformed
//! requests on purpose. Applications use [`Device`] and [`Peer`].

use crate::{channel, sys, Device, Op, Peer, Target, Transfer};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, RawFd};

pub use crate::channel::{copy_args, info, Channel};

/// `CMA_IOC_ATTACH` on the device `fd`: returns the new peer fd, which the
/// caller owns.
pub fn attach(fd: BorrowedFd<'_>, target: Target<'_>) -> io::Result<RawFd> {
    channel::attach(fd, target)
}

/// `CMA_IOC_GRANT` on the device `fd`: consent to copies by `pid`, or by any
/// permitted peer if 0.
pub fn grant(fd: BorrowedFd<'_>, pid: i32) -> io::Result<()> {
    channel::grant(fd, Some(Target::Pid(pid)))
}

/// `CMA_IOC_GRANT` on the device `fd`: consent to copies by `peer`, named by
/// a pid or by a pidfd (`CMA_GRANT_PIDFD`, which needs
/// [`Features::GRANT_PIDFD`](crate::Features::GRANT_PIDFD)).
pub fn grant_to(fd: BorrowedFd<'_>, peer: Target<'_>) -> io::Result<()> {
    channel::grant(fd, Some(peer))
}

/// `CMA_IOC_GRANT` with `CMA_GRANT_DESCENDANTS` on the device `fd`: consent
/// to copies by the descendants of the process `launcher` (a pidfd) refers
/// to, down to `generations` (0 and 1: its children).
pub fn grant_descendants(
    fd: BorrowedFd<'_>,
    launcher: BorrowedFd<'_>,
    generations: u32,
) -> io::Result<()> {
    channel::grant_descendants(fd, launcher, generations)
}

/// `CMA_IOC_REVOKE` on the device `fd`.
pub fn revoke(fd: BorrowedFd<'_>) -> io::Result<()> {
    channel::revoke(fd)
}

impl Device {
    /// The channel for copies with `target` through this device.
    pub fn on<'a>(&'a self, target: Target<'_>) -> Channel<'a> {
        Channel::new(self.as_fd(), Some(target))
    }

    /// Issues one copy with raw iovecs and returns the full [`Transfer`]
    /// report. Fails with the errno if nothing was transferred.
    ///
    /// # Safety
    ///
    /// For [`Op::Read`], the `local` ranges are written by the kernel: they
    /// must not overlap memory Rust code holds references to, other than
    /// buffers the caller lends for this purpose. (Invalid addresses are
    /// safe: the kernel reports `EFAULT`.)
    pub unsafe fn copy_raw(
        &self,
        op: Op,
        target: Target<'_>,
        local: &[sys::cma_iovec],
        remote: &[sys::cma_iovec],
    ) -> io::Result<Transfer> {
        // SAFETY: the caller's guarantee.
        unsafe { self.on(target).copy_raw(op, local, remote) }
    }

    /// Copies one range of `len` bytes between the caller's address `local`
    /// and `remote` in `target` with `CMA_IOC_READ1`/`CMA_IOC_WRITE1`.
    /// Returns the bytes copied.
    ///
    /// # Safety
    ///
    /// As for [`Device::copy_raw`], for the local range.
    pub unsafe fn copy1_raw(
        &self,
        op: Op,
        target: Target<'_>,
        local: u64,
        remote: u64,
        len: u64,
    ) -> io::Result<u64> {
        // SAFETY: the caller's guarantee.
        unsafe { self.on(target).copy1_raw(op, local, remote, len) }
    }

    /// Issues `CMA_IOC_READ`/`CMA_IOC_WRITE` with a fully caller-built
    /// argument struct (for tests and fuzzers).
    ///
    /// # Safety
    ///
    /// As for [`Device::copy_raw`], for the memory `args` describes.
    pub unsafe fn copy_args(&self, op: Op, args: &mut sys::cma_copy) -> io::Result<()> {
        // SAFETY: the caller's guarantee.
        unsafe { copy_args(self.as_fd(), op, args) }
    }
}

impl Peer {
    /// The channel for copies with the attached target.
    pub fn on(&self) -> Channel<'_> {
        Channel::new(self.as_fd(), None)
    }

    /// Like [`Device::copy_raw`], with the attached target.
    ///
    /// # Safety
    ///
    /// As for [`Device::copy_raw`].
    pub unsafe fn copy_raw(
        &self,
        op: Op,
        local: &[sys::cma_iovec],
        remote: &[sys::cma_iovec],
    ) -> io::Result<Transfer> {
        // SAFETY: the caller's guarantee.
        unsafe { self.on().copy_raw(op, local, remote) }
    }

    /// Like [`Device::copy1_raw`], with the attached target.
    ///
    /// # Safety
    ///
    /// As for [`Device::copy_raw`], for the local range.
    pub unsafe fn copy1_raw(&self, op: Op, local: u64, remote: u64, len: u64) -> io::Result<u64> {
        // SAFETY: the caller's guarantee.
        unsafe { self.on().copy1_raw(op, local, remote, len) }
    }

    /// Like [`Device::copy_args`], on the peer fd (`pid` and the pidfd flag
    /// must be zero).
    ///
    /// # Safety
    ///
    /// As for [`Device::copy_raw`], for the memory `args` describes.
    pub unsafe fn copy_args(&self, op: Op, args: &mut sys::cma_copy) -> io::Result<()> {
        // SAFETY: the caller's guarantee.
        unsafe { copy_args(self.as_fd(), op, args) }
    }
}
