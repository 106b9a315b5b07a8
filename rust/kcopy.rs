// SPDX-License-Identifier: GPL-2.0

//! Copies between two kernel mappings (a pinned page of the target and a
//! pinned page of the caller), with the faster of two routines, chosen once
//! when the module loads:
//!
//! - the kernel's `memcpy`: `rep movsb` on CPUs with fast short `rep movs`
//!   (FSRM), an unrolled 8-byte loop otherwise;
//! - 32-byte AVX moves between `kernel_fpu_begin()` and `kernel_fpu_end()`,
//!   a page at a time, as the RAID and crypto code use vector registers.
//!
//! Like the kernel's own RAID6 and XOR code, the choice is made by timing
//! both on a buffer at load time (`simd_copy=-1`, the default), unless the
//! `simd_copy` parameter forces it. Short pieces always use `memcpy`, since
//! entering the FPU section costs more than they take.
//!
//! The same timing chooses the engine (the `engine` parameter, unless given):
//! the routine the kernel's user copies use on this CPU (`copy_user_generic`:
//! `rep movsb` with FSRM, `rep_movs_alternative` otherwise) is timed beside
//! them. If it is within [`USERCOPY_SLACK_PCT`] of the faster one, pinning
//! the caller's pages buys nothing and costs a pin and unpin per batch, so
//! the engine copies with the user-copy routines (`usercopy`); otherwise it
//! pins both sides and copies kernel to kernel (`pinned`).

use crate::compat::time::Stopwatch;
use crate::glue::*;
use core::ffi::c_int;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::prelude::*;

/// Pieces shorter than this use `memcpy` even when AVX was chosen.
const SIMD_MIN: usize = 512;

/// Whether [`copy`] uses AVX for long pieces (set once by [`select`]).
static USE_SIMD: AtomicBool = AtomicBool::new(false);

/// Bytes copied per timing run of [`select`].
const CALIBRATION_BYTES: usize = 64 * 1024;

/// The user-copy routine may be this much slower (percent) than the best
/// kernel-to-kernel one and still be chosen: it saves the caller's pins.
const USERCOPY_SLACK_PCT: i64 = 10;

/// How the engine moves bytes (the `engine` module parameter).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Engine {
    /// Both sides pinned, copied kernel to kernel with [`copy`].
    Pinned,
    /// The target's pages pinned, the caller's memory reached by the
    /// kernel's user-copy routines (as `process_vm_readv`).
    UserCopy,
}

/// The engine in force.
pub(crate) fn engine() -> Engine {
    // SAFETY: reads a module parameter; no preconditions.
    match unsafe { cma_glue_engine() } {
        1 => Engine::UserCopy,
        _ => Engine::Pinned,
    }
}

/// The engine's name, for the log.
pub(crate) fn engine_name() -> &'static str {
    match engine() {
        Engine::Pinned => "pinned",
        Engine::UserCopy => "usercopy",
    }
}

/// A routine timed by [`select`].
#[derive(Clone, Copy)]
enum Routine {
    Memcpy,
    Avx,
    UserCopy,
}

/// The routine [`copy`] uses, for the log.
pub(crate) fn routine_name() -> &'static str {
    if USE_SIMD.load(Ordering::Relaxed) {
        "avx"
    } else {
        "memcpy"
    }
}

/// Chooses the routine, honouring the `simd_copy` module parameter. Called
/// once from module init, before the device exists.
pub(crate) fn select() -> Result {
    // SAFETY: these read a module parameter and CPU feature flags.
    let (param, usable) = unsafe { (cma_glue_simd_param(), cma_glue_simd_usable()) };
    let [memcpy, avx, user] = time_routines(usable)?;
    let simd = match param {
        0 => false,
        1 => usable,
        _ => usable && avx < memcpy,
    };
    USE_SIMD.store(simd, Ordering::Relaxed);
    let best = if simd { avx } else { memcpy };
    // Saturating: a routine not timed counts `i64::MAX`.
    let choice = if user.saturating_mul(100) <= best.saturating_mul(100 + USERCOPY_SLACK_PCT) {
        Engine::UserCopy
    } else {
        Engine::Pinned
    };
    // SAFETY: sets the parameter only if no value was given at load.
    unsafe { cma_glue_choose_engine(choice as c_int) };
    pr_info!(
        "64 KiB in pages: memcpy {} ns, avx {} ns, user-copy routine {} ns\n",
        memcpy,
        if usable { avx } else { -1 },
        user
    );
    Ok(())
}

/// Times the routines copying a page-sized piece at a time through
/// [`CALIBRATION_BYTES`] (best of several runs each), as [`copy`] would:
/// nanoseconds for `memcpy`, AVX (if `avx_usable`, else `i64::MAX`) and the
/// user-copy routine.
fn time_routines(avx_usable: bool) -> Result<[i64; 3]> {
    let src = KVec::from_elem(0x5au8, CALIBRATION_BYTES, GFP_KERNEL)?;
    let mut dst = KVec::from_elem(0u8, CALIBRATION_BYTES, GFP_KERNEL)?;
    let mut best = [i64::MAX; 3];
    let routines = [Routine::Memcpy, Routine::Avx, Routine::UserCopy];
    for _ in 0..5 {
        for (routine, best) in routines.iter().zip(best.iter_mut()) {
            if matches!(routine, Routine::Avx) && !avx_usable {
                continue;
            }
            let start = Stopwatch::start();
            for (d, s) in dst
                .chunks_mut(kernel::page::PAGE_SIZE)
                .zip(src.chunks(kernel::page::PAGE_SIZE))
            {
                let (d, s, n) = (d.as_mut_ptr(), s.as_ptr(), d.len());
                // SAFETY: `d` and `s` are distinct buffers of `n` bytes, at
                // most a page; AVX only if the caller found it usable.
                unsafe {
                    match routine {
                        Routine::Memcpy => raw_copy(d, s, n, false),
                        Routine::Avx => raw_copy(d, s, n, true),
                        Routine::UserCopy => cma_glue_usercopy_routine(d.cast(), s.cast(), n),
                    }
                }
            }
            let took = start.elapsed_ns();
            *best = (*best).min(took);
        }
    }
    Ok(best)
}

/// Copies `len` bytes from `src` to `dst`.
///
/// # Safety
///
/// `src` must be valid for reading and `dst` for writing `len` bytes. The
/// ranges may overlap (the caller's buffer and the target's can be the same
/// shared page): both routines are assembly that touches only the two
/// ranges, so the bytes copied are then unspecified, but nothing else is.
pub(crate) unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) {
    if len < SIMD_MIN || !USE_SIMD.load(Ordering::Relaxed) {
        // SAFETY: the caller's guarantees.
        unsafe { raw_copy(dst, src, len, false) };
        return;
    }
    // AVX runs with preemption disabled: a page per FPU section.
    let mut done = 0;
    while done < len {
        // OVERFLOW: `done < len`, and `done + n <= len`.
        let n = (len - done).min(kernel::page::PAGE_SIZE);
        // SAFETY: within the caller's ranges; `USE_SIMD` is only set when
        // `cma_glue_simd_usable()` said so.
        unsafe { raw_copy(dst.add(done), src.add(done), n, true) };
        done += n;
    }
}

/// # Safety
///
/// As [`copy`]; `simd` only if `cma_glue_simd_usable()` is true, and then
/// `len` at most a page.
unsafe fn raw_copy(dst: *mut u8, src: *const u8, len: usize, simd: bool) {
    if simd {
        // SAFETY: the caller's guarantees, which are the glue's preconditions.
        unsafe { cma_glue_simd_copy(dst.cast(), src.cast(), len) };
    } else {
        // SAFETY: as above.
        unsafe { cma_glue_memcpy(dst.cast(), src.cast(), len) };
    }
}
