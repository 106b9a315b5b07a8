//! Maps of a target's memory (`CMA_IOC_MAP`): [`Peer::map`] and the peer
//! fd's status page ([`Peer::map_status`]).

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use crate::{sys, Peer};

/// A range of a target's memory mapped into this process, shared: loads
/// and stores reach the target's pages. Unmapped when dropped.
///
/// The bytes are the target's, changing under the reader as the target
/// writes them: read them with [`Mapped::read_at`] (a `memcpy`), never
/// through Rust references. Whether a read saw exactly what a copy would
/// is the status page's to say ([`MapStatus`]).
#[derive(Debug)]
pub struct Mapped {
    addr: usize,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; every access goes through
// `memcpy` on raw pointers.
unsafe impl Send for Mapped {}
// SAFETY: as above.
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Where the range is in this process.
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never: a map has at least one page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copies `buf.len()` bytes from `offset` of the mapping into `buf`.
    /// Panics if the range is outside the mapping.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) {
        assert!(offset <= self.len && buf.len() <= self.len - offset);
        // SAFETY: the source is inside the live mapping (checked above),
        // read with memcpy, which Rust's aliasing rules do not see into;
        // `buf` is ours.
        unsafe {
            libc::memcpy(
                buf.as_mut_ptr().cast(),
                (self.addr + offset) as *const libc::c_void,
                buf.len(),
            )
        };
    }

    /// Copies `buf` to `offset` of the mapping (which must be writable).
    /// Panics if the range is outside the mapping.
    pub fn write_at(&self, offset: usize, buf: &[u8]) {
        assert!(offset <= self.len && buf.len() <= self.len - offset);
        // SAFETY: as in `read_at`; a read-only mapping faults (SIGSEGV), as
        // a store to it from C would.
        unsafe {
            libc::memcpy(
                (self.addr + offset) as *mut libc::c_void,
                buf.as_ptr().cast(),
                buf.len(),
            )
        };
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by `Peer::map` and is unmapped once.
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}

/// A peer fd's status page (`struct cma_map_status`), mapped read-only.
#[derive(Debug)]
pub struct MapStatus {
    page: *const sys::cma_map_status,
}

// SAFETY: a read-only shared page, read with volatile loads.
unsafe impl Send for MapStatus {}
// SAFETY: as above.
unsafe impl Sync for MapStatus {}

/// One look at a status page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatusSnapshot {
    /// Moves whenever a mapped range may have changed under a reader.
    pub generation: u64,
    /// Not zero while a mapping may show bytes that are not the target's.
    pub unstable: u64,
    /// Touches that found no target page.
    pub holes: u64,
    /// Changes of the target's mapping that unmapped mapped ranges.
    pub invalidations: u64,
    /// Huge pages mapped whole (one PMD each).
    pub pmds: u64,
    /// Moves as any change of the mapping process's own address space
    /// begins: memory of it a copy reached whole stays mapped, with that
    /// access, while this stays the same.
    pub caller_generation: u64,
}

impl MapStatus {
    /// Maps the status page of the peer fd `fd` (after its first map:
    /// `ENODEV` before). For a peer fd held otherwise than as a [`Peer`]
    /// (the preload's); [`Peer::map_status`] is this on its own fd.
    pub fn of_fd(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<MapStatus> {
        // SAFETY: a new shared read-only mapping of the fd's page at offset
        // 0; the kernel picks the address.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page_size(),
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(MapStatus { page: p.cast() })
    }

    /// `generation` now, alone (a reader that checks one field at a time
    /// orders its own loads).
    pub fn generation(&self) -> u64 {
        // SAFETY: the page is mapped for the life of `self`; an aligned u64
        // the kernel updates atomically.
        unsafe { std::ptr::addr_of!((*self.page).generation).read_volatile() }
    }

    /// `unstable` now, alone.
    pub fn unstable(&self) -> u64 {
        // SAFETY: as in `generation`.
        unsafe { std::ptr::addr_of!((*self.page).unstable).read_volatile() }
    }

    /// `caller_generation` now, alone.
    pub fn caller_generation(&self) -> u64 {
        // SAFETY: as in `generation`.
        unsafe { std::ptr::addr_of!((*self.page).caller_generation).read_volatile() }
    }

    /// The counters now. `generation` is read first: a reader that copies between
    /// two snapshots whose `generation` agree, the first with `unstable == 0`, saw
    /// the target's bytes.
    pub fn snapshot(&self) -> StatusSnapshot {
        // SAFETY: the page is mapped for the life of `self`; volatile loads
        // of aligned u64s the kernel updates atomically.
        unsafe {
            let generation = std::ptr::addr_of!((*self.page).generation).read_volatile();
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            StatusSnapshot {
                generation,
                unstable: std::ptr::addr_of!((*self.page).unstable).read_volatile(),
                holes: std::ptr::addr_of!((*self.page).holes).read_volatile(),
                invalidations: std::ptr::addr_of!((*self.page).invalidations).read_volatile(),
                pmds: std::ptr::addr_of!((*self.page).pmds).read_volatile(),
                caller_generation: std::ptr::addr_of!((*self.page).caller_generation)
                    .read_volatile(),
            }
        }
    }

    /// Waits until no change of the target's mapping is still reaching the
    /// caller (`unstable == 0`), polling, for at most `timeout`; returns
    /// the snapshot then, or `None` on timeout. After a change the target
    /// made (its call returned), a read that follows a settled snapshot
    /// sees the target's new pages.
    pub fn settle(&self, timeout: std::time::Duration) -> Option<StatusSnapshot> {
        let end = std::time::Instant::now() + timeout;
        loop {
            let s = self.snapshot();
            if s.unstable == 0 {
                return Some(s);
            }
            if std::time::Instant::now() >= end {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }

    /// Whether nothing changed since `before` (taken before a read, with
    /// `unstable == 0`): the bytes read in between were the target's.
    pub fn unchanged_since(&self, before: &StatusSnapshot) -> bool {
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        before.unstable == 0 && self.snapshot().generation == before.generation
    }
}

impl Drop for MapStatus {
    fn drop(&mut self) {
        // SAFETY: the page was mapped by `Peer::map_status`, unmapped once.
        unsafe { libc::munmap(self.page as *mut libc::c_void, page_size()) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

impl Peer {
    /// Maps `len` bytes of the target at `addr` (both page-aligned) into
    /// this process, read-only or also `writable` (`CMA_IOC_MAP`): access is
    /// checked as a copy's. Needs [`Features::MAP`](crate::Features::MAP).
    pub fn map(&self, addr: usize, len: usize, writable: bool) -> io::Result<Mapped> {
        let mut args = sys::cma_map {
            addr: addr as u64,
            len: len as u64,
            prot: if writable {
                (libc::PROT_READ | libc::PROT_WRITE) as u32
            } else {
                libc::PROT_READ as u32
            },
            ..Default::default()
        };
        // SAFETY: CMA_IOC_MAP reads and writes one live `cma_map`.
        unsafe { sys::ioctl(self.as_fd(), sys::CMA_IOC_MAP, &mut args as *mut _ as usize) }?;
        Ok(Mapped {
            addr: args.mapped as usize,
            len,
        })
    }

    /// Maps the fd's status page (after a first [`Peer::map`]: `ENODEV`
    /// before).
    pub fn map_status(&self) -> io::Result<MapStatus> {
        MapStatus::of_fd(self.as_fd())
    }
}
