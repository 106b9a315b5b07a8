//! The direct path: the target is the caller's own address space.

use crate::ktap::TestResult;
use crate::util::{page_size, Mapping, Rng};
use crate::{check, check_eq};
use cma::sys;
use cma::{Device, Op, Target};
use std::io;

use super::{copy, iov, OPS};

pub(super) fn direct_path_self_and_thread() -> TestResult {
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

pub(super) fn direct_path_overlap() -> TestResult {
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
pub(super) fn direct_path_single_copy(op: Op) -> TestResult {
    let me = Target::Pid(std::process::id() as i32);
    let ps = page_size();
    let len = 1 << 20;
    let mut src = Mapping::new(len, libc::PROT_READ | libc::PROT_WRITE)?;
    Rng::new(97).fill(src.bytes_mut());
    let dst = Mapping::new(len, libc::PROT_READ | libc::PROT_WRITE)?;
    let pinned = || -> io::Result<u64> {
        Ok(crate::perm::stat("local_pages_pinned")? + crate::perm::stat("pages_pinned")?)
    };
    // A new file: its cache of our pages is empty.
    let dev = Device::open()?;
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
    // A hole in the source: the copy stops at it, as a remote one would
    // (a new file again, so the source is pinned afresh, not found cached).
    let dev = Device::open()?;
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
