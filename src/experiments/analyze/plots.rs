//! The analysis plots: spectra of the stability matrices, canonical correlations, the coupling
//! flow, the Fisher ratios, the top input-Fisher eigenvectors and the poison directions.

use super::{AnalysisReport, CouplingSummary, InputAnalysis, LayerReport};
use crate::error::Result;
use crate::report::stats::median;
use crate::rg::OutputReading;

fn median_curve(curves: &[&[f64]]) -> Vec<(f64, f64)> {
    let len = curves.iter().map(|c| c.len()).max().unwrap_or(0);
    (0..len)
        .filter_map(|i| {
            median(
                &curves
                    .iter()
                    .filter_map(|c| c.get(i).copied())
                    .collect::<Vec<_>>(),
            )
            .map(|m| ((i + 1) as f64, m))
        })
        .collect()
}

/// Draw the analysis plots into `dir`; returns the files written.
pub fn write_plots(
    r: &AnalysisReport,
    dir: &std::path::Path,
    image_shape: Option<(usize, usize)>,
) -> Result<Vec<std::path::PathBuf>> {
    use crate::report::{bar_grid, image_grid, line_plot, Series};
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
                    (format!("T({k})"), median_curve(&curves))
                })
                .collect()
        };
        let p = dir.join("stability_singular_values.png");
        line_plot(
            &p,
            "Stability matrices: singular values (median over inputs)",
            "index",
            "singular value of T(k)",
            &per_layer(&|l| &l.singular_values),
            true,
        )?;
        files.push(p);
        let p = dir.join("canonical_correlations.png");
        line_plot(
            &p,
            "Canonical correlations between consecutive layers (median over inputs)",
            "index",
            "canonical correlation",
            &per_layer(&|l| &l.canonical_correlations),
            false,
        )?;
        files.push(p);
    }
    let n_layers = r.widths.len() - 1;
    let flow = |f: &dyn Fn(&CouplingSummary) -> f64| -> Vec<(f64, f64)> {
        (0..n_layers)
            .filter_map(|j| {
                median(
                    &r.inputs
                        .iter()
                        .filter_map(|i| i.couplings.get(j))
                        .map(f)
                        .collect::<Vec<_>>(),
                )
                .map(|m| ((j + 1) as f64, m))
            })
            .collect()
    };
    let p = dir.join("coupling_flow.png");
    line_plot(
        &p,
        "Coupling flow (qualitative): RMS of the determined couplings, median over inputs",
        "layer k",
        "RMS coupling",
        &[
            ("order 1 (fields)".to_string(), flow(&|c| c.field_rms)),
            ("order 2 (pairs)".to_string(), flow(&|c| c.higher_rms)),
            (
                "pairs' sampling noise (RMS if all were 0)".to_string(),
                flow(&|c| c.higher_noise_rms),
            ),
        ],
        false,
    )?;
    files.push(p);
    let idx = |f: &dyn Fn(&InputAnalysis) -> f64| -> Vec<(f64, f64)> {
        r.inputs.iter().map(|i| (i.index as f64, f(i))).collect()
    };
    let p = dir.join("fisher_ratio_to_bound.png");
    line_plot(
        &p,
        "Top input-Fisher eigenvalue / first-layer bound",
        "test input",
        "ratio (stochastic readings ≤ 1)",
        &[
            ("chain".to_string(), idx(&|i| i.fisher.ratio_chain)),
            ("direct".to_string(), idx(&|i| i.fisher.ratio_direct)),
            (
                "mean-field".to_string(),
                idx(&|i| i.fisher.ratio_mean_field),
            ),
        ],
        true,
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
            &panels,
            &names,
        )?;
        files.push(p);
    }
    Ok(files)
}
