// SPDX-License-Identifier: GPL-2.0

//! The one place that knows which kernel cma is built for.
//!
//! cma is written against the kernel crate of Linux 7.x: its misc device
//! ([`miscdevice`]), files ([`fs`]), address spaces ([`mm`]), credentials
//! ([`cred`]), counted references ([`aref`]), byte-level conversions
//! ([`transmute`]) and user pointers ([`uaccess`]). On 7.x these names are
//! the kernel's own, re-exported. On 6.12, whose crate predates them, the
//! `v6_12` module presents the same names and shapes over what 6.12 has (C
//! glue for the misc device, the wrappers cma carried before). Kbuild passes
//! `--cfg CMA_KERNEL_6_12` from the kernel's `VERSION` and `PATCHLEVEL`
//! (distribution header packages have no `rust/kernel` sources to probe).
//!
//! No other file of `rust/` looks at the kernel version: dropping 6.12 means
//! deleting `compat/v6_12.rs`, `compat/v6_12/` and the `cfg` lines here and in
//! Kbuild, and nothing else.

#[cfg(CMA_KERNEL_6_12)]
mod v6_12;
#[cfg(CMA_KERNEL_6_12)]
pub(crate) use v6_12::{aref, cred, fs, miscdevice, mm, time, transmute, uaccess};

#[cfg(not(CMA_KERNEL_6_12))]
mod v7;
#[cfg(not(CMA_KERNEL_6_12))]
pub(crate) use kernel::{cred, fs, mm, sync::aref};
#[cfg(not(CMA_KERNEL_6_12))]
pub(crate) use v7::{miscdevice, time, transmute, uaccess};

use aref::{ARef, AlwaysRefCounted};
use core::ptr::NonNull;
use kernel::bindings;

/// A kernel object wrapper whose C type is `Raw`: a `#[repr(transparent)]`
/// wrapper, so that a pointer to one is a pointer to the other.
///
/// # Safety
///
/// `Self` must be a transparent wrapper of `Raw`, counted by the count
/// [`AlwaysRefCounted`] increments for it.
pub(crate) unsafe trait Wraps: AlwaysRefCounted {
    /// The C struct.
    type Raw;
}

// SAFETY: `Mm` wraps `mm_struct` transparently; its count is `mm_count`.
unsafe impl Wraps for mm::Mm {
    type Raw = bindings::mm_struct;
}
// SAFETY: `MmWithUser` wraps `mm_struct` transparently; its count is `mm_users`.
unsafe impl Wraps for mm::MmWithUser {
    type Raw = bindings::mm_struct;
}
// SAFETY: `Credential` wraps `cred` transparently, counted by `get_cred`.
unsafe impl Wraps for cred::Credential {
    type Raw = bindings::cred;
}
// SAFETY: `Task` wraps `task_struct` transparently, counted by `get_task_struct`.
unsafe impl Wraps for kernel::task::Task {
    type Raw = bindings::task_struct;
}

/// Takes over the reference a kernel function returned with `ptr` (a
/// `get_task_mm`, `find_get_pid`, `get_task_cred`...): `None` for NULL.
///
/// # Safety
///
/// `ptr` must be NULL or carry one reference of `T`'s count, which the
/// caller gives up.
pub(crate) unsafe fn take<T: Wraps>(ptr: *mut T::Raw) -> Option<ARef<T>> {
    let ptr = NonNull::new(ptr)?;
    // SAFETY: `T` wraps `T::Raw` transparently (`Wraps`) and the caller gives
    // up the reference, which the `ARef` now owns.
    Some(unsafe { ARef::from_raw(ptr.cast()) })
}
