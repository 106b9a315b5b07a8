//! An invalidation of the target held open. A thread of the target that is
//! preempted in the middle of its `MADV_DONTNEED` keeps that invalidation
//! of its address space in flight until it runs again, and any user can
//! keep it off its CPU: a `SCHED_IDLE` thread that zaps and a busy thread
//! of its own on the same CPU. The caller's copies, its `close()` of the
//! peer fd and its exit must not wait for that invalidation to end.
//!
//! A module that waits for invalidations in flight (an
//! `mmu_interval_notifier`'s `mmu_interval_read_begin()` when it makes a
//! region, `mmu_interval_notifier_remove()` when it drops one) waits here,
//! uninterruptibly, for as long as the target likes.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cma::{Device, Op, Target};

use crate::cache::{aligned_buffer, fill, pattern, LEN};
use crate::copy::iov;
use crate::ktap::{Failure, TestResult};
use crate::peer::Peer;
use crate::util::{self, page_size, Mapping, OnCpu};
use crate::{check, check_eq};

/// The region the target zaps: 4 KiB pages, enough of them that the zap,
/// once held, does not end while the test runs (a `SCHED_IDLE` thread
/// beside a busy one gets a few milliseconds of CPU a second).
const ZAP_LEN: usize = 128 << 20;
/// How far a zap must have gone, and have left to go, for the busy thread
/// to hold it: far beyond the error of the RSS the kernel reports.
const MARGIN: usize = 4 << 20;
/// How long each step of the caller may take while the zap is held: on a
/// module that does not wait, milliseconds.
const STEP: Duration = Duration::from_secs(10);
/// How long the target may take to populate, zap and get held.
const SETUP: Duration = Duration::from_secs(120);

/// Words of the page shared by the test and the target.
const ARMED: usize = 0;
const HELD: usize = 1;
const RELEASE: usize = 2;
const IN_ZAP: usize = 3;
const TOP: usize = 4;

/// The copier's commands.
const READ_NEW: u8 = b'n';
const CLOSE: u8 = b'c';
const READ_OTHER: u8 = b'o';

/// The words of the shared page at `addr` (a page outlives every user).
fn words(addr: usize) -> &'static [AtomicU64] {
    // SAFETY: a shared page mapped before the fork in the test and kept
    // mapped in the target for its life, and in the test until the target
    // is gone; `AtomicU64` has the layout of `u64`.
    unsafe { std::slice::from_raw_parts(addr as *const AtomicU64, 8) }
}

/// The process's resident pages, as `/proc/self/statm` says.
fn rss() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split(' ').nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The resident pages of process `pid`.
fn rss_of(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split(' ').nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// Lets the target's busy thread go (and with it the held zap) when the
/// test returns, whichever way.
struct Release(usize);

impl Drop for Release {
    fn drop(&mut self) {
        words(self.0)[RELEASE].store(1, Ordering::SeqCst);
    }
}

/// The target: a buffer of [`LEN`] bytes (the fill of [`pattern`]`(1)`),
/// and [`ZAP_LEN`] bytes that, once armed, a `SCHED_IDLE` thread on CPU 0
/// populates and zaps until a busy thread on CPU 0 finds a zap half done
/// and keeps the CPU until released.
fn target(shared: usize, mut ch: crate::peer::Child) -> TestResult {
    let w = words(shared);
    let addr = aligned_buffer()?;
    fill(addr, 1);
    let zap = Mapping::new(ZAP_LEN, libc::PROT_READ | libc::PROT_WRITE)?;
    // SAFETY: our own mapping; 4 KiB pages make a long zap.
    unsafe {
        libc::madvise(
            zap.addr() as *mut libc::c_void,
            ZAP_LEN,
            libc::MADV_NOHUGEPAGE,
        )
    };
    let z = zap.addr();
    // Populated, so that the caller caches real pages of it.
    // SAFETY: our own mapping.
    unsafe { libc::madvise(z as *mut libc::c_void, ZAP_LEN, libc::MADV_POPULATE_WRITE) };
    let zapper = std::thread::spawn(move || {
        let _cpu0 = OnCpu::new(0);
        let idle = libc::sched_param { sched_priority: 0 };
        // SAFETY: this thread's own scheduling policy.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) };
        while w[ARMED].load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let at = z as *mut libc::c_void;
        while w[HELD].load(Ordering::SeqCst) == 0 && w[RELEASE].load(Ordering::SeqCst) == 0 {
            // SAFETY (both): our own mapping, alive while the thread runs
            // (the process ends with `exit`, never unmapping it).
            unsafe { libc::madvise(at, ZAP_LEN, libc::MADV_POPULATE_WRITE) };
            w[TOP].store(rss() as u64, Ordering::SeqCst);
            w[IN_ZAP].store(1, Ordering::SeqCst);
            unsafe { libc::madvise(at, ZAP_LEN, libc::MADV_DONTNEED) };
            w[IN_ZAP].store(0, Ordering::SeqCst);
        }
    });
    std::thread::spawn(move || {
        let _cpu0 = OnCpu::new(0);
        // The most CPU a thread can have in its class: the zapper beside it
        // gets a few milliseconds a minute (at nice 0, a few a second).
        // SAFETY: the calling thread's own nice value (0: this thread).
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) };
        let (margin, zap) = (MARGIN / page_size(), ZAP_LEN / page_size());
        while w[RELEASE].load(Ordering::SeqCst) == 0 {
            if w[IN_ZAP].load(Ordering::SeqCst) == 1 {
                // The zapper is not running while we are (one CPU): if
                // the RSS is part way down, it is inside the zap.
                let (top, now) = (w[TOP].load(Ordering::SeqCst) as usize, rss());
                if now + margin <= top && now + zap >= top + margin {
                    w[HELD].store(1, Ordering::SeqCst);
                    while w[RELEASE].load(Ordering::SeqCst) == 0 {
                        std::hint::spin_loop();
                    }
                }
            }
            std::thread::sleep(Duration::from_micros(20));
        }
    });
    ch.send(&[addr as u64, z as u64])?;
    let r = ch.wait();
    // The zapper ends once released; the mapping stays until it has.
    w[RELEASE].store(1, Ordering::SeqCst);
    let _ = zapper.join();
    drop(zap);
    r
}

/// Reads `len` bytes of the target at `remote` through `peer` into `buf`:
/// whether all came and are `expect`'s.
fn read(peer: &cma::Peer, buf: &mut Mapping, remote: usize, expect: &[u8]) -> io::Result<bool> {
    let len = expect.len();
    // SAFETY: `buf` is our own mapping of at least `len` bytes.
    let t = unsafe { peer.copy_raw(Op::Read, &[iov(buf.addr(), len)], &[iov(remote, len)])? };
    Ok(t.bytes == len as u64 && t.error == 0 && &buf.bytes()[..len] == expect)
}

/// The copier, on CPU 1: two peer fds of the target, each with cached
/// regions (the first also over the start of the region that will be
/// zapped); then, on command, a read of a part not cached yet, the close
/// of the first peer fd, a read through the second.
fn copier(pid: i32, addr: usize, zap: usize, mut ch: crate::peer::Child) -> TestResult {
    let _cpu1 = OnCpu::new(1)?;
    let dev = Device::open()?;
    let mut first = Some(dev.attach(Target::Pid(pid))?);
    let second = dev.attach(Target::Pid(pid))?;
    let mut buf = Mapping::new(LEN, libc::PROT_READ | libc::PROT_WRITE)?;
    let fill = pattern(1);
    let (head, tail) = fill.split_at(LEN / 2);
    let zeros = vec![0u8; MARGIN];
    let mut ok = true;
    if let Some(p) = &first {
        for _ in 0..2 {
            ok &= read(p, &mut buf, addr, head)?;
            ok &= read(p, &mut buf, zap, &zeros)?;
        }
    }
    ok &= read(&second, &mut buf, addr, head)?;
    ch.send(&[u64::from(ok)])?;
    ch.serve(|c, _| {
        let done = match c {
            READ_NEW => first
                .as_ref()
                .map_or(Ok(false), |p| read(p, &mut buf, addr + LEN / 2, tail))?,
            CLOSE => first.take().is_some(),
            READ_OTHER => read(&second, &mut buf, addr + LEN / 2, tail)?,
            _ => false,
        };
        Ok(vec![u64::from(done)])
    })
}

/// Sends `cmd` to the copier and waits [`STEP`] for its answer: an error
/// saying `what` waited if none came, or if the answer is not success.
fn step(c: &mut Peer, cmd: u8, what: &str) -> TestResult {
    c.command_no_reply(cmd)?;
    match c.recv_within(STEP)? {
        None => Err(Failure::Fail(format!(
            "{what} waited {STEP:?} (and on) for the target's invalidation in flight"
        ))),
        Some(v) => {
            check_eq!(v.first().copied(), Some(1), "{what} failed");
            Ok(())
        }
    }
}

/// The target's zap of [`ZAP_LEN`] bytes, held part way by the target's
/// own threads (see [`target`]); meanwhile the caller reads a part of the
/// target's buffer it has not cached, closes a peer fd whose cached region
/// the zap invalidated, reads through another, and is killed: each within
/// [`STEP`], and the zap is still in flight at the end.
pub(crate) fn held_invalidation() -> TestResult {
    crate::perm::needs_root()?;
    util::needs_two_cpus()?;
    let page = Mapping::shared(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    let shared = page.addr();
    let w = words(shared);
    let _cpu1 = OnCpu::new(1)?;
    let mut t = Peer::spawn(move |ch| target(shared, ch))?;
    let v = t.recv()?;
    let (pid, addr, zap) = (t.pid, v[0] as usize, v[1] as usize);
    let mut c = Peer::spawn(move |ch| copier(pid, addr, zap, ch))?;
    // Dropped before `c` and `t`: a copier stuck in the kernel gets out
    // once the zap ends, and only then can either be reaped.
    let _release = Release(shared);
    let warm = c.recv_within(SETUP)?;
    check_eq!(warm, Some(vec![1]), "the copier's first reads failed");
    w[ARMED].store(1, Ordering::SeqCst);
    let start = Instant::now();
    while w[HELD].load(Ordering::SeqCst) == 0 {
        check!(
            start.elapsed() < SETUP,
            "the target's zap was never caught part way"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let caught = start.elapsed();
    let held_at = Instant::now();
    let rss_held = rss_of(pid);
    let mut times = Vec::new();
    step(&mut c, READ_NEW, "a read of a part not cached")?;
    times.push(held_at.elapsed().as_millis());
    step(
        &mut c,
        CLOSE,
        "close() of a peer fd with an invalidated region",
    )?;
    times.push(held_at.elapsed().as_millis());
    step(&mut c, READ_OTHER, "a read through another peer fd")?;
    times.push(held_at.elapsed().as_millis());
    c.kill();
    check!(
        c.reaped_within(STEP),
        "the killed copier was not gone within {STEP:?} (D state while the target's invalidation stays in flight)"
    );
    times.push(held_at.elapsed().as_millis());
    let (top, left) = (w[TOP].load(Ordering::SeqCst) as usize, rss_of(pid));
    check!(
        left + ZAP_LEN / page_size() >= top + MARGIN / page_size(),
        "the zap ended before the test did ({left} of {top} pages left): it held nothing"
    );
    println!(
        "# zap held part way ({rss_held} pages resident) after {} ms; the copier's read, \
         close, read and exit done {times:?} ms later",
        caught.as_millis()
    );
    Ok(())
}
