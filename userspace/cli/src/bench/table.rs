//! Output: the text tables.

use cma::Op;
use std::fmt::Write as _;

use super::counters::Counts;
use super::labels::{op_name, Mech, Pages, Pattern, Record};

pub(super) fn human(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{}M", s >> 20),
        s if s >= 1 << 10 && s % (1 << 10) == 0 => format!("{}K", s >> 10),
        s => format!("{s}"),
    }
}

pub(super) fn find(
    recs: &[Record],
    mech: Mech,
    op: Op,
    size: usize,
    pages: Pages,
    pattern: Pattern,
    procs: usize,
) -> Option<&Record> {
    recs.iter().find(|r| {
        r.mech == mech
            && r.op == op
            && r.size == size
            && r.pages == pages
            && r.pattern == pattern
            && r.procs == procs
    })
}

/// One column of a table.
pub(super) struct Column {
    /// The heading.
    pub(super) head: &'static str,
    /// Decimals of the values (`None`: as [`count`] writes them).
    pub(super) decimals: Option<usize>,
    /// One per row; `None`: not measured.
    pub(super) values: Vec<Option<f64>>,
}

/// Writes a table: `labels` (the sizes) down the left, then the groups of
/// columns, separated by `|`. Columns without any value and rows without
/// any value are left out; a missing value is `-`.
pub(super) fn render(out: &mut String, labels: &[String], groups: Vec<Vec<Column>>) {
    let groups: Vec<Vec<Column>> = groups
        .into_iter()
        .map(|g| {
            g.into_iter()
                .filter(|c| c.values.iter().any(Option::is_some))
                .collect::<Vec<_>>()
        })
        .filter(|g| !g.is_empty())
        .collect();
    let cell = |c: &Column, row: usize| match c.values[row] {
        Some(v) if v.is_finite() => match c.decimals {
            Some(d) => format!("{v:.d$}"),
            None => count(v),
        },
        _ => "-".to_string(),
    };
    let width = |c: &Column| c.head.len().max(8);
    let _ = write!(out, "{:>6}", "size");
    for (k, g) in groups.iter().enumerate() {
        out.push_str(if k > 0 { " |" } else { "" });
        for c in g {
            let _ = write!(out, " {:>w$}", c.head, w = width(c));
        }
    }
    out.push('\n');
    for (row, label) in labels.iter().enumerate() {
        if !groups.iter().flatten().any(|c| c.values[row].is_some()) {
            continue;
        }
        let _ = write!(out, "{label:>6}");
        for (k, g) in groups.iter().enumerate() {
            out.push_str(if k > 0 { " |" } else { "" });
            for c in g {
                let _ = write!(out, " {:>w$}", cell(c, row), w = width(c));
            }
        }
        out.push('\n');
    }
}

/// A count per MiB with about three significant digits.
pub(super) fn count(v: f64) -> String {
    match v.abs() {
        0.0 => "0".to_string(),
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

/// `a / b` when both were measured.
pub(super) fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).map(|(a, b)| a / b)
}

/// The one-to-one bandwidth tables (per page kind and direction) and the
/// multi-process ones.
pub(super) fn table(recs: &[Record], sizes: &[usize], pages_list: &[Pages]) -> String {
    let mut out = String::new();
    let labels: Vec<String> = sizes.iter().map(|&s| human(s)).collect();
    for &pages in pages_list {
        for op in [Op::Read, Op::Write] {
            let _ = writeln!(
                out,
                "\none-to-one {}, {} pages (MB/s, median; ratios of medians; limit: the better of memcpy and vecloop)",
                op_name(op),
                pages.name()
            );
            let get = |m: Mech, op: Op, size: usize| {
                find(recs, m, op, size, pages, Pattern::OneToOne, 1).map(|r| r.median)
            };
            let limit = |size: usize| {
                find(
                    recs,
                    Mech::Memcpy,
                    Op::Read,
                    size,
                    pages,
                    Pattern::OneToOne,
                    1,
                )
                .and_then(|r| r.limit)
            };
            let col = |head, decimals, f: &dyn Fn(usize) -> Option<f64>| Column {
                head,
                decimals: Some(decimals),
                values: sizes.iter().map(|&s| f(s)).collect(),
            };
            let bw = |m: Mech, op: Op| col(m.head(), 1, &move |s| get(m, op, s));
            // The better of the map's two routines, as `limit` is.
            let map = |s: usize| match (get(Mech::Map, op, s), get(Mech::MapVec, op, s)) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            let bandwidth = vec![
                bw(Mech::Cma, op),
                bw(Mech::CmaUc, op),
                bw(Mech::CmaPid, op),
                bw(Mech::CmaPidUc, op),
                bw(Mech::Pvm, op),
                bw(Mech::Double, Op::Read),
                bw(Mech::Memcpy, Op::Read),
                col("limit", 1, &limit),
                bw(Mech::CmaDirect, Op::Read),
                bw(Mech::CmaDirectUc, Op::Read),
                col("map", 1, &map),
            ];
            let ratios = vec![
                col("cma/pvm", 2, &|s| {
                    ratio(get(Mech::Cma, op, s), get(Mech::Pvm, op, s))
                }),
                col("cma-uc/pvm", 2, &|s| {
                    ratio(get(Mech::CmaUc, op, s), get(Mech::Pvm, op, s))
                }),
                col("cma/double", 2, &|s| {
                    ratio(get(Mech::Cma, op, s), get(Mech::Double, Op::Read, s))
                }),
                col("cma/limit", 2, &|s| ratio(get(Mech::Cma, op, s), limit(s))),
                col("map/pvm", 2, &|s| ratio(map(s), get(Mech::Pvm, op, s))),
                col("map/cma", 2, &|s| ratio(map(s), get(Mech::Cma, op, s))),
                col("map/limit", 2, &|s| ratio(map(s), limit(s))),
            ];
            render(&mut out, &labels, vec![bandwidth, ratios]);
        }
    }
    for pattern in [Pattern::Readers, Pattern::Ring] {
        let rows: Vec<&Record> = recs
            .iter()
            .filter(|r| r.pattern == pattern && r.mech.base() == Mech::Cma)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n{pattern}: aggregate read MB/s (median), N processes{}",
            rows[0].engine.map_or(String::new(), |e| format!(
                ", cma under the {} engine",
                e.name()
            ))
        );
        let _ = writeln!(
            out,
            "{:>6} {:>5} {:>3} {:>9} {:>9} {:>7} {:>12} {:>12}",
            "size", "pages", "N", "cma", "pvm", "cma/pvm", "cma/(N*cma1)", "pvm/(N*pvm1)"
        );
        for r in rows {
            let pvm = find(recs, Mech::Pvm, Op::Read, r.size, r.pages, pattern, r.procs)
                .map_or(f64::NAN, |p| p.median);
            // Scaling is against one process reading another (readers, N=1).
            let one = |m: Mech| {
                find(recs, m, Op::Read, r.size, r.pages, Pattern::Readers, 1)
                    .map_or(f64::NAN, |p| p.median)
            };
            let _ = writeln!(
                out,
                "{:>6} {:>5} {:>3} {:>9.1} {:>9.1} {:>7.2} {:>12.2} {:>12.2}",
                human(r.size),
                r.pages.name(),
                r.procs,
                r.median,
                pvm,
                r.median / pvm,
                r.median / (r.procs as f64 * one(r.mech)),
                pvm / (r.procs as f64 * one(Mech::Pvm))
            );
        }
    }
    out
}

/// The hardware-neutral table: counts per MiB moved by each mechanism in
/// the one-to-one reads, per page kind and size.
pub(super) fn counts_table(recs: &[Record], sizes: &[usize], pages_list: &[Pages]) -> String {
    let mut out = String::new();
    let with_counts = |r: &&Record| r.counts.is_some();
    if !recs.iter().any(|r| with_counts(&r)) {
        return out;
    }
    let _ = writeln!(
        out,
        "\nCounts per MiB moved (hardware-neutral): one-to-one reads, system-wide counters around the timed loops"
    );
    let labels: Vec<String> = sizes.iter().map(|&s| human(s)).collect();
    let mechs = [
        Mech::Cma,
        Mech::CmaUc,
        Mech::CmaPid,
        Mech::CmaPidUc,
        Mech::CmaDirect,
        Mech::CmaDirectUc,
        Mech::Pvm,
        Mech::Double,
        Mech::Memcpy,
        Mech::Vecloop,
    ];
    type Metric = fn(&Counts) -> Option<f64>;
    let metrics: [(&str, Metric); 3] = [
        ("pins/MiB (nr_foll_pin_acquired: pages pinned)", |c| c.pins),
        (
            "GUP calls/MiB (module: gup_calls + local_gup_calls; pvm's are not counted)",
            |c| c.gup,
        ),
        ("syscalls/MiB (copy calls the bench made)", |c| {
            Some(c.calls)
        }),
    ];
    for &pages in pages_list {
        for (title, metric) in metrics {
            let _ = writeln!(out, "{} pages, {title}", pages.name());
            let columns = mechs
                .iter()
                .map(|&m| Column {
                    head: m.head(),
                    decimals: None,
                    values: sizes
                        .iter()
                        .map(|&s| {
                            find(recs, m, Op::Read, s, pages, Pattern::OneToOne, 1)
                                .and_then(|r| r.counts.as_ref())
                                .and_then(metric)
                        })
                        .collect(),
                })
                .collect();
            render(&mut out, &labels, vec![columns]);
        }
    }
    let stray = recs
        .iter()
        .filter_map(|r| r.counts.as_ref())
        .filter(|c| c.stray)
        .count();
    if stray > 0 {
        let _ = writeln!(
            out,
            "note: in {stray} measurements the module counted copies the bench did not make (another /dev/cma user?): their counts are suspect"
        );
    }
    out
}
