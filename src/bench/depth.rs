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
    /// One training setting per compared (method, seed), each with its own seed; rows of one
    /// method at one depth are summarised by their median over seeds ([`depth_medians`]).
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
    /// Training seed.
    pub seed: u64,
    /// Widths `n_0 … n_N`.
    pub widths: Vec<usize>,
    /// Rows of the evaluation split (the test split, or a validation hold-out).
    pub test_rows: usize,
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
                seed: tc.seed,
                widths: widths.clone(),
                test_rows: data.test.len(),
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

/// The goal of the depth benchmark on digits for the hybrid (issue 14 item 2: median over seeds
/// of the served test accuracy ≥ 92% at every depth).
pub const DEPTH_GOAL: f64 = 0.92;

/// The goal for eq. 14 alone (issue 14 item 1: median over seeds ≥ 90% at every depth 1…6).
pub const DEPTH_GOAL_EQ14: f64 = 0.90;

/// The accuracy goal of `method` at every depth.
pub fn depth_goal(method: Method) -> f64 {
    match method {
        Method::Eq14 => DEPTH_GOAL_EQ14,
        Method::Hybrid => DEPTH_GOAL,
    }
}

/// Header of the depth benchmark's Markdown table, with the goals. The evaluation split is the
/// test split, or the validation hold-out when the data set is a validation view (its name then
/// contains `:validation`, and the accuracy columns are validation accuracies).
pub fn depth_table_header(data: &Dataset) -> String {
    format!(
        "depth benchmark on {} ({} train / {} evaluation rows); goal: served accuracy ≥ {:.0}% \
         (hybrid) / ≥ {:.0}% (eq14) at every depth, median over seeds\n\n\
         | N | method | seed | widths | eval acc (served) | eval acc (mean-field) | train acc | ≥ goal | held-out by stage | seconds |\n\
         |---|---|---|---|---|---|---|---|---|---|",
        data.name,
        data.train.len(),
        data.test.len(),
        DEPTH_GOAL * 100.0,
        DEPTH_GOAL_EQ14 * 100.0
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
        "| {} | {} | {} | {} | {:.4} | {:.4} | {:.4} | {} | {} | {:.1} |",
        r.depth,
        r.method,
        r.seed,
        widths.join("-"),
        r.test_accuracy,
        r.test_accuracy_mean_field,
        r.train_accuracy,
        if r.test_accuracy >= depth_goal(r.method) {
            "yes"
        } else {
            "no"
        },
        stages.join(", "),
        r.seconds
    )
}

/// The median over seeds of one method at one depth.
#[derive(Clone, Debug, Serialize)]
pub struct DepthMedian {
    /// Depth N.
    pub depth: usize,
    /// Training method.
    pub method: Method,
    /// The seeds, in row order.
    pub seeds: Vec<u64>,
    /// Served accuracy of each seed on the evaluation split, in the order of `seeds`.
    pub accuracies: Vec<f64>,
    /// Median of `accuracies` (the mean of the two middle ones for an even count).
    pub median: f64,
    /// The method's goal ([`depth_goal`]).
    pub goal: f64,
    /// Whether `median ≥ goal`.
    pub met: bool,
}

/// The median over seeds of the served accuracy for each (depth, method), in first-seen order.
pub fn depth_medians(rows: &[DepthRow]) -> Vec<DepthMedian> {
    let mut groups: Vec<(usize, Method, Vec<&DepthRow>)> = Vec::new();
    for r in rows {
        match groups
            .iter_mut()
            .find(|(n, m, _)| *n == r.depth && *m == r.method)
        {
            Some(g) => g.2.push(r),
            None => groups.push((r.depth, r.method, vec![r])),
        }
    }
    groups
        .into_iter()
        .map(|(depth, method, of)| {
            let accuracies: Vec<f64> = of.iter().map(|r| r.test_accuracy).collect();
            let median = crate::report::stats::median(&accuracies).unwrap_or(f64::NAN);
            let goal = depth_goal(method);
            DepthMedian {
                depth,
                method,
                seeds: of.iter().map(|r| r.seed).collect(),
                accuracies,
                median,
                goal,
                met: median >= goal,
            }
        })
        .collect()
}

/// The Markdown table of [`depth_medians`], ending with one line per method saying whether its
/// goal is met at every depth.
pub fn depth_median_table(medians: &[DepthMedian]) -> String {
    let mut s = String::from(
        "| N | method | seeds | served accuracy per seed | median | goal | median ≥ goal |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for m in medians {
        let seeds: Vec<String> = m.seeds.iter().map(|v| v.to_string()).collect();
        let accs: Vec<String> = m.accuracies.iter().map(|a| format!("{a:.4}")).collect();
        s.push_str(&format!(
            "| {} | {} | {} | {} | {:.4} | {:.2} | {} |\n",
            m.depth,
            m.method,
            seeds.join(","),
            accs.join(", "),
            m.median,
            m.goal,
            if m.met { "yes" } else { "NO" }
        ));
    }
    let mut methods: Vec<Method> = Vec::new();
    for m in medians {
        if !methods.contains(&m.method) {
            methods.push(m.method);
        }
    }
    for method in methods {
        let of: Vec<&DepthMedian> = medians.iter().filter(|m| m.method == method).collect();
        let missed: Vec<String> = of
            .iter()
            .filter(|m| !m.met)
            .map(|m| m.depth.to_string())
            .collect();
        let min = of.iter().map(|m| m.median).fold(f64::INFINITY, f64::min);
        s.push_str(&format!(
            "\n{method}: minimum over depths of the median {min:.4}; goal ≥ {:.2} at every depth: {}",
            depth_goal(method),
            if missed.is_empty() {
                "met".to_string()
            } else {
                format!("NOT met (N = {})", missed.join(", "))
            }
        ));
    }
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(depth: usize, method: Method, seed: u64, acc: f64) -> DepthRow {
        DepthRow {
            depth,
            method,
            seed,
            widths: vec![],
            test_rows: 100,
            test_accuracy: acc,
            test_accuracy_mean_field: acc,
            train_accuracy: acc,
            stages: vec![],
            seconds: 0.0,
        }
    }

    #[test]
    fn medians_group_by_depth_and_method_and_judge_each_method_by_its_goal() {
        let rows = [
            row(1, Method::Hybrid, 1, 0.95),
            row(1, Method::Eq14, 1, 0.91),
            row(1, Method::Hybrid, 2, 0.90),
            row(1, Method::Eq14, 2, 0.80),
            row(1, Method::Hybrid, 3, 0.93),
            row(1, Method::Eq14, 3, 0.905),
        ];
        let m = depth_medians(&rows);
        assert_eq!(m.len(), 2);
        assert_eq!(
            (m[0].method, m[0].median, m[0].met),
            (Method::Hybrid, 0.93, true)
        );
        assert_eq!(m[0].seeds, vec![1, 2, 3]);
        // 0.905 ≥ 0.90 meets eq. 14's goal but would miss the hybrid's
        assert_eq!(
            (m[1].method, m[1].median, m[1].met),
            (Method::Eq14, 0.905, true)
        );
        let t = depth_median_table(&m);
        assert!(
            t.contains("hybrid: minimum over depths of the median 0.9300"),
            "{t}"
        );
        let low = depth_medians(&[row(2, Method::Hybrid, 1, 0.919)]);
        assert!(!low[0].met);
        assert!(depth_median_table(&low).contains("NOT met (N = 2)"));
    }
}
