// SPDX-License-Identifier: GPL-2.0

//! A misc device, in the shape of 7.x's `kernel::miscdevice`: a type
//! implements [`MiscDevice`] (open, ioctl, release; its `Ptr` is the open
//! file's state, kept in `private_data`), and a [`Registration`] registers
//! it. 6.12's bindings have no `struct miscdevice`, so the `struct
//! miscdevice` and its `file_operations` are C (`rust/glue/device.c`);
//! their entries are the generic functions below, given to the glue when
//! registering.

use super::fs::File;
use crate::glue::{cma_glue_misc_deregister, cma_glue_misc_owner, cma_glue_misc_register};
use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::bindings;
use kernel::error::to_result;
use kernel::ffi::{c_int, c_long, c_uint, c_ulong};
use kernel::prelude::*;
use kernel::types::ForeignOwnable;

/// Options for registering a misc device.
#[derive(Copy, Clone)]
pub(crate) struct MiscDeviceOptions {
    /// The name of the misc device (its node is `/dev/<name>`).
    pub(crate) name: &'static CStr,
}

/// What `open` is given to say which registration it came through: as on
/// 7.x, a reference to the start of the [`Registration`] itself.
pub(crate) struct MiscDeviceRegistration<T>(PhantomData<fn() -> T>);

/// The file operations of a misc device.
#[vtable]
pub(crate) trait MiscDevice: Sized {
    /// What the open file's state is kept in.
    type Ptr: ForeignOwnable + Send + Sync;

    /// Called when the device is opened: the state of the new file.
    fn open(file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Self::Ptr>;

    /// Called when the last reference to the open file goes away.
    fn release(device: Self::Ptr, _file: &File) {
        drop(device);
    }

    /// Handler for ioctls.
    fn ioctl(
        device: <Self::Ptr as ForeignOwnable>::Borrowed<'_>,
        file: &File,
        cmd: u32,
        arg: usize,
    ) -> Result<isize>;
}

/// Whether the glue's single `struct miscdevice` is registered.
static REGISTERED: AtomicBool = AtomicBool::new(false);

/// A registered misc device, with `data` for its `open` to find
/// ([`Registration::data`]); dropping it deregisters the device.
///
/// # Invariants
///
/// While a `Registration` whose `registered` is true exists, the glue's
/// `struct miscdevice` is registered with `T`'s file operations and this
/// registration's address as its owner, and it is the only such
/// `Registration` (guarded by [`REGISTERED`]). `misc` is the first field
/// (`repr(C)`).
#[repr(C)]
pub(crate) struct Registration<T: MiscDevice, D> {
    misc: MiscDeviceRegistration<T>,
    data: D,
    registered: AtomicBool,
}

impl<T: MiscDevice, D> Registration<T, D> {
    /// The data of the registration `misc` is, for `T::open`.
    ///
    /// # Safety
    ///
    /// `misc` must be what `T::open` was given.
    pub(crate) unsafe fn data(misc: &MiscDeviceRegistration<T>) -> &D {
        // SAFETY: `open` below makes `misc` from the glue's owner pointer,
        // the address of the live `Registration<T, D>` (type invariant),
        // whose first field it is.
        unsafe { &(*core::ptr::from_ref(misc).cast::<Self>()).data }
    }

    /// Registers the device with mode 0666 and the module's attribute
    /// groups (the glue's), keeping `data` for `open`. `EBUSY` if it is
    /// already registered.
    pub(crate) fn register(opts: MiscDeviceOptions, data: D) -> Result<Pin<KBox<Self>>> {
        if REGISTERED.swap(true, Ordering::AcqRel) {
            return Err(EBUSY);
        }
        let this = match KBox::pin(
            Self {
                misc: MiscDeviceRegistration(PhantomData),
                data,
                registered: AtomicBool::new(false),
            },
            GFP_KERNEL,
        ) {
            Ok(this) => this,
            Err(e) => {
                REGISTERED.store(false, Ordering::Release);
                return Err(e.into());
            }
        };
        let owner = core::ptr::from_ref::<Self>(&this).cast_mut().cast();
        // SAFETY: `REGISTERED` was false and is now true, so the glue's
        // `struct miscdevice` is not registered and nobody else registers it
        // concurrently. The name is a static string; the functions are this
        // type's file operations, valid for any file of this device; `owner`
        // is pinned in its box until `drop` deregisters the device.
        let ret = unsafe {
            cma_glue_misc_register(
                opts.name.as_char_ptr(),
                Some(Self::open),
                Some(Self::ioctl),
                Some(Self::release),
                owner,
            )
        };
        if let Err(e) = to_result(ret) {
            REGISTERED.store(false, Ordering::Release);
            return Err(e);
        }
        // INVARIANT: registered, with this owner, and `REGISTERED` is set.
        this.registered.store(true, Ordering::Relaxed);
        Ok(this)
    }

    /// The `open` file operation.
    ///
    /// # Safety
    ///
    /// `file` must be a file of this device being opened (`misc_open` set its
    /// `private_data` to the `struct miscdevice`, which this overwrites).
    unsafe extern "C" fn open(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: the file is valid for the whole call (the caller).
        let f = unsafe { File::from_raw_file(file) };
        // SAFETY: the glue's owner is the live `Registration<T, D>` this
        // device was registered by (type invariant): a file of it is being
        // opened, and `drop` deregisters before the registration goes.
        let misc = unsafe { &*cma_glue_misc_owner().cast::<MiscDeviceRegistration<T>>() };
        match T::open(f, misc) {
            Ok(ptr) => {
                // SAFETY: an opening file's `private_data` is its opener's to
                // set; from here the file owns the state, until `release`.
                unsafe { (*file).private_data = ptr.into_foreign() as *mut _ };
                0
            }
            Err(e) => e.to_errno(),
        }
    }

    /// The `unlocked_ioctl` file operation.
    ///
    /// # Safety
    ///
    /// `file` must be a file of this device that `open` succeeded on, not
    /// released (the VFS does not release a file while an ioctl runs).
    unsafe extern "C" fn ioctl(file: *mut bindings::file, cmd: c_uint, arg: c_ulong) -> c_long {
        // SAFETY: `open` stored the state with `into_foreign`; `release`
        // has not taken it back (the caller), so it may be borrowed.
        let device = unsafe { T::Ptr::borrow((*file).private_data as _) };
        // SAFETY: the file is valid for the whole call (the caller).
        let f = unsafe { File::from_raw_file(file) };
        match T::ioctl(device, f, cmd, arg) {
            Ok(ret) => ret as c_long,
            Err(e) => e.to_errno() as c_long,
        }
    }

    /// The `release` file operation.
    ///
    /// # Safety
    ///
    /// `file` must be a file of this device that `open` succeeded on, in its
    /// release: once, after every other operation on it has returned.
    unsafe extern "C" fn release(_inode: *mut bindings::inode, file: *mut bindings::file) -> c_int {
        // SAFETY: `open` stored the state with `into_foreign`; nothing else
        // can reach it any more (the caller), so it is taken back.
        let device = unsafe { T::Ptr::from_foreign((*file).private_data as _) };
        // SAFETY: the file is valid for the whole call (the caller).
        T::release(device, unsafe { File::from_raw_file(file) });
        0
    }
}

impl<T: MiscDevice, D> Drop for Registration<T, D> {
    fn drop(&mut self) {
        if !*self.registered.get_mut() {
            return;
        }
        // SAFETY: by the type invariant the device is registered, and this is
        // the only `Registration`, so it is deregistered exactly once; no
        // file of it is open (each holds a reference to the module).
        unsafe { cma_glue_misc_deregister() };
        REGISTERED.store(false, Ordering::Release);
    }
}
