// SPDX-License-Identifier: GPL-2.0

//! Maps of a target's memory (`CMA_IOC_MAP` on a peer fd): the decision.
//!
//! A range of the target is mapped into the caller, shared; the caller's
//! loads and stores reach the target's pages, with no system call once they
//! are mapped. The mm plumbing (the peer fd's `mmap`, its page faults, the
//! notifier that unmaps a page from the caller before the target's mapping
//! of it changes) is C, in `rust/glue/map.c`, which has its own account of
//! how it stays exact and never pins; here is who may map what.
//!
//! - `CMA_IOC_MAP` checks access as a copy of the range would: the peer
//!   fd's decision, renewed by the full check if anything it rested on has
//!   changed ([`Peer::target`]). It runs outside the caller's `mmap_lock`,
//!   so it may wait for the target (its `exec_update_lock`; the first map
//!   registers a notifier, under the target's `mmap_lock`).
//! - Each page fault and `mmap(2)` of the fd relies on that decision only
//!   if nothing has changed since ([`Peer::unchanged`],
//!   [`cma_rs_peer_map_ok`]): they run under the caller's `mmap_lock`, where
//!   waiting for the target could deadlock. Otherwise the page is not
//!   mapped (the caller reads zeros, and the status page says so) until a
//!   copy or a map through the fd renews the decision.

use crate::glue::{
    cma_glue_map, cma_glue_map_exit, cma_glue_map_init, cma_glue_map_state,
    cma_glue_maps_withdrawn, cma_glue_unmap,
};
use crate::peer::Peer;
use crate::uapi;
use crate::user::IoctlArg;
use kernel::bindings;
use kernel::error::to_result;
use kernel::page::PAGE_SIZE;
use kernel::prelude::*;

/// `PROT_READ` and `PROT_WRITE` (the UAPI's values, as `mmap(2)` takes them).
const PROT_READ: u32 = 1;
const PROT_WRITE: u32 = 2;

/// `CMA_IOC_MAP` on the peer fd `file`, whose peer is `peer`: maps the
/// range at `arg` and writes back where.
///
/// # Safety
///
/// `file` must be `peer`'s live peer fd file, in one of its ioctls (so
/// neither is released meanwhile).
pub(crate) unsafe fn ioctl(file: *mut bindings::file, peer: &Peer, arg: IoctlArg) -> Result<isize> {
    let mut req: uapi::cma_map = arg.read()?;
    let page = PAGE_SIZE as u64;
    let aligned = req.addr % page == 0 && req.len % page == 0;
    let prot_ok = req.prot == PROT_READ || req.prot == PROT_READ | PROT_WRITE;
    // The end is checked against the address space's top by the glue.
    if !aligned
        || !prot_ok
        || req.addr == 0
        || req.len == 0
        || req.addr.checked_add(req.len).is_none()
        || req.flags != 0
        || req.reserved != [0; 2]
    {
        return Err(EINVAL);
    }
    // Maps are the attaching process's: the state made here watches the
    // caller's address space, and a child or receiver of the fd must not
    // make it watch its own (mmap would refuse it anyway).
    if !peer.attached_by_current() {
        return Err(EPERM);
    }
    // u64 and usize are one width on the 64-bit kernels cma builds for.
    let (addr, len) = (req.addr as usize, req.len as usize);
    // The full check, as a copy's: renews the fd's decision, which the
    // faults then rely on.
    let mm = peer.target()?;
    let peer_ptr: *const Peer = peer;
    // SAFETY: `file` is live (the caller's guarantee); `peer_ptr` is its
    // peer, which lives as long as the file, and so as long as any map state
    // that keeps it; `mm` holds a user of the target's mm, and no mmap_lock
    // is held here.
    to_result(unsafe { cma_glue_map_state(file, peer_ptr.cast(), mm.as_raw()) })?;
    drop(mm);
    // SAFETY: as above; the map state now exists.
    let mapped = unsafe { cma_glue_map(file, addr, len, req.prot as usize) };
    // A negative errno, or an address (below the top of user space, which
    // is far below where the errnos start).
    if (-4095..0).contains(&mapped) {
        return Err(Error::from_errno(mapped as i32));
    }
    req.mapped = mapped as u64;
    if let Err(e) = arg.write(&req) {
        // Nobody would know where it is.
        // SAFETY: the range was mapped just now by this call.
        unsafe { cma_glue_unmap(mapped as usize, len) };
        return Err(e);
    }
    Ok(0)
}

/// Whether the peer `peer` still admits the calling process without the
/// full check, for the map glue (its page faults and `mmap`, under the
/// caller's `mmap_lock`).
///
/// # Safety
///
/// `peer` must be the peer of a live peer fd file (the glue passes its map
/// state's, which a mapping or an `mmap` call in progress keeps alive).
#[no_mangle]
pub(crate) unsafe extern "C" fn cma_rs_peer_map_ok(peer: *const core::ffi::c_void) -> bool {
    const _: crate::glue::cma_rs_peer_map_ok_fn = Some(cma_rs_peer_map_ok);
    // SAFETY: the caller's guarantee: `peer` points to a live `Peer`, only
    // ever shared.
    let peer = unsafe { &*peer.cast::<Peer>() };
    peer.unchanged()
}

/// The process whose address space is at `mm` (a registry key: only
/// compared, never followed) withdrew consent: every map of it is unmapped
/// from its caller soon, and each later touch checks access again. Takes
/// spinlocks only, so any caller may (the registry calls it under a shard's
/// lock).
pub(crate) fn withdrawn(mm: usize) {
    // SAFETY: the function only compares `mm` with the address spaces the
    // maps watch; any value is fine.
    unsafe { cma_glue_maps_withdrawn(mm as *const core::ffi::c_void) };
}

/// Makes the maps' work queue, at load.
pub(crate) fn init() -> Result {
    // SAFETY: called once, at load, before any peer fd exists.
    to_result(unsafe { cma_glue_map_init() })
}

/// Destroys the maps' work queue, at unload (or a failed load), after the
/// last peer fd: no map's work is queued any more.
pub(crate) fn exit() {
    // SAFETY: called once, after a successful `init`, when no peer fd is
    // left (each cancelled its work at release) or none was ever made.
    unsafe { cma_glue_map_exit() };
}
