//! Tests that prove the fixes of the module's review, one behaviour each.
//! Every test fails on the module as it was reviewed (its doc comment says
//! how) and passes once the fix is in:
//!
//! - `review_grant_race_reaped` (`race.rs`): `CMA_IOC_GRANT` naming a
//!   process that is being reaped panicked the kernel.
//! - `review_usercopy_folio_boundary_*` (`folio.rs`): a `copy_to_user` of a
//!   run of pinned pages that starts in a THP and goes on into the next,
//!   physically adjacent, folio trips `CONFIG_HARDENED_USERCOPY`.
//! - `review_memlock_charged_to_living*` (`memlock.rs`): the pages a cache
//!   holds were charged to the copying process's mm, so short-lived copiers
//!   each got a fresh `RLIMIT_MEMLOCK`.
//! - `review_reader_leaves_target_unchanged` (`unchanged.rs`): a read-only
//!   long-term pin of the target's pages unshared its zero pages and
//!   private file pages.
//! - `review_pkey_own_side` (`pkey.rs`): the caller's own pages, pinned or
//!   cached, were written and read past its protection keys.

mod folio;
mod memlock;
mod pkey;
mod race;
mod unchanged;

use std::io;

use cma::Op;

use crate::ktap::{Failure, Test, TestResult};

/// The tests of this file, in order.
pub const TESTS: &[Test] = &[
    Test {
        name: "review_grant_race_reaped",
        run: race::grant_race_reaped,
    },
    Test {
        name: "review_usercopy_folio_boundary_read_pinned",
        run: || folio::boundary(Op::Read, "pinned"),
    },
    Test {
        name: "review_usercopy_folio_boundary_read_usercopy",
        run: || folio::boundary(Op::Read, "usercopy"),
    },
    Test {
        name: "review_usercopy_folio_boundary_write_pinned",
        run: || folio::boundary(Op::Write, "pinned"),
    },
    Test {
        name: "review_usercopy_folio_boundary_write_usercopy",
        run: || folio::boundary(Op::Write, "usercopy"),
    },
    Test {
        name: "review_memlock_charged_to_living",
        run: memlock::inherited_peer_fd,
    },
    Test {
        name: "review_memlock_charged_to_living_scm_rights",
        run: memlock::passed_peer_fd,
    },
    Test {
        name: "review_reader_leaves_target_unchanged",
        run: unchanged::reader_leaves_target_unchanged,
    },
    Test {
        name: "review_pkey_own_side",
        run: pkey::own_side,
    },
];

/// The unprivileged user these tests run their processes as (a uid with
/// no passwd entry is fine: only the number counts).
pub(crate) const UID: u32 = 1000;

/// 2 MiB: a PMD-sized huge page.
pub(crate) const HUGE: usize = 2 << 20;

/// How long each race runs: `CMA_STRESS_SECS` (the suite's knob for its
/// race and stress tests), 5 s if unset.
pub(crate) fn race_time() -> std::time::Duration {
    let secs = std::env::var("CMA_STRESS_SECS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(5);
    std::time::Duration::from_secs(secs)
}

/// A `len`-byte anonymous private mapping at a 2 MiB-aligned address,
/// with `advice` (`MADV_HUGEPAGE`, `MADV_NOHUGEPAGE`, or 0 for none),
/// untouched. Unmapped on drop.
pub(crate) struct Aligned {
    addr: usize,
    len: usize,
}

impl Aligned {
    pub(crate) fn new(len: usize, advice: i32) -> io::Result<Aligned> {
        // SAFETY: a fresh anonymous mapping, trimmed to alignment below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len + HUGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start = p as usize;
        let addr = (start + HUGE - 1) & !(HUGE - 1);
        // SAFETY: unmaps the unaligned head and tail of our own mapping, and
        // advises the rest, which nothing references yet.
        unsafe {
            if addr > start {
                libc::munmap(p, addr - start);
            }
            let end = start + len + HUGE;
            if end > addr + len {
                libc::munmap((addr + len) as *mut _, end - addr - len);
            }
            if advice != 0 {
                libc::madvise(addr as *mut _, len, advice);
            }
        }
        Ok(Aligned { addr, len })
    }

    pub(crate) fn addr(&self) -> usize {
        self.addr
    }

    /// The mapping's bytes, writable.
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: the mapping is live, `len` bytes, readable and writable,
        // and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) }
    }

    /// Leaves the mapping mapped for the rest of the process's life.
    pub(crate) fn leak(self) -> usize {
        let addr = self.addr;
        std::mem::forget(self);
        addr
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: the mapping this value owns.
        unsafe { libc::munmap(self.addr as *mut _, self.len) };
    }
}

/// The 64-bit word the pattern `seed` puts at byte offset `off` (a
/// multiple of 8) of a buffer: distinct for every word and seed.
pub(crate) fn word(seed: u64, off: usize) -> u64 {
    let mut x = (off as u64 ^ seed.rotate_left(32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 29;
    x.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ seed
}

/// Fills `buf`, which starts at byte offset `base` (a multiple of 8) of
/// the patterned buffer, with pattern `seed`.
pub(crate) fn fill(buf: &mut [u8], base: usize, seed: u64) {
    for (i, chunk) in buf.chunks_mut(8).enumerate() {
        let w = word(seed, base + 8 * i).to_ne_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

/// The byte offset of the first word of `buf` (which starts at offset
/// `base`, a multiple of 8) that differs from pattern `seed`, if any.
pub(crate) fn mismatch(buf: &[u8], base: usize, seed: u64) -> Option<usize> {
    buf.chunks(8).enumerate().find_map(|(i, chunk)| {
        let w = word(seed, base + 8 * i).to_ne_bytes();
        (chunk != &w[..chunk.len()]).then_some(8 * i)
    })
}

/// Skips unless transparent huge pages can be had (with `MADV_HUGEPAGE`).
pub(crate) fn needs_thp() -> TestResult {
    let thp =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    if thp.is_empty() || thp.contains("[never]") {
        return Err(Failure::Skip("transparent huge pages are disabled".into()));
    }
    Ok(())
}

/// Sets `RLIMIT_MEMLOCK` (soft and hard) of the calling process to `bytes`.
pub(crate) fn set_memlock(bytes: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: bytes,
    };
    // SAFETY: sets our own limit from a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
