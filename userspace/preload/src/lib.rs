//! `libcma-preload.so`: `process_vm_readv(2)` and `process_vm_writev(2)`
//! through `/dev/cma`, for programs that cannot be changed.
//!
//! Open MPI (btl/vader, smsc/cma), UCX (uct/cma) and MPICH call the glibc
//! wrappers; libfabric's shm provider and LTP call `syscall()` with the
//! system call's number (`shim.c` routes those here). Loaded with
//! `LD_PRELOAD`, this library answers every such call exactly as the system
//! call would (the module's `CMA_COPY_PVM` mode applies the same checks, in
//! the same order, with the same errnos), but copies through `/dev/cma`.
//!
//! - **Peer fds.** The first copy with a pid attaches to it
//!   (`CMA_IOC_ATTACH`); later copies go through the cached peer fd. When
//!   the process behind the pid has exited or exec()ed (`ESRCH` on the peer
//!   fd), the pid is attached again, because a pid names whatever process
//!   has it now. If attaching fails, the copy goes by pid, which fails in the
//!   system call's order (an `EFAULT` for a bad iovec array comes before an
//!   `ESRCH` for a dead pid).
//! - **Consent.** By default the library grants copies to any peer the
//!   credential rule allows (`CMA_IOC_GRANT` with pid 0), which is how open
//!   `process_vm_readv` is under Yama's scope 0; `CMA_PRELOAD_GRANT=0` turns
//!   that off. `prctl(PR_SET_PTRACER, pid)` grants to `pid`,
//!   `PR_SET_PTRACER_ANY` to any permitted peer, 0 withdraws.
//! - **Peers in other user namespaces.** An open grant does not reach a
//!   process in another user namespace (rootless containers, `unshare -U`):
//!   only a grant naming it by pidfd does. So the library names, once, each
//!   process in another user namespace whose pid the MPI library hands it:
//!   the pid of a `process_vm_readv`/`writev`, and the pid of a
//!   `/proc/PID/stat` that the library opens (UCX does, for every peer it
//!   connects to, before any copy). `CMA_PRELOAD_NAME_PEERS=0` turns that
//!   off.
//! - **Ranks of one launcher.** A rank started by an MPI launcher (its
//!   environment has `OMPI_COMM_WORLD_RANK`, `PMIX_RANK`, `PMI_RANK`,
//!   `PMI_FD` or `SLURM_PROCID`, and its parent is `mpirun`, `mpiexec`,
//!   `orted`, `prted`, `hydra_pmi_proxy` or `slurmstepd`) consents, by a
//!   pidfd of its parent, to the parent's children (`CMA_GRANT_DESCENDANTS`,
//!   one generation): its sibling ranks, in whatever user namespace, before
//!   any of them asks. Open MPI, which names no peer before it reads, needs
//!   that; `CMA_PRELOAD_NAME_LAUNCHER=0` turns it off, `=1` makes it for any
//!   parent but init.
//! - **Fallback.** Without `/dev/cma`, or with a module too old for
//!   `CMA_COPY_PVM`, the real system call runs. So it does when `/dev/cma`
//!   refuses with `EPERM` (a peer that has not consented may still be
//!   readable by `process_vm_readv`'s own rules); `CMA_PRELOAD_FALLBACK=0`
//!   makes that `EPERM` final.
//! - **The libraries' own checks.** UCX (and so MPICH on Debian) reads
//!   Yama's `ptrace_scope` before it uses `process_vm_readv` and turns its
//!   cma transport off at 2 and 3, where the system call is refused. When
//!   `/dev/cma` serves this process's calls, the library opening that file
//!   read-only gets "0", the scope under which its calls will behave as they
//!   will through `/dev/cma` (`CMA_PRELOAD_YAMA=0` turns that off). At 0 and
//!   1, or without a usable `/dev/cma`, it reads the real file. Open MPI
//!   needs no answer (it only asks `prctl`, which Yama grants at every
//!   scope), nor does any library under a seccomp filter (UCX's self-probe
//!   and libfabric's first-peer probe are copies, served like any other).
//!   Open MPI's btl/vader compares the inode numbers of its ranks' user
//!   namespaces (`stat("/proc/self/ns/user")`) and turns single copy off
//!   when they differ; a rank that consented to its launcher's descendants
//!   reports one number made from the launcher's pid, the same in every
//!   rank of that launcher, which can all copy from each other through
//!   `/dev/cma` (`CMA_PRELOAD_USERNS=0` turns that off; see
//!   [`cma_preload_userns_answer`]).
//! - **Report.** `CMA_PRELOAD_STATS=1` (or `stderr`) prints one line per
//!   process at exit, `CMA_PRELOAD_STATS=/path` appends it to a file: calls
//!   answered by `/dev/cma`, bytes, calls that fell back (and why), calls
//!   that failed (and with which errno), the libraries' checks answered
//!   (`answered.ptrace_scope`, `answered.userns`), and the launcher named
//!   (`launcher`, its pid, or 0).
//! - **Maps.** A call that repeats one made before (the same pid, arrays
//!   and ranges) is served with `memcpy()` through maps of the target's
//!   ranges when that is sure to give what the system call would; see
//!   [`maps`]. The report counts them (`mapped`, `mapped_bytes`; also in
//!   `cma` and `bytes`). `CMA_PRELOAD_MAPS=0` turns that off.
//! - **fork.** The child drops the parent's peer fds, opens its own
//!   `/dev/cma` and grants again (grants belong to a process).

use cma::raw::{self, Channel};
use cma::{sys, Features, Op, Target};
use std::cell::UnsafeCell;
use std::ffi::{c_int, c_long, c_ulong};
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

extern "C" {
    /// `shim.c`: glibc's `syscall()`, the next definition after ours.
    fn cma_preload_real_syscall(
        nr: c_long,
        a1: c_long,
        a2: c_long,
        a3: c_long,
        a4: c_long,
        a5: c_long,
        a6: c_long,
    ) -> c_long;
}

/// The most peer fds kept open at once; past it, one is closed at random.
const MAX_PEERS: usize = 1024;

/// `/dev/cma` as this process has it: an fd (>= 0), or why not (< 0).
static DEVICE: AtomicI32 = AtomicI32::new(NOT_OPENED);
const NOT_OPENED: i32 = -1;
const NO_DEVICE: i32 = -2;
const OLD_MODULE: i32 = -3;

/// Why a call ran the real system call.
#[derive(Clone, Copy)]
enum Fallback {
    NoDevice,
    OldModule,
    Eperm,
    BadFd,
}

/// What the report at exit counts.
struct Stats {
    cma: AtomicU64,
    bytes: AtomicU64,
    fallback: [AtomicU64; 4],
    failed: [AtomicU64; 5],
    /// Reads of Yama's scope answered.
    yama: AtomicU64,
    /// `stat()`s of this process's user namespace answered.
    userns: AtomicU64,
    /// Calls served from maps, and their bytes (in `cma` and `bytes` too).
    mapped: AtomicU64,
    mapped_bytes: AtomicU64,
}

const FALLBACK_NAMES: [&str; 4] = ["no-device", "old-module", "eperm", "bad-fd"];
const FAILED_ERRNOS: [(c_int, &str); 4] = [
    (libc::EFAULT, "EFAULT"),
    (libc::ESRCH, "ESRCH"),
    (libc::EPERM, "EPERM"),
    (libc::EINVAL, "EINVAL"),
];

static STATS: Stats = Stats {
    cma: AtomicU64::new(0),
    bytes: AtomicU64::new(0),
    fallback: [const { AtomicU64::new(0) }; 4],
    failed: [const { AtomicU64::new(0) }; 5],
    yama: AtomicU64::new(0),
    userns: AtomicU64::new(0),
    mapped: AtomicU64::new(0),
    mapped_bytes: AtomicU64::new(0),
};

mod maps;

/// A peer fd and the pid it was attached by.
struct PeerFd {
    pid: i32,
    fd: OwnedFd,
    /// Its status page, once it has maps (see [`maps`]).
    status: std::sync::OnceLock<Arc<maps::StatusPage>>,
}

/// A `pthread_mutex_t`-protected value: unlike `std::sync::Mutex`, its lock
/// can be taken across `fork()` by the `pthread_atfork` handlers and
/// re-initialised in the child.
struct Locked<T> {
    mutex: UnsafeCell<libc::pthread_mutex_t>,
    data: UnsafeCell<T>,
}

// SAFETY: `data` is only reached through `with`, which holds `mutex`.
unsafe impl<T: Send> Sync for Locked<T> {}

impl<T> Locked<T> {
    /// Runs `f` with the lock held.
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: `mutex` is an initialised mutex that lives for 'static.
        unsafe { libc::pthread_mutex_lock(self.mutex.get()) };
        // SAFETY: the lock is held, so no other reference to `data` exists;
        // `f` cannot reach `with` again (nothing it is given calls it).
        let r = f(unsafe { &mut *self.data.get() });
        // SAFETY: locked above by this thread.
        unsafe { libc::pthread_mutex_unlock(self.mutex.get()) };
        r
    }
}

/// Whether the module admits a grant by pidfd across user namespaces.
static USERNS_GRANT: AtomicBool = AtomicBool::new(false);

/// The launcher whose children this process consented to (its parent
/// when it opened the device), or 0 (see [`name_launcher`]).
static LAUNCHER: AtomicI32 = AtomicI32::new(0);

/// Set in a forked child (see [`cma_preload_atfork_child`]).
static IN_FORK_CHILD: AtomicBool = AtomicBool::new(false);

/// The pids named by pidfd so far (see [`name_peer`]), at most
/// [`MAX_PEERS`].
static NAMED: Locked<Vec<i32>> = Locked {
    mutex: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
    data: UnsafeCell::new(Vec::new()),
};

/// Cached peer fds, by pid.
static PEERS: Locked<Vec<Arc<PeerFd>>> = Locked {
    mutex: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
    data: UnsafeCell::new(Vec::new()),
};

/// Whether `CMA_PRELOAD_<name>` is set to something other than "0".
fn env_on(name: &str, default: bool) -> bool {
    match std::env::var(format!("CMA_PRELOAD_{name}")) {
        Ok(v) => v != "0",
        Err(_) => default,
    }
}

/// Opens `/dev/cma`, checks that it can do `CMA_COPY_PVM`, and grants the
/// default consent. Returns the fd or why not.
fn open_device() -> i32 {
    // SAFETY: a NUL-terminated path; the returned fd (if any) is ours.
    let fd = unsafe {
        libc::open(
            sys::CMA_DEVICE_PATH.as_ptr().cast(),
            libc::O_RDWR | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return NO_DEVICE;
    }
    // SAFETY: `fd` was just opened and is owned by nothing else.
    let dev = unsafe { OwnedFd::from_raw_fd(fd) };
    let need = Features::PVM | Features::ATTACH | Features::GRANT;
    let Ok(info) = raw::info(dev.as_fd()) else {
        return OLD_MODULE;
    };
    if !info.features.contains(need) {
        return OLD_MODULE;
    }
    USERNS_GRANT.store(info.features.contains(Features::USERNS_GRANT), Relaxed);
    // A module without `caller_generation` leaves it 0 for good: its maps
    // could never prove a local buffer still mapped.
    maps::MODULE_OK.store(
        info.features
            .contains(Features::MAP | Features::CALLER_GENERATION),
        Relaxed,
    );
    if env_on("GRANT", true) {
        // A failure (say, a full consent registry) only means peers need
        // CAP_SYS_PTRACE or a prctl(); copies still work.
        let _ = raw::grant(dev.as_fd(), 0);
        // At load only: a forked child's parent is this process, no
        // launcher (after an exec, the library loads anew).
        if info.features.contains(Features::DESCENDANTS_GRANT) && !IN_FORK_CHILD.load(Relaxed) {
            name_launcher(dev.as_fd());
        }
    }
    std::os::fd::IntoRawFd::into_raw_fd(dev)
}

/// The device fd, opening it on first use; `Err` says why there is none.
fn device() -> Result<BorrowedFd<'static>, Fallback> {
    let mut fd = DEVICE.load(Relaxed);
    if fd == NOT_OPENED {
        let new = open_device();
        fd = match DEVICE.compare_exchange(NOT_OPENED, new, Relaxed, Relaxed) {
            Ok(_) => new,
            Err(other) => {
                if new >= 0 {
                    // SAFETY: `new` is ours and was not published.
                    unsafe { libc::close(new) };
                }
                other
            }
        };
    }
    match fd {
        NO_DEVICE | NOT_OPENED => Err(Fallback::NoDevice),
        OLD_MODULE => Err(Fallback::OldModule),
        // SAFETY: a published device fd stays open for the life of the
        // process (only the fork child handler replaces it, single-threaded).
        fd => Ok(unsafe { BorrowedFd::borrow_raw(fd) }),
    }
}

/// The cached peer fd for `pid`, attaching on a miss; `None` if attaching
/// fails (the copy then goes by pid, which reports the right error).
fn peer(dev: BorrowedFd<'_>, pid: i32) -> Option<Arc<PeerFd>> {
    if let Some(p) = PEERS.with(|v| v.iter().find(|p| p.pid == pid).cloned()) {
        return Some(p);
    }
    // Whoever this process copies from may copy from it.
    name_peer(pid);
    let fd: RawFd = raw::attach(dev, Target::Pid(pid)).ok()?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let new = Arc::new(PeerFd {
        pid,
        fd,
        status: std::sync::OnceLock::new(),
    });
    Some(PEERS.with(|v| {
        if let Some(p) = v.iter().find(|p| p.pid == pid) {
            // Another thread attached meanwhile: keep one.
            return p.clone();
        }
        if v.len() >= MAX_PEERS {
            let victim = (pid as usize).wrapping_mul(2654435761) % v.len();
            v.swap_remove(victim);
        }
        v.push(new.clone());
        new
    }))
}

/// Variables an MPI launcher sets in each rank's environment: Open MPI's
/// (ORTE and PMIx), Hydra's (MPICH) and Slurm's PMI.
const RANK_VARS: [&str; 5] = [
    "OMPI_COMM_WORLD_RANK",
    "PMIX_RANK",
    "PMI_RANK",
    "PMI_FD",
    "SLURM_PROCID",
];

/// The names (`comm`) of the processes that start MPI ranks as their
/// children: Open MPI's and MPICH's launchers and daemons, Slurm's step
/// daemon. A prefix matches (`mpirun.openmpi`, `mpiexec.hydra`).
const LAUNCHERS: [&str; 7] = [
    "mpirun",
    "mpiexec",
    "orterun",
    "orted",
    "prte",
    "hydra_pmi_proxy",
    "slurmstepd",
];

/// Consents, by pidfd, to copies by the children of this process's parent
/// (`CMA_GRANT_DESCENDANTS`, one generation) when this process is an MPI
/// rank (its environment has one of [`RANK_VARS`]) whose parent is an MPI
/// launcher ([`LAUNCHERS`], by the parent's `comm`), or
/// `CMA_PRELOAD_NAME_LAUNCHER=1` says so for any parent; `=0` never. That
/// admits the sibling ranks from user namespaces of their own (each rank
/// started by `unshare -U` or a rootless container runtime), which an open
/// grant does not reach, before any of them makes a call. The variables
/// alone would not do: every process a rank starts inherits them, and its
/// parent (the rank, or a shell under `srun --pty`) launches no ranks.
fn name_launcher(dev: BorrowedFd<'_>) {
    LAUNCHER.store(0, Relaxed);
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    // Never init's children: a process whose parent exited, or a daemon.
    if ppid <= 1 {
        return;
    }
    let wanted = match std::env::var("CMA_PRELOAD_NAME_LAUNCHER") {
        Ok(v) => v != "0",
        Err(_) => {
            RANK_VARS.iter().any(|v| std::env::var_os(v).is_some())
                && std::fs::read_to_string(format!("/proc/{ppid}/comm"))
                    .is_ok_and(|c| LAUNCHERS.iter().any(|l| c.trim_end().starts_with(l)))
        }
    };
    if !wanted {
        return;
    }
    let Ok(pidfd) = cma::pidfd_open(ppid) else {
        return;
    };
    // The pidfd names the parent only if it is still the parent: had the
    // parent exited before pidfd_open, this process would have been
    // reparented, and the pid might be another's by now.
    // SAFETY: as above.
    if unsafe { libc::getppid() } == ppid && raw::grant_descendants(dev, pidfd.as_fd(), 1).is_ok() {
        LAUNCHER.store(ppid, Relaxed);
    }
}

/// `shim.c`'s `stat()` of `/proc/self/ns/user`: the inode number to report
/// instead of the real one, or 0 (report the real one).
///
/// Open MPI's btl/vader compares these numbers between ranks and turns
/// single copy off if they differ, since `process_vm_readv` refuses across
/// user namespaces. When this process has consented to its launcher's
/// descendants (see [`name_launcher`]) and `/dev/cma` serves its calls,
/// every rank of that launcher (which all do the same) can copy from every
/// other, whatever its namespace; they all report one number, made from the
/// launcher's pid above any inode number the kernel gives a namespace
/// (those are 32-bit). Ranks of other launchers, or without this library,
/// report something else, and Open MPI falls back for them as it would.
/// `CMA_PRELOAD_USERNS=0` turns the answer off.
#[no_mangle]
pub extern "C" fn cma_preload_userns_answer() -> u64 {
    let launcher = LAUNCHER.load(Relaxed);
    if launcher <= 0 || !env_on("USERNS", true) || device().is_err() {
        return 0;
    }
    STATS.userns.fetch_add(1, Relaxed);
    0xc3a0_0000_0000_0000 | launcher as u64
}

/// The user namespace `pid` (or `self`) runs in, as its `/proc` link reads.
fn user_ns(pid: &str) -> Option<std::path::PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/user")).ok()
}

/// Grants `pid` by pidfd, once, if it runs in another user namespace, where
/// this process's open grant does not reach it (see the crate's
/// documentation). Failures leave the copies to fail as they would.
fn name_peer(pid: i32) {
    if pid <= 0 || !USERNS_GRANT.load(Relaxed) || !env_on("NAME_PEERS", true) {
        return;
    }
    let Ok(dev) = device() else {
        return;
    };
    // SAFETY: getpid has no preconditions.
    if pid == unsafe { libc::getpid() } {
        return;
    }
    let new = NAMED.with(|v| {
        if v.contains(&pid) || v.len() >= MAX_PEERS {
            return false;
        }
        v.push(pid);
        true
    });
    if !new || user_ns(&pid.to_string()) == user_ns("self") {
        return;
    }
    if let Ok(pidfd) = cma::pidfd_open(pid) {
        let _ = raw::grant_to(dev, Target::PidFd(pidfd.as_fd()));
    }
}

/// `shim.c`'s `open()` of `/proc/PID/stat`: the library names a peer.
#[no_mangle]
pub extern "C" fn cma_preload_saw_pid(pid: c_int) {
    name_peer(pid);
}

/// Forgets `old` (its process exited or exec()ed); the fd closes when the
/// last copy using it returns.
fn forget(old: &Arc<PeerFd>) {
    PEERS.with(|v| v.retain(|p| !Arc::ptr_eq(p, old)));
}

fn errno_of(e: &io::Error) -> c_int {
    e.raw_os_error().unwrap_or(libc::EIO)
}

/// The arguments of one call, as the system call has them.
#[derive(Clone, Copy)]
struct Call {
    op: Op,
    pid: i32,
    lvec: *const libc::iovec,
    liovcnt: c_ulong,
    rvec: *const libc::iovec,
    riovcnt: c_ulong,
    flags: c_ulong,
}

impl Call {
    /// The copy through `chan`. The local count is truncated to 32 bits as
    /// `import_iovec()` truncates it; a remote count past 32 bits is
    /// `EINVAL` anyway (over `UIO_MAXIOV`), in its turn.
    fn through(&self, chan: Channel<'_>) -> io::Result<usize> {
        let rcnt = self.riovcnt.min(u32::MAX as c_ulong) as u32;
        // SAFETY: the caller of process_vm_readv vouches for its local
        // iovecs, as it would to the kernel; the kernel reads the arrays.
        unsafe { chan.pvm_raw(self.op, self.lvec, self.liovcnt as u32, self.rvec, rcnt) }
    }

    /// The copy through `/dev/cma`: by peer fd, by pid if attaching fails;
    /// with the peer fd it went through, if one.
    fn via_cma(&self, dev: BorrowedFd<'_>) -> (io::Result<usize>, Option<Arc<PeerFd>>) {
        let by_pid = || self.through(Channel::new(dev, Some(Target::Pid(self.pid))));
        let Some(p) = peer(dev, self.pid) else {
            return (by_pid(), None);
        };
        match self.through(Channel::new(p.fd.as_fd(), None)) {
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                // The process we attached to is gone; the pid may name a new one.
                forget(&p);
                match peer(dev, self.pid) {
                    Some(p) => (self.through(Channel::new(p.fd.as_fd(), None)), Some(p)),
                    None => (by_pid(), None),
                }
            }
            other => (other, Some(p)),
        }
    }

    /// The real system call.
    fn real(&self, why: Fallback) -> isize {
        STATS.fallback[why as usize].fetch_add(1, Relaxed);
        let nr = match self.op {
            Op::Read => libc::SYS_process_vm_readv,
            Op::Write => libc::SYS_process_vm_writev,
        };
        // SAFETY: the caller's arguments, passed on to the kernel as given.
        unsafe {
            cma_preload_real_syscall(
                nr,
                self.pid as c_long,
                self.lvec as c_long,
                self.liovcnt as c_long,
                self.rvec as c_long,
                self.riovcnt as c_long,
                self.flags as c_long,
            ) as isize
        }
    }

    /// The whole call: returns what the system call returns, with `errno`
    /// set on failure.
    fn run(&self) -> isize {
        if self.flags != 0 {
            return failed(libc::EINVAL);
        }
        let dev = match device() {
            Ok(dev) => dev,
            Err(why) => return self.real(why),
        };
        if let Some(n) = maps::serve(self) {
            STATS.cma.fetch_add(1, Relaxed);
            STATS.bytes.fetch_add(n as u64, Relaxed);
            return n as isize;
        }
        let proving = maps::before(self);
        let (res, through) = self.via_cma(dev);
        match res {
            Ok(n) => {
                maps::after(self, n, through, proving);
                STATS.cma.fetch_add(1, Relaxed);
                STATS.bytes.fetch_add(n as u64, Relaxed);
                n as isize
            }
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && env_on("FALLBACK", true) => {
                self.real(Fallback::Eperm)
            }
            // Our descriptor was closed or replaced under us (a program that
            // closes every fd it did not open): the system call still works.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBADF | libc::ENOTTY)) => {
                self.real(Fallback::BadFd)
            }
            Err(e) => failed(errno_of(&e)),
        }
    }
}

/// Counts a call that failed with `errno`, sets it and returns -1.
fn failed(errno: c_int) -> isize {
    let slot = FAILED_ERRNOS
        .iter()
        .position(|(n, _)| *n == errno)
        .unwrap_or(FAILED_ERRNOS.len());
    STATS.failed[slot].fetch_add(1, Relaxed);
    fail(errno)
}

/// Sets `errno` and returns -1.
fn fail(errno: c_int) -> isize {
    // SAFETY: `__errno_location` returns this thread's errno.
    unsafe { *libc::__errno_location() = errno };
    -1
}

/// `process_vm_readv(2)`, through `/dev/cma`.
///
/// # Safety
///
/// The same contract as the glibc function: the local iovecs name memory
/// the caller lets the kernel write.
#[no_mangle]
pub unsafe extern "C" fn process_vm_readv(
    pid: libc::pid_t,
    lvec: *const libc::iovec,
    liovcnt: c_ulong,
    rvec: *const libc::iovec,
    riovcnt: c_ulong,
    flags: c_ulong,
) -> isize {
    Call {
        op: Op::Read,
        pid,
        lvec,
        liovcnt,
        rvec,
        riovcnt,
        flags,
    }
    .run()
}

/// `process_vm_writev(2)`, through `/dev/cma`.
///
/// # Safety
///
/// The same contract as the glibc function.
#[no_mangle]
pub unsafe extern "C" fn process_vm_writev(
    pid: libc::pid_t,
    lvec: *const libc::iovec,
    liovcnt: c_ulong,
    rvec: *const libc::iovec,
    riovcnt: c_ulong,
    flags: c_ulong,
) -> isize {
    Call {
        op: Op::Write,
        pid,
        lvec,
        liovcnt,
        rvec,
        riovcnt,
        flags,
    }
    .run()
}

/// `syscall(SYS_process_vm_readv/writev, ...)`, from `shim.c`.
///
/// # Safety
///
/// As for [`process_vm_readv`], with the arguments as `long`s.
#[no_mangle]
pub unsafe extern "C" fn cma_preload_syscall_pvm(
    write: c_int,
    pid: c_long,
    lvec: c_long,
    liovcnt: c_long,
    rvec: c_long,
    riovcnt: c_long,
    flags: c_long,
) -> c_long {
    Call {
        op: if write != 0 { Op::Write } else { Op::Read },
        // The kernel takes pid_t: the low 32 bits.
        pid: pid as i32,
        lvec: lvec as *const libc::iovec,
        liovcnt: liovcnt as c_ulong,
        rvec: rvec as *const libc::iovec,
        riovcnt: riovcnt as c_ulong,
        flags: flags as c_ulong,
    }
    .run() as c_long
}

/// `prctl(PR_SET_PTRACER, arg)` was called (from `shim.c`): the same consent
/// for `/dev/cma`.
#[no_mangle]
pub extern "C" fn cma_preload_ptracer(arg: c_ulong) {
    let Ok(dev) = device() else { return };
    let _ = match arg {
        0 => raw::revoke(dev).and_then(|()| {
            // The default consent stays unless it was turned off.
            if env_on("GRANT", true) {
                raw::grant(dev, 0)
            } else {
                Ok(())
            }
        }),
        // PR_SET_PTRACER_ANY is (unsigned long)-1.
        c_ulong::MAX => raw::grant(dev, 0),
        pid => raw::grant(dev, pid as i32),
    };
}

/// At load: open the device and consent, so that this process can be read
/// before it makes a call of its own.
#[no_mangle]
pub extern "C" fn cma_preload_init() {
    let _ = device();
    // First uses that take a lock, done before a signal handler can call in.
    maps::init();
}

/// Before `fork()`: hold the peer table's lock so that the child gets it in
/// a consistent state.
#[no_mangle]
pub extern "C" fn cma_preload_atfork_prepare() {
    // SAFETY: the mutexes are initialised; released by one of the handlers
    // below (always taken in this order).
    unsafe {
        libc::pthread_mutex_lock(PEERS.mutex.get());
        libc::pthread_mutex_lock(NAMED.mutex.get());
        libc::pthread_mutex_lock(maps::MAPS.mutex.get());
    }
}

/// After `fork()`, in the parent.
#[no_mangle]
pub extern "C" fn cma_preload_atfork_parent() {
    // SAFETY: locked by `cma_preload_atfork_prepare` in this thread.
    unsafe {
        libc::pthread_mutex_unlock(maps::MAPS.mutex.get());
        libc::pthread_mutex_unlock(NAMED.mutex.get());
        libc::pthread_mutex_unlock(PEERS.mutex.get());
    }
}

/// After `fork()`, in the child (one thread): the peer fds were the
/// parent's, and so were its grants; start over with its own device fd.
#[no_mangle]
pub extern "C" fn cma_preload_atfork_child() {
    // SAFETY: the child has one thread, which holds both locks (taken in
    // `prepare`); no reference to either table exists. Re-initialising a
    // mutex is what POSIX allows a child to do with one it inherited. (The
    // pids named are forgotten too: the parent's grants stay the parent's.)
    // The parent's maps and status pages are not the child's (not
    // inherited): forgotten, never unmapped.
    maps::forked();
    unsafe {
        (*maps::MAPS.data.get()).clear();
        libc::pthread_mutex_init(maps::MAPS.mutex.get(), std::ptr::null());
        (*PEERS.data.get()).clear();
        libc::pthread_mutex_init(PEERS.mutex.get(), std::ptr::null());
        (*NAMED.data.get()).clear();
        libc::pthread_mutex_init(NAMED.mutex.get(), std::ptr::null());
    }
    let old = DEVICE.swap(NOT_OPENED, Relaxed);
    if old >= 0 {
        // SAFETY: the child's copy of the parent's device fd, ours to close
        // (the parent's stays open, and so do its grants).
        unsafe { libc::close(old) };
    }
    LAUNCHER.store(0, Relaxed);
    IN_FORK_CHILD.store(true, Relaxed);
    let _ = device();
    for s in STATS.fallback.iter().chain(&STATS.failed) {
        s.store(0, Relaxed);
    }
    STATS.yama.store(0, Relaxed);
    STATS.userns.store(0, Relaxed);
    STATS.cma.store(0, Relaxed);
    STATS.bytes.store(0, Relaxed);
    STATS.mapped.store(0, Relaxed);
    STATS.mapped_bytes.store(0, Relaxed);
}

/// Yama's scope as the kernel has it, or `None` if it cannot be read (no
/// Yama). Read with the system call itself, past this library's `open`.
fn real_yama_scope() -> Option<u8> {
    const PATH: &[u8] = b"/proc/sys/kernel/yama/ptrace_scope\0";
    // SAFETY: a NUL-terminated path; the fd, if any, is ours.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            PATH.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    let fd = RawFd::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: just opened, owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut buf = [0u8; 4];
    let n = std::fs::File::from(fd).read(&mut buf).ok()?;
    buf[..n].first().copied()
}

/// `shim.c`'s `open()` of Yama's `ptrace_scope` with `flags`: an fd reading
/// "0\n" if the real scope refuses `process_vm_readv` between siblings (2
/// or 3) and `/dev/cma` serves this process's calls, or -1 (the real file is
/// opened). See the crate's documentation.
#[no_mangle]
pub extern "C" fn cma_preload_yama_answer(flags: c_int) -> c_int {
    if flags & libc::O_ACCMODE != libc::O_RDONLY || !env_on("YAMA", true) || device().is_err() {
        return -1;
    }
    if !matches!(real_yama_scope(), Some(b'2'..=b'9')) {
        return -1;
    }
    let cloexec = match flags & libc::O_CLOEXEC {
        0 => 0,
        _ => libc::MFD_CLOEXEC,
    };
    // SAFETY: a NUL-terminated name; the fd, if any, is ours.
    let fd = unsafe { libc::memfd_create(c"ptrace_scope".as_ptr(), cloexec) };
    if fd < 0 {
        return -1;
    }
    // SAFETY: just created, owned by nothing else.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    if file.write_all(b"0\n").is_err() || file.rewind().is_err() {
        return -1;
    }
    STATS.yama.fetch_add(1, Relaxed);
    std::os::fd::IntoRawFd::into_raw_fd(file)
}

/// At exit: the report, if `CMA_PRELOAD_STATS` asks for it.
#[no_mangle]
pub extern "C" fn cma_preload_fini() {
    let Ok(to) = std::env::var("CMA_PRELOAD_STATS") else {
        return;
    };
    if to.is_empty() || to == "0" {
        return;
    }
    let line = report();
    if to == "1" || to == "stderr" {
        let _ = io::stderr().write_all(line.as_bytes());
    } else if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&to)
    {
        // One write(2) of one line with O_APPEND: lines of several processes
        // do not interleave.
        let _ = f.write_all(line.as_bytes());
    }
}

/// One line: `cma-preload: pid=N comm=NAME cma=N bytes=N fallback=N
/// failed=N fallback.REASON=N... failed.ERRNO=N...`.
fn report() -> String {
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
    let sum = |v: &[AtomicU64]| v.iter().map(|a| a.load(Relaxed)).sum::<u64>();
    let mut line = format!(
        "cma-preload: pid={} comm={} cma={} bytes={} fallback={} failed={}",
        std::process::id(),
        comm.trim(),
        STATS.cma.load(Relaxed),
        STATS.bytes.load(Relaxed),
        sum(&STATS.fallback),
        sum(&STATS.failed),
    );
    for (name, n) in FALLBACK_NAMES.iter().zip(&STATS.fallback) {
        line += &format!(" fallback.{name}={}", n.load(Relaxed));
    }
    let names = FAILED_ERRNOS.iter().map(|(_, n)| *n).chain(["other"]);
    for (name, n) in names.zip(&STATS.failed) {
        line += &format!(" failed.{name}={}", n.load(Relaxed));
    }
    line += &format!(" answered.ptrace_scope={}", STATS.yama.load(Relaxed));
    line += &format!(" answered.userns={}", STATS.userns.load(Relaxed));
    line += &format!(" launcher={}", LAUNCHER.load(Relaxed));
    line += &format!(
        " mapped={} mapped_bytes={}",
        STATS.mapped.load(Relaxed),
        STATS.mapped_bytes.load(Relaxed)
    );
    line.push('\n');
    line
}
