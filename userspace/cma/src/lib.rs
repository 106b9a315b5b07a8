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
//! The iovec arrays go to the kernel as they are (an [`IoSliceMut`], an
//! [`IoSlice`] and a [`RemoteIoVec`] are all laid out like `struct
//! cma_iovec`): a copy allocates nothing. When a copy stops part way, the
//! `*_report` calls ([`Device::readv_report`]) say how far it got and why, as
//! a [`Transfer`].
//!
//! A target must consent ([`Device::grant`]) unless the caller has
//! `CAP_SYS_PTRACE` over it. To copy to and from one target many times,
//! attach to it once ([`Device::attach`]) and copy through the [`Peer`]: that
//! skips the lookup and access check each copy by pid pays for. The ABI,
//! generated from the C header `include/uapi/cma.h`, is in [`sys`].
//!
//! With the `raw` feature, the crate also offers calls on raw descriptors
//! and iovec arrays the caller builds (`cma::raw`, and the `copy_raw` family on
//! [`Device`] and [`Peer`]): for the C library, the preload library and the
//! test suite, not for applications.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::{align_of, offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

mod channel;
mod map;
pub mod sys;

#[cfg(feature = "raw")]
pub mod raw;

use channel::Channel;
pub use map::{MapStatus, Mapped, StatusSnapshot};

/// The path of the device the module registers (`CMA_DEVICE_PATH`).
pub const DEVICE_PATH: &str = match sys::CMA_DEVICE_PATH.split_last() {
    Some((0, path)) => match std::str::from_utf8(path) {
        Ok(path) => path,
        Err(_) => panic!("CMA_DEVICE_PATH is not UTF-8"),
    },
    _ => panic!("CMA_DEVICE_PATH is not NUL-terminated"),
};

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

/// The features a module reports (`CMA_FEAT_*`): a set of bits, like the
/// `bitflags` types of `nix`. Bits this library does not know are kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Features(u64);

impl Features {
    /// `CMA_IOC_READ` and `CMA_IOC_WRITE` (vectored copies).
    pub const COPY: Features = Features(sys::CMA_FEAT_COPY);
    /// A target may be named by a pidfd.
    pub const PIDFD: Features = Features(sys::CMA_FEAT_PIDFD);
    /// `CMA_IOC_GRANT` and `CMA_IOC_REVOKE` (consent).
    pub const GRANT: Features = Features(sys::CMA_FEAT_GRANT);
    /// A request with no iovecs probes access to the target.
    pub const PROBE: Features = Features(sys::CMA_FEAT_PROBE);
    /// `CMA_IOC_READ1` and `CMA_IOC_WRITE1` (one range each side).
    pub const COPY1: Features = Features(sys::CMA_FEAT_COPY1);
    /// `CMA_IOC_ATTACH` (peer fds).
    pub const ATTACH: Features = Features(sys::CMA_FEAT_ATTACH);
    /// `CMA_COPY_PVM`: `process_vm_readv(2)`'s exact contract.
    pub const PVM: Features = Features(sys::CMA_FEAT_PVM);
    /// `CMA_GRANT_PIDFD`: a grant may name its peer by a pidfd.
    pub const GRANT_PIDFD: Features = Features(sys::CMA_FEAT_GRANT_PIDFD);
    /// `CMA_FEAT_USERNS_GRANT`: a grant naming its peer by pidfd admits it
    /// from another user namespace.
    pub const USERNS_GRANT: Features = Features(sys::CMA_FEAT_USERNS_GRANT);
    /// `CMA_GRANT_DESCENDANTS`: a grant may name the descendants of a
    /// process (a launcher's ranks), from any user namespace.
    pub const DESCENDANTS_GRANT: Features = Features(sys::CMA_FEAT_DESCENDANTS_GRANT);
    /// `CMA_IOC_MAP`: a target's memory mapped into the caller.
    pub const MAP: Features = Features(sys::CMA_FEAT_MAP);
    /// The status page's `caller_generation` moves.
    pub const CALLER_GENERATION: Features = Features(sys::CMA_FEAT_CALLER_GENERATION);

    /// Every feature, with its name: the one table of them.
    pub const NAMED: [(&'static str, Features); 12] = [
        ("copy", Features::COPY),
        ("pidfd", Features::PIDFD),
        ("grant", Features::GRANT),
        ("probe", Features::PROBE),
        ("copy1", Features::COPY1),
        ("attach", Features::ATTACH),
        ("pvm", Features::PVM),
        ("grant-pidfd", Features::GRANT_PIDFD),
        ("userns-grant", Features::USERNS_GRANT),
        ("descendants-grant", Features::DESCENDANTS_GRANT),
        ("map", Features::MAP),
        ("caller-generation", Features::CALLER_GENERATION),
    ];

    /// No feature.
    pub const fn empty() -> Features {
        Features(0)
    }

    /// Every feature the header defines (`CMA_FEAT_ALL`).
    pub const fn all() -> Features {
        Features(sys::CMA_FEAT_ALL)
    }

    /// The set with exactly these bits, known or not.
    pub const fn from_bits_retain(bits: u64) -> Features {
        Features(bits)
    }

    /// The bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Whether every feature of `other` is in `self`.
    pub const fn contains(self, other: Features) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The bits of `self` that no named feature has (from a newer module).
    pub const fn unknown(self) -> u64 {
        self.0 & !sys::CMA_FEAT_ALL
    }

    /// The names of the known features in `self`, in bit order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        Features::NAMED
            .into_iter()
            .filter(move |(_, f)| self.contains(*f))
            .map(|(name, _)| name)
    }
}

// The table names every bit of CMA_FEAT_ALL, each once.
const _: () = {
    let mut all = 0;
    let mut i = 0;
    while i < Features::NAMED.len() {
        let bit = Features::NAMED[i].1.bits();
        assert!(bit.count_ones() == 1 && all & bit == 0);
        all |= bit;
        i += 1;
    }
    assert!(all == sys::CMA_FEAT_ALL);
};

impl std::ops::BitOr for Features {
    type Output = Features;
    fn bitor(self, rhs: Features) -> Features {
        Features(self.0 | rhs.0)
    }
}

impl std::ops::BitAnd for Features {
    type Output = Features;
    fn bitand(self, rhs: Features) -> Features {
        Features(self.0 & rhs.0)
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Features({:#x}", self.0)?;
        for (i, name) in self.names().enumerate() {
            write!(f, "{}{name}", if i == 0 { ": " } else { " | " })?;
        }
        write!(f, ")")
    }
}

/// What the loaded module supports, from `CMA_IOC_INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Info {
    /// The module's ABI version.
    pub abi_version: u32,
    /// The most iovecs accepted on either side of a request.
    pub max_iov: u32,
    /// The features the module implements.
    pub features: Features,
}

impl From<sys::cma_info> for Info {
    fn from(raw: sys::cma_info) -> Info {
        Info {
            abi_version: raw.abi_version,
            max_iov: raw.max_iov,
            features: Features::from_bits_retain(raw.features),
        }
    }
}

/// A range in the target's address space (the same shape as `nix`'s), laid
/// out like `struct cma_iovec` (and `struct iovec`), so that an array of
/// them is passed to the kernel as it is.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteIoVec {
    /// Start address in the target.
    pub base: usize,
    /// Length in bytes.
    pub len: usize,
}

/// Arrays of `Self` are read by the kernel as `struct cma_iovec` arrays.
///
/// # Safety
///
/// `Self` has `struct cma_iovec`'s size, alignment and field offsets (the
/// assertions below check each implementor).
unsafe trait IovecLayout: Sized {}
// SAFETY: checked below.
unsafe impl IovecLayout for sys::cma_iovec {}
// SAFETY: checked below.
unsafe impl IovecLayout for libc::iovec {}
// SAFETY: checked below.
unsafe impl IovecLayout for RemoteIoVec {}
// SAFETY: std guarantees `IoSlice` is ABI-compatible with `struct iovec`.
unsafe impl IovecLayout for IoSlice<'_> {}
// SAFETY: std guarantees `IoSliceMut` is ABI-compatible with `struct iovec`.
unsafe impl IovecLayout for IoSliceMut<'_> {}

macro_rules! same_layout {
    ($a:ty, $a_base:ident, $a_len:ident; $b:ty, $b_base:ident, $b_len:ident) => {
        const _: () = {
            assert!(size_of::<$a>() == size_of::<$b>());
            assert!(align_of::<$a>() == align_of::<$b>());
            assert!(offset_of!($a, $a_base) == offset_of!($b, $b_base));
            assert!(offset_of!($a, $a_len) == offset_of!($b, $b_len));
        };
    };
}
same_layout!(RemoteIoVec, base, len; sys::cma_iovec, base, len);
same_layout!(libc::iovec, iov_base, iov_len; sys::cma_iovec, base, len);
const _: () = assert!(size_of::<IoSlice<'_>>() == size_of::<sys::cma_iovec>());
const _: () = assert!(size_of::<IoSliceMut<'_>>() == size_of::<sys::cma_iovec>());

/// `s` as the kernel reads it: no copy.
fn as_iovecs<T: IovecLayout>(s: &[T]) -> &[sys::cma_iovec] {
    // SAFETY: `T` has `cma_iovec`'s layout (`IovecLayout`), and every byte
    // pattern is a valid `cma_iovec` (two integers); the borrow of `s` covers
    // the result's.
    unsafe { std::slice::from_raw_parts(s.as_ptr().cast(), s.len()) }
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
    /// The `pid` field and `CMA_COPY_*` flags that name the target.
    fn raw(&self) -> (i32, u64) {
        match self {
            Target::Pid(pid) => (*pid, 0),
            Target::PidFd(fd) => (fd.as_raw_fd(), sys::CMA_COPY_PIDFD),
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

/// How far a vectored copy got: all of it, or where and why it stopped.
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

impl Transfer {
    /// Whether every byte asked for was transferred.
    pub fn is_complete(&self) -> bool {
        self.error == 0
    }

    /// What stopped a partial copy, if it stopped.
    pub fn stopped_by(&self) -> Option<io::Error> {
        (self.error != 0).then(|| io::Error::from_raw_os_error(self.error))
    }
}

impl From<&sys::cma_copy> for Transfer {
    fn from(args: &sys::cma_copy) -> Transfer {
        Transfer {
            bytes: args.bytes,
            error: args.error,
            remote_index: args.remote_index,
            remote_offset: args.remote_offset,
            local_index: args.local_index,
            local_offset: args.local_offset,
        }
    }
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
        channel::info(self.as_fd())
    }

    /// Reads from `remote` ranges of `target` into `local`, like
    /// `process_vm_readv(2)`: returns the bytes read, fewer than asked only
    /// if the copy stopped on an error after moving some bytes.
    pub fn process_vm_readv(
        &self,
        target: Target<'_>,
        local: &mut [IoSliceMut<'_>],
        remote: &[RemoteIoVec],
    ) -> io::Result<usize> {
        self.chan(target).readv(local, remote)
    }

    /// Writes `local` into `remote` ranges of `target`, like
    /// `process_vm_writev(2)`: returns the bytes written.
    pub fn process_vm_writev(
        &self,
        target: Target<'_>,
        local: &[IoSlice<'_>],
        remote: &[RemoteIoVec],
    ) -> io::Result<usize> {
        self.chan(target).writev(local, remote)
    }

    /// [`Device::process_vm_readv`] with the full report: how many bytes
    /// moved and, if the copy stopped part way, why and where. Fails with the
    /// errno if nothing was transferred. Always one vectored ioctl.
    pub fn readv_report(
        &self,
        target: Target<'_>,
        local: &mut [IoSliceMut<'_>],
        remote: &[RemoteIoVec],
    ) -> io::Result<Transfer> {
        self.chan(target).readv_report(local, remote)
    }

    /// [`Device::process_vm_writev`] with the full report, as
    /// [`Device::readv_report`].
    pub fn writev_report(
        &self,
        target: Target<'_>,
        local: &[IoSlice<'_>],
        remote: &[RemoteIoVec],
    ) -> io::Result<Transfer> {
        self.chan(target).writev_report(local, remote)
    }

    /// Checks whether `target` could be copied from and to right now, without
    /// copying: `Ok(())`, or `EPERM`/`ESRCH`.
    pub fn probe(&self, target: Target<'_>) -> io::Result<()> {
        self.chan(target).probe()
    }

    /// Looks `target` up and checks access once, and returns a [`Peer`] that
    /// copies to and from it without doing so again on every call: the
    /// per-peer setup of an MPI library. `EPERM`/`ESRCH` as a copy would.
    pub fn attach(&self, target: Target<'_>) -> io::Result<Peer> {
        let fd = channel::attach(self.as_fd(), target)?;
        // SAFETY: the kernel returned a new fd that nothing else owns.
        let fd = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
        Ok(Peer { fd })
    }

    /// Consents to copies by `peer` (a pid), or by any peer that passes the
    /// credential rule if `None`. Lasts until revoked, until this process
    /// execs or exits, or until this device is closed.
    ///
    /// A pid is looked up when the grant is made: if the process meant has
    /// exited and its pid was given to another, the grant goes to that
    /// other. Where a pidfd is at hand, [`Device::grant_to`] with
    /// [`Target::PidFd`] cannot be misled so.
    pub fn grant(&self, peer: Option<i32>) -> io::Result<()> {
        channel::grant(self.as_fd(), peer.map(Target::Pid))
    }

    /// Consents to copies by `peer`, named by a pid or by a pidfd
    /// (`pidfd_open(2)`, or `CLONE_PIDFD`): a pidfd names one process for as
    /// long as it is open, never a later one given the same pid; `ESRCH` if
    /// that process has exited. Naming by pidfd needs
    /// [`Features::GRANT_PIDFD`] (an older module fails with `EINVAL`).
    /// `Target::Pid(0)` names any peer that passes the credential rule, as
    /// `grant(None)` does. Lasts as [`Device::grant`]'s consent does.
    pub fn grant_to(&self, peer: Target<'_>) -> io::Result<()> {
        channel::grant(self.as_fd(), Some(peer))
    }

    /// Consents to copies by the processes descended from the one
    /// `launcher` (a pidfd) refers to, in whatever user namespace, not the
    /// launcher itself: its children if `generations` is 0 or 1, down to
    /// that many generations otherwise (at most
    /// `CMA_GRANT_MAX_GENERATIONS`, else `EINVAL`). An MPI rank names its
    /// launcher so, and with it its sibling ranks. Needs
    /// [`Features::DESCENDANTS_GRANT`] (an older module fails with
    /// `EINVAL`). Lasts as [`Device::grant`]'s consent does.
    pub fn grant_descendants(&self, launcher: BorrowedFd<'_>, generations: u32) -> io::Result<()> {
        channel::grant_descendants(self.as_fd(), launcher, generations)
    }

    /// Withdraws every consent this process has given.
    pub fn revoke(&self) -> io::Result<()> {
        channel::revoke(self.as_fd())
    }

    fn chan<'a>(&'a self, target: Target<'_>) -> Channel<'a> {
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
        self.chan().readv(local, remote)
    }

    /// Like [`Device::process_vm_writev`], to the attached target.
    pub fn process_vm_writev(
        &self,
        local: &[IoSlice<'_>],
        remote: &[RemoteIoVec],
    ) -> io::Result<usize> {
        self.chan().writev(local, remote)
    }

    /// Like [`Device::readv_report`], from the attached target.
    pub fn readv_report(
        &self,
        local: &mut [IoSliceMut<'_>],
        remote: &[RemoteIoVec],
    ) -> io::Result<Transfer> {
        self.chan().readv_report(local, remote)
    }

    /// Like [`Device::writev_report`], to the attached target.
    pub fn writev_report(
        &self,
        local: &[IoSlice<'_>],
        remote: &[RemoteIoVec],
    ) -> io::Result<Transfer> {
        self.chan().writev_report(local, remote)
    }

    /// Checks whether the attached target could be copied from and to right
    /// now: `Ok(())`, or `EPERM`/`ESRCH`.
    pub fn probe(&self) -> io::Result<()> {
        self.chan().probe()
    }

    fn chan(&self) -> Channel<'_> {
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
