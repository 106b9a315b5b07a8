//! The device itself: node, info ioctl, argument checking, open/close, unload.

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use crate::ktap::{expect_errno, Failure, Test, TestResult};
use crate::util::{self, raw_ioctl, Mapping, KERNEL_ADDRESS};
use crate::{check, check_eq};
use cma::sys;

/// The tests of this file, in order.
pub const TESTS: &[Test] = crate::tests![
    device_node_is_misc_char_0666,
    info_reports_abi_version,
    info_from_unprivileged_user,
    unknown_ioctl_is_enotty,
    info_bad_pointer_is_efault,
    open_close_many_times,
    many_open_files_at_once,
    // Last: it unloads and reloads the module.
    unload_refused_while_open_then_reload,
];

const MISC_MAJOR: u64 = 10;

fn device_node_is_misc_char_0666() -> TestResult {
    let meta = std::fs::metadata(cma::DEVICE_PATH)
        .map_err(|e| Failure::Fail(format!("{}: {e}", cma::DEVICE_PATH)))?;
    check!(
        meta.file_type().is_char_device(),
        "{} is not a character device",
        cma::DEVICE_PATH
    );
    check_eq!(meta.mode() & 0o777, 0o666);
    let major = libc::major(meta.rdev()) as u64;
    let minor = libc::minor(meta.rdev()) as u64;
    check_eq!(major, MISC_MAJOR);
    // The sysfs view of the misc device must agree with the node.
    let sys_dev = std::fs::read_to_string("/sys/class/misc/cma/dev")?;
    check_eq!(sys_dev.trim(), format!("{major}:{minor}"));
    Ok(())
}

fn info_reports_abi_version() -> TestResult {
    let dev = cma::Device::open()?;
    let mut raw = sys::cma_info {
        reserved: [0xa5a5_a5a5_a5a5_a5a5; 6],
        ..Default::default()
    };
    raw_ioctl(&dev, sys::CMA_IOC_INFO, &mut raw as *mut _ as usize)?;
    check_eq!(raw.abi_version, sys::CMA_ABI_VERSION);
    check_eq!(raw.max_iov, sys::CMA_MAX_IOV);
    check_eq!(raw.features, crate::EXPECTED_FEATURES);
    check_eq!(raw.reserved, [0u64; 6]);
    // The library's view agrees with the raw one.
    let info = dev.info()?;
    check_eq!(info.abi_version, raw.abi_version);
    check_eq!(info.features.bits(), raw.features);
    Ok(())
}

fn info_from_unprivileged_user() -> TestResult {
    if !util::is_root() {
        return Err(Failure::Skip("needs root to switch to nobody".into()));
    }
    util::in_child(|| {
        util::become_nobody()?;
        let dev = cma::Device::open()?;
        check_eq!(dev.info()?.abi_version, sys::CMA_ABI_VERSION);
        Ok(())
    })
}

fn unknown_ioctl_is_enotty() -> TestResult {
    let dev = cma::Device::open()?;
    // A buffer big enough for any argument, so that a command wrongly
    // accepted would succeed rather than fault.
    let buf = Mapping::new(util::page_size(), libc::PROT_READ | libc::PROT_WRITE)?;
    let info = sys::CMA_IOC_INFO;
    let ioc = |dir: u32, ty: u32, nr: u32, size: u32| (dir << 30) | (size << 16) | (ty << 8) | nr;
    let cases = [
        (0u32, "zero"),
        (info + 1, "next number"),
        (info & !0xff | 0x4f, "last number of the range"),
        (info & !0xff00 | (0x42 << 8), "other type byte"),
        (ioc(1, sys::CMA_IOC_MAGIC, 0x40, 64), "INFO as _IOW"),
        (ioc(3, sys::CMA_IOC_MAGIC, 0x40, 64), "INFO as _IOWR"),
        (ioc(0, sys::CMA_IOC_MAGIC, 0x40, 0), "INFO as _IO"),
        (
            ioc(2, sys::CMA_IOC_MAGIC, 0x40, 32),
            "INFO truncated to 32 bytes",
        ),
        (
            ioc(2, sys::CMA_IOC_MAGIC, 0x40, 128),
            "INFO grown to 128 bytes",
        ),
        (0xffff_ffff, "all ones"),
    ];
    for (cmd, what) in cases {
        expect_errno(
            raw_ioctl(&dev, cmd, buf.addr()),
            libc::ENOTTY,
            format!("{what} ({cmd:#x})"),
        )?;
    }
    check!(
        buf.bytes().iter().all(|&b| b == 0),
        "an unknown ioctl wrote to its argument"
    );
    Ok(())
}

fn info_bad_pointer_is_efault() -> TestResult {
    let dev = cma::Device::open()?;
    let ro = Mapping::new(util::page_size(), libc::PROT_READ)?;
    let cases = [
        (0usize, "NULL"),
        (util::unmapped_address()?, "unmapped page"),
        (KERNEL_ADDRESS, "kernel address"),
        (ro.addr(), "read-only page"),
        (usize::MAX - 31, "end of the address space"),
    ];
    for (addr, what) in cases {
        expect_errno(
            raw_ioctl(&dev, sys::CMA_IOC_INFO, addr),
            libc::EFAULT,
            format!("{what} ({addr:#x})"),
        )?;
    }
    check!(
        ro.bytes().iter().all(|&b| b == 0),
        "the read-only page changed"
    );
    Ok(())
}

fn open_close_many_times() -> TestResult {
    for i in 0..10_000 {
        let dev = cma::Device::open().map_err(|e| Failure::Fail(format!("open #{i}: {e}")))?;
        if i % 1000 == 0 {
            dev.info()?;
        }
    }
    Ok(())
}

fn many_open_files_at_once() -> TestResult {
    let devs: Vec<cma::Device> = (0..512)
        .map(|_| cma::Device::open())
        .collect::<Result<_, _>>()?;
    for dev in &devs {
        check_eq!(dev.info()?.abi_version, sys::CMA_ABI_VERSION);
    }
    Ok(())
}

fn unload_refused_while_open_then_reload() -> TestResult {
    if !util::is_root() {
        return Err(Failure::Skip("needs root to unload the module".into()));
    }
    let Ok(ko) = std::env::var("CMA_KO") else {
        return Err(Failure::Skip("CMA_KO (path of cma.ko) not set".into()));
    };
    let dev = cma::Device::open()?;
    // An open file holds a module reference: unloading must be refused.
    match util::delete_module("cma", libc::O_NONBLOCK) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EBUSY)) => {}
        Err(e) => return Err(Failure::Fail(format!("delete_module while open: {e}"))),
        Ok(()) => {
            let _ = util::load_module(&ko);
            return Err(Failure::Fail(
                "module unloaded while /dev/cma was open".into(),
            ));
        }
    }
    check_eq!(dev.info()?.abi_version, sys::CMA_ABI_VERSION);
    drop(dev);

    util::delete_module("cma", libc::O_NONBLOCK)
        .map_err(|e| Failure::Fail(format!("delete_module after close: {e}")))?;
    let gone = !std::path::Path::new(cma::DEVICE_PATH).exists();
    let reload = util::load_module(&ko);
    check!(gone, "{} still exists after unload", cma::DEVICE_PATH);
    reload.map_err(|e| Failure::Fail(format!("reloading {ko}: {e}")))?;
    let dev = cma::Device::open()?;
    check_eq!(dev.info()?.abi_version, sys::CMA_ABI_VERSION);
    Ok(())
}
