//! N processes copying at once (`readers`, `ring`): aggregate bandwidth.

use cma::{Device, Op, Peer, Target};
use std::io::{self};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::copies::{one_copy, To};
use super::labels::{Engine, Mech, Pages, Pattern, Record};
use super::measure::{shuffle, summarise, Progress};
use super::procs::{idle_child, next_round, Buf, Team};
use super::table::human;
use super::Options;

/// N processes copying at once: `readers` all read one target's buffer;
/// `ring` each reads the previous one's. Returns the aggregate bandwidth of
/// each timed round (MB/s).
pub(super) fn many(
    o: &Options,
    pattern: Pattern,
    mech: Mech,
    n: usize,
    size: usize,
    pages: Pages,
) -> io::Result<Vec<f64>> {
    let src = Buf::new(size, pages, false)?;
    let dst = Buf::new(size, pages, false)?;
    let mut team = Team::new()?;
    let mech_code = mech as u32;
    let ring = pattern == Pattern::Ring;
    if !ring {
        team.spawn(|_, ctl| idle_child(ctl, &[&src]))?;
    }
    let first_worker = team.children.len();
    for _ in 0..n {
        team.spawn(|index, ctl| {
            src.touch(index as u8);
            dst.touch(0);
            let dev = Device::open().expect("/dev/cma");
            let _ = dev.grant(None);
            ctl.ready.fetch_add(1, Ordering::AcqRel);
            let mut seen = ctl.go.load(Ordering::Acquire);
            // Attached at the first round (every process exists by then).
            let mut attached: Option<(i32, Peer)> = None;
            while next_round(ctl, &mut seen).is_some() {
                let peer = if ring {
                    let w = index - first_worker;
                    ctl.pids[first_worker + (w + n - 1) % n].load(Ordering::Acquire)
                } else {
                    ctl.pids[0].load(Ordering::Acquire)
                };
                let mech = if ctl.mech.load(Ordering::Acquire) == Mech::Pvm as u32 {
                    Mech::Pvm
                } else {
                    Mech::Cma
                };
                if !attached.as_ref().is_some_and(|(pid, _)| *pid == peer) {
                    let fd = dev.attach(Target::Pid(peer)).expect("attach");
                    attached = Some((peer, fd));
                }
                let to = To {
                    pid: peer,
                    peer: &attached.as_ref().expect("attached").1,
                };
                for _ in 0..ctl.iters.load(Ordering::Acquire) {
                    one_copy(&dev, mech, Op::Read, to, dst.iov(size), src.iov(size)).expect("copy");
                }
                ctl.done.fetch_add(1, Ordering::AcqRel);
            }
        })?;
    }
    team.wait_ready(team.children.len() as u32);
    let ctl = team.ctl();
    ctl.mech.store(mech_code, Ordering::Release);
    ctl.size.store(size as u64, Ordering::Release);
    // Calibrate on one round, then measure.
    let mut iters = 1u64;
    loop {
        ctl.iters.store(iters, Ordering::Release);
        let t = team.round(n as u32);
        if t >= Duration::from_millis(o.min_ms) || iters >= 1 << 20 {
            break;
        }
        iters *=
            ((Duration::from_millis(o.min_ms).as_secs_f64() / t.as_secs_f64().max(1e-9)).ceil()
                as u64)
                .clamp(2, 1000);
    }
    let mut samples = Vec::new();
    for _ in 0..o.reps {
        let t = team.round(n as u32);
        samples.push((n as u64 * iters * size as u64) as f64 / t.as_secs_f64() / 1e6);
    }
    Ok(samples)
}

/// Every multi-process cell of one size and page kind, each set up
/// `o.setups` times in a fresh random order (so that a slow phase of the
/// host does not land on one cell), with the samples of all setups pooled.
/// `/dev/cma` runs under `engine`, the setting in force.
pub(super) fn many_cells(
    o: &Options,
    size: usize,
    pages: Pages,
    cpus: usize,
    engine: Option<Engine>,
    rng: &mut u64,
    progress: &mut Progress,
) -> io::Result<Vec<Record>> {
    let mut cells: Vec<(Pattern, Mech, usize)> = Vec::new();
    for mech in [Mech::Cma.under(engine), Mech::Pvm] {
        cells.extend((1..=cpus).map(|n| (Pattern::Readers, mech, n)));
        cells.extend((2..=cpus.max(2)).map(|n| (Pattern::Ring, mech, n)));
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cells.len()];
    let mut order: Vec<usize> = (0..cells.len()).collect();
    for _ in 0..o.setups.max(1) {
        shuffle(&mut order, rng);
        for &i in &order {
            let (pattern, mech, n) = cells[i];
            progress.step(&format!(
                "{pattern} {} x{n} {} {}",
                mech.name(),
                human(size),
                pages.name()
            ));
            samples[i].extend(many(o, pattern, mech, n, size, pages)?);
        }
    }
    Ok(cells
        .iter()
        .zip(samples.iter_mut())
        .map(|(&(pattern, mech, n), s)| {
            let (median, min, max) = summarise(s);
            Record {
                mech,
                op: Op::Read,
                size,
                pages,
                procs: n,
                pattern,
                median,
                min,
                max,
                reps: s.len(),
                engine: engine.filter(|_| mech.is_cma()),
                limit: None,
                counts: None,
            }
        })
        .collect())
}
