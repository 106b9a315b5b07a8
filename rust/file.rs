// SPDX-License-Identifier: GPL-2.0

//! The state behind cma's files: an open `/dev/cma` holds the cache of its
//! opener's own pages and the consent registry's record of the grants made
//! on it, a peer fd its `Peer`; both as `ForeignOwnable` in the file's
//! `private_data`.
//!
//! Under the `pinned` engine the caller's side of a copy is pinned too; an
//! MPI rank copies into and out of the same buffers from every peer, so its
//! pages are kept pinned across copies as the targets' are (see
//! [`crate::cache`]). The cache belongs to the open file, not to each peer
//! fd, so that a process with many peers pins and charges its buffers once;
//! the peer fds attached through the file share it.

use crate::cache::Cache;
use crate::consent::FileGrants;
use crate::glue::{cma_glue_file_private, cma_glue_peer_fd};
use crate::peer::Peer;
use kernel::prelude::*;
use kernel::sync::Arc;
use kernel::types::ForeignOwnable;

/// The state of an open `/dev/cma`.
pub(crate) struct DevFile {
    /// The opener's pages; a copy by another process (the fd passed on or
    /// inherited) does not use it (the cache checks).
    own: Arc<Cache>,
    /// Which registry entries hold grants made on this file.
    grants: Arc<FileGrants>,
}

impl DevFile {
    /// The cache of the opener's own pages.
    pub(crate) fn own_cache(&self) -> &Arc<Cache> {
        &self.own
    }

    /// The registry's record of the grants made on this file.
    pub(crate) fn grants(&self) -> &Arc<FileGrants> {
        &self.grants
    }

    /// The state of a new open file of `/dev/cma`.
    pub(crate) fn new() -> Result<KBox<DevFile>> {
        // The opener's own address space, for the cache of its pages. A user
        // task, io_uring's workers included (they share their ring's mm), has
        // one; a kernel thread opening the device (`filp_open`) does not, and
        // gets `EINVAL` rather than a cache of nothing.
        let own = Arc::new(
            Cache::new(crate::mm::grab_current_mm()?)?,
            GFP_KERNEL_ACCOUNT,
        )?;
        let grants = FileGrants::new()?;
        Ok(KBox::new(DevFile { own, grants }, GFP_KERNEL_ACCOUNT)?)
    }
}

/// A new peer fd (`O_RDWR | O_CLOEXEC`) whose file owns `peer`.
pub(crate) fn new_peer_fd(peer: KBox<Peer>) -> Result<isize> {
    let peer = peer.into_foreign();
    // SAFETY: `peer` came from `into_foreign` just now. On success the new
    // file owns it, and `release_peer` takes it back; we do not touch it
    // again, since another thread may close the fd at once.
    let fd = unsafe { cma_glue_peer_fd(peer) };
    if fd < 0 {
        // SAFETY: on failure no file took `peer`; it is still ours alone.
        drop(unsafe { KBox::<Peer>::from_foreign(peer) });
        return Err(Error::from_errno(fd));
    }
    Ok(fd as isize)
}

/// The peer behind a peer fd's file.
///
/// # Safety
///
/// `file` must be a live peer fd file (made by [`new_peer_fd`]) that is not
/// being released, for the whole of `'a`.
pub(crate) unsafe fn peer_of<'a>(file: *mut kernel::bindings::file) -> &'a Peer {
    // SAFETY: by the caller's guarantee `file` is a live peer fd file, whose
    // `private_data` came from `into_foreign` in `new_peer_fd` and is taken
    // back only on release; it is only ever shared (`Peer` is `Sync`).
    unsafe { KBox::<Peer>::borrow(cma_glue_file_private(file)) }
}

/// Frees the peer of a peer fd's file that is being released.
///
/// # Safety
///
/// `file` must be a peer fd file in its `release`, called once, with no
/// other file operation running on it.
pub(crate) unsafe fn release_peer(file: *mut kernel::bindings::file) {
    // SAFETY: `private_data` came from `into_foreign` in `new_peer_fd`, owned
    // by the file until now; nothing else can reach it any more.
    drop(unsafe { KBox::<Peer>::from_foreign(cma_glue_file_private(file)) });
}
