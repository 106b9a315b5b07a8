// SPDX-License-Identifier: GPL-2.0

//! RAII wrappers for the memory-side kernel objects a copy holds: a reference
//! to the target's `mm` (or to its `mm_struct` only, for a peer fd), and a
//! batch of the target's pages pinned with `pin_user_pages_remote` (under its
//! `mmap_lock`, taken and dropped in the glue around the call). The copies between a
//! pinned page and the caller's memory are here too, so that the copy engine
//! above is safe Rust.

use crate::glue::*;
use crate::stats::{self, Stat};
use core::ffi::c_int;
use core::ptr::NonNull;
use kernel::bindings;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;

/// A reference that keeps a target's address space alive (`mm_users`).
///
/// # Invariants
///
/// `self.0` points to an `mm_struct` on which this value owns one `mm_users`
/// reference (taken by `get_task_mm`).
pub(crate) struct MmRef(NonNull<bindings::mm_struct>);

impl MmRef {
    /// The address space of `task`; `ESRCH` if it has none (a kernel thread,
    /// or a process that is exiting or a zombie).
    pub(crate) fn of_task(task: &crate::task::TaskRef) -> Result<MmRef> {
        // SAFETY: `task` is live (we hold a reference); `get_task_mm` returns
        // its mm with a new `mm_users` reference, or NULL.
        let mm = unsafe { bindings::get_task_mm(task.as_ptr()) };
        // INVARIANT: a non-NULL mm carries the reference we now own.
        NonNull::new(mm).map(MmRef).ok_or(ESRCH)
    }

    /// The raw pointer, for identity comparisons only.
    pub(crate) fn as_ptr(&self) -> *mut bindings::mm_struct {
        self.0.as_ptr()
    }

    /// Whether this is the caller's own address space.
    pub(crate) fn is_current(&self) -> bool {
        // SAFETY: reads `current->mm`; no preconditions.
        self.0.as_ptr() == unsafe { cma_glue_current_mm() }
    }

    /// Whether the address space may be inspected by a non-privileged peer
    /// (`get_dumpable(mm) == SUID_DUMP_USER`).
    pub(crate) fn is_user_dumpable(&self) -> bool {
        // SAFETY: the mm is live (type invariant).
        unsafe { cma_glue_get_dumpable(self.0.as_ptr()) == bindings::SUID_DUMP_USER as c_int }
    }

    /// Whether the caller has `CAP_SYS_PTRACE` in the user namespace that owns
    /// this address space.
    pub(crate) fn caller_may_ptrace(&self) -> bool {
        // SAFETY: the mm is live (type invariant) and holds its user_ns.
        let ns = unsafe { cma_glue_mm_user_ns(self.0.as_ptr()) };
        // SAFETY: `ns` is live for as long as the mm is.
        unsafe { bindings::ns_capable(ns, bindings::CAP_SYS_PTRACE as c_int) }
    }
}

impl Drop for MmRef {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we own one `mm_users` reference.
        unsafe { bindings::mmput(self.0.as_ptr()) };
    }
}

/// A reference that keeps an `mm_struct` allocated (`mm_count`, taken by
/// `mmgrab`) but not the address space it describes: when the last user goes
/// (the process exits or execs), its mappings and pages are freed as usual.
/// This is what a long-lived handle on a target holds, as `/proc/pid/mem` does.
///
/// # Invariants
///
/// `self.0` points to an `mm_struct` on which this value owns one `mm_count`
/// reference.
pub(crate) struct MmGrab(NonNull<bindings::mm_struct>);

// SAFETY: `mm_count` references are atomic and may be dropped from any
// thread; shared access only compares the pointer or calls `mmget_not_zero`,
// which is safe from any thread.
unsafe impl Send for MmGrab {}
// SAFETY: as above.
unsafe impl Sync for MmGrab {}

impl MmGrab {
    /// Keeps `mm`'s `mm_struct` allocated for as long as the result lives.
    pub(crate) fn of(mm: &MmRef) -> MmGrab {
        // SAFETY: `mm` is live (its type invariant); `mmgrab` takes an
        // `mm_count` reference on it.
        unsafe { cma_glue_mmgrab(mm.0.as_ptr()) };
        // INVARIANT: we own the reference just taken.
        MmGrab(mm.0)
    }

    /// The address space, if it still has users; `ESRCH` once the process
    /// it belonged to has exited or exec()ed.
    pub(crate) fn get(&self) -> Result<MmRef> {
        // SAFETY: the `mm_struct` is allocated (type invariant), so its
        // `mm_users` may be tried; a successful try takes a reference.
        if unsafe { cma_glue_mmget_not_zero(self.0.as_ptr()) } {
            // INVARIANT: `mmget_not_zero` took the `mm_users` reference.
            Ok(MmRef(self.0))
        } else {
            Err(ESRCH)
        }
    }

    /// The raw pointer, for identity comparisons only.
    pub(crate) fn as_ptr(&self) -> *mut bindings::mm_struct {
        self.0.as_ptr()
    }
}

impl Drop for MmGrab {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we own one `mm_count` reference.
        unsafe { cma_glue_mmdrop(self.0.as_ptr()) };
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
        // SAFETY: the mm is live (we hold `mm_users`); `slots` has room for
        // `nr_pages` pointers. The glue takes and drops the `mmap_lock`
        // around GUP. Without FOLL_FORCE, GUP honours the target's
        // protections (no writes to read-only memory).
        let ret = unsafe {
            cma_glue_pin_remote(
                mm.0.as_ptr(),
                start,
                nr_pages,
                gup_flags,
                slots.as_mut_ptr(),
            )
        };
        stats::inc(Stat::GupCalls);
        stats::add(Stat::PagesPinned, ret.max(0) as usize);
        // SAFETY: `ret` is what GUP returned for these slots just now.
        unsafe { Pinned::from_gup(slots, ret as _, write) }
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
        // SAFETY: `pages` has room for `nr_pages` pointers; GUP checks the
        // range against the caller's own mappings and protections.
        let ret = unsafe {
            bindings::pin_user_pages_fast(
                start as _,
                nr_pages as _,
                gup_flags as _,
                slots.as_mut_ptr(),
            )
        };
        stats::inc(Stat::LocalGupCalls);
        stats::add(Stat::LocalPagesPinned, ret.max(0) as usize);
        // SAFETY: `ret` is what GUP returned for these slots just now.
        unsafe { Pinned::from_gup(slots, ret as _, write) }
    }
}

/// Pages pinned by [`PageBatch::pin`] or [`PageBatch::pin_own`]; unpinned on
/// drop (and marked dirty if they were pinned for writing).
///
/// # Invariants
///
/// Each pointer in `pages` is a page pinned with `FOLL_PIN` by this value.
pub(crate) struct Pinned<'a> {
    pages: &'a mut [*mut bindings::page],
    dirty: bool,
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
        ret: i64,
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
            pages: &mut slots[..ret as usize],
            dirty,
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
    /// `offset` of this span, with [`crate::kcopy::copy`].
    pub(crate) fn copy_from_pinned(
        &mut self,
        offset: usize,
        src: &Pinned<'_>,
        src_offset: usize,
        len: usize,
    ) {
        assert!(offset
            .checked_add(len)
            .is_some_and(|end| end <= self.span()));
        assert!(src_offset
            .checked_add(len)
            .is_some_and(|end| end <= src.span()));
        let mut done = 0;
        while done < len {
            let (d, s) = (offset + done, src_offset + done);
            let (d_page, d_in) = (d / PAGE_SIZE, d % PAGE_SIZE);
            let (s_page, s_in) = (s / PAGE_SIZE, s % PAGE_SIZE);
            let n = (PAGE_SIZE - d_in).min(PAGE_SIZE - s_in).min(len - done);
            // SAFETY: both pages are pinned (type invariant of each `Pinned`),
            // so they stay allocated; each mapping is undone below, the later
            // one first, as `kmap_local_page` requires.
            unsafe {
                let dk = bindings::kmap_local_page(self.pages[d_page]) as *mut u8;
                let sk = bindings::kmap_local_page(src.pages[s_page]) as *mut u8;
                // SAFETY: `d_in + n` and `s_in + n` are at most a page, so
                // both sides stay within their mapped page, and `n` is at
                // most a page, as `kcopy::copy` requires (it allows the two
                // to be the same page, when both processes map it).
                crate::kcopy::copy(dk.add(d_in), sk.add(s_in), n);
                bindings::kunmap_local(sk.cast());
                bindings::kunmap_local(dk.cast());
            }
            done += n;
        }
    }

    fn copy(&self, offset: usize, user: usize, len: usize, into_pages: bool) -> usize {
        assert!(offset
            .checked_add(len)
            .is_some_and(|end| end <= self.span()));
        let mut done = 0;
        while done < len {
            let pos = offset + done;
            let (index, in_page) = (pos / PAGE_SIZE, pos % PAGE_SIZE);
            let n = (PAGE_SIZE - in_page).min(len - done);
            let page = self.pages[index];
            let u = (user + done) as *mut core::ffi::c_void;
            // SAFETY: `page` is pinned (type invariant), so it stays
            // allocated; `in_page + n <= PAGE_SIZE`, so the kernel side stays
            // in the page; the user side is checked by the copy routine,
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
        // SAFETY: by the type invariant every page here is pinned by us; they
        // are unpinned exactly once, dirtied if we wrote to them.
        unsafe {
            bindings::unpin_user_pages_dirty_lock(
                self.pages.as_mut_ptr(),
                self.pages.len() as _,
                self.dirty,
            )
        };
    }
}

/// A watch on the caller's address space: the consent registry's hook for
/// forgetting a process's grants when its mm is torn down (the process
/// exited or exec()ed). One `mmu_notifier` per mm, shared by all watches on
/// it; each value owns one reference (`mmu_notifier_get`/`mmu_notifier_put`).
/// The module must call [`MmWatch::synchronize`] once every watch is dropped,
/// before its code goes away.
///
/// # Invariants
///
/// `self.0` is a notifier returned by `cma_glue_watch_exit` on which this
/// value owns one reference.
pub(crate) struct MmWatch(NonNull<core::ffi::c_void>);

// SAFETY: notifier references are counted under the mm's notifier lock and
// may be dropped from any thread; shared access only reads the mm pointer,
// which is fixed for the notifier's life.
unsafe impl Send for MmWatch {}
// SAFETY: as above.
unsafe impl Sync for MmWatch {}

impl MmWatch {
    /// A watch on the caller's mm. Takes its `mmap_lock` for writing.
    pub(crate) fn current() -> Result<MmWatch> {
        // SAFETY: called from a file operation, by a user task with an mm;
        // returns a referenced notifier or an `ERR_PTR`.
        let mn = unsafe { cma_glue_watch_exit() };
        let mn = kernel::error::from_err_ptr(mn)?;
        // INVARIANT: a notifier that is not an error carries our reference.
        NonNull::new(mn).map(MmWatch).ok_or(ENOMEM)
    }

    /// The watched mm, for identity comparisons only.
    pub(crate) fn mm(&self) -> *mut bindings::mm_struct {
        // SAFETY: the notifier is live (type invariant); its mm is fixed.
        unsafe { cma_glue_watch_mm(self.0.as_ptr()) }
    }

    /// Waits until no release callback of any watch runs and every dropped
    /// watch is freed.
    pub(crate) fn synchronize() {
        // SAFETY: `mmu_notifier_synchronize` has no preconditions; it sleeps.
        unsafe { cma_glue_watch_sync() };
    }
}

impl Drop for MmWatch {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we own one reference. The glue's
        // `mmu_notifier_put` may be called from the release callback too.
        unsafe { cma_glue_unwatch_exit(self.0.as_ptr()) };
    }
}
