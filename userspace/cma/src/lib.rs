//! Userspace access to `/dev/cma`, the cma kernel module's device.
//!
//! cma copies memory between processes in one copy (Cross Memory Attach).
//! [`Device::open`] opens the device, [`Device::info`] reports what the
//! loaded module supports, and the copy calls are shaped like the `nix`
//! crate's `process_vm_readv`/`process_vm_writev`:
//!
//! ```no_run
//! use std::io::IoSliceMut;
//! use cma::{Device, RemoteIoVec, Target};
//! # fn main() -> std::io::Result<()> {
//! # let (pid, addr) = (1234, 0x7f00_0000_0000);
//! let dev = Device::open()?;
//! let mut buf = [0u8; 64];
//! let n = dev.process_vm_readv(Target::Pid(pid), &mut [IoSliceMut::new(&mut buf)],
//!                              &[RemoteIoVec { base: addr, len: 64 }])?;
//! # Ok(()) }
//! ```
//!
//! A target must consent ([`Device::grant`]) unless the caller has
//! `CAP_SYS_PTRACE` over it. To copy to and from one target many times,
//! attach to it once ([`Device::attach`]) and copy through the [`Peer`]: that
//! skips the lookup and access check each copy by pid pays for. The raw ABI, generated from the C header
//! `include/uapi/cma.h`, is in [`sys`].

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

pub mod sys;

/// The path of the device the module registers.
pub const DEVICE_PATH: &str = "/dev/cma";

/// What went wrong when opening the device.
#[derive(Debug)]
pub enum OpenError {
    /// The device node does not exist: the module is not loaded.
    NotLoaded,
    /// The device exists but could not be opened.
    Io(io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::NotLoaded => write!(
                f,
                "{DEVICE_PATH} does not exist: the cma module is not loaded (insmod cma.ko)"
            ),
            OpenError::Io(e) => write!(f, "cannot open {DEVICE_PATH}: {e}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::NotLoaded => None,
            OpenError::Io(e) => Some(e),
        }
    }
}

impl From<OpenError> for io::Error {
    fn from(e: OpenError) -> io::Error {
        let msg = e.to_string();
        match e {
            OpenError::NotLoaded => io::Error::new(io::ErrorKind::NotFound, msg),
            OpenError::Io(inner) => io::Error::new(inner.kind(), msg),
        }
    }
}

/// What the loaded module supports, from `CMA_IOC_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// The module's ABI version.
    pub abi_version: u32,
    /// The most iovecs accepted on either side of a request.
    pub max_iov: u32,
    /// `CMA_FEAT_*` bits the module implements.
    pub features: u64,
}

/// A range in the target's address space (the same shape as `nix`'s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteIoVec {
    /// Start address in the target.
    pub base: usize,
    /// Length in bytes.
    pub len: usize,
}

/// How to name the target process.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A pid (or thread id) in the caller's pid namespace.
    Pid(i32),
    /// A pidfd (`pidfd_open(2)`).
    PidFd(BorrowedFd<'a>),
}

impl Target<'_> {
    fn raw(&self) -> (i32, u64) {
        match self {
            Target::Pid(pid) => (*pid, 0),
            Target::PidFd(fd) => (fd.as_raw_fd(), sys::CMA_COPY_PIDFD as u64),
        }
    }
}

/// Which way a copy goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// From the target to the caller (`CMA_IOC_READ`).
    Read,
    /// From the caller to the target (`CMA_IOC_WRITE`).
    Write,
}

impl Op {
    /// The vectored command: `CMA_IOC_READ` or `CMA_IOC_WRITE`.
    pub fn cmd(self) -> u32 {
        match self {
            Op::Read => sys::CMA_IOC_READ,
            Op::Write => sys::CMA_IOC_WRITE,
        }
    }

    /// The one-range command: `CMA_IOC_READ1` or `CMA_IOC_WRITE1`.
    pub fn cmd1(self) -> u32 {
        match self {
            Op::Read => sys::CMA_IOC_READ1,
            Op::Write => sys::CMA_IOC_WRITE1,
        }
    }
}

/// The full result of a copy that moved at least one byte (or none, for an
/// empty request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// Bytes transferred.
    pub bytes: u64,
    /// The errno that stopped a partial copy, or 0 if everything was copied.
    pub error: i32,
    /// The remote iovec holding the first byte not transferred.
    pub remote_index: u32,
    /// That byte's offset within its remote iovec.
    pub remote_offset: u64,
    /// The local iovec holding the first byte not transferred.
    pub local_index: u32,
    /// That byte's offset within its local iovec.
    pub local_offset: u64,
}

/// An open `/dev/cma`.
#[derive(Debug)]
pub struct Device {
    file: File,
}

impl Device {
    /// Opens [`DEVICE_PATH`].
    pub fn open() -> Result<Device, OpenError> {
        Self::open_path(DEVICE_PATH)
    }

    /// Opens the device at `path` (for a device node in a non-standard place).
    pub fn open_path(path: impl AsRef<Path>) -> Result<Device, OpenError> {
        match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) => Ok(Device { file }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(OpenError::NotLoaded),
            Err(e) => Err(OpenError::Io(e)),
        }
    }

    /// Asks the module for its ABI version and features.
    pub fn info(&self) -> io::Result<Info> {
        let mut raw = sys::cma_info::default();
        // SAFETY: CMA_IOC_INFO writes exactly one `struct cma_info` to the
        // pointer, which points to a live, writable `cma_info`.
        unsafe { sys::ioctl(self.as_fd(), sys::CMA_IOC_INFO, &mut raw as *mut _ as usize) }?;
        Ok(Info {
            abi_version: raw.abi_version,
            max_iov: raw.max_iov,
            features: raw.features,
        })
    }
}

impl Device {
    /// Reads from `remote` ranges of `target` into `local`, like
    /// `process_vm_readv(2)`: returns the bytes read, fewer than asked only
    /// if the copy stopped on an error after moving some bytes.
    pub fn process_vm_readv(
        &self,
        target: Target<'_>,
        local: &mut [IoSliceMut<'_>],
        remote: &[RemoteIoVec],
    ) -> io::Result<usize> {
        self.on(target).readv(local, remote)
    }

    /// Writes `local` into `remote` ranges of `target`, like
    /// `process_vm_writev(2)`: returns the bytes written.
    pub fn process_vm_writev(
        &self,
        target: Target<'_>,
        local: &[IoSlice<'_>],
        remote: &[RemoteIoVec],
    ) -> io::Result<usize> {
        self.on(target).writev(local, remote)
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
    /// and `remote` in `target` with `CMA_IOC_READ1`/`CMA_IOC_WRITE1`, the
    /// short-message fast path (one 32-byte argument, nothing written back).
    /// Returns the bytes copied: fewer than `len` if a fault stopped the copy
    /// after some bytes, or if `len` exceeds `CMA_COPY1_MAX`.
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

    /// Checks whether `target` could be copied from and to right now, without
    /// copying: `Ok(())`, or `EPERM`/`ESRCH`.
    pub fn probe(&self, target: Target<'_>) -> io::Result<()> {
        self.on(target).probe()
    }

    /// Looks `target` up and checks access once, and returns a [`Peer`] that
    /// copies to and from it without doing so again on every call: the
    /// per-peer setup of an MPI library. `EPERM`/`ESRCH` as a copy would.
    pub fn attach(&self, target: Target<'_>) -> io::Result<Peer> {
        // SAFETY: the kernel returned a new fd that nothing else owns.
        let fd = unsafe { std::os::fd::FromRawFd::from_raw_fd(attach_raw(self.as_fd(), target)?) };
        Ok(Peer { fd })
    }

    /// Consents to copies by `peer` (a pid), or by any peer that passes the
    /// credential rule if `None`. Lasts until revoked, until this process
    /// execs or exits, or until this device is closed.
    pub fn grant(&self, peer: Option<i32>) -> io::Result<()> {
        grant_raw(self.as_fd(), peer.unwrap_or(0))
    }

    /// Withdraws every consent this process has given.
    pub fn revoke(&self) -> io::Result<()> {
        revoke_raw(self.as_fd())
    }
}

/// `CMA_IOC_ATTACH` on the device `fd`: returns the new peer fd, which the
/// caller owns.
pub fn attach_raw(fd: BorrowedFd<'_>, target: Target<'_>) -> io::Result<RawFd> {
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

/// `CMA_IOC_GRANT` on the device `fd`: consent to copies by `pid`, or by any
/// permitted peer if 0.
pub fn grant_raw(fd: BorrowedFd<'_>, pid: i32) -> io::Result<()> {
    let args = sys::cma_grant {
        pid,
        ..Default::default()
    };
    // SAFETY: CMA_IOC_GRANT reads one `cma_grant` from a live struct.
    unsafe { sys::ioctl(fd, sys::CMA_IOC_GRANT, &args as *const _ as usize) }.map(drop)
}

/// `CMA_IOC_REVOKE` on the device `fd`.
pub fn revoke_raw(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: CMA_IOC_REVOKE takes no argument.
    unsafe { sys::ioctl(fd, sys::CMA_IOC_REVOKE, 0) }.map(drop)
}

impl Device {
    /// The channel for copies with `target` through this device.
    pub fn on<'a>(&'a self, target: Target<'_>) -> Channel<'a> {
        Channel::new(self.as_fd(), Some(target))
    }
}

/// A target attached to with [`Device::attach`] (a peer fd): the same copies
/// as [`Device`]'s, without naming the target (it is looked up and checked
/// once, at attach time; the module confirms before each copy that nothing
/// the check rested on has changed). Copies fail with `ESRCH` once the
/// target has exited or exec()ed. Closing the `Peer` closes the fd.
#[derive(Debug)]
pub struct Peer {
    fd: OwnedFd,
}

impl Peer {
    /// Like [`Device::process_vm_readv`], from the attached target.
    pub fn process_vm_readv(
        &self,
        local: &mut [IoSliceMut<'_>],
        remote: &[RemoteIoVec],
    ) -> io::Result<usize> {
        self.on().readv(local, remote)
    }

    /// Like [`Device::process_vm_writev`], to the attached target.
    pub fn process_vm_writev(
        &self,
        local: &[IoSlice<'_>],
        remote: &[RemoteIoVec],
    ) -> io::Result<usize> {
        self.on().writev(local, remote)
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

    /// Checks whether the attached target could be copied from and to right
    /// now: `Ok(())`, or `EPERM`/`ESRCH`.
    pub fn probe(&self) -> io::Result<()> {
        self.on().probe()
    }

    /// The channel for copies with the attached target.
    pub fn on(&self) -> Channel<'_> {
        Channel::new(self.as_fd(), None)
    }
}

impl AsFd for Peer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Peer {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Where copy ioctls go: a file (`/dev/cma` or a peer fd) and how requests
/// on it name the target (zero for a peer fd). [`Device`] and [`Peer`] use
/// one for each call; it is public for callers that hold raw descriptors
/// (the C library, the `process_vm_readv` preload library).
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

    /// One copy with `process_vm_readv(2)`'s exact contract
    /// (`CMA_COPY_PVM`): the iovec arrays are passed to the kernel as they
    /// are (a `struct iovec` has the layout of a `struct cma_iovec`), and it
    /// checks them, in the system call's order, with its errnos. Returns the
    /// bytes copied (at most `CMA_COPY1_MAX`).
    ///
    /// # Safety
    ///
    /// As for [`Device::copy_raw`], for the memory the local iovecs name.
    /// The arrays themselves may be anything: the kernel reads them.
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
            flags: self.flags | sys::CMA_COPY_PVM as u64,
            ..Default::default()
        };
        // SAFETY: `args` is a live `cma_copy` (with CMA_COPY_PVM the kernel
        // only reads it); the caller vouches for the memory it describes.
        let n = unsafe { sys::ioctl(self.fd, op.cmd(), &mut args as *mut _ as usize) }?;
        Ok(n as usize)
    }

    fn readv(self, local: &mut [IoSliceMut<'_>], remote: &[RemoteIoVec]) -> io::Result<usize> {
        let local: Vec<sys::cma_iovec> = local
            .iter_mut()
            .map(|s| sys::cma_iovec {
                base: s.as_mut_ptr() as u64,
                len: s.len() as u64,
            })
            .collect();
        // SAFETY: every local iovec is a live, exclusively borrowed buffer.
        unsafe { self.copy_any(Op::Read, &local, &remote_iovecs(remote)) }
    }

    fn writev(self, local: &[IoSlice<'_>], remote: &[RemoteIoVec]) -> io::Result<usize> {
        let local: Vec<sys::cma_iovec> = local
            .iter()
            .map(|s| sys::cma_iovec {
                base: s.as_ptr() as u64,
                len: s.len() as u64,
            })
            .collect();
        // SAFETY: every local iovec is a live buffer, only read by a write.
        unsafe { self.copy_any(Op::Write, &local, &remote_iovecs(remote)) }
    }

    /// One copy, by whichever ioctl costs least: `CMA_IOC_READ1`/`WRITE1`
    /// for one range on each side (falling back to the vectored ioctl on a
    /// module without it), the vectored one otherwise. Returns the bytes.
    ///
    /// # Safety
    ///
    /// As for [`Device::copy_raw`].
    unsafe fn copy_any(
        self,
        op: Op,
        local: &[sys::cma_iovec],
        remote: &[sys::cma_iovec],
    ) -> io::Result<usize> {
        if let ([l], [r]) = (local, remote) {
            if l.len == r.len && l.len <= sys::CMA_COPY1_MAX as u64 {
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

    /// Issues one vectored copy and returns the full [`Transfer`] report.
    ///
    /// # Safety
    ///
    /// As for [`Device::copy_raw`].
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
        Ok(Transfer {
            bytes: args.bytes,
            error: args.error,
            remote_index: args.remote_index,
            remote_offset: args.remote_offset,
            local_index: args.local_index,
            local_offset: args.local_offset,
        })
    }

    /// Issues one single-range copy and returns the bytes copied.
    ///
    /// # Safety
    ///
    /// As for [`Device::copy_raw`], for the local range.
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

/// Issues `CMA_IOC_READ`/`CMA_IOC_WRITE` on `fd` with `args`.
///
/// # Safety
///
/// As for [`Device::copy_raw`], for the memory `args` describes.
unsafe fn copy_args(fd: BorrowedFd<'_>, op: Op, args: &mut sys::cma_copy) -> io::Result<()> {
    // SAFETY: `args` is a live, writable `cma_copy`; see the caller's
    // guarantee for the memory it points to.
    unsafe { sys::ioctl(fd, op.cmd(), args as *mut _ as usize) }.map(drop)
}

fn remote_iovecs(remote: &[RemoteIoVec]) -> Vec<sys::cma_iovec> {
    remote
        .iter()
        .map(|r| sys::cma_iovec {
            base: r.base as u64,
            len: r.len as u64,
        })
        .collect()
}

/// Opens a pidfd for `pid` (`pidfd_open(2)`), to name a target race-free.
pub fn pidfd_open(pid: i32) -> io::Result<std::os::fd::OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new fd that we now own.
    Ok(unsafe { std::os::fd::FromRawFd::from_raw_fd(fd as RawFd) })
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for Device {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}
