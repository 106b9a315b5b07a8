//! Helpers shared by the tests: raw ioctls, mappings, child processes.

use std::ffi::CString;
use std::io;
use std::os::fd::AsFd;

use crate::ktap::{Failure, TestResult};

/// `ioctl(dev, cmd, arg)` with an arbitrary command and argument.
pub fn raw_ioctl(dev: &cma::Device, cmd: u32, arg: usize) -> io::Result<i32> {
    // SAFETY: every argument the tests pass is either a pointer to a buffer
    // large enough for any command (see `Page`), or an address the test
    // expects the kernel to reject; the kernel never trusts it.
    unsafe { cma::sys::ioctl(dev.as_fd(), cmd, arg) }
}

/// An anonymous private mapping, unmapped on drop.
pub struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes with protection `prot` (zero-filled).
    pub fn new(len: usize, prot: i32) -> io::Result<Mapping> {
        Self::with_flags(len, prot, 0)
    }

    /// Maps `len` bytes with protection `prot` and extra `MAP_*` flags.
    pub fn with_flags(len: usize, prot: i32, flags: i32) -> io::Result<Mapping> {
        Self::anonymous(len, prot, libc::MAP_PRIVATE | flags)
    }

    /// Maps `len` bytes shared (`MAP_SHARED`): a child forked meanwhile
    /// sees the same pages.
    pub fn shared(len: usize, prot: i32) -> io::Result<Mapping> {
        Self::anonymous(len, prot, libc::MAP_SHARED)
    }

    fn anonymous(len: usize, prot: i32, flags: i32) -> io::Result<Mapping> {
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses
        // touches no existing memory.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_ANONYMOUS | flags,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { addr, len })
    }

    /// The start address.
    pub fn addr(&self) -> usize {
        self.addr as usize
    }

    /// The mapping's bytes (only for readable mappings).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping is live for `self`'s lifetime and `len` long;
        // callers only use this on readable mappings.
        unsafe { std::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }

    /// The mapping's bytes, writable (only for writable mappings).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `bytes`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) }
    }

    /// Changes the protection of `len` bytes at `offset`.
    pub fn protect(&self, offset: usize, len: usize, prot: i32) -> io::Result<()> {
        // SAFETY: the range lies inside this mapping (checked by the kernel).
        if unsafe { libc::mprotect((self.addr as usize + offset) as *mut _, len, prot) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Unmaps `len` bytes at `offset` (punching a hole in the mapping).
    pub fn punch(&self, offset: usize, len: usize) -> io::Result<()> {
        // SAFETY: the range lies inside this mapping; the hole stays unmapped
        // and the final munmap of the whole range ignores it.
        if unsafe { libc::munmap((self.addr as usize + offset) as *mut _, len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `addr`/`len` is a mapping this value owns.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// An address that is certainly not mapped: a page mapped and then unmapped.
pub fn unmapped_address() -> io::Result<usize> {
    let m = Mapping::new(page_size(), libc::PROT_NONE)?;
    Ok(m.addr())
}

/// The system page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}

/// A kernel address that is mapped in the kernel (the start of the direct map).
pub const KERNEL_ADDRESS: usize = 0xffff_8880_0000_0000;

/// Runs `f` in a forked child (see [`crate::peer::Peer`]) and returns its
/// result: the child reports through its exit status (0 pass, 4 skip,
/// otherwise fail), with the message in the KTAP output.
pub fn in_child(f: impl FnOnce() -> TestResult) -> TestResult {
    match crate::peer::Peer::spawn(|_| f())?.finish()? {
        0 => Ok(()),
        crate::ktap::KSFT_SKIP => Err(Failure::Skip("skipped in child".into())),
        s => Err(Failure::Fail(format!("child failed (status {s:#x})"))),
    }
}

/// Waits for `pid` and returns its exit code (or 128 + signal number).
pub fn wait_child(pid: libc::pid_t) -> io::Result<i32> {
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    if unsafe { libc::waitpid(pid, &mut status, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    if libc::WIFEXITED(status) {
        Ok(libc::WEXITSTATUS(status))
    } else {
        Ok(128 + libc::WTERMSIG(status))
    }
}

/// An unprivileged user for the permission tests (nobody).
pub const NOBODY: u32 = 65534;
/// A second unprivileged user, different from [`NOBODY`].
pub const OTHER_USER: u32 = 65533;

/// Drops to an unprivileged uid/gid (nobody) in the current process.
pub fn become_nobody() -> io::Result<()> {
    become_user(NOBODY)
}

/// Drops every privilege and becomes `uid` (with gid `uid`).
pub fn become_user(uid: u32) -> io::Result<()> {
    // SAFETY: plain syscalls with integer arguments.
    unsafe {
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setresgid(uid, uid, uid) != 0
            || libc::setresuid(uid, uid, uid) != 0
        {
            return Err(io::Error::last_os_error());
        }
        // Changing uids clears dumpability; the tests set it explicitly.
        libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0);
    }
    Ok(())
}

/// Skips a test that needs two CPUs (one for a thread kept busy or held,
/// one for the test) on a machine that has fewer.
pub fn needs_two_cpus() -> TestResult {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        return Err(Failure::Skip("needs two CPUs".into()));
    }
    Ok(())
}

/// Keeps the calling thread on one CPU until dropped, when the thread gets
/// its CPU set back.
pub struct OnCpu(libc::cpu_set_t);

impl OnCpu {
    /// Moves the calling thread to CPU `cpu`.
    pub fn new(cpu: usize) -> io::Result<OnCpu> {
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: CPU sets on the stack, for the calling thread only.
        unsafe {
            let mut old: libc::cpu_set_t = std::mem::zeroed();
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut one);
            if libc::sched_getaffinity(0, size, &mut old) != 0
                || libc::sched_setaffinity(0, size, &one) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(OnCpu(old))
        }
    }
}

impl Drop for OnCpu {
    fn drop(&mut self) {
        // SAFETY: the CPU set saved by `new`, for the calling thread.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) };
    }
}

/// A small deterministic PRNG (xorshift64*), so that failures reproduce.
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_ne_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Whether the suite runs as root (some tests need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `delete_module(name, flags)`.
pub fn delete_module(name: &str, flags: i32) -> io::Result<()> {
    let name = CString::new(name).unwrap();
    // SAFETY: `name` is a valid NUL-terminated string.
    if unsafe { libc::syscall(libc::SYS_delete_module, name.as_ptr(), flags) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `finit_module(fd of path, "", 0)`.
pub fn load_module(path: &str) -> io::Result<()> {
    let file = std::fs::File::open(path)?;
    let params = CString::new("").unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: valid fd and NUL-terminated parameter string.
    if unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// The calling thread's capability sets, `_LINUX_CAPABILITY_VERSION_3`: two
/// [`CapData`], for capabilities 0-31 and 32-63.
fn caps_edit(edit: impl Fn(&mut CapData)) -> io::Result<()> {
    let mut hdr = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: `hdr` and `data` have the layout capget(2) expects.
    if unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    data.iter_mut().for_each(edit);
    // SAFETY: as above, for capset(2), which only reads them.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Makes every permitted capability effective (`capset`), as a process that
/// kept its capabilities across a change of uid must before using them.
pub fn raise_caps() -> io::Result<()> {
    caps_edit(|d| d.effective = d.permitted)
}

/// Keeps only the capabilities in `mask` in every set (0: drops them all
/// for good).
pub fn set_caps(mask: u32) -> io::Result<()> {
    caps_edit(|d| {
        d.effective &= mask;
        d.permitted &= mask;
        d.inheritable &= mask;
    })
}

/// Runs `f` in a forked child and returns the exit code it chose (or 128 +
/// signal). For a single-threaded caller.
pub fn in_forked(f: impl FnOnce() -> i32) -> io::Result<i32> {
    // SAFETY: the callers are single-threaded test processes.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let code = f();
        // SAFETY: ends the child without running the parent's exit code.
        unsafe { libc::_exit(code) };
    }
    wait_child(pid)
}

/// Replaces the calling process's program with `/bin/sleep 60`; returns the
/// error only if that failed.
pub fn exec_sleep() -> io::Error {
    let prog = CString::new("/bin/sleep").unwrap();
    let arg = CString::new("60").unwrap();
    let argv = [prog.as_ptr(), arg.as_ptr(), std::ptr::null()];
    // SAFETY: valid NUL-terminated strings and a NULL-terminated argv.
    unsafe { libc::execv(prog.as_ptr(), argv.as_ptr()) };
    io::Error::last_os_error()
}

/// Waits up to 10 s for `/proc/<pid>/comm` to read `comm` (after an exec),
/// and returns what it reads then.
pub fn wait_for_comm(pid: i32, comm: &str) -> io::Result<String> {
    let path = format!("/proc/{pid}/comm");
    for _ in 0..2000 {
        if std::fs::read_to_string(&path).is_ok_and(|s| s.trim() == comm) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(std::fs::read_to_string(&path)?.trim().to_string())
}

/// Fails the test unless the loaded module announces `feature`.
pub fn needs_feature(feature: cma::Features) -> crate::ktap::TestResult {
    let features = cma::Device::open()?.info()?.features;
    crate::check!(
        features.contains(feature),
        "the module does not announce {}",
        feature.names().next().unwrap_or("that feature")
    );
    Ok(())
}
