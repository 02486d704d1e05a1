//! `rgshield analyze`: the RG analysis of a trained model over a set of inputs (SPEC §4–7).
//!
//! Per input: the stability matrices `T^{(k)}` of the classification flow with their spectra
//! (eigenvalues flagged labelling-dependent, singular values, canonical correlations), `cond(C_kk)`,
//! and the input Fisher information in its readings (chain, direct, mean-field) beside the
//! first-layer bound. Per class: the output Fisher information of the generation network in
//! readings (P), at the one-hot output of that class, and (C), at its smoothed one-hot
//! ([`OutputReading::class_anchor`]: the one-hot value of (C) is not finite in practice), and the
//! poison direction (cached per class, SPEC §8 "cache it per predicted class"). Where a number cannot be trusted (C_kk
//! near-singular, too few samples for the operator count) a warning stands beside it.

mod plots;

pub use plots::write_plots;

use rayon::prelude::*;
use serde::Serialize;

use crate::data::Dataset;
use crate::error::{check_at_least, Error, Result};
use crate::params::{Params, Valid};
use crate::progress::Progress;
use crate::report::stats::median;
use crate::rg::basis::{
    classification_bases, generation_bases, BasisChoice, BasisPlan, DEFAULT_BASIS,
    DEFAULT_PILOT_SAMPLES,
};
use crate::rg::couplings::{coupling_flow, CouplingFit, PseudoLikelihoodParams};
use crate::rg::fisher::{input_fisher, output_fisher, top_eigen};
use crate::rg::{FlowParams, OperatorBasis, OutputReading, Spectra, StabilityStep};
use crate::sample::{OutputMode, Predictor};
use crate::DeepRbm;

/// Settings of one analysis.
#[derive(Clone, Debug, Serialize)]
pub struct AnalyzeParams {
    /// Test-split indices to analyse.
    pub inputs: Vec<usize>,
    /// Ancestral samples S per input (and per class on the generation side).
    pub samples: usize,
    /// Seed of the samplers (and of the pilot samples).
    pub seed: u64,
    /// Hidden-layer operator basis.
    pub basis: BasisChoice,
    /// Jackknife blocks for error bars.
    pub blocks: usize,
    /// Pilot samples (in total) used to choose frozen top pairs.
    pub pilot_samples: usize,
}

impl Default for AnalyzeParams {
    /// Test inputs 0..20, S = 20 000, seed 0, [`DEFAULT_BASIS`], 20 jackknife blocks,
    /// [`DEFAULT_PILOT_SAMPLES`].
    fn default() -> Self {
        AnalyzeParams {
            inputs: (0..20).collect(),
            samples: 20_000,
            seed: 0,
            basis: DEFAULT_BASIS,
            blocks: 20,
            pilot_samples: DEFAULT_PILOT_SAMPLES,
        }
    }
}

impl AnalyzeParams {
    /// How the frozen classification bases are chosen.
    pub fn basis_plan(&self) -> BasisPlan {
        BasisPlan {
            choice: self.basis,
            pilot_samples: self.pilot_samples,
            seed: self.seed,
        }
    }
}

impl Params for AnalyzeParams {
    fn check(self) -> Result<Valid<Self>> {
        if self.inputs.is_empty() {
            return Err(Error::invalid("analyze: no inputs selected"));
        }
        check_at_least("analyze: samples", self.samples, 2)?;
        check_at_least("analyze: blocks", self.blocks, 1)?;
        if self.blocks > self.samples {
            return Err(Error::invalid(format!(
                "analyze: {} jackknife blocks for {} samples (at most one block per sample)",
                self.blocks, self.samples
            )));
        }
        Ok(Valid::checked(self))
    }
}

/// Spectra and conditioning of one stability matrix (top values only).
#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    /// The paper's index k of `T^{(k)}` (classification) or `T̃^{(k)}` (generation).
    pub k: usize,
    /// `T` is `rows × cols` (operators of the produced layer × of the conditioning layer).
    pub rows: usize,
    /// Columns of T (operators of the conditioning layer).
    pub cols: usize,
    /// `cond(C_tt)` of the inverted covariance, before regularisation.
    pub cond: f64,
    /// Directions cut by the pseudo-inverse.
    pub cut: usize,
    /// Largest |eigenvalues| of T when square — **depends on the labelling of hidden units**.
    pub eigenvalue_moduli: Option<Vec<f64>>,
    /// Count of |λ(T)| > 1 (the paper's relevant directions; labelling-dependent).
    pub n_relevant: Option<usize>,
    /// Always true: a reminder that eig(T) depends on the labelling of hidden units.
    pub labelling_dependent: bool,
    /// Largest singular values of T (labelling-invariant).
    pub singular_values: Vec<f64>,
    /// Largest canonical correlations (basis-invariant, ≤ 1).
    pub canonical_correlations: Vec<f64>,
}

const TOP: usize = 10;

fn top(v: &[f64]) -> Vec<f64> {
    v.iter().take(TOP).copied().collect()
}

fn layer_report(step: &StabilityStep) -> LayerReport {
    let s: &Spectra = &step.spectra;
    LayerReport {
        k: step.k,
        rows: step.stability.t.nrows(),
        cols: step.stability.t.ncols(),
        cond: step.stability.cond,
        cut: step.stability.cut,
        eigenvalue_moduli: s
            .eigenvalues
            .as_ref()
            .map(|e| e.iter().take(TOP).map(|(re, im)| re.hypot(*im)).collect()),
        n_relevant: s.n_relevant,
        labelling_dependent: s.labelling_dependent,
        singular_values: top(&s.singular_values),
        canonical_correlations: s
            .canonical_correlations
            .as_deref()
            .map(top)
            .unwrap_or_default(),
    }
}

/// Input-Fisher summary (SPEC §6): top eigenvalues in each reading and their ratio to the bound.
#[derive(Clone, Debug, Serialize)]
pub struct InputFisherSummary {
    /// Top eigenvalue of the chain estimate `J_xᵀ C_NN J_x`.
    pub chain_top: f64,
    /// Its jackknife standard error.
    pub chain_top_std_err: Option<f64>,
    /// Top eigenvalue of the direct estimate.
    pub direct_top: f64,
    /// Its jackknife standard error.
    pub direct_top_std_err: Option<f64>,
    /// `λ_max(W_1ᵀ diag(μ_1(1−μ_1)) W_1)`: no stochastic reading can exceed it.
    pub bound_top: f64,
    /// Chain / bound.
    pub ratio_chain: f64,
    /// Direct / bound (≤ 1 up to sampling error: data processing).
    pub ratio_direct: f64,
    /// Mean-field reading: Fisher information of `Π Bern(μ_N(x))` — not bounded by the bound.
    pub mean_field_top: f64,
    /// Mean field / bound (not bounded by 1).
    pub ratio_mean_field: f64,
    /// Top eigenvector of the direct estimate (the most sensitive input direction).
    pub top_eigenvector: Vec<f64>,
}

/// The couplings of one layer fitted by maximum pseudo-likelihood (SPEC §4, the coupling flow).
///
/// **Qualitative.** Against the exact couplings of enumerated stacks the pair couplings' RMS error
/// is 0.13 at S = 3000 where every unit varies given x, and 0.7 where some units are near-frozen
/// (`rg::couplings` module docs, `tests/couplings.rs`) — the usual case in a trained network, and
/// what made layer-1 pair couplings (exactly 0) come out with RMS 0.5–0.65 at S = 3000. The RMS
/// values include the sampling noise; `*_noise_rms` give its size for the same couplings (an RMS
/// near its noise level is consistent with zero couplings).
#[derive(Clone, Debug, Serialize)]
pub struct CouplingSummary {
    /// Layer k = 1…N.
    pub k: usize,
    /// RMS of the determined order-1 couplings (fields).
    pub field_rms: f64,
    /// `sqrt(mean se²)` of the same fields: the RMS that sampling noise alone would give.
    pub field_noise_rms: f64,
    /// RMS of the determined higher-order couplings in the basis (0 when there are none).
    pub higher_rms: f64,
    /// `sqrt(mean se²)` of the same higher-order couplings: their RMS if every one were 0.
    pub higher_noise_rms: f64,
    /// Largest |coupling| among the determined ones.
    pub max_abs: f64,
    /// Couplings left out because their standard error exceeds [`COUPLING_SE_MAX`].
    pub undetermined: usize,
    /// Whether the pseudo-likelihood fit converged.
    pub converged: bool,
}

/// Analysis of one input.
#[derive(Clone, Debug, Serialize)]
pub struct InputAnalysis {
    /// Index in the test split.
    pub index: usize,
    /// True label.
    pub label: u32,
    /// Served class.
    pub predicted: usize,
    /// Per stability matrix `T^{(k)}`, k = 2…N.
    pub layers: Vec<LayerReport>,
    /// The coupling flow: couplings of every layer in its basis (order 2 on the output layer),
    /// fitted from min(S, 5000) samples. Qualitative (see [`CouplingSummary`]).
    pub couplings: Vec<CouplingSummary>,
    /// The input Fisher information in its readings.
    pub fisher: InputFisherSummary,
    /// What cannot be trusted in this input's numbers.
    pub warnings: Vec<String>,
}

/// Output-Fisher summary of one class in one reading (SPEC §7).
#[derive(Clone, Debug, Serialize)]
pub struct OutputFisherSummary {
    /// The reading of `∂/∂y` (SPEC §7).
    pub reading: OutputReading,
    /// The output y at which `F̃_y` was evaluated: [`OutputReading::class_anchor`] — the one-hot
    /// `e_c` for (P), the smoothed `(1 − η) e_c + η/K` for (C) (where the one-hot value is not
    /// finite in practice, [`crate::rg::MIXTURE_SMOOTHING`]).
    pub anchor: Vec<f32>,
    /// Top eigenvalue of the chain estimate of `F̃_y` (of `P F̃_y P` under (C)).
    pub chain_top: f64,
    /// Top eigenvalue of the direct estimate of `F̃_y` (of `P F̃_y P` under (C)).
    pub direct_top: f64,
    /// Ratio of the chain's top eigenvalue to the reading's data-processing bound: (P)
    /// `λ_max(W_N diag(σ'(W_Nᵀy + b_N)) W_Nᵀ)`, (C) `λ_max(P diag(1/y) P)` (≤ 1 in truth).
    pub ratio_chain_to_bound: Option<f64>,
    /// Top eigenvalue of `P F̃ P` and the poison direction u (Σu = 0), from the direct estimate.
    pub poison_value: f64,
    /// The poison direction u (top eigenvector of `P F̃ P`, direct estimate).
    pub poison_direction: Vec<f64>,
    /// The same from the chain estimate.
    pub poison_direction_chain: Vec<f64>,
    /// Per generation stability matrix `T̃^{(k)}`.
    pub layers: Vec<LayerReport>,
    /// What cannot be trusted in this class's numbers.
    pub warnings: Vec<String>,
}

/// Analysis of one class: its generation flow at the class anchor of each reading
/// ([`OutputReading::class_anchor`]), and summaries of its inputs.
#[derive(Clone, Debug, Serialize)]
pub struct ClassAnalysis {
    /// Class index.
    pub class: usize,
    /// Class name.
    pub name: String,
    /// Inputs of this class among those analysed.
    pub n_inputs: usize,
    /// Median ratio of the input-Fisher top eigenvalue (direct) to the first-layer bound.
    pub median_ratio_direct: Option<f64>,
    /// Median mean-field ratio over the analysed inputs of this class.
    pub median_ratio_mean_field: Option<f64>,
    /// The output Fisher information at the class anchor, per reading.
    pub output: Vec<OutputFisherSummary>,
}

/// Everything `analyze` writes to `analysis.json`.
#[derive(Clone, Debug, Serialize)]
pub struct AnalysisReport {
    /// Widths of the analysed model.
    pub widths: Vec<usize>,
    /// Data set name.
    pub dataset: String,
    /// The analysis settings.
    pub settings: Valid<AnalyzeParams>,
    /// Operator counts per classification layer 1…N and per generation layer 0…N−1.
    pub classification_operators: Vec<usize>,
    /// Operators per generation layer 0…N−1.
    pub generation_operators: Vec<usize>,
    /// Per input.
    pub inputs: Vec<InputAnalysis>,
    /// Per class.
    pub classes: Vec<ClassAnalysis>,
    /// Wall-clock time of the analysis.
    pub seconds: f64,
}

/// Samples used for the pseudo-likelihood coupling fits.
pub const COUPLING_SAMPLES: usize = 5_000;
/// Ridge of the coupling fits (on the mean pseudo-log-likelihood; the fits also carry the default
/// Gaussian prior of [`PseudoLikelihoodParams`]).
pub const COUPLING_RIDGE: f64 = 1e-6;
/// Couplings whose standard error exceeds this are "undetermined" (e.g. units that never flip
/// given x: their couplings are unbounded, RG-NOTES §4 item 5) and left out of the RMS summaries.
pub const COUPLING_SE_MAX: f64 = 0.5;

fn coupling_summary(k: usize, fit: &CouplingFit, basis: &OperatorBasis) -> CouplingSummary {
    let (mut f, mut nf, mut h, mut nh) = (0.0, 0usize, 0.0, 0usize);
    let (mut fse, mut hse) = (0.0, 0.0);
    let mut undetermined = 0;
    let mut max_abs = 0.0f64;
    for ((v, se), m) in fit
        .couplings
        .iter()
        .zip(&fit.std_err)
        .zip(basis.monomials())
    {
        if !(se.is_finite() && *se <= COUPLING_SE_MAX) {
            undetermined += 1;
            continue;
        }
        max_abs = max_abs.max(v.abs());
        if m.len() == 1 {
            f += v * v;
            fse += se * se;
            nf += 1;
        } else {
            h += v * v;
            hse += se * se;
            nh += 1;
        }
    }
    let rms = |s: f64, n: usize| if n == 0 { 0.0 } else { (s / n as f64).sqrt() };
    CouplingSummary {
        k,
        field_rms: rms(f, nf),
        field_noise_rms: rms(fse, nf),
        higher_rms: rms(h, nh),
        higher_noise_rms: rms(hse, nh),
        max_abs,
        undetermined,
        converged: fit.converged,
    }
}

/// Conditioning beyond which a solve is flagged as untrustworthy.
pub const COND_WARN: f64 = 1e10;
/// Canonical correlations are ≤ 1 for any joint distribution, and the estimates are computed from
/// a joint covariance estimate that is positive semi-definite by construction
/// ([`crate::rg::FlowCorrelators::whitening`]); values above `1 + this` could only come from
/// rounding in a near-singular whitening, and are flagged.
pub const CC_TOLERANCE: f64 = 1e-6;
/// RG-NOTES A11: S ≥ 10 × operators per layer.
pub const SAMPLES_PER_OPERATOR: usize = 10;

fn warnings_for(layers: &[LayerReport], ops: &[usize], samples: usize) -> Vec<String> {
    let mut w = Vec::new();
    for l in layers {
        if l.cond.is_nan() || l.cond >= COND_WARN {
            w.push(format!(
                "T({}): C near-singular (cond {:.2e}); T and the chain through it are unreliable",
                l.k, l.cond
            ));
        }
        if l.cut > 0 {
            w.push(format!(
                "T({}): {} directions cut by the pseudo-inverse",
                l.k, l.cut
            ));
        }
        if let Some(&cc) = l.canonical_correlations.first() {
            if cc > 1.0 + CC_TOLERANCE {
                w.push(format!(
                    "T({}): largest canonical correlation {cc:.3} > 1 although the joint covariance \
                     estimate of layers {} and {} is positive semi-definite by construction: rounding in \
                     a near-singular whitening; this step's spectra are unreliable",
                    l.k,
                    l.k - 1,
                    l.k
                ));
            }
        }
    }
    if let Some(&m) = ops.iter().max() {
        if samples < SAMPLES_PER_OPERATOR * m {
            w.push(format!(
                "S = {samples} samples for up to {m} operators per layer (< {SAMPLES_PER_OPERATOR}×): correlators are noisy"
            ));
        }
    }
    w
}

/// Run the analysis; `progress` counts the inputs, then the classes.
pub fn analyze(
    model: &DeepRbm,
    data: &Dataset,
    params: &Valid<AnalyzeParams>,
    progress: &dyn Progress,
) -> Result<AnalysisReport> {
    let t0 = std::time::Instant::now();
    let cfg = params;
    data.check_test_inputs(&cfg.inputs, "analyze")?;
    crate::train::check_widths_fit(&model.widths(), data)?;
    let rows: Vec<&[f32]> = cfg.inputs.iter().map(|&i| data.test.row(i)).collect();
    let cbases = classification_bases(model, &rows, &cfg.basis_plan())?;
    let gbases = generation_bases(model, &cbases, data.image_shape)?;
    let c_ops: Vec<usize> = cbases.iter().map(|b| b.len()).collect();
    // The coupling flow uses order 2 on the output layer rather than its complete basis: the same
    // kind of operators on every layer, and a fit that costs little.
    let coupling_bases: Vec<OperatorBasis> = cbases
        .iter()
        .map(|b| match b.kind() {
            crate::rg::BasisKind::Complete => OperatorBasis::order2(b.width()),
            _ => Ok(b.clone()),
        })
        .collect::<Result<_>>()?;
    let g_ops: Vec<usize> = gbases.iter().map(|b| b.len()).collect();
    let fc = FlowParams {
        samples: cfg.samples,
        seed: cfg.seed,
        blocks: cfg.blocks,
        ..FlowParams::default()
    }
    .check()?;
    let predictor = Predictor::new(
        model,
        OutputMode::Served {
            samples: 64,
            seed: 0,
        },
    );
    progress.start("analyze", (cfg.inputs.len() + data.n_classes()) as u64);
    let inputs = cfg
        .inputs
        .par_iter()
        .map(|&i| {
            let x = data.test.row(i);
            let r = input_fisher(model, x, &cbases, &fc)?;
            let layers: Vec<LayerReport> = r.steps.iter().map(layer_report).collect();
            let mf_top = top_eigen(r.mean_field.fisher.as_ref())?.0;
            let warnings = warnings_for(&layers, &c_ops, cfg.samples);
            let fits = coupling_flow(
                model,
                x,
                &coupling_bases,
                cfg.samples.min(COUPLING_SAMPLES),
                cfg.seed,
                &PseudoLikelihoodParams {
                    ridge: COUPLING_RIDGE,
                    ..PseudoLikelihoodParams::default()
                }
                .check()?,
            )?;
            let couplings = fits
                .iter()
                .zip(&coupling_bases)
                .enumerate()
                .map(|(j, (f, b))| coupling_summary(j + 1, f, b))
                .collect();
            progress.inc(1);
            Ok(InputAnalysis {
                index: i,
                label: data.test.y[i],
                predicted: crate::sample::argmax(&predictor.output(x)),
                layers,
                couplings,
                fisher: InputFisherSummary {
                    chain_top: r.chain.top,
                    chain_top_std_err: r.chain.top_std_err,
                    direct_top: r.direct.top,
                    direct_top_std_err: r.direct.top_std_err,
                    bound_top: r.top_bound,
                    ratio_chain: r.ratio_chain,
                    ratio_direct: r.ratio_direct,
                    mean_field_top: mf_top,
                    ratio_mean_field: r.ratio_mean_field,
                    top_eigenvector: r.direct.top_vector.clone(),
                },
                warnings,
            })
        })
        .collect::<Result<Vec<InputAnalysis>>>()?;
    let n_classes = data.n_classes();
    let classes = (0..n_classes)
        .into_par_iter()
        .map(|c| {
            let mut output = Vec::new();
            for reading in [OutputReading::PlugIn, OutputReading::Mixture] {
                let y = reading.class_anchor(c, n_classes);
                let r = output_fisher(model, &y, &gbases, reading, &fc)?;
                let layers: Vec<LayerReport> = r.steps.iter().map(layer_report).collect();
                let warnings = warnings_for(&layers, &g_ops, cfg.samples);
                output.push(OutputFisherSummary {
                    reading,
                    anchor: y,
                    chain_top: r.chain.top,
                    direct_top: r.direct.top,
                    ratio_chain_to_bound: r.ratio_chain,
                    poison_value: r.poison_direct.value,
                    poison_direction: r.poison_direct.direction.clone(),
                    poison_direction_chain: r.poison_chain.direction.clone(),
                    layers,
                    warnings,
                });
            }
            let mine: Vec<&InputAnalysis> =
                inputs.iter().filter(|a| a.label as usize == c).collect();
            progress.inc(1);
            Ok(ClassAnalysis {
                class: c,
                name: data.class_names[c].clone(),
                n_inputs: mine.len(),
                median_ratio_direct: median(
                    &mine
                        .iter()
                        .map(|a| a.fisher.ratio_direct)
                        .collect::<Vec<_>>(),
                ),
                median_ratio_mean_field: median(
                    &mine
                        .iter()
                        .map(|a| a.fisher.ratio_mean_field)
                        .collect::<Vec<_>>(),
                ),
                output,
            })
        })
        .collect::<Result<Vec<ClassAnalysis>>>()?;
    progress.finish();
    Ok(AnalysisReport {
        widths: model.widths(),
        dataset: data.name.clone(),
        settings: params.clone(),
        classification_operators: c_ops,
        generation_operators: g_ops,
        inputs,
        classes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}
