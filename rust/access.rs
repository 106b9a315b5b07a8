// SPDX-License-Identifier: GPL-2.0

//! From a pid or pidfd to the target's address space, and who may copy
//! from or to whom: upstream's `mm_access()` in one file, never more
//! loosely than ptrace.
//!
//! `ptrace_may_access()` is not exported to modules, so this is its
//! `PTRACE_MODE_ATTACH_REALCREDS` rule rebuilt from exported pieces, plus
//! cma's consent rule in place of the LSM hook a module cannot call:
//!
//! 1. the caller's own thread group: allowed;
//! 2. otherwise the caller's real uid and gid must equal all of the target's
//!    uids and gids, or the caller has `CAP_SYS_PTRACE` in the target's user
//!    namespace;
//! 3. and the target must be dumpable, or the caller has `CAP_SYS_PTRACE` in
//!    the user namespace of the target's mm;
//! 4. and (the capability rule of `cap_ptrace_access_check()`, which every
//!    kernel applies) the caller must be in the target's user namespace with
//!    every capability the target may use (its permitted set a subset of the
//!    caller's), or have `CAP_SYS_PTRACE` in the target's user namespace;
//! 5. and, unless the caller has `CAP_SYS_PTRACE` over the target or the
//!    `policy` parameter is `credentials`, the target has consented
//!    (see [`crate::consent`]).
//!
//! Where rule 4 alone refuses (the target is in another user namespace, or
//! holds capabilities the caller lacks), cma admits one more case, with
//! `policy=consent`: the target's grant names the caller's process by pidfd,
//! and no capability of the target reaches the caller's namespace (its
//! permitted set is empty, or its user namespace is neither the caller's nor
//! an ancestor of it). Rules 2 and 3 still hold: the same kuids and kgids
//! (global ids, which no namespace mapping changes), a dumpable target. That
//! is ranks of one user in user namespaces of their own (rootless
//! containers, `unshare -U`), each naming its peers; the argument that it
//! gives a reader no more than the target could hand over itself (its
//! `/proc/self/mem` over `SCM_RIGHTS`) is in `docs/userns-consent.md`.
//!
//! With `policy=off`, only the caller's own thread group may be copied.
//!
//! The caller must hold the target's `exec_update_lock` across the check and
//! the lookup of `mm`, so that an exec (say, of a setuid program) cannot slip
//! in between, as `mm_access()` does.

use crate::consent::{self, Policy, Registry, Token};
use crate::mm::{mm_of_task, still_dumpable, MmRef};
use crate::task::{
    current_ids, current_task, find_pid, pidfd_pid, CredExt, PidExt, TaskCred, TaskExt, TaskRef,
};
use kernel::prelude::*;

/// How the caller names the target.
#[derive(Clone, Copy)]
pub(crate) enum TargetId {
    /// A pid (process or thread) in the caller's pid namespace.
    Pid(i32),
    /// A pidfd open in the caller.
    PidFd(i32),
}

impl TargetId {
    /// The target a request's `pid` field names: a pidfd if the request
    /// has `CMA_COPY_PIDFD`.
    pub(crate) fn new(pid: i32, pidfd: bool) -> TargetId {
        if pidfd {
            TargetId::PidFd(pid)
        } else {
            TargetId::Pid(pid)
        }
    }
}

/// Finds the target and checks access; returns its address space, alive for
/// the copy. `ESRCH` if there is no such process or it has no address space
/// (kernel thread, zombie), `EBADF` for a bad pidfd, `EPERM` if the caller
/// may not, `EINTR` on a fatal signal.
pub(crate) fn open(id: TargetId, reg: &Registry) -> Result<MmRef> {
    Ok(mm_access(&find(id)?, reg)?.0)
}

/// The task `id` names; `ESRCH` or `EBADF` as for [`open`].
pub(crate) fn find(id: TargetId) -> Result<TaskRef> {
    let pid = match id {
        TargetId::Pid(nr) => find_pid(nr)?,
        TargetId::PidFd(fd) => pidfd_pid(fd)?,
    };
    pid.task()
}

/// Takes `task`'s address space and checks that the caller may copy from and
/// to it (consent as `reg` records it). Returns it with what the decision
/// rested on.
pub(crate) fn mm_access(task: &TaskRef, reg: &Registry) -> Result<(MmRef, Decision)> {
    // Like mm_access(): hold off exec while the mm is taken and checked.
    let exec_lock = task.lock_exec()?;
    let mm = mm_of_task(task)?;
    let decision = check(task, &mm, reg)?;
    drop(exec_lock);
    Ok((mm, decision))
}

/// What an access decision rested on.
pub(crate) struct Decision {
    /// The target's credentials.
    pub(crate) cred: TaskCred,
    /// The target's grants, if the decision needed consent and got it.
    pub(crate) consent: Option<Token>,
}

/// Decides whether the caller may copy from and to `task`, whose address
/// space is `mm`. `EPERM` if not; if so, what the decision rested on.
fn check(task: &TaskRef, mm: &MmRef, reg: &Registry) -> Result<Decision> {
    let tcred = task.cred()?;
    if task.is_current_thread_group() {
        return Ok(Decision {
            cred: tcred,
            consent: None,
        });
    }
    let policy = consent::policy();
    if policy == Policy::Off {
        return Err(EPERM);
    }
    let (me, them) = (current_ids(), tcred.ids());
    let same_ids = me.uid == them.euid
        && me.uid == them.suid
        && me.uid == them.uid
        && me.gid == them.egid
        && me.gid == them.sgid
        && me.gid == them.gid;
    // CAP_SYS_PTRACE is asked for only when the answer matters, as
    // ptrace_may_access() does: a capability check is not free, and it marks
    // the caller as having used privilege.
    let privileged = || tcred.caller_may_ptrace();
    if !same_ids && !privileged() {
        return Err(EPERM);
    }
    if !still_dumpable(task, mm) {
        return Err(EPERM);
    }
    let covers_caps = me.user_ns == them.user_ns && them.permitted & !me.permitted == 0;
    // Rule 4 refuses; only a grant naming the caller by pidfd can admit it,
    // from a target none of whose capabilities reach the caller.
    let needs_named = !covers_caps && !privileged();
    if needs_named
        && (policy != Policy::Consent || them.permitted != 0 && tcred.ns_reaches_caller())
    {
        return Err(EPERM);
    }
    let consent = match policy != Policy::Consent {
        true => None,
        false => match consent::given(reg, task, &current_task()) {
            Some(token) if needs_named && !token.named => return Err(EPERM),
            Some(token) => Some(token),
            None if privileged() => None,
            None => return Err(EPERM),
        },
    };
    Ok(Decision {
        cred: tcred,
        consent,
    })
}
