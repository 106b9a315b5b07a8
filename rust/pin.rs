// SPDX-License-Identifier: GPL-2.0

//! Pinning: a batch of the target's pages pinned with `pin_user_pages_remote`
//! (under its `mmap_lock`, taken and dropped in the glue around the call), or
//! referenced with `get_user_pages` for reading; the caller's own pages the
//! same way with the `_fast` variants. The copies between a pinned page and
//! the caller's memory are here too, so that the copy engine above is safe
//! Rust.

use crate::glue::*;
use crate::mm::{MmExt, MmRef, MmWithUser};
use crate::stats::{self, Stat};
use core::ffi::c_int;
use kernel::bindings;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;

/// What cma asks of an address space with users.
pub(crate) trait MmUserExt {
    /// Pins up to `slots.len()` pages of this address space from the
    /// page-aligned `start` with `pin_user_pages_remote` (`FOLL_PIN` and
    /// `gup_flags`), under its `mmap_lock`, taken and dropped in the glue so
    /// that it is never held while copying; counted. Returns what GUP
    /// returned: how many of the first slots hold pinned pages, or an errno.
    fn pin_remote(&self, start: usize, gup_flags: u32, slots: &mut [*mut bindings::page]) -> isize;
    /// As [`MmUserExt::pin_remote`], read-only, but takes page references
    /// (`FOLL_GET`) instead of pins.
    fn get_remote(&self, start: usize, slots: &mut [*mut bindings::page]) -> isize;
}

impl MmUserExt for MmWithUser {
    fn get_remote(&self, start: usize, slots: &mut [*mut bindings::page]) -> isize {
        // SAFETY: as in `pin_remote`; read-only, so GUP never writes.
        let ret = unsafe {
            cma_glue_get_remote(self.as_raw(), start, slots.len(), 0, slots.as_mut_ptr())
        };
        stats::inc(Stat::GupCalls);
        stats::add(Stat::PagesPinned, ret.max(0) as usize);
        ret
    }

    fn pin_remote(&self, start: usize, gup_flags: u32, slots: &mut [*mut bindings::page]) -> isize {
        // SAFETY: the mm has users (borrowed `MmWithUser`); `slots` has room
        // for the pages asked for. Without FOLL_FORCE, GUP honours the
        // target's protections (no writes to read-only memory).
        let ret = unsafe {
            cma_glue_pin_remote(
                self.as_raw(),
                start,
                slots.len(),
                gup_flags,
                slots.as_mut_ptr(),
            )
        };
        stats::inc(Stat::GupCalls);
        stats::add(Stat::PagesPinned, ret.max(0) as usize);
        ret
    }
}

/// Batches of at most this many pages need no allocation (64 KiB).
const INLINE_PAGES: usize = 16;

/// Room for the page pointers of one batch of pinned pages, reused across
/// batches of one request: inline for small copies, allocated for large ones.
pub(crate) enum PageBatch {
    Inline([*mut bindings::page; INLINE_PAGES]),
    Heap(KVec<*mut bindings::page>),
}

impl PageBatch {
    /// Room for up to `max_pages` pages per batch.
    #[inline]
    pub(crate) fn new(max_pages: usize) -> Result<PageBatch> {
        if max_pages <= INLINE_PAGES {
            return Ok(PageBatch::Inline([core::ptr::null_mut(); INLINE_PAGES]));
        }
        Ok(PageBatch::Heap(KVec::from_elem(
            core::ptr::null_mut(),
            max_pages,
            GFP_KERNEL,
        )?))
    }

    fn slots(&mut self) -> &mut [*mut bindings::page] {
        match self {
            PageBatch::Inline(a) => a,
            PageBatch::Heap(v) => v,
        }
    }

    /// The most pages one batch can hold.
    pub(crate) fn capacity(&self) -> usize {
        match self {
            PageBatch::Inline(a) => a.len(),
            PageBatch::Heap(v) => v.len(),
        }
    }

    /// Pins up to `nr_pages` pages of `mm` starting at the page-aligned
    /// address `start`, for writing if `write`. The `mmap_lock` is taken and
    /// dropped here: it is never held while copying. Returns the pinned pages
    /// (at least one), or `EFAULT` if the first page cannot be pinned.
    pub(crate) fn pin<'a>(
        &'a mut self,
        mm: &MmRef,
        start: usize,
        nr_pages: usize,
        write: bool,
    ) -> Result<Pinned<'a>> {
        let slots = self.slots();
        let nr_pages = nr_pages.min(slots.len());
        let gup_flags = if write { bindings::FOLL_WRITE } else { 0 };
        let ret = mm.pin_remote(start, gup_flags, &mut slots[..nr_pages]);
        // SAFETY: `ret` is what GUP returned for these slots just now.
        unsafe { Pinned::from_gup(slots, ret, write) }
    }

    /// Pins up to `nr_pages` pages of the caller's own address space starting
    /// at the page-aligned address `start`, for writing if `write`, with
    /// `pin_user_pages_fast` (which takes no `mmap_lock` when the pages are
    /// present). Returns the pinned pages (at least one), or an error if the
    /// first page cannot be pinned: a fault, or memory GUP cannot pin (such
    /// as `VM_IO`/`VM_PFNMAP` mappings), which the caller then copies with
    /// the user copy routines instead.
    pub(crate) fn pin_own<'a>(
        &'a mut self,
        start: usize,
        nr_pages: usize,
        write: bool,
    ) -> Result<Pinned<'a>> {
        let slots = self.slots();
        let nr_pages = nr_pages.min(slots.len());
        let gup_flags = if write { bindings::FOLL_WRITE } else { 0 };
        let ret = pin_own(start, gup_flags, &mut slots[..nr_pages]);
        // SAFETY: `ret` is what GUP returned for these slots just now.
        unsafe { Pinned::from_gup(slots, ret, write) }
    }
}

/// Pages pinned for one batch of a copy: by [`PageBatch::pin`] or
/// [`PageBatch::pin_own`], unpinned on drop (and marked dirty if they were
/// pinned for writing); or borrowed from a [`LongPins`] of a peer fd's
/// cache, which stay pinned (and are marked dirty on drop if written).
///
/// # Invariants
///
/// Each pointer in `pages` is a page pinned with `FOLL_PIN`: by this value
/// if `owned`, else by a [`LongPins`] that outlives it.
pub(crate) struct Pinned<'a> {
    pages: &'a [*mut bindings::page],
    dirty: bool,
    owned: bool,
}

impl<'a> Pinned<'a> {
    /// Turns the return value of a `pin_user_pages*` call that filled `slots`
    /// into the pinned pages: at least one, else the error (`EFAULT` for none).
    ///
    /// # Safety
    ///
    /// `ret` must be what that call returned: a negative errno, or the number
    /// of pages it pinned with `FOLL_PIN` into the first `ret` slots.
    unsafe fn from_gup(
        slots: &'a mut [*mut bindings::page],
        ret: isize,
        dirty: bool,
    ) -> Result<Pinned<'a>> {
        if ret < 0 {
            return Err(Error::from_errno(ret as c_int));
        }
        if ret == 0 {
            return Err(EFAULT);
        }
        // INVARIANT: by the safety requirement the first `ret` slots hold
        // pages pinned with `FOLL_PIN`, now owned by this value.
        Ok(Pinned {
            pages: &slots[..ret as usize],
            dirty,
            owned: true,
        })
    }

    /// How many bytes the pinned pages span (from the first page's start).
    pub(crate) fn span(&self) -> usize {
        self.pages.len() * PAGE_SIZE
    }

    /// Copies `len` bytes at byte `offset` of the pinned span to the caller's
    /// user address `dst`, page by page. Returns the bytes copied, fewer than
    /// `len` only if `dst` faults.
    pub(crate) fn copy_to_user(&self, offset: usize, dst: usize, len: usize) -> usize {
        self.copy(offset, dst, len, false)
    }

    /// Copies `len` bytes from the caller's user address `src` into the pinned
    /// span at byte `offset`. Returns the bytes copied, fewer than `len` only
    /// if `src` faults.
    pub(crate) fn copy_from_user(&mut self, offset: usize, src: usize, len: usize) -> usize {
        self.copy(offset, src, len, true)
    }

    /// Copies `len` bytes from byte `src_offset` of `src`'s span to byte
    /// `offset` of this span, with [`crate::kcopy::copy`]. Returns the bytes
    /// copied: fewer than `len` only where a span ends first (which callers
    /// never ask for, and then take for a fault).
    pub(crate) fn copy_from_pinned(
        &mut self,
        offset: usize,
        src: &Pinned<'_>,
        src_offset: usize,
        len: usize,
    ) -> usize {
        let len = len
            .min(self.span().saturating_sub(offset))
            .min(src.span().saturating_sub(src_offset));
        let mut done = 0;
        while done < len {
            let (d, s) = (offset + done, src_offset + done);
            let (d_page, d_in) = (d / PAGE_SIZE, d % PAGE_SIZE);
            let (s_page, s_in) = (s / PAGE_SIZE, s % PAGE_SIZE);
            let n = (self.run_bytes(d_page, false) - d_in)
                .min(src.run_bytes(s_page, false) - s_in)
                .min(len - done);
            // SAFETY: both pages are pinned (type invariant of each `Pinned`),
            // so they stay allocated and in the direct map.
            let (dk, sk) = unsafe {
                (
                    cma_glue_page_address(self.pages[d_page]),
                    cma_glue_page_address(src.pages[s_page]),
                )
            };
            // SAFETY: `d_in + n` and `s_in + n` lie within the runs of
            // physically consecutive pinned pages that start at these pages
            // (`run_bytes`), which the direct map covers without a gap. The
            // two may be the same memory when both processes map it, which
            // `kcopy::copy` allows.
            unsafe { crate::kcopy::copy(dk.cast::<u8>().add(d_in), sk.cast::<u8>().add(s_in), n) };
            done += n;
        }
        len
    }

    /// How many bytes, from the start of page `index`, the run of physically
    /// consecutive pages starting there spans (at least a page: a folio
    /// pinned whole gives its size, up to the end of the batch). With
    /// `one_folio`, the run ends with the folio of page `index`: a copy to
    /// or from user memory must not span two folios (hardened usercopy
    /// aborts one that runs past the end of a large folio).
    fn run_bytes(&self, index: usize, one_folio: bool) -> usize {
        let rest = &self.pages[index..];
        // SAFETY: `rest` holds at least one pinned page pointer (the caller's
        // index is within the span); the glue only reads the pointers.
        let pages = unsafe { cma_glue_contiguous_pages(rest.as_ptr(), rest.len(), one_folio) };
        // OVERFLOW: `pages <= rest.len()`, and the batch's pages span no
        // more than the address space.
        pages * PAGE_SIZE
    }

    fn copy(&self, offset: usize, user: usize, len: usize, into_pages: bool) -> usize {
        // Never past the span: a shorter count, which callers take for a
        // fault, rather than a page that is not ours.
        let len = len.min(self.span().saturating_sub(offset));
        let mut done = 0;
        while done < len {
            let pos = offset + done;
            let (index, in_page) = (pos / PAGE_SIZE, pos % PAGE_SIZE);
            let n = (self.run_bytes(index, true) - in_page).min(len - done);
            let page = self.pages[index];
            let u = (user + done) as *mut core::ffi::c_void;
            // SAFETY: `page` is pinned (type invariant), so it stays
            // allocated; `in_page + n` lies within the run of consecutive
            // pinned pages starting at it, which the glue reaches through
            // the direct map; the user side is checked by the copy routine,
            // which returns how many bytes it could not copy. Not
            // `copy_from_user`: on a fault it zeroes the rest of the
            // destination, which here is the target's page.
            let left = unsafe {
                if into_pages {
                    cma_glue_user_to_page(page, in_page, u, n)
                } else {
                    cma_glue_page_to_user(u, page, in_page, n)
                }
            };
            done += n - left;
            if left != 0 {
                break;
            }
        }
        done
    }
}

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        if !self.owned {
            if self.dirty {
                // SAFETY: the pages are pinned by the `LongPins` they were
                // borrowed from (type invariant); marking them dirty is what
                // an unpin for writing would do, without the unpin.
                unsafe { cma_glue_dirty_pages(self.pages.as_ptr(), self.pages.len()) };
            }
            return;
        }
        // SAFETY: by the type invariant every page here is pinned by us; they
        // are unpinned exactly once, dirtied if we wrote to them. The array
        // is only read.
        unsafe {
            bindings::unpin_user_pages_dirty_lock(
                self.pages.as_ptr().cast_mut(),
                self.pages.len() as kernel::ffi::c_ulong,
                self.dirty,
            )
        };
    }
}

/// Pages of an address space held for as long as a cache keeps them, unheld
/// on drop.
///
/// How they are held depends on what the cache may do with them:
///
/// - For writing: pinned (`FOLL_PIN | FOLL_LONGTERM | FOLL_WRITE`: moved out
///   of movable zones first, as RDMA's registrations are), as a write must
///   have them; the write fault breaks copy-on-write first, as
///   `process_vm_writev`'s does.
/// - For reading: referenced (`FOLL_GET`), not pinned. A long-term
///   read-only pin makes GUP unshare what a copy-on-write mapping shares
///   (the zero page, a `MAP_PRIVATE` file's page cache, an anonymous page
///   shared since a fork): the reader would change the target's memory, its
///   RSS, and what its mapping shows when the file is written. A reference
///   changes none of it; what keeps the pages the ones mapped is the
///   region's watch on the mm's notifier, which any change to the mapping triggers
///   first, not the pin.
///
/// The caller's own pages are taken with the local GUP (`*_user_pages_fast`),
/// which honours the caller's protection keys; a target's with the remote
/// one, under its `mmap_lock` (a target's protection keys never apply to
/// another process's access, as with `process_vm_readv`).
///
/// # Invariants
///
/// Each pointer in `pages` is a page pinned by this value with `FOLL_PIN |
/// FOLL_LONGTERM | FOLL_WRITE` if `write`, else referenced by it with
/// `FOLL_GET`.
pub(crate) struct LongPins {
    pages: KVVec<*mut bindings::page>,
    write: bool,
}

// SAFETY: the pointers are pinned or referenced pages, which may be reached
// and released from any thread; shared access only reads the array.
unsafe impl Send for LongPins {}
// SAFETY: as above.
unsafe impl Sync for LongPins {}

impl LongPins {
    /// Holds exactly `nr_pages` pages of `mm` from the page-aligned `start`,
    /// for writing if `write`: `None` if GUP could not take them all (the
    /// copy then pins for itself, and sees the fault where it is).
    pub(crate) fn pin(mm: &MmRef, start: usize, nr_pages: usize, write: bool) -> Option<LongPins> {
        let mut pages = KVVec::from_elem(core::ptr::null_mut(), nr_pages, GFP_KERNEL).ok()?;
        let own = mm.is_current();
        let ret = match (own, write) {
            (false, true) => mm.pin_remote(
                start,
                bindings::FOLL_LONGTERM | bindings::FOLL_WRITE,
                &mut pages,
            ),
            (false, false) => mm.get_remote(start, &mut pages),
            (true, true) => pin_own(
                start,
                bindings::FOLL_LONGTERM | bindings::FOLL_WRITE,
                &mut pages,
            ),
            (true, false) => get_own(start, &mut pages),
        };
        if ret <= 0 {
            return None;
        }
        if ret as usize != nr_pages {
            // SAFETY: GUP took the first `ret` (< `nr_pages`) pages as
            // `write` says, given back once here.
            unsafe { release(&pages[..ret as usize], write) };
            return None;
        }
        // INVARIANT: GUP took all `nr_pages` pages as `write` says.
        Some(LongPins { pages, write })
    }

    /// How many pages.
    pub(crate) fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether they were pinned for writing.
    pub(crate) fn writable(&self) -> bool {
        self.write
    }

    /// `nr` of the pages from index `first`, for one batch of a copy
    /// (`dirty` if it writes them), or `None` if out of range.
    pub(crate) fn borrow(&self, first: usize, nr: usize, dirty: bool) -> Option<Pinned<'_>> {
        let pages = self.pages.get(first..first.checked_add(nr)?)?;
        // INVARIANT: held by `self`, which the borrow cannot outlive.
        Some(Pinned {
            pages,
            dirty: dirty && self.write,
            owned: false,
        })
    }
}

impl Drop for LongPins {
    fn drop(&mut self) {
        // SAFETY: by the type invariant every page is held by us as
        // `self.write` says; given back once, here.
        unsafe { release(&self.pages, self.write) };
        stats::add(Stat::CacheReleased, self.pages.len());
    }
}

/// Gives back pages a [`LongPins`] holds: unpinned (and dirtied: they may
/// have been written) if `write`, else their references dropped.
///
/// # Safety
///
/// Each page must be pinned (`write`) or referenced (not `write`) by the
/// caller, which gives that hold up here.
unsafe fn release(pages: &[*mut bindings::page], write: bool) {
    if write {
        // SAFETY: the caller's guarantee; the array is only read.
        unsafe {
            bindings::unpin_user_pages_dirty_lock(
                pages.as_ptr().cast_mut(),
                pages.len() as kernel::ffi::c_ulong,
                true,
            )
        };
    } else {
        // SAFETY: the caller's guarantee; the array is only read.
        unsafe { cma_glue_put_pages(pages.as_ptr().cast_mut(), pages.len()) };
    }
}

/// Pins up to `slots.len()` pages of the caller's own address space from the
/// page-aligned `start` with `pin_user_pages_fast` (`FOLL_PIN` and
/// `gup_flags`), as the caller's own access would (its protection keys
/// included); counted. Returns what GUP returned.
fn pin_own(start: usize, gup_flags: u32, slots: &mut [*mut bindings::page]) -> isize {
    // SAFETY: `slots` has room for the pages asked for; GUP checks the range
    // against the caller's own mappings and protections.
    let ret = unsafe {
        bindings::pin_user_pages_fast(
            start as kernel::ffi::c_ulong,
            slots.len() as kernel::ffi::c_int,
            gup_flags as kernel::ffi::c_uint,
            slots.as_mut_ptr(),
        )
    } as isize;
    stats::inc(Stat::LocalGupCalls);
    stats::add(Stat::LocalPagesPinned, ret.max(0) as usize);
    ret
}

/// As [`pin_own`], but references the pages (`FOLL_GET`, read-only) with
/// `get_user_pages_fast`.
fn get_own(start: usize, slots: &mut [*mut bindings::page]) -> isize {
    // SAFETY: as in `pin_own`.
    let ret = unsafe {
        bindings::get_user_pages_fast(
            start as kernel::ffi::c_ulong,
            slots.len() as kernel::ffi::c_int,
            0,
            slots.as_mut_ptr(),
        )
    } as isize;
    stats::inc(Stat::LocalGupCalls);
    stats::add(Stat::LocalPagesPinned, ret.max(0) as usize);
    ret
}
