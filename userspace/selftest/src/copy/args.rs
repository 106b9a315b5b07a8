//! The copy ioctls' arguments: unknown flags, padding, iovec counts, lengths,
//! bad arrays and addresses, and the single-range ioctls' arguments.

use crate::ktap::{expect_errno, TestResult};
use crate::peer::Peer;
use crate::util::{self, page_size, Mapping, KERNEL_ADDRESS};
use crate::{check, check_eq};
use cma::sys::{self, cma_iovec};
use cma::{Device, Op, Target};
use std::io;
use std::os::fd::AsFd;

use super::{copy, copy1, expect_copy_errno, iov, peek, remote_buffer, Fixture};

pub(super) fn copy_unknown_flags_einval(op: Op) -> TestResult {
    let Fixture {
        dev,
        peer,
        addr,
        local: mut buf,
    } = Fixture::new(page_size(), 1)?;
    let l = [iov(buf.addr(), 16)];
    let r = [iov(addr, 16)];
    let unknown = (0..64).filter(|b| sys::CMA_COPY_FLAGS_ALL & (1 << b) == 0);
    for bit in unknown {
        let mut args = sys::cma_copy::describe(&l, &r, peer.pid, 1 << bit)?;
        // SAFETY: iovecs over our own mapping.
        expect_errno(
            unsafe { dev.copy_args(op, &mut args) },
            libc::EINVAL,
            format!("{op:?} flag bit {bit}"),
        )?;
    }
    check!(
        buf.bytes_mut().iter().all(|&b| b == 0),
        "a rejected request copied data"
    );
    Ok(())
}

/// A WRITE whose `struct cma_copy` is readable but not writable: the result
/// could not be reported, so nothing may be written into the target (else
/// the caller could not learn how much it changed there).
pub(super) fn copy_unwritable_result_moves_nothing(op: Op) -> TestResult {
    let dev = Device::open()?;
    let ps = page_size();
    let (peer, addr) = remote_buffer(ps, 9, 0)?;
    let mut before = vec![0u8; 64];
    copy(
        &dev,
        Op::Read,
        Target::Pid(peer.pid),
        &[iov(before.as_mut_ptr() as usize, 64)],
        &[iov(addr, 64)],
    )?;
    let mut src = Mapping::new(ps, libc::PROT_READ | libc::PROT_WRITE)?;
    src.bytes_mut().fill(0xee);
    let l = [iov(src.addr(), 64)];
    let r = [iov(addr, 64)];
    let args = sys::cma_copy::describe(&l, &r, peer.pid, 0)?;
    let mut page = Mapping::new(ps, libc::PROT_READ | libc::PROT_WRITE)?;
    // SAFETY: plain-old-data struct into the start of our own page.
    unsafe { std::ptr::write_unaligned(page.bytes_mut().as_mut_ptr().cast(), args) };
    page.protect(0, ps, libc::PROT_READ)?;
    let cmd = match op {
        Op::Read => sys::CMA_IOC_READ,
        Op::Write => sys::CMA_IOC_WRITE,
    };
    // SAFETY: the struct is in our read-only page; its iovecs name our
    // own mapping and the target's buffer.
    expect_errno(
        unsafe { sys::ioctl(dev.as_fd(), cmd, page.addr()) },
        libc::EFAULT,
        format!("{op:?} with a read-only result"),
    )?;
    check!(
        src.bytes()[..64].iter().all(|&b| b == 0xee),
        "{op:?}: the caller's buffer was written although the result could not be reported"
    );
    let mut after = vec![0u8; 64];
    copy(
        &dev,
        Op::Read,
        Target::Pid(peer.pid),
        &[iov(after.as_mut_ptr() as usize, 64)],
        &[iov(addr, 64)],
    )?;
    check!(
        before == after,
        "the target was written although the result could not be reported"
    );
    Ok(())
}

pub(super) fn copy_nonzero_padding_einval(op: Op) -> TestResult {
    let Fixture {
        dev,
        peer,
        addr,
        local: buf,
    } = Fixture::new(page_size(), 1)?;
    let l = [iov(buf.addr(), 16)];
    let r = [iov(addr, 16)];
    let base = sys::cma_copy::describe(&l, &r, peer.pid, 0)?;
    type Spoil = fn(&mut sys::cma_copy);
    let cases: [(&str, Spoil); 4] = [
        ("pad", |a| a.pad = 1),
        ("pad2", |a| a.pad2 = 1),
        ("reserved[0]", |a| a.reserved[0] = 1),
        ("reserved[1]", |a| a.reserved[1] = 1 << 63),
    ];
    for (what, set) in cases {
        let mut args = base;
        set(&mut args);
        // SAFETY: iovecs over our own mapping.
        expect_errno(
            unsafe { dev.copy_args(op, &mut args) },
            libc::EINVAL,
            format!("{op:?} {what}"),
        )?;
    }
    // The same request with zero padding works.
    let mut args = base;
    // SAFETY: as above.
    unsafe { dev.copy_args(op, &mut args) }?;
    check_eq!(args.bytes, 16);
    Ok(())
}

pub(super) fn copy_too_many_iovecs_einval(op: Op) -> TestResult {
    let Fixture {
        dev,
        peer,
        addr,
        local: buf,
    } = Fixture::new(page_size(), 1)?;
    // One more than the limit, CMA_MAX_IOV (UIO_MAXIOV, 1024).
    let max = sys::CMA_MAX_IOV as usize;
    let many: Vec<cma_iovec> = (0..=max).map(|i| iov(buf.addr() + i % 4096, 1)).collect();
    let many_r: Vec<cma_iovec> = (0..=max).map(|i| iov(addr + i % 4096, 1)).collect();
    let t = Target::Pid(peer.pid);
    expect_copy_errno(
        &dev,
        op,
        t,
        &many,
        &many_r[..1],
        libc::EINVAL,
        "1025 local iovecs",
    )?;
    expect_copy_errno(
        &dev,
        op,
        t,
        &many[..1],
        &many_r,
        libc::EINVAL,
        "1025 remote iovecs",
    )?;
    check_eq!(
        copy(&dev, op, t, &many[..max], &many_r[..max])?.bytes,
        max as u64
    );
    Ok(())
}

pub(super) fn copy_length_overflow_einval(op: Op) -> TestResult {
    let Fixture {
        dev,
        peer,
        addr,
        local: buf,
    } = Fixture::new(page_size(), 1)?;
    let t = Target::Pid(peer.pid);
    let ok_l = [iov(buf.addr(), 16)];
    let ok_r = [iov(addr, 16)];
    let max = isize::MAX as usize;
    let bad: [(&str, Vec<cma_iovec>); 4] = [
        ("len > SSIZE_MAX", vec![iov(buf.addr(), max + 1)]),
        (
            "len = u64::MAX",
            vec![cma_iovec {
                base: buf.addr() as u64,
                len: u64::MAX,
            }],
        ),
        (
            "sum > SSIZE_MAX",
            vec![iov(buf.addr(), 1 << 62), iov(buf.addr(), 1 << 62)],
        ),
        (
            "sum wraps u64",
            vec![
                iov(buf.addr(), max),
                iov(buf.addr(), max),
                iov(buf.addr(), 4),
            ],
        ),
    ];
    for (what, v) in &bad {
        expect_copy_errno(
            &dev,
            op,
            t,
            v,
            &ok_r,
            libc::EINVAL,
            &format!("local {what}"),
        )?;
        expect_copy_errno(
            &dev,
            op,
            t,
            &ok_l,
            v,
            libc::EINVAL,
            &format!("remote {what}"),
        )?;
    }
    Ok(())
}

pub(super) fn copy_bad_iovec_array_efault(op: Op) -> TestResult {
    let Fixture {
        dev,
        peer,
        addr,
        local: buf,
    } = Fixture::new(page_size(), 1)?;
    let good_l = [iov(buf.addr(), 16)];
    let good_r = [iov(addr, 16)];
    let unmapped = util::unmapped_address()? as u64;
    for (what, bad) in [
        ("NULL", 0u64),
        ("unmapped", unmapped),
        ("kernel", KERNEL_ADDRESS as u64),
    ] {
        for side in ["local", "remote"] {
            let mut args = sys::cma_copy::describe(&good_l, &good_r, peer.pid, 0)?;
            if side == "local" {
                args.local_iov = bad;
            } else {
                args.remote_iov = bad;
            }
            // SAFETY: the only valid iovecs describe our own mapping.
            let res = unsafe { dev.copy_args(op, &mut args) };
            expect_errno(
                res,
                libc::EFAULT,
                format!("{op:?} {side} iovec array {what}"),
            )?;
        }
    }
    Ok(())
}

/// Addresses no copy may use, with a name.
pub(super) fn bad_addresses() -> io::Result<Vec<(&'static str, usize)>> {
    Ok(vec![
        ("NULL", 0),
        ("unmapped", util::unmapped_address()?),
        ("kernel direct map", KERNEL_ADDRESS),
        ("vsyscall page", 0xffff_ffff_ff60_0000),
        ("non-canonical", 0x8000_0000_0000_0000),
        ("last page", usize::MAX - 4095),
    ])
}

pub(super) fn copy_bad_local_address_efault(op: Op) -> TestResult {
    let dev = Device::open()?;
    let (peer, addr) = remote_buffer(page_size(), 1, 0)?;
    let ro = Mapping::new(page_size(), libc::PROT_READ)?;
    let none = Mapping::new(page_size(), libc::PROT_NONE)?;
    let mut bad = bad_addresses()?;
    bad.push(("PROT_NONE", none.addr()));
    let before = peek(peer.pid, addr, 64)?;
    for &(what, a) in &bad {
        expect_copy_errno(
            &dev,
            op,
            Target::Pid(peer.pid),
            &[iov(a, 64)],
            &[iov(addr, 64)],
            libc::EFAULT,
            &format!("local {what}"),
        )?;
    }
    // Reading into a read-only page must fail too.
    expect_copy_errno(
        &dev,
        Op::Read,
        Target::Pid(peer.pid),
        &[iov(ro.addr(), 64)],
        &[iov(addr, 64)],
        libc::EFAULT,
        "into read-only",
    )?;
    check!(
        ro.bytes().iter().all(|&b| b == 0),
        "the read-only page changed"
    );
    check_eq!(peek(peer.pid, addr, 64)?, before);
    Ok(())
}

pub(super) fn copy_bad_remote_address_efault(op: Op) -> TestResult {
    let dev = Device::open()?;
    // The target has a PROT_NONE page, at the address it reports.
    let mut peer = Peer::spawn(|mut ch| {
        let none = Mapping::new(page_size(), libc::PROT_NONE)?;
        ch.send(&[none.addr() as u64])?;
        ch.wait()
    })?;
    let remote_none = peer.recv()?[0] as usize;
    let own_none = Mapping::new(page_size(), libc::PROT_NONE)?;
    let mut buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    let me = std::process::id() as i32;
    for (path, target, none) in [
        ("remote", peer.pid, remote_none),
        ("direct", me, own_none.addr()),
    ] {
        let mut bad = bad_addresses()?;
        bad.push(("PROT_NONE", none));
        for (what, a) in bad {
            expect_copy_errno(
                &dev,
                op,
                Target::Pid(target),
                &[iov(buf.addr(), 64)],
                &[iov(a, 64)],
                libc::EFAULT,
                &format!("{path} {what}"),
            )?;
        }
    }
    check!(
        buf.bytes_mut().iter().all(|&b| b == 0),
        "a failed read wrote to the local buffer"
    );
    Ok(())
}

/// `CMA_IOC_READ1`/`WRITE1`: flags, targets, zero and oversized lengths, a
/// faulting local side. (Data at every size and offset is checked by
/// `sizes_and_unaligned_offsets`, partial copies by the `partial_*` tests.)
pub(super) fn copy1_arguments_and_errors(op: Op) -> TestResult {
    let ps = page_size();
    let Fixture {
        dev,
        peer,
        addr,
        local,
    } = Fixture::new(2 * ps, 41)?;
    let t = Target::Pid(peer.pid);
    let raw = |op: Op, pid: i32, flags: u32, local: u64, remote: u64, len: u64| {
        let args = sys::cma_copy1 {
            local,
            remote,
            len,
            pid,
            flags,
        };
        let cmd = match op {
            Op::Read => sys::CMA_IOC_READ1,
            Op::Write => sys::CMA_IOC_WRITE1,
        };
        // SAFETY: a live `cma_copy1` over the test's own mappings.
        unsafe { sys::ioctl(dev.as_fd(), cmd, &args as *const _ as usize) }
    };
    let (l, r) = (local.addr() as u64, addr as u64);
    for bit in (0..32).filter(|b| sys::CMA_COPY1_FLAGS_ALL & (1 << b) == 0) {
        expect_errno(
            raw(op, peer.pid, 1 << bit, l, r, 8),
            libc::EINVAL,
            "unknown flag",
        )?;
    }
    expect_errno(raw(op, -1, 0, l, r, 8), libc::ESRCH, "pid -1")?;
    expect_errno(raw(op, 0, 0, l, r, 8), libc::ESRCH, "pid 0")?;
    expect_errno(
        raw(op, 1 << 30, sys::CMA_COPY_PIDFD as u32, l, r, 8),
        libc::EBADF,
        "not a pidfd",
    )?;
    // Zero bytes: 0, without looking at the target.
    check_eq!(raw(op, -1, 0, l, r, 0)?, 0);
    // Through a pidfd.
    let pidfd = cma::pidfd_open(peer.pid)?;
    check_eq!(
        copy1(
            &dev,
            op,
            Target::PidFd(pidfd.as_fd()),
            local.addr(),
            addr,
            100
        )?,
        100
    );
    // A local address that faults at once: EFAULT; remote likewise.
    for (l, r) in [
        (0, r),
        (KERNEL_ADDRESS as u64, r),
        (l, 0),
        (l, KERNEL_ADDRESS as u64),
    ] {
        expect_errno(raw(op, peer.pid, 0, l, r, 8), libc::EFAULT, "bad address")?;
    }
    // A huge length is capped, not refused: the copy runs until the
    // hole in the local buffer after its first page, and says so.
    let local_big = Mapping::new(4 * ps, libc::PROT_READ | libc::PROT_WRITE)?;
    local_big.punch(ps, ps)?;
    check_eq!(
        copy1(&dev, op, t, local_big.addr(), addr, usize::MAX)?,
        ps as u64
    );
    Ok(())
}
