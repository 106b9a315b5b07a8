// SPDX-License-Identifier: GPL-2.0
/*
 * cma's C glue: maps of a target's memory (CMA_IOC_MAP, rust/map.rs).
 *
 * Why C: the kernel crate has no vm_operations_struct, page-fault or
 * mmu_notifier abstraction; the access decision stays in Rust (the ioctl,
 * and cma_rs_peer_map_ok() at each fault).
 *
 * A peer fd has an inode of its own (cma_glue_peer_fd()), whose i_mapping
 * holds the caller's mappings of the fd, at file offsets equal to the
 * target's addresses. Its state (struct cma_map_state, in i_private) is made by
 * the first CMA_IOC_MAP, outside any mmap_lock of the caller's: it
 * registers an mmu_notifier on the target's mm, which needs that mm's
 * mmap_lock for writing.
 *
 * Faults (cma_map_fault): the page is looked up in the target with
 * get_user_pages_remote(), as a copy would, and its pfn is put in the
 * caller's page table (a special PTE: no rmap, no refcount of its own). The
 * module keeps one page reference per mapped target page (@pages, indexed by
 * the target's page number) and drops it at the first invalidation of that
 * page, after unmapping it from the caller: a page can never be freed while
 * the caller maps it, and nothing is pinned longer than the target's
 * mapping of it lasts.
 *
 * Invalidations (cma_map_invalidate_start/_end), as KVM does them: each one
 * bumps @seq if it meets a mapped range, and counts itself in @active with
 * the span in flight; a fault inserts only if no invalidation in flight
 * covers its page, and checks after inserting that @seq did not move
 * (else it unmaps what it inserted). The unmapping from the caller is
 * the work item's (cma_map_work), never the notifier's: it starts an
 * invalidation of the caller's mm, and the kernel lets none run inside
 * another's callbacks, start or end (lockdep models them as one lock; two
 * callers mapping each other could otherwise deadlock). So an invalidation
 * that meets what the caller maps hands its span to the work item as it
 * begins and waits (bounded, see cma_map_invalidate_start()) until that
 * has unmapped it (unmap_mapping_range(), which synchronises with the
 * caller's munmap through i_mmap_rwsem) and dropped the references: our own
 * work item, on a queue of its own, not an invalidation nested in the
 * callback. Its end hands the span over again, for what a fault mapped
 * meanwhile. Until the work is done the span is busy for faults, and
 * @unstable stays up; if the wait timed out (contention in the caller's
 * address space), the caller may still read the old page meanwhile (kept
 * alive by the reference: never freed under the caller), and @unstable is
 * how a reader knows. An invalidation nested in our own unmapping (a
 * process mapping itself, or a caller mapped by another) is ignored: only
 * holes can be there.
 *
 * Writes go only where the target's page is writable by a copy: a PTE is
 * inserted read-only and approved for writing by our pfn_mkwrite under the
 * page-table lock, only while no invalidation meets it; the kernel then
 * makes it writable if it is still the approved entry.
 *
 * Nothing here waits for an invalidation to end: a fault whose page is
 * being invalidated returns without a PTE, and the access is retried (a
 * signal is taken on the way back to user space).
 *
 * Lock order: the caller's mmap_lock, then (trylock only) the target's;
 * i_mmap_rwsem of the peer fd's mapping, then page-table locks, then @lock
 * (a spinlock), then the xa_lock of @pages.
 */
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/hashtable.h>
#include <linux/mm.h>
#include <linux/mman.h>
#include <linux/mmap_lock.h>
#include <linux/mmu_notifier.h>
#include <linux/pagemap.h>
#include <linux/page_table_check.h>
#include <linux/sched/mm.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/srcu.h>
#include <linux/workqueue.h>
#include <linux/version.h>
#include <linux/xarray.h>
#include <uapi/linux/mman.h>

#include "glue.h"
#include "../../include/uapi/cma.h"

/* The value entry of @pages for a hole: the caller maps the zero page or
 * the sink there, until the work item unmaps it. */
#define CMA_HOLE xa_mk_value(0)
/* The mark of a page obtained for writing (FOLL_WRITE). */
#define CMA_WRITABLE XA_MARK_1
/* The mark of a hole, for the work item. */
#define CMA_HOLE_MARK XA_MARK_2

/* Operations in flight over target addresses: how many, and the span they
 * cover together (while any is). */
struct cma_span {
	unsigned long n;
	unsigned long start, end;
};

/* Counts one more operation over [@start, @end) in @span. */
static void cma_span_add(struct cma_span *span, unsigned long start, unsigned long end)
{
	if (span->n++ == 0) {
		span->start = start;
		span->end = end;
	} else {
		span->start = min(span->start, start);
		span->end = max(span->end, end);
	}
}

/* Whether an operation counted in @span may touch [@start, @end). */
static bool cma_span_meets(const struct cma_span *span, unsigned long start, unsigned long end)
{
	return span->n && start < span->end && span->start < end;
}

struct cma_map_state {
	struct mmu_notifier mn;
	/* The caller's mm's notifier, which moves @caller_generation of the
	 * status page; @caller_node is in its list. */
	struct cma_caller *caller;
	struct list_head caller_node;
	struct list_head node;		/* in @group's list */
	struct cma_map_group *group;	/* the maps of the same target */
	struct inode *inode;		/* the peer fd's: i_mapping */
	const void *peer;		/* the Rust Peer: cma_rs_peer_map_ok() */
	/* The caller's mm, the only one mapping the fd (CMA_IOC_MAP and mmap
	 * admit only it): only compared, never followed. */
	const struct mm_struct *caller_mm;
	spinlock_t lock;
	struct cma_span active;		/* invalidations in flight */
	/* Our own unmappings in flight (cma_map_zap(), the work), counted
	 * apart: an invalidation may end here without having started (it
	 * began before the notifier was registered), and must not end ours. */
	struct cma_span zapping;
	unsigned long seq;		/* bumped by invalidations of mapped ranges */
	bool raised;			/* @unstable counts the invalidations in flight */
	unsigned long lo, hi;		/* the target range ever mapped */
	unsigned long stale_start, stale_end;	/* left for the work item */
	/* Passes of the work item asked for (cma_map_defer()) and done: an
	 * invalidation that meets writable pages waits for its pass. */
	unsigned long zap_asked, zap_done;
	wait_queue_head_t zapped;	/* woken at the end of each pass */
	bool dead;			/* the target's mm was torn down */
	bool destroyed;			/* the peer fd is being released */
	struct xarray pages;		/* page number -> referenced page, or CMA_HOLE */
	struct work_struct work;
	/* Unmaps holes a while after they were mapped: at once, a reader
	 * would never get to read the stand-in it faulted in. */
	struct delayed_work hole_work;
	struct page *status;		/* struct cma_map_status */
	struct page *sink;		/* where writes to holes go */
};

/*
 * The caller's side: one notifier per caller mm that has maps
 * (mmu_notifier_get_locked()), however many peer fds it maps through, so
 * that a map state costs no notifier registration (mm_take_all_locks())
 * on the caller's mm after the first, and a change of it one callback.
 * Its maps are on @maps.
 */
struct cma_caller {
	struct mmu_notifier mn;
	spinlock_t lock;
	struct list_head maps;		/* cma_map_state.caller_node */
	/* A change of a target timed out waiting for a work item to unmap
	 * from this caller; cleared when one finishes a pass. */
	bool stalled;
};

/*
 * The map states by target, for withdrawals of consent
 * (cma_glue_maps_withdrawn()): one group per target mm that has maps,
 * hashed by the mm, so that a withdrawal visits the maps of its own process
 * and no one else's (a bucket holds groups of distinct targets). Each group
 * and state is charged to the caller that made it.
 */
struct cma_map_group {
	struct hlist_node node;
	const struct mm_struct *mm;	/* only compared */
	struct list_head maps;
};
static DEFINE_HASHTABLE(cma_groups, 10);
static DEFINE_SPINLOCK(cma_maps_lock);

/* The group of @mm, or NULL; cma_maps_lock held. */
static struct cma_map_group *cma_group_of(const struct mm_struct *mm)
{
	struct cma_map_group *g;

	hash_for_each_possible(cma_groups, g, node, (unsigned long)mm)
		if (g->mm == mm)
			return g;
	return NULL;
}

/* The target's notifier callbacks run under this, which the release of
 * the peer fd waits out before the map can go; each read side is a few
 * spinlock sections, never a pass over the caller's mappings (which one
 * user could make long for every other user's close): the work items do
 * those, and the release cancels them (cancel_work_sync()), its own only. */
DEFINE_STATIC_SRCU(cma_map_srcu);

/*
 * The work items' queue: high priority (a change of the target waits for a
 * pass), unbound (any idle CPU may run it, not only the one the waiting
 * change sleeps on; 7.x wants one of WQ_UNBOUND and WQ_PERCPU said), and
 * with a rescuer, since reclaim invalidates: a pass must not need a new
 * worker, which may need memory.
 */
static struct workqueue_struct *cma_map_wq;

int cma_glue_map_init(void)
{
	cma_map_wq = alloc_workqueue("cma_map", WQ_HIGHPRI | WQ_UNBOUND | WQ_MEM_RECLAIM, 0);
	return cma_map_wq ? 0 : -ENOMEM;
}

/* At unload, after every peer fd is gone (each cancelled its work). */
void cma_glue_map_exit(void)
{
	destroy_workqueue(cma_map_wq);
}

/*
 * Tasks inside our unmap_mapping_range(): an invalidation it causes in the
 * caller's mm, seen by another map of that mm, must not take a second
 * i_mmap_rwsem (lockdep cannot tell two maps' locks apart, and two callers
 * mapping each other could deadlock on them). Entries live on the
 * unmapping task's stack, with the caller's mm being unmapped from: only
 * invalidations of that mm are ours (reclaim or compaction entered from
 * the same task are not).
 */
struct cma_zapping {
	struct hlist_node node;
	struct task_struct *task;
	const struct mm_struct *mm;
};
static DEFINE_HASHTABLE(cma_zapping, 6);
static DEFINE_SPINLOCK(cma_zapping_lock);

static bool cma_nested(const struct mm_struct *mm)
{
	struct cma_zapping *z;
	bool found = false;

	spin_lock(&cma_zapping_lock);
	hash_for_each_possible(cma_zapping, z, node, (unsigned long)current)
		if (z->task == current && z->mm == mm)
			found = true;
	spin_unlock(&cma_zapping_lock);
	return found;
}

/* Unmaps target pages [@start, @end) from every mapping of @map. */
static void cma_map_unmap(struct cma_map_state *map, unsigned long start, unsigned long end)
{
	struct cma_zapping z = { .task = current, .mm = map->caller_mm };

	spin_lock(&cma_zapping_lock);
	hash_add(cma_zapping, &z.node, (unsigned long)current);
	spin_unlock(&cma_zapping_lock);
	unmap_mapping_range(map->inode->i_mapping, start, end - start, 1);
	spin_lock(&cma_zapping_lock);
	hash_del(&z.node);
	spin_unlock(&cma_zapping_lock);
}

static struct cma_map_status *cma_status(struct cma_map_state *map)
{
	return page_address(map->status);
}

/* A field of the status page, as an atomic (the page is ours, u64-aligned). */
#define STATUS(map, field) ((atomic64_t *)&cma_status(map)->field)

/* A reader's bytes may not be the target's from now on: the generation
 * moves after @unstable, so a reader that saw the old generation either sees
 * @unstable or a new generation. */
static void cma_status_unstable(struct cma_map_state *map)
{
	atomic64_inc(STATUS(map, unstable));
	smp_mb__after_atomic();
	atomic64_inc(STATUS(map, generation));
}

/* Drops the entry @entry of @pages, taken out by the caller. */
static void cma_map_drop(struct cma_map_state *map, void *entry)
{
	if (xa_is_value(entry))
		atomic64_dec(STATUS(map, unstable));
	else if (entry)
		put_page(entry);
}

/*
 * Stores @entry at @index of @pages if nothing is there but a reservation
 * (xa_cmpxchg() with NULL would not replace a reserved entry, and would
 * say it had), marked @mark if @marked; returns what was there (NULL if
 * stored), or an xa_err(). The pages' lock held; a reserved slot needs no
 * allocation.
 */
static void *cma_map_store(struct cma_map_state *map, unsigned long index, void *entry,
			   xa_mark_t mark, bool marked)
{
	XA_STATE(xas, &map->pages, index);
	void *curr = xas_load(&xas);

	if (curr && !xa_is_zero(curr))
		return curr;
	xas_store(&xas, entry);
	if (xas_error(&xas))
		return xa_mk_internal(xas_error(&xas));
	if (marked)
		xas_set_mark(&xas, mark);
	return NULL;
}

/* Takes out and drops the entries of target pages [@start, @end), which
 * are unmapped from the caller. */
static void cma_map_forget(struct cma_map_state *map, unsigned long start, unsigned long end)
{
	unsigned long index;
	void *entry;

	xa_for_each_range(&map->pages, index, entry, start >> PAGE_SHIFT,
			  (end - 1) >> PAGE_SHIFT)
		if (xa_cmpxchg(&map->pages, index, entry, NULL, 0) == entry)
			cma_map_drop(map, entry);
}

/*
 * Unmaps [@start, @end) from the caller and drops its entries, as an
 * invalidation of it would: counted in flight meanwhile, so that no fault
 * maps an entry of the range between the unmapping and the dropping (it
 * would map a page whose reference is about to go), and with @seq moved,
 * so that a fault already past its check unmaps what it inserts.
 */
static void cma_map_zap(struct cma_map_state *map, unsigned long start, unsigned long end)
{
	spin_lock(&map->lock);
	cma_span_add(&map->zapping, start, end);
	map->seq++;
	spin_unlock(&map->lock);
	cma_map_unmap(map, start, end);
	cma_map_forget(map, start, end);
	spin_lock(&map->lock);
	map->zapping.n--;
	spin_unlock(&map->lock);
}

/*
 * The work item: unmaps and forgets what invalidations left (the stale
 * span), then the holes, each of which a later touch looks up again.
 */
static void cma_map_work(struct work_struct *work)
{
	struct cma_map_state *map = container_of(work, struct cma_map_state, work);
	unsigned long start, end, taken;
	bool stale;

	/* The release of the peer fd cancels us after setting this. */
	if (READ_ONCE(map->destroyed))
		return;
	/*
	 * The span passes from stale to busy in one step: a fault never finds
	 * it neither, and so never maps an entry the invalidation left.
	 */
	spin_lock(&map->lock);
	start = map->stale_start;
	end = map->stale_end;
	stale = start < end;
	taken = map->zap_asked;
	map->stale_start = ULONG_MAX;
	map->stale_end = 0;
	if (stale) {
		cma_span_add(&map->zapping, start, end);
		map->seq++;
	}
	spin_unlock(&map->lock);
	if (stale) {
		cma_map_unmap(map, start, end);
		cma_map_forget(map, start, end);
		spin_lock(&map->lock);
		map->zapping.n--;
		spin_unlock(&map->lock);
		/* The count cma_map_defer() added. */
		atomic64_dec(STATUS(map, unstable));
	}
	/* Every pass asked for up to @taken is done, and unmapping from this
	 * caller works again. */
	spin_lock(&map->lock);
	map->zap_done = max(map->zap_done, taken);
	spin_unlock(&map->lock);
	WRITE_ONCE(map->caller->stalled, false);
	wake_up_all(&map->zapped);
}

/* Holes one run of the hole work forgets at most: threads that keep
 * noting holes ahead of it cannot keep one run going. */
#define CMA_HOLES_PER_RUN 64

/* The hole work: forgets and unmaps the holes noted so far, a batch a run. */
static void cma_map_hole_work(struct work_struct *work)
{
	struct cma_map_state *map = container_of(to_delayed_work(work), struct cma_map_state,
						 hole_work);
	unsigned int done = 0;
	unsigned long index;
	void *entry;

	/* The release of the peer fd cancels us after setting this. */
	if (READ_ONCE(map->destroyed))
		return;
	/*
	 * Each hole: its entry first, then its page table entries (a fault
	 * that maps the stand-in after this unmapping finds the entry gone
	 * and unmaps it itself), then its count.
	 */
	xa_for_each_marked(&map->pages, index, entry, CMA_HOLE_MARK) {
		if (done++ == CMA_HOLES_PER_RUN) {
			/* The rest in the next run (the fd's release cancels it). */
			schedule_delayed_work(&map->hole_work, 0);
			break;
		}
		if (xa_cmpxchg(&map->pages, index, entry, NULL, 0) != entry)
			continue;
		cma_map_unmap(map, index << PAGE_SHIFT, (index + 1) << PAGE_SHIFT);
		cma_map_drop(map, entry);
		cond_resched();
	}
}

/* Leaves [@start, @end) to the work item; @lock held. Returns the ticket
 * of the pass that will unmap it: done once @zap_done reaches it. */
static unsigned long cma_map_defer(struct cma_map_state *map, unsigned long start,
				   unsigned long end)
{
	if (map->stale_start >= map->stale_end)
		atomic64_inc(STATUS(map, unstable));
	map->stale_start = min(map->stale_start, start);
	map->stale_end = max(map->stale_end, end);
	queue_work(cma_map_wq, &map->work);
	return ++map->zap_asked;
}

/* Whether the pass of @ticket is done, or will never be needed (the peer
 * fd is going: no mapping of it is left). */
static bool cma_map_zapped(struct cma_map_state *map, unsigned long ticket)
{
	bool done;

	spin_lock(&map->lock);
	done = map->zap_done >= ticket || map->destroyed;
	spin_unlock(&map->lock);
	return done;
}

/* Whether the caller may map something of target pages [@start, @end):
 * an entry is noted there (a page, or a hole's stand-in). */
static bool cma_map_mapped_in(struct cma_map_state *map, unsigned long start,
			      unsigned long end)
{
	unsigned long index = start >> PAGE_SHIFT;

	return xa_find(&map->pages, &index, (end - 1) >> PAGE_SHIFT, XA_PRESENT);
}

/*
 * Whether the invalidation of [@start, @end) must unmap from the caller:
 * it meets a range ever mapped, the map is live, and it is not nested in
 * our own unmapping (the range is then one of the module's own maps,
 * VM_PFNMAP, which the lookup refuses, where this map can have only holes,
 * which its hole work unmaps anyway; deferring would reschedule the work
 * from the work, forever, for a map of itself). @lock held.
 */
static bool cma_map_meets(struct cma_map_state *map, const struct mmu_notifier_range *range)
{
	return max(range->start, map->lo) < min(range->end, map->hi) && !map->dead &&
	       !map->destroyed && !cma_nested(range->mm);
}

/* How long a change of the target waits for the caller's pages of it to
 * be unmapped, at most (cma_map_invalidate_start()). */
#define CMA_MAP_WAIT (HZ / 10)

/*
 * An invalidation begins: the range is busy (no fault maps a page of it
 * until the work item has unmapped it), @seq moves (a fault already past
 * its check unmaps what it inserts), and readers are told (@generation,
 * and @unstable until the work item is done).
 *
 * If the caller maps something of the range, the change waits (where it
 * may block) until the work item has unmapped the range from the caller:
 * the caller reaches no page the target is giving up or protecting once
 * the change takes effect (after fork() such a page is the child's too;
 * after munmap() of a shared file mapping it is the file's), and the
 * module's reference to the page is gone before reclaim, migration or
 * collapse look at it. The wait is for our own work item, on our own
 * queue, not for an invalidation of the caller's mm run here (see the top
 * of the file); that work waits for no invalidation of the target's (one
 * nested in our own unmapping is ignored: cma_map_meets()), and needs no
 * lock the target's change holds itself (the peer fd's i_mmap_rwsem, which
 * no change of the target takes, and the caller's page-table locks).
 *
 * A third party can still tie them: mm_take_all_locks() on the caller's mm
 * (an mmu notifier registered there) takes the peer fd's i_mmap_rwsem for
 * writing and then waits for the other files' and anon_vmas' locks, which
 * page_mkclean() and reclaim hold while they wait here. So the wait is
 * bounded (CMA_MAP_WAIT): past it, the change goes on, and the caller may
 * reach the old page until the work item is done (@unstable tells), as when
 * the change may not block (the OOM reaper's, which frees private pages of
 * a dying process). And once a wait for a caller has timed out, no change
 * waits for that caller's unmapping until one of its work items has
 * finished a pass (@stalled): one walk of page_mkclean() over many
 * mappings, each met by many maps, must not add its waits up. The wait is
 * for the caller's own unmapping, which takes microseconds; only contention
 * in the caller's own address space can make it last.
 */
static int cma_map_invalidate_start(struct mmu_notifier *mn,
				    const struct mmu_notifier_range *range)
{
	struct cma_map_state *map = container_of(mn, struct cma_map_state, mn);
	bool meets, raise = false;
	unsigned long ticket = 0;
	int id;

	id = srcu_read_lock(&cma_map_srcu);
	spin_lock(&map->lock);
	cma_span_add(&map->active, range->start, range->end);
	meets = cma_map_meets(map, range);
	if (meets) {
		unsigned long start = max(range->start, map->lo);
		unsigned long end = min(range->end, map->hi);

		map->seq++;
		raise = !map->raised;
		map->raised = true;
		if (mmu_notifier_range_blockable(range) && cma_map_mapped_in(map, start, end))
			ticket = cma_map_defer(map, start, end);
	}
	spin_unlock(&map->lock);
	if (meets) {
		atomic64_inc(STATUS(map, invalidations));
		if (raise)
			cma_status_unstable(map);
		else
			atomic64_inc(STATUS(map, generation));
	}
	srcu_read_unlock(&cma_map_srcu, id);
	/* The notifier's own SRCU keeps the state; the wait touches no more.
	 * A task killed meanwhile stops waiting (and the change goes on). */
	if (ticket && !READ_ONCE(map->caller->stalled) &&
	    !wait_event_killable_timeout(map->zapped, cma_map_zapped(map, ticket), CMA_MAP_WAIT))
		WRITE_ONCE(map->caller->stalled, true);
	return 0;
}

/*
 * An invalidation ends: what it met passes to the work item, which unmaps
 * it from the caller and drops its references. Not here: unmapping from
 * the caller starts an invalidation of the caller's mm, and the kernel lets
 * none run inside another's callbacks (lockdep models them as one lock).
 * Until the work is done the span stays busy for faults and @unstable up;
 * the page references keep the old pages alive meanwhile.
 */
static void cma_map_invalidate_end(struct mmu_notifier *mn,
				   const struct mmu_notifier_range *range)
{
	struct cma_map_state *map = container_of(mn, struct cma_map_state, mn);
	bool lower = false;
	int id;

	id = srcu_read_lock(&cma_map_srcu);
	spin_lock(&map->lock);
	if (cma_map_meets(map, range))
		cma_map_defer(map, max(range->start, map->lo), min(range->end, map->hi));
	/* An invalidation that began before the notifier was registered ends
	 * without having started here. */
	if (map->active.n && --map->active.n == 0 && map->raised) {
		map->raised = false;
		lower = true;
	}
	spin_unlock(&map->lock);
	if (lower)
		atomic64_dec(STATUS(map, unstable));
	srcu_read_unlock(&cma_map_srcu, id);
}

/*
 * The target's address space is being torn down: nothing of it may stay
 * mapped, and nothing will be mapped again. The unmapping is the work
 * item's, waited for as a change's is (cma_map_invalidate_start()):
 * bounded and killable, since this runs in whoever drops the target's last
 * mm reference, and the pass's length is the caller's to make.
 */
static void cma_map_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	struct cma_map_state *map = container_of(mn, struct cma_map_state, mn);
	unsigned long ticket = 0;
	bool was_dead;
	int id;

	id = srcu_read_lock(&cma_map_srcu);
	spin_lock(&map->lock);
	was_dead = map->dead || map->destroyed;
	map->dead = true;
	map->seq++;
	if (!was_dead && map->lo < map->hi)
		ticket = cma_map_defer(map, map->lo, map->hi);
	spin_unlock(&map->lock);
	/* For good: every reader falls back to a copy, which fails with
	 * ESRCH. */
	if (!was_dead)
		cma_status_unstable(map);
	srcu_read_unlock(&cma_map_srcu, id);
	if (ticket && !READ_ONCE(map->caller->stalled) &&
	    !wait_event_killable_timeout(map->zapped, cma_map_zapped(map, ticket), CMA_MAP_WAIT))
		WRITE_ONCE(map->caller->stalled, true);
}

/* The target's notifier is gone for good (after its grace period): no
 * callback of it runs, and the state left the caller's list at release. */
static void cma_map_free_notifier(struct mmu_notifier *mn)
{
	struct cma_map_state *map = container_of(mn, struct cma_map_state, mn);

	__free_page(map->status);
	__free_page(map->sink);
	kfree(map);
}

static const struct mmu_notifier_ops cma_map_ops = {
	.release = cma_map_release,
	.invalidate_range_start = cma_map_invalidate_start,
	.invalidate_range_end = cma_map_invalidate_end,
	.free_notifier = cma_map_free_notifier,
};

/* The caller's notifier (struct cma_caller), made by the first map state of
 * an mm (mmu_notifier_get_locked()), freed after the last one's put. */
static struct mmu_notifier *cma_caller_alloc(struct mm_struct *mm)
{
	struct cma_caller *caller = kzalloc(sizeof(*caller), GFP_KERNEL_ACCOUNT);

	if (!caller)
		return ERR_PTR(-ENOMEM);
	spin_lock_init(&caller->lock);
	INIT_LIST_HEAD(&caller->maps);
	return &caller->mn;
}

static void cma_caller_free(struct mmu_notifier *mn)
{
	kfree(container_of(mn, struct cma_caller, mn));
}

/*
 * A change of the caller's own address space begins or ends, or the
 * address space goes: @caller_generation of each of its maps moves (before
 * the change takes effect, and again when it is done: a reader that saw the
 * value of a change in flight sees it move). Only counters, under a
 * spinlock: this runs for every invalidation of the caller's mm, in
 * whatever context.
 */
static void cma_caller_moves(struct mmu_notifier *mn)
{
	struct cma_caller *caller = container_of(mn, struct cma_caller, mn);
	struct cma_map_state *map;

	spin_lock(&caller->lock);
	list_for_each_entry(map, &caller->maps, caller_node)
		atomic64_inc(STATUS(map, caller_generation));
	spin_unlock(&caller->lock);
}

static int cma_caller_invalidate_start(struct mmu_notifier *mn,
				       const struct mmu_notifier_range *range)
{
	cma_caller_moves(mn);
	return 0;
}

static void cma_caller_invalidate_end(struct mmu_notifier *mn,
				      const struct mmu_notifier_range *range)
{
	cma_caller_moves(mn);
}

static void cma_caller_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	cma_caller_moves(mn);
}

static const struct mmu_notifier_ops cma_caller_ops = {
	.release = cma_caller_release,
	.invalidate_range_start = cma_caller_invalidate_start,
	.invalidate_range_end = cma_caller_invalidate_end,
	.alloc_notifier = cma_caller_alloc,
	.free_notifier = cma_caller_free,
};

/* Takes @map off its caller's list and drops its use of the caller's
 * notifier. */
static void cma_caller_leave(struct cma_map_state *map)
{
	spin_lock(&map->caller->lock);
	list_del(&map->caller_node);
	spin_unlock(&map->caller->lock);
	mmu_notifier_put(&map->caller->mn);
}

/* Whether an invalidation in flight, one of our unmappings, or one the work
 * item has yet to do meets target range [@start, @end), or the map is dead;
 * @lock held. */
static bool cma_map_busy(struct cma_map_state *map, unsigned long start, unsigned long end)
{
	return map->dead || cma_span_meets(&map->active, start, end) ||
	       cma_span_meets(&map->zapping, start, end) ||
	       (start < map->stale_end && map->stale_start < end);
}

/* The protection of the sink's entry for a write to a hole: writable (a
 * write faults only in a writable mapping), since the sink is nobody's. */
static pgprot_t cma_sink_prot(struct vm_area_struct *vma)
{
	return vm_get_page_prot(vma->vm_flags);
}

/*
 * Touch again: the fault is retried from the start after the fault lock is
 * dropped, the CPU offered and fatal signals looked at. Returning
 * VM_FAULT_NOPAGE instead would do for a touch from user space, but a
 * kernel access to the map (read(2) into it, say) would re-run the
 * faulting instruction at once, for as long as the reason lasts, unkillable.
 */
static vm_fault_t cma_map_again(struct vm_fault *vmf)
{
	if ((vmf->flags & FAULT_FLAG_ALLOW_RETRY) && !(vmf->flags & FAULT_FLAG_RETRY_NOWAIT)) {
		release_fault_lock(vmf);
		cond_resched();
		return VM_FAULT_RETRY;
	}
	return VM_FAULT_NOPAGE;
}

/*
 * A touch that found no target page: the zero page (reads) or the sink
 * (writes), noted as a hole, which the work item unmaps soon.
 */
static vm_fault_t cma_map_hole(struct vm_fault *vmf, struct cma_map_state *map, bool write,
				unsigned long seq)
{
	struct vm_area_struct *vma = vmf->vma;
	unsigned long taddr = vmf->pgoff << PAGE_SHIFT;
	vm_fault_t ret;
	bool gone;
	void *old;

	if (xa_reserve(&map->pages, vmf->pgoff, GFP_KERNEL_ACCOUNT))
		return VM_FAULT_OOM;
	xa_lock(&map->pages);
	old = cma_map_store(map, vmf->pgoff, CMA_HOLE, CMA_HOLE_MARK, true);
	xa_unlock(&map->pages);
	if (xa_is_err(old)) {
		xa_release(&map->pages, vmf->pgoff);
		return cma_map_again(vmf);
	}
	if (!old) {
		cma_status_unstable(map);
		atomic64_inc(STATUS(map, holes));
		schedule_delayed_work(&map->hole_work, HZ / 20);
	} else if (!xa_is_value(old)) {
		/*
		 * A page is noted here that this touch cannot use (the access
		 * check failed, or a write found the target's page not
		 * writable for it), or one came meanwhile: forget it, so that
		 * the next touch either notes the hole or maps a page, and
		 * never comes back here for good.
		 */
		cma_map_zap(map, taddr, taddr + PAGE_SIZE);
		return cma_map_again(vmf);
	}
	if (write)
		ret = vmf_insert_pfn_prot(vma, vmf->address, page_to_pfn(map->sink),
					  cma_sink_prot(vma));
	else
		ret = vmf_insert_pfn_prot(vma, vmf->address,
					  page_to_pfn(ZERO_PAGE(vmf->address)), vma->vm_page_prot);
	/*
	 * The stand-in stays only while the hole is noted (the work item
	 * unmaps it when it forgets the hole) and nothing changed meanwhile.
	 */
	spin_lock(&map->lock);
	gone = map->seq != seq;
	spin_unlock(&map->lock);
	if (gone || xa_load(&map->pages, vmf->pgoff) != CMA_HOLE) {
		cma_map_unmap(map, taddr, taddr + PAGE_SIZE);
		ret = VM_FAULT_NOPAGE;
	}
	return ret;
}

/*
 * Faults the target's page at @taddr in (for writing if @flags says so)
 * and waits until it is unlocked, holding nothing of the caller's, every
 * wait killable: the slow half of cma_map_lookup(), after which the fault
 * is retried.
 */
static void cma_map_prefault(struct mm_struct *mm, unsigned long taddr, unsigned int flags)
{
	struct page *page;
	int locked = 1;

	if (mmap_read_lock_killable(mm))
		return;
	if (get_user_pages_remote(mm, taddr, 1, flags, &page, &locked) == 1) {
		if (locked)
			mmap_read_unlock(mm);
		locked = 0;
		/* A page to dirty is locked to be (a mapped page is up to date). */
		if (flags & FOLL_WRITE)
			folio_wait_locked_killable(page_folio(page));
		put_page(page);
	}
	if (locked)
		mmap_read_unlock(mm);
}

/*
 * The target's page at @taddr, with a reference, looked up as a copy would
 * (for writing if @write), or NULL (no page: a hole), or ERR_PTR(-EAGAIN):
 * the fault lock was dropped to wait, and the fault is retried.
 *
 * The caller's mmap_lock is held: nothing of the target's is waited for
 * under it. Its mmap_lock only by trylock (two processes mapping each other
 * would deadlock), its page's lock by trylock, and no fault of the target's
 * runs under it on a first try (FOLL_NOFAULT): even with FOLL_NOWAIT a
 * fault may wait for what the target or a FUSE server holds (a synchronous
 * read, page_mkwrite, writeback). What is not there at once is faulted in
 * or waited for with the fault lock dropped, killably (cma_map_prefault()),
 * and the fault retried; a retried fault (FAULT_FLAG_TRIED), and one that
 * cannot retry, may fault what does not wait (FOLL_NOWAIT), so that a page
 * the target drops meanwhile does not send us round again and again, and
 * a page that only needs a minor fault is not a hole.
 */
static struct page *cma_map_lookup(struct vm_fault *vmf, struct cma_map_state *map,
				   unsigned long taddr, bool write)
{
	bool first = !(vmf->flags & FAULT_FLAG_TRIED) && (vmf->flags & FAULT_FLAG_ALLOW_RETRY);
	unsigned int flags = write ? FOLL_WRITE : 0;
	struct mm_struct *mm = map->mn.mm;
	struct page *page = NULL;
	struct folio *folio;
	long n = 0;

	if (!mmget_not_zero(mm))
		return NULL;
	if (mmap_read_trylock(mm)) {
		/* 0: a fault would have waited. A first try's error may be a
		 * page to fault in: the slow way tells. */
		n = get_user_pages_remote(mm, taddr, 1, flags | (first ? FOLL_NOFAULT : FOLL_NOWAIT),
					  &page, NULL);
		mmap_read_unlock(mm);
		if (n < 0 && first)
			n = 0;
	}
	if (n == 1 && write) {
		folio = page_folio(page);
		if (folio_trylock(folio)) {
			folio_mark_dirty(folio);
			folio_unlock(folio);
		} else {
			put_page(page);
			n = 0;
		}
	}
	if (n != 0 || !(vmf->flags & FAULT_FLAG_ALLOW_RETRY)) {
		mmput_async(mm);
		return n == 1 ? page : NULL;
	}
	if (!(vmf->flags & FAULT_FLAG_RETRY_NOWAIT)) {
		release_fault_lock(vmf);
		cma_map_prefault(mm, taddr, flags);
	}
	mmput_async(mm);
	return ERR_PTR(-EAGAIN);
}

static vm_fault_t cma_map_fault(struct vm_fault *vmf)
{
	struct vm_area_struct *vma = vmf->vma;
	struct cma_map_state *map = vma->vm_private_data;
	unsigned long index = vmf->pgoff, taddr = index << PAGE_SHIFT;
	bool write = vmf->flags & FAULT_FLAG_WRITE;
	bool dead, busy, stale, writable, changed;
	unsigned long seq, ticket;
	struct page *page;
	vm_fault_t ret;
	void *entry;

	spin_lock(&map->lock);
	dead = map->dead;
	busy = cma_map_busy(map, taddr, taddr + PAGE_SIZE);
	stale = taddr >= map->stale_start && taddr < map->stale_end;
	ticket = map->zap_asked;
	seq = map->seq;
	spin_unlock(&map->lock);
	if (dead)
		return cma_map_hole(vmf, map, write, seq);
	if (stale && (vmf->flags & FAULT_FLAG_ALLOW_RETRY) &&
	    !(vmf->flags & FAULT_FLAG_RETRY_NOWAIT)) {
		/*
		 * The work item has yet to unmap this page: wait for its pass
		 * (the latest asked covers the stale span) rather than fault
		 * again and again, without our mmap_lock (the work takes none
		 * of it), the file keeping the map, killably (a pass can take
		 * long: it unmaps every mapping of the fd).
		 */
		struct file *file = get_file(vma->vm_file);

		release_fault_lock(vmf);
		wait_event_killable(map->zapped, cma_map_zapped(map, ticket));
		fput(file);
		return VM_FAULT_RETRY;
	}
	if (busy)
		return cma_map_again(vmf);
	/* The decision the fd holds must still admit the caller. */
	if (!cma_rs_peer_map_ok(map->peer))
		return cma_map_hole(vmf, map, write, seq);

	/* A page another mapping of this fd already holds. */
	xa_lock(&map->pages);
	entry = xa_load(&map->pages, index);
	writable = entry && xa_get_mark(&map->pages, index, CMA_WRITABLE);
	if (entry && !xa_is_value(entry) && (writable || !write))
		get_page(entry);
	else if (entry && !xa_is_value(entry))
		entry = NULL;	/* read-only: look it up for writing */
	xa_unlock(&map->pages);
	if (xa_is_value(entry))
		return cma_map_hole(vmf, map, write, seq);
	page = entry;
	if (!page) {
		page = cma_map_lookup(vmf, map, taddr, write);
		if (IS_ERR(page))
			return VM_FAULT_RETRY;
		if (!page)
			return cma_map_hole(vmf, map, write, seq);
		/*
		 * Two references: the lookup's goes to @pages, the other is
		 * this fault's until it returns. The entry is stored only if
		 * no invalidation began since @seq was read (under @lock, which
		 * every invalidation takes to move @seq), so @pages never
		 * holds a page the target no longer maps; its room is made
		 * first, outside the spinlock.
		 */
		if (xa_reserve(&map->pages, index, GFP_KERNEL_ACCOUNT)) {
			put_page(page);
			return VM_FAULT_OOM;
		}
		get_page(page);
		spin_lock(&map->lock);
		changed = map->seq != seq || cma_map_busy(map, taddr, taddr + PAGE_SIZE);
		entry = NULL;
		if (!changed) {
			xa_lock(&map->pages);
			entry = cma_map_store(map, index, page, CMA_WRITABLE, write);
			if (entry == page && write)
				__xa_set_mark(&map->pages, index, CMA_WRITABLE);
			xa_unlock(&map->pages);
		}
		spin_unlock(&map->lock);
		if (changed || entry) {
			/*
			 * Changed meanwhile; or another fault got there first
			 * (the same page: its entry's reference serves), or the
			 * entry is changing: touch again.
			 */
			bool same = !changed && entry == page;

			xa_release(&map->pages, index);
			put_page(page);
			if (!same) {
				put_page(page);
				return cma_map_again(vmf);
			}
		}
	}
	/*
	 * Read-only, even for a write: the retried write makes it writable
	 * in cma_map_pfn_mkwrite(), under the page-table lock, only if no
	 * invalidation began meanwhile (a writable entry inserted here could
	 * be reached by the caller's other threads after an invalidation
	 * began, until this fault checks @seq again).
	 */
	ret = vmf_insert_pfn_prot(vma, vmf->address, page_to_pfn(page), vma->vm_page_prot);
	/* Pairs with the invalidation's seq++ under the lock. */
	spin_lock(&map->lock);
	changed = map->seq != seq || cma_map_busy(map, taddr, taddr + PAGE_SIZE);
	spin_unlock(&map->lock);
	if (changed) {
		/* An invalidation raced with the lookup: what was inserted may
		 * be a page the target no longer maps. */
		cma_map_zap(map, taddr, taddr + PAGE_SIZE);
		ret = VM_FAULT_NOPAGE;
	}
	put_page(page);
	return ret;
}

/* A write fault's request to make a caller's entry writable. */
struct cma_mkwrite {
	struct cma_map_state *map;
	struct mm_struct *mm;
	unsigned long index;	/* the target's page number */
	pte_t orig;		/* the entry the fault met */
	bool done;
};

/*
 * Under the caller's page-table lock: approves the entry for writing
 * (marks it dirty) if it still maps the page the fault met, no
 * invalidation meets that page, and its entry in @pages is that page
 * obtained for writing. An invalidation moves @seq and its span under
 * @lock before it unmaps under this page-table lock, so either it is seen
 * here, or its unmapping comes after this and takes the entry away
 * (writable or about to be) before its change takes effect.
 */
static int cma_map_mkwrite_pte(pte_t *ptep, unsigned long addr, void *data)
{
	struct cma_mkwrite *w = data;
	struct cma_map_state *map = w->map;
	unsigned long taddr = w->index << PAGE_SHIFT;
	pte_t pte = ptep_get(ptep);
	void *entry;
	bool ok;

	if (!pte_present(pte) || pte_pfn(pte) != pte_pfn(w->orig))
		return 0;
	if (pte_write(pte)) {
		/* Another fault made it writable, after the same checks. */
		w->orig = pte;
		w->done = true;
		return 0;
	}
	spin_lock(&map->lock);
	ok = !cma_map_busy(map, taddr, taddr + PAGE_SIZE);
	if (ok) {
		xa_lock(&map->pages);
		entry = xa_load(&map->pages, w->index);
		ok = entry && !xa_is_value(entry) &&
		     xa_get_mark(&map->pages, w->index, CMA_WRITABLE) &&
		     page_to_pfn((struct page *)entry) == pte_pfn(pte);
		xa_unlock(&map->pages);
	}
	spin_unlock(&map->lock);
	if (ok) {
		/*
		 * Dirty, still read-only: the kernel makes it writable after we
		 * return (ptep_set_access_flags(), with the flush each
		 * architecture needs) only if it is still this entry. An entry
		 * unmapped and inserted again since is clean, so it is not.
		 */
		pte = pte_mkdirty(pte);
		set_pte_at(w->mm, addr, ptep, pte);
		w->orig = pte;
		w->done = true;
	}
	return 0;
}

/*
 * A write to a page mapped read-only (every page is mapped so first). If
 * the caller is still admitted and the page is the target's current page
 * obtained for writing, the entry is approved here, under the page-table
 * lock, with the checks of cma_map_mkwrite_pte(), and the kernel makes it
 * writable if it is still the approved (dirty) entry: a bare "still the
 * same entry" check after ours would not do, since between the two the
 * page could be unmapped and mapped again read-only, for a read, by then a
 * page the target shares with a child. Otherwise it is unmapped, and the
 * retried write faults it in for writing. The fault holds the mmap_lock
 * (the kernel calls pfn_mkwrite under no per-VMA lock), so the page table
 * walked stays (apply_to_page_range(), the one of the two walks 7.x still
 * exports, allocates only tables that are missing: none here); and the PMD
 * above a PTE that faulted is no leaf (only our huge fault makes one, where
 * there is no table), which the walk would refuse. (mprotect() making the map writable again also upgrades dirty
 * entries only: the approved ones.)
 */
static vm_fault_t cma_map_pfn_mkwrite(struct vm_fault *vmf)
{
	struct cma_map_state *map = vmf->vma->vm_private_data;
	unsigned long taddr = vmf->pgoff << PAGE_SHIFT;
	struct cma_mkwrite w = {
		.map = map,
		.mm = vmf->vma->vm_mm,
		.index = vmf->pgoff,
		.orig = vmf->orig_pte,
	};

	if (cma_rs_peer_map_ok(map->peer) &&
	    !apply_to_page_range(w.mm, vmf->address & PAGE_MASK, PAGE_SIZE, cma_map_mkwrite_pte,
				 &w) &&
	    w.done) {
		if (pte_write(w.orig))
			return VM_FAULT_NOPAGE;
		vmf->orig_pte = w.orig;
		return 0;
	}
	cma_map_unmap(map, taddr, taddr + PAGE_SIZE);
	return VM_FAULT_NOPAGE;
}

static int cma_map_may_split(struct vm_area_struct *vma, unsigned long addr)
{
	return -EINVAL;
}

static int cma_map_mremap(struct vm_area_struct *vma)
{
	return -EINVAL;
}

/* The last mapping of the fd went: drop the references it left. */
static void cma_map_close(struct vm_area_struct *vma)
{
	struct cma_map_state *map = vma->vm_private_data;

	if (!mapping_mapped(map->inode->i_mapping))
		cma_map_forget(map, PAGE_SIZE, TASK_SIZE_MAX);
}

#ifdef CONFIG_TRANSPARENT_HUGEPAGE
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 17, 0)
#define cma_insert_pmd(vmf, pfn, write) vmf_insert_pfn_pmd(vmf, pfn, write)
#else
#include <linux/pfn_t.h>
#define cma_insert_pmd(vmf, pfn, write) vmf_insert_pfn_pmd(vmf, __pfn_to_pfn_t(pfn, 0), write)
#endif

/*
 * Whether a PMD of @folio would trip page_table_check, where it is on: it
 * counts a special PMD (not a special PTE) as a mapping, and BUGs when an
 * anonymous page mapped twice is mapped writable again (by the target).
 */
static bool cma_pmd_checked(struct folio *folio)
{
#ifdef CONFIG_PAGE_TABLE_CHECK
	return !static_branch_likely(&page_table_check_disabled) && folio_test_anon(folio);
#else
	return false;
#endif
}

/*
 * The target's pages of [@taddr, @taddr + PMD_SIZE) into @pages, with a
 * reference each, if they are there already (nothing is faulted in for a
 * whole huge page: a copy of one byte would not) and are one PMD-sized folio,
 * in order: true; else false, holding nothing.
 */
static bool cma_map_lookup_pmd(struct cma_map_state *map, unsigned long taddr,
			       struct page **pages)
{
	struct mm_struct *mm = map->mn.mm;
	struct folio *folio;
	bool whole;
	long n, i;

	if (!mmget_not_zero(mm))
		return false;
	/* Never wait under the caller's mmap_lock: the page path waits. */
	if (!mmap_read_trylock(mm)) {
		mmput_async(mm);
		return false;
	}
	n = get_user_pages_remote(mm, taddr, HPAGE_PMD_NR, FOLL_NOFAULT, pages, NULL);
	mmap_read_unlock(mm);
	mmput_async(mm);
	if (n <= 0)
		return false;
	folio = page_folio(pages[0]);
	/*
	 * Only a folio someone owns, anonymous or a file's: never the huge
	 * zero page (a target's read of untouched memory maps it), whose PMD
	 * the kernel zaps as its own, with a page table it expects deposited
	 * (7.x: an oops at the caller's munmap). Its pages go one by one.
	 */
	whole = n == HPAGE_PMD_NR && folio_nr_pages(folio) == HPAGE_PMD_NR &&
		folio_page(folio, 0) == pages[0] && !cma_pmd_checked(folio) &&
		(folio_test_anon(folio) || READ_ONCE(folio->mapping));
	for (i = 1; whole && i < n; i++)
		whole = pages[i] == folio_page(folio, i);
	if (!whole) {
		for (i = 0; i < n; i++)
			put_page(pages[i]);
		return false;
	}
	return true;
}

/*
 * A fault on a 2 MiB-aligned range of the caller whose target range is a
 * whole huge page: one PMD, whose 512 page references go to @pages like the
 * page path's (so every invalidation, forget and unmap works page by page;
 * unmapping part of the PMD unmaps all of it, and the rest faults in again
 * page by page). Anything else, or any doubt: VM_FAULT_FALLBACK, and the
 * page path decides.
 */
static vm_fault_t cma_map_huge_fault(struct vm_fault *vmf, unsigned int order)
{
	struct vm_area_struct *vma = vmf->vma;
	struct cma_map_state *map = vma->vm_private_data;
	unsigned long haddr = vmf->address & PMD_MASK;
	unsigned long index, taddr, seq, first, i;
	bool write = vmf->flags & FAULT_FLAG_WRITE;
	struct page **pages;
	vm_fault_t ret = VM_FAULT_FALLBACK;
	bool ok;

	/*
	 * Reads only: a PMD is always mapped read-only (a write to it splits
	 * it and goes page by page), so vmf_insert_pfn_pmd() never meets an
	 * entry it would have to make writable (it WARNs on a different pfn
	 * there), and a writable PMD never outlives a change of the target.
	 */
	if (order != PMD_ORDER || write || haddr < vma->vm_start ||
	    haddr + PMD_SIZE > vma->vm_end)
		return VM_FAULT_FALLBACK;
	if (vmf->pmd && !pmd_none(*vmf->pmd))
		return VM_FAULT_FALLBACK;
	index = vma->vm_pgoff + ((haddr - vma->vm_start) >> PAGE_SHIFT);
	taddr = index << PAGE_SHIFT;
	if (taddr & ~PMD_MASK)
		return VM_FAULT_FALLBACK;
	spin_lock(&map->lock);
	ok = !cma_map_busy(map, taddr, taddr + PMD_SIZE);
	seq = map->seq;
	spin_unlock(&map->lock);
	if (!ok || !cma_rs_peer_map_ok(map->peer))
		return VM_FAULT_FALLBACK;
	/* Pages some mapping of the fd holds already: page by page. */
	first = index;
	if (xa_find(&map->pages, &first, index + HPAGE_PMD_NR - 1, XA_PRESENT))
		return VM_FAULT_FALLBACK;
	pages = kvmalloc_array(HPAGE_PMD_NR, sizeof(*pages), GFP_KERNEL);
	if (!pages)
		return VM_FAULT_FALLBACK;
	if (!cma_map_lookup_pmd(map, taddr, pages))
		goto out;
	for (i = 0; i < HPAGE_PMD_NR; i++)
		if (xa_reserve(&map->pages, index + i, GFP_KERNEL_ACCOUNT))
			break;
	ok = i == HPAGE_PMD_NR;
	/* Stored only if nothing changed since @seq and every slot is free. */
	spin_lock(&map->lock);
	ok = ok && map->seq == seq && !cma_map_busy(map, taddr, taddr + PMD_SIZE);
	if (ok) {
		xa_lock(&map->pages);
		for (i = 0; ok && i < HPAGE_PMD_NR; i++)
			ok = !xa_load(&map->pages, index + i);
		/*
		 * Free under the lock held since; a store may still fail (a
		 * page fault's xa_release() may have taken our reservation,
		 * and the node is then allocated without sleeping): undo
		 * what was stored (nobody saw it: every reader of @pages
		 * takes its lock).
		 */
		for (i = 0; ok && i < HPAGE_PMD_NR; i++)
			ok = !cma_map_store(map, index + i, pages[i], CMA_WRITABLE, false);
		if (!ok)
			while (i-- > 0)
				__xa_erase(&map->pages, index + i);
		xa_unlock(&map->pages);
	}
	spin_unlock(&map->lock);
	if (!ok) {
		for (i = 0; i < HPAGE_PMD_NR; i++) {
			xa_release(&map->pages, index + i);
			put_page(pages[i]);
		}
		goto out;
	}
	/* This fault's own reference, until it returns. */
	get_page(pages[0]);
	ret = cma_insert_pmd(vmf, page_to_pfn(pages[0]), false);
	spin_lock(&map->lock);
	ok = map->seq == seq && !cma_map_busy(map, taddr, taddr + PMD_SIZE);
	spin_unlock(&map->lock);
	if (!ok) {
		cma_map_zap(map, taddr, taddr + PMD_SIZE);
		ret = VM_FAULT_NOPAGE;
	} else if (ret == VM_FAULT_NOPAGE) {
		atomic64_inc(STATUS(map, pmds));
	}
	put_page(pages[0]);
out:
	kvfree(pages);
	return ret;
}
#endif

static const struct vm_operations_struct cma_map_vm_ops = {
	.fault = cma_map_fault,
#ifdef CONFIG_TRANSPARENT_HUGEPAGE
	.huge_fault = cma_map_huge_fault,
#endif
	.pfn_mkwrite = cma_map_pfn_mkwrite,
	.may_split = cma_map_may_split,
	.mremap = cma_map_mremap,
	.close = cma_map_close,
};

static const struct vm_operations_struct cma_status_vm_ops = {
	.may_split = cma_map_may_split,
	.mremap = cma_map_mremap,
};

/*
 * The map state of the peer fd @file for the target @mm (made if none):
 * 0, -EINTR on a fatal signal while waiting for @mm's mmap_lock, -ENOMEM.
 * The caller holds a user of @mm and no mmap_lock.
 */
int cma_glue_map_state(struct file *file, const void *peer, struct mm_struct *mm)
{
	struct inode *inode = file_inode(file);
	struct cma_map_group *group = NULL;
	struct mmu_notifier *caller;
	struct cma_map_state *map;
	int ret;

	if (smp_load_acquire(&inode->i_private))
		return 0;
	if (!current->mm)
		return -EINVAL;	/* a kernel thread maps nothing */
	if (inode_lock_killable(inode))
		return -EINTR;
	ret = 0;
	if (inode->i_private)
		goto out;
	ret = -ENOMEM;
	map = kzalloc(sizeof(*map), GFP_KERNEL_ACCOUNT);
	if (!map)
		goto out;
	map->status = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);
	map->sink = alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO);
	group = kzalloc(sizeof(*group), GFP_KERNEL_ACCOUNT);
	if (!map->status || !map->sink || !group)
		goto free;
	map->inode = inode;
	map->peer = peer;
	map->caller_mm = current->mm;
	spin_lock_init(&map->lock);
	map->lo = ULONG_MAX;
	map->stale_start = ULONG_MAX;
	xa_init(&map->pages);
	INIT_WORK(&map->work, cma_map_work);
	INIT_DELAYED_WORK(&map->hole_work, cma_map_hole_work);
	init_waitqueue_head(&map->zapped);
	map->mn.ops = &cma_map_ops;
	/*
	 * The caller's side first: its callbacks touch only the status page,
	 * so if the target's notifier cannot be registered, leaving is safe
	 * while the state is unpublished (the target's would reach the inode,
	 * which may be gone once the ioctl has failed).
	 */
	ret = -EINTR;
	if (cma_glue_mmap_write_lock_all_killable(current->mm))
		goto free;
	caller = mmu_notifier_get_locked(&cma_caller_ops, current->mm);
	mmap_write_unlock(current->mm);
	ret = PTR_ERR_OR_ZERO(caller);
	if (ret)
		goto free;
	map->caller = container_of(caller, struct cma_caller, mn);
	spin_lock(&map->caller->lock);
	list_add(&map->caller_node, &map->caller->maps);
	spin_unlock(&map->caller->lock);
	ret = cma_glue_mmap_write_lock_all_killable(mm);
	if (!ret) {
		ret = __mmu_notifier_register(&map->mn, mm);
		mmap_write_unlock(mm);
	}
	if (ret) {
		cma_caller_leave(map);
		goto free;
	}
	/* From here the state is freed by its notifier's free callback. */
	spin_lock(&cma_maps_lock);
	map->group = cma_group_of(mm);
	if (!map->group) {
		map->group = group;
		group = NULL;
		map->group->mm = mm;
		INIT_LIST_HEAD(&map->group->maps);
		hash_add(cma_groups, &map->group->node, (unsigned long)mm);
	}
	list_add(&map->node, &map->group->maps);
	spin_unlock(&cma_maps_lock);
	kfree(group);
	smp_store_release(&inode->i_private, map);
	goto out;
free:
	kfree(group);
	if (map->status)
		__free_page(map->status);
	if (map->sink)
		__free_page(map->sink);
	kfree(map);
out:
	inode_unlock(inode);
	return ret;
}

/*
 * Maps target range [@addr, @addr + @len) of the peer fd @file, whose map
 * state exists, with @prot: the caller's address, or a negative errno.
 */
long cma_glue_map(struct file *file, unsigned long addr, unsigned long len, unsigned long prot)
{
	return vm_mmap(file, 0, len, prot, MAP_SHARED, addr);
}

/* Unmaps [@start, @start + @len) of the caller (a map whose address could
 * not be reported). */
void cma_glue_unmap(unsigned long start, unsigned long len)
{
	vm_munmap(start, len);
}

/*
 * The peer fd's mmap: a range of the target (offset: its address), or at
 * offset 0 the status page, read-only. The access decision is the one the
 * fd holds now (cma_rs_peer_map_ok()): the caller's mmap_lock is held, so
 * nothing here may wait for the target.
 */
int cma_glue_peer_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct cma_map_state *map = smp_load_acquire(&file_inode(file)->i_private);
	unsigned long start = vma->vm_pgoff << PAGE_SHIFT;
	unsigned long len = vma->vm_end - vma->vm_start;

	if (!map)
		return -ENODEV;	/* CMA_IOC_MAP first */
	/* Only the address space the state watches maps (the attaching
	 * process's, before any exec), its status page too. */
	if (current->mm != map->caller_mm)
		return -EPERM;
	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (vma->vm_flags & VM_EXEC)
		return -EINVAL;
	/* What a map is made with, it keeps: never executable, and writable
	 * only if made so. */
	vm_flags_clear(vma, VM_MAYEXEC);
	if (!(vma->vm_flags & VM_WRITE))
		vm_flags_clear(vma, VM_MAYWRITE);
	/* VM_IO: never inherited (MADV_DOFORK refuses), never reached by GUP. */
	vm_flags_set(vma, VM_DONTCOPY | VM_DONTEXPAND | VM_DONTDUMP | VM_IO);
	if (vma->vm_pgoff == 0) {
		if (len != PAGE_SIZE || (vma->vm_flags & VM_WRITE))
			return -EINVAL;
		vm_flags_clear(vma, VM_MAYWRITE);
		vma->vm_ops = &cma_status_vm_ops;
		return vm_insert_page(vma, vma->vm_start, map->status);
	}
	if (vma->vm_pgoff > (TASK_SIZE_MAX >> PAGE_SHIFT) ||
	    len > TASK_SIZE_MAX - start)
		return -EINVAL;
	if (!cma_rs_peer_map_ok(map->peer))
		return -EPERM;
	spin_lock(&map->lock);
	map->lo = min(map->lo, start);
	map->hi = max(map->hi, start + len);
	spin_unlock(&map->lock);
	/* VM_HUGEPAGE: huge faults where THP is "madvise" (Ubuntu's default). */
	vm_flags_set(vma, VM_PFNMAP | VM_HUGEPAGE);
	vma->vm_ops = &cma_map_vm_ops;
	vma->vm_private_data = map;
	return 0;
}

/*
 * The peer fd is being released (no mapping of it is left: each holds the
 * file): after the callbacks running now are done, none touches the map,
 * whose references go; the notifier frees it after its grace period.
 */
void cma_glue_map_destroy(struct file *file)
{
	struct cma_map_state *map = file_inode(file)->i_private;
	struct cma_map_group *group;

	if (!map)
		return;
	/* First: no withdrawal queues its work from now on. */
	spin_lock(&cma_maps_lock);
	list_del(&map->node);
	group = map->group;
	if (list_empty(&group->maps))
		hash_del(&group->node);
	else
		group = NULL;
	spin_unlock(&cma_maps_lock);
	kfree(group);
	spin_lock(&map->lock);
	map->destroyed = true;
	spin_unlock(&map->lock);
	wake_up_all(&map->zapped);
	synchronize_srcu(&cma_map_srcu);
	cancel_work_sync(&map->work);
	cancel_delayed_work_sync(&map->hole_work);
	cma_map_forget(map, PAGE_SIZE, TASK_SIZE_MAX);
	xa_destroy(&map->pages);
	cma_caller_leave(map);
	mmu_notifier_put(&map->mn);
}

void cma_glue_maps_withdrawn(const void *mm)
{
	struct cma_map_group *group;
	struct cma_map_state *map;

	spin_lock(&cma_maps_lock);
	group = cma_group_of(mm);
	if (!group)
		goto out;
	list_for_each_entry(map, &group->maps, node) {
		spin_lock(&map->lock);
		/*
		 * All it ever mapped goes: busy for faults until the work has
		 * unmapped it, then each touch asks cma_rs_peer_map_ok(), which
		 * sees the withdrawal. @seq moves: a fault past its check
		 * unmaps what it inserts.
		 */
		if (map->lo < map->hi && !map->dead && !map->destroyed) {
			map->seq++;
			cma_map_defer(map, map->lo, map->hi);
			atomic64_inc(STATUS(map, generation));
		}
		spin_unlock(&map->lock);
	}
out:
	spin_unlock(&cma_maps_lock);
}
