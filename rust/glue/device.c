// SPDX-License-Identifier: GPL-2.0
/*
 * cma's C glue: the misc device, its file operations, parameters and
 * counters.
 *
 * Why C: the kernel crate (7.3's included) has no module parameters with
 * callbacks, no per-CPU variables, no sysfs attribute groups and no
 * anonymous inodes; 6.12's has no misc device either. On 7.x /dev/cma is
 * the kernel crate's misc device (rust/compat/v7/miscdevice.rs) and only its
 * attribute groups come from here; on 6.12 the struct miscdevice is here,
 * its file operations Rust's (rust/compat/v6_12/miscdevice.rs). The peer
 * fds' file operations are forwarded to Rust (rust/dispatch.rs); each
 * parameter is read through a function Rust calls.
 */
#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/percpu.h>
#include <linux/sysfs.h>
#include <linux/version.h>

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
MODULE_PARM_DESC(grants, "Consent registry slots in use (an entry per address space with grants, one per grant)");

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
	"cache_evictions", "cache_pages", "cache_released",
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

/* Filled in by cma_stat_groups(), from the one list of names above. */
static struct cma_stat_attr cma_stat_attrs[CMA_NR_STATS];
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

/* The counters' attributes, filled in once from the one list of names above;
 * the misc device is registered with them (cma_glue_misc_groups). */
static const struct attribute_group **cma_stat_groups(void)
{
	unsigned int i;

	/* One read-only attribute per name of the list above. */
	for (i = 0; i < CMA_NR_STATS; i++) {
		struct cma_stat_attr *a = &cma_stat_attrs[i];

		sysfs_attr_init(&a->attr.attr);
		a->attr.attr.name = cma_stat_names[i];
		a->attr.attr.mode = 0444;
		a->attr.show = cma_stat_show;
		a->index = i;
		cma_stat_attr_list[i] = &a->attr.attr;
	}
	return cma_groups;
}

#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 13, 0)
/*
 * 6.12: the struct miscdevice and its file operations, whose entries are
 * rust/compat/v6_12/miscdevice.rs's, given at registration (before the
 * module's init ends; __ro_after_init then makes them read-only).
 */
static struct file_operations cma_fops __ro_after_init = {
	/* Pins the module while a file is open: rmmod is refused until close. */
	.owner = THIS_MODULE,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice cma_miscdev = {
	.minor = MISC_DYNAMIC_MINOR,
	/* Anyone may open: every request is checked on its own. */
	.mode = 0666,
	.fops = &cma_fops,
};

/* The Rust registration (rust/compat/v6_12/miscdevice.rs), for its open. */
static void *cma_misc_owner;

/* Only from the module's init: cma_fops is read-only once it has run. */
int cma_glue_misc_register(const char *name, cma_rs_open_fn *open, cma_rs_ioctl_fn *ioctl,
			   cma_rs_release_fn *release, void *owner)
{
	if (WARN_ON_ONCE(THIS_MODULE && THIS_MODULE->state != MODULE_STATE_COMING))
		return -EBUSY;
	cma_misc_owner = owner;
	cma_fops.open = open;
	cma_fops.unlocked_ioctl = ioctl;
	cma_fops.release = release;
	cma_miscdev.name = name;
	cma_miscdev.groups = cma_stat_groups();
	return misc_register(&cma_miscdev);
}

void cma_glue_misc_deregister(void)
{
	misc_deregister(&cma_miscdev);
}

void *cma_glue_misc_owner(void)
{
	return cma_misc_owner;
}
#else
/* 7.x: Rust registers the kernel's struct miscdevice, with these groups. */
const struct attribute_group **cma_glue_misc_groups(void)
{
	return cma_stat_groups();
}
#endif

/* A peer fd's release: its maps' state first (rust/glue/map.c), then the
 * Rust side's attachment, which the state points to. */
static int cma_peer_release(struct inode *inode, struct file *file)
{
	cma_glue_map_destroy(file);
	return cma_rs_peer_release(inode, file);
}

/* A peer fd (CMA_IOC_ATTACH): an anonymous file whose private_data is the
 * Rust side's attachment, freed by its release, with an inode of its own
 * whose i_mapping holds the caller's maps of the target (mmap). */
static const struct file_operations cma_peer_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = cma_rs_peer_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.mmap = cma_glue_peer_mmap,
#ifdef CONFIG_TRANSPARENT_HUGEPAGE
	/* An address congruent to the target's modulo 2 MiB: huge pages map
	 * whole (cma_map_huge_fault). */
	.get_unmapped_area = thp_get_unmapped_area,
#endif
	.release = cma_peer_release,
	.llseek = noop_llseek,
};

int cma_glue_policy(void)
{
	return READ_ONCE(cma_policy);
}

void cma_glue_set_grants(u64 n)
{
	WRITE_ONCE(grants, n);
}

/*
 * A new peer fd whose private_data is @peer, or a negative errno. On success
 * the file owns @peer (cma_rs_peer_release frees it) and pins this module.
 */
int cma_glue_peer_fd(const void *peer)
{
	struct file *file;
	int fd;

	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0)
		return fd;
	/* const only because Rust's ForeignOwnable hands out a const pointer on
	 * 6.12 and a mutable one on 7.x; the file owns and frees it. An inode
	 * of its own (not the anonymous inodes' shared one): its i_mapping is
	 * this fd's maps alone. */
	file = anon_inode_create_getfile("[cma-peer]", &cma_peer_fops, (void *)peer,
					 O_RDWR, NULL);
	if (IS_ERR(file)) {
		put_unused_fd(fd);
		return PTR_ERR(file);
	}
	fd_install(fd, file);
	return fd;
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

static int simd_copy = -1;
module_param(simd_copy, int, 0444);
MODULE_PARM_DESC(simd_copy,
		 "Copy between pinned pages with AVX: -1 if measured faster at load (default), 0 never, 1 always when the CPU has it");

int cma_glue_simd_param(void)
{
	return simd_copy;
}

/* Pages a cache may hold (rust/cache.rs). */
static int cache_pages = 65536;
module_param(cache_pages, int, 0644);
MODULE_PARM_DESC(cache_pages,
		 "Pages of a target a peer fd may keep pinned between copies (0: no cache)");

int cma_glue_cache_param(void)
{
	return READ_ONCE(cache_pages);
}

/* Here rather than in module!, whose key is `author` on 6.12, `authors` on 7.x. */
MODULE_AUTHOR("The cma developers");
MODULE_VERSION(CMA_VERSION);
