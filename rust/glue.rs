// SPDX-License-Identifier: GPL-2.0

//! The functions of the C glue (`rust/glue/*.c`), declared by bindgen from
//! its one header, `rust/glue/glue.h` (see `Kbuild`): the kernel's static inlines and
//! macros that the kernel crate's bindings do not provide, the parameters
//! and counters, the peer fds' files, on 6.12 the misc device, and the
//! plumbing of the notifier callbacks. Only the RAII wrappers (`compat`,
//! `mm`, `peer`, `task`, `file`), the parameter
//! readers and the copy routines (`kcopy`) call them. The header also gives
//! the function types of the Rust callbacks C calls (`cma_rs_*_fn`), which
//! the files that define them check their definitions against.

// The kernel structs behind the pointers are opaque to the glue's users; they
// are only passed back to C, as the kernel's own bindings crate does.
#![allow(
    improper_ctypes,
    non_camel_case_types,
    missing_docs,
    unreachable_pub,
    dead_code,
    clippy::all
)]
// `attribute_group` is named by the 7.x half of the header only.
#[allow(unused_imports)]
use kernel::bindings::{
    __u32, __u64, attribute_group, cred, file, inode, mm_struct, mmu_notifier, page, pid,
    task_struct, user_namespace, user_struct,
};

include!("cma_glue_generated.rs");
