//! `review_usercopy_folio_boundary_{read,write}_{pinned,usercopy}`: copies
//! over the boundary between two transparent huge pages that are
//! physically adjacent.
//!
//! The engine reaches pinned pages through the direct map and copies a run
//! of physically consecutive pages in one call. `copy_to_user` checks its
//! kernel source under `CONFIG_HARDENED_USERCOPY` (the test kernels have
//! it, as Debian's and Ubuntu's do): a source in a large folio must end
//! within that folio, else `usercopy_abort("page alloc")`, a kernel `BUG`.
//! A run that starts in a THP and goes on into the next folio, because the
//! next page happens to follow it physically, is such a source. The fixed
//! module ends each user copy at the end of its folio.
//!
//! Each test finds, in `/proc/<pid>/pagemap` (PFNs: root), a 2 MiB-aligned
//! address `b` of a target's THP-backed buffer whose 512 pages before it
//! are one huge page (physically consecutive from a 512-aligned PFN, and
//! compound in `/proc/kpageflags` when that is readable) and whose page at
//! `b` comes physically right after them (the next THP, or a small page:
//! 4 KiB adjacency is enough). Fresh THPs come out of the buddy allocator
//! in ascending pairs often enough that 64 MiB nearly always has one; it
//! maps up to three times that, and skips (with the reason) if none.
//! Then it copies across `b` in several layouts: one piece of +-64 KiB and
//! of +-1 MiB (the `usercopy` engine copies those to the caller with one
//! `copy_to_user` per run), local pieces of 1000 bytes and one small local
//! piece astride `b` inside big ones (the `pinned` engine copies pieces
//! under 2 KiB with `copy_to_user`), remote pieces of 1000 bytes, and one
//! small remote piece astride `b`: by pid (pinned per copy), then through a
//! peer fd, twice (the second from the fd's cache). Then the same on the
//! caller's own THP buffer: as the source of the direct path (by its own
//! pid and through a peer fd on itself; the caller's pages are cached
//! too), and as the local side of copies with a target's plain buffer.
//! Every copy must be complete and move the right bytes (checked with
//! `process_vm_readv`).
//!
//! Why it fails on the module as reviewed: `_read_usercopy` and
//! `_read_pinned` BUG in the first copy that reads across `b` with
//! `copy_to_user` (the one-piece layouts under `usercopy`, the small pieces
//! under `pinned`); the runner reports the crash and the oops. The write
//! direction itself never reaches the check there (the bytes go into the
//! target's pages with `raw_copy_from_user` or `memcpy`), so
//! `_write_usercopy` and `_write_pinned` fail there only in their
//! verification: after each write they read the same range back through
//! cma with the same layout, which is a `copy_to_user` across `b`. They
//! keep the write path honest once the fix is in (a fix that moved the
//! writes to the checked `copy_from_user` would trip the same check).

use std::io;
use std::os::unix::fs::FileExt;

use cma::sys::cma_iovec;
use cma::{Device, Op, Target, Transfer};

use super::{fill, mismatch, needs_thp, Aligned, HUGE};
use crate::cache::engine_until_drop;
use crate::copy::{iov, peek};
use crate::ktap::{Failure, TestResult};
use crate::peer::Peer;
use crate::perm::needs_root;
use crate::util::{page_size, Mapping, Rng};
use crate::{check, check_eq};

/// Each THP-backed buffer: 64 MiB.
const REGION: usize = 64 << 20;
/// Buffers mapped before giving up on finding a boundary.
const TRIES: usize = 3;
/// The patterns of the target's and the caller's buffers.
const TARGET_SEED: u64 = 0x7468_7031;
const OWN_SEED: u64 = 0x6f77_6e31;
/// The target's plain (small-page) buffer.
const PLAIN: usize = 4 << 20;

/// Target command: map another THP buffer; answers [address].
const GROW: u8 = b'g';

const PM_PRESENT: u64 = 1 << 63;
const PM_PFN: u64 = (1 << 55) - 1;
const KPF_COMPOUND_HEAD: u64 = 1 << 15;
const KPF_COMPOUND_TAIL: u64 = 1 << 16;
const KPF_THP: u64 = 1 << 22;

/// A THP buffer of `REGION` bytes, touched (filled with `seed`'s pattern,
/// by address), left mapped.
fn thp_buffer(seed: u64) -> io::Result<usize> {
    let mut m = Aligned::new(REGION, libc::MADV_HUGEPAGE)?;
    let addr = m.addr();
    fill(m.bytes_mut(), addr, seed);
    Ok(m.leak())
}

/// The pagemap entries of `pages` pages from `addr` of `pid` (None: self).
fn pagemap(pid: Option<i32>, addr: usize, pages: usize) -> io::Result<Vec<u64>> {
    let path = pid.map_or("/proc/self/pagemap".to_string(), |p| {
        format!("/proc/{p}/pagemap")
    });
    let f = std::fs::File::open(path)?;
    let mut raw = vec![0u8; pages * 8];
    f.read_exact_at(&mut raw, (addr / page_size() * 8) as u64)?;
    Ok(raw
        .chunks(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
        .collect())
}

/// A boundary between a THP and the page that follows it physically.
#[derive(Debug, Clone, Copy)]
struct Boundary {
    /// Its virtual address.
    at: usize,
    /// The PFN of the page at it (the THP before ends at `pfn - 1`).
    pfn: u64,
    /// `/proc/kpageflags` of the last page of the THP and of the page at
    /// `at`, if readable.
    flags: Option<(u64, u64)>,
}

/// The first boundary in `[addr, addr + len)` (a 2 MiB-aligned buffer)
/// with 1 MiB of the buffer on either side (see the file's comment).
fn find_boundary(pid: Option<i32>, addr: usize, len: usize) -> Result<Option<Boundary>, Failure> {
    let per = HUGE / page_size();
    let pm = pagemap(pid, addr, len / page_size())?;
    let pfn = |i: usize| (pm[i] & PM_PRESENT != 0).then_some(pm[i] & PM_PFN);
    if pm.iter().all(|e| e & PM_PFN == 0) {
        return Err(Failure::Skip(
            "/proc/<pid>/pagemap shows no PFNs here (needs CAP_SYS_ADMIN)".into(),
        ));
    }
    let kpf = std::fs::File::open("/proc/kpageflags").ok();
    let flags = |pfn: u64| {
        let f = kpf.as_ref()?;
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, pfn * 8).ok()?;
        Some(u64::from_ne_bytes(b))
    };
    for k in 1..len / HUGE {
        let i = k * per;
        let Some(first) = pfn(i - per) else { continue };
        if first == 0 || first % per as u64 != 0 {
            continue;
        }
        if !(1..per).all(|j| pfn(i - per + j) == Some(first + j as u64)) {
            continue;
        }
        let next = first + per as u64;
        if pfn(i) != Some(next) {
            continue;
        }
        let fl = flags(next - 1).zip(flags(next));
        if let Some((last, _)) = fl {
            if last & (KPF_THP | KPF_COMPOUND_HEAD | KPF_COMPOUND_TAIL) == 0 {
                continue;
            }
        }
        return Ok(Some(Boundary {
            at: addr + k * HUGE,
            pfn: next,
            flags: fl,
        }));
    }
    Ok(None)
}

/// Whether the boundary found at `b.at` is still one (the pages may have
/// moved since).
fn still_adjacent(pid: Option<i32>, b: &Boundary) -> io::Result<bool> {
    let pm = pagemap(pid, b.at - page_size(), 2)?;
    Ok(pm.iter().all(|e| e & PM_PRESENT != 0)
        && pm[0] & PM_PFN == b.pfn - 1
        && pm[1] & PM_PFN == b.pfn)
}

/// Maps THP buffers (with `grow`) until one has a boundary, at most
/// `TRIES`; skips if none.
fn boundary_in(
    pid: Option<i32>,
    whose: &str,
    mut grow: impl FnMut() -> io::Result<usize>,
) -> Result<Boundary, Failure> {
    for _ in 0..TRIES {
        let addr = grow()?;
        if let Some(b) = find_boundary(pid, addr, REGION)? {
            println!(
                "# {whose} boundary at {:#x}: PFN {:#x} follows the THP ending at {:#x}; \
                 kpageflags (last of the THP, next): {:x?}",
                b.at,
                b.pfn,
                b.pfn - 1,
                b.flags
            );
            return Ok(b);
        }
    }
    Err(Failure::Skip(format!(
        "no two physically adjacent huge pages in {} MiB of {whose} THP buffers: nothing to cross",
        (TRIES * REGION) >> 20
    )))
}

/// `len` bytes from `start` in pieces of `piece` bytes.
fn pieces(start: usize, len: usize, piece: usize) -> Vec<cma_iovec> {
    (0..len)
        .step_by(piece)
        .map(|o| iov(start + o, piece.min(len - o)))
        .collect()
}

/// `center +- m` in three pieces: big, 1400 bytes astride `center`, big.
fn astride(center: usize, m: usize) -> Vec<cma_iovec> {
    vec![
        iov(center - m, m - 700),
        iov(center - 700, 1400),
        iov(center + 700, m - 700),
    ]
}

/// The layouts: (name, local iovecs, remote iovecs) over `lc +- m` and
/// `rc +- m`.
fn layouts(rc: usize, lc: usize) -> Vec<(&'static str, Vec<cma_iovec>, Vec<cma_iovec>)> {
    let (k64, m1) = (64 << 10, 1 << 20);
    vec![
        (
            "one piece +-64K",
            vec![iov(lc - k64, 2 * k64)],
            vec![iov(rc - k64, 2 * k64)],
        ),
        (
            "one piece +-1M",
            vec![iov(lc - m1, 2 * m1)],
            vec![iov(rc - m1, 2 * m1)],
        ),
        (
            "local 1000-byte pieces +-64K",
            pieces(lc - k64, 2 * k64, 1000),
            vec![iov(rc - k64, 2 * k64)],
        ),
        (
            "small local piece astride +-1M",
            astride(lc, m1),
            vec![iov(rc - m1, 2 * m1)],
        ),
        (
            "remote 1000-byte pieces +-64K",
            vec![iov(lc - k64, 2 * k64)],
            pieces(rc - k64, 2 * k64, 1000),
        ),
        (
            "small remote piece astride +-1M",
            vec![iov(lc - m1, 2 * m1)],
            astride(rc, m1),
        ),
    ]
}

/// How copies name the side that is not the caller's iovecs.
#[derive(Clone, Copy)]
enum Via<'a> {
    Pid(&'a Device, i32),
    Peer(&'a cma::Peer, i32),
}

impl Via<'_> {
    fn copy(&self, op: Op, l: &[cma_iovec], r: &[cma_iovec]) -> io::Result<Transfer> {
        // SAFETY: the local iovecs lie in buffers of the test that no Rust
        // reference covers while the copy runs.
        unsafe {
            match self {
                Via::Pid(dev, pid) => dev.copy_raw(op, Target::Pid(*pid), l, r),
                Via::Peer(peer, _) => peer.copy_raw(op, l, r),
            }
        }
    }

    fn pid(&self) -> i32 {
        match self {
            Via::Pid(_, p) | Via::Peer(_, p) => *p,
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Via::Pid(..) => "by pid",
            Via::Peer(..) => "through a peer fd",
        }
    }
}

/// The bytes of the caller's `iovs`, concatenated.
fn gather_local(iovs: &[cma_iovec]) -> Vec<u8> {
    let mut v = Vec::new();
    for i in iovs {
        // SAFETY: the iovecs lie in live buffers of the test.
        v.extend_from_slice(unsafe {
            std::slice::from_raw_parts(i.base as *const u8, i.len as usize)
        });
    }
    v
}

/// Writes `bytes` over the caller's `iovs`, in order.
fn scatter_local(iovs: &[cma_iovec], bytes: &[u8]) {
    let mut at = 0;
    for i in iovs {
        let n = i.len as usize;
        // SAFETY: the iovecs lie in live, writable buffers of the test that
        // no Rust reference covers.
        unsafe { std::slice::from_raw_parts_mut(i.base as *mut u8, n) }
            .copy_from_slice(&bytes[at..at + n]);
        at += n;
    }
}

/// The bytes of `pid`'s `iovs`, by `process_vm_readv` (the oracle).
fn gather_remote(pid: i32, iovs: &[cma_iovec]) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    for i in iovs {
        let got = peek(pid, i.base as usize, i.len as usize)?;
        if got.len() != i.len as usize {
            return Err(io::Error::other("process_vm_readv fell short"));
        }
        v.extend(got);
    }
    Ok(v)
}

/// One layout one way: the copy is complete and moves the right bytes. A
/// write is verified with `process_vm_readv`, then read back through cma
/// with the same layout.
fn check_layout(
    via: Via<'_>,
    op: Op,
    what: &str,
    (name, l, r): &(&str, Vec<cma_iovec>, Vec<cma_iovec>),
    rng: &mut Rng,
) -> TestResult {
    let total: u64 = l.iter().map(|v| v.len).sum();
    check_eq!(total, r.iter().map(|v| v.len).sum::<u64>());
    let want = match op {
        Op::Read => {
            scatter_local(l, &vec![0xee; total as usize]);
            gather_remote(via.pid(), r)?
        }
        Op::Write => {
            let mut new = vec![0u8; total as usize];
            rng.fill(&mut new);
            scatter_local(l, &new);
            let t = via.copy(Op::Write, l, r)?;
            check_eq!(
                (t.bytes, t.error),
                (total, 0),
                "{what}, {name}, write {}",
                via.name()
            );
            check!(
                gather_remote(via.pid(), r)? == new,
                "{what}, {name}: the write {} put other bytes there",
                via.name()
            );
            scatter_local(l, &vec![0xee; total as usize]);
            new
        }
    };
    let t = via.copy(Op::Read, l, r)?;
    check_eq!(
        (t.bytes, t.error),
        (total, 0),
        "{what}, {name}, read {}",
        via.name()
    );
    check!(
        gather_local(l) == want,
        "{what}, {name}: the read {} brought other bytes",
        via.name()
    );
    Ok(())
}

/// Every layout over `rc` and `lc`, by pid and then through a peer fd
/// (twice: the second time from its cache).
fn all_layouts(
    dev: &Device,
    pid: i32,
    op: Op,
    what: &str,
    rc: usize,
    lc: usize,
    rng: &mut Rng,
) -> TestResult {
    let ls = layouts(rc, lc);
    for layout in &ls {
        check_layout(Via::Pid(dev, pid), op, what, layout, rng)?;
    }
    let peer = dev.attach(Target::Pid(pid))?;
    for _ in 0..2 {
        for layout in &ls {
            check_layout(Via::Peer(&peer, pid), op, what, layout, rng)?;
        }
    }
    Ok(())
}

pub(super) fn boundary(op: Op, engine: &str) -> TestResult {
    needs_root()?;
    needs_thp()?;
    let _engine = engine_until_drop(engine)?;
    let dev = Device::open()?;
    let mut target = Peer::spawn(|mut ch| {
        let mut plain = Aligned::new(PLAIN, libc::MADV_NOHUGEPAGE)?;
        let at = plain.addr();
        fill(plain.bytes_mut(), at, TARGET_SEED);
        ch.send(&[plain.leak() as u64])?;
        ch.serve(|c, _| match c {
            GROW => Ok(vec![thp_buffer(TARGET_SEED)? as u64]),
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        })
    })?;
    let plain = target.recv()?[0] as usize;
    let pid = target.pid;
    let b = boundary_in(Some(pid), "the target's", || {
        Ok(target.command(GROW, &[])?[0] as usize)
    })?;
    // The bytes at the boundary are the target's pattern (by address).
    let head = peek(pid, b.at - 4096, 8192)?;
    check_eq!(
        mismatch(&head, b.at - 4096, TARGET_SEED),
        None,
        "target pattern"
    );
    let local = Mapping::new(4 << 20, libc::PROT_READ | libc::PROT_WRITE)?;
    let lc = local.addr() + (2 << 20);
    let mut rng = Rng::new(0x666f_6c69);
    all_layouts(&dev, pid, op, "target's THPs", b.at, lc, &mut rng)?;
    println!(
        "# the target's boundary still physically adjacent after the copies: {}",
        still_adjacent(Some(pid), &b)?
    );
    // The caller's own THP buffer: the source of the direct path, and the
    // local side of copies with the target's plain buffer.
    let me = std::process::id() as i32;
    let own = boundary_in(None, "the caller's", || thp_buffer(OWN_SEED))?;
    all_layouts(&dev, me, op, "own THPs, direct path", own.at, lc, &mut rng)?;
    all_layouts(
        &dev,
        pid,
        op,
        "own THPs as the local side",
        plain + PLAIN / 2,
        own.at,
        &mut rng,
    )?;
    println!(
        "# the caller's boundary still physically adjacent after the copies: {}",
        still_adjacent(None, &own)?
    );
    drop(local);
    Ok(())
}
