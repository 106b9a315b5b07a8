//! `cma bench`: how fast `/dev/cma` moves a message, against the anchors, in
//! one run: `process_vm_readv`/`writev` (the upstream mechanism), the
//! shared-memory double copy it replaces (two processes, pipelined through a
//! two-slot ring of 64 KiB chunks, as MPI shared-memory transports do), and
//! `memcpy` and a plain vector loop in one process (the better of the two is
//! the limit of any single copy on this machine).
//!
//! Every process is a real one: buffers are mapped before `fork()`, so each
//! process has its own private copy at the same address, touched before any
//! timing. Each measurement is the median over repeats of a timed loop, the
//! mechanisms run in a shuffled order in every repeat, and a warm-up repeat
//! comes first.
//!
//! The `/dev/cma` mechanisms are measured under both settings of the
//! module's `engine` parameter when it can be written (`pinned`, and
//! `usercopy`: the routine `process_vm_readv` copies with), and every
//! one-to-one measurement also reports hardware-neutral counts per MiB moved
//! (pages pinned, GUP calls, system calls), read from the module's counters
//! and `/proc/vmstat` around its timed loops.

use std::cell::Cell;
use std::fmt::Write as _;
use std::io::{self, IoSlice, IoSliceMut, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cma::{Device, Op, Peer, RemoteIoVec, Target};

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
    /// Settings of the module's `engine` parameter to measure the `/dev/cma`
    /// mechanisms under (peer fd and direct; by pid under the current one
    /// only). Switching needs root; the setting found is restored at the end.
    #[arg(long, value_enum, default_value_t = Engines::Both)]
    engines: Engines,
}

/// Which engine settings `--engines` asks for.
#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum Engines {
    /// `pinned` and `usercopy`.
    Both,
    /// Whatever the module is set to; the parameter is not written.
    Current,
    /// `pinned` only.
    Pinned,
    /// `usercopy` only.
    Usercopy,
}

/// A setting of the module's `engine` parameter.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Engine {
    /// The caller's pages are pinned too; kernel-to-kernel copy.
    Pinned,
    /// The kernel's user-copy routines from the pinned target pages, as
    /// `process_vm_readv` copies.
    Usercopy,
}

impl Engine {
    /// The parameter's spelling.
    fn name(self) -> &'static str {
        match self {
            Engine::Pinned => "pinned",
            Engine::Usercopy => "usercopy",
        }
    }

    /// Parses the parameter's value (`None`: unknown, e.g. `auto`).
    fn parse(s: &str) -> Option<Engine> {
        match s.trim() {
            "pinned" => Some(Engine::Pinned),
            "usercopy" => Some(Engine::Usercopy),
            _ => None,
        }
    }
}

/// What kind of pages back the buffers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pages {
    Small,
    Thp,
}

impl Pages {
    /// The name in the tables and the JSON.
    fn name(self) -> &'static str {
        match self {
            Pages::Small => "4k",
            Pages::Thp => "thp",
        }
    }
}

/// A way of moving a message from one buffer to another. The `/dev/cma`
/// ones come in two labels, one per engine setting they ran under (the
/// `-uc` ones under `usercopy`); [`Mech::base`] is the path they take.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mech {
    /// `/dev/cma` against another process, through a peer fd (attached
    /// once per target, as an MPI library would).
    Cma,
    /// `Cma` under the `usercopy` engine.
    CmaUc,
    /// `/dev/cma` against another process named by pid on every copy.
    CmaPid,
    /// `CmaPid` under the `usercopy` engine.
    CmaPidUc,
    /// `/dev/cma` against the caller's own address space.
    CmaDirect,
    /// `CmaDirect` under the `usercopy` engine.
    CmaDirectUc,
    /// `process_vm_readv` / `process_vm_writev`.
    Pvm,
    /// Sender copies into shared memory, receiver copies out.
    Double,
    /// `memcpy` within one process.
    Memcpy,
    /// A plain vector loop within one process (no `rep movsb`).
    Vecloop,
}

impl Mech {
    /// The name in the JSON.
    fn name(self) -> &'static str {
        match self {
            Mech::Cma => "cma",
            Mech::CmaUc => "cma-uc",
            Mech::CmaPid => "cma-pid",
            Mech::CmaPidUc => "cma-pid-uc",
            Mech::CmaDirect => "cma-direct",
            Mech::CmaDirectUc => "cma-direct-uc",
            Mech::Pvm => "pvm",
            Mech::Double => "double-copy",
            Mech::Memcpy => "memcpy",
            Mech::Vecloop => "vecloop",
        }
    }

    /// The heading in the tables.
    fn head(self) -> &'static str {
        match self {
            Mech::Cma => "cma",
            Mech::CmaUc => "cma-uc",
            Mech::CmaPid => "by-pid",
            Mech::CmaPidUc => "by-pid-uc",
            Mech::CmaDirect => "direct",
            Mech::CmaDirectUc => "direct-uc",
            Mech::Pvm => "pvm",
            Mech::Double => "double",
            Mech::Memcpy => "memcpy",
            Mech::Vecloop => "vecloop",
        }
    }

    /// The path a copy takes, whatever engine label it carries.
    fn base(self) -> Mech {
        match self {
            Mech::CmaUc => Mech::Cma,
            Mech::CmaPidUc => Mech::CmaPid,
            Mech::CmaDirectUc => Mech::CmaDirect,
            m => m,
        }
    }

    /// The label of this `/dev/cma` mechanism under `engine` (`None`: the
    /// module has no engine parameter; the plain label). Others unchanged.
    fn under(self, engine: Option<Engine>) -> Mech {
        match (self.base(), engine) {
            (Mech::Cma, Some(Engine::Usercopy)) => Mech::CmaUc,
            (Mech::CmaPid, Some(Engine::Usercopy)) => Mech::CmaPidUc,
            (Mech::CmaDirect, Some(Engine::Usercopy)) => Mech::CmaDirectUc,
            (m, _) => m,
        }
    }

    /// Whether it goes through `/dev/cma`.
    fn is_cma(self) -> bool {
        matches!(self.base(), Mech::Cma | Mech::CmaPid | Mech::CmaDirect)
    }

    /// Whether every copy is one system call.
    fn is_syscall(self) -> bool {
        self.is_cma() || self == Mech::Pvm
    }
}

/// One measurement.
#[derive(Clone, Debug)]
struct Record {
    mech: Mech,
    op: Op,
    size: usize,
    pages: Pages,
    procs: usize,
    pattern: Pattern,
    /// MB/s (10^6 bytes per second): median, min, max over the repeats.
    median: f64,
    min: f64,
    max: f64,
    reps: usize,
    /// The engine setting a `/dev/cma` measurement ran under, if known.
    engine: Option<Engine>,
    /// One-to-one: the single-copy limit of its cell, the better median of
    /// `memcpy` and `vecloop` (MB/s).
    limit: Option<f64>,
    /// One-to-one: counts per MiB moved over its timed loops.
    counts: Option<Counts>,
}

/// How the processes of a measurement copy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pattern {
    /// One process copies to or from one other.
    OneToOne,
    /// N processes all read one target's buffer.
    Readers,
    /// N processes each read the previous one's buffer.
    Ring,
}

impl Pattern {
    /// The name in the tables and the JSON.
    fn name(self) -> &'static str {
        match self {
            Pattern::OneToOne => "one-to-one",
            Pattern::Readers => "readers",
            Pattern::Ring => "ring",
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The name of a direction in the tables and the JSON.
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

    /// The first `len` bytes, as a range for a copy.
    fn iov(&self, len: usize) -> RemoteIoVec {
        RemoteIoVec {
            base: self.addr,
            len,
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
// Hardware-neutral counters.

/// The module's counters, one decimal file each.
const STATS_DIR: &str = "/sys/class/misc/cma/stats";

/// Pages pinned system-wide (FOLL_PIN: `/dev/cma` and `process_vm_readv`).
const VMSTAT_PINS: &str = "nr_foll_pin_acquired";

/// The counters this system has. They are system-wide: read around a timed
/// loop, they count that loop's copies because nothing else of the bench
/// copies meanwhile (its children are idle, or the double-copy sender,
/// which pins nothing).
struct CounterSources {
    /// The module's counter names (files in [`STATS_DIR`]), sorted;
    /// `None` when the module has none.
    module: Option<Vec<String>>,
    /// Whether `/proc/vmstat` has [`VMSTAT_PINS`].
    vmstat: bool,
}

/// One reading of the counters.
struct Snapshot {
    /// In the order of [`CounterSources::module`] (empty if none).
    module: Vec<u64>,
    /// [`VMSTAT_PINS`] (0 if absent).
    pins: u64,
}

/// Reads [`VMSTAT_PINS`] from `/proc/vmstat`; `None` if it is not there.
fn vmstat_pins() -> io::Result<Option<u64>> {
    let text = match std::fs::read_to_string("/proc/vmstat") {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        r => r?,
    };
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(name, _)| *name == VMSTAT_PINS)
        .map(|(_, v)| parse_counter(VMSTAT_PINS, v))
        .transpose()
}

/// Parses one counter's decimal value.
fn parse_counter(name: &str, text: &str) -> io::Result<u64> {
    text.trim().parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("counter {name}: {text:?}: {e}"),
        )
    })
}

impl CounterSources {
    /// Finds the counters; notes for the reader on what is missing.
    fn probe(notes: &mut Vec<String>) -> io::Result<CounterSources> {
        let module = match std::fs::read_dir(STATS_DIR) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                notes.push(format!(
                    "{STATS_DIR} not found (a module without counters): GUP calls and module counts are not reported"
                ));
                None
            }
            r => {
                let mut names = Vec::new();
                for entry in r? {
                    names.push(entry?.file_name().to_string_lossy().into_owned());
                }
                names.sort();
                Some(names)
            }
        };
        let vmstat = vmstat_pins()?.is_some();
        if !vmstat {
            notes.push(format!(
                "/proc/vmstat has no {VMSTAT_PINS}: pins are not reported"
            ));
        }
        Ok(CounterSources { module, vmstat })
    }

    /// Reads every counter now.
    fn snapshot(&self) -> io::Result<Snapshot> {
        let mut module = Vec::new();
        for name in self.module.iter().flatten() {
            let text = std::fs::read_to_string(format!("{STATS_DIR}/{name}"))?;
            module.push(parse_counter(name, &text)?);
        }
        let pins = if self.vmstat {
            vmstat_pins()?.unwrap_or(0)
        } else {
            0
        };
        Ok(Snapshot { module, pins })
    }

    /// The value of the module's counter `name` in `values` (ordered as
    /// [`CounterSources::module`]).
    fn module_value(&self, values: &[u64], name: &str) -> Option<u64> {
        let i = self.module.as_ref()?.iter().position(|n| n == name)?;
        values.get(i).copied()
    }
}

/// Counter deltas summed over the timed loops of one case, with what those
/// loops moved and how many copy calls they made.
#[derive(Clone, Default)]
struct Tally {
    /// Bytes the loops moved.
    bytes: u64,
    /// Copy system calls they made.
    calls: u64,
    /// Pages pinned system-wide meanwhile.
    pins: u64,
    /// The module's counters' deltas, ordered as [`CounterSources::module`].
    module: Vec<u64>,
}

impl Tally {
    /// Adds one timed loop: the readings around it and what it did.
    fn add(&mut self, before: &Snapshot, after: &Snapshot, bytes: u64, calls: u64) {
        self.bytes += bytes;
        self.calls += calls;
        self.pins += after.pins.saturating_sub(before.pins);
        self.module.resize(after.module.len(), 0);
        for ((sum, a), b) in self
            .module
            .iter_mut()
            .zip(&after.module)
            .zip(&before.module)
        {
            *sum += a.saturating_sub(*b);
        }
    }
}

/// Counts per MiB moved by one case (`None`: not available here).
#[derive(Clone, Debug)]
struct Counts {
    /// Copy system calls the bench issued.
    calls: f64,
    /// Pages pinned system-wide (`nr_foll_pin_acquired`).
    pins: Option<f64>,
    /// The module's GUP calls (`gup_calls + local_gup_calls`); `None` for
    /// `process_vm_readv`, whose GUP calls no counter shows.
    gup: Option<f64>,
    /// `/dev/cma` only: the module's target pages pinned.
    pages_pinned: Option<f64>,
    /// `/dev/cma` only: the module's caller pages pinned.
    local_pages_pinned: Option<f64>,
    /// Every module counter, by name.
    module: Vec<(String, f64)>,
    /// The module counted copies or bytes the bench did not make (another
    /// user of `/dev/cma` ran meanwhile): the counts are suspect.
    stray: bool,
}

impl Counts {
    /// The counts of `mech` from its tally.
    fn new(sources: &CounterSources, mech: Mech, t: &Tally) -> Counts {
        let mib = t.bytes as f64 / f64::from(1u32 << 20);
        let per = |n: u64| n as f64 / mib;
        let module = |name: &str| sources.module_value(&t.module, name);
        let gup = match (module("gup_calls"), module("local_gup_calls")) {
            _ if mech == Mech::Pvm => None,
            (None, None) => None,
            (a, b) => Some(per(a.unwrap_or(0) + b.unwrap_or(0))),
        };
        let (want_copies, want_bytes) = if mech.is_cma() {
            (t.calls, t.bytes)
        } else {
            (0, 0)
        };
        let stray = module("copies").is_some_and(|c| c != want_copies)
            || module("bytes").is_some_and(|b| b != want_bytes);
        let cma_only = |name: &str| module(name).filter(|_| mech.is_cma()).map(per);
        Counts {
            calls: per(t.calls),
            pins: sources.vmstat.then(|| per(t.pins)),
            gup,
            pages_pinned: cma_only("pages_pinned"),
            local_pages_pinned: cma_only("local_pages_pinned"),
            module: sources
                .module
                .iter()
                .flatten()
                .zip(&t.module)
                .map(|(name, &n)| (name.clone(), per(n)))
                .collect(),
            stray,
        }
    }
}

// ---------------------------------------------------------------------------
// The engine parameter.

/// The module's engine parameter (root-writable).
const ENGINE_PARAM: &str = "/sys/module/cma/parameters/engine";

/// The engine parameter while the bench switches it: remembers the setting
/// found at start and puts it back when dropped (at the end, on an error,
/// on a panic; not in a forked child).
struct EngineParam {
    /// The setting found at start.
    original: Engine,
    /// The setting last written.
    set: Cell<Engine>,
    /// The bench's pid: a child unwinding a copy of this must not write.
    owner: u32,
}

impl EngineParam {
    /// Makes `engine` the module's setting, unless it already is.
    fn set(&self, engine: Engine) -> io::Result<()> {
        if self.set.get() != engine {
            std::fs::write(ENGINE_PARAM, engine.name()).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("{ENGINE_PARAM} <- {}: {e}", engine.name()),
                )
            })?;
            self.set.set(engine);
        }
        Ok(())
    }
}

impl Drop for EngineParam {
    fn drop(&mut self) {
        if std::process::id() != self.owner {
            return;
        }
        if let Err(e) = self.set(self.original) {
            eprintln!(
                "cma bench: could not restore the engine to {}: {e}",
                self.original.name()
            );
        }
    }
}

/// Which engine settings the `/dev/cma` mechanisms run under.
struct EnginePlan {
    /// The setting found at start; `None` when the module has no engine
    /// parameter (or an unknown value): one unnamed setting.
    current: Option<Engine>,
    /// The settings the peer-fd and direct mechanisms are measured under
    /// (by pid and the multi-process cells: `current` only).
    measured: Vec<Option<Engine>>,
    /// Present when the bench has to switch the parameter.
    param: Option<EngineParam>,
}

impl EnginePlan {
    /// Reads the parameter and plans what `want` asks for, as far as this
    /// module and user allow; notes for the reader on what it could not do.
    fn new(want: Engines, notes: &mut Vec<String>) -> io::Result<EnginePlan> {
        let found = match std::fs::read_to_string(ENGINE_PARAM) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                notes.push(format!(
                    "{ENGINE_PARAM} not found: the cma mechanisms ran under the module's only engine"
                ));
                return Ok(EnginePlan {
                    current: None,
                    measured: vec![None],
                    param: None,
                });
            }
            r => r?,
        };
        let Some(current) = Engine::parse(&found) else {
            notes.push(format!(
                "engine parameter is {:?}: the cma mechanisms ran under it, unnamed",
                found.trim()
            ));
            return Ok(EnginePlan {
                current: None,
                measured: vec![None],
                param: None,
            });
        };
        let measured = match want {
            Engines::Both => vec![Engine::Pinned, Engine::Usercopy],
            Engines::Current => vec![current],
            Engines::Pinned => vec![Engine::Pinned],
            Engines::Usercopy => vec![Engine::Usercopy],
        };
        let only_current = EnginePlan {
            current: Some(current),
            measured: vec![Some(current)],
            param: None,
        };
        if measured == [current] {
            return Ok(only_current);
        }
        // Writing the value it has changes nothing (and logs nothing).
        if let Err(e) = std::fs::write(ENGINE_PARAM, current.name()) {
            notes.push(format!(
                "{ENGINE_PARAM} is not writable ({e}; switching needs root): the cma mechanisms ran under the current engine, {}, only",
                current.name()
            ));
            return Ok(only_current);
        }
        Ok(EnginePlan {
            current: Some(current),
            measured: measured.into_iter().map(Some).collect(),
            param: Some(EngineParam {
                original: current,
                set: Cell::new(current),
                owner: std::process::id(),
            }),
        })
    }

    /// Makes `engine` the module's setting if the bench switches it.
    fn set(&self, engine: Option<Engine>) -> io::Result<()> {
        match (&self.param, engine) {
            (Some(p), Some(e)) => p.set(e),
            _ => Ok(()),
        }
    }

    /// The setting last written (or found), for grouping the cases.
    fn in_force(&self) -> Option<Engine> {
        self.param
            .as_ref()
            .map_or(self.current, |p| Some(p.set.get()))
    }

    /// Puts the setting found at start back (for the cells that use it).
    fn restore(&self) -> io::Result<()> {
        self.set(self.current)
    }

    /// A line on what ran under what.
    fn describe(&self) -> String {
        match (self.current, self.param.is_some()) {
            (None, _) => "engine: not named by the module".to_string(),
            (Some(c), false) => format!("engine: {} (as found)", c.name()),
            (Some(c), true) => format!(
                "engines: {} for cma and direct (\"-uc\": usercopy), by-pid and N-process cells under {} (found, restored)",
                self.measured
                    .iter()
                    .flatten()
                    .map(|e| e.name())
                    .collect::<Vec<_>>()
                    .join(" and "),
                c.name()
            ),
        }
    }
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

/// Copies between `local` and `remote` (in `to`) with `mech`: for cma,
/// through the library's public calls, as an application makes them
/// (`process_vm_readv`/`writev` on a peer or by pid, which go by the
/// single-range ioctl for one range each side).
fn one_copy(
    dev: &Device,
    mech: Mech,
    op: Op,
    to: To<'_>,
    local: RemoteIoVec,
    remote: RemoteIoVec,
) -> io::Result<()> {
    let want = local.len;
    let remote = [remote];
    let moved = match mech.base() {
        Mech::Cma | Mech::CmaDirect | Mech::CmaPid => {
            let by_pid = mech.base() == Mech::CmaPid;
            match op {
                Op::Read => {
                    // SAFETY: `local` is one of the bench's own mappings,
                    // alive for the call; no other Rust reference to it
                    // exists while the slice does.
                    let buf =
                        unsafe { std::slice::from_raw_parts_mut(local.base as *mut u8, local.len) };
                    let local = &mut [IoSliceMut::new(buf)];
                    if by_pid {
                        dev.process_vm_readv(Target::Pid(to.pid), local, &remote)?
                    } else {
                        to.peer.process_vm_readv(local, &remote)?
                    }
                }
                Op::Write => {
                    // SAFETY: as above; the buffer is only read.
                    let buf =
                        unsafe { std::slice::from_raw_parts(local.base as *const u8, local.len) };
                    let local = &[IoSlice::new(buf)];
                    if by_pid {
                        dev.process_vm_writev(Target::Pid(to.pid), local, &remote)?
                    } else {
                        to.peer.process_vm_writev(local, &remote)?
                    }
                }
            }
        }
        Mech::Pvm => {
            let pid = to.pid;
            let l = libc::iovec {
                iov_base: local.base as *mut libc::c_void,
                iov_len: local.len,
            };
            let r = remote.as_ptr() as *const libc::iovec;
            // SAFETY: `RemoteIoVec` has `iovec`'s layout (checked by the
            // library); the bench's own buffers, as above.
            let n = unsafe {
                match op {
                    Op::Read => libc::process_vm_readv(pid, &l, 1, r, 1, 0),
                    Op::Write => libc::process_vm_writev(pid, &l, 1, r, 1, 0),
                }
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            n as usize
        }
        Mech::Double | Mech::Memcpy | Mech::Vecloop => {
            unreachable!("not a syscall mechanism")
        }
        Mech::CmaUc | Mech::CmaPidUc | Mech::CmaDirectUc => {
            unreachable!("a label, not a path (see Mech::base)")
        }
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

/// A plain vector-loop copy of `len` bytes between two of the bench's
/// buffers: AVX2 when the CPU has it, else SSE2; never `rep movsb`, so with
/// `memcpy` (which may use it) it bounds what one copy can do here.
fn vecloop(dst: &Buf, src: &Buf, len: usize) {
    let (d, s) = (dst.addr as *mut u8, src.addr as *const u8);
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2; both buffers are mapped, at least
            // `len` long, and distinct.
            unsafe { copy_avx2(d, s, len) };
        } else {
            // SAFETY: SSE2 is part of x86_64; the buffers as above.
            unsafe { copy_sse2(d, s, len) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: both buffers are mapped, at least `len` long, and distinct.
        unsafe { copy_tail(d, s, 0, len) };
    }
}

/// Copies `len` bytes with 256-bit unaligned loads and stores, four
/// registers (128 bytes) per iteration, then 32 bytes at a time, then bytes.
///
/// # Safety
///
/// The CPU has AVX2; `src` is readable and `dst` writable for `len` bytes,
/// and the two do not overlap.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn copy_avx2(dst: *mut u8, src: *const u8, len: usize) {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_storeu_si256};
    let mut i = 0;
    while len - i >= 128 {
        // SAFETY: bytes `i..i + 128` lie inside both ranges (caller's
        // contract); unaligned loads and stores need no alignment.
        unsafe {
            let (s, d) = (src.add(i) as *const __m256i, dst.add(i) as *mut __m256i);
            let a = _mm256_loadu_si256(s);
            let b = _mm256_loadu_si256(s.add(1));
            let c = _mm256_loadu_si256(s.add(2));
            let e = _mm256_loadu_si256(s.add(3));
            _mm256_storeu_si256(d, a);
            _mm256_storeu_si256(d.add(1), b);
            _mm256_storeu_si256(d.add(2), c);
            _mm256_storeu_si256(d.add(3), e);
        }
        i += 128;
    }
    while len - i >= 32 {
        // SAFETY: bytes `i..i + 32` lie inside both ranges.
        unsafe {
            let v = _mm256_loadu_si256(src.add(i) as *const __m256i);
            _mm256_storeu_si256(dst.add(i) as *mut __m256i, v);
        }
        i += 32;
    }
    // SAFETY: bytes `i..len` lie inside both ranges.
    unsafe { copy_tail(dst, src, i, len) };
}

/// Copies `len` bytes with 128-bit unaligned loads and stores, four
/// registers (64 bytes) per iteration, then 16 bytes at a time, then bytes.
///
/// # Safety
///
/// `src` is readable and `dst` writable for `len` bytes, and the two do not
/// overlap.
#[cfg(target_arch = "x86_64")]
unsafe fn copy_sse2(dst: *mut u8, src: *const u8, len: usize) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_storeu_si128};
    let mut i = 0;
    while len - i >= 64 {
        // SAFETY: bytes `i..i + 64` lie inside both ranges (caller's
        // contract); SSE2 is part of x86_64.
        unsafe {
            let (s, d) = (src.add(i) as *const __m128i, dst.add(i) as *mut __m128i);
            let a = _mm_loadu_si128(s);
            let b = _mm_loadu_si128(s.add(1));
            let c = _mm_loadu_si128(s.add(2));
            let e = _mm_loadu_si128(s.add(3));
            _mm_storeu_si128(d, a);
            _mm_storeu_si128(d.add(1), b);
            _mm_storeu_si128(d.add(2), c);
            _mm_storeu_si128(d.add(3), e);
        }
        i += 64;
    }
    while len - i >= 16 {
        // SAFETY: bytes `i..i + 16` lie inside both ranges.
        unsafe {
            let v = _mm_loadu_si128(src.add(i) as *const __m128i);
            _mm_storeu_si128(dst.add(i) as *mut __m128i, v);
        }
        i += 16;
    }
    // SAFETY: bytes `i..len` lie inside both ranges.
    unsafe { copy_tail(dst, src, i, len) };
}

/// Copies bytes `from..len` one at a time. Volatile, so that the compiler
/// does not turn the loop into a call to `memcpy`.
///
/// # Safety
///
/// `src` is readable and `dst` writable for `len` bytes, and the two do not
/// overlap.
unsafe fn copy_tail(dst: *mut u8, src: *const u8, from: usize, len: usize) {
    for i in from..len {
        // SAFETY: `i < len`, inside both ranges (caller's contract).
        unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
    }
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

/// One case of a one-to-one cell: a labelled mechanism, a direction, and
/// the engine setting it runs under (`None`: any, or unnamed).
#[derive(Clone, Copy)]
struct Case {
    /// The mechanism, labelled with its engine.
    mech: Mech,
    /// The direction.
    op: Op,
    /// The setting to make before its loops (`None`: any).
    engine: Option<Engine>,
}

/// Regroups the engine-bound cases in the shuffled `order` so that each
/// setting's run one after another, `first`'s first, in their shuffled
/// order, while every other case keeps its shuffled place: one switch of
/// the parameter per repeat (alternating which setting comes first)
/// instead of one per case.
fn group_by_engine(order: &mut [usize], cases: &[Case], first: Option<Engine>) {
    let slots: Vec<usize> = (0..order.len())
        .filter(|&k| cases[order[k]].engine.is_some())
        .collect();
    let mut bound: Vec<usize> = slots.iter().map(|&k| order[k]).collect();
    bound.sort_by_key(|&i| cases[i].engine != first);
    for (&k, i) in slots.iter().zip(bound) {
        order[k] = i;
    }
}

/// One-to-one: every mechanism moves one message of `size` bytes, `op` way;
/// the `/dev/cma` ones under each setting of `plan`. The counters of
/// `sources` are read around every timed loop.
fn one_to_one(
    dev: &Device,
    o: &Options,
    size: usize,
    pages: Pages,
    rng: &mut u64,
    plan: &EnginePlan,
    sources: &CounterSources,
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

    let case = |mech: Mech, op: Op, engine: Option<Engine>| Case {
        mech: mech.under(engine),
        op,
        engine,
    };
    let mut cases: Vec<Case> = Vec::new();
    for &e in &plan.measured {
        cases.push(case(Mech::Cma, Op::Read, e));
        cases.push(case(Mech::Cma, Op::Write, e));
        cases.push(case(Mech::CmaDirect, Op::Read, e));
    }
    cases.extend([
        case(Mech::CmaPid, Op::Read, plan.current),
        case(Mech::Pvm, Op::Read, None),
        case(Mech::Pvm, Op::Write, None),
        case(Mech::Double, Op::Read, None),
        case(Mech::Memcpy, Op::Read, None),
        case(Mech::Vecloop, Op::Read, None),
    ]);
    let min = Duration::from_millis(o.min_ms);
    let run = |mech: Mech, op: Op, iters: u64| -> io::Result<()> {
        let ctl = team.ctl();
        match mech.base() {
            Mech::Cma | Mech::CmaPid | Mech::Pvm => {
                let (l, r) = match op {
                    Op::Read => (local_dst.iov(size), target_buf.iov(size)),
                    Op::Write => (local_src.iov(size), target_buf.iov(size)),
                };
                for _ in 0..iters {
                    one_copy(dev, mech, op, remote, l, r)?;
                }
            }
            Mech::CmaDirect => {
                for _ in 0..iters {
                    one_copy(dev, mech, op, own, local_dst.iov(size), local_src.iov(size))?;
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
            Mech::Vecloop => {
                for _ in 0..iters {
                    vecloop(&local_dst, &local_src, size);
                    std::hint::black_box(&local_dst.addr);
                }
            }
            Mech::CmaUc | Mech::CmaPidUc | Mech::CmaDirectUc => {
                unreachable!("a label, not a path (see Mech::base)")
            }
        }
        Ok(())
    };

    let mut iters = vec![0u64; cases.len()];
    let mut order: Vec<usize> = (0..cases.len()).collect();
    group_by_engine(&mut order, &cases, plan.in_force());
    for &i in &order {
        let c = cases[i];
        plan.set(c.engine)?;
        iters[i] = calibrate(min, &mut |n| run(c.mech, c.op, n))?;
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut tallies: Vec<Tally> = vec![Tally::default(); cases.len()];
    for rep in 0..=o.reps {
        shuffle(&mut order, rng);
        group_by_engine(&mut order, &cases, plan.in_force());
        for &i in &order {
            let c = cases[i];
            plan.set(c.engine)?;
            let before = sources.snapshot()?;
            let t = time_per_iter(iters[i], &mut |n| run(c.mech, c.op, n))?;
            let after = sources.snapshot()?;
            let calls = if c.mech.is_syscall() { iters[i] } else { 0 };
            tallies[i].add(&before, &after, iters[i] * size as u64, calls);
            if rep > 0 {
                samples[i].push(size as f64 / t / 1e6);
            }
        }
    }
    let mut recs: Vec<Record> = cases
        .iter()
        .zip(samples.iter_mut())
        .zip(&tallies)
        .map(|((c, s), tally)| {
            let (median, min, max) = summarise(s);
            Record {
                mech: c.mech,
                op: c.op,
                size,
                pages,
                procs: 1,
                pattern: Pattern::OneToOne,
                median,
                min,
                max,
                reps: o.reps,
                engine: c.engine,
                limit: None,
                counts: Some(Counts::new(sources, c.mech, tally)),
            }
        })
        .collect();
    let limit = recs
        .iter()
        .filter(|r| matches!(r.mech, Mech::Memcpy | Mech::Vecloop))
        .map(|r| r.median)
        .reduce(f64::max);
    for r in &mut recs {
        r.limit = limit;
    }
    Ok(recs)
}

/// N processes copying at once: `readers` all read one target's buffer;
/// `ring` each reads the previous one's. Returns the aggregate bandwidth of
/// each timed round (MB/s).
fn many(
    o: &Options,
    pattern: Pattern,
    mech: Mech,
    n: usize,
    size: usize,
    pages: Pages,
) -> io::Result<Vec<f64>> {
    let src = Buf::new(size, pages, false)?;
    let dst = Buf::new(size, pages, false)?;
    let mut team = Team::new()?;
    let mech_code = mech as u32;
    let ring = pattern == Pattern::Ring;
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
                let mech = if ctl.mech.load(Ordering::Acquire) == Mech::Pvm as u32 {
                    Mech::Pvm
                } else {
                    Mech::Cma
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
                    one_copy(&dev, mech, Op::Read, to, dst.iov(size), src.iov(size)).expect("copy");
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
/// `/dev/cma` runs under `engine`, the setting in force.
fn many_cells(
    o: &Options,
    size: usize,
    pages: Pages,
    cpus: usize,
    engine: Option<Engine>,
    rng: &mut u64,
    progress: &mut Progress,
) -> io::Result<Vec<Record>> {
    let mut cells: Vec<(Pattern, Mech, usize)> = Vec::new();
    for mech in [Mech::Cma.under(engine), Mech::Pvm] {
        cells.extend((1..=cpus).map(|n| (Pattern::Readers, mech, n)));
        cells.extend((2..=cpus.max(2)).map(|n| (Pattern::Ring, mech, n)));
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
                op: Op::Read,
                size,
                pages,
                procs: n,
                pattern,
                median,
                min,
                max,
                reps: s.len(),
                engine: engine.filter(|_| mech.is_cma()),
                limit: None,
                counts: None,
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
        let (local, remote) = (dst.iov(64), src.iov(64));
        Box::new(move |n| {
            for _ in 0..n {
                one_copy(dev, mech, Op::Read, to, local, remote)?;
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
                // SAFETY: the bench's own buffer, as in `one_copy`.
                let buf = unsafe { std::slice::from_raw_parts_mut(dst.addr as *mut u8, 64) };
                let (local, remote) = (&mut [IoSliceMut::new(buf)], [src.iov(64)]);
                for _ in 0..n {
                    // The report asks for the vectored ioctl (all one range).
                    dev.readv_report(Target::Pid(target), local, &remote)?;
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

fn find(
    recs: &[Record],
    mech: Mech,
    op: Op,
    size: usize,
    pages: Pages,
    pattern: Pattern,
    procs: usize,
) -> Option<&Record> {
    recs.iter().find(|r| {
        r.mech == mech
            && r.op == op
            && r.size == size
            && r.pages == pages
            && r.pattern == pattern
            && r.procs == procs
    })
}

/// One column of a table.
struct Column {
    /// The heading.
    head: &'static str,
    /// Decimals of the values (`None`: as [`count`] writes them).
    decimals: Option<usize>,
    /// One per row; `None`: not measured.
    values: Vec<Option<f64>>,
}

/// Writes a table: `labels` (the sizes) down the left, then the groups of
/// columns, separated by `|`. Columns without any value and rows without
/// any value are left out; a missing value is `-`.
fn render(out: &mut String, labels: &[String], groups: Vec<Vec<Column>>) {
    let groups: Vec<Vec<Column>> = groups
        .into_iter()
        .map(|g| {
            g.into_iter()
                .filter(|c| c.values.iter().any(Option::is_some))
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect();
    let cell = |c: &Column, row: usize| match c.values[row] {
        Some(v) if v.is_finite() => match c.decimals {
            Some(d) => format!("{v:.d$}"),
            None => count(v),
        },
        _ => "-".to_string(),
    };
    let width = |c: &Column| c.head.len().max(8);
    let _ = write!(out, "{:>6}", "size");
    for (k, g) in groups.iter().enumerate() {
        out.push_str(if k > 0 { " |" } else { "" });
        for c in g {
            let _ = write!(out, " {:>w$}", c.head, w = width(c));
        }
    }
    out.push('\n');
    for (row, label) in labels.iter().enumerate() {
        if !groups.iter().flatten().any(|c| c.values[row].is_some()) {
            continue;
        }
        let _ = write!(out, "{label:>6}");
        for (k, g) in groups.iter().enumerate() {
            out.push_str(if k > 0 { " |" } else { "" });
            for c in g {
                let _ = write!(out, " {:>w$}", cell(c, row), w = width(c));
            }
        }
        out.push('\n');
    }
}

/// A count per MiB with about three significant digits.
fn count(v: f64) -> String {
    match v.abs() {
        0.0 => "0".to_string(),
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

/// `a / b` when both were measured.
fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).map(|(a, b)| a / b)
}

/// The one-to-one bandwidth tables (per page kind and direction) and the
/// multi-process ones.
fn table(recs: &[Record], sizes: &[usize], pages_list: &[Pages]) -> String {
    let mut out = String::new();
    let labels: Vec<String> = sizes.iter().map(|&s| human(s)).collect();
    for &pages in pages_list {
        for op in [Op::Read, Op::Write] {
            let _ = writeln!(
                out,
                "\none-to-one {}, {} pages (MB/s, median; ratios of medians; limit: the better of memcpy and vecloop)",
                op_name(op),
                pages.name()
            );
            let get = |m: Mech, op: Op, size: usize| {
                find(recs, m, op, size, pages, Pattern::OneToOne, 1).map(|r| r.median)
            };
            let limit = |size: usize| {
                find(
                    recs,
                    Mech::Memcpy,
                    Op::Read,
                    size,
                    pages,
                    Pattern::OneToOne,
                    1,
                )
                .and_then(|r| r.limit)
            };
            let col = |head, decimals, f: &dyn Fn(usize) -> Option<f64>| Column {
                head,
                decimals: Some(decimals),
                values: sizes.iter().map(|&s| f(s)).collect(),
            };
            let bw = |m: Mech, op: Op| col(m.head(), 1, &move |s| get(m, op, s));
            let bandwidth = vec![
                bw(Mech::Cma, op),
                bw(Mech::CmaUc, op),
                bw(Mech::CmaPid, op),
                bw(Mech::CmaPidUc, op),
                bw(Mech::Pvm, op),
                bw(Mech::Double, Op::Read),
                bw(Mech::Memcpy, Op::Read),
                col("limit", 1, &limit),
                bw(Mech::CmaDirect, Op::Read),
                bw(Mech::CmaDirectUc, Op::Read),
            ];
            let ratios = vec![
                col("cma/pvm", 2, &|s| {
                    ratio(get(Mech::Cma, op, s), get(Mech::Pvm, op, s))
                }),
                col("cma-uc/pvm", 2, &|s| {
                    ratio(get(Mech::CmaUc, op, s), get(Mech::Pvm, op, s))
                }),
                col("cma/double", 2, &|s| {
                    ratio(get(Mech::Cma, op, s), get(Mech::Double, Op::Read, s))
                }),
                col("cma/limit", 2, &|s| ratio(get(Mech::Cma, op, s), limit(s))),
            ];
            render(&mut out, &labels, vec![bandwidth, ratios]);
        }
    }
    for pattern in [Pattern::Readers, Pattern::Ring] {
        let rows: Vec<&Record> = recs
            .iter()
            .filter(|r| r.pattern == pattern && r.mech.base() == Mech::Cma)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n{pattern}: aggregate read MB/s (median), N processes{}",
            rows[0].engine.map_or(String::new(), |e| format!(
                ", cma under the {} engine",
                e.name()
            ))
        );
        let _ = writeln!(
            out,
            "{:>6} {:>5} {:>3} {:>9} {:>9} {:>7} {:>12} {:>12}",
            "size", "pages", "N", "cma", "pvm", "cma/pvm", "cma/(N*cma1)", "pvm/(N*pvm1)"
        );
        for r in rows {
            let pvm = find(recs, Mech::Pvm, Op::Read, r.size, r.pages, pattern, r.procs)
                .map_or(f64::NAN, |p| p.median);
            // Scaling is against one process reading another (readers, N=1).
            let one = |m: Mech| {
                find(recs, m, Op::Read, r.size, r.pages, Pattern::Readers, 1)
                    .map_or(f64::NAN, |p| p.median)
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
                r.median / (r.procs as f64 * one(r.mech)),
                pvm / (r.procs as f64 * one(Mech::Pvm))
            );
        }
    }
    out
}

/// The hardware-neutral table: counts per MiB moved by each mechanism in
/// the one-to-one reads, per page kind and size.
fn counts_table(recs: &[Record], sizes: &[usize], pages_list: &[Pages]) -> String {
    let mut out = String::new();
    let with_counts = |r: &&Record| r.counts.is_some();
    if !recs.iter().any(|r| with_counts(&r)) {
        return out;
    }
    let _ = writeln!(
        out,
        "\nCounts per MiB moved (hardware-neutral): one-to-one reads, system-wide counters around the timed loops"
    );
    let labels: Vec<String> = sizes.iter().map(|&s| human(s)).collect();
    let mechs = [
        Mech::Cma,
        Mech::CmaUc,
        Mech::CmaPid,
        Mech::CmaPidUc,
        Mech::CmaDirect,
        Mech::CmaDirectUc,
        Mech::Pvm,
        Mech::Double,
        Mech::Memcpy,
        Mech::Vecloop,
    ];
    type Metric = fn(&Counts) -> Option<f64>;
    let metrics: [(&str, Metric); 3] = [
        ("pins/MiB (nr_foll_pin_acquired: pages pinned)", |c| c.pins),
        (
            "GUP calls/MiB (module: gup_calls + local_gup_calls; pvm's are not counted)",
            |c| c.gup,
        ),
        ("syscalls/MiB (copy calls the bench made)", |c| {
            Some(c.calls)
        }),
    ];
    for &pages in pages_list {
        for (title, metric) in metrics {
            let _ = writeln!(out, "{} pages, {title}", pages.name());
            let columns = mechs
                .iter()
                .map(|&m| Column {
                    head: m.head(),
                    decimals: None,
                    values: sizes
                        .iter()
                        .map(|&s| {
                            find(recs, m, Op::Read, s, pages, Pattern::OneToOne, 1)
                                .and_then(|r| r.counts.as_ref())
                                .and_then(metric)
                        })
                        .collect(),
                })
                .collect();
            render(&mut out, &labels, vec![columns]);
        }
    }
    let stray = recs
        .iter()
        .filter_map(|r| r.counts.as_ref())
        .filter(|c| c.stray)
        .count();
    if stray > 0 {
        let _ = writeln!(
            out,
            "note: in {stray} measurements the module counted copies the bench did not make (another /dev/cma user?): their counts are suspect"
        );
    }
    out
}

/// A JSON number, or `null` when not measured (or not finite).
fn jnum(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.6}"),
        _ => "null".to_string(),
    }
}

/// One JSON record per measurement. One-to-one ones also carry the cell's
/// `limit` and counts per MiB (`*_per_mib`); `/dev/cma` ones their
/// `engine`, when the module names it.
fn json(recs: &[Record]) -> String {
    let mut out = String::from("[\n");
    for (i, r) in recs.iter().enumerate() {
        let _ = write!(
            out,
            "  {{\"mechanism\": \"{}\", \"op\": \"{}\", \"size\": {}, \"pages\": \"{}\", \"procs\": {}, \"pattern\": \"{}\", \"mb_per_s\": {:.3}, \"min\": {:.3}, \"max\": {:.3}, \"reps\": {}",
            r.mech.name(), op_name(r.op), r.size, r.pages.name(), r.procs, r.pattern.name(), r.median, r.min, r.max, r.reps,
        );
        if let Some(e) = r.engine {
            let _ = write!(out, ", \"engine\": \"{}\"", e.name());
        }
        if r.pattern == Pattern::OneToOne {
            let _ = write!(out, ", \"limit\": {}", jnum(r.limit));
        }
        if let Some(c) = &r.counts {
            let _ = write!(
                out,
                ", \"calls_per_mib\": {}, \"pins_per_mib\": {}, \"gup_per_mib\": {}",
                jnum(Some(c.calls)),
                jnum(c.pins),
                jnum(c.gup)
            );
            if r.mech.is_cma() {
                let _ = write!(
                    out,
                    ", \"pages_pinned_per_mib\": {}, \"local_pages_pinned_per_mib\": {}",
                    jnum(c.pages_pinned),
                    jnum(c.local_pages_pinned)
                );
            }
            if !c.module.is_empty() {
                let fields: Vec<String> = c
                    .module
                    .iter()
                    .map(|(name, v)| format!("\"{name}\": {}", jnum(Some(*v))))
                    .collect();
                let _ = write!(out, ", \"module_per_mib\": {{{}}}", fields.join(", "));
            }
            let _ = write!(out, ", \"counts_suspect\": {}", c.stray);
        }
        let _ = writeln!(out, "}}{}", if i + 1 < recs.len() { "," } else { "" });
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
        (Mech::CmaUc, "#e377c2"),
        (Mech::Vecloop, "#bcbd22"),
    ];
    let all: Vec<f64> = recs
        .iter()
        .filter(|r| r.pattern == Pattern::OneToOne)
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
                    find(recs, mech, Op::Read, size, pages, Pattern::OneToOne, 1)
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
    let mut notes = Vec::new();
    let sources = CounterSources::probe(&mut notes)?;
    // Restores the engine found when dropped, also on an error below.
    let plan = EnginePlan::new(o.engines, &mut notes)?;
    let mut recs = Vec::new();
    for &pages in &pages_list {
        for &size in &sizes {
            progress.step(&format!("one-to-one {} {}", human(size), pages.name()));
            recs.extend(one_to_one(
                &dev, &o, size, pages, &mut rng, &plan, &sources,
            )?);
        }
    }
    plan.restore()?;
    for &pages in &pages_list {
        for &size in &many_sizes {
            recs.extend(many_cells(
                &o,
                size,
                pages,
                cpus,
                plan.current,
                &mut rng,
                &mut progress,
            )?);
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
    println!("{}", plan.describe());
    for note in &notes {
        println!("note: {note}");
    }
    print!("{}", table(&recs, &sizes, &pages_list));
    print!("{}", counts_table(&recs, &sizes, &pages_list));
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
