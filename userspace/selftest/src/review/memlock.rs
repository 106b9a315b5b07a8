//! `review_memlock_charged_to_living` and `..._scm_rights`: the pages a
//! peer fd's cache holds are charged to a user who is still there.
//!
//! A cache region was charged to the locked memory of the process whose
//! copy made it (`account_locked_vm` on that process's mm, against that
//! process's `RLIMIT_MEMLOCK`), and stayed in the peer fd's cache, pinned,
//! after that process exited: its mm, and the charge with it, went with
//! it. Any number of short-lived processes sharing one peer fd (inherited
//! across `fork`, or passed over a unix socket) could each pin up to their
//! own limit, and the pins outlived them all. The fixed module charges the
//! copying user (`user_struct->locked_vm`, as io_uring does), so that one
//! user's caches never hold more than that user's limit, however many
//! processes made them.
//!
//! The tests: a target (uid 1000, consenting) holds 256 MiB; a process of
//! uid 1000 with `RLIMIT_MEMLOCK` 8 MiB attaches a peer fd to it; then 32
//! processes of the same user, one after another, each read a different
//! 8 MiB through that one peer fd (so that its cache keeps the pages) and
//! exit: forked children that inherited the fd, or unrelated processes
//! (forked before anything of cma was opened) that were passed it with
//! `SCM_RIGHTS`. Every copy must be complete with the right bytes (past
//! the limit, uncached), and once they are all gone, with the peer fd
//! still open, the `cache_pages` counter (the pages all caches hold; no
//! other cache is in use) may have grown by at most 8 MiB of pages: the
//! charge is per user, checked against the copier's limit, and nothing
//! else of uid 1000 is charged. No slack: a charge past the limit is
//! refused whole.
//!
//! On the module as reviewed the counter grows by 65536 pages (256 MiB,
//! every one of the 32 copiers' 8 MiB), and the test fails.

use std::io::{self, Read, Write};
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use cma::{Device, Op, Target};

use super::{fill, mismatch, set_memlock, Aligned, UID};
use crate::copy::iov;
use crate::ktap::{Failure, TestResult};
use crate::peer::Peer;
use crate::perm::{needs_root, param, stat};
use crate::util::{self, page_size, Mapping};
use crate::{check, check_eq};

/// The copiers' `RLIMIT_MEMLOCK`, and what each reads.
const LIMIT: usize = 8 << 20;
/// The copiers.
const COPIERS: usize = 32;
/// The target's buffer: a chunk per copier.
const LEN: usize = LIMIT * COPIERS;
const SEED: u64 = 0x6d65_6d6c;

/// Skips unless the per-cache bound lets the old behaviour show: one cache
/// may hold more than the limit.
fn needs_cache_room() -> TestResult {
    let max = param("cache_pages")?;
    if max < (4 * LIMIT / page_size()) as u64 {
        return Err(Failure::Skip(format!(
            "cache_pages is {max}: a cache may not hold 4 times the {} MiB limit",
            LIMIT >> 20
        )));
    }
    Ok(())
}

/// A target of uid 1000 that consents to any peer, with `LEN` bytes of
/// pattern `SEED` in THP-backed memory at the address it sends.
fn target() -> Result<(Peer, usize), Failure> {
    let mut t = Peer::spawn(|mut ch| {
        util::become_user(UID)?;
        let dev = Device::open()?;
        dev.grant(None)?;
        let mut m = Aligned::new(LEN, libc::MADV_HUGEPAGE)?;
        fill(m.bytes_mut(), 0, SEED);
        ch.send(&[m.addr() as u64])?;
        ch.wait()?;
        drop((m, dev));
        Ok(())
    })?;
    let addr = t.recv()?[0] as usize;
    Ok((t, addr))
}

/// Reads chunk `i` of the target's buffer at `addr` through the peer fd
/// `fd`; returns 0 if all of it came with the right bytes, else a status
/// saying what went wrong.
fn read_chunk(fd: BorrowedFd<'_>, addr: usize, i: usize) -> i32 {
    let Ok(buf) = Mapping::new(LIMIT, libc::PROT_READ | libc::PROT_WRITE) else {
        return 2;
    };
    let l = [iov(buf.addr(), LIMIT)];
    let r = [iov(addr + i * LIMIT, LIMIT)];
    // SAFETY: the local range is our own fresh mapping.
    match unsafe { cma::raw::Channel::new(fd, None).copy_raw(Op::Read, &l, &r) } {
        Ok(t) if t.bytes == LIMIT as u64 && t.error == 0 => {}
        Ok(_) => return 3,
        Err(e) => return 16 + e.raw_os_error().unwrap_or(0).clamp(0, 200),
    }
    if mismatch(buf.bytes(), i * LIMIT, SEED).is_some() {
        return 4;
    }
    0
}

/// What a copier's status says.
fn status_text(s: u64) -> String {
    match s {
        0 => "ok".into(),
        2 => "no memory for its buffer".into(),
        3 => "the copy fell short".into(),
        4 => "the copy brought other bytes".into(),
        s if s >= 16 => format!(
            "the copy failed: {}",
            io::Error::from_raw_os_error(s as i32 - 16)
        ),
        s => format!("status {s}"),
    }
}

/// VmLck and VmPin of `pid`, for the log.
fn locked(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("VmLck") || l.starts_with("VmPin"))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The check both tests end with, while the holder of the peer fd lives.
fn check_held(before: u64, fallbacks: u64, holder: i32, how: &str) -> TestResult {
    let held = stat("cache_pages")?.wrapping_sub(before);
    let limit = (LIMIT / page_size()) as u64;
    println!(
        "# {COPIERS} copiers of uid {UID} ({how}) gone: the caches hold {held} pages more \
         (limit {limit}); {} fallbacks; the fd's holder: {}",
        stat("cache_fallbacks")?.wrapping_sub(fallbacks),
        locked(holder)
    );
    check!(
        held <= limit,
        "the caches hold {held} pages for uid {UID}, whose RLIMIT_MEMLOCK is {limit} pages: \
         charged to processes that are gone"
    );
    Ok(())
}

/// The fd's holder: uid 1000, limited, attached to the target; runs
/// `copiers` with the peer fd, reports [failures, first failure's status],
/// and keeps the fds open until the test hangs up.
fn holder(
    tpid: i32,
    copiers: impl FnOnce(&cma::Peer) -> io::Result<(u64, u64)>,
) -> io::Result<Peer> {
    Peer::spawn(move |mut ch| {
        // The limit first, as root: a hard limit below it could not be
        // raised as uid 1000.
        set_memlock(LIMIT as u64)?;
        util::become_user(UID)?;
        let dev = Device::open()?;
        let peer = dev.attach(Target::Pid(tpid))?;
        let (failed, first) = copiers(&peer)?;
        ch.send(&[failed, first])?;
        ch.wait()?;
        drop((peer, dev));
        Ok(())
    })
}

pub(super) fn inherited_peer_fd() -> TestResult {
    needs_root()?;
    needs_cache_room()?;
    let (t, addr) = target()?;
    let (before, fallbacks) = (stat("cache_pages")?, stat("cache_fallbacks")?);
    let mut h = holder(t.pid, |peer| {
        let (mut failed, mut first) = (0, 0);
        for i in 0..COPIERS {
            let s = util::in_forked(|| read_chunk(peer.as_fd(), addr, i))? as u64;
            if s != 0 {
                failed += 1;
                first = if first == 0 { s } else { first };
            }
        }
        Ok((failed, first))
    })?;
    let v = h.recv()?;
    check_held(before, fallbacks, h.pid, "forked, the peer fd inherited")?;
    check_eq!(
        v[0],
        0,
        "copies through the inherited peer fd failed; the first: {}",
        status_text(v[1])
    );
    drop(h);
    drop(t);
    Ok(())
}

/// Sends `fd` over `sock` (`SCM_RIGHTS`), with one byte of data.
fn send_fd(sock: &UnixStream, fd: RawFd) -> io::Result<()> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: an all-zero msghdr is valid; the fields set below point to
    // live buffers of the sizes given; the control message header and its
    // data lie within `cbuf` (CMSG_SPACE of one fd).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut RawFd, fd);
        if libc::sendmsg(sock.as_raw_fd(), &msg, 0) != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives a descriptor sent with [`send_fd`].
fn recv_fd(sock: &UnixStream) -> io::Result<OwnedFd> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: as in `send_fd`; the kernel fills `cbuf` (at most `space`
    // bytes), and the descriptor read from it is new and ours.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        if libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) != 1 {
            return Err(io::Error::last_os_error());
        }
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_level != libc::SOL_SOCKET || (*c).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(io::Error::other("no descriptor came"));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const RawFd);
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

pub(super) fn passed_peer_fd() -> TestResult {
    needs_root()?;
    needs_cache_room()?;
    let (t, addr) = target()?;
    // The receivers, forked before any process of this test but the target
    // opened /dev/cma: nothing of cma's is inherited. Each waits for the
    // peer fd, reads its chunk, answers with its status, and exits.
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for i in 0..COPIERS {
        let (mine, theirs) = UnixStream::pair()?;
        receivers.push(Peer::spawn(move |_| {
            set_memlock(LIMIT as u64)?;
            util::become_user(UID)?;
            let fd = recv_fd(&theirs)?;
            let s = read_chunk(fd.as_fd(), addr, i);
            (&theirs).write_all(&[s as u8])?;
            Ok(())
        })?);
        senders.push(mine);
    }
    let (before, fallbacks) = (stat("cache_pages")?, stat("cache_fallbacks")?);
    let mut h = holder(t.pid, move |peer| {
        let (mut failed, mut first) = (0, 0);
        for s in &senders {
            send_fd(s, peer.as_raw_fd())?;
            let mut status = [0u8];
            (&*s).read_exact(&mut status)?;
            if status[0] != 0 {
                failed += 1;
                first = if first == 0 { status[0] as u64 } else { first };
            }
        }
        Ok((failed, first))
    })?;
    let v = h.recv()?;
    for (i, r) in receivers.into_iter().enumerate() {
        check_eq!(r.finish()?, 0, "receiver {i} failed");
    }
    check_held(before, fallbacks, h.pid, "unrelated, passed the peer fd")?;
    check_eq!(
        v[0],
        0,
        "copies through the passed peer fd failed; the first: {}",
        status_text(v[1])
    );
    drop(h);
    drop(t);
    Ok(())
}
