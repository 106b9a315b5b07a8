//! `review_pkey_own_side`: the caller's protection keys hold for cma's
//! copies as they hold for its own accesses and for `process_vm_readv`.
//!
//! With memory protection keys (x86 PKU), a thread's PKRU register can deny
//! writing, or any access, to the pages of a key. The CPU applies it to the
//! kernel's user copies too, so `process_vm_readv` into a write-denied
//! buffer fails with `EFAULT`, as a `memcpy` into it would be a `SIGSEGV`.
//! Under the `pinned` engine the module reached the caller's buffer
//! through its pinned pages in the direct map, where no key applies: the
//! caller's own page cache pinned them with `pin_user_pages_remote`, to
//! which GUP applies no key (a "foreign" access), and later copies used
//! them without asking again. So a cma read wrote into a buffer whose key
//! denied writing, and a cma write read from one whose key denied access.
//! The fixed module honours the caller's keys for its own side.
//!
//! The test skips without PKU (`pku` and `ospke` in /proc/cpuinfo, and a
//! key from `pkey_alloc`), and if this machine does not enforce the keys
//! (a write through a denying key must be a `SIGSEGV`, and
//! `process_vm_readv` into it `EFAULT`). Then, under each engine, with a
//! fresh `/dev/cma` (a cold cache of the caller's pages): the caller tags a
//! 1 MiB buffer with its key (`pkey_mprotect`, before any copy, so that no
//! cache is invalidated by it); reads into it through a peer fd and by pid,
//! allowed (so the caches are warm); denies writing (PKRU) and reads again:
//! each read must fail with `EFAULT` and leave the buffer as it was (looked
//! at after access is allowed again). Then writes from it to the target,
//! allowed, then with all access denied: each must fail with `EFAULT` and
//! leave the target as it was.
//!
//! On the module as reviewed the denied copies under `pinned` succeed: the
//! read overwrites the write-denied buffer, the write sends the
//! access-denied bytes. (`usercopy` goes through `copy_to_user` and
//! `copy_from_user` for the caller's side and passes there.)

use std::arch::asm;
use std::io;

use cma::sys::cma_iovec;
use cma::{Device, Op, Target, Transfer};

use crate::cache::engine_until_drop;
use crate::copy::{iov, peek, pvm, remote_buffer};
use crate::ktap::{expect_errno, Failure, TestResult};
use crate::perm::needs_root;
use crate::util::{self, Mapping, Rng};
use crate::{check, check_eq};

const LEN: usize = 1 << 20;
/// PKRU bits of a key: access disable, write disable.
const AD: u32 = 1;
const WD: u32 = 2;

fn rdpkru() -> u32 {
    let pkru: u32;
    // SAFETY: RDPKRU (ECX = 0) reads the PKRU register; the caller checked
    // that the CPU and the kernel support it (pku, ospke).
    unsafe {
        asm!("rdpkru", in("ecx") 0, out("eax") pkru, out("edx") _, options(nomem, nostack));
    }
    pkru
}

fn wrpkru(pkru: u32) {
    // SAFETY: WRPKRU (ECX = EDX = 0) sets this thread's PKRU; as above. Not
    // `nomem`: memory accesses must not move across it.
    unsafe {
        asm!("wrpkru", in("eax") pkru, in("ecx") 0, in("edx") 0, options(nostack));
    }
}

/// Sets `key`'s rights in this thread's PKRU to `rights` (AD, WD bits).
fn set_rights(key: i32, rights: u32) {
    let shift = 2 * key as u32;
    wrpkru((rdpkru() & !(3 << shift)) | (rights << shift));
}

/// Denies `rights` on `key` until dropped, then allows everything again:
/// a failed check never leaves a buffer that Rust code touches denied.
struct Denied(i32);

impl Denied {
    fn new(key: i32, rights: u32) -> Denied {
        set_rights(key, rights);
        Denied(key)
    }
}

impl Drop for Denied {
    fn drop(&mut self) {
        set_rights(self.0, 0);
    }
}

/// Whether the CPU has protection keys and the kernel turned them on.
fn cpu_has_pkeys() -> bool {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    info.lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| {
            let flags: Vec<&str> = l.split_whitespace().collect();
            flags.contains(&"pku") && flags.contains(&"ospke")
        })
}

fn pkey_mprotect(addr: usize, len: usize, prot: i32, key: i32) -> io::Result<()> {
    // SAFETY: changes the protection of our own mapping.
    if unsafe { libc::syscall(libc::SYS_pkey_mprotect, addr, len, prot, key) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How a copy names the target.
#[derive(Clone, Copy, Debug)]
enum Via {
    PeerFd,
    Pid,
}

fn copy(
    dev: &Device,
    peer: &cma::Peer,
    pid: i32,
    via: Via,
    op: Op,
    l: &[cma_iovec],
    r: &[cma_iovec],
) -> io::Result<Transfer> {
    // SAFETY: the local range is the test's buffer, which no Rust
    // reference covers while the copy runs.
    unsafe {
        match via {
            Via::PeerFd => peer.copy_raw(op, l, r),
            Via::Pid => dev.copy_raw(op, Target::Pid(pid), l, r),
        }
    }
}

/// Skips unless writes through a write-denying key fault here, for this
/// program and for `process_vm_readv`.
fn keys_enforced(key: i32, buf: &Mapping, pid: i32, addr: usize) -> TestResult {
    let at = buf.addr();
    let status = util::in_forked(|| {
        set_rights(key, WD);
        // SAFETY: a write to our own mapping, which the key denies: the
        // fault is the point (this forked child dies of it).
        unsafe { std::ptr::write_volatile(at as *mut u8, 1) };
        0
    })?;
    if status != 128 + libc::SIGSEGV {
        return Err(Failure::Skip(format!(
            "a write through a write-denying protection key did not fault here (status \
             {status}): keys are not enforced"
        )));
    }
    let l = [iov(at, LEN)];
    let r = [iov(addr, LEN)];
    let got = {
        let _deny = Denied::new(key, WD);
        pvm(Op::Read, pid, &l, &r)
    };
    match got {
        Err(e) if e.raw_os_error() == Some(libc::EFAULT) => Ok(()),
        other => Err(Failure::Skip(format!(
            "process_vm_readv into a write-denied buffer gave {other:?}, not EFAULT: the kernel \
             here does not apply protection keys to its user copies"
        ))),
    }
}

pub(super) fn own_side() -> TestResult {
    needs_root()?;
    if !cpu_has_pkeys() {
        return Err(Failure::Skip(
            "no protection keys here (/proc/cpuinfo lacks pku or ospke)".into(),
        ));
    }
    // SAFETY: plain syscall; a new key with every access allowed.
    let key = unsafe { libc::syscall(libc::SYS_pkey_alloc, 0, 0) } as i32;
    if key < 0 {
        return Err(Failure::Skip(format!(
            "pkey_alloc: {}",
            io::Error::last_os_error()
        )));
    }
    let (t, addr) = remote_buffer(LEN, 0x706b_6579, 0)?;
    let pid = t.pid;
    let rw = libc::PROT_READ | libc::PROT_WRITE;
    {
        let probe = Mapping::new(LEN, rw)?;
        pkey_mprotect(probe.addr(), LEN, rw, key)?;
        keys_enforced(key, &probe, pid, addr)?;
    }
    let mut rng = Rng::new(0x6b65_7973);
    for engine in ["pinned", "usercopy"] {
        let _engine = engine_until_drop(engine)?;
        // A fresh file: its cache of the caller's pages starts cold.
        let dev = Device::open()?;
        let peer = dev.attach(Target::Pid(pid))?;
        let mut buf = Mapping::new(LEN, rw)?;
        pkey_mprotect(buf.addr(), LEN, rw, key)?;
        let l = [iov(buf.addr(), LEN)];
        let r = [iov(addr, LEN)];
        for via in [Via::PeerFd, Via::Pid] {
            let what = format!("{engine}, {via:?}");
            // Allowed: the caches of both sides are warm after it.
            buf.bytes_mut().fill(0x11);
            let t = copy(&dev, &peer, pid, via, Op::Read, &l, &r)?;
            check_eq!((t.bytes, t.error), (LEN as u64, 0), "{what}: allowed read");
            check!(
                buf.bytes() == &peek(pid, addr, LEN)?[..],
                "{what}: the allowed read brought other bytes"
            );
            buf.bytes_mut().fill(0x22);
            let got = {
                let _deny = Denied::new(key, WD);
                copy(&dev, &peer, pid, via, Op::Read, &l, &r)
            };
            let wrote = buf.bytes().iter().filter(|&&b| b != 0x22).count();
            expect_errno(
                got,
                libc::EFAULT,
                format!("{what}: a read into a buffer whose protection key denies writing"),
            )?;
            check_eq!(
                wrote,
                0,
                "{what}: bytes written into the write-denied buffer"
            );
        }
        for via in [Via::PeerFd, Via::Pid] {
            let what = format!("{engine}, {via:?}");
            rng.fill(buf.bytes_mut());
            let sent = buf.bytes().to_vec();
            let t = copy(&dev, &peer, pid, via, Op::Write, &l, &r)?;
            check_eq!((t.bytes, t.error), (LEN as u64, 0), "{what}: allowed write");
            check!(
                peek(pid, addr, LEN)? == sent,
                "{what}: the allowed write sent other bytes"
            );
            rng.fill(buf.bytes_mut());
            let got = {
                let _deny = Denied::new(key, AD);
                copy(&dev, &peer, pid, via, Op::Write, &l, &r)
            };
            let now = peek(pid, addr, LEN)?;
            expect_errno(
                got,
                libc::EFAULT,
                format!("{what}: a write from a buffer whose protection key denies access"),
            )?;
            check!(
                now == sent,
                "{what}: the target received bytes read through an access-denying key"
            );
        }
    }
    drop(t);
    // SAFETY: plain syscall; nothing is tagged with the key any more.
    unsafe { libc::syscall(libc::SYS_pkey_free, key) };
    Ok(())
}
