//! Benchmarks printed as tables (`rgshield bench …`). Targets live here, never in timed tests.

use serde::Serialize;

use crate::data::Dataset;
use crate::error::Result;
use crate::sample::{OutputMode, Predictor};
use crate::train::{Method, TrainConfig, Trainer};

/// Settings of `rgshield bench depth`.
pub struct DepthBenchConfig {
    pub depths: Vec<usize>,
    pub width: usize,
    pub methods: Vec<Method>,
    pub seed: u64,
    /// Samples S of the served output for the test accuracy.
    pub samples: usize,
}

/// One row of the depth table.
#[derive(Clone, Debug, Serialize)]
pub struct DepthRow {
    pub depth: usize,
    pub method: Method,
    pub widths: Vec<usize>,
    pub test_accuracy: f64,
    pub test_accuracy_mean_field: f64,
    pub train_accuracy: f64,
    pub stages: Vec<(String, f64)>,
    pub seconds: f64,
}

/// Train every (depth, method) pair from scratch and measure test accuracy and time.
pub fn depth_bench(
    data: &Dataset,
    cfg: &DepthBenchConfig,
    config_for: impl Fn(Method) -> TrainConfig,
    bar_for: impl Fn(usize, Method) -> indicatif::ProgressBar,
    mut on_row: impl FnMut(&DepthRow),
) -> Result<Vec<DepthRow>> {
    let mut rows = Vec::new();
    for &depth in &cfg.depths {
        let mut widths = vec![data.n_features()];
        widths.extend(std::iter::repeat_n(cfg.width, depth - 1));
        widths.push(data.n_classes());
        for &method in &cfg.methods {
            let tc = config_for(method);
            let t0 = std::time::Instant::now();
            let (model, outcome) = Trainer::new(data, &tc)?
                .with_progress(bar_for(depth, method))
                .train(&widths)?;
            let seconds = t0.elapsed().as_secs_f64();
            let served = Predictor::new(
                &model,
                OutputMode::Served {
                    samples: cfg.samples,
                    seed: 0,
                },
            );
            let mf = Predictor::new(&model, OutputMode::MeanField);
            rows.push(DepthRow {
                depth,
                method,
                widths: widths.clone(),
                test_accuracy: served.accuracy(&data.test),
                test_accuracy_mean_field: mf.accuracy(&data.test),
                train_accuracy: outcome.train_accuracy,
                stages: outcome.stages,
                seconds,
            });
            on_row(&rows[rows.len() - 1]);
        }
    }
    Ok(rows)
}

/// The goal of the depth benchmark on digits (issue: ≥ 92% at every depth).
pub const DEPTH_GOAL: f64 = 0.92;

/// Header of the depth benchmark's Markdown table, with the goal.
pub fn depth_table_header(data: &Dataset) -> String {
    format!(
        "depth benchmark on {} ({} train / {} test); goal: test accuracy ≥ {:.0}% at every depth\n\n\
         | N | method | widths | test acc (served) | test acc (mean-field) | train acc | goal | held-out by stage | seconds |\n\
         |---|---|---|---|---|---|---|---|---|",
        data.name,
        data.train.len(),
        data.test.len(),
        DEPTH_GOAL * 100.0
    )
}

/// One Markdown row of the depth benchmark.
pub fn depth_table_row(r: &DepthRow) -> String {
    let stages: Vec<String> = r
        .stages
        .iter()
        .map(|(n, a)| format!("{n} {a:.3}"))
        .collect();
    let widths: Vec<String> = r.widths.iter().map(|w| w.to_string()).collect();
    format!(
        "| {} | {:?} | {} | {:.4} | {:.4} | {:.4} | {} | {} | {:.1} |",
        r.depth,
        r.method,
        widths.join("-"),
        r.test_accuracy,
        r.test_accuracy_mean_field,
        r.train_accuracy,
        if r.test_accuracy >= DEPTH_GOAL {
            "met"
        } else {
            "MISSED"
        },
        stages.join(", "),
        r.seconds
    )
}
