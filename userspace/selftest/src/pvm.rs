//! `libcma-preload.so` against the system call it replaces.
//!
//! Run as `LD_PRELOAD=out/lib/libcma-preload.so cma-selftest --preload`:
//! then glibc's `process_vm_readv`/`process_vm_writev` and `syscall()` are
//! the preload library's, and the system call itself is reached only through
//! the `syscall` instruction ([`raw`]). Every case is run three ways (the
//! glibc name, `syscall(SYS_process_vm_*)`, the raw instruction) and must
//! give the same result, errno and bytes: random scatter/gather layouts over
//! unmapped, `PROT_NONE` and read-only pages, bad arguments in every
//! position, dead, zombie, foreign and setuid targets, and the probes MPI
//! libraries make. Then what only the library does: its report at exit,
//! consent by default and by `prctl(PR_SET_PTRACER)`, `fork`, and a target
//! that exec()s behind a cached peer fd.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::check;
use crate::check_eq;
use crate::ktap::{Failure, Test, TestResult};
use crate::peer::Peer;
use crate::util::{page_size, Mapping, Rng, KERNEL_ADDRESS, NOBODY};

/// The tests of this file (only run with `--preload`).
pub const TESTS: &[Test] = crate::tests![
    preload_is_loaded,
    pvm_diff_random_layouts_read,
    pvm_diff_random_layouts_write,
    pvm_diff_bad_arguments,
    pvm_diff_targets,
    pvm_diff_unprivileged_targets,
    pvm_diff_client_probes,
    preload_counts_every_call,
    preload_consents_by_default,
    preload_prctl_ptracer_consents,
    preload_fork_child_consents,
    preload_falls_back_without_device,
    preload_reattaches_after_exec,
    preload_maps_serve_repeats_exactly,
];

fn pvm_diff_random_layouts_read() -> TestResult {
    random_layouts(false)
}

fn pvm_diff_random_layouts_write() -> TestResult {
    random_layouts(true)
}

/// One call's arguments, exactly as the system call takes them.
#[derive(Clone, Copy, Debug)]
struct Args {
    write: bool,
    pid: i64,
    lvec: usize,
    liovcnt: u64,
    rvec: usize,
    riovcnt: u64,
    flags: u64,
}

impl Args {
    /// A call with `local` and `remote` as its iovec arrays, flags 0.
    fn new(write: bool, pid: i64, local: &[libc::iovec], remote: &[libc::iovec]) -> Args {
        Args {
            write,
            pid,
            lvec: local.as_ptr() as usize,
            liovcnt: local.len() as u64,
            rvec: remote.as_ptr() as usize,
            riovcnt: remote.len() as u64,
            flags: 0,
        }
    }
}

/// What a call returned: the value, and errno if it failed.
type Outcome = (isize, i32);

/// The system call itself, by the `syscall` instruction: no library can
/// interpose on it.
fn raw(a: &Args) -> Outcome {
    let nr = if a.write {
        libc::SYS_process_vm_writev
    } else {
        libc::SYS_process_vm_readv
    };
    let ret: isize;
    // SAFETY: the process_vm_* system calls with the test's arguments; the
    // kernel validates every address, and only memory the test set aside is
    // written. The instruction clobbers rcx and r11.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a.pid,
            in("rsi") a.lvec,
            in("rdx") a.liovcnt,
            in("r10") a.rvec,
            in("r8") a.riovcnt,
            in("r9") a.flags,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if (-4095..0).contains(&ret) {
        (-1, -ret as i32)
    } else {
        (ret, 0)
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Through glibc's name (the preload library's definition).
fn by_name(a: &Args) -> Outcome {
    let f = if a.write {
        libc::process_vm_writev
    } else {
        libc::process_vm_readv
    };
    // SAFETY: as for `raw`.
    let ret = unsafe {
        f(
            a.pid as libc::pid_t,
            a.lvec as *const libc::iovec,
            a.liovcnt as libc::c_ulong,
            a.rvec as *const libc::iovec,
            a.riovcnt as libc::c_ulong,
            a.flags as libc::c_ulong,
        )
    };
    (ret, if ret < 0 { errno() } else { 0 })
}

/// Through `syscall(SYS_process_vm_*, ...)` (the preload library's shim).
fn by_syscall(a: &Args) -> Outcome {
    let nr = if a.write {
        libc::SYS_process_vm_writev
    } else {
        libc::SYS_process_vm_readv
    };
    // SAFETY: as for `raw`.
    let ret = unsafe { libc::syscall(nr, a.pid, a.lvec, a.liovcnt, a.rvec, a.riovcnt, a.flags) };
    (ret as isize, if ret < 0 { errno() } else { 0 })
}

type Way = (&'static str, fn(&Args) -> Outcome);
const WAYS: [Way; 3] = [
    ("syscall instruction", raw),
    ("process_vm_*v", by_name),
    ("syscall()", by_syscall),
];

fn preload_active() -> bool {
    // SAFETY: dlsym/dladdr with a NUL-terminated name and a live out-struct.
    unsafe {
        let sym = libc::dlsym(libc::RTLD_DEFAULT, c"process_vm_readv".as_ptr());
        let mut info: libc::Dl_info = std::mem::zeroed();
        if sym.is_null() || libc::dladdr(sym, &mut info) == 0 || info.dli_fname.is_null() {
            return false;
        }
        std::ffi::CStr::from_ptr(info.dli_fname)
            .to_string_lossy()
            .contains("libcma-preload")
    }
}

fn preload_is_loaded() -> TestResult {
    check!(
        preload_active(),
        "process_vm_readv is not libcma-preload.so's (run with LD_PRELOAD)"
    );
    Ok(())
}

/// Pages of the target's and the caller's regions.
const PAGES: usize = 24;
/// In the target: unmapped, PROT_NONE and read-only pages.
const R_HOLE: usize = 7;
const R_NONE: usize = 13;
const R_RO: usize = 17;
/// In the caller: the same, elsewhere.
const L_HOLE: usize = 5;
const L_NONE: usize = 11;
const L_RO: usize = 19;

/// A target process holding `PAGES` pages at `addr` with a random pattern
/// and holes, plus the pattern (as the parent made it before fork).
struct Target {
    peer: Peer,
    addr: usize,
    pattern: Vec<u8>,
    _region: Mapping,
}

fn spawn_target(rng: &mut Rng) -> Result<Target, Failure> {
    let ps = page_size();
    let mut region = Mapping::new(PAGES * ps, libc::PROT_READ | libc::PROT_WRITE)?;
    rng.fill(region.bytes_mut());
    let pattern = region.bytes().to_vec();
    let addr = region.addr();
    let mut peer = Peer::spawn(move |mut c| {
        // The child's copy of the region gets the holes.
        // SAFETY: pages of the child's own copy of the region.
        unsafe {
            libc::munmap((addr + R_HOLE * ps) as *mut _, ps);
            libc::mprotect((addr + R_NONE * ps) as *mut _, ps, libc::PROT_NONE);
            libc::mprotect((addr + R_RO * ps) as *mut _, ps, libc::PROT_READ);
        }
        c.send(&[1])?;
        c.wait()
    })?;
    peer.recv()?;
    Ok(Target {
        peer,
        addr,
        pattern,
        _region: region,
    })
}

/// The caller's region, with its holes.
fn local_region() -> Result<Mapping, Failure> {
    let ps = page_size();
    let m = Mapping::new(PAGES * ps, libc::PROT_READ | libc::PROT_WRITE)?;
    m.punch(L_HOLE * ps, ps)?;
    m.protect(L_NONE * ps, ps, libc::PROT_NONE)?;
    m.protect(L_RO * ps, ps, libc::PROT_READ)?;
    Ok(m)
}

/// Reads the caller's region page by page: `None` for pages it cannot read.
fn snapshot_local(m: &Mapping) -> Vec<Option<Vec<u8>>> {
    let ps = page_size();
    (0..PAGES)
        .map(|p| {
            (p != L_HOLE && p != L_NONE).then(|| {
                // SAFETY: a readable page of the mapping.
                unsafe { std::slice::from_raw_parts((m.addr() + p * ps) as *const u8, ps) }.to_vec()
            })
        })
        .collect()
}

/// Fills the caller's writable pages with `byte`.
fn reset_local(m: &Mapping, byte: u8) {
    let ps = page_size();
    for p in (0..PAGES).filter(|p| ![L_HOLE, L_NONE, L_RO].contains(p)) {
        // SAFETY: a writable page of the mapping.
        unsafe { std::ptr::write_bytes((m.addr() + p * ps) as *mut u8, byte, ps) };
    }
}

/// One page of the target, by the raw system call.
fn raw_page(pid: i32, addr: usize, buf: &mut [u8], write: bool) -> bool {
    let l = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let r = libc::iovec {
        iov_base: addr as *mut _,
        iov_len: buf.len(),
    };
    let a = Args::new(
        write,
        pid as i64,
        std::slice::from_ref(&l),
        std::slice::from_ref(&r),
    );
    raw(&a).0 == buf.len() as isize
}

/// The target's region, page by page, as the raw system call reads it.
fn snapshot_remote(t: &Target) -> Vec<Option<Vec<u8>>> {
    let ps = page_size();
    (0..PAGES)
        .map(|p| {
            let mut buf = vec![0u8; ps];
            raw_page(t.peer.pid, t.addr + p * ps, &mut buf, false).then_some(buf)
        })
        .collect()
}

/// Puts the pattern back into the target's writable pages.
fn reset_remote(t: &Target) {
    let ps = page_size();
    for p in 0..PAGES {
        let mut page = t.pattern[p * ps..(p + 1) * ps].to_vec();
        raw_page(t.peer.pid, t.addr + p * ps, &mut page, true);
    }
}

/// Random iovecs over `region` (which has `PAGES` pages): mostly inside it,
/// some running off its end, some empty, now and then a wild one.
fn random_iovecs(rng: &mut Rng, region: usize) -> Vec<libc::iovec> {
    let ps = page_size();
    let n = [0, 1, 1, 1, 2, 2, 3, 4, 6, 9, 17][rng.below(11)];
    (0..n)
        .map(|_| {
            let base = region + rng.below(PAGES * ps);
            let len = match rng.below(12) {
                0 => 0,
                1..=4 => 1 + rng.below(64),
                5..=8 => rng.below(2 * ps),
                9 | 10 => rng.below(8 * ps),
                _ => rng.below(PAGES * ps),
            };
            let (base, len) = match rng.below(60) {
                0 => (0, 16),
                1 => (KERNEL_ADDRESS, 64),
                2 => (base, isize::MAX as usize),
                3 => (base, usize::MAX),
                _ => (base, len),
            };
            libc::iovec {
                iov_base: base as *mut _,
                iov_len: len,
            }
        })
        .collect()
}

/// Runs `a` all three ways; `before` resets state and `after` captures what
/// the call changed. All three must agree.
fn same_three<S: PartialEq + std::fmt::Debug>(
    a: &Args,
    mut before: impl FnMut(),
    mut after: impl FnMut() -> S,
    what: &str,
) -> TestResult {
    let mut first: Option<(Outcome, S)> = None;
    for (name, way) in WAYS {
        before();
        let out = way(a);
        let state = after();
        match &first {
            None => first = Some((out, state)),
            Some((o, s)) => {
                if *o != out {
                    return Err(Failure::Fail(format!(
                        "{what}: {name} gave {out:?}, the system call {o:?}; {a:?}"
                    )));
                }
                if *s != state {
                    return Err(Failure::Fail(format!(
                        "{what}: {name} left other bytes than the system call ({out:?}); {a:?}"
                    )));
                }
            }
        }
    }
    Ok(())
}

fn random_layouts(write: bool) -> TestResult {
    let seed = 0xc0ffee ^ (write as u64);
    let mut rng = Rng::new(seed);
    let t = spawn_target(&mut rng)?;
    let local = local_region()?;
    let mut fill = vec![0u8; PAGES * page_size()];
    rng.fill(&mut fill);
    let (mut partial, mut errors, mut full) = (0, 0, 0);
    for i in 0..400 {
        let l = random_iovecs(&mut rng, local.addr());
        let r = random_iovecs(&mut rng, t.addr);
        let a = Args::new(write, t.peer.pid as i64, &l, &r);
        let want = l
            .iter()
            .map(|v| v.iov_len)
            .fold(0usize, usize::saturating_add);
        let what = format!("case {i} (seed {seed:#x})");
        if write {
            // The caller's pages hold a pattern; the target's are reset.
            reset_local(&local, 0x5a);
            same_three(&a, || reset_remote(&t), || snapshot_remote(&t), &what)?;
        } else {
            same_three(
                &a,
                || reset_local(&local, fill[i % fill.len()]),
                || snapshot_local(&local),
                &what,
            )?;
        }
        match raw(&a) {
            (-1, _) => errors += 1,
            (n, _) if (n as usize) < want => partial += 1,
            _ => full += 1,
        }
    }
    println!("# 400 layouts: {full} complete, {partial} partial, {errors} errors");
    check!(
        full > 50 && partial > 20 && errors > 20,
        "the layouts do not cover complete, partial and failed copies"
    );
    Ok(())
}

/// An iovec array ending `n` elements before an unmapped page, so that the
/// kernel's read of it faults past those elements.
struct Straddle {
    m: Mapping,
}

impl Straddle {
    fn new() -> Result<Straddle, Failure> {
        let ps = page_size();
        let m = Mapping::new(2 * ps, libc::PROT_READ | libc::PROT_WRITE)?;
        m.punch(ps, ps)?;
        Ok(Straddle { m })
    }

    /// Writes `iovs` so that they end at the hole; returns their address.
    fn put(&mut self, iovs: &[libc::iovec]) -> usize {
        let ps = page_size();
        let size = std::mem::size_of::<libc::iovec>();
        let start = ps - std::mem::size_of_val(iovs);
        for (i, v) in iovs.iter().enumerate() {
            let at = start + i * size;
            self.m.bytes_mut()[at..at + 8].copy_from_slice(&(v.iov_base as u64).to_ne_bytes());
            self.m.bytes_mut()[at + 8..at + 16].copy_from_slice(&(v.iov_len as u64).to_ne_bytes());
        }
        self.m.addr() + start
    }
}

fn iov(base: usize, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: base as *mut _,
        iov_len: len,
    }
}

/// A pid that no process has: a child's, after it was reaped.
fn dead_pid() -> Result<i64, Failure> {
    // SAFETY: the child only exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: leave at once, running nothing of the parent's.
        unsafe { libc::_exit(0) };
    }
    crate::util::wait_child(pid)?;
    Ok(pid as i64)
}

/// Each case both ways (read and write), the three ways each.
fn same_both(mut a: Args, buf: &Mapping, what: &str) -> TestResult {
    for write in [false, true] {
        a.write = write;
        let what = format!("{what} ({})", if write { "write" } else { "read" });
        same_three(&a, || reset_local(buf, 0x11), || snapshot_local(buf), &what)?;
    }
    Ok(())
}

/// A named case: local iovecs, remote iovecs, pid, flags.
type Case = (&'static str, Vec<libc::iovec>, Vec<libc::iovec>, i64, u64);

fn pvm_diff_bad_arguments() -> TestResult {
    let ps = page_size();
    let mut rng = Rng::new(7);
    let t = spawn_target(&mut rng)?;
    let buf = local_region()?;
    let mut straddle = Straddle::new()?;
    let dead = dead_pid()?;
    let b = buf.addr();
    let r0 = t.addr;
    let (good_l, good_r) = ([iov(b, 100), iov(b + ps, 50)], [iov(r0, 150)]);
    let big = usize::MAX / 2 + 1; // negative as ssize_t
    let kernel = KERNEL_ADDRESS;
    let unmapped = crate::util::unmapped_address()?;
    let pid = t.peer.pid as i64;
    // (what, local iovecs, remote iovecs, pid, flags)
    let cases: Vec<Case> = vec![
        ("good", good_l.to_vec(), good_r.to_vec(), pid, 0),
        ("flags", good_l.to_vec(), good_r.to_vec(), pid, 1),
        (
            "flags, dead pid",
            good_l.to_vec(),
            good_r.to_vec(),
            dead,
            1 << 40,
        ),
        (
            "no local iovecs, dead pid",
            vec![],
            good_r.to_vec(),
            dead,
            0,
        ),
        (
            "zero local total, dead pid",
            vec![iov(b, 0), iov(0, 0)],
            good_r.to_vec(),
            dead,
            0,
        ),
        (
            "no remote iovecs, dead pid",
            good_l.to_vec(),
            vec![],
            dead,
            0,
        ),
        (
            "zero remote total, dead pid",
            good_l.to_vec(),
            vec![iov(r0, 0)],
            dead,
            0,
        ),
        ("dead pid", good_l.to_vec(), good_r.to_vec(), dead, 0),
        ("pid 0", good_l.to_vec(), good_r.to_vec(), 0, 0),
        ("pid -1", good_l.to_vec(), good_r.to_vec(), -1, 0),
        (
            "pid with high bits",
            good_l.to_vec(),
            good_r.to_vec(),
            pid | (1 << 40),
            0,
        ),
        (
            "negative local length",
            vec![iov(b, 10), iov(b, big)],
            good_r.to_vec(),
            pid,
            0,
        ),
        (
            "negative local length, dead",
            vec![iov(b, big)],
            good_r.to_vec(),
            dead,
            0,
        ),
        (
            "negative remote length",
            good_l.to_vec(),
            vec![iov(r0, 8), iov(r0, big)],
            pid,
            0,
        ),
        (
            "negative remote, dead",
            good_l.to_vec(),
            vec![iov(r0, big)],
            dead,
            0,
        ),
        (
            "local sum overflows",
            vec![iov(b, isize::MAX as usize), iov(b, isize::MAX as usize)],
            good_r.to_vec(),
            pid,
            0,
        ),
        (
            "remote sum overflows",
            good_l.to_vec(),
            vec![iov(r0, isize::MAX as usize), iov(r0, isize::MAX as usize)],
            pid,
            0,
        ),
        (
            "one huge local range",
            vec![iov(b, isize::MAX as usize)],
            good_r.to_vec(),
            pid,
            0,
        ),
        (
            "local past MAX_RW_COUNT",
            vec![iov(b, cma::sys::CMA_COPY1_MAX as usize), iov(b, 4096)],
            good_r.to_vec(),
            pid,
            0,
        ),
        (
            "kernel local buffer",
            vec![iov(kernel, 64)],
            good_r.to_vec(),
            pid,
            0,
        ),
        (
            "kernel local buffer, dead",
            vec![iov(kernel, 64), iov(b, 8)],
            good_r.to_vec(),
            dead,
            0,
        ),
        (
            "kernel remote buffer",
            good_l.to_vec(),
            vec![iov(kernel, 64)],
            pid,
            0,
        ),
        (
            "NULL remote (UCX probe)",
            vec![iov(b, 16)],
            vec![iov(0, 16)],
            pid,
            0,
        ),
        (
            "NULL remote, dead pid",
            vec![iov(b, 16)],
            vec![iov(0, 16)],
            dead,
            0,
        ),
        ("NULL local", vec![iov(0, 16)], good_r.to_vec(), pid, 0),
        (
            "unmapped local",
            vec![iov(unmapped, 16)],
            good_r.to_vec(),
            pid,
            0,
        ),
        (
            "unmapped remote",
            good_l.to_vec(),
            vec![iov(unmapped, 16)],
            pid,
            0,
        ),
        (
            "remote wraps around",
            good_l.to_vec(),
            vec![iov(usize::MAX - 8, 64)],
            pid,
            0,
        ),
        (
            "local wraps around",
            vec![iov(usize::MAX - 8, 64)],
            good_r.to_vec(),
            pid,
            0,
        ),
    ];
    for (what, l, r, pid, flags) in &cases {
        let a = Args {
            flags: *flags,
            ..Args::new(false, *pid, l, r)
        };
        same_both(a, &buf, what)?;
    }
    // The arrays themselves: NULL, unmapped, straddling a hole, too long.
    let good = Args::new(false, pid, &good_l, &good_r);
    let many = vec![iov(b, 1); 1025];
    let mut arrays: Vec<(&str, Args)> = vec![
        ("local array NULL", Args { lvec: 0, ..good }),
        (
            "local array NULL, dead pid",
            Args {
                lvec: 0,
                pid: dead,
                ..good
            },
        ),
        ("remote array NULL", Args { rvec: 0, ..good }),
        (
            "remote array NULL, no local",
            Args {
                rvec: 0,
                liovcnt: 0,
                ..good
            },
        ),
        (
            "local array unmapped",
            Args {
                lvec: unmapped,
                ..good
            },
        ),
        (
            "remote array in the kernel",
            Args {
                rvec: kernel,
                ..good
            },
        ),
        (
            "1025 local iovecs",
            Args {
                lvec: many.as_ptr() as usize,
                liovcnt: (cma::sys::CMA_MAX_IOV + 1).into(),
                ..good
            },
        ),
        (
            "1024 local iovecs",
            Args {
                lvec: many.as_ptr() as usize,
                liovcnt: cma::sys::CMA_MAX_IOV.into(),
                ..good
            },
        ),
        (
            "1025 remote iovecs",
            Args {
                rvec: many.as_ptr() as usize,
                riovcnt: 1025,
                ..good
            },
        ),
        (
            "1025 remote, no local",
            Args {
                riovcnt: 1025,
                liovcnt: 0,
                ..good
            },
        ),
        (
            "local count 2^32 + 1",
            Args {
                liovcnt: (1 << 32) + 1,
                ..good
            },
        ),
        (
            "remote count 2^32 + 1",
            Args {
                riovcnt: (1 << 32) + 1,
                ..good
            },
        ),
        (
            "local count 2^32",
            Args {
                liovcnt: 1 << 32,
                pid: dead,
                ..good
            },
        ),
    ];
    // Arrays that run into a hole: a bad length before the hole decides.
    let s1 = straddle.put(&[iov(b, 8), iov(b, big)]);
    arrays.push((
        "local array: bad length, then hole",
        Args {
            lvec: s1,
            liovcnt: 3,
            ..good
        },
    ));
    let s2 = straddle.put(&[iov(b, 8), iov(b, 8)]);
    arrays.push((
        "local array runs into a hole",
        Args {
            lvec: s2,
            liovcnt: 3,
            ..good
        },
    ));
    let s3 = straddle.put(&[iov(r0, 8)]);
    arrays.push((
        "remote array runs into a hole",
        Args {
            rvec: s3,
            riovcnt: 2,
            ..good
        },
    ));
    for (what, a) in arrays {
        same_both(a, &buf, what)?;
    }
    Ok(())
}

/// The target itself, a zombie, and another thread of the caller.
fn pvm_diff_targets() -> TestResult {
    let buf = local_region()?;
    let ps = page_size();
    let src = Mapping::new(ps, libc::PROT_READ | libc::PROT_WRITE)?;
    let (l, r) = ([iov(buf.addr(), 64)], [iov(src.addr(), 64)]);
    let args = |pid: i64| Args::new(false, pid, &l, &r);
    // SAFETY: getpid/gettid have no preconditions.
    let me = unsafe { libc::getpid() } as i64;
    same_both(args(me), &buf, "own pid")?;
    // SAFETY: the child only exits; it stays a zombie until reaped below.
    let zombie = unsafe { libc::fork() };
    if zombie == 0 {
        // SAFETY: leave at once.
        unsafe { libc::_exit(0) };
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let r1 = same_both(args(zombie as i64), &buf, "zombie");
    crate::util::wait_child(zombie)?;
    r1?;
    let (tx, rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let th = std::thread::spawn(move || {
        // SAFETY: no preconditions.
        let _ = tx.send(unsafe { libc::gettid() });
        let _ = done_rx.recv();
    });
    let tid = rx.recv().map_err(|e| Failure::Fail(e.to_string()))? as i64;
    let r2 = same_both(args(tid), &buf, "another thread of the caller");
    let _ = done_tx.send(());
    let _ = th.join();
    r2?;
    // init: as root, reachable (and address 0x1000 unmapped there).
    let low = [iov(0x1000, 16)];
    same_both(
        Args {
            rvec: low.as_ptr() as usize,
            ..args(1)
        },
        &buf,
        "init",
    )
}

/// As an unprivileged caller: a root process and a setuid program are
/// refused (EPERM) before any address is looked at, whatever the iovecs.
fn pvm_diff_unprivileged_targets() -> TestResult {
    crate::perm::needs_root()?;
    let prog = crate::perm::setuid_sleep()?;
    let mut suid = Command::new(&prog)
        .arg("60")
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()?;
    let suid_pid = suid.id() as i64;
    let _ = crate::util::wait_for_comm(suid_pid as i32, "sleep");
    // SAFETY: no preconditions.
    let root_pid = unsafe { libc::getpid() } as i64;
    let result = crate::util::in_child(move || {
        crate::util::become_nobody()?;
        let buf = local_region()?;
        let l = [iov(buf.addr(), 16)];
        for (what, pid) in [("root process", root_pid), ("setuid program", suid_pid)] {
            for r in [[iov(0, 16)], [iov(0x1000, 16)]] {
                let a = Args::new(false, pid, &l, &r);
                same_both(a, &buf, what)?;
                check_eq!(raw(&a), (-1, libc::EPERM));
            }
        }
        Ok(())
    });
    let _ = suid.kill();
    let _ = suid.wait();
    let _ = std::fs::remove_dir_all(prog.parent().unwrap());
    result
}

/// The probes MPI libraries make, on a live peer.
fn pvm_diff_client_probes() -> TestResult {
    let mut rng = Rng::new(3);
    let t = spawn_target(&mut rng)?;
    let buf = local_region()?;
    let pid = t.peer.pid as i64;
    let mine = buf.addr();
    // SAFETY: no preconditions.
    let me = unsafe { libc::getpid() } as i64;
    let zero = [iov(mine, 0)];
    let eight = [iov(mine, 8)];
    let pid_word = [iov(mine, 4)];
    let in_peer = [iov(t.addr, 4)];
    let cases: Vec<(&str, Args)> = vec![
        // PSM3 and LTP: a zero-length call (no iovecs, or empty ones).
        (
            "zero-length, no iovecs",
            Args {
                write: false,
                pid,
                lvec: 0,
                liovcnt: 0,
                rvec: 0,
                riovcnt: 0,
                flags: 0,
            },
        ),
        (
            "zero-length, empty iovec",
            Args::new(false, pid, &zero, &zero),
        ),
        // UCX: 8 bytes written to itself.
        ("UCX self write", Args::new(true, me, &eight, &eight)),
        // libfabric: its pid written into the peer.
        (
            "libfabric pid write",
            Args::new(true, pid, &pid_word, &in_peer),
        ),
    ];
    for (what, a) in cases {
        same_three(
            &a,
            || reset_local(&buf, 0x22),
            || snapshot_local(&buf),
            what,
        )?;
    }
    Ok(())
}

/// Where the helper target maps its buffer (fixed, so a reader in another
/// process knows it).
pub const HELPER_ADDR: usize = 0x5a5a_0000_0000;
/// The helper buffer's size.
pub const HELPER_LEN: usize = 64 * 1024;

/// The helpers this suite starts as separate processes, so that they load
/// the preload library themselves: `cma-selftest --pvm-helper ...`.
pub fn helper(args: &[String]) -> i32 {
    let arg = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match arg(0) {
        // target BYTE [fork]: map the buffer filled with BYTE, say
        // "ready PID", then obey stdin: "prctl-any", "exec BYTE", "exit".
        "target" => {
            let byte: u8 = arg(1).parse().unwrap_or(0);
            // SAFETY: a fresh anonymous mapping at an address nothing uses.
            let p = unsafe {
                libc::mmap(
                    HELPER_ADDR as *mut _,
                    HELPER_LEN,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if p as usize != HELPER_ADDR {
                return 1;
            }
            // SAFETY: the mapping just made.
            unsafe { std::ptr::write_bytes(p as *mut u8, byte, HELPER_LEN) };
            if arg(2) == "fork" {
                // SAFETY: the child goes on below; the parent waits for it.
                let child = unsafe { libc::fork() };
                if child > 0 {
                    return crate::util::wait_child(child).unwrap_or(1);
                }
            }
            // SAFETY: no preconditions.
            println!("ready {}", unsafe { libc::getpid() });
            let _ = std::io::stdout().flush();
            for line in std::io::stdin().lines() {
                let line = line.unwrap_or_default();
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["prctl-any"] => {
                        // SAFETY: plain prctl with integer arguments.
                        unsafe {
                            libc::prctl(libc::PR_SET_PTRACER, libc::PR_SET_PTRACER_ANY, 0, 0, 0)
                        };
                        println!("done");
                        let _ = std::io::stdout().flush();
                    }
                    ["exec", b] => {
                        let e = Command::new("/proc/self/exe")
                            .args(["--pvm-helper", "target", b])
                            .exec();
                        eprintln!("exec: {e}");
                        return 1;
                    }
                    _ => return 0,
                }
            }
            0
        }
        // read PID COUNT: COUNT reads of the helper buffer through glibc's
        // process_vm_readv; exits 0 if each read all of it, else errno.
        "read" => {
            let pid: i32 = arg(1).parse().unwrap_or(0);
            let count: usize = arg(2).parse().unwrap_or(1);
            let mut buf = vec![0u8; HELPER_LEN];
            for _ in 0..count {
                let l = iov(buf.as_mut_ptr() as usize, HELPER_LEN);
                let r = iov(HELPER_ADDR, HELPER_LEN);
                // SAFETY: reads into our own buffer.
                let n = unsafe { libc::process_vm_readv(pid, &l, 1, &r, 1, 0) };
                if n != HELPER_LEN as isize {
                    return errno().max(1);
                }
            }
            println!("byte {}", buf[0]);
            0
        }
        // maps PID: repeated reads and writes of the helper buffer into one
        // local buffer, driven from stdin (see `MapsReader`).
        "maps" => maps_helper(arg(1).parse().unwrap_or(0)),
        _ => 2,
    }
}

/// The `maps` helper: one local buffer and one pair of iovec arrays, kept at
/// the same addresses, so that its calls repeat; each line of stdin is a
/// step, answered with one line: `read N` (N reads: `ok N BYTE` or `err
/// ERRNO`), `write N BYTE` (the buffer filled with BYTE, N writes: `ok N`
/// or `err ERRNO`), `protect-ro` (the buffer made read-only in place),
/// `unmap`, `map-ro`, `map-rw` (the local buffer unmapped, or mapped anew
/// read-only or read-write at the same address).
fn maps_helper(pid: i32) -> i32 {
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    let new_buf = |at: usize, prot: i32| {
        let fixed = if at == 0 { 0 } else { libc::MAP_FIXED };
        // SAFETY: a fresh anonymous mapping, at the address of our own
        // buffer (unmapped, or replaced) when `at` is not 0.
        unsafe {
            libc::mmap(
                at as *mut _,
                HELPER_LEN,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | fixed,
                -1,
                0,
            ) as usize
        }
    };
    let buf = new_buf(0, rw);
    if buf == libc::MAP_FAILED as usize {
        return 1;
    }
    let l = Box::new(iov(buf, HELPER_LEN));
    let r = Box::new(iov(HELPER_ADDR, HELPER_LEN));
    let answer = |line: String| {
        println!("{line}");
        let _ = std::io::stdout().flush();
    };
    for line in std::io::stdin().lines() {
        let line = line.unwrap_or_default();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["read", n] => {
                let n: usize = n.parse().unwrap_or(0);
                let failed = (0..n).find_map(|_| {
                    // SAFETY: the local iovec is our buffer (or, after
                    // `unmap`/`map-ro`, memory the call must refuse).
                    let k = unsafe { libc::process_vm_readv(pid, &*l, 1, &*r, 1, 0) };
                    (k != HELPER_LEN as isize).then(errno)
                });
                answer(match failed {
                    // SAFETY: the reads succeeded, so the buffer is mapped
                    // and readable.
                    None => format!("ok {n} {}", unsafe { *(buf as *const u8) }),
                    Some(e) => format!("err {e}"),
                });
            }
            ["write", n, b] => {
                let n: usize = n.parse().unwrap_or(0);
                let b: u8 = b.parse().unwrap_or(0);
                // SAFETY: our buffer, mapped read-write in this step.
                unsafe { std::ptr::write_bytes(buf as *mut u8, b, HELPER_LEN) };
                let failed = (0..n).find_map(|_| {
                    // SAFETY: writes from our buffer.
                    let k = unsafe { libc::process_vm_writev(pid, &*l, 1, &*r, 1, 0) };
                    (k != HELPER_LEN as isize).then(errno)
                });
                answer(match failed {
                    None => format!("ok {n}"),
                    Some(e) => format!("err {e}"),
                });
            }
            ["unmap"] => {
                // SAFETY: our own buffer; the calls that follow must refuse it.
                let r = unsafe { libc::munmap(buf as *mut _, HELPER_LEN) };
                answer(if r == 0 {
                    "ok".into()
                } else {
                    format!("err {}", errno())
                });
            }
            ["protect-ro"] => {
                // SAFETY: our own buffer, made read-only in place (no new
                // mapping: only its page tables change).
                let r = unsafe { libc::mprotect(buf as *mut _, HELPER_LEN, libc::PROT_READ) };
                answer(if r == 0 {
                    "ok".into()
                } else {
                    format!("err {}", errno())
                });
            }
            ["map-ro"] | ["map-rw"] => {
                let prot = if words[0] == "map-ro" {
                    libc::PROT_READ
                } else {
                    rw
                };
                let ok = new_buf(buf, prot) == buf;
                answer(if ok {
                    "ok".into()
                } else {
                    format!("err {}", errno())
                });
            }
            _ => break,
        }
    }
    0
}

/// A helper target with its stdin and stdout held.
struct HelperTarget {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
    pid: i32,
}

impl HelperTarget {
    fn start(
        byte: u8,
        fork: bool,
        env: &[(&str, &str)],
        uid: Option<u32>,
    ) -> Result<Self, Failure> {
        let mut cmd = Command::new("/proc/self/exe");
        cmd.args(["--pvm-helper", "target", &byte.to_string()]);
        if fork {
            cmd.arg("fork");
        }
        cmd.envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        if let Some(u) = uid {
            cmd.uid(u).gid(u);
        }
        let mut child = cmd.spawn()?;
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line)?;
        let pid = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .ok_or_else(|| Failure::Fail(format!("helper target said {line:?}")))?;
        Ok(HelperTarget { child, out, pid })
    }

    fn say(&mut self, what: &str) -> Result<String, Failure> {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{what}")?;
        stdin.flush()?;
        let mut line = String::new();
        self.out.read_line(&mut line)?;
        Ok(line)
    }
}

impl Drop for HelperTarget {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the reader helper (as `uid` if given) with the report written to a
/// file; returns its exit status, what it printed and the report line.
/// With `hide_device`, the reader runs in a mount namespace of its own with
/// an empty /dev: as on a machine without the module.
fn read_with_report(
    pid: i32,
    count: usize,
    uid: Option<u32>,
    hide_device: bool,
) -> Result<(i32, String, String), Failure> {
    let report = std::env::temp_dir().join(format!("cma-preload-{}-{pid}", std::process::id()));
    let _ = std::fs::remove_file(&report);
    let mut cmd = Command::new("/proc/self/exe");
    cmd.args(["--pvm-helper", "read", &pid.to_string(), &count.to_string()])
        .env("CMA_PRELOAD_STATS", &report);
    if let Some(u) = uid {
        cmd.uid(u).gid(u);
        // The report file must be writable by the reader.
        std::fs::write(&report, "")?;
        std::os::unix::fs::chown(&report, Some(u), Some(u))?;
    }
    if hide_device {
        // SAFETY: between fork and exec, only system calls: a private mount
        // namespace, and a tmpfs over /dev in it.
        unsafe {
            cmd.pre_exec(|| {
                let ok = libc::unshare(libc::CLONE_NEWNS) == 0
                    && libc::mount(
                        std::ptr::null(),
                        c"/".as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) == 0
                    && libc::mount(
                        c"none".as_ptr(),
                        c"/dev".as_ptr(),
                        c"tmpfs".as_ptr(),
                        0,
                        std::ptr::null(),
                    ) == 0;
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        };
    }
    let out = cmd.output()?;
    let line = std::fs::read_to_string(&report).unwrap_or_default();
    let _ = std::fs::remove_file(&report);
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        line,
    ))
}

/// The value of `key=` in a report line.
fn field(line: &str, key: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn preload_counts_every_call() -> TestResult {
    let t = HelperTarget::start(0x31, false, &[], None)?;
    let (status, out, line) = read_with_report(t.pid, 10, None, false)?;
    check_eq!(status, 0);
    check_eq!(out.trim(), "byte 49");
    check!(line.starts_with("cma-preload: "), "no report: {line:?}");
    check_eq!(field(&line, "cma"), Some(10));
    check_eq!(field(&line, "bytes"), Some(10 * HELPER_LEN as u64));
    check_eq!(field(&line, "fallback"), Some(0));
    check_eq!(field(&line, "failed"), Some(0));
    // A failed call is counted as failed, with its errno.
    let dead = dead_pid()? as i32;
    let (status, _, line) = read_with_report(dead, 1, None, false)?;
    check_eq!(status, libc::ESRCH);
    check_eq!(field(&line, "failed.ESRCH"), Some(1));
    check_eq!(field(&line, "cma"), Some(0));
    Ok(())
}

/// An unprivileged reader of the helper target `t` (holding `byte`) makes
/// `count` reads: each must read all of it, and all through /dev/cma.
fn nobody_reads_through_cma(t: &HelperTarget, byte: u8, count: u64) -> TestResult {
    let (status, out, line) = read_with_report(t.pid, count as usize, Some(NOBODY), false)?;
    check_eq!(status, 0);
    check_eq!(out.trim(), format!("byte {byte}"));
    check_eq!(field(&line, "cma"), Some(count));
    check_eq!(field(&line, "fallback"), Some(0));
    Ok(())
}

fn preload_consents_by_default() -> TestResult {
    crate::perm::needs_root()?;
    // Two unrelated unprivileged processes: process_vm_readv alone would be
    // refused by Yama (scope 1) unless the target named a ptracer.
    let t = HelperTarget::start(0x41, false, &[], Some(NOBODY))?;
    nobody_reads_through_cma(&t, 0x41, 3)?;
    // With the default turned off, /dev/cma refuses and the real system
    // call runs (and is refused or not by its own rules).
    let t = HelperTarget::start(0x42, false, &[("CMA_PRELOAD_GRANT", "0")], Some(NOBODY))?;
    let (_, _, line) = read_with_report(t.pid, 1, Some(NOBODY), false)?;
    check_eq!(field(&line, "cma"), Some(0));
    check_eq!(field(&line, "fallback.eperm"), Some(1));
    Ok(())
}

fn preload_prctl_ptracer_consents() -> TestResult {
    crate::perm::needs_root()?;
    let mut t = HelperTarget::start(0x43, false, &[("CMA_PRELOAD_GRANT", "0")], Some(NOBODY))?;
    check_eq!(t.say("prctl-any")?.trim(), "done");
    nobody_reads_through_cma(&t, 0x43, 2)
}

fn preload_fork_child_consents() -> TestResult {
    crate::perm::needs_root()?;
    // The target forks without exec: the child must consent on its own.
    let t = HelperTarget::start(0x44, true, &[], Some(NOBODY))?;
    nobody_reads_through_cma(&t, 0x44, 2)
}

fn preload_falls_back_without_device() -> TestResult {
    crate::perm::needs_root()?;
    let t = HelperTarget::start(0x47, false, &[], None)?;
    let (status, out, line) = read_with_report(t.pid, 4, None, true)?;
    check_eq!(status, 0);
    check_eq!(out.trim(), "byte 71");
    check_eq!(field(&line, "cma"), Some(0));
    check_eq!(field(&line, "fallback.no-device"), Some(4));
    check_eq!(field(&line, "failed"), Some(0));
    Ok(())
}

/// The `maps` helper, reading from the helper target `pid`, with its report
/// going to a file.
struct MapsReader {
    helper: HelperTarget,
    report: std::path::PathBuf,
}

impl MapsReader {
    fn start(pid: i32) -> Result<MapsReader, Failure> {
        let report = std::env::temp_dir().join(format!("cma-maps-{}-{pid}", std::process::id()));
        let _ = std::fs::remove_file(&report);
        let mut child = Command::new("/proc/self/exe")
            .args(["--pvm-helper", "maps", &pid.to_string()])
            .env("CMA_PRELOAD_STATS", &report)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let out = BufReader::new(child.stdout.take().unwrap());
        Ok(MapsReader {
            helper: HelperTarget { child, out, pid: 0 },
            report,
        })
    }

    /// Ends the helper; its report line.
    fn finish(mut self) -> Result<String, Failure> {
        drop(self.helper.child.stdin.take());
        let status = self.helper.child.wait()?;
        check!(status.success(), "the maps helper ended with {status}");
        let line = std::fs::read_to_string(&self.report).unwrap_or_default();
        let _ = std::fs::remove_file(&self.report);
        Ok(line)
    }
}

/// Repeated calls are served from maps (the report counts them), and give
/// exactly what the system call gives at each step: after the reader
/// makes its buffer read-only, unmaps it, or maps it anew read-only,
/// `EFAULT` (a `memcpy()` into it would kill the reader); after it maps it again, its bytes; writes land;
/// after the target execs, the new image's bytes. Without the module's
/// `caller_generation` (the proof that the local buffer is still mapped),
/// the reader dies at the first `unmap`.
fn preload_maps_serve_repeats_exactly() -> TestResult {
    if !cma::Device::open()?
        .info()?
        .features
        .contains(cma::Features::MAP)
    {
        return Err(Failure::Skip("the module has no maps".into()));
    }
    let mut t = HelperTarget::start(0x41, false, &[], None)?;
    let mut r = MapsReader::start(t.pid)?;
    let efault = format!("err {}", libc::EFAULT);
    let steps: [(&str, String); 12] = [
        ("read 8", "ok 8 65".into()),
        ("protect-ro", "ok".into()),
        ("read 2", efault.clone()),
        ("map-rw", "ok".into()),
        ("read 6", "ok 6 65".into()),
        ("unmap", "ok".into()),
        ("read 2", efault.clone()),
        ("map-ro", "ok".into()),
        ("read 2", efault),
        ("map-rw", "ok".into()),
        ("read 6", "ok 6 65".into()),
        ("write 6 66", "ok 6".into()),
    ];
    for (step, want) in steps {
        check_eq!(r.helper.say(step)?.trim(), want, "step {step:?}");
    }
    check_eq!(
        r.helper.say("read 4")?.trim(),
        "ok 4 66",
        "the writes did not land"
    );
    // A new image behind the pid: the maps of the old one are dead.
    check_eq!(t.say("exec 67")?.trim(), format!("ready {}", t.pid));
    check_eq!(r.helper.say("read 5")?.trim(), "ok 5 67");
    let line = r.finish()?;
    let mapped = field(&line, "mapped").unwrap_or(0);
    // 5 + 5 + 5 + 3 + 4 + 3 when nothing else moves (three calls prove a
    // call before the fourth is served; each change of either side costs
    // one more); at least half of that.
    println!("# {mapped} of 40 calls served from maps: {}", line.trim());
    check!(mapped >= 12, "only {mapped} calls served from maps: {line}");
    check_eq!(field(&line, "failed.EFAULT"), Some(3));
    check_eq!(field(&line, "cma"), Some(35));
    Ok(())
}

fn preload_reattaches_after_exec() -> TestResult {
    let mut t = HelperTarget::start(0x45, false, &[], None)?;
    let read = |pid: i32| -> Result<u8, Failure> {
        let mut b = vec![0u8; HELPER_LEN];
        let l = iov(b.as_mut_ptr() as usize, HELPER_LEN);
        let r = iov(HELPER_ADDR, HELPER_LEN);
        // SAFETY: reads into our own buffer.
        let n = unsafe { libc::process_vm_readv(pid, &l, 1, &r, 1, 0) };
        if n != HELPER_LEN as isize {
            return Err(Failure::Fail(format!(
                "read returned {n}, errno {}",
                errno()
            )));
        }
        Ok(b[0])
    };
    check_eq!(read(t.pid)?, 0x45);
    // The same pid, a new program: the cached peer fd now says ESRCH, and
    // the library attaches to the new image.
    let stdin = t.child.stdin.as_mut().unwrap();
    writeln!(stdin, "exec {}", 0x46)?;
    stdin.flush()?;
    let mut line = String::new();
    t.out.read_line(&mut line)?;
    check_eq!(line.trim(), format!("ready {}", t.pid));
    check_eq!(read(t.pid)?, 0x46);
    Ok(())
}
