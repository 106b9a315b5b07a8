// SPDX-License-Identifier: GPL-2.0

//! Kernel objects that later kernels' Rust crate wraps and 6.12's does not,
//! shaped as upstream wraps them (`rust/kernel/mm.rs`, `cred.rs`): a
//! `#[repr(transparent)]` type over `Opaque<T>` that is `AlwaysRefCounted`,
//! so that an owned reference is an `ARef<_>` and a borrowed one a `&_`.
//! Only what upstream has is here (references, raw pointers); what cma adds
//! lives in extension traits beside its users (`crate::mm`, `crate::task`),
//! so moving to a kernel that has these types means deleting this module
//! and changing imports, not rewriting the code above it.

pub(crate) mod cred;
pub(crate) mod mm;
pub(crate) mod pid;

use core::ptr::NonNull;
use kernel::types::{ARef, AlwaysRefCounted};

/// Takes over the reference a kernel function returned with `ptr` (a
/// `get_task_mm`, `find_get_pid`, `get_task_cred`...): `None` for NULL.
///
/// # Safety
///
/// `T` must be a transparent wrapper of `U` (as every type of this module
/// and the kernel crate's `Task` are), and `ptr` must be NULL or carry one
/// reference of `T`'s count, which the caller gives up.
pub(crate) unsafe fn take<T: AlwaysRefCounted, U>(ptr: *mut U) -> Option<ARef<T>> {
    let ptr = NonNull::new(ptr)?;
    // SAFETY: `T` wraps `U` transparently and the caller gives up the
    // reference, which the `ARef` now owns.
    Some(unsafe { ARef::from_raw(ptr.cast()) })
}
