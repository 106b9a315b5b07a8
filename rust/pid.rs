// SPDX-License-Identifier: GPL-2.0

//! `struct pid` (a process or thread identity that outlives its number's
//! reuse), in the shape of the kernel crate's other wrappers.

use crate::compat::aref::AlwaysRefCounted;
use crate::glue::cma_glue_get_pid;
use core::ptr::NonNull;
use kernel::bindings;
use kernel::types::Opaque;

/// A `struct pid` (named after the C type: `kernel::task::Pid` is a pid
/// number).
///
/// # Invariants
///
/// Values of this type are always refcounted with `get_pid`.
#[repr(transparent)]
pub(crate) struct StructPid(Opaque<bindings::pid>);

// SAFETY: `struct pid` counts are atomic; a reference may be dropped on any
// thread.
unsafe impl Send for StructPid {}
// SAFETY: shared access only reads the pointer or calls thread-safe
// functions.
unsafe impl Sync for StructPid {}

// SAFETY: by the type invariant the count is the one `get_pid` and
// `put_pid` increment and decrement.
unsafe impl AlwaysRefCounted for StructPid {
    fn inc_ref(&self) {
        // SAFETY: the pointer is valid since `self` is a reference.
        unsafe { cma_glue_get_pid(self.as_ptr()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: the caller gives up one increment.
        unsafe { bindings::put_pid(obj.cast().as_ptr()) };
    }
}

impl StructPid {
    /// The raw pointer.
    pub(crate) fn as_ptr(&self) -> *mut bindings::pid {
        self.0.get()
    }
}

// SAFETY: `StructPid` wraps `struct pid` transparently, counted by `get_pid`.
unsafe impl crate::compat::Wraps for StructPid {
    type Raw = bindings::pid;
}
