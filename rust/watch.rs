// SPDX-License-Identifier: GPL-2.0

//! Watches on address spaces, through the glue's mmu notifiers
//! (`rust/glue/notifier.c`: the kernel crate has no notifier abstraction):
//! a cache's regions ([`RegionWatch`]) and its work item ([`CacheHook`]),
//! and the consent registry's exit watch ([`MmWatch`]).

use crate::glue::*;
use crate::mm::MmRef;
use core::ptr::NonNull;
use kernel::bindings;
use kernel::prelude::*;
use kernel::sync::Arc;

/// The watch on one region of an address space that a cache keeps: valid
/// until the first change to the mapping of its range begins (any
/// invalidation of the mm's notifier that meets it), which also kicks the
/// cache's [`CacheHook`]. Made and removed without waiting for anything a
/// user controls but the mm's `mmap_lock`, killably (see the glue's
/// `notifier.c`).
///
/// # Invariants
///
/// `self.0` is a watch made by `cma_glue_region_watch`, owned by this value.
pub(crate) struct RegionWatch(NonNull<cma_region_watch>);

// SAFETY: the watch's state is a flag under its mm watch's spinlock; it may
// be checked and removed from any thread.
unsafe impl Send for RegionWatch {}
// SAFETY: as above.
unsafe impl Sync for RegionWatch {}

impl RegionWatch {
    /// Watches `len` bytes of `mm` from `start` for `hook`'s cache. `EINTR`
    /// if a fatal signal arrives while the hook's first watch on `mm` waits
    /// for its `mmap_lock`. Sleeps.
    pub(crate) fn new<R: Reaper>(
        mm: &MmRef,
        start: usize,
        len: usize,
        hook: &CacheHook<R>,
    ) -> Result<RegionWatch> {
        // SAFETY: the mm has users (we hold `mm_users`), as registering a
        // notifier requires; the hook outlives the watch (the cache drops
        // its regions before its hook), and a cache's hook only ever
        // watches the one mm the cache is for (`Cache::get` checks).
        let w = unsafe { cma_glue_region_watch(mm.as_raw(), start, len, hook.hook.as_ptr()) };
        let w = kernel::error::from_err_ptr(w)?;
        // INVARIANT: a non-error pointer is a new watch, now ours.
        NonNull::new(w).map(RegionWatch).ok_or(ENOMEM)
    }

    /// Whether the mapping of the range is unchanged since the watch was
    /// made.
    pub(crate) fn valid(&self) -> bool {
        // SAFETY: the watch is live (type invariant).
        unsafe { cma_glue_region_valid(self.0.as_ptr()) }
    }
}

impl Drop for RegionWatch {
    fn drop(&mut self) {
        // SAFETY: we own the watch (type invariant); removing it takes only
        // its mm watch's spinlock.
        unsafe { cma_glue_region_unwatch(self.0.as_ptr()) };
    }
}

/// A cache's work item, which invalidations schedule and which calls its
/// owner's [`Reaper::reap`]; it holds the owner.
///
/// # Invariants
///
/// `self.0` is a hook made by `cma_glue_cache_hook_new`, owned by this value.
pub(crate) struct CacheHook<R: Reaper> {
    hook: NonNull<cma_cache_hook>,
    /// Keeps the owner the work item reaches alive; dropped after the hook
    /// is freed (fields drop after `drop`).
    _owner: Arc<R>,
}

// SAFETY: scheduling and cancelling work is thread-safe; nothing else is
// reached through the pointer from Rust; the owner is `Sync` and counted.
unsafe impl<R: Reaper> Send for CacheHook<R> {}
// SAFETY: as above.
unsafe impl<R: Reaper> Sync for CacheHook<R> {}

/// The owner of a [`CacheHook`], whose work item calls [`Reaper::reap`]
/// after an invalidation.
///
/// # Safety
///
/// Every [`RegionWatch`] made with a hook of a value must be dropped before
/// the hook is, but for those the hook's own running work item holds (the
/// hook's drop waits for it). (The value itself is kept alive by the hook.)
pub(crate) unsafe trait Reaper: Sync {
    /// Drops the regions whose watch an invalidation met.
    fn reap(&self);
}

/// The work item of the hooks of an `R`.
///
/// # Safety
///
/// `ctx` must be the `R` the hook was made with ([`CacheHook::new`]), which
/// the hook keeps alive while it exists.
unsafe extern "C" fn reap<R: Reaper>(ctx: *mut kernel::ffi::c_void) {
    // SAFETY: `ctx` is a live `R` (the caller's guarantee), only shared.
    unsafe { &*ctx.cast::<R>() }.reap();
}

// SAFETY: a `Shared` is made only by `Cache::new`, beside its hook, and the
// cache's `Drop` drops every region, so every region watch, before its
// fields (the hook) drop, but those a running reap took out of the slots,
// which the hook's drop waits for.
unsafe impl Reaper for crate::cache::Shared {
    fn reap(&self) {
        self.reap_invalid();
    }
}

impl<R: Reaper> CacheHook<R> {
    /// A work item that will call `owner.reap()`.
    pub(crate) fn new(owner: Arc<R>) -> Result<CacheHook<R>> {
        // Checked against the glue's function type.
        let callback: cma_rs_cache_reap_fn = Some(reap::<R>);
        let ctx = core::ptr::from_ref::<R>(&owner).cast_mut().cast();
        // SAFETY: allocates and initialises a work item whose work calls
        // `reap::<R>` with `ctx`, the owner, which the hook keeps alive.
        let h = unsafe { cma_glue_cache_hook_new(callback, ctx) };
        // INVARIANT: a non-NULL hook is new and ours.
        let hook = NonNull::new(h).ok_or(ENOMEM)?;
        Ok(CacheHook {
            hook,
            _owner: owner,
        })
    }
}

impl<R: Reaper> Drop for CacheHook<R> {
    fn drop(&mut self) {
        // SAFETY: we own the hook; by `new`'s contract the only region
        // watches of it left are held by a running reap, which the glue
        // waits for (cancelling the work) before it detaches the hook from
        // its mm's notifier; the reap takes the cache's lock, never held
        // here.
        unsafe { cma_glue_cache_hook_free(self.hook.as_ptr()) };
    }
}

/// A watch on the caller's address space: the consent registry's hook for
/// forgetting a process's grants when its mm is torn down (the process
/// exited or exec()ed). One `mmu_notifier` per mm, shared by all watches on
/// it; each value owns one reference (`mmu_notifier_get`/`mmu_notifier_put`).
/// The module must call [`MmWatch::synchronize`] once every watch is dropped,
/// before its code goes away.
///
/// # Invariants
///
/// `self.0` is a notifier returned by `cma_glue_watch_exit` on which this
/// value owns one reference.
pub(crate) struct MmWatch(NonNull<bindings::mmu_notifier>);

// SAFETY: notifier references are counted under the mm's notifier lock and
// may be dropped from any thread; shared access only reads the mm pointer,
// which is fixed for the notifier's life.
unsafe impl Send for MmWatch {}
// SAFETY: as above.
unsafe impl Sync for MmWatch {}

/// The owner of exit watches, told when a watched address space is torn
/// down.
///
/// # Safety
///
/// A value must stay where it is, alive, from the first [`MmWatch`] made with
/// it until [`MmWatch::synchronize`] has returned after the last such watch
/// was dropped: its release callbacks reach it by address.
pub(crate) unsafe trait ExitWatcher: Sync {
    /// `mm`, watched by this owner, is being torn down (in `exit_mmap`, in
    /// whatever task dropped its last user).
    fn mm_released(&self, mm: *mut bindings::mm_struct);
}

/// The release callback of the exit watches of a `W`.
///
/// # Safety
///
/// `ctx` must be the `W` the watch was made with ([`MmWatch::current`]),
/// which [`ExitWatcher`]'s contract keeps alive while callbacks can run.
unsafe extern "C" fn released<W: ExitWatcher>(
    ctx: *mut kernel::ffi::c_void,
    mm: *mut bindings::mm_struct,
) {
    // SAFETY: `ctx` is a live `W` (the caller's guarantee), only shared.
    let watcher = unsafe { &*ctx.cast::<W>() };
    watcher.mm_released(mm);
}

// SAFETY: a registry exists only in the `Arc` `Registry::new` makes (its
// fields are private to `consent.rs`, which has no other constructor), so it
// never moves; its `Drop` takes every entry out, dropping its watch (entries
// hold the only watches made with it), then calls `MmWatch::synchronize`
// before its memory goes.
unsafe impl ExitWatcher for crate::consent::Registry {
    fn mm_released(&self, mm: *mut bindings::mm_struct) {
        self.forget_mm(mm);
    }
}

impl MmWatch {
    /// A watch on the caller's mm whose release tells `watcher`. Takes the
    /// mm's `mmap_lock` for writing.
    pub(crate) fn current<W: ExitWatcher>(watcher: &W) -> Result<MmWatch> {
        let ctx = core::ptr::from_ref(watcher).cast_mut().cast();
        // Checked against the glue's function type.
        let callback: cma_rs_mm_released_fn = Some(released::<W>);
        // SAFETY: called from a file operation, by a user task with an mm;
        // returns a referenced notifier or an `ERR_PTR`. Its release calls
        // `released::<W>` with `ctx`, which stays valid while callbacks can
        // run (`ExitWatcher`'s contract).
        let mn = unsafe { cma_glue_watch_exit(callback, ctx) };
        let mn = kernel::error::from_err_ptr(mn)?;
        // INVARIANT: a notifier that is not an error carries our reference.
        NonNull::new(mn).map(MmWatch).ok_or(ENOMEM)
    }

    /// The watched mm, for identity comparisons only.
    pub(crate) fn mm(&self) -> *mut bindings::mm_struct {
        // SAFETY: the notifier is live (type invariant); its mm is fixed.
        unsafe { cma_glue_watch_mm(self.0.as_ptr()) }
    }

    /// Waits until no release callback of any watch runs and every dropped
    /// watch is freed.
    pub(crate) fn synchronize() {
        // SAFETY: `mmu_notifier_synchronize` has no preconditions; it sleeps.
        unsafe { cma_glue_watch_sync() };
    }
}

impl Drop for MmWatch {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we own one reference. The glue's
        // `mmu_notifier_put` may be called from the release callback too.
        unsafe { cma_glue_unwatch_exit(self.0.as_ptr()) };
    }
}
