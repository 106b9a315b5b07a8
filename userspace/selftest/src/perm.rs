//! Who may copy: the ptrace credential rule, dumpability, consent
//! (grant/revoke, its lifetime), capabilities and the require_consent knob.
//! Both sides are real processes with the uids under test.

use std::io;

use cma::{Device, Op, Target};

use crate::copy::{copy, iov};
use crate::ktap::{expect_errno, Failure, Test, TestResult};
use crate::peer::Peer;
use crate::util::{self, page_size, Mapping, NOBODY, OTHER_USER};
use crate::{check, check_eq};

/// The tests of this file, in order.
pub const TESTS: &[Test] = crate::tests![
    perm_same_uid_with_consent_allowed,
    perm_other_uid_eperm,
    perm_nondumpable_target_eperm,
    perm_consent_absent_eperm,
    perm_consent_for_one_peer,
    perm_consent_revoked_eperm,
    perm_consent_dies_with_its_file,
    perm_consent_dies_with_exec,
    perm_grant_bad_arguments,
    perm_cap_sys_ptrace_needs_no_consent,
    perm_require_consent_param_off,
    security_setuid_target_eperm,
    perm_capabilities_rule_like_pvm,
    attach_same_rule_as_copy,
    attach_consent_withdrawn_eperm,
    map_consent_withdrawn_unmaps,
    attach_target_turns_nondumpable_eperm,
    attach_target_changes_uid_eperm,
    attach_caller_drops_privilege_eperm,
    attach_fd_inherited_by_child_rechecked,
    consent_grant_to_thread_names_its_process,
    consent_registry_bounded_under_grant_flood,
    consent_withdrawals_counted_per_target,
    consent_grant_restarted_under_signals,
    consent_grants_reaped_at_exit,
    consent_grants_reaped_at_exec,
    consent_peer_readers_take_no_registry_lock,
    perm_policy_param,
];

/// Commands a target peer answers.
const GRANT: u8 = b'g';
const REVOKE: u8 = b'r';
const CLOSE: u8 = b'c';
const DUMPABLE: u8 = b'd';
const PTRACER_ANY: u8 = b'y';
const SETUID: u8 = b's';
/// Commands a caller peer answers.
const TRY_READ: u8 = b't';
const TRY_WRITE: u8 = b'w';
const PROBE: u8 = b'p';
const TRY_PVM: u8 = b'v';
const ATTACH: u8 = b'a';
const PEER_READ: u8 = b'R';
const PEER_WRITE: u8 = b'W';
const PEER_PROBE: u8 = b'P';
const FORK_PEER_READ: u8 = b'f';
const BECOME: u8 = b'u';
const SPAWN_THREAD: u8 = b'T';

fn errno_of(r: io::Result<()>) -> u64 {
    match r {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1) as u64,
    }
}

pub(crate) fn needs_root() -> TestResult {
    if util::is_root() {
        Ok(())
    } else {
        Err(Failure::Skip(
            "needs root to create processes of other uids".into(),
        ))
    }
}

/// A target running as `uid` (dumpable if `dumpable`), with a page holding
/// "cma!" at the address it sends, answering GRANT [pid], REVOKE, CLOSE,
/// DUMPABLE [0|1], PTRACER_ANY and SETUID [uid] with [errno].
fn target(uid: u32, dumpable: bool) -> Result<(Peer, usize), Failure> {
    target_with(uid, dumpable, false)
}

/// [`target`], keeping every capability in its permitted set across the
/// change of uid if `keep_caps` (`PR_SET_KEEPCAPS`), as a daemon that drops
/// root but keeps capabilities does.
fn target_with(uid: u32, dumpable: bool, keep_caps: bool) -> Result<(Peer, usize), Failure> {
    let mut peer = Peer::spawn(move |mut ch| {
        if keep_caps {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
        }
        util::become_user(uid)?;
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, dumpable as libc::c_ulong, 0, 0, 0) };
        let mut m = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
        m.bytes_mut()[..4].copy_from_slice(b"cma!");
        let mut dev = Some(Device::open()?);
        ch.send(&[m.addr() as u64])?;
        ch.serve(|c, args| {
            let r = match (c, dev.as_ref()) {
                (GRANT, Some(d)) => d.grant(match args[0] {
                    0 => None,
                    p => Some(p as i32),
                }),
                (REVOKE, Some(d)) => d.revoke(),
                (CLOSE, _) => {
                    dev = None;
                    Ok(())
                }
                // SAFETY (both): prctl with integer arguments.
                (DUMPABLE, _) => prctl_result(unsafe {
                    libc::prctl(libc::PR_SET_DUMPABLE, args[0] as libc::c_ulong, 0, 0, 0)
                }),
                (PTRACER_ANY, _) => prctl_result(unsafe {
                    libc::prctl(libc::PR_SET_PTRACER, libc::PR_SET_PTRACER_ANY, 0, 0, 0)
                }),
                (SETUID, _) => util::raise_caps().and_then(|()| util::become_user(args[0] as u32)),
                _ => Err(io::Error::from_raw_os_error(libc::EBADF)),
            };
            Ok(vec![errno_of(r)])
        })
    })?;
    let addr = peer.recv()?[0] as usize;
    Ok((peer, addr))
}

/// A map made with the target's consent: when the target revokes, what is
/// mapped already goes (the status settles after moving), later touches read
/// zeros (holes), and a copy is refused. Caller and target are nobody.
fn map_consent_withdrawn_unmaps() -> TestResult {
    needs_root()?;
    util::needs_feature(cma::Features::MAP)?;
    let (mut t, addr) = target(NOBODY, true)?;
    check_eq!(t.command(GRANT, &[0])?[0], 0);
    let tpid = t.pid;
    const READ: u8 = b'R';
    let mut caller = Peer::spawn(move |mut ch| {
        util::become_user(NOBODY)?;
        let dev = Device::open()?;
        let peer = dev.attach(Target::Pid(tpid))?;
        let m = peer.map(addr, page_size(), false)?;
        let status = peer.map_status()?;
        ch.send(&[])?;
        ch.serve(|c, _| {
            if c != READ {
                return Err(io::Error::from_raw_os_error(libc::EBADF));
            }
            let before = status.snapshot();
            let settled = status.settle(std::time::Duration::from_secs(10));
            let mut b = [0u8; 4];
            m.read_at(0, &mut b);
            let after = status.snapshot();
            let mut into = [0u8; 4];
            let copy = errno_of(
                peer.process_vm_readv(
                    &mut [std::io::IoSliceMut::new(&mut into)],
                    &[cma::RemoteIoVec { base: addr, len: 4 }],
                )
                .map(|_| ()),
            );
            Ok(vec![
                u32::from_le_bytes(b) as u64,
                settled.is_some() as u64,
                after.holes - before.holes,
                after.generation,
                copy,
            ])
        })
    })?;
    caller.recv()?;
    let first = caller.command(READ, &[])?;
    check_eq!(
        first[0],
        u32::from_le_bytes(*b"cma!") as u64,
        "the map before"
    );
    check_eq!(first[4], 0, "a copy before the withdrawal");
    check_eq!(t.command(REVOKE, &[])?[0], 0);
    let then = caller.command(READ, &[])?;
    check_eq!(then[1], 1, "the status never settled");
    check_eq!(then[0], 0, "the page still mapped after the withdrawal");
    check!(then[2] >= 1, "no hole counted: {then:?}");
    check!(then[3] > first[3], "the generation did not move");
    check_eq!(then[4], libc::EPERM as u64, "a copy after the withdrawal");
    drop(caller);
    Ok(())
}

fn prctl_result(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// [errno, bytes] of a 4-byte copy by `op` between `buf` and `addr`.
fn reply(r: io::Result<u64>) -> Vec<u64> {
    match r {
        Ok(n) => vec![0, n],
        Err(e) => vec![e.raw_os_error().unwrap_or(-1) as u64, 0],
    }
}

/// A caller running as `uid`, answering TRY_READ/TRY_WRITE [pid, addr] with
/// [errno, bytes], PROBE [pid] with [errno] and TRY_PVM [pid, addr] with the
/// errno of `process_vm_readv`; ATTACH [pid] with [errno], after which
/// PEER_READ/PEER_WRITE [addr], PEER_PROBE and FORK_PEER_READ [addr] (a read
/// through the peer fd by a forked child) use the peer fd; BECOME [uid]
/// changes the caller's own credentials.
fn caller(uid: u32) -> io::Result<Peer> {
    caller_with(uid, false)
}

/// [`caller`], keeping its permitted capabilities if `keep_caps` (see
/// [`target_with`]).
fn caller_with(uid: u32, keep_caps: bool) -> io::Result<Peer> {
    Peer::spawn(move |ch| {
        if keep_caps {
            // SAFETY: prctl with integer arguments.
            unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
        }
        util::become_user(uid)?;
        let dev = Device::open()?;
        let mut buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
        buf.bytes_mut()[..4].copy_from_slice(b"CMA?");
        let mut peer: Option<cma::Peer> = None;
        let ebadf = || io::Error::from_raw_os_error(libc::EBADF);
        ch.serve(|c, args| {
            let t = Target::Pid(args.first().copied().unwrap_or(0) as i32);
            let op = if matches!(c, TRY_READ | PEER_READ) {
                Op::Read
            } else {
                Op::Write
            };
            let local = [iov(buf.addr(), 4)];
            Ok(match c {
                TRY_READ | TRY_WRITE => {
                    reply(copy(&dev, op, t, &local, &[iov(args[1] as usize, 4)]).map(|t| t.bytes))
                }
                PROBE => vec![errno_of(dev.probe(t))],
                TRY_PVM => vec![errno_of(
                    crate::copy::pvm(
                        Op::Read,
                        args[0] as i32,
                        &local,
                        &[iov(args[1] as usize, 4)],
                    )
                    .map(drop),
                )],
                ATTACH => match dev.attach(t) {
                    Ok(p) => {
                        peer = Some(p);
                        vec![0]
                    }
                    Err(e) => vec![errno_of(Err(e))],
                },
                PEER_READ | PEER_WRITE => reply(peer.as_ref().ok_or_else(ebadf).and_then(|p| {
                    // SAFETY: the local range is our own mapping.
                    unsafe { p.copy_raw(op, &local, &[iov(args[0] as usize, 4)]) }.map(|t| t.bytes)
                })),
                PEER_PROBE => vec![errno_of(
                    peer.as_ref().ok_or_else(ebadf).and_then(|p| p.probe()),
                )],
                FORK_PEER_READ => {
                    let p = peer.as_ref().ok_or_else(ebadf)?;
                    vec![util::in_forked(|| {
                        // SAFETY: the local range is our own mapping.
                        let r =
                            unsafe { p.copy_raw(Op::Read, &local, &[iov(args[0] as usize, 4)]) };
                        match r {
                            Ok(t) if t.bytes == 4 => 0,
                            Ok(_) => 255,
                            Err(e) => e.raw_os_error().unwrap_or(255),
                        }
                    })? as u64]
                }
                BECOME => vec![errno_of(util::become_user(args[0] as u32))],
                SPAWN_THREAD => {
                    // A thread that lives as long as the caller; its tid.
                    let (tx, rx) = std::sync::mpsc::channel();
                    std::thread::spawn(move || {
                        // SAFETY: gettid has no preconditions.
                        let _ = tx.send(unsafe { libc::gettid() });
                        loop {
                            std::thread::park();
                        }
                    });
                    vec![rx.recv().map_err(io::Error::other)? as u64]
                }
                _ => vec![libc::EINVAL as u64],
            })
        })
    })
}

/// What `who` gets when reading, writing and probing through its peer fd
/// (see [`caller`]'s ATTACH): the errnos (0 for success).
fn attempt_peer(who: &mut Peer, addr: usize) -> io::Result<[u64; 3]> {
    let r = who.command(PEER_READ, &[addr as u64])?;
    let w = who.command(PEER_WRITE, &[addr as u64])?;
    let p = who.command(PEER_PROBE, &[])?;
    if r[0] == 0 {
        check_bytes(r[1])?;
    }
    Ok([r[0], w[0], p[0]])
}

/// What `who` gets when reading, writing and probing `target`: the errnos
/// (0 for success).
fn attempt(who: &mut Peer, target: &Peer, addr: usize) -> io::Result<[u64; 3]> {
    let r = who.command(TRY_READ, &[target.pid as u64, addr as u64])?;
    let w = who.command(TRY_WRITE, &[target.pid as u64, addr as u64])?;
    let p = who.command(PROBE, &[target.pid as u64])?;
    if r[0] == 0 {
        check_bytes(r[1])?;
    }
    Ok([r[0], w[0], p[0]])
}

fn check_bytes(n: u64) -> io::Result<()> {
    if n == 4 {
        Ok(())
    } else {
        Err(io::Error::other(format!("copied {n} bytes, not 4")))
    }
}

const ALLOWED: [u64; 3] = [0, 0, 0];
const EPERM: [u64; 3] = [libc::EPERM as u64; 3];

fn perm_same_uid_with_consent_allowed() -> TestResult {
    needs_root()?;
    let (mut t, addr) = target(NOBODY, true)?;
    check_eq!(t.command(GRANT, &[0])?[0], 0);
    let mut c = caller(NOBODY)?;
    check_eq!(attempt(&mut c, &t, addr)?, ALLOWED);
    Ok(())
}

fn perm_other_uid_eperm() -> TestResult {
    needs_root()?;
    let (mut t, addr) = target(NOBODY, true)?;
    check_eq!(t.command(GRANT, &[0])?[0], 0);
    let mut c = caller(OTHER_USER)?;
    check_eq!(attempt(&mut c, &t, addr)?, EPERM);
    Ok(())
}

fn perm_nondumpable_target_eperm() -> TestResult {
    needs_root()?;
    let (mut t, addr) = target(NOBODY, false)?;
    check_eq!(t.command(GRANT, &[0])?[0], 0);
    let mut c = caller(NOBODY)?;
    check_eq!(attempt(&mut c, &t, addr)?, EPERM);
    // Root (CAP_SYS_PTRACE) may still.
    let dev = Device::open()?;
    let buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    check_eq!(
        copy(
            &dev,
            Op::Read,
            Target::Pid(t.pid),
            &[iov(buf.addr(), 4)],
            &[iov(addr, 4)]
        )?
        .bytes,
        4
    );
    check!(&buf.bytes()[..4] == b"cma!", "root read the wrong bytes");
    Ok(())
}

fn perm_consent_absent_eperm() -> TestResult {
    needs_root()?;
    let (t, addr) = target(NOBODY, true)?;
    let mut c = caller(NOBODY)?;
    check_eq!(attempt(&mut c, &t, addr)?, EPERM);
    Ok(())
}

fn perm_consent_for_one_peer() -> TestResult {
    needs_root()?;
    let (mut t, addr) = target(NOBODY, true)?;
    let mut c1 = caller(NOBODY)?;
    let mut c2 = caller(NOBODY)?;
    check_eq!(t.command(GRANT, &[c1.pid as u64])?[0], 0);
    check_eq!(attempt(&mut c1, &t, addr)?, ALLOWED);
    check_eq!(attempt(&mut c2, &t, addr)?, EPERM);
    // Grants accumulate.
    check_eq!(t.command(GRANT, &[c2.pid as u64])?[0], 0);
    check_eq!(attempt(&mut c2, &t, addr)?, ALLOWED);
    Ok(())
}

fn perm_consent_revoked_eperm() -> TestResult {
    needs_root()?;
    let (mut t, addr) = target(NOBODY, true)?;
    let mut c = caller(NOBODY)?;
    check_eq!(t.command(GRANT, &[0])?[0], 0);
    check_eq!(t.command(GRANT, &[c.pid as u64])?[0], 0);
    check_eq!(attempt(&mut c, &t, addr)?, ALLOWED);
    check_eq!(t.command(REVOKE, &[])?[0], 0);
    check_eq!(attempt(&mut c, &t, addr)?, EPERM);
    // And it can be given again.
    check_eq!(t.command(GRANT, &[0])?[0], 0);
    check_eq!(attempt(&mut c, &t, addr)?, ALLOWED);
    Ok(())
}

fn perm_consent_dies_with_its_file() -> TestResult {
    needs_root()?;
    let (mut t, addr) = target(NOBODY, true)?;
    let mut c = caller(NOBODY)?;
    check_eq!(t.command(GRANT, &[0])?[0], 0);
    check_eq!(attempt(&mut c, &t, addr)?, ALLOWED);
    check_eq!(t.command(CLOSE, &[])?[0], 0);
    check_eq!(attempt(&mut c, &t, addr)?, EPERM);
    Ok(())
}

fn perm_consent_dies_with_exec() -> TestResult {
    needs_root()?;
    // A target that grants, then execs (keeping its /dev/cma fd open across
    // the exec): the new program did not consent.
    let mut c = caller(NOBODY)?;
    let mut t = Peer::spawn(|mut ch| {
        util::become_user(NOBODY)?;
        let dev = Device::open()?;
        dev.grant(None)?;
        // Keep the fd across exec.
        use std::os::fd::AsRawFd;
        // SAFETY: clears FD_CLOEXEC on an fd we own.
        unsafe { libc::fcntl(dev.as_raw_fd(), libc::F_SETFD, 0) };
        ch.send(&[])?;
        // Wait for the go-ahead, then exec a program that sleeps.
        let _ = ch.serve(|_, _| Err(util::exec_sleep()));
        Ok(())
    })?;
    t.recv()?;
    // Before exec: allowed (probe only: addresses change with exec).
    check_eq!(c.command(PROBE, &[t.pid as u64])?[0], 0);
    // Ask for the exec, and wait until /proc shows the new program.
    t.command_no_reply(b'x')?;
    check_eq!(util::wait_for_comm(t.pid, "sleep")?, "sleep");
    check_eq!(c.command(PROBE, &[t.pid as u64])?[0], libc::EPERM as u64);
    Ok(())
}

fn perm_grant_bad_arguments() -> TestResult {
    let dev = Device::open()?;
    // A flag no version defines (bit 0 is CMA_GRANT_PIDFD since ABI 6).
    let mut args = cma::sys::cma_grant {
        flags: !cma::sys::CMA_GRANT_FLAGS_ALL,
        ..Default::default()
    };
    let ioctl = |a: &mut cma::sys::cma_grant| {
        // SAFETY: CMA_IOC_GRANT reads one `cma_grant` from a live struct.
        unsafe {
            cma::sys::ioctl(
                std::os::fd::AsFd::as_fd(&dev),
                cma::sys::CMA_IOC_GRANT,
                a as *mut _ as usize,
            )
        }
    };
    crate::ktap::expect_errno(ioctl(&mut args), libc::EINVAL, "grant flags")?;
    args = cma::sys::cma_grant {
        reserved: [0, 0, 1],
        ..Default::default()
    };
    crate::ktap::expect_errno(ioctl(&mut args), libc::EINVAL, "grant reserved")?;
    args = cma::sys::cma_grant {
        pid: -3,
        ..Default::default()
    };
    crate::ktap::expect_errno(ioctl(&mut args), libc::EINVAL, "grant negative pid")?;
    let gone = Peer::spawn(|ch| ch.wait())?;
    let pid = gone.pid;
    check_eq!(gone.finish()?, 0);
    crate::ktap::expect_errno(dev.grant(Some(pid)), libc::ESRCH, "grant to an exited pid")?;
    crate::ktap::expect_errno(
        // SAFETY: a NULL argument must be rejected, not followed.
        unsafe { cma::sys::ioctl(std::os::fd::AsFd::as_fd(&dev), cma::sys::CMA_IOC_GRANT, 0) },
        libc::EFAULT,
        "grant NULL",
    )?;
    dev.grant(None)?;
    dev.grant(None)?; // idempotent
    dev.revoke()?;
    dev.revoke()?;
    Ok(())
}

fn perm_cap_sys_ptrace_needs_no_consent() -> TestResult {
    needs_root()?;
    // Root has CAP_SYS_PTRACE: no consent needed, even for another uid.
    let (t, addr) = target(NOBODY, true)?;
    let dev = Device::open()?;
    let buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    check_eq!(
        copy(
            &dev,
            Op::Read,
            Target::Pid(t.pid),
            &[iov(buf.addr(), 4)],
            &[iov(addr, 4)]
        )?
        .bytes,
        4
    );
    check!(&buf.bytes()[..4] == b"cma!", "read the wrong bytes");
    dev.probe(Target::Pid(t.pid))?;
    Ok(())
}

const PARAM: &str = "/sys/module/cma/parameters/require_consent";

/// Writes `value` to the module parameter file `path` however the test ends.
pub(crate) struct Restore(pub(crate) &'static str, pub(crate) &'static str);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0, self.1);
    }
}

fn perm_require_consent_param_off() -> TestResult {
    needs_root()?;
    check_eq!(std::fs::read_to_string(PARAM)?.trim(), "Y");
    let (t, addr) = target(NOBODY, true)?;
    let mut c = caller(NOBODY)?;
    check_eq!(attempt(&mut c, &t, addr)?, EPERM);
    let _restore = Restore(PARAM, "Y");
    std::fs::write(PARAM, "N")?;
    check_eq!(attempt(&mut c, &t, addr)?, ALLOWED);
    // The credential rule still holds without consent.
    let mut other = caller(OTHER_USER)?;
    check_eq!(attempt(&mut other, &t, addr)?, EPERM);
    Ok(())
}

/// A copy of /bin/sleep, setuid root, in a fresh directory under /tmp.
pub(crate) fn setuid_sleep() -> io::Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("cma-suid-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let path = dir.join("sleep");
    std::fs::copy("/bin/sleep", &path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o4755))?;
    Ok(path)
}

/// The effective uid of `pid`, from /proc.
fn euid_of(pid: i32) -> io::Result<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| io::Error::other("no Uid line"))
}

fn security_setuid_target_eperm() -> TestResult {
    needs_root()?;
    let prog = setuid_sleep()?;
    // An unprivileged user starts a setuid-root program: it runs as root and
    // is not dumpable. The same user must not be able to read it.
    let spawned = std::process::Command::new("setpriv")
        .args([
            format!("--reuid={NOBODY}"),
            format!("--regid={NOBODY}"),
            "--clear-groups".into(),
        ])
        .arg(&prog)
        .arg("60")
        .spawn();
    let Ok(mut child) = spawned else {
        let _ = std::fs::remove_dir_all(prog.parent().unwrap());
        return Err(Failure::Skip(
            "setpriv (util-linux) is not available".into(),
        ));
    };
    let pid = child.id() as i32;
    let mut euid = u32::MAX;
    for _ in 0..500 {
        if std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep") {
            euid = euid_of(pid)?;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let real_uid = std::fs::read_to_string(format!("/proc/{pid}/status"))?
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_default();
    if euid != 0 || real_uid != NOBODY.to_string() {
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(prog.parent().unwrap());
        return Err(Failure::Skip(format!(
            "setuid did not take effect here (uid {real_uid}, euid {euid})"
        )));
    }
    let mut c = caller(NOBODY)?;
    let r = c.command(PROBE, &[pid as u64]);
    let read = c.command(TRY_READ, &[pid as u64, 0x10000]);
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(prog.parent().unwrap());
    check_eq!(r?[0], libc::EPERM as u64);
    check_eq!(read?[0], libc::EPERM as u64);
    Ok(())
}

fn perm_capabilities_rule_like_pvm() -> TestResult {
    needs_root()?;
    // Both targets run as nobody, consent, and let any process ptrace them
    // (Yama), so process_vm_readv answers by the capability rule alone.
    for (keep_caps, want) in [(false, 0), (true, libc::EPERM as u64)] {
        let (mut t, addr) = target_with(NOBODY, true, keep_caps)?;
        check_eq!(t.command(GRANT, &[0])?[0], 0);
        check_eq!(t.command(PTRACER_ANY, &[])?[0], 0);
        let mut c = caller(NOBODY)?;
        let pid = t.pid as u64;
        check_eq!(
            c.command(TRY_PVM, &[pid, addr as u64])?[0],
            want,
            "pvm, keep_caps {keep_caps}"
        );
        check_eq!(
            c.command(TRY_READ, &[pid, addr as u64])?[0],
            want,
            "cma, keep_caps {keep_caps}"
        );
        check_eq!(
            c.command(ATTACH, &[pid])?[0],
            want,
            "attach, keep_caps {keep_caps}"
        );
    }
    Ok(())
}

fn attach_same_rule_as_copy() -> TestResult {
    needs_root()?;
    let (mut t, addr) = target(NOBODY, true)?;
    let pid = t.pid as u64;
    // No consent yet: refused, like a copy.
    let mut c = caller(NOBODY)?;
    check_eq!(c.command(ATTACH, &[pid])?[0], libc::EPERM as u64);
    check_eq!(t.command(GRANT, &[0])?[0], 0);
    check_eq!(c.command(ATTACH, &[pid])?[0], 0);
    check_eq!(attempt_peer(&mut c, addr)?, ALLOWED);
    let mut other = caller(OTHER_USER)?;
    check_eq!(other.command(ATTACH, &[pid])?[0], libc::EPERM as u64);
    let (mut hidden, _) = target(NOBODY, false)?;
    check_eq!(hidden.command(GRANT, &[0])?[0], 0);
    check_eq!(
        c.command(ATTACH, &[hidden.pid as u64])?[0],
        libc::EPERM as u64
    );
    Ok(())
}

/// A nobody target that consents to any peer, and a nobody caller attached
/// to it whose copies through the peer fd work.
fn attached() -> Result<(Peer, usize, Peer), Failure> {
    needs_root()?;
    let (mut t, addr) = target(NOBODY, true)?;
    let mut c = caller(NOBODY)?;
    check_eq!(t.command(GRANT, &[0])?[0], 0);
    check_eq!(c.command(ATTACH, &[t.pid as u64])?[0], 0);
    check_eq!(attempt_peer(&mut c, addr)?, ALLOWED);
    Ok((t, addr, c))
}

fn attach_consent_withdrawn_eperm() -> TestResult {
    let (mut t, addr, mut c) = attached()?;
    check_eq!(t.command(REVOKE, &[])?[0], 0);
    check_eq!(attempt_peer(&mut c, addr)?, EPERM);
    // The same peer fd works again once consent is back.
    check_eq!(t.command(GRANT, &[c.pid as u64])?[0], 0);
    check_eq!(attempt_peer(&mut c, addr)?, ALLOWED);
    check_eq!(t.command(CLOSE, &[])?[0], 0);
    check_eq!(attempt_peer(&mut c, addr)?, EPERM);
    Ok(())
}

fn attach_target_turns_nondumpable_eperm() -> TestResult {
    let (mut t, addr, mut c) = attached()?;
    check_eq!(t.command(DUMPABLE, &[0])?[0], 0);
    check_eq!(attempt_peer(&mut c, addr)?, EPERM);
    check_eq!(t.command(DUMPABLE, &[1])?[0], 0);
    check_eq!(attempt_peer(&mut c, addr)?, ALLOWED);
    Ok(())
}

fn attach_target_changes_uid_eperm() -> TestResult {
    needs_root()?;
    // Target and caller are nobody and keep root's permitted capabilities
    // (not effective), so the capability rule passes and neither is
    // privileged. After the attach the target becomes another user (and
    // dumpable again): nothing but its credentials changed.
    let (mut t, addr) = target_with(NOBODY, true, true)?;
    check_eq!(t.command(GRANT, &[0])?[0], 0);
    let mut c = caller_with(NOBODY, true)?;
    check_eq!(c.command(ATTACH, &[t.pid as u64])?[0], 0);
    check_eq!(attempt_peer(&mut c, addr)?, ALLOWED);
    check_eq!(t.command(SETUID, &[OTHER_USER as u64])?[0], 0);
    check_eq!(
        c.command(TRY_READ, &[t.pid as u64, addr as u64])?[0],
        libc::EPERM as u64
    );
    check_eq!(attempt_peer(&mut c, addr)?, EPERM);
    Ok(())
}

fn attach_caller_drops_privilege_eperm() -> TestResult {
    needs_root()?;
    // Root may attach without consent (CAP_SYS_PTRACE); once it has become
    // nobody, its peer fd may not copy any more.
    let (t, addr) = target(NOBODY, true)?;
    let mut c = caller(0)?;
    check_eq!(c.command(ATTACH, &[t.pid as u64])?[0], 0);
    check_eq!(attempt_peer(&mut c, addr)?, ALLOWED);
    check_eq!(c.command(BECOME, &[NOBODY as u64])?[0], 0);
    check_eq!(attempt_peer(&mut c, addr)?, EPERM);
    Ok(())
}

fn attach_fd_inherited_by_child_rechecked() -> TestResult {
    let (mut t, addr, mut c) = attached()?;
    // A forked child is another process: it is checked in full, and passes.
    check_eq!(c.command(FORK_PEER_READ, &[addr as u64])?[0], 0);
    // Consent for the caller only: the caller may, its child may not.
    check_eq!(t.command(REVOKE, &[])?[0], 0);
    check_eq!(t.command(GRANT, &[c.pid as u64])?[0], 0);
    check_eq!(attempt_peer(&mut c, addr)?, ALLOWED);
    check_eq!(
        c.command(FORK_PEER_READ, &[addr as u64])?[0],
        libc::EPERM as u64
    );
    Ok(())
}

fn consent_grant_to_thread_names_its_process() -> TestResult {
    needs_root()?;
    let (mut t, addr) = target(NOBODY, true)?;
    let mut c = caller(NOBODY)?;
    let tid = c.command(SPAWN_THREAD, &[])?[0];
    check!(tid != c.pid as u64, "the thread has the process's id");
    // The target names a thread of the caller; the caller's main thread
    // copies, by pid and through a peer fd: both see the grant, as a peer
    // fd, usable by any thread of the attaching process, must.
    check_eq!(t.command(GRANT, &[tid])?[0], 0);
    check_eq!(attempt(&mut c, &t, addr)?, ALLOWED);
    check_eq!(c.command(ATTACH, &[t.pid as u64])?[0], 0);
    check_eq!(attempt_peer(&mut c, addr)?, ALLOWED);
    // A grant to another process's thread gives this one nothing.
    let (mut t2, addr2) = target(NOBODY, true)?;
    let mut other = caller(NOBODY)?;
    let other_tid = other.command(SPAWN_THREAD, &[])?[0];
    check_eq!(t2.command(GRANT, &[other_tid])?[0], 0);
    check_eq!(attempt(&mut c, &t2, addr2)?, EPERM);
    check_eq!(attempt(&mut other, &t2, addr2)?, ALLOWED);
    Ok(())
}

/// A sysfs file holding one decimal number.
fn sysfs_number(path: &str) -> io::Result<u64> {
    std::fs::read_to_string(path)?
        .trim()
        .parse()
        .map_err(io::Error::other)
}

/// A module parameter of cma, as a number.
pub(crate) fn param(name: &str) -> io::Result<u64> {
    sysfs_number(&format!("/sys/module/cma/parameters/{name}"))
}

fn consent_registry_bounded_under_grant_flood() -> TestResult {
    needs_root()?;
    let before = param("grants")?;
    let start = std::time::Instant::now();
    // One unprivileged user: 16 files, 64 living peers, and 129 short-lived
    // children that each make 1024 grants on the inherited files.
    let status = util::in_forked(|| {
        let flood = || -> io::Result<i32> {
            util::become_user(NOBODY)?;
            let devs: Vec<Device> = (0..16).map(|_| Device::open()).collect::<Result<_, _>>()?;
            let mut sleepers = Vec::new();
            for _ in 0..64 {
                sleepers.push(Peer::spawn(|ch| ch.wait())?);
            }
            let (mut made, mut refused) = (0u64, 0u64);
            for _ in 0..129 {
                // Each child reports through its exit status: 0 all made,
                // 1 some refused with ENOSPC, 2 anything else.
                let s = util::in_forked(|| {
                    let mut status = 0;
                    for d in &devs {
                        for p in &sleepers {
                            match d.grant(Some(p.pid)) {
                                Ok(()) => {}
                                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => status = 1,
                                Err(_) => return 2,
                            }
                        }
                    }
                    status
                })?;
                match s {
                    0 => made += 1,
                    1 => refused += 1,
                    s => return Ok(10 + s),
                }
            }
            println!("# 129 flooders: {made} made all 1024 grants, {refused} were refused some");
            Ok(0)
        };
        flood().unwrap_or(99)
    })?;
    check_eq!(status, 0, "the flood failed in an unexpected way");
    println!(
        "# 132096 grants by one user in {:.1} s; registry slots {} before, {} after",
        start.elapsed().as_secs_f64(),
        before,
        param("grants")?
    );
    // Another user is unaffected: it consents, and is read by a peer.
    let (mut t, addr) = target(OTHER_USER, true)?;
    check_eq!(t.command(GRANT, &[0])?[0], 0);
    let mut c = caller(OTHER_USER)?;
    check_eq!(attempt(&mut c, &t, addr)?, ALLOWED);
    // Its grants died with the flooders, each at its exit: the registry
    // holds what it held before, plus the other user's one entry and grant.
    check!(
        param("grants")? <= before + 2,
        "the registry holds {} slots, {} before the flood",
        param("grants")?,
        before
    );
    Ok(())
}

/// A counter of `/sys/class/misc/cma/stats`.
pub(crate) fn stat(name: &str) -> io::Result<u64> {
    sysfs_number(&format!("/sys/class/misc/cma/stats/{name}"))
}

extern "C" fn on_alarm(_: libc::c_int) {}

fn consent_grant_restarted_under_signals() -> TestResult {
    let dev = Device::open()?;
    let mut failed = Vec::new();
    for _ in 0..100 {
        // A process's first grant sets up the watch on its mm, which gives up
        // when a signal is pending; with a timer signal every 200 us and a
        // handler (no SA_RESTART), the grant must still succeed, restarted.
        let status = util::in_forked(|| {
            // SAFETY: installs a handler that does nothing, and a timer.
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_alarm as *const () as usize;
                libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut());
                let every = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 200,
                };
                let t = libc::itimerval {
                    it_interval: every,
                    it_value: every,
                };
                libc::setitimer(libc::ITIMER_REAL, &t, std::ptr::null_mut());
            }
            match dev.grant(None) {
                Ok(()) => 0,
                Err(e) => e.raw_os_error().unwrap_or(255),
            }
        })?;
        if status != 0 {
            failed.push(status);
        }
    }
    check!(
        failed.is_empty(),
        "grants failed under a signal storm, errnos {failed:?}"
    );
    Ok(())
}

fn consent_grants_reaped_at_exit() -> TestResult {
    needs_root()?;
    // The file outlives the granting process: only its exit can end the
    // grant's entry.
    let dev = Device::open()?;
    let before = param("grants")?;
    let reaped = stat("grants_reaped_at_exit")?;
    let status = util::in_forked(|| {
        if dev.grant(None).is_err() {
            return 1;
        }
        // An entry and a grant.
        match param("grants") {
            Ok(n) if n >= before + 2 => 0,
            _ => 2,
        }
    })?;
    check_eq!(status, 0, "the child's grant was not registered");
    // exit_mmap ran before the parent's wait returned.
    check!(
        param("grants")? <= before,
        "an exited process's grants stayed: {} slots, {} before",
        param("grants")?,
        before
    );
    check!(stat("grants_reaped_at_exit")? > reaped, "no reap counted");
    drop(dev);
    Ok(())
}

fn consent_grants_reaped_at_exec() -> TestResult {
    needs_root()?;
    let dev = Device::open()?;
    let before = param("grants")?;
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    check_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the test process is single-threaded here.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // Grant on the inherited file, say so, and become `sleep`: the
        // process lives on, its old image's grants must not.
        let ok = dev.grant(None).is_ok() as u8;
        // SAFETY: writes one byte from a local.
        unsafe { libc::write(fds[1], (&ok as *const u8).cast(), 1) };
        let _ = util::exec_sleep();
        // SAFETY: ends the child.
        unsafe { libc::_exit(3) };
    }
    let mut ok = 0u8;
    // SAFETY: reads one byte into a local.
    let n = unsafe { libc::read(fds[0], (&mut ok as *mut u8).cast(), 1) };
    // SAFETY: closing our pipe ends.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    let result = (|| -> TestResult {
        check!(n == 1 && ok == 1, "the child could not grant");
        check_eq!(util::wait_for_comm(pid, "sleep")?, "sleep");
        check!(
            param("grants")? <= before,
            "grants of the image before exec stayed: {} slots, {} before",
            param("grants")?,
            before
        );
        Ok(())
    })();
    // SAFETY: the child is ours.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    util::wait_child(pid)?;
    result
}

fn consent_peer_readers_take_no_registry_lock() -> TestResult {
    needs_root()?;
    // Unprivileged readers of one consenting target: by pid, every copy
    // looks its consent up (one bucket's lock); through a peer fd, only
    // the attach does, and copies read the target's withdrawal count.
    let (mut t, addr) = target(NOBODY, true)?;
    check_eq!(t.command(GRANT, &[0])?[0], 0);
    let mut readers = Vec::new();
    for _ in 0..4 {
        readers.push(caller(NOBODY)?);
    }
    let lookups = stat("registry_lookups")?;
    for r in readers.iter_mut() {
        check_eq!(attempt(r, &t, addr)?, ALLOWED);
    }
    let by_pid = stat("registry_lookups")? - lookups;
    check!(
        by_pid >= 12,
        "4 readers x 3 calls by pid looked up {by_pid} times"
    );
    let lookups = stat("registry_lookups")?;
    let copies = stat("peer_copies")?;
    for r in readers.iter_mut() {
        check_eq!(r.command(ATTACH, &[t.pid as u64])?[0], 0);
    }
    for _ in 0..10 {
        for r in readers.iter_mut() {
            check_eq!(attempt_peer(r, addr)?, ALLOWED);
        }
    }
    check_eq!(stat("peer_copies")? - copies, 120);
    check_eq!(
        stat("registry_lookups")? - lookups,
        4,
        "120 copies through 4 peer fds: only the 4 attaches may look up"
    );
    Ok(())
}

fn consent_withdrawals_counted_per_target() -> TestResult {
    needs_root()?;
    let (mut t, addr) = target(NOBODY, true)?;
    check_eq!(t.command(GRANT, &[0])?[0], 0);
    let mut c = caller(NOBODY)?;
    check_eq!(c.command(ATTACH, &[t.pid as u64])?[0], 0);
    check_eq!(attempt_peer(&mut c, addr)?, ALLOWED);
    // Someone else grants and revokes, over and over.
    let (mut noisy, _) = target(OTHER_USER, true)?;
    for _ in 0..200 {
        check_eq!(noisy.command(GRANT, &[0])?[0], 0);
        check_eq!(noisy.command(REVOKE, &[])?[0], 0);
    }
    let rechecks = param("peer_rechecks")?;
    for _ in 0..20 {
        check_eq!(attempt_peer(&mut c, addr)?, ALLOWED);
    }
    check_eq!(
        param("peer_rechecks")? - rechecks,
        0,
        "copies through a peer fd rechecked after another process's revokes"
    );
    // The target itself withdrawing and granting again costs one recheck,
    // after which the fd is fast again.
    check_eq!(t.command(REVOKE, &[])?[0], 0);
    check_eq!(t.command(GRANT, &[0])?[0], 0);
    let rechecks = param("peer_rechecks")?;
    for _ in 0..20 {
        check_eq!(attempt_peer(&mut c, addr)?, ALLOWED);
    }
    // attempt_peer makes three calls; the first rechecks and moves on.
    check_eq!(param("peer_rechecks")? - rechecks, 1);
    Ok(())
}

const POLICY: &str = "/sys/module/cma/parameters/policy";

fn perm_policy_param() -> TestResult {
    needs_root()?;
    check_eq!(std::fs::read_to_string(POLICY)?.trim(), "consent");
    let _restore = Restore(POLICY, "consent");
    let (mut t, addr) = target(NOBODY, true)?;
    let mut c = caller(NOBODY)?;
    let mut other = caller(OTHER_USER)?;
    let dev = Device::open()?;
    // consent: the same user needs a grant.
    check_eq!(attempt(&mut c, &t, addr)?, EPERM);
    // credentials: the same user may, another may not.
    std::fs::write(POLICY, "credentials")?;
    check_eq!(std::fs::read_to_string(PARAM)?.trim(), "N");
    check_eq!(attempt(&mut c, &t, addr)?, ALLOWED);
    check_eq!(attempt(&mut other, &t, addr)?, EPERM);
    check_eq!(c.command(ATTACH, &[t.pid as u64])?[0], 0);
    check_eq!(attempt_peer(&mut c, addr)?, ALLOWED);
    // off: no one, not a consented peer, not a peer fd, not root; a process
    // may still copy within itself.
    check_eq!(t.command(GRANT, &[0])?[0], 0);
    std::fs::write(POLICY, "off")?;
    check_eq!(attempt(&mut c, &t, addr)?, EPERM);
    check_eq!(attempt_peer(&mut c, addr)?, EPERM);
    expect_errno(
        dev.probe(Target::Pid(t.pid)),
        libc::EPERM,
        "root under policy=off",
    )?;
    dev.probe(Target::Pid(std::process::id() as i32))?;
    // consent again: the grant counts, and the peer fd works again.
    std::fs::write(POLICY, "consent")?;
    check_eq!(std::fs::read_to_string(PARAM)?.trim(), "Y");
    check_eq!(attempt(&mut c, &t, addr)?, ALLOWED);
    check_eq!(attempt_peer(&mut c, addr)?, ALLOWED);
    // Only known values, and only root.
    check!(
        std::fs::write(POLICY, "sometimes").is_err(),
        "an unknown policy was taken"
    );
    let status = util::in_forked(|| {
        if util::become_nobody().is_err() {
            return 2;
        }
        std::fs::write(POLICY, "off").is_ok() as i32
    })?;
    check_eq!(status, 0, "an unprivileged user changed the policy");
    check_eq!(std::fs::read_to_string(POLICY)?.trim(), "consent");
    // Every change is logged.
    let log = std::process::Command::new("dmesg").output()?;
    let log = String::from_utf8_lossy(&log.stdout);
    for change in [
        "consent -> credentials",
        "credentials -> off",
        "off -> consent",
    ] {
        check!(
            log.contains(&format!("cma: policy {change} (by uid 0")),
            "no log line for {change}"
        );
    }
    Ok(())
}
