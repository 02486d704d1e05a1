//! `rgshield bench depth-study`: the depth study of SPEC §10 (issue 14 item 3).
//!
//! **Models.** For each depth N and training seed, the model `[n_in, width × (N−1), n_classes]`
//! trained (or reused from `models_dir/dN/sSEED`) under one recorded configuration
//! (`cfg.train`, its seed replaced by each of `cfg.seeds`).
//!
//! **Inputs.** The first `robust_inputs` of the candidate test inputs that *every* model serves
//! correctly, judged by the served output at S = `judge_samples` (seeded): the same inputs at
//! every depth, none that a model already gets wrong.
//!
//! **Primary metric** ([`robustness`]): the minimal adversarial L2 norm per input, by bisection
//! along the signed Fisher direction (of the output layer's input Fisher information,
//! [`state_fisher`]), along a random direction (control) and by PGD. Per model:
//! the median over inputs (censored inputs, no success up to the box diagonal `√n_in`, count as
//! larger than every found norm). Per depth: the mean of the seeds' medians with a t interval
//! over seeds. **Trend** ([`summary`]): the slope of a seed's medians against N, one slope per
//! seed, its mean with a t interval over seeds, over N = 1…8 and over N = 2…8 (N = 1 is a
//! different object: its input Fisher equals the bound), Holm-corrected over the trends tested.
//!
//! **Secondary.** Success at a fixed ε; the minimal norms in bins of the clean served margin
//! (matched confidence, [`MARGIN_BINS`]); the top input-Fisher eigenvalue raw and jackknife
//! bias-corrected beside the first-layer bound and the mean-field reading, with its convergence
//! in S at a few depths; and the RG diagnostics of the first seed's model at every depth
//! (stability spectra, canonical correlations, output Fisher; [`DepthStudyRow`]).

mod plots;
pub mod robustness;
pub mod summary;

use std::path::{Path, PathBuf};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::analyze::{
    analyze, AnalysisReport, AnalyzeParams, InputAnalysis, LayerReport, CC_TOLERANCE,
};
use crate::data::Dataset;
use crate::error::{check_at_least, check_positive, Error, Result};
use crate::model::io::ModelMeta;
use crate::model::{check_depths, stack_widths};
use crate::params::{Params, Valid};
use crate::perturb::Bisection;
use crate::progress::Progress;
use crate::report::stats::{median, quartiles, Quartiles};
use crate::rg::basis::{BasisChoice, DEFAULT_BASIS, DEFAULT_PILOT_SAMPLES};

use crate::rg::state_fisher::state_fisher;
use crate::rg::OutputReading;
use crate::sample::{argmax, OutputMode, Predictor};
use crate::train::{kept_model, train_and_keep, TrainParams, Unrecorded};
use crate::DeepRbm;

pub use plots::write_plots;
pub use robustness::{input_robustness, InputRobustness, RobustnessContext};
pub use summary::{summary_markdown, DepthSummary, SeedSpread, Trend, MARGIN_BINS};

/// Settings of the depth study (SPEC §10).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DepthStudyParams {
    /// Depths N (number of RBMs), each ≥ 1.
    pub depths: Vec<usize>,
    /// Hidden width of every hidden layer.
    pub width: usize,
    /// Training seeds: one model per depth and seed.
    pub seeds: Vec<u64>,
    /// Models are saved to (and reused from) `models_dir/dN/sSEED`.
    pub models_dir: PathBuf,
    /// Training parameters of every model, its seed replaced by each of `seeds` (the CLI uses
    /// `TrainParams::for_method(method, ·)`; tests shorten it).
    pub train: TrainParams,
    /// Candidate test-split inputs, in order of preference.
    pub inputs: Vec<usize>,
    /// How many commonly correct candidates are attacked (the first ones).
    pub robust_inputs: usize,
    /// How many of them (the first) get the full RG analysis on the first seed's models (0: none).
    pub analysis_inputs: usize,
    /// Ancestral samples S of the input-Fisher estimates and the analysis.
    pub samples: usize,
    /// Hidden-layer operator basis of the RG analysis (the attacks' Fisher estimate enumerates
    /// the output states and needs no basis).
    pub basis: BasisChoice,
    /// Jackknife blocks (standard errors and the bias correction of the Fisher estimates).
    pub blocks: usize,
    /// Pilot samples (in total) for the analysis' frozen top pairs.
    pub pilot_samples: usize,
    /// L2 budget ε of the fixed-budget success rates.
    pub attack_epsilon: f64,
    /// Samples S of the served output that selects the inputs and judges every attack.
    pub judge_samples: usize,
    /// PGD steps K (step size 2.5ε/K).
    pub pgd_steps: usize,
    /// Width of the final bisection bracket (L2 units).
    pub bisection_tol: f64,
    /// Depths at which the top Fisher eigenvalue's convergence in S is measured (first seed).
    pub convergence_depths: Vec<usize>,
    /// The sample sizes of the convergence check.
    pub convergence_samples: Vec<usize>,
    /// Inputs (the first selected) of the convergence check (0: none).
    pub convergence_inputs: usize,
    /// Seed of the Fisher samplers, the judging output and the random directions.
    pub seed: u64,
}

impl Default for DepthStudyParams {
    /// Depths 1…8, width 64, seeds 1, 2, 3, the hybrid's training defaults, candidates 0..400 of
    /// which 200 are attacked and 10 analysed, S = 3000, [`DEFAULT_BASIS`], 4 jackknife blocks,
    /// ε = 1, judging S = 256, K = 10 PGD steps, tolerance 0.02, convergence at N = 2, 4, 8 with
    /// S = 3000, 10 000, 30 000 on 10 inputs, models in `runs/depth-study`.
    fn default() -> Self {
        DepthStudyParams {
            depths: (1..=8).collect(),
            width: 64,
            seeds: vec![1, 2, 3],
            models_dir: PathBuf::from("runs/depth-study"),
            train: TrainParams::default(),
            inputs: (0..400).collect(),
            robust_inputs: 200,
            analysis_inputs: 10,
            samples: 3000,
            basis: DEFAULT_BASIS,
            blocks: 4,
            pilot_samples: DEFAULT_PILOT_SAMPLES,
            attack_epsilon: 1.0,
            judge_samples: 256,
            pgd_steps: 10,
            bisection_tol: 0.02,
            convergence_depths: vec![2, 4, 8],
            convergence_samples: vec![3000, 10_000, 30_000],
            convergence_inputs: 10,
            seed: 0,
        }
    }
}

impl Params for DepthStudyParams {
    /// Check every value's domain before any work starts.
    fn check(self) -> Result<Valid<Self>> {
        check_depths("depth study", &self.depths)?;
        check_at_least("depth study: width", self.width, 1)?;
        if self.seeds.is_empty() {
            return Err(Error::invalid("depth study: no training seed"));
        }
        if self.inputs.is_empty() {
            return Err(Error::invalid("depth study: no candidate inputs"));
        }
        check_at_least("depth study: robust inputs", self.robust_inputs, 1)?;
        check_at_least("depth study: samples", self.samples, 2)?;
        check_at_least("depth study: blocks", self.blocks, 1)?;
        check_at_least("depth study: judging samples", self.judge_samples, 1)?;
        check_at_least("depth study: PGD steps", self.pgd_steps, 1)?;
        check_positive("depth study: attack ε", self.attack_epsilon)?;
        check_positive("depth study: bisection tolerance", self.bisection_tol)?;
        for &s in &self.convergence_samples {
            check_at_least("depth study: convergence samples", s, 2)?;
        }
        self.train.clone().check()?;
        self.analyze_params(vec![0]).check()?;
        crate::rg::state_fisher::check_blocks("depth study", self.samples, self.blocks)?;
        for &s in &self.convergence_samples {
            crate::rg::state_fisher::check_blocks("depth study: convergence", s, self.blocks)?;
        }
        Ok(Valid::checked(self))
    }
}

impl DepthStudyParams {
    /// Widths `[n_in, width × (N−1), n_classes]` of depth N.
    pub fn widths(&self, data: &Dataset, depth: usize) -> Vec<usize> {
        stack_widths(data.n_features(), self.width, depth, data.n_classes())
    }

    /// The RG analysis of the first seed's models.
    pub fn analyze_params(&self, inputs: Vec<usize>) -> AnalyzeParams {
        AnalyzeParams {
            inputs,
            samples: self.samples,
            seed: self.seed,
            basis: self.basis,
            blocks: self.blocks,
            pilot_samples: self.pilot_samples,
        }
    }

    /// The bisection on a data set with `n_in` inputs: up to the box diagonal `√n_in`.
    pub fn bisection(&self, n_in: usize) -> Bisection {
        Bisection {
            max: (n_in as f64).sqrt(),
            tol: self.bisection_tol,
        }
    }

    /// Model directory of depth N and training seed s.
    pub fn model_dir(&self, depth: usize, seed: u64) -> PathBuf {
        self.models_dir
            .join(format!("d{depth}"))
            .join(format!("s{seed}"))
    }
}

/// Where a model came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModelSource {
    /// Trained in this run and saved.
    Trained,
    /// Loaded from an existing `model.json` whose widths match.
    Reused,
}

impl ModelSource {
    /// The name in tables.
    pub fn name(self) -> &'static str {
        match self {
            ModelSource::Trained => "trained",
            ModelSource::Reused => "reused",
        }
    }
}

/// One model of the study and its attacked inputs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelRobustness {
    /// Depth N.
    pub depth: usize,
    /// Training seed.
    pub seed: u64,
    /// Widths of the model.
    pub widths: Vec<usize>,
    /// The model directory.
    pub model_dir: String,
    /// Trained here or reused.
    pub model_source: ModelSource,
    /// Training method recorded in `model.json` (`None` when the file does not say).
    pub training_method: Option<String>,
    /// Weights fingerprint (as in `model.json`).
    pub fingerprint: String,
    /// Training time (0 for a reused model).
    pub train_seconds: f64,
    /// Test accuracy of the served output at the judging S.
    pub test_accuracy: f64,
    /// Test accuracy of the mean-field output.
    pub test_accuracy_mean_field: f64,
    /// Time of the attacks.
    pub attack_seconds: f64,
    /// One record per selected input.
    pub inputs: Vec<InputRobustness>,
}

/// The top input-Fisher eigenvalue at one depth, input and sample size (convergence in S).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConvergenceRow {
    /// Depth N (first seed's model).
    pub depth: usize,
    /// Test-split index.
    pub input: usize,
    /// Samples S.
    pub samples: usize,
    /// Direct estimate of the top eigenvalue.
    pub top: f64,
    /// Its jackknife standard error.
    pub top_std_err: Option<f64>,
    /// Its jackknife bias-corrected value.
    pub top_bias_corrected: Option<f64>,
    /// The first-layer bound's top eigenvalue.
    pub bound: f64,
}

/// Everything `depth_study.json` holds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DepthStudyReport {
    /// Data set name.
    pub dataset: String,
    /// The study's settings.
    pub settings: Valid<DepthStudyParams>,
    /// The bisection used.
    pub bisection: Bisection,
    /// Candidates that every model serves correctly.
    pub commonly_correct: usize,
    /// The attacked inputs (test-split indices).
    pub attacked_inputs: Vec<usize>,
    /// One record per (depth, seed).
    pub models: Vec<ModelRobustness>,
    /// One summary per depth.
    pub depths: Vec<DepthSummary>,
    /// The trends of the minimal norms against N.
    pub trends: Vec<Trend>,
    /// The convergence of the top Fisher eigenvalue in S.
    pub convergence: Vec<ConvergenceRow>,
    /// RG diagnostics per depth (first seed).
    pub rows: Vec<DepthStudyRow>,
    /// Wall-clock time of the study.
    pub seconds: f64,
}

/// RG diagnostics of one stability matrix `T^{(k)}` over the inputs (SPEC §5).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StudyLayer {
    /// `T^{(k)}`, k = 2…N.
    pub k: usize,
    /// Median over inputs of the largest |λ(T)| — **depends on the labelling of hidden units**
    /// (RG-NOTES §5 A7); `None` when T is not square.
    pub max_eigenvalue_modulus_median: Option<f64>,
    /// Always true: eig(T) depends on the labelling of hidden units.
    pub labelling_dependent: bool,
    /// Inputs with any |λ(T)| > 1 (the paper's relevant directions; labelling-dependent).
    pub inputs_with_relevant: usize,
    /// Median over inputs of the largest canonical correlation (basis-invariant, ≤ 1 in truth).
    pub max_canonical_correlation_median: Option<f64>,
    /// Inputs whose largest canonical correlation estimate exceeds 1 (+ rounding tolerance). The
    /// estimate is computed from a positive semi-definite joint covariance estimate, so this
    /// counts rounding failures of a near-singular whitening only (expected 0).
    pub canonical_over_one: usize,
}

/// The RG diagnostics of one depth (SPEC §10): the full analysis of the first seed's model on the
/// first `analysis_inputs` selected inputs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DepthStudyRow {
    /// Depth N.
    pub depth: usize,
    /// Training seed of the analysed model.
    pub seed: u64,
    /// Analysis time.
    pub analyze_seconds: f64,
    /// Inputs analysed.
    pub inputs: usize,
    /// Top input-Fisher eigenvalue per input: direct (stochastic) estimate, mean-field reading,
    /// first-layer bound `λ_max(W_1ᵀ diag(μ_1(1−μ_1)) W_1)` (SPEC §6).
    pub fisher_direct: Quartiles,
    /// Top eigenvalue of the mean-field reading's Fisher matrix, quartiles over inputs.
    pub fisher_mean_field: Quartiles,
    /// Top eigenvalue of the first-layer bound, quartiles over inputs.
    pub fisher_bound: Quartiles,
    /// Median over inputs of the per-input ratios to the bound (stochastic ≤ 1 by the
    /// data-processing inequality; mean-field unbounded).
    pub ratio_direct_median: Option<f64>,
    /// Median ratio mean field / bound.
    pub ratio_mean_field_median: Option<f64>,
    /// Inputs whose direct estimate exceeds the bound by more than 4 jackknife standard errors
    /// (with one block: exceeds it at all). Expected 0.
    pub bound_violations: usize,
    /// Per stability matrix `T^{(2)}…T^{(N)}` (empty for N = 1).
    pub layers: Vec<StudyLayer>,
    /// Median over classes of the top output-Fisher eigenvalue (direct estimate) at the one-hot
    /// output, reading (P) (SPEC §7).
    pub output_fisher_p_median: Option<f64>,
    /// Median top eigenvalue of `P F̃ P`, reading (C), at the smoothed one-hot
    /// ([`OutputReading::class_anchor`]).
    pub output_fisher_c_median: Option<f64>,
}

fn training_method(meta: &ModelMeta) -> Option<String> {
    meta.training
        .as_ref()
        .and_then(|t| t.get("method"))
        .and_then(|m| m.as_str())
        .map(str::to_string)
}

/// The RG diagnostics row of one analysis: its inputs' Fisher values summarised, the bound's
/// violations counted, and the layers' stability and canonical correlations summarised.
fn rg_row(depth: usize, seed: u64, an: &AnalysisReport) -> DepthStudyRow {
    let col =
        |f: &dyn Fn(&InputAnalysis) -> f64| quartiles(&an.inputs.iter().map(f).collect::<Vec<_>>());
    let fisher_direct = col(&|i| i.fisher.direct_top);
    let fisher_mean_field = col(&|i| i.fisher.mean_field_top);
    let fisher_bound = col(&|i| i.fisher.bound_top);
    let ratio_direct = median(
        &an.inputs
            .iter()
            .map(|i| i.fisher.ratio_direct)
            .collect::<Vec<_>>(),
    );
    let ratio_mf = median(
        &an.inputs
            .iter()
            .map(|i| i.fisher.ratio_mean_field)
            .collect::<Vec<_>>(),
    );
    let violations = an
        .inputs
        .iter()
        .filter(|i| {
            let f = &i.fisher;
            let se = f
                .direct_top_std_err
                .filter(|s| s.is_finite())
                .unwrap_or(0.0);
            f.direct_top > f.bound_top * (1.0 + 1e-9) + 4.0 * se
        })
        .count();
    let ks: Vec<usize> = an
        .inputs
        .first()
        .map(|i| i.layers.iter().map(|l| l.k).collect())
        .unwrap_or_default();
    let layers = ks
        .iter()
        .enumerate()
        .map(|(j, &k)| {
            let ls: Vec<&LayerReport> = an.inputs.iter().filter_map(|i| i.layers.get(j)).collect();
            let max_of = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
            let eig: Vec<f64> = ls
                .iter()
                .filter_map(|l| l.eigenvalue_moduli.as_deref().map(max_of))
                .collect();
            let cc: Vec<f64> = ls
                .iter()
                .filter_map(|l| l.canonical_correlations.first().copied())
                .collect();
            StudyLayer {
                k,
                max_eigenvalue_modulus_median: median(&eig),
                labelling_dependent: true,
                inputs_with_relevant: ls.iter().filter(|l| l.n_relevant.unwrap_or(0) > 0).count(),
                max_canonical_correlation_median: median(&cc),
                canonical_over_one: cc.iter().filter(|&&c| c > 1.0 + CC_TOLERANCE).count(),
            }
        })
        .collect();
    DepthStudyRow {
        depth,
        seed,
        analyze_seconds: an.seconds,
        inputs: an.inputs.len(),
        fisher_direct,
        fisher_mean_field,
        fisher_bound,
        ratio_direct_median: ratio_direct,
        ratio_mean_field_median: ratio_mf,
        bound_violations: violations,
        layers,
        output_fisher_p_median: output_median(an, OutputReading::PlugIn),
        output_fisher_c_median: output_median(an, OutputReading::Mixture),
    }
}

fn output_median(an: &AnalysisReport, reading: OutputReading) -> Option<f64> {
    median(
        &an.classes
            .iter()
            .filter_map(|c| {
                c.output
                    .iter()
                    .find(|o| o.reading == reading)
                    .map(|o| o.direct_top)
            })
            .collect::<Vec<_>>(),
    )
}

/// The model of one depth and seed: `found` (already loaded and checked by [`kept_model`]), or
/// trained now and kept in its directory ([`train_and_keep`]); with how it came and the seconds
/// training took.
fn model_for(
    data: &Dataset,
    cfg: &DepthStudyParams,
    depth: usize,
    seed: u64,
    found: Option<(DeepRbm, ModelMeta)>,
    progress: &dyn Progress,
) -> Result<(DeepRbm, ModelMeta, ModelSource, f64)> {
    if let Some((m, meta)) = found {
        return Ok((m, meta, ModelSource::Reused, 0.0));
    }
    let t = Instant::now();
    let train = cfg.train.with_seed(seed).check()?;
    let dir = cfg.model_dir(depth, seed);
    let (model, meta, _) = train_and_keep(&dir, data, &cfg.widths(data, depth), &train, progress)?;
    Ok((model, meta, ModelSource::Trained, t.elapsed().as_secs_f64()))
}

/// Run the depth study (SPEC §10; module doc). `on_model` sees each model's record as its attacks
/// finish; `out`, when given, receives `rg/dN/analysis.json` for the RG diagnostics.
pub fn depth_study(
    data: &Dataset,
    params: &Valid<DepthStudyParams>,
    out: Option<&Path>,
    progress: &dyn Progress,
    mut on_model: impl FnMut(&ModelRobustness),
) -> Result<DepthStudyReport> {
    let t0 = Instant::now();
    let cfg = params;
    data.check_test_inputs(&cfg.inputs, "depth study")?;
    // Load the existing models, refusing mismatched ones, before any long work.
    let mut found = Vec::new();
    for &n in &cfg.depths {
        for &s in &cfg.seeds {
            let dir = cfg.model_dir(n, s);
            let remedy = format!("remove {} or choose another --models-dir", dir.display());
            let m = kept_model(
                &dir,
                &cfg.widths(data, n),
                data,
                &cfg.train.with_seed(s),
                &remedy,
                Unrecorded::Refuse,
            )?;
            found.push((n, s, m));
        }
    }
    let mut models = Vec::new();
    for (n, s, m) in found {
        let (m, meta, source, secs) = model_for(data, cfg, n, s, m, progress)?;
        models.push((n, s, m, meta, source, secs));
    }
    // The inputs every model serves correctly at the judging S.
    let judge = |m| {
        Predictor::new(
            m,
            OutputMode::Served {
                samples: cfg.judge_samples,
                seed: cfg.seed,
            },
        )
    };
    let judges: Vec<Predictor<'_>> = models.iter().map(|(_, _, m, ..)| judge(m)).collect();
    let common: Vec<usize> = cfg
        .inputs
        .par_iter()
        .copied()
        .filter(|&i| {
            let (x, c) = (data.test.row(i), data.test.y[i] as usize);
            judges.iter().all(|p| argmax(&p.output(x)) == c)
        })
        .collect();
    if common.is_empty() {
        return Err(Error::invalid(format!(
            "depth study: none of the {} candidate inputs is served correctly by every model",
            cfg.inputs.len()
        )));
    }
    let attacked: Vec<usize> = common.iter().copied().take(cfg.robust_inputs).collect();
    let bisection = cfg.bisection(data.n_features());

    let mut records = Vec::new();
    for (j, (n, s, model, meta, source, secs)) in models.iter().enumerate() {
        let t = Instant::now();
        let ctx = RobustnessContext {
            model,
            judge: judge(model),
            samples: cfg.samples,
            blocks: cfg.blocks,
            seed: cfg.seed,
            pgd_steps: cfg.pgd_steps,
            bisection,
            epsilon: cfg.attack_epsilon,
        };
        progress.start(
            &format!("depth study N={n} seed {s}: minimal norms"),
            attacked.len() as u64,
        );
        let inputs = attacked
            .par_iter()
            .map(|&i| {
                let r = input_robustness(&ctx, i, data.test.row(i), data.test.y[i]);
                progress.inc(1);
                r
            })
            .collect::<Result<Vec<_>>>()?;
        progress.finish();
        let rec = ModelRobustness {
            depth: *n,
            seed: *s,
            widths: model.widths(),
            model_dir: cfg.model_dir(*n, *s).display().to_string(),
            model_source: *source,
            training_method: training_method(meta),
            fingerprint: meta.weights_fingerprint.clone(),
            train_seconds: *secs,
            test_accuracy: judges[j].accuracy(&data.test),
            test_accuracy_mean_field: Predictor::new(model, OutputMode::MeanField)
                .accuracy(&data.test),
            attack_seconds: t.elapsed().as_secs_f64(),
            inputs,
        };
        on_model(&rec);
        records.push(rec);
    }

    // The first seed's models: convergence of the Fisher estimate in S, and the RG diagnostics.
    let first = cfg.seeds[0];
    let first_models = models.iter().filter(|m| m.1 == first);
    let mut convergence = Vec::new();
    let mut rows = Vec::new();
    for (n, _, model, ..) in first_models {
        if cfg.convergence_inputs > 0 && cfg.convergence_depths.contains(n) {
            // The attack already estimated each input at S = cfg.samples, with its bound.
            let attacked_here = records
                .iter()
                .find(|r| r.depth == *n && r.seed == first)
                .map_or(&[][..], |r| &r.inputs[..]);
            for &samples in &cfg.convergence_samples {
                for inp in attacked_here.iter().take(cfg.convergence_inputs) {
                    let (top, top_std_err, top_bias_corrected) = if samples == cfg.samples {
                        (
                            inp.fisher_top,
                            inp.fisher_top_std_err,
                            inp.fisher_top_bias_corrected,
                        )
                    } else {
                        let x = data.test.row(inp.index);
                        let r = state_fisher(model, x, samples, cfg.blocks, cfg.seed)?;
                        (r.top, r.top_std_err, r.top_bias_corrected)
                    };
                    convergence.push(ConvergenceRow {
                        depth: *n,
                        input: inp.index,
                        samples,
                        top,
                        top_std_err,
                        top_bias_corrected,
                        bound: inp.fisher_bound,
                    });
                }
            }
        }
        if cfg.analysis_inputs > 0 {
            let inputs: Vec<usize> = attacked.iter().copied().take(cfg.analysis_inputs).collect();
            let an = analyze(model, data, &cfg.analyze_params(inputs).check()?, progress)?;
            if let Some(out) = out {
                let d = out.join("rg").join(format!("d{n}"));
                std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
                crate::util::write_json(&d.join("analysis.json"), &an)?;
            }
            rows.push(rg_row(*n, first, &an));
        }
    }
    let (depths, trends) = summary::summarise_depths(&records, &cfg.depths);
    Ok(DepthStudyReport {
        dataset: data.name.clone(),
        settings: params.clone(),
        bisection,
        commonly_correct: common.len(),
        attacked_inputs: attacked,
        models: records,
        depths,
        trends,
        convergence,
        rows,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Recompute a kept report's per-depth summaries and trends from its per-input records (what
/// `bench depth-study --from-json` does): the summaries follow the code, the measurements stay.
pub fn resummarise(mut report: DepthStudyReport) -> DepthStudyReport {
    let (depths, trends) = summary::summarise_depths(&report.models, &report.settings.depths);
    report.depths = depths;
    report.trends = trends;
    report
}

pub(crate) fn f(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "–".into(),
    }
}

fn q(x: &Quartiles) -> String {
    format!("{} [{}, {}]", f(x.median, 3), f(x.q1, 3), f(x.q3, 3))
}

/// One line per model as its attacks finish: accuracy and the medians of the minimal norms
/// (censored inputs counting as +∞, as in the summary; "–" when more than half are censored).
pub fn model_line(r: &ModelRobustness) -> String {
    use summary::{model_median_norm, norm_fisher, norm_pgd, norm_random};
    let med = |g: fn(&InputRobustness) -> f64| Some(model_median_norm(r, g));
    format!(
        "N={} seed {}: {} ({:.1} s), test accuracy {:.4} served / {:.4} mean-field; median minimal L2: \
         fisher {}, pgd {}, random {} over {} inputs ({:.1} s)",
        r.depth,
        r.seed,
        r.model_source.name(),
        r.train_seconds,
        r.test_accuracy,
        r.test_accuracy_mean_field,
        f(med(norm_fisher), 3),
        f(med(norm_pgd), 3),
        f(med(norm_random), 3),
        r.inputs.len(),
        r.attack_seconds,
    )
}

/// The RG diagnostics table (first seed; Markdown).
pub fn rg_table(rows: &[DepthStudyRow]) -> String {
    let mut t = String::from(
        "Fisher columns: median [quartiles] of the top input-Fisher eigenvalue; |λ(T)|: median over inputs of the \
         largest modulus (labelling-dependent), (#inputs with any |λ| > 1); cc: median largest canonical \
         correlation (#inputs > 1: rounding, expected 0)\n\n\
         | N | seed | inputs | F direct | F mean-field | F bound | ratio direct / mf | violations | \
         |λ(T)| per k | cc per k | F̃ (P) / (C) | seconds |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let per_k = |g: &dyn Fn(&StudyLayer) -> String| -> String {
            if r.layers.is_empty() {
                "–".into()
            } else {
                r.layers
                    .iter()
                    .map(|l| format!("T{}: {}", l.k, g(l)))
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        };
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} / {} | {:.1} |\n",
            r.depth,
            r.seed,
            r.inputs,
            q(&r.fisher_direct),
            q(&r.fisher_mean_field),
            q(&r.fisher_bound),
            f(r.ratio_direct_median, 3),
            f(r.ratio_mean_field_median, 3),
            r.bound_violations,
            per_k(&|l| format!(
                "{} ({})",
                f(l.max_eigenvalue_modulus_median, 3),
                l.inputs_with_relevant
            )),
            per_k(&|l| format!(
                "{} ({})",
                f(l.max_canonical_correlation_median, 3),
                l.canonical_over_one
            )),
            f(r.output_fisher_p_median, 4),
            f(r.output_fisher_c_median, 4),
            r.analyze_seconds,
        ));
    }
    t
}
