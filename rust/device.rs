// SPDX-License-Identifier: GPL-2.0

//! `/dev/cma`: the misc device whose open files carry requests.
//!
//! [`CmaDevice`] is the device's file operations, as the kernel crate's
//! `MiscDevice` has them (on 6.12, `compat`'s look-alike): `open` makes the
//! file's state ([`DevFile`]), `ioctl` hands a request to [`dispatch`],
//! `release` forgets the grants made on the file.

use crate::compat::fs::File;
use crate::compat::miscdevice::{
    MiscDevice, MiscDeviceOptions, MiscDeviceRegistration, Registration,
};
use crate::consent::{self, Registry};
use crate::copy::Via;
use crate::dispatch;
use crate::file::DevFile;
use kernel::c_str;
use kernel::prelude::*;
use kernel::sync::Arc;

/// The file operations of `/dev/cma`.
pub(crate) struct CmaDevice;

#[vtable]
impl MiscDevice for CmaDevice {
    type Ptr = KBox<DevFile>;

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<KBox<DevFile>> {
        // SAFETY: `misc` is what `open` was given, and `CmaDevice` is only
        // registered by `register` below, through `Registration`.
        let registry = unsafe { CmaRegistration::data(misc) };
        DevFile::new(registry.clone())
    }

    fn release(device: KBox<DevFile>, _file: &File) {
        // The grants made on this file go with it; no other operation on the
        // file runs any more.
        consent::release(device.registry(), device.grants());
    }

    fn ioctl(device: &DevFile, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        dispatch::dispatch(Via::Device(device), cmd, arg)
    }
}

/// `/dev/cma` registered, with the consent registry its files use.
pub(crate) type CmaRegistration = Registration<CmaDevice, Arc<Registry>>;

/// Registers `/dev/cma` (mode 0666: anyone may open, every request is
/// checked on its own; a udev rule narrows it), with its counters'
/// attributes, its files' grants going to `registry`; dropping the result
/// deregisters it.
pub(crate) fn register(registry: Arc<Registry>) -> Result<Pin<KBox<CmaRegistration>>> {
    Registration::register(
        MiscDeviceOptions {
            name: c_str!("cma"),
        },
        registry,
    )
}
