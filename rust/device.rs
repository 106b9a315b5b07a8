// SPDX-License-Identifier: GPL-2.0

//! The `/dev/cma` misc device registration, as an RAII guard.
//!
//! The `struct miscdevice` and its file operations live in `rust/glue/device.c`
//! because 6.12's Rust bindings cannot express them; this type makes sure the
//! registration is undone exactly once.

use crate::glue::*;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::error::to_result;
use kernel::prelude::*;

/// Whether the glue's single `struct miscdevice` is currently registered.
static REGISTERED: AtomicBool = AtomicBool::new(false);

/// A registered `/dev/cma`; dropping it deregisters the device.
///
/// # Invariants
///
/// While a `MiscDevice` exists, the glue's `struct miscdevice` is registered,
/// and no other `MiscDevice` exists (guarded by [`REGISTERED`]).
pub(crate) struct MiscDevice {
    _private: (),
}

impl MiscDevice {
    /// Registers `/dev/cma`. Fails with `EBUSY` if it is already registered.
    pub(crate) fn register() -> Result<Self> {
        if REGISTERED.swap(true, Ordering::AcqRel) {
            return Err(EBUSY);
        }
        // SAFETY: `REGISTERED` was false and is now true, so the static
        // `struct miscdevice` in the glue is not registered and nobody else
        // will register it concurrently.
        let ret = unsafe { cma_glue_register() };
        if let Err(e) = to_result(ret) {
            REGISTERED.store(false, Ordering::Release);
            return Err(e);
        }
        // INVARIANT: registration succeeded and `REGISTERED` is set.
        Ok(Self { _private: () })
    }
}

impl Drop for MiscDevice {
    fn drop(&mut self) {
        // SAFETY: by the type invariant the device is registered, and this is
        // the only `MiscDevice`, so it is deregistered exactly once.
        unsafe { cma_glue_unregister() };
        REGISTERED.store(false, Ordering::Release);
    }
}
