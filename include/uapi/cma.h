/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * cma: single-copy cross-process memory transfer through /dev/cma.
 *
 * This header is the whole ioctl ABI. C users include it directly; the kernel
 * module and the Rust userspace crates take it through bindgen. All fields are
 * fixed-size, naturally aligned and explicitly padded, so the layout is the
 * same for 32- and 64-bit callers.
 *
 * Extensibility: the info ioctl reports the ABI version and a feature
 * bitmask. Every flags field must be zero except for bits a feature defines,
 * and every reserved field must be zero on input; the module rejects anything
 * else with -EINVAL, so that a bit or field can be given a meaning later
 * without breaking old callers.
 */
#ifndef _UAPI_CMA_H
#define _UAPI_CMA_H

#include <linux/ioctl.h>
#include <linux/types.h>

/** Path of the character device the module registers. */
#define CMA_DEVICE_PATH "/dev/cma"

/** ABI version reported by %CMA_IOC_INFO; bumped on every ABI change. */
#define CMA_ABI_VERSION 1

/** ioctl type ("magic") byte; numbers 0x40-0x4f (free in ioctl-number.rst). */
#define CMA_IOC_MAGIC 0xCA

/**
 * struct cma_info - what the loaded module supports (%CMA_IOC_INFO).
 * @abi_version: %CMA_ABI_VERSION of the module.
 * @max_iov: the largest iovec count accepted on either side (UIO_MAXIOV).
 * @features: bitmask of %CMA_FEAT_* the module implements.
 * @reserved: zero.
 */
struct cma_info {
	__u32 abi_version;
	__u32 max_iov;
	__u64 features;
	__u64 reserved[6];
};

/* Feature bits reported in cma_info.features. None exist in ABI version 1. */

/** Query the module's ABI version and features. */
#define CMA_IOC_INFO _IOR(CMA_IOC_MAGIC, 0x40, struct cma_info)

#endif /* _UAPI_CMA_H */
