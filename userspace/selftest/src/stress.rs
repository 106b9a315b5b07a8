//! Load and faults: many processes copying to and from one another while
//! consent flips, copiers are stopped, continued and killed, targets exit
//! and come back, and the module is unloaded and reloaded between waves;
//! and a target and a copier killed by the OOM killer of a memory cgroup in
//! the middle of copies.
//!
//! `CMA_STRESS_LOAD_SECS` sets the length of a wave (default 3 s, three
//! waves); `make stress` runs 60-second waves on the debug kernel. The
//! runner then checks the kernel log, pins and kmemleak as after every suite.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use cma::{Device, Op, Target};

use crate::check;
use crate::copy::iov;
use crate::ktap::{Failure, Test, TestResult};
use crate::util::{self, Rng};

/// The tests of this file.
pub const TESTS: &[Test] = crate::tests![stress_all_to_all_waves, stress_oom_kill_mid_copy,];

const WORKERS: usize = 16;
/// Each worker's buffer: its slot of a region mapped before the forks, so
/// that every worker finds every other's buffer at the same address.
const SLOT: usize = 1 << 20;

/// Per worker: copies that worked, were refused (EPERM, consent being
/// withdrawn), found their target gone (ESRCH), and anything else.
const OK: usize = 0;
const EPERM: usize = 1;
const ESRCH: usize = 2;
const UNEXPECTED: usize = 3;

/// What the processes share (a MAP_SHARED page, mapped before the forks).
struct Shared {
    pids: [AtomicI32; WORKERS],
    counts: [[AtomicU64; 4]; WORKERS],
    stop: AtomicBool,
    /// The last unexpected errno seen, for the report.
    unexpected_errno: AtomicI32,
}

/// A MAP_SHARED anonymous mapping holding one `Shared`.
struct SharedMap(*mut Shared);

impl SharedMap {
    fn new() -> std::io::Result<SharedMap> {
        // SAFETY: a fresh shared anonymous mapping, zero-filled, which is a
        // valid `Shared` (atomics of zero, `false`).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<Shared>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(SharedMap(p.cast()))
    }

    fn get(&self) -> &Shared {
        // SAFETY: the mapping lives as long as `self` and holds a `Shared`
        // made only of atomics, safe to share between processes.
        unsafe { &*self.0 }
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`.
        unsafe { libc::munmap(self.0.cast(), std::mem::size_of::<Shared>()) };
    }
}

fn wave_secs() -> u64 {
    std::env::var("CMA_STRESS_LOAD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

/// One worker: copies to and from random others until told to stop.
fn worker(me: usize, shared: &Shared, region: usize, seed: u64) -> i32 {
    let Ok(dev) = Device::open() else { return 3 };
    if dev.grant(None).is_err() {
        return 4;
    }
    let mut rng = Rng::new(seed);
    let mut peers: Vec<Option<(i32, cma::Peer)>> = (0..WORKERS).map(|_| None).collect();
    let mine = region + me * SLOT;
    // SAFETY: this worker's own slot of its own copy of the region.
    unsafe { std::ptr::write_bytes(mine as *mut u8, me as u8, SLOT) };
    let mut n = 0u64;
    while !shared.stop.load(Relaxed) {
        n += 1;
        if n % 300 == 0 {
            // Consent flips: for a moment, this worker refuses everyone.
            let _ = dev.revoke();
            std::thread::yield_now();
            let _ = dev.grant(None);
        }
        let j = rng.below(WORKERS);
        let pid = shared.pids[j].load(Relaxed);
        if j == me || pid <= 0 {
            continue;
        }
        let len = [64, 4096, 60_000, 1 << 20][rng.below(4)];
        let off = rng.below(SLOT - len + 1);
        let op = if rng.below(2) == 0 {
            Op::Read
        } else {
            Op::Write
        };
        let l = [iov(mine + off, len)];
        let r = [iov(region + j * SLOT + off, len)];
        let by_peer = rng.below(2) == 0;
        let result = if by_peer {
            if peers[j].as_ref().map(|(p, _)| *p) != Some(pid) {
                peers[j] = dev.attach(Target::Pid(pid)).ok().map(|p| (pid, p));
            }
            match &peers[j] {
                // SAFETY: the local range is this worker's own slot.
                Some((_, p)) => unsafe { p.copy_raw(op, &l, &r) },
                None => Err(std::io::Error::from_raw_os_error(libc::EPERM)),
            }
        } else {
            // SAFETY: the local range is this worker's own slot.
            unsafe { dev.copy_raw(op, Target::Pid(pid), &l, &r) }
        };
        let slot = match result {
            Ok(t) if t.bytes == len as u64 => OK,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => EPERM,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                peers[j] = None;
                ESRCH
            }
            other => {
                let errno = match other {
                    Err(e) => e.raw_os_error().unwrap_or(-1),
                    Ok(_) => -2, // a short copy
                };
                shared.unexpected_errno.store(errno, Relaxed);
                UNEXPECTED
            }
        };
        shared.counts[me][slot].fetch_add(1, Relaxed);
    }
    0
}

/// Forks worker `i` and records its pid.
fn spawn_worker(i: usize, shared: &SharedMap, region: usize, seed: u64) -> std::io::Result<i32> {
    // SAFETY: the test process is single-threaded; the child runs the worker
    // and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        let code = worker(i, shared.get(), region, seed);
        // SAFETY: ends the child without the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    shared.get().pids[i].store(pid, Relaxed);
    Ok(pid)
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid of our own child.
    unsafe { libc::kill(pid, sig) };
}

fn stress_all_to_all_waves() -> TestResult {
    crate::perm::needs_root()?;
    let secs = wave_secs();
    let region = util::Mapping::new(WORKERS * SLOT, libc::PROT_READ | libc::PROT_WRITE)?;
    let ko = std::env::var("CMA_KO").ok();
    let mut rng = Rng::new(0x5eed);
    let (mut kills, mut stops, mut reloads) = (0u64, 0u64, 0u64);
    let mut total = [0u64; 4];
    let start = Instant::now();
    for wave in 0..3 {
        let shared = SharedMap::new()?;
        let mut pids = Vec::new();
        for i in 0..WORKERS {
            pids.push(spawn_worker(i, &shared, region.addr(), rng.next())?);
        }
        let end = Instant::now() + Duration::from_secs(secs);
        let mut tick = 0u64;
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
            tick += 1;
            let i = rng.below(WORKERS);
            if tick % 2 == 0 {
                // A SIGSTOP/SIGCONT storm: a copier frozen mid-copy.
                signal(pids[i], libc::SIGSTOP);
                std::thread::sleep(Duration::from_millis(5));
                signal(pids[i], libc::SIGCONT);
                stops += 1;
            }
            if tick % 10 == 0 {
                // A copier (and target) killed, and another in its place.
                signal(pids[i], libc::SIGKILL);
                util::wait_child(pids[i])?;
                shared.get().pids[i].store(0, Relaxed);
                pids[i] = spawn_worker(i, &shared, region.addr(), rng.next())?;
                kills += 1;
            }
        }
        shared.get().stop.store(true, Relaxed);
        for &pid in &pids {
            signal(pid, libc::SIGCONT);
            let code = util::wait_child(pid)?;
            check!(code == 0, "a worker ended with status {code}");
        }
        for counts in &shared.get().counts {
            for (t, c) in total.iter_mut().zip(counts) {
                *t += c.load(Relaxed);
            }
        }
        let errno = shared.get().unexpected_errno.load(Relaxed);
        check!(
            total[UNEXPECTED] == 0,
            "wave {wave}: {} copies failed unexpectedly (last: errno {errno})",
            total[UNEXPECTED]
        );
        // Between waves, with no file open: unload and load the module.
        if let (Some(ko), true) = (&ko, wave < 2) {
            util::delete_module("cma", libc::O_NONBLOCK)
                .map_err(|e| Failure::Fail(format!("rmmod between waves: {e}")))?;
            util::load_module(ko).map_err(|e| Failure::Fail(format!("insmod: {e}")))?;
            reloads += 1;
        }
    }
    println!(
        "# {WORKERS} processes, 3 waves of {secs} s ({:.0} s): {} copies done, {} refused \
         while consent flipped, {} to targets gone, 0 unexpected; {kills} killed and \
         replaced, {stops} stopped and continued, {reloads} module reloads; \
         {} registry slots now",
        start.elapsed().as_secs_f64(),
        total[OK],
        total[EPERM],
        total[ESRCH],
        crate::perm::param("grants")?
    );
    check!(total[OK] > 100, "only {} copies worked", total[OK]);
    Ok(())
}

/// The cgroup v2 hierarchy, mounted if it is not (debug kernel: MEMCG).
fn cgroup_root() -> Option<std::path::PathBuf> {
    let root = std::path::PathBuf::from("/sys/fs/cgroup");
    if !root.join("cgroup.controllers").exists() {
        let _ = std::process::Command::new("mount")
            .args(["-t", "cgroup2", "none", "/sys/fs/cgroup"])
            .stderr(std::process::Stdio::null())
            .status();
    }
    let controllers = std::fs::read_to_string(root.join("cgroup.controllers")).ok()?;
    controllers.contains("memory").then_some(root)
}

/// A target and a copier in a memory cgroup of 48 MiB: the target keeps
/// allocating while the copier reads and writes it (by pid and by peer fd),
/// until the OOM killer kills them; nothing is left behind.
fn stress_oom_kill_mid_copy() -> TestResult {
    crate::perm::needs_root()?;
    let Some(root) = cgroup_root() else {
        return Err(Failure::Skip("no memory cgroup (debug kernel only)".into()));
    };
    let _ = std::fs::write(root.join("cgroup.subtree_control"), "+memory");
    let cg = root.join(format!("cma-oom-{}", std::process::id()));
    std::fs::create_dir_all(&cg)?;
    std::fs::write(cg.join("memory.max"), format!("{}", 48 << 20))?;
    let _ = std::fs::write(cg.join("memory.swap.max"), "0");
    let shared = SharedMap::new()?;
    let region = util::Mapping::new(2 * SLOT, libc::PROT_READ | libc::PROT_WRITE)?;
    let procs = cg.join("cgroup.procs");
    let mut pids = Vec::new();
    for i in 0..2 {
        // SAFETY: single-threaded test process; the child leaves with _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        if pid == 0 {
            let _ = std::fs::write(&procs, "0");
            let code = if i == 0 {
                // The target: grows until killed.
                let dev = Device::open().ok();
                let _ = dev.as_ref().map(|d| d.grant(None));
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    hog.push(vec![1u8; 1 << 20]);
                    std::thread::sleep(Duration::from_millis(2));
                }
            } else {
                // The copier: big copies into its own growing buffers.
                worker(1, shared.get(), region.addr(), 7)
            };
            // SAFETY: ends the child.
            unsafe { libc::_exit(code) };
        }
        shared.get().pids[i].store(pid, Relaxed);
        pids.push(pid);
    }
    // Wait for the OOM killer, at most 60 s.
    let mut oom_kills = 0;
    for _ in 0..600 {
        let events = std::fs::read_to_string(cg.join("memory.events")).unwrap_or_default();
        oom_kills = events
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        if oom_kills > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    shared.get().stop.store(true, Relaxed);
    for &pid in &pids {
        signal(pid, libc::SIGKILL);
        util::wait_child(pid)?;
    }
    let copies = shared.get().counts[1][OK].load(Relaxed);
    let _ = std::fs::remove_dir(&cg);
    println!(
        "# OOM killer: {oom_kills} kills in the cgroup; the copier made {copies} copies before"
    );
    check!(oom_kills > 0, "the OOM killer never ran");
    Ok(())
}
