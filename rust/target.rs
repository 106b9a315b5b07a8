// SPDX-License-Identifier: GPL-2.0

//! From a pid or pidfd to the target's address space, with the access check.

use crate::access::{self, Decision};
use crate::mm::{mm_of_task, MmRef};
use crate::task::{find_pid, pidfd_pid, PidExt, TaskExt, TaskRef};
use kernel::prelude::*;

/// How the caller names the target.
#[derive(Clone, Copy)]
pub(crate) enum TargetId {
    /// A pid (process or thread) in the caller's pid namespace.
    Pid(i32),
    /// A pidfd open in the caller.
    PidFd(i32),
}

/// A target the caller may copy from and to.
pub(crate) struct Target {
    /// Keeps the target's address space alive for the copy.
    pub(crate) mm: MmRef,
}

/// Finds the target and checks access. `ESRCH` if there is no such process or
/// it has no address space (kernel thread, zombie), `EBADF` for a bad pidfd,
/// `EPERM` if the caller may not, `EINTR` on a fatal signal.
pub(crate) fn open(id: TargetId) -> Result<Target> {
    let (mm, _) = check(&find(id)?)?;
    Ok(Target { mm })
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
/// to it. Returns it with what the decision rested on.
pub(crate) fn check(task: &TaskRef) -> Result<(MmRef, Decision)> {
    // Like mm_access(): hold off exec while the mm is taken and checked.
    let exec_lock = task.lock_exec()?;
    let mm = mm_of_task(task)?;
    let decision = access::check(task, &mm)?;
    drop(exec_lock);
    Ok((mm, decision))
}
