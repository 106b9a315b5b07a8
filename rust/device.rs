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
use crate::copy::Via;
use crate::file::DevFile;
use crate::{consent, dispatch};
use kernel::c_str;
use kernel::prelude::*;

/// The file operations of `/dev/cma`.
pub(crate) struct CmaDevice;

#[vtable]
impl MiscDevice for CmaDevice {
    type Ptr = KBox<DevFile>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<KBox<DevFile>> {
        DevFile::new()
    }

    fn release(device: KBox<DevFile>, _file: &File) {
        // The grants made on this file go with it; no other operation on the
        // file runs any more.
        consent::release(device.grants());
    }

    fn ioctl(device: &DevFile, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        dispatch::dispatch(Via::Device(device), cmd, arg)
    }
}

/// Registers `/dev/cma` (mode 0666: anyone may open, every request is
/// checked on its own; a udev rule narrows it), with its counters'
/// attributes; dropping the result deregisters it.
pub(crate) fn register() -> Result<Pin<KBox<Registration<CmaDevice>>>> {
    Registration::register(MiscDeviceOptions {
        name: c_str!("cma"),
    })
}
