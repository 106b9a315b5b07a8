//! Huge pages: THP and hugetlbfs buffers, and a copy of more than 4 GiB.

use crate::ktap::{Failure, TestResult};
use crate::peer::Peer;
use crate::util::{self, Mapping, Rng};
use crate::{check, check_eq};
use cma::sys::cma_iovec;
use cma::{Device, Op, Target};
use std::io;

use super::data::roundtrip;
use super::{copy, iov, peek};

pub(super) const HUGE: usize = 2 << 20;

/// A 2 MiB-aligned `len`-byte region inside a fresh mapping, with
/// MADV_HUGEPAGE, touched so that it is populated.
pub(super) fn thp_region(len: usize) -> io::Result<(Mapping, usize)> {
    let mut m = Mapping::new(len + HUGE, libc::PROT_READ | libc::PROT_WRITE)?;
    let start = (m.addr() + HUGE - 1) & !(HUGE - 1);
    // SAFETY: the range lies inside `m`.
    unsafe { libc::madvise(start as *mut _, len, libc::MADV_HUGEPAGE) };
    let off = start - m.addr();
    Rng::new(41).fill(&mut m.bytes_mut()[off..off + len]);
    Ok((m, start))
}

pub(super) fn anon_huge_kb(pid: i32) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    Ok(s.lines()
        .find(|l| l.starts_with("AnonHugePages:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

pub(super) fn thp_buffers(op: Op) -> TestResult {
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
    drop(local);
    println!("# target AnonHugePages: {huge_kb} kB");
    Ok(())
}

pub(super) fn hugetlbfs_buffers() -> TestResult {
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

pub(super) fn total_over_4gib() -> TestResult {
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
