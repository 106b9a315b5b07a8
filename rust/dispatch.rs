// SPDX-License-Identifier: GPL-2.0

//! ioctl dispatch: decode the command, hand the argument to its handler.
//!
//! This is the only place that knows about ioctl numbers; handlers know only
//! their own argument.

use crate::{info, uapi};
use core::ffi::{c_long, c_uint, c_ulong};
use kernel::prelude::*;

/// The `unlocked_ioctl` of `/dev/cma`, called by the C glue.
///
/// Returns a non-negative value on success or a negative errno.
#[no_mangle]
pub(crate) extern "C" fn cma_rs_ioctl(
    _file: *mut kernel::bindings::file,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    match dispatch(cmd, arg as usize) {
        Ok(ret) => ret as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

fn dispatch(cmd: u32, arg: usize) -> Result<isize> {
    match cmd {
        uapi::CMA_IOC_INFO => info::info(arg),
        _ => Err(ENOTTY),
    }
}
