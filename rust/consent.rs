// SPDX-License-Identifier: GPL-2.0

//! Consent: a target's explicit permission to be copied from and to.
//!
//! LSMs such as Yama cannot be consulted from a module, so cma has its own
//! answer: unless the caller has `CAP_SYS_PTRACE` over the target (or the
//! admin chose another `policy`), the target must have
//! granted access with `CMA_IOC_GRANT` on its own `/dev/cma` file, to one peer
//! process or to any peer that passes the credential rule.
//!
//! A grant belongs to the granting process (its thread-group pid) and to the
//! process image it was made in (its exec generation and address space), and
//! to the file it was made on: it stops counting when the process exits or
//! execs, and is forgotten when it is revoked or that file is released. A
//! grant naming a thread names its whole process, so that a copy by pid and a
//! copy through a peer fd, which any thread of the attaching process may use,
//! agree. The peer is looked up once, when the grant is made, by pid or by
//! pidfd (`CMA_GRANT_PIDFD`, which cannot name a process that took over a
//! recycled pid), and the grant holds that `struct pid`. A grant by pidfd
//! may name the descendants of the process instead (`CMA_GRANT_DESCENDANTS`,
//! to a depth the granter chooses: an MPI rank names its launcher, and so
//! its sibling ranks); descent is judged when access is checked, from the
//! parent links of the moment.
//!
//! # The registry
//!
//! Unprivileged users grow it. It has no budget of its own that users share:
//! it is bounded by what the kernel already bounds per process.
//!
//! - Grants are kept per address space ([`Entry`]), at most one entry per
//!   `mm`, held by one process of it, in one of [`SHARDS`] red-black trees
//!   keyed by the mm's address, each under its own mutex. An access check
//!   looks up one address space in one shard, and checks of different targets
//!   do not contend.
//! - Each entry holds a watch on its mm ([`MmWatch`], an `mmu_notifier`
//!   whose release runs in `exit_mmap`), and is removed there: when the
//!   address space is torn down because the last process using it exited or
//!   exec()ed, whatever file the grants were made on.
//! - An entry holds at most [`MAX_GRANTS_PER_PROCESS`] grants (`ENOSPC` past
//!   that). Allocations are charged to the granting task's memory cgroup.
//! - Processes that share an mm without being threads of one process
//!   (`vfork`, `CLONE_VM` without `CLONE_THREAD`) share its one entry: while
//!   its holder still runs in that address space and image and holds a
//!   grant, another process's grant fails with `EBUSY`. Once the holder has
//!   exited or exec()ed, or holds no grant, the next process of that mm to
//!   grant takes the entry over (the old holder's grants are forgotten).
//! - Each open `/dev/cma` keeps the keys of the entries that hold grants made
//!   on it ([`FileGrants`]), so that its release visits only those.
//! - Withdrawals are counted per holder ([`Owner`]): a peer fd whose access
//!   rested on a process's grants rechecks only when that process withdrew
//!   one, not when anyone anywhere did.
//!
//! **The bound.** An entry is made by a process running in its mm, so the mm
//! has users then, and its watch's release removes it when the last user
//! goes (`exit_mmap`). So every entry belongs to a live address space, at
//! most one to each. A live address space is one that some process runs in
//! (a zombie has none: `exit_mm` comes first), or, for a while, one that a
//! kernel path borrowed with `get_task_mm` and will put back. An entry takes
//! one slot and at most [`MAX_GRANTS_PER_PROCESS`] more. The registry
//! therefore holds at most `1 + MAX_GRANTS_PER_PROCESS` slots per live
//! process, which a user can multiply only by running processes:
//! `RLIMIT_NPROC`, the pids cgroup and `threads-max` bound it, and the
//! memory is charged to the memory cgroup of the task that granted, like any
//! per-process kernel object. Nothing is counted across users or processes,
//! so no set of users (say, the subordinate ids of one person's user
//! namespace) can make another user's grant fail: a grant fails only for
//! reasons of its own process (its grant count, the holder of its mm, its
//! memory cgroup).
//!
//! **The cost.** A grant, a revoke, an access check and an exit each lock
//! one shard and do a tree lookup (logarithmic in the entries of that shard)
//! plus a scan of one entry's grants (at most [`MAX_GRANTS_PER_PROCESS`]),
//! with a tree update in a file's notes per grant made or forgotten.
//! Releasing a file visits the entries that hold grants made on it, each
//! that way. No operation walks the registry, a shard, or a list of users.

use crate::mm::{current_mm, mm_of_task};
use crate::stats::{self, Stat};
use crate::task::{
    access_inputs, current_task, find_pid, pidfd_pid, PidExt, PidRef, TaskExt, TaskRef,
};
use crate::uapi;
use crate::user::IoctlArg;
use crate::watch::MmWatch;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use kernel::bindings;
use kernel::prelude::*;
use kernel::rbtree::RBTree;
use kernel::sync::{Arc, Mutex};
use kernel::task::Task;

/// The most grants one process may hold at once.
const MAX_GRANTS_PER_PROCESS: usize = 1024;
/// Shards of the registry: `1 << SHARD_BITS`.
const SHARD_BITS: u32 = 6;
/// Shards of the registry.
const SHARDS: usize = 1 << SHARD_BITS;

/// Allocation flags: charged to the granting task's memory cgroup.
const GFP: kernel::alloc::Flags = GFP_KERNEL_ACCOUNT;

/// A granting process as peer fds see it: its count of withdrawals.
pub(crate) struct Owner {
    withdrawals: AtomicU64,
}

/// What the registry knows of one open `/dev/cma`: the keys of the entries
/// that hold grants made on it.
///
/// Lock order: a shard's lock, then this one; never the other way round.
#[pin_data]
pub(crate) struct FileGrants {
    #[pin]
    entries: Mutex<RBTree<usize, ()>>,
}

impl FileGrants {
    /// The record of a newly opened `/dev/cma`.
    pub(crate) fn new() -> Result<Arc<FileGrants>> {
        Arc::pin_init(
            pin_init!(FileGrants {
                entries <- kernel::new_mutex!(RBTree::new(), "cma_file_grants"),
            }),
            GFP,
        )
    }

    /// Notes that entry `key` holds a grant made on this file.
    fn insert(&self, key: usize) -> Result {
        let mut entries = self.entries.lock();
        if entries.get(&key).is_none() {
            entries.try_create_and_insert(key, (), GFP)?;
        }
        Ok(())
    }

    /// Notes that entry `key` holds no grant made on this file.
    fn remove(&self, key: usize) {
        self.entries.lock().remove(&key);
    }

    /// Some entry noted, if any.
    fn any(&self) -> Option<usize> {
        self.entries.lock().keys().next().copied()
    }
}

/// One grant of a process.
struct Grant {
    /// The file it was made on.
    file: Arc<FileGrants>,
    /// The process allowed (its thread-group pid), or `None` for any.
    peer: Option<PidRef>,
    /// Whether the peer was named by a pidfd: only such a grant admits its
    /// peer from another user namespace (see [`crate::access`]).
    by_pidfd: bool,
    /// How many generations of descendants of `peer` the grant admits
    /// rather than `peer` itself (made by pidfd only), or 0: `peer` itself.
    generations: u32,
}

impl Grant {
    /// Whether this grant admits `caller`; `None` if not, else whether it
    /// names the caller by pidfd (itself, or as a descendant).
    fn admits(&self, caller: &TaskRef) -> Option<bool> {
        match &self.peer {
            None => Some(false),
            Some(p) if self.generations > 0 => caller
                .descends_from(p, self.generations)
                .then_some(self.by_pidfd),
            Some(p) => caller.in_group(p).then_some(self.by_pidfd),
        }
    }
}

/// The grants made in one address space, by the process holding it.
struct Entry {
    /// The holder (thread-group pid).
    pid: PidRef,
    /// The holder's exec generation when it took the entry.
    exec_id: u64,
    /// The mm the entry is for (the tree's key is its address): its teardown
    /// removes the entry, and the watch keeps the `mm_struct` allocated, so
    /// the key names no other mm while the entry lives.
    watch: MmWatch,
    /// Shared with the peer fds that rely on these grants.
    owner: Arc<Owner>,
    /// The grants; `None` slots are free (KVec has no removal here).
    grants: KVec<Option<Grant>>,
    /// How many slots are `Some`.
    live: usize,
}

impl Entry {
    /// Whether the holder is still the process that took the entry, running
    /// in its address space: it has not exited or exec()ed since.
    fn held(&self) -> bool {
        let mm = self.watch.mm();
        self.pid
            .task()
            .is_ok_and(|t| t.exec_id() == self.exec_id && mm_id(&t, mm) == mm)
    }

    /// Whether the process `pid` (a thread-group pid) in exec generation
    /// `exec_id` holds this entry.
    fn is(&self, pid: *mut bindings::pid, exec_id: u64) -> bool {
        self.pid.as_ptr() == pid && self.exec_id == exec_id
    }

    /// Forgets every grant. `key` is the entry's key.
    fn forget_all(&mut self, key: usize) -> usize {
        self.forget(key, |_| true)
    }

    /// Forgets the grants made on `file`.
    fn forget_file(&mut self, key: usize, file: &Arc<FileGrants>) -> usize {
        self.forget(key, |g| Arc::ptr_eq(&g.file, file))
    }

    /// Forgets the grants `pred` picks; returns how many. `pred` picks every
    /// grant of each file it picks one of, so the files' notes of this entry
    /// go with them.
    fn forget(&mut self, key: usize, mut pred: impl FnMut(&Grant) -> bool) -> usize {
        let mut n = 0;
        for slot in self.grants.iter_mut() {
            if slot.as_ref().is_some_and(&mut pred) {
                if let Some(g) = slot.take() {
                    g.file.remove(key);
                }
                n += 1;
            }
        }
        self.live -= n;
        if n > 0 {
            // Under the shard's lock, after the grants are gone: a check
            // that saw them read the count before this.
            self.owner.withdrawals.fetch_add(1, Ordering::AcqRel);
            // Pages already mapped from this process go too (each later
            // touch of a map sees the count above).
            crate::map::withdrawn(key);
        }
        n
    }

    /// Adds a grant on `file` to `peer`; returns the slots it added (0 or 1).
    fn add(
        &mut self,
        key: usize,
        file: &Arc<FileGrants>,
        peer: Option<PidRef>,
        by_pidfd: bool,
        generations: u32,
    ) -> Result<usize> {
        let peer_ptr = peer.as_ref().map(|p| p.as_ptr());
        if let Some(g) = self.grants.iter_mut().flatten().find(|g| {
            Arc::ptr_eq(&g.file, file)
                && g.peer.as_ref().map(|p| p.as_ptr()) == peer_ptr
                && g.generations == generations
        }) {
            // The same grant again; naming the peer by pidfd now makes it
            // the stronger kind.
            g.by_pidfd |= by_pidfd;
            return Ok(0);
        }
        if self.live >= MAX_GRANTS_PER_PROCESS {
            return Err(ENOSPC);
        }
        let free = self.grants.iter().position(|s| s.is_none());
        if free.is_none() {
            // Room first, so that nothing below fails after the file's note.
            self.grants.reserve(1, GFP)?;
        }
        file.insert(key)?;
        let grant = Some(Grant {
            file: file.clone(),
            peer,
            by_pidfd,
            generations,
        });
        let added = match free {
            Some(i) => {
                self.grants[i] = grant;
                0
            }
            None => {
                // Cannot fail: the room is reserved. A new slot stays for
                // as long as the entry lives.
                self.grants.push(grant, GFP)?;
                1
            }
        };
        self.live += 1;
        Ok(added)
    }
}

/// The address space `task` runs in now, for identity only (null once it has
/// exited). `allocated` is any `mm_struct` kept allocated (the glue reads its
/// dumpability alongside, which is of no use here).
fn mm_id(task: &Task, allocated: *mut bindings::mm_struct) -> *mut bindings::mm_struct {
    // No reference is taken: dropping one here, under a shard's lock, could
    // be the last user of an mm whose teardown takes a shard's lock.
    access_inputs(task, allocated).3
}

type Shard = RBTree<usize, Entry>;

/// Every live grant. Held in an `Arc` by the module's device registration,
/// each open `/dev/cma` and each peer fd.
pub(crate) struct Registry {
    shards: KVec<Pin<KBox<Mutex<Shard>>>>,
    /// Slots in use: an entry per address space, one per grant slot.
    slots: AtomicUsize,
}

impl Registry {
    /// An empty registry.
    pub(crate) fn new() -> Result<Arc<Registry>> {
        let mut shards = KVec::with_capacity(SHARDS, GFP_KERNEL)?;
        for _ in 0..SHARDS {
            shards.push(
                KBox::pin_init(
                    kernel::new_mutex!(RBTree::new(), "cma_consent_shard"),
                    GFP_KERNEL,
                )?,
                GFP_KERNEL,
            )?;
        }
        Ok(Arc::new(
            Registry {
                shards,
                slots: AtomicUsize::new(0),
            },
            GFP_KERNEL,
        )?)
    }

    /// Called by the exit watch of `mm` when it is torn down (in
    /// `exit_mmap`, in whatever task dropped the last user): the entry for
    /// `mm` goes.
    pub(crate) fn forget_mm(&self, mm: *mut bindings::mm_struct) {
        let key = mm as usize;
        let mut shard = self.shard(key).lock();
        // The entry under this key, if any, watches `mm` itself: its watch
        // keeps `mm` allocated, so no other mm can have had this address.
        if let Some(mut e) = shard.remove(&key) {
            e.forget_all(key);
            self.sub_slots(1 + e.grants.len());
            stats::inc(Stat::GrantsReapedAtExit);
            // Dropping `e` puts its watch, which a release callback may do.
        }
    }
}

impl Drop for Registry {
    /// The last holder went: the module is unloading (every file, each of
    /// which holds the registry, is closed). Every entry goes, dropping its
    /// watch, and no watch's release callback runs any more when this
    /// returns (the exit watches reach the registry by address).
    fn drop(&mut self) {
        for shard in self.shards.iter() {
            let entries = core::mem::take(&mut *shard.lock());
            drop(entries);
        }
        // A release callback that started before its watch was dropped may
        // still be looking at the registry: wait for it.
        MmWatch::synchronize();
    }
}

/// Who may copy: the `policy` module parameter (`require_consent` is the
/// older switch between the first two).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// The credential rule, and consent unless the caller has
    /// `CAP_SYS_PTRACE` over the target.
    Consent,
    /// The credential rule alone.
    Credentials,
    /// No copies between processes.
    Off,
}

/// The policy in force.
pub(crate) fn policy() -> Policy {
    match crate::params::policy() {
        0 => Policy::Consent,
        1 => Policy::Credentials,
        _ => Policy::Off,
    }
}

impl Registry {
    /// The shard of the entry for the mm at `key`.
    fn shard(&self, key: usize) -> &Mutex<Shard> {
        // mm_structs come from one slab, a fixed stride apart: a
        // multiplicative hash spreads them whatever the stride.
        let h = (key as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - SHARD_BITS);
        &self.shards[h as usize % SHARDS]
    }

    /// Counts `n` more slots in use, for the `grants` parameter.
    fn add_slots(&self, n: usize) {
        if n > 0 {
            crate::params::set_grants(self.slots.fetch_add(n, Ordering::Relaxed) + n);
        }
    }

    /// Counts `n` fewer slots in use.
    fn sub_slots(&self, n: usize) {
        if n > 0 {
            crate::params::set_grants(self.slots.fetch_sub(n, Ordering::Relaxed) - n);
        }
    }

    /// The entry of the calling process `me` for its mm `key`, made with
    /// `watch` (a watch on that mm) if there is none, or taken over from a
    /// holder that is gone or holds nothing. `EBUSY` if another process of
    /// the mm holds it with grants.
    fn claim<'a>(
        &self,
        shard: &'a mut Shard,
        key: usize,
        me: &TaskRef,
        watch: MmWatch,
    ) -> Result<&'a mut Entry> {
        let (tgid, exec_id) = (me.tgid_ptr(), me.exec_id());
        let taken = match shard.get(&key) {
            None => false,
            Some(e) if e.is(tgid, exec_id) => true,
            Some(e) if e.live > 0 && e.held() => return Err(EBUSY),
            Some(_) => {
                // The holder exited or exec()ed (a vfork child, say), or
                // holds no grant: its entry goes, with what it held.
                if let Some(mut old) = shard.remove(&key) {
                    old.forget_all(key);
                    self.sub_slots(1 + old.grants.len());
                }
                false
            }
        };
        if !taken {
            let owner = Arc::new(
                Owner {
                    withdrawals: AtomicU64::new(0),
                },
                GFP,
            )?;
            let entry = Entry {
                pid: me.group_pid()?,
                exec_id,
                watch,
                owner,
                grants: KVec::new(),
                live: 0,
            };
            shard.try_create_and_insert(key, entry, GFP)?;
            self.add_slots(1);
        }
        shard.get_mut(&key).ok_or(EINVAL)
    }
}

/// `CMA_IOC_GRANT`: records the caller's consent in `reg`, made on the file
/// whose record is `file`.
pub(crate) fn grant(reg: &Registry, file: &Arc<FileGrants>, arg: IoctlArg) -> Result<isize> {
    let req: uapi::cma_grant = arg.read()?;
    if req.flags & !uapi::CMA_GRANT_FLAGS_ALL != 0 {
        return Err(EINVAL);
    }
    // The peer, looked up now and held from here on; a thread names its
    // process.
    let by_pidfd = req.flags & uapi::CMA_GRANT_PIDFD != 0;
    // Generations of descendants admitted (0: the peer itself), in the
    // otherwise reserved first word.
    let generations = match (req.flags & uapi::CMA_GRANT_DESCENDANTS != 0, req.reserved) {
        (false, [0, 0, 0]) => 0,
        (true, [g, 0, 0]) if by_pidfd && g <= u64::from(uapi::CMA_GRANT_MAX_GENERATIONS) => {
            // Lossless: at most CMA_GRANT_MAX_GENERATIONS (16).
            g.max(1) as u32
        }
        _ => return Err(EINVAL),
    };
    let peer = if by_pidfd {
        Some(pidfd_pid(req.pid)?.task()?.group_pid()?)
    } else {
        match req.pid {
            0 => None,
            pid if pid < 0 => return Err(EINVAL),
            pid => Some(find_pid(pid)?.task()?.group_pid()?),
        }
    };
    let me = current_task();
    // Before any registry lock: it takes the mm's mmap_lock, killably. The
    // first watch on an mm also gives up with EINTR when a signal is
    // pending (it takes all of the mm's locks, `mm_take_all_locks`); the
    // grant is then restarted after the signal is handled, never failed
    // with EINTR.
    let watch = MmWatch::current(reg).map_err(|e| if e == EINTR { ERESTARTNOINTR } else { e })?;
    let key = watch.mm() as usize;
    let mut shard = reg.shard(key).lock();
    let entry = reg.claim(&mut shard, key, &me, watch)?;
    let added = entry.add(key, file, peer, by_pidfd, generations)?;
    reg.add_slots(added);
    Ok(0)
}

/// `CMA_IOC_REVOKE`: forgets every grant of the calling process in `reg`.
pub(crate) fn revoke(reg: &Registry) -> Result<isize> {
    let me = current_task();
    // Its grants that still count are in the entry of its mm; those of an
    // image it left by exec() count for nothing already.
    let Some(mm) = current_mm() else {
        return Ok(0);
    };
    let key = mm.as_raw() as usize;
    {
        let mut shard = reg.shard(key).lock();
        if let Some(e) = shard.get_mut(&key) {
            if e.is(me.tgid_ptr(), me.exec_id()) {
                e.forget_all(key);
            }
        }
    }
    // Not under the lock: a put of a user of the mm (never the last, since
    // the caller runs in it, but its teardown would take a shard's lock).
    drop(mm);
    Ok(0)
}

/// Forgets the grants in `reg` made on the file whose record is `file`,
/// which is being released.
pub(crate) fn release(reg: &Registry, file: &Arc<FileGrants>) {
    // No grant can be made on a file being released, so every pass drops
    // one note for good: this visits the entries holding grants made on
    // the file, and no other.
    while let Some(key) = file.any() {
        let mut shard = reg.shard(key).lock();
        if let Some(e) = shard.get_mut(&key) {
            e.forget_file(key, file);
        }
        file.remove(key);
    }
}

/// The consent an access decision rested on: a process's grants, and its
/// count of withdrawals when they were seen.
pub(crate) struct Token {
    owner: Arc<Owner>,
    withdrawals: u64,
    /// Whether a grant naming the caller by pidfd is among them.
    pub(crate) named: bool,
}

/// What a peer fd remembers of a [`Token`]: the same owner, and a count it
/// may move forward after a check that passed.
pub(crate) struct Seen {
    owner: Arc<Owner>,
    withdrawals: AtomicU64,
}

impl Seen {
    pub(crate) fn new(t: Token) -> Seen {
        Seen {
            owner: t.owner,
            withdrawals: AtomicU64::new(t.withdrawals),
        }
    }

    /// Whether the owner has withdrawn nothing since.
    pub(crate) fn holds(&self) -> bool {
        self.owner.withdrawals.load(Ordering::Acquire) == self.withdrawals.load(Ordering::Acquire)
    }

    /// After a check that passed on `t`: if it rests on the same owner's
    /// grants, later copies may rely on `t`'s count.
    pub(crate) fn refresh(&self, t: &Token) {
        if Arc::ptr_eq(&self.owner, &t.owner) {
            self.withdrawals.store(t.withdrawals, Ordering::Release);
        }
    }
}

/// Whether `target` has consented in `reg` to copies by `caller`: the grants the
/// decision rests on, or `None`. The caller must hold the target's
/// `exec_update_lock`, so that its exec generation and mm are stable.
pub(crate) fn given(reg: &Registry, target: &TaskRef, caller: &TaskRef) -> Option<Token> {
    stats::inc(Stat::RegistryLookups);
    // The caller holds a user of this mm too, so the put at the end is
    // never the last; it comes after the shard's lock all the same.
    let mm = mm_of_task(target).ok()?;
    let key = mm.as_raw() as usize;
    let (tgid, exec_id) = (target.tgid_ptr(), target.exec_id());
    let shard = reg.shard(key).lock();
    let token = shard
        .get(&key)
        .filter(|e| e.is(tgid, exec_id))
        .and_then(|e| {
            // Whether a grant admits the caller, and whether one names it by
            // pidfd (the stronger kind wins: the search stops at the first).
            let mut admits = None;
            for named in e.grants.iter().flatten().filter_map(|g| g.admits(caller)) {
                admits = Some(named);
                if named {
                    break;
                }
            }
            admits.map(|named| Token {
                owner: e.owner.clone(),
                withdrawals: e.owner.withdrawals.load(Ordering::Acquire),
                named,
            })
        });
    drop(shard);
    drop(mm);
    token
}
