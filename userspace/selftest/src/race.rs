//! Races against a moving target: copiers (processes and threads, reading
//! and writing) while the target remaps, unmaps, protects, discards, forks,
//! splits and collapses huge pages, and exits; consent revoked mid-flight;
//! descriptors closed under a running copy; unload attempts during a copy.
//! Plus accounting: a target's memory is freed when it exits, however it
//! was copied from. Each stress test runs for `CMA_STRESS_SECS` (default 4).
//!
//! Outcomes of racing copies are not deterministic, so the tests check
//! what must always hold: every result is a success with no more bytes than
//! asked, or a documented errno; nothing crashes; and the runner then checks
//! the kernel log, pins and kmemleak.

use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cma::sys::cma_iovec;
use cma::{Device, Op, Target};

use crate::copy::{copy, iov, remote_buffer};
use crate::ktap::{Failure, Test, TestResult};
use crate::peer::Peer;
use crate::util::{self, page_size, Mapping, Rng};
use crate::{check, check_eq};

/// The tests of this file, in order.
pub const TESTS: &[Test] = crate::tests![
    race_copy_vs_mapping_changes,
    race_copy_vs_target_exit,
    race_copy_vs_consent_revoke,
    race_copy_vs_fd_close,
    race_unload_during_copy_refused,
    accounting_target_memory_freed,
];

fn stress_time() -> Duration {
    let secs = std::env::var("CMA_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    Duration::from_secs(secs)
}

/// What a racing copy may legitimately return.
fn acceptable(res: &std::io::Result<cma::Transfer>, asked: u64) -> Result<(), String> {
    match res {
        Ok(t)
            if t.bytes <= asked
                && (t.error == 0
                    || [libc::EFAULT, libc::EINTR, libc::ENOMEM].contains(&t.error)) =>
        {
            Ok(())
        }
        Ok(t) => Err(format!("bad transfer {t:?} for {asked} bytes")),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EFAULT | libc::ESRCH | libc::EPERM | libc::EINTR | libc::ENOMEM)
            ) =>
        {
            Ok(())
        }
        Err(e) => Err(format!("unexpected error {e}")),
    }
}

/// How many copies copiers made, and how many of those moved data.
#[derive(Default)]
struct Counts {
    calls: AtomicU64,
    moved: AtomicU64,
}

/// Copies (reads and writes, by size and offset from `rng`) against `pid`'s
/// region `[base, base + len)` until `stop`, counting in `counts`.
fn copier(
    pid: i32,
    base: usize,
    len: usize,
    seed: u64,
    stop: &AtomicBool,
    counts: &Counts,
) -> Result<(), String> {
    let dev = Device::open().map_err(|e| e.to_string())?;
    let local = Mapping::new(len, libc::PROT_READ | libc::PROT_WRITE).map_err(|e| e.to_string())?;
    let mut rng = Rng::new(seed);
    while !stop.load(Ordering::Relaxed) {
        let off = rng.below(len);
        let n = 1 + rng.below(len - off);
        let op = if rng.below(2) == 0 {
            Op::Read
        } else {
            Op::Write
        };
        // Several iovecs, so that a copy spans changes of the target.
        let parts = 1 + rng.below(4);
        let step = n.div_ceil(parts);
        let l: Vec<cma_iovec> = (0..parts)
            .map(|i| {
                iov(
                    local.addr() + (off + i * step).min(len - 1),
                    step.min(len - (off + i * step).min(len - 1)),
                )
            })
            .collect();
        let r: Vec<cma_iovec> = (0..parts)
            .map(|i| iov(base + (off + i * step).min(len - 1), step))
            .collect();
        let asked = l
            .iter()
            .map(|v| v.len)
            .sum::<u64>()
            .min(r.iter().map(|v| v.len).sum());
        let res = copy(&dev, op, Target::Pid(pid), &l, &r);
        acceptable(&res, asked)?;
        counts.calls.fetch_add(1, Ordering::Relaxed);
        if matches!(res, Ok(t) if t.bytes > 0) {
            counts.moved.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Copier threads running against one target until [`Copiers::finish`].
struct Copiers {
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    handles: Vec<std::thread::JoinHandle<Result<(), String>>>,
}

impl Copiers {
    /// Starts `threads` copiers against `pid`'s region `[base, base + len)`.
    fn start(pid: i32, base: usize, len: usize, threads: usize, seed: u64) -> Copiers {
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new(Counts::default());
        let handles = (0..threads)
            .map(|i| {
                let (stop, counts) = (stop.clone(), counts.clone());
                std::thread::spawn(move || copier(pid, base, len, seed + i as u64, &stop, &counts))
            })
            .collect();
        Copiers {
            stop,
            counts,
            handles,
        }
    }

    /// Copies made so far.
    fn calls(&self) -> u64 {
        self.counts.calls.load(Ordering::Relaxed)
    }

    /// Whether every copier has stopped (on its own, after an error).
    fn all_stopped(&self) -> bool {
        self.handles.iter().all(|h| h.is_finished())
    }

    /// Stops the copiers; returns (copies, copies that moved data), or the
    /// first copier's failure.
    fn finish(self) -> Result<(u64, u64), Failure> {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.join()
                .map_err(|_| Failure::Fail("copier panicked".into()))?
                .map_err(Failure::Fail)?;
        }
        Ok((
            self.counts.calls.load(Ordering::Relaxed),
            self.counts.moved.load(Ordering::Relaxed),
        ))
    }
}

/// Runs `procs` copier processes and `threads` copier threads against `pid`
/// for the stress time; returns (copies, copies that moved data).
fn hammer(
    pid: i32,
    base: usize,
    len: usize,
    procs: usize,
    threads: usize,
    seed: u64,
) -> Result<(u64, u64), Failure> {
    // Processes first, while this one is still single-threaded.
    let mut peers = Vec::new();
    for p in 0..procs {
        peers.push(Peer::spawn(move |mut ch| {
            let copiers = Copiers::start(pid, base, len, 1, seed + 100 + p as u64);
            std::thread::sleep(stress_time());
            let (calls, moved) = copiers.finish()?;
            ch.send(&[calls, moved])?;
            ch.wait()
        })?);
    }
    let copiers = Copiers::start(pid, base, len, threads, seed);
    std::thread::sleep(stress_time());
    let (mut calls, mut moved) = copiers.finish()?;
    for mut p in peers {
        let v = p
            .recv()
            .map_err(|e| Failure::Fail(format!("copier process failed: {e}")))?;
        calls += v[0];
        moved += v[1];
    }
    Ok((calls, moved))
}

const REGION: usize = 4 << 20;

fn race_copy_vs_mapping_changes() -> TestResult {
    // The target keeps changing what backs a fixed 4 MiB region.
    let mut target = Peer::spawn(|mut ch| {
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let region = Mapping::new(REGION + (2 << 20), rw)?;
        let base = (region.addr() + (2 << 20) - 1) & !((2 << 20) - 1);
        ch.send(&[base as u64])?;
        let mut rng = Rng::new(99);
        let mut ops = 0u64;
        loop {
            let off = rng.below(REGION / page_size()) * page_size();
            let n = (1 + rng.below(64)) * page_size();
            let n = n.min(REGION - off);
            let at = (base + off) as *mut libc::c_void;
            // SAFETY: every operation stays inside `region`, which this
            // process owns and nothing in Rust references.
            unsafe {
                match rng.below(9) {
                    0 => {
                        libc::munmap(at, n);
                    }
                    1 => {
                        libc::mmap(
                            at,
                            n,
                            rw,
                            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                            -1,
                            0,
                        );
                    }
                    2 => {
                        libc::mprotect(at, n, [libc::PROT_NONE, libc::PROT_READ, rw][rng.below(3)]);
                    }
                    3 => {
                        libc::madvise(at, n, libc::MADV_DONTNEED);
                    }
                    4 => {
                        // Huge pages: ask for them and fault the whole region in.
                        libc::mmap(
                            base as *mut _,
                            REGION,
                            rw,
                            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                            -1,
                            0,
                        );
                        libc::madvise(base as *mut _, REGION, libc::MADV_HUGEPAGE);
                        std::ptr::write_bytes(base as *mut u8, 0x5a, REGION);
                    }
                    5 => {
                        // Split a huge page by changing part of it.
                        libc::mprotect((base + 4096) as *mut _, 4096, libc::PROT_READ);
                        libc::madvise(base as *mut _, REGION, 25 /* MADV_COLLAPSE */);
                    }
                    6 => {
                        // Copy-on-write: a child that touches and exits.
                        let pid = libc::fork();
                        if pid == 0 {
                            libc::_exit(0);
                        }
                        if pid > 0 {
                            libc::waitpid(pid, std::ptr::null_mut(), 0);
                        }
                    }
                    7 => {
                        // Move part of the region away and back.
                        let tmp = libc::mremap(at, n, n, libc::MREMAP_MAYMOVE);
                        if tmp != libc::MAP_FAILED {
                            libc::mremap(tmp, n, n, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, at);
                        }
                    }
                    _ => {
                        // Touch some pages (faults them in, for writes too).
                        let p = rng.below(REGION / page_size()) * page_size();
                        let probe = (base + p) as *mut u8;
                        let mut vec = 0u8;
                        if libc::mincore(probe as *mut _, 4096, &mut vec) == 0 {
                            let _ = std::ptr::read_volatile(probe as *const u8);
                        }
                    }
                }
            }
            ops += 1;
            // Mostly put the range back (mapped, writable, populated), so
            // that copies race with changes rather than with a dead region.
            if rng.below(4) != 0 {
                std::thread::yield_now();
                // SAFETY: as above: the range lies inside `region`.
                unsafe {
                    libc::mmap(
                        at,
                        n,
                        rw,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                        -1,
                        0,
                    );
                    std::ptr::write_bytes(at as *mut u8, 0x3c, n);
                }
            }
            if ops % 64 == 0 {
                std::thread::yield_now();
            }
        }
    })?;
    let base = target.recv()?[0] as usize;
    let (calls, moved) = hammer(target.pid, base, REGION, 2, 2, 1)?;
    println!("# {calls} copies (2 processes, 2 threads) against a changing target, {moved} of them moved data");
    check!(moved > 0, "no copy moved data");
    Ok(())
}

fn race_copy_vs_target_exit() -> TestResult {
    let deadline = Instant::now() + stress_time();
    let mut rounds = 0;
    let mut rng = Rng::new(7);
    while Instant::now() < deadline {
        let (target, base) = remote_buffer(REGION, 1, 0)?;
        let copiers = Copiers::start(target.pid, base, REGION, 2, 0);
        std::thread::sleep(Duration::from_millis(5 + rng.below(50) as u64));
        drop(target); // SIGKILL and reap while the copiers run
        std::thread::sleep(Duration::from_millis(20));
        copiers.finish()?;
        rounds += 1;
    }
    println!("# {rounds} targets killed under copiers");
    Ok(())
}

fn race_copy_vs_consent_revoke() -> TestResult {
    if !util::is_root() {
        return Err(Failure::Skip(
            "needs root to create processes of other uids".into(),
        ));
    }
    // A target (nobody) that grants and revokes in a loop; an unprivileged
    // copier (nobody) may only ever succeed or get EPERM.
    let mut target = Peer::spawn(|mut ch| {
        util::become_user(util::NOBODY)?;
        let mut m = Mapping::new(REGION, libc::PROT_READ | libc::PROT_WRITE)?;
        m.bytes_mut().fill(2);
        let dev = Device::open()?;
        ch.send(&[m.addr() as u64])?;
        loop {
            dev.grant(None)?;
            std::thread::yield_now();
            dev.revoke()?;
        }
    })?;
    let base = target.recv()?[0] as usize;
    let pid = target.pid;
    let mut copier_peer = Peer::spawn(move |mut ch| {
        util::become_user(util::NOBODY)?;
        let dev = Device::open()?;
        let local = Mapping::new(REGION, libc::PROT_READ | libc::PROT_WRITE)?;
        let deadline = Instant::now() + stress_time();
        let (mut ok, mut denied) = (0u64, 0u64);
        while Instant::now() < deadline {
            match copy(
                &dev,
                Op::Read,
                Target::Pid(pid),
                &[iov(local.addr(), REGION)],
                &[iov(base, REGION)],
            ) {
                Ok(t) if t.bytes == REGION as u64 => ok += 1,
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => denied += 1,
                other => return Err(Failure::Fail(format!("unexpected {other:?}"))),
            }
        }
        ch.send(&[ok, denied])?;
        ch.wait()
    })?;
    let v = copier_peer.recv()?;
    println!(
        "# {} copies allowed, {} denied while consent flipped",
        v[0], v[1]
    );
    check!(v[0] + v[1] > 0, "no copy ran");
    Ok(())
}

fn race_copy_vs_fd_close() -> TestResult {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let (target, base) = remote_buffer(REGION, 3, 0)?;
    let pid = target.pid;
    let deadline = Instant::now() + stress_time();
    let (mut ok, mut closed) = (0u64, 0u64);
    let local = Mapping::new(REGION, libc::PROT_READ | libc::PROT_WRITE)?;
    let laddr = local.addr();
    while Instant::now() < deadline {
        let fd = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(cma::DEVICE_PATH)?
            .into_raw_fd();
        // One thread copies through `fd` while this one closes it.
        let copier = std::thread::spawn(move || {
            let l = [iov(laddr, REGION)];
            let r = [iov(base, REGION)];
            let mut args = cma::sys::cma_copy::describe(&l, &r, pid, 0)?;
            // SAFETY: raw ioctl on a number that may be closed meanwhile;
            // the iovecs describe our own scratch buffer and the target's.
            let ret = unsafe { libc::ioctl(fd, cma::sys::CMA_IOC_READ as _, &mut args) };
            if ret == 0 {
                Ok(args.bytes)
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
        std::thread::sleep(Duration::from_micros(200));
        // SAFETY: we own `fd`; closing it under the copier is the point.
        drop(unsafe { std::fs::File::from_raw_fd(fd) });
        match copier
            .join()
            .map_err(|_| Failure::Fail("copier panicked".into()))?
        {
            Ok(n) if n == REGION as u64 => ok += 1,
            Err(e) if e.raw_os_error() == Some(libc::EBADF) => closed += 1,
            other => return Err(Failure::Fail(format!("unexpected {other:?}"))),
        }
    }
    drop(target);
    println!("# {ok} copies finished, {closed} saw the descriptor closed first");
    Ok(())
}

fn race_unload_during_copy_refused() -> TestResult {
    if !util::is_root() {
        return Err(Failure::Skip("needs root to try unloading".into()));
    }
    let (target, base) = remote_buffer(REGION, 4, 0)?;
    let copiers = Copiers::start(target.pid, base, REGION, 1, 5);
    // Unload attempts start once copies are running (each copier holds
    // /dev/cma open, and so a module reference).
    while copiers.calls() == 0 && !copiers.all_stopped() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let deadline = Instant::now() + stress_time().min(Duration::from_secs(2));
    let mut refused = 0;
    while Instant::now() < deadline {
        match util::delete_module("cma", libc::O_NONBLOCK) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EBUSY)) => refused += 1,
            Err(e) => return Err(Failure::Fail(format!("delete_module: {e}"))),
            Ok(()) => {
                let _ = copiers.finish();
                if let Ok(ko) = std::env::var("CMA_KO") {
                    let _ = util::load_module(&ko);
                }
                return Err(Failure::Fail(
                    "the module unloaded while copies were running".into(),
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let (calls, _) = copiers.finish()?;
    println!("# {refused} unload attempts refused during {calls} copies");
    check!(refused > 0, "no unload attempt was made");
    Ok(())
}

/// Waits up to `secs` seconds for inotify fd `ino` to report a close.
fn wait_for_close(ino: i32, secs: u64) -> std::io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: ino,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd.
    let n = unsafe { libc::poll(&mut pfd, 1, (secs * 1000) as i32) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n == 1)
}

fn accounting_target_memory_freed() -> TestResult {
    // Each target maps a file and keeps no descriptor of it, so only its
    // address space holds the file; the address space is torn down (its
    // memory freed) exactly when the last user of the mm goes, and the file
    // is then closed for the last time, which inotify reports. If cma kept
    // the mm alive (a leaked mm_users reference, from a copy or a peer fd),
    // the close would never come. It is copied from every way (success,
    // partial, failure) first, and a peer fd on each target stays open until
    // the end. (Pinned pages are the runner's pins_balanced check.)
    let len = 64 << 20;
    let dev = Device::open()?;
    let local = Mapping::new(4 << 20, libc::PROT_READ | libc::PROT_WRITE)?;
    let mut peers = Vec::new();
    for round in 0..3 {
        let path = std::env::temp_dir().join(format!("cma-mm-{}-{round}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        file.set_len(len as u64)?;
        // SAFETY: plain system calls; the path is NUL-terminated.
        let ino = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        check!(
            ino >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `ino` is ours, closed below.
        let ino_fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(ino) };
        let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a live inotify fd and a NUL-terminated path.
        let wd = unsafe {
            libc::inotify_add_watch(
                ino,
                cpath.as_ptr(),
                libc::IN_CLOSE_WRITE | libc::IN_CLOSE_NOWRITE,
            )
        };
        check!(
            wd >= 0,
            "inotify_add_watch: {}",
            std::io::Error::last_os_error()
        );
        let fd = file.as_raw_fd();
        let mut target = Peer::spawn(move |mut ch| {
            // SAFETY: maps the inherited file, then closes the descriptor:
            // from here on only the mapping holds the file.
            let addr = unsafe {
                let a = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                );
                libc::close(fd);
                a
            };
            if addr == libc::MAP_FAILED {
                return Err(Failure::Fail("mmap of the target file failed".into()));
            }
            // SAFETY: the mapping just made, `len` bytes.
            unsafe { std::ptr::write_bytes(addr as *mut u8, 5, len) };
            // SAFETY: its last page, for the partial copy.
            unsafe { libc::munmap((addr as usize + len - page_size()) as *mut _, page_size()) };
            ch.send(&[addr as u64])?;
            ch.wait()
        })?;
        drop(file);
        let _ = std::fs::remove_file(&path);
        let base = target.recv()?[0] as usize;
        // The parent's close of its descriptor came before the target's
        // (or after: either way not the last one); forget those events.
        let mut events = [0u8; 4096];
        while wait_for_close(ino, 0)? {
            // SAFETY: reads into a live buffer; poll said it will not block.
            unsafe { libc::read(ino, events.as_mut_ptr().cast(), events.len()) };
        }
        for op in [Op::Read, Op::Write] {
            let t = Target::Pid(target.pid);
            check_eq!(
                copy(
                    &dev,
                    op,
                    t,
                    &[iov(local.addr(), 4 << 20)],
                    &[iov(base, 4 << 20)]
                )?
                .bytes,
                4 << 20
            );
            // Partial: runs into the hole at the end.
            let tail = base + len - 2 * page_size();
            check_eq!(
                copy(
                    &dev,
                    op,
                    t,
                    &[iov(local.addr(), 2 * page_size())],
                    &[iov(tail, 2 * page_size())]
                )?
                .bytes,
                page_size() as u64
            );
            check!(
                copy(&dev, op, t, &[iov(local.addr(), 8)], &[iov(0, 8)]).is_err(),
                "copy from NULL worked"
            );
        }
        let peer = dev.attach(Target::Pid(target.pid))?;
        // SAFETY: the local range is our own mapping.
        let n = unsafe { peer.copy1_raw(Op::Read, local.addr() as u64, base as u64, 1 << 20) }?;
        check_eq!(n, 1 << 20);
        peers.push(peer);
        // Kill and reap the target; its address space must go with it.
        drop(target);
        check!(
            wait_for_close(ino, 30)?,
            "round {round}: the target's address space outlived it (its file was never closed)"
        );
        drop(ino_fd);
    }
    println!(
        "# three targets' address spaces torn down at exit, {} peer fds still open",
        peers.len()
    );
    Ok(())
}
