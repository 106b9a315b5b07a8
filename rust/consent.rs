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
//! process image it was made in (its exec generation), and to the file it was
//! made on: it stops counting when the process exits or execs, and is
//! forgotten when it is revoked or that file is released. A grant naming a
//! thread names its whole process, so that a copy by pid and a copy through a
//! peer fd, which any thread of the attaching process may use, agree.
//!
//! # The registry
//!
//! Unprivileged users grow it, so it is bounded and keyed:
//!
//! - Grants are kept per granting process ([`Entry`]), in one of [`BUCKETS`]
//!   red-black trees keyed by the process's pid, each under its own mutex: an
//!   access check looks up one process in one bucket, and checks of
//!   different targets do not contend.
//! - Every entry and every grant is charged to the granting user (its real
//!   uid): at most [`MAX_PER_USER`] per user and [`MAX_TOTAL`] in all, at
//!   most [`MAX_GRANTS_PER_PROCESS`] grants per process; past that, `ENOSPC`.
//!   Allocations are charged to the granting task's memory cgroup.
//! - A process's entry is removed when its address space is torn down: it
//!   exited, or exec()ed a new image. Each entry holds a watch on the mm it
//!   was made in ([`MmWatch`], an `mmu_notifier` whose release runs in
//!   `exit_mmap`), so grants made on a shared file by short-lived processes
//!   go with them, not when the file is released. The one case the watch
//!   misses, a process sharing another's mm (`vfork`, `CLONE_VM` without
//!   `CLONE_THREAD`) that grants before the mm's first watcher exits, is
//!   caught by staleness: entries of processes that exited or exec()ed are
//!   also reaped when their bucket is next written, and all of them before
//!   `ENOSPC` is returned.
//! - Withdrawals are counted per granting process ([`Owner`]): a peer fd
//!   whose access rested on a process's grants rechecks only when that
//!   process withdrew one, not when anyone anywhere did.

use crate::mm::MmWatch;
use crate::stats::{self, Stat};
use crate::task::{current_ids, current_task, find_pid, PidExt, PidRef, TaskExt, TaskRef};
use crate::uapi;
use crate::user::IoctlArg;
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use kernel::prelude::*;
use kernel::rbtree::RBTree;
use kernel::sync::{Arc, Mutex};

/// The most grants one process may hold at once.
const MAX_GRANTS_PER_PROCESS: usize = 1024;
/// The most registry slots (an entry per granting process, one per grant)
/// charged to one user.
const MAX_PER_USER: usize = 16384;
/// The most registry slots in all.
const MAX_TOTAL: usize = 262_144;
/// Buckets of the registry (a power of two).
const BUCKETS: usize = 64;

/// Allocation flags: charged to the granting task's memory cgroup.
const GFP: kernel::alloc::Flags = GFP_KERNEL_ACCOUNT;

/// A granting process as peer fds see it: its count of withdrawals.
pub(crate) struct Owner {
    withdrawals: AtomicU64,
}

/// One grant of a process.
struct Grant {
    /// The file it was made on (identity only, never dereferenced).
    file: usize,
    /// The process allowed (its thread-group pid), or `None` for any.
    peer: Option<PidRef>,
}

/// The grants of one process.
struct Entry {
    /// The granting process (thread-group pid); the tree's key is its address.
    pid: PidRef,
    /// Its exec generation when the entry was made.
    exec_id: u64,
    /// The user charged for the entry and its grants.
    uid: u32,
    /// The mm the entry was made in: its teardown removes the entry.
    watch: MmWatch,
    /// Shared with the peer fds that rely on these grants.
    owner: Arc<Owner>,
    /// The grants; `None` slots are free (KVec has no removal here).
    grants: KVec<Option<Grant>>,
    /// How many slots are `Some`.
    live: usize,
}

impl Entry {
    /// Whether the process exited or exec()ed since the entry was made.
    fn stale(&self) -> bool {
        self.pid
            .task()
            .map_or(true, |t| t.exec_id() != self.exec_id)
    }

    /// Forgets the grants `pred` picks; returns how many.
    fn forget(&mut self, mut pred: impl FnMut(&Grant) -> bool) -> usize {
        let mut n = 0;
        for slot in self.grants.iter_mut() {
            if slot.as_ref().is_some_and(&mut pred) {
                *slot = None;
                n += 1;
            }
        }
        self.live -= n;
        if n > 0 {
            // Under the bucket's lock, after the grants are gone: a check
            // that saw them read the count before this.
            self.owner.withdrawals.fetch_add(1, Ordering::AcqRel);
        }
        n
    }
}

type Bucket = RBTree<usize, Entry>;

/// `(uid, slots)` for every user with slots; few users, so a list.
type Users = KVec<(u32, usize)>;

/// Every live grant, and what each user is charged.
pub(crate) struct Registry {
    buckets: KVec<Pin<KBox<Mutex<Bucket>>>>,
    users: Pin<KBox<Mutex<Users>>>,
    /// Slots in all.
    total: AtomicUsize,
}

/// The registry of the loaded module (see [`install`]).
static REGISTRY: AtomicPtr<Registry> = AtomicPtr::new(core::ptr::null_mut());

/// Creates the registry. The module owns it and must keep it alive until
/// [`uninstall`], after the device is gone.
pub(crate) fn new_registry() -> Result<KBox<Registry>> {
    let mut buckets = KVec::with_capacity(BUCKETS, GFP_KERNEL)?;
    for _ in 0..BUCKETS {
        buckets.push(
            KBox::pin_init(
                kernel::new_mutex!(RBTree::new(), "cma_consent_bucket"),
                GFP_KERNEL,
            )?,
            GFP_KERNEL,
        )?;
    }
    Ok(KBox::new(
        Registry {
            buckets,
            users: KBox::pin_init(
                kernel::new_mutex!(KVec::new(), "cma_consent_users"),
                GFP_KERNEL,
            )?,
            total: AtomicUsize::new(0),
        },
        GFP_KERNEL,
    )?)
}

/// Publishes `registry` for the ioctl and release paths.
pub(crate) fn install(registry: &KBox<Registry>) {
    let ptr: *const Registry = &**registry;
    REGISTRY.store(ptr as *mut _, Ordering::Release);
}

/// Withdraws the registry; called once the device is deregistered and no
/// file of the module is open. Every entry goes (dropping its watch), and no
/// watch's release callback runs any more when this returns.
#[allow(unsafe_code)] // The registry's global pointer (see `registry`).
pub(crate) fn uninstall() {
    let ptr = REGISTRY.load(Ordering::Acquire);
    if ptr.is_null() {
        return;
    }
    // SAFETY: installed and not yet withdrawn: the module owns it and frees
    // it only after this returns.
    let reg = unsafe { &*ptr };
    for bucket in reg.buckets.iter() {
        let entries = core::mem::take(&mut *bucket.lock());
        drop(entries);
    }
    // A release callback that started before its watch was dropped may
    // still be looking at the registry: wait for it.
    MmWatch::synchronize();
    REGISTRY.store(core::ptr::null_mut(), Ordering::Release);
}

/// Called by the glue's exit watch when `mm` is torn down (in `exit_mmap`,
/// in whatever task dropped the last user). `owner` is the thread-group pid
/// of the process that first watched `mm`, for identity only: its entry goes
/// if it was made in `mm`.
#[no_mangle]
#[allow(unsafe_code)] // A C callback: the registry's global pointer.
pub(crate) extern "C" fn cma_rs_mm_released(
    mm: *mut kernel::bindings::mm_struct,
    owner: *mut kernel::bindings::pid,
) {
    const _: crate::glue::cma_rs_mm_released_fn = Some(cma_rs_mm_released);
    let ptr = REGISTRY.load(Ordering::Acquire);
    if ptr.is_null() {
        return;
    }
    // SAFETY: the registry is withdrawn only after every watch is dropped
    // and `MmWatch::synchronize` waited for running callbacks such as this.
    let reg = unsafe { &*ptr };
    let key = owner as usize;
    let mut bucket = reg.bucket(owner).lock();
    // The entry's own pid reference keeps its key unique, and the watch's
    // reference keeps `mm` from being reused: equal mm, same entry.
    if !bucket.get(&key).is_some_and(|e| e.watch.mm() == mm) {
        return;
    }
    if let Some(mut e) = bucket.remove(&key) {
        e.forget(|_| true);
        reg.uncharge(e.uid, 1 + e.grants.len());
        stats::inc(Stat::GrantsReapedAtExit);
        // Dropping `e` puts its watch, which a release callback may do.
    }
}

#[allow(unsafe_code)] // The one place the global pointer is read for a request.
fn registry() -> &'static Registry {
    let ptr = REGISTRY.load(Ordering::Acquire);
    // SAFETY: the registry is installed before `/dev/cma` is registered and
    // withdrawn after it is deregistered. Every caller runs inside a file
    // operation of `/dev/cma` or of a peer fd, and an open file holds a
    // reference on the module (`fops.owner`), so the module, which owns the
    // boxed registry, outlives the call.
    unsafe { &*ptr }
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

/// Registry slots in use, for the `grants` parameter (a test's window).
fn publish_total(total: usize) {
    crate::params::set_grants(total);
}

impl Registry {
    fn bucket(&self, pid: *mut kernel::bindings::pid) -> &Mutex<Bucket> {
        // struct pid is at least 64 bytes: drop the bits alignment fixes.
        &self.buckets[(pid as usize >> 6) % BUCKETS]
    }

    /// Charges `n` slots to `uid`: `ENOSPC` past the user's or the total
    /// bound.
    fn charge(&self, uid: u32, n: usize) -> Result {
        let mut users = self.users.lock();
        let i = match users.iter().position(|(u, _)| *u == uid) {
            Some(i) => i,
            None => match users.iter().position(|(_, c)| *c == 0) {
                Some(i) => {
                    users[i] = (uid, 0);
                    i
                }
                None => {
                    users.push((uid, 0), GFP)?;
                    users.len() - 1
                }
            },
        };
        if users[i].1 + n > MAX_PER_USER || self.total.load(Ordering::Relaxed) + n > MAX_TOTAL {
            return Err(ENOSPC);
        }
        users[i].1 += n;
        publish_total(self.total.fetch_add(n, Ordering::Relaxed) + n);
        Ok(())
    }

    /// Returns `n` slots charged to `uid`.
    fn uncharge(&self, uid: u32, n: usize) {
        if n == 0 {
            return;
        }
        let mut users = self.users.lock();
        if let Some(u) = users.iter_mut().find(|(u, _)| *u == uid) {
            u.1 -= n;
        }
        publish_total(self.total.fetch_sub(n, Ordering::Relaxed) - n);
    }

    /// Charges `n` slots, reaping every stale entry first if the bounds are
    /// reached. Must not be called with a bucket lock held.
    fn charge_or_reap(&self, uid: u32, n: usize) -> Result {
        if self.charge(uid, n).is_ok() {
            return Ok(());
        }
        for bucket in self.buckets.iter() {
            self.reap(&mut bucket.lock());
        }
        self.charge(uid, n)
    }

    /// Removes the entries of processes that exited or exec()ed.
    fn reap(&self, bucket: &mut Bucket) {
        // Each staleness test looks a task up: one pass collects a batch of
        // stale keys, rather than one rescan from the start per removal.
        let mut stale = [0usize; 16];
        loop {
            let mut n = 0;
            for (key, _) in bucket.iter().filter(|(_, e)| e.stale()) {
                stale[n] = *key;
                n += 1;
                if n == stale.len() {
                    break;
                }
            }
            for key in &stale[..n] {
                if let Some(mut e) = bucket.remove(key) {
                    e.forget(|_| true);
                    self.uncharge(e.uid, 1 + e.grants.len());
                }
            }
            if n < stale.len() {
                return;
            }
        }
    }
}

/// `CMA_IOC_GRANT`: records the caller's consent, made on `file`.
pub(crate) fn grant(file: usize, arg: IoctlArg) -> Result<isize> {
    let req: uapi::cma_grant = arg.read()?;
    if req.flags & !uapi::CMA_GRANT_FLAGS_ALL != 0 || req.reserved != [0; 3] || req.pid < 0 {
        return Err(EINVAL);
    }
    // A thread names its process.
    let peer = match req.pid {
        0 => None,
        pid => Some(find_pid(pid)?.task()?.tgid()?),
    };
    let me = current_task();
    let owner_pid = me.tgid()?;
    let exec_id = me.exec_id();
    let uid = current_ids().uid;
    // Before any registry lock: it takes the mm's mmap_lock. The first
    // watch on an mm gives up with EINTR when a signal is pending (it takes
    // all of the mm's locks, `mm_take_all_locks`); the grant is then
    // restarted after the signal is handled, never failed with EINTR.
    let watch = MmWatch::current().map_err(|e| if e == EINTR { ERESTARTNOINTR } else { e })?;
    let reg = registry();
    // At most a new entry and a slot for the grant; the unused part is
    // returned below. Charged before the bucket is locked, since making
    // room may take every bucket's lock.
    reg.charge_or_reap(uid, 2)?;
    let mut bucket = reg.bucket(owner_pid.as_raw()).lock();
    let granting = Granting {
        pid: owner_pid,
        exec_id,
        uid,
        watch,
    };
    let (result, used) = add(reg, &mut bucket, granting, file, peer);
    drop(bucket);
    reg.uncharge(uid, 2 - used);
    result.map(|()| 0)
}

/// The process making a grant, as its registry entry records it.
struct Granting {
    pid: PidRef,
    exec_id: u64,
    uid: u32,
    watch: MmWatch,
}

/// Adds a grant under the bucket lock. Returns the result and how many of
/// the two slots charged it used.
fn add(
    reg: &Registry,
    bucket: &mut Bucket,
    who: Granting,
    file: usize,
    peer: Option<PidRef>,
) -> (Result, usize) {
    let key = who.pid.as_raw() as usize;
    let mut used = 0;
    if bucket.get(&key).map_or(true, |e| e.exec_id != who.exec_id) {
        // A process new to the registry, or one that exec()ed since: make
        // room first (its old entry is stale too, and goes).
        reg.reap(bucket);
        let owner = match Arc::new(
            Owner {
                withdrawals: AtomicU64::new(0),
            },
            GFP,
        ) {
            Ok(o) => o,
            Err(e) => return (Err(e.into()), 0),
        };
        let entry = Entry {
            pid: who.pid,
            exec_id: who.exec_id,
            uid: who.uid,
            watch: who.watch,
            owner,
            grants: KVec::new(),
            live: 0,
        };
        if let Err(e) = bucket.try_create_and_insert(key, entry, GFP) {
            return (Err(e), 0);
        }
        used = 1;
    }
    let Some(entry) = bucket.get_mut(&key) else {
        return (Err(EINVAL), used);
    };
    let peer_ptr = peer.as_ref().map(|p| p.as_raw());
    if entry
        .grants
        .iter()
        .flatten()
        .any(|g| g.file == file && g.peer.as_ref().map(|p| p.as_raw()) == peer_ptr)
    {
        return (Ok(()), used);
    }
    if entry.live >= MAX_GRANTS_PER_PROCESS {
        return (Err(ENOSPC), used);
    }
    let grant = Grant { file, peer };
    match entry.grants.iter_mut().find(|s| s.is_none()) {
        Some(slot) => *slot = Some(grant),
        None => {
            // A new slot stays charged for as long as the entry lives.
            if let Err(e) = entry.grants.push(Some(grant), GFP) {
                return (Err(e.into()), used);
            }
            used += 1;
        }
    }
    entry.live += 1;
    (Ok(()), used)
}

/// `CMA_IOC_REVOKE`: forgets every grant of the calling process.
pub(crate) fn revoke() -> Result<isize> {
    let me = current_task().tgid()?;
    let key = me.as_raw() as usize;
    let mut bucket = registry().bucket(me.as_raw()).lock();
    if let Some(entry) = bucket.get_mut(&key) {
        entry.forget(|_| true);
    }
    Ok(0)
}

/// Forgets the grants made on `file`, which is being released.
pub(crate) fn release(file: usize) {
    for bucket in registry().buckets.iter() {
        let mut bucket = bucket.lock();
        for (_, entry) in bucket.iter_mut() {
            entry.forget(|g| g.file == file);
        }
    }
}

/// The consent an access decision rested on: a process's grants, and its
/// count of withdrawals when they were seen.
pub(crate) struct Token {
    owner: Arc<Owner>,
    withdrawals: u64,
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

/// Whether `target` has consented to copies by `caller`: the grants the
/// decision rests on, or `None`. The caller must hold the target's
/// `exec_update_lock`, so that its exec generation is stable.
pub(crate) fn given(target: &TaskRef, caller: &TaskRef) -> Option<Token> {
    let exec_id = target.exec_id();
    let tgid = target.tgid_ptr();
    stats::inc(Stat::RegistryLookups);
    let bucket = registry().bucket(tgid).lock();
    let entry = bucket.get(&(tgid as usize))?;
    let allowed = entry.exec_id == exec_id
        && entry
            .grants
            .iter()
            .flatten()
            .any(|g| g.peer.as_ref().map_or(true, |p| caller.in_group(p)));
    allowed.then(|| Token {
        owner: entry.owner.clone(),
        withdrawals: entry.owner.withdrawals.load(Ordering::Acquire),
    })
}
