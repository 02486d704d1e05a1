//! `rgshield bench depth`: train every depth with every method and tabulate accuracy and time.

use serde::Serialize;

use crate::data::Dataset;
use crate::error::{check_at_least, Error, Result};
use crate::model::{check_depths, stack_widths};
use crate::params::{Params, Valid};
use crate::progress::Progress;
use crate::sample::{OutputMode, Predictor};
use crate::train::{Method, TrainParams, Trainer};

/// Settings of `rgshield bench depth`.
#[derive(Clone, Debug, Serialize)]
pub struct DepthBenchParams {
    /// Depths N (number of RBMs), each ≥ 1.
    pub depths: Vec<usize>,
    /// Hidden width of every hidden layer.
    pub width: usize,
    /// One training setting per compared method (each with its own seed).
    pub train: Vec<Valid<TrainParams>>,
    /// Samples S of the served output for the test accuracy.
    pub samples: usize,
}

impl Default for DepthBenchParams {
    /// Depths 1…6, width 64, both methods with their defaults (seed 1), S = 64.
    fn default() -> Self {
        DepthBenchParams {
            depths: (1..=6).collect(),
            width: 64,
            train: [Method::Eq14, Method::Hybrid]
                .into_iter()
                .map(|m| Valid::checked(TrainParams::for_method(m, 1)))
                .collect(),
            samples: 64,
        }
    }
}

impl Params for DepthBenchParams {
    fn check(self) -> Result<Valid<Self>> {
        check_depths("bench depth", &self.depths)?;
        check_at_least("bench depth: width", self.width, 1)?;
        check_at_least("bench depth: samples", self.samples, 1)?;
        if self.train.is_empty() {
            return Err(Error::invalid("bench depth: no training method given"));
        }
        Ok(Valid::checked(self))
    }
}

/// One row of the depth table.
#[derive(Clone, Debug, Serialize)]
pub struct DepthRow {
    /// Depth N.
    pub depth: usize,
    /// Training method.
    pub method: Method,
    /// Widths `n_0 … n_N`.
    pub widths: Vec<usize>,
    /// Test accuracy of the served output.
    pub test_accuracy: f64,
    /// Test accuracy of the mean-field output.
    pub test_accuracy_mean_field: f64,
    /// Accuracy on the training rows the trainer fitted.
    pub train_accuracy: f64,
    /// Held-out accuracy after each training stage.
    pub stages: Vec<(String, f64)>,
    /// Training time.
    pub seconds: f64,
}

/// Train every (depth, method) pair from scratch and measure test accuracy and time.
pub fn depth_bench(
    data: &Dataset,
    cfg: &Valid<DepthBenchParams>,
    progress: &dyn Progress,
    mut on_row: impl FnMut(&DepthRow),
) -> Result<Vec<DepthRow>> {
    let mut rows = Vec::new();
    for &depth in &cfg.depths {
        let widths = stack_widths(data.n_features(), cfg.width, depth, data.n_classes());
        for tc in &cfg.train {
            let method = tc.method;
            let t0 = std::time::Instant::now();
            let (model, outcome) = Trainer::new(data, tc)?
                .with_progress(progress)
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
