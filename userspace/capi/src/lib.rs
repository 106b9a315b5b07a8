//! `libcma.so`: the C API of `/dev/cma`, declared in `include/libcma.h`.
//!
//! Each function is a thin shell over the Rust library (`cma`): it turns C
//! arguments into its types and an `io::Result` into `-1` and `errno`. The
//! declarations bindgen generates from the header are checked against these
//! definitions at compile time ([`checked!`]), so the two cannot drift.

use cma::raw::{self, Channel};
use cma::{sys, Op, Target};
use libc::iovec;
use std::ffi::{c_int, c_ulong};
use std::io;
use std::os::fd::BorrowedFd;

/// Declarations generated from `include/libcma.h`.
#[allow(non_camel_case_types, dead_code, clippy::all)]
mod header {
    include!(concat!(env!("OUT_DIR"), "/libcma_h.rs"));
}

pub use header::cma_report;

/// Checks, at compile time, that the header declares `$name` with exactly
/// the type of this library's definition.
macro_rules! checked {
    ($name:ident: $ty:ty) => {
        const _: () = {
            let _declared: $ty = header::$name;
            let _defined: $ty = $name;
        };
    };
}

checked!(cma_open: unsafe extern "C" fn() -> c_int);
checked!(cma_close: unsafe extern "C" fn(c_int) -> c_int);
checked!(cma_info: unsafe extern "C" fn(c_int, *mut u32, *mut u32, *mut u64) -> c_int);
checked!(cma_attach: unsafe extern "C" fn(c_int, c_int, u64) -> c_int);
checked!(
    cma_readv: unsafe extern "C" fn(
        c_int,
        c_int,
        u64,
        *const iovec,
        c_ulong,
        *const iovec,
        c_ulong,
        *mut cma_report,
    ) -> isize
);
checked!(
    cma_writev: unsafe extern "C" fn(
        c_int,
        c_int,
        u64,
        *const iovec,
        c_ulong,
        *const iovec,
        c_ulong,
        *mut cma_report,
    ) -> isize
);
checked!(
    cma_read: unsafe extern "C" fn(c_int, c_int, u64, *mut libc::c_void, u64, usize) -> isize
);
checked!(
    cma_write: unsafe extern "C" fn(c_int, c_int, u64, *const libc::c_void, u64, usize) -> isize
);
checked!(cma_probe: unsafe extern "C" fn(c_int, c_int, u64) -> c_int);
checked!(cma_grant: unsafe extern "C" fn(c_int, libc::pid_t) -> c_int);
checked!(cma_grant_pidfd: unsafe extern "C" fn(c_int, c_int) -> c_int);
checked!(cma_grant_descendants: unsafe extern "C" fn(c_int, c_int, u32) -> c_int);
checked!(cma_revoke: unsafe extern "C" fn(c_int) -> c_int);
checked!(cma_map: unsafe extern "C" fn(c_int, u64, usize, c_int) -> *mut libc::c_void);
checked!(cma_unmap: unsafe extern "C" fn(*mut libc::c_void, usize) -> c_int);
checked!(cma_map_status: unsafe extern "C" fn(c_int) -> *const header::cma_map_status);

/// Sets `errno` from `e` and returns -1.
fn fail<T: From<i8>>(e: io::Error) -> T {
    // SAFETY: `__errno_location` returns this thread's errno.
    unsafe { *libc::__errno_location() = e.raw_os_error().unwrap_or(libc::EIO) };
    T::from(-1)
}

fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// `fd` as a borrowed descriptor.
///
/// # Safety
///
/// `fd` must stay open for the call (the C caller's promise).
unsafe fn borrow<'a>(fd: c_int) -> io::Result<BorrowedFd<'a>> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: the caller's promise.
    Ok(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// The channel for `target`/`flags` on `fd` (the device, or a peer fd with
/// both zero, which names the attached process).
///
/// # Safety
///
/// As for [`borrow`].
unsafe fn channel<'a>(fd: c_int, target: c_int, flags: u64) -> io::Result<Channel<'a>> {
    // SAFETY: the caller's promise.
    let fd = unsafe { borrow(fd) }?;
    Ok(Channel::new(fd, Some(target_of(target, flags)?)))
}

fn target_of(target: c_int, flags: u64) -> io::Result<Target<'static>> {
    match flags {
        0 => Ok(Target::Pid(target)),
        // SAFETY: the kernel only reads the number; a closed fd is EBADF.
        sys::CMA_COPY_PIDFD => Ok(Target::PidFd(unsafe { BorrowedFd::borrow_raw(target) })),
        _ => Err(einval()),
    }
}

/// `struct iovec` arrays as the ABI's (same layout).
fn iovecs<'a>(ptr: *const iovec, cnt: c_ulong) -> io::Result<&'a [sys::cma_iovec]> {
    let cnt = usize::try_from(cnt).map_err(|_| einval())?;
    if cnt == 0 {
        return Ok(&[]);
    }
    if cnt > u32::MAX as usize || ptr.is_null() {
        return Err(if ptr.is_null() {
            io::Error::from_raw_os_error(libc::EFAULT)
        } else {
            einval()
        });
    }
    // SAFETY: `struct iovec` and `struct cma_iovec` have one layout (checked
    // in cma::sys); the C caller passes `cnt` readable elements, as it would
    // to readv(2).
    Ok(unsafe { std::slice::from_raw_parts(ptr.cast(), cnt) })
}

/// Opens `/dev/cma`.
#[no_mangle]
pub extern "C" fn cma_open() -> c_int {
    // SAFETY: a NUL-terminated path; the fd returned is the caller's.
    unsafe {
        libc::open(
            sys::CMA_DEVICE_PATH.as_ptr().cast(),
            libc::O_RDWR | libc::O_CLOEXEC,
        )
    }
}

/// Closes a device or peer fd.
///
/// # Safety
///
/// `fd` must be the caller's to close.
#[no_mangle]
pub unsafe extern "C" fn cma_close(fd: c_int) -> c_int {
    // SAFETY: the caller's promise.
    unsafe { libc::close(fd) }
}

/// The module's ABI version, iovec limit and feature bits.
///
/// # Safety
///
/// Each pointer is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn cma_info(
    fd: c_int,
    abi_version: *mut u32,
    max_iov: *mut u32,
    features: *mut u64,
) -> c_int {
    // SAFETY: `fd` is the caller's.
    let info = match unsafe { borrow(fd) }.and_then(raw::info) {
        Ok(info) => info,
        Err(e) => return fail(e),
    };
    // SAFETY: the caller passes NULL or writable pointers.
    unsafe {
        if let Some(p) = abi_version.as_mut() {
            *p = info.abi_version;
        }
        if let Some(p) = max_iov.as_mut() {
            *p = info.max_iov;
        }
        if let Some(p) = features.as_mut() {
            *p = info.features.bits();
        }
    }
    0
}

/// Attaches to `target`: returns a peer fd.
///
/// # Safety
///
/// `fd` must be open.
#[no_mangle]
pub unsafe extern "C" fn cma_attach(fd: c_int, target: c_int, flags: u64) -> c_int {
    // SAFETY: the caller's promise.
    match unsafe { borrow(fd) }.and_then(|fd| raw::attach(fd, target_of(target, flags)?)) {
        Ok(peer) => peer,
        Err(e) => fail(e),
    }
}

/// A vectored copy with its report.
///
/// # Safety
///
/// As for `readv(2)`/`writev(2)`: the iovec arrays are readable, and for a
/// read the local ranges are the caller's to have written.
unsafe fn copy_v(
    op: Op,
    fd: c_int,
    target: c_int,
    flags: u64,
    (local, local_cnt): (*const iovec, c_ulong),
    (remote, remote_cnt): (*const iovec, c_ulong),
    report: *mut cma_report,
) -> isize {
    let run = || {
        let (local, remote) = (iovecs(local, local_cnt)?, iovecs(remote, remote_cnt)?);
        // SAFETY: the caller's promises.
        unsafe { channel(fd, target, flags)?.copy_raw(op, local, remote) }
    };
    match run() {
        Ok(t) => {
            // SAFETY: `report` is NULL or writable (the caller's promise).
            if let Some(r) = unsafe { report.as_mut() } {
                *r = cma_report {
                    bytes: t.bytes,
                    error: t.error,
                    remote_index: t.remote_index,
                    local_index: t.local_index,
                    pad: 0,
                    remote_offset: t.remote_offset,
                    local_offset: t.local_offset,
                };
            }
            t.bytes as isize
        }
        Err(e) => fail(e),
    }
}

/// Vectored read from `target`.
///
/// # Safety
///
/// See [`copy_v`].
#[no_mangle]
pub unsafe extern "C" fn cma_readv(
    fd: c_int,
    target: c_int,
    flags: u64,
    local: *const iovec,
    local_cnt: c_ulong,
    remote: *const iovec,
    remote_cnt: c_ulong,
    report: *mut cma_report,
) -> isize {
    // SAFETY: the caller's promises.
    unsafe {
        copy_v(
            Op::Read,
            fd,
            target,
            flags,
            (local, local_cnt),
            (remote, remote_cnt),
            report,
        )
    }
}

/// Vectored write to `target`.
///
/// # Safety
///
/// See [`copy_v`].
#[no_mangle]
pub unsafe extern "C" fn cma_writev(
    fd: c_int,
    target: c_int,
    flags: u64,
    local: *const iovec,
    local_cnt: c_ulong,
    remote: *const iovec,
    remote_cnt: c_ulong,
    report: *mut cma_report,
) -> isize {
    // SAFETY: the caller's promises.
    unsafe {
        copy_v(
            Op::Write,
            fd,
            target,
            flags,
            (local, local_cnt),
            (remote, remote_cnt),
            report,
        )
    }
}

/// One range, either way.
///
/// # Safety
///
/// For a read, `[local, local + len)` is the caller's to have written.
unsafe fn copy_1(
    op: Op,
    fd: c_int,
    target: c_int,
    flags: u64,
    local: u64,
    remote: u64,
    len: usize,
) -> isize {
    // SAFETY: the caller's promises.
    match unsafe {
        channel(fd, target, flags).and_then(|c| c.copy1_raw(op, local, remote, len as u64))
    } {
        Ok(n) => n as isize,
        Err(e) => fail(e),
    }
}

/// One range from `target`.
///
/// # Safety
///
/// `[local, local + len)` is the caller's to have written.
#[no_mangle]
pub unsafe extern "C" fn cma_read(
    fd: c_int,
    target: c_int,
    flags: u64,
    local: *mut libc::c_void,
    remote: u64,
    len: usize,
) -> isize {
    // SAFETY: the caller's promise.
    unsafe { copy_1(Op::Read, fd, target, flags, local as u64, remote, len) }
}

/// One range to `target`.
///
/// # Safety
///
/// `fd` is open.
#[no_mangle]
pub unsafe extern "C" fn cma_write(
    fd: c_int,
    target: c_int,
    flags: u64,
    local: *const libc::c_void,
    remote: u64,
    len: usize,
) -> isize {
    // SAFETY: a write only reads the local range.
    unsafe { copy_1(Op::Write, fd, target, flags, local as u64, remote, len) }
}

/// Whether `target` is reachable.
///
/// # Safety
///
/// `fd` is open.
#[no_mangle]
pub unsafe extern "C" fn cma_probe(fd: c_int, target: c_int, flags: u64) -> c_int {
    // SAFETY: the caller's promise.
    match unsafe { channel(fd, target, flags) }.and_then(|c| c.probe()) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// Consents to copies by `pid` (0: any permitted peer).
///
/// # Safety
///
/// `fd` is open.
#[no_mangle]
pub unsafe extern "C" fn cma_grant(fd: c_int, pid: libc::pid_t) -> c_int {
    // SAFETY: the caller's promise.
    match unsafe { borrow(fd) }.and_then(|fd| raw::grant(fd, pid)) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// Consents to copies by the process `pidfd` refers to (`CMA_GRANT_PIDFD`).
///
/// # Safety
///
/// `fd` and `pidfd` are open.
#[no_mangle]
pub unsafe extern "C" fn cma_grant_pidfd(fd: c_int, pidfd: c_int) -> c_int {
    // SAFETY: the caller's promise, for both.
    let (dev, pidfd) = match unsafe { (borrow(fd), borrow(pidfd)) } {
        (Ok(dev), Ok(pidfd)) => (dev, pidfd),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    match raw::grant_to(dev, Target::PidFd(pidfd)) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// Consents to copies by the descendants of the process `pidfd` refers to,
/// `generations` deep (`CMA_GRANT_DESCENDANTS`).
///
/// # Safety
///
/// `fd` and `pidfd` are open.
#[no_mangle]
pub unsafe extern "C" fn cma_grant_descendants(fd: c_int, pidfd: c_int, generations: u32) -> c_int {
    // SAFETY: the caller's promise, for both.
    let (dev, pidfd) = match unsafe { (borrow(fd), borrow(pidfd)) } {
        (Ok(dev), Ok(pidfd)) => (dev, pidfd),
        (Err(e), _) | (_, Err(e)) => return fail(e),
    };
    match raw::grant_descendants(dev, pidfd, generations) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// Withdraws this process's consents.
///
/// # Safety
///
/// `fd` is open.
#[no_mangle]
pub unsafe extern "C" fn cma_revoke(fd: c_int) -> c_int {
    // SAFETY: the caller's promise.
    match unsafe { borrow(fd) }.and_then(raw::revoke) {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

/// Maps a range of a peer fd's target (`CMA_IOC_MAP`).
///
/// # Safety
///
/// `peer` is open.
#[no_mangle]
pub unsafe extern "C" fn cma_map(
    peer: c_int,
    addr: u64,
    len: usize,
    prot: c_int,
) -> *mut libc::c_void {
    let mut args = cma::sys::cma_map {
        addr,
        len: len as u64,
        prot: prot as u32,
        ..Default::default()
    };
    // SAFETY: the caller's promise; CMA_IOC_MAP reads and writes one live
    // `cma_map`.
    let r = unsafe { borrow(peer) }.and_then(|fd| unsafe {
        cma::sys::ioctl(fd, cma::sys::CMA_IOC_MAP, &mut args as *mut _ as usize)
    });
    match r {
        Ok(_) => args.mapped as *mut libc::c_void,
        Err(e) => {
            fail::<c_int>(e);
            libc::MAP_FAILED
        }
    }
}

/// Unmaps what `cma_map` mapped.
///
/// # Safety
///
/// As for `munmap(2)`: nothing in the range is in use.
#[no_mangle]
pub unsafe extern "C" fn cma_unmap(mapped: *mut libc::c_void, len: usize) -> c_int {
    // SAFETY: the caller's promise.
    unsafe { libc::munmap(mapped, len) }
}

/// The status page of a peer fd.
///
/// # Safety
///
/// `peer` is open.
#[no_mangle]
pub unsafe extern "C" fn cma_map_status(peer: c_int) -> *const header::cma_map_status {
    // SAFETY: a new shared read-only mapping of the fd's page at offset 0.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            libc::sysconf(libc::_SC_PAGESIZE) as usize,
            libc::PROT_READ,
            libc::MAP_SHARED,
            peer,
            0,
        )
    };
    p.cast()
}
