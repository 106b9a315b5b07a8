// SPDX-License-Identifier: GPL-2.0
/*
 * cma's C glue: copies between a pinned page run and user memory.
 *
 * Why C: the user-copy routines are inline functions and macros with
 * instrumentation (KASAN, fault injection) around them, and the write into
 * a pinned page needs copy_from_user() without its zeroing of the tail.
 */
#include <linux/fault-inject-usercopy.h>
#include <linux/highmem.h>
#include <linux/instrumented.h>
#include <linux/mm.h>
#include <linux/uaccess.h>

#include "glue.h"

/*
 * Pinned pages are reached through the direct map: one mapping covers a run
 * of physically consecutive pages (a folio, or pages that happen to follow
 * each other), so that a run is copied in one routine call. x86_64 only,
 * where there is no highmem.
 */
static_assert(!IS_ENABLED(CONFIG_HIGHMEM));

/*
 * How many of @pages[0..@n) (n >= 1) follow @pages[0] in physical memory;
 * with @one_folio, only those in @pages[0]'s folio.
 *
 * A copy to or from user memory must not span two folios: under
 * CONFIG_HARDENED_USERCOPY, check_heap_object() aborts (BUG) a copy that
 * starts in a large folio and goes on past its end, even into the
 * physically next page. Kernel-to-kernel copies through the direct map have
 * no such rule and may take the whole physical run.
 */
unsigned long cma_glue_contiguous_pages(struct page *const *pages, unsigned long n,
					bool one_folio)
{
	unsigned long pfn = page_to_pfn(pages[0]), i;
	struct folio *folio = page_folio(pages[0]);

	for (i = 1; i < n; i++) {
		if (page_to_pfn(pages[i]) != pfn + i)
			break;
		if (one_folio && page_folio(pages[i]) != folio)
			break;
	}
	return i;
}

/* The kernel address of a pinned @page (its direct map), and of its run. */
void *cma_glue_page_address(struct page *page)
{
	return page_address(page);
}

/*
 * Copies @n bytes at @offset of the run of pinned pages starting at @page
 * (see cma_glue_contiguous_pages) to user @to. Returns the number of bytes
 * not copied.
 */
unsigned long cma_glue_page_to_user(void __user *to, struct page *page, size_t offset, size_t n)
{
	return copy_to_user(to, page_address(page) + offset, n);
}

/*
 * Copies @n bytes from user @from to @offset of the run of pinned pages
 * starting at @page: like
 * copy_from_user() but without its zeroing of the bytes it could not copy,
 * which here would write to another process's page outside what the caller
 * asked for (as copy_from_user_iter() in lib/iov_iter.c). Returns the number
 * of bytes not copied.
 */
unsigned long cma_glue_user_to_page(struct page *page, size_t offset, const void __user *from,
				    size_t n)
{
	unsigned long left;
	void *k;

	might_fault();
	if (should_fail_usercopy() || !access_ok(from, n))
		return n;
	k = page_address(page);
	instrument_copy_from_user_before(k + offset, from, n);
	left = raw_copy_from_user(k + offset, from, n);
	instrument_copy_from_user_after(k + offset, from, n, left);
	return left;
}

/*
 * Copies @len bytes between two kernel buffers with the routine the user
 * copies use on this CPU (copy_user_generic: rep movsb with FSRM, else
 * rep_movs_alternative), for the load's measurement only.
 */
void cma_glue_usercopy_routine(void *dst, const void *src, size_t len)
{
	instrument_read(src, len);
	instrument_write(dst, len);
	if (copy_user_generic(dst, src, len))
		pr_warn_once("cma: a kernel-to-kernel calibration copy fell short\n");
}
