// SPDX-License-Identifier: GPL-2.0
/*
 * cma's C glue: the page-to-page copy routines, AVX and memcpy().
 *
 * Why C: AVX registers may only be used between kernel_fpu_begin() and
 * kernel_fpu_end(), and the moves are inline assembly the kernel's Rust
 * does not support; memcpy() is out of line here for the same routine
 * choice at load.
 */
#include <linux/instrumented.h>
#include <linux/string.h>
#include <asm/cpufeature.h>
#include <asm/fpu/api.h>

#include "glue.h"

/* Whether this CPU and kernel let us use AVX registers in process context. */
bool cma_glue_simd_usable(void)
{
	return boot_cpu_has(X86_FEATURE_AVX) &&
	       cpu_has_xfeatures(XFEATURE_MASK_SSE | XFEATURE_MASK_YMM, NULL) &&
	       irq_fpu_usable();
}

/*
 * Copies @len bytes between two kernel buffers with 32-byte AVX moves,
 * inside kernel_fpu_begin()/kernel_fpu_end() (which disable preemption: the
 * caller keeps @len small, a page). Only for CPUs where cma_glue_simd_usable()
 * said yes. Touches only the two ranges; if they overlap (one shared page
 * seen by both processes) the bytes copied are unspecified. KASAN sees the
 * accesses through the instrument_*() calls, which the asm would hide.
 */
void cma_glue_simd_copy(void *dst, const void *src, size_t len)
{
	size_t head = len & ~(size_t)127;
	size_t i;

	instrument_read(src, len);
	instrument_write(dst, len);
	kernel_fpu_begin();
	for (i = 0; i < head; i += 128)
		asm volatile("vmovdqu   (%[s]), %%ymm0\n\t"
			     "vmovdqu 32(%[s]), %%ymm1\n\t"
			     "vmovdqu 64(%[s]), %%ymm2\n\t"
			     "vmovdqu 96(%[s]), %%ymm3\n\t"
			     "vmovdqu %%ymm0,   (%[d])\n\t"
			     "vmovdqu %%ymm1, 32(%[d])\n\t"
			     "vmovdqu %%ymm2, 64(%[d])\n\t"
			     "vmovdqu %%ymm3, 96(%[d])\n\t"
			     : : [s] "r"(src + i), [d] "r"(dst + i) : "memory");
	kernel_fpu_end();
	if (head < len)
		memcpy(dst + head, src + head, len - head);
}

/* The kernel's memcpy(), out of line for Rust (and for calibration). */
void cma_glue_memcpy(void *dst, const void *src, size_t len)
{
	memcpy(dst, src, len);
}
