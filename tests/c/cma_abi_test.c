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

/* The layout is fixed: the same for 32- and 64-bit callers. */
_Static_assert(sizeof(struct cma_info) == 64, "struct cma_info size");
_Static_assert(offsetof(struct cma_info, abi_version) == 0, "abi_version offset");
_Static_assert(offsetof(struct cma_info, max_iov) == 4, "max_iov offset");
_Static_assert(offsetof(struct cma_info, features) == 8, "features offset");
_Static_assert(offsetof(struct cma_info, reserved) == 16, "reserved offset");
_Static_assert(_IOC_TYPE(CMA_IOC_INFO) == CMA_IOC_MAGIC, "info ioctl type");
_Static_assert(_IOC_SIZE(CMA_IOC_INFO) == sizeof(struct cma_info), "info ioctl size");
_Static_assert(sizeof(struct cma_copy1) == 32, "struct cma_copy1 size");
_Static_assert(sizeof(struct cma_attach) == 32, "struct cma_attach size");
_Static_assert(offsetof(struct cma_copy1, pid) == 24, "cma_copy1 pid offset");
_Static_assert(_IOC_SIZE(CMA_IOC_READ1) == sizeof(struct cma_copy1), "read1 ioctl size");

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
	EXPECT_EQ(1024U, info.max_iov);
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
