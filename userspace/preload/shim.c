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
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/prctl.h>
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

typedef long (*syscall_fn)(long, ...);
typedef int (*prctl_fn)(int, ...);

static syscall_fn next_syscall(void)
{
	static syscall_fn next;
	syscall_fn f = __atomic_load_n(&next, __ATOMIC_ACQUIRE);

	if (!f) {
		f = (syscall_fn)dlsym(RTLD_NEXT, "syscall");
		__atomic_store_n(&next, f, __ATOMIC_RELEASE);
	}
	return f;
}

/*
 * The real system call, for src/lib.rs's fallback (glibc's syscall(), so
 * errno is set as callers expect).
 */
long cma_preload_real_syscall(long nr, long a1, long a2, long a3, long a4, long a5, long a6)
{
	syscall_fn f = next_syscall();

	if (!f) {
		errno = ENOSYS;
		return -1;
	}
	return f(nr, a1, a2, a3, a4, a5, a6);
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
	static prctl_fn next;
	unsigned long a[4];
	va_list ap;
	prctl_fn f = __atomic_load_n(&next, __ATOMIC_ACQUIRE);
	int ret, saved;

	va_start(ap, option);
	for (int i = 0; i < 4; i++)
		a[i] = va_arg(ap, unsigned long);
	va_end(ap);
	if (!f) {
		f = (prctl_fn)dlsym(RTLD_NEXT, "prctl");
		__atomic_store_n(&next, f, __ATOMIC_RELEASE);
	}
	if (!f) {
		errno = ENOSYS;
		return -1;
	}
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
