// SPDX-License-Identifier: GPL-2.0

//! ioctl dispatch: decode the command, hand the argument to its handler.
//!
//! This is the only place that knows about ioctl numbers; handlers know only
//! their own argument.

use crate::engine::Direction;
use crate::{consent, copy, info, uapi};
use core::ffi::{c_int, c_long, c_uint, c_ulong};
use kernel::prelude::*;

/// The `unlocked_ioctl` of `/dev/cma`, called by the C glue.
///
/// Returns a non-negative value on success or a negative errno.
#[no_mangle]
pub(crate) extern "C" fn cma_rs_ioctl(
    file: *mut kernel::bindings::file,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    match dispatch(file as usize, cmd, arg as usize) {
        Ok(ret) => ret as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// The `release` of `/dev/cma`, called by the C glue when the last reference
/// to an open file goes away: the grants made on it are forgotten.
#[no_mangle]
pub(crate) extern "C" fn cma_rs_release(
    _inode: *mut kernel::bindings::inode,
    file: *mut kernel::bindings::file,
) -> c_int {
    consent::release(file as usize);
    0
}

/// `file` identifies the open file (it is never dereferenced here).
fn dispatch(file: usize, cmd: u32, arg: usize) -> Result<isize> {
    match cmd {
        uapi::CMA_IOC_INFO => info::info(arg),
        uapi::CMA_IOC_READ => copy::ioctl(arg, Direction::Read),
        uapi::CMA_IOC_WRITE => copy::ioctl(arg, Direction::Write),
        uapi::CMA_IOC_READ1 => copy::ioctl1(arg, Direction::Read),
        uapi::CMA_IOC_WRITE1 => copy::ioctl1(arg, Direction::Write),
        uapi::CMA_IOC_GRANT => consent::grant(file, arg),
        uapi::CMA_IOC_REVOKE => consent::revoke(),
        _ => Err(ENOTTY),
    }
}
