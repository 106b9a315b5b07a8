// SPDX-License-Identifier: GPL-2.0

//! `struct mm_struct`, as upstream's `kernel::mm` wraps it: [`Mm`] is kept
//! allocated by `mm_count` (`mmgrab`/`mmdrop`) but may have no users left
//! (its mappings torn down); [`MmWithUser`] also holds `mm_users`
//! (`mmget`/`mmput`), so its address space is alive.

use crate::glue::{cma_glue_mmdrop, cma_glue_mmget, cma_glue_mmget_not_zero, cma_glue_mmgrab};
use core::ops::Deref;
use core::ptr::NonNull;
use kernel::bindings;
use kernel::types::{ARef, AlwaysRefCounted, Opaque};

/// An `mm_struct` whose allocation is kept by its `mm_count`.
///
/// # Invariants
///
/// Values of this type are always refcounted with `mmgrab`.
#[repr(transparent)]
pub(crate) struct Mm {
    mm: Opaque<bindings::mm_struct>,
}

// SAFETY: `mm_count` is atomic; the reference may be dropped on any thread.
unsafe impl Send for Mm {}
// SAFETY: every method through `&Mm` is callable from any thread.
unsafe impl Sync for Mm {}

// SAFETY: by the type invariant the count is `mm_count`, which `mmgrab` and
// `mmdrop` increment and decrement.
unsafe impl AlwaysRefCounted for Mm {
    fn inc_ref(&self) {
        // SAFETY: the pointer is valid since `self` is a reference.
        unsafe { cma_glue_mmgrab(self.as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: the caller gives up one increment.
        unsafe { cma_glue_mmdrop(obj.cast().as_ptr()) };
    }
}

impl Mm {
    /// A borrowed `Mm` from a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must point to an `mm_struct` whose `mm_count` is above zero for
    /// the whole of `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *const bindings::mm_struct) -> &'a Mm {
        // SAFETY: `Mm` is a transparent wrapper of `mm_struct`; the caller
        // guarantees the allocation outlives `'a`.
        unsafe { &*ptr.cast() }
    }

    /// The raw pointer.
    pub(crate) fn as_raw(&self) -> *mut bindings::mm_struct {
        self.mm.get()
    }

    /// A user reference, if the address space still has users.
    pub(crate) fn mmget_not_zero(&self) -> Option<ARef<MmWithUser>> {
        // SAFETY: the pointer is valid since `self` is a reference.
        if unsafe { cma_glue_mmget_not_zero(self.as_raw()) } {
            // SAFETY: `mmget_not_zero` took the `mm_users` increment that the
            // new `ARef` owns.
            Some(unsafe { ARef::from_raw(NonNull::from(self).cast()) })
        } else {
            None
        }
    }
}

/// An `mm_struct` with users: its address space is alive.
///
/// # Invariants
///
/// Values of this type are always refcounted with `mmget`, and `mm_users`
/// is above zero while one is borrowed.
#[repr(transparent)]
pub(crate) struct MmWithUser {
    mm: Mm,
}

// SAFETY: `mm_users` is atomic; the reference may be dropped on any thread.
unsafe impl Send for MmWithUser {}
// SAFETY: every method through `&MmWithUser` is callable from any thread.
unsafe impl Sync for MmWithUser {}

// SAFETY: by the type invariant the count is `mm_users`, which `mmget` and
// `mmput` increment and decrement.
unsafe impl AlwaysRefCounted for MmWithUser {
    fn inc_ref(&self) {
        // SAFETY: the pointer is valid since `self` is a reference, and it
        // has users (type invariant), so another may be taken.
        unsafe { cma_glue_mmget(self.as_raw()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: the caller gives up one increment.
        unsafe { bindings::mmput(obj.cast().as_ptr()) };
    }
}

impl Deref for MmWithUser {
    type Target = Mm;

    fn deref(&self) -> &Mm {
        &self.mm
    }
}
