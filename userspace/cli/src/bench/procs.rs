//! Memory and processes: the bench's mappings, the control block the
//! processes of a measurement share, futex waits, and the team of children.

use cma::{Device, RemoteIoVec};
use std::io::{self};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::labels::Pages;

pub(super) const HUGE: usize = 2 << 20;

/// An anonymous mapping (private, or shared between parent and children).
pub(super) struct Buf {
    pub(super) map: *mut libc::c_void,
    pub(super) map_len: usize,
    /// Start of the usable region (2 MiB aligned for THP).
    pub(super) addr: usize,
    pub(super) len: usize,
}

impl Buf {
    pub(super) fn new(len: usize, pages: Pages, shared: bool) -> io::Result<Buf> {
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
    pub(super) fn touch(&self, seed: u8) {
        // SAFETY: the region is mapped and writable; no Rust reference
        // aliases it while this runs.
        let s = unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) };
        for (i, b) in s.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(seed);
        }
    }

    /// The first `len` bytes, as a range for a copy.
    pub(super) fn iov(&self, len: usize) -> RemoteIoVec {
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
pub(super) struct Ctl {
    /// Bumped by the parent to start a round; children wait on it (futex).
    pub(super) go: AtomicU32,
    /// Set to ask children to exit.
    pub(super) stop: AtomicU32,
    /// Children that are ready, and that finished the current round.
    pub(super) ready: AtomicU32,
    pub(super) done: AtomicU32,
    /// What a round does.
    pub(super) iters: AtomicU64,
    pub(super) size: AtomicU64,
    pub(super) mech: AtomicU32,
    /// Double-copy ring: slot states (0 empty, 1 full).
    pub(super) full: [AtomicU32; 2],
    /// Pids of the children, by index.
    pub(super) pids: [AtomicI32; 64],
}

pub(super) fn futex_wait(word: &AtomicU32, val: u32) {
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

pub(super) fn futex_wake(word: &AtomicU32) {
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX) };
}

/// Waits until `f` holds: spins briefly, then yields the CPU.
pub(super) fn spin_until(f: impl Fn() -> bool) {
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
pub(super) struct Team {
    pub(super) ctl_buf: Buf,
    pub(super) children: Vec<libc::pid_t>,
}

impl Team {
    pub(super) fn new() -> io::Result<Team> {
        let ctl_buf = Buf::new(std::mem::size_of::<Ctl>(), Pages::Small, true)?;
        Ok(Team {
            ctl_buf,
            children: Vec::new(),
        })
    }

    pub(super) fn ctl(&self) -> &Ctl {
        // SAFETY: the shared mapping is zeroed (a valid `Ctl`: all atomics)
        // and lives as long as `self`.
        unsafe { &*(self.ctl_buf.addr as *const Ctl) }
    }

    /// Forks a child that runs `body(index, ctl)` and exits.
    pub(super) fn spawn(&mut self, body: impl FnOnce(usize, &Ctl)) -> io::Result<libc::pid_t> {
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
    pub(super) fn wait_ready(&self, n: u32) {
        spin_until(|| self.ctl().ready.load(Ordering::Acquire) >= n);
    }

    /// Starts one round for the children and returns once `n` reported done;
    /// returns the wall time from start to the last one done.
    pub(super) fn round(&self, n: u32) -> Duration {
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
pub(super) fn next_round(ctl: &Ctl, seen: &mut u32) -> Option<()> {
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
pub(super) fn idle_child(ctl: &Ctl, bufs: &[&Buf]) {
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
