// SPDX-License-Identifier: GPL-2.0
/*
 * The C side of cma: only what the 6.12 Rust bindings cannot express.
 *
 * 6.12 has no miscdevice or file_operations abstraction in Rust, no
 * MODULE_VERSION or module parameters in module!, and several static inline
 * helpers have no Rust helper. This file registers the misc device, forwards
 * each file operation to the Rust side, and wraps those inlines one function
 * each, with no logic of its own. Everything is called from rust/.
 */
#include <linux/anon_inodes.h>
#include <linux/cred.h>
#include <linux/fault-inject-usercopy.h>
#include <linux/file.h>
#include <linux/instrumented.h>
#include <linux/fs.h>
#include <linux/highmem.h>
#include <linux/magic.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/mmu_notifier.h>
#include <linux/workqueue.h>
#include <linux/percpu.h>
#include <linux/mmap_lock.h>
#include <linux/module.h>
#include <linux/pid.h>
#include <linux/sched/coredump.h>
#include <linux/sched/mm.h>
#include <linux/sched/signal.h>
#include <linux/uaccess.h>
#include <asm/cpufeature.h>
#include <asm/fpu/api.h>

#include "glue.h"

/*
 * Who may copy (rust/access.rs): the administrator's choice, changed only by
 * root (the parameter files are root's, mode 0644), every change logged.
 *   consent      the credential rule, and the target must have consented
 *                (CMA_IOC_GRANT) unless the caller has CAP_SYS_PTRACE over it
 *   credentials  the credential rule alone (process_vm_readv under Yama 0)
 *   off          no copies between processes at all, for anyone
 * require_consent is the older switch between the first two.
 */
enum cma_policy { CMA_POLICY_CONSENT, CMA_POLICY_CREDENTIALS, CMA_POLICY_OFF };
static const char *const cma_policy_names[] = { "consent", "credentials", "off" };
static int cma_policy = CMA_POLICY_CONSENT;

static void cma_set_policy(int policy)
{
	int old = xchg(&cma_policy, policy);

	if (old != policy)
		pr_notice("cma: policy %s -> %s (by uid %u, pid %d)\n", cma_policy_names[old],
			  cma_policy_names[policy], from_kuid(&init_user_ns, current_uid()),
			  task_pid_nr(current));
}

static int policy_set(const char *val, const struct kernel_param *kp)
{
	int i = sysfs_match_string(cma_policy_names, val);

	if (i < 0)
		return -EINVAL;
	cma_set_policy(i);
	return 0;
}

static int policy_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%s\n", cma_policy_names[READ_ONCE(cma_policy)]);
}

static const struct kernel_param_ops policy_ops = {
	.set = policy_set,
	.get = policy_get,
};
module_param_cb(policy, &policy_ops, NULL, 0644);
MODULE_PARM_DESC(policy, "Who may copy: consent (default), credentials or off");

static int require_consent_set(const char *val, const struct kernel_param *kp)
{
	bool on;
	int ret = kstrtobool(val, &on);

	if (ret)
		return ret;
	cma_set_policy(on ? CMA_POLICY_CONSENT : CMA_POLICY_CREDENTIALS);
	return 0;
}

static int require_consent_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%c\n", READ_ONCE(cma_policy) == CMA_POLICY_CONSENT ? 'Y' : 'N');
}

static const struct kernel_param_ops require_consent_ops = {
	.set = require_consent_set,
	.get = require_consent_get,
};
module_param_cb(require_consent, &require_consent_ops, NULL, 0644);
MODULE_PARM_DESC(require_consent, "Y: policy=consent, N: policy=credentials (older switch)");

/* Registry slots in use (rust/consent.rs): read-only, for tests and admins. */
static unsigned long grants;
module_param(grants, ulong, 0444);
MODULE_PARM_DESC(grants, "Consent registry slots in use (an entry per granting process, one per grant)");

/*
 * Counters, per CPU so that copies on different CPUs never write a shared
 * cache line, summed when read from /sys/class/misc/cma/stats/<name>. The
 * order is rust/stats.rs's `Stat`; cma_glue_stat_names() lets the module
 * refuse to load if the two disagree.
 */
static const char *const cma_stat_names[] = {
	"copies", "bytes", "gup_calls", "pages_pinned", "local_gup_calls",
	"local_pages_pinned", "direct_copies", "registry_lookups", "peer_copies",
	"peer_rechecks" /* 9: also the peer_rechecks parameter */, "grants_reaped_at_exit",
	"cache_hits", "cache_misses", "cache_fallbacks", "cache_invalidations",
	"cache_evictions", "cache_pages",
};
#define CMA_NR_STATS ARRAY_SIZE(cma_stat_names)

struct cma_stats {
	u64 v[CMA_NR_STATS];
};
static DEFINE_PER_CPU(struct cma_stats, cma_stats);

static u64 cma_stat_sum(unsigned int i)
{
	u64 sum = 0;
	int cpu;

	for_each_possible_cpu(cpu)
		sum += READ_ONCE(per_cpu(cma_stats, cpu).v[i]);
	return sum;
}

struct cma_stat_attr {
	struct device_attribute attr;
	unsigned int index;
};

static ssize_t cma_stat_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%llu\n",
			  cma_stat_sum(container_of(attr, struct cma_stat_attr, attr)->index));
}

#define CMA_STAT(i) { .attr = __ATTR(_, 0444, cma_stat_show, NULL), .index = (i) }
static struct cma_stat_attr cma_stat_attrs[CMA_NR_STATS] = {
	CMA_STAT(0), CMA_STAT(1), CMA_STAT(2), CMA_STAT(3), CMA_STAT(4), CMA_STAT(5),
	CMA_STAT(6), CMA_STAT(7), CMA_STAT(8), CMA_STAT(9), CMA_STAT(10), CMA_STAT(11),
	CMA_STAT(12), CMA_STAT(13), CMA_STAT(14), CMA_STAT(15), CMA_STAT(16),
};
static struct attribute *cma_stat_attr_list[CMA_NR_STATS + 1];
static const struct attribute_group cma_stats_group = {
	.name = "stats",
	.attrs = cma_stat_attr_list,
};
static const struct attribute_group *cma_groups[] = { &cma_stats_group, NULL };

/* The number of counters the C side names (rust/stats.rs checks it). */
unsigned int cma_glue_stat_names(void)
{
	return CMA_NR_STATS;
}

/* Adds @n to counter @i on this CPU. */
void cma_glue_stat_add(unsigned int i, u64 n)
{
	if (i < CMA_NR_STATS)
		this_cpu_add(cma_stats.v[i], n);
}

/* Full access rechecks made for copies through peer fds (the stat's value). */
static int peer_rechecks_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%llu\n", cma_stat_sum(9));
}

static const struct kernel_param_ops peer_rechecks_ops = {
	.get = peer_rechecks_get,
};
module_param_cb(peer_rechecks, &peer_rechecks_ops, NULL, 0444);
MODULE_PARM_DESC(peer_rechecks, "Copies through a peer fd that ran the full access check again");

/* The file's state (the cache of its opener's pages) replaces the
 * miscdevice pointer misc_open() left in private_data. */
static int cma_open(struct inode *inode, struct file *file)
{
	return cma_rs_open(&file->private_data);
}

static const struct file_operations cma_fops = {
	/* Pins the module while a file is open: rmmod is refused until close. */
	.owner = THIS_MODULE,
	.open = cma_open,
	.unlocked_ioctl = cma_rs_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.release = cma_rs_release,
	.llseek = noop_llseek,
};

/* A peer fd (CMA_IOC_ATTACH): an anonymous file whose private_data is the
 * Rust side's attachment, freed by its release. */
static const struct file_operations cma_peer_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = cma_rs_peer_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.release = cma_rs_peer_release,
	.llseek = noop_llseek,
};


static struct miscdevice cma_miscdev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "cma",
	/* Anyone may open: every request is checked on its own. */
	.mode = 0666,
	.fops = &cma_fops,
	.groups = cma_groups,
};


int cma_glue_register(void)
{
	unsigned int i;

	/* The attribute names come from the one list above. */
	for (i = 0; i < CMA_NR_STATS; i++) {
		cma_stat_attrs[i].attr.attr.name = cma_stat_names[i];
		cma_stat_attr_list[i] = &cma_stat_attrs[i].attr.attr;
	}
	return misc_register(&cma_miscdev);
}

void cma_glue_unregister(void)
{
	misc_deregister(&cma_miscdev);
}

int cma_glue_policy(void)
{
	return READ_ONCE(cma_policy);
}

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

/* A file's private_data (a peer fd's Peer, an open /dev/cma's state), read
 * in C for the same reason. */
void *cma_glue_file_private(struct file *file)
{
	return file->private_data;
}

void cma_glue_set_grants(u64 n)
{
	WRITE_ONCE(grants, n);
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

int cma_glue_get_dumpable(struct mm_struct *mm)
{
	return get_dumpable(mm);
}

struct user_namespace *cma_glue_mm_user_ns(struct mm_struct *mm)
{
	return mm->user_ns;
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

/*
 * A new peer fd whose private_data is @peer, or a negative errno. On success
 * the file owns @peer (cma_rs_peer_release frees it) and pins this module.
 */
int cma_glue_peer_fd(void *peer)
{
	return anon_inode_getfd("[cma-peer]", &cma_peer_fops, peer, O_RDWR | O_CLOEXEC);
}

/*
 * What a peer fd's check compares, read in one call (a copy's hot path): the
 * caller's thread-group pid and credentials, @task's credentials and mm, and
 * get_dumpable(@mm) (@mm is held by mmgrab at least). Rust must not read
 * task_struct itself: in this kernel's generated bindings its field offsets
 * differ from the C compiler's (mm at 832 rather than 848; cred and
 * signal_struct match).
 */
void cma_glue_peer_state(struct task_struct *task, struct mm_struct *mm,
			 struct pid **caller_group, const struct cred **caller_cred,
			 const struct cred **task_cred, struct mm_struct **task_mm, int *dumpable)
{
	*caller_group = task_tgid(current);
	*caller_cred = current_cred();
	*task_cred = rcu_access_pointer(task->real_cred);
	*task_mm = READ_ONCE(task->mm);
	*dumpable = get_dumpable(mm);
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

struct pid *cma_glue_task_tgid(struct task_struct *task)
{
	return task_tgid(task);
}

struct pid *cma_glue_get_task_tgid(struct task_struct *task)
{
	return get_pid(task_tgid(task));
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
 * Pinned pages are reached through the direct map: one mapping covers a run
 * of physically consecutive pages (a folio, or pages that happen to follow
 * each other), so that a run is copied in one routine call. x86_64 only,
 * where there is no highmem.
 */
static_assert(!IS_ENABLED(CONFIG_HIGHMEM));

/* How many of @pages[0..@n) (n >= 1) follow @pages[0] in physical memory. */
unsigned long cma_glue_contiguous_pages(struct page *const *pages, unsigned long n)
{
	unsigned long pfn = page_to_pfn(pages[0]), i;

	for (i = 1; i < n; i++)
		if (page_to_pfn(pages[i]) != pfn + i)
			break;
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
 * How the engine copies (rust/engine.rs), chosen at load by measurement
 * (rust/kcopy.rs) unless given, changeable by root, every change logged:
 *   pinned    the caller's pages are pinned too and the bytes move between
 *             two kernel mappings with the routine chosen at load
 *   usercopy  the kernel's user-copy routines between the caller's memory
 *             and the target's pinned pages, as process_vm_readv does
 */
enum cma_engine { CMA_ENGINE_AUTO = -1, CMA_ENGINE_PINNED, CMA_ENGINE_USERCOPY };
static const char *const cma_engine_names[] = { "pinned", "usercopy" };
static int cma_engine = CMA_ENGINE_AUTO;

static int engine_set(const char *val, const struct kernel_param *kp)
{
	int i = sysfs_match_string(cma_engine_names, val);
	int old;

	if (i < 0)
		return -EINVAL;
	old = xchg(&cma_engine, i);
	/* Not while loading: that choice is logged with the measurement. */
	if (old != CMA_ENGINE_AUTO && old != i)
		pr_notice("cma: engine %s -> %s (by uid %u, pid %d)\n", cma_engine_names[old],
			  cma_engine_names[i], from_kuid(&init_user_ns, current_uid()),
			  task_pid_nr(current));
	return 0;
}

static int engine_get(char *buf, const struct kernel_param *kp)
{
	int e = READ_ONCE(cma_engine);

	return sysfs_emit(buf, "%s\n", e == CMA_ENGINE_AUTO ? "auto" : cma_engine_names[e]);
}

static const struct kernel_param_ops engine_ops = {
	.set = engine_set,
	.get = engine_get,
};
module_param_cb(engine, &engine_ops, NULL, 0644);
MODULE_PARM_DESC(engine, "How copies move bytes: pinned or usercopy (default: measured at load)");

/* The engine: -1 until the load chose, then 0 (pinned) or 1 (usercopy). */
int cma_glue_engine(void)
{
	return READ_ONCE(cma_engine);
}

/* The load's choice, if none was given. */
void cma_glue_choose_engine(int engine)
{
	cmpxchg(&cma_engine, CMA_ENGINE_AUTO, engine);
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

static int simd_copy = -1;
module_param(simd_copy, int, 0444);
MODULE_PARM_DESC(simd_copy,
		 "Copy between pinned pages with AVX: -1 if measured faster at load (default), 0 never, 1 always when the CPU has it");

int cma_glue_simd_param(void)
{
	return simd_copy;
}

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


/*
 * Exit watches (rust/consent.rs): the registry forgets a process's grants
 * when its address space is torn down (it exited, or exec()ed a new image),
 * through an mmu_notifier's release on that mm. One notifier per mm
 * (mmu_notifier_get), one reference per registry entry; it remembers the
 * thread-group pid of the process that first watched the mm (identity only:
 * Rust compares it with its entries' keys), since the release may run in
 * another task's context (the last mmput).
 */
struct cma_exit_watch {
	struct mmu_notifier mn;
	struct pid *owner;
};

static void cma_exit_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	cma_rs_mm_released(mm, container_of(mn, struct cma_exit_watch, mn)->owner);
}

static struct mmu_notifier *cma_exit_alloc(struct mm_struct *mm)
{
	struct cma_exit_watch *w = kzalloc(sizeof(*w), GFP_KERNEL_ACCOUNT);

	if (!w)
		return ERR_PTR(-ENOMEM);
	/* Called by mmu_notifier_get() on current->mm, in the granting task. */
	w->owner = task_tgid(current);
	return &w->mn;
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
static int cache_pages = 65536;
module_param(cache_pages, int, 0644);
MODULE_PARM_DESC(cache_pages,
		 "Pages of a target a peer fd may keep pinned between copies (0: no cache)");

int cma_glue_cache_param(void)
{
	return READ_ONCE(cache_pages);
}

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

/* account_locked_vm(): RLIMIT_MEMLOCK unless CAP_IPC_LOCK, -ENOMEM past it. */
int cma_glue_account_locked(struct mm_struct *mm, unsigned long pages, bool inc)
{
	return account_locked_vm(mm, pages, inc);
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

MODULE_VERSION("0.3.0");
