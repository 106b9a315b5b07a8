// SPDX-License-Identifier: GPL-2.0
/*
 * The C side of cma: only what the 6.12 Rust bindings cannot express.
 *
 * 6.12 has no miscdevice or file_operations abstraction in Rust, and no
 * MODULE_VERSION in module!, so this file registers the misc device and
 * forwards each file operation to the Rust side (rust/cma_rs.rs), which owns
 * all the logic.
 */
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>

/* Implemented in Rust (rust/dispatch.rs). */
long cma_rs_ioctl(struct file *file, unsigned int cmd, unsigned long arg);

/* Called from Rust (rust/device.rs). */
int cma_glue_register(void);
void cma_glue_unregister(void);

static const struct file_operations cma_fops = {
	/* Pins the module while a file is open: rmmod is refused until close. */
	.owner = THIS_MODULE,
	.unlocked_ioctl = cma_rs_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = noop_llseek,
};

static struct miscdevice cma_miscdev = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "cma",
	/* Anyone may open: every request is checked on its own. */
	.mode = 0666,
	.fops = &cma_fops,
};

/* Called from the Rust module's init; returns 0 or a negative errno. */
int cma_glue_register(void)
{
	return misc_register(&cma_miscdev);
}

/* Called from the Rust module's drop, after a successful register. */
void cma_glue_unregister(void)
{
	misc_deregister(&cma_miscdev);
}

MODULE_VERSION("0.1.0");
