//! The latency of one small copy, broken into its parts.

use cma::{Device, Op, Target};
use std::io::{self, IoSliceMut};
use std::time::Duration;

use super::copies::{one_copy, To};
use super::labels::{Mech, Pages};
use super::measure::{calibrate, summarise, time_per_iter};
use super::procs::{idle_child, Buf, Team};
use super::Options;

/// A timed loop body: runs its step `n` times.
pub(super) type Step<'a> = Box<dyn FnMut(u64) -> io::Result<()> + 'a>;

/// Where the time of a small copy goes: the cost of steps of one request,
/// each measured alone (ns per call, median): a bare syscall, the ioctl
/// entry (INFO), the target lookup and permission check (probe), and full
/// 64-byte copies by cma and by process_vm_readv.
pub(super) fn latency_breakdown(dev: &Device, o: &Options) -> io::Result<Vec<(&'static str, f64)>> {
    let src = Buf::new(4096, Pages::Small, false)?;
    let dst = Buf::new(4096, Pages::Small, false)?;
    let mut team = Team::new()?;
    let target = team.spawn(|_, ctl| idle_child(ctl, &[&src]))?;
    team.wait_ready(1);
    dst.touch(1);
    let min = Duration::from_millis(o.min_ms);
    let peer = dev.attach(Target::Pid(target))?;
    let to = To {
        pid: target,
        peer: &peer,
    };
    // A 64-byte read from the target by `mech`, `n` times.
    let copy64 = |mech: Mech| -> Step<'_> {
        let (local, remote) = (dst.iov(64), src.iov(64));
        Box::new(move |n| {
            for _ in 0..n {
                one_copy(dev, mech, Op::Read, to, local, remote)?;
            }
            Ok(())
        })
    };
    let mut steps: Vec<(&'static str, Step<'_>)> = vec![
        (
            "getppid syscall",
            Box::new(|n| {
                for _ in 0..n {
                    // SAFETY: plain syscall.
                    std::hint::black_box(unsafe { libc::getppid() });
                }
                Ok(())
            }),
        ),
        (
            "cma INFO ioctl",
            Box::new(|n| {
                for _ in 0..n {
                    dev.info()?;
                }
                Ok(())
            }),
        ),
        (
            "cma probe (lookup + access)",
            Box::new(|n| {
                for _ in 0..n {
                    dev.probe(Target::Pid(target))?;
                }
                Ok(())
            }),
        ),
        ("cma READ1 64 B, peer fd", copy64(Mech::Cma)),
        ("cma READ1 64 B, by pid", copy64(Mech::CmaPid)),
        (
            "cma READ (vectored) 64 B, by pid",
            Box::new(|n| {
                // SAFETY: the bench's own buffer, as in `one_copy`.
                let buf = unsafe { std::slice::from_raw_parts_mut(dst.addr as *mut u8, 64) };
                let (local, remote) = (&mut [IoSliceMut::new(buf)], [src.iov(64)]);
                for _ in 0..n {
                    // The report asks for the vectored ioctl (all one range).
                    dev.readv_report(Target::Pid(target), local, &remote)?;
                }
                Ok(())
            }),
        ),
        ("process_vm_readv 64 B", copy64(Mech::Pvm)),
    ];
    let mut out = Vec::new();
    for (name, f) in steps.iter_mut() {
        let iters = calibrate(min, f.as_mut())?;
        let mut samples = Vec::new();
        for _ in 0..o.reps.max(1) {
            samples.push(time_per_iter(iters, f.as_mut())? * 1e9);
        }
        out.push((*name, summarise(&mut samples).0));
    }
    Ok(out)
}
