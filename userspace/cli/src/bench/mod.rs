//! `cma bench`: how fast `/dev/cma` moves a message, against the anchors, in
//! one run: `process_vm_readv`/`writev` (the upstream mechanism), the
//! shared-memory double copy it replaces (two processes, pipelined through a
//! two-slot ring of 64 KiB chunks, as MPI shared-memory transports do), and
//! `memcpy` and a plain vector loop in one process (the better of the two is
//! the limit of any single copy on this machine).
//!
//! Every process is a real one: buffers are mapped before `fork()`, so each
//! process has its own private copy at the same address, touched before any
//! timing. Each measurement is the median over repeats of a timed loop, the
//! mechanisms run in a shuffled order in every repeat, and a warm-up repeat
//! comes first.
//!
//! The `/dev/cma` mechanisms are measured under both settings of the
//! module's `engine` parameter when it can be written (`pinned`, and
//! `usercopy`: the routine `process_vm_readv` copies with), and every
//! one-to-one measurement also reports hardware-neutral counts per MiB moved
//! (pages pinned, GUP calls, system calls), read from the module's counters
//! and `/proc/vmstat` around its timed loops.

mod copies;
mod counters;
mod engine;
mod json;
mod labels;
mod latency;
mod many;
mod measure;
mod one_to_one;
mod plot;
mod procs;
mod table;

use cma::Device;
use std::path::PathBuf;
use std::time::Instant;

use self::counters::CounterSources;
use self::engine::EnginePlan;
use self::json::json;
use self::labels::Pages;
use self::latency::latency_breakdown;
use self::many::many_cells;
use self::measure::Progress;
use self::one_to_one::one_to_one;
use self::plot::svg;
use self::table::{counts_table, human, table};

/// Command-line options of `cma bench`.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Message sizes in bytes (default: 64 B to 64 MiB in powers of 4).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Measured repeats per case (after one warm-up).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// How many times each multi-process cell (readers, ring) is set up
    /// afresh, in a new random order each time; its samples are pooled.
    #[arg(long, default_value_t = 3)]
    setups: usize,
    /// Minimum duration of one timed loop, in milliseconds.
    #[arg(long, default_value_t = 30)]
    min_ms: u64,
    /// Fewer sizes and repeats: a smoke run.
    #[arg(long)]
    quick: bool,
    /// Where to write one JSON record per measurement.
    #[arg(long, default_value = "out/bench.json")]
    json: PathBuf,
    /// Where to write the bandwidth-against-size plot (SVG).
    #[arg(long, default_value = "out/bench.svg")]
    svg: PathBuf,
    /// Seed of the order in which mechanisms run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Settings of the module's `engine` parameter to measure the `/dev/cma`
    /// mechanisms under (peer fd and direct; by pid under the current one
    /// only). Switching needs root; the setting found is restored at the end.
    #[arg(long, value_enum, default_value_t = Engines::Both)]
    engines: Engines,
}

/// Which engine settings `--engines` asks for.
#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
enum Engines {
    /// `pinned` and `usercopy`.
    Both,
    /// Whatever the module is set to; the parameter is not written.
    Current,
    /// `pinned` only.
    Pinned,
    /// `usercopy` only.
    Usercopy,
}

/// Runs the benchmark and prints the table; writes the JSON and the plot.
pub fn run(o: Options) -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::open()?;
    let mut o = o;
    if o.quick {
        o.reps = o.reps.min(3);
    }
    let sizes: Vec<usize> = o.sizes.clone().unwrap_or_else(|| {
        if o.quick {
            vec![64, 4 << 10, 256 << 10, 4 << 20]
        } else {
            (0..11).map(|i| 64usize << (2 * i)).collect() // 64 B .. 64 MiB
        }
    });
    let pages_list = [Pages::Small, Pages::Thp];
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as usize;
    let many_sizes: Vec<usize> = if o.quick {
        vec![1 << 20]
    } else {
        vec![64 << 10, 1 << 20, 16 << 20]
    };
    let cells_per_size = 2 * (cpus + cpus.max(2) - 1);
    let total = sizes.len() * pages_list.len()
        + many_sizes.len() * pages_list.len() * cells_per_size * o.setups.max(1);
    let mut progress = Progress {
        done: 0,
        total: total + 1,
        start: Instant::now(),
    };
    let mut rng = o.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut notes = Vec::new();
    let sources = CounterSources::probe(&mut notes)?;
    // Restores the engine found when dropped, also on an error below.
    let plan = EnginePlan::new(o.engines, &mut notes)?;
    let mut recs = Vec::new();
    for &pages in &pages_list {
        for &size in &sizes {
            progress.step(&format!("one-to-one {} {}", human(size), pages.name()));
            let (r, note) = one_to_one(&dev, &o, size, pages, &mut rng, &plan, &sources)?;
            recs.extend(r);
            notes.extend(note);
        }
    }
    plan.restore()?;
    for &pages in &pages_list {
        for &size in &many_sizes {
            recs.extend(many_cells(
                &o,
                size,
                pages,
                cpus,
                plan.current,
                &mut rng,
                &mut progress,
            )?);
        }
    }
    progress.step("latency breakdown");
    let breakdown = latency_breakdown(&dev, &o)?;
    progress.finish();

    let accel = std::fs::read_to_string("/proc/cpuinfo").map_or("unknown", |c| {
        if c.contains("hypervisor") {
            "VM"
        } else {
            "bare metal"
        }
    });
    println!(
        "cma bench: {cpus} CPUs ({accel}), {} repeats after a warm-up, timed loops >= {} ms",
        o.reps, o.min_ms
    );
    println!("{}", plan.describe());
    for note in &notes {
        println!("note: {note}");
    }
    print!("{}", table(&recs, &sizes, &pages_list));
    print!("{}", counts_table(&recs, &sizes, &pages_list));
    println!("\nlatency breakdown (ns per call, median)");
    for (name, ns) in &breakdown {
        println!("{name:>30} {ns:>10.0}");
    }
    for path in [&o.json, &o.svg] {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
    }
    std::fs::write(&o.json, json(&recs))?;
    std::fs::write(
        &o.svg,
        svg(
            &recs,
            &sizes,
            &pages_list,
            "cma bench: one-to-one read bandwidth",
        ),
    )?;
    println!("\nwrote {} and {}", o.json.display(), o.svg.display());
    Ok(())
}
