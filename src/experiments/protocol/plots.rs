//! The protocol's plots (SPEC §12), drawn from a [`Summary`]: per data set, clone accuracy against
//! the realised L1 for each class-keeping family with the labels-only floor, the protection ratio
//! against L1 per budget, and clone accuracy against defender accuracy (MAD's plane).

use std::path::{Path, PathBuf};

use super::summary::{PointSummary, RunSummary, Summary, L1_TARGETS};
use crate::error::Result;
use crate::report::plots::{line_plot, LinePlot, Point, Series};

const BARS: &str = "bars: 95% interval over victims";

/// Draw `series` unless empty; whether a file was written.
fn draw(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    bars: bool,
    series: &[Series],
) -> Result<bool> {
    if series.is_empty() {
        return Ok(false);
    }
    line_plot(
        path,
        &LinePlot {
            title,
            x_label,
            y_label,
            log_y: false,
            bars: bars.then_some(BARS),
        },
        series,
    )?;
    Ok(true)
}

/// The distinct families of `rows` passing `keep`, in order.
fn families_of(rows: &[PointSummary], keep: impl Fn(&PointSummary) -> bool) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for p in rows.iter().filter(|p| keep(p)) {
        if !out.contains(&p.family.as_str()) {
            out.push(&p.family);
        }
    }
    out
}

fn point_of(p: &PointSummary, attacker: &str, x: f64) -> Option<Point> {
    let i = p.clones.get(attacker)?;
    let half = (i.hi - i.lo) / 2.0;
    Some(Point::plus_minus(x, i.mean, Some(half)))
}

fn budget_rows(r: &RunSummary, b: usize) -> Option<&Vec<PointSummary>> {
    r.budgets.iter().find(|(x, _)| *x == b).map(|(_, v)| v)
}

/// Clone accuracy against realised L1 at one budget, one curve per class-keeping family (anchored
/// at `none`), with the labels-only floor as a flat line.
fn accuracy_vs_l1(r: &RunSummary, b: usize, attacker: &str, path: &Path) -> Result<bool> {
    let Some(rows) = budget_rows(r, b) else {
        return Ok(false);
    };
    let none = rows.iter().find(|p| p.defence == "none");
    let families = families_of(rows, |p| {
        p.keeps_class && p.defence != "none" && p.defence != "top1"
    });
    let mut series = Vec::new();
    let mut max_l1: f64 = 1.0;
    for f in families {
        let mut pts: Vec<Point> = none
            .and_then(|n| point_of(n, attacker, 0.0))
            .into_iter()
            .collect();
        for p in rows.iter().filter(|p| p.family == f) {
            if let Some(q) = point_of(p, attacker, p.stats.l1) {
                max_l1 = max_l1.max(p.stats.l1);
                pts.push(q);
            }
        }
        pts.sort_by(|a, b| a.x.total_cmp(&b.x));
        if pts.len() > 1 {
            series.push(Series::with_points(f, pts));
        }
    }
    if let Some(floor) = none.and_then(|n| n.clones.get("distill-top1")) {
        series.push(Series::new(
            "labels only (distill-top1, the floor)",
            [(0.0, floor.mean), (max_l1, floor.mean)],
        ));
    }
    draw(
        path,
        &format!(
            "{}: {attacker} clone accuracy vs distortion, budget {b}",
            r.protocol
        ),
        "realised mean L1 distortion of the answers",
        "clone accuracy on the evaluation set (fraction)",
        true,
        &series,
    )
}

/// Protection ratio of `distill` against L1, one curve per (family, budget).
fn ratio_vs_l1(r: &RunSummary, path: &Path) -> Result<bool> {
    let series: Vec<Series> = r
        .ratios
        .iter()
        .filter(|(k, _, f, _)| {
            k == "distill"
                && ["rg-vertex:objective=B", "partner-table", "grad2-argmax"].contains(&f.as_str())
        })
        .map(|(_, b, f, v)| {
            Series::new(
                format!("{f}, budget {b}"),
                L1_TARGETS
                    .iter()
                    .zip(v)
                    .filter_map(|(&x, y)| y.map(|y| (x, y))),
            )
        })
        .filter(|s| !s.points.is_empty())
        .collect();
    draw(
        path,
        &format!("{}: protection ratio of the distill thief", r.protocol),
        "realised mean L1 distortion of the answers",
        "(acc none − acc defended) / (acc none − acc labels-only)",
        false,
        &series,
    )
}

/// Clone accuracy against defender accuracy at one budget, one curve per family.
fn accuracy_vs_defender(r: &RunSummary, b: usize, path: &Path) -> Result<bool> {
    let Some(rows) = budget_rows(r, b) else {
        return Ok(false);
    };
    let none = rows.iter().find(|p| p.defence == "none");
    let series: Vec<Series> = families_of(rows, |p| p.defence != "none")
        .into_iter()
        .filter_map(|f| {
            let mut pts: Vec<Point> = none
                .and_then(|n| point_of(n, "distill", n.stats.defender_accuracy))
                .into_iter()
                .collect();
            pts.extend(
                rows.iter()
                    .filter(|p| p.family == f)
                    .filter_map(|p| point_of(p, "distill", p.stats.defender_accuracy)),
            );
            pts.sort_by(|a, b| a.x.total_cmp(&b.x));
            (pts.len() > 1).then(|| Series::with_points(f, pts))
        })
        .collect();
    draw(
        path,
        &format!(
            "{}: distill clone vs defender accuracy, budget {b}",
            r.protocol
        ),
        "defender accuracy through the defence (fraction)",
        "clone accuracy on the evaluation set (fraction)",
        true,
        &series,
    )
}

/// Draw every plot of `s` into `dir`; returns the files written. `primary` gives each run's
/// primary budget, in the order of `s.runs`.
pub fn write_plots(s: &Summary, primary: &[usize], dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for (r, &b) in s.runs.iter().zip(primary) {
        let stem = r
            .protocol
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        for attacker in ["distill", "distill-select"] {
            let p = dir.join(format!("{stem}_{attacker}_accuracy_vs_l1.png"));
            if accuracy_vs_l1(r, b, attacker, &p)? {
                out.push(p);
            }
        }
        let p = dir.join(format!("{stem}_protection_ratio.png"));
        if ratio_vs_l1(r, &p)? {
            out.push(p);
        }
        let p = dir.join(format!("{stem}_accuracy_vs_defender_accuracy.png"));
        if accuracy_vs_defender(r, b, &p)? {
            out.push(p);
        }
    }
    Ok(out)
}
