//! `rgshield bench depth-study`: the depth study of SPEC §10 (issue 5 item 3).
//!
//! For each depth N at fixed hidden width: train (or reuse) the model `[n_in, width × (N−1),
//! n_classes]` with the method's documented defaults, run the RG analysis ([`super::analyze`]) and
//! the adversarial attack ([`super::attack`]) on the same test inputs, and collect one
//! [`DepthStudyRow`]: accuracies, the top input-Fisher eigenvalue in its stochastic (direct) and
//! mean-field readings beside the first-layer bound (SPEC §6: the stochastic reading cannot grow
//! with depth), the stability spectra of §5 per layer, attack success at a fixed ε, and the top
//! output-Fisher eigenvalue of §7 in readings (P) and (C). No verdict is drawn here; the numbers
//! are what SPEC §10 asks to measure.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::analyze::{
    analyze, AnalysisReport, AnalyzeParams, InputAnalysis, LayerReport, CC_TOLERANCE,
};
use super::attack::{attack, AttackParams, Method as AttackMethod, MethodRate};
use crate::data::Dataset;
use crate::error::{check_at_least, check_positive, Error, Result};
use crate::model::io::{self as model_io, ModelMeta};
use crate::model::{check_depths, stack_widths};
use crate::params::{Params, Valid};
use crate::progress::Progress;
use crate::report::stats::{median, quartiles, Quartiles};
use crate::rg::basis::{BasisChoice, DEFAULT_BASIS, DEFAULT_PILOT_SAMPLES};
use crate::rg::OutputReading;
use crate::sample::{OutputMode, Predictor};
use crate::train::{TrainParams, Trainer};
use crate::DeepRbm;

/// Settings of the depth study (SPEC §10).
#[derive(Clone, Debug, Serialize)]
pub struct DepthStudyParams {
    /// Depths N (number of RBMs), each ≥ 1.
    pub depths: Vec<usize>,
    /// Hidden width of every hidden layer.
    pub width: usize,
    /// Models are saved to (and reused from) `models_dir/dN`.
    pub models_dir: PathBuf,
    /// Training parameters of every depth (the CLI uses `TrainParams::for_method(method, seed)`;
    /// tests shorten it).
    pub train: TrainParams,
    /// Test-split inputs analysed and attacked.
    pub inputs: Vec<usize>,
    /// Ancestral samples S of the analysis and of the attack's Fisher estimate.
    pub samples: usize,
    /// Hidden-layer operator basis (the output layer gets the complete basis).
    pub basis: BasisChoice,
    /// Jackknife blocks of the analysis (error bars of the Fisher estimates).
    pub blocks: usize,
    /// Pilot samples (in total) for the frozen top pairs.
    pub pilot_samples: usize,
    /// L2 budget ε at which attack success is measured.
    pub attack_epsilon: f64,
    /// Samples S of the served output (test accuracy and attack judgement).
    pub serve_samples: usize,
    /// Seed of the analysis, the attack and the served output.
    pub seed: u64,
}

impl Default for DepthStudyParams {
    /// Depths 1…6, width 64, the hybrid's training defaults (seed 1), inputs 0..50, S = 3000,
    /// [`DEFAULT_BASIS`], 4 jackknife blocks, ε = 1, served S = 64, models in
    /// `runs/depth-study`.
    fn default() -> Self {
        DepthStudyParams {
            depths: (1..=6).collect(),
            width: 64,
            models_dir: PathBuf::from("runs/depth-study"),
            train: TrainParams::default(),
            inputs: (0..50).collect(),
            samples: 3000,
            basis: DEFAULT_BASIS,
            blocks: 4,
            pilot_samples: DEFAULT_PILOT_SAMPLES,
            attack_epsilon: 1.0,
            serve_samples: 64,
            seed: 0,
        }
    }
}

impl Params for DepthStudyParams {
    /// Check every value's domain before any work starts.
    fn check(self) -> Result<Valid<Self>> {
        check_depths("depth study", &self.depths)?;
        if self.width == 0 {
            return Err(Error::invalid("depth study: width 0"));
        }
        if self.inputs.is_empty() {
            return Err(Error::invalid("depth study: no inputs selected"));
        }
        check_at_least("depth study: samples", self.samples, 2)?;
        check_at_least("depth study: blocks", self.blocks, 1)?;
        check_at_least("depth study: served samples", self.serve_samples, 1)?;
        check_positive("depth study: attack ε", self.attack_epsilon)?;
        self.train.clone().check()?;
        self.analyze_params().check()?;
        self.attack_params().check()?;
        Ok(Valid::checked(self))
    }
}

impl DepthStudyParams {
    /// Widths `[n_in, width × (N−1), n_classes]` of depth N.
    pub fn widths(&self, data: &Dataset, depth: usize) -> Vec<usize> {
        stack_widths(data.n_features(), self.width, depth, data.n_classes())
    }

    /// The analysis every depth runs.
    pub fn analyze_params(&self) -> AnalyzeParams {
        AnalyzeParams {
            inputs: self.inputs.clone(),
            samples: self.samples,
            seed: self.seed,
            basis: self.basis,
            blocks: self.blocks,
            pilot_samples: self.pilot_samples,
        }
    }

    /// The attack every depth runs: the Fisher directions and the baselines at one ε.
    pub fn attack_params(&self) -> AttackParams {
        AttackParams {
            inputs: self.inputs.clone(),
            epsilons: vec![self.attack_epsilon],
            pixels: Vec::new(),
            samples: self.samples,
            basis: self.basis,
            blocks: 1,
            pilot_samples: self.pilot_samples,
            serve_samples: self.serve_samples,
            seed: self.seed,
            reference_epsilon: self.attack_epsilon,
            ..AttackParams::default()
        }
    }

    /// Model directory of depth N.
    pub fn model_dir(&self, depth: usize) -> PathBuf {
        self.models_dir.join(format!("d{depth}"))
    }
}

/// Where a row's model came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

/// RG diagnostics of one stability matrix `T^{(k)}` over the inputs (SPEC §5).
#[derive(Clone, Debug, Serialize)]
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

/// One depth of the study (SPEC §10).
#[derive(Clone, Debug, Serialize)]
pub struct DepthStudyRow {
    /// Depth N.
    pub depth: usize,
    /// Widths of the model.
    pub widths: Vec<usize>,
    /// The model directory (`models_dir/dN`).
    pub model_dir: String,
    /// Trained here or reused.
    pub model_source: ModelSource,
    /// Training method recorded in `model.json` (`None` when the file does not say).
    pub training_method: Option<String>,
    /// Weights fingerprint (as in `model.json`).
    pub fingerprint: String,
    /// Training time (0 for a reused model).
    pub train_seconds: f64,
    /// Analysis time.
    pub analyze_seconds: f64,
    /// Attack time.
    pub attack_seconds: f64,
    /// Test accuracy of the served output (S = `serve_samples`, seed 0) and of the mean field.
    pub test_accuracy: f64,
    /// Test accuracy of the mean-field output.
    pub test_accuracy_mean_field: f64,
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
    /// Inputs served correctly at ε = 0 (the attacked ones).
    pub attacked: usize,
    /// The ε of the success columns.
    pub attack_epsilon: f64,
    /// Success rates at `attack_epsilon`.
    pub success_fisher: Option<f64>,
    /// Success of the mean-field Fisher direction at ε.
    pub success_fisher_mf: Option<f64>,
    /// Success of PGD at ε.
    pub success_pgd: Option<f64>,
    /// Success of a random direction at ε.
    pub success_random: Option<f64>,
    /// Median over classes of the top output-Fisher eigenvalue (direct estimate) at the one-hot
    /// output, reading (P) (SPEC §7).
    pub output_fisher_p_median: Option<f64>,
    /// Median top eigenvalue of `P F̃ P`, reading (C), at the smoothed one-hot
    /// ([`OutputReading::class_anchor`]).
    pub output_fisher_c_median: Option<f64>,
}

/// Everything `depth_study.json` holds.
#[derive(Clone, Debug, Serialize)]
pub struct DepthStudyReport {
    /// Data set name.
    pub dataset: String,
    /// The study's settings.
    pub settings: Valid<DepthStudyParams>,
    /// One row per depth.
    pub rows: Vec<DepthStudyRow>,
    /// Wall-clock time of the study.
    pub seconds: f64,
}

fn training_method(meta: &ModelMeta) -> Option<String> {
    meta.training
        .as_ref()
        .and_then(|t| t.get("method"))
        .and_then(|m| m.as_str())
        .map(str::to_string)
}

/// Load `dir`'s model if its `model.json` exists: reuse it when its widths and data set match,
/// refuse (an error that says why and what to do) when they do not. `Ok(None)`: no model there.
pub fn reusable_model(
    dir: &Path,
    widths: &[usize],
    data: &Dataset,
) -> Result<Option<(DeepRbm, ModelMeta)>> {
    if !dir.join(model_io::META_FILE).exists() {
        return Ok(None);
    }
    let (model, meta) = model_io::load(dir)?;
    if model.widths() != widths {
        return Err(Error::model(
            &dir.join(model_io::META_FILE),
            format!(
                "existing model has widths {:?} but the depth study needs {widths:?} here: \
                 refusing to overwrite it — remove {} or choose another --models-dir",
                model.widths(),
                dir.display()
            ),
        ));
    }
    if let Some(d) = &meta.dataset {
        if d.fingerprint != data.fingerprint {
            return Err(Error::model(
                &dir.join(model_io::META_FILE),
                format!(
                    "existing model was trained on data set '{}' (fingerprint {}), the study runs on '{}' \
                     (fingerprint {}): refusing to reuse it — remove {} or choose another --models-dir",
                    d.name,
                    d.fingerprint,
                    data.name,
                    data.fingerprint,
                    dir.display()
                ),
            ));
        }
    }
    Ok(Some((model, meta)))
}

fn rate_at(rates: &[MethodRate], m: AttackMethod, eps: f64) -> Option<f64> {
    rates
        .iter()
        .find(|r| r.method == m && (r.budget - eps).abs() < 1e-12)
        .and_then(|r| r.rate)
}

/// Summarise the analysis and the attack of one depth into its row's measurements.
fn summarise(
    an: &AnalysisReport,
) -> (
    Quartiles,
    Quartiles,
    Quartiles,
    Option<f64>,
    Option<f64>,
    usize,
    Vec<StudyLayer>,
) {
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
    (
        fisher_direct,
        fisher_mean_field,
        fisher_bound,
        ratio_direct,
        ratio_mf,
        violations,
        layers,
    )
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

/// Run the depth study (SPEC §10). For each depth: reuse `models_dir/dN` when its `model.json`
/// exists with matching widths and data set (refuse otherwise), else train with `cfg.train` and
/// save there; then analyse and attack `cfg.inputs`. `out`, when given, receives
/// `dN/analysis.json` and `dN/attack.json`. `on_row` sees each row as it finishes.
pub fn depth_study(
    data: &Dataset,
    params: &Valid<DepthStudyParams>,
    out: Option<&Path>,
    progress: &dyn Progress,
    mut on_row: impl FnMut(&DepthStudyRow),
) -> Result<DepthStudyReport> {
    let t0 = Instant::now();
    let cfg = params;
    // Checked with the study's parameters.
    let train = Valid::checked(cfg.train.clone());
    let acfg = Valid::checked(cfg.analyze_params());
    let tcfg = Valid::checked(cfg.attack_params());
    data.check_test_inputs(&cfg.inputs, "depth study")?;
    // Refuse mismatched models before any long work.
    for &n in &cfg.depths {
        reusable_model(&cfg.model_dir(n), &cfg.widths(data, n), data)?;
    }
    let mut rows = Vec::new();
    for &n in &cfg.depths {
        let widths = cfg.widths(data, n);
        let dir = cfg.model_dir(n);
        let t = Instant::now();
        let (model, meta, source) = match reusable_model(&dir, &widths, data)? {
            Some((m, meta)) => (m, meta, ModelSource::Reused),
            None => {
                let (model, _) = Trainer::new(data, &train)?
                    .with_progress(progress)
                    .train(&widths)?;
                let mut meta = ModelMeta::new(&model, data.class_names.clone());
                meta.dataset = Some(data.info());
                meta.training = Some(serde_json::to_value(&cfg.train).map_err(|e| {
                    Error::invalid(format!("cannot serialise the training config: {e}"))
                })?);
                model_io::save(&dir, &model, &meta)?;
                (model, meta, ModelSource::Trained)
            }
        };
        let train_seconds = match source {
            ModelSource::Trained => t.elapsed().as_secs_f64(),
            ModelSource::Reused => 0.0,
        };
        let served = Predictor::new(
            &model,
            OutputMode::Served {
                samples: cfg.serve_samples,
                seed: 0,
            },
        );
        let test_accuracy = served.accuracy(&data.test);
        let test_accuracy_mean_field =
            Predictor::new(&model, OutputMode::MeanField).accuracy(&data.test);

        let an = analyze(&model, data, &acfg, progress)?;
        let at = attack(&model, data, &tcfg, progress)?;

        if let Some(out) = out {
            let d = out.join(format!("d{n}"));
            std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
            crate::util::write_json(&d.join("analysis.json"), &an)?;
            crate::util::write_json(&d.join("attack.json"), &at)?;
        }

        let eps = cfg.attack_epsilon;
        let (fd, fmf, fb, rd, rmf, violations, layers) = summarise(&an);
        let row = DepthStudyRow {
            depth: n,
            widths,
            model_dir: dir.display().to_string(),
            model_source: source,
            training_method: training_method(&meta),
            fingerprint: meta.weights_fingerprint.clone(),
            train_seconds,
            analyze_seconds: an.seconds,
            attack_seconds: at.seconds,
            test_accuracy,
            test_accuracy_mean_field,
            inputs: an.inputs.len(),
            fisher_direct: fd,
            fisher_mean_field: fmf,
            fisher_bound: fb,
            ratio_direct_median: rd,
            ratio_mean_field_median: rmf,
            bound_violations: violations,
            layers,
            attacked: at.n_correct,
            attack_epsilon: eps,
            success_fisher: rate_at(&at.results, AttackMethod::Fisher, eps),
            success_fisher_mf: rate_at(&at.results, AttackMethod::FisherMf, eps),
            success_pgd: rate_at(&at.results, AttackMethod::Pgd, eps),
            success_random: rate_at(&at.results, AttackMethod::Random, eps),
            output_fisher_p_median: output_median(&an, OutputReading::PlugIn),
            output_fisher_c_median: output_median(&an, OutputReading::Mixture),
        };
        on_row(&row);
        rows.push(row);
    }
    Ok(DepthStudyReport {
        dataset: data.name.clone(),
        settings: params.clone(),
        rows,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn f(x: Option<f64>, digits: usize) -> String {
    match x {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "–".into(),
    }
}

fn q(x: &Quartiles) -> String {
    format!("{} [{}, {}]", f(x.median, 3), f(x.q1, 3), f(x.q3, 3))
}

/// Header of the depth study's Markdown table.
pub fn table_header(data: &Dataset, cfg: &DepthStudyParams) -> String {
    format!(
        "depth study on {} ({} inputs, S = {}, ε = {}, width {}, method {:?}, seed {})\n\
         Fisher columns: median [quartiles] of the top input-Fisher eigenvalue; |λ(T)|: median over inputs of the \
         largest modulus (labelling-dependent), (#inputs with any |λ| > 1); cc: median largest canonical \
         correlation (#inputs > 1: rounding, expected 0)\n\n\
         | N | model | acc served / mf | F direct | F mean-field | F bound | ratio direct / mf | \
         |λ(T)| per k | cc per k | attacked | fisher / fisher-mf / pgd / random at ε | F̃ (P) / (C) | seconds train / analyze / attack |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|",
        data.name,
        cfg.inputs.len(),
        cfg.samples,
        cfg.attack_epsilon,
        cfg.width,
        cfg.train.method,
        cfg.train.seed
    )
}

/// One Markdown row of the depth study.
pub fn table_row(r: &DepthStudyRow) -> String {
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
    format!(
        "| {} | {} | {:.4} / {:.4} | {} | {} | {} | {} / {} | {} | {} | {} | {} / {} / {} / {} | {} / {} | {:.1} / {:.1} / {:.1} |",
        r.depth,
        r.model_source.name(),
        r.test_accuracy,
        r.test_accuracy_mean_field,
        q(&r.fisher_direct),
        q(&r.fisher_mean_field),
        q(&r.fisher_bound),
        f(r.ratio_direct_median, 3),
        f(r.ratio_mean_field_median, 3),
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
        r.attacked,
        f(r.success_fisher, 3),
        f(r.success_fisher_mf, 3),
        f(r.success_pgd, 3),
        f(r.success_random, 3),
        f(r.output_fisher_p_median, 4),
        f(r.output_fisher_c_median, 4),
        r.train_seconds,
        r.analyze_seconds,
        r.attack_seconds,
    )
}

/// Draw the four plots against N into `dir` (SPEC §10); returns the files written.
pub fn write_plots(r: &DepthStudyReport, dir: &Path) -> Result<Vec<PathBuf>> {
    use crate::report::{line_plot, LinePlot, Point, Series};
    let mut files = Vec::new();
    let pts = |g: &dyn Fn(&DepthStudyRow) -> Option<f64>| -> Vec<Point> {
        r.rows
            .iter()
            .filter_map(|row| g(row).map(|y| Point::new(row.depth as f64, y)))
            .collect()
    };
    // Medians over inputs with their interquartile range.
    let quartile_pts = |g: &dyn Fn(&DepthStudyRow) -> &Quartiles| -> Vec<Point> {
        r.rows
            .iter()
            .filter_map(|row| Point::quartiles(row.depth as f64, g(row)))
            .collect()
    };
    // Success rates with ± one binomial standard error over the attacked inputs.
    let rate_pts = |g: &dyn Fn(&DepthStudyRow) -> Option<f64>| -> Vec<Point> {
        r.rows
            .iter()
            .filter_map(|row| {
                let p = g(row)?;
                let n = row.attacked as f64;
                Some(Point::plus_minus(
                    row.depth as f64,
                    p,
                    Some((p * (1.0 - p) / n).sqrt()),
                ))
            })
            .collect()
    };
    let mut plot = |name: &str, plot: LinePlot<'_>, series: Vec<Series>| {
        let p = dir.join(name);
        line_plot(&p, &plot, &series)?;
        files.push(p);
        Ok::<(), Error>(())
    };
    const DEPTH: &str = "depth N (number of RBMs in the stack)";
    plot(
        "depth_input_fisher.png",
        LinePlot {
            title: "Top input-Fisher eigenvalue (median over inputs)",
            x_label: DEPTH,
            y_label: "top eigenvalue (nats per squared input unit, log scale)",
            log_y: true,
            bars: Some("error bars: interquartile range over the analysed inputs"),
        },
        vec![
            Series::with_points("stochastic (direct)", quartile_pts(&|x| &x.fisher_direct)),
            Series::with_points("mean-field", quartile_pts(&|x| &x.fisher_mean_field)),
            Series::with_points("first-layer bound", quartile_pts(&|x| &x.fisher_bound)),
        ],
    )?;
    let eps = r.settings.attack_epsilon;
    plot(
        "depth_attack_success.png",
        LinePlot {
            title: &format!("Attack success at L2 norm ε = {eps}"),
            x_label: DEPTH,
            y_label: "success rate (fraction of attacked inputs)",
            log_y: false,
            bars: Some("error bars: ± 1 binomial standard error over the attacked inputs"),
        },
        vec![
            Series::with_points("fisher", rate_pts(&|x| x.success_fisher)),
            Series::with_points("pgd", rate_pts(&|x| x.success_pgd)),
            Series::with_points("random", rate_pts(&|x| x.success_random)),
        ],
    )?;
    // Per-step curves would not share an x axis across depths: plot the largest over k of the
    // per-step medians, one point per depth ≥ 2 (a maximum of medians has no error bar).
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
            Series::with_points(
                "|λ(T)| (labelling-dependent)",
                pts(&|x| max_k(x, &|l| l.max_eigenvalue_modulus_median)),
            ),
            Series::with_points(
                "canonical correlation",
                pts(&|x| max_k(x, &|l| l.max_canonical_correlation_median)),
            ),
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
            Series::with_points("reading (P)", pts(&|x| x.output_fisher_p_median)),
            Series::with_points("reading (C)", pts(&|x| x.output_fisher_c_median)),
        ],
    )?;
    Ok(files)
}
