//! The copy ioctls: argument checking, errors, data across real processes,
//! partial transfers, huge pages, the direct path, and an oracle comparison
//! with the kernel's own process_vm_readv/process_vm_writev.

mod args;
mod data;
mod direct;
mod faults;
mod huge;
mod oracle;
mod partial;
mod target;

use crate::ktap::{expect_errno, Failure, Test, TestResult};
use crate::peer::Peer;
use crate::util::{Mapping, Rng};
use cma::sys::cma_iovec;
use cma::{Device, Op, Target, Transfer};
use std::io;

use self::args::{
    copy1_arguments_and_errors, copy_bad_iovec_array_efault, copy_bad_local_address_efault,
    copy_bad_remote_address_efault, copy_length_overflow_einval, copy_nonzero_padding_einval,
    copy_too_many_iovecs_einval, copy_unknown_flags_einval, copy_unwritable_result_moves_nothing,
};
use self::data::{
    large_buffer_16m, sizes_and_unaligned_offsets, string_across_processes,
    target_exits_during_copy,
};
use self::direct::{direct_path_overlap, direct_path_self_and_thread, direct_path_single_copy};
use self::faults::{
    copy_direct_path_survives_fragmentation, copy_failed_fault_in_target_efault_like_pvm,
};
use self::huge::{hugetlbfs_buffers, thp_buffers, total_over_4gib};
use self::oracle::{
    scatter_gather_oracle_process_vm_readv, scatter_gather_oracle_process_vm_writev,
};
use self::partial::{
    partial_local_fault, partial_prot_none_in_remote, partial_unmapped_hole_in_remote,
    partial_write_to_readonly_remote, regression_faulting_write_leaves_rest_of_target_page,
    write_to_remote_text_or_ro_file_efault,
};
use self::target::{
    copy_bad_pidfd_ebadf, copy_no_such_process_esrch, copy_via_pidfd,
    copy_zero_length_skips_lookup, copy_zombie_and_kernel_thread_esrch, probe_reports_reachability,
};

/// The tests of this file, in order.
pub const TESTS: &[Test] = crate::tests![
    rw copy_unknown_flags_einval,
    rw copy_nonzero_padding_einval,
    copy_failed_fault_in_target_efault_like_pvm,
    copy_direct_path_survives_fragmentation,
    rw copy_unwritable_result_moves_nothing,
    rw copy_too_many_iovecs_einval,
    rw copy_length_overflow_einval,
    rw copy_bad_iovec_array_efault,
    rw copy_bad_local_address_efault,
    rw copy_bad_remote_address_efault,
    rw copy_no_such_process_esrch,
    rw copy_zombie_and_kernel_thread_esrch,
    rw copy_bad_pidfd_ebadf,
    copy_via_pidfd,
    rw copy_zero_length_skips_lookup,
    rw copy1_arguments_and_errors,
    probe_reports_reachability,
    string_across_processes,
    large_buffer_16m,
    sizes_and_unaligned_offsets,
    scatter_gather_oracle_process_vm_readv,
    scatter_gather_oracle_process_vm_writev,
    rw partial_unmapped_hole_in_remote,
    rw partial_prot_none_in_remote,
    partial_write_to_readonly_remote,
    rw partial_local_fault,
    write_to_remote_text_or_ro_file_efault,
    regression_faulting_write_leaves_rest_of_target_page,
    rw thp_buffers,
    hugetlbfs_buffers,
    total_over_4gib,
    rw target_exits_during_copy,
    direct_path_self_and_thread,
    direct_path_overlap,
    rw direct_path_single_copy,
];

const OPS: [Op; 2] = [Op::Read, Op::Write];

pub(crate) fn iov(base: usize, len: usize) -> cma_iovec {
    cma_iovec {
        base: base as u64,
        len: len as u64,
    }
}

/// One copy with raw iovecs.
pub(crate) fn copy(
    dev: &Device,
    op: Op,
    target: Target<'_>,
    local: &[cma_iovec],
    remote: &[cma_iovec],
) -> io::Result<Transfer> {
    // SAFETY: the tests only pass iovecs over their own mappings (or invalid
    // addresses, which the kernel must reject).
    unsafe { dev.copy_raw(op, target, local, remote) }
}

/// One single-range copy (`CMA_IOC_READ1`/`WRITE1`); returns the bytes.
pub(crate) fn copy1(
    dev: &Device,
    op: Op,
    target: Target<'_>,
    local: usize,
    remote: usize,
    len: usize,
) -> io::Result<u64> {
    // SAFETY: as in `copy`.
    unsafe { dev.copy1_raw(op, target, local as u64, remote as u64, len as u64) }
}

/// The kernel's own process_vm_readv/writev, with the same iovecs.
pub(crate) fn pvm(
    op: Op,
    pid: i32,
    local: &[cma_iovec],
    remote: &[cma_iovec],
) -> io::Result<usize> {
    let (l, r) = (
        local.as_ptr() as *const libc::iovec,
        remote.as_ptr() as *const libc::iovec,
    );
    // SAFETY: `cma_iovec` has `iovec`'s layout (asserted in the library); the
    // tests pass iovecs over their own mappings only.
    let ret = unsafe {
        match op {
            Op::Read => libc::process_vm_readv(pid, l, local.len() as _, r, remote.len() as _, 0),
            Op::Write => libc::process_vm_writev(pid, l, local.len() as _, r, remote.len() as _, 0),
        }
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// Reads `len` bytes at `addr` of `pid` with process_vm_readv (the reference).
pub(crate) fn peek(pid: i32, addr: usize, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let n = pvm(
        Op::Read,
        pid,
        &[iov(buf.as_mut_ptr() as usize, len)],
        &[iov(addr, len)],
    )?;
    buf.truncate(n);
    Ok(buf)
}

/// The setup most copy tests repeat: the device, a target process holding
/// `len` bytes of random data (from `seed`) at `addr`, and a local read-write
/// mapping of `len` bytes. Tests take it apart with a pattern:
/// `let Fixture { dev, peer, addr, local } = Fixture::new(len, seed)?;`.
pub(crate) struct Fixture {
    /// `/dev/cma`.
    pub(crate) dev: Device,
    /// The target.
    pub(crate) peer: Peer,
    /// The start of the target's buffer.
    pub(crate) addr: usize,
    /// The caller's buffer, as long as the target's.
    pub(crate) local: Mapping,
}

impl Fixture {
    /// Opens the device, starts the target, maps the local buffer.
    pub(crate) fn new(len: usize, seed: u64) -> Result<Fixture, Failure> {
        let dev = Device::open()?;
        let (peer, addr) = remote_buffer(len, seed, 0)?;
        let local = Mapping::new(len, libc::PROT_READ | libc::PROT_WRITE)?;
        Ok(Fixture {
            dev,
            peer,
            addr,
            local,
        })
    }
}

/// A child holding `len` bytes of random data (from `seed`) in its own
/// anonymous mapping made with `flags`; returns it and the address.
pub(crate) fn remote_buffer(len: usize, seed: u64, flags: i32) -> Result<(Peer, usize), Failure> {
    let mut peer = Peer::spawn(move |mut ch| {
        let mut m = Mapping::with_flags(len, libc::PROT_READ | libc::PROT_WRITE, flags)?;
        Rng::new(seed).fill(m.bytes_mut());
        ch.send(&[m.addr() as u64])?;
        ch.wait()
    })?;
    let addr = peer.recv()?[0] as usize;
    Ok((peer, addr))
}

fn expect_copy_errno(
    dev: &Device,
    op: Op,
    t: Target<'_>,
    l: &[cma_iovec],
    r: &[cma_iovec],
    errno: i32,
    what: &str,
) -> TestResult {
    expect_errno(copy(dev, op, t, l, r), errno, format!("{op:?} {what}"))
}
