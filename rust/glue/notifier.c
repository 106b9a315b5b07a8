// SPDX-License-Identifier: GPL-2.0
/*
 * cma's C glue: the mmu notifiers, their callbacks into Rust, and the
 * page cache's work item.
 *
 * Why C: 6.12's Rust has no mmu_notifier, mmu_interval_notifier or
 * workqueue-with-container_of abstraction; the callbacks only record what
 * happened and call Rust (rust/consent.rs, rust/cache.rs).
 */
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/workqueue.h>

#include "glue.h"

/*
 * Exit watches (rust/consent.rs): the registry forgets the grants made in an
 * address space when it is torn down (its last process exited, or exec()ed
 * a new image), through an mmu_notifier's release on that mm. One notifier
 * per mm (mmu_notifier_get), one reference per registry entry; the registry
 * keys its entries by the mm, so the release needs nothing but the mm (it
 * may run in another task's context: the last mmput).
 */
static void cma_exit_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	cma_rs_mm_released(mm);
}

static struct mmu_notifier *cma_exit_alloc(struct mm_struct *mm)
{
	struct mmu_notifier *mn = kzalloc(sizeof(*mn), GFP_KERNEL_ACCOUNT);

	return mn ? mn : ERR_PTR(-ENOMEM);
}

static void cma_exit_free(struct mmu_notifier *mn)
{
	kfree(mn);
}

static const struct mmu_notifier_ops cma_exit_ops = {
	.release = cma_exit_release,
	.alloc_notifier = cma_exit_alloc,
	.free_notifier = cma_exit_free,
};

/*
 * A reference on the exit watch of the caller's mm (made if none), or an
 * ERR_PTR. Takes the mm's mmap_lock for writing.
 */
struct mmu_notifier *cma_glue_watch_exit(void)
{
	return mmu_notifier_get(&cma_exit_ops, current->mm);
}

/* The mm a watch is on (identity only). */
struct mm_struct *cma_glue_watch_mm(struct mmu_notifier *mn)
{
	return mn->mm;
}

/* Drops a reference from cma_glue_watch_exit(); may be called from release. */
void cma_glue_unwatch_exit(struct mmu_notifier *mn)
{
	mmu_notifier_put(mn);
}

/*
 * Waits until no release callback runs and every watch is freed: after the
 * registry dropped all its references, before the module's code goes away.
 */
void cma_glue_watch_sync(void)
{
	mmu_notifier_synchronize();
}

/*
 * The page cache of a peer fd (rust/cache.rs): regions of the target's
 * memory kept pinned across copies, each watched by an interval notifier
 * that marks it stale when the target's mapping of the range changes
 * (munmap, mremap, mprotect, MADV_DONTNEED, fork's COW, THP split or
 * collapse, migration, exit). Stale regions are unpinned later, by the
 * cache's work item: an invalidation may run where sleeping is not allowed
 * (unpinning a dirty page takes its lock), or with a page locked that
 * unpinning would lock again.
 */
struct cma_cache_hook {
	struct work_struct work;
	void *cache;	/* the Rust cache's shared part, for the work */
};

static void cma_cache_work(struct work_struct *work)
{
	cma_rs_cache_reap(container_of(work, struct cma_cache_hook, work)->cache);
}

/* The work item of the cache @cache, or NULL. */
struct cma_cache_hook *cma_glue_cache_hook_new(void *cache)
{
	struct cma_cache_hook *hook = kzalloc(sizeof(*hook), GFP_KERNEL_ACCOUNT);

	if (!hook)
		return NULL;
	INIT_WORK(&hook->work, cma_cache_work);
	hook->cache = cache;
	return hook;
}

/* Waits for the work item and frees it; no region of its cache is left. */
void cma_glue_cache_hook_free(struct cma_cache_hook *hook)
{
	cancel_work_sync(&hook->work);
	kfree(hook);
}

struct cma_region_watch {
	struct mmu_interval_notifier mni;
	/* Orders mmu_interval_set_seq() with mmu_interval_read_retry(). */
	spinlock_t lock;
	struct cma_cache_hook *hook;
};

static bool cma_region_invalidate(struct mmu_interval_notifier *mni,
				  const struct mmu_notifier_range *range, unsigned long cur_seq)
{
	struct cma_region_watch *w = container_of(mni, struct cma_region_watch, mni);

	spin_lock(&w->lock);
	mmu_interval_set_seq(mni, cur_seq);
	spin_unlock(&w->lock);
	schedule_work(&w->hook->work);
	return true;
}

static const struct mmu_interval_notifier_ops cma_region_ops = {
	.invalidate = cma_region_invalidate,
};

/*
 * A watch on [@start, @start + @len) of @mm, whose invalidations kick @hook,
 * and in @seq the sequence to check the pages pinned next against; or an
 * ERR_PTR. Sleeps; no lock may be held.
 */
struct cma_region_watch *cma_glue_region_watch(struct mm_struct *mm, unsigned long start,
					       unsigned long len, struct cma_cache_hook *hook,
					       unsigned long *seq)
{
	struct cma_region_watch *w = kzalloc(sizeof(*w), GFP_KERNEL_ACCOUNT);
	int ret;

	if (!w)
		return ERR_PTR(-ENOMEM);
	spin_lock_init(&w->lock);
	w->hook = hook;
	ret = mmu_interval_notifier_insert(&w->mni, mm, start, len, &cma_region_ops);
	if (ret) {
		kfree(w);
		return ERR_PTR(ret);
	}
	*seq = mmu_interval_read_begin(&w->mni);
	return w;
}

/* Removes a watch (waiting for a running invalidation of it) and frees it. */
void cma_glue_region_unwatch(struct cma_region_watch *w)
{
	mmu_interval_notifier_remove(&w->mni);
	kfree(w);
}

/* Whether no invalidation of the range began since @seq was read. */
bool cma_glue_region_valid(struct cma_region_watch *w, unsigned long seq)
{
	bool valid;

	spin_lock(&w->lock);
	valid = !mmu_interval_read_retry(&w->mni, seq);
	spin_unlock(&w->lock);
	return valid;
}
