//! The analysis plots: spectra of the stability matrices, canonical correlations, the coupling
//! flow, the Fisher ratios, the top input-Fisher eigenvectors and the poison directions.

use super::{AnalysisReport, CouplingSummary, InputAnalysis, LayerReport};
use crate::error::Result;
use crate::report::Point;
use crate::rg::OutputReading;

/// Per index i (1-based), the median over inputs of the curves' i-th values with their
/// interquartile range as the error bar.
fn median_curve(curves: &[&[f64]]) -> Vec<Point> {
    let len = curves.iter().map(|c| c.len()).max().unwrap_or(0);
    (0..len)
        .filter_map(|i| {
            Point::median_iqr(
                (i + 1) as f64,
                &curves
                    .iter()
                    .filter_map(|c| c.get(i).copied())
                    .collect::<Vec<_>>(),
            )
        })
        .collect()
}

/// What the error bars of a median over inputs mean.
const IQR_BARS: &str = "error bars: interquartile range over the analysed inputs";

/// Draw the analysis plots into `dir`; returns the files written.
pub fn write_plots(
    r: &AnalysisReport,
    dir: &std::path::Path,
    image_shape: Option<(usize, usize)>,
) -> Result<Vec<std::path::PathBuf>> {
    use crate::report::{bar_grid, image_grid, line_plot, BarAxes, LinePlot, Series};
    let mut files = Vec::new();
    let steps: Vec<usize> = r
        .inputs
        .first()
        .map(|i| i.layers.iter().map(|l| l.k).collect())
        .unwrap_or_default();
    if !steps.is_empty() {
        let per_layer = |f: &dyn Fn(&LayerReport) -> &[f64]| -> Vec<Series> {
            steps
                .iter()
                .enumerate()
                .map(|(j, k)| {
                    let curves: Vec<&[f64]> = r
                        .inputs
                        .iter()
                        .filter_map(|i| i.layers.get(j))
                        .map(f)
                        .collect();
                    Series::with_points(format!("T({k})"), median_curve(&curves))
                })
                .collect()
        };
        let p = dir.join("stability_singular_values.png");
        line_plot(
            &p,
            &LinePlot {
                title: "Stability matrices T(k): singular values (median over inputs)",
                x_label: "rank i of the singular value (1 = largest)",
                y_label: "singular value of T(k) (dimensionless, log scale)",
                log_y: true,
                bars: Some(IQR_BARS),
            },
            &per_layer(&|l| &l.singular_values),
        )?;
        files.push(p);
        let p = dir.join("canonical_correlations.png");
        line_plot(
            &p,
            &LinePlot {
                title: "Canonical correlations between consecutive layers (median over inputs)",
                x_label: "rank i of the canonical correlation (1 = largest)",
                y_label: "canonical correlation (dimensionless, 0 to 1)",
                log_y: false,
                bars: Some(IQR_BARS),
            },
            &per_layer(&|l| &l.canonical_correlations),
        )?;
        files.push(p);
    }
    let n_layers = r.widths.len() - 1;
    let flow = |f: &dyn Fn(&CouplingSummary) -> f64| -> Vec<Point> {
        (0..n_layers)
            .filter_map(|j| {
                Point::median_iqr(
                    (j + 1) as f64,
                    &r.inputs
                        .iter()
                        .filter_map(|i| i.couplings.get(j))
                        .map(f)
                        .collect::<Vec<_>>(),
                )
            })
            .collect()
    };
    let p = dir.join("coupling_flow.png");
    line_plot(
        &p,
        &LinePlot {
            title:
                "Coupling flow (qualitative): RMS of the determined couplings, median over inputs",
            x_label: "layer k (RBM index, 1 = nearest the input)",
            y_label: "RMS coupling (coefficient in the log-probability, dimensionless)",
            log_y: false,
            bars: Some(IQR_BARS),
        },
        &[
            Series::with_points("order 1 (fields)", flow(&|c| c.field_rms)),
            Series::with_points("order 2 (pairs)", flow(&|c| c.higher_rms)),
            Series::with_points(
                "pairs' sampling noise (RMS if all were 0)",
                flow(&|c| c.higher_noise_rms),
            ),
        ],
    )?;
    files.push(p);
    // Each input's ratio with its jackknife standard error scaled by the (exact) bound.
    let ratio = |f: &dyn Fn(&InputAnalysis) -> (f64, Option<f64>)| -> Vec<Point> {
        r.inputs
            .iter()
            .map(|i| {
                let (ratio, se) = f(i);
                let scale = i.fisher.bound_top;
                Point::plus_minus(i.index as f64, ratio, se.map(|s| s / scale))
            })
            .collect()
    };
    let p = dir.join("fisher_ratio_to_bound.png");
    line_plot(
        &p,
        &LinePlot {
            title: "Top input-Fisher eigenvalue / first-layer bound, per input",
            x_label: "test input (index in the test split)",
            y_label: "ratio to the bound (dimensionless; stochastic readings ≤ 1)",
            log_y: true,
            bars: Some("error bars: ± 1 jackknife standard error (chain and direct; the mean field is exact)"),
        },
        &[
            Series::with_points(
                "chain",
                ratio(&|i| (i.fisher.ratio_chain, i.fisher.chain_top_std_err)),
            ),
            Series::with_points(
                "direct",
                ratio(&|i| (i.fisher.ratio_direct, i.fisher.direct_top_std_err)),
            ),
            Series::with_points("mean-field", ratio(&|i| (i.fisher.ratio_mean_field, None))),
        ],
    )?;
    files.push(p);
    if let Some(shape) = image_shape {
        let imgs: Vec<(String, Vec<f64>)> = r
            .inputs
            .iter()
            .take(10)
            .map(|i| {
                (
                    format!("#{} label {} → {}", i.index, i.label, i.predicted),
                    i.fisher.top_eigenvector.clone(),
                )
            })
            .collect();
        let p = dir.join("input_fisher_eigenvectors.png");
        image_grid(
            &p,
            "Top input-Fisher eigenvector (red +, blue −)",
            &imgs,
            shape,
        )?;
        files.push(p);
    }
    let names: Vec<String> = r.classes.iter().map(|c| c.name.clone()).collect();
    for (reading, tag) in [(OutputReading::PlugIn, "P"), (OutputReading::Mixture, "C")] {
        let panels: Vec<(String, Vec<f64>)> = r
            .classes
            .iter()
            .filter_map(|c| {
                c.output
                    .iter()
                    .find(|o| o.reading == reading)
                    .map(|o| (format!("class {}", c.name), o.poison_direction.clone()))
            })
            .collect();
        let p = dir.join(format!("poison_directions_{tag}.png"));
        bar_grid(
            &p,
            &format!("Poison direction u per class, reading ({tag})"),
            BarAxes {
                x_label: "output unit (class)",
                y_label: "component of u (unit vector)",
            },
            &panels,
            &names,
        )?;
        files.push(p);
    }
    Ok(files)
}
