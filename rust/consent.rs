// SPDX-License-Identifier: GPL-2.0

//! Consent: a target's explicit permission to be copied from and to.
//!
//! LSMs such as Yama cannot be consulted from a module, so cma has its own
//! answer: unless the caller has `CAP_SYS_PTRACE` over the target (or the
//! admin loaded the module with `require_consent=0`), the target must have
//! granted access with `CMA_IOC_GRANT` on its own `/dev/cma` file, to one peer
//! or to any peer that passes the credential rule.
//!
//! A grant belongs to the granting process (its thread-group pid) and to the
//! process image it was made in (its exec generation), and to the file it was
//! made on: it stops counting when the process exits or execs, and is
//! forgotten when it is revoked or that file is released.

use crate::glue::*;
use crate::task::{PidRef, TaskRef};
use crate::uapi;
use core::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use kernel::prelude::*;
use kernel::sync::Mutex;
use kernel::uaccess::{UserPtr, UserSlice};

/// The most grants one process may hold at once.
const MAX_GRANTS_PER_PROCESS: usize = 1024;

/// One grant.
struct Grant {
    /// The granting process (thread-group pid).
    owner: PidRef,
    /// The granting process's exec generation at grant time.
    exec_id: u64,
    /// The file the grant was made on (identity only, never dereferenced).
    file: usize,
    /// The peer allowed (a process or thread), or `None` for any peer.
    peer: Option<PidRef>,
}

impl Grant {
    fn same_as(&self, other: &Grant) -> bool {
        self.owner.as_ptr() == other.owner.as_ptr()
            && self.exec_id == other.exec_id
            && self.file == other.file
            && self.peer.as_ref().map(PidRef::as_ptr) == other.peer.as_ref().map(PidRef::as_ptr)
    }
}

/// Every live grant. Empty slots are reused, so removal needs no shifting.
pub(crate) struct Registry {
    grants: KVec<Option<Grant>>,
}

/// The registry of the loaded module (see [`install`]).
static REGISTRY: AtomicPtr<Mutex<Registry>> = AtomicPtr::new(core::ptr::null_mut());

/// Creates the registry. The module owns it and must keep it alive (and in
/// place) until [`uninstall`], after the device is gone.
pub(crate) fn new_registry() -> Result<Pin<KBox<Mutex<Registry>>>> {
    KBox::pin_init(
        kernel::new_mutex!(
            Registry {
                grants: KVec::new()
            },
            "cma_consent"
        ),
        GFP_KERNEL,
    )
}

/// Publishes `registry` for the ioctl and release paths.
pub(crate) fn install(registry: &Pin<KBox<Mutex<Registry>>>) {
    let ptr: *const Mutex<Registry> = &**registry;
    REGISTRY.store(ptr as *mut _, Ordering::Release);
}

/// Withdraws the registry; called once the device is deregistered.
pub(crate) fn uninstall() {
    REGISTRY.store(core::ptr::null_mut(), Ordering::Release);
}

fn registry() -> &'static Mutex<Registry> {
    let ptr = REGISTRY.load(Ordering::Acquire);
    // SAFETY: the registry is installed before `/dev/cma` is registered and
    // withdrawn after it is deregistered. Every caller runs inside a file
    // operation of `/dev/cma`, and an open file holds a reference on the
    // module (`fops.owner`), so the module, which owns the pinned registry,
    // outlives the call.
    unsafe { &*ptr }
}

/// Whether the module requires consent (the `require_consent` parameter).
pub(crate) fn required() -> bool {
    // SAFETY: reads a module parameter; no preconditions.
    unsafe { cma_glue_require_consent() }
}

/// `CMA_IOC_GRANT`: records the caller's consent, made on `file`.
pub(crate) fn grant(file: usize, arg: UserPtr) -> Result<isize> {
    let req: uapi::cma_grant = UserSlice::new(arg, core::mem::size_of::<uapi::cma_grant>())
        .reader()
        .read()?;
    if req.flags != 0 || req.reserved != [0; 3] || req.pid < 0 {
        return Err(EINVAL);
    }
    let peer = match req.pid {
        0 => None,
        pid => Some(PidRef::find(pid)?),
    };
    let me = TaskRef::current();
    let new = Grant {
        owner: PidRef::tgid_of(&me),
        exec_id: me.exec_id(),
        file,
        peer,
    };

    let mut reg = registry().lock();
    let mut mine = 0;
    let mut free = None;
    for (i, slot) in reg.grants.iter().enumerate() {
        match slot {
            Some(g) if g.same_as(&new) => return Ok(0),
            Some(g) if g.owner.as_ptr() == new.owner.as_ptr() => mine += 1,
            Some(_) => {}
            None => free = free.or(Some(i)),
        }
    }
    if mine >= MAX_GRANTS_PER_PROCESS {
        return Err(ENOSPC);
    }
    match free {
        Some(i) => reg.grants[i] = Some(new),
        None => reg.grants.push(Some(new), GFP_KERNEL)?,
    }
    Ok(0)
}

/// `CMA_IOC_REVOKE`: forgets every grant of the calling process.
pub(crate) fn revoke() -> Result<isize> {
    let me = PidRef::tgid_of(&TaskRef::current());
    forget(|g| g.owner.as_ptr() == me.as_ptr());
    Ok(0)
}

/// Forgets the grants made on `file`, which is being released.
pub(crate) fn release(file: usize) {
    forget(|g| g.file == file);
}

/// How many times grants have been withdrawn since the module was loaded.
/// A peer fd records it when it checks access, and checks again when it has
/// moved (see [`crate::peer`]).
static WITHDRAWALS: AtomicU64 = AtomicU64::new(0);

/// The current count of withdrawals. Read it before a check: a withdrawal
/// the check did not see then shows up as a different count afterwards.
pub(crate) fn withdrawals() -> u64 {
    WITHDRAWALS.load(Ordering::Acquire)
}

fn forget(mut pred: impl FnMut(&Grant) -> bool) {
    let mut reg = registry().lock();
    let mut forgot = false;
    for slot in reg.grants.iter_mut() {
        if slot.as_ref().is_some_and(&mut pred) {
            *slot = None;
            forgot = true;
        }
    }
    if forgot {
        // After the grants are gone: a peer fd read the count before its
        // check, which either saw the grant (and the count has moved since)
        // or did not (and refused).
        WITHDRAWALS.fetch_add(1, Ordering::AcqRel);
    }
}

/// Whether `target` has consented to copies by `caller`. The caller must
/// hold the target's `exec_update_lock`, so that its exec generation is stable.
pub(crate) fn given(target: &TaskRef, caller: &TaskRef) -> bool {
    let exec_id = target.exec_id();
    let reg = registry().lock();
    reg.grants.iter().flatten().any(|g| {
        target.in_group(&g.owner)
            && g.exec_id == exec_id
            && g.peer.as_ref().map_or(true, |p| caller.is_named_by(p))
    })
}
