// SPDX-License-Identifier: GPL-2.0
/*
 * The C face of libcma-preload.so: what Rust cannot define. syscall(2) and
 * prctl(2) are variadic, and Rust (stable) cannot define a C-variadic
 * function; the load-time constructor, the exit-time report and the fork
 * handlers are plain C attributes. Everything else is in src/lib.rs.
 *
 * syscall(): libfabric's shm provider and LTP call
 * syscall(SYS_process_vm_readv, ...) directly, so those two numbers go to
 * the same code as the glibc wrappers; every other number goes to the next
 * syscall() (glibc's) untouched.
 *
 * prctl(): PR_SET_PTRACER is how Open MPI and UCX consent to being read
 * when Yama is on; it becomes the matching CMA_IOC_GRANT as well.
 *
 * open() and its relatives: UCX reads /proc/sys/kernel/yama/ptrace_scope
 * before it uses process_vm_readv, and turns its cma transport off at 2 and
 * 3, where the system call is refused. When /dev/cma serves this process's
 * calls, that answer would be wrong for the path the calls take, so src/lib.rs
 * answers the read (see cma_preload_yama_answer). Every other open goes to
 * the next definition untouched.
 *
 * stat(): see userns_answer below.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>

/* src/lib.rs */
long cma_preload_syscall_pvm(int write, long pid, long lvec, long liovcnt, long rvec,
			     long riovcnt, long flags);
void cma_preload_ptracer(unsigned long pid);
void cma_preload_init(void);
void cma_preload_fini(void);
void cma_preload_atfork_prepare(void);
void cma_preload_atfork_parent(void);
void cma_preload_atfork_child(void);
int cma_preload_yama_answer(int flags);
void cma_preload_saw_pid(int pid);
unsigned long long cma_preload_userns_answer(void);

typedef long (*syscall_fn)(long, ...);
typedef int (*prctl_fn)(int, ...);

/*
 * The next definition of @name (glibc's), looked up once into @slot; NULL
 * with errno ENOSYS if there is none.
 */
static void *next_fn(void **slot, const char *name)
{
	void *f = __atomic_load_n(slot, __ATOMIC_ACQUIRE);

	if (!f) {
		f = dlsym(RTLD_NEXT, name);
		__atomic_store_n(slot, f, __ATOMIC_RELEASE);
	}
	if (!f)
		errno = ENOSYS;
	return f;
}

/*
 * The real system call, for src/lib.rs's fallback (glibc's syscall(), so
 * errno is set as callers expect).
 */
long cma_preload_real_syscall(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
	static void *next;
	syscall_fn f = (syscall_fn)next_fn(&next, "syscall");

	return f ? f(nr, a1, a2, a3, a4, a5, a6) : -1;
}

long syscall(long nr, ...)
{
	long a[6];
	va_list ap;

	/* x86-64 passes up to six integer arguments; read them all. */
	va_start(ap, nr);
	for (int i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	if (nr == SYS_process_vm_readv || nr == SYS_process_vm_writev)
		return cma_preload_syscall_pvm(nr == SYS_process_vm_writev, a[0], a[1], a[2], a[3],
					       a[4], a[5]);
	return cma_preload_real_syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

int prctl(int option, ...)
{
	static void *next;
	unsigned long a[4];
	va_list ap;
	prctl_fn f;
	int ret, saved;

	va_start(ap, option);
	for (int i = 0; i < 4; i++)
		a[i] = va_arg(ap, unsigned long);
	va_end(ap);
	f = (prctl_fn)next_fn(&next, "prctl");
	if (!f)
		return -1;
	ret = f(option, a[0], a[1], a[2], a[3]);
	if (option == PR_SET_PTRACER) {
		/*
		 * The caller's intent is consent, whether or not Yama is there
		 * to take it; keep the real call's result and errno.
		 */
		saved = errno;
		cma_preload_ptracer(a[0]);
		errno = saved;
	}
	return ret;
}

/* The file a library reads to learn whether process_vm_readv may work. */
static const char yama_scope[] = "/proc/sys/kernel/yama/ptrace_scope";

/*
 * A pid in "/proc/PID/stat", or 0. UCX opens it for each peer it connects
 * to (its keepalive reads the start time), which names the peer to
 * src/lib.rs before any copy (see cma_preload_saw_pid).
 */
static int proc_stat_pid(const char *path)
{
	const char *p = path + strlen("/proc/");
	long pid = 0;

	if (strncmp(path, "/proc/", strlen("/proc/")) != 0 || *p < '1' || *p > '9')
		return 0;
	for (; *p >= '0' && *p <= '9' && pid < (1L << 22); p++)
		pid = pid * 10 + (*p - '0');
	return strcmp(p, "/stat") == 0 && pid < (1L << 22) ? (int)pid : 0;
}

/* An fd answering the read of Yama's scope, or -1: open the real file. */
static int answered(int dirfd, const char *path, int flags)
{
	int pid;

	if (!path || (path[0] != '/' && dirfd != AT_FDCWD))
		return -1;
	pid = proc_stat_pid(path);
	if (pid > 0)
		cma_preload_saw_pid(pid);
	if (strcmp(path, yama_scope) != 0)
		return -1;
	return cma_preload_yama_answer(flags);
}

/* open(2)'s mode argument, present only when the flags create a file. */
#define OPEN_MODE(flags, last)                                                  \
	({                                                                      \
		mode_t m = 0;                                                   \
		if ((flags) & O_CREAT || ((flags) & O_TMPFILE) == O_TMPFILE) {  \
			va_list ap;                                             \
			va_start(ap, last);                                     \
			m = va_arg(ap, mode_t);                                 \
			va_end(ap);                                             \
		}                                                               \
		m;                                                              \
	})

typedef int (*open_fn)(const char *, int, ...);
typedef int (*openat_fn)(int, const char *, int, ...);
typedef int (*open2_fn)(const char *, int);

#define DEFINE_OPEN(name)                                                       \
	int name(const char *path, int flags, ...)                              \
	{                                                                       \
		static void *next;                                              \
		mode_t mode = OPEN_MODE(flags, flags);                          \
		int fd = answered(AT_FDCWD, path, flags);                       \
		open_fn f;                                                      \
		if (fd >= 0)                                                    \
			return fd;                                              \
		f = (open_fn)next_fn(&next, #name);                             \
		return f ? f(path, flags, mode) : -1;                           \
	}
#define DEFINE_OPENAT(name)                                                     \
	int name(int dirfd, const char *path, int flags, ...)                   \
	{                                                                       \
		static void *next;                                              \
		mode_t mode = OPEN_MODE(flags, flags);                          \
		int fd = answered(dirfd, path, flags);                          \
		openat_fn f;                                                    \
		if (fd >= 0)                                                    \
			return fd;                                              \
		f = (openat_fn)next_fn(&next, #name);                           \
		return f ? f(dirfd, path, flags, mode) : -1;                    \
	}
/* What _FORTIFY_SOURCE makes of an open() whose flags are not constant. */
#define DEFINE_OPEN_2(name)                                                     \
	int name(const char *path, int flags)                                   \
	{                                                                       \
		static void *next;                                              \
		int fd = answered(AT_FDCWD, path, flags);                       \
		open2_fn f;                                                     \
		if (fd >= 0)                                                    \
			return fd;                                              \
		f = (open2_fn)next_fn(&next, #name);                            \
		return f ? f(path, flags) : -1;                                 \
	}

DEFINE_OPEN(open)
DEFINE_OPEN(open64)
DEFINE_OPENAT(openat)
DEFINE_OPENAT(openat64)
DEFINE_OPEN_2(__open_2)
DEFINE_OPEN_2(__open64_2)

/*
 * stat(): Open MPI's btl/vader stat()s /proc/self/ns/user and compares the
 * inode numbers of its ranks; src/lib.rs gives the number to report when
 * /dev/cma lets the ranks of this process's launcher copy across user
 * namespaces (see cma_preload_userns_answer). Every other stat, and every
 * other field, is the real one.
 */
/* The inode number to report for @path, which stat() found, or 0. */
static unsigned long long userns_answer(const char *path)
{
	if (!path || (strcmp(path, "/proc/self/ns/user") != 0 &&
		      strcmp(path, "/proc/thread-self/ns/user") != 0))
		return 0;
	return cma_preload_userns_answer();
}

#define DEFINE_STAT(name, type)                                                 \
	int name(const char *path, struct type *buf)                            \
	{                                                                       \
		static void *next;                                              \
		int (*f)(const char *, struct type *) = next_fn(&next, #name);  \
		int ret = f ? f(path, buf) : -1;                                \
		int saved = errno;                                              \
		unsigned long long ino = ret == 0 ? userns_answer(path) : 0;    \
		if (ino)                                                        \
			buf->st_ino = ino;                                      \
		errno = saved;                                                  \
		return ret;                                                     \
	}

DEFINE_STAT(stat, stat)
DEFINE_STAT(stat64, stat64)

__attribute__((constructor)) static void preload_init(void)
{
	cma_preload_init();
	pthread_atfork(cma_preload_atfork_prepare, cma_preload_atfork_parent,
		       cma_preload_atfork_child);
}

__attribute__((destructor)) static void preload_fini(void)
{
	cma_preload_fini();
}
