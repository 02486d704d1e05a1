//! The cloning run's plots.

use super::{CloneCell, CloneEvalReport};
use crate::error::Result;

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
        for (metric, label, get) in [
            (
                "accuracy",
                "clone accuracy",
                (|c: &CloneCell| c.clone_accuracy.0) as fn(&CloneCell) -> f64,
            ),
            ("transfer", "transfer success", |c: &CloneCell| {
                c.transfer_success.0
            }),
        ] {
            let mut kinds: Vec<&str> = r.cells.iter().map(|c| c.defence_kind.as_str()).collect();
            kinds.sort_unstable();
            kinds.dedup();
            let series: Vec<(String, Vec<(f64, f64)>)> = kinds
                .iter()
                .map(|k| {
                    let mut pts: Vec<(f64, f64)> = r
                        .cells
                        .iter()
                        .filter(|c| c.attacker == a && c.defence_kind == *k)
                        .map(|c| (c.l1.0, get(c)))
                        .collect();
                    pts.sort_by(|x, y| x.0.total_cmp(&y.0));
                    (k.to_string(), pts)
                })
                .collect();
            let path = dir.join(format!("clone_{metric}_{}.png", a.replace('+', "_")));
            crate::report::line_plot(
                &path,
                &format!("{label} against distortion, attacker {a}"),
                "mean L1 distortion of the served outputs",
                label,
                &series,
                false,
            )?;
            files.push(path);
        }
    }
    Ok(files)
}
