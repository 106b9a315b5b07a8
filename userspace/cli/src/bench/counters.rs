//! Hardware-neutral counters: the module's statistics and `/proc/vmstat`
//! read around a timed loop, reported per MiB moved.

use std::io::{self};

use super::labels::Mech;

/// The module's counters, one decimal file each.
pub(super) const STATS_DIR: &str = "/sys/class/misc/cma/stats";

/// Pages pinned system-wide (FOLL_PIN: `/dev/cma` and `process_vm_readv`).
pub(super) const VMSTAT_PINS: &str = "nr_foll_pin_acquired";

/// The counters this system has. They are system-wide: read around a timed
/// loop, they count that loop's copies because nothing else of the bench
/// copies meanwhile (its children are idle, or the double-copy sender,
/// which pins nothing).
pub(super) struct CounterSources {
    /// The module's counter names (files in [`STATS_DIR`]), sorted;
    /// `None` when the module has none.
    pub(super) module: Option<Vec<String>>,
    /// Whether `/proc/vmstat` has [`VMSTAT_PINS`].
    pub(super) vmstat: bool,
}

/// One reading of the counters.
pub(super) struct Snapshot {
    /// In the order of [`CounterSources::module`] (empty if none).
    pub(super) module: Vec<u64>,
    /// [`VMSTAT_PINS`] (0 if absent).
    pub(super) pins: u64,
}

/// Reads [`VMSTAT_PINS`] from `/proc/vmstat`; `None` if it is not there.
pub(super) fn vmstat_pins() -> io::Result<Option<u64>> {
    let text = match std::fs::read_to_string("/proc/vmstat") {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        r => r?,
    };
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(name, _)| *name == VMSTAT_PINS)
        .map(|(_, v)| parse_counter(VMSTAT_PINS, v))
        .transpose()
}

/// Parses one counter's decimal value.
pub(super) fn parse_counter(name: &str, text: &str) -> io::Result<u64> {
    text.trim().parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("counter {name}: {text:?}: {e}"),
        )
    })
}

impl CounterSources {
    /// Finds the counters; notes for the reader on what is missing.
    pub(super) fn probe(notes: &mut Vec<String>) -> io::Result<CounterSources> {
        let module = match std::fs::read_dir(STATS_DIR) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                notes.push(format!(
                    "{STATS_DIR} not found (a module without counters): GUP calls and module counts are not reported"
                ));
                None
            }
            r => {
                let mut names = Vec::new();
                for entry in r? {
                    names.push(entry?.file_name().to_string_lossy().into_owned());
                }
                names.sort();
                Some(names)
            }
        };
        let vmstat = vmstat_pins()?.is_some();
        if !vmstat {
            notes.push(format!(
                "/proc/vmstat has no {VMSTAT_PINS}: pins are not reported"
            ));
        }
        Ok(CounterSources { module, vmstat })
    }

    /// Reads every counter now.
    pub(super) fn snapshot(&self) -> io::Result<Snapshot> {
        let mut module = Vec::new();
        for name in self.module.iter().flatten() {
            let text = std::fs::read_to_string(format!("{STATS_DIR}/{name}"))?;
            module.push(parse_counter(name, &text)?);
        }
        let pins = if self.vmstat {
            vmstat_pins()?.unwrap_or(0)
        } else {
            0
        };
        Ok(Snapshot { module, pins })
    }

    /// The value of the module's counter `name` in `values` (ordered as
    /// [`CounterSources::module`]).
    pub(super) fn module_value(&self, values: &[u64], name: &str) -> Option<u64> {
        let i = self.module.as_ref()?.iter().position(|n| n == name)?;
        values.get(i).copied()
    }
}

/// Counter deltas summed over the timed loops of one case, with what those
/// loops moved and how many copy calls they made.
#[derive(Clone, Default)]
pub(super) struct Tally {
    /// Bytes the loops moved.
    pub(super) bytes: u64,
    /// Copy system calls they made.
    pub(super) calls: u64,
    /// Pages pinned system-wide meanwhile.
    pub(super) pins: u64,
    /// The module's counters' deltas, ordered as [`CounterSources::module`].
    pub(super) module: Vec<u64>,
}

impl Tally {
    /// Adds one timed loop: the readings around it and what it did.
    pub(super) fn add(&mut self, before: &Snapshot, after: &Snapshot, bytes: u64, calls: u64) {
        self.bytes += bytes;
        self.calls += calls;
        self.pins += after.pins.saturating_sub(before.pins);
        self.module.resize(after.module.len(), 0);
        for ((sum, a), b) in self
            .module
            .iter_mut()
            .zip(&after.module)
            .zip(&before.module)
        {
            *sum += a.saturating_sub(*b);
        }
    }
}

/// Counts per MiB moved by one case (`None`: not available here).
#[derive(Clone, Debug)]
pub(super) struct Counts {
    /// Copy system calls the bench issued.
    pub(super) calls: f64,
    /// Pages pinned system-wide (`nr_foll_pin_acquired`).
    pub(super) pins: Option<f64>,
    /// The module's GUP calls (`gup_calls + local_gup_calls`); `None` for
    /// `process_vm_readv`, whose GUP calls no counter shows.
    pub(super) gup: Option<f64>,
    /// `/dev/cma` only: the module's target pages pinned.
    pub(super) pages_pinned: Option<f64>,
    /// `/dev/cma` only: the module's caller pages pinned.
    pub(super) local_pages_pinned: Option<f64>,
    /// Every module counter, by name.
    pub(super) module: Vec<(String, f64)>,
    /// The module counted copies or bytes the bench did not make (another
    /// user of `/dev/cma` ran meanwhile): the counts are suspect.
    pub(super) stray: bool,
}

impl Counts {
    /// The counts of `mech` from its tally.
    pub(super) fn new(sources: &CounterSources, mech: Mech, t: &Tally) -> Counts {
        let mib = t.bytes as f64 / f64::from(1u32 << 20);
        let per = |n: u64| n as f64 / mib;
        let module = |name: &str| sources.module_value(&t.module, name);
        let gup = match (module("gup_calls"), module("local_gup_calls")) {
            _ if mech == Mech::Pvm => None,
            (None, None) => None,
            (a, b) => Some(per(a.unwrap_or(0) + b.unwrap_or(0))),
        };
        let (want_copies, want_bytes) = if mech.is_cma() {
            (t.calls, t.bytes)
        } else {
            (0, 0)
        };
        let stray = module("copies").is_some_and(|c| c != want_copies)
            || module("bytes").is_some_and(|b| b != want_bytes);
        let cma_only = |name: &str| module(name).filter(|_| mech.is_cma()).map(per);
        Counts {
            calls: per(t.calls),
            pins: sources.vmstat.then(|| per(t.pins)),
            gup,
            pages_pinned: cma_only("pages_pinned"),
            local_pages_pinned: cma_only("local_pages_pinned"),
            module: sources
                .module
                .iter()
                .flatten()
                .zip(&t.module)
                .map(|(name, &n)| (name.clone(), per(n)))
                .collect(),
            stray,
        }
    }
}
