// SPDX-License-Identifier: GPL-2.0

//! The state behind an open `/dev/cma`: the cache of its opener's own pages
//! and the consent registry's record of the grants made on it (the file's
//! `MiscDevice::Ptr`; a peer fd's state is in [`crate::peer_fd`]).
//!
//! Under the `pinned` engine the caller's side of a copy is pinned too; an
//! MPI rank copies into and out of the same buffers from every peer, so its
//! pages are kept pinned across copies as the targets' are (see
//! [`crate::cache`]). The cache belongs to the open file, not to each peer
//! fd, so that a process with many peers pins and charges its buffers once;
//! the peer fds attached through the file share it.

use crate::cache::Cache;
use crate::consent::{FileGrants, Registry};
use kernel::prelude::*;
use kernel::sync::Arc;

/// The state of an open `/dev/cma`.
pub(crate) struct DevFile {
    /// The opener's pages; a copy by another process (the fd passed on or
    /// inherited) does not use it (the cache checks).
    own: Arc<Cache>,
    /// Which registry entries hold grants made on this file.
    grants: Arc<FileGrants>,
    /// The consent registry.
    registry: Arc<Registry>,
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

    /// The consent registry.
    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The state of a new open file of `/dev/cma`, whose grants go to
    /// `registry`.
    pub(crate) fn new(registry: Arc<Registry>) -> Result<KBox<DevFile>> {
        // The opener's own address space, for the cache of its pages. A user
        // task, io_uring's workers included (they share their ring's mm), has
        // one; a kernel thread opening the device (`filp_open`) does not, and
        // gets `EINVAL` rather than a cache of nothing.
        let own = Arc::new(
            Cache::new(crate::mm::grab_current_mm()?)?,
            GFP_KERNEL_ACCOUNT,
        )?;
        let grants = FileGrants::new()?;
        Ok(KBox::new(
            DevFile {
                own,
                grants,
                registry,
            },
            GFP_KERNEL_ACCOUNT,
        )?)
    }
}
