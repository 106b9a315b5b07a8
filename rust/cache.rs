// SPDX-License-Identifier: GPL-2.0

//! Page caches: pages of one address space kept pinned across copies.
//!
//! MPI libraries copy to and from the same buffers again and again; pinning
//! the pages on every copy (GUP, then unpin) is most of what a copy costs
//! beside the bytes. A cache keeps the pages of the ranges copied pinned, in
//! [`Region`]s, as RDMA keeps a memory registration, and serves later copies
//! of those ranges without GUP. There are two kinds, the same code: a peer
//! fd's cache of its target's pages, and an open `/dev/cma`'s cache of its
//! opener's own pages (the caller's side of a copy under the `pinned`
//! engine, shared by the peer fds attached through that file so that a
//! process's buffers are pinned and charged once, not once per peer). A
//! cache serves only the address space it was made for: a copy by another
//! process (a fd passed on, or inherited across `fork`) goes uncached.
//!
//! What keeps it exact: each region has a [`RegionWatch`] on the mm's
//! notifier (one `mmu_notifier` per mm, shared by its caches; see the glue's
//! `notifier.c`). Any change to the mapping of the region's range
//! (`munmap`, `mremap`, `mprotect`, `MADV_DONTNEED`, fork's copy-on-write,
//! THP split or collapse, migration, exit) marks the watch invalid before
//! the change takes effect, and a copy uses a region only while its watch
//! is valid; otherwise it pins afresh, so a copy that starts after a change
//! sees the new mapping, with the same bytes and the same `EFAULT` at the
//! same byte as without a cache. A region made while a change of its range
//! is in flight is invalid from the start. A copy running while the target
//! changes its mapping may see the old or the new pages, as
//! `process_vm_readv` may. Regions are taken whole or not at all: a range
//! GUP cannot take completely (a hole, a protection) is copied without the
//! cache, which finds the fault where it is.
//!
//! What a cache never does: change the memory it reads (read-only regions
//! hold page references, not long-term pins, which would unshare
//! copy-on-write pages; see [`LongPins`]), or wait for something a user
//! controls without a fatal signal ending the wait (no wait on an
//! invalidation in flight, however long a target keeps them coming; the
//! regions are dropped outside the cache's lock, since unpinning and
//! unwatching sleep).
//!
//! Bounds: at most the `cache_pages` parameter's pages per cache (0 turns the
//! cache off) and [`MAX_REGIONS`] regions, least recently used first out;
//! at most a quarter of RAM in all caches; and every region is charged to
//! the locked memory of the user whose copy made it (`user_struct`'s
//! `locked_vm` within `RLIMIT_MEMLOCK`, unless `CAP_IPC_LOCK`, as io_uring
//! charges its registered buffers), for as long as the region lives,
//! whichever process or file outlives the one that copied: past a bound,
//! copies go uncached. Invalidated regions are unpinned by the cache's work item soon
//! after, so a target's memory is freed when it exits even if the fd stays
//! open. The `cache_*` counters show hits, misses, fallbacks, invalidations,
//! evictions and the pages held.

use crate::mm::{own_pkeys_allow, own_range_pkeys, LockedCharge, MmExt, MmGrab, MmRef};
use crate::pin::{LongPins, Pinned};
use crate::stats::{self, Stat};
use crate::watch::{CacheHook, RegionWatch};
use core::sync::atomic::{AtomicUsize, Ordering};
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;
use kernel::sync::{Arc, Mutex};

/// The most regions one cache holds.
/// 128: the regions of a copy are its batches (up to 2 MiB each), and a
/// direct copy keeps both of its sides in one cache: 64 MiB each way is 66
/// regions, if the buffers are not 2 MiB-aligned.
const MAX_REGIONS: usize = 128;

/// Pages held by all caches.
static TOTAL_PAGES: AtomicUsize = AtomicUsize::new(0);

/// The most pages all caches may hold: a quarter of RAM.
fn total_pages_max() -> usize {
    crate::params::totalram_pages() / 4
}

/// A range of the target's pages, pinned, and the watch that says whether
/// they are still the ones mapped there.
pub(crate) struct Region {
    /// First page's address.
    start: usize,
    /// The watch: whether the pins are still the pages mapped there.
    watch: RegionWatch,
    /// For the caller's own pages, the protection keys of their mappings
    /// (a change of them invalidates the watch): each use checks that the
    /// caller's key rights, which it changes without the kernel seeing
    /// (`WRPKRU`), still allow the access, as its own access would have to.
    /// `None` for a target's pages, to which keys do not apply (as with
    /// `process_vm_readv`).
    own_keys: Option<u32>,
    /// The pinned pages (dropped after the watch, once nothing can use
    /// them: an `Arc` holds the region while a copy does).
    pins: LongPins,
    /// What the pins are charged to, returned after they are unpinned (the
    /// fields drop in this order).
    _account: Account,
}

impl Region {
    fn end(&self) -> usize {
        self.start + self.pins.len() * PAGE_SIZE
    }

    fn valid(&self) -> bool {
        self.watch.valid()
    }

    /// Whether the region serves `nr_pages` pages from `start`, for writing
    /// if `write`.
    fn covers(&self, start: usize, nr_pages: usize, write: bool) -> bool {
        // A batch's end may wrap around (a bad address the copy will fault
        // on): such a batch is in no region.
        let end = nr_pages
            .checked_mul(PAGE_SIZE)
            .and_then(|n| start.checked_add(n));
        start >= self.start
            && end.is_some_and(|end| end <= self.end())
            && (self.pins.writable() || !write)
    }

    /// The pages for one batch, or `None` if the region does not cover it
    /// (see [`Region::covers`]).
    pub(crate) fn pages(&self, start: usize, nr_pages: usize, write: bool) -> Option<Pinned<'_>> {
        if !self.covers(start, nr_pages, write) {
            return None;
        }
        if self
            .own_keys
            .is_some_and(|keys| !own_pkeys_allow(keys, write))
        {
            // The copy takes the pages itself, and meets the fault.
            return None;
        }
        // OVERFLOW: `covers` checked `start >= self.start`.
        self.pins
            .borrow((start - self.start) / PAGE_SIZE, nr_pages, write)
    }
}

/// Pages charged to the bound of all caches, to the locked memory of the
/// user whose copy made a region, and to the `cache_pages` counter;
/// returned on drop.
struct Account {
    _locked: LockedCharge,
    pages: usize,
}

impl Account {
    /// Charges `pages`, or `None` past the bound of all caches or the
    /// caller's `RLIMIT_MEMLOCK` (counted for its user, across all of the
    /// user's processes).
    fn charge(pages: usize) -> Option<Account> {
        let total = TOTAL_PAGES.fetch_add(pages, Ordering::Relaxed);
        // OVERFLOW: `pages` is at most `cache_pages`, and the total at most
        // a quarter of RAM before this add.
        if total + pages > total_pages_max() {
            TOTAL_PAGES.fetch_sub(pages, Ordering::Relaxed);
            return None;
        }
        let Ok(locked) = LockedCharge::new(pages) else {
            TOTAL_PAGES.fetch_sub(pages, Ordering::Relaxed);
            return None;
        };
        stats::add(Stat::CachePages, pages);
        Some(Account {
            _locked: locked,
            pages,
        })
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        TOTAL_PAGES.fetch_sub(self.pages, Ordering::Relaxed);
        stats::sub(Stat::CachePages, self.pages);
    }
}

/// The regions of a cache, in fixed slots (nothing is allocated under the
/// lock), each with the time it was last used.
///
/// PANIC: every index into `slot` is below `MAX_REGIONS`, its length: the
/// loops range over `0..MAX_REGIONS`, `last` is only ever set to such an
/// index, and a free slot's index comes from `position` over the array.
struct Slots {
    slot: [Option<(Arc<Region>, u64)>; MAX_REGIONS],
    clock: u64,
    /// The slot of the last hit, looked at first (copies repeat).
    last: usize,
    /// Pages of the regions in `slot`.
    pages: usize,
}

impl Slots {
    /// Empties slot `i` and hands its region over, to be dropped once the
    /// lock is released (dropping the last reference unpins the pages and
    /// gives back the charge, which may sleep: never under the cache's
    /// lock). A copy still using the region keeps it until it is done.
    #[must_use]
    fn take(&mut self, i: usize) -> Option<Arc<Region>> {
        let (r, _) = self.slot.get_mut(i)?.take()?;
        // OVERFLOW: `pages` counts the pages of the regions in the slots,
        // this one's among them.
        self.pages -= r.pins.len();
        Some(r)
    }

    /// Whether a region of `nr_pages` fits beside the others, within `max`.
    fn room(&self, nr_pages: usize, max: usize) -> bool {
        // OVERFLOW: both are at most `cache_pages` (an `i32`).
        self.pages + nr_pages <= max && self.slot.iter().any(Option::is_none)
    }
}

/// Regions taken out of a cache under its lock, dropped after it.
const DROP_BATCH: usize = 16;

/// The part of a cache its work item reaches.
#[pin_data]
pub(crate) struct Shared {
    #[pin]
    regions: Mutex<Slots>,
}

impl Shared {
    /// The cache's work item, which invalidations schedule: unpins the
    /// regions whose watch was invalidated.
    pub(crate) fn reap_invalid(&self) {
        let n = self.drop_where(|r| !r.valid());
        stats::add(Stat::CacheInvalidations, n);
    }

    /// Drops the regions `pred` picks, outside the lock, a batch at a time;
    /// returns how many.
    fn drop_where(&self, mut pred: impl FnMut(&Region) -> bool) -> usize {
        let mut n = 0;
        loop {
            let mut taken: [Option<Arc<Region>>; DROP_BATCH] = Default::default();
            let mut k = 0;
            let mut slots = self.regions.lock();
            for i in 0..MAX_REGIONS {
                if k == DROP_BATCH {
                    break;
                }
                if slots.slot[i].as_ref().is_some_and(|(r, _)| pred(r)) {
                    taken[k] = slots.take(i);
                    k += 1;
                }
            }
            drop(slots);
            // The regions go here, unlocked.
            drop(taken);
            n += k;
            if k < DROP_BATCH {
                return n;
            }
        }
    }

    /// Drops the least recently used region, outside the lock; whether
    /// there was one.
    fn evict_one(&self) -> bool {
        let mut slots = self.regions.lock();
        let oldest = (0..MAX_REGIONS)
            .filter_map(|i| slots.slot[i].as_ref().map(|(_, t)| (*t, i)))
            .min();
        let taken = oldest.and_then(|(_, i)| slots.take(i));
        drop(slots);
        taken.is_some()
    }
}

/// A cache of the pages of one address space.
pub(crate) struct Cache {
    /// Declared before `shared`: the work item is cancelled before the
    /// shared part it uses goes.
    hook: CacheHook<Shared>,
    shared: Arc<Shared>,
    /// The address space the regions belong to (held, so that no other can
    /// take its address while the cache lives).
    mm: MmGrab,
}

impl Cache {
    /// An empty cache for the pages of `mm`.
    pub(crate) fn new(mm: MmGrab) -> Result<Cache> {
        let shared = Arc::pin_init(
            pin_init!(Shared {
                regions <- kernel::new_mutex!(
                    Slots {
                        slot: core::array::from_fn(|_| None),
                        clock: 0,
                        last: 0,
                        pages: 0,
                    },
                    "cma_cache"
                ),
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        let hook = CacheHook::new(shared.clone())?;
        Ok(Cache { hook, shared, mm })
    }

    /// Whether the cache is for the pages of `mm`.
    pub(crate) fn is_for(&self, mm: &MmRef) -> bool {
        self.mm.as_raw() == mm.as_raw()
    }

    /// The pages for one batch of a copy: `nr_pages` from the page-aligned
    /// `start` of `mm`, for writing if `write`, kept in the cache. `None` if
    /// the cache is off, is for another address space, or cannot keep them:
    /// the copy then pins them itself.
    pub(crate) fn get(
        &self,
        mm: &MmRef,
        start: usize,
        nr_pages: usize,
        write: bool,
    ) -> Option<Arc<Region>> {
        let max = crate::params::cache_pages();
        if nr_pages > max || !self.is_for(mm) {
            return None;
        }
        if let Some(r) = self.lookup(start, nr_pages, write) {
            stats::inc(Stat::CacheHits);
            return Some(r);
        }
        let r = self.make(mm, start, nr_pages, write, max);
        stats::inc(if r.is_some() {
            Stat::CacheMisses
        } else {
            Stat::CacheFallbacks
        });
        r
    }

    /// A valid region that covers the batch, now the most recently used;
    /// invalid ones met on the way are dropped.
    fn lookup(&self, start: usize, nr_pages: usize, write: bool) -> Option<Arc<Region>> {
        // Declared before the guard, so dropped after it: invalid regions
        // met on the way go once the lock is released (the rest, if more,
        // are left to the work item).
        let mut dead: [Option<Arc<Region>>; DROP_BATCH] = Default::default();
        let mut k = 0;
        let mut slots = self.shared.regions.lock();
        let last = slots.last;
        let order = (0..MAX_REGIONS).filter(|&i| i != last);
        for i in Iterator::chain(core::iter::once(last), order) {
            let covers = slots.slot[i]
                .as_ref()
                .is_some_and(|(r, _)| r.covers(start, nr_pages, write));
            if !covers {
                continue;
            }
            if !slots.slot[i].as_ref().is_some_and(|(r, _)| r.valid()) {
                if k < DROP_BATCH {
                    dead[k] = slots.take(i);
                    k += 1;
                    stats::inc(Stat::CacheInvalidations);
                }
                continue;
            }
            slots.clock = slots.clock.wrapping_add(1);
            slots.last = i;
            let now = slots.clock;
            if let Some((r, used)) = slots.slot[i].as_mut() {
                *used = now;
                return Some(r.clone());
            }
        }
        None
    }

    /// Pins and keeps a new region, making room first; `None` past a bound
    /// or if the range cannot be pinned whole and unchanged.
    fn make(
        &self,
        mm: &MmRef,
        start: usize,
        nr_pages: usize,
        write: bool,
        max: usize,
    ) -> Option<Arc<Region>> {
        // Room in this cache: least recently used first.
        while !self.shared.regions.lock().room(nr_pages, max) {
            if !self.shared.evict_one() {
                break;
            }
            stats::inc(Stat::CacheEvictions);
        }
        // Room in all caches, and in the caller's locked memory; from here
        // on, dropping a half-made region returns all of it.
        let account = Account::charge(nr_pages)?;
        // OVERFLOW: `nr_pages` is at most `cache_pages`, a module parameter
        // bounded by RAM.
        let watch = RegionWatch::new(mm, start, nr_pages * PAGE_SIZE, &self.hook).ok()?;
        // After the watch: a change of the keys from here on invalidates it.
        let own_keys = mm
            .is_current()
            .then(|| own_range_pkeys(start, nr_pages * PAGE_SIZE));
        let pins = LongPins::pin(mm, start, nr_pages, write)?;
        let region = Region {
            start,
            watch,
            own_keys,
            pins,
            _account: account,
        };
        // Changed while it was being pinned: not kept (dropping it returns
        // everything); the copy pins again for itself.
        if !region.valid() {
            return None;
        }
        let region = Arc::new(region, GFP_KERNEL_ACCOUNT).ok()?;
        let mut slots = self.shared.regions.lock();
        // Another copy through this fd may have taken the room meanwhile.
        if !slots.room(nr_pages, max) {
            return None;
        }
        let free = slots.slot.iter().position(Option::is_none)?;
        slots.clock = slots.clock.wrapping_add(1);
        let now = slots.clock;
        slots.slot[free] = Some((region.clone(), now));
        slots.last = free;
        // OVERFLOW: `room` checked the sum against `max`.
        slots.pages += nr_pages;
        Some(region)
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        // Every region (so every watch) goes before the hook, but those a
        // reap running now took out of the slots: the hook, which the
        // fields drop next, waits for that reap (it drops them) before it
        // lets go of the notifier.
        self.shared.drop_where(|_| true);
    }
}
