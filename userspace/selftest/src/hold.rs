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
const ZAPPER: usize = 5;
const GO: usize = 6;
const GRANTER: usize = 7;

/// The copier's commands.
const READ_NEW: u8 = b'n';
const CLOSE: u8 = b'c';
const READ_OTHER: u8 = b'o';

/// The words of the shared page at `addr` (a page outlives every user).
fn words(addr: usize) -> &'static [AtomicU64] {
    // SAFETY: a shared page mapped before the fork in the test and kept
    // mapped in the target for its life, and in the test until the target
    // is gone; `AtomicU64` has the layout of `u64`.
    unsafe { std::slice::from_raw_parts(addr as *const AtomicU64, 9) }
}

/// The resident pages of process `pid` (or of one of its threads:
/// `pid/task/tid`), as its `statm` says.
fn rss_of(pid: impl std::fmt::Display) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|s| s.split(' ').nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// The calling thread's id.
fn gettid() -> u64 {
    // SAFETY: no arguments, no memory.
    unsafe { libc::syscall(libc::SYS_gettid) as u64 }
}

/// Lets the target's busy thread go (and with it the held zap) when the
/// test returns, whichever way.
struct Release(usize);

impl Drop for Release {
    fn drop(&mut self) {
        words(self.0)[RELEASE].store(1, Ordering::SeqCst);
    }
}

/// [`ZAP_LEN`] bytes of 4 KiB pages (a long zap), populated, kept for the
/// life of the process.
fn zap_region() -> io::Result<usize> {
    let zap = Mapping::new(ZAP_LEN, libc::PROT_READ | libc::PROT_WRITE)?;
    let z = std::mem::ManuallyDrop::new(zap).addr() as *mut libc::c_void;
    // SAFETY (both): our own mapping, never unmapped.
    unsafe { libc::madvise(z, ZAP_LEN, libc::MADV_NOHUGEPAGE) };
    unsafe { libc::madvise(z, ZAP_LEN, libc::MADV_POPULATE_WRITE) };
    Ok(z as usize)
}

/// Starts the zapper of region `z` ([`zap_region`]): a `SCHED_IDLE`
/// thread on CPU 0 that, once armed, populates and zaps it until a zap
/// is held ([`hog`]). Says its thread id in `w[ZAPPER]`.
fn zapper(w: &'static [AtomicU64], z: usize) {
    std::thread::spawn(move || {
        w[ZAPPER].store(gettid(), Ordering::SeqCst);
        let _cpu0 = OnCpu::new(0);
        let idle = libc::sched_param { sched_priority: 0 };
        // SAFETY: this thread's own scheduling policy.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) };
        while w[ARMED].load(Ordering::SeqCst) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let at = z as *mut libc::c_void;
        // SAFETY: the process id, no memory.
        let me = unsafe { libc::getpid() };
        while w[HELD].load(Ordering::SeqCst) == 0 && w[RELEASE].load(Ordering::SeqCst) == 0 {
            // SAFETY (both): our own mapping, never unmapped.
            unsafe { libc::madvise(at, ZAP_LEN, libc::MADV_POPULATE_WRITE) };
            w[TOP].store(rss_of(me) as u64, Ordering::SeqCst);
            w[IN_ZAP].store(1, Ordering::SeqCst);
            unsafe { libc::madvise(at, ZAP_LEN, libc::MADV_DONTNEED) };
            w[IN_ZAP].store(0, Ordering::SeqCst);
        }
    });
}

/// The busy thread, on CPU 0 at nice -20, until released: when the zapper
/// of process `pid` is part way through a zap, says so (`w[HELD]`) and
/// keeps the CPU, so that the zap stays in flight.
fn hog(w: &[AtomicU64], pid: i32) {
    let _cpu0 = OnCpu::new(0);
    // The most CPU a thread can have in its class: the zapper beside it
    // gets a few milliseconds a minute (at nice 0, a few a second).
    // SAFETY: the calling thread's own nice value (0: this thread).
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, -20) };
    let (margin, zap) = (MARGIN / page_size(), ZAP_LEN / page_size());
    while w[RELEASE].load(Ordering::SeqCst) == 0 {
        if w[IN_ZAP].load(Ordering::SeqCst) == 1 {
            // The zapper is not running while we are (one CPU): if the
            // RSS is part way down, it is inside the zap.
            let (top, now) = (w[TOP].load(Ordering::SeqCst) as usize, rss_of(pid));
            if now + margin <= top && now + zap >= top + margin {
                w[HELD].store(1, Ordering::SeqCst);
                while w[RELEASE].load(Ordering::SeqCst) == 0 {
                    std::hint::spin_loop();
                }
            }
        }
        std::thread::sleep(Duration::from_micros(20));
    }
}

/// Arms the zapper and waits until a zap is held; returns how long that
/// took.
fn hold(w: &[AtomicU64]) -> Result<Duration, Failure> {
    w[ARMED].store(1, Ordering::SeqCst);
    let start = Instant::now();
    while w[HELD].load(Ordering::SeqCst) == 0 {
        check!(
            start.elapsed() < SETUP,
            "the target's zap was never caught part way"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(start.elapsed())
}

/// The target: a buffer of [`LEN`] bytes (the fill of [`pattern`]`(1)`),
/// a zap region with its zapper, and the busy thread.
fn target(shared: usize, mut ch: crate::peer::Child) -> TestResult {
    let w = words(shared);
    let addr = aligned_buffer()?;
    fill(addr, 1);
    let z = zap_region()?;
    zapper(w, z);
    // SAFETY: the process id, no memory.
    let me = unsafe { libc::getpid() };
    std::thread::spawn(move || hog(w, me));
    ch.send(&[addr as u64, z as u64])?;
    ch.wait()
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
    let caught = hold(w)?;
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

/// Whether thread `tid` of process `pid` is still there.
fn thread_alive(pid: i32, tid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists()
}

/// The state letter of thread `tid` of process `pid` (`D`, `R`, `S`...).
fn thread_state(pid: i32, tid: u64) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// A process's first grant takes its `mmap_lock` for writing (the watch on
/// its address space). Another process can hold that lock for reading as
/// long as it likes (here: the process's own zap, held part way by a busy
/// process on its CPU; equally a fault of a peer's in a map of it): the
/// grant then waits, and a SIGKILL must end the granting thread, not leave
/// it in D state until the lock comes free.
pub(crate) fn grant_killable() -> TestResult {
    crate::perm::needs_root()?;
    util::needs_two_cpus()?;
    let page = Mapping::shared(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    let shared = page.addr();
    let w = words(shared);
    let _cpu1 = OnCpu::new(1)?;
    let mut t = Peer::spawn(move |mut ch| {
        let dev = Device::open()?;
        zapper(w, zap_region()?);
        std::thread::spawn(move || {
            w[GRANTER].store(gettid(), Ordering::SeqCst);
            while w[GO].load(Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let granted = dev.grant(None).is_ok();
            w[GO].store(if granted { 2 } else { 3 }, Ordering::SeqCst);
        });
        ch.send(&[])?;
        ch.wait()
    })?;
    t.recv()?;
    let pid = t.pid;
    let mut h = Peer::spawn(move |_| {
        hog(w, pid);
        Ok(())
    })?;
    let release = Release(shared);
    hold(w)?;
    let (zapper, granter) = (
        w[ZAPPER].load(Ordering::SeqCst),
        w[GRANTER].load(Ordering::SeqCst),
    );
    w[GO].store(1, Ordering::SeqCst);
    // The grant must wait for the lock (D, killable or not).
    let start = Instant::now();
    while thread_state(pid, granter) != Some('D') {
        check_eq!(
            w[GO].load(Ordering::SeqCst),
            1,
            "the grant did not wait for the mmap_lock the zap holds"
        );
        check!(start.elapsed() < STEP, "the grant never waited");
        std::thread::sleep(Duration::from_millis(5));
    }
    t.kill();
    let killed = Instant::now();
    while thread_alive(pid, granter) {
        check!(
            killed.elapsed() < STEP,
            "the granting thread was still there {STEP:?} after SIGKILL (D state while another \
             process holds its mmap_lock for reading)"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let gone = killed.elapsed();
    check!(
        thread_alive(pid, zapper),
        "the zap ended before the test did: it held nothing"
    );
    println!(
        "# the granting thread was gone {} ms after SIGKILL, the zap still held",
        gone.as_millis()
    );
    drop(release);
    check!(h.reaped_within(SETUP), "the busy process did not end");
    Ok(())
}

/// For a map test run as root: a FUSE instance of the test's own
/// ([`crate::fuse`]) whose reads wait until `fw[0]`, and a target that maps
/// its file (shared, read-only,
/// untouched). Returns them and the mapping's address.
fn fuse_target(
    fw: &'static [AtomicU64],
    readahead: bool,
) -> Result<(crate::fuse::Fuse, Peer, usize), Failure> {
    crate::perm::needs_root()?;
    util::needs_feature(cma::Features::MAP)?;
    let fuse = match crate::fuse::Fuse::mount(fw, readahead) {
        Ok(f) => f,
        Err(e) => return Err(Failure::Skip(format!("no FUSE mount: {e}"))),
    };
    let file = fuse.file();
    let mut t = Peer::spawn(move |mut ch| {
        let f = std::fs::File::open(&file)?;
        // SAFETY: a new shared read-only mapping of our own file,
        // never unmapped (the process ends with the test).
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                crate::fuse::FILE_LEN,
                libc::PROT_READ,
                libc::MAP_SHARED,
                std::os::fd::AsRawFd::as_raw_fd(&f),
                0,
            )
        };
        check!(addr != libc::MAP_FAILED, "mmap of the FUSE file");
        ch.send(&[addr as u64])?;
        ch.wait()
    })?;
    let addr = t.recv()?[0] as usize;
    Ok((fuse, t, addr))
}

/// Waits until the FUSE server of `fw` holds a read.
fn read_held(fw: &[AtomicU64]) -> TestResult {
    let start = Instant::now();
    while fw[1].load(Ordering::SeqCst) == 0 {
        check!(start.elapsed() < STEP, "the fault never read the file");
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// A fault in the caller's map of a target's page whose read a FUSE server
/// holds (the page stays locked meanwhile; any user who can mount FUSE
/// can arrange that, for as long as they like): the fault waits, as a
/// copy's lookup would, and a SIGKILL must end it, not leave the caller in
/// D state until the server answers.
pub(crate) fn map_fault_killable() -> TestResult {
    let page = Mapping::shared(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    let w = words(page.addr());
    // The server's words: its release (set by `Release`) and the reads it holds.
    let fw = &w[RELEASE..];
    let (fuse, t, addr) = fuse_target(fw, true)?;
    let pid = t.pid;
    let mut c = Peer::spawn(move |mut ch| {
        let dev = Device::open()?;
        let peer = dev.attach(Target::Pid(pid))?;
        let m = peer.map(addr, page_size(), false)?;
        ch.send(&[1])?;
        // SAFETY: the map's first byte, mapped while `m` lives.
        let b = unsafe { m.as_ptr().read_volatile() };
        ch.send(&[u64::from(b)])?;
        ch.wait()
    })?;
    // Let the server answer when the test returns, whichever way.
    let release = Release(page.addr());
    check_eq!(c.recv_within(SETUP)?, Some(vec![1]), "the map failed");
    read_held(fw)?;
    check_eq!(
        c.recv_within(Duration::from_millis(100))?,
        None,
        "the read of the map did not wait for the page's read"
    );
    c.kill();
    let killed = Instant::now();
    check!(
        c.reaped_within(STEP),
        "the caller was not gone {STEP:?} after SIGKILL (D state while a FUSE read of the \
         target's page is held)"
    );
    println!(
        "# the caller, faulting on a page whose FUSE read is held, was gone {} ms after SIGKILL",
        killed.elapsed().as_millis()
    );
    drop(release);
    drop((t, fuse));
    Ok(())
}

/// The command of [`map_fault_waits_unlocked`]'s caller: map and unmap.
const MMAP: u8 = b'm';

/// A fault in the caller's map waits for the target's page without the
/// caller's `mmap_lock`: the target's page is read synchronously (no
/// readahead) from a FUSE server that holds the read, and meanwhile
/// another thread of the caller maps and unmaps memory (which takes that
/// lock for writing).
pub(crate) fn map_fault_waits_unlocked() -> TestResult {
    let page = Mapping::shared(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    let w = words(page.addr());
    let fw = &w[RELEASE..];
    let (fuse, t, addr) = fuse_target(fw, false)?;
    let pid = t.pid;
    let mut c = Peer::spawn(move |mut ch| {
        let dev = Device::open()?;
        let peer = dev.attach(Target::Pid(pid))?;
        let m = peer.map(addr, page_size(), false)?;
        let at = m.as_ptr() as usize;
        // Never joined: it ends with the process.
        std::thread::spawn(move || {
            // SAFETY: the map's first byte; `m` lives until the process
            // ends (the main thread serves until then).
            unsafe { (at as *const u8).read_volatile() };
        });
        ch.send(&[1])?;
        ch.serve(|cmd, _| {
            let _keep = &m;
            if cmd != MMAP {
                return Ok(vec![]);
            }
            let other = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
            drop(other);
            Ok(vec![1])
        })
    })?;
    let release = Release(page.addr());
    check_eq!(c.recv_within(SETUP)?, Some(vec![1]), "the map failed");
    read_held(fw)?;
    c.command_no_reply(MMAP)?;
    check_eq!(
        c.recv_within(STEP)?,
        Some(vec![1]),
        "another thread of the caller could not map memory while a fault in its map waited \
         for the target's page (the fault held the caller's mmap_lock)"
    );
    drop(release);
    drop((c, t, fuse));
    Ok(())
}

/// Mappings of one peer fd the long-pass test makes (below the default
/// `vm.max_map_count`, 65530, with room for the process's own).
const PASS_VMAS: usize = 60000;
/// Maps of its own memory the long-pass test's caller makes (each a
/// notifier the pass calls at each unmapping).
const SELF_MAPS: usize = 40;
/// Words of the long-pass test's shared page.
const UNSTABLE: usize = 0;
const PUBLISHED: usize = 1;
/// The second caller's command: close its peer fd.
const CLOSE_FD: u8 = b'c';

/// One caller can make the module's unmapping pass over its maps long (it
/// maps one peer fd tens of thousands of times, and a change of the target
/// unmaps every one of them); another user's `close()` of a peer fd must
/// not wait for that pass. A caller maps a page of the target through
/// [`PASS_VMAS`] mappings and publishes its status page's `unstable`
/// (up while a pass it asked for is pending); the target discards the page;
/// while that pass runs, a second caller closes its own peer fd, and must
/// be back while the first caller's pass still is not done.
pub(crate) fn close_not_held_by_another_pass() -> TestResult {
    crate::perm::needs_root()?;
    util::needs_feature(cma::Features::MAP)?;
    let page = Mapping::shared(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    let w = words(page.addr());
    let (mut t, addr) = crate::cache::cache_target()?;
    let pid = t.pid;
    let mut first = Peer::spawn(move |mut ch| {
        let dev = Device::open()?;
        // Maps of its own memory first: each is a notifier on this
        // process's address space, called at each of the pass's unmappings.
        let own = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
        // SAFETY: the process id, no memory.
        let me = unsafe { libc::getpid() };
        let mut selves = Vec::new();
        for _ in 0..SELF_MAPS {
            let p = dev.attach(Target::Pid(me))?;
            let m = p.map(own.addr(), page_size(), false)?;
            selves.push((p, m));
        }
        let peer = dev.attach(Target::Pid(pid))?;
        let m = peer.map(addr, page_size(), false)?;
        let status = peer.map_status()?;
        // SAFETY: the map's first byte, mapped while `m` lives.
        unsafe { m.as_ptr().read_volatile() };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&peer);
        let mut n = 0u64;
        for _ in 0..PASS_VMAS {
            // SAFETY: a new read-only shared mapping of our peer fd at the
            // target's page; never unmapped (the process ends with the test).
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    page_size(),
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd,
                    addr as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                break;
            }
            n += 1;
        }
        ch.send(&[n])?;
        loop {
            w[UNSTABLE].store(status.unstable(), Ordering::SeqCst);
            w[PUBLISHED].fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_micros(50));
        }
    })?;
    let vmas = first.recv_within(SETUP)?;
    check!(
        vmas.as_ref().is_some_and(|v| v[0] >= PASS_VMAS as u64 / 2),
        "the first caller could not map its fd: {vmas:?}"
    );
    let mut second = Peer::spawn(move |mut ch| {
        let dev = Device::open()?;
        let peer = dev.attach(Target::Pid(pid))?;
        let m = peer.map(addr + page_size(), page_size(), false)?;
        // SAFETY: the map's first byte, mapped while `m` lives.
        unsafe { m.as_ptr().read_volatile() };
        let (mut m, mut peer) = (Some(m), Some(peer));
        ch.send(&[1])?;
        ch.serve(|c, _| {
            if c != CLOSE_FD {
                return Ok(vec![]);
            }
            let start = Instant::now();
            drop(m.take());
            // The fd's last reference: its release runs before close()
            // returns to user space.
            drop(peer.take());
            let took = start.elapsed().as_micros() as u64;
            Ok(vec![w[UNSTABLE].load(Ordering::SeqCst), took])
        })
    })?;
    check_eq!(
        second.recv_within(SETUP)?,
        Some(vec![1]),
        "the second caller's map failed"
    );
    let start = Instant::now();
    while w[UNSTABLE].load(Ordering::SeqCst) != 0 {
        check!(
            start.elapsed() < STEP,
            "the first caller's status never settled"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The target discards its buffer: the first caller's pass begins (the
    // discard waits for it up to 100 ms, then goes on).
    let started = Instant::now();
    check_eq!(
        t.command(crate::cache::DONTNEED, &[])?,
        vec![0],
        "MADV_DONTNEED"
    );
    let r = second.command(CLOSE_FD, &[])?;
    let closed = started.elapsed();
    while w[UNSTABLE].load(Ordering::SeqCst) != 0 {
        check!(
            started.elapsed() < SETUP,
            "the first caller's pass never ended"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let pass = started.elapsed();
    println!(
        "# pass over {} mappings: {} ms; the other caller's close took {} us, done at {} ms",
        vmas.map_or(0, |v| v[0]),
        pass.as_millis(),
        r.get(1).copied().unwrap_or(0),
        closed.as_millis()
    );
    // The close is the release of one map state; it must not last a
    // tenth of the other caller's pass, which it has no part in.
    let took = Duration::from_micros(r.get(1).copied().unwrap_or(u64::MAX));
    check!(
        took < pass / 10,
        "another caller's close() took {took:?}, waiting for this caller's pass ({pass:?})"
    );
    Ok(())
}
