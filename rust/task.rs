// SPDX-License-Identifier: GPL-2.0

//! RAII wrappers for the task-side kernel objects a request holds: a `struct
//! pid` reference, a task reference, a task's credentials, and the target's
//! `exec_update_lock`. Each owns exactly one reference (or lock) and gives it
//! back on drop; the rest of the module never calls the C functions directly.

use crate::glue::*;
use core::ffi::c_int;
use core::ptr::NonNull;
use kernel::bindings;
use kernel::error::from_err_ptr;
use kernel::prelude::*;

/// A counted reference to a `struct pid`.
///
/// # Invariants
///
/// `self.0` points to a `struct pid` on which this value owns one reference.
pub(crate) struct PidRef(NonNull<bindings::pid>);

// SAFETY: `struct pid` references are atomically counted and may be dropped
// from any thread; the pointer is only compared or passed to the kernel.
unsafe impl Send for PidRef {}
// SAFETY: as above: shared access only compares the pointer.
unsafe impl Sync for PidRef {}

impl PidRef {
    /// The pid numbered `nr` in the caller's pid namespace; `ESRCH` if none.
    pub(crate) fn find(nr: i32) -> Result<PidRef> {
        if nr <= 0 {
            return Err(ESRCH);
        }
        // SAFETY: `find_get_pid` may be called from process context with any
        // number; it returns a new reference or NULL.
        let pid = unsafe { bindings::find_get_pid(nr) };
        // INVARIANT: a non-NULL result carries a reference we now own.
        NonNull::new(pid).map(PidRef).ok_or(ESRCH)
    }

    /// The pid a pidfd refers to; `EBADF` if `fd` is not a pidfd.
    pub(crate) fn from_pidfd(fd: i32) -> Result<PidRef> {
        // SAFETY: the glue looks `fd` up in the caller's file table itself and
        // returns a new reference or an ERR_PTR; any integer is acceptable.
        let pid = from_err_ptr(unsafe { cma_glue_pidfd_get_pid(fd) })?;
        // INVARIANT: a non-error result carries a reference we now own.
        NonNull::new(pid).map(PidRef).ok_or(EBADF)
    }

    /// The thread-group (process) pid of `task`.
    pub(crate) fn tgid_of(task: &TaskRef) -> PidRef {
        // SAFETY: `task` is a live task (we hold a reference); the glue takes
        // a reference on its thread-group pid, which is never NULL for it.
        let pid = unsafe { cma_glue_get_task_tgid(task.as_ptr()) };
        // INVARIANT: `get_pid` took the reference we now own.
        PidRef(NonNull::new(pid).expect("task without tgid"))
    }

    /// The task this pid (a thread or a process) currently names; `ESRCH` if
    /// it has exited.
    pub(crate) fn task(&self) -> Result<TaskRef> {
        // SAFETY: `self.0` is a valid pid by the type invariant.
        let task =
            unsafe { bindings::get_pid_task(self.0.as_ptr(), bindings::pid_type_PIDTYPE_PID) };
        // INVARIANT: a non-NULL result carries a task reference we now own.
        NonNull::new(task).map(TaskRef).ok_or(ESRCH)
    }

    /// The raw pointer, for identity comparisons only.
    pub(crate) fn as_ptr(&self) -> *mut bindings::pid {
        self.0.as_ptr()
    }
}

impl Drop for PidRef {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we own one reference to the pid.
        unsafe { bindings::put_pid(self.0.as_ptr()) };
    }
}

/// A counted reference to a task.
///
/// # Invariants
///
/// `self.0` points to a `task_struct` on which this value owns one reference.
pub(crate) struct TaskRef(NonNull<bindings::task_struct>);

// SAFETY: task references are atomically counted and may be dropped from any
// thread; every method either reads fields that are stable or read once
// (`READ_ONCE`-like), or calls kernel functions that may run on any thread.
unsafe impl Send for TaskRef {}
// SAFETY: as above.
unsafe impl Sync for TaskRef {}

impl TaskRef {
    /// The calling task.
    pub(crate) fn current() -> TaskRef {
        // SAFETY: `current` is always a valid task; we take a reference on it.
        let task = unsafe {
            let task = bindings::get_current();
            bindings::get_task_struct(task);
            task
        };
        // INVARIANT: we own the reference just taken.
        TaskRef(NonNull::new(task).expect("no current task"))
    }

    /// The raw pointer, valid for as long as `self` lives.
    pub(crate) fn as_ptr(&self) -> *mut bindings::task_struct {
        self.0.as_ptr()
    }

    /// Whether this task belongs to the caller's thread group.
    pub(crate) fn is_current_thread_group(&self) -> bool {
        // SAFETY: the task is live (type invariant); `same_thread_group`
        // only compares its signal struct with current's.
        unsafe { cma_glue_same_thread_group(self.as_ptr()) }
    }

    /// The exec generation of this task: it changes when the process execs.
    pub(crate) fn exec_id(&self) -> u64 {
        // SAFETY: the task is live (type invariant); the read is atomic.
        unsafe { cma_glue_self_exec_id(self.as_ptr()) }
    }

    /// The address of this task's thread-group pid, for identity only.
    pub(crate) fn tgid_ptr(&self) -> *mut bindings::pid {
        // SAFETY: the task is live (type invariant), so is its tgid pid; the
        // pointer is only compared.
        unsafe { cma_glue_task_tgid(self.as_ptr()) }
    }

    /// Whether this task's thread group is the one `pid` names.
    pub(crate) fn in_group(&self, pid: &PidRef) -> bool {
        // SAFETY: as in `is_named_by`.
        pid.as_ptr() == unsafe { cma_glue_task_tgid(self.as_ptr()) }
    }

    /// Takes the task's `exec_update_lock` for reading, so that it cannot
    /// exec (and change credentials or mm) while the guard lives. `EINTR` if
    /// a fatal signal arrives while waiting.
    pub(crate) fn lock_exec(&self) -> Result<ExecLockGuard<'_>> {
        // SAFETY: the task is live (type invariant), so is its signal struct.
        let ret = unsafe { cma_glue_exec_update_lock_killable(self.as_ptr()) };
        if ret != 0 {
            return Err(EINTR);
        }
        // INVARIANT: the lock is held for reading.
        Ok(ExecLockGuard { task: self })
    }

    /// The task's objective credentials.
    pub(crate) fn cred(&self) -> TaskCred {
        // SAFETY: the task is live; `get_task_cred` returns a new reference
        // to its (never NULL) credentials.
        let cred = unsafe { bindings::get_task_cred(self.as_ptr()) };
        // INVARIANT: we own the reference `get_task_cred` took.
        TaskCred(NonNull::new(cred as *mut _).expect("task without cred"))
    }
}

impl Drop for TaskRef {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we own one reference to the task.
        unsafe { bindings::put_task_struct(self.0.as_ptr()) };
    }
}

/// A read hold on a task's `exec_update_lock`.
///
/// # Invariants
///
/// `task`'s `signal->exec_update_lock` is held for reading by this guard.
pub(crate) struct ExecLockGuard<'a> {
    task: &'a TaskRef,
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

/// A counted reference to a task's credentials.
///
/// # Invariants
///
/// `self.0` points to credentials on which this value owns one reference.
pub(crate) struct TaskCred(NonNull<bindings::cred>);

// SAFETY: credentials are immutable once published and atomically counted;
// they may be read and put from any thread.
unsafe impl Send for TaskCred {}
// SAFETY: as above.
unsafe impl Sync for TaskCred {}

impl TaskCred {
    /// The caller's subjective credentials (`current_cred()`).
    pub(crate) fn of_caller() -> TaskCred {
        // SAFETY: `get_current_cred` returns a new reference to the caller's
        // (never NULL) credentials.
        let cred = unsafe { cma_glue_get_current_cred() };
        // INVARIANT: we own the reference `get_current_cred` took.
        TaskCred(NonNull::new(cred as *mut _).expect("caller without cred"))
    }

    /// The raw pointer, for identity comparisons only.
    pub(crate) fn as_ptr(&self) -> *const bindings::cred {
        self.0.as_ptr()
    }

    /// The ids these credentials carry.
    pub(crate) fn ids(&self) -> Ids {
        // SAFETY: the credentials are live (type invariant).
        unsafe { ids_of(self.0.as_ptr()) }
    }

    /// Whether the caller has `CAP_SYS_PTRACE` in these credentials' user
    /// namespace (ptrace's `ptrace_has_cap`).
    pub(crate) fn caller_may_ptrace(&self) -> bool {
        let ns = self.ids().user_ns;
        // SAFETY: `ns` is a live user namespace (held by the credentials).
        unsafe { bindings::ns_capable(ns.cast_mut(), bindings::CAP_SYS_PTRACE as c_int) }
    }
}

impl Drop for TaskCred {
    fn drop(&mut self) {
        // SAFETY: by the type invariant we own one reference.
        unsafe { cma_glue_put_cred(self.0.as_ptr()) };
    }
}

/// The caller's real ids (`current_cred()`, as ptrace's ATTACH_REALCREDS uses).
pub(crate) fn current_ids() -> Ids {
    // SAFETY: the caller's own credentials cannot be replaced while it is in
    // this ioctl, so the pointer stays valid for the read.
    unsafe { ids_of(cma_glue_current_cred()) }
}

/// What a peer fd's access decision rests on, as pointers (for comparison
/// only, never dereferenced): the caller's thread group and credentials, the
/// target's credentials and address space, and whether that address space
/// is dumpable by its owner's peers.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inputs {
    pub(crate) caller_group: *mut bindings::pid,
    pub(crate) caller_cred: *const bindings::cred,
    pub(crate) target_cred: *const bindings::cred,
    pub(crate) target_mm: *mut bindings::mm_struct,
    pub(crate) dumpable: bool,
}

impl Inputs {
    /// The inputs as they stand now, for a copy to `task` whose address
    /// space was `mm` (still allocated, by an `mmgrab` at least).
    pub(crate) fn now(task: &TaskRef, mm: *mut bindings::mm_struct) -> Inputs {
        let (mut group, mut ccred, mut tcred, mut tmm, mut dumpable) = (
            core::ptr::null_mut(),
            core::ptr::null(),
            core::ptr::null(),
            core::ptr::null_mut(),
            0,
        );
        // SAFETY: `task` is live (we hold a reference) and `mm` is allocated
        // (the caller's guarantee); the glue only reads pointers and flags
        // into the out-parameters, which are valid locals.
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
        Inputs {
            caller_group: group,
            caller_cred: ccred,
            target_cred: tcred,
            target_mm: tmm,
            dumpable: dumpable == bindings::SUID_DUMP_USER as c_int,
        }
    }
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
