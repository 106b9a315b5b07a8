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
#include <linux/mmap_lock.h>
#include <linux/mmu_notifier.h>
#include <linux/mutex.h>
#include <linux/pid.h>
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
 * may run in another task's context: the last mmput) and the registry,
 * which the watch carries (rust/watch.rs's ExitWatcher: it outlives every
 * release callback of its watches).
 */
struct cma_exit_watch {
	struct mmu_notifier mn;
	/* Set by cma_glue_watch_exit(); the same for every watch while the
	 * module is loaded (one registry). */
	cma_rs_mm_released_fn *released;
	void *ctx;
};

static void cma_exit_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	struct cma_exit_watch *w = container_of(mn, struct cma_exit_watch, mn);
	cma_rs_mm_released_fn *released = READ_ONCE(w->released);
	void *ctx = READ_ONCE(w->ctx);

	if (released && ctx)
		released(ctx, mm);
}

static struct mmu_notifier *cma_exit_alloc(struct mm_struct *mm)
{
	struct cma_exit_watch *w = kzalloc(sizeof(*w), GFP_KERNEL_ACCOUNT);

	return w ? &w->mn : ERR_PTR(-ENOMEM);
}

static void cma_exit_free(struct mmu_notifier *mn)
{
	kfree(container_of(mn, struct cma_exit_watch, mn));
}

static const struct mmu_notifier_ops cma_exit_ops = {
	.release = cma_exit_release,
	.alloc_notifier = cma_exit_alloc,
	.free_notifier = cma_exit_free,
};

/*
 * Takes @mm's mmap_lock for writing, killably, and where VMAs have locks of
 * their own that mm_take_all_locks() (the first notifier of an mm) would
 * take uninterruptibly, each VMA's too, killably: on 7.x a zap
 * (MADV_DONTNEED) or a fault holds only its VMA's lock, for as long as its
 * task is kept off the CPU, which any user can arrange. Taken here, the
 * VMA locks stay ours until the mmap_lock is dropped, and
 * mm_take_all_locks() finds them taken. 0, or -EINTR with nothing held.
 */
int cma_glue_mmap_write_lock_all_killable(struct mm_struct *mm)
{
	if (mmap_write_lock_killable(mm))
		return -EINTR;
#ifdef CMA_HAVE_VMA_START_WRITE_KILLABLE
	{
		VMA_ITERATOR(vmi, mm, 0);
		struct vm_area_struct *vma;

		for_each_vma(vmi, vma) {
			if (vma_start_write_killable(vma)) {
				mmap_write_unlock(mm);
				return -EINTR;
			}
		}
	}
#endif
	return 0;
}

/*
 * A reference on the exit watch of the caller's mm (made if none), whose
 * release calls @released(@ctx, mm), or an ERR_PTR (-EINTR on a fatal
 * signal or, making the watch, any signal). Takes the mm's mmap_lock for
 * writing, killably: other processes can hold it for reading (a fault of
 * theirs in a map of this process), and a writer waiting uninterruptibly
 * would hold this process's other threads, and its exit, behind it. No
 * release can run before @released and @ctx are set: the caller runs in
 * the mm, which therefore has a user.
 */
struct mmu_notifier *cma_glue_watch_exit(cma_rs_mm_released_fn *released, void *ctx)
{
	struct mm_struct *mm = current->mm;
	struct mmu_notifier *mn;
	struct cma_exit_watch *w;

	if (cma_glue_mmap_write_lock_all_killable(mm))
		return ERR_PTR(-EINTR);
	mn = mmu_notifier_get_locked(&cma_exit_ops, mm);
	mmap_write_unlock(mm);
	if (IS_ERR(mn))
		return mn;
	w = container_of(mn, struct cma_exit_watch, mn);
	/* One owner per notifier: a second would take the first's callbacks. */
	if (WARN_ON_ONCE(READ_ONCE(w->ctx) && READ_ONCE(w->ctx) != ctx)) {
		mmu_notifier_put(mn);
		return ERR_PTR(-EBUSY);
	}
	WRITE_ONCE(w->ctx, ctx);
	WRITE_ONCE(w->released, released);
	return mn;
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
 * The page caches (rust/cache.rs): regions of an address space kept pinned
 * (or referenced) across copies, each of which must stop being used as soon
 * as the mapping of its range changes (munmap, mremap, mprotect,
 * MADV_DONTNEED, fork's COW, THP split or collapse, migration, exit).
 *
 * How: one mmu_notifier per mm (mmu_notifier_get_locked(), shared by every
 * cache of that mm: a cma_mm_watch), whose invalidate_range_start() marks
 * the regions it meets invalid and kicks their cache's work item, which
 * unpins them (an invalidation may run where sleeping is not allowed, or
 * with a page locked that unpinning would lock again). As KVM does, the
 * watch also counts the invalidations in flight and the span they cover: a
 * region made while one is in flight over its range is invalid from the
 * start, since the change it announces may not have reached the page
 * tables GUP reads. Nothing here ever waits for an invalidation to end: a
 * target that keeps invalidations in flight makes copies go uncached, never
 * sleep. (mmu_interval_notifier's read_begin() and remove() would wait,
 * uninterruptibly, for as long as such a target likes.)
 *
 * Locking: the watch's spinlock covers its hooks, their regions and the
 * in-flight count; a region's valid flag is written under it. Registration
 * takes the mm's mmap_lock for writing, killably, once per cache.
 */
struct cma_mm_watch {
	struct mmu_notifier mn;
	spinlock_t lock;
	struct list_head hooks;		/* cma_cache_hook.node */
	unsigned long active;		/* invalidations in flight */
	unsigned long busy_start;	/* the span they cover, while active */
	unsigned long busy_end;
};

struct cma_cache_hook {
	struct work_struct work;
	cma_rs_cache_reap_fn *reap;	/* the Rust cache's work (rust/watch.rs) */
	void *cache;			/* and its argument: the cache's shared part */
	struct mutex attach;		/* serialises the first attach */
	struct cma_mm_watch *watch;	/* set once, under @attach */
	struct list_head node;		/* on watch->hooks */
	struct list_head regions;	/* cma_region_watch.node */
};

struct cma_region_watch {
	struct list_head node;
	unsigned long start, end;
	struct cma_cache_hook *hook;
	bool valid;
};

/* Marks @hook's regions that meet [@start, @end) invalid; watch lock held. */
static void cma_hook_invalidate(struct cma_cache_hook *hook, unsigned long start,
				unsigned long end)
{
	struct cma_region_watch *r;
	bool any = false;

	list_for_each_entry(r, &hook->regions, node) {
		if (r->valid && r->start < end && start < r->end) {
			r->valid = false;
			any = true;
		}
	}
	if (any)
		schedule_work(&hook->work);
}

static int cma_mm_invalidate_start(struct mmu_notifier *mn,
				   const struct mmu_notifier_range *range)
{
	struct cma_mm_watch *w = container_of(mn, struct cma_mm_watch, mn);
	struct cma_cache_hook *hook;

	spin_lock(&w->lock);
	if (w->active++ == 0) {
		w->busy_start = range->start;
		w->busy_end = range->end;
	} else {
		w->busy_start = min(w->busy_start, range->start);
		w->busy_end = max(w->busy_end, range->end);
	}
	list_for_each_entry(hook, &w->hooks, node)
		cma_hook_invalidate(hook, range->start, range->end);
	spin_unlock(&w->lock);
	return 0;
}

static void cma_mm_invalidate_end(struct mmu_notifier *mn,
				  const struct mmu_notifier_range *range)
{
	struct cma_mm_watch *w = container_of(mn, struct cma_mm_watch, mn);

	spin_lock(&w->lock);
	/*
	 * Balanced: the notifier was registered under mm_take_all_locks(), so
	 * no invalidation was half done then.
	 */
	if (!WARN_ON_ONCE(w->active == 0))
		w->active--;
	spin_unlock(&w->lock);
}

/* The mm is going away: no region of it may be used again. */
static void cma_mm_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	struct cma_mm_watch *w = container_of(mn, struct cma_mm_watch, mn);
	struct cma_cache_hook *hook;

	spin_lock(&w->lock);
	list_for_each_entry(hook, &w->hooks, node)
		cma_hook_invalidate(hook, 0, ULONG_MAX);
	spin_unlock(&w->lock);
}

static struct mmu_notifier *cma_mm_alloc(struct mm_struct *mm)
{
	struct cma_mm_watch *w = kzalloc(sizeof(*w), GFP_KERNEL_ACCOUNT);

	if (!w)
		return ERR_PTR(-ENOMEM);
	spin_lock_init(&w->lock);
	INIT_LIST_HEAD(&w->hooks);
	return &w->mn;
}

static void cma_mm_free(struct mmu_notifier *mn)
{
	kfree(container_of(mn, struct cma_mm_watch, mn));
}

static const struct mmu_notifier_ops cma_mm_ops = {
	.release = cma_mm_release,
	.invalidate_range_start = cma_mm_invalidate_start,
	.invalidate_range_end = cma_mm_invalidate_end,
	.alloc_notifier = cma_mm_alloc,
	.free_notifier = cma_mm_free,
};

static void cma_cache_work(struct work_struct *work)
{
	struct cma_cache_hook *hook = container_of(work, struct cma_cache_hook, work);

	hook->reap(hook->cache);
}

/* The work item of the cache @cache, which calls @reap(@cache), or NULL. */
struct cma_cache_hook *cma_glue_cache_hook_new(cma_rs_cache_reap_fn *reap, void *cache)
{
	struct cma_cache_hook *hook = kzalloc(sizeof(*hook), GFP_KERNEL_ACCOUNT);

	if (!hook)
		return NULL;
	INIT_WORK(&hook->work, cma_cache_work);
	mutex_init(&hook->attach);
	INIT_LIST_HEAD(&hook->node);
	INIT_LIST_HEAD(&hook->regions);
	hook->reap = reap;
	hook->cache = cache;
	return hook;
}

/*
 * Attaches @hook to the watch of @mm (made if none): 0, or -EINTR if a fatal
 * signal came while waiting for the mmap_lock, or -ENOMEM. Idempotent; a
 * cache serves one mm, so every call names the same. The caller holds an
 * mm_users reference.
 */
static int cma_hook_attach(struct cma_cache_hook *hook, struct mm_struct *mm)
{
	struct mmu_notifier *mn;
	struct cma_mm_watch *w;
	int ret = 0;

	if (smp_load_acquire(&hook->watch))
		return 0;
	if (mutex_lock_killable(&hook->attach))
		return -EINTR;
	if (hook->watch)
		goto out;
	if (cma_glue_mmap_write_lock_all_killable(mm)) {
		ret = -EINTR;
		goto out;
	}
	mn = mmu_notifier_get_locked(&cma_mm_ops, mm);
	mmap_write_unlock(mm);
	if (IS_ERR(mn)) {
		ret = PTR_ERR(mn);
		goto out;
	}
	w = container_of(mn, struct cma_mm_watch, mn);
	spin_lock(&w->lock);
	list_add(&hook->node, &w->hooks);
	spin_unlock(&w->lock);
	smp_store_release(&hook->watch, w);
out:
	mutex_unlock(&hook->attach);
	return ret;
}

/*
 * Waits for the hook's work item, detaches the hook from its watch and
 * frees it. The cache has dropped its regions; a reap that was running
 * may still hold some it took out, which it drops before
 * cancel_work_sync() returns: only then is the hook's list empty, and
 * with no region left no invalidation can schedule the work again. Never
 * waits for an invalidation.
 */
void cma_glue_cache_hook_free(struct cma_cache_hook *hook)
{
	struct cma_mm_watch *w = hook->watch;

	cancel_work_sync(&hook->work);
	if (w) {
		spin_lock(&w->lock);
		WARN_ON_ONCE(!list_empty(&hook->regions));
		list_del(&hook->node);
		spin_unlock(&w->lock);
		/* Freed after an SRCU grace period: cma_glue_watch_sync(). */
		mmu_notifier_put(&w->mn);
	}
	kfree(hook);
}

/*
 * A watch on [@start, @start + @len) of @mm for @hook's cache, valid until
 * the mapping of the range changes; invalid from the start if a change of
 * it is in flight. An ERR_PTR if the hook cannot be attached (-EINTR,
 * -ENOMEM). The caller holds an mm_users reference on @mm.
 */
struct cma_region_watch *cma_glue_region_watch(struct mm_struct *mm, unsigned long start,
					       unsigned long len, struct cma_cache_hook *hook)
{
	struct cma_region_watch *r;
	struct cma_mm_watch *w;
	int ret;

	ret = cma_hook_attach(hook, mm);
	if (ret)
		return ERR_PTR(ret);
	r = kzalloc(sizeof(*r), GFP_KERNEL_ACCOUNT);
	if (!r)
		return ERR_PTR(-ENOMEM);
	r->start = start;
	r->end = start + len;
	r->hook = hook;
	w = hook->watch;
	spin_lock(&w->lock);
	r->valid = !(w->active && w->busy_start < r->end && start < w->busy_end);
	list_add(&r->node, &hook->regions);
	spin_unlock(&w->lock);
	return r;
}

/* Removes a watch and frees it. Never waits. */
void cma_glue_region_unwatch(struct cma_region_watch *r)
{
	struct cma_mm_watch *w = r->hook->watch;

	spin_lock(&w->lock);
	list_del(&r->node);
	spin_unlock(&w->lock);
	kfree(r);
}

/* Whether no change of the range's mapping began since the watch was made. */
bool cma_glue_region_valid(struct cma_region_watch *r)
{
	struct cma_mm_watch *w = r->hook->watch;
	bool valid;

	spin_lock(&w->lock);
	valid = r->valid;
	spin_unlock(&w->lock);
	return valid;
}
