// SPDX-License-Identifier: GPL-2.0

//! The copy engine: moves bytes between the caller's iovecs and a target's.
//!
//! It knows nothing of ioctls: it gets validated iovecs and the target's
//! address space, and returns how far it got and why it stopped. Two paths:
//!
//! - **remote**: the target is another address space. For each remote range,
//!   pin a batch of its pages under its `mmap_lock` (dropped right after), then
//!   copy page by page between the pinned pages and the caller's iovecs, then
//!   unpin (dirty if written). No `mmap_lock` is held while copying. With the
//!   `pinned` engine, long pieces of the caller's iovecs are pinned too
//!   (without `mmap_lock`, by `pin_user_pages_fast`) and copied kernel to
//!   kernel (see [`LocalPages`]); with `usercopy`, the kernel's user-copy
//!   routines reach the caller's memory, as `process_vm_readv` does.
//! - **direct**: the target is the caller's own address space. The same
//!   single copy, but the "remote" pages are pinned by `pin_user_pages_fast`
//!   (no `mmap_lock`, no remote GUP). Only when the source and destination
//!   ranges may overlap does it copy twice, through a kernel buffer of
//!   [`DIRECT_CHUNK`] bytes, so that each chunk is read before any of it is
//!   written (`memmove` within a chunk).

use crate::cache::{Cache, Region};
use crate::kcopy::{self, Engine};
use crate::mm::{MmExt, MmRef};
use crate::pin::{PageBatch, Pinned};
use crate::stats::{self, Stat};
use crate::task::{cond_resched, fatal_signal_pending};
use crate::user;
use kernel::alloc::KVVec;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;
use kernel::sync::Arc;

/// Pages pinned per batch: 2 MiB, so that one batch covers a PMD-sized huge page.
const BATCH_PAGES: usize = 512;

/// Staging size of the direct path (`CMA_DIRECT_CHUNK` in the UAPI header).
pub(crate) const DIRECT_CHUNK: usize = crate::uapi::CMA_DIRECT_CHUNK as usize;

/// One contiguous range of user memory. Validated iovecs satisfy
/// `len <= isize::MAX`, and so does the total of a request's iovecs on
/// either side (`copy.rs` checks or caps it); `base + len` may still
/// overflow, which the copy reports as a fault when it gets there (addresses
/// are only ever computed with wrapping or saturating arithmetic).
#[derive(Clone, Copy)]
pub(crate) struct IoVec {
    pub(crate) base: usize,
    pub(crate) len: usize,
}

/// Which way the bytes go.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Remote to local.
    Read,
    /// Local to remote.
    Write,
}

/// How a copy ended.
pub(crate) struct Outcome {
    /// Bytes transferred.
    pub(crate) bytes: usize,
    /// Why it stopped before either side was exhausted, if it did.
    pub(crate) error: Option<Error>,
}

/// A position in a list of iovecs, skipping empty ones.
///
/// Invariant: `offset <= iovs[index].len` while `index < iovs.len()`.
struct Cursor<'a> {
    iovs: &'a [IoVec],
    index: usize,
    offset: usize,
}

impl<'a> Cursor<'a> {
    fn new(iovs: &'a [IoVec]) -> Self {
        let mut c = Cursor {
            iovs,
            index: 0,
            offset: 0,
        };
        c.skip_empty();
        c
    }

    fn skip_empty(&mut self) {
        // PANIC: the index is checked just before, and stays below
        // `iovs.len()`, so it cannot overflow.
        while self.index < self.iovs.len() && self.offset == self.iovs[self.index].len {
            self.index += 1;
            self.offset = 0;
        }
    }

    /// The next contiguous piece, at most `max` bytes: `(address, length)`,
    /// or `None` when exhausted. An address that would wrap around is
    /// returned as is; the user copy routines fault on it.
    fn peek(&self, max: usize) -> Option<(usize, usize)> {
        let iov = self.iovs.get(self.index)?;
        Some((
            iov.base.wrapping_add(self.offset),
            // OVERFLOW: `offset <= len` (the invariant).
            (iov.len - self.offset).min(max),
        ))
    }

    /// Moves past `n` bytes, at most the length the last `peek` returned.
    fn advance(&mut self, n: usize) {
        // OVERFLOW: `n` is within the current iovec, so the new offset is at
        // most its `len`, which keeps the invariant.
        self.offset += n;
        self.skip_empty();
    }
}

/// Total bytes of `iovs`. Validated iovecs cannot overflow `usize` (their
/// total is at most `isize::MAX`); saturating all the same, since `sum()`
/// would panic on an overflow.
pub(crate) fn total(iovs: &[IoVec]) -> usize {
    iovs.iter().fold(0, |t, v| t.saturating_add(v.len))
}

/// Where byte `bytes` of the concatenation of `iovs` lies: `(index, offset)`,
/// or `(iovs.len(), 0)` if it is past the end.
pub(crate) fn position(iovs: &[IoVec], bytes: usize) -> (usize, usize) {
    let mut left = bytes;
    for (i, v) in iovs.iter().enumerate() {
        if left < v.len {
            return (i, left);
        }
        // OVERFLOW: `v.len <= left` here.
        left -= v.len;
    }
    (iovs.len(), 0)
}

/// The page caches a copy may use (see [`crate::cache`]); each serves only
/// the address space it is for.
#[derive(Clone, Copy)]
pub(crate) struct Caches<'a> {
    /// The target's pages: the peer fd's cache.
    pub(crate) target: Option<&'a Cache>,
    /// The caller's own pages: its `/dev/cma` file's cache.
    pub(crate) own: Option<&'a Cache>,
}

/// Copies between the caller's `local` iovecs and `remote` iovecs in `mm`,
/// until either side is exhausted or something fails.
pub(crate) fn copy(
    mm: &MmRef,
    caches: Caches<'_>,
    dir: Direction,
    local: &[IoVec],
    remote: &[IoVec],
) -> Outcome {
    let want = total(local).min(total(remote));
    let mut out = Outcome {
        bytes: 0,
        error: None,
    };
    let engine = kcopy::engine();
    let direct = mm.is_current();
    if direct {
        stats::inc(Stat::DirectCopies);
    }
    let result = if direct && may_overlap(local, remote, want) {
        copy_staged(dir, local, remote, want, &mut out.bytes)
    } else {
        let (side, own_cache) = if direct {
            // Both sides are the caller's pages: a peer fd on the caller
            // itself caches both in its one cache.
            let cache = caches.target.or(caches.own);
            (Side::Own(mm, cache), cache)
        } else {
            (Side::Remote(mm, caches.target), caches.own)
        };
        let own = LocalPages::new(local, want, engine, own_cache);
        copy_pinned(side, own, dir, local, remote, want, &mut out.bytes)
    };
    stats::inc(Stat::Copies);
    stats::add(Stat::Bytes, out.bytes);
    out.error = result.err();
    out
}

/// Where the "remote" iovecs' pages are, and the cache that may hold them.
#[derive(Clone, Copy)]
enum Side<'a> {
    /// In another address space: pinned with `pin_user_pages_remote`.
    Remote(&'a MmRef, Option<&'a Cache>),
    /// In the caller's own (`mm`): pinned with `pin_user_pages_fast`.
    Own(&'a MmRef, Option<&'a Cache>),
}

/// The single copy: pin the remote iovecs' pages in batches (or find them
/// in a cache), copy between them and the caller's iovecs, unpin.
fn copy_pinned(
    side: Side<'_>,
    mut own: LocalPages<'_>,
    dir: Direction,
    local: &[IoVec],
    remote: &[IoVec],
    want: usize,
    done: &mut usize,
) -> Result {
    let mut batch = PageBatch::new(pages_spanned(remote, want).clamp(1, BATCH_PAGES))?;
    let mut local = Cursor::new(local);
    let mut remote = Cursor::new(remote);
    let (mm, cache) = match side {
        Side::Remote(mm, cache) | Side::Own(mm, cache) => (mm, cache),
    };
    while *done < want {
        // OVERFLOW: `*done < want`.
        let Some((addr, len)) = remote.peek(want - *done) else {
            break;
        };
        let first_page = addr & !(PAGE_SIZE - 1);
        // OVERFLOW: `first_page <= addr` (low bits cleared).
        let in_page = addr - first_page;
        // Saturating: capped by the batch anyway (`len <= isize::MAX`, so it
        // cannot saturate for validated iovecs).
        let nr_pages = in_page
            .saturating_add(len)
            .div_ceil(PAGE_SIZE)
            .min(batch.capacity());
        let write = dir == Direction::Write;
        let cached = cache.and_then(|c| c.get(mm, first_page, nr_pages, write));
        let from_cache = cached
            .as_ref()
            .and_then(|r| r.pages(first_page, nr_pages, write));
        let mut pinned = match (from_cache, side) {
            (Some(pages), _) => pages,
            (None, Side::Remote(..)) => batch
                .pin(mm, first_page, nr_pages, write)
                .map_err(gup_error)?,
            (None, Side::Own(..)) => batch
                .pin_own(first_page, nr_pages, write)
                .map_err(gup_error)?,
        };
        // OVERFLOW: at least one page is pinned (or borrowed from the
        // cache), so `span() >= PAGE_SIZE > in_page`.
        let mut n = len.min(pinned.span() - in_page);
        let mut off = in_page;
        while n > 0 {
            let (laddr, llen) = local.peek(n).ok_or(EFAULT)?;
            let (copied, faulted) = own.copy(dir, &mut pinned, off, laddr, llen);
            local.advance(copied);
            remote.advance(copied);
            // OVERFLOW: `copied <= llen <= n`, and `off + n` is at most the
            // pinned span, `*done + n` at most `want`.
            *done += copied;
            if faulted {
                return Err(EFAULT);
            }
            off += copied;
            n -= copied;
        }
        drop(pinned);
        if *done < want {
            between_batches()?;
        }
    }
    Ok(())
}

/// Pieces of the caller's memory at least this long are pinned and copied
/// kernel to kernel; shorter ones go through the user copy routines, which
/// cost less than a pin and unpin for them.
const PIN_OWN_MIN: usize = 2048;

/// The caller's side of a copy: long pieces are pinned (in batches of up
/// to [`BATCH_PAGES`]), or found pinned in the cache of the caller's own
/// pages, so that the bytes move between two kernel mappings with
/// [`crate::kcopy`]'s routine, which on CPUs without fast short `rep movs`
/// is much faster than the user copy routines. Memory GUP cannot pin falls
/// back to the user copy routines, so faults are reported exactly as they
/// would be without pinning.
struct LocalPages<'a> {
    /// Room for the pinned pages, made when the first long piece comes.
    batch: Option<PageBatch>,
    /// The most pages any batch needs.
    max_pages: usize,
    /// Whether to pin at all (the `pinned` engine).
    pin: bool,
    /// The cache of the caller's pages, if the copy has one, and the
    /// caller's address space, taken when the first long piece comes.
    cache: Option<&'a Cache>,
    mm: Option<MmRef>,
}

impl<'a> LocalPages<'a> {
    #[inline]
    fn new(local: &[IoVec], want: usize, engine: Engine, cache: Option<&'a Cache>) -> Self {
        LocalPages {
            batch: None,
            max_pages: pages_spanned(local, want).clamp(1, BATCH_PAGES),
            pin: engine == Engine::Pinned,
            cache,
            mm: None,
        }
    }

    /// The cached region holding `nr_pages` of the caller's pages from
    /// `first_page`, for writing if `write`, if the cache has or can keep
    /// them.
    fn cached(&mut self, first_page: usize, nr_pages: usize, write: bool) -> Option<Arc<Region>> {
        let cache = self.cache?;
        if self.mm.is_none() {
            self.mm = crate::mm::current_mm();
        }
        cache.get(self.mm.as_ref()?, first_page, nr_pages, write)
    }

    /// Copies up to `len` bytes between the caller's address `addr` and byte
    /// `off` of `pinned` (the target's pages), in direction `dir`. Returns
    /// the bytes copied and whether the caller's memory faulted (only then is
    /// the count short of what could be pinned).
    fn copy(
        &mut self,
        dir: Direction,
        pinned: &mut Pinned<'_>,
        off: usize,
        addr: usize,
        len: usize,
    ) -> (usize, bool) {
        if self.pin && len >= PIN_OWN_MIN {
            let first_page = addr & !(PAGE_SIZE - 1);
            // OVERFLOW: `first_page <= addr`; `len` is at most the target's
            // pinned span (a batch, 2 MiB), so the sum is small.
            let in_page = addr - first_page;
            let nr_pages = (in_page + len).div_ceil(PAGE_SIZE);
            let write = dir == Direction::Read;
            if let Some(region) = self.cached(first_page, nr_pages, write) {
                if let Some(mut own) = region.pages(first_page, nr_pages, write) {
                    let copied = kernel_copy(dir, pinned, off, &mut own, in_page, len);
                    // Nothing copied would be no progress: a fault, never a
                    // loop (the spans always cover a byte here).
                    return (copied, copied == 0);
                }
            }
            if self.batch.is_none() {
                // Without room to pin, the user copy below does the job.
                self.batch = PageBatch::new(self.max_pages).ok();
            }
            let pinned_own = self
                .batch
                .as_mut()
                .map(|b| b.pin_own(first_page, nr_pages, write));
            if let Some(Ok(mut own)) = pinned_own {
                let copied = kernel_copy(dir, pinned, off, &mut own, in_page, len);
                return (copied, copied == 0);
            }
        }
        let copied = match dir {
            Direction::Read => pinned.copy_to_user(off, addr, len),
            Direction::Write => pinned.copy_from_user(off, addr, len),
        };
        (copied, copied < len)
    }
}

/// Copies up to `len` bytes between byte `off` of `pinned` (the target's
/// pages) and byte `own_off` of `own` (the caller's), as far as `own`
/// reaches; returns the bytes copied.
fn kernel_copy(
    dir: Direction,
    pinned: &mut Pinned<'_>,
    off: usize,
    own: &mut Pinned<'_>,
    own_off: usize,
    len: usize,
) -> usize {
    let n = len.min(own.span().saturating_sub(own_off));
    match dir {
        Direction::Read => own.copy_from_pinned(own_off, pinned, off, n),
        Direction::Write => pinned.copy_from_pinned(off, own, own_off, n),
    }
}

/// Whether, within the first `want` bytes, some of `local` and some of
/// `remote` (both in the caller's address space) may be the same memory:
/// whether the spans from the lowest to the highest address of each meet.
/// Cheap and conservative: a single copy between ranges that overlap would
/// read bytes it already wrote.
fn may_overlap(local: &[IoVec], remote: &[IoVec], want: usize) -> bool {
    match (envelope(local, want), envelope(remote, want)) {
        (Some((ls, le)), Some((rs, re))) => ls < re && rs < le,
        _ => false,
    }
}

/// The lowest start and highest end of the first `want` bytes of `iovs`;
/// an end past the address space counts as its end.
fn envelope(iovs: &[IoVec], want: usize) -> Option<(usize, usize)> {
    let mut left = want;
    let mut span: Option<(usize, usize)> = None;
    for v in iovs {
        if left == 0 {
            break;
        }
        let n = v.len.min(left);
        if n == 0 {
            continue;
        }
        // OVERFLOW: `n <= left`.
        left -= n;
        let end = v.base.saturating_add(n);
        span = Some(span.map_or((v.base, end), |(s, e)| (s.min(v.base), e.max(end))));
    }
    span
}

/// The direct path when the two sides may overlap: copy through a kernel
/// buffer, a chunk at a time.
fn copy_staged(
    dir: Direction,
    local: &[IoVec],
    remote: &[IoVec],
    want: usize,
    done: &mut usize,
) -> Result {
    let (src, dst) = match dir {
        Direction::Read => (remote, local),
        Direction::Write => (local, remote),
    };
    // kvmalloc: when no 64 KiB of contiguous memory is free (fragmentation),
    // it falls back to vmalloc's single pages instead of failing.
    let mut buf = KVVec::from_elem(0u8, want.min(DIRECT_CHUNK), GFP_KERNEL)?;
    let mut src = Cursor::new(src);
    let mut dst = Cursor::new(dst);
    while *done < want {
        // OVERFLOW: `*done < want`. The chunk fits the buffer: both are at
        // most `want` and at most `DIRECT_CHUNK`.
        let chunk = (want - *done).min(DIRECT_CHUNK);
        // Read the whole chunk before writing any of it.
        let mut filled = 0;
        while filled < chunk {
            let (addr, len) = src.peek(chunk - filled).ok_or(EFAULT)?;
            // PANIC: `filled + len <= chunk <= buf.len()` (peek's `max`).
            let got = user::copy_from_user(&mut buf[filled..filled + len], addr);
            src.advance(got);
            // OVERFLOW: `got <= len` (`user::copy_from_user`).
            filled += got;
            if got < len {
                break;
            }
        }
        let mut written = 0;
        while written < filled {
            let (addr, len) = dst.peek(filled - written).ok_or(EFAULT)?;
            // PANIC: `written + len <= filled <= buf.len()` (peek's `max`).
            let put = user::copy_to_user(addr, &buf[written..written + len]);
            dst.advance(put);
            // OVERFLOW: `put <= len`; `*done` stays within `want`.
            written += put;
            *done += put;
            if put < len {
                return Err(EFAULT);
            }
        }
        if filled < chunk {
            return Err(EFAULT);
        }
        between_batches()?;
    }
    Ok(())
}

/// GUP's errors as `process_vm_readv` reports them: every failure to reach
/// the target's pages (`ENOMEM` from a fault that could not allocate,
/// `EHWPOISON`, `EFAULT`...) is `EFAULT`. The one kept on purpose: `EINTR`,
/// when a fatal signal interrupted the wait for the target's `mmap_lock`
/// (the caller is dying and will not see it).
fn gup_error(e: Error) -> Error {
    if e == EINTR {
        EINTR
    } else {
        EFAULT
    }
}

/// Stops a long copy on a fatal signal, and lets others run.
fn between_batches() -> Result {
    if fatal_signal_pending() {
        return Err(EINTR);
    }
    cond_resched();
    Ok(())
}

/// How many pages the first `bytes` bytes of `iovs` touch (an upper bound
/// is fine: it only sizes the page batch).
fn pages_spanned(iovs: &[IoVec], bytes: usize) -> usize {
    let mut left = bytes;
    let mut pages = 0usize;
    for v in iovs {
        if left == 0 {
            break;
        }
        let n = v.len.min(left);
        if n > 0 {
            pages =
                pages.saturating_add((v.base % PAGE_SIZE).saturating_add(n).div_ceil(PAGE_SIZE));
        }
        // OVERFLOW: `n <= left`.
        left -= n;
        if pages >= BATCH_PAGES {
            break;
        }
    }
    pages
}
