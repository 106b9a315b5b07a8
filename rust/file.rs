// SPDX-License-Identifier: GPL-2.0

//! What an open `/dev/cma` holds: the cache of its opener's own pages.
//!
//! Under the `pinned` engine the caller's side of a copy is pinned too; an
//! MPI rank copies into and out of the same buffers from every peer, so its
//! pages are kept pinned across copies as the targets' are (see
//! [`crate::cache`]). The cache belongs to the open file, not to each peer
//! fd, so that a process with many peers pins and charges its buffers once;
//! the peer fds attached through the file share it.

use crate::cache::Cache;
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::types::ForeignOwnable;

/// The state of an open `/dev/cma`.
pub(crate) struct DevFile {
    /// The opener's pages; a copy by another process (the fd passed on or
    /// inherited) does not use it (the cache checks).
    own: Arc<Cache>,
}

impl DevFile {
    /// The cache of the opener's own pages.
    pub(crate) fn own_cache(&self) -> &Arc<Cache> {
        &self.own
    }
}

/// The `open` of `/dev/cma`, called by the C glue: makes the file's state
/// and stores it in `*private`.
#[no_mangle]
pub(crate) extern "C" fn cma_rs_open(private: *mut *mut kernel::ffi::c_void) -> kernel::ffi::c_int {
    const _: crate::glue::cma_rs_open_fn = Some(cma_rs_open);
    let state = Cache::new(crate::mm::grab_current_mm())
        .and_then(|c| Arc::new(c, GFP_KERNEL_ACCOUNT).map_err(Into::into))
        .and_then(|own| KBox::new(DevFile { own }, GFP_KERNEL_ACCOUNT).map_err(Into::into));
    match state {
        Ok(state) => {
            // SAFETY: the glue passes the file's `private_data`, which the
            // file owns from here until `release` gives it to `close`.
            unsafe { *private = state.into_foreign() as *mut _ };
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// The state of an open `/dev/cma` whose `private_data` is `private`.
///
/// # Safety
///
/// `private` must be the `private_data` of a `/dev/cma` file opened by
/// [`cma_rs_open`], not yet released, for the whole of `'a`.
pub(crate) unsafe fn borrow<'a>(private: *mut core::ffi::c_void) -> &'a DevFile {
    // SAFETY: by the caller's guarantee the pointer came from `into_foreign`
    // and `close` has not taken it back.
    unsafe { <KBox<DevFile> as ForeignOwnable>::borrow(private) }
}

/// Frees the state of a `/dev/cma` file being released.
///
/// # Safety
///
/// `private` must be the `private_data` of a `/dev/cma` file opened by
/// [`cma_rs_open`], in its `release`, with no other file operation running.
pub(crate) unsafe fn close(private: *mut core::ffi::c_void) {
    // SAFETY: by the caller's guarantee the pointer came from `into_foreign`
    // and nothing borrows it any more.
    drop(unsafe { <KBox<DevFile> as ForeignOwnable>::from_foreign(private) });
}
