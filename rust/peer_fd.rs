// SPDX-License-Identifier: GPL-2.0

//! A peer fd's file: an anonymous file (`anon_inode_getfd`, C glue: the
//! kernel crate has no anonymous inodes) whose `private_data` owns its
//! [`Peer`], from `CMA_IOC_ATTACH` until the file's release. Its file
//! operations are [`crate::dispatch`]'s.

use crate::access::TargetId;
use crate::file::DevFile;
use crate::glue::{cma_glue_file_private, cma_glue_peer_fd};
use crate::peer::Peer;
use crate::uapi;
use crate::user::IoctlArg;
use kernel::prelude::*;
use kernel::types::ForeignOwnable;

/// `CMA_IOC_ATTACH`: checks access to the target named at `arg` and returns
/// a new peer fd for it.
pub(crate) fn attach(dev: &DevFile, arg: IoctlArg) -> Result<isize> {
    let req: uapi::cma_attach = arg.read()?;
    if req.flags & !uapi::CMA_ATTACH_FLAGS_ALL != 0 || req.reserved != [0; 3] {
        return Err(EINVAL);
    }
    let id = TargetId::new(req.pid, req.flags & uapi::CMA_COPY_PIDFD != 0);
    new(KBox::new(Peer::attach(id, dev)?, GFP_KERNEL)?)
}

/// A new peer fd (`O_RDWR | O_CLOEXEC`) whose file owns `peer`.
fn new(peer: KBox<Peer>) -> Result<isize> {
    let peer = peer.into_foreign();
    // SAFETY: `peer` came from `into_foreign` just now. On success the new
    // file owns it, and `release` takes it back; we do not touch it
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
/// `file` must be a live peer fd file (made by [`attach`]) that is not
/// being released, for the whole of `'a`.
pub(crate) unsafe fn peer_of<'a>(file: *mut kernel::bindings::file) -> &'a Peer {
    // SAFETY: by the caller's guarantee `file` is a live peer fd file, whose
    // `private_data` came from `into_foreign` in `new` and is taken
    // back only on release; it is only ever shared (`Peer` is `Sync`).
    unsafe { KBox::<Peer>::borrow(cma_glue_file_private(file)) }
}

/// Frees the peer of a peer fd's file that is being released.
///
/// # Safety
///
/// `file` must be a peer fd file in its `release`, called once, with no
/// other file operation running on it.
pub(crate) unsafe fn release(file: *mut kernel::bindings::file) {
    // SAFETY: `private_data` came from `into_foreign` in `new`, owned
    // by the file until now; nothing else can reach it any more.
    drop(unsafe { KBox::<Peer>::from_foreign(cma_glue_file_private(file)) });
}
