//! Peer fds (`CMA_IOC_ATTACH`): copies through them, their argument checks,
//! and their end when the target exits or execs. Who may attach, and what
//! happens when the access decision's inputs change, is in `perm`.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use cma::sys::{self, cma_iovec};
use cma::{Device, Op, Target};

use crate::copy::{copy1, iov, peek, remote_buffer};
use crate::ktap::{expect_errno, Test, TestResult};
use crate::peer::Peer;
use crate::util::{self, page_size, Mapping, Rng};
use crate::{check, check_eq};

/// The tests of this file, in order.
pub const TESTS: &[Test] = crate::tests![
    attach_copies_both_ways,
    attach_bad_arguments,
    attach_peer_fd_rejects_naming,
    attach_target_exits_esrch,
    attach_target_execs_esrch,
    attach_self_direct,
];

/// `CMA_IOC_ATTACH` with a caller-built argument.
fn attach_raw(dev: &Device, args: &sys::cma_attach) -> io::Result<i32> {
    // SAFETY: the command reads one live `cma_attach`.
    unsafe { sys::ioctl(dev.as_fd(), sys::CMA_IOC_ATTACH, args as *const _ as usize) }
}

fn attach_copies_both_ways() -> TestResult {
    let dev = Device::open()?;
    let len = 5 * page_size() + 123;
    let (remote, addr) = remote_buffer(len, 11, 0)?;
    let peer = dev.attach(Target::Pid(remote.pid))?;
    // Close-on-exec, like every new fd should be.
    // SAFETY: fcntl on an fd we own.
    let fd_flags = unsafe { libc::fcntl(peer.as_raw_fd(), libc::F_GETFD) };
    check!(
        fd_flags & libc::FD_CLOEXEC != 0,
        "peer fd without FD_CLOEXEC"
    );
    peer.probe()?;

    // Read, vectored and one-range, against process_vm_readv.
    let want = peek(remote.pid, addr, len)?;
    let mut got = vec![0u8; len];
    let (a, b) = got.split_at_mut(1000);
    let n = peer.process_vm_readv(
        &mut [io::IoSliceMut::new(a), io::IoSliceMut::new(b)],
        &[
            cma::RemoteIoVec { base: addr, len: 7 },
            cma::RemoteIoVec {
                base: addr + 7,
                len: len - 7,
            },
        ],
    )?;
    check_eq!(n, len);
    check!(got == want, "vectored read through a peer fd differs");
    got.fill(0);
    let n = peer.process_vm_readv(
        &mut [io::IoSliceMut::new(&mut got)],
        &[cma::RemoteIoVec { base: addr, len }],
    )?;
    check_eq!(n, len);
    check!(got == want, "one-range read through a peer fd differs");

    // Write, both forms, checked by reading back with process_vm_readv.
    let mut data = vec![0u8; len];
    Rng::new(12).fill(&mut data);
    let n = peer.process_vm_writev(
        &[io::IoSlice::new(&data)],
        &[cma::RemoteIoVec { base: addr, len }],
    )?;
    check_eq!(n, len);
    check!(
        peek(remote.pid, addr, len)? == data,
        "one-range write differs"
    );
    Rng::new(13).fill(&mut data);
    let (a, b) = data.split_at(4000);
    let n = peer.process_vm_writev(
        &[io::IoSlice::new(a), io::IoSlice::new(b)],
        &[
            cma::RemoteIoVec {
                base: addr,
                len: 100,
            },
            cma::RemoteIoVec {
                base: addr + 100,
                len: len - 100,
            },
        ],
    )?;
    check_eq!(n, len);
    check!(
        peek(remote.pid, addr, len)? == data,
        "vectored write differs"
    );

    // The info ioctl answers on a peer fd; /dev/cma's other commands do not.
    let mut info = sys::cma_info::default();
    // SAFETY: CMA_IOC_INFO writes one `cma_info` to a live struct.
    unsafe {
        sys::ioctl(
            peer.as_fd(),
            sys::CMA_IOC_INFO,
            &mut info as *mut _ as usize,
        )
    }?;
    check_eq!(info.features, crate::EXPECTED_FEATURES);
    let zeros = [0u64; 8];
    for cmd in [sys::CMA_IOC_GRANT, sys::CMA_IOC_REVOKE, sys::CMA_IOC_ATTACH] {
        expect_errno(
            // SAFETY: the buffer is large enough for any command's argument.
            unsafe { sys::ioctl(peer.as_fd(), cmd, zeros.as_ptr() as usize) },
            libc::ENOTTY,
            format!("command {cmd:#x} on a peer fd"),
        )?;
    }
    Ok(())
}

fn attach_bad_arguments() -> TestResult {
    let dev = Device::open()?;
    let remote = Peer::spawn(|ch| ch.wait())?;
    let good = sys::cma_attach {
        pid: remote.pid,
        ..Default::default()
    };
    attach_raw(&dev, &good).map(|fd| {
        // SAFETY: closes the fd just made, which nothing else owns.
        unsafe { libc::close(fd) };
    })?;
    let cases = [
        (
            sys::cma_attach { flags: 2, ..good },
            libc::EINVAL,
            "unknown flag",
        ),
        (
            sys::cma_attach {
                reserved: [0, 1, 0],
                ..good
            },
            libc::EINVAL,
            "reserved field",
        ),
        (sys::cma_attach { pid: 0, ..good }, libc::ESRCH, "pid 0"),
        (sys::cma_attach { pid: -5, ..good }, libc::ESRCH, "pid -5"),
        (
            sys::cma_attach {
                pid: i32::MAX,
                ..good
            },
            libc::ESRCH,
            "no such pid",
        ),
        (
            sys::cma_attach {
                pid: dev.as_raw_fd(),
                flags: sys::CMA_COPY_PIDFD as u32,
                ..good
            },
            libc::EBADF,
            "/dev/cma as a pidfd",
        ),
    ];
    for (args, errno, what) in cases {
        expect_errno(attach_raw(&dev, &args), errno, what)?;
    }
    expect_errno(
        // SAFETY: a NULL argument must be rejected, not followed.
        unsafe { sys::ioctl(dev.as_fd(), sys::CMA_IOC_ATTACH, 0) },
        libc::EFAULT,
        "NULL argument",
    )?;
    // A pidfd names the target too.
    let pidfd = cma::pidfd_open(remote.pid)?;
    dev.attach(Target::PidFd(pidfd.as_fd()))?.probe()?;
    Ok(())
}

fn attach_peer_fd_rejects_naming() -> TestResult {
    let dev = Device::open()?;
    let (remote, addr) = remote_buffer(page_size(), 21, 0)?;
    let peer = dev.attach(Target::Pid(remote.pid))?;
    let mut buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    let (l, r) = ([iov(buf.addr(), 64)], [iov(addr, 64)]);
    for op in [Op::Read, Op::Write] {
        for (pid, flags, what) in [
            (remote.pid, 0, "a pid"),
            (0, sys::CMA_COPY_PIDFD, "the pidfd flag"),
            (-1, 0, "pid -1"),
        ] {
            let mut args = sys::cma_copy::describe(&l, &r, pid, flags)?;
            // SAFETY: iovecs over our own mapping.
            expect_errno(
                unsafe { peer.copy_args(op, &mut args) },
                libc::EINVAL,
                format!("{op:?} on a peer fd with {what}"),
            )?;
            let args1 = sys::cma_copy1 {
                local: buf.addr() as u64,
                remote: addr as u64,
                len: 64,
                pid,
                flags: flags as u32,
            };
            expect_errno(
                // SAFETY: the command reads one `cma_copy1`; the local range
                // is our own mapping.
                unsafe { sys::ioctl(peer.as_fd(), op.cmd1(), &args1 as *const _ as usize) },
                libc::EINVAL,
                format!("{op:?}1 on a peer fd with {what}"),
            )?;
        }
    }
    // Nothing was written by the refused requests.
    check!(
        buf.bytes()[..64].iter().all(|&b| b == 0),
        "refused read wrote"
    );
    check!(
        peek(remote.pid, addr, 64)? == remote_bytes(21, 64),
        "refused write wrote"
    );
    // With the naming fields zero, a one-range read works.
    // SAFETY: the local range is our own mapping.
    let n = unsafe { peer.copy1_raw(Op::Read, buf.addr() as u64, addr as u64, 64) }?;
    check_eq!(n, 64);
    check!(
        buf.bytes_mut()[..64] == remote_bytes(21, 64)[..],
        "read differs"
    );
    Ok(())
}

/// The first `len` bytes [`remote_buffer`] fills from `seed`.
fn remote_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len.div_ceil(8) * 8];
    Rng::new(seed).fill(&mut v);
    v.truncate(len);
    v
}

fn attach_target_exits_esrch() -> TestResult {
    let dev = Device::open()?;
    let (remote, addr) = remote_buffer(page_size(), 31, 0)?;
    let peer = dev.attach(Target::Pid(remote.pid))?;
    let buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    let read = |what: &str| -> TestResult {
        // SAFETY: the local range is our own mapping.
        let r = unsafe { peer.copy1_raw(Op::Read, buf.addr() as u64, addr as u64, 8) };
        expect_errno(r, libc::ESRCH, what)?;
        let r: [cma_iovec; 1] = [iov(addr, 8)];
        // SAFETY: as above.
        let t = unsafe { peer.copy_raw(Op::Write, &[iov(buf.addr(), 8)], &r) };
        expect_errno(t, libc::ESRCH, what)?;
        expect_errno(peer.probe(), libc::ESRCH, what)
    };
    // A zombie has no address space any more; nor has a reaped process.
    remote.kill();
    let zombie = format!("/proc/{}/stat", remote.pid);
    for _ in 0..2000 {
        if std::fs::read_to_string(&zombie).is_ok_and(|s| s.contains(") Z ")) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    read("zombie target")?;
    drop(remote);
    read("reaped target")?;
    Ok(())
}

fn attach_target_execs_esrch() -> TestResult {
    let dev = Device::open()?;
    let mut remote = Peer::spawn(|mut ch| {
        ch.send(&[])?;
        let _ = ch.serve(|_, _| Err(util::exec_sleep()));
        Ok(())
    })?;
    remote.recv()?;
    let peer = dev.attach(Target::Pid(remote.pid))?;
    peer.probe()?;
    remote.command_no_reply(b'x')?;
    check_eq!(util::wait_for_comm(remote.pid, "sleep")?, "sleep");
    // The peer fd was for the old program; the new one needs a new attach.
    expect_errno(peer.probe(), libc::ESRCH, "probe after exec")?;
    dev.attach(Target::Pid(remote.pid))?.probe()?;
    Ok(())
}

fn attach_self_direct() -> TestResult {
    let dev = Device::open()?;
    let peer = dev.attach(Target::Pid(std::process::id() as i32))?;
    let mut src = vec![0u8; 3 * page_size() + 5];
    Rng::new(41).fill(&mut src);
    let mut dst = vec![0u8; src.len()];
    let n = peer.process_vm_readv(
        &mut [io::IoSliceMut::new(&mut dst)],
        &[cma::RemoteIoVec {
            base: src.as_ptr() as usize,
            len: src.len(),
        }],
    )?;
    check_eq!(n, src.len());
    check!(src == dst, "direct read through a peer fd differs");
    // Also by the pid-based one-range ioctl, for comparison.
    dst.fill(0);
    let n = copy1(
        &dev,
        Op::Read,
        Target::Pid(std::process::id() as i32),
        dst.as_mut_ptr() as usize,
        src.as_ptr() as usize,
        src.len(),
    )?;
    check_eq!(n as usize, src.len());
    check!(src == dst, "direct read by pid differs");
    Ok(())
}
