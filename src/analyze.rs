//! `rgshield analyze`: the RG analysis of a trained model over a set of inputs (SPEC §4–7).
//!
//! Per input: the stability matrices `T^{(k)}` of the classification flow with their spectra
//! (eigenvalues flagged labelling-dependent, singular values, canonical correlations), `cond(C_kk)`,
//! and the input Fisher information in its readings (chain, direct, mean-field) beside the
//! first-layer bound. Per class: the output Fisher information of the generation network at the
//! one-hot output of that class, in readings (P) and (C), and the poison direction (cached per
//! class, SPEC §8 "cache it per predicted class"). Where a number cannot be trusted (C_kk
//! near-singular, too few samples for the operator count) a warning stands beside it.

use serde::Serialize;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::rg::couplings::{coupling_flow, CouplingFit, PseudoLikelihoodConfig};
use crate::rg::fisher::{input_fisher, output_fisher, top_eigen};
use crate::rg::stability::sample_classification;
use crate::rg::{FlowConfig, OperatorBasis, OutputReading, Spectra, StabilityStep};
use crate::sample::{OutputMode, Predictor};
use crate::DeepRbm;

/// Operator basis of the hidden layers (the output layer gets the complete basis when it has at
/// most 12 units, which makes the direct Fisher estimator exact, SPEC §6).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum BasisChoice {
    /// `{h_i}`.
    Order1,
    /// `{h_i} ∪ {h_i h_j}` (all pairs).
    Order2,
    /// Order 1 plus the M pairs of largest |covariance|, chosen once per layer from pilot samples
    /// pooled over the analysed inputs, then frozen (so T's of different inputs are comparable).
    TopPairs(usize),
}

impl std::str::FromStr for BasisChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "order1" => Ok(BasisChoice::Order1),
            "order2" => Ok(BasisChoice::Order2),
            _ => match s.strip_prefix("order2:").map(str::parse::<usize>) {
                Some(Ok(m)) if m > 0 => Ok(BasisChoice::TopPairs(m)),
                _ => Err(Error::invalid(format!(
                    "--basis '{s}': expected order1, order2 or order2:M (M > 0 top pairs)"
                ))),
            },
        }
    }
}

/// Settings of one analysis.
#[derive(Clone, Debug, Serialize)]
pub struct AnalyzeConfig {
    /// Test-split indices to analyse.
    pub inputs: Vec<usize>,
    /// Ancestral samples S per input (and per class on the generation side).
    pub samples: usize,
    pub seed: u64,
    pub basis: BasisChoice,
    /// Jackknife blocks for error bars.
    pub blocks: usize,
    /// Pilot samples (in total) used to choose frozen top pairs.
    pub pilot_samples: usize,
}

/// Spectra and conditioning of one stability matrix (top values only).
#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    /// The paper's index k of `T^{(k)}` (classification) or `T̃^{(k)}` (generation).
    pub k: usize,
    /// `T` is `rows × cols` (operators of the produced layer × of the conditioning layer).
    pub rows: usize,
    pub cols: usize,
    /// `cond(C_tt)` of the inverted covariance, before regularisation.
    pub cond: f64,
    /// Directions cut by the pseudo-inverse.
    pub cut: usize,
    /// Largest |eigenvalues| of T when square — **depends on the labelling of hidden units**.
    pub eigenvalue_moduli: Option<Vec<f64>>,
    /// Count of |λ(T)| > 1 (the paper's relevant directions; labelling-dependent).
    pub n_relevant: Option<usize>,
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
    pub chain_top: f64,
    pub chain_top_std_err: Option<f64>,
    pub direct_top: f64,
    pub direct_top_std_err: Option<f64>,
    /// `λ_max(W_1ᵀ diag(μ_1(1−μ_1)) W_1)`: no stochastic reading can exceed it.
    pub bound_top: f64,
    pub ratio_chain: f64,
    pub ratio_direct: f64,
    /// Mean-field reading: Fisher information of `Π Bern(μ_N(x))` — not bounded by the bound.
    pub mean_field_top: f64,
    pub ratio_mean_field: f64,
    /// Top eigenvector of the direct estimate (the most sensitive input direction).
    pub top_eigenvector: Vec<f64>,
}

/// The couplings of one layer fitted by maximum pseudo-likelihood (SPEC §4, the coupling flow).
#[derive(Clone, Debug, Serialize)]
pub struct CouplingSummary {
    /// Layer k = 1…N.
    pub k: usize,
    /// RMS of the determined order-1 couplings (fields).
    pub field_rms: f64,
    /// RMS of the determined higher-order couplings in the basis (0 when there are none).
    pub higher_rms: f64,
    /// Largest |coupling| among the determined ones.
    pub max_abs: f64,
    /// Couplings left out because their standard error exceeds [`COUPLING_SE_MAX`].
    pub undetermined: usize,
    pub converged: bool,
}

/// Analysis of one input.
#[derive(Clone, Debug, Serialize)]
pub struct InputAnalysis {
    /// Index in the test split.
    pub index: usize,
    pub label: u32,
    pub predicted: usize,
    pub layers: Vec<LayerReport>,
    /// The coupling flow: couplings of every layer in its basis (order 2 on the output layer),
    /// fitted from min(S, 5000) samples.
    pub couplings: Vec<CouplingSummary>,
    pub fisher: InputFisherSummary,
    pub warnings: Vec<String>,
}

/// Output-Fisher summary of one class in one reading (SPEC §7).
#[derive(Clone, Debug, Serialize)]
pub struct OutputFisherSummary {
    pub reading: OutputReading,
    pub chain_top: f64,
    pub direct_top: f64,
    /// Ratio of the chain's top eigenvalue to the bound `λ_max(W_N diag(σ'(W_Nᵀy + b_N)) W_Nᵀ)`
    /// (reading (P) only).
    pub ratio_chain_to_bound: Option<f64>,
    /// Top eigenvalue of `P F̃ P` and the poison direction u (Σu = 0), from the direct estimate.
    pub poison_value: f64,
    pub poison_direction: Vec<f64>,
    /// The same from the chain estimate.
    pub poison_direction_chain: Vec<f64>,
    pub layers: Vec<LayerReport>,
    pub warnings: Vec<String>,
}

/// Analysis of one class: its generation flow at the one-hot output, and summaries of its inputs.
#[derive(Clone, Debug, Serialize)]
pub struct ClassAnalysis {
    pub class: usize,
    pub name: String,
    /// Inputs of this class among those analysed.
    pub n_inputs: usize,
    /// Median ratio of the input-Fisher top eigenvalue (direct) to the first-layer bound.
    pub median_ratio_direct: Option<f64>,
    pub median_ratio_mean_field: Option<f64>,
    pub output: Vec<OutputFisherSummary>,
}

/// Everything `analyze` writes to `analysis.json`.
#[derive(Clone, Debug, Serialize)]
pub struct AnalysisReport {
    pub widths: Vec<usize>,
    pub dataset: String,
    pub settings: AnalyzeConfig,
    /// Operator counts per classification layer 1…N and per generation layer 0…N−1.
    pub classification_operators: Vec<usize>,
    pub generation_operators: Vec<usize>,
    pub inputs: Vec<InputAnalysis>,
    pub classes: Vec<ClassAnalysis>,
    pub seconds: f64,
}

/// Samples used for the pseudo-likelihood coupling fits.
pub const COUPLING_SAMPLES: usize = 5_000;
/// Ridge of the coupling fits (on the mean pseudo-log-likelihood).
pub const COUPLING_RIDGE: f64 = 1e-6;
/// Couplings whose standard error exceeds this are "undetermined" (e.g. units that never flip
/// given x: their couplings are unbounded, RG-NOTES §4 item 5) and left out of the RMS summaries.
pub const COUPLING_SE_MAX: f64 = 0.5;

fn coupling_summary(k: usize, fit: &CouplingFit, basis: &OperatorBasis) -> CouplingSummary {
    let (mut f, mut nf, mut h, mut nh) = (0.0, 0usize, 0.0, 0usize);
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
            nf += 1;
        } else {
            h += v * v;
            nh += 1;
        }
    }
    let rms = |s: f64, n: usize| if n == 0 { 0.0 } else { (s / n as f64).sqrt() };
    CouplingSummary {
        k,
        field_rms: rms(f, nf),
        higher_rms: rms(h, nh),
        max_abs,
        undetermined,
        converged: fit.converged,
    }
}

/// Conditioning beyond which a solve is flagged as untrustworthy.
pub const COND_WARN: f64 = 1e10;
/// Canonical correlations are ≤ 1 for any true joint distribution; estimates above `1 + this`
/// are flagged.
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
                    "T({}): largest canonical correlation {cc:.3} > 1: the estimated joint covariance of \
                     layers {} and {} is not positive semi-definite (Rao-Blackwellised self terms beside \
                     sampled cross terms, too few samples for a near-singular C); this step's spectra are unreliable",
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

/// The frozen classification bases of layers 1…N (see [`BasisChoice`]).
pub fn classification_bases(
    model: &DeepRbm,
    pilot_inputs: &[&[f32]],
    cfg: &AnalyzeConfig,
) -> Result<Vec<OperatorBasis>> {
    let widths = model.widths();
    let n = model.depth();
    let mut pilot_states: Vec<Vec<f32>> = vec![Vec::new(); n];
    if let BasisChoice::TopPairs(_) = cfg.basis {
        let per = (cfg.pilot_samples / pilot_inputs.len().max(1)).max(2);
        for (i, x) in pilot_inputs.iter().enumerate() {
            let fc = FlowConfig {
                samples: per,
                seed: cfg.seed ^ 0x9110_7000 ^ i as u64,
                blocks: 1,
                ..FlowConfig::default()
            };
            for (k, layer) in sample_classification(model, x, &fc)?
                .into_iter()
                .enumerate()
            {
                pilot_states[k].extend(layer.states);
            }
        }
    }
    (1..=n)
        .map(|k| {
            let w = widths[k];
            if k == n && w <= crate::exact::MAX_WIDTH {
                return OperatorBasis::complete(w);
            }
            match cfg.basis {
                BasisChoice::Order1 => OperatorBasis::order1(w),
                BasisChoice::Order2 => OperatorBasis::order2(w),
                BasisChoice::TopPairs(m) => OperatorBasis::top_pairs(&pilot_states[k - 1], w, m),
            }
        })
        .collect()
}

/// The generation bases of layers 0…N−1: the input layer gets order 1 plus nearest-neighbour
/// pairs on its image grid (RG-NOTES A4), or order 1; hidden layers reuse the classification bases.
pub fn generation_bases(
    model: &DeepRbm,
    class_bases: &[OperatorBasis],
    image_shape: Option<(usize, usize)>,
) -> Result<Vec<OperatorBasis>> {
    let n0 = model.n_inputs();
    let input = match image_shape {
        Some((r, c)) if r * c == n0 => OperatorBasis::grid_nearest_neighbour(r, c)?,
        _ => OperatorBasis::order1(n0)?,
    };
    let mut v = vec![input];
    v.extend(class_bases[..model.depth() - 1].iter().cloned());
    Ok(v)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

/// Run the analysis; `tick` is called after each input and each class (for a progress bar).
pub fn analyze(
    model: &DeepRbm,
    data: &Dataset,
    cfg: &AnalyzeConfig,
    tick: &(dyn Fn() + Sync),
) -> Result<AnalysisReport> {
    let t0 = std::time::Instant::now();
    if cfg.inputs.is_empty() {
        return Err(Error::invalid("analyze: no inputs selected"));
    }
    data.check_test_inputs(&cfg.inputs, "analyze")
        .map_err(Error::invalid)?;
    crate::train::check_widths_fit(&model.widths(), data)?;
    let rows: Vec<&[f32]> = cfg.inputs.iter().map(|&i| data.test.row(i)).collect();
    let pilot: Vec<&[f32]> = rows.iter().take(32).copied().collect();
    let cbases = classification_bases(model, &pilot, cfg)?;
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
    let fc = FlowConfig {
        samples: cfg.samples,
        seed: cfg.seed,
        blocks: cfg.blocks,
        ..FlowConfig::default()
    };
    let predictor = Predictor::new(
        model,
        OutputMode::Served {
            samples: 64,
            seed: 0,
        },
    );
    use rayon::prelude::*;
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
                &PseudoLikelihoodConfig {
                    ridge: COUPLING_RIDGE,
                    ..PseudoLikelihoodConfig::default()
                },
            )?;
            let couplings = fits
                .iter()
                .zip(&coupling_bases)
                .enumerate()
                .map(|(j, (f, b))| coupling_summary(j + 1, f, b))
                .collect();
            tick();
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
            let mut y = vec![0.0f32; n_classes];
            y[c] = 1.0;
            let mut output = Vec::new();
            for reading in [OutputReading::PlugIn, OutputReading::Mixture] {
                let r = output_fisher(model, &y, &gbases, reading, &fc)?;
                let layers: Vec<LayerReport> = r.steps.iter().map(layer_report).collect();
                let warnings = warnings_for(&layers, &g_ops, cfg.samples);
                output.push(OutputFisherSummary {
                    reading,
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
            tick();
            Ok(ClassAnalysis {
                class: c,
                name: data.class_names[c].clone(),
                n_inputs: mine.len(),
                median_ratio_direct: median(mine.iter().map(|a| a.fisher.ratio_direct).collect()),
                median_ratio_mean_field: median(
                    mine.iter().map(|a| a.fisher.ratio_mean_field).collect(),
                ),
                output,
            })
        })
        .collect::<Result<Vec<ClassAnalysis>>>()?;
    Ok(AnalysisReport {
        widths: model.widths(),
        dataset: data.name.clone(),
        settings: cfg.clone(),
        classification_operators: c_ops,
        generation_operators: g_ops,
        inputs,
        classes,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn median_curve(curves: &[&[f64]]) -> Vec<(f64, f64)> {
    let len = curves.iter().map(|c| c.len()).max().unwrap_or(0);
    (0..len)
        .filter_map(|i| {
            median(curves.iter().filter_map(|c| c.get(i).copied()).collect())
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
                    r.inputs
                        .iter()
                        .filter_map(|i| i.couplings.get(j))
                        .map(f)
                        .collect(),
                )
                .map(|m| ((j + 1) as f64, m))
            })
            .collect()
    };
    let p = dir.join("coupling_flow.png");
    line_plot(
        &p,
        "Coupling flow: RMS of the determined couplings (median over inputs)",
        "layer k",
        "RMS coupling",
        &[
            ("order 1 (fields)".to_string(), flow(&|c| c.field_rms)),
            ("order 2 (pairs)".to_string(), flow(&|c| c.higher_rms)),
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
