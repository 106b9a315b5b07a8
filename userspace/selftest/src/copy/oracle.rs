//! Random scatter/gather layouts against the kernel's own
//! process_vm_readv/process_vm_writev as the oracle.

use crate::check;
use crate::ktap::TestResult;
use crate::peer::Peer;
use crate::util::{Mapping, Rng};
use cma::sys::cma_iovec;
use cma::{Device, Op, Target};

use super::{copy, iov, peek, pvm};

/// `n` iovecs that together cover `[base, base + len)` in shuffled order,
/// some of them empty.
pub(super) fn random_layout(rng: &mut Rng, base: usize, len: usize, n: usize) -> Vec<cma_iovec> {
    let mut cuts: Vec<usize> = (0..n - 1)
        .map(|_| {
            if rng.below(8) == 0 {
                0
            } else {
                rng.below(len + 1)
            }
        })
        .collect();
    cuts.push(0);
    cuts.push(len);
    cuts.sort_unstable();
    let mut v: Vec<cma_iovec> = cuts
        .windows(2)
        .map(|w| iov(base + w[0], w[1] - w[0]))
        .collect();
    for i in (1..v.len()).rev() {
        v.swap(i, rng.below(i + 1));
    }
    v
}

pub(super) fn oracle(op: Op, seed: u64) -> TestResult {
    let dev = Device::open()?;
    let max = 256 << 10;
    // Two identical remote buffers (one for each mechanism) in one child.
    let mut peer = Peer::spawn(move |mut ch| {
        let mut a = Mapping::new(max, libc::PROT_READ | libc::PROT_WRITE)?;
        let mut b = Mapping::new(max, libc::PROT_READ | libc::PROT_WRITE)?;
        Rng::new(seed).fill(a.bytes_mut());
        Rng::new(seed).fill(b.bytes_mut());
        ch.send(&[a.addr() as u64, b.addr() as u64])?;
        ch.wait()
    })?;
    let v = peer.recv()?;
    let (ra, rb) = (v[0] as usize, v[1] as usize);
    let mut la = Mapping::new(max, libc::PROT_READ | libc::PROT_WRITE)?;
    let mut lb = Mapping::new(max, libc::PROT_READ | libc::PROT_WRITE)?;
    let mut rng = Rng::new(seed ^ 0xabcd);
    for round in 0..24 {
        let nl = 8 + rng.below(1017);
        let nr = 8 + rng.below(1017);
        let (llen, rlen) = (rng.below(max + 1), rng.below(max + 1));
        let lay_l = random_layout(&mut rng, 0, llen, nl);
        let lay_r = random_layout(&mut rng, 0, rlen, nr);
        let shift = |lay: &[cma_iovec], base: usize| -> Vec<cma_iovec> {
            lay.iter()
                .map(|i| iov(base + i.base as usize, i.len as usize))
                .collect()
        };
        rng.fill(la.bytes_mut());
        lb.bytes_mut().copy_from_slice(la.bytes());
        let t = copy(
            &dev,
            op,
            Target::Pid(peer.pid),
            &shift(&lay_l, la.addr()),
            &shift(&lay_r, ra),
        )?;
        let n = pvm(op, peer.pid, &shift(&lay_l, lb.addr()), &shift(&lay_r, rb))?;
        let what = format!(
            "round {round} (seed {seed}): {nl} local iovecs / {llen} bytes, {nr} remote / {rlen}"
        );
        check!(
            t.bytes as usize == n && t.error == 0,
            "{what}: cma moved {} bytes (error {}), process_vm moved {n}",
            t.bytes,
            t.error
        );
        check!(la.bytes() == lb.bytes(), "{what}: local buffers differ");
        check!(
            peek(peer.pid, ra, max)? == peek(peer.pid, rb, max)?,
            "{what}: remote buffers differ"
        );
    }
    Ok(())
}

pub(super) fn scatter_gather_oracle_process_vm_readv() -> TestResult {
    oracle(Op::Read, 11)
}

pub(super) fn scatter_gather_oracle_process_vm_writev() -> TestResult {
    oracle(Op::Write, 12)
}
