// SPDX-License-Identifier: GPL-2.0

//! cma: single-copy cross-process memory transfer through `/dev/cma`.
//!
//! The module registers a misc character device whose ioctls copy between the
//! caller's address space and another process's. This file is the crate root:
//! it declares the module and owns the device registration; each step of a
//! request lives in its own file (see the `mod` list below). The files that
//! decide (access, the copy ioctls, the engine, info) may not contain
//! `unsafe` (`deny(unsafe_code)`): they build on the RAII wrappers (`mm`,
//! `task`, `user`, `file`, `compat`) and the glue's declarations (`glue`).

use kernel::prelude::*;

#[deny(unsafe_code)]
mod access;
#[deny(unsafe_code)]
mod cache;
mod compat;
#[deny(unsafe_code)]
mod consent;
#[deny(unsafe_code)]
mod copy;
mod device;
mod dispatch;
#[deny(unsafe_code)]
mod engine;
mod file;
mod glue;
#[deny(unsafe_code)]
mod info;
mod kcopy;
mod map;
mod mm;
mod params;
#[deny(unsafe_code)]
mod peer;
mod peer_fd;
mod pid;
mod pin;
mod stats;
mod task;
mod uapi;
mod user;
mod watch;

module! {
    type: CmaModule,
    name: "cma",
    description: "Cross Memory Attach: single-copy cross-process memory transfer via /dev/cma",
    license: "GPL",
}

/// The loaded module: holds `/dev/cma` registered for as long as it lives.
/// The registration holds the consent registry, as each open file and peer
/// fd does; the last of them to go drops it (at unload, since every file
/// holds a reference to the module).
struct CmaModule {
    /// `None` only while the module is dropped.
    device: Option<Pin<KBox<device::CmaRegistration>>>,
}

impl kernel::Module for CmaModule {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        stats::check()?;
        kcopy::select()?;
        map::init()?;
        let device = match consent::Registry::new().and_then(device::register) {
            Ok(device) => device,
            Err(e) => {
                map::exit();
                return Err(e);
            }
        };
        pr_info!(
            "/dev/cma registered (ABI version {}, engine {}, page copies by {})\n",
            uapi::CMA_ABI_VERSION,
            kcopy::engine_name(),
            kcopy::routine_name()
        );
        Ok(CmaModule {
            device: Some(device),
        })
    }
}

impl Drop for CmaModule {
    fn drop(&mut self) {
        // The device goes, then the registry with it (every file, each of
        // which held it, is closed: each holds a reference to the module).
        drop(self.device.take());
        // Then no notifier callback of the module's (the registry's exit
        // watches, the caches' notifiers, whose frees run after an SRCU
        // grace period) may still run when its code goes away.
        watch::MmWatch::synchronize();
        // Every peer fd is gone, each having cancelled its map's work.
        map::exit();
    }
}
