// SPDX-License-Identifier: GPL-2.0

//! From a pid or pidfd to the target's address space, with the access check.

use crate::access;
use crate::mm::MmRef;
use crate::task::{PidRef, TaskRef};
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
    let pid = match id {
        TargetId::Pid(nr) => PidRef::find(nr)?,
        TargetId::PidFd(fd) => PidRef::from_pidfd(fd)?,
    };
    let task: TaskRef = pid.task()?;
    // Like mm_access(): hold off exec while the mm is taken and checked.
    let exec_lock = task.lock_exec()?;
    let mm = MmRef::of_task(&task)?;
    access::check(&task, &mm)?;
    drop(exec_lock);
    Ok(Target { mm })
}
