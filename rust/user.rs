// SPDX-License-Identifier: GPL-2.0

//! The caller's memory: an ioctl's argument (the struct at `arg`, of the
//! size its command encodes), and copies between a kernel buffer and user
//! memory that report exactly how many bytes made it, as
//! `copy_{to,from}_user` do (the `UserSlice` API of 6.12 is
//! all-or-nothing, which would lose the partial count).

use crate::compat::transmute::{AsBytes, FromBytes};
use crate::compat::uaccess::{user_ptr, UserPtr, UserSlice};
use crate::glue::cma_glue_access_ok;
use core::ffi::c_void;
use kernel::bindings;
use kernel::prelude::*;

/// An ioctl's argument: the user memory at `arg`, as long as the size the
/// command encodes (`_IOC_SIZE`). Handlers read and write it as the struct
/// their command names; a struct of another size is refused (`EINVAL`), so
/// no handler can read or write past what the command declares.
#[derive(Clone, Copy)]
pub(crate) struct IoctlArg {
    ptr: UserPtr,
    len: usize,
}

impl IoctlArg {
    /// The argument of command `cmd` at `arg`.
    pub(crate) fn new(cmd: u32, arg: usize) -> IoctlArg {
        IoctlArg {
            ptr: user_ptr(arg),
            len: kernel::ioctl::_IOC_SIZE(cmd),
        }
    }

    fn slice<T>(self) -> Result<UserSlice> {
        if core::mem::size_of::<T>() != self.len {
            return Err(EINVAL);
        }
        Ok(UserSlice::new(self.ptr, self.len))
    }

    /// Reads the argument as a `T`.
    pub(crate) fn read<T: FromBytes>(self) -> Result<T> {
        self.slice::<T>()?.reader().read()
    }

    /// Writes `value` over the argument.
    pub(crate) fn write<T: AsBytes>(self, value: &T) -> Result {
        self.slice::<T>()?.writer().write(value)
    }
}

/// Copies `dst.len()` bytes from the caller's address `src` into `dst`.
/// Returns the number of bytes copied; fewer than asked only on a fault.
pub(crate) fn copy_from_user(dst: &mut [u8], src: usize) -> usize {
    // SAFETY: `dst` is a valid, writable kernel buffer of `dst.len()` bytes;
    // the user address is validated by `_copy_from_user` itself, which
    // returns how many bytes it could not copy (and zeroes them).
    let left = unsafe {
        bindings::_copy_from_user(
            dst.as_mut_ptr().cast(),
            src as *const c_void,
            dst.len() as kernel::ffi::c_ulong,
        )
    };
    // `left <= dst.len()`; saturating all the same (a count above it would
    // be a kernel bug, and reads as nothing copied). `c_ulong` is `usize`.
    dst.len().saturating_sub(left as usize)
}

/// Copies `src` to the caller's address `dst`. Returns the number of bytes
/// copied; fewer than `src.len()` only on a fault.
pub(crate) fn copy_to_user(dst: usize, src: &[u8]) -> usize {
    // SAFETY: `src` is a valid kernel buffer of `src.len()` bytes; the user
    // address is validated by `_copy_to_user`, which returns how many bytes
    // it could not copy.
    let left = unsafe {
        bindings::_copy_to_user(
            dst as *mut c_void,
            src.as_ptr().cast(),
            src.len() as kernel::ffi::c_ulong,
        )
    };
    // As in `copy_from_user`.
    src.len().saturating_sub(left as usize)
}

/// Whether `[addr, addr + len)` lies in user memory at all (`access_ok()`):
/// the range check the kernel makes before touching a user buffer.
pub(crate) fn access_ok(addr: usize, len: usize) -> bool {
    // SAFETY: `access_ok()` only compares numbers; it touches no memory.
    unsafe { cma_glue_access_ok(addr, len) }
}
