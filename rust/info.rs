// SPDX-License-Identifier: GPL-2.0

//! `CMA_IOC_INFO`: what this module supports.

use crate::uapi;
use crate::user::IoctlArg;
use kernel::prelude::*;

/// Feature bits (`CMA_FEAT_*`) this build implements.
pub(crate) const FEATURES: u64 = uapi::CMA_FEAT_ALL as u64;

/// Writes a `struct cma_info` describing this module to `arg`.
pub(crate) fn info(arg: IoctlArg) -> Result<isize> {
    let info = uapi::cma_info {
        abi_version: uapi::CMA_ABI_VERSION,
        max_iov: uapi::CMA_MAX_IOV,
        features: FEATURES,
        reserved: [0; 6],
    };
    arg.write(&info)?;
    Ok(0)
}
