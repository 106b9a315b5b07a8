//! Measurement: timed loops, their calibration and summary, the shuffled
//! order of cases, and the progress line.

use cma::Op;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use super::labels::{Engine, Mech};

/// Times `f(iters)` and returns seconds per iteration.
pub(super) fn time_per_iter(
    iters: u64,
    f: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<f64> {
    let t0 = Instant::now();
    f(iters)?;
    Ok(t0.elapsed().as_secs_f64() / iters as f64)
}

/// Iterations so that one timed loop lasts at least `min`.
pub(super) fn calibrate(
    min: Duration,
    f: &mut dyn FnMut(u64) -> io::Result<()>,
) -> io::Result<u64> {
    let mut iters = 1u64;
    loop {
        let t = time_per_iter(iters, f)? * iters as f64;
        if t >= min.as_secs_f64() || iters >= 1 << 22 {
            return Ok(iters);
        }
        let scale = (min.as_secs_f64() / t.max(1e-9)).ceil() as u64;
        iters = (iters * scale.clamp(2, 1000)).min(1 << 22);
    }
}

pub(super) fn summarise(samples: &mut [f64]) -> (f64, f64, f64) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = samples.len();
    let median = if n % 2 == 1 {
        samples[n / 2]
    } else {
        (samples[n / 2 - 1] + samples[n / 2]) / 2.0
    };
    (median, samples[0], samples[n - 1])
}

/// A deterministic shuffle (xorshift), so that the order is reproducible.
pub(super) fn shuffle<T>(v: &mut [T], state: &mut u64) {
    for i in (1..v.len()).rev() {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        v.swap(i, (*state % (i as u64 + 1)) as usize);
    }
}

/// A progress bar on stderr.
pub(super) struct Progress {
    pub(super) done: usize,
    pub(super) total: usize,
    pub(super) start: Instant,
}

impl Progress {
    pub(super) fn step(&mut self, what: &str) {
        self.done += 1;
        let width = 30;
        let filled = (width * self.done / self.total.max(1)).min(width);
        eprint!(
            "\r[{}{}] {:>3}/{} {:>5.0}s {:<40}",
            "#".repeat(filled),
            " ".repeat(width - filled),
            self.done,
            self.total,
            self.start.elapsed().as_secs_f64(),
            what
        );
        let _ = io::stderr().flush();
    }

    pub(super) fn finish(&self) {
        eprintln!();
    }
}

/// One case of a one-to-one cell: a labelled mechanism, a direction, and
/// the engine setting it runs under (`None`: any, or unnamed).
#[derive(Clone, Copy)]
pub(super) struct Case {
    /// The mechanism, labelled with its engine.
    pub(super) mech: Mech,
    /// The direction.
    pub(super) op: Op,
    /// The setting to make before its loops (`None`: any).
    pub(super) engine: Option<Engine>,
}

/// Regroups the engine-bound cases in the shuffled `order` so that each
/// setting's run one after another, `first`'s first, in their shuffled
/// order, while every other case keeps its shuffled place: one switch of
/// the parameter per repeat (alternating which setting comes first)
/// instead of one per case.
pub(super) fn group_by_engine(order: &mut [usize], cases: &[Case], first: Option<Engine>) {
    let slots: Vec<usize> = (0..order.len())
        .filter(|&k| cases[order[k]].engine.is_some())
        .collect();
    let mut bound: Vec<usize> = slots.iter().map(|&k| order[k]).collect();
    bound.sort_by_key(|&i| cases[i].engine != first);
    for (&k, i) in slots.iter().zip(bound) {
        order[k] = i;
    }
}
