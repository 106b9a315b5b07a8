//! The copies: one message by each mechanism (the `/dev/cma` ones through
//! the library's public calls), `memcpy`, the vector loop and the double copy.

use cma::{Device, Op, Peer, RemoteIoVec, Target};
use std::io::{self, IoSlice, IoSliceMut};
use std::sync::atomic::Ordering;

use super::labels::Mech;
use super::procs::{next_round, spin_until, Buf, Ctl};

/// The target of a copy: its pid, and a peer fd on it for the mechanisms
/// that use one.
#[derive(Clone, Copy)]
pub(super) struct To<'a> {
    pub(super) pid: i32,
    pub(super) peer: &'a Peer,
}

/// Copies between `local` and `remote` (in `to`) with `mech`: for cma,
/// through the library's public calls, as an application makes them
/// (`process_vm_readv`/`writev` on a peer or by pid, which go by the
/// single-range ioctl for one range each side).
pub(super) fn one_copy(
    dev: &Device,
    mech: Mech,
    op: Op,
    to: To<'_>,
    local: RemoteIoVec,
    remote: RemoteIoVec,
) -> io::Result<()> {
    let want = local.len;
    let remote = [remote];
    let moved = match mech.base() {
        Mech::Cma | Mech::CmaDirect | Mech::CmaPid => {
            let by_pid = mech.base() == Mech::CmaPid;
            match op {
                Op::Read => {
                    // SAFETY: `local` is one of the bench's own mappings,
                    // alive for the call; no other Rust reference to it
                    // exists while the slice does.
                    let buf =
                        unsafe { std::slice::from_raw_parts_mut(local.base as *mut u8, local.len) };
                    let local = &mut [IoSliceMut::new(buf)];
                    if by_pid {
                        dev.process_vm_readv(Target::Pid(to.pid), local, &remote)?
                    } else {
                        to.peer.process_vm_readv(local, &remote)?
                    }
                }
                Op::Write => {
                    // SAFETY: as above; the buffer is only read.
                    let buf =
                        unsafe { std::slice::from_raw_parts(local.base as *const u8, local.len) };
                    let local = &[IoSlice::new(buf)];
                    if by_pid {
                        dev.process_vm_writev(Target::Pid(to.pid), local, &remote)?
                    } else {
                        to.peer.process_vm_writev(local, &remote)?
                    }
                }
            }
        }
        Mech::Pvm => {
            let pid = to.pid;
            let l = libc::iovec {
                iov_base: local.base as *mut libc::c_void,
                iov_len: local.len,
            };
            let r = remote.as_ptr() as *const libc::iovec;
            // SAFETY: `RemoteIoVec` has `iovec`'s layout (checked by the
            // library); the bench's own buffers, as above.
            let n = unsafe {
                match op {
                    Op::Read => libc::process_vm_readv(pid, &l, 1, r, 1, 0),
                    Op::Write => libc::process_vm_writev(pid, &l, 1, r, 1, 0),
                }
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            n as usize
        }
        Mech::Double | Mech::Memcpy | Mech::Vecloop | Mech::Map | Mech::MapVec => {
            unreachable!("not a syscall mechanism")
        }
        Mech::CmaUc | Mech::CmaPidUc | Mech::CmaDirectUc => {
            unreachable!("a label, not a path (see Mech::base)")
        }
    };
    if moved != want {
        return Err(io::Error::other(format!(
            "{} moved {moved} of {want} bytes",
            mech.name()
        )));
    }
    Ok(())
}

/// `memcpy` of `len` bytes between two of the bench's buffers.
pub(super) fn memcpy(dst: &Buf, src: &Buf, len: usize) {
    // SAFETY: both buffers are mapped, at least `len` long, and distinct.
    unsafe { std::ptr::copy_nonoverlapping(src.addr as *const u8, dst.addr as *mut u8, len) };
}

/// A plain vector-loop copy of `len` bytes between two of the bench's
/// buffers: AVX2 when the CPU has it, else SSE2; never `rep movsb`, so with
/// `memcpy` (which may use it) it bounds what one copy can do here.
pub(super) fn vecloop(dst: &Buf, src: &Buf, len: usize) {
    // SAFETY: both buffers are mapped, at least `len` long, and distinct.
    unsafe { vecloop_raw(dst.addr as *mut u8, src.addr as *const u8, len) }
}

/// `vecloop` between any two ranges.
///
/// # Safety
///
/// `s` is readable and `d` writable for `len` bytes, and the two do not
/// overlap.
pub(super) unsafe fn vecloop_raw(d: *mut u8, s: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2; the ranges as the caller promised.
            unsafe { copy_avx2(d, s, len) };
        } else {
            // SAFETY: SSE2 is part of x86_64; the ranges as above.
            unsafe { copy_sse2(d, s, len) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: the ranges as the caller promised.
        unsafe { copy_tail(d, s, 0, len) };
    }
}

/// Copies `len` bytes with 256-bit unaligned loads and stores, four
/// registers (128 bytes) per iteration, then 32 bytes at a time, then bytes.
///
/// # Safety
///
/// The CPU has AVX2; `src` is readable and `dst` writable for `len` bytes,
/// and the two do not overlap.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn copy_avx2(dst: *mut u8, src: *const u8, len: usize) {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_storeu_si256};
    let mut i = 0;
    while len - i >= 128 {
        // SAFETY: bytes `i..i + 128` lie inside both ranges (caller's
        // contract); unaligned loads and stores need no alignment.
        unsafe {
            let (s, d) = (src.add(i) as *const __m256i, dst.add(i) as *mut __m256i);
            let a = _mm256_loadu_si256(s);
            let b = _mm256_loadu_si256(s.add(1));
            let c = _mm256_loadu_si256(s.add(2));
            let e = _mm256_loadu_si256(s.add(3));
            _mm256_storeu_si256(d, a);
            _mm256_storeu_si256(d.add(1), b);
            _mm256_storeu_si256(d.add(2), c);
            _mm256_storeu_si256(d.add(3), e);
        }
        i += 128;
    }
    while len - i >= 32 {
        // SAFETY: bytes `i..i + 32` lie inside both ranges.
        unsafe {
            let v = _mm256_loadu_si256(src.add(i) as *const __m256i);
            _mm256_storeu_si256(dst.add(i) as *mut __m256i, v);
        }
        i += 32;
    }
    // SAFETY: bytes `i..len` lie inside both ranges.
    unsafe { copy_tail(dst, src, i, len) };
}

/// Copies `len` bytes with 128-bit unaligned loads and stores, four
/// registers (64 bytes) per iteration, then 16 bytes at a time, then bytes.
///
/// # Safety
///
/// `src` is readable and `dst` writable for `len` bytes, and the two do not
/// overlap.
#[cfg(target_arch = "x86_64")]
unsafe fn copy_sse2(dst: *mut u8, src: *const u8, len: usize) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_storeu_si128};
    let mut i = 0;
    while len - i >= 64 {
        // SAFETY: bytes `i..i + 64` lie inside both ranges (caller's
        // contract); SSE2 is part of x86_64.
        unsafe {
            let (s, d) = (src.add(i) as *const __m128i, dst.add(i) as *mut __m128i);
            let a = _mm_loadu_si128(s);
            let b = _mm_loadu_si128(s.add(1));
            let c = _mm_loadu_si128(s.add(2));
            let e = _mm_loadu_si128(s.add(3));
            _mm_storeu_si128(d, a);
            _mm_storeu_si128(d.add(1), b);
            _mm_storeu_si128(d.add(2), c);
            _mm_storeu_si128(d.add(3), e);
        }
        i += 64;
    }
    while len - i >= 16 {
        // SAFETY: bytes `i..i + 16` lie inside both ranges.
        unsafe {
            let v = _mm_loadu_si128(src.add(i) as *const __m128i);
            _mm_storeu_si128(dst.add(i) as *mut __m128i, v);
        }
        i += 16;
    }
    // SAFETY: bytes `i..len` lie inside both ranges.
    unsafe { copy_tail(dst, src, i, len) };
}

/// Copies bytes `from..len` one at a time. Volatile, so that the compiler
/// does not turn the loop into a call to `memcpy`.
///
/// # Safety
///
/// `src` is readable and `dst` writable for `len` bytes, and the two do not
/// overlap.
unsafe fn copy_tail(dst: *mut u8, src: *const u8, from: usize, len: usize) {
    for i in from..len {
        // SAFETY: `i < len`, inside both ranges (caller's contract).
        unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
    }
}

/// Size of one slot of the double-copy ring.
pub(super) const SLOT: usize = 64 << 10;

/// The double-copy sender: on each round, pushes `iters` messages of `size`
/// bytes from its private `src` through the shared two-slot `ring`.
pub(super) fn double_sender(ctl: &Ctl, src: &Buf, ring: &Buf) {
    src.touch(7);
    ctl.ready.fetch_add(1, Ordering::AcqRel);
    let mut seen = ctl.go.load(Ordering::Acquire);
    while next_round(ctl, &mut seen).is_some() {
        let (iters, size) = (
            ctl.iters.load(Ordering::Acquire),
            ctl.size.load(Ordering::Acquire) as usize,
        );
        let mut slot = 0;
        for _ in 0..iters {
            let mut off = 0;
            while off < size {
                let n = SLOT.min(size - off);
                spin_until(|| ctl.full[slot].load(Ordering::Acquire) == 0);
                // SAFETY: the slot is ours until we mark it full; both
                // regions are mapped and `n` long.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        (src.addr + off) as *const u8,
                        (ring.addr + slot * SLOT) as *mut u8,
                        n,
                    )
                };
                ctl.full[slot].store(1, Ordering::Release);
                slot ^= 1;
                off += n;
            }
        }
    }
}

/// The double-copy receiver (the bench itself): pulls `iters` messages.
pub(super) fn double_receive(ctl: &Ctl, dst: &Buf, ring: &Buf, iters: u64, size: usize) {
    let mut slot = 0;
    for _ in 0..iters {
        let mut off = 0;
        while off < size {
            let n = SLOT.min(size - off);
            spin_until(|| ctl.full[slot].load(Ordering::Acquire) == 1);
            // SAFETY: the slot is ours until we mark it empty.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    (ring.addr + slot * SLOT) as *const u8,
                    (dst.addr + off) as *mut u8,
                    n,
                )
            };
            ctl.full[slot].store(0, Ordering::Release);
            slot ^= 1;
            off += n;
        }
    }
}
