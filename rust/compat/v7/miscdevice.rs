// SPDX-License-Identifier: GPL-2.0

//! The kernel's `kernel::miscdevice`, and a [`Registration`] that gives the
//! device a mode and attribute groups.
//!
//! 7.x's `MiscDeviceRegistration` registers exactly what
//! `MiscDeviceOptions::into_raw` builds: a name and the file operations of a
//! [`MiscDevice`], so the node is root's alone (0600) and the device has no
//! attributes. cma's node is 0666 (every request is checked on its own; a
//! udev rule narrows it) and its counters are attributes
//! (`/sys/class/misc/cma/stats/`). Both must be in the `struct miscdevice`
//! when it is registered: devtmpfs makes the node, with `mode`, inside
//! `misc_register`, and attributes added later would race udev. So this
//! registration takes the `struct miscdevice` `into_raw` builds (the
//! kernel's file operations for `T`), sets those two fields, and registers
//! it as `MiscDeviceRegistration` does.

use crate::glue::cma_glue_misc_groups;
use core::marker::PhantomData;
use kernel::bindings;
use kernel::error::to_result;
pub(crate) use kernel::miscdevice::{MiscDevice, MiscDeviceOptions, MiscDeviceRegistration};
use kernel::prelude::*;
use kernel::types::Opaque;

/// A registered misc device, with mode 0666, the module's attribute groups,
/// and `data` for its `open` to find ([`Registration::data`]); dropping it
/// deregisters the device.
///
/// # Invariants
///
/// `inner` is a `struct miscdevice` built by `MiscDeviceOptions::into_raw`
/// for `T`, registered with `misc_register` for the whole life of the
/// `Registration`, and deregistered exactly once, in `drop`. It is the first
/// field (`repr(C)`), so a pointer to it is a pointer to the registration.
#[repr(C)]
#[pin_data(PinnedDrop)]
pub(crate) struct Registration<T, D> {
    #[pin]
    inner: Opaque<bindings::miscdevice>,
    data: D,
    _t: PhantomData<T>,
}

// SAFETY: `misc_deregister` may be called from any thread; `data` is `Send`.
unsafe impl<T, D: Send> Send for Registration<T, D> {}
// SAFETY: only `data` is reachable through `&Registration`, and it is `Sync`.
unsafe impl<T, D: Sync> Sync for Registration<T, D> {}

impl<T: MiscDevice, D> Registration<T, D> {
    /// The data of the registration `misc` is, for `T::open`.
    ///
    /// # Safety
    ///
    /// `misc` must be what `T::open` was given, and `T` registered only
    /// through `Registration<T, D>` (never the kernel's
    /// `MiscDeviceRegistration`, whose memory has no `data`).
    pub(crate) unsafe fn data(misc: &MiscDeviceRegistration<T>) -> &D {
        // SAFETY: the kernel's `open` for `T` made `misc` from the `struct
        // miscdevice` `misc_open` found, which (the caller's guarantee) is
        // the `inner` of a live `Registration<T, D>`, its first field.
        unsafe { &(*core::ptr::from_ref(misc).cast::<Self>()).data }
    }

    /// Registers the device with mode 0666 and the module's attribute
    /// groups (the glue's), keeping `data` for `open`.
    pub(crate) fn register(opts: MiscDeviceOptions, data: D) -> Result<Pin<KBox<Self>>> {
        // Fields are initialised in the order written here: `data` before
        // `inner`, whose `misc_register` makes the node live, so that an
        // `open` racing with the registration finds `data` written.
        let init = try_pin_init!(Self {
            data,
            _t: PhantomData,
            inner <- Opaque::try_ffi_init(move |slot: *mut bindings::miscdevice| {
                let mut raw = opts.into_raw::<T>();
                raw.mode = 0o666;
                // SAFETY: the glue's groups are static and initialised when
                // the module loads (`cma_glue_misc_groups` fills them).
                raw.groups = unsafe { cma_glue_misc_groups() };
                // SAFETY: the initializer may write to `slot`.
                unsafe { slot.write(raw) };
                // SAFETY: `slot` holds a complete `struct miscdevice`, pinned
                // (it is in a pinned box) until `drop` deregisters it. The
                // kernel's `open` for `T` casts the `struct miscdevice` that
                // `misc_open` finds to a `MiscDeviceRegistration<T>`, a
                // transparent wrapper of `struct miscdevice` as this type is:
                // the reference it makes points to a registered device, whose
                // `data` is already written (above).
                // INVARIANT: on success `slot` is registered.
                to_result(unsafe { bindings::misc_register(slot) })
            }),
        });
        KBox::pin_init(init, GFP_KERNEL)
    }
}

#[pinned_drop]
impl<T, D> PinnedDrop for Registration<T, D> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: registered by the type invariant, deregistered only here.
        unsafe { bindings::misc_deregister(self.inner.get()) };
    }
}
