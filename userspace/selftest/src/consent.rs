//! Consent's registry and how a grant names its peer: by pidfd
//! (`CMA_GRANT_PIDFD`), never reaching a process that took over a recycled
//! pid; one entry per address space; the release of a file shared by many
//! granting processes; and a registry bounded per process, with no budget
//! one person's users can use up for everyone.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use cma::{Device, Features, Target};

use crate::ktap::{expect_errno, Failure, Test, TestResult};
use crate::peer::Peer;
use crate::perm::{needs_root, param};
use crate::util::{self, NOBODY, OTHER_USER};
use crate::{check, check_eq};

/// The tests of this file, in order.
pub const TESTS: &[Test] = crate::tests![
    consent_grant_by_pidfd_names_that_process,
    consent_grant_by_pidfd_never_reaches_a_recycled_pid,
    consent_grant_pidfd_bad_arguments,
    consent_release_forgets_every_process_grants,
    consent_shared_mm_holds_one_entry,
    consent_registry_no_budget_shared_between_users,
    consent_grant_killable_while_mmap_lock_held,
];

/// See [`crate::hold::grant_killable`].
fn consent_grant_killable_while_mmap_lock_held() -> TestResult {
    crate::hold::grant_killable()
}

/// Commands a target answers (see [`target`]).
const GRANT_PID: u8 = b'g';
const OPEN_PIDFD: u8 = b'o';
const GRANT_PIDFD: u8 = b'f';
const CLOSE: u8 = b'c';
/// The command a caller answers (see [`caller`]).
const PROBE: u8 = b'p';

fn errno_of(r: io::Result<()>) -> u64 {
    match r {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1) as u64,
    }
}

/// A target running as `uid` (dumpable), granting on its own `/dev/cma`, or
/// on the inherited descriptor `shared` if given. It answers GRANT_PID [pid]
/// (0: any peer), GRANT_PIDFD [fd] and CLOSE (of its device descriptor) with
/// [errno], and OPEN_PIDFD [pid] with [errno, fd] (the pidfd stays open).
fn target(uid: u32, shared: Option<RawFd>) -> io::Result<Peer> {
    let mut t = Peer::spawn(move |mut ch| {
        util::become_user(uid)?;
        let mut own = match shared {
            Some(_) => None,
            None => Some(Device::open()?),
        };
        let mut fd = shared.or(own.as_ref().map(|d| d.as_raw_fd()));
        let mut pidfds: Vec<OwnedFd> = Vec::new();
        ch.send(&[])?;
        ch.serve(|c, args| {
            // SAFETY: `fd` is open until CLOSE, which forgets it.
            let dev = fd.map(|f| unsafe { BorrowedFd::borrow_raw(f) });
            let ebadf = || io::Error::from_raw_os_error(libc::EBADF);
            Ok(match c {
                GRANT_PID => vec![errno_of(
                    dev.ok_or_else(ebadf)
                        .and_then(|d| cma::raw::grant(d, args[0] as i32)),
                )],
                GRANT_PIDFD => vec![errno_of(dev.ok_or_else(ebadf).and_then(|d| {
                    // SAFETY: the kernel only reads the number; any fd will do.
                    let pidfd = unsafe { BorrowedFd::borrow_raw(args[0] as RawFd) };
                    cma::raw::grant_to(d, Target::PidFd(pidfd))
                }))],
                OPEN_PIDFD => match cma::pidfd_open(args[0] as i32) {
                    Ok(p) => {
                        let n = p.as_raw_fd() as u64;
                        pidfds.push(p);
                        vec![0, n]
                    }
                    Err(e) => vec![errno_of(Err(e)), 0],
                },
                CLOSE => {
                    match (own.take(), fd.take()) {
                        (Some(d), _) => drop(d),
                        // SAFETY: the inherited descriptor is ours to close.
                        (None, Some(f)) => unsafe {
                            libc::close(f);
                        },
                        (None, None) => {}
                    }
                    vec![0]
                }
                _ => vec![libc::EINVAL as u64],
            })
        })
    })?;
    t.recv()?;
    Ok(t)
}

/// A caller running as `uid`, answering PROBE [pid] with [errno] (0: it may
/// copy from and to `pid`).
fn caller(uid: u32) -> io::Result<Peer> {
    let mut c = Peer::spawn(move |mut ch| {
        util::become_user(uid)?;
        let dev = Device::open()?;
        ch.send(&[])?;
        ch.serve(|c, args| {
            Ok(match c {
                PROBE => vec![errno_of(dev.probe(Target::Pid(args[0] as i32)))],
                _ => vec![libc::EINVAL as u64],
            })
        })
    })?;
    c.recv()?;
    Ok(c)
}

fn probe(who: &mut Peer, target: &Peer) -> io::Result<u64> {
    Ok(who.command(PROBE, &[target.pid as u64])?[0])
}

const EPERM: u64 = libc::EPERM as u64;
const ESRCH: u64 = libc::ESRCH as u64;

fn consent_grant_by_pidfd_names_that_process() -> TestResult {
    needs_root()?;
    util::needs_feature(Features::GRANT_PIDFD)?;
    let mut t = target(NOBODY, None)?;
    let mut c1 = caller(NOBODY)?;
    let mut c2 = caller(NOBODY)?;
    let opened = t.command(OPEN_PIDFD, &[c1.pid as u64])?;
    check_eq!(opened[0], 0, "pidfd_open in the target");
    // Without a grant neither may; with one by pidfd, that process only.
    check_eq!(probe(&mut c1, &t)?, EPERM);
    check_eq!(t.command(GRANT_PIDFD, &[opened[1]])?[0], 0);
    check_eq!(probe(&mut c1, &t)?, 0);
    check_eq!(probe(&mut c2, &t)?, EPERM);
    // Idempotent, and a grant by pid to the same process is the same peer.
    check_eq!(t.command(GRANT_PIDFD, &[opened[1]])?[0], 0);
    check_eq!(t.command(GRANT_PID, &[c1.pid as u64])?[0], 0);
    check_eq!(probe(&mut c2, &t)?, EPERM);
    Ok(())
}

/// `struct clone_args` up to `set_tid_size` (`CLONE_ARGS_SIZE_VER1`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
}

/// `fork()`, but the child gets the pid `pid` (`clone3` with `set_tid`,
/// root's): 0 in the child, `pid` in the parent.
fn fork_as(pid: libc::pid_t) -> io::Result<libc::pid_t> {
    let tid = [pid];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tid.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    // SAFETY: without CLONE_VM, clone3 is fork(): the child gets a copy of
    // this single-threaded process and returns 0 here; `args` and `tid`
    // are live for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as libc::pid_t)
}

fn pipe() -> io::Result<(std::fs::File, std::fs::File)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are new and owned by nobody else.
    Ok(unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    })
}

fn consent_grant_by_pidfd_never_reaches_a_recycled_pid() -> TestResult {
    needs_root()?;
    let mut t = target(NOBODY, None)?;
    // The peer meant: the target holds a pidfd on it, then it exits and is
    // reaped, so its pid is free.
    let gone = Peer::spawn(|ch| ch.wait())?;
    let pid = gone.pid;
    let opened = t.command(OPEN_PIDFD, &[pid as u64])?;
    check_eq!(opened[0], 0, "pidfd_open in the target");
    check_eq!(gone.finish()?, 0);
    // An impostor of the same user as the target, given that very pid, who
    // probes the target each time it reads a byte.
    let (cmd_r, mut cmd_w) = pipe()?;
    let (mut reply_r, reply_w) = pipe()?;
    let impostor = fork_as(pid)
        .map_err(|e| Failure::Fail(format!("clone3 with set_tid {pid} (to reuse the pid): {e}")))?;
    if impostor == 0 {
        // The parent's ends: held here, they would keep the command pipe
        // from ever reaching end-of-file.
        drop((cmd_w, reply_r));
        let code = (|| -> io::Result<()> {
            let (mut cmd_r, mut reply_w) = (cmd_r, reply_w);
            util::become_user(NOBODY)?;
            let dev = Device::open()?;
            let mut c = [0u8];
            while cmd_r.read(&mut c)? == 1 {
                let e = errno_of(dev.probe(Target::Pid(t.pid))) as u32;
                reply_w.write_all(&e.to_ne_bytes())?;
            }
            Ok(())
        })()
        .map_or(1, |()| 0);
        // SAFETY: ends the child without running the parent's exit code.
        unsafe { libc::_exit(code) };
    }
    drop((cmd_r, reply_w));
    let result = (|| -> TestResult {
        check_eq!(impostor, pid, "clone3 gave another pid");
        let mut ask = || -> io::Result<u64> {
            cmd_w.write_all(b"p")?;
            let mut e = [0u8; 4];
            reply_r.read_exact(&mut e)?;
            Ok(u32::from_ne_bytes(e) as u64)
        };
        // The pidfd names the process that exited, not the one with its pid.
        check_eq!(t.command(GRANT_PIDFD, &[opened[1]])?[0], ESRCH);
        check_eq!(ask()?, EPERM, "the impostor was let in");
        // The impostor could be let in: a grant by pid, looked up now,
        // reaches whoever has the number. That is what the pidfd prevents.
        check_eq!(t.command(GRANT_PID, &[pid as u64])?[0], 0);
        check_eq!(ask()?, 0, "the control: a grant by pid to the impostor");
        Ok(())
    })();
    drop(cmd_w);
    let status = util::wait_child(impostor)?;
    result?;
    check_eq!(status, 0, "the impostor failed");
    Ok(())
}

fn consent_grant_pidfd_bad_arguments() -> TestResult {
    let dev = Device::open()?;
    let ioctl = |a: &cma::sys::cma_grant| {
        // SAFETY: CMA_IOC_GRANT reads one `cma_grant` from a live struct.
        unsafe {
            cma::sys::ioctl(
                std::os::fd::AsFd::as_fd(&dev),
                cma::sys::CMA_IOC_GRANT,
                a as *const _ as usize,
            )
        }
    };
    let pidfd = cma::pidfd_open(std::process::id() as i32)?;
    let grant = |pid: i32, flags: u32, reserved: [u64; 3]| cma::sys::cma_grant {
        pid,
        flags,
        reserved,
    };
    let ok = pidfd.as_raw_fd();
    // CMA_GRANT_DESCENDANTS (2) without CMA_GRANT_PIDFD, and bits no
    // version defines.
    for flags in [
        cma::sys::CMA_GRANT_DESCENDANTS,
        1 << 31,
        !cma::sys::CMA_GRANT_FLAGS_ALL,
        cma::sys::CMA_GRANT_PIDFD | 4,
    ] {
        expect_errno(
            ioctl(&grant(ok, flags, [0; 3])),
            libc::EINVAL,
            format!("grant flags {flags:#x}"),
        )?;
    }
    expect_errno(
        ioctl(&grant(ok, cma::sys::CMA_GRANT_PIDFD, [0, 1, 0])),
        libc::EINVAL,
        "grant by pidfd, reserved",
    )?;
    // A negative number, a descriptor that is not a pidfd, a closed one.
    expect_errno(
        ioctl(&grant(-1, cma::sys::CMA_GRANT_PIDFD, [0; 3])),
        libc::EBADF,
        "grant by pidfd -1",
    )?;
    expect_errno(
        ioctl(&grant(dev.as_raw_fd(), cma::sys::CMA_GRANT_PIDFD, [0; 3])),
        libc::EBADF,
        "grant by a descriptor that is not a pidfd",
    )?;
    let closed = cma::pidfd_open(std::process::id() as i32)?;
    let number = closed.as_raw_fd();
    drop(closed);
    expect_errno(
        ioctl(&grant(number, cma::sys::CMA_GRANT_PIDFD, [0; 3])),
        libc::EBADF,
        "grant by a closed pidfd",
    )?;
    // Without the flag, a negative pid is still EINVAL.
    expect_errno(
        ioctl(&grant(-3, 0, [0; 3])),
        libc::EINVAL,
        "grant negative pid",
    )?;
    // The same through the library, and a good one.
    dev.grant_to(Target::PidFd(std::os::fd::AsFd::as_fd(&pidfd)))?;
    check_eq!(ioctl(&grant(ok, cma::sys::CMA_GRANT_PIDFD, [0; 3]))?, 0);
    dev.revoke()?;
    Ok(())
}

fn consent_release_forgets_every_process_grants() -> TestResult {
    needs_root()?;
    // The caller first, so that it does not inherit the file below.
    let mut c = caller(NOBODY)?;
    // One file, inherited by three targets that each grant on it: the
    // file's release must find every one of their entries.
    let shared = Device::open()?;
    let mut targets = Vec::new();
    for _ in 0..3 {
        targets.push(target(NOBODY, Some(shared.as_raw_fd()))?);
    }
    for t in targets.iter_mut() {
        check_eq!(t.command(GRANT_PID, &[0])?[0], 0);
        check_eq!(probe(&mut c, t)?, 0);
    }
    // Their descriptors go; the file stays open (ours), and so do the grants.
    for t in targets.iter_mut() {
        check_eq!(t.command(CLOSE, &[])?[0], 0);
    }
    for t in &targets {
        check_eq!(probe(&mut c, t)?, 0, "a grant went before its file");
    }
    // The last descriptor: the file is released, every grant made on it goes.
    drop(shared);
    for t in &targets {
        check_eq!(probe(&mut c, t)?, EPERM, "a grant outlived its file");
    }
    Ok(())
}

/// The `CLONE_VM` child of [`grant_in_shared_mm`]: grants on the device
/// descriptor `arg` and exits with the errno (0 on success). It runs on its
/// own stack in its parent's address space, so it calls nothing that
/// allocates or takes a lock of the parent's.
extern "C" fn shared_mm_child(arg: *mut libc::c_void) -> libc::c_int {
    let args = cma::sys::cma_grant::default();
    // SAFETY: CMA_IOC_GRANT reads one `cma_grant` from a live struct.
    let r = unsafe {
        libc::ioctl(
            arg as usize as libc::c_int,
            cma::sys::CMA_IOC_GRANT as libc::c_ulong,
            &args as *const cma::sys::cma_grant,
        )
    };
    if r == 0 {
        0
    } else {
        // SAFETY: this thread's errno (the parent's too, which is waiting).
        unsafe { *libc::__errno_location() }
    }
}

/// Runs a process that shares this one's address space (`CLONE_VM`, not a
/// thread: as `vfork` makes) and grants on `dev`; returns its errno.
fn grant_in_shared_mm(dev: &Device) -> io::Result<i32> {
    let mut stack = vec![0u8; 64 * 1024];
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    // SAFETY: the child runs `shared_mm_child` on `stack`, which lives until
    // it has been waited for, and touches nothing else of ours.
    let pid = unsafe {
        libc::clone(
            shared_mm_child,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::SIGCHLD,
            dev.as_raw_fd() as usize as *mut libc::c_void,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    let status = util::wait_child(pid);
    drop(stack);
    status
}

/// Whether a forked child of this process (same uid) may copy from it: the
/// errno of its probe, 0 if it may.
fn probed_by_child() -> io::Result<i32> {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    util::in_forked(|| match Device::open() {
        Ok(d) => d
            .probe(Target::Pid(me))
            .map_or_else(|e| e.raw_os_error().unwrap_or(255), |()| 0),
        Err(_) => 254,
    })
}

fn consent_shared_mm_holds_one_entry() -> TestResult {
    needs_root()?;
    // Unprivileged, so that a probe by our own child needs our consent.
    util::become_user(NOBODY)?;
    let dev = Device::open()?;
    let before = param("grants")?;
    dev.grant(None)?;
    check_eq!(probed_by_child()?, 0);
    // Our address space has one entry, ours, with a grant: a process that
    // shares it (not a thread of ours) may not make a second one. On the
    // module before one entry per mm, it could, and every such process
    // that granted and exec()ed or exited left an entry until the mm died.
    check_eq!(grant_in_shared_mm(&dev)?, libc::EBUSY);
    check!(
        param("grants")? <= before + 2,
        "{} registry slots, {before} before one entry and one grant",
        param("grants")?
    );
    // Once we hold no grant, the other process takes the entry over (and
    // exits at once, leaving it with the mm); we are not consenting.
    dev.revoke()?;
    check_eq!(grant_in_shared_mm(&dev)?, 0);
    check_eq!(probed_by_child()?, libc::EPERM);
    // Its holder gone, the entry is ours again for the asking: still one.
    dev.grant(None)?;
    check_eq!(probed_by_child()?, 0);
    check!(
        param("grants")? <= before + 2,
        "{} registry slots after the takeovers, {before} before",
        param("grants")?
    );
    Ok(())
}

/// Child processes that are killed and reaped however the test ends.
#[derive(Default)]
struct Children(Vec<libc::pid_t>);

impl Children {
    /// Forks a child that runs `f` and exits with its result (it may never
    /// return, and wait to be killed).
    fn fork(&mut self, f: impl FnOnce() -> i32) -> io::Result<libc::pid_t> {
        // SAFETY: the test process is single-threaded.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            let code = f();
            // SAFETY: ends the child without running the parent's exit code.
            unsafe { libc::_exit(code) };
        }
        self.0.push(pid);
        Ok(pid)
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for &pid in &self.0 {
            // SAFETY: plain syscall on a child of ours.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for &pid in &self.0 {
            let _ = util::wait_child(pid);
        }
    }
}

/// Sleeps until killed.
fn sleep_forever() -> ! {
    loop {
        // SAFETY: pause has no preconditions.
        unsafe { libc::pause() };
    }
}

/// The most grants one process may hold (`MAX_GRANTS_PER_PROCESS` in the
/// module).
const GRANTS_PER_PROCESS: usize = 1024;
/// Distinct users (uids 2000 up) flooding the registry: one more than the
/// old module's total over its per-user cap (262 144 / 16 384 = 16).
const FLOOD_USERS: u32 = 17;
/// Processes per user, each holding every grant it may.
const FLOOD_PROCS: usize = 16;
/// Files and peers a flooding process grants on and to (files x peers =
/// `GRANTS_PER_PROCESS` distinct grants).
const FLOOD_FILES: usize = 16;
const FLOOD_PEERS: usize = 64;

/// Why this fails on the module as it was: it charged every entry and grant
/// to the granting real uid, at most 16 384 slots per uid (`MAX_PER_USER`)
/// and 262 144 in all (`MAX_TOTAL`, 16 users' worth). Here each process
/// holds 1 + 1024 slots, so a user's 16 processes ask for 16 400, over its
/// cap: every user reaches its 16 384, and 17 users reach 278 528, over the
/// total, whatever the order. With every flooder alive, nothing is stale to
/// reap, so the total stays reached and the last user's grant fails with
/// ENOSPC, as would anyone's: 17 uids (easily had as the subordinate ids of
/// one user namespace) denied consent to everyone. The module now bounds
/// the registry per process (1024 grants, one entry per address space, gone
/// at its teardown), which the kernel bounds per user (RLIMIT_NPROC,
/// memory cgroup), and shares no budget between users: every flooder gets
/// all its grants, and the other user's grant succeeds.
fn consent_registry_no_budget_shared_between_users() -> TestResult {
    needs_root()?;
    const _: () = assert!(FLOOD_FILES * FLOOD_PEERS == GRANTS_PER_PROCESS);
    let before = param("grants")?;
    let start = std::time::Instant::now();
    let mut kids = Children::default();
    // The peers every grant names: live processes (a grant looks its peer up).
    let mut peers = Vec::new();
    for _ in 0..FLOOD_PEERS {
        peers.push(kids.fork(|| sleep_forever())?);
    }
    let devs: Vec<Device> = (0..FLOOD_FILES)
        .map(|_| Device::open())
        .collect::<Result<_, _>>()?;
    // Each flooder reports [grants made, first errno] and sleeps until killed.
    let (mut reports, report_w) = pipe()?;
    for user in 0..FLOOD_USERS {
        for _ in 0..FLOOD_PROCS {
            kids.fork(|| {
                let (mut made, mut errno) = (0u32, 0u32);
                match util::become_user(2000 + user) {
                    Err(e) => errno = e.raw_os_error().unwrap_or(255) as u32,
                    Ok(()) => {
                        for d in &devs {
                            for &p in &peers {
                                match d.grant(Some(p)) {
                                    Ok(()) => made += 1,
                                    Err(e) if errno == 0 => {
                                        errno = e.raw_os_error().unwrap_or(255) as u32
                                    }
                                    Err(_) => {}
                                }
                            }
                        }
                    }
                }
                let mut msg = [0u8; 8];
                msg[..4].copy_from_slice(&made.to_ne_bytes());
                msg[4..].copy_from_slice(&errno.to_ne_bytes());
                // One write of 8 bytes to a pipe: atomic.
                let _ = (&report_w).write_all(&msg);
                sleep_forever()
            })?;
        }
    }
    drop(report_w);
    let flooders = FLOOD_USERS as usize * FLOOD_PROCS;
    let mut short = Vec::new();
    for _ in 0..flooders {
        let mut msg = [0u8; 8];
        reports.read_exact(&mut msg)?;
        let made = u32::from_ne_bytes(msg[..4].try_into().unwrap()) as usize;
        let errno = u32::from_ne_bytes(msg[4..].try_into().unwrap()) as i32;
        if made != GRANTS_PER_PROCESS {
            short.push((made, errno));
        }
    }
    let held = param("grants")?.saturating_sub(before);
    println!(
        "# {flooders} processes of {FLOOD_USERS} users, {} grants each, in {:.1} s: \
         {} refused some; registry slots {before} before, +{held} now",
        GRANTS_PER_PROCESS,
        start.elapsed().as_secs_f64(),
        short.len(),
    );
    // Another user consents, and is read by a peer of its own.
    let mut t = target(OTHER_USER, None)?;
    let granted = t.command(GRANT_PID, &[0])?[0];
    check_eq!(
        granted,
        0,
        "another user's grant failed with the registry full of 17 users' grants"
    );
    let mut c = caller(OTHER_USER)?;
    check_eq!(probe(&mut c, &t)?, 0);
    check!(
        short.is_empty(),
        "{} flooders were refused grants (made, errno): {:?}",
        short.len(),
        &short[..short.len().min(8)]
    );
    let all = (flooders * (1 + GRANTS_PER_PROCESS)) as u64;
    check!(
        held >= all,
        "the registry held {held} slots for {flooders} full processes ({all})"
    );
    // Every flooder's entry goes with its address space.
    drop(kids);
    check!(
        param("grants")? <= before + 2,
        "{} registry slots after the flooders exited, {before} before",
        param("grants")?
    );
    Ok(())
}
