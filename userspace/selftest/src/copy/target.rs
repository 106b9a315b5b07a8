//! Naming the target: missing, zombie and kernel-thread targets, pidfds,
//! zero-length requests that skip the lookup, and the probe.

use crate::ktap::{expect_errno, TestResult};
use crate::peer::Peer;
use crate::util::{page_size, Mapping};
use crate::{check, check_eq};
use cma::sys;
use cma::{Device, Op, Target};
use std::io;

use super::{copy, expect_copy_errno, iov, peek, remote_buffer};

pub(super) fn copy_no_such_process_esrch(op: Op) -> TestResult {
    let dev = Device::open()?;
    let buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    let peer = Peer::spawn(|ch| ch.wait())?;
    let gone = peer.pid;
    check_eq!(peer.finish()?, 0);
    for pid in [gone, 0, -1, i32::MIN, 1 << 22, i32::MAX] {
        let what = format!("pid {pid}");
        expect_copy_errno(
            &dev,
            op,
            Target::Pid(pid),
            &[iov(buf.addr(), 8)],
            &[iov(buf.addr(), 8)],
            libc::ESRCH,
            &what,
        )?;
    }
    Ok(())
}

pub(super) fn copy_zombie_and_kernel_thread_esrch(op: Op) -> TestResult {
    let dev = Device::open()?;
    let buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    let peer = Peer::spawn(|ch| ch.wait())?;
    peer.kill();
    // Wait until it is a zombie (killed, not yet reaped).
    let stat = format!("/proc/{}/stat", peer.pid);
    for _ in 0..1000 {
        let s = std::fs::read_to_string(&stat)?;
        if s.rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let l = [iov(buf.addr(), 8)];
    expect_copy_errno(
        &dev,
        op,
        Target::Pid(peer.pid),
        &l,
        &[iov(buf.addr(), 8)],
        libc::ESRCH,
        "zombie",
    )?;
    // kthreadd (pid 2) is a kernel thread: no mm.
    expect_copy_errno(
        &dev,
        op,
        Target::Pid(2),
        &l,
        &[iov(0x10000, 8)],
        libc::ESRCH,
        "kernel thread",
    )?;
    Ok(())
}

pub(super) fn copy_bad_pidfd_ebadf(op: Op) -> TestResult {
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
    let dev = Device::open()?;
    let buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    let null = std::fs::File::open("/dev/null")?;
    let l = [iov(buf.addr(), 8)];
    expect_copy_errno(
        &dev,
        op,
        Target::PidFd(null.as_fd()),
        &l,
        &l,
        libc::EBADF,
        "/dev/null as pidfd",
    )?;
    expect_copy_errno(
        &dev,
        op,
        Target::PidFd(dev.as_fd()),
        &l,
        &l,
        libc::EBADF,
        "/dev/cma as pidfd",
    )?;
    // SAFETY: the number is not an open descriptor; the kernel only looks it up.
    let closed = unsafe { BorrowedFd::borrow_raw(null.as_raw_fd() + 1000) };
    expect_copy_errno(
        &dev,
        op,
        Target::PidFd(closed),
        &l,
        &l,
        libc::EBADF,
        "closed fd",
    )?;
    let mut args = sys::cma_copy::describe(&l, &l, -1, sys::CMA_COPY_PIDFD)?;
    // SAFETY: iovecs over our own mapping.
    expect_errno(
        unsafe { dev.copy_args(op, &mut args) },
        libc::EBADF,
        "pidfd -1",
    )?;
    Ok(())
}

pub(super) fn copy_via_pidfd() -> TestResult {
    use std::os::fd::AsFd;
    let dev = Device::open()?;
    let (peer, addr) = remote_buffer(8192, 7, 0)?;
    let pidfd = cma::pidfd_open(peer.pid)?;
    let mut buf = vec![0u8; 8192];
    let n = dev.process_vm_readv(
        Target::PidFd(pidfd.as_fd()),
        &mut [io::IoSliceMut::new(&mut buf)],
        &[cma::RemoteIoVec {
            base: addr,
            len: 8192,
        }],
    )?;
    check_eq!(n, 8192);
    check!(
        buf == peek(peer.pid, addr, 8192)?,
        "data read through a pidfd differs"
    );
    // A pidfd of a process that exited names nothing any more.
    drop(peer);
    expect_errno(
        dev.probe(Target::PidFd(pidfd.as_fd())),
        libc::ESRCH,
        "pidfd of an exited process",
    )?;
    Ok(())
}

pub(super) fn copy_zero_length_skips_lookup(op: Op) -> TestResult {
    let dev = Device::open()?;
    let buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    // Zero total on either side: 0, before the (bogus) pid is looked up.
    for pid in [-1, 0, i32::MAX] {
        let t = copy(
            &dev,
            op,
            Target::Pid(pid),
            &[iov(buf.addr(), 0)],
            &[iov(buf.addr(), 8)],
        )?;
        check_eq!(t.bytes, 0);
        let t = copy(
            &dev,
            op,
            Target::Pid(pid),
            &[iov(buf.addr(), 8)],
            &[iov(0, 0), iov(8, 0)],
        )?;
        check_eq!(t.bytes, 0);
        let t = copy(&dev, op, Target::Pid(pid), &[], &[iov(buf.addr(), 8)])?;
        check_eq!(t.bytes, 0);
    }
    Ok(())
}

pub(super) fn probe_reports_reachability() -> TestResult {
    let dev = Device::open()?;
    let peer = Peer::spawn(|ch| ch.wait())?;
    dev.probe(Target::Pid(peer.pid))?;
    dev.probe(Target::Pid(std::process::id() as i32))?;
    let gone = peer.pid;
    check_eq!(peer.finish()?, 0);
    expect_errno(
        dev.probe(Target::Pid(gone)),
        libc::ESRCH,
        "probe of an exited process",
    )?;
    expect_errno(dev.probe(Target::Pid(0)), libc::ESRCH, "probe of pid 0")?;
    Ok(())
}
