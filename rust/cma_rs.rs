// SPDX-License-Identifier: GPL-2.0

//! cma: single-copy cross-process memory transfer through `/dev/cma`.
//!
//! The module registers a misc character device whose ioctls copy between the
//! caller's address space and another process's. This file is the crate root:
//! it declares the module and owns the device registration; each step of a
//! request lives in its own file (see the `mod` list below).

use kernel::prelude::*;

mod device;
mod dispatch;
mod info;
mod uapi;

module! {
    type: CmaModule,
    name: "cma",
    author: "The cma developers",
    description: "Cross Memory Attach: single-copy cross-process memory transfer via /dev/cma",
    license: "GPL",
}

/// The loaded module: holds `/dev/cma` registered for as long as it lives.
struct CmaModule {
    _device: device::MiscDevice,
}

impl kernel::Module for CmaModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        let device = device::MiscDevice::register()?;
        pr_info!(
            "/dev/cma registered (ABI version {})\n",
            uapi::CMA_ABI_VERSION
        );
        Ok(CmaModule { _device: device })
    }
}
