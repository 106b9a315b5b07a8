// SPDX-License-Identifier: GPL-2.0
/*
 * cma's C glue: one function per kernel static inline or macro that
 * 6.12's Rust bindings do not provide, named after what it wraps.
 *
 * Why C: static inlines and macros are not in the generated bindings (6.12
 * has Rust helpers for only a few), and some structs (task_struct) have
 * different field offsets in this kernel's generated bindings than in C, so
 * their fields are read here.
 */
#include <linux/cred.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <linux/overflow.h>
#include <linux/sched/user.h>
#include <linux/user_namespace.h>
#include <linux/mm.h>
#include <linux/mmap_lock.h>
#include <linux/pid.h>
#include <linux/pkeys.h>
#include <linux/sched/coredump.h>
#ifdef CMA_HAVE_EXEC_STATE
#include <linux/sched/exec_state.h>
#endif
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/uaccess.h>

#include "glue.h"

/*
 * The fields of a cred the access rule compares: uid, euid, suid, gid, egid,
 * sgid (in the initial namespace's numbering, as kuid_t holds them), the
 * permitted capabilities and the user namespace. Read here, not through the
 * Rust bindings' struct layouts, which this kernel's bindgen got wrong for
 * task_struct.
 */
void cma_glue_cred_ids(const struct cred *cred, u32 ids[6], u64 *permitted,
		       struct user_namespace **user_ns)
{
	ids[0] = __kuid_val(cred->uid);
	ids[1] = __kuid_val(cred->euid);
	ids[2] = __kuid_val(cred->suid);
	ids[3] = __kgid_val(cred->gid);
	ids[4] = __kgid_val(cred->egid);
	ids[5] = __kgid_val(cred->sgid);
	*permitted = cred->cap_permitted.val;
	*user_ns = cred->user_ns;
}

/*
 * Whether the caller's user namespace is @ns or a descendant of it: whether
 * capabilities held in @ns reach the caller. current_in_userns() is exported,
 * or an inline returning true without CONFIG_USER_NS.
 */
bool cma_glue_caller_within(const struct user_namespace *ns)
{
	return current_in_userns(ns);
}

/* A file's private_data (a peer fd's Peer, an open /dev/cma's state), read
 * in C for the same reason. */
void *cma_glue_file_private(struct file *file)
{
	return file->private_data;
}

/*
 * pin_user_pages_remote() under @mm's mmap_lock, taken (killably) and dropped
 * here, so that the lock is never held outside this function: -EINTR if a
 * fatal signal came while waiting, else what GUP returned.
 */
long cma_glue_pin_remote(struct mm_struct *mm, unsigned long start, unsigned long nr_pages,
			 unsigned int gup_flags, struct page **pages)
{
	int locked = 1;
	long ret;

	if (mmap_read_lock_killable(mm))
		return -EINTR;
	ret = pin_user_pages_remote(mm, start, nr_pages, gup_flags, pages, &locked);
	if (locked)
		mmap_read_unlock(mm);
	return ret;
}

/*
 * As cma_glue_pin_remote(), but takes page references (FOLL_GET) instead of
 * pins: for the caches' read-only regions. A long-term read-only pin
 * (FOLL_PIN | FOLL_LONGTERM) makes GUP unshare what a COW mapping shares
 * (gup_must_unshare(): the zero page, a MAP_PRIVATE file's page cache, an
 * anonymous page shared with a fork), which changes the target's memory; a
 * reference does not, and the cache's mmu notifier, not the pin, is
 * what keeps the pages the ones mapped.
 */
long cma_glue_get_remote(struct mm_struct *mm, unsigned long start, unsigned long nr_pages,
			 unsigned int gup_flags, struct page **pages)
{
	int locked = 1;
	long ret;

	if (mmap_read_lock_killable(mm))
		return -EINTR;
	ret = get_user_pages_remote(mm, start, nr_pages, gup_flags, pages, &locked);
	if (locked)
		mmap_read_unlock(mm);
	return ret;
}

/* Drops the page references cma_glue_get_remote() or get_user_pages_fast() took. */
void cma_glue_put_pages(struct page **pages, unsigned long n)
{
	unsigned long i;

	for (i = 0; i < n; i++)
		put_page(pages[i]);
}

/*
 * The protection keys of the caller's own mappings over [@start, @start +
 * @len), as a bit mask (bit k: key k); every key (~0) if the mmap_lock
 * could not be taken (a fatal signal), which no check will then pass.
 * 1 (key 0, every mapping's without protection keys) on kernels and CPUs
 * without them.
 */
u32 cma_glue_own_range_pkeys(unsigned long start, unsigned long len)
{
	struct mm_struct *mm = current->mm;
	struct vm_area_struct *vma;
	unsigned long end = start + len;
	u32 keys = 0;

	if (!IS_ENABLED(CONFIG_ARCH_HAS_PKEYS) || !mm)
		return 1;
	if (mmap_read_lock_killable(mm))
		return ~0U;
	for (vma = find_vma(mm, start); vma && vma->vm_start < end; vma = find_vma(mm, vma->vm_end))
		keys |= 1U << (vma_pkey(vma) & 31);
	mmap_read_unlock(mm);
	return keys;
}

/*
 * Whether the caller's protection key rights register (PKRU, which a user
 * changes with WRPKRU, unseen by the kernel) lets it read, or write if
 * @write, memory of every key in @keys: what its own access would be
 * allowed to do, checked when a cache serves its pages.
 */
bool cma_glue_own_pkeys_allow(u32 keys, bool write)
{
#ifdef CONFIG_X86_INTEL_MEMORY_PROTECTION_KEYS
	u32 pkru = read_pkru();
	u16 key;

	for (key = 0; key < 32 && keys; key++, keys >>= 1) {
		if (!(keys & 1))
			continue;
		if (key >= arch_max_pkey())
			return false;
		if (write ? !__pkru_allows_write(pkru, key) : !__pkru_allows_read(pkru, key))
			return false;
	}
#endif
	return true;
}

/*
 * Whether @task (whose address space is @mm, held by mmgrab at least) is
 * dumpable by its owner's peers: ptrace's dumpability test. 6.12 keeps it
 * in the mm (get_dumpable()); 7.3 in the task's exec state (RCU), which
 * Kbuild detects (CMA_HAVE_EXEC_STATE).
 */
static bool cma_user_dumpable(struct task_struct *task, struct mm_struct *mm)
{
#ifndef CMA_HAVE_EXEC_STATE
	return get_dumpable(mm) == SUID_DUMP_USER;
#else
	const struct task_exec_state *es;

	guard(rcu)();
	es = rcu_dereference(task->exec_state);
	return es && READ_ONCE(es->dumpable) == TASK_DUMPABLE_OWNER;
#endif
}

/*
 * ptrace's last test (task_still_dumpable() in 7.3, the mm's dumpability in
 * 6.12's __ptrace_may_access()): @task is dumpable by its owner's peers, or
 * the caller has CAP_SYS_PTRACE in the user namespace @task exec'd in (the
 * mm's on 6.12, the exec state's on 7.3, read under RCU as ptrace does).
 */
bool cma_glue_still_dumpable(struct task_struct *task, struct mm_struct *mm)
{
#ifndef CMA_HAVE_EXEC_STATE
	return cma_user_dumpable(task, mm) || ns_capable(mm->user_ns, CAP_SYS_PTRACE);
#else
	const struct task_exec_state *es;

	/* One exec state for both halves of the test, as ptrace reads it. */
	guard(rcu)();
	es = rcu_dereference(task->exec_state);
	return es && (READ_ONCE(es->dumpable) == TASK_DUMPABLE_OWNER ||
		      ns_capable(es->user_ns, CAP_SYS_PTRACE));
#endif
}

struct mm_struct *cma_glue_current_mm(void)
{
	return current->mm;
}

void cma_glue_mmgrab(struct mm_struct *mm)
{
	mmgrab(mm);
}

void cma_glue_mmdrop(struct mm_struct *mm)
{
	mmdrop(mm);
}

bool cma_glue_mmget_not_zero(struct mm_struct *mm)
{
	return mmget_not_zero(mm);
}

void cma_glue_mmget(struct mm_struct *mm)
{
	mmget(mm);
}

void cma_glue_get_cred(const struct cred *cred)
{
	get_cred(cred);
}

void cma_glue_get_pid(struct pid *pid)
{
	get_pid(pid);
}

/*
 * What a peer fd's check compares, read in one call (a copy's hot path): the
 * caller's thread-group pid and credentials, @task's credentials and mm, and
 * whether @mm is dumpable by its owner's peers (@mm is held by mmgrab at least). Rust must not read
 * task_struct itself: in this kernel's generated bindings its field offsets
 * differ from the C compiler's (mm at 832 rather than 848; cred and
 * signal_struct match).
 */
void cma_glue_peer_state(struct task_struct *task, struct mm_struct *mm,
			 struct pid **caller_group, const struct cred **caller_cred,
			 const struct cred **task_cred, struct mm_struct **task_mm, bool *user_dumpable)
{
	*caller_group = task_tgid(current);
	*caller_cred = current_cred();
	*task_cred = rcu_access_pointer(task->real_cred);
	*task_mm = READ_ONCE(task->mm);
	*user_dumpable = cma_user_dumpable(task, mm);
}

const struct cred *cma_glue_get_current_cred(void)
{
	return get_current_cred();
}

const struct cred *cma_glue_current_cred(void)
{
	return current_cred();
}

void cma_glue_put_cred(const struct cred *cred)
{
	put_cred(cred);
}

bool cma_glue_fatal_signal_pending(void)
{
	return fatal_signal_pending(current);
}

void cma_glue_cond_resched(void)
{
	cond_resched();
}

bool cma_glue_same_thread_group(struct task_struct *task)
{
	return same_thread_group(task, current);
}

int cma_glue_exec_update_lock_killable(struct task_struct *task)
{
	return down_read_killable(&task->signal->exec_update_lock);
}

void cma_glue_exec_update_unlock(struct task_struct *task)
{
	up_read(&task->signal->exec_update_lock);
}

u64 cma_glue_self_exec_id(struct task_struct *task)
{
	return READ_ONCE(task->self_exec_id);
}

/*
 * @task's thread-group pid, for comparison only (never dereferenced): NULL
 * once the process has been reaped, since __unhash_process() detaches it
 * (detach_pid(PIDTYPE_TGID)) while a reference keeps the task, and its
 * signal_struct, allocated. Read once: the reaper may be clearing it.
 */
struct pid *cma_glue_task_tgid(struct task_struct *task)
{
	return READ_ONCE(task->signal->pids[PIDTYPE_TGID]);
}

/*
 * Whether @task descends from the process whose thread-group pid is
 * @ancestor (compared, never dereferenced): whether that process is its
 * parent, its parent's parent, and so on, at most @generations links up.
 * The links are the real_parent pointers as they are now: a process whose
 * parent exited has been reparented (to a subreaper or init) and descends
 * from its new parent. real_parent is read under RCU, as getppid() does:
 * each task reached stays allocated until rcu_read_unlock(), since
 * release_task() frees it through call_rcu(); init_task is its own parent,
 * which ends the walk at the top. @task must be alive (not yet reaped: the
 * callers pass current): a reaped task's real_parent is no longer kept up
 * to date and may point at a freed task, so the walk stops there, as
 * Yama's does.
 */
bool cma_glue_task_descends_from(struct task_struct *task, struct pid *ancestor,
				 unsigned int generations)
{
	struct task_struct *t = task;
	bool found = false;

	rcu_read_lock();
	while (generations-- && pid_alive(t)) {
		struct task_struct *parent = rcu_dereference(t->real_parent);

		if (parent == t)
			break;
		if (cma_glue_task_tgid(parent) == ancestor) {
			found = true;
			break;
		}
		t = parent;
	}
	rcu_read_unlock();
	return found;
}

/*
 * @task's thread-group pid with a new reference, or NULL if the process has
 * been reaped (see above). get_task_pid() reads it under RCU, so that a pid
 * being detached and freed concurrently is not taken after its last put;
 * get_pid(NULL) is NULL.
 */
struct pid *cma_glue_get_task_tgid(struct task_struct *task)
{
	return get_task_pid(task, PIDTYPE_TGID);
}

/*
 * The struct pid a pidfd refers to, with a reference, or ERR_PTR(-EBADF) if
 * @fd is not an open pidfd. pidfd_pid() is not exported; a pidfd is a file
 * of pidfs, whose inode keeps the pid in i_private.
 */
struct pid *cma_glue_pidfd_get_pid(int fd)
{
	struct fd f = fdget(fd);
	struct pid *pid = ERR_PTR(-EBADF);
	struct inode *inode;

	if (!fd_file(f))
		return pid;
	inode = file_inode(fd_file(f));
	if (inode->i_sb->s_magic == PID_FS_MAGIC && inode->i_private)
		pid = get_pid(inode->i_private);
	fdput(f);
	return pid;
}

/* access_ok() is a macro: whether [@addr, @addr + @len) is user memory at all. */
bool cma_glue_access_ok(unsigned long addr, unsigned long len)
{
	return access_ok((const void __user *)addr, len);
}

/*
 * Charges @pages to the calling user's locked memory, as io_uring charges
 * its registered buffers (__io_account_mem): user_struct->locked_vm, which
 * every process of the user shares and which outlives any of them, against
 * the caller's RLIMIT_MEMLOCK. Returns the charged user (a reference, for
 * cma_glue_uncharge_locked()), NULL if nothing was charged (CAP_IPC_LOCK in
 * the initial namespace, as io_uring's and mlock's rule), or
 * ERR_PTR(-ENOMEM) past the limit. Takes no lock and never sleeps.
 */
struct user_struct *cma_glue_charge_locked(unsigned long pages)
{
	struct user_struct *user = current_user();
	unsigned long limit, cur, new;

	if (capable(CAP_IPC_LOCK))
		return NULL;
	limit = rlimit(RLIMIT_MEMLOCK) >> PAGE_SHIFT;
	cur = atomic_long_read(&user->locked_vm);
	do {
		if (check_add_overflow(cur, pages, &new) || new > limit)
			return ERR_PTR(-ENOMEM);
	} while (!atomic_long_try_cmpxchg(&user->locked_vm, &cur, new));
	return get_uid(user);
}

/* Returns what cma_glue_charge_locked() charged to @user, and its reference. */
void cma_glue_uncharge_locked(struct user_struct *user, unsigned long pages)
{
	atomic_long_sub(pages, &user->locked_vm);
	free_uid(user);
}

unsigned long cma_glue_totalram_pages(void)
{
	return totalram_pages();
}

/* Marks pages written through the kernel mapping dirty (pinned, not unpinned). */
void cma_glue_dirty_pages(struct page *const *pages, unsigned long n)
{
	unsigned long i;

	for (i = 0; i < n; i++)
		set_page_dirty_lock(pages[i]);
}
