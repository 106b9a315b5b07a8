//! Structure-aware fuzzing of every ioctl: random and boundary flags, counts,
//! lengths, pointers (NULL, unmapped, PROT_NONE, read-only, kernel, vsyscall,
//! misaligned, straddling the end of a mapping), pids (free, zombie, kernel
//! thread, init, self, a live child) and pidfds (closed, not a pidfd), and
//! truncated or oversized argument structs.
//!
//! Every call must return success or a documented errno, a successful copy
//! must not claim more bytes than it was given, and the kernel must stay
//! healthy (the runner checks the log, pins and kmemleak afterwards).
//!
//! `CMA_FUZZ_CALLS` sets the number of calls (default 100000) and
//! `CMA_FUZZ_SEED` the seed (default: from the clock, printed first), so that
//! any failure reproduces with `CMA_FUZZ_SEED=<seed> cma-selftest fuzz`.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd};

use cma::sys::{self, cma_copy, cma_copy1, cma_grant, cma_iovec};
use cma::Device;

use crate::check;
use crate::ktap::{Failure, Test, TestResult};
use crate::peer::Peer;
use crate::util::{page_size, Mapping, Rng, KERNEL_ADDRESS};

/// The tests of this file.
pub const TESTS: &[Test] = crate::tests![fuzz_every_ioctl,];

/// Every errno an ioctl of /dev/cma may return.
const ALLOWED: &[i32] = &[
    libc::EINVAL,
    libc::EFAULT,
    libc::ESRCH,
    libc::EPERM,
    libc::EBADF,
    libc::ENOTTY,
    libc::ENOMEM,
    libc::EINTR,
    libc::ENOSPC,
];

/// The fuzzer's random choices for one call, recorded, so that a call that
/// reached new code in the module can be replayed with a few choices changed
/// (a choice sequence: nearby tapes make nearby calls).
struct Tape {
    choices: Vec<u64>,
    pos: usize,
    fresh: Rng,
}

impl Tape {
    /// Replays `choices`, then continues with fresh ones from `fresh`.
    fn new(choices: Vec<u64>, fresh: Rng) -> Tape {
        Tape {
            choices,
            pos: 0,
            fresh,
        }
    }

    fn next(&mut self) -> u64 {
        if self.pos == self.choices.len() {
            self.choices.push(self.fresh.next());
        }
        self.pos += 1;
        self.choices[self.pos - 1]
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A copy of `tape` with one to four choices changed, or cut short.
    fn mutate(tape: &[u64], rng: &mut Rng) -> Vec<u64> {
        let mut t = tape.to_vec();
        if t.is_empty() {
            return t;
        }
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(t.len());
            match rng.below(4) {
                0 => t.truncate(at),
                1 => t[at] = t[at].wrapping_add(1),
                _ => t[at] = rng.next(),
            }
            if t.is_empty() {
                break;
            }
        }
        t
    }
}

/// KCOV on the fuzzer's thread: which of the module's coverage points
/// (calls to `__sanitizer_cov_trace_pc`, one per basic block of the
/// instrumented module) each call reached. Only on kernels with KCOV and a
/// module built with coverage (the debug flavour).
struct Kcov {
    _file: std::fs::File,
    area: *mut u64,
    words: usize,
    /// The module's address range, from /proc/modules.
    range: std::ops::Range<u64>,
}

const KCOV_INIT_TRACE: libc::c_ulong = 0x8008_6301; // _IOR('c', 1, unsigned long)
const KCOV_ENABLE: libc::c_ulong = 0x6364; // _IO('c', 100)
const KCOV_TRACE_PC: libc::c_ulong = 0;

impl Kcov {
    fn open() -> Option<Kcov> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/sys/kernel/debug/kcov")
            .ok()?;
        let words = 1 << 18;
        // SAFETY: KCOV's documented setup on a file we own: size the buffer,
        // map it shared, enable tracing for this thread.
        let area = unsafe {
            if libc::ioctl(file.as_raw_fd(), KCOV_INIT_TRACE, words) != 0 {
                return None;
            }
            let a = libc::mmap(
                std::ptr::null_mut(),
                words * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            if a == libc::MAP_FAILED
                || libc::ioctl(file.as_raw_fd(), KCOV_ENABLE, KCOV_TRACE_PC) != 0
            {
                return None;
            }
            a as *mut u64
        };
        let modules = std::fs::read_to_string("/proc/modules").ok()?;
        let line = modules.lines().find(|l| l.starts_with("cma "))?;
        let f: Vec<&str> = line.split_whitespace().collect();
        let size: u64 = f.get(1)?.parse().ok()?;
        let base = u64::from_str_radix(f.get(5)?.trim_start_matches("0x"), 16).ok()?;
        // KCOV reports addresses less the KASLR offset (`canonicalize_ip`),
        // module addresses too: move the module's range the same way.
        let base = base.checked_sub(kaslr_offset()?)?;
        Some(Kcov {
            _file: file,
            area,
            words,
            range: base..base + size,
        })
    }

    /// Starts a call's trace.
    fn reset(&self) {
        // SAFETY: word 0 of the live shared buffer is the count of entries.
        unsafe { std::ptr::write_volatile(self.area, 0) };
    }

    /// The module's coverage points the traced call reached.
    fn collect(&self) -> Vec<u64> {
        // SAFETY: the kernel wrote `n` entries after word 0 of the live
        // buffer of `words` words; volatile, since the kernel writes it.
        unsafe {
            let n = (std::ptr::read_volatile(self.area) as usize).min(self.words - 1);
            (1..=n)
                .map(|i| std::ptr::read_volatile(self.area.add(i)))
                .filter(|pc| self.range.contains(pc))
                .collect()
        }
    }
}

/// Where x86-64 links the kernel's text (`__START_KERNEL`: the kernel map's
/// base plus the default `CONFIG_PHYSICAL_START`), from which `_text`
/// moves by the KASLR offset.
const START_KERNEL: u64 = 0xffff_ffff_8100_0000;

/// The KASLR offset: where `_text` is (from `/proc/kallsyms`, which shows
/// addresses to root) less where it was linked; `None` if not shown.
fn kaslr_offset() -> Option<u64> {
    let syms = std::fs::read_to_string("/proc/kallsyms").ok()?;
    let text = syms.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let addr = f.next()?;
        (f.next().is_some() && f.next() == Some("_text")).then_some(addr)
    })?;
    let text = u64::from_str_radix(text, 16).ok().filter(|&a| a != 0)?;
    text.checked_sub(START_KERNEL)
}

/// How many coverage points the module at `ko` has: its calls to
/// `__sanitizer_cov_trace_pc`, counted by objdump.
fn coverage_points(ko: &str) -> Option<usize> {
    let out = std::process::Command::new("objdump")
        .args(["-dr", ko])
        .output()
        .ok()?;
    let n = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("R_X86_64") && l.contains("__sanitizer_cov_trace_pc"))
        .count();
    (n > 0).then_some(n)
}

/// Scratch memory the fuzzer may let the kernel write anywhere into, and
/// addresses that must always be refused.
struct Pools {
    /// `SCRATCH` bytes of writable memory between two PROT_NONE guard pages,
    /// so that no copy can run from scratch into other memory.
    scratch: Mapping,
    /// A read-only page, a PROT_NONE page, and a page that was unmapped.
    ro: Mapping,
    none: Mapping,
    unmapped: usize,
    /// Iovec arrays the fuzzer fills (in scratch-independent memory).
    iov_arrays: Mapping,
    /// The argument struct, at the end of a page followed by a hole, so that
    /// a struct can straddle into unmapped memory.
    args: Mapping,
    /// Peer fds made by successful attaches, for copies through them.
    peers: Vec<std::os::fd::OwnedFd>,
}

/// How many pages at each end of a successful map the fuzzer touches.
const TOUCHED: u64 = 16;

/// The most peer fds the fuzzer keeps open.
const MAX_PEERS: usize = 8;

const SCRATCH: usize = 1 << 20;

impl Pools {
    fn new() -> std::io::Result<Pools> {
        let ps = page_size();
        let rw = libc::PROT_READ | libc::PROT_WRITE;
        let args = Mapping::new(2 * ps, rw)?;
        args.punch(ps, ps)?;
        let scratch = Mapping::new(SCRATCH + 2 * ps, rw)?;
        scratch.protect(0, ps, libc::PROT_NONE)?;
        scratch.protect(ps + SCRATCH, ps, libc::PROT_NONE)?;
        Ok(Pools {
            scratch,
            ro: Mapping::new(ps, libc::PROT_READ)?,
            none: Mapping::new(ps, libc::PROT_NONE)?,
            unmapped: crate::util::unmapped_address()?,
            iov_arrays: Mapping::new(2 * 1025 * 16, rw)?,
            args,
            peers: Vec::new(),
        })
    }

    /// The first writable byte of scratch (after the guard page).
    fn scratch_start(&self) -> usize {
        self.scratch.addr() + page_size()
    }

    /// An address for a buffer: usually inside scratch, sometimes hostile.
    fn address(&self, rng: &mut Tape) -> usize {
        match rng.below(16) {
            0 => 0,
            1 => self.unmapped,
            2 => self.none.addr(),
            3 => self.ro.addr(),
            4 => KERNEL_ADDRESS + rng.below(1 << 20),
            5 => 0xffff_ffff_ff60_0000,
            6 => 0x8000_0000_0000_0000,
            7 => usize::MAX - rng.below(4096),
            8 => self.scratch_start() + SCRATCH - rng.below(64),
            _ => self.scratch_start() + rng.below(SCRATCH),
        }
    }

    /// A length: boundaries, huge values, or small random ones.
    fn length(rng: &mut Tape) -> u64 {
        let ps = page_size() as u64;
        match rng.below(24) {
            0 => 0,
            1 => 1,
            2 => ps - 1,
            3 => ps,
            4 => ps + 1,
            5 => isize::MAX as u64,
            6 => isize::MAX as u64 + 1,
            7 => u64::MAX,
            8 => 1 << 32,
            _ => rng.below(3 * ps as usize) as u64,
        }
    }

    /// A count of iovecs around the interesting values.
    fn count(rng: &mut Tape) -> u32 {
        match rng.below(12) {
            0 => 0,
            1 => sys::CMA_MAX_IOV,
            2 => sys::CMA_MAX_IOV + 1,
            3 => u32::MAX,
            4 => 8,
            5 => 9,
            _ => 1 + rng.below(6) as u32,
        }
    }

    /// Fills an iovec array (slot 0 or 1) and returns its address, or a
    /// hostile pointer instead of an array.
    fn iovecs(&mut self, rng: &mut Tape, slot: usize, cnt: u32) -> u64 {
        match rng.below(12) {
            0 => return 0,
            1 => return self.unmapped as u64,
            2 => return KERNEL_ADDRESS as u64,
            3 => return self.none.addr() as u64,
            _ => {}
        }
        let n = (cnt as usize).min(1025);
        let base = self.iov_arrays.addr() + slot * 1025 * 16;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(cma_iovec {
                base: self.address(rng) as u64,
                len: Self::length(rng),
            });
        }
        let bytes = self.iov_arrays.bytes_mut();
        let off = slot * 1025 * 16;
        for (i, iov) in v.iter().enumerate() {
            bytes[off + i * 16..off + i * 16 + 8].copy_from_slice(&iov.base.to_ne_bytes());
            bytes[off + i * 16 + 8..off + i * 16 + 16].copy_from_slice(&iov.len.to_ne_bytes());
        }
        // Sometimes misaligned.
        (base
            + if rng.below(8) == 0 {
                1 + rng.below(7)
            } else {
                0
            }) as u64
    }
}

/// Pids and fds to aim at.
struct Targets {
    child: Peer,
    zombie: Peer,
    free_pid: i32,
    pidfd: std::os::fd::OwnedFd,
    not_pidfd: std::fs::File,
    churn: Churn,
    churn_pidfd: std::cell::RefCell<Option<std::os::fd::OwnedFd>>,
}

impl Targets {
    fn pid(&self, rng: &mut Tape) -> i32 {
        match rng.below(14) {
            0 => 0,
            1 => -1,
            2 => 1,
            3 => 2,
            4 => self.free_pid,
            5 => self.zombie.pid,
            6 => i32::MAX,
            7 => rng.next() as i32,
            8 | 9 => std::process::id() as i32,
            10 | 11 => self.churn.newest(),
            _ => self.child.pid,
        }
    }

    fn pidfd(&self, rng: &mut Tape) -> i32 {
        match rng.below(7) {
            0 => -1,
            1 => self.not_pidfd.as_raw_fd(),
            2 => 1000 + rng.below(1000) as i32,
            // A pidfd of a process being created, exec'ing or reaped, if
            // it is still there to be opened (kept until the next one).
            3 => {
                let fd = cma::pidfd_open(self.churn.newest()).ok();
                let raw = fd.as_ref().map_or(-1, AsRawFd::as_raw_fd);
                *self.churn_pidfd.borrow_mut() = fd;
                raw
            }
            _ => self.pidfd.as_raw_fd(),
        }
    }
}

/// A process that forks children without pause, each of which exits at
/// once or execs `/bin/true`, and reaps them: the newest child's pid, in
/// shared memory, names a process that is being created, exec'ing, exiting
/// or reaped when a call reaches the kernel (the races of grants, attaches
/// and copies with `release_task()`, where a task is found but its thread
/// group pid is already detached, or with `exec`).
struct Churn {
    pid: libc::pid_t,
    newest: *mut i32,
}

impl Churn {
    fn start() -> io::Result<Churn> {
        // SAFETY: a fresh shared anonymous page, unmapped on drop.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if page == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let newest = page.cast::<i32>();
        // SAFETY: the test process is single-threaded here.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            let path = c"/bin/true";
            let argv = [path.as_ptr(), std::ptr::null()];
            for i in 0u64.. {
                // SAFETY: the churner is single-threaded; the child only
                // exits or execs.
                let c = unsafe { libc::fork() };
                if c == 0 {
                    // SAFETY: ends the child, or replaces it.
                    unsafe {
                        if i % 2 == 0 {
                            libc::execv(path.as_ptr(), argv.as_ptr());
                        }
                        libc::_exit(0)
                    }
                }
                if c > 0 {
                    // SAFETY: the shared page is mapped in this process too;
                    // a volatile store is enough for a racy hint.
                    unsafe { newest.write_volatile(c) };
                    // SAFETY: reaps our own child.
                    unsafe { libc::waitpid(c, std::ptr::null_mut(), 0) };
                }
            }
            // SAFETY: never reached.
            unsafe { libc::_exit(0) };
        }
        Ok(Churn { pid, newest })
    }

    /// The newest churned pid (0 before the first).
    fn newest(&self) -> i32 {
        // SAFETY: our shared page, written by the churner.
        unsafe { self.newest.read_volatile() }
    }
}

impl Drop for Churn {
    fn drop(&mut self) {
        // SAFETY: kills and reaps our own child; unmaps our own page.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            libc::munmap(self.newest.cast(), 4096);
        }
    }
}

fn flags(rng: &mut Tape) -> u64 {
    match rng.below(10) {
        0 => rng.next(),
        1 => 1 << rng.below(64),
        2 | 3 => sys::CMA_COPY_PIDFD,
        // process_vm_readv's contract (struct cma_copy only; elsewhere EINVAL).
        4 => sys::CMA_COPY_PVM,
        5 => sys::CMA_COPY_PVM | sys::CMA_COPY_PIDFD,
        _ => 0,
    }
}

/// One random ioctl; returns a description if its outcome breaks the rules.
fn one_call(
    dev: &Device,
    p: &mut Pools,
    t: &Targets,
    rng: &mut Tape,
    hist: &mut BTreeMap<String, u64>,
    slow: &mut BTreeMap<&'static str, Slow>,
) -> Option<String> {
    let ioc =
        |dir: u32, nr: u32, size: u32| (dir << 30) | (size << 16) | (sys::CMA_IOC_MAGIC << 8) | nr;
    let kind = rng.below(23);
    let (cmd, name) = match kind {
        0 => (sys::CMA_IOC_INFO, "info"),
        1..=6 => (sys::CMA_IOC_READ, "read"),
        7..=12 => (sys::CMA_IOC_WRITE, "write"),
        13 | 14 => (sys::CMA_IOC_GRANT, "grant"),
        15 => (sys::CMA_IOC_REVOKE, "revoke"),
        16 => (ioc(3, 0x41, rng.below(200) as u32), "read-resized"),
        17 => (
            ioc(
                rng.below(4) as u32,
                0x40 + rng.below(16) as u32,
                rng.below(256) as u32,
            ),
            "other-nr",
        ),
        18 => (sys::CMA_IOC_ATTACH, "attach"),
        19 => match rng.below(7) {
            0 => (sys::CMA_IOC_READ, "peer-read"),
            1 => (sys::CMA_IOC_WRITE, "peer-write"),
            2 => (sys::CMA_IOC_READ1, "peer-read1"),
            3 => (sys::CMA_IOC_WRITE1, "peer-write1"),
            4 => (sys::CMA_IOC_INFO, "peer-info"),
            5 => (sys::CMA_IOC_MAP, "peer-map"),
            _ => (rng.next() as u32, "peer-other"),
        },
        20 => (sys::CMA_IOC_READ1, "read1"),
        21 => (sys::CMA_IOC_WRITE1, "write1"),
        _ => (rng.next() as u32, "random-cmd"),
    };
    // Build the argument in the `args` page, ending at the page boundary
    // when `straddle` so that a struct may run into the hole after it.
    let ps = page_size();
    let straddle = rng.below(10) == 0;
    let mut arg_addr = p.args.addr()
        + if straddle {
            ps - 8 * (1 + rng.below(8))
        } else {
            64
        };
    let mut copy = cma_copy::default();
    let mut grant = cma_grant::default();
    let mut copy1 = cma_copy1::default();
    let mut attach = sys::cma_attach::default();
    let mut map = sys::cma_map::default();
    // On a peer fd the target is named by the fd: pid and flags are zero,
    // except sometimes, which must be refused.
    let on_peer = name.starts_with("peer-");
    // What the argument is, wherever it goes.
    let base = name.trim_start_matches("peer-");
    let unnamed = on_peer && rng.below(8) != 0;
    match base {
        "map" => {
            // Mostly page-aligned ranges of the pools, sometimes anything.
            let ps = page_size() as u64;
            map.addr = p.address(rng) as u64;
            map.len = Pools::length(rng);
            if rng.below(4) != 0 {
                map.addr &= !(ps - 1);
                map.len = (map.len.min(16 * ps) + ps - 1) & !(ps - 1);
            }
            map.prot = [1, 1, 3, 3, 0, 2, 7, rng.next() as u32][rng.below(8)];
            if rng.below(16) == 0 {
                map.flags = rng.next() as u32;
            }
            if rng.below(16) == 0 {
                map.reserved[rng.below(2)] = rng.next();
            }
        }
        "attach" => {
            attach.flags = flags(rng) as u32;
            attach.pid = if attach.flags & sys::CMA_COPY_PIDFD as u32 != 0 {
                t.pidfd(rng)
            } else {
                t.pid(rng)
            };
            if rng.below(16) == 0 {
                attach.reserved[rng.below(3)] = rng.next();
            }
        }
        "read1" | "write1" => {
            copy1.local = p.address(rng) as u64;
            copy1.remote = p.address(rng) as u64;
            copy1.len = Pools::length(rng);
            copy1.flags = flags(rng) as u32;
            copy1.pid = if copy1.flags & sys::CMA_COPY_PIDFD as u32 != 0 {
                t.pidfd(rng)
            } else {
                t.pid(rng)
            };
        }
        "read" | "write" | "read-resized" => {
            copy.local_cnt = Pools::count(rng);
            copy.remote_cnt = Pools::count(rng);
            copy.local_iov = p.iovecs(rng, 0, copy.local_cnt);
            copy.remote_iov = p.iovecs(rng, 1, copy.remote_cnt);
            copy.flags = flags(rng);
            copy.pid = if copy.flags & sys::CMA_COPY_PIDFD != 0 {
                t.pidfd(rng)
            } else {
                t.pid(rng)
            };
            if rng.below(16) == 0 {
                copy.pad = rng.next() as u32;
                copy.reserved[rng.below(2)] = rng.next();
            }
        }
        "grant" => {
            grant.pid = t.pid(rng);
            if rng.below(8) == 0 {
                grant.flags = rng.next() as u32;
            }
        }
        _ => {}
    }
    if unnamed {
        (copy.pid, copy.flags, copy1.pid, copy1.flags) = (0, 0, 0, 0);
    }
    // Copy the struct into the args page (as much as fits before the hole).
    let raw: &[u8] = match base {
        // SAFETY: plain-old-data structs viewed as bytes.
        "map" => unsafe {
            std::slice::from_raw_parts(
                &map as *const _ as *const u8,
                std::mem::size_of::<sys::cma_map>(),
            )
        },
        // SAFETY: plain-old-data structs viewed as bytes.
        "attach" => unsafe {
            std::slice::from_raw_parts(
                &attach as *const _ as *const u8,
                std::mem::size_of::<sys::cma_attach>(),
            )
        },
        // SAFETY: plain-old-data structs viewed as bytes.
        "grant" => unsafe {
            std::slice::from_raw_parts(
                &grant as *const _ as *const u8,
                std::mem::size_of::<cma_grant>(),
            )
        },
        // SAFETY: as above.
        "read1" | "write1" => unsafe {
            std::slice::from_raw_parts(
                &copy1 as *const _ as *const u8,
                std::mem::size_of::<cma_copy1>(),
            )
        },
        // SAFETY: as above.
        _ => unsafe {
            std::slice::from_raw_parts(
                &copy as *const _ as *const u8,
                std::mem::size_of::<cma_copy>(),
            )
        },
    };
    let room = p.args.addr() + ps - arg_addr;
    let n = raw.len().min(room);
    let off = arg_addr - p.args.addr();
    p.args.bytes_mut()[off..off + n].copy_from_slice(&raw[..n]);
    // Sometimes no struct at all.
    match rng.below(24) {
        0 => arg_addr = 0,
        1 => arg_addr = KERNEL_ADDRESS,
        2 => arg_addr = p.ro.addr(),
        3 => arg_addr = p.unmapped,
        _ => {}
    }
    // SAFETY: the argument is either inside the fuzzer's own args page or an
    // address the kernel must refuse; copies may only land in scratch memory.
    let fd = match (on_peer, p.peers.is_empty()) {
        (true, false) => p.peers[rng.below(p.peers.len())].as_fd(),
        _ => dev.as_fd(),
    };
    let began = std::time::Instant::now();
    let res = unsafe { sys::ioctl(fd, cmd, arg_addr) };
    if let (Ok(new_fd), "attach") = (&res, name) {
        // SAFETY: a successful attach returned a new fd that we now own.
        let owned =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(*new_fd) };
        if p.peers.len() < MAX_PEERS {
            p.peers.push(owned);
        } else {
            p.peers[rng.below(MAX_PEERS)] = owned;
        }
    }
    if let (Ok(_), "map") = (&res, base) {
        if arg_addr == p.args.addr() + off && n == raw.len() {
            // Touch the map (a fault in each page, a hole where the target
            // has nothing) and unmap it.
            let mut out = sys::cma_map::default();
            // SAFETY: reads back the struct we placed there.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(
                    &mut out as *mut _ as *mut u8,
                    std::mem::size_of::<sys::cma_map>(),
                )
            };
            bytes.copy_from_slice(&p.args.bytes()[off..off + n]);
            // At most the first and last `TOUCHED` pages: a map of 4 GiB
            // of holes is a valid call, and touching all of it is a
            // million faults (five minutes on the debug kernel under TCG).
            let ps = page_size() as u64;
            let pages = out.len.div_ceil(ps);
            let touched =
                (0..pages.min(TOUCHED)).chain(pages.saturating_sub(TOUCHED).max(TOUCHED)..pages);
            let mut sum = 0u8;
            for page in touched.map(|i| i * ps) {
                // SAFETY: inside the map just made, readable (PROT_READ is
                // in every protection the module accepts).
                sum ^= unsafe { std::ptr::read_volatile((out.mapped + page) as *const u8) };
            }
            std::hint::black_box(sum);
            // SAFETY: the map just made, unmapped once.
            unsafe { libc::munmap(out.mapped as *mut libc::c_void, out.len as usize) };
        }
    }
    let took = began.elapsed();
    if took > std::time::Duration::from_secs(2) {
        println!(
            "# fuzz: one {name} call took {:.1} s: {res:?}",
            took.as_secs_f64()
        );
    }
    slow.entry(name).or_default().add(took);
    let key = match &res {
        Ok(_) => format!("{name}: ok"),
        Err(e) => format!(
            "{name}: {}",
            crate::ktap::errno_name(e.raw_os_error().unwrap_or(0))
        ),
    };
    *hist.entry(key).or_default() += 1;
    match res {
        Err(e) if !ALLOWED.contains(&e.raw_os_error().unwrap_or(0)) => {
            Some(format!("{name} {cmd:#x}: unexpected error {e}"))
        }
        Ok(_)
            if matches!(base, "read" | "write")
                && arg_addr == p.args.addr() + off
                && n == raw.len() =>
        {
            // The kernel wrote the result back: it must be within bounds.
            let mut out = cma_copy::default();
            // SAFETY: reads back the struct we placed there.
            let bytes = unsafe {
                std::slice::from_raw_parts_mut(
                    &mut out as *mut _ as *mut u8,
                    std::mem::size_of::<cma_copy>(),
                )
            };
            bytes.copy_from_slice(&p.args.bytes()[off..off + n]);
            (out.bytes > 1 << 40).then(|| format!("{name}: implausible byte count {}", out.bytes))
        }
        // A single-range copy returns the bytes moved: never more than asked.
        Ok(n) if matches!(base, "read1" | "write1") && n as u64 > copy1.len => Some(format!(
            "{name}: returned {n} bytes for a {}-byte request",
            copy1.len
        )),
        _ => None,
    }
}

/// Where a kind of call spent its time (the ioctl, and for a map, touching
/// and unmapping it), so that a slow run says what was slow.
#[derive(Default)]
struct Slow {
    calls: u64,
    total: std::time::Duration,
    max: std::time::Duration,
}

impl Slow {
    fn add(&mut self, d: std::time::Duration) {
        self.calls += 1;
        self.total += d;
        self.max = self.max.max(d);
    }
}

fn fuzz_every_ioctl() -> TestResult {
    let calls: u64 = std::env::var("CMA_FUZZ_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let seed: u64 = std::env::var("CMA_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("# fuzz: seed {seed}, {calls} calls (reproduce: CMA_FUZZ_SEED={seed} CMA_FUZZ_CALLS={calls} cma-selftest fuzz)");
    let dev = Device::open()?;
    let mut pools = Pools::new()?;
    // The target shares the fuzzer's layout (forked after the pools exist),
    // so scratch addresses are scratch in it too.
    let child = Peer::spawn(|ch| {
        if let Ok(d) = Device::open() {
            let _ = d.grant(None);
            std::mem::forget(d);
        }
        ch.wait()
    })?;
    let zombie = Peer::spawn(|ch| ch.wait())?;
    zombie.kill();
    let gone = Peer::spawn(|ch| ch.wait())?;
    let free_pid = gone.pid;
    gone.finish()?;
    let targets = Targets {
        pidfd: cma::pidfd_open(child.pid)?,
        child,
        zombie,
        free_pid,
        not_pidfd: std::fs::File::open("/dev/null")?,
        churn: Churn::start()?,
        churn_pidfd: Default::default(),
    };
    let mut rng = Rng::new(seed);
    let mut hist = BTreeMap::new();
    let mut slow = BTreeMap::new();
    let start = std::time::Instant::now();
    // With KCOV, calls that reach new coverage points are kept and mutated:
    // half the calls replay a kept one with a few choices changed.
    let kcov = Kcov::open();
    let mut reached = std::collections::HashSet::new();
    let mut corpus: Vec<Vec<u64>> = Vec::new();
    for i in 0..calls {
        let choices = match (&kcov, corpus.is_empty(), rng.below(2)) {
            (Some(_), false, 0) => Tape::mutate(&corpus[rng.below(corpus.len())], &mut rng),
            _ => Vec::new(),
        };
        let mut tape = Tape::new(choices, Rng::new(rng.next()));
        if let Some(k) = &kcov {
            k.reset();
        }
        if let Some(what) = one_call(&dev, &mut pools, &targets, &mut tape, &mut hist, &mut slow) {
            return Err(Failure::Fail(format!("call {i} (seed {seed}): {what}")));
        }
        if let Some(k) = &kcov {
            let before = reached.len();
            reached.extend(k.collect());
            if reached.len() > before && corpus.len() < 4096 {
                corpus.push(tape.choices);
            }
        }
    }
    match (
        &kcov,
        std::env::var("CMA_KO")
            .ok()
            .and_then(|ko| coverage_points(&ko)),
    ) {
        (Some(_), Some(total)) => {
            println!(
                "# fuzz: coverage: {} of the module's {total} coverage points ({:.1} %), {} inputs kept",
                reached.len(),
                100.0 * reached.len() as f64 / total as f64,
                corpus.len()
            );
            // An instrumented module that no call reached means the
            // feedback is broken (its addresses misread), not that the
            // calls missed the module.
            check!(
                calls < 100 || !reached.is_empty(),
                "KCOV traced {calls} calls but none reached the instrumented module"
            );
        }
        (Some(_), None) => println!(
            "# fuzz: coverage: {} coverage points reached, {} inputs kept",
            reached.len(),
            corpus.len()
        ),
        (None, _) => println!("# fuzz: no KCOV here: random calls, no coverage feedback"),
    }
    // The device still works, and so does the target.
    check!(dev.info().is_ok(), "INFO failed after fuzzing");
    dev.revoke()?;
    println!(
        "# fuzz: {calls} calls in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    for (k, v) in &hist {
        println!("#   {k:<24} {v}");
    }
    let mut kinds: Vec<_> = slow.iter().collect();
    kinds.sort_by_key(|(_, s)| std::cmp::Reverse(s.total));
    for (k, s) in kinds.iter().take(6) {
        println!(
            "# fuzz: time in {k}: {:.1} s over {} calls, slowest {:.1} ms",
            s.total.as_secs_f64(),
            s.calls,
            s.max.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
