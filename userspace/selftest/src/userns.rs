//! Consent across user namespaces: ranks of one user, each in a user
//! namespace of its own (rootless containers, `unshare -U`), where
//! `process_vm_readv` refuses. A grant naming the caller by pidfd admits it;
//! an open grant or a grant by pid does not; a different kuid, a target
//! whose capabilities reach the caller's namespace and a non-dumpable target
//! are refused whatever the grant (`docs/userns-consent.md`).

use std::io;
use std::os::fd::AsFd;

use cma::{Device, Features, Op, Target};

use crate::check_eq;
use crate::copy::{copy, iov, pvm};
use crate::ktap::{Test, TestResult};
use crate::peer::Peer;
use crate::perm::needs_root;
use crate::util::{self, page_size, Mapping, NOBODY, OTHER_USER};

/// The tests of this file, in order.
pub const TESTS: &[Test] = crate::tests![
    userns_named_pidfd_grant_admits,
    userns_descendants_grant_admits_siblings,
    userns_other_kuid_refused,
    userns_target_caps_reaching_caller_refused,
    userns_nondumpable_target_refused,
];

/// Commands a target answers with [errno] (see [`target`]).
const GRANT_PID: u8 = b'g';
const GRANT_PIDFD: u8 = b'f';
const GRANT_DESCENDANTS: u8 = b'D';
const REVOKE: u8 = b'r';
const UNDUMPABLE: u8 = b'd';
/// Commands a caller answers with [errno] (see [`caller`]).
const READ: u8 = b'R';
const WRITE: u8 = b'W';
const PROBE: u8 = b'P';
const PVM: u8 = b'v';

/// Where a peer runs.
#[derive(Clone, Copy)]
enum Ns {
    /// The initial user namespace, with no capabilities.
    Init,
    /// The initial user namespace, keeping every capability in its
    /// permitted set across the change of uid (`PR_SET_KEEPCAPS`).
    InitWithCaps,
    /// A user namespace of its own mapping only its uid and gid to
    /// themselves, with every capability there (as after `unshare -U`) if
    /// `caps`, or none.
    Own { caps: bool },
}

fn errno_of<T>(r: io::Result<T>) -> u64 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1) as u64,
    }
}

/// Becomes `uid` in `ns`.
fn enter(uid: u32, ns: Ns) -> io::Result<()> {
    if matches!(ns, Ns::InitWithCaps) {
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    }
    util::become_user(uid)?;
    let Ns::Own { caps } = ns else {
        return Ok(());
    };
    // SAFETY: unshare with a flag; the peer is a single-threaded process.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER) } != 0 {
        return Err(io::Error::last_os_error());
    }
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/gid_map", format!("{uid} {uid} 1"))?;
    // A new user namespace gives its creator every capability in it; a rank
    // that exec()s as a non-root user has none.
    if !caps {
        util::set_caps(0)?;
    }
    // Changing credentials clears dumpability; the tests set it explicitly.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    Ok(())
}

/// A target running as `uid` in `ns`, with "cma!" at the address it sends,
/// answering GRANT_PID [pid] (0: any peer), GRANT_PIDFD [pid] (opens a
/// pidfd for it), GRANT_DESCENDANTS [pid, generations] (of the process it
/// names, by a pidfd), REVOKE and UNDUMPABLE with [errno].
fn target(uid: u32, ns: Ns) -> io::Result<(Peer, usize)> {
    let mut t = Peer::spawn(move |mut ch| {
        enter(uid, ns)?;
        let mut m = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
        m.bytes_mut()[..4].copy_from_slice(b"cma!");
        let dev = Device::open()?;
        ch.send(&[m.addr() as u64])?;
        ch.serve(|c, args| {
            let r = match c {
                GRANT_PID => dev.grant(Some(args[0] as i32).filter(|&p| p != 0)),
                GRANT_PIDFD => cma::pidfd_open(args[0] as i32)
                    .and_then(|p| dev.grant_to(Target::PidFd(p.as_fd()))),
                GRANT_DESCENDANTS => cma::pidfd_open(args[0] as i32)
                    .and_then(|p| dev.grant_descendants(p.as_fd(), args[1] as u32)),
                REVOKE => dev.revoke(),
                // SAFETY: prctl with integer arguments.
                UNDUMPABLE => match unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } {
                    0 => Ok(()),
                    _ => Err(io::Error::last_os_error()),
                },
                _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
            };
            Ok(vec![errno_of(r)])
        })
    })?;
    let addr = t.recv()?[0] as usize;
    Ok((t, addr))
}

/// A caller running as `uid` in `ns`, answering READ, WRITE and PVM (a
/// `process_vm_readv`) [pid, addr] of 4 bytes, and PROBE [pid], with
/// [errno]; a read that copies anything but "cma!" is `EIO`.
fn caller(uid: u32, ns: Ns) -> io::Result<Peer> {
    let mut c = Peer::spawn(move |mut ch| {
        enter(uid, ns)?;
        let dev = Device::open()?;
        let mut buf = Mapping::new(page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
        ch.send(&[])?;
        ch.serve(|c, args| {
            let (pid, addr) = (args[0] as i32, args.get(1).copied().unwrap_or(0) as usize);
            let local = [iov(buf.addr(), 4)];
            let remote = [iov(addr, 4)];
            buf.bytes_mut()[..4].copy_from_slice(b"????");
            let r = match c {
                READ => copy(&dev, Op::Read, Target::Pid(pid), &local, &remote).map(|t| t.bytes),
                WRITE => {
                    buf.bytes_mut()[..4].copy_from_slice(b"cma!");
                    copy(&dev, Op::Write, Target::Pid(pid), &local, &remote).map(|t| t.bytes)
                }
                PROBE => dev.probe(Target::Pid(pid)).map(|()| 4),
                PVM => pvm(Op::Read, pid, &local, &remote).map(|n| n as u64),
                _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
            };
            let r = r.and_then(|n| match (n, c) {
                (4, READ | PVM) if &buf.bytes()[..4] != b"cma!" => {
                    Err(io::Error::from_raw_os_error(libc::EIO))
                }
                (4, _) => Ok(()),
                _ => Err(io::Error::from_raw_os_error(libc::EIO)),
            });
            Ok(vec![errno_of(r)])
        })
    })?;
    c.recv()?;
    Ok(c)
}

/// What `c` gets reading, writing, probing and `process_vm_readv`ing `t`.
fn attempt(c: &mut Peer, t: &Peer, addr: usize) -> io::Result<[u64; 4]> {
    let mut out = [0; 4];
    for (o, cmd) in out.iter_mut().zip([READ, WRITE, PROBE, PVM]) {
        *o = c.command(cmd, &[t.pid as u64, addr as u64])?[0];
    }
    Ok(out)
}

const EPERM: u64 = libc::EPERM as u64;
/// cma allows; `process_vm_readv` refuses.
const CMA_ONLY: [u64; 4] = [0, 0, 0, EPERM];
const REFUSED: [u64; 4] = [EPERM; 4];

fn needs_userns() -> TestResult {
    needs_root()?;
    util::needs_feature(Features::USERNS_GRANT)
}

fn userns_named_pidfd_grant_admits() -> TestResult {
    needs_userns()?;
    let (mut t, addr) = target(NOBODY, Ns::Own { caps: false })?;
    let mut c = caller(NOBODY, Ns::Own { caps: false })?;
    // Same kuid, sibling namespaces: process_vm_readv refuses, and so does
    // cma without a grant, with an open grant and with a grant by pid.
    check_eq!(attempt(&mut c, &t, addr)?, REFUSED, "no grant");
    check_eq!(t.command(GRANT_PID, &[0])?[0], 0);
    check_eq!(attempt(&mut c, &t, addr)?, REFUSED, "an open grant");
    check_eq!(t.command(GRANT_PID, &[c.pid as u64])?[0], 0);
    check_eq!(attempt(&mut c, &t, addr)?, REFUSED, "a grant by pid");
    // A grant naming the caller by pidfd admits it (the grant by pid to the
    // same process becomes the named kind), and revoking withdraws it.
    check_eq!(t.command(GRANT_PIDFD, &[c.pid as u64])?[0], 0);
    check_eq!(attempt(&mut c, &t, addr)?, CMA_ONLY, "a grant by pidfd");
    let mut other = caller(NOBODY, Ns::Own { caps: false })?;
    check_eq!(
        attempt(&mut other, &t, addr)?,
        REFUSED,
        "a process not named"
    );
    check_eq!(t.command(REVOKE, &[])?[0], 0);
    check_eq!(attempt(&mut c, &t, addr)?, REFUSED, "after the revoke");
    // A target with every capability in its own namespace: none reaches a
    // sibling namespace, so a named grant admits as well.
    let (mut t2, addr2) = target(NOBODY, Ns::Own { caps: true })?;
    check_eq!(t2.command(GRANT_PIDFD, &[c.pid as u64])?[0], 0);
    check_eq!(
        attempt(&mut c, &t2, addr2)?,
        CMA_ONLY,
        "a target with caps of its own"
    );
    Ok(())
}

fn userns_descendants_grant_admits_siblings() -> TestResult {
    needs_userns()?;
    util::needs_feature(Features::DESCENDANTS_GRANT)?;
    // Ranks of one launcher (this process), each in a namespace of its own.
    let (mut t, addr) = target(NOBODY, Ns::Own { caps: false })?;
    let mut c = caller(NOBODY, Ns::Own { caps: false })?;
    let mut c2 = caller(NOBODY, Ns::Own { caps: false })?;
    // The descendants of a sibling, or of the caller itself, do not
    // include the caller.
    check_eq!(t.command(GRANT_DESCENDANTS, &[c2.pid as u64, 1])?[0], 0);
    check_eq!(
        attempt(&mut c, &t, addr)?,
        REFUSED,
        "a sibling's descendants"
    );
    check_eq!(t.command(GRANT_DESCENDANTS, &[c.pid as u64, 1])?[0], 0);
    check_eq!(
        attempt(&mut c, &t, addr)?,
        REFUSED,
        "the caller's descendants"
    );
    // The launcher's grandchildren are not its children: the depth is the
    // granter's (this test runs in a child of the suite's process).
    // SAFETY: getppid has no preconditions.
    let grandparent = unsafe { libc::getppid() } as u64;
    check_eq!(t.command(GRANT_DESCENDANTS, &[grandparent, 1])?[0], 0);
    check_eq!(attempt(&mut c, &t, addr)?, REFUSED, "one generation");
    check_eq!(t.command(GRANT_DESCENDANTS, &[grandparent, 2])?[0], 0);
    check_eq!(attempt(&mut c, &t, addr)?, CMA_ONLY, "two generations");
    check_eq!(t.command(REVOKE, &[])?[0], 0);
    let too_deep = u64::from(cma::sys::CMA_GRANT_MAX_GENERATIONS) + 1;
    check_eq!(
        t.command(GRANT_DESCENDANTS, &[grandparent, too_deep])?[0],
        libc::EINVAL as u64
    );
    // The launcher's children: every sibling, across namespaces.
    let launcher = std::process::id();
    check_eq!(t.command(GRANT_DESCENDANTS, &[launcher as u64, 0])?[0], 0);
    check_eq!(attempt(&mut c, &t, addr)?, CMA_ONLY, "a sibling");
    check_eq!(attempt(&mut c2, &t, addr)?, CMA_ONLY, "another sibling");
    // Never another kuid, whatever grant names it.
    let mut stranger = caller(OTHER_USER, Ns::Own { caps: false })?;
    check_eq!(attempt(&mut stranger, &t, addr)?, REFUSED, "another kuid");
    check_eq!(t.command(REVOKE, &[])?[0], 0);
    check_eq!(attempt(&mut c, &t, addr)?, REFUSED, "after the revoke");
    Ok(())
}

fn userns_other_kuid_refused() -> TestResult {
    needs_userns()?;
    let (mut t, addr) = target(NOBODY, Ns::Own { caps: false })?;
    let mut c = caller(OTHER_USER, Ns::Own { caps: false })?;
    check_eq!(t.command(GRANT_PIDFD, &[c.pid as u64])?[0], 0);
    check_eq!(attempt(&mut c, &t, addr)?, REFUSED);
    Ok(())
}

fn userns_target_caps_reaching_caller_refused() -> TestResult {
    needs_userns()?;
    // The target keeps capabilities in the initial namespace, an ancestor
    // of the caller's: reading it could take them over.
    let (mut t, addr) = target(NOBODY, Ns::InitWithCaps)?;
    let mut c = caller(NOBODY, Ns::Own { caps: false })?;
    check_eq!(t.command(GRANT_PIDFD, &[c.pid as u64])?[0], 0);
    check_eq!(attempt(&mut c, &t, addr)?, REFUSED, "caps in an ancestor");
    // Without capabilities, the same target and grant admit the caller.
    let (mut t2, addr2) = target(NOBODY, Ns::Init)?;
    check_eq!(t2.command(GRANT_PIDFD, &[c.pid as u64])?[0], 0);
    check_eq!(attempt(&mut c, &t2, addr2)?, CMA_ONLY, "no caps");
    Ok(())
}

fn userns_nondumpable_target_refused() -> TestResult {
    needs_userns()?;
    let (mut t, addr) = target(NOBODY, Ns::Own { caps: false })?;
    let mut c = caller(NOBODY, Ns::Own { caps: false })?;
    check_eq!(t.command(GRANT_PIDFD, &[c.pid as u64])?[0], 0);
    check_eq!(attempt(&mut c, &t, addr)?, CMA_ONLY);
    check_eq!(t.command(UNDUMPABLE, &[])?[0], 0);
    check_eq!(attempt(&mut c, &t, addr)?, REFUSED);
    Ok(())
}
