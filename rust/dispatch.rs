// SPDX-License-Identifier: GPL-2.0

//! ioctl dispatch: decode the command, hand the argument to its handler.
//!
//! This is the only place that knows about ioctl numbers; handlers know only
//! their own argument.

use crate::copy::Via;
use crate::engine::Direction;
use crate::user::IoctlArg;
use crate::{consent, copy, info, map, peer_fd, uapi};
use kernel::ffi::{c_int, c_long, c_uint, c_ulong};
use kernel::prelude::*;

/// The `unlocked_ioctl` of a peer fd (`CMA_IOC_ATTACH`), called by the C glue.
///
/// # Safety
///
/// `file` must be a peer fd's file (made by [`peer_fd::attach`]), not
/// released: the glue calls this only as a peer fd's `unlocked_ioctl`, and
/// the VFS does not release a file while one of its ioctls runs.
#[no_mangle]
pub(crate) unsafe extern "C" fn cma_rs_peer_ioctl(
    file: *mut kernel::bindings::file,
    cmd: c_uint,
    arg: c_ulong,
) -> c_long {
    const _: crate::glue::cma_rs_ioctl_fn = Some(cma_rs_peer_ioctl);
    // SAFETY: `file` is a live peer fd file, not being released (above).
    let peer = unsafe { peer_fd::peer_of(file) };
    if cmd == uapi::CMA_IOC_MAP {
        // SAFETY: `file` is `peer`'s file, in its ioctl (above).
        return result(unsafe { map::ioctl(file, peer, IoctlArg::new(cmd, arg)) });
    }
    result(dispatch(Via::Peer(peer), cmd, arg))
}

/// The `release` of a peer fd, called by the C glue once, when its last
/// reference goes away: the peer is freed.
///
/// # Safety
///
/// `file` must be a peer fd's file in its release: the glue calls this only
/// as a peer fd's `release`, once, after every other file operation on it
/// has returned.
#[no_mangle]
pub(crate) unsafe extern "C" fn cma_rs_peer_release(
    _inode: *mut kernel::bindings::inode,
    file: *mut kernel::bindings::file,
) -> c_int {
    const _: crate::glue::cma_rs_release_fn = Some(cma_rs_peer_release);
    // SAFETY: as above.
    unsafe { peer_fd::release(file) };
    0
}

/// An ioctl's result as the VFS takes it: the value, or a negative errno.
fn result(r: Result<isize>) -> c_long {
    match r {
        Ok(ret) => ret,
        Err(e) => e.to_errno() as c_long,
    }
}

/// The one command table, for both kinds of file: `via` says which file
/// the command came in on (a peer fd takes the copies and `INFO` only).
pub(crate) fn dispatch(via: Via<'_>, cmd: u32, arg: usize) -> Result<isize> {
    let arg = IoctlArg::new(cmd, arg);
    match (cmd, via) {
        (uapi::CMA_IOC_INFO, _) => info::info(arg),
        (uapi::CMA_IOC_READ, _) => copy::ioctl(via, arg, Direction::Read),
        (uapi::CMA_IOC_WRITE, _) => copy::ioctl(via, arg, Direction::Write),
        (uapi::CMA_IOC_READ1, _) => copy::ioctl1(via, arg, Direction::Read),
        (uapi::CMA_IOC_WRITE1, _) => copy::ioctl1(via, arg, Direction::Write),
        (uapi::CMA_IOC_GRANT, Via::Device(dev)) => {
            consent::grant(dev.registry(), dev.grants(), arg)
        }
        (uapi::CMA_IOC_REVOKE, Via::Device(dev)) => consent::revoke(dev.registry()),
        (uapi::CMA_IOC_ATTACH, Via::Device(dev)) => peer_fd::attach(dev, arg),
        _ => Err(ENOTTY),
    }
}
