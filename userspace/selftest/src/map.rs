//! Maps of a target's memory (`CMA_IOC_MAP`): a mapping shows what a copy
//! would after each change of the target's mapping (reads see the new
//! bytes, writes land in the pages the target has now), a missing page is
//! zeros and says so on the status page, the caller is never killed, bad
//! arguments are refused, and a mapping keeps the module loaded.
//!
//! Each change test maps a target's 4 MiB buffer (the page cache tests'
//! target, `cache::cache_target`), reads it all through the mapping, has
//! the target change its mapping, and reads again.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};

use cma::{Device, Features, Op, Target};

use crate::cache::{self, cache_target, fnv, pattern, LEN};
use crate::copy::iov;
use crate::ktap::{expect_errno, Failure, Test, TestResult};
use crate::util::{self, in_child, page_size, Mapping};
use crate::{check, check_eq};

/// How long a map's status may take to settle after a change: the work
/// item's unmapping, and the hole work's 50 ms, under TCG and KASAN.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// The tests of this file, in order.
pub const TESTS: &[Test] = &[
    Test {
        name: "map_reads_and_writes_target",
        run: reads_and_writes,
    },
    Test {
        name: "map_sees_munmap_and_new_mapping",
        run: || change(cache::REMAP, Expect::NewBytes),
    },
    Test {
        name: "map_maps_huge_pages_whole",
        run: huge_pages_whole,
    },
    Test {
        name: "map_huge_zero_page_not_mapped_whole",
        run: huge_zero_page_not_whole,
    },
    Test {
        name: "map_maps_hugetlb_pages_whole",
        run: hugetlb_pages_whole,
    },
    Test {
        name: "map_write_to_readonly_target_page_returns",
        run: write_to_readonly_target_page,
    },
    Test {
        name: "map_sees_munmap",
        run: || change(cache::UNMAP, Expect::Hole),
    },
    Test {
        name: "map_sees_mremap",
        run: || change(cache::MREMAP, Expect::Hole),
    },
    Test {
        name: "map_sees_mprotect",
        run: || change(cache::PROTECT_NONE, Expect::Hole),
    },
    Test {
        name: "map_sees_madv_dontneed",
        run: || change(cache::DONTNEED, Expect::Zeros),
    },
    Test {
        name: "map_sees_fork_and_cow",
        run: || change(cache::FORK_THEN_WRITE, Expect::NewBytes),
    },
    Test {
        name: "map_sees_child_cow_write_not",
        run: || change(cache::CHILD_WRITES, Expect::OldBytes),
    },
    Test {
        name: "map_write_never_reaches_forked_child",
        run: write_never_reaches_forked_child,
    },
    Test {
        name: "map_old_page_gone_when_munmap_returns",
        run: old_page_gone_when_munmap_returns,
    },
    Test {
        name: "map_sees_thp_split",
        run: || change(cache::SPLIT_THP, Expect::NewBytes),
    },
    Test {
        name: "map_sees_thp_collapse",
        run: || change(cache::COLLAPSE_THP, Expect::NewBytes),
    },
    Test {
        name: "map_sees_compaction",
        run: || change(cache::COMPACT, Expect::NewBytes),
    },
    Test {
        name: "map_target_exit",
        run: target_exit,
    },
    Test {
        name: "map_bad_arguments",
        run: bad_arguments,
    },
    Test {
        name: "map_only_by_attacher",
        run: only_by_attacher,
    },
    Test {
        name: "map_holds_module",
        run: holds_module,
    },
    Test {
        name: "map_races_with_target_changes",
        run: races_with_changes,
    },
    Test {
        name: "map_fault_killable_while_target_page_read_held",
        run: crate::hold::map_fault_killable,
    },
    Test {
        name: "map_fault_waits_without_the_callers_mmap_lock",
        run: crate::hold::map_fault_waits_unlocked,
    },
    Test {
        name: "map_close_not_held_by_another_callers_pass",
        run: crate::hold::close_not_held_by_another_pass,
    },
];

/// What the mapping must show after a change.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// The bytes the target wrote after the change (seed 2).
    NewBytes,
    /// The bytes from before (seed 1).
    OldBytes,
    /// Zero-filled pages, the target's own.
    Zeros,
    /// No page in the target: zeros, counted as holes, a copy faults.
    Hole,
}

/// The CPU tests (the target alone on CPU 0, the caller on CPU 1) need two.
fn needs_map(dev: &Device) -> TestResult {
    check!(
        dev.info()?.features.contains(Features::MAP),
        "the module does not announce CMA_FEAT_MAP"
    );
    Ok(())
}

/// What a copy through `peer` reads of the target's first page: the bytes,
/// or the errno.
fn copy_first_page(peer: &cma::Peer, addr: usize) -> io::Result<Vec<u8>> {
    let buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    let l = [iov(buf.addr(), page_size())];
    let r = [iov(addr, page_size())];
    // SAFETY: `buf` is our own mapping of a page.
    let t = unsafe { peer.copy_raw(Op::Read, &l, &r)? };
    if t.bytes == 0 && t.error != 0 {
        return Err(io::Error::from_raw_os_error(t.error));
    }
    Ok(buf.bytes()[..page_size()].to_vec())
}

/// A target with the page cache tests' buffer (seed 1), a peer fd on it, the
/// whole buffer mapped read-write and read once through the map (every page
/// faulted in), and the fd's status page.
struct Mapped {
    target: crate::peer::Peer,
    addr: usize,
    peer: cma::Peer,
    map: cma::Mapped,
    status: cma::MapStatus,
}

fn mapped_target(dev: &Device) -> Result<Mapped, crate::ktap::Failure> {
    needs_map(dev)?;
    let (target, addr) = cache_target()?;
    let peer = dev.attach(Target::Pid(target.pid))?;
    let map = peer.map(addr, LEN, true)?;
    let status = peer.map_status()?;
    let mut buf = vec![0u8; LEN];
    map.read_at(0, &mut buf);
    check_eq!(
        fnv(&buf),
        fnv(&pattern(1)),
        "the map is not the target's buffer"
    );
    Ok(Mapped {
        target,
        addr,
        peer,
        map,
        status,
    })
}

fn reads_and_writes() -> TestResult {
    let dev = Device::open()?;
    needs_map(&dev)?;
    let (mut t, addr) = cache_target()?;
    let peer = dev.attach(Target::Pid(t.pid))?;
    let m = peer.map(addr, LEN, true)?;
    let status = peer.map_status()?;
    let before = status.snapshot();
    let mut buf = vec![0u8; LEN];
    m.read_at(0, &mut buf);
    check!(
        status.unchanged_since(&before),
        "the status moved: {:?}",
        status.snapshot()
    );
    check_eq!(
        fnv(&buf),
        fnv(&pattern(1)),
        "the mapping is not the target's buffer"
    );
    // The target writes: the mapping shows it (the same pages).
    check_eq!(t.command(cache::FILL, &[3])?[0], 0);
    m.read_at(0, &mut buf);
    check_eq!(
        fnv(&buf),
        fnv(&pattern(3)),
        "the target's writes do not show"
    );
    // The caller writes: the target sees it.
    let ours = pattern(4);
    m.write_at(0, &ours);
    check_eq!(
        t.command(cache::SUM, &[])?[0],
        fnv(&ours),
        "the caller's writes do not land"
    );
    check!(
        status.unchanged_since(&before),
        "the status moved: {:?}",
        status.snapshot()
    );
    // A read-only map of the same range shows the same bytes.
    let ro = peer.map(addr, LEN, false)?;
    ro.read_at(0, &mut buf);
    check_eq!(fnv(&buf), fnv(&ours));
    Ok(())
}

/// The target's `AnonHugePages` (kB), from its smaps_rollup.
fn anon_huge_kb(pid: i32) -> io::Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    Ok(s.lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0))
}

/// A target whose 2 MiB-aligned buffer is huge pages: the map shows them as
/// PMDs (counted on the status page), exactly; a write fault on a read-only
/// PMD goes page by page; after the target splits them, the pages.
/// A target that only read its untouched huge-page-aligned buffer maps the
/// huge zero page there: the caller's map reads zeros page by page, never
/// as one PMD of the huge zero page (which the kernel zaps as its own, with
/// a page table it expects deposited: an oops at the caller's munmap on
/// 7.x), and its munmap is an ordinary one.
fn huge_zero_page_not_whole() -> TestResult {
    let dev = Device::open()?;
    needs_map(&dev)?;
    let mut t = crate::peer::Peer::spawn(|mut ch| {
        let addr = cache::aligned_buffer()?;
        // SAFETY: reads the first byte of each huge page of our own buffer
        // (untouched: the huge zero page where THP allows).
        let sum: u64 = (0..LEN)
            .step_by(2 << 20)
            .map(|o| u64::from(unsafe { ((addr + o) as *const u8).read_volatile() }))
            .sum();
        ch.send(&[addr as u64, sum])?;
        ch.wait()
    })?;
    let v = t.recv()?;
    let addr = v[0] as usize;
    let peer = dev.attach(Target::Pid(t.pid))?;
    let m = peer.map(addr, LEN, false)?;
    let status = peer.map_status()?;
    let mut buf = vec![1u8; LEN];
    m.read_at(0, &mut buf);
    check!(
        buf.iter().all(|&b| b == 0),
        "the untouched buffer is not zeros"
    );
    check_eq!(
        status.snapshot().pmds,
        0,
        "the huge zero page was mapped as a PMD"
    );
    drop(m);
    drop(t);
    Ok(())
}

fn huge_pages_whole() -> TestResult {
    let dev = Device::open()?;
    let Mapped {
        target: mut t,
        addr,
        peer,
        map: m,
        status,
    } = mapped_target(&dev)?;
    let huge = anon_huge_kb(t.pid)?;
    if huge < 2048 {
        return Err(crate::ktap::Failure::Skip(format!(
            "the target got no huge page (AnonHugePages {huge} kB): THP off here"
        )));
    }
    let s = status.snapshot();
    check!(
        s.pmds >= huge / 2048,
        "{huge} kB of huge pages in the target, {} PMDs mapped",
        s.pmds
    );
    println!(
        "# {huge} kB of huge pages in the target, {} PMDs mapped",
        s.pmds
    );
    // A write through a read-only PMD: page by page, into the target's pages.
    let ours = pattern(7);
    m.write_at(0, &ours[..page_size()]);
    check_eq!(copy_first_page(&peer, addr)?, ours[..page_size()].to_vec());
    check_eq!(
        t.command(cache::SUM, &[])?[0],
        fnv(&[&ours[..page_size()], &pattern(1)[page_size()..]].concat()),
        "the target's buffer is not the write plus its bytes"
    );
    // The target splits its huge pages and writes new bytes: the map sees them.
    check_eq!(t.command(cache::SPLIT_THP, &[])?[0], 0);
    check!(status.settle(SETTLE).is_some(), "unstable for good");
    let mut buf = vec![0u8; LEN];
    m.read_at(0, &mut buf);
    check_eq!(fnv(&buf), fnv(&pattern(2)), "old bytes after the split");
    Ok(())
}

/// A target whose buffer is two hugetlbfs pages of 2 MiB: the map shows
/// each as one PMD, exactly; a write through the map goes page by page into
/// the target's huge page; after the target unmaps them, holes.
fn hugetlb_pages_whole() -> TestResult {
    const HUGE: usize = 2 << 20;
    const _: () = assert!(2 * HUGE == LEN);
    let dev = Device::open()?;
    needs_map(&dev)?;
    if crate::util::is_root() {
        let _ = std::fs::write("/proc/sys/vm/nr_hugepages", "8");
    }
    let len = LEN;
    let mut t = crate::peer::Peer::spawn(move |mut ch| {
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let Ok(mut m) = Mapping::with_flags(len, rw, libc::MAP_HUGETLB) else {
            ch.send(&[0])?;
            return ch.wait();
        };
        m.bytes_mut().copy_from_slice(&pattern(1));
        ch.send(&[m.addr() as u64])?;
        ch.serve(move |c, _| {
            Ok(vec![match c {
                b's' => fnv(m.bytes()),
                b'u' => {
                    m.punch(0, len)?;
                    0
                }
                _ => u64::MAX,
            }])
        })
    })?;
    let addr = t.recv()?[0] as usize;
    if addr == 0 {
        return Err(crate::ktap::Failure::Skip(
            "no hugetlbfs pages available".into(),
        ));
    }
    let peer = dev.attach(Target::Pid(t.pid))?;
    let m = peer.map(addr, len, true)?;
    let status = peer.map_status()?;
    let before = status.snapshot();
    let mut buf = vec![0u8; len];
    m.read_at(0, &mut buf);
    let mut want = pattern(1);
    check_eq!(
        fnv(&buf),
        fnv(&want),
        "the map is not the target's huge pages"
    );
    let s = status.snapshot();
    check_eq!(
        s.pmds - before.pmds,
        2,
        "two hugetlb pages in the target, {} PMDs mapped",
        s.pmds - before.pmds
    );
    check_eq!(s.holes, before.holes, "holes in a fully mapped target");
    // A write through the read-only PMD: page by page, into the huge page.
    let ours = pattern(7);
    m.write_at(HUGE, &ours[..page_size()]);
    want[HUGE..HUGE + page_size()].copy_from_slice(&ours[..page_size()]);
    check_eq!(
        t.command(b's', &[])?[0],
        fnv(&want),
        "the target's huge pages are not the write plus their bytes"
    );
    // The target unmaps them: holes, zeros, never its old pages.
    check_eq!(t.command(b'u', &[])?[0], 0);
    check!(status.settle(SETTLE).is_some(), "unstable for good");
    m.read_at(0, &mut buf);
    check!(buf.iter().all(|&b| b == 0), "old bytes after the unmapping");
    check!(status.snapshot().holes > s.holes, "no holes counted");
    println!("# 2 hugetlb pages of 2 MiB in the target, 2 PMDs mapped");
    Ok(())
}

/// A writable map over pages the target made read-only: a read maps them
/// read-only; a write cannot have them (a copy could not write them either),
/// so it goes to the hole's sink and returns, and the target's bytes stay.
/// (The module used to find the read-only page noted, fail the write lookup,
/// and send the touch back forever: an unkillable loop for a kernel access.)
fn write_to_readonly_target_page() -> TestResult {
    let dev = Device::open()?;
    needs_map(&dev)?;
    let (mut t, addr) = cache_target()?;
    check_eq!(t.command(cache::PROTECT_RO, &[])?[0], 0);
    let tpid = t.pid;
    const WRITE: u8 = b'w';
    let mut caller = crate::peer::Peer::spawn(move |mut ch| {
        let dev = Device::open()?;
        let peer = dev.attach(Target::Pid(tpid))?;
        let m = peer.map(addr, LEN, true)?;
        let status = peer.map_status()?;
        let mut buf = vec![0u8; page_size()];
        m.read_at(0, &mut buf);
        ch.send(&[fnv(&buf)])?;
        ch.serve(|c, _| {
            if c != WRITE {
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
            let before = status.snapshot();
            // A hang here is the bug: SIGALRM ends the process, and the
            // parent sees it gone.
            // SAFETY: alarm has no preconditions.
            unsafe { libc::alarm(20) };
            m.write_at(0, b"XXXX");
            m.write_at(page_size() * 3 + 5, b"YYYY");
            // SAFETY: as above.
            unsafe { libc::alarm(0) };
            Ok(vec![status.snapshot().holes - before.holes])
        })
    })?;
    let first = caller.recv()?[0];
    check_eq!(
        first,
        fnv(&pattern(1)[..page_size()]),
        "the map before the write"
    );
    let holes = caller.command(WRITE, &[])?;
    check!(holes[0] >= 1, "the writes counted no hole: {holes:?}");
    check_eq!(
        t.command(cache::SUM, &[])?[0],
        fnv(&pattern(1)),
        "a read-only page of the target changed"
    );
    drop(caller);
    Ok(())
}

fn change(cmd: u8, expect: Expect) -> TestResult {
    let dev = Device::open()?;
    let Mapped {
        target: mut t,
        addr,
        peer,
        map: m,
        status,
    } = mapped_target(&dev)?;
    let mut buf = vec![0u8; LEN];
    let before = status.snapshot();
    check_eq!(t.command(cmd, &[])?[0], 0, "the target's change failed");
    // The contract: once the change is made, the status settles, and then
    // a read sees the target as it is.
    let settled = status.settle(SETTLE);
    check!(
        settled.is_some(),
        "unstable for good: {:?}",
        status.snapshot()
    );
    m.read_at(0, &mut buf);
    let after = status.snapshot();
    match expect {
        Expect::NewBytes => {
            check_eq!(fnv(&buf), fnv(&pattern(2)), "old bytes after the change");
            check_eq!(fnv(&buf), t.command(cache::SUM, &[])?[0]);
        }
        Expect::OldBytes => check_eq!(fnv(&buf), fnv(&pattern(1)), "not the target's bytes"),
        Expect::Zeros => check!(buf.iter().all(|&b| b == 0), "not zeros after the change"),
        Expect::Hole => {
            check!(
                buf.iter().all(|&b| b == 0),
                "a missing page read as non-zero"
            );
            check!(after.holes > before.holes, "no hole counted: {after:?}");
            expect_errno(
                copy_first_page(&peer, addr),
                libc::EFAULT,
                "a copy of the hole",
            )?;
        }
    }
    // Only the changes that must unmap: compaction and MADV_COLLAPSE may leave
    // the pages in place (the new bytes are the target's writes to them).
    if expect != Expect::OldBytes && !matches!(cmd, cache::COLLAPSE_THP | cache::COMPACT) {
        check!(
            after.generation != before.generation,
            "the generation did not move"
        );
        check!(
            after.invalidations > before.invalidations,
            "no invalidation counted"
        );
    }
    if expect == Expect::Hole {
        return Ok(());
    }
    // A write through the mapping lands in the pages the target has now.
    let ours = pattern(5);
    m.write_at(0, &ours[..page_size()]);
    check_eq!(copy_first_page(&peer, addr)?, ours[..page_size()].to_vec());
    Ok(())
}

fn target_exit() -> TestResult {
    let dev = Device::open()?;
    let Mapped {
        target: t,
        addr,
        peer,
        map: m,
        status,
    } = mapped_target(&dev)?;
    let mut buf = vec![0u8; LEN];
    drop(t);
    // Its pages are gone from the mapping: zeros, and writes go nowhere;
    // the status says so for good, and a copy says why.
    m.read_at(0, &mut buf);
    check!(
        buf.iter().all(|&b| b == 0),
        "the dead target's bytes still show"
    );
    m.write_at(0, &[1u8; 64]);
    check!(
        status.snapshot().unstable > 0,
        "the status does not say: {:?}",
        status.snapshot()
    );
    expect_errno(
        copy_first_page(&peer, addr),
        libc::ESRCH,
        "a copy after the exit",
    )?;
    Ok(())
}

/// A write through a map never lands in a page the target gave up. The
/// caller keeps writing a counter into the target's first page, from CPU 1,
/// while the target forks ([`cache::FORK_WATCH`]): the child, alone on CPU
/// 0 with `SCHED_FIFO` (no deferred work of the module's runs there before
/// it has watched), must never see the counter move, as it would not after
/// a copy; the target's own page has the last value written.
fn write_never_reaches_forked_child() -> TestResult {
    let dev = Device::open()?;
    needs_map(&dev)?;
    util::needs_two_cpus()?;
    let (mut t, addr) = cache_target()?;
    let peer = dev.attach(Target::Pid(t.pid))?;
    let m = peer.map(addr, LEN, true)?;
    let word = m.as_ptr() as usize;
    // SAFETY: the map's first word, mapped while `m` lives.
    unsafe { (word as *mut u64).write_volatile(1) };
    let stop = AtomicBool::new(false);
    let (last, changes) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let _cpu1 = util::OnCpu::new(1);
            let mut v = 1u64;
            while !stop.load(Ordering::Relaxed) {
                v += 1;
                // SAFETY: as above; `m` outlives the scope.
                unsafe { (word as *mut u64).write_volatile(v) };
            }
            v
        });
        let changes = t.command(cache::FORK_WATCH, &[]);
        stop.store(true, Ordering::Relaxed);
        (writer.join(), changes)
    });
    let last = last.map_err(|_| Failure::Fail("the writer panicked".into()))?;
    let changes = changes?[0];
    if changes == u64::MAX {
        return Err(Failure::Skip("SCHED_FIFO on CPU 0 refused".into()));
    }
    check_eq!(
        changes,
        0,
        "the target's child saw writes made after the fork"
    );
    check_eq!(
        t.command(cache::FIRST_WORD, &[])?[0],
        last,
        "the last write is not in the target's page"
    );
    Ok(())
}

/// A change of the target's mapping takes effect only after the caller's
/// map of it is gone: the target, alone on CPU 0 with `SCHED_FIFO` (so that
/// no deferred work of the module's runs there until it is done), unmaps a
/// page, says so in a page shared with the test, and keeps CPU 0 busy; the
/// caller, on CPU 1, reads its map of the page at once: zeros (a hole, as
/// a copy would fault), never the old bytes.
fn old_page_gone_when_munmap_returns() -> TestResult {
    let dev = Device::open()?;
    needs_map(&dev)?;
    util::needs_two_cpus()?;
    let page = page_size();
    // Shared with the target, which inherits it.
    let flag_page = Mapping::shared(page, libc::PROT_READ | libc::PROT_WRITE)?;
    let flag = flag_page.addr();
    let mut t = crate::peer::Peer::spawn(move |mut ch| {
        let buf = Mapping::new(page, libc::PROT_READ | libc::PROT_WRITE)?;
        let addr = buf.addr();
        // Unmapped by the command below, not again on drop.
        std::mem::forget(buf);
        // SAFETY: our own page.
        unsafe { libc::memset(addr as *mut libc::c_void, 0xab, page) };
        ch.send(&[addr as u64])?;
        // SAFETY: unmaps our own page, then stores to the shared flag page.
        let unmap = move || unsafe {
            libc::munmap(addr as *mut libc::c_void, page);
            (flag as *mut u64).write_volatile(1);
        };
        ch.serve(move |_, _| {
            let fifo = cache::on_cpu0_fifo(|| {
                unmap();
                let start = std::time::Instant::now();
                while start.elapsed() < cache::WATCH {
                    std::hint::spin_loop();
                }
            });
            if fifo.is_none() {
                unmap();
            }
            Ok(vec![fifo.is_some() as u64])
        })
    })?;
    let addr = t.recv()?[0] as usize;
    let peer = dev.attach(Target::Pid(t.pid))?;
    let m = peer.map(addr, page, false)?;
    let mut byte = [0u8; 1];
    m.read_at(0, &mut byte);
    check_eq!(byte[0], 0xab, "the map is not the target's page");
    t.command_no_reply(b'u')?;
    // SAFETY: `flag_page`, mapped until the end of the test.
    while unsafe { (flag as *const u64).read_volatile() } == 0 {
        std::hint::spin_loop();
    }
    m.read_at(0, &mut byte);
    let first = byte[0];
    let fifo = t.recv()?[0];
    if fifo == 0 {
        return Err(Failure::Skip("SCHED_FIFO on CPU 0 refused".into()));
    }
    check_eq!(
        first,
        0,
        "the caller read the old page after the target's munmap returned"
    );
    Ok(())
}

/// Only the attaching process maps through a peer fd: a child that
/// inherited it gets `EPERM` for a map and the status page, and the state a
/// map makes watches the attacher's own address space (its
/// `caller_generation` moves with the attacher's munmap), even when a
/// child tried first.
fn only_by_attacher() -> TestResult {
    let dev = Device::open()?;
    needs_map(&dev)?;
    let (t, addr) = cache_target()?;
    let peer = dev.attach(Target::Pid(t.pid))?;
    in_child(|| expect_errno(peer.map(addr, LEN, false), libc::EPERM, "a map by a child"))?;
    let _m = peer.map(addr, LEN, false)?;
    let status = peer.map_status()?;
    in_child(|| expect_errno(peer.map_status(), libc::EPERM, "the status page by a child"))?;
    let before = status.snapshot().caller_generation;
    let mut page = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    page.bytes_mut()[0] = 1;
    drop(page);
    check!(
        status.snapshot().caller_generation != before,
        "the attacher's munmap did not move caller_generation"
    );
    Ok(())
}

fn bad_arguments() -> TestResult {
    let dev = Device::open()?;
    needs_map(&dev)?;
    let (t, addr) = cache_target()?;
    let peer = dev.attach(Target::Pid(t.pid))?;
    let page = page_size();
    let ioctl = |fd: i32, a: cma::sys::cma_map| {
        let mut a = a;
        // SAFETY: CMA_IOC_MAP reads and writes one live `cma_map`.
        unsafe {
            cma::sys::ioctl(
                std::os::fd::BorrowedFd::borrow_raw(fd),
                cma::sys::CMA_IOC_MAP,
                &mut a as *mut _ as usize,
            )
        }
    };
    let good = cma::sys::cma_map {
        addr: addr as u64,
        len: page as u64,
        prot: libc::PROT_READ as u32,
        ..Default::default()
    };
    // Status page before any map: none yet.
    expect_errno(peer.map_status(), libc::ENODEV, "status before a map")?;
    for (what, a) in [
        ("addr 0", cma::sys::cma_map { addr: 0, ..good }),
        ("len 0", cma::sys::cma_map { len: 0, ..good }),
        (
            "unaligned addr",
            cma::sys::cma_map {
                addr: addr as u64 + 1,
                ..good
            },
        ),
        ("unaligned len", cma::sys::cma_map { len: 100, ..good }),
        (
            "wrapping",
            cma::sys::cma_map {
                len: u64::MAX - page as u64 + 1,
                ..good
            },
        ),
        (
            "beyond user space",
            cma::sys::cma_map {
                addr: 1 << 62,
                ..good
            },
        ),
        (
            "write only",
            cma::sys::cma_map {
                prot: libc::PROT_WRITE as u32,
                ..good
            },
        ),
        (
            "exec",
            cma::sys::cma_map {
                prot: (libc::PROT_READ | libc::PROT_EXEC) as u32,
                ..good
            },
        ),
        ("flags", cma::sys::cma_map { flags: 1, ..good }),
        (
            "reserved",
            cma::sys::cma_map {
                reserved: [0, 1],
                ..good
            },
        ),
    ] {
        expect_errno(ioctl(peer.as_raw_fd(), a), libc::EINVAL, what)?;
    }
    // Not on /dev/cma itself.
    expect_errno(ioctl(dev.as_raw_fd(), good), libc::ENOTTY, "on /dev/cma")?;
    let m = peer.map(addr, 4 * page, true)?;
    // mmap(2) of the fd: private is refused, shared works.
    for (flags, want) in [
        (libc::MAP_PRIVATE, Some(libc::EINVAL)),
        (libc::MAP_SHARED, None),
    ] {
        // SAFETY: a new mapping of the peer fd; unmapped below if made.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page,
                libc::PROT_READ,
                flags,
                peer.as_raw_fd(),
                addr as i64,
            )
        };
        let got =
            (p == libc::MAP_FAILED).then(|| io::Error::last_os_error().raw_os_error().unwrap_or(0));
        check_eq!(got, want, "mmap with flags {flags:#x}");
        if p != libc::MAP_FAILED {
            // SAFETY: mapped just now.
            unsafe { libc::munmap(p, page) };
        }
    }
    // The status page is read-only.
    // SAFETY: an attempted mapping, checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            peer.as_raw_fd(),
            0,
        )
    };
    check!(p == libc::MAP_FAILED, "the status page mapped writable");
    // A map cannot be split, moved or grown.
    // SAFETY: the middle page of our own map.
    let r = unsafe { libc::munmap(m.as_ptr().add(page).cast(), page) };
    check_eq!(r, -1, "a map was split");
    // SAFETY: moving our own map; the kernel refuses.
    let q = unsafe { libc::mremap(m.as_ptr().cast(), 4 * page, 8 * page, libc::MREMAP_MAYMOVE) };
    check!(q == libc::MAP_FAILED, "a map was moved");
    // Still whole and readable.
    let mut buf = vec![0u8; 4 * page];
    m.read_at(0, &mut buf);
    check_eq!(buf[..], pattern(1)[..4 * page]);
    Ok(())
}

/// The module's reference count.
fn refcnt() -> io::Result<u64> {
    std::fs::read_to_string("/sys/module/cma/refcnt")?
        .trim()
        .parse()
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn holds_module() -> TestResult {
    let dev = Device::open()?;
    needs_map(&dev)?;
    let (_t, addr) = cache_target()?;
    let peer = dev.attach(Target::Pid(_t.pid))?;
    let m = peer.map(addr, LEN, false)?;
    drop(peer);
    drop(dev);
    // Only the mapping holds the peer fd's file, and so the module.
    let with = refcnt()?;
    drop(m);
    let without = refcnt()?;
    check_eq!(with, without + 1, "the mapping does not hold the module");
    Ok(())
}

fn races_with_changes() -> TestResult {
    let dev = Device::open()?;
    let Mapped {
        target: mut t,
        map: m,
        status,
        ..
    } = mapped_target(&dev)?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let stable_reads = std::thread::scope(|s| -> Result<u64, crate::ktap::Failure> {
        // A reader and a writer of the mapping, while the target changes
        // its mapping of the buffer underneath them.
        let reader = s.spawn(|| {
            let mut buf = vec![0u8; LEN];
            let mut stable = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let before = status.snapshot();
                m.read_at(0, &mut buf);
                stable += u64::from(status.unchanged_since(&before));
            }
            stable
        });
        let writer = s.spawn(|| {
            let page = vec![0x5au8; page_size()];
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                m.write_at((i % (LEN / page_size())) * page_size(), &page);
                i += 7;
            }
        });
        let mut result = Ok(());
        for round in 0..12u64 {
            let cmd = [
                cache::REMAP,
                cache::DONTNEED,
                cache::FORK_THEN_WRITE,
                cache::SPLIT_THP,
                cache::MREMAP,
                cache::COMPACT,
            ][round as usize % 6];
            if let Err(e) = t.command(cmd, &[]) {
                result = Err(e);
                break;
            }
            if cmd == cache::MREMAP {
                // The buffer moved away: map a new one at the old place.
                if let Err(e) = t.command(cache::REMAP, &[]) {
                    result = Err(e);
                    break;
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        writer
            .join()
            .map_err(|_| io::Error::from_raw_os_error(libc::EIO))?;
        let stable = reader
            .join()
            .map_err(|_| io::Error::from_raw_os_error(libc::EIO))?;
        result?;
        Ok(stable)
    })?;
    // Quiet again: the holes the reader met are unmapped by the module's
    // work item soon; then the mapping shows exactly the target's bytes.
    check_eq!(t.command(cache::FILL, &[6])?[0], 0);
    let before = status.settle(SETTLE);
    check!(
        before.is_some(),
        "unstable for good: {:?}",
        status.snapshot()
    );
    let before = status.snapshot();
    let mut buf = vec![0u8; LEN];
    m.read_at(0, &mut buf);
    check!(
        status.unchanged_since(&before),
        "still unstable: {:?}",
        status.snapshot()
    );
    check_eq!(
        fnv(&buf),
        t.command(cache::SUM, &[])?[0],
        "the mapping is not the target's"
    );
    check_eq!(fnv(&buf), fnv(&pattern(6)));
    println!("# {stable_reads} reads were stable during the changes");
    Ok(())
}
