/* SPDX-License-Identifier: GPL-2.0 */
/*
 * The interface between cma's C glue (the .c files beside it) and its Rust
 * crate, in one place: every glue file includes it, and Kbuild generates
 * the Rust declarations from it with bindgen (rust/cma_glue_generated.rs,
 * included by rust/glue.rs), so that the two sides cannot disagree on a
 * prototype.
 *
 * Two kinds of function:
 *   cma_glue_*   C, called by Rust: the kernel's static inlines and macros
 *                that the kernel crate's bindings do not provide, the
 *                parameters and counters, the notifier callbacks' plumbing;
 *   cma_rs_*     Rust (#[no_mangle] extern "C"), called by C: the file
 *                operations and the notifier callbacks. Each is declared
 *                through a function type cma_rs_*_fn, which Rust checks its
 *                definition against (a `const` of that type in the file
 *                that defines it).
 *
 * The kernel's structs are only named here, never looked into: Rust takes
 * them from its kernel::bindings; the glue's own (cma_cache_hook,
 * cma_region_watch) and struct mmu_notifier are opaque to Rust.
 */
#ifndef CMA_GLUE_H
#define CMA_GLUE_H

#include <linux/types.h>
#include <linux/version.h>

struct attribute_group;
struct cred;
struct file;
struct inode;
struct mm_struct;
struct mmu_notifier;
struct page;
struct pid;
struct task_struct;
struct user_namespace;
struct user_struct;

struct cma_cache_hook;
struct cma_region_watch;
struct vm_area_struct;

/* Implemented in Rust: the file operations of the peer fds (rust/dispatch.rs),
 * and on 6.12 those of /dev/cma (rust/compat/v6_12/miscdevice.rs, given to
 * cma_glue_misc_register). */
typedef int cma_rs_open_fn(struct inode *inode, struct file *file);
typedef long cma_rs_ioctl_fn(struct file *file, unsigned int cmd, unsigned long arg);
typedef int cma_rs_release_fn(struct inode *inode, struct file *file);
cma_rs_ioctl_fn cma_rs_peer_ioctl;
cma_rs_release_fn cma_rs_peer_release;
/* rust/watch.rs: the exit watch's release, for the registry @ctx. */
typedef void cma_rs_mm_released_fn(void *ctx, struct mm_struct *mm);
/* rust/watch.rs: the cache's work item, for the cache @cache. */
typedef void cma_rs_cache_reap_fn(void *cache);
/* rust/map.rs: whether the peer @peer's access decision still holds, without
 * waiting for anything (a map's fault and mmap, under the caller's
 * mmap_lock). */
typedef bool cma_rs_peer_map_ok_fn(const void *peer);
cma_rs_peer_map_ok_fn cma_rs_peer_map_ok;

/* Implemented in C: the .c files of rust/glue/. */
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 13, 0)
int cma_glue_misc_register(const char *name, cma_rs_open_fn *open, cma_rs_ioctl_fn *ioctl,
			   cma_rs_release_fn *release, void *owner);
void cma_glue_misc_deregister(void);
void *cma_glue_misc_owner(void);
#else
const struct attribute_group **cma_glue_misc_groups(void);
#endif
int cma_glue_policy(void);
long cma_glue_pin_remote(struct mm_struct *mm, unsigned long start, unsigned long nr_pages,
			 unsigned int gup_flags, struct page **pages);
long cma_glue_get_remote(struct mm_struct *mm, unsigned long start, unsigned long nr_pages,
			 unsigned int gup_flags, struct page **pages);
void cma_glue_put_pages(struct page **pages, unsigned long n);
u32 cma_glue_own_range_pkeys(unsigned long start, unsigned long len);
bool cma_glue_own_pkeys_allow(u32 keys, bool write);
bool cma_glue_still_dumpable(struct task_struct *task, struct mm_struct *mm);
struct mm_struct *cma_glue_current_mm(void);
void cma_glue_mmgrab(struct mm_struct *mm);
void cma_glue_mmdrop(struct mm_struct *mm);
bool cma_glue_mmget_not_zero(struct mm_struct *mm);
void cma_glue_mmget(struct mm_struct *mm);
void cma_glue_get_cred(const struct cred *cred);
void cma_glue_get_pid(struct pid *pid);
const struct cred *cma_glue_get_current_cred(void);
void cma_glue_peer_state(struct task_struct *task, struct mm_struct *mm,
			 struct pid **caller_group, const struct cred **caller_cred,
			 const struct cred **task_cred, struct mm_struct **task_mm, bool *user_dumpable);
int cma_glue_peer_fd(const void *peer);
const struct cred *cma_glue_current_cred(void);
void cma_glue_put_cred(const struct cred *cred);
bool cma_glue_fatal_signal_pending(void);
void cma_glue_cond_resched(void);
bool cma_glue_same_thread_group(struct task_struct *task);
int cma_glue_exec_update_lock_killable(struct task_struct *task);
void cma_glue_exec_update_unlock(struct task_struct *task);
u64 cma_glue_self_exec_id(struct task_struct *task);
struct pid *cma_glue_task_tgid(struct task_struct *task);
struct pid *cma_glue_get_task_tgid(struct task_struct *task);
bool cma_glue_task_descends_from(struct task_struct *task, struct pid *ancestor,
				 unsigned int generations);
struct pid *cma_glue_pidfd_get_pid(int fd);
unsigned long cma_glue_page_to_user(void __user *to, struct page *page, size_t offset, size_t n);
unsigned long cma_glue_user_to_page(struct page *page, size_t offset, const void __user *from,
				    size_t n);
bool cma_glue_simd_usable(void);
unsigned long cma_glue_contiguous_pages(struct page *const *pages, unsigned long n,
					bool one_folio);
void *cma_glue_page_address(struct page *page);
void cma_glue_simd_copy(void *dst, const void *src, size_t len);
void cma_glue_memcpy(void *dst, const void *src, size_t len);
int cma_glue_simd_param(void);
int cma_glue_engine(void);
void cma_glue_choose_engine(int engine);
void cma_glue_usercopy_routine(void *dst, const void *src, size_t len);
bool cma_glue_access_ok(unsigned long addr, unsigned long len);
void cma_glue_set_grants(u64 n);
void cma_glue_cred_ids(const struct cred *cred, u32 ids[6], u64 *permitted,
		       struct user_namespace **user_ns);
bool cma_glue_caller_within(const struct user_namespace *ns);
void *cma_glue_file_private(struct file *file);
unsigned int cma_glue_stat_names(void);
void cma_glue_stat_add(unsigned int i, u64 n);
struct mmu_notifier *cma_glue_watch_exit(cma_rs_mm_released_fn *released, void *ctx);
int cma_glue_mmap_write_lock_all_killable(struct mm_struct *mm);
struct mm_struct *cma_glue_watch_mm(struct mmu_notifier *mn);
void cma_glue_unwatch_exit(struct mmu_notifier *mn);
void cma_glue_watch_sync(void);
struct cma_cache_hook *cma_glue_cache_hook_new(cma_rs_cache_reap_fn *reap, void *cache);
void cma_glue_cache_hook_free(struct cma_cache_hook *hook);
struct cma_region_watch *cma_glue_region_watch(struct mm_struct *mm, unsigned long start,
					       unsigned long len, struct cma_cache_hook *hook);
void cma_glue_region_unwatch(struct cma_region_watch *r);
bool cma_glue_region_valid(struct cma_region_watch *r);
struct user_struct *cma_glue_charge_locked(unsigned long pages);
void cma_glue_uncharge_locked(struct user_struct *user, unsigned long pages);
unsigned long cma_glue_totalram_pages(void);
int cma_glue_cache_param(void);
void cma_glue_dirty_pages(struct page *const *pages, unsigned long n);

/* rust/glue/map.c: maps of a target's memory (CMA_IOC_MAP). */
/* The maps' work queue: made at load (0 or -ENOMEM), gone at unload,
 * after the last peer fd. */
int cma_glue_map_init(void);
void cma_glue_map_exit(void);
int cma_glue_map_state(struct file *file, const void *peer, struct mm_struct *mm);
long cma_glue_map(struct file *file, unsigned long addr, unsigned long len, unsigned long prot);
void cma_glue_unmap(unsigned long start, unsigned long len);
int cma_glue_peer_mmap(struct file *file, struct vm_area_struct *vma);
void cma_glue_map_destroy(struct file *file);
/* The process whose address space is @mm withdrew consent: its maps are
 * unmapped from their callers (soon, by their work items), and each later
 * touch checks access again. Any context; @mm is only compared. */
void cma_glue_maps_withdrawn(const void *mm);

#endif /* CMA_GLUE_H */
