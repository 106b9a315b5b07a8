//! The map path: a `process_vm_readv`/`writev` that repeats one already
//! made (the same pid and the same iovecs, wherever its arrays are) is
//! served with `memcpy()` through maps of the target's ranges
//! (`CMA_IOC_MAP`), with no system call, when that gives exactly what the
//! system call would.
//!
//! What the system call would answer differently, and how it is ruled out:
//! - **The remote side.** A map shows what a copy would, and its peer fd's
//!   status page says when it might not (`generation`, `unstable`): the
//!   bytes are copied between two looks at it that agree, the first with
//!   `unstable == 0`; otherwise the system call answers (results, errors,
//!   partial counts).
//! - **The local side.** The system call answers a local iovec this process
//!   cannot write (or read) with `EFAULT` or a partial count, where a
//!   `memcpy()` would kill it. A call is served only if the same call went
//!   whole through `/dev/cma` while the status page's `caller_generation`
//!   stayed the same, and it still has that value: the module moves it as
//!   any change of this process's address space begins and ends, so the
//!   local buffers are mapped with the access that copy had. The iovec
//!   arrays are read only where they lie in pages that held the arrays of
//!   such a proved call (a page mapped then is mapped now, whole).
//!   Protection keys can change without the kernel (`wrpkru`): the value of
//!   PKRU must be the one that copy ran with.
//! - **Other threads.** A thread that unmaps a buffer while another passes it
//!   to a call in flight gets whichever outcome the race gives, as with the
//!   system call, except that a `memcpy()` may fault where the system call
//!   would fail: such a program is already broken.
//!
//! A call is a candidate when each side has at most [`MAX_SEGS`] iovecs.
//! The first time it goes whole, it is noted; the second, its ranges are
//! mapped (in windows of [`WINDOW`], a map made once and kept, at most
//! [`MAX_MAPS`]); the third goes with `caller_generation` read before and
//! after, and so proves the call; from the fourth, `memcpy()`. Proofs are per
//! thread (at most [`PROOFS`], and [`ARRAY_PAGES`] pages of arrays).
//! `CMA_PRELOAD_MAPS=0` turns the path off.

use super::{env_on, Call, Locked, PeerFd};
use cma::{sys, MapStatus, Op};
use std::cell::{RefCell, UnsafeCell};
use std::mem::ManuallyDrop;
use std::os::fd::AsFd;
use std::sync::atomic::{
    fence, AtomicBool, AtomicU64,
    Ordering::{Acquire, Relaxed, SeqCst},
};
use std::sync::{Arc, OnceLock};

/// The most iovecs on either side of a call served from maps.
pub(crate) const MAX_SEGS: usize = 4;
/// The most calls a thread keeps proofs of (a large message is often
/// several calls: UCX reads 4 MiB as 8 of 512 KiB).
const PROOFS: usize = 32;
/// A proved call is served at most this many times before the system call
/// answers again (and proves it anew): the bound on how long a decision the
/// module would now refuse (the target made itself non-dumpable, say: only
/// consent withdrawal, exec and exit reach the maps at once) goes unseen.
const SERVES_PER_PROOF: u32 = 1024;
/// Maps are made of whole windows of this size around the ranges asked for
/// (one map serves the pieces of a message, and huge pages can be mapped
/// whole).
const WINDOW: usize = 2 << 20;
/// The most maps the process keeps; past it, the oldest goes (unmapped once
/// no proof uses it).
const MAX_MAPS: usize = 64;

/// Moves in a fork child: maps and status pages are not inherited
/// (`VM_DONTCOPY`), so what the parent made is forgotten, never unmapped
/// (the child may have mapped something else there since).
pub(crate) static FORK_EPOCH: AtomicU64 = AtomicU64::new(0);

/// A page of this process holding 1, which the child of any fork or clone
/// without `CLONE_VM` reads as 0 (`MADV_WIPEONFORK`): a child made by
/// `clone(2)` directly runs no `pthread_atfork` handler, and must neither
/// use nor unmap the maps it did not inherit. 0: no such page (no path).
static TOKEN: OnceLock<usize> = OnceLock::new();

fn make_token() -> usize {
    // SAFETY: a fresh private anonymous page, ours for the life of the
    // process.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            page_size(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return 0;
        }
        if libc::madvise(p, page_size(), libc::MADV_WIPEONFORK) != 0 {
            libc::munmap(p, page_size());
            return 0;
        }
        (p as *mut u64).write_volatile(1);
        p as usize
    }
}

/// Whether this process made the maps it knows of: not a child that
/// inherited the parent's tables (see [`TOKEN`]).
fn alive() -> bool {
    match TOKEN.get() {
        // SAFETY: the token page, mapped for the life of the process (and
        // in every child: only its contents are wiped).
        Some(&t) if t != 0 => unsafe { (t as *const u64).read_volatile() != 0 },
        _ => false,
    }
}

/// In a fork child (the `pthread_atfork` handler): the maps are forgotten,
/// and the child makes its own.
pub(crate) fn forked() {
    FORK_EPOCH.fetch_add(1, Relaxed);
    if let Some(&t) = TOKEN.get().filter(|&&t| t != 0) {
        // SAFETY: the token page (wiped in this child); we are its only
        // thread.
        unsafe { (t as *mut u64).write_volatile(1) };
    }
}

/// Whether the module moves `caller_generation` (set when the device is
/// opened).
pub(crate) static MODULE_OK: AtomicBool = AtomicBool::new(false);

/// Whether the path is on in this process: `CMA_PRELOAD_MAPS` (read once),
/// the module, x86-64 (where PKRU is the only access right user space can
/// change without the kernel; arm64's POR_EL0 is not read here).
fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    cfg!(target_arch = "x86_64")
        && MODULE_OK.load(Relaxed)
        && *ON.get_or_init(|| env_on("MAPS", true) && *TOKEN.get_or_init(make_token) != 0)
        && alive()
}

/// At load: the first uses of what takes a lock (`OnceLock`), so that a
/// signal handler calling in later never waits for one its thread holds.
pub(crate) fn init() {
    if enabled() {
        pkru();
    }
}

/// A peer fd's status page, mapped read-only: the `cma` crate's
/// [`MapStatus`], but unmapped only by the process that mapped it (a forked
/// child has its copy of the mapping only if it was made before the fork,
/// and must not unmap a page that a later mapping may have replaced).
pub(crate) struct StatusPage {
    status: ManuallyDrop<MapStatus>,
    epoch: u64,
}

impl StatusPage {
    /// Maps the status page of `peer` (which has a map state: after its
    /// first `CMA_IOC_MAP`).
    fn map(peer: &PeerFd) -> Option<StatusPage> {
        Some(StatusPage {
            status: ManuallyDrop::new(MapStatus::of_fd(peer.fd.as_fd()).ok()?),
            epoch: FORK_EPOCH.load(Relaxed),
        })
    }
}

impl std::ops::Deref for StatusPage {
    type Target = MapStatus;

    fn deref(&self) -> &MapStatus {
        &self.status
    }
}

impl Drop for StatusPage {
    fn drop(&mut self) {
        if self.epoch == FORK_EPOCH.load(Relaxed) && alive() {
            // SAFETY: mapped by `StatusPage::map` in this process; dropped
            // (unmapped) once, here.
            unsafe { ManuallyDrop::drop(&mut self.status) };
        }
    }
}

/// The status page of `peer`, mapped on first use.
fn status_of(peer: &PeerFd) -> Option<Arc<StatusPage>> {
    if let Some(s) = peer.status.get() {
        return Some(s.clone());
    }
    let s = Arc::new(StatusPage::map(peer)?);
    // Another thread may have mapped one meanwhile: keep one.
    Some(peer.status.get_or_init(|| s).clone())
}

/// A range of a target mapped into this process.
pub(crate) struct Map {
    peer: Arc<PeerFd>,
    /// The target range, page-aligned.
    start: usize,
    len: usize,
    writable: bool,
    /// Where it is mapped here.
    mapped: usize,
    status: Arc<StatusPage>,
    epoch: u64,
}

impl Drop for Map {
    fn drop(&mut self) {
        if self.epoch == FORK_EPOCH.load(Relaxed) && alive() {
            // SAFETY: mapped by `CMA_IOC_MAP` in this process, unmapped once
            // (no proof holds it any more: the last reference is going).
            unsafe { libc::munmap(self.mapped as *mut libc::c_void, self.len) };
        }
    }
}

/// The maps this process keeps, oldest first.
pub(crate) static MAPS: Locked<Vec<Arc<Map>>> = Locked {
    mutex: UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
    data: UnsafeCell::new(Vec::new()),
};

/// Why no map could be made: worth another try later (a signal, or memory
/// short for a while) or not (no access, a range the module refuses).
#[derive(Clone, Copy)]
enum NoMap {
    Later,
    Never,
}

/// A map of `peer`'s target covering `[base, base + len)` (not empty), with
/// write access if `writable`: one kept, or a new one.
fn map_for(peer: &Arc<PeerFd>, base: usize, len: usize, writable: bool) -> Result<Arc<Map>, NoMap> {
    let ps = page_size();
    let start = base & !(ps - 1);
    let end = base
        .checked_add(len)
        .and_then(|e| e.checked_next_multiple_of(ps))
        .ok_or(NoMap::Never)?;
    let fits = |m: &Arc<Map>| {
        Arc::ptr_eq(&m.peer, peer)
            && m.start <= start
            && end <= m.start + m.len
            && (m.writable || !writable)
    };
    if let Some(m) = MAPS.with(|v| v.iter().find(|m| fits(m)).cloned()) {
        return Ok(m);
    }
    let prot = if writable {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    let map_range = |start: usize, end: usize| {
        let mut args = sys::cma_map {
            addr: start as u64,
            len: (end - start) as u64,
            prot: prot as u32,
            ..Default::default()
        };
        // SAFETY: CMA_IOC_MAP reads and writes one live `cma_map`.
        unsafe {
            sys::ioctl(
                peer.fd.as_fd(),
                sys::CMA_IOC_MAP,
                &mut args as *mut _ as usize,
            )
        }
        .map(|_| (start, end, args.mapped as usize))
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EINTR | libc::ENOMEM | libc::EAGAIN) => NoMap::Later,
            _ => NoMap::Never,
        })
    };
    // The window around the range, else (at the top of the address space,
    // say) the range itself.
    let window = match end.checked_next_multiple_of(WINDOW) {
        Some(wend) => map_range(start & !(WINDOW - 1), wend),
        None => Err(NoMap::Never),
    };
    let (start, end, mapped) = window.or_else(|_| map_range(start, end))?;
    // After the first map, the fd has its status page.
    let Some(status) = status_of(peer) else {
        // SAFETY: the map just made, ours, unmapped once.
        unsafe { libc::munmap(mapped as *mut libc::c_void, end - start) };
        return Err(NoMap::Later);
    };
    let map = Map {
        peer: peer.clone(),
        start,
        len: end - start,
        writable,
        mapped,
        status,
        epoch: FORK_EPOCH.load(Relaxed),
    };
    let map = Arc::new(map);
    MAPS.with(|v| {
        if v.len() >= MAX_MAPS {
            v.remove(0);
        }
        v.push(map.clone());
    });
    Ok(map)
}

/// One iovec, as the call had it.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
struct Seg {
    base: usize,
    len: usize,
}

/// What a call is, but for its iovecs: the same for a later call to be the
/// same (with the same iovecs, wherever its arrays are: libfabric passes
/// each message's remote iovec in a slot of a ring).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    op: Op,
    pid: i32,
    liovcnt: usize,
    riovcnt: usize,
}

impl Key {
    fn of(c: &Call) -> Option<Key> {
        let n = MAX_SEGS as libc::c_ulong;
        (c.flags == 0 && c.liovcnt <= n && c.riovcnt <= n && c.liovcnt > 0 && c.riovcnt > 0)
            .then_some(Key {
                op: c.op,
                pid: c.pid,
                liovcnt: c.liovcnt as usize,
                riovcnt: c.riovcnt as usize,
            })
    }
}

/// The pages the two iovec arrays of `c` lie in (`None` if they wrap).
fn array_pages(c: &Call, key: &Key) -> Option<impl Iterator<Item = usize>> {
    let ps = page_size();
    let span = |at: usize, n: usize| {
        let end = at.checked_add(n * std::mem::size_of::<libc::iovec>())?;
        Some((at & !(ps - 1)..end).step_by(ps))
    };
    Some(span(c.lvec as usize, key.liovcnt)?.chain(span(c.rvec as usize, key.riovcnt)?))
}

/// The iovecs of an array the kernel has just read whole (or that a proof
/// says is still there).
///
/// # Safety
///
/// `vec` points to `cnt` (at most [`MAX_SEGS`]) readable `iovec`s.
unsafe fn segs(vec: usize, cnt: usize) -> [Seg; MAX_SEGS] {
    let mut out = [Seg::default(); MAX_SEGS];
    for (i, s) in out.iter_mut().enumerate().take(cnt) {
        // SAFETY: the caller vouches for `cnt` readable entries; unaligned
        // reads, as the kernel's copy_from_user() allows any alignment.
        let v = unsafe { (vec as *const libc::iovec).add(i).read_unaligned() };
        *s = Seg {
            base: v.iov_base as usize,
            len: v.iov_len,
        };
    }
    out
}

/// What one thread knows of a call it made.
struct Proof {
    key: Key,
    local: [Seg; MAX_SEGS],
    remote: [Seg; MAX_SEGS],
    /// How many times it went whole through `/dev/cma`.
    seen: u32,
    /// One per remote iovec (none for an empty one), once made.
    maps: Vec<Option<Arc<Map>>>,
    /// The status page all of `maps` share.
    status: Option<Arc<StatusPage>>,
    /// The `caller_generation` and PKRU it went whole with, read before and
    /// after: the call is proved while both are the same.
    proved: Option<(u64, u32)>,
    /// Its ranges could not be mapped (no consent to map them, say): not
    /// tried again.
    unmappable: bool,
    /// When it was last used (the least recently used goes first).
    used: u64,
    /// Calls served since it was proved.
    served: u32,
}

impl Proof {
    /// Whether the call is proved now: nothing of this address space has
    /// changed since it went whole, and PKRU is `pk` as it was then.
    fn holds(&self, pk: u32) -> bool {
        match (self.proved, &self.status) {
            (Some((cgen, k)), Some(s)) => k == pk && s.caller_generation() == cgen,
            _ => false,
        }
    }
}

/// A page that held iovec arrays a proved call read whole: readable while
/// `caller_generation` of `status` is `cgen` and PKRU is `pk`.
struct ArrayPage {
    page: usize,
    status: Arc<StatusPage>,
    cgen: u64,
    pk: u32,
    used: u64,
}

/// The most array pages a thread keeps.
const ARRAY_PAGES: usize = 64;

/// A thread's proofs, the pages of their arrays, and the clock of their use.
struct Proofs {
    all: Vec<Proof>,
    pages: Vec<ArrayPage>,
    tick: u64,
    /// The [`FORK_EPOCH`] they were made in.
    epoch: u64,
}

impl Proofs {
    /// Whether the arrays of `c` may be read: every page they lie in held
    /// arrays of a proved call, and nothing changed since.
    fn arrays_readable(&mut self, c: &Call, key: &Key, pk: u32) -> bool {
        let tick = self.tick;
        let Some(mut pages) = array_pages(c, key) else {
            return false;
        };
        pages.all(|page| {
            self.pages.iter_mut().any(|a| {
                let ok = a.page == page && a.pk == pk && a.status.caller_generation() == a.cgen;
                if ok {
                    a.used = tick;
                }
                ok
            })
        })
    }

    /// Notes the pages of the arrays of `c`, read whole by a call proved
    /// with `status` at `cgen` and `pk`.
    fn note_arrays(&mut self, c: &Call, key: &Key, status: &Arc<StatusPage>, cgen: u64, pk: u32) {
        let tick = self.tick;
        let Some(pages) = array_pages(c, key) else {
            return;
        };
        for page in pages {
            let new = ArrayPage {
                page,
                status: status.clone(),
                cgen,
                pk,
                used: tick,
            };
            if let Some(a) = self.pages.iter_mut().find(|a| a.page == page) {
                *a = new;
            } else if self.pages.len() < ARRAY_PAGES {
                self.pages.push(new);
            } else if let Some(lru) = self.pages.iter_mut().min_by_key(|a| a.used) {
                *lru = new;
            }
        }
    }
}

thread_local! {
    static PROOFS_OF_THREAD: RefCell<Proofs> = const {
        RefCell::new(Proofs {
            all: Vec::new(),
            pages: Vec::new(),
            tick: 0,
            epoch: 0,
        })
    };
}

/// Runs `f` on this thread's proofs, unless they are busy (a signal handler
/// calling in during a call) or gone (thread exit): then `None`.
fn with_proofs<R>(f: impl FnOnce(&mut Proofs) -> Option<R>) -> Option<R> {
    PROOFS_OF_THREAD
        .try_with(|p| {
            let mut p = p.try_borrow_mut().ok()?;
            let epoch = FORK_EPOCH.load(Relaxed);
            if p.epoch != epoch {
                // The parent's, in a fork child: forgotten, their maps too
                // (dropped, which unmaps nothing: see `FORK_EPOCH`).
                p.all.clear();
                p.pages.clear();
                p.epoch = epoch;
            }
            p.tick += 1;
            f(&mut p)
        })
        .ok()
        .flatten()
}

/// This process's pid, cached with the [`FORK_EPOCH`] it was read in (a
/// fork child reads its own).
fn own_pid() -> i32 {
    static PID: AtomicU64 = AtomicU64::new(0);
    let epoch = FORK_EPOCH.load(Relaxed) & 0xffff_ffff;
    let v = PID.load(Relaxed);
    if v != 0 && v >> 32 == epoch {
        return v as u32 as i32;
    }
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    PID.store(pid as u32 as u64 | epoch << 32, Relaxed);
    pid
}

/// This thread's protection-key rights (0 without protection keys).
fn pkru() -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        static OSPKE: OnceLock<bool> = OnceLock::new();
        // CPUID.(EAX=7,ECX=0):ECX bit 4: the OS has turned RDPKRU on; only
        // where leaf 7 exists (past the top leaf, CPUs answer another).
        let on = *OSPKE.get_or_init(|| {
            std::arch::x86_64::__cpuid(0).eax >= 7
                && std::arch::x86_64::__cpuid_count(7, 0).ecx & 16 != 0
        });
        if on {
            let eax: u32;
            // SAFETY: RDPKRU with ECX = 0, available since OSPKE is set;
            // it reads PKRU into EAX and zeroes EDX, nothing else.
            unsafe {
                std::arch::asm!("rdpkru", in("ecx") 0, out("eax") eax, out("edx") _,
                    options(nomem, nostack, preserves_flags));
            }
            return eax;
        }
    }
    0
}

/// Copies between the local and remote iovecs, paired as the system call
/// pairs them, the remote side through `maps`; returns the bytes copied.
///
/// # Safety
///
/// The local iovecs are mapped with the access `op` needs on the bytes the
/// pairing reaches, and each non-empty remote iovec lies inside its map.
unsafe fn copy_through(op: Op, local: &[Seg], remote: &[Seg], maps: &[Option<Arc<Map>>]) -> usize {
    let (mut li, mut loff, mut total) = (0, 0, 0);
    for (r, m) in remote.iter().zip(maps) {
        let mut roff = 0;
        while roff < r.len {
            while li < local.len() && loff == local[li].len {
                li += 1;
                loff = 0;
            }
            let (Some(l), Some(m)) = (local.get(li), m) else {
                return total;
            };
            let n = (l.len - loff).min(r.len - roff);
            let there = m.mapped + (r.base - m.start) + roff;
            let here = l.base + loff;
            // SAFETY: `here` lies in a local iovec the caller vouches for,
            // `there` in the map of `r` (which covers it); the two may
            // overlap only if the caller passed a map of ours as a local
            // buffer, hence copy(), not copy_nonoverlapping().
            unsafe {
                match op {
                    Op::Read => std::ptr::copy(there as *const u8, here as *mut u8, n),
                    Op::Write => std::ptr::copy(here as *const u8, there as *mut u8, n),
                }
            }
            roff += n;
            loff += n;
            total += n;
        }
    }
    total
}

/// The call from maps, if it is proved and nothing changed: the bytes
/// copied; `None` if the system call must answer.
pub(crate) fn serve(c: &Call) -> Option<usize> {
    if !enabled() {
        return None;
    }
    let key = Key::of(c)?;
    with_proofs(|proofs| {
        let pk = pkru();
        // The arrays may be read only where proved calls read arrays.
        if !proofs.arrays_readable(c, &key, pk) {
            return None;
        }
        // SAFETY: every page of both arrays held arrays a copy read whole,
        // and nothing of this address space changed since.
        let (local, remote) = unsafe {
            (
                segs(c.lvec as usize, key.liovcnt),
                segs(c.rvec as usize, key.riovcnt),
            )
        };
        let tick = proofs.tick;
        let p = proofs
            .all
            .iter_mut()
            .find(|p| p.key == key && p.local == local && p.remote == remote)?;
        if !p.holds(pk) {
            return None;
        }
        if p.served >= SERVES_PER_PROOF {
            p.proved = None;
            return None;
        }
        p.served += 1;
        p.used = tick;
        let status = p.status.as_ref()?;
        let generation = status.generation();
        fence(Acquire);
        if status.unstable() != 0 {
            return None;
        }
        // SAFETY: the local iovecs are the ones the proving copy reached
        // whole with this access, still mapped so; each remote one lies in
        // its map (made for it).
        let n = unsafe {
            copy_through(
                key.op,
                &local[..key.liovcnt],
                &remote[..key.riovcnt],
                &p.maps,
            )
        };
        // The copy's stores (non-temporal ones too) before the look again.
        fence(if key.op == Op::Write { SeqCst } else { Acquire });
        if status.generation() != generation {
            return None;
        }
        super::STATS.mapped.fetch_add(1, Relaxed);
        super::STATS.mapped_bytes.fetch_add(n as u64, Relaxed);
        Some(n)
    })
}

/// What [`before`] saw: the status page (its address, only compared), its
/// `caller_generation`, and PKRU.
pub(crate) type Before = (usize, u64, u32);

/// Before the system call: what proves the call if it goes whole, when a
/// call with its arrays has its ranges mapped already.
pub(crate) fn before(c: &Call) -> Option<Before> {
    if !enabled() {
        return None;
    }
    let key = Key::of(c)?;
    with_proofs(|proofs| {
        // The most recently used: after the pid was attached again, older
        // proofs have the old peer's page.
        let s = proofs
            .all
            .iter()
            .filter(|p| p.key == key && p.status.is_some())
            .max_by_key(|p| p.used)?
            .status
            .as_ref()?;
        Some((Arc::as_ptr(s) as usize, s.caller_generation(), pkru()))
    })
}

/// After the system call went whole (`n` bytes, all the pairing reaches)
/// through `peer`: notes the call, maps its ranges the second time, proves
/// it when `before` (from [`before`]) still holds.
pub(crate) fn after(c: &Call, n: usize, peer: Option<Arc<PeerFd>>, before: Option<Before>) {
    let Some(key) = Key::of(c) else { return };
    if !enabled() {
        return;
    }
    // SAFETY: the kernel has just read both arrays whole, inside this call.
    let (local, remote) = unsafe {
        (
            segs(c.lvec as usize, key.liovcnt),
            segs(c.rvec as usize, key.riovcnt),
        )
    };
    let sum = |s: &[Seg]| s.iter().try_fold(0usize, |a, s| a.checked_add(s.len));
    let (Some(lsum), Some(rsum)) = (sum(&local[..key.liovcnt]), sum(&remote[..key.riovcnt])) else {
        return;
    };
    // Whole: every byte the pairing reaches was copied.
    if n != lsum.min(rsum) || n == 0 {
        return;
    }
    let Some(peer) = peer else { return };
    // The iovecs read now are the ones the kernel used, unless the copy
    // itself wrote the arrays: a read into them, or a write to ourselves.
    let iov = std::mem::size_of::<libc::iovec>();
    let arrays = [
        (c.lvec as usize, key.liovcnt * iov),
        (c.rvec as usize, key.riovcnt * iov),
    ];
    let written: &[Seg] = match key.op {
        Op::Read => &local[..key.liovcnt],
        Op::Write if peer.pid == own_pid() => &remote[..key.riovcnt],
        Op::Write => &[],
    };
    let meets = |s: &Seg, (at, len): (usize, usize)| {
        s.len > 0 && s.base < at.saturating_add(len) && at < s.base.saturating_add(s.len)
    };
    if written.iter().any(|s| arrays.iter().any(|&a| meets(s, a))) {
        return;
    }
    with_proofs(|proofs| {
        let tick = proofs.tick;
        let same = |p: &Proof| p.key == key && p.local == local && p.remote == remote;
        let i = match proofs.all.iter().position(same) {
            Some(i) => i,
            None => {
                if proofs.all.len() >= PROOFS {
                    let lru = (0..proofs.all.len()).min_by_key(|&i| proofs.all[i].used)?;
                    proofs.all.swap_remove(lru);
                }
                proofs.all.push(Proof {
                    key,
                    local,
                    remote,
                    seen: 0,
                    maps: Vec::new(),
                    status: None,
                    proved: None,
                    unmappable: false,
                    used: tick,
                    served: 0,
                });
                proofs.all.len() - 1
            }
        };
        let p = &mut proofs.all[i];
        p.seen = p.seen.saturating_add(1);
        p.used = tick;
        // The maps must be of the peer fd the copy went through (a pid
        // attached again names another process).
        if p.maps
            .iter()
            .flatten()
            .any(|m| !Arc::ptr_eq(&m.peer, &peer))
        {
            p.maps.clear();
            p.status = None;
            p.proved = None;
            p.unmappable = false;
        }
        if p.seen >= 2 && p.maps.is_empty() && !p.unmappable {
            let writable = key.op == Op::Write;
            p.unmappable = true;
            let mut maps = Vec::with_capacity(key.riovcnt);
            for r in &remote[..key.riovcnt] {
                maps.push(match r.len {
                    0 => None,
                    len => match map_for(&peer, r.base, len, writable) {
                        Ok(m) => Some(m),
                        Err(NoMap::Later) => {
                            p.unmappable = false;
                            return None;
                        }
                        Err(NoMap::Never) => return None,
                    },
                });
            }
            let status = maps.iter().flatten().next()?.status.clone();
            if maps
                .iter()
                .flatten()
                .any(|m| !Arc::ptr_eq(&m.status, &status))
            {
                return None;
            }
            p.unmappable = false;
            p.maps = maps;
            p.status = Some(status);
            // Not proved by this copy: the status page was not read before it.
            return None;
        }
        let status = p.status.clone()?;
        let (page, cgen, pk) = before?;
        p.proved = (Arc::as_ptr(&status) as usize == page
            && status.caller_generation() == cgen
            && pkru() == pk)
            .then_some((cgen, pk));
        if p.proved.is_some() {
            p.served = 0;
            proofs.note_arrays(c, &key, &status, cgen, pk);
        }
        Some(())
    });
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
}
