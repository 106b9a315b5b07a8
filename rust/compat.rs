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
