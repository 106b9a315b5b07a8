//! Partial transfers: where a copy stops on a hole, `PROT_NONE`, a read-only
//! page or a local fault, and what it leaves behind.

use crate::ktap::{expect_errno, Failure, TestResult};
use crate::peer::Peer;
use crate::util::{page_size, Mapping, Rng};
use crate::{check, check_eq};
use cma::{Device, Op, Target};
use std::io;

use super::{copy, copy1, expect_copy_errno, iov, peek, pvm, remote_buffer, Fixture};

/// A child with 4 pages of data where page 2 is made bad by `spoil`.
pub(super) fn spoiled_remote(
    spoil: fn(&Mapping) -> io::Result<()>,
) -> Result<(Peer, usize), Failure> {
    let mut peer = Peer::spawn(move |mut ch| {
        let mut m = Mapping::new(4 * page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
        Rng::new(21).fill(m.bytes_mut());
        spoil(&m)?;
        ch.send(&[m.addr() as u64])?;
        ch.wait()
    })?;
    let addr = peer.recv()?[0] as usize;
    Ok((peer, addr))
}

/// Checks a copy that must stop at page 2 of a 4-page remote range, given as
/// one iovec and as two (page 0, pages 1-3).
pub(super) fn check_stops_at_page_2(op: Op, peer: &Peer, addr: usize) -> TestResult {
    let dev = Device::open()?;
    let ps = page_size();
    let local = Mapping::new(4 * ps, libc::PROT_READ | libc::PROT_WRITE)?;
    let l = [iov(local.addr(), 4 * ps)];
    let t = copy(&dev, op, Target::Pid(peer.pid), &l, &[iov(addr, 4 * ps)])?;
    check_eq!((t.bytes, t.error), (2 * ps as u64, libc::EFAULT));
    check_eq!((t.remote_index, t.remote_offset), (0, 2 * ps as u64));
    check_eq!((t.local_index, t.local_offset), (0, 2 * ps as u64));
    // process_vm_readv/writev agree on the count.
    check_eq!(pvm(op, peer.pid, &l, &[iov(addr, 4 * ps)])?, 2 * ps);
    let t = copy(
        &dev,
        op,
        Target::Pid(peer.pid),
        &l,
        &[iov(addr, ps), iov(addr + ps, 3 * ps)],
    )?;
    check_eq!((t.bytes, t.error), (2 * ps as u64, libc::EFAULT));
    check_eq!((t.remote_index, t.remote_offset), (1, ps as u64));
    // The single-range ioctl returns the same count.
    let n = copy1(&dev, op, Target::Pid(peer.pid), local.addr(), addr, 4 * ps)?;
    check_eq!(n, 2 * ps as u64);
    expect_errno(
        copy1(
            &dev,
            op,
            Target::Pid(peer.pid),
            local.addr(),
            addr + 2 * ps,
            ps,
        ),
        libc::EFAULT,
        "single range at the bad page",
    )?;
    // Starting at the bad page: nothing moves, the ioctl fails.
    expect_errno(
        copy(
            &dev,
            op,
            Target::Pid(peer.pid),
            &l,
            &[iov(addr + 2 * ps, ps)],
        ),
        libc::EFAULT,
        "at the bad page",
    )?;
    Ok(())
}

pub(super) fn partial_unmapped_hole_in_remote(op: Op) -> TestResult {
    let (peer, addr) = spoiled_remote(|m| m.punch(2 * page_size(), page_size()))?;
    check_stops_at_page_2(op, &peer, addr)?;
    Ok(())
}

pub(super) fn partial_prot_none_in_remote(op: Op) -> TestResult {
    let (peer, addr) =
        spoiled_remote(|m| m.protect(2 * page_size(), page_size(), libc::PROT_NONE))?;
    check_stops_at_page_2(op, &peer, addr)?;
    Ok(())
}

pub(super) fn partial_write_to_readonly_remote() -> TestResult {
    let (peer, addr) =
        spoiled_remote(|m| m.protect(2 * page_size(), page_size(), libc::PROT_READ))?;
    let before = peek(peer.pid, addr, 4 * page_size())?;
    check_stops_at_page_2(Op::Write, &peer, addr)?;
    // The read-only page is untouched; reading it works.
    let after = peek(peer.pid, addr, 4 * page_size())?;
    let ps = page_size();
    check!(
        after[2 * ps..3 * ps] == before[2 * ps..3 * ps],
        "the read-only page changed"
    );
    let dev = Device::open()?;
    let local = Mapping::new(ps, libc::PROT_READ | libc::PROT_WRITE)?;
    check_eq!(
        copy(
            &dev,
            Op::Read,
            Target::Pid(peer.pid),
            &[iov(local.addr(), ps)],
            &[iov(addr + 2 * ps, ps)]
        )?
        .bytes,
        ps as u64
    );
    Ok(())
}

pub(super) fn partial_local_fault(op: Op) -> TestResult {
    let ps = page_size();
    let Fixture {
        dev,
        peer,
        addr,
        local,
    } = Fixture::new(2 * ps, 31)?;
    local.punch(ps, ps)?;
    // One local iovec spanning the hole, then two with the hole second.
    let t = copy(
        &dev,
        op,
        Target::Pid(peer.pid),
        &[iov(local.addr(), 2 * ps)],
        &[iov(addr, 2 * ps)],
    )?;
    check_eq!(
        (t.bytes, t.error, t.local_index, t.local_offset),
        (ps as u64, libc::EFAULT, 0, ps as u64)
    );
    let t = copy(
        &dev,
        op,
        Target::Pid(peer.pid),
        &[iov(local.addr(), ps), iov(local.addr() + ps, ps)],
        &[iov(addr, 2 * ps)],
    )?;
    check_eq!(
        (t.bytes, t.error, t.local_index, t.local_offset),
        (ps as u64, libc::EFAULT, 1, 0)
    );
    check_eq!((t.remote_index, t.remote_offset), (0, ps as u64));
    Ok(())
}

pub(super) fn write_to_remote_text_or_ro_file_efault() -> TestResult {
    let dev = Device::open()?;
    let mut peer = Peer::spawn(|mut ch| {
        // A read-only shared mapping of a file, and our own text.
        let f = std::fs::File::open("/proc/self/exe")?;
        use std::os::fd::AsRawFd;
        // SAFETY: maps one page of a file read-only; never unmapped (the child exits).
        let ro = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if ro == libc::MAP_FAILED {
            return Err(io::Error::last_os_error().into());
        }
        ch.send(&[
            write_to_remote_text_or_ro_file_efault as *const () as usize as u64,
            ro as u64,
        ])?;
        ch.wait()
    })?;
    let v = peer.recv()?;
    let buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    for (what, a) in [
        ("text", v[0] as usize),
        ("read-only file mapping", v[1] as usize),
    ] {
        let before = peek(peer.pid, a, 16)?;
        expect_copy_errno(
            &dev,
            Op::Write,
            Target::Pid(peer.pid),
            &[iov(buf.addr(), 16)],
            &[iov(a, 16)],
            libc::EFAULT,
            what,
        )?;
        expect_errno(
            pvm(Op::Write, peer.pid, &[iov(buf.addr(), 16)], &[iov(a, 16)]),
            libc::EFAULT,
            format!("process_vm_writev {what}"),
        )?;
        check_eq!(peek(peer.pid, a, 16)?, before);
        // Reading it is fine.
        check_eq!(
            copy(
                &dev,
                Op::Read,
                Target::Pid(peer.pid),
                &[iov(buf.addr(), 16)],
                &[iov(a, 16)]
            )?
            .bytes,
            16
        );
    }
    Ok(())
}

/// Regression: a WRITE whose local source faults part-way through a page
/// once zeroed the rest of the target's page (copy_from_user zero-fills what
/// it cannot copy). The target's bytes past the fault must stay as they were.
pub(super) fn regression_faulting_write_leaves_rest_of_target_page() -> TestResult {
    let dev = Device::open()?;
    let ps = page_size();
    let (peer, addr) = remote_buffer(2 * ps, 77, 0)?;
    let before = peek(peer.pid, addr, 2 * ps)?;
    // Local: one valid page, then a hole. Start 100 bytes before the hole,
    // so that the fault happens in the middle of the first remote page.
    let mut local = Mapping::new(2 * ps, libc::PROT_READ | libc::PROT_WRITE)?;
    Rng::new(78).fill(local.bytes_mut());
    local.punch(ps, ps)?;
    let src = local.addr() + ps - 100;
    let t = copy(
        &dev,
        Op::Write,
        Target::Pid(peer.pid),
        &[iov(src, 2 * ps)],
        &[iov(addr, 2 * ps)],
    )?;
    check_eq!((t.bytes, t.error), (100, libc::EFAULT));
    let after = peek(peer.pid, addr, 2 * ps)?;
    check!(
        after[..100] == local.bytes()[ps - 100..ps],
        "the 100 copied bytes are wrong"
    );
    check!(
        after[100..] == before[100..],
        "bytes past the fault changed in the target"
    );
    Ok(())
}
