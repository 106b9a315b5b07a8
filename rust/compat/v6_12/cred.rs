// SPDX-License-Identifier: GPL-2.0

//! `struct cred`, as 7.x's `kernel::cred::Credential` wraps it.

use crate::glue::{cma_glue_get_cred, cma_glue_put_cred};
use core::ptr::NonNull;
use kernel::bindings;
use kernel::types::{AlwaysRefCounted, Opaque};

/// Credentials: immutable once published, reference-counted.
///
/// # Invariants
///
/// Values of this type are always refcounted with `get_cred`.
#[repr(transparent)]
pub(crate) struct Credential(Opaque<bindings::cred>);

// SAFETY: credentials are immutable and atomically counted; a reference may
// be dropped on any thread.
unsafe impl Send for Credential {}
// SAFETY: as above; nothing through `&Credential` mutates.
unsafe impl Sync for Credential {}

// SAFETY: by the type invariant the count is the one `get_cred` and
// `put_cred` increment and decrement.
unsafe impl AlwaysRefCounted for Credential {
    fn inc_ref(&self) {
        // SAFETY: the pointer is valid since `self` is a reference.
        unsafe { cma_glue_get_cred(self.as_ptr()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: the caller gives up one increment.
        unsafe { cma_glue_put_cred(obj.cast().as_ptr()) };
    }
}

impl Credential {
    /// The raw pointer.
    pub(crate) fn as_ptr(&self) -> *const bindings::cred {
        self.0.get()
    }
}
