//! The copy ioctls: argument checking, errors, data across real processes,
//! partial transfers, huge pages, the direct path, and an oracle comparison
//! with the kernel's own process_vm_readv/process_vm_writev.

use std::io;
use std::os::fd::AsFd;

use cma::sys::{self, cma_iovec};
use cma::{Device, Op, Target, Transfer};

use crate::ktap::{expect_errno, Failure, Test, TestResult};
use crate::peer::Peer;
use crate::util::{self, page_size, Mapping, Rng, KERNEL_ADDRESS};
use crate::{check, check_eq};

/// The tests of this file, in order.
pub const TESTS: &[Test] = crate::tests![
    copy_unknown_flags_einval,
    copy_nonzero_padding_einval,
    copy_failed_fault_in_target_efault_like_pvm,
    copy_direct_path_survives_fragmentation,
    copy_unwritable_result_moves_nothing,
    copy_too_many_iovecs_einval,
    copy_length_overflow_einval,
    copy_bad_iovec_array_efault,
    copy_bad_local_address_efault,
    copy_bad_remote_address_efault,
    copy_no_such_process_esrch,
    copy_zombie_and_kernel_thread_esrch,
    copy_bad_pidfd_ebadf,
    copy_via_pidfd,
    copy_zero_length_skips_lookup,
    copy1_arguments_and_errors,
    probe_reports_reachability,
    string_across_processes,
    large_buffer_16m,
    sizes_and_unaligned_offsets,
    scatter_gather_oracle_process_vm_readv,
    scatter_gather_oracle_process_vm_writev,
    partial_unmapped_hole_in_remote,
    partial_prot_none_in_remote,
    partial_write_to_readonly_remote,
    partial_local_fault,
    write_to_remote_text_or_ro_file_efault,
    regression_faulting_write_leaves_rest_of_target_page,
    thp_buffers,
    hugetlbfs_buffers,
    total_over_4gib,
    target_exits_during_copy,
    direct_path_self_and_thread,
    direct_path_overlap,
    direct_path_single_copy,
];

const OPS: [Op; 2] = [Op::Read, Op::Write];

pub(crate) fn iov(base: usize, len: usize) -> cma_iovec {
    cma_iovec {
        base: base as u64,
        len: len as u64,
    }
}

/// One copy with raw iovecs.
pub(crate) fn copy(
    dev: &Device,
    op: Op,
    target: Target<'_>,
    local: &[cma_iovec],
    remote: &[cma_iovec],
) -> io::Result<Transfer> {
    // SAFETY: the tests only pass iovecs over their own mappings (or invalid
    // addresses, which the kernel must reject).
    unsafe { dev.copy_raw(op, target, local, remote) }
}

/// One single-range copy (`CMA_IOC_READ1`/`WRITE1`); returns the bytes.
pub(crate) fn copy1(
    dev: &Device,
    op: Op,
    target: Target<'_>,
    local: usize,
    remote: usize,
    len: usize,
) -> io::Result<u64> {
    // SAFETY: as in `copy`.
    unsafe { dev.copy1_raw(op, target, local as u64, remote as u64, len as u64) }
}

/// The kernel's own process_vm_readv/writev, with the same iovecs.
pub(crate) fn pvm(
    op: Op,
    pid: i32,
    local: &[cma_iovec],
    remote: &[cma_iovec],
) -> io::Result<usize> {
    let (l, r) = (
        local.as_ptr() as *const libc::iovec,
        remote.as_ptr() as *const libc::iovec,
    );
    // SAFETY: `cma_iovec` has `iovec`'s layout (asserted in the library); the
    // tests pass iovecs over their own mappings only.
    let ret = unsafe {
        match op {
            Op::Read => libc::process_vm_readv(pid, l, local.len() as _, r, remote.len() as _, 0),
            Op::Write => libc::process_vm_writev(pid, l, local.len() as _, r, remote.len() as _, 0),
        }
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Reads `len` bytes at `addr` of `pid` with process_vm_readv (the reference).
pub(crate) fn peek(pid: i32, addr: usize, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let n = pvm(
        Op::Read,
        pid,
        &[iov(buf.as_mut_ptr() as usize, len)],
        &[iov(addr, len)],
    )?;
    buf.truncate(n);
    Ok(buf)
}

/// A child holding `len` bytes of random data (from `seed`) in its own
/// anonymous mapping made with `flags`; returns it and the address.
pub(crate) fn remote_buffer(len: usize, seed: u64, flags: i32) -> Result<(Peer, usize), Failure> {
    let mut peer = Peer::spawn(move |mut ch| {
        let mut m = Mapping::with_flags(len, libc::PROT_READ | libc::PROT_WRITE, flags)?;
        Rng::new(seed).fill(m.bytes_mut());
        ch.send(&[m.addr() as u64])?;
        ch.wait()
    })?;
    let addr = peer.recv()?[0] as usize;
    Ok((peer, addr))
}

fn expect_copy_errno(
    dev: &Device,
    op: Op,
    t: Target<'_>,
    l: &[cma_iovec],
    r: &[cma_iovec],
    errno: i32,
    what: &str,
) -> TestResult {
    expect_errno(copy(dev, op, t, l, r), errno, format!("{op:?} {what}"))
}

fn copy_unknown_flags_einval() -> TestResult {
    let dev = Device::open()?;
    let (peer, addr) = remote_buffer(page_size(), 1, 0)?;
    let mut buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    let l = [iov(buf.addr(), 16)];
    let r = [iov(addr, 16)];
    for op in OPS {
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
    }
    check!(
        buf.bytes_mut().iter().all(|&b| b == 0),
        "a rejected request copied data"
    );
    Ok(())
}

const FAIL_PAGE_ALLOC: &str = "/sys/kernel/debug/fail_page_alloc";

/// Makes this process's page allocations fail from now on (fault injection),
/// after faulting in and locking everything it has mapped: its code and data
/// come over 9p here, and a page fault on them would need allocations that
/// now fail. Returns whether it worked.
fn fail_here() -> bool {
    // SAFETY: mlockall(2) has no memory-safety preconditions.
    let locked = unsafe { libc::mlockall(libc::MCL_CURRENT) } == 0;
    locked && std::fs::write("/proc/self/make-it-fail", "1").is_ok()
}

/// Sets the fail_page_alloc knobs (fault injection, debug kernel): page
/// allocations of at least `min_order` fail with `probability` percent, for
/// tasks that ask for it (`/proc/self/make-it-fail`).
fn fail_page_alloc(probability: &str, min_order: &str) -> io::Result<()> {
    for (knob, value) in [
        ("verbose", "0"),
        ("task-filter", "Y"),
        ("ignore-gfp-wait", "N"),
        ("ignore-gfp-highmem", "N"),
        ("min-order", min_order),
        ("interval", "1"),
        ("times", "-1"),
        ("probability", probability),
    ] {
        std::fs::write(format!("{FAIL_PAGE_ALLOC}/{knob}"), value)?;
    }
    Ok(())
}

/// A write into a target's pages that GUP cannot fault in, because every page
/// allocation of the copier fails (fault injection): `process_vm_writev`
/// says `EFAULT`, whatever GUP said (`ENOMEM`), and so must cma.
fn copy_failed_fault_in_target_efault_like_pvm() -> TestResult {
    if !std::path::Path::new(FAIL_PAGE_ALLOC).exists() {
        return Err(Failure::Skip(
            "no fail_page_alloc (debug kernel only)".into(),
        ));
    }
    let ps = page_size();
    // Never touched: a write must allocate its pages.
    let mut target = Peer::spawn(move |mut ch| {
        let m = Mapping::new(64 * ps, libc::PROT_READ | libc::PROT_WRITE)?;
        ch.send(&[m.addr() as u64])?;
        ch.wait()
    })?;
    let addr = target.recv()?[0] as usize;
    let dev = Device::open()?;
    let src = vec![0x5au8; 2 * ps];
    fail_page_alloc("100", "0")?;
    let result = util::in_forked(|| {
        // Only this process's allocations fail.
        if !fail_here() {
            return 200;
        }
        let l = [iov(src.as_ptr() as usize, 2 * ps)];
        let cma = copy(
            &dev,
            Op::Write,
            Target::Pid(target.pid),
            &l,
            &[iov(addr, 2 * ps)],
        );
        let pvm = pvm(Op::Write, target.pid, &l, &[iov(addr + 8 * ps, 2 * ps)]);
        let _ = std::fs::write("/proc/self/make-it-fail", "0");
        let errno = |r: Result<u64, io::Error>| r.err().and_then(|e| e.raw_os_error()).unwrap_or(0);
        let (c, p) = (errno(cma.map(|t| t.bytes)), errno(pvm.map(|n| n as u64)));
        println!("# with page allocations failing: cma errno {c}, process_vm_writev errno {p}");
        if c == p && c == libc::EFAULT {
            0
        } else {
            1
        }
    });
    fail_page_alloc("0", "0")?;
    check_eq!(result?, 0, "cma's errno differs from process_vm_writev's");
    Ok(())
}

/// A copy within the caller's own address space (the direct path) while no
/// allocation of more than one page can succeed (fault injection, as under
/// fragmentation): its staging buffer must not need contiguous memory.
fn copy_direct_path_survives_fragmentation() -> TestResult {
    if !std::path::Path::new(FAIL_PAGE_ALLOC).exists() {
        return Err(Failure::Skip(
            "no fail_page_alloc (debug kernel only)".into(),
        ));
    }
    let dev = Device::open()?;
    let len = 64 << 10;
    // Overlapping ranges, so that the copy is staged through the kernel
    // buffer (the allocation this test is about): dst = buf[0..len],
    // src = buf[4096..4096 + len], one chunk, so a memmove.
    let mut buf = vec![0u8; len + 4096];
    Rng::new(11).fill(&mut buf);
    let src = buf[4096..].to_vec();
    fail_page_alloc("100", "1")?;
    let result = util::in_forked(|| {
        if !fail_here() {
            return 200;
        }
        let base = buf.as_mut_ptr() as usize;
        let r = copy(
            &dev,
            Op::Read,
            Target::Pid(std::process::id() as i32),
            &[iov(base, len)],
            &[iov(base + 4096, len)],
        );
        let _ = std::fs::write("/proc/self/make-it-fail", "0");
        let dst = &buf[..len];
        match r {
            Ok(t) if t.bytes == len as u64 && dst == src => 0,
            Ok(t) => {
                println!(
                    "# {} bytes copied, data {}",
                    t.bytes,
                    if dst == src { "equal" } else { "differs" }
                );
                1
            }
            Err(e) => {
                println!("# direct copy failed: {e}");
                2
            }
        }
    });
    fail_page_alloc("0", "0")?;
    check_eq!(result?, 0, "the direct path needed more than single pages");
    Ok(())
}

/// A WRITE whose `struct cma_copy` is readable but not writable: the result
/// could not be reported, so nothing may be written into the target (else
/// the caller could not learn how much it changed there).
fn copy_unwritable_result_moves_nothing() -> TestResult {
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
    for op in OPS {
        let args = sys::cma_copy::describe(&l, &r, peer.pid, 0)?;
        let mut page = Mapping::new(ps, libc::PROT_READ | libc::PROT_WRITE)?;
        // SAFETY: plain-old-data struct into the start of our own page.
        unsafe { std::ptr::write_unaligned(page.bytes_mut().as_mut_ptr().cast(), args) };
        page.protect(0, ps, libc::PROT_READ)?;
        src.bytes_mut().fill(0xee);
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
    }
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

fn copy_nonzero_padding_einval() -> TestResult {
    let dev = Device::open()?;
    let (peer, addr) = remote_buffer(page_size(), 1, 0)?;
    let buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
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
    for op in OPS {
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
    }
    Ok(())
}

fn copy_too_many_iovecs_einval() -> TestResult {
    let dev = Device::open()?;
    let (peer, addr) = remote_buffer(page_size(), 1, 0)?;
    let buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    // One more than the limit, CMA_MAX_IOV (UIO_MAXIOV, 1024).
    let max = sys::CMA_MAX_IOV as usize;
    let many: Vec<cma_iovec> = (0..=max).map(|i| iov(buf.addr() + i % 4096, 1)).collect();
    let many_r: Vec<cma_iovec> = (0..=max).map(|i| iov(addr + i % 4096, 1)).collect();
    for op in OPS {
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
    }
    Ok(())
}

fn copy_length_overflow_einval() -> TestResult {
    let dev = Device::open()?;
    let (peer, addr) = remote_buffer(page_size(), 1, 0)?;
    let buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
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
    for op in OPS {
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
    }
    Ok(())
}

fn copy_bad_iovec_array_efault() -> TestResult {
    let dev = Device::open()?;
    let (peer, addr) = remote_buffer(page_size(), 1, 0)?;
    let buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    let good_l = [iov(buf.addr(), 16)];
    let good_r = [iov(addr, 16)];
    let unmapped = util::unmapped_address()? as u64;
    for op in OPS {
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
    }
    Ok(())
}

/// Addresses no copy may use, with a name.
fn bad_addresses() -> io::Result<Vec<(&'static str, usize)>> {
    Ok(vec![
        ("NULL", 0),
        ("unmapped", util::unmapped_address()?),
        ("kernel direct map", KERNEL_ADDRESS),
        ("vsyscall page", 0xffff_ffff_ff60_0000),
        ("non-canonical", 0x8000_0000_0000_0000),
        ("last page", usize::MAX - 4095),
    ])
}

fn copy_bad_local_address_efault() -> TestResult {
    let dev = Device::open()?;
    let (peer, addr) = remote_buffer(page_size(), 1, 0)?;
    let ro = Mapping::new(page_size(), libc::PROT_READ)?;
    let none = Mapping::new(page_size(), libc::PROT_NONE)?;
    let mut bad = bad_addresses()?;
    bad.push(("PROT_NONE", none.addr()));
    let before = peek(peer.pid, addr, 64)?;
    for op in OPS {
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

fn copy_bad_remote_address_efault() -> TestResult {
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
    for op in OPS {
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
    }
    check!(
        buf.bytes_mut().iter().all(|&b| b == 0),
        "a failed read wrote to the local buffer"
    );
    Ok(())
}

fn copy_no_such_process_esrch() -> TestResult {
    let dev = Device::open()?;
    let buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    let peer = Peer::spawn(|ch| ch.wait())?;
    let gone = peer.pid;
    check_eq!(peer.finish()?, 0);
    for op in OPS {
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
    }
    Ok(())
}

fn copy_zombie_and_kernel_thread_esrch() -> TestResult {
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
    for op in OPS {
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
    }
    Ok(())
}

fn copy_bad_pidfd_ebadf() -> TestResult {
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
    let dev = Device::open()?;
    let buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    let null = std::fs::File::open("/dev/null")?;
    let l = [iov(buf.addr(), 8)];
    for op in OPS {
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
    }
    Ok(())
}

fn copy_via_pidfd() -> TestResult {
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

fn copy_zero_length_skips_lookup() -> TestResult {
    let dev = Device::open()?;
    let buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    for op in OPS {
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
    }
    Ok(())
}

fn probe_reports_reachability() -> TestResult {
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

fn string_across_processes() -> TestResult {
    let dev = Device::open()?;
    let msg = b"Hello from the other side of /dev/cma!\0";
    let mut peer = Peer::spawn(|mut ch| {
        let mut m = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
        m.bytes_mut()[..msg.len()].copy_from_slice(msg);
        let addr = m.addr();
        ch.send(&[addr as u64])?;
        // On request, report what is now in the buffer (its first word).
        ch.serve(|_, _| Ok(vec![u64::from_ne_bytes(m.bytes()[..8].try_into().unwrap())]))
    })?;
    let addr = peer.recv()?[0] as usize;
    let mut got = vec![0u8; msg.len()];
    let n = dev.process_vm_readv(
        Target::Pid(peer.pid),
        &mut [io::IoSliceMut::new(&mut got)],
        &[cma::RemoteIoVec {
            base: addr,
            len: msg.len(),
        }],
    )?;
    check_eq!(n, msg.len());
    check!(got == msg, "read {:?}", String::from_utf8_lossy(&got));
    let n = dev.process_vm_writev(
        Target::Pid(peer.pid),
        &[io::IoSlice::new(b"Goodbye!")],
        &[cma::RemoteIoVec { base: addr, len: 8 }],
    )?;
    check_eq!(n, 8);
    // The child itself sees the new bytes.
    check_eq!(peer.command(b'?', &[])?[0].to_ne_bytes(), *b"Goodbye!");
    Ok(())
}

/// Copies `len` bytes both ways between fresh buffers and checks them.
fn roundtrip(
    dev: &Device,
    peer: &Peer,
    remote: usize,
    local: &mut Mapping,
    len: usize,
    seed: u64,
) -> TestResult {
    let t = copy(
        dev,
        Op::Read,
        Target::Pid(peer.pid),
        &[iov(local.addr(), len)],
        &[iov(remote, len)],
    )?;
    check_eq!((t.bytes, t.error), (len as u64, 0));
    check!(
        local.bytes()[..len] == peek(peer.pid, remote, len)?[..],
        "read data differs ({len} bytes)"
    );
    Rng::new(seed).fill(&mut local.bytes_mut()[..len]);
    let t = copy(
        dev,
        Op::Write,
        Target::Pid(peer.pid),
        &[iov(local.addr(), len)],
        &[iov(remote, len)],
    )?;
    check_eq!((t.bytes, t.error), (len as u64, 0));
    check!(
        local.bytes()[..len] == peek(peer.pid, remote, len)?[..],
        "written data differs ({len} bytes)"
    );
    Ok(())
}

/// `CMA_IOC_READ1`/`WRITE1`: flags, targets, zero and oversized lengths, a
/// faulting local side. (Data at every size and offset is checked by
/// `sizes_and_unaligned_offsets`, partial copies by the `partial_*` tests.)
fn copy1_arguments_and_errors() -> TestResult {
    let dev = Device::open()?;
    let ps = page_size();
    let (peer, addr) = remote_buffer(2 * ps, 41, 0)?;
    let local = Mapping::new(2 * ps, libc::PROT_READ | libc::PROT_WRITE)?;
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
    for op in OPS {
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
    }
    Ok(())
}

fn large_buffer_16m() -> TestResult {
    let len = 16 << 20;
    let dev = Device::open()?;
    let (peer, addr) = remote_buffer(len, 3, 0)?;
    let mut local = Mapping::new(len, libc::PROT_READ | libc::PROT_WRITE)?;
    roundtrip(&dev, &peer, addr, &mut local, len, 4)
}

fn sizes_and_unaligned_offsets() -> TestResult {
    let dev = Device::open()?;
    let span = 4 * page_size() + 65536;
    let (peer, addr) = remote_buffer(span, 5, 0)?;
    let mut local = Mapping::new(span, libc::PROT_READ | libc::PROT_WRITE)?;
    let mut rng = Rng::new(6);
    for len in [0usize, 1, 4095, 4096, 4097, 8191, 65537] {
        for loff in [0usize, 1, 4095] {
            for roff in [0usize, 3, 4094] {
                for (op, single) in [
                    (Op::Read, false),
                    (Op::Write, false),
                    (Op::Read, true),
                    (Op::Write, true),
                ] {
                    let before_remote = peek(peer.pid, addr, span)?;
                    rng.fill(local.bytes_mut());
                    let before_local = local.bytes().to_vec();
                    let (l, r) = (local.addr() + loff, addr + roff);
                    if single {
                        let n = copy1(&dev, op, Target::Pid(peer.pid), l, r, len)?;
                        check_eq!(n, len as u64);
                    } else {
                        let t = copy(
                            &dev,
                            op,
                            Target::Pid(peer.pid),
                            &[iov(l, len)],
                            &[iov(r, len)],
                        )?;
                        check_eq!((t.bytes, t.error), (len as u64, 0));
                    }
                    // Exactly the iovec's bytes changed, nothing around them.
                    let (mut want_local, mut want_remote) =
                        (before_local.clone(), before_remote.clone());
                    match op {
                        Op::Read => want_local[loff..loff + len]
                            .copy_from_slice(&before_remote[roff..roff + len]),
                        Op::Write => want_remote[roff..roff + len]
                            .copy_from_slice(&before_local[loff..loff + len]),
                    }
                    check!(
                        local.bytes() == &want_local[..],
                        "{op:?} (single {single}) len {len} loff {loff} roff {roff}: local side wrong"
                    );
                    check!(
                        peek(peer.pid, addr, span)? == want_remote,
                        "{op:?} (single {single}) len {len} loff {loff} roff {roff}: remote side wrong"
                    );
                }
            }
        }
    }
    Ok(())
}

/// `n` iovecs that together cover `[base, base + len)` in shuffled order,
/// some of them empty.
fn random_layout(rng: &mut Rng, base: usize, len: usize, n: usize) -> Vec<cma_iovec> {
    let mut cuts: Vec<usize> = (0..n - 1)
        .map(|_| {
            if rng.below(8) == 0 {
                0
            } else {
                rng.below(len + 1)
            }
        })
        .collect();
    cuts.push(0);
    cuts.push(len);
    cuts.sort_unstable();
    let mut v: Vec<cma_iovec> = cuts
        .windows(2)
        .map(|w| iov(base + w[0], w[1] - w[0]))
        .collect();
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

fn oracle(op: Op, seed: u64) -> TestResult {
    let dev = Device::open()?;
    let max = 256 << 10;
    // Two identical remote buffers (one for each mechanism) in one child.
    let mut peer = Peer::spawn(move |mut ch| {
        let mut a = Mapping::new(max, libc::PROT_READ | libc::PROT_WRITE)?;
        let mut b = Mapping::new(max, libc::PROT_READ | libc::PROT_WRITE)?;
        Rng::new(seed).fill(a.bytes_mut());
        Rng::new(seed).fill(b.bytes_mut());
        ch.send(&[a.addr() as u64, b.addr() as u64])?;
        ch.wait()
    })?;
    let v = peer.recv()?;
    let (ra, rb) = (v[0] as usize, v[1] as usize);
    let mut la = Mapping::new(max, libc::PROT_READ | libc::PROT_WRITE)?;
    let mut lb = Mapping::new(max, libc::PROT_READ | libc::PROT_WRITE)?;
    let mut rng = Rng::new(seed ^ 0xabcd);
    for round in 0..24 {
        let nl = 8 + rng.below(1017);
        let nr = 8 + rng.below(1017);
        let (llen, rlen) = (rng.below(max + 1), rng.below(max + 1));
        let lay_l = random_layout(&mut rng, 0, llen, nl);
        let lay_r = random_layout(&mut rng, 0, rlen, nr);
        let shift = |lay: &[cma_iovec], base: usize| -> Vec<cma_iovec> {
            lay.iter()
                .map(|i| iov(base + i.base as usize, i.len as usize))
                .collect()
        };
        rng.fill(la.bytes_mut());
        lb.bytes_mut().copy_from_slice(la.bytes());
        let t = copy(
            &dev,
            op,
            Target::Pid(peer.pid),
            &shift(&lay_l, la.addr()),
            &shift(&lay_r, ra),
        )?;
        let n = pvm(op, peer.pid, &shift(&lay_l, lb.addr()), &shift(&lay_r, rb))?;
        let what = format!(
            "round {round} (seed {seed}): {nl} local iovecs / {llen} bytes, {nr} remote / {rlen}"
        );
        check!(
            t.bytes as usize == n && t.error == 0,
            "{what}: cma moved {} bytes (error {}), process_vm moved {n}",
            t.bytes,
            t.error
        );
        check!(la.bytes() == lb.bytes(), "{what}: local buffers differ");
        check!(
            peek(peer.pid, ra, max)? == peek(peer.pid, rb, max)?,
            "{what}: remote buffers differ"
        );
    }
    Ok(())
}

fn scatter_gather_oracle_process_vm_readv() -> TestResult {
    oracle(Op::Read, 11)
}

fn scatter_gather_oracle_process_vm_writev() -> TestResult {
    oracle(Op::Write, 12)
}

/// A child with 4 pages of data where page 2 is made bad by `spoil`.
fn spoiled_remote(spoil: fn(&Mapping) -> io::Result<()>) -> Result<(Peer, usize), Failure> {
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
fn check_stops_at_page_2(op: Op, peer: &Peer, addr: usize) -> TestResult {
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

fn partial_unmapped_hole_in_remote() -> TestResult {
    let (peer, addr) = spoiled_remote(|m| m.punch(2 * page_size(), page_size()))?;
    for op in OPS {
        check_stops_at_page_2(op, &peer, addr)?;
    }
    Ok(())
}

fn partial_prot_none_in_remote() -> TestResult {
    let (peer, addr) =
        spoiled_remote(|m| m.protect(2 * page_size(), page_size(), libc::PROT_NONE))?;
    for op in OPS {
        check_stops_at_page_2(op, &peer, addr)?;
    }
    Ok(())
}

fn partial_write_to_readonly_remote() -> TestResult {
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

fn partial_local_fault() -> TestResult {
    let dev = Device::open()?;
    let ps = page_size();
    let (peer, addr) = remote_buffer(2 * ps, 31, 0)?;
    let local = Mapping::new(2 * ps, libc::PROT_READ | libc::PROT_WRITE)?;
    local.punch(ps, ps)?;
    for op in OPS {
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
    }
    Ok(())
}

fn write_to_remote_text_or_ro_file_efault() -> TestResult {
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
fn regression_faulting_write_leaves_rest_of_target_page() -> TestResult {
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

const HUGE: usize = 2 << 20;

/// A 2 MiB-aligned `len`-byte region inside a fresh mapping, with
/// MADV_HUGEPAGE, touched so that it is populated.
fn thp_region(len: usize) -> io::Result<(Mapping, usize)> {
    let mut m = Mapping::new(len + HUGE, libc::PROT_READ | libc::PROT_WRITE)?;
    let start = (m.addr() + HUGE - 1) & !(HUGE - 1);
    // SAFETY: the range lies inside `m`.
    unsafe { libc::madvise(start as *mut _, len, libc::MADV_HUGEPAGE) };
    let off = start - m.addr();
    Rng::new(41).fill(&mut m.bytes_mut()[off..off + len]);
    Ok((m, start))
}

fn anon_huge_kb(pid: i32) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    Ok(s.lines()
        .find(|l| l.starts_with("AnonHugePages:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

fn thp_buffers() -> TestResult {
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if thp.contains("[never]") || thp.is_empty() {
        return Err(Failure::Skip("transparent huge pages disabled".into()));
    }
    let len = 2 * HUGE;
    let mut peer = Peer::spawn(move |mut ch| {
        let (m, start) = thp_region(len)?;
        ch.send(&[start as u64])?;
        ch.wait()?;
        drop(m);
        Ok(())
    })?;
    let addr = peer.recv()?[0] as usize;
    let huge_kb = anon_huge_kb(peer.pid)?;
    check!(huge_kb > 0, "the target got no transparent huge page");
    let (local, lstart) = thp_region(len)?;
    let dev = Device::open()?;
    let mut rng = Rng::new(42);
    for op in OPS {
        // Across the boundary between the two huge pages, unaligned, and whole.
        for (roff, loff, n) in [
            (HUGE - 4099, 5, 8200),
            (0, 0, len),
            (17, HUGE + 3, HUGE - 40),
        ] {
            let before = peek(peer.pid, addr, len)?;
            // SAFETY: `lstart..lstart + len` lies inside `local`.
            let lbuf = unsafe { std::slice::from_raw_parts_mut(lstart as *mut u8, len) };
            rng.fill(lbuf);
            let lbefore = lbuf.to_vec();
            let t = copy(
                &dev,
                op,
                Target::Pid(peer.pid),
                &[iov(lstart + loff, n)],
                &[iov(addr + roff, n)],
            )?;
            check_eq!((t.bytes, t.error), (n as u64, 0));
            let after = peek(peer.pid, addr, len)?;
            // SAFETY: as above; the copy is done.
            let lbuf = unsafe { std::slice::from_raw_parts(lstart as *const u8, len) };
            match op {
                Op::Read => check!(
                    lbuf[loff..loff + n] == before[roff..roff + n] && after == before,
                    "THP read wrong at {roff}/{loff}/{n}"
                ),
                Op::Write => check!(
                    after[roff..roff + n] == lbefore[loff..loff + n] && lbuf == &lbefore[..],
                    "THP write wrong at {roff}/{loff}/{n}"
                ),
            }
        }
    }
    drop(local);
    println!("# target AnonHugePages: {huge_kb} kB");
    Ok(())
}

fn hugetlbfs_buffers() -> TestResult {
    if util::is_root() {
        let _ = std::fs::write("/proc/sys/vm/nr_hugepages", "8");
    }
    let len = 2 * HUGE;
    let mut peer = Peer::spawn(move |mut ch| {
        let mut m =
            match Mapping::with_flags(len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_HUGETLB) {
                Ok(m) => m,
                Err(_) => {
                    ch.send(&[0])?;
                    return ch.wait();
                }
            };
        Rng::new(51).fill(m.bytes_mut());
        ch.send(&[m.addr() as u64])?;
        ch.wait()
    })?;
    let addr = peer.recv()?[0] as usize;
    if addr == 0 {
        return Err(Failure::Skip("no hugetlbfs pages available".into()));
    }
    let dev = Device::open()?;
    let mut local = Mapping::new(len, libc::PROT_READ | libc::PROT_WRITE)?;
    roundtrip(&dev, &peer, addr, &mut local, len, 52)?;
    // Unaligned, across the boundary between the two huge pages.
    let t = copy(
        &dev,
        Op::Read,
        Target::Pid(peer.pid),
        &[iov(local.addr() + 1, 10000)],
        &[iov(addr + HUGE - 5000, 10000)],
    )?;
    check_eq!(t.bytes, 10000);
    check!(
        local.bytes()[1..10001] == peek(peer.pid, addr + HUGE - 5000, 10000)?[..],
        "hugetlb unaligned read wrong"
    );
    Ok(())
}

fn total_over_4gib() -> TestResult {
    let dev = Device::open()?;
    let chunk = 8 << 20;
    let reps = 520; // 520 * 8 MiB = 4160 MiB > 4 GiB
                    // Huge-page backed on both sides when THP allows: the point is the byte
                    // count, and 4 KiB pages make this slow under emulation.
    let mut peer = Peer::spawn(move |mut ch| {
        let (m, start) = thp_region(chunk)?;
        ch.send(&[start as u64])?;
        ch.wait()?;
        drop(m);
        Ok(())
    })?;
    let addr = peer.recv()?[0] as usize;
    let (local_map, local) = thp_region(chunk)?;
    let l: Vec<cma_iovec> = (0..reps).map(|_| iov(local, chunk)).collect();
    let r: Vec<cma_iovec> = (0..reps).map(|_| iov(addr, chunk)).collect();
    let total = (reps * chunk) as u64;
    // SAFETY: `local..local + chunk` lies inside `local_map`, alive until the end.
    let lbuf = |_: &Mapping| unsafe { std::slice::from_raw_parts_mut(local as *mut u8, chunk) };
    lbuf(&local_map).fill(0);
    let t = copy(&dev, Op::Read, Target::Pid(peer.pid), &l, &r)?;
    check_eq!(
        (t.bytes, t.error, t.remote_index, t.local_index),
        (total, 0, reps as u32, reps as u32)
    );
    check!(
        lbuf(&local_map) == &peek(peer.pid, addr, chunk)?[..],
        "data differs after a 4 GiB read"
    );
    Rng::new(62).fill(lbuf(&local_map));
    let t = copy(&dev, Op::Write, Target::Pid(peer.pid), &l, &r)?;
    check_eq!((t.bytes, t.error), (total, 0));
    check!(
        lbuf(&local_map) == &peek(peer.pid, addr, chunk)?[..],
        "data differs after a 4 GiB write"
    );
    Ok(())
}

fn target_exits_during_copy() -> TestResult {
    let dev = Device::open()?;
    let chunk = 4 << 20;
    for op in OPS {
        let (peer, addr) = remote_buffer(chunk, 71, 0)?;
        let local = Mapping::new(chunk, libc::PROT_READ | libc::PROT_WRITE)?;
        let l: Vec<cma_iovec> = (0..64).map(|_| iov(local.addr(), chunk)).collect();
        let r: Vec<cma_iovec> = (0..64).map(|_| iov(addr, chunk)).collect();
        let pid = peer.pid;
        let killer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(30));
            // SAFETY: plain syscall.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        });
        let res = copy(&dev, op, Target::Pid(peer.pid), &l, &r);
        killer.join().unwrap();
        match res {
            // The copy holds the target's mm: it may well finish.
            Ok(t) => check!(
                t.bytes > 0 && (t.error == 0 || t.error == libc::EFAULT),
                "{op:?}: {t:?}"
            ),
            Err(e) => check!(
                matches!(e.raw_os_error(), Some(libc::ESRCH)),
                "{op:?}: unexpected {e}"
            ),
        }
        drop(peer);
        expect_copy_errno(
            &dev,
            op,
            Target::Pid(pid),
            &l[..1],
            &r[..1],
            libc::ESRCH,
            "after exit",
        )?;
    }
    Ok(())
}

fn direct_path_self_and_thread() -> TestResult {
    let dev = Device::open()?;
    let me = std::process::id() as i32;
    let mut src = Mapping::new(3 * page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    Rng::new(81).fill(src.bytes_mut());
    let mut dst = Mapping::new(3 * page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    let n = 3 * page_size() - 7;
    let t = copy(
        &dev,
        Op::Read,
        Target::Pid(me),
        &[iov(dst.addr(), n)],
        &[iov(src.addr() + 7, n)],
    )?;
    check_eq!((t.bytes, t.error), (n as u64, 0));
    check!(dst.bytes()[..n] == src.bytes()[7..], "direct read wrong");
    Rng::new(82).fill(dst.bytes_mut());
    let t = copy(
        &dev,
        Op::Write,
        Target::Pid(me),
        &[iov(dst.addr(), n)],
        &[iov(src.addr(), n)],
    )?;
    check_eq!((t.bytes, t.error), (n as u64, 0));
    check!(src.bytes()[..n] == dst.bytes()[..n], "direct write wrong");
    // Another thread of this process, by its thread id: same address space.
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let th = std::thread::spawn(move || {
        // SAFETY: plain syscall.
        tx.send(unsafe { libc::gettid() }).unwrap();
        let _ = done_rx.recv();
    });
    let tid = rx.recv().unwrap();
    let res = copy(
        &dev,
        Op::Read,
        Target::Pid(tid),
        &[iov(dst.addr(), 100)],
        &[iov(src.addr(), 100)],
    );
    let probe = dev.probe(Target::Pid(tid));
    done_tx.send(()).unwrap();
    th.join().unwrap();
    check_eq!(res?.bytes, 100);
    probe?;
    check!(
        dst.bytes()[..100] == src.bytes()[..100],
        "read through a thread id wrong"
    );
    Ok(())
}

fn direct_path_overlap() -> TestResult {
    let dev = Device::open()?;
    let me = Target::Pid(std::process::id() as i32);
    let chunk = sys::CMA_DIRECT_CHUNK as usize;
    let mut m = Mapping::new(4 * chunk, libc::PROT_READ | libc::PROT_WRITE)?;
    let len = 2 * chunk + 500;
    for (src_off, dst_off) in [(1000usize, 0usize), (0, 1000), (0, chunk + 3), (5, 5)] {
        for op in OPS {
            Rng::new(91).fill(m.bytes_mut());
            let mut want = m.bytes().to_vec();
            // The contract: forward, CMA_DIRECT_CHUNK at a time, each chunk
            // read completely before it is written.
            let mut off = 0;
            while off < len {
                let n = chunk.min(len - off);
                let tmp = want[src_off + off..src_off + off + n].to_vec();
                want[dst_off + off..dst_off + off + n].copy_from_slice(&tmp);
                off += n;
            }
            if dst_off <= src_off {
                let mut mm = m.bytes().to_vec();
                mm.copy_within(src_off..src_off + len, dst_off);
                check!(mm == want, "model is not memmove for dst <= src");
            }
            let (src, dst) = (iov(m.addr() + src_off, len), iov(m.addr() + dst_off, len));
            let t = match op {
                Op::Read => copy(&dev, op, me, &[dst], &[src])?,
                Op::Write => copy(&dev, op, me, &[src], &[dst])?,
            };
            check_eq!((t.bytes, t.error), (len as u64, 0));
            check!(
                m.bytes() == &want[..],
                "{op:?} overlap src+{src_off} dst+{dst_off}: wrong result"
            );
        }
    }
    Ok(())
}

/// A direct copy between ranges that do not overlap is one copy from the
/// source's pinned pages (pinned with `pin_user_pages_fast`, or kept pinned
/// by the cache of the caller's pages: the stats count them), with the same
/// bytes and partial-copy report as a remote copy; ranges that may overlap
/// go through the staging buffer and pin nothing.
fn direct_path_single_copy() -> TestResult {
    let me = Target::Pid(std::process::id() as i32);
    let ps = page_size();
    let len = 1 << 20;
    let mut src = Mapping::new(len, libc::PROT_READ | libc::PROT_WRITE)?;
    Rng::new(97).fill(src.bytes_mut());
    let mut dst = Mapping::new(len, libc::PROT_READ | libc::PROT_WRITE)?;
    let pinned = || -> io::Result<u64> {
        Ok(crate::perm::stat("local_pages_pinned")? + crate::perm::stat("pages_pinned")?)
    };
    for op in OPS {
        // A new file each time: its cache of our pages is empty.
        let dev = Device::open()?;
        dst.bytes_mut().fill(0);
        let before = pinned()?;
        let (local, remote) = match op {
            Op::Read => (iov(dst.addr(), len), iov(src.addr(), len)),
            Op::Write => (iov(src.addr(), len), iov(dst.addr(), len)),
        };
        let t = copy(&dev, op, me, &[local], &[remote])?;
        check_eq!((t.bytes, t.error), (len as u64, 0));
        check!(dst.bytes() == src.bytes(), "{op:?}: wrong bytes");
        let n = pinned()? - before;
        check!(
            n >= (len / ps) as u64,
            "{op:?}: {n} pages pinned, the source was not"
        );
    }
    let dev = Device::open()?;
    // A hole in the source: the copy stops at it, as a remote one would.
    src.punch(len / 2, ps)?;
    let t = copy(
        &dev,
        Op::Read,
        me,
        &[iov(dst.addr(), len)],
        &[iov(src.addr(), len)],
    )?;
    check_eq!((t.bytes, t.error), ((len / 2) as u64, libc::EFAULT));
    // Overlap: staged, nothing pinned.
    let before = pinned()?;
    let t = copy(
        &dev,
        Op::Read,
        me,
        &[iov(dst.addr(), ps)],
        &[iov(dst.addr() + 64, ps)],
    )?;
    check_eq!((t.bytes, t.error), (ps as u64, 0));
    check_eq!(pinned()? - before, 0);
    Ok(())
}
