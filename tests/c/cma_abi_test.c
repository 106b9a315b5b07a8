// SPDX-License-Identifier: GPL-2.0
/*
 * The UAPI header from a C user's point of view, with the kernel's own
 * kselftest harness: the header compiles standalone, its layout is what the
 * ABI promises, and the info ioctl works from C.
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cma.h>

#include "kselftest_harness.h"

/*
 * The layout is fixed: the same for 32- and 64-bit callers. Every struct's
 * size and every field's offset, as the ABI promises them.
 */
#define ABI_FIELD(type, field, off) \
	_Static_assert(offsetof(struct type, field) == (off), #type "." #field " offset")
#define ABI_SIZE(type, size) \
	_Static_assert(sizeof(struct type) == (size), "struct " #type " size")
/* A flags mask or limit has the width of the field it describes. */
#define ABI_WIDTH(mask, type, field) \
	_Static_assert(sizeof(mask) == sizeof(((struct type *)0)->field), #mask " width")

ABI_SIZE(cma_info, 64);
ABI_FIELD(cma_info, abi_version, 0);
ABI_FIELD(cma_info, max_iov, 4);
ABI_FIELD(cma_info, features, 8);
ABI_FIELD(cma_info, reserved, 16);
ABI_WIDTH(CMA_FEAT_ALL, cma_info, features);
ABI_WIDTH(CMA_MAX_IOV, cma_info, max_iov);

ABI_SIZE(cma_iovec, 16);
ABI_FIELD(cma_iovec, base, 0);
ABI_FIELD(cma_iovec, len, 8);

ABI_SIZE(cma_copy, 96);
ABI_FIELD(cma_copy, local_iov, 0);
ABI_FIELD(cma_copy, remote_iov, 8);
ABI_FIELD(cma_copy, local_cnt, 16);
ABI_FIELD(cma_copy, remote_cnt, 20);
ABI_FIELD(cma_copy, pid, 24);
ABI_FIELD(cma_copy, pad, 28);
ABI_FIELD(cma_copy, flags, 32);
ABI_FIELD(cma_copy, bytes, 40);
ABI_FIELD(cma_copy, error, 48);
ABI_FIELD(cma_copy, remote_index, 52);
ABI_FIELD(cma_copy, remote_offset, 56);
ABI_FIELD(cma_copy, local_index, 64);
ABI_FIELD(cma_copy, pad2, 68);
ABI_FIELD(cma_copy, local_offset, 72);
ABI_FIELD(cma_copy, reserved, 80);
ABI_WIDTH(CMA_COPY_FLAGS_ALL, cma_copy, flags);

ABI_SIZE(cma_copy1, 32);
ABI_FIELD(cma_copy1, local, 0);
ABI_FIELD(cma_copy1, remote, 8);
ABI_FIELD(cma_copy1, len, 16);
ABI_FIELD(cma_copy1, pid, 24);
ABI_FIELD(cma_copy1, flags, 28);
ABI_WIDTH(CMA_COPY1_FLAGS_ALL, cma_copy1, flags);
ABI_WIDTH(CMA_COPY1_MAX, cma_copy1, len);

ABI_SIZE(cma_grant, 32);
ABI_FIELD(cma_grant, pid, 0);
ABI_FIELD(cma_grant, flags, 4);
ABI_FIELD(cma_grant, reserved, 8);
ABI_WIDTH(CMA_GRANT_FLAGS_ALL, cma_grant, flags);
ABI_WIDTH(CMA_GRANT_PIDFD, cma_grant, flags);
ABI_WIDTH(CMA_GRANT_DESCENDANTS, cma_grant, flags);

ABI_SIZE(cma_attach, 32);
ABI_FIELD(cma_attach, pid, 0);
ABI_FIELD(cma_attach, flags, 4);
ABI_FIELD(cma_attach, reserved, 8);
ABI_WIDTH(CMA_ATTACH_FLAGS_ALL, cma_attach, flags);

/* Masks and feature bits agree with the bits they collect. */
_Static_assert(CMA_COPY1_FLAGS_ALL == CMA_COPY_PIDFD, "copy1 flags");
_Static_assert(CMA_ATTACH_FLAGS_ALL == CMA_COPY_PIDFD, "attach flags");
_Static_assert(CMA_GRANT_FLAGS_ALL == (CMA_GRANT_PIDFD | CMA_GRANT_DESCENDANTS), "grant flags");
_Static_assert(CMA_GRANT_DESCENDANTS == 2, "grant flags: descendants");
_Static_assert(CMA_GRANT_PIDFD == CMA_COPY_PIDFD, "a pidfd is the same bit in every struct");
_Static_assert((CMA_FEAT_ALL & (CMA_FEAT_ALL + 1)) == 0, "feature bits are contiguous");

/* Every ioctl's number: its type byte and the size of its argument. */
_Static_assert(_IOC_TYPE(CMA_IOC_INFO) == CMA_IOC_MAGIC, "info ioctl type");
_Static_assert(_IOC_SIZE(CMA_IOC_INFO) == sizeof(struct cma_info), "info ioctl size");
_Static_assert(_IOC_SIZE(CMA_IOC_READ) == sizeof(struct cma_copy), "read ioctl size");
_Static_assert(_IOC_SIZE(CMA_IOC_WRITE) == sizeof(struct cma_copy), "write ioctl size");
_Static_assert(_IOC_SIZE(CMA_IOC_GRANT) == sizeof(struct cma_grant), "grant ioctl size");
_Static_assert(_IOC_SIZE(CMA_IOC_READ1) == sizeof(struct cma_copy1), "read1 ioctl size");
_Static_assert(_IOC_SIZE(CMA_IOC_WRITE1) == sizeof(struct cma_copy1), "write1 ioctl size");
_Static_assert(_IOC_SIZE(CMA_IOC_ATTACH) == sizeof(struct cma_attach), "attach ioctl size");
_Static_assert(_IOC_SIZE(CMA_IOC_MAP) == sizeof(struct cma_map), "map ioctl size");
_Static_assert(sizeof(struct cma_map) == 48, "struct cma_map size");
_Static_assert(sizeof(struct cma_map_status) == 64, "struct cma_map_status size");

FIXTURE(dev) {
	int fd;
};

FIXTURE_SETUP(dev)
{
	self->fd = open(CMA_DEVICE_PATH, O_RDWR | O_CLOEXEC);
	if (self->fd < 0 && errno == ENOENT)
		SKIP(return, "%s missing: the cma module is not loaded", CMA_DEVICE_PATH);
	ASSERT_LE(0, self->fd);
}

FIXTURE_TEARDOWN(dev)
{
	if (self->fd >= 0)
		close(self->fd);
}

TEST_F(dev, info_from_c)
{
	struct cma_info info;

	memset(&info, 0xa5, sizeof(info));
	ASSERT_EQ(0, ioctl(self->fd, CMA_IOC_INFO, &info));
	EXPECT_EQ((__u32)CMA_ABI_VERSION, info.abi_version);
	EXPECT_EQ(CMA_MAX_IOV, info.max_iov);
	EXPECT_EQ((__u64)CMA_FEAT_ALL, info.features);
	for (size_t i = 0; i < sizeof(info.reserved) / sizeof(info.reserved[0]); i++)
		EXPECT_EQ(0ULL, info.reserved[i]);
}

TEST_F(dev, unknown_ioctl_from_c)
{
	struct cma_info info;

	EXPECT_EQ(-1, ioctl(self->fd, _IOR(CMA_IOC_MAGIC, 0x4f, struct cma_info), &info));
	EXPECT_EQ(ENOTTY, errno);
}

TEST_F(dev, info_null_from_c)
{
	EXPECT_EQ(-1, ioctl(self->fd, CMA_IOC_INFO, NULL));
	EXPECT_EQ(EFAULT, errno);
}

TEST_HARNESS_MAIN
