//! The depth study's plots against N (SPEC §10).

use std::path::{Path, PathBuf};

use super::summary::{DepthSummary, SeedSpread};
use super::{DepthStudyReport, DepthStudyRow, StudyLayer};
use crate::error::{Error, Result};
use crate::report::{line_plot, LinePlot, Point, Series};

const DEPTH: &str = "depth N (number of RBMs in the stack)";
const SEED_BARS: &str =
    "points: mean over training seeds of the per-model medians; bars: 95% t interval over seeds";

/// The mean over seeds with its interval as the bar.
fn spread_point(x: f64, s: &SeedSpread) -> Option<Point> {
    let y = s.mean?;
    Some(Point {
        x,
        y,
        bar: s.interval,
    })
}

fn curve(name: &str, r: &DepthStudyReport, g: &dyn Fn(&DepthSummary) -> &SeedSpread) -> Series {
    Series::with_points(
        name,
        r.depths
            .iter()
            .filter_map(|d| spread_point(d.depth as f64, g(d)))
            .collect(),
    )
}

fn rg_curve(name: &str, r: &DepthStudyReport, g: &dyn Fn(&DepthStudyRow) -> Option<f64>) -> Series {
    Series::with_points(
        name,
        r.rows
            .iter()
            .filter_map(|row| g(row).map(|y| Point::new(row.depth as f64, y)))
            .collect(),
    )
}

/// Draw the plots against N into `dir`; returns the files written.
pub fn write_plots(r: &DepthStudyReport, dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut plot = |name: &str, plot: LinePlot<'_>, series: Vec<Series>| {
        let p = dir.join(name);
        line_plot(&p, &plot, &series)?;
        files.push(p);
        Ok::<(), Error>(())
    };
    plot(
        "depth_minimal_l2.png",
        LinePlot {
            title: "Minimal adversarial L2 norm (median over the common inputs)",
            x_label: DEPTH,
            y_label: "minimal L2 norm that changes the served class",
            log_y: false,
            bars: Some(SEED_BARS),
        },
        vec![
            curve("PGD", r, &|d| &d.min_l2_pgd),
            curve("Fisher direction", r, &|d| &d.min_l2_fisher),
            curve("random direction", r, &|d| &d.min_l2_random),
        ],
    )?;
    let eps = r.settings.attack_epsilon;
    plot(
        "depth_success.png",
        LinePlot {
            title: &format!("Attack success at L2 norm ε = {eps}"),
            x_label: DEPTH,
            y_label: "success rate (fraction of attacked inputs)",
            log_y: false,
            bars: Some(SEED_BARS),
        },
        vec![
            curve("PGD", r, &|d| &d.success_pgd),
            curve("Fisher direction", r, &|d| &d.success_fisher),
        ],
    )?;
    plot(
        "depth_input_fisher.png",
        LinePlot {
            title: "Input sensitivity: top Fisher eigenvalue and mean-field Jacobian",
            x_label: DEPTH,
            y_label: "value (log scale)",
            log_y: true,
            bars: Some(SEED_BARS),
        },
        vec![
            curve("F stochastic (direct)", r, &|d| &d.fisher_top),
            curve("F bias-corrected", r, &|d| &d.fisher_top_bias_corrected),
            curve("first-layer bound", r, &|d| &d.fisher_bound),
            curve("F mean-field", r, &|d| &d.mean_field_fisher_top),
            curve("σ_max mean-field Jacobian", r, &|d| {
                &d.mean_field_jacobian_top
            }),
        ],
    )?;
    if !r.rows.is_empty() {
        // Per-step curves would not share an x axis across depths: plot the largest over k of
        // the per-step medians, one point per depth ≥ 2 (a maximum of medians has no error bar).
        let max_k = |x: &DepthStudyRow, g: &dyn Fn(&StudyLayer) -> Option<f64>| {
            x.layers
                .iter()
                .filter_map(g)
                .filter(|v| v.is_finite())
                .reduce(f64::max)
        };
        plot(
            "depth_stability.png",
            LinePlot {
                title: "Stability matrices: largest over k of the median largest |λ(T(k))| and canonical correlation",
                x_label: DEPTH,
                y_label: "value (dimensionless)",
                log_y: false,
                bars: None,
            },
            vec![
                rg_curve("|λ(T)| (labelling-dependent)", r, &|x| {
                    max_k(x, &|l| l.max_eigenvalue_modulus_median)
                }),
                rg_curve("canonical correlation", r, &|x| {
                    max_k(x, &|l| l.max_canonical_correlation_median)
                }),
            ],
        )?;
        plot(
            "depth_output_fisher.png",
            LinePlot {
                title: "Top output-Fisher eigenvalue at the class anchor (median over classes)",
                x_label: DEPTH,
                y_label: "top eigenvalue (nats per squared output unit, log scale)",
                log_y: true,
                bars: None,
            },
            vec![
                rg_curve("reading (P)", r, &|x| x.output_fisher_p_median),
                rg_curve("reading (C)", r, &|x| x.output_fisher_c_median),
            ],
        )?;
    }
    Ok(files)
}
