//! `review_reader_leaves_target_unchanged`: reading a target through cma
//! changes its memory no more than `process_vm_readv` does.
//!
//! A peer fd's cache pinned the target's pages long-term
//! (`FOLL_LONGTERM`), also for reading. A read-only long-term pin of a page
//! that a copy-on-write mapping does not own exclusively makes GUP unshare
//! it first (`gup_must_unshare()`): the zero page (and the huge zero page)
//! behind untouched or read-faulted anonymous memory became a fresh
//! anonymous page per page read, and a `MAP_PRIVATE` file page the target
//! never wrote became a private copy. So a reader grew the target's
//! anonymous memory by everything it read (64 MiB of untouched memory read
//! once: 64 MiB more RSS), and cut its private file mappings off from the
//! file: a later `pwrite` to the file no longer showed in the target's
//! mapping, which it had never written. The fixed module does not unshare
//! for a read.
//!
//! For each kind of mapping (anonymous untouched, 64 MiB; anonymous
//! written; shared anonymous; `MAP_PRIVATE` of a file in /tmp and of a
//! memfd, read-faulted; `MAP_SHARED` of a file, read-faulted; hugetlb, if
//! huge pages can be reserved; zero pages in a forked child), two fresh
//! targets set it up the same way: one is read whole through a peer fd,
//! twice (the second read from the cache), the other twice with
//! `process_vm_readv`. The target's smaps entry for the mapping (Rss,
//! Anonymous, Private and Shared, clean plus dirty, and the hugetlb
//! fields) must change under cma by no more than under
//! `process_vm_readv`, and never in another direction: between nothing and
//! what `process_vm_readv` changed (each target is idle, blocked in
//! `read(2)`, and runs alone, so the entry is exact). Less is allowed: a
//! short-term read-only pin, which `process_vm_readv` takes, unshares an
//! anonymous page shared since a fork (a forked child's page moves from
//! Shared to Private), which cma's page references do not; `smaps_rollup`'s Rss and Anonymous by as
//! much give or take 64 KiB (the rest of the target: its stack and heap,
//! which an idle process does not grow; a margin, not an expectation).
//! The cma read must bring the target's bytes, and for the file mappings
//! a `pwrite` to the file afterwards (with the peer fd and its cache still
//! open) must show in the target's mapping.
//!
//! On the module as reviewed: the untouched anonymous mapping gains 64 MiB
//! of Rss and Anonymous under cma and none under `process_vm_readv`, the
//! forked child's zero pages likewise, the private file mappings gain
//! their length of Anonymous, and the `pwrite`s do not show there. Every
//! problem of every kind is listed before the test fails.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::FileExt;

use cma::{Device, Op, Target};

use super::{fill, HUGE};
use crate::copy::{iov, peek, pvm};
use crate::ktap::{Failure, TestResult};
use crate::peer::Peer;
use crate::perm::{needs_root, Restore};
use crate::util::{self, page_size, Mapping};

/// The kinds of mapping a target holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    AnonUntouched,
    AnonWritten,
    SharedAnon,
    PrivateFile,
    PrivateMemfd,
    SharedFile,
    Hugetlb,
    ZeroPagesAfterFork,
}

const KINDS: [Kind; 8] = [
    Kind::AnonUntouched,
    Kind::AnonWritten,
    Kind::SharedAnon,
    Kind::PrivateFile,
    Kind::PrivateMemfd,
    Kind::SharedFile,
    Kind::Hugetlb,
    Kind::ZeroPagesAfterFork,
];

impl Kind {
    fn len(self) -> usize {
        match self {
            Kind::AnonUntouched => 64 << 20,
            Kind::Hugetlb => 4 * HUGE,
            _ => 16 << 20,
        }
    }
}

/// How a target is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum How {
    Cma,
    ProcessVmReadv,
}

const SEED: u64 = 0x756e_6368;

/// Touches every page of `[addr, addr + len)` by reading it.
fn read_fault(addr: usize, len: usize) {
    for off in (0..len).step_by(page_size()) {
        // SAFETY: a readable mapping of the caller's, `len` bytes.
        unsafe { std::ptr::read_volatile((addr + off) as *const u8) };
    }
}

/// Maps `len` bytes of `kind` (`fd`: the file) and prepares them as the
/// kind says; returns the address.
fn setup(kind: Kind, fd: RawFd, len: usize) -> io::Result<usize> {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let (flags, fd) = match kind {
        Kind::SharedAnon => (libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1),
        Kind::PrivateFile | Kind::PrivateMemfd => (libc::MAP_PRIVATE, fd),
        Kind::SharedFile => (libc::MAP_SHARED, fd),
        Kind::Hugetlb => (
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
            -1,
        ),
        _ => (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1),
    };
    // 2 MiB-aligned (hugetlb needs it; THP may be used where allowed),
    // between inaccessible guards, so that the mapping is a VMA of its own
    // (never merged with a neighbour) and its smaps entry is exactly it.
    // SAFETY: a fresh reservation at an address the kernel chooses, then
    // the mapping placed inside it; both kept for the life of the target,
    // and the accesses below stay inside the mapping.
    let addr = unsafe {
        let guard = libc::mmap(
            std::ptr::null_mut(),
            len + 2 * HUGE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        );
        if guard == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let at = (guard as usize + HUGE) & !(HUGE - 1);
        let addr = libc::mmap(at as *mut _, len, rw, flags | libc::MAP_FIXED, fd, 0);
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        addr as usize
    };
    // SAFETY (both): the mapping just made, `len` bytes, read-write.
    let bytes = || unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, len) };
    match kind {
        Kind::AnonWritten => fill(bytes(), 0, SEED),
        Kind::PrivateFile | Kind::PrivateMemfd | Kind::SharedFile => read_fault(addr, len),
        Kind::ZeroPagesAfterFork => {
            // Small pages only (a THP here or not would change the
            // counts from one target to the next); the last page written,
            // so that the mapping has an anon_vma and fork copies its
            // page table; the rest read-faulted: the zero page.
            // SAFETY: advice on our own mapping.
            unsafe { libc::madvise(addr as *mut _, len, libc::MADV_NOHUGEPAGE) };
            fill(&mut bytes()[len - page_size()..], len - page_size(), SEED);
            read_fault(addr, len - page_size());
        }
        _ => {}
    }
    Ok(addr)
}

/// A target holding a mapping of `kind`: (its handle, the address, the pid
/// of the process that holds it), or `None` if the mapping could not be
/// made (hugetlb without huge pages).
fn target(kind: Kind, fd: RawFd) -> Result<Option<(Peer, usize, i32)>, Failure> {
    let len = kind.len();
    let mut p = Peer::spawn(move |mut ch| {
        let addr = match setup(kind, fd, len) {
            Ok(a) => a,
            Err(e) => {
                ch.send(&[0, e.raw_os_error().unwrap_or(0) as u64, 0])?;
                return ch.wait();
            }
        };
        if kind == Kind::ZeroPagesAfterFork {
            // The target is a forked child: its page table maps the zero
            // page (and the written page, shared).
            // SAFETY: this process is single-threaded.
            let child = unsafe { libc::fork() };
            if child < 0 {
                return Err(io::Error::last_os_error().into());
            }
            if child == 0 {
                // SAFETY: getpid cannot fail.
                let me = unsafe { libc::getpid() };
                ch.send(&[addr as u64, 0, me as u64])?;
                return ch.wait();
            }
            util::wait_child(child)?;
            return Ok(());
        }
        // SAFETY: getpid cannot fail.
        let me = unsafe { libc::getpid() };
        ch.send(&[addr as u64, 0, me as u64])?;
        ch.wait()
    })?;
    let v = p.recv()?;
    if v[0] == 0 {
        println!(
            "# {kind:?}: the mapping could not be made ({}): not checked",
            io::Error::from_raw_os_error(v[1] as i32)
        );
        return Ok(None);
    }
    Ok(Some((p, v[0] as usize, v[2] as i32)))
}

/// The fields compared, in kB: the mapping's, then the rollup's.
const MAP_FIELDS: [&str; 6] = [
    "Rss",
    "Anonymous",
    "Private",
    "Shared",
    "Private_Hugetlb",
    "Shared_Hugetlb",
];
const ROLLUP_FIELDS: [&str; 2] = ["Rss", "Anonymous"];

/// `Key: N kB` lines into (key, N), with Private and Shared summed over
/// clean and dirty.
fn fields<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, i64)> {
    let mut v: Vec<(String, i64)> = Vec::new();
    for l in lines {
        let mut it = l.split_whitespace();
        let (Some(k), Some(n)) = (it.next(), it.next()) else {
            continue;
        };
        let (Some(k), Ok(n)) = (k.strip_suffix(':'), n.parse::<i64>()) else {
            continue;
        };
        let k = match k {
            "Private_Clean" | "Private_Dirty" => "Private",
            "Shared_Clean" | "Shared_Dirty" => "Shared",
            k => k,
        };
        match v.iter_mut().find(|(key, _)| key == k) {
            Some((_, sum)) => *sum += n,
            None => v.push((k.to_string(), n)),
        }
    }
    v
}

fn get(v: &[(String, i64)], k: &str) -> i64 {
    v.iter().find(|(key, _)| key == k).map_or(0, |(_, n)| *n)
}

/// The smaps fields of `pid`'s mapping at `addr`, and its rollup's.
fn usage(pid: i32, addr: usize) -> io::Result<(Vec<i64>, Vec<i64>)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let head = format!("{addr:x}-");
    let entry: Vec<&str> = smaps
        .lines()
        .skip_while(|l| !l.starts_with(&head))
        .skip(1)
        .take_while(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|k| k.ends_with(':'))
        })
        .collect();
    if entry.is_empty() {
        return Err(io::Error::other(format!("no smaps entry at {addr:#x}")));
    }
    let map = fields(entry.into_iter());
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let rollup = fields(rollup.lines());
    Ok((
        MAP_FIELDS.iter().map(|k| get(&map, k)).collect(),
        ROLLUP_FIELDS.iter().map(|k| get(&rollup, k)).collect(),
    ))
}

/// How a target's memory changed when it was read: the mapping's fields
/// and the rollup's, after minus before (kB).
struct Change {
    map: Vec<i64>,
    rollup: Vec<i64>,
}

/// The file a kind maps, if any: filled with the pattern, `len` bytes.
fn backing(kind: Kind, len: usize) -> io::Result<Option<File>> {
    let mut f = match kind {
        Kind::PrivateFile | Kind::SharedFile => {
            let path =
                std::env::temp_dir().join(format!("cma-review-{}-{kind:?}", std::process::id()));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)?;
            // Unlinked: gone with the last descriptor and mapping.
            std::fs::remove_file(&path)?;
            f
        }
        Kind::PrivateMemfd => {
            // SAFETY: a NUL-terminated name; the new fd is ours.
            let fd = unsafe { libc::memfd_create(c"cma-review".as_ptr(), 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: as above.
            unsafe { File::from_raw_fd(fd) }
        }
        _ => return Ok(None),
    };
    let mut content = vec![0u8; len];
    fill(&mut content, 0, SEED ^ 1);
    f.write_all(&content)?;
    Ok(Some(f))
}

/// Reads a fresh target of `kind` twice, `how`; checks what must hold of
/// every read (bytes, pwrite seen), pushing problems to `problems`;
/// returns how the target's memory changed, or `None` if the kind cannot
/// be set up here.
fn read_target(
    kind: Kind,
    how: How,
    dev: &Device,
    local: &Mapping,
    problems: &mut Vec<String>,
) -> Result<Option<Change>, Failure> {
    let len = kind.len();
    let file = backing(kind, len)?;
    let fd = file.as_ref().map_or(-1, |f| f.as_raw_fd());
    let Some((t, addr, pid)) = target(kind, fd)? else {
        return Ok(None);
    };
    let (map0, roll0) = usage(pid, addr)?;
    let l = [iov(local.addr(), len)];
    let r = [iov(addr, len)];
    let peer = match how {
        How::Cma => Some(dev.attach(Target::Pid(pid))?),
        How::ProcessVmReadv => None,
    };
    for _ in 0..2 {
        let n = match &peer {
            // SAFETY: `local` is our own mapping, at least `len` long.
            Some(p) => unsafe { p.copy_raw(Op::Read, &l, &r) }?.bytes as usize,
            None => pvm(Op::Read, pid, &l, &r)?,
        };
        if n != len {
            problems.push(format!("{kind:?}, {how:?}: read {n} of {len} bytes"));
        }
    }
    let (map1, roll1) = usage(pid, addr)?;
    // The bytes the reads brought are the target's.
    // SAFETY: `local` is our own mapping; the reads are done.
    let got = unsafe { std::slice::from_raw_parts(local.addr() as *const u8, len) };
    if got != &peek(pid, addr, len)?[..] {
        problems.push(format!("{kind:?}, {how:?}: the read brought other bytes"));
    }
    // The file's new bytes show in the target's mapping.
    if let Some(f) = &file {
        let marks = 16;
        let mut unseen = 0;
        for k in 0..marks {
            let off = k * (len / marks) + 123;
            let mark = (0xc0de_0000 + k as u64 + 0x100 * (how as u64)).to_ne_bytes();
            f.write_all_at(&mark, off as u64)?;
            if peek(pid, addr + off, 8)? != mark {
                unseen += 1;
            }
        }
        if unseen > 0 {
            problems.push(format!(
                "{kind:?}, {how:?}: {unseen} of {marks} pwrite()s to the file do not show in the \
                 target's mapping, which never wrote it"
            ));
        }
    }
    drop(peer);
    drop(t);
    let sub = |a: Vec<i64>, b: Vec<i64>| a.iter().zip(&b).map(|(x, y)| y - x).collect();
    Ok(Some(Change {
        map: sub(map0, map1),
        rollup: sub(roll0, roll1),
    }))
}

/// Makes sure 4 huge pages are free (raising `nr_hugepages` if need be);
/// the returned guard puts the old count back.
fn reserve_hugepages() -> io::Result<Option<Restore>> {
    const NR: &str = "/proc/sys/vm/nr_hugepages";
    let free = std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if free >= 4 {
        return Ok(None);
    }
    let old = std::fs::read_to_string(NR)?.trim().to_string();
    let n: u64 = old.parse().unwrap_or(0);
    let restore = Restore(NR, old.leak());
    let _ = std::fs::write(NR, (n + 4 - free).to_string());
    Ok(Some(restore))
}

pub(super) fn reader_leaves_target_unchanged() -> TestResult {
    needs_root()?;
    let _hugepages = reserve_hugepages()?;
    let dev = Device::open()?;
    let local = Mapping::new(64 << 20, libc::PROT_READ | libc::PROT_WRITE)?;
    let mut problems = Vec::new();
    let mut checked = 0;
    for kind in KINDS {
        let Some(pvm) = read_target(kind, How::ProcessVmReadv, &dev, &local, &mut problems)? else {
            continue;
        };
        let Some(cma) = read_target(kind, How::Cma, &dev, &local, &mut problems)? else {
            continue;
        };
        checked += 1;
        println!(
            "# {kind:?}: mapping {:?} changed by {:?} kB under cma, {:?} under process_vm_readv; \
             rollup {:?} by {:?} and {:?}",
            MAP_FIELDS, cma.map, pvm.map, ROLLUP_FIELDS, cma.rollup, pvm.rollup
        );
        for (i, k) in MAP_FIELDS.iter().enumerate() {
            let (c, p) = (cma.map[i], pvm.map[i]);
            let within = if p >= 0 {
                (0..=p).contains(&c)
            } else {
                (p..=0).contains(&c)
            };
            if !within {
                problems.push(format!(
                    "{kind:?}: the mapping's {k} changed by {} kB under cma, by {} kB under \
                     process_vm_readv (more, or otherwise)",
                    cma.map[i], pvm.map[i]
                ));
            }
        }
        for (i, k) in ROLLUP_FIELDS.iter().enumerate() {
            if (cma.rollup[i] - pvm.rollup[i]).abs() > 64 {
                problems.push(format!(
                    "{kind:?}: the target's {k} changed by {} kB under cma, by {} kB under \
                     process_vm_readv",
                    cma.rollup[i], pvm.rollup[i]
                ));
            }
        }
    }
    if checked < KINDS.len() - 1 {
        problems.push(format!(
            "only {checked} of {} kinds of mapping could be set up",
            KINDS.len()
        ));
    }
    if !problems.is_empty() {
        return Err(Failure::Fail(problems.join("\n")));
    }
    Ok(())
}
