//! `review_grant_race_reaped`: the lookups that name a process by pid or
//! pidfd, racing with that process's exit, exec and reaping.
//!
//! `CMA_IOC_GRANT` names its peer by pid: the module found the pid, took
//! its task, and asked for the task's thread-group pid, expecting one
//! (`.expect("task without tgid")`). A task that is being reaped is still
//! found for a moment after `release_task()` has detached its thread-group
//! pid (`__unhash_process()` clears `signal->pids[PIDTYPE_TGID]`), and then
//! the module panicked: a kernel `BUG`. The fixed module answers `ESRCH`
//! there, as for a process already gone.
//!
//! The race is aimed as hard as two CPUs allow: one thread (on CPU 1)
//! starts children that end at once (`clone(CLONE_VM)`, so that starting
//! one costs no page-table copy, and reaping comes thousands of times a
//! second) and reaps each as soon as it is a zombie; another (on CPU 0)
//! grants to the newest child over and over, so that its lookups straddle
//! every reap. Then the same with children that `execve("/bin/true")`, and
//! then the other lookups that take a pid (attach by pid and by pidfd, the
//! probe, copies by pid and pidfd and through a peer fd) against children
//! that consent and then exit or exec. All as uid 1000, unprivileged.
//!
//! Every call must return success or one of the errnos its contract names
//! (grant: `ESRCH`; lookups: `ESRCH`, `EPERM`; copies: also `EFAULT`,
//! `EINTR`, `ENOMEM`, as in `race.rs`), never anything else, and a read
//! that moved bytes must have moved the bytes the child holds. On the module as reviewed the
//! grant race ends in the kernel's `BUG` (the granting thread dies in the
//! kernel; the test then fails, and the runner finds the oops in the
//! kernel log). The window is a few instructions wide, so this is a
//! matter of odds, not of construction: each reap that happens while the
//! granter is between its task lookup and its thread-group lookup hits it.
//! The granter and the reaper are pinned to different CPUs so that they
//! really run at once, and each kind of child gets `CMA_STRESS_SECS`
//! seconds (5 by default) of as many reaps as the machine makes (the test
//! prints how many: each one is a chance).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cma::sys::cma_iovec;
use cma::{Device, Op, Target, Transfer};

use super::{fill, mismatch, race_time, UID};
use crate::copy::iov;
use crate::ktap::{Failure, TestResult};
use crate::perm::needs_root;
use crate::util::{self, Mapping};
use crate::{check, check_eq};

/// How the children end.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum End {
    /// `_exit(0)` at once.
    Exit,
    /// `execve("/bin/true")` at once.
    Exec,
}

/// What the threads of one phase share.
struct Shared {
    dev: Device,
    /// The newest child's pid (0 before the first).
    newest: AtomicI32,
    stop: AtomicBool,
    /// The address of the bait buffer, which every forked child has a copy
    /// of (pattern [`BAIT_SEED`]).
    bait: usize,
}

const BAIT_LEN: usize = 64 << 10;
const BAIT_SEED: u64 = 0x6261_6974;

/// Pins the calling thread to `cpu`, if there are two CPUs to spread over
/// (so that the two racing threads run at the same time, not in turns).
fn pin_to_cpu(cpu: usize) {
    // SAFETY: sysconf has no memory-safety preconditions.
    if unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } < 2 {
        return;
    }
    // SAFETY: an all-zero cpu_set_t is the empty set; CPU_SET writes
    // within it; sched_setaffinity reads it (0: the calling thread). A
    // failure (a cpuset without that CPU) leaves the affinity as it was.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// What a child started with `clone` needs for `execve`, all prepared
/// before it runs (it shares our memory and may not allocate).
#[repr(C)]
struct ExecArgs {
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
}

extern "C" fn child_exit(_: *mut libc::c_void) -> libc::c_int {
    // SAFETY: ends the child (a process of its own, sharing our memory)
    // without touching anything of ours.
    unsafe { libc::_exit(0) }
}

extern "C" fn child_exec(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to the forker's `ExecArgs`, alive (the forker
    // waits for this child) and pointing to NUL-terminated strings and
    // NULL-terminated arrays.
    unsafe {
        let a = &*(arg as *const ExecArgs);
        libc::execve(a.path, a.argv, a.envp);
        libc::_exit(127)
    }
}

/// `/bin/true` as `execve` wants it; the pointers live as long as this.
struct TrueProgram {
    path: CString,
    argv: [*const libc::c_char; 2],
    envp: [*const libc::c_char; 1],
}

impl TrueProgram {
    fn new() -> Box<TrueProgram> {
        let mut p = Box::new(TrueProgram {
            path: CString::new("/bin/true").unwrap(),
            argv: [std::ptr::null(); 2],
            envp: [std::ptr::null()],
        });
        p.argv[0] = p.path.as_ptr();
        p
    }

    fn args(&self) -> ExecArgs {
        ExecArgs {
            path: self.path.as_ptr(),
            argv: self.argv.as_ptr(),
            envp: self.envp.as_ptr(),
        }
    }
}

/// Waits for child `pid` of a forker, which must have exited with 0.
fn reap(pid: i32, end: End) -> Result<(), String> {
    match util::wait_child(pid) {
        Ok(0) => Ok(()),
        Ok(127) if end == End::Exec => Err("execve(\"/bin/true\") failed in a child".into()),
        Ok(s) => Err(format!("child {pid} ({end:?}) ended with status {s}")),
        Err(e) => Err(format!("waitpid({pid}): {e}")),
    }
}

/// The forker of the grant race: starts children with
/// `clone(CLONE_VM | SIGCHLD)` (processes of their own, which end at
/// once), publishes each one's pid, and reaps it. Returns the reaps.
fn clone_children(s: &Shared, end: End) -> Result<u64, String> {
    pin_to_cpu(1);
    let prog = TrueProgram::new();
    let mut args = prog.args();
    // One stack for all children: each is reaped before the next starts.
    let mut stack = vec![0u8; 256 << 10];
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    let cb: extern "C" fn(*mut libc::c_void) -> libc::c_int = match end {
        End::Exit => child_exit,
        End::Exec => child_exec,
    };
    let mut reaps = 0;
    while !s.stop.load(Ordering::Relaxed) {
        // SAFETY: the child runs `cb` on `stack`, which nothing else uses
        // until it is reaped, and only exits or execs (reading `args`).
        let pid = unsafe {
            libc::clone(
                cb,
                top as *mut libc::c_void,
                libc::CLONE_VM | libc::SIGCHLD,
                &mut args as *mut ExecArgs as *mut libc::c_void,
            )
        };
        if pid < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) {
                std::thread::yield_now();
                continue;
            }
            return Err(format!("clone: {e}"));
        }
        s.newest.store(pid, Ordering::Release);
        reap(pid, end)?;
        reaps += 1;
    }
    drop(stack);
    Ok(reaps)
}

/// The forker of the lookup race: `fork`s children (with address spaces of
/// their own, torn down as the lookups run) that consent on the inherited
/// `/dev/cma` and then exit or exec at once; reaps each. Returns the reaps.
fn fork_children(s: &Shared, end: End) -> Result<u64, String> {
    pin_to_cpu(1);
    let prog = TrueProgram::new();
    let args = prog.args();
    let grant = cma::sys::cma_grant::default();
    let fd = s.dev.as_raw_fd();
    let mut reaps = 0;
    while !s.stop.load(Ordering::Relaxed) {
        // SAFETY: the child of a multi-threaded process makes system calls
        // only (ioctl, execve, _exit) on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe {
                libc::ioctl(fd, cma::sys::CMA_IOC_GRANT as _, &grant);
                if end == End::Exec {
                    libc::execve(args.path, args.argv, args.envp);
                    libc::_exit(127);
                }
                libc::_exit(0);
            }
        }
        if pid < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) {
                std::thread::yield_now();
                continue;
            }
            return Err(format!("fork: {e}"));
        }
        s.newest.store(pid, Ordering::Release);
        reap(pid, end)?;
        reaps += 1;
    }
    Ok(reaps)
}

/// Counts of one racer: [calls that succeeded, calls refused].
type Counts = [u64; 2];

/// Grants to the newest child until told to stop. Only success and
/// `ESRCH` may come back. Revokes now and then, so that the process's
/// grants stay under their bound (1024).
fn granter(s: &Shared, _: End) -> Result<Counts, String> {
    pin_to_cpu(0);
    let (mut ok, mut gone, mut since_revoke) = (0u64, 0u64, 0u32);
    while !s.stop.load(Ordering::Relaxed) {
        let pid = s.newest.load(Ordering::Acquire);
        if pid <= 0 {
            std::hint::spin_loop();
            continue;
        }
        match s.dev.grant(Some(pid)) {
            Ok(()) => {
                ok += 1;
                since_revoke += 1;
                if since_revoke == 256 {
                    s.dev.revoke().map_err(|e| format!("revoke: {e}"))?;
                    since_revoke = 0;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => gone += 1,
            Err(e) => {
                return Err(format!(
                    "CMA_IOC_GRANT naming pid {pid} (a child being reaped): {e}; only success \
                     or ESRCH may come back"
                ))
            }
        }
    }
    Ok([ok, gone])
}

/// Whether a lookup (attach, probe, pidfd_open) worked; `ESRCH` and
/// `EPERM` are refusals, anything else a failure.
fn looked_up<T>(res: &io::Result<T>, what: &str, pid: i32) -> Result<bool, String> {
    match res {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::EPERM)) => Ok(false),
        Err(e) => Err(format!("{what} of pid {pid} (exiting or exec'ing): {e}")),
    }
}

/// Whether a copy of `asked` bytes worked, and that what a read moved is
/// the bait's bytes (`local` holds them).
fn copied(
    res: &io::Result<Transfer>,
    asked: u64,
    op: Op,
    local: &[u8],
    what: &str,
    pid: i32,
) -> Result<bool, String> {
    match res {
        Ok(t)
            if t.bytes <= asked
                && (t.error == 0
                    || [libc::EFAULT, libc::EINTR, libc::ENOMEM].contains(&t.error)) =>
        {
            if op == Op::Read {
                if let Some(at) = mismatch(&local[..t.bytes as usize], 0, BAIT_SEED) {
                    return Err(format!(
                        "{what} of pid {pid} read other bytes than the child's at offset {at}"
                    ));
                }
            }
            Ok(true)
        }
        Ok(t) => Err(format!(
            "{what} of pid {pid}: bad transfer {t:?} for {asked} bytes"
        )),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ESRCH | libc::EPERM | libc::EFAULT | libc::EINTR | libc::ENOMEM)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(format!("{what} of pid {pid} (exiting or exec'ing): {e}")),
    }
}

/// Looks the newest child up every way a request can, in turn, until told
/// to stop.
fn looker(s: &Shared, end: End) -> Result<Counts, String> {
    pin_to_cpu(0);
    let mut local = Mapping::new(BAIT_LEN, libc::PROT_READ | libc::PROT_WRITE)
        .map_err(|e| format!("mmap: {e}"))?;
    let mut bait = vec![0u8; BAIT_LEN];
    fill(&mut bait, 0, BAIT_SEED);
    let (mut ok, mut refused) = (0u64, 0u64);
    let mut count = |worked: bool| {
        if worked {
            ok += 1
        } else {
            refused += 1
        }
    };
    let asked = BAIT_LEN as u64;
    let remote = [iov(s.bait, BAIT_LEN)];
    let mut turn = 0u64;
    while !s.stop.load(Ordering::Relaxed) {
        let pid = s.newest.load(Ordering::Acquire);
        if pid <= 0 {
            std::hint::spin_loop();
            continue;
        }
        turn += 1;
        local.bytes_mut().fill(0);
        let l: [cma_iovec; 1] = [iov(local.addr(), BAIT_LEN)];
        let wl = [iov(bait.as_ptr() as usize, BAIT_LEN)];
        match turn % 6 {
            0 => {
                let res = s.dev.attach(Target::Pid(pid));
                count(looked_up(&res, "attach", pid)?);
                if let Ok(peer) = res {
                    // SAFETY: `local` is our own mapping.
                    let res = unsafe { peer.copy_raw(Op::Read, &l, &remote) };
                    count(copied(
                        &res,
                        asked,
                        Op::Read,
                        local.bytes(),
                        "peer read",
                        pid,
                    )?);
                }
            }
            1 => {
                // pidfd_open itself fails with ESRCH for a pid gone, and
                // with EINVAL for one found just as it was being reaped
                // (its struct pid without a task any more): the kernel's
                // answers, not the module's.
                let fd = match cma::pidfd_open(pid) {
                    Ok(fd) => fd,
                    Err(e) if matches!(e.raw_os_error(), Some(libc::ESRCH | libc::EINVAL)) => {
                        count(false);
                        continue;
                    }
                    Err(e) => return Err(format!("pidfd_open({pid}): {e}")),
                };
                let t = Target::PidFd(fd.as_fd());
                let res = s.dev.attach(t);
                count(looked_up(&res, "attach by pidfd", pid)?);
                count(looked_up(&s.dev.probe(t), "probe by pidfd", pid)?);
                // SAFETY: `local` is our own mapping.
                let res = unsafe { s.dev.copy_raw(Op::Read, t, &l, &remote) };
                count(copied(
                    &res,
                    asked,
                    Op::Read,
                    local.bytes(),
                    "read by pidfd",
                    pid,
                )?);
            }
            2 => count(looked_up(&s.dev.probe(Target::Pid(pid)), "probe", pid)?),
            3 | 5 => {
                // SAFETY: `local` is our own mapping.
                let res = unsafe { s.dev.copy_raw(Op::Read, Target::Pid(pid), &l, &remote) };
                count(copied(
                    &res,
                    asked,
                    Op::Read,
                    local.bytes(),
                    "read by pid",
                    pid,
                )?);
            }
            _ if end == End::Exit => {
                // The bait's own bytes, so that every read still sees them.
                // SAFETY: `bait` is only read.
                let res = unsafe { s.dev.copy_raw(Op::Write, Target::Pid(pid), &wl, &remote) };
                count(copied(&res, asked, Op::Write, &[], "write by pid", pid)?);
            }
            _ => {}
        }
    }
    Ok([ok, refused])
}

/// Runs `forker` and `racer` side by side for `time`; returns the reaps
/// and the racer's counts.
fn phase(
    s: &Arc<Shared>,
    forker: fn(&Shared, End) -> Result<u64, String>,
    racer: fn(&Shared, End) -> Result<Counts, String>,
    end: End,
    time: Duration,
) -> Result<(u64, Counts), Failure> {
    s.newest.store(0, Ordering::Release);
    s.stop.store(false, Ordering::Release);
    let (fs, rs) = (s.clone(), s.clone());
    let f = std::thread::spawn(move || forker(&fs, end));
    let r = std::thread::spawn(move || racer(&rs, end));
    // Stop early if either thread fails (or dies).
    let deadline = std::time::Instant::now() + time;
    while std::time::Instant::now() < deadline && !f.is_finished() && !r.is_finished() {
        std::thread::sleep(Duration::from_millis(20));
    }
    s.stop.store(true, Ordering::Release);
    // A thread the kernel killed (an oops in its ioctl) never returns its
    // result: `join` panics then, which fails the test.
    let counts = r
        .join()
        .map_err(|_| Failure::Fail("the racing thread panicked".into()))?;
    let reaps = f
        .join()
        .map_err(|_| Failure::Fail("the forking thread panicked".into()))?;
    let counts = counts.map_err(Failure::Fail)?;
    let reaps = reaps.map_err(Failure::Fail)?;
    Ok((reaps, counts))
}

pub(super) fn grant_race_reaped() -> TestResult {
    needs_root()?;
    util::become_user(UID)?;
    let mut bait = Mapping::new(BAIT_LEN, libc::PROT_READ | libc::PROT_WRITE)?;
    fill(bait.bytes_mut(), 0, BAIT_SEED);
    let s = Arc::new(Shared {
        dev: Device::open()?,
        newest: AtomicI32::new(0),
        stop: AtomicBool::new(false),
        bait: bait.addr(),
    });
    let t = race_time();
    for end in [End::Exit, End::Exec] {
        let (reaps, [ok, gone]) = phase(&s, clone_children, granter, end, t)?;
        println!(
            "# grant race, children that {end:?}: {reaps} children reaped, {ok} grants made, \
             {gone} ESRCH"
        );
        check!(reaps > 0, "{end:?}: no child was started");
        check!(ok + gone > 0, "{end:?}: no grant was tried");
    }
    for end in [End::Exit, End::Exec] {
        let (reaps, [ok, refused]) = phase(&s, fork_children, looker, end, t / 2)?;
        println!(
            "# lookup race, consenting children that {end:?}: {reaps} children reaped, {ok} \
             calls worked, {refused} refused (ESRCH, EPERM, EFAULT)"
        );
        check!(reaps > 0, "{end:?}: no child was started");
        check!(ok + refused > 0, "{end:?}: no lookup was tried");
    }
    // The process's own consent still works after all that.
    s.dev.revoke()?;
    check_eq!(s.dev.grant(None).map_err(|e| e.to_string()), Ok(()));
    drop(bait);
    Ok(())
}
