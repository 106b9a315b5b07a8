//! Output: the bandwidth-against-size plot (SVG).

use cma::Op;
use std::fmt::Write as _;

use super::labels::{Mech, Pages, Pattern, Record};
use super::table::{find, human};

/// Bandwidth against size, log-log, one panel per page kind (reads).
pub(super) fn svg(recs: &[Record], sizes: &[usize], pages_list: &[Pages], title: &str) -> String {
    let (pw, ph, ml, mt, mb) = (520.0, 380.0, 70.0, 50.0, 50.0);
    let width = pw * pages_list.len() as f64 + 20.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"20\" font-size=\"15\">{title}</text>\n",
        ph + 40.0
    );
    let series = [
        (Mech::Cma, "#d62728"),
        (Mech::Pvm, "#1f77b4"),
        (Mech::Double, "#2ca02c"),
        (Mech::Memcpy, "#7f7f7f"),
        (Mech::CmaDirect, "#ff7f0e"),
        (Mech::CmaPid, "#9467bd"),
        (Mech::CmaUc, "#e377c2"),
        (Mech::Vecloop, "#bcbd22"),
    ];
    let all: Vec<f64> = recs
        .iter()
        .filter(|r| r.pattern == Pattern::OneToOne)
        .map(|r| r.median)
        .filter(|v| *v > 0.0)
        .collect();
    let (lo, hi) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let (ylo, yhi) = (
        lo.log10().floor(),
        hi.log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let (xlo, xhi) = (
        (sizes[0] as f64).log2(),
        (*sizes.last().unwrap() as f64)
            .log2()
            .max((sizes[0] as f64).log2() + 1.0),
    );
    for (p, &pages) in pages_list.iter().enumerate() {
        let x0 = 10.0 + p as f64 * pw + ml;
        let (w, h) = (pw - ml - 20.0, ph - mt - mb);
        let y0 = mt + 20.0;
        let xp = |size: usize| x0 + ((size as f64).log2() - xlo) / (xhi - xlo) * w;
        let yp = |v: f64| y0 + h - (v.log10() - ylo) / (yhi - ylo) * h;
        let _ = writeln!(
            s,
            "<text x=\"{x0}\" y=\"{}\" font-size=\"13\">read, {} pages</text>",
            y0 - 8.0,
            pages.name()
        );
        let _ = writeln!(s, "<rect x=\"{x0}\" y=\"{y0}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"black\"/>");
        let mut e = ylo;
        while e <= yhi {
            let y = yp(10f64.powf(e));
            let _ = writeln!(s, "<line x1=\"{x0}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>", x0 + w, x0 - 5.0, y + 4.0, 10f64.powf(e));
            e += 1.0;
        }
        for &size in sizes {
            let x = xp(size);
            let _ = writeln!(
                s,
                "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                y0 + h + 16.0,
                human(size)
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">message size (bytes)</text>",
            x0 + w / 2.0,
            y0 + h + 34.0
        );
        let _ = writeln!(s, "<text x=\"{}\" y=\"{}\" transform=\"rotate(-90 {} {})\" text-anchor=\"middle\">MB/s</text>", x0 - 50.0, y0 + h / 2.0, x0 - 50.0, y0 + h / 2.0);
        for (k, &(mech, color)) in series.iter().enumerate() {
            let pts: Vec<String> = sizes
                .iter()
                .filter_map(|&size| {
                    find(recs, mech, Op::Read, size, pages, Pattern::OneToOne, 1)
                        .map(|r| format!("{:.1},{:.1}", xp(size), yp(r.median)))
                })
                .collect();
            if pts.is_empty() {
                continue;
            }
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
                pts.join(" ")
            );
            let ly = y0 + 12.0 + 15.0 * k as f64;
            let _ = writeln!(s, "<line x1=\"{}\" x2=\"{}\" y1=\"{ly}\" y2=\"{ly}\" stroke=\"{color}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{}</text>", x0 + 8.0, x0 + 28.0, x0 + 32.0, ly + 4.0, mech.name());
        }
    }
    s.push_str("</svg>\n");
    s
}
