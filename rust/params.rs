// SPDX-License-Identifier: GPL-2.0

//! The module's parameters and the machine facts the logic reads, as safe
//! functions over the glue (the parameters themselves live in
//! `glue/device.c`, since 6.12's `module!` cannot declare them).

use crate::glue::*;

/// The `policy` parameter: 0 consent, 1 credentials, 2 off.
pub(crate) fn policy() -> i32 {
    // SAFETY: reads a module parameter; no preconditions.
    unsafe { cma_glue_policy() }
}

/// Publishes the consent registry's size in the `grants` parameter.
pub(crate) fn set_grants(n: usize) {
    // SAFETY: stores an integer in a module parameter; no preconditions.
    unsafe { cma_glue_set_grants(n as u64) };
}

/// The `cache_pages` parameter: the most pages one cache may hold.
pub(crate) fn cache_pages() -> usize {
    // SAFETY: reads a module parameter; no preconditions.
    unsafe { cma_glue_cache_param() }.max(0) as usize
}

/// The machine's RAM, in pages.
pub(crate) fn totalram_pages() -> usize {
    // SAFETY: reads a counter; no preconditions.
    unsafe { cma_glue_totalram_pages() }
}
