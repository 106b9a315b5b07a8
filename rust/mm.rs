// SPDX-License-Identifier: GPL-2.0

//! Address spaces: a reference to the target's `mm` (or to its `mm_struct`
//! only, for a peer fd), what the access check asks of one (ptrace's
//! dumpability, the caller's protection keys), and the charge of pinned
//! pages to a user's locked memory. Pinning pages is [`crate::pin`]'s;
//! watching an address space for changes, [`crate::watch`]'s.

use crate::compat::aref::ARef;
use crate::glue::*;
use kernel::bindings;
use kernel::prelude::*;
use kernel::task::Task;

pub(crate) use crate::compat::mm::{Mm, MmWithUser};

/// A reference that keeps an address space alive (`mm_users`).
pub(crate) type MmRef = ARef<MmWithUser>;

/// A reference that keeps an `mm_struct` allocated (`mm_count`) but not the
/// address space it describes: when the last user goes (the process exits
/// or execs), its mappings and pages are freed as usual. This is what a
/// long-lived handle on a target holds, as `/proc/pid/mem` does.
pub(crate) type MmGrab = ARef<Mm>;

/// The address space of `task`; `ESRCH` if it has none (a kernel thread,
/// or a process that is exiting or a zombie).
pub(crate) fn mm_of_task(task: &Task) -> Result<MmRef> {
    // SAFETY: `task` is live (borrowed); `get_task_mm` returns its mm with
    // a new `mm_users` reference, or NULL.
    let mm = unsafe { bindings::get_task_mm(crate::task::TaskExt::as_ptr(task)) };
    // SAFETY: `MmWithUser` wraps `mm_struct` transparently; a non-NULL mm
    // carries the `mm_users` increment the `ARef` takes over.
    unsafe { crate::compat::take(mm) }.ok_or(ESRCH)
}

/// ptrace's last test: `task`, whose address space is `mm`, is dumpable by
/// its owner's peers (`SUID_DUMP_USER`), or the caller has `CAP_SYS_PTRACE`
/// in the user namespace `task` exec'd in.
pub(crate) fn still_dumpable(task: &Task, mm: &Mm) -> bool {
    // SAFETY: `task` is live and `mm` allocated (both borrowed); the glue
    // reads flags and makes the capability check.
    unsafe { cma_glue_still_dumpable(crate::task::TaskExt::as_ptr(task), mm.as_raw()) }
}

/// The caller's own address space; `None` for a task without one.
pub(crate) fn current_mm() -> Option<MmRef> {
    // SAFETY: reads `current->mm`, which stays valid while the task runs
    // (it holds a `mm_users` reference of its own).
    let mm = unsafe { cma_glue_current_mm() };
    if mm.is_null() {
        return None;
    }
    // SAFETY: as above, `mm_count` is above zero while we run.
    unsafe { Mm::from_raw(mm) }.mmget_not_zero()
}

/// The caller's own `mm_struct`; `EINVAL` for a task without one (a kernel
/// thread that opens the device).
pub(crate) fn grab_current_mm() -> Result<MmGrab> {
    // SAFETY: reads `current->mm`; no preconditions.
    let mm = unsafe { cma_glue_current_mm() };
    if mm.is_null() {
        return Err(EINVAL);
    }
    // SAFETY: `current->mm` is non-NULL and stays allocated while the task
    // runs (it holds a `mm_users` reference, hence `mm_count`, of its own);
    // `ARef::from` takes a reference of its own.
    Ok(ARef::from(unsafe { Mm::from_raw(mm) }))
}

/// What cma asks of any `mm_struct` it holds, beside what upstream's `Mm`
/// gives.
pub(crate) trait MmExt {
    /// Whether this is the caller's own address space.
    fn is_current(&self) -> bool;
}

impl MmExt for Mm {
    fn is_current(&self) -> bool {
        // SAFETY: reads `current->mm`; no preconditions.
        self.as_raw() == unsafe { cma_glue_current_mm() }
    }
}

/// The protection keys of the caller's own mappings over `len` bytes from
/// `start`, as a mask (bit `k`: key `k`); every key if interrupted.
pub(crate) fn own_range_pkeys(start: usize, len: usize) -> u32 {
    // SAFETY: walks the caller's own mappings under its mmap_lock, taken
    // killably in the glue; any range is acceptable.
    unsafe { cma_glue_own_range_pkeys(start, len) }
}

/// Whether the caller's protection key rights, as they are now, let it read
/// (or write, if `write`) memory of every key in `keys`.
pub(crate) fn own_pkeys_allow(keys: u32, write: bool) -> bool {
    // SAFETY: reads the current CPU's PKRU register, the caller's own.
    unsafe { cma_glue_own_pkeys_allow(keys, write) }
}

/// Pages charged to the calling user's locked memory (`user_struct`'s
/// `locked_vm`, shared by all of the user's processes and outliving each,
/// as io_uring charges its registered buffers), within the caller's
/// `RLIMIT_MEMLOCK` unless it has `CAP_IPC_LOCK`; given back on drop, to the
/// same user, whoever drops it. Charging a user rather than a process is
/// what keeps a limit: pages a process pinned through a file it shares may
/// outlive it, and a charge to it would go with it.
///
/// # Invariants
///
/// `user` is NULL (nothing charged) or a user on which this value holds a
/// reference and to whose `locked_vm` it added `pages`.
pub(crate) struct LockedCharge {
    user: *mut bindings::user_struct,
    pages: usize,
}

// SAFETY: a user reference and its counter may be given back from any
// thread; the value is not used otherwise.
unsafe impl Send for LockedCharge {}
// SAFETY: shared access reads nothing.
unsafe impl Sync for LockedCharge {}

impl LockedCharge {
    /// Charges `pages` to the caller's user: `ENOMEM` past its limit.
    pub(crate) fn new(pages: usize) -> Result<LockedCharge> {
        // SAFETY: charges the current user; no preconditions.
        let user = kernel::error::from_err_ptr(unsafe { cma_glue_charge_locked(pages) })?;
        // INVARIANT: a non-error result is NULL or charged and referenced.
        Ok(LockedCharge { user, pages })
    }
}

impl Drop for LockedCharge {
    fn drop(&mut self) {
        if !self.user.is_null() {
            // SAFETY: by the type invariant we hold the reference and the
            // charge, both given back once, here.
            unsafe { cma_glue_uncharge_locked(self.user, self.pages) };
        }
    }
}
