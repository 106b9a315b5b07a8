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

use crate::glue::*;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::bindings;
use kernel::prelude::*;

/// Pieces shorter than this use `memcpy` even when AVX was chosen.
const SIMD_MIN: usize = 512;

/// Whether [`copy`] uses AVX for long pieces (set once by [`select`]).
static USE_SIMD: AtomicBool = AtomicBool::new(false);

/// Bytes copied per timing run of [`select`].
const CALIBRATION_BYTES: usize = 64 * 1024;

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
    let simd = match param {
        0 => false,
        1 => usable,
        _ if !usable => false,
        _ => simd_is_faster()?,
    };
    USE_SIMD.store(simd, Ordering::Relaxed);
    Ok(())
}

/// Times both routines copying a page-sized piece at a time through
/// [`CALIBRATION_BYTES`] (best of several runs each), as [`copy`] would.
fn simd_is_faster() -> Result<bool> {
    let src = KVec::from_elem(0x5au8, CALIBRATION_BYTES, GFP_KERNEL)?;
    let mut dst = KVec::from_elem(0u8, CALIBRATION_BYTES, GFP_KERNEL)?;
    let mut best = [i64::MAX; 2];
    for _ in 0..5 {
        for (simd, best) in best.iter_mut().enumerate() {
            // SAFETY: `ktime_get` reads the monotonic clock; no preconditions.
            let start = unsafe { bindings::ktime_get() };
            for (d, s) in dst
                .chunks_mut(kernel::page::PAGE_SIZE)
                .zip(src.chunks(kernel::page::PAGE_SIZE))
            {
                // SAFETY: `d` and `s` are buffers of equal length, at most a
                // page, and AVX was found usable by the caller.
                unsafe { raw_copy(d.as_mut_ptr(), s.as_ptr(), d.len(), simd == 1) };
            }
            // SAFETY: as above.
            let took = unsafe { bindings::ktime_get() } - start;
            *best = (*best).min(took);
        }
    }
    Ok(best[1] < best[0])
}

/// Copies `len` bytes from `src` to `dst`.
///
/// # Safety
///
/// `src` must be valid for reading and `dst` for writing `len` bytes, and
/// `len` must be at most a page (the AVX routine runs with preemption
/// disabled). The ranges may overlap (the caller's buffer and the target's
/// can be the same shared page): both routines are assembly that touches only
/// the two ranges, so the bytes copied are then unspecified, but nothing else
/// is.
pub(crate) unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) {
    let simd = len >= SIMD_MIN && USE_SIMD.load(Ordering::Relaxed);
    // SAFETY: the caller's guarantees; `USE_SIMD` is only set when
    // `cma_glue_simd_usable()` said so.
    unsafe { raw_copy(dst, src, len, simd) };
}

/// # Safety
///
/// As [`copy`], and `simd` only if `cma_glue_simd_usable()` is true.
unsafe fn raw_copy(dst: *mut u8, src: *const u8, len: usize, simd: bool) {
    if simd {
        // SAFETY: the caller's guarantees, which are the glue's preconditions.
        unsafe { cma_glue_simd_copy(dst, src, len) };
    } else {
        // SAFETY: as above.
        unsafe { cma_glue_memcpy(dst, src, len) };
    }
}
