// SPDX-License-Identifier: GPL-2.0

//! ioctl dispatch: decode the command, hand the argument to its handler.
//!
//! This is the only place that knows about ioctl numbers; handlers know only
//! their own argument.

use crate::copy::Via;
use crate::engine::Direction;
use crate::{consent, copy, file, info, peer, uapi};
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
    // SAFETY: the glue calls this only as the `unlocked_ioctl` of
    // `/dev/cma`, whose `open` stored the state, and the VFS does not
    // release a file while one of its ioctls runs.
    let dev = unsafe { file::borrow(crate::glue::cma_glue_file_private(file)) };
    match dispatch(dev, file as usize, cmd, arg as usize) {
        Ok(ret) => ret as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// The `release` of `/dev/cma`, called by the C glue when the last reference
/// to an open file goes away: the grants made on it are forgotten, and its
/// state freed.
#[no_mangle]
pub(crate) extern "C" fn cma_rs_release(
    _inode: *mut kernel::bindings::inode,
    file: *mut kernel::bindings::file,
) -> c_int {
    consent::release(file as usize);
    // SAFETY: the glue calls this only as the `release` of `/dev/cma`, once,
    // after every other file operation on it has returned; its `open`
    // stored the state.
    unsafe { file::close(crate::glue::cma_glue_file_private(file)) };
    0
}

/// The `unlocked_ioctl` of a peer fd (`CMA_IOC_ATTACH`), called by the C glue.
#[no_mangle]
pub(crate) extern "C" fn cma_rs_peer_ioctl(
    file: *mut kernel::bindings::file,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    // SAFETY: the glue calls this only as the `unlocked_ioctl` of a peer fd,
    // and the VFS does not release a file while one of its ioctls runs.
    let peer = unsafe { peer::of_file(file) };
    let via = Via::Peer(peer);
    let arg = arg as usize;
    let ret = match cmd {
        uapi::CMA_IOC_INFO => info::info(arg),
        uapi::CMA_IOC_READ => copy::ioctl(via, arg, Direction::Read),
        uapi::CMA_IOC_WRITE => copy::ioctl(via, arg, Direction::Write),
        uapi::CMA_IOC_READ1 => copy::ioctl1(via, arg, Direction::Read),
        uapi::CMA_IOC_WRITE1 => copy::ioctl1(via, arg, Direction::Write),
        _ => Err(ENOTTY),
    };
    match ret {
        Ok(ret) => ret as c_long,
        Err(e) => e.to_errno() as c_long,
    }
}

/// The `release` of a peer fd, called by the C glue once, when its last
/// reference goes away: the peer is freed.
#[no_mangle]
pub(crate) extern "C" fn cma_rs_peer_release(
    _inode: *mut kernel::bindings::inode,
    file: *mut kernel::bindings::file,
) -> c_int {
    // SAFETY: the glue calls this only as the `release` of a peer fd, once,
    // after every other file operation on it has returned.
    unsafe { peer::release(file) };
    0
}

/// `file` identifies the open file (it is never dereferenced here); `dev`
/// is its state.
fn dispatch(dev: &file::DevFile, file: usize, cmd: u32, arg: usize) -> Result<isize> {
    match cmd {
        uapi::CMA_IOC_INFO => info::info(arg),
        uapi::CMA_IOC_READ => copy::ioctl(Via::Device(dev), arg, Direction::Read),
        uapi::CMA_IOC_WRITE => copy::ioctl(Via::Device(dev), arg, Direction::Write),
        uapi::CMA_IOC_READ1 => copy::ioctl1(Via::Device(dev), arg, Direction::Read),
        uapi::CMA_IOC_WRITE1 => copy::ioctl1(Via::Device(dev), arg, Direction::Write),
        uapi::CMA_IOC_GRANT => consent::grant(file, arg),
        uapi::CMA_IOC_REVOKE => consent::revoke(),
        uapi::CMA_IOC_ATTACH => peer::attach(dev, arg),
        _ => Err(ENOTTY),
    }
}
