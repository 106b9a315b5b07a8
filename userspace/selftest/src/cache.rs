//! The page cache of a peer fd: a copy after each change to the target's
//! mapping sees the new state (never the old pages), in steady state a copy
//! pins nothing, and the cache is bounded, charged and emptied.
//!
//! Each change test reads (and writes) a target's buffer twice through a
//! peer fd, so that the second copy is served by the cache (the counters
//! say so), has the target change its mapping, and then checks that the
//! next read returns the new bytes (or the new fault) and that a write
//! lands in the pages the target now has. The `cache_own_` tests do the
//! same for the cache of the caller's own pages (the `pinned` engine's side
//! of a copy): the caller changes its own mapping, and the next copy must
//! reach the pages it has now; and a process that inherited the fds must
//! not be served the pages of the one that made them.

use std::io;

use cma::sys::cma_iovec;
use cma::{Device, Op, Target};

use crate::copy::iov;
use crate::ktap::{expect_errno, Failure, Test, TestResult};
use crate::peer::Peer;
use crate::perm::stat;
use crate::util::{self, page_size, Mapping, Rng};
use crate::{check, check_eq};

/// The tests of this file, in order.
pub const TESTS: &[Test] = &[
    Test {
        name: "cache_steady_state_pins_nothing",
        run: steady_state,
    },
    Test {
        name: "cache_sees_munmap_and_new_mapping",
        run: || change(REMAP, Expect::NewBytes),
    },
    Test {
        name: "cache_sees_munmap",
        run: || change(UNMAP, Expect::Fault),
    },
    Test {
        name: "cache_sees_mremap",
        run: || change(MREMAP, Expect::Fault),
    },
    Test {
        name: "cache_sees_mprotect",
        run: || change(PROTECT_NONE, Expect::Fault),
    },
    Test {
        name: "cache_sees_mprotect_read_only",
        run: || change(PROTECT_RO, Expect::ReadOnly),
    },
    Test {
        name: "cache_sees_madv_dontneed",
        run: || change(DONTNEED, Expect::Zeros),
    },
    Test {
        name: "cache_sees_fork_and_cow",
        run: || change(FORK_THEN_WRITE, Expect::NewBytes),
    },
    Test {
        name: "cache_sees_child_cow_write_not",
        run: || change(CHILD_WRITES, Expect::OldBytes),
    },
    Test {
        name: "cache_sees_thp_split",
        run: || change(SPLIT_THP, Expect::NewBytes),
    },
    Test {
        name: "cache_sees_thp_collapse",
        run: || change(COLLAPSE_THP, Expect::NewBytes),
    },
    Test {
        name: "cache_sees_compaction",
        run: || change(COMPACT, Expect::NewBytes),
    },
    Test {
        name: "cache_wrapping_address_efault",
        run: wrapping_address,
    },
    Test {
        name: "cache_target_exit_unpins",
        run: target_exit,
    },
    Test {
        name: "cache_bounded_per_fd",
        run: bounded,
    },
    Test {
        name: "cache_charged_to_memlock",
        run: memlock,
    },
    Test {
        name: "cache_direct_steady_state_pins_nothing",
        run: direct_steady_state,
    },
    Test {
        name: "cache_own_sees_munmap_and_new_mapping",
        run: || own_change(OwnChange::Remap),
    },
    Test {
        name: "cache_own_sees_fork_and_write",
        run: || own_change(OwnChange::ForkThenWrite),
    },
    Test {
        name: "cache_own_not_used_by_another_process",
        run: own_other_process,
    },
    Test {
        name: "cache_invalidation_storm_killable",
        run: invalidation_storm,
    },
    Test {
        name: "cache_invalidation_held_open_killable",
        run: crate::hold::held_invalidation,
    },
];

/// The target's buffer: 4 MiB, 2 MiB-aligned (THP-able).
pub(crate) const LEN: usize = 4 << 20;

// Target commands.
pub(crate) const FILL: u8 = b'f';
pub(crate) const SUM: u8 = b's';
pub(crate) const REMAP: u8 = b'm';
pub(crate) const UNMAP: u8 = b'u';
pub(crate) const MREMAP: u8 = b'r';
pub(crate) const PROTECT_NONE: u8 = b'n';
pub(crate) const PROTECT_RO: u8 = b'o';
pub(crate) const DONTNEED: u8 = b'd';
pub(crate) const FORK_THEN_WRITE: u8 = b'F';
pub(crate) const CHILD_WRITES: u8 = b'C';
pub(crate) const SPLIT_THP: u8 = b'S';
pub(crate) const COLLAPSE_THP: u8 = b'L';
pub(crate) const COMPACT: u8 = b'K';
/// Forks with the child watching the buffer's first word (see
/// [`fork_and_watch`]): replies how often it changed in the child.
pub(crate) const FORK_WATCH: u8 = b'W';
/// Replies the buffer's first word.
pub(crate) const FIRST_WORD: u8 = b'w';

/// What the next read must see after a change.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Expect {
    /// The bytes the target wrote after the change (seed 2).
    NewBytes,
    /// The bytes from before (seed 1): the change was not to this mapping.
    OldBytes,
    /// Zero-filled pages.
    Zeros,
    /// EFAULT at the first byte.
    Fault,
    /// Reads see the old bytes; writes fault.
    ReadOnly,
}

pub(crate) fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

pub(crate) fn pattern(seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; LEN];
    Rng::new(seed).fill(&mut v);
    v
}

/// A 2 MiB-aligned anonymous mapping of `LEN` bytes with THP asked for,
/// kept for the life of the (target) process.
pub(crate) fn aligned_buffer() -> io::Result<usize> {
    let buf = crate::review::Aligned::new(LEN, libc::MADV_HUGEPAGE)?;
    let addr = buf.addr();
    std::mem::forget(buf);
    Ok(addr)
}

pub(crate) fn fill(addr: usize, seed: u64) {
    // SAFETY: the target's own buffer of `LEN` bytes.
    let b = unsafe { std::slice::from_raw_parts_mut(addr as *mut u8, LEN) };
    Rng::new(seed).fill(b);
}

fn errno(ret: libc::c_int) -> u64 {
    if ret == 0 {
        0
    } else {
        io::Error::last_os_error().raw_os_error().unwrap_or(-1) as u64
    }
}

/// A target process with the buffer, filled with seed 1, serving changes.
pub(crate) fn cache_target() -> Result<(Peer, usize), Failure> {
    let mut peer = Peer::spawn(|mut ch| {
        let addr = aligned_buffer()?;
        fill(addr, 1);
        ch.send(&[addr as u64])?;
        ch.serve(move |c, args| {
            let p = addr as *mut libc::c_void;
            // SAFETY (every arm): system calls on the target's own buffer,
            // or a fork whose child only writes its copy and exits.
            let r = unsafe {
                match c {
                    FILL => {
                        fill(addr, args[0]);
                        0
                    }
                    SUM => {
                        let b = std::slice::from_raw_parts(addr as *const u8, LEN);
                        return Ok(vec![fnv(b)]);
                    }
                    REMAP => {
                        libc::munmap(p, LEN);
                        let q = libc::mmap(
                            p,
                            LEN,
                            libc::PROT_READ | libc::PROT_WRITE,
                            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                            -1,
                            0,
                        );
                        if q != p {
                            return Ok(vec![1]);
                        }
                        fill(addr, 2);
                        0
                    }
                    UNMAP => errno(libc::munmap(p, LEN)),
                    MREMAP => {
                        let q = libc::mremap(
                            p,
                            LEN,
                            LEN,
                            libc::MREMAP_MAYMOVE | 4, /* DONTUNMAP */
                        );
                        if q == libc::MAP_FAILED {
                            // Without MREMAP_DONTUNMAP: a plain move.
                            let q = libc::mremap(p, LEN, LEN * 2, libc::MREMAP_MAYMOVE);
                            (q == libc::MAP_FAILED || q == p) as u64
                        } else {
                            // The old range stays mapped, empty: unmap it
                            // so the move is what the copy meets.
                            libc::munmap(p, LEN);
                            0
                        }
                    }
                    PROTECT_NONE => errno(libc::mprotect(p, LEN, libc::PROT_NONE)),
                    PROTECT_RO => errno(libc::mprotect(p, LEN, libc::PROT_READ)),
                    DONTNEED => errno(libc::madvise(p, LEN, libc::MADV_DONTNEED)),
                    FORK_THEN_WRITE => {
                        let child = libc::fork();
                        if child == 0 {
                            libc::sleep(5);
                            libc::_exit(0);
                        }
                        // The child shares the pages copy-on-write; the
                        // target writes, the copy must see its new pages.
                        fill(addr, 2);
                        libc::kill(child, libc::SIGKILL);
                        libc::waitpid(child, std::ptr::null_mut(), 0);
                        0
                    }
                    CHILD_WRITES => {
                        let child = libc::fork();
                        if child == 0 {
                            fill(addr, 3);
                            libc::_exit(0);
                        }
                        libc::waitpid(child, std::ptr::null_mut(), 0);
                        0
                    }
                    SPLIT_THP => {
                        // Changing one page's protection splits the huge
                        // page around it; then new bytes everywhere.
                        let r = errno(libc::mprotect(p, page_size(), libc::PROT_READ));
                        libc::mprotect(p, page_size(), libc::PROT_READ | libc::PROT_WRITE);
                        fill(addr, 2);
                        r
                    }
                    COLLAPSE_THP => {
                        // MADV_COLLAPSE (25): may fail while pages are pinned;
                        // either way, the bytes change after it.
                        libc::madvise(p, LEN, 25);
                        fill(addr, 2);
                        0
                    }
                    FORK_WATCH => return Ok(vec![fork_and_watch(addr)]),
                    FIRST_WORD => return Ok(vec![(addr as *const u64).read_volatile()]),
                    COMPACT => {
                        let _ = std::fs::write("/proc/sys/vm/compact_memory", "1");
                        fill(addr, 2);
                        0
                    }
                    _ => libc::EBADF as u64,
                }
            };
            Ok(vec![r])
        })
    })?;
    let addr = peer.recv()?[0] as usize;
    Ok((peer, addr))
}

/// How long [`fork_and_watch`]'s child watches.
pub(crate) const WATCH: std::time::Duration = std::time::Duration::from_millis(200);

/// Runs `f` on CPU 0 with `SCHED_FIFO` (inherited by children forked
/// meanwhile), then restores the policy and CPUs: while `f` runs, a kernel
/// worker of CPU 0 (`SCHED_NORMAL`) runs only when `f` sleeps. `None` if
/// the policy could not be set (not root).
pub(crate) fn on_cpu0_fifo<T>(f: impl FnOnce() -> T) -> Option<T> {
    let _cpu0 = util::OnCpu::new(0).ok()?;
    let fifo = libc::sched_param { sched_priority: 1 };
    // SAFETY: scheduling parameters on the stack, for this thread only.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &fifo) } != 0 {
        return None;
    }
    let r = f();
    let other = libc::sched_param { sched_priority: 0 };
    // SAFETY: as above.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_OTHER, &other) };
    Some(r)
}

/// Forks, on CPU 0 with `SCHED_FIFO` ([`on_cpu0_fifo`]): the child reads
/// the first word of the buffer at `addr` until [`WATCH`] has passed and
/// exits with the number of times it changed (at most 255), the parent
/// waiting for it meanwhile. The reply: that number, or `u64::MAX` if the
/// policy could not be set.
fn fork_and_watch(addr: usize) -> u64 {
    on_cpu0_fifo(|| {
        // SAFETY: the child only reads the process's own buffer and exits.
        unsafe {
            let word = addr as *const u64;
            let child = libc::fork();
            if child == 0 {
                let mut seen = word.read_volatile();
                let mut changes = 0;
                let start = std::time::Instant::now();
                while start.elapsed() < WATCH {
                    let now = word.read_volatile();
                    if now != seen {
                        seen = now;
                        changes += 1;
                    }
                }
                libc::_exit(changes.min(255));
            }
            let mut status = 0;
            libc::waitpid(child, &mut status, 0);
            libc::WEXITSTATUS(status) as u64
        }
    })
    .unwrap_or(u64::MAX)
}

/// Reads the target's whole buffer through `peer` into `buf`.
fn read(peer: &cma::Peer, buf: &mut Mapping, addr: usize) -> io::Result<(u64, i32)> {
    let l: [cma_iovec; 1] = [iov(buf.addr(), LEN)];
    let r = [iov(addr, LEN)];
    // SAFETY: `buf` is our own mapping of `LEN` bytes.
    let t = unsafe { peer.copy_raw(Op::Read, &l, &r)? };
    Ok((t.bytes, t.error))
}

/// Writes `buf` over the target's buffer through `peer`.
fn write(peer: &cma::Peer, buf: &Mapping, addr: usize) -> io::Result<(u64, i32)> {
    let l = [iov(buf.addr(), LEN)];
    let r = [iov(addr, LEN)];
    // SAFETY: `buf` is our own mapping of `LEN` bytes, only read.
    let t = unsafe { peer.copy_raw(Op::Write, &l, &r)? };
    Ok((t.bytes, t.error))
}

const ENGINE: &str = "/sys/module/cma/parameters/engine";

/// Sets the `engine` parameter until dropped (then the one in force before).
pub(crate) fn engine_until_drop(engine: &str) -> io::Result<crate::perm::Restore> {
    let old = std::fs::read_to_string(ENGINE)?;
    let restore = crate::perm::Restore(ENGINE, old.trim().to_string().leak());
    std::fs::write(ENGINE, engine)?;
    Ok(restore)
}

/// The counters of pages pinned and GUP calls, both sides.
fn pin_counters() -> io::Result<[u64; 4]> {
    Ok([
        stat("gup_calls")?,
        stat("pages_pinned")?,
        stat("local_gup_calls")?,
        stat("local_pages_pinned")?,
    ])
}

fn steady_state() -> TestResult {
    let _restore = engine_until_drop("pinned")?;
    let dev = Device::open()?;
    let (t, addr) = cache_target()?;
    let peer = dev.attach(Target::Pid(t.pid))?;
    let mut buf = Mapping::new(LEN, libc::PROT_READ | libc::PROT_WRITE)?;
    // No GUP and no pin on either side, whichever the engine: the target's
    // pages are in the peer fd's cache, the caller's in its /dev/cma
    // file's (the pinned engine) or not pinned at all (usercopy).
    for engine in ["pinned", "usercopy"] {
        std::fs::write(ENGINE, engine)?;
        check_eq!(read(&peer, &mut buf, addr)?, (LEN as u64, 0));
        let before = pin_counters()?;
        let pins = vmstat("nr_foll_pin_acquired")?;
        let hits = stat("cache_hits")?;
        for _ in 0..10 {
            buf.bytes_mut().fill(0);
            check_eq!(read(&peer, &mut buf, addr)?, (LEN as u64, 0));
        }
        check!(buf.bytes() == &pattern(1)[..], "wrong bytes from the cache");
        let after = pin_counters()?;
        let [gup, target_pins, local_gup, local_pins] =
            core::array::from_fn(|i| after[i] - before[i]);
        let pins = vmstat("nr_foll_pin_acquired")? - pins;
        println!(
            "# {engine}: 10 reads of 4 MiB after the first: {gup} GUP calls, {target_pins} pages \
             pinned, {local_gup} fast GUP calls, {local_pins} pages pinned by them; \
             nr_foll_pin_acquired +{pins}"
        );
        // `pins` (system-wide) also counts the guest's own I/O (9p pins the
        // pages it sends): printed, not compared; the module's counters are
        // exact.
        check_eq!(gup, 0, "GUP calls in steady state");
        check_eq!(target_pins, 0, "pages pinned in steady state");
        check_eq!(local_gup, 0, "caller's GUP calls in steady state");
        check_eq!(local_pins, 0, "caller's pages pinned in steady state");
        check!(stat("cache_hits")? - hits >= 10, "no cache hits");
    }
    drop(t);
    Ok(())
}

/// The direct path through a peer fd on the caller itself: in steady state
/// both sides come from the fd's cache, whichever the engine.
fn direct_steady_state() -> TestResult {
    let _restore = engine_until_drop("pinned")?;
    let dev = Device::open()?;
    let peer = dev.attach(Target::Pid(std::process::id() as i32))?;
    let mut src = Mapping::new(LEN, libc::PROT_READ | libc::PROT_WRITE)?;
    let mut dst = Mapping::new(LEN, libc::PROT_READ | libc::PROT_WRITE)?;
    for engine in ["pinned", "usercopy"] {
        std::fs::write(ENGINE, engine)?;
        for (op, seed) in [(Op::Read, 11), (Op::Write, 12)] {
            Rng::new(seed).fill(src.bytes_mut());
            let (l, r) = match op {
                Op::Read => ([iov(dst.addr(), LEN)], [iov(src.addr(), LEN)]),
                Op::Write => ([iov(src.addr(), LEN)], [iov(dst.addr(), LEN)]),
            };
            // SAFETY: both ranges are our own mappings, which do not overlap.
            let first = unsafe { peer.copy_raw(op, &l, &r)? };
            check_eq!((first.bytes, first.error), (LEN as u64, 0));
            let before = pin_counters()?;
            let direct = stat("direct_copies")?;
            for _ in 0..10 {
                dst.bytes_mut().fill(0);
                // SAFETY: as above.
                let t = unsafe { peer.copy_raw(op, &l, &r)? };
                check_eq!((t.bytes, t.error), (LEN as u64, 0));
            }
            check!(dst.bytes() == src.bytes(), "{engine} {op:?}: wrong bytes");
            let after = pin_counters()?;
            let moved: Vec<u64> = (0..4).map(|i| after[i] - before[i]).collect();
            println!("# {engine} {op:?}: 10 direct copies of 4 MiB: GUP calls, pages pinned, fast GUP calls, pages pinned by them: {moved:?}");
            check_eq!(moved, vec![0; 4], "{engine} {op:?}: pins in steady state");
            check_eq!(stat("direct_copies")? - direct, 10, "not the direct path");
        }
    }
    Ok(())
}

/// A change the caller makes to its own buffer between copies.
#[derive(Clone, Copy, Debug)]
enum OwnChange {
    /// `munmap` and a new mapping at the same address.
    Remap,
    /// `fork` (a child that shares the pages copy-on-write), then the caller
    /// writes its buffer.
    ForkThenWrite,
}

/// The cache of the caller's own pages sees the caller change its mapping:
/// the next read lands in the pages the caller has now, and the next write
/// sends their bytes.
fn own_change(change: OwnChange) -> TestResult {
    let _restore = engine_until_drop("pinned")?;
    let dev = Device::open()?;
    let (mut t, addr) = cache_target()?;
    let peer = dev.attach(Target::Pid(t.pid))?;
    let mut buf = Mapping::new(LEN, libc::PROT_READ | libc::PROT_WRITE)?;
    for _ in 0..2 {
        check_eq!(read(&peer, &mut buf, addr)?, (LEN as u64, 0));
        check_eq!(write(&peer, &buf, addr)?, (LEN as u64, 0));
    }
    let before = pin_counters()?;
    check_eq!(read(&peer, &mut buf, addr)?, (LEN as u64, 0));
    check_eq!(write(&peer, &buf, addr)?, (LEN as u64, 0));
    check_eq!(
        pin_counters()?,
        before,
        "the caller's pages are not served by the cache"
    );
    let p = buf.addr() as *mut libc::c_void;
    let mut child = None;
    match change {
        OwnChange::Remap => {
            // SAFETY: replaces our own mapping by a new one of the same size
            // at the same address; `buf` still describes it.
            let q = unsafe {
                libc::munmap(p, LEN);
                libc::mmap(
                    p,
                    LEN,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                    -1,
                    0,
                )
            };
            check!(q == p, "the new mapping is elsewhere");
        }
        OwnChange::ForkThenWrite => {
            child = Some(Peer::spawn(|c| c.wait())?);
        }
    }
    buf.bytes_mut().fill(0xee);
    check_eq!(read(&peer, &mut buf, addr)?, (LEN as u64, 0));
    check!(
        buf.bytes() == &pattern(1)[..],
        "{change:?}: the read did not reach the caller's current pages"
    );
    Rng::new(5).fill(buf.bytes_mut());
    check_eq!(write(&peer, &buf, addr)?, (LEN as u64, 0));
    check_eq!(
        t.command(SUM, &[])?[0],
        fnv(buf.bytes()),
        "{change:?}: the write did not send the caller's current bytes"
    );
    drop(child);
    Ok(())
}

/// A process that inherited a `/dev/cma` file and its peer fd (across
/// `fork`) is not served from the cache of its parent's pages, and does not
/// put its own pages there for the parent.
fn own_other_process() -> TestResult {
    let _restore = engine_until_drop("pinned")?;
    let dev = Device::open()?;
    let (t, addr) = cache_target()?;
    let peer = dev.attach(Target::Pid(t.pid))?;
    let mut buf = Mapping::new(LEN, libc::PROT_READ | libc::PROT_WRITE)?;
    for _ in 0..2 {
        check_eq!(read(&peer, &mut buf, addr)?, (LEN as u64, 0));
    }
    let buf_addr = buf.addr();
    let inherited = &peer;
    let mut child = Peer::spawn(move |mut ch| {
        // SAFETY: the child's copy of the parent's buffer, at the same
        // address (fork), which nothing else in the child uses.
        let mine = unsafe { std::slice::from_raw_parts_mut(buf_addr as *mut u8, LEN) };
        let mut ok = 0;
        for _ in 0..3 {
            mine.fill(0xee);
            let l = [iov(buf_addr, LEN)];
            let r = [iov(addr, LEN)];
            // SAFETY: our own buffer.
            let got = unsafe { inherited.copy_raw(Op::Read, &l, &r)? };
            if (got.bytes, got.error) != (LEN as u64, 0) || mine != &pattern(1)[..] {
                ok = 1;
            }
        }
        ch.send(&[ok])?;
        ch.wait()
    })?;
    check_eq!(child.recv()?[0], 0, "the child's reads missed its buffer");
    // The child is alive, its pages mapped: the parent's next reads must
    // reach the parent's pages.
    for _ in 0..2 {
        buf.bytes_mut().fill(0x11);
        check_eq!(read(&peer, &mut buf, addr)?, (LEN as u64, 0));
        check!(
            buf.bytes() == &pattern(1)[..],
            "the parent's read did not reach its own buffer"
        );
    }
    drop(child);
    drop(t);
    Ok(())
}

/// A counter of /proc/vmstat.
pub(crate) fn vmstat(name: &str) -> io::Result<u64> {
    let s = std::fs::read_to_string("/proc/vmstat")?;
    s.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no {name} in /proc/vmstat")))
}

fn change(cmd: u8, expect: Expect) -> TestResult {
    let dev = Device::open()?;
    let (mut t, addr) = cache_target()?;
    let peer = dev.attach(Target::Pid(t.pid))?;
    let mut buf = Mapping::new(LEN, libc::PROT_READ | libc::PROT_WRITE)?;
    // Cached for reading and for writing, and served from the cache.
    let hits = stat("cache_hits")?;
    for _ in 0..2 {
        check_eq!(read(&peer, &mut buf, addr)?, (LEN as u64, 0));
        check_eq!(write(&peer, &buf, addr)?, (LEN as u64, 0));
    }
    check!(
        buf.bytes() == &pattern(1)[..],
        "wrong bytes before the change"
    );
    check!(
        stat("cache_hits")? - hits >= 2,
        "the copies did not use the cache"
    );
    check_eq!(t.command(cmd, &[])?[0], 0, "the target's change failed");
    buf.bytes_mut().fill(0xee);
    let got = read(&peer, &mut buf, addr);
    match expect {
        Expect::Fault => expect_errno(got, libc::EFAULT, "a read after the change")?,
        Expect::NewBytes | Expect::OldBytes | Expect::Zeros | Expect::ReadOnly => {
            check_eq!(got?, (LEN as u64, 0));
            let want = match expect {
                Expect::NewBytes => pattern(2),
                Expect::Zeros => vec![0; LEN],
                _ => pattern(1),
            };
            check!(
                buf.bytes() == &want[..],
                "{expect:?}: the read saw other bytes"
            );
        }
    }
    // A write lands in the pages the target has now (or faults).
    Rng::new(4).fill(buf.bytes_mut());
    let got = write(&peer, &buf, addr);
    match expect {
        Expect::Fault | Expect::ReadOnly => {
            expect_errno(got, libc::EFAULT, "a write after the change")?
        }
        _ => {
            check_eq!(got?, (LEN as u64, 0));
            check_eq!(
                t.command(SUM, &[])?[0],
                fnv(buf.bytes()),
                "the write did not reach the target's pages"
            );
        }
    }
    Ok(())
}

/// A copy whose remote range wraps around the address space, through a fd
/// whose cache holds a region: EFAULT, as without a cache (the fuzzer found
/// the lookup's end overflowing).
fn wrapping_address() -> TestResult {
    let dev = Device::open()?;
    let (t, addr) = cache_target()?;
    let peer = dev.attach(Target::Pid(t.pid))?;
    let mut buf = Mapping::new(LEN, libc::PROT_READ | libc::PROT_WRITE)?;
    check_eq!(read(&peer, &mut buf, addr)?, (LEN as u64, 0));
    let top = usize::MAX - page_size() + 1;
    for op in [Op::Read, Op::Write] {
        let l = [iov(buf.addr(), 2 * page_size())];
        let r = [iov(top, 2 * page_size())];
        // SAFETY: the local range is our own mapping.
        let got = unsafe { peer.copy_raw(op, &l, &r) };
        expect_errno(
            got,
            libc::EFAULT,
            format!("{op:?} at the top of the address space"),
        )?;
    }
    check_eq!(read(&peer, &mut buf, addr)?, (LEN as u64, 0));
    drop(t);
    Ok(())
}

/// Under each engine: the pages the caches hold for one read of the
/// buffer (the target's, and the caller's own under `pinned`), and how
/// many caches that is.
fn cached_sides(engine: &str) -> u64 {
    if engine == "pinned" {
        2
    } else {
        1
    }
}

/// Polls `cache_pages` until it is `want` (a deadline, not a speed: the
/// cache's work item unpins after an invalidation); returns the last value.
fn wait_cache_pages(want: u64) -> io::Result<u64> {
    let mut now = stat("cache_pages")?;
    for _ in 0..500 {
        if now == want {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
        now = stat("cache_pages")?;
    }
    Ok(now)
}

fn target_exit() -> TestResult {
    for engine in ["usercopy", "pinned"] {
        let _restore = engine_until_drop(engine)?;
        let dev = Device::open()?;
        let held = stat("cache_pages")?;
        let (t, addr) = cache_target()?;
        let peer = dev.attach(Target::Pid(t.pid))?;
        let mut buf = Mapping::new(LEN, libc::PROT_READ | libc::PROT_WRITE)?;
        check_eq!(read(&peer, &mut buf, addr)?, (LEN as u64, 0));
        let pages = (LEN / page_size()) as u64;
        let own = (cached_sides(engine) - 1) * pages;
        check_eq!(
            stat("cache_pages")?.wrapping_sub(held),
            pages + own,
            "{engine}: the caches do not hold the buffers"
        );
        let released = stat("cache_released")?;
        drop(t);
        // The fds stay open; the target's pages are unpinned by the cache's
        // work item after its exit invalidated them; the caller's stay.
        let now = wait_cache_pages(held + own)?;
        check_eq!(
            now.wrapping_sub(held),
            own,
            "{engine}: pages still held after the target exited"
        );
        // Let go, not only forgotten: the target's pages were read, so the
        // region holds page references, not pins (see `LongPins`); the
        // module counts the pages it gives back, pinned or referenced, at
        // the call that gives them back. The pinned case is the write test
        // below.
        check!(
            stat("cache_released")? - released >= pages,
            "{engine}: the buffer's pages were not let go"
        );
        expect_errno(
            read(&peer, &mut buf, addr),
            libc::ESRCH,
            "a read after the exit",
        )?;
        // The caller's pages go with the last file that shares their cache.
        drop(peer);
        drop(dev);
        check_eq!(
            stat("cache_pages")?,
            held,
            "{engine}: pages held after the files closed"
        );
        // A region for writing holds pins: the kernel's own count of pins
        // released must show them going when the target exits (other I/O
        // may unpin too: at least).
        let dev = Device::open()?;
        let (t, addr) = cache_target()?;
        let peer = dev.attach(Target::Pid(t.pid))?;
        check_eq!(write(&peer, &buf, addr)?, (LEN as u64, 0));
        check_eq!(write(&peer, &buf, addr)?, (LEN as u64, 0));
        let released = vmstat("nr_foll_pin_released")?;
        drop(t);
        wait_cache_pages(held + own)?;
        check!(
            vmstat("nr_foll_pin_released")? - released >= pages,
            "{engine}: the buffer's pins were not released"
        );
        drop(peer);
        drop(dev);
    }
    Ok(())
}

fn bounded() -> TestResult {
    const PARAM: &str = "/sys/module/cma/parameters/cache_pages";
    let old = std::fs::read_to_string(PARAM)?;
    let _restore = crate::perm::Restore(PARAM, old.trim().to_string().leak());
    // At most 1 MiB per cache: reading 4 MiB in 512 KiB pieces, twice,
    // keeps at most 256 pages in each, evicting.
    std::fs::write(PARAM, "256")?;
    for engine in ["usercopy", "pinned"] {
        let _engine = engine_until_drop(engine)?;
        let dev = Device::open()?;
        let (t, addr) = cache_target()?;
        let peer = dev.attach(Target::Pid(t.pid))?;
        let held = stat("cache_pages")?;
        let evictions = stat("cache_evictions")?;
        let buf = Mapping::new(LEN, libc::PROT_READ | libc::PROT_WRITE)?;
        let piece = 512 << 10;
        let bound = 256 * cached_sides(engine);
        for _ in 0..2 {
            for off in (0..LEN).step_by(piece) {
                let l = [iov(buf.addr() + off, piece)];
                let r = [iov(addr + off, piece)];
                // SAFETY: within our own mapping.
                let got = unsafe { peer.copy_raw(Op::Read, &l, &r)? };
                check_eq!((got.bytes, got.error), (piece as u64, 0));
                let now = stat("cache_pages")?.wrapping_sub(held);
                check!(
                    now <= bound,
                    "{engine}: the caches hold {now} pages, over their bound {bound}"
                );
            }
        }
        check!(buf.bytes() == &pattern(1)[..], "wrong bytes");
        check!(
            stat("cache_evictions")? > evictions,
            "{engine}: nothing was evicted"
        );
        // The target inherited the /dev/cma file (forked after it was
        // opened): it goes first, so that the close is the last.
        drop(t);
        drop(peer);
        drop(dev);
        check_eq!(
            stat("cache_pages")?,
            held,
            "{engine}: pages held after the fds closed"
        );
    }
    Ok(())
}

fn memlock() -> TestResult {
    crate::perm::needs_root()?;
    // A target (nobody) that consents; a caller (nobody, so no
    // CAP_IPC_LOCK) whose RLIMIT_MEMLOCK is 0: its copies work, uncached.
    let mut t = Peer::spawn(|mut ch| {
        util::become_user(util::NOBODY)?;
        let dev = Device::open()?;
        dev.grant(None)?;
        let addr = aligned_buffer()?;
        fill(addr, 1);
        ch.send(&[addr as u64])?;
        ch.wait()
    })?;
    let addr = t.recv()?[0] as usize;
    let fallbacks = stat("cache_fallbacks")?;
    let misses = stat("cache_misses")?;
    let pid = t.pid;
    let status = util::in_forked(|| {
        let run = || -> io::Result<i32> {
            util::become_user(util::NOBODY)?;
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: sets our own limit from a valid struct.
            if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &none) } != 0 {
                return Ok(3);
            }
            let dev = Device::open()?;
            let peer = dev.attach(Target::Pid(pid))?;
            let mut buf = Mapping::new(LEN, libc::PROT_READ | libc::PROT_WRITE)?;
            for _ in 0..2 {
                if read(&peer, &mut buf, addr)? != (LEN as u64, 0) {
                    return Ok(4);
                }
            }
            Ok(if buf.bytes() == &pattern(1)[..] { 0 } else { 5 })
        };
        run().unwrap_or(6)
    })?;
    check_eq!(status, 0, "the uncached copies failed");
    check!(stat("cache_fallbacks")? > fallbacks, "no fallback counted");
    check_eq!(
        stat("cache_misses")?,
        misses,
        "pages cached past RLIMIT_MEMLOCK"
    );
    drop(t);
    Ok(())
}

/// Threads of the storm's target: one invalidating the copied buffer in a
/// loop, the others each populating and discarding a chunk of their own
/// ([`STORM_CHUNK`]), so that some invalidation of the address space is
/// nearly always in flight (zapping populated pages takes time, and under
/// preemption a thread preempted mid-zap keeps its invalidation in flight
/// while it waits for a CPU). An mmu_interval_notifier's reader waits until
/// no invalidation at all is in flight.
const STORM_THREADS: usize = 16;
const STORM_CHUNK: usize = 8 << 20;

/// A target whose threads keep `MADV_DONTNEED`s of the cached buffer in
/// flight, and a copier reading it through a peer fd: the copies go on
/// (cached or not, with the bytes the buffer has: zeros or the fill), and
/// the copier dies at once when killed, and so does its `close()` of the
/// peer fd. On a module that waits for invalidations in flight
/// (`mmu_interval_read_begin()` when it makes a region,
/// `mmu_interval_notifier_remove()` when it drops one: both
/// uninterruptible, for as long as the target keeps them coming), the
/// copier sits in D state and SIGKILL does not end it.
fn invalidation_storm() -> TestResult {
    crate::perm::needs_root()?;
    let mut t = Peer::spawn(|mut ch| {
        let addr = aligned_buffer()?;
        fill(addr, 1);
        ch.send(&[addr as u64])?;
        std::thread::spawn(move || loop {
            // SAFETY: our own buffer of `LEN` bytes; its pages go and come
            // back as zeros.
            unsafe { libc::madvise(addr as *mut libc::c_void, LEN, libc::MADV_DONTNEED) };
        });
        for _ in 1..STORM_THREADS {
            // Never unmapped: the target process ends with the test.
            let chunk = Mapping::new(STORM_CHUNK, libc::PROT_READ | libc::PROT_WRITE)?;
            let chunk = std::mem::ManuallyDrop::new(chunk).addr();
            std::thread::spawn(move || loop {
                let at = chunk as *mut libc::c_void;
                // SAFETY (both): the thread's own mapping, never unmapped.
                // Populated in one call (no faults), then discarded.
                unsafe { libc::madvise(at, STORM_CHUNK, libc::MADV_POPULATE_WRITE) };
                unsafe { libc::madvise(at, STORM_CHUNK, libc::MADV_DONTNEED) };
            });
        }
        ch.wait()
    })?;
    let addr = t.recv()?[0] as usize;
    let pid = t.pid;
    // The copier reports each copy done on a pipe.
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    check_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0, "pipe");
    // SAFETY: the test process is single-threaded here.
    let copier = unsafe { libc::fork() };
    if copier == 0 {
        let run = || -> io::Result<()> {
            let dev = Device::open()?;
            let peer = dev.attach(Target::Pid(pid))?;
            let mut buf = Mapping::new(LEN, libc::PROT_READ | libc::PROT_WRITE)?;
            let fill = pattern(1);
            loop {
                let (n, err) = read(&peer, &mut buf, addr)?;
                // Each page is the fill or zeros, whichever it was when read.
                let ok = n == LEN as u64
                    && err == 0
                    && buf
                        .bytes()
                        .chunks(page_size())
                        .zip(fill.chunks(page_size()))
                        .all(|(b, f)| b == f || b.iter().all(|&x| x == 0));
                let byte = [u8::from(ok)];
                // SAFETY: writes one byte from a live array.
                unsafe { libc::write(fds[1], byte.as_ptr().cast(), 1) };
            }
        };
        let _ = run();
        // SAFETY: ends the child.
        unsafe { libc::_exit(1) };
    }
    // SAFETY: our copy of the write end.
    unsafe { libc::close(fds[1]) };
    // Wait for some copies under the storm (each one's verdict).
    let mut good = 0;
    let copies_started = std::time::Instant::now();
    let deadline = copies_started + std::time::Duration::from_secs(60);
    while good < 20 && std::time::Instant::now() < deadline {
        let mut pfd = libc::pollfd {
            fd: fds[0],
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: polls one live descriptor (a copier stuck in the kernel
        // must not hang the test too).
        if unsafe { libc::poll(&mut pfd, 1, 1000) } != 1 {
            continue;
        }
        let mut b = [0u8; 1];
        // SAFETY: reads one byte into a live array.
        if unsafe { libc::read(fds[0], b.as_mut_ptr().cast(), 1) } != 1 {
            break;
        }
        if b[0] != 1 {
            kill_wait(copier);
            return Err(Failure::Fail(
                "a copy under the storm returned wrong bytes or an error".into(),
            ));
        }
        good += 1;
    }
    let copies_took = copies_started.elapsed();
    // Kill the copier mid-copy, with the storm still going: it must be gone
    // well within a few seconds.
    // SAFETY: signals our own child.
    unsafe { libc::kill(copier, libc::SIGKILL) };
    let start = std::time::Instant::now();
    let mut status = 0;
    let mut reaped = false;
    while start.elapsed() < std::time::Duration::from_secs(10) {
        // SAFETY: polls our own child.
        if unsafe { libc::waitpid(copier, &mut status, libc::WNOHANG) } == copier {
            reaped = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let waited = start.elapsed();
    // SAFETY: our read end.
    unsafe { libc::close(fds[0]) };
    drop(t);
    if !reaped {
        // It goes once the storm is over (the target is gone); then fail.
        kill_wait(copier);
        return Err(Failure::Fail(
            "the copier did not die within 10 s of SIGKILL while the target kept invalidating"
                .into(),
        ));
    }
    println!(
        "# storm: {good} copies checked in {:.1} s; the killed copier was gone after {} ms",
        copies_took.as_secs_f64(),
        waited.as_millis()
    );
    check!(
        good >= 20,
        "only {good} copies completed in 60 s under the invalidation storm"
    );
    check!(
        waited < std::time::Duration::from_secs(10),
        "killed copier took {waited:?}"
    );
    Ok(())
}

/// Kills our child `pid` and reaps it.
fn kill_wait(pid: libc::pid_t) {
    // SAFETY: signals and reaps our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}
