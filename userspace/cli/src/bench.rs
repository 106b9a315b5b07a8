//! `cma bench`: how fast `/dev/cma` moves a message, against the anchors, in
//! one run: `process_vm_readv`/`writev` (the upstream mechanism), the
//! shared-memory double copy it replaces (two processes, pipelined through a
//! two-slot ring of 64 KiB chunks, as MPI shared-memory transports do), and
//! `memcpy` in one process (the limit of any single copy).
//!
//! Every process is a real one: buffers are mapped before `fork()`, so each
//! process has its own private copy at the same address, touched before any
//! timing. Each measurement is the median over repeats of a timed loop, the
//! mechanisms run in a shuffled order in every repeat, and a warm-up repeat
//! comes first.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cma::sys::cma_iovec;
use cma::{Device, Op, Peer, Target};

/// Command-line options of `cma bench`.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Message sizes in bytes (default: 64 B to 64 MiB in powers of 4).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Measured repeats per case (after one warm-up).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// How many times each multi-process cell (readers, ring) is set up
    /// afresh, in a new random order each time; its samples are pooled.
    #[arg(long, default_value_t = 3)]
    setups: usize,
    /// Minimum duration of one timed loop, in milliseconds.
    #[arg(long, default_value_t = 30)]
    min_ms: u64,
    /// Fewer sizes and repeats: a smoke run.
    #[arg(long)]
    quick: bool,
    /// Where to write one JSON record per measurement.
    #[arg(long, default_value = "out/bench.json")]
    json: PathBuf,
    /// Where to write the bandwidth-against-size plot (SVG).
    #[arg(long, default_value = "out/bench.svg")]
    svg: PathBuf,
    /// Seed of the order in which mechanisms run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// What kind of pages back the buffers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pages {
    Small,
    Thp,
}

impl Pages {
    fn name(self) -> &'static str {
        match self {
            Pages::Small => "4k",
            Pages::Thp => "thp",
        }
    }
}

/// A way of moving a message from one buffer to another.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mech {
    /// `/dev/cma` against another process, through a peer fd (attached
    /// once per target, as an MPI library would).
    Cma,
    /// `/dev/cma` against another process named by pid on every copy.
    CmaPid,
    /// `/dev/cma` against the caller's own address space.
    CmaDirect,
    /// `process_vm_readv` / `process_vm_writev`.
    Pvm,
    /// Sender copies into shared memory, receiver copies out.
    Double,
    /// `memcpy` within one process.
    Memcpy,
}

impl Mech {
    fn name(self) -> &'static str {
        match self {
            Mech::Cma => "cma",
            Mech::CmaPid => "cma-pid",
            Mech::CmaDirect => "cma-direct",
            Mech::Pvm => "pvm",
            Mech::Double => "double-copy",
            Mech::Memcpy => "memcpy",
        }
    }
}

/// One measurement.
#[derive(Clone, Debug)]
struct Record {
    mech: Mech,
    op: &'static str,
    size: usize,
    pages: Pages,
    procs: usize,
    pattern: &'static str,
    /// MB/s (10^6 bytes per second): median, min, max over the repeats.
    median: f64,
    min: f64,
    max: f64,
    reps: usize,
}

fn op_name(op: Op) -> &'static str {
    match op {
        Op::Read => "read",
        Op::Write => "write",
    }
}

// ---------------------------------------------------------------------------
// Memory and processes.

const HUGE: usize = 2 << 20;

/// An anonymous mapping (private, or shared between parent and children).
struct Buf {
    map: *mut libc::c_void,
    map_len: usize,
    /// Start of the usable region (2 MiB aligned for THP).
    addr: usize,
    len: usize,
}

impl Buf {
    fn new(len: usize, pages: Pages, shared: bool) -> io::Result<Buf> {
        let len = len.max(1);
        let map_len = if pages == Pages::Thp { len + HUGE } else { len };
        let flags = libc::MAP_ANONYMOUS
            | if shared {
                libc::MAP_SHARED
            } else {
                libc::MAP_PRIVATE
            };
        // SAFETY: a fresh mapping at an address the kernel chooses.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let addr = match pages {
            Pages::Thp => (map as usize + HUGE - 1) & !(HUGE - 1),
            Pages::Small => map as usize,
        };
        let advice = if pages == Pages::Thp {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        // SAFETY: the range lies inside the mapping; advice only.
        unsafe { libc::madvise(addr as *mut _, len, advice) };
        Ok(Buf {
            map,
            map_len,
            addr,
            len,
        })
    }

    /// Writes every byte (faults the pages in, privately after a fork).
    fn touch(&self, seed: u8) {
        // SAFETY: the region is mapped and writable; no Rust reference
        // aliases it while this runs.
        let s = unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) };
        for (i, b) in s.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
        }
    }

    fn iov(&self, len: usize) -> cma_iovec {
        cma_iovec {
            base: self.addr as u64,
            len: len as u64,
        }
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: the mapping is owned by this value.
        unsafe { libc::munmap(self.map, self.map_len) };
    }
}

/// Control block shared by the bench and its children (MAP_SHARED).
#[repr(C)]
struct Ctl {
    /// Bumped by the parent to start a round; children wait on it (futex).
    go: AtomicU32,
    /// Set to ask children to exit.
    stop: AtomicU32,
    /// Children that are ready, and that finished the current round.
    ready: AtomicU32,
    done: AtomicU32,
    /// What a round does.
    iters: AtomicU64,
    size: AtomicU64,
    mech: AtomicU32,
    /// Double-copy ring: slot states (0 empty, 1 full).
    full: [AtomicU32; 2],
    /// Pids of the children, by index.
    pids: [AtomicI32; 64],
}

fn futex_wait(word: &AtomicU32, val: u32) {
    // SAFETY: `word` is a live, aligned u32 in (possibly shared) memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            val,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}

/// Waits until `f` holds: spins briefly, then yields the CPU.
fn spin_until(f: impl Fn() -> bool) {
    let mut n = 0u32;
    while !f() {
        n += 1;
        if n < 200 {
            std::hint::spin_loop();
        } else {
            // SAFETY: plain syscall.
            unsafe { libc::sched_yield() };
        }
    }
}

/// The shared control block and the children that use it.
struct Team {
    ctl_buf: Buf,
    children: Vec<libc::pid_t>,
}

impl Team {
    fn new() -> io::Result<Team> {
        let ctl_buf = Buf::new(std::mem::size_of::<Ctl>(), Pages::Small, true)?;
        Ok(Team {
            ctl_buf,
            children: Vec::new(),
        })
    }

    fn ctl(&self) -> &Ctl {
        // SAFETY: the shared mapping is zeroed (a valid `Ctl`: all atomics)
        // and lives as long as `self`.
        unsafe { &*(self.ctl_buf.addr as *const Ctl) }
    }

    /// Forks a child that runs `body(index, ctl)` and exits.
    fn spawn(&mut self, body: impl FnOnce(usize, &Ctl)) -> io::Result<libc::pid_t> {
        let index = self.children.len();
        // SAFETY: the bench is single-threaded when it forks.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            body(index, self.ctl());
            // SAFETY: ends the child without running the parent's cleanup.
            unsafe { libc::_exit(0) };
        }
        self.ctl().pids[index].store(pid, Ordering::Release);
        self.children.push(pid);
        Ok(pid)
    }

    /// Waits until `n` children said they are ready.
    fn wait_ready(&self, n: u32) {
        spin_until(|| self.ctl().ready.load(Ordering::Acquire) >= n);
    }

    /// Starts one round for the children and returns once `n` reported done;
    /// returns the wall time from start to the last one done.
    fn round(&self, n: u32) -> Duration {
        let ctl = self.ctl();
        ctl.done.store(0, Ordering::Release);
        let t0 = Instant::now();
        ctl.go.fetch_add(1, Ordering::AcqRel);
        futex_wake(&ctl.go);
        spin_until(|| ctl.done.load(Ordering::Acquire) >= n);
        t0.elapsed()
    }
}

impl Drop for Team {
    fn drop(&mut self) {
        let ctl = self.ctl();
        ctl.stop.store(1, Ordering::Release);
        ctl.go.fetch_add(1, Ordering::AcqRel);
        futex_wake(&ctl.go);
        for &pid in &self.children {
            let mut status = 0;
            // SAFETY: reaps our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        }
    }
}

/// In a child: waits for the next round; `None` when asked to stop.
fn next_round(ctl: &Ctl, seen: &mut u32) -> Option<()> {
    loop {
        let go = ctl.go.load(Ordering::Acquire);
        if go != *seen {
            *seen = go;
            break;
        }
        futex_wait(&ctl.go, go);
    }
    (ctl.stop.load(Ordering::Acquire) == 0).then_some(())
}

/// A child that only holds its buffers (touched) until the team stops.
fn idle_child(ctl: &Ctl, bufs: &[&Buf]) {
    for (i, b) in bufs.iter().enumerate() {
        b.touch(i as u8 + 1);
    }
    if let Ok(dev) = Device::open() {
        // Consent for unprivileged runs; root needs none. Held until exit.
        let _ = dev.grant(None);
        std::mem::forget(dev);
    }
    ctl.ready.fetch_add(1, Ordering::AcqRel);
    let mut seen = ctl.go.load(Ordering::Acquire);
    while next_round(ctl, &mut seen).is_some() {}
}

// ---------------------------------------------------------------------------
// The copies.

/// The target of a copy: its pid, and a peer fd on it for the mechanisms
/// that use one.
#[derive(Clone, Copy)]
struct To<'a> {
    pid: i32,
    peer: &'a Peer,
}

/// Copies between `local` and `remote` (in `to`) with `mech`.
fn one_copy(
    dev: &Device,
    mech: Mech,
    op: Op,
    to: To<'_>,
    local: &[cma_iovec],
    remote: &[cma_iovec],
) -> io::Result<()> {
    let want = local[0].len;
    // SAFETY (all cma arms): the iovecs describe the bench's own buffers
    // (and the target's), which no Rust reference aliases. One range each
    // side goes by the single-range ioctl, as the library's
    // process_vm_readv/writev do.
    let moved = match (mech, local, remote) {
        (Mech::Cma | Mech::CmaDirect, [l], [r]) => unsafe {
            to.peer.copy1_raw(op, l.base, r.base, l.len)?
        },
        (Mech::Cma | Mech::CmaDirect, _, _) => unsafe {
            to.peer.copy_raw(op, local, remote)?.bytes
        },
        (Mech::CmaPid, [l], [r]) => unsafe {
            dev.copy1_raw(op, Target::Pid(to.pid), l.base, r.base, l.len)?
        },
        (Mech::CmaPid, _, _) => unsafe {
            dev.copy_raw(op, Target::Pid(to.pid), local, remote)?.bytes
        },
        (Mech::Pvm, _, _) => {
            let pid = to.pid;
            let (l, r) = (
                local.as_ptr() as *const libc::iovec,
                remote.as_ptr() as *const libc::iovec,
            );
            // SAFETY: `cma_iovec` has `iovec`'s layout; same buffers as above.
            let n = unsafe {
                match op {
                    Op::Read => libc::process_vm_readv(pid, l, 1, r, 1, 0),
                    Op::Write => libc::process_vm_writev(pid, l, 1, r, 1, 0),
                }
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            n as u64
        }
        (Mech::Double | Mech::Memcpy, _, _) => unreachable!("not a syscall mechanism"),
    };
    if moved != want {
        return Err(io::Error::other(format!(
            "{} moved {moved} of {want} bytes",
            mech.name()
        )));
    }
    Ok(())
}

/// `memcpy` of `len` bytes between two of the bench's buffers.
fn memcpy(dst: &Buf, src: &Buf, len: usize) {
    // SAFETY: both buffers are mapped, at least `len` long, and distinct.
    unsafe { std::ptr::copy_nonoverlapping(src.addr as *const u8, dst.addr as *mut u8, len) };
}

/// Size of one slot of the double-copy ring.
const SLOT: usize = 64 << 10;

/// The double-copy sender: on each round, pushes `iters` messages of `size`
/// bytes from its private `src` through the shared two-slot `ring`.
fn double_sender(ctl: &Ctl, src: &Buf, ring: &Buf) {
    src.touch(7);
    ctl.ready.fetch_add(1, Ordering::AcqRel);
    let mut seen = ctl.go.load(Ordering::Acquire);
    while next_round(ctl, &mut seen).is_some() {
        let (iters, size) = (
            ctl.iters.load(Ordering::Acquire),
            ctl.size.load(Ordering::Acquire) as usize,
        );
        let mut slot = 0;
        for _ in 0..iters {
            let mut off = 0;
            while off < size {
                let n = SLOT.min(size - off);
                spin_until(|| ctl.full[slot].load(Ordering::Acquire) == 0);
                // SAFETY: the slot is ours until we mark it full; both
                // regions are mapped and `n` long.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        (src.addr + off) as *const u8,
                        (ring.addr + slot * SLOT) as *mut u8,
                        n,
                    )
                };
                ctl.full[slot].store(1, Ordering::Release);
                slot ^= 1;
                off += n;
            }
        }
    }
}

/// The double-copy receiver (the bench itself): pulls `iters` messages.
fn double_receive(ctl: &Ctl, dst: &Buf, ring: &Buf, iters: u64, size: usize) {
    let mut slot = 0;
    for _ in 0..iters {
        let mut off = 0;
        while off < size {
            let n = SLOT.min(size - off);
            spin_until(|| ctl.full[slot].load(Ordering::Acquire) == 1);
            // SAFETY: the slot is ours until we mark it empty.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (ring.addr + slot * SLOT) as *const u8,
                    (dst.addr + off) as *mut u8,
                    n,
                )
            };
            ctl.full[slot].store(0, Ordering::Release);
            slot ^= 1;
            off += n;
        }
    }
}

// ---------------------------------------------------------------------------
// Measurement.

/// Times `f(iters)` and returns seconds per iteration.
fn time_per_iter(iters: u64, f: &mut dyn FnMut(u64) -> io::Result<()>) -> io::Result<f64> {
    let t0 = Instant::now();
    f(iters)?;
    Ok(t0.elapsed().as_secs_f64() / iters as f64)
}

/// Iterations so that one timed loop lasts at least `min`.
fn calibrate(min: Duration, f: &mut dyn FnMut(u64) -> io::Result<()>) -> io::Result<u64> {
    let mut iters = 1u64;
    loop {
        let t = time_per_iter(iters, f)? * iters as f64;
        if t >= min.as_secs_f64() || iters >= 1 << 22 {
            return Ok(iters);
        }
        let scale = (min.as_secs_f64() / t.max(1e-9)).ceil() as u64;
        iters = (iters * scale.clamp(2, 1000)).min(1 << 22);
    }
}

fn summarise(samples: &mut [f64]) -> (f64, f64, f64) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = samples.len();
    let median = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    };
    (median, samples[0], samples[n - 1])
}

/// A deterministic shuffle (xorshift), so that the order is reproducible.
fn shuffle<T>(v: &mut [T], state: &mut u64) {
    for i in (1..v.len()).rev() {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        v.swap(i, (*state % (i as u64 + 1)) as usize);
    }
}

/// A progress bar on stderr.
struct Progress {
    done: usize,
    total: usize,
    start: Instant,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.done += 1;
        let width = 30;
        let filled = (width * self.done / self.total.max(1)).min(width);
        eprint!(
            "\r[{}{}] {:>3}/{} {:>5.0}s {:<40}",
            "#".repeat(filled),
            " ".repeat(width - filled),
            self.done,
            self.total,
            self.start.elapsed().as_secs_f64(),
            what
        );
        let _ = io::stderr().flush();
    }

    fn finish(&self) {
        eprintln!();
    }
}

/// One-to-one: every mechanism moves one message of `size` bytes, `op` way.
fn one_to_one(
    dev: &Device,
    o: &Options,
    size: usize,
    pages: Pages,
    rng: &mut u64,
) -> io::Result<Vec<Record>> {
    let target_buf = Buf::new(size, pages, false)?; // the target's message
    let local_src = Buf::new(size, pages, false)?; // the bench's source (write, memcpy)
    let local_dst = Buf::new(size, pages, false)?; // the bench's destination
    let ring = Buf::new(2 * SLOT, Pages::Small, true)?;
    let mut team = Team::new()?;
    let target = team.spawn(|_, ctl| idle_child(ctl, &[&target_buf]))?;
    team.spawn(|_, ctl| double_sender(ctl, &local_src, &ring))?;
    team.wait_ready(2);
    local_src.touch(3);
    local_dst.touch(4);
    ring.touch(0);
    team.ctl().full[0].store(0, Ordering::Release);
    team.ctl().full[1].store(0, Ordering::Release);
    let me = std::process::id() as i32;
    let remote = To {
        pid: target,
        peer: &dev.attach(Target::Pid(target))?,
    };
    let own = To {
        pid: me,
        peer: &dev.attach(Target::Pid(me))?,
    };

    let cases: Vec<(Mech, Op)> = vec![
        (Mech::Cma, Op::Read),
        (Mech::Cma, Op::Write),
        (Mech::CmaPid, Op::Read),
        (Mech::Pvm, Op::Read),
        (Mech::Pvm, Op::Write),
        (Mech::CmaDirect, Op::Read),
        (Mech::Double, Op::Read),
        (Mech::Memcpy, Op::Read),
    ];
    let min = Duration::from_millis(o.min_ms);
    let run = |mech: Mech, op: Op, iters: u64| -> io::Result<()> {
        let ctl = team.ctl();
        match mech {
            Mech::Cma | Mech::CmaPid | Mech::Pvm => {
                let (l, r) = match op {
                    Op::Read => (local_dst.iov(size), target_buf.iov(size)),
                    Op::Write => (local_src.iov(size), target_buf.iov(size)),
                };
                for _ in 0..iters {
                    one_copy(dev, mech, op, remote, &[l], &[r])?;
                }
            }
            Mech::CmaDirect => {
                for _ in 0..iters {
                    one_copy(
                        dev,
                        mech,
                        op,
                        own,
                        &[local_dst.iov(size)],
                        &[local_src.iov(size)],
                    )?;
                }
            }
            Mech::Double => {
                ctl.iters.store(iters, Ordering::Release);
                ctl.size.store(size as u64, Ordering::Release);
                ctl.go.fetch_add(1, Ordering::AcqRel);
                futex_wake(&ctl.go);
                double_receive(ctl, &local_dst, &ring, iters, size);
            }
            Mech::Memcpy => {
                for _ in 0..iters {
                    memcpy(&local_dst, &local_src, size);
                    std::hint::black_box(&local_dst.addr);
                }
            }
        }
        Ok(())
    };

    let mut iters = Vec::new();
    for &(mech, op) in &cases {
        iters.push(calibrate(min, &mut |n| run(mech, op, n))?);
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut order: Vec<usize> = (0..cases.len()).collect();
    for rep in 0..=o.reps {
        shuffle(&mut order, rng);
        for &i in &order {
            let (mech, op) = cases[i];
            let t = time_per_iter(iters[i], &mut |n| run(mech, op, n))?;
            if rep > 0 {
                samples[i].push(size as f64 / t / 1e6);
            }
        }
    }
    Ok(cases
        .iter()
        .zip(samples.iter_mut())
        .map(|(&(mech, op), s)| {
            let (median, min, max) = summarise(s);
            Record {
                mech,
                op: op_name(op),
                size,
                pages,
                procs: 1,
                pattern: "one-to-one",
                median,
                min,
                max,
                reps: o.reps,
            }
        })
        .collect())
}

/// N processes copying at once: `readers` all read one target's buffer;
/// `ring` each reads the previous one's. Returns the aggregate bandwidth of
/// each timed round (MB/s).
fn many(
    o: &Options,
    pattern: &'static str,
    mech: Mech,
    n: usize,
    size: usize,
    pages: Pages,
) -> io::Result<Vec<f64>> {
    let src = Buf::new(size, pages, false)?;
    let dst = Buf::new(size, pages, false)?;
    let mut team = Team::new()?;
    let mech_code = mech as u32;
    let ring = pattern == "ring";
    if !ring {
        team.spawn(|_, ctl| idle_child(ctl, &[&src]))?;
    }
    let first_worker = team.children.len();
    for _ in 0..n {
        team.spawn(|index, ctl| {
            src.touch(index as u8);
            dst.touch(0);
            let dev = Device::open().expect("/dev/cma");
            let _ = dev.grant(None);
            ctl.ready.fetch_add(1, Ordering::AcqRel);
            let mut seen = ctl.go.load(Ordering::Acquire);
            // Attached at the first round (every process exists by then).
            let mut attached: Option<(i32, Peer)> = None;
            while next_round(ctl, &mut seen).is_some() {
                let peer = if ring {
                    let w = index - first_worker;
                    ctl.pids[first_worker + (w + n - 1) % n].load(Ordering::Acquire)
                } else {
                    ctl.pids[0].load(Ordering::Acquire)
                };
                let mech = if ctl.mech.load(Ordering::Acquire) == Mech::Cma as u32 {
                    Mech::Cma
                } else {
                    Mech::Pvm
                };
                if !attached.as_ref().is_some_and(|(pid, _)| *pid == peer) {
                    let fd = dev.attach(Target::Pid(peer)).expect("attach");
                    attached = Some((peer, fd));
                }
                let to = To {
                    pid: peer,
                    peer: &attached.as_ref().expect("attached").1,
                };
                for _ in 0..ctl.iters.load(Ordering::Acquire) {
                    one_copy(&dev, mech, Op::Read, to, &[dst.iov(size)], &[src.iov(size)])
                        .expect("copy");
                }
                ctl.done.fetch_add(1, Ordering::AcqRel);
            }
        })?;
    }
    team.wait_ready(team.children.len() as u32);
    let ctl = team.ctl();
    ctl.mech.store(mech_code, Ordering::Release);
    ctl.size.store(size as u64, Ordering::Release);
    // Calibrate on one round, then measure.
    let mut iters = 1u64;
    loop {
        ctl.iters.store(iters, Ordering::Release);
        let t = team.round(n as u32);
        if t >= Duration::from_millis(o.min_ms) || iters >= 1 << 20 {
            break;
        }
        iters *=
            ((Duration::from_millis(o.min_ms).as_secs_f64() / t.as_secs_f64().max(1e-9)).ceil()
                as u64)
                .clamp(2, 1000);
    }
    let mut samples = Vec::new();
    for _ in 0..o.reps {
        let t = team.round(n as u32);
        samples.push((n as u64 * iters * size as u64) as f64 / t.as_secs_f64() / 1e6);
    }
    Ok(samples)
}

/// Every multi-process cell of one size and page kind, each set up
/// `o.setups` times in a fresh random order (so that a slow phase of the
/// host does not land on one cell), with the samples of all setups pooled.
fn many_cells(
    o: &Options,
    size: usize,
    pages: Pages,
    cpus: usize,
    rng: &mut u64,
    progress: &mut Progress,
) -> io::Result<Vec<Record>> {
    let mut cells: Vec<(&'static str, Mech, usize)> = Vec::new();
    for mech in [Mech::Cma, Mech::Pvm] {
        cells.extend((1..=cpus).map(|n| ("readers", mech, n)));
        cells.extend((2..=cpus.max(2)).map(|n| ("ring", mech, n)));
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cells.len()];
    let mut order: Vec<usize> = (0..cells.len()).collect();
    for _ in 0..o.setups.max(1) {
        shuffle(&mut order, rng);
        for &i in &order {
            let (pattern, mech, n) = cells[i];
            progress.step(&format!(
                "{pattern} {} x{n} {} {}",
                mech.name(),
                human(size),
                pages.name()
            ));
            samples[i].extend(many(o, pattern, mech, n, size, pages)?);
        }
    }
    Ok(cells
        .iter()
        .zip(samples.iter_mut())
        .map(|(&(pattern, mech, n), s)| {
            let (median, min, max) = summarise(s);
            Record {
                mech,
                op: "read",
                size,
                pages,
                procs: n,
                pattern,
                median,
                min,
                max,
                reps: s.len(),
            }
        })
        .collect())
}

/// A timed loop body: runs its step `n` times.
type Step<'a> = Box<dyn FnMut(u64) -> io::Result<()> + 'a>;

/// Where the time of a small copy goes: the cost of steps of one request,
/// each measured alone (ns per call, median): a bare syscall, the ioctl
/// entry (INFO), the target lookup and permission check (probe), and full
/// 64-byte copies by cma and by process_vm_readv.
fn latency_breakdown(dev: &Device, o: &Options) -> io::Result<Vec<(&'static str, f64)>> {
    let src = Buf::new(4096, Pages::Small, false)?;
    let dst = Buf::new(4096, Pages::Small, false)?;
    let mut team = Team::new()?;
    let target = team.spawn(|_, ctl| idle_child(ctl, &[&src]))?;
    team.wait_ready(1);
    dst.touch(1);
    let min = Duration::from_millis(o.min_ms);
    let peer = dev.attach(Target::Pid(target))?;
    let to = To {
        pid: target,
        peer: &peer,
    };
    // A 64-byte read from the target by `mech`, `n` times.
    let copy64 = |mech: Mech| -> Step<'_> {
        let (local, remote) = ([dst.iov(64)], [src.iov(64)]);
        Box::new(move |n| {
            for _ in 0..n {
                one_copy(dev, mech, Op::Read, to, &local, &remote)?;
            }
            Ok(())
        })
    };
    let mut steps: Vec<(&'static str, Step<'_>)> = vec![
        (
            "getppid syscall",
            Box::new(|n| {
                for _ in 0..n {
                    // SAFETY: plain syscall.
                    std::hint::black_box(unsafe { libc::getppid() });
                }
                Ok(())
            }),
        ),
        (
            "cma INFO ioctl",
            Box::new(|n| {
                for _ in 0..n {
                    dev.info()?;
                }
                Ok(())
            }),
        ),
        (
            "cma probe (lookup + access)",
            Box::new(|n| {
                for _ in 0..n {
                    dev.probe(Target::Pid(target))?;
                }
                Ok(())
            }),
        ),
        ("cma READ1 64 B, peer fd", copy64(Mech::Cma)),
        ("cma READ1 64 B, by pid", copy64(Mech::CmaPid)),
        (
            "cma READ (vectored) 64 B, by pid",
            Box::new(|n| {
                let (local, remote) = ([dst.iov(64)], [src.iov(64)]);
                for _ in 0..n {
                    // SAFETY: the bench's own buffers, as in `one_copy`.
                    unsafe { dev.copy_raw(Op::Read, Target::Pid(target), &local, &remote) }?;
                }
                Ok(())
            }),
        ),
        ("process_vm_readv 64 B", copy64(Mech::Pvm)),
    ];
    let mut out = Vec::new();
    for (name, f) in steps.iter_mut() {
        let iters = calibrate(min, f.as_mut())?;
        let mut samples = Vec::new();
        for _ in 0..o.reps.max(1) {
            samples.push(time_per_iter(iters, f.as_mut())? * 1e9);
        }
        out.push((*name, summarise(&mut samples).0));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Output.

fn human(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{}M", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{}K", s >> 10),
        s => format!("{s}"),
    }
}

fn find<'a>(
    recs: &'a [Record],
    mech: Mech,
    op: &str,
    size: usize,
    pages: Pages,
    pattern: &str,
    procs: usize,
) -> Option<&'a Record> {
    recs.iter().find(|r| {
        r.mech == mech
            && r.op == op
            && r.size == size
            && r.pages == pages
            && r.pattern == pattern
            && r.procs == procs
    })
}

fn table(recs: &[Record], sizes: &[usize], pages_list: &[Pages]) -> String {
    let mut out = String::new();
    for &pages in pages_list {
        for op in ["read", "write"] {
            let _ = writeln!(
                out,
                "\none-to-one {op}, {} pages (MB/s, median; ratios of medians)",
                pages.name()
            );
            let _ = writeln!(
                out,
                "{:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} | {:>7} {:>10} {:>10}",
                "size",
                "cma",
                "by-pid",
                "pvm",
                "double",
                "memcpy",
                "direct",
                "cma/pvm",
                "cma/double",
                "cma/memcpy"
            );
            for &size in sizes {
                let get = |m: Mech, op: &str| {
                    find(recs, m, op, size, pages, "one-to-one", 1).map(|r| r.median)
                };
                let (Some(cma), Some(pvm), Some(dbl), Some(mem)) = (
                    get(Mech::Cma, op),
                    get(Mech::Pvm, op),
                    get(Mech::Double, "read"),
                    get(Mech::Memcpy, "read"),
                ) else {
                    continue;
                };
                let direct = get(Mech::CmaDirect, "read").unwrap_or(f64::NAN);
                let by_pid = get(Mech::CmaPid, op).unwrap_or(f64::NAN);
                let _ = writeln!(
                    out,
                    "{:>6} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} | {:>7.2} {:>10.2} {:>10.2}",
                    human(size),
                    cma,
                    by_pid,
                    pvm,
                    dbl,
                    mem,
                    direct,
                    cma / pvm,
                    cma / dbl,
                    cma / mem
                );
            }
        }
    }
    for pattern in ["readers", "ring"] {
        let rows: Vec<&Record> = recs
            .iter()
            .filter(|r| r.pattern == pattern && r.mech == Mech::Cma)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n{pattern}: aggregate read MB/s (median), N processes"
        );
        let _ = writeln!(
            out,
            "{:>6} {:>5} {:>3} {:>9} {:>9} {:>7} {:>12} {:>12}",
            "size", "pages", "N", "cma", "pvm", "cma/pvm", "cma/(N*cma1)", "pvm/(N*pvm1)"
        );
        for r in rows {
            let pvm = find(recs, Mech::Pvm, "read", r.size, r.pages, pattern, r.procs)
                .map_or(f64::NAN, |p| p.median);
            // Scaling is against one process reading another (readers, N=1).
            let one = |m: Mech| {
                find(recs, m, "read", r.size, r.pages, "readers", 1).map_or(f64::NAN, |p| p.median)
            };
            let _ = writeln!(
                out,
                "{:>6} {:>5} {:>3} {:>9.1} {:>9.1} {:>7.2} {:>12.2} {:>12.2}",
                human(r.size),
                r.pages.name(),
                r.procs,
                r.median,
                pvm,
                r.median / pvm,
                r.median / (r.procs as f64 * one(Mech::Cma)),
                pvm / (r.procs as f64 * one(Mech::Pvm))
            );
        }
    }
    out
}

fn json(recs: &[Record]) -> String {
    let mut out = String::from("[\n");
    for (i, r) in recs.iter().enumerate() {
        let _ = writeln!(
            out,
            "  {{\"mechanism\": \"{}\", \"op\": \"{}\", \"size\": {}, \"pages\": \"{}\", \"procs\": {}, \"pattern\": \"{}\", \"mb_per_s\": {:.3}, \"min\": {:.3}, \"max\": {:.3}, \"reps\": {}}}{}",
            r.mech.name(), r.op, r.size, r.pages.name(), r.procs, r.pattern, r.median, r.min, r.max, r.reps,
            if i + 1 < recs.len() { "," } else { "" }
        );
    }
    out.push_str("]\n");
    out
}

/// Bandwidth against size, log-log, one panel per page kind (reads).
fn svg(recs: &[Record], sizes: &[usize], pages_list: &[Pages], title: &str) -> String {
    let (pw, ph, ml, mt, mb) = (520.0, 380.0, 70.0, 50.0, 50.0);
    let width = pw * pages_list.len() as f64 + 20.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"20\" font-size=\"15\">{title}</text>\n",
        ph + 40.0
    );
    let series = [
        (Mech::Cma, "#d62728"),
        (Mech::Pvm, "#1f77b4"),
        (Mech::Double, "#2ca02c"),
        (Mech::Memcpy, "#7f7f7f"),
        (Mech::CmaDirect, "#ff7f0e"),
        (Mech::CmaPid, "#9467bd"),
    ];
    let all: Vec<f64> = recs
        .iter()
        .filter(|r| r.pattern == "one-to-one")
        .map(|r| r.median)
        .filter(|v| *v > 0.0)
        .collect();
    let (lo, hi) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let (ylo, yhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let (xlo, xhi) = (
        (sizes[0] as f64).log2(),
        (*sizes.last().unwrap() as f64)
            .log2()
            .max((sizes[0] as f64).log2() + 1.0),
    );
    for (p, &pages) in pages_list.iter().enumerate() {
        let x0 = 10.0 + p as f64 * pw + ml;
        let (w, h) = (pw - ml - 20.0, ph - mt - mb);
        let y0 = mt + 20.0;
        let xp = |size: usize| x0 + ((size as f64).log2() - xlo) / (xhi - xlo) * w;
        let yp = |v: f64| y0 + h - (v.log10() - ylo) / (yhi - ylo) * h;
        let _ = writeln!(
            s,
            "<text x=\"{x0}\" y=\"{}\" font-size=\"13\">read, {} pages</text>",
            y0 - 8.0,
            pages.name()
        );
        let _ = writeln!(s, "<rect x=\"{x0}\" y=\"{y0}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"black\"/>");
        let mut e = ylo;
        while e <= yhi {
            let y = yp(10f64.powf(e));
            let _ = writeln!(s, "<line x1=\"{x0}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>", x0 + w, x0 - 5.0, y + 4.0, 10f64.powf(e));
            e += 1.0;
        }
        for &size in sizes {
            let x = xp(size);
            let _ = writeln!(
                s,
                "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                y0 + h + 16.0,
                human(size)
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">message size (bytes)</text>",
            x0 + w / 2.0,
            y0 + h + 34.0
        );
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" transform=\"rotate(-90 {} {})\" text-anchor=\"middle\">MB/s</text>", x0 - 50.0, y0 + h / 2.0, x0 - 50.0, y0 + h / 2.0);
        for (k, &(mech, color)) in series.iter().enumerate() {
            let pts: Vec<String> = sizes
                .iter()
                .filter_map(|&size| {
                    find(recs, mech, "read", size, pages, "one-to-one", 1)
                        .map(|r| format!("{:.1},{:.1}", xp(size), yp(r.median)))
                })
                .collect();
            if pts.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
                pts.join(" ")
            );
            let ly = y0 + 12.0 + 15.0 * k as f64;
            let _ = writeln!(s, "<line x1=\"{}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{}</text>", x0 + 8.0, x0 + 28.0, x0 + 32.0, ly + 4.0, mech.name());
        }
    }
    s.push_str("</svg>\n");
    s
}

// ---------------------------------------------------------------------------

/// Runs the benchmark and prints the table; writes the JSON and the plot.
pub fn run(o: Options) -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::open()?;
    let mut o = o;
    if o.quick {
        o.reps = o.reps.min(3);
    }
    let sizes: Vec<usize> = o.sizes.clone().unwrap_or_else(|| {
        if o.quick {
            vec![64, 4 << 10, 256 << 10, 4 << 20]
        } else {
            (0..11).map(|i| 64usize << (2 * i)).collect() // 64 B .. 64 MiB
        }
    });
    let pages_list = [Pages::Small, Pages::Thp];
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let many_sizes: Vec<usize> = if o.quick {
        vec![1 << 20]
    } else {
        vec![64 << 10, 1 << 20, 16 << 20]
    };
    let cells_per_size = 2 * (cpus + cpus.max(2) - 1);
    let total = sizes.len() * pages_list.len()
        + many_sizes.len() * pages_list.len() * cells_per_size * o.setups.max(1);
    let mut progress = Progress {
        done: 0,
        total: total + 1,
        start: Instant::now(),
    };
    let mut rng = o.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut recs = Vec::new();
    for &pages in &pages_list {
        for &size in &sizes {
            progress.step(&format!("one-to-one {} {}", human(size), pages.name()));
            recs.extend(one_to_one(&dev, &o, size, pages, &mut rng)?);
        }
    }
    for &pages in &pages_list {
        for &size in &many_sizes {
            recs.extend(many_cells(&o, size, pages, cpus, &mut rng, &mut progress)?);
        }
    }
    progress.step("latency breakdown");
    let breakdown = latency_breakdown(&dev, &o)?;
    progress.finish();

    let accel = std::fs::read_to_string("/proc/cpuinfo").map_or("unknown", |c| {
        if c.contains("hypervisor") {
            "VM"
        } else {
            "bare metal"
        }
    });
    println!(
        "cma bench: {cpus} CPUs ({accel}), {} repeats after a warm-up, timed loops >= {} ms",
        o.reps, o.min_ms
    );
    print!("{}", table(&recs, &sizes, &pages_list));
    println!("\nlatency breakdown (ns per call, median)");
    for (name, ns) in &breakdown {
        println!("{name:>30} {ns:>10.0}");
    }
    for path in [&o.json, &o.svg] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
    }
    std::fs::write(&o.json, json(&recs))?;
    std::fs::write(
        &o.svg,
        svg(
            &recs,
            &sizes,
            &pages_list,
            "cma bench: one-to-one read bandwidth",
        ),
    )?;
    println!("\nwrote {} and {}", o.json.display(), o.svg.display());
    Ok(())
}
