//! The cloning run's plots.

use super::{CloneCell, CloneEvalReport};
use crate::error::Result;
use crate::report::{LinePlot, Point, Series};

/// Plots in the style of the prediction-poisoning literature: clone accuracy (and transfer
/// success) against the defender's mean L1 distortion, one curve per defence, one file per
/// attacker.
pub fn write_plots(r: &CloneEvalReport, dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let mut attackers: Vec<&str> = r.cells.iter().map(|c| c.attacker.as_str()).collect();
    attackers.dedup();
    attackers.sort_unstable();
    attackers.dedup();
    for a in attackers {
        for (metric, title, label, get) in [
            (
                "accuracy",
                "Clone accuracy",
                "clone accuracy (fraction of test inputs)",
                (|c: &CloneCell| c.clone_accuracy) as fn(&CloneCell) -> (f64, f64),
            ),
            (
                "transfer",
                "Transfer success",
                "transfer success (fraction of inputs)",
                |c: &CloneCell| c.transfer_success,
            ),
        ] {
            let mut kinds: Vec<&str> = r.cells.iter().map(|c| c.defence_kind.as_str()).collect();
            kinds.sort_unstable();
            kinds.dedup();
            let series: Vec<Series> = kinds
                .iter()
                .map(|k| {
                    let mut pts: Vec<Point> = r
                        .cells
                        .iter()
                        .filter(|c| c.attacker == a && c.defence_kind == *k)
                        .map(|c| {
                            let (mean, sd) = get(c);
                            // One seed has no spread: no bar.
                            Point::plus_minus(c.l1.0, mean, (c.seeds > 1).then_some(sd))
                        })
                        .collect();
                    pts.sort_by(|x, y| x.x.total_cmp(&y.x));
                    Series::with_points(*k, pts)
                })
                .collect();
            let path = dir.join(format!("clone_{metric}_{}.png", a.replace('+', "_")));
            crate::report::line_plot(
                &path,
                &LinePlot {
                    title: &format!("{title} against distortion, attacker {a}"),
                    x_label:
                        "mean L1 distortion of the served outputs (sum of |change| per answer)",
                    y_label: label,
                    log_y: false,
                    bars: Some("error bars: ± 1 sd over seeds (none with one seed)"),
                },
                &series,
            )?;
            files.push(path);
        }
    }
    Ok(files)
}
