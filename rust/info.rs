// SPDX-License-Identifier: GPL-2.0

//! `CMA_IOC_INFO`: what this module supports.

use crate::uapi;
use crate::user::IoctlArg;
use kernel::prelude::*;

/// Feature bits (`CMA_FEAT_*`) this build implements.
pub(crate) const FEATURES: u64 = (uapi::CMA_FEAT_COPY
    | uapi::CMA_FEAT_PIDFD
    | uapi::CMA_FEAT_GRANT
    | uapi::CMA_FEAT_PROBE
    | uapi::CMA_FEAT_COPY1
    | uapi::CMA_FEAT_ATTACH
    | uapi::CMA_FEAT_PVM) as u64;

/// Writes a `struct cma_info` describing this module to `arg`.
pub(crate) fn info(arg: IoctlArg) -> Result<isize> {
    let info = uapi::cma_info {
        abi_version: uapi::CMA_ABI_VERSION,
        max_iov: kernel::bindings::UIO_MAXIOV,
        features: FEATURES,
        reserved: [0; 6],
    };
    arg.write(&info)?;
    Ok(0)
}
