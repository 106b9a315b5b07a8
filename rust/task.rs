// SPDX-License-Identifier: GPL-2.0

//! RAII wrappers for the task-side kernel objects a request holds: a `struct
//! pid` reference, a task reference, a task's credentials, and the target's
//! `exec_update_lock`. Each owns exactly one reference (or lock) and gives it
//! back on drop; the rest of the module never calls the C functions directly.

use crate::compat::aref::ARef;
use crate::compat::take;
use crate::glue::*;
use core::ffi::c_int;
use kernel::bindings;
use kernel::error::from_err_ptr;
use kernel::prelude::*;
use kernel::task::Task;

pub(crate) use crate::compat::cred::Credential;
pub(crate) use crate::pid::StructPid;

/// A counted reference to a `struct pid`.
pub(crate) type PidRef = ARef<StructPid>;

/// A counted reference to a task.
pub(crate) type TaskRef = ARef<Task>;

/// A counted reference to a task's credentials.
pub(crate) type TaskCred = ARef<Credential>;

/// The pid numbered `nr` in the caller's pid namespace; `ESRCH` if none.
pub(crate) fn find_pid(nr: i32) -> Result<PidRef> {
    if nr <= 0 {
        return Err(ESRCH);
    }
    // SAFETY: `find_get_pid` may be called from process context with any
    // number; it returns a new reference or NULL, which `take` takes over.
    unsafe { take(bindings::find_get_pid(nr)) }.ok_or(ESRCH)
}

/// The pid a pidfd refers to; `EBADF` if `fd` is not a pidfd.
pub(crate) fn pidfd_pid(fd: i32) -> Result<PidRef> {
    // SAFETY: the glue looks `fd` up in the caller's file table itself and
    // returns a new reference or an ERR_PTR; any integer is acceptable.
    let pid = from_err_ptr(unsafe { cma_glue_pidfd_get_pid(fd) })?;
    // SAFETY: a non-error result carries a reference, taken over here.
    unsafe { take(pid) }.ok_or(EBADF)
}

/// The calling task.
pub(crate) fn current_task() -> TaskRef {
    let current: &Task = kernel::current!();
    ARef::from(current)
}

/// What cma asks of a `struct pid`.
pub(crate) trait PidExt {
    /// The task this pid (a thread or a process) currently names; `ESRCH`
    /// if it has exited.
    fn task(&self) -> Result<TaskRef>;
}

impl PidExt for StructPid {
    fn task(&self) -> Result<TaskRef> {
        // SAFETY: the pid is live (borrowed); `get_pid_task` returns a new
        // task reference or NULL, which `take` takes over.
        unsafe {
            take(bindings::get_pid_task(
                self.as_ptr(),
                bindings::pid_type_PIDTYPE_PID,
            ))
        }
        .ok_or(ESRCH)
    }
}

/// What cma asks of a task, beside what the kernel crate's `Task` gives.
pub(crate) trait TaskExt {
    /// The raw pointer.
    fn as_ptr(&self) -> *mut bindings::task_struct;
    /// Whether this task belongs to the caller's thread group.
    fn is_current_thread_group(&self) -> bool;
    /// The exec generation of this task: it changes when the process execs.
    fn exec_id(&self) -> u64;
    /// The address of this task's thread-group pid, for identity only: NULL
    /// once the process has been reaped (`__unhash_process` detaches it),
    /// which equals no live pid.
    fn tgid_ptr(&self) -> *mut bindings::pid;
    /// This task's thread-group (process) pid; `ESRCH` once the process has
    /// been reaped (a task found by pid may be, before this is called).
    fn group_pid(&self) -> Result<PidRef>;
    /// Whether this task's thread group is the one `pid` names.
    fn in_group(&self, pid: &StructPid) -> bool;
    /// Whether this task descends from the process `pid` names (a
    /// thread-group pid), at most `generations` parent links up. Meant for
    /// the calling task: a reaped task's parent links are stale, and the
    /// walk then finds nothing.
    fn descends_from(&self, pid: &StructPid, generations: u32) -> bool;
    /// Takes the task's `exec_update_lock` for reading, so that it cannot
    /// exec (and change credentials or mm) while the guard lives. `EINTR`
    /// if a fatal signal arrives while waiting.
    fn lock_exec(&self) -> Result<ExecLockGuard<'_>>;
    /// The task's objective credentials. `ESRCH` if it has none, which a
    /// task we hold a reference to cannot be (see the body).
    fn cred(&self) -> Result<TaskCred>;
}

impl TaskExt for Task {
    fn as_ptr(&self) -> *mut bindings::task_struct {
        // `Task` is a transparent wrapper of `task_struct`.
        core::ptr::from_ref(self).cast_mut().cast()
    }

    fn is_current_thread_group(&self) -> bool {
        // SAFETY: the task is live (borrowed); `same_thread_group` only
        // compares its signal struct with current's.
        unsafe { cma_glue_same_thread_group(self.as_ptr()) }
    }

    fn exec_id(&self) -> u64 {
        // SAFETY: the task is live (borrowed); the read is atomic.
        unsafe { cma_glue_self_exec_id(self.as_ptr()) }
    }

    fn tgid_ptr(&self) -> *mut bindings::pid {
        // SAFETY: the task is live (borrowed), so is its tgid pid; the
        // pointer is only compared.
        unsafe { cma_glue_task_tgid(self.as_ptr()) }
    }

    fn group_pid(&self) -> Result<PidRef> {
        // SAFETY: the task is live (borrowed); the glue reads its thread-group
        // pid under RCU and returns it with a new reference, or NULL if the
        // process was reaped meanwhile (`__unhash_process` detaches it while
        // the task itself lives on); `take` takes the reference over.
        unsafe { take(cma_glue_get_task_tgid(self.as_ptr())) }.ok_or(ESRCH)
    }

    fn in_group(&self, pid: &StructPid) -> bool {
        pid.as_ptr() == self.tgid_ptr()
    }

    fn descends_from(&self, pid: &StructPid, generations: u32) -> bool {
        // SAFETY: the task is allocated (borrowed); the glue walks its
        // parent links under RCU only while each task is alive (pid_alive),
        // and only compares `pid`.
        unsafe { cma_glue_task_descends_from(self.as_ptr(), pid.as_ptr(), generations) }
    }

    fn lock_exec(&self) -> Result<ExecLockGuard<'_>> {
        // SAFETY: the task is live (borrowed), so is its signal struct.
        let ret = unsafe { cma_glue_exec_update_lock_killable(self.as_ptr()) };
        if ret != 0 {
            return Err(EINTR);
        }
        // INVARIANT: the lock is held for reading.
        Ok(ExecLockGuard { task: self })
    }

    fn cred(&self) -> Result<TaskCred> {
        // SAFETY: the task is live (borrowed); `get_task_cred` returns a new
        // reference to its credentials, taken over here. It never returns
        // NULL in 6.12: it retries until it gets a reference, and `BUG()`s
        // on a NULL `real_cred`, which only `exit_creds` sets, in
        // `__put_task_struct` after the last task reference is gone. Should
        // a later kernel return NULL, the request fails, not the kernel.
        unsafe { take(bindings::get_task_cred(self.as_ptr()).cast_mut()) }.ok_or(ESRCH)
    }
}

/// A read hold on a task's `exec_update_lock`.
///
/// # Invariants
///
/// `task`'s `signal->exec_update_lock` is held for reading by this guard.
pub(crate) struct ExecLockGuard<'a> {
    task: &'a Task,
}

impl Drop for ExecLockGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the lock is held for reading by us.
        unsafe { cma_glue_exec_update_unlock(self.task.as_ptr()) };
    }
}

/// What the ptrace credential and capability rules compare.
#[derive(Clone, Copy)]
pub(crate) struct Ids {
    pub(crate) uid: u32,
    pub(crate) euid: u32,
    pub(crate) suid: u32,
    pub(crate) gid: u32,
    pub(crate) egid: u32,
    pub(crate) sgid: u32,
    /// The permitted capability set.
    pub(crate) permitted: u64,
    /// The user namespace the ids and capabilities belong to (identity only).
    pub(crate) user_ns: *const bindings::user_namespace,
}

/// Reads the ids of `cred`.
///
/// # Safety
///
/// `cred` must point to live credentials.
unsafe fn ids_of(cred: *const bindings::cred) -> Ids {
    let (mut ids, mut permitted, mut user_ns) = ([0u32; 6], 0u64, core::ptr::null_mut());
    // SAFETY: the caller guarantees `cred` is live (credentials are immutable
    // once published); the outputs are live locals of the types the glue
    // writes.
    unsafe { cma_glue_cred_ids(cred, ids.as_mut_ptr(), &mut permitted, &mut user_ns) };
    let [uid, euid, suid, gid, egid, sgid] = ids;
    Ids {
        uid,
        euid,
        suid,
        gid,
        egid,
        sgid,
        permitted,
        user_ns,
    }
}

/// The caller's subjective credentials (`current_cred()`). `ESRCH` if it
/// has none, which a running task cannot be (see the body).
pub(crate) fn caller_cred() -> Result<TaskCred> {
    // SAFETY: `get_current_cred` returns a new reference to the caller's
    // credentials, taken over here. `current->cred` is NULL only before
    // `copy_creds` and after `exit_creds`, when the task cannot be in a file
    // operation (and `get_cred(NULL)` is NULL, not a crash): an error then,
    // never a panic.
    unsafe { take(cma_glue_get_current_cred().cast_mut()) }.ok_or(ESRCH)
}

/// What cma asks of credentials.
pub(crate) trait CredExt {
    /// The ids these credentials carry.
    fn ids(&self) -> Ids;
    /// Whether the caller has `CAP_SYS_PTRACE` in these credentials' user
    /// namespace (ptrace's `ptrace_has_cap`).
    fn caller_may_ptrace(&self) -> bool;
    /// Whether capabilities held in these credentials' user namespace reach
    /// the caller: its namespace is that one or a descendant of it
    /// (`current_in_userns`).
    fn ns_reaches_caller(&self) -> bool;
}

impl CredExt for Credential {
    fn ids(&self) -> Ids {
        // SAFETY: the credentials are live (borrowed).
        unsafe { ids_of(self.as_ptr()) }
    }

    fn caller_may_ptrace(&self) -> bool {
        let ns = self.ids().user_ns;
        // SAFETY: `ns` is a live user namespace (held by the credentials).
        unsafe { bindings::ns_capable(ns.cast_mut(), bindings::CAP_SYS_PTRACE as c_int) }
    }

    fn ns_reaches_caller(&self) -> bool {
        let ns = self.ids().user_ns;
        // SAFETY: `ns` is a live user namespace (held by the credentials,
        // and its ancestors by it), which the glue only walks up from.
        unsafe { cma_glue_caller_within(ns) }
    }
}

/// The caller's real ids (`current_cred()`, as ptrace's ATTACH_REALCREDS uses).
pub(crate) fn current_ids() -> Ids {
    // SAFETY: the caller's own credentials cannot be replaced while it is in
    // this ioctl, so the pointer stays valid for the read.
    unsafe { ids_of(cma_glue_current_cred()) }
}

/// What an access decision rests on, as it stands now, as pointers (for
/// comparison only, never dereferenced): the caller's thread group and
/// credentials, `task`'s credentials and address space, and whether `mm`
/// (still allocated, by an `mmgrab` at least) is dumpable by its owner's
/// peers. A peer fd compares them with what it remembered.
pub(crate) fn access_inputs(
    task: &Task,
    mm: *mut bindings::mm_struct,
) -> (
    *mut bindings::pid,
    *const bindings::cred,
    *const bindings::cred,
    *mut bindings::mm_struct,
    bool,
) {
    let (mut group, mut ccred, mut tcred, mut tmm, mut dumpable) = (
        core::ptr::null_mut(),
        core::ptr::null(),
        core::ptr::null(),
        core::ptr::null_mut(),
        false,
    );
    // SAFETY: `task` is live (borrowed) and `mm` is allocated (the caller's
    // guarantee); the glue only reads pointers and flags into the
    // out-parameters, which are valid locals.
    unsafe {
        cma_glue_peer_state(
            task.as_ptr(),
            mm,
            &mut group,
            &mut ccred,
            &mut tcred,
            &mut tmm,
            &mut dumpable,
        )
    };
    (group, ccred, tcred, tmm, dumpable)
}

/// Whether the caller has been sent a fatal signal (and should stop).
pub(crate) fn fatal_signal_pending() -> bool {
    // SAFETY: reads the current task's pending signals; no preconditions.
    unsafe { cma_glue_fatal_signal_pending() }
}

/// Lets other tasks run if the caller has used its time slice.
pub(crate) fn cond_resched() {
    // SAFETY: called from process context without spinlocks held (the only
    // callers are the copy loops, between batches).
    unsafe { cma_glue_cond_resched() }
}
