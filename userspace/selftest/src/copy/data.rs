//! Data across real processes: strings, a large buffer, sizes and unaligned
//! offsets, and a target that exits during a copy.

use crate::ktap::TestResult;
use crate::peer::Peer;
use crate::util::{page_size, Mapping, Rng};
use crate::{check, check_eq};
use cma::sys::cma_iovec;
use cma::{Device, Op, Target};
use std::io;

use super::{copy, copy1, expect_copy_errno, iov, peek, remote_buffer, Fixture};

pub(super) fn string_across_processes() -> TestResult {
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
pub(super) fn roundtrip(
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

pub(super) fn large_buffer_16m() -> TestResult {
    let len = 16 << 20;
    let Fixture {
        dev,
        peer,
        addr,
        mut local,
    } = Fixture::new(len, 3)?;
    roundtrip(&dev, &peer, addr, &mut local, len, 4)
}

pub(super) fn sizes_and_unaligned_offsets() -> TestResult {
    let span = 4 * page_size() + 65536;
    let Fixture {
        dev,
        peer,
        addr,
        mut local,
    } = Fixture::new(span, 5)?;
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

pub(super) fn target_exits_during_copy(op: Op) -> TestResult {
    let dev = Device::open()?;
    let chunk = 4 << 20;
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
    Ok(())
}
