//! Output: one JSON record per measurement.

use std::fmt::Write as _;

use super::labels::{op_name, Pattern, Record};

/// A JSON number, or `null` when not measured (or not finite).
pub(super) fn jnum(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.6}"),
        _ => "null".to_string(),
    }
}

/// One JSON record per measurement. One-to-one ones also carry the cell's
/// `limit` and counts per MiB (`*_per_mib`); `/dev/cma` ones their
/// `engine`, when the module names it.
pub(super) fn json(recs: &[Record]) -> String {
    let mut out = String::from("[\n");
    for (i, r) in recs.iter().enumerate() {
        let _ = write!(
            out,
            "  {{\"mechanism\": \"{}\", \"op\": \"{}\", \"size\": {}, \"pages\": \"{}\", \"procs\": {}, \"pattern\": \"{}\", \"mb_per_s\": {:.3}, \"min\": {:.3}, \"max\": {:.3}, \"reps\": {}",
            r.mech.name(), op_name(r.op), r.size, r.pages.name(), r.procs, r.pattern.name(), r.median, r.min, r.max, r.reps,
        );
        if let Some(e) = r.engine {
            let _ = write!(out, ", \"engine\": \"{}\"", e.name());
        }
        if r.pattern == Pattern::OneToOne {
            let _ = write!(out, ", \"limit\": {}", jnum(r.limit));
        }
        if let Some(c) = &r.counts {
            let _ = write!(
                out,
                ", \"calls_per_mib\": {}, \"pins_per_mib\": {}, \"gup_per_mib\": {}",
                jnum(Some(c.calls)),
                jnum(c.pins),
                jnum(c.gup)
            );
            if r.mech.is_cma() {
                let _ = write!(
                    out,
                    ", \"pages_pinned_per_mib\": {}, \"local_pages_pinned_per_mib\": {}",
                    jnum(c.pages_pinned),
                    jnum(c.local_pages_pinned)
                );
            }
            if !c.module.is_empty() {
                let fields: Vec<String> = c
                    .module
                    .iter()
                    .map(|(name, v)| format!("\"{name}\": {}", jnum(Some(*v))))
                    .collect();
                let _ = write!(out, ", \"module_per_mib\": {{{}}}", fields.join(", "));
            }
            let _ = write!(out, ", \"counts_suspect\": {}", c.stray);
        }
        let _ = writeln!(out, "}}{}", if i + 1 < recs.len() { "," } else { "" });
    }
    out.push_str("]\n");
    out
}
