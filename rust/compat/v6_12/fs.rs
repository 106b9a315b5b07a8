// SPDX-License-Identifier: GPL-2.0

//! `struct file`, as 7.x's `kernel::fs::File` wraps it, reduced to what a
//! file operation needs: a borrowed file, never an owned reference.

use kernel::bindings;
use kernel::types::Opaque;

/// An open file, borrowed for the length of a file operation.
///
/// # Invariants
///
/// A `&File` points to a live `struct file` for its whole lifetime.
#[repr(transparent)]
pub(crate) struct File(Opaque<bindings::file>);

impl File {
    /// A borrowed `File` from a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a live `struct file` for the whole of `'a` (a file
    /// operation's own file is, while it runs).
    pub(crate) unsafe fn from_raw_file<'a>(ptr: *const bindings::file) -> &'a File {
        // SAFETY: `File` is a transparent wrapper of `struct file`; the caller
        // guarantees it lives for `'a`.
        unsafe { &*ptr.cast() }
    }

    /// The raw pointer.
    #[allow(dead_code)]
    pub(crate) fn as_ptr(&self) -> *mut bindings::file {
        self.0.get()
    }
}
