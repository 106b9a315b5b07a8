// SPDX-License-Identifier: GPL-2.0

//! The module's counters, read from `/sys/class/misc/cma/stats/<name>`.
//!
//! They are hardware-neutral: what a copy cost in lookups, pins and checks,
//! whatever the CPU. The C glue keeps them per CPU (no shared cache line on
//! the copy path) and names them; [`Stat`] is the same list in the same
//! order, which [`check`] verifies when the module loads.

use crate::glue::*;
use kernel::prelude::*;

/// One counter. The order is the C glue's `cma_stat_names`.
#[derive(Clone, Copy)]
#[repr(u32)]
pub(crate) enum Stat {
    /// Copy requests that reached the engine (every way of naming a target).
    Copies,
    /// Bytes those requests moved.
    Bytes,
    /// Calls into GUP for the target's pages (`pin_user_pages_remote`).
    GupCalls,
    /// Target pages pinned by them.
    PagesPinned,
    /// Calls into GUP for the caller's own pages (`pin_user_pages_fast`).
    LocalGupCalls,
    /// Caller pages pinned by them.
    LocalPagesPinned,
    /// Copies within the caller's own address space (the direct path).
    DirectCopies,
    /// Lookups in the consent registry (each takes one bucket's lock).
    RegistryLookups,
    /// Copies through a peer fd.
    PeerCopies,
    /// Of those, how many ran the full access check again.
    PeerRechecks,
    /// Registry entries removed because their process's mm was torn down.
    GrantsReapedAtExit,
    /// Batches of a copy through a peer fd served by its page cache.
    CacheHits,
    /// Batches for which the cache pinned and kept a new region.
    CacheMisses,
    /// Batches the cache could not keep (bounds, memlock, a hole, a range
    /// that changed while pinning): pinned for the copy only.
    CacheFallbacks,
    /// Regions dropped because the target's mapping of them changed.
    CacheInvalidations,
    /// Regions dropped to make room.
    CacheEvictions,
    /// Pages the caches hold pinned now (a level, not a count).
    CachePages,
    /// Pages the caches have let go: unpinned (regions for writing) or
    /// their references dropped (regions for reading).
    CacheReleased,
}

/// How many counters [`Stat`] has.
const COUNT: u32 = Stat::CacheReleased as u32 + 1;

/// Adds `n` to `stat`.
#[inline]
pub(crate) fn add(stat: Stat, n: usize) {
    // SAFETY: adds to a per-CPU counter; the glue bounds-checks the index.
    unsafe { cma_glue_stat_add(stat as u32, n as u64) };
}

/// Subtracts `n` from `stat` (a level; the per-CPU parts wrap, their sum
/// does not).
#[inline]
pub(crate) fn sub(stat: Stat, n: usize) {
    add(stat, (n as u64).wrapping_neg() as usize);
}

/// Adds one to `stat`.
#[inline]
pub(crate) fn inc(stat: Stat) {
    add(stat, 1);
}

/// Fails the module's load if the C glue names a different number of
/// counters than [`Stat`] has.
pub(crate) fn check() -> Result {
    // SAFETY: returns a constant; no preconditions.
    if unsafe { cma_glue_stat_names() } != COUNT {
        pr_err!("the C glue and rust/stats.rs disagree on the counters\n");
        return Err(EINVAL);
    }
    Ok(())
}
