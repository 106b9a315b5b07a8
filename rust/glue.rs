// SPDX-License-Identifier: GPL-2.0

//! The functions of `rust/glue.c`: one-line C wrappers of kernel inlines and
//! macros that 6.12's Rust bindings do not provide, plus the misc device and
//! peer fd creation. Only the RAII wrappers (`device`, `mm`, `peer`, `task`),
//! the module parameter readers (`consent`, `kcopy`) and the copy routines
//! (`kcopy`) call them.

// The kernel structs behind these pointers are opaque to Rust here; they are
// only passed back to C, as the kernel's own bindings crate does.
#![allow(improper_ctypes)]

use core::ffi::c_int;
use kernel::bindings;

extern "C" {
    pub(crate) fn cma_glue_pidfd_get_pid(fd: c_int) -> *mut bindings::pid;
    pub(crate) fn cma_glue_get_task_tgid(task: *mut bindings::task_struct) -> *mut bindings::pid;
    pub(crate) fn cma_glue_task_tgid(task: *mut bindings::task_struct) -> *mut bindings::pid;
    pub(crate) fn cma_glue_same_thread_group(task: *mut bindings::task_struct) -> bool;
    pub(crate) fn cma_glue_self_exec_id(task: *mut bindings::task_struct) -> u64;
    pub(crate) fn cma_glue_exec_update_lock_killable(task: *mut bindings::task_struct) -> c_int;
    pub(crate) fn cma_glue_exec_update_unlock(task: *mut bindings::task_struct);
    pub(crate) fn cma_glue_current_cred() -> *const bindings::cred;
    pub(crate) fn cma_glue_put_cred(cred: *const bindings::cred);
    pub(crate) fn cma_glue_fatal_signal_pending() -> bool;
    pub(crate) fn cma_glue_cond_resched();
    pub(crate) fn cma_glue_pin_remote(
        mm: *mut bindings::mm_struct,
        start: usize,
        nr_pages: usize,
        gup_flags: u32,
        pages: *mut *mut bindings::page,
    ) -> i64;
    pub(crate) fn cma_glue_get_dumpable(mm: *mut bindings::mm_struct) -> c_int;
    pub(crate) fn cma_glue_mm_user_ns(
        mm: *mut bindings::mm_struct,
    ) -> *mut bindings::user_namespace;
    pub(crate) fn cma_glue_current_mm() -> *mut bindings::mm_struct;
    pub(crate) fn cma_glue_mmgrab(mm: *mut bindings::mm_struct);
    pub(crate) fn cma_glue_mmdrop(mm: *mut bindings::mm_struct);
    pub(crate) fn cma_glue_mmget_not_zero(mm: *mut bindings::mm_struct) -> bool;
    pub(crate) fn cma_glue_get_current_cred() -> *const bindings::cred;
    pub(crate) fn cma_glue_peer_state(
        task: *mut bindings::task_struct,
        mm: *mut bindings::mm_struct,
        caller_group: *mut *mut bindings::pid,
        caller_cred: *mut *const bindings::cred,
        task_cred: *mut *const bindings::cred,
        task_mm: *mut *mut bindings::mm_struct,
        dumpable: *mut c_int,
    );
    pub(crate) fn cma_glue_peer_fd(peer: *mut core::ffi::c_void) -> c_int;
    pub(crate) fn cma_glue_policy() -> c_int;
    pub(crate) fn cma_glue_page_to_user(
        to: *mut core::ffi::c_void,
        page: *mut bindings::page,
        offset: usize,
        n: usize,
    ) -> usize;
    pub(crate) fn cma_glue_user_to_page(
        page: *mut bindings::page,
        offset: usize,
        from: *const core::ffi::c_void,
        n: usize,
    ) -> usize;
    pub(crate) fn cma_glue_simd_param() -> c_int;
    pub(crate) fn cma_glue_engine() -> c_int;
    pub(crate) fn cma_glue_choose_engine(engine: c_int);
    pub(crate) fn cma_glue_usercopy_routine(dst: *mut u8, src: *const u8, len: usize);
    pub(crate) fn cma_glue_access_ok(addr: usize, len: usize) -> bool;
    pub(crate) fn cma_glue_set_grants(n: u64);
    pub(crate) fn cma_glue_cred_ids(
        cred: *const bindings::cred,
        ids: *mut [u32; 6],
        permitted: *mut u64,
        user_ns: *mut *mut bindings::user_namespace,
    );
    pub(crate) fn cma_glue_file_private(file: *mut bindings::file) -> *mut core::ffi::c_void;
    pub(crate) fn cma_glue_stat_names() -> u32;
    pub(crate) fn cma_glue_stat_add(i: u32, n: u64);
    // The `struct mmu_notifier` is opaque here: only the glue looks inside.
    pub(crate) fn cma_glue_watch_exit() -> *mut core::ffi::c_void;
    pub(crate) fn cma_glue_watch_mm(mn: *mut core::ffi::c_void) -> *mut bindings::mm_struct;
    pub(crate) fn cma_glue_unwatch_exit(mn: *mut core::ffi::c_void);
    pub(crate) fn cma_glue_watch_sync();
    // The cache's C objects are opaque here too.
    pub(crate) fn cma_glue_cache_hook_new(
        cache: *const core::ffi::c_void,
    ) -> *mut core::ffi::c_void;
    pub(crate) fn cma_glue_cache_hook_free(hook: *mut core::ffi::c_void);
    pub(crate) fn cma_glue_region_watch(
        mm: *mut bindings::mm_struct,
        start: usize,
        len: usize,
        hook: *mut core::ffi::c_void,
        seq: *mut usize,
    ) -> *mut core::ffi::c_void;
    pub(crate) fn cma_glue_region_unwatch(w: *mut core::ffi::c_void);
    pub(crate) fn cma_glue_region_valid(w: *mut core::ffi::c_void, seq: usize) -> bool;
    pub(crate) fn cma_glue_account_locked(
        mm: *mut bindings::mm_struct,
        pages: usize,
        inc: bool,
    ) -> c_int;
    pub(crate) fn cma_glue_totalram_pages() -> usize;
    pub(crate) fn cma_glue_cache_param() -> c_int;
    pub(crate) fn cma_glue_dirty_pages(pages: *const *mut bindings::page, n: usize);
    pub(crate) fn cma_glue_simd_usable() -> bool;
    pub(crate) fn cma_glue_contiguous_pages(pages: *const *mut bindings::page, n: usize) -> usize;
    pub(crate) fn cma_glue_page_address(page: *mut bindings::page) -> *mut u8;
    pub(crate) fn cma_glue_simd_copy(dst: *mut u8, src: *const u8, len: usize);
    pub(crate) fn cma_glue_memcpy(dst: *mut u8, src: *const u8, len: usize);
    pub(crate) fn cma_glue_register() -> core::ffi::c_int;
    pub(crate) fn cma_glue_unregister();
}
