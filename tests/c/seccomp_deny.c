// SPDX-License-Identifier: GPL-2.0
/*
 * seccomp_deny: run a command under a seccomp filter that refuses
 * process_vm_readv and process_vm_writev, as a container runtime's profile
 * does, with EPERM or with ENOSYS, and allows everything else.
 *
 *   seccomp_deny eperm|enosys COMMAND [ARG...]
 *
 * The filter is installed with no_new_privs, as an unprivileged launcher
 * would, and is inherited by everything the command starts.
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	unsigned int err;

	if (argc < 3 || (strcmp(argv[1], "eperm") && strcmp(argv[1], "enosys"))) {
		fprintf(stderr, "usage: %s eperm|enosys COMMAND [ARG...]\n", argv[0]);
		return 2;
	}
	err = strcmp(argv[1], "eperm") ? ENOSYS : EPERM;

	struct sock_filter filter[] = {
		/* Another architecture's system call numbers: kill. */
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_process_vm_readv, 2, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_process_vm_writev, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (err & SECCOMP_RET_DATA)),
	};
	struct sock_fprog prog = {
		.len = sizeof(filter) / sizeof(filter[0]),
		.filter = filter,
	};

	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) {
		perror("prctl(PR_SET_NO_NEW_PRIVS)");
		return 1;
	}
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)) {
		perror("prctl(PR_SET_SECCOMP)");
		return 1;
	}
	execvp(argv[2], argv + 2);
	perror(argv[2]);
	return 127;
}
