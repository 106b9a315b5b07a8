//! One process copying to or from one other, by every mechanism: the
//! one-to-one table, with its counts.

use cma::{Device, Features, Op, Target};
use std::io::{self};
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::copies::{
    double_receive, double_sender, memcpy, one_copy, vecloop, vecloop_raw, To, SLOT,
};
use super::counters::{CounterSources, Counts, Tally};
use super::engine::EnginePlan;
use super::labels::{Engine, Mech, Pages, Pattern, Record};
use super::measure::{calibrate, group_by_engine, shuffle, summarise, time_per_iter, Case};
use super::procs::{futex_wake, idle_child, Buf, Team};
use super::Options;

/// One-to-one: every mechanism moves one message of `size` bytes, `op` way;
/// the `/dev/cma` ones under each setting of `plan`. The counters of
/// `sources` are read around every timed loop. With the records, a note
/// of what the map of the target's buffer did (PMDs, holes, invalidations).
pub(super) fn one_to_one(
    dev: &Device,
    o: &Options,
    size: usize,
    pages: Pages,
    rng: &mut u64,
    plan: &EnginePlan,
    sources: &CounterSources,
) -> io::Result<(Vec<Record>, Option<String>)> {
    let target_buf = Buf::new(size, pages, false)?; // the target's message
    let local_src = Buf::new(size, pages, false)?; // the bench's source (write, memcpy)
    let local_dst = Buf::new(size, pages, false)?; // the bench's destination
    let ring = Buf::new(2 * SLOT, Pages::Small, true)?;
    let mut team = Team::new()?;
    let target = team.spawn(|_, ctl| idle_child(ctl, &[&target_buf]))?;
    team.spawn(|_, ctl| double_sender(ctl, &local_src, &ring))?;
    team.wait_ready(2);
    local_src.touch(3);
    local_dst.touch(4);
    ring.touch(0);
    team.ctl().full[0].store(0, Ordering::Release);
    team.ctl().full[1].store(0, Ordering::Release);
    let me = std::process::id() as i32;
    let remote = To {
        pid: target,
        peer: &dev.attach(Target::Pid(target))?,
    };
    let own = To {
        pid: me,
        peer: &dev.attach(Target::Pid(me))?,
    };

    // The target's buffer mapped once (whole pages), if the module can.
    let page = 4096;
    let mapped = match dev.info()?.features.contains(Features::MAP) {
        true => Some(
            remote
                .peer
                .map(target_buf.addr, size.div_ceil(page) * page, true)?,
        ),
        false => None,
    };
    let case = |mech: Mech, op: Op, engine: Option<Engine>| Case {
        mech: mech.under(engine),
        op,
        engine,
    };
    let mut cases: Vec<Case> = Vec::new();
    for &e in &plan.measured {
        cases.push(case(Mech::Cma, Op::Read, e));
        cases.push(case(Mech::Cma, Op::Write, e));
        cases.push(case(Mech::CmaDirect, Op::Read, e));
    }
    cases.extend([
        case(Mech::CmaPid, Op::Read, plan.current),
        case(Mech::Pvm, Op::Read, None),
        case(Mech::Pvm, Op::Write, None),
        case(Mech::Double, Op::Read, None),
        case(Mech::Memcpy, Op::Read, None),
        case(Mech::Vecloop, Op::Read, None),
    ]);
    if mapped.is_some() {
        cases.push(case(Mech::Map, Op::Read, None));
        cases.push(case(Mech::Map, Op::Write, None));
        cases.push(case(Mech::MapVec, Op::Read, None));
        cases.push(case(Mech::MapVec, Op::Write, None));
    }
    let min = Duration::from_millis(o.min_ms);
    let run = |mech: Mech, op: Op, iters: u64| -> io::Result<()> {
        let ctl = team.ctl();
        match mech.base() {
            Mech::Cma | Mech::CmaPid | Mech::Pvm => {
                let (l, r) = match op {
                    Op::Read => (local_dst.iov(size), target_buf.iov(size)),
                    Op::Write => (local_src.iov(size), target_buf.iov(size)),
                };
                for _ in 0..iters {
                    one_copy(dev, mech, op, remote, l, r)?;
                }
            }
            Mech::CmaDirect => {
                for _ in 0..iters {
                    one_copy(dev, mech, op, own, local_dst.iov(size), local_src.iov(size))?;
                }
            }
            Mech::Double => {
                ctl.iters.store(iters, Ordering::Release);
                ctl.size.store(size as u64, Ordering::Release);
                ctl.go.fetch_add(1, Ordering::AcqRel);
                futex_wake(&ctl.go);
                double_receive(ctl, &local_dst, &ring, iters, size);
            }
            Mech::Memcpy => {
                for _ in 0..iters {
                    memcpy(&local_dst, &local_src, size);
                    std::hint::black_box(&local_dst.addr);
                }
            }
            Mech::Vecloop => {
                for _ in 0..iters {
                    vecloop(&local_dst, &local_src, size);
                    std::hint::black_box(&local_dst.addr);
                }
            }
            Mech::Map | Mech::MapVec => {
                let m = mapped.as_ref().ok_or(io::ErrorKind::Unsupported)?;
                let (dst, src) = match op {
                    Op::Read => (local_dst.addr as *mut u8, m.as_ptr().cast_const()),
                    Op::Write => (m.as_ptr(), local_src.addr as *const u8),
                };
                let vec = mech == Mech::MapVec;
                for _ in 0..iters {
                    // SAFETY: both ranges are mapped and at least `size`
                    // long; the map is the target's memory, which it does
                    // not touch while the bench runs (an idle child).
                    unsafe {
                        if vec {
                            vecloop_raw(dst, src, size)
                        } else {
                            std::ptr::copy_nonoverlapping(src, dst, size)
                        }
                    };
                    std::hint::black_box(dst);
                }
            }
            Mech::CmaUc | Mech::CmaPidUc | Mech::CmaDirectUc => {
                unreachable!("a label, not a path (see Mech::base)")
            }
        }
        Ok(())
    };

    let mut iters = vec![0u64; cases.len()];
    let mut order: Vec<usize> = (0..cases.len()).collect();
    group_by_engine(&mut order, &cases, plan.in_force());
    for &i in &order {
        let c = cases[i];
        plan.set(c.engine)?;
        iters[i] = calibrate(min, &mut |n| run(c.mech, c.op, n))?;
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    let mut tallies: Vec<Tally> = vec![Tally::default(); cases.len()];
    for rep in 0..=o.reps {
        shuffle(&mut order, rng);
        group_by_engine(&mut order, &cases, plan.in_force());
        for &i in &order {
            let c = cases[i];
            plan.set(c.engine)?;
            let before = sources.snapshot()?;
            let t = time_per_iter(iters[i], &mut |n| run(c.mech, c.op, n))?;
            let after = sources.snapshot()?;
            let calls = if c.mech.is_syscall() { iters[i] } else { 0 };
            tallies[i].add(&before, &after, iters[i] * size as u64, calls);
            if rep > 0 {
                samples[i].push(size as f64 / t / 1e6);
            }
        }
    }
    let mut recs: Vec<Record> = cases
        .iter()
        .zip(samples.iter_mut())
        .zip(&tallies)
        .map(|((c, s), tally)| {
            let (median, min, max) = summarise(s);
            Record {
                mech: c.mech,
                op: c.op,
                size,
                pages,
                procs: 1,
                pattern: Pattern::OneToOne,
                median,
                min,
                max,
                reps: o.reps,
                engine: c.engine,
                limit: None,
                counts: Some(Counts::new(sources, c.mech, tally)),
            }
        })
        .collect();
    let mut note = None;
    if mapped.is_some() {
        let st = remote.peer.map_status()?.snapshot();
        note = Some(format!(
            "map, {} {}: {} huge pages mapped whole (PMDs), {} holes, {} invalidations",
            super::table::human(size),
            pages.name(),
            st.pmds,
            st.holes,
            st.invalidations
        ));
    }
    let limit = recs
        .iter()
        .filter(|r| matches!(r.mech, Mech::Memcpy | Mech::Vecloop))
        .map(|r| r.median)
        .reduce(f64::max);
    for r in &mut recs {
        r.limit = limit;
    }
    Ok((recs, note))
}
