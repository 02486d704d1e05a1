//! Stability matrices by Monte Carlo RG and their spectra (SPEC §5, paper eq. 6 and 13,
//! RG-NOTES §1.4, §3, §4 items 3–4 and §5 rows A5, A7, A11).
//!
//! `T = C_tt^{-1} C_ts`, where `t` is the layer a kernel produces and `s` the layer it is conditioned
//! on: classification `T^{(k)} = C_{k,k}^{-1} C_{k,k−1}` (rows = layer k), generation
//! `T̃^{(k)} = C̃_{k−1,k−1}^{-1} C̃_{k−1,k}` (rows = layer k−1). The minus signs of
//! `∂⟨O⟩/∂g = −C` cancel, so T does not depend on writing `exp(−H)` or `exp(+H)`.

use faer::{Mat, MatRef};
use rand::SeedableRng;

use crate::error::{Error, Result};
use crate::linalg::dense;
use crate::model::kernels::{down_probs_f64, up_probs_f64, StepDir};
use crate::model::DeepRbm;
use crate::params::{Params, Valid};
use crate::rg::basis::{check_classification_bases, generation_flow_bases};
use crate::rg::correlators::{
    Estimator, FirstProbs, FlowCorrelators, FlowKernels, FlowMoments, MomentOptions,
    DEFAULT_MEMORY_BUDGET,
};
use crate::rg::operators::OperatorBasis;
use crate::rg::OutputReading;
use crate::sample::{
    bernoulli_into, sample_down, sample_up, uniform_f32, BernoulliRng, LaneRng, LayerBatch,
};
use crate::util::{fnv1a64, fnv1a64_f32, mix_seed};

/// How `C_tt` is inverted (SPEC §5: "regularise (ridge relative to its trace, or a pseudo-inverse
/// with a cut-off) and report its condition number").
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Regularisation {
    /// Plain inverse; an error if `C` is not positive definite.
    None,
    /// `(C + λI)^{-1}` with `λ = max(rho · tr(C)/m, RIDGE_FLOOR)` for `rho > 0` (λ = 0 for
    /// `rho = 0`). The absolute floor [`RIDGE_FLOOR`] only matters when `tr(C)` is (nearly) zero —
    /// a fully frozen layer — where the relative ridge alone would leave `C` singular.
    Ridge {
        /// Ridge relative to the mean eigenvalue `tr(C)/m`.
        rho: f64,
    },
    /// Pseudo-inverse: eigen-directions with `λ_i ≤ rcond · λ_max` are cut (counted in `cut`).
    PseudoInverse {
        /// Relative cut-off.
        rcond: f64,
    },
}

impl Default for Regularisation {
    /// **decision:** a tiny relative ridge, `rho = 1e-10`: harmless on well-conditioned estimates,
    /// keeps the solve finite when a unit never flips.
    fn default() -> Self {
        Regularisation::Ridge { rho: 1e-10 }
    }
}

/// The regularised inverse of a symmetric covariance: from its eigendecomposition
/// ([`RegularisedInverse::new`], which also reports the conditioning), or, for the jackknife
/// replicates where only the solve matters, from a Cholesky factor ([`RegularisedInverse::fast`]).
#[derive(Clone, Debug)]
pub struct RegularisedInverse {
    factor: Factor,
    /// Eigenvalues of `C` (ascending; empty for the Cholesky form).
    pub eigenvalues: Vec<f64>,
    /// `cond(C) = λ_max/λ_min` before regularisation (∞ when `λ_min ≤ 0`; NaN for the Cholesky
    /// form, which does not compute it).
    pub cond: f64,
    /// Number of directions cut by the pseudo-inverse (0 otherwise).
    pub cut: usize,
    /// The ridge added (0 unless [`Regularisation::Ridge`]).
    pub lambda: f64,
}

#[derive(Clone, Debug)]
enum Factor {
    Eigen { u: Mat<f64>, inv: Vec<f64> },
    Cholesky(Mat<f64>),
}

/// Absolute floor of the ridge `λ` (used when `rho > 0`): far below any covariance of binary
/// operators that carries information, so it only acts on a (nearly) zero `C` — a layer whose units
/// never flip — where it makes `(C + λI)^{-1} C_ts` finite (zero when `C_ts = 0`).
pub const RIDGE_FLOOR: f64 = 1e-300;

fn ridge_lambda(c: MatRef<'_, f64>, rho: f64) -> Result<f64> {
    if !(rho >= 0.0 && rho.is_finite()) {
        return Err(Error::invalid(format!("ridge rho = {rho} must be ≥ 0")));
    }
    if rho == 0.0 {
        return Ok(0.0);
    }
    let m = c.nrows();
    let tr: f64 = (0..m).map(|i| c[(i, i)]).sum();
    let rel = rho * tr / m as f64;
    Ok(if rel.is_finite() && rel > RIDGE_FLOOR {
        rel
    } else {
        RIDGE_FLOOR
    })
}

/// `cond(C) = λ_max/λ_min` of a symmetric matrix (∞ when `λ_min ≤ 0`), for reporting.
pub fn condition_number(c: MatRef<'_, f64>) -> Result<f64> {
    let (vals, _) = dense::sym_eigen(c)?;
    match (vals.first(), vals.last()) {
        (Some(&lo), Some(&hi)) if lo > 0.0 => Ok(hi / lo),
        (Some(_), Some(_)) => Ok(f64::INFINITY),
        _ => Err(Error::invalid("condition number of an empty matrix")),
    }
}

impl RegularisedInverse {
    /// Decompose `c` (symmetrised) and prepare the regularised inverse; reports `cond(C)`.
    pub fn new(c: MatRef<'_, f64>, reg: Regularisation) -> Result<Self> {
        let (vals, u) = dense::sym_eigen(c)?;
        let m = vals.len();
        if m == 0 {
            return Err(Error::invalid("regularised inverse of an empty matrix"));
        }
        let lmax = vals[m - 1];
        let lmin = vals[0];
        let cond = if lmin > 0.0 {
            lmax / lmin
        } else {
            f64::INFINITY
        };
        let mut cut = 0;
        let mut lambda = 0.0;
        let inv = match reg {
            Regularisation::None => {
                if lmin <= 0.0 {
                    return Err(Error::invalid(format!(
                        "covariance ({m}×{m}) is not positive definite (λ_min = {lmin:e}, \
                         λ_max = {lmax:e}); use a ridge or pseudo-inverse"
                    )));
                }
                vals.iter().map(|v| 1.0 / v).collect()
            }
            Regularisation::Ridge { rho } => {
                lambda = ridge_lambda(c, rho)?;
                let inv: Vec<f64> = vals.iter().map(|v| 1.0 / (v + lambda)).collect();
                if inv.iter().any(|x| !x.is_finite() || *x <= 0.0) {
                    return Err(Error::invalid(format!(
                        "covariance ({m}×{m}) is singular even with ridge λ = {lambda:e} \
                         (λ_min = {lmin:e})"
                    )));
                }
                inv
            }
            Regularisation::PseudoInverse { rcond } => {
                if !(rcond >= 0.0 && rcond.is_finite()) {
                    return Err(Error::invalid(format!(
                        "pseudo-inverse rcond = {rcond} must be ≥ 0"
                    )));
                }
                let tol = rcond * lmax.max(0.0);
                vals.iter()
                    .map(|&v| {
                        if v > tol && v > 0.0 {
                            1.0 / v
                        } else {
                            cut += 1;
                            0.0
                        }
                    })
                    .collect()
            }
        };
        Ok(RegularisedInverse {
            factor: Factor::Eigen { u, inv },
            eigenvalues: vals,
            cond,
            cut,
            lambda,
        })
    }

    /// As [`RegularisedInverse::new`] but, for `None` and `Ridge`, by a Cholesky factorisation
    /// (about 10× cheaper; `cond` is not computed). `PseudoInverse` needs the eigendecomposition.
    pub fn fast(c: MatRef<'_, f64>, reg: Regularisation) -> Result<Self> {
        let lambda = match reg {
            Regularisation::PseudoInverse { .. } => return Self::new(c, reg),
            Regularisation::None => 0.0,
            Regularisation::Ridge { rho } => ridge_lambda(c, rho)?,
        };
        if c.nrows() == 0 {
            return Err(Error::invalid("regularised inverse of an empty matrix"));
        }
        Ok(RegularisedInverse {
            factor: Factor::Cholesky(dense::cholesky(c, lambda)?),
            eigenvalues: Vec::new(),
            cond: f64::NAN,
            cut: 0,
            lambda,
        })
    }

    /// `C^{-1} B` (regularised).
    pub fn solve(&self, b: MatRef<'_, f64>) -> Result<Mat<f64>> {
        match &self.factor {
            Factor::Eigen { u, inv } => {
                let utb = dense::mul_tn(u.as_ref(), b)?;
                let scaled = Mat::from_fn(utb.nrows(), utb.ncols(), |i, j| inv[i] * utb[(i, j)]);
                dense::mul(u.as_ref(), scaled.as_ref())
            }
            Factor::Cholesky(l) => dense::cholesky_solve(l.as_ref(), b),
        }
    }
}

/// A stability matrix with the diagnostics SPEC §5 asks for.
#[derive(Clone, Debug)]
pub struct Stability {
    /// `T = C_tt^{-1} C_ts` (`m_t × m_s`).
    pub t: Mat<f64>,
    /// `cond(C_tt)` before regularisation.
    pub cond: f64,
    /// Directions of `C_tt` cut by the pseudo-inverse.
    pub cut: usize,
    /// Ridge added to `C_tt`.
    pub lambda: f64,
}

/// `T = C_tt^{-1} C_ts` with regularisation (SPEC §5, paper eq. 6/13, RG-NOTES §1.4): classification
/// `stability_matrix(C_{k,k}, C_{k,k−1}, reg)`, generation `stability_matrix(C̃_{k−1,k−1},
/// C̃_{k−1,k}, reg)`.
pub fn stability_matrix(
    c_tt: MatRef<'_, f64>,
    c_ts: MatRef<'_, f64>,
    reg: Regularisation,
) -> Result<Stability> {
    Ok(stability_matrix_with(c_tt, c_ts, reg, false)?.0)
}

/// [`stability_matrix`], also returning the inverse of `C_tt` (Cholesky form when `fast`).
pub(crate) fn stability_matrix_with(
    c_tt: MatRef<'_, f64>,
    c_ts: MatRef<'_, f64>,
    reg: Regularisation,
    fast: bool,
) -> Result<(Stability, RegularisedInverse)> {
    if c_tt.nrows() != c_tt.ncols() || c_ts.nrows() != c_tt.nrows() {
        return Err(Error::shape(format!(
            "stability matrix: C_tt is {}×{}, C_ts {}×{}",
            c_tt.nrows(),
            c_tt.ncols(),
            c_ts.nrows(),
            c_ts.ncols()
        )));
    }
    let inv = if fast {
        RegularisedInverse::fast(c_tt, reg)?
    } else {
        RegularisedInverse::new(c_tt, reg)?
    };
    let st = Stability {
        t: inv.solve(c_ts)?,
        cond: inv.cond,
        cut: inv.cut,
        lambda: inv.lambda,
    };
    Ok((st, inv))
}

/// Spectra of a stability matrix or of a product of them (SPEC §5 last paragraph, RG-NOTES §5 A7).
#[derive(Clone, Debug, serde::Serialize)]
pub struct Spectra {
    /// Eigenvalues `(re, im)` by decreasing modulus — only when the matrix is square.
    pub eigenvalues: Option<Vec<(f64, f64)>>,
    /// True whenever `eigenvalues` is given: eig(T) depends on the arbitrary labelling of hidden
    /// units (and on the operator identification between layers), RG-NOTES §5 A7.
    pub labelling_dependent: bool,
    /// Number of eigenvalues with `|λ| > 1` (the paper's "relevant directions"; a coordinate
    /// statement, RG-NOTES §4 item 6).
    pub n_relevant: Option<usize>,
    /// Largest `|λ|`.
    pub spectral_radius: Option<f64>,
    /// Euclidean singular values (labelling-invariant), non-increasing.
    pub singular_values: Vec<f64>,
    /// Singular values of `C_tt^{-1/2} C_ts C_ss^{-1/2}` (canonical correlations, basis-invariant,
    /// ≤ 1; RG-NOTES §4 item 3), non-increasing; absent for products. From a flow they are
    /// computed on [`FlowCorrelators::whitening`]'s joint estimate, which is positive
    /// semi-definite by construction, so they are ≤ 1 up to rounding for every estimator.
    pub canonical_correlations: Option<Vec<f64>>,
}

/// Spectra of `t`; with `whitening = Some((C_tt, C_ts, C_ss))` also the canonical correlations,
/// using pseudo-inverse square roots that cut eigenvalues `≤ rcond · λ_max`.
pub fn spectra(
    t: MatRef<'_, f64>,
    whitening: Option<(MatRef<'_, f64>, MatRef<'_, f64>, MatRef<'_, f64>)>,
    rcond: f64,
) -> Result<Spectra> {
    let (eigenvalues, n_relevant, spectral_radius) = if t.nrows() == t.ncols() {
        let e = dense::eigenvalues(t)?;
        let rel = e.iter().filter(|(r, i)| r.hypot(*i) > 1.0).count();
        let rad = e.first().map(|(r, i)| r.hypot(*i));
        (Some(e), Some(rel), rad)
    } else {
        (None, None, None)
    };
    let canonical_correlations = match whitening {
        Some((ctt, cts, css)) => Some(canonical_correlations(ctt, cts, css, rcond)?),
        None => None,
    };
    Ok(Spectra {
        labelling_dependent: eigenvalues.is_some(),
        eigenvalues,
        n_relevant,
        spectral_radius,
        singular_values: dense::singular_values(t)?,
        canonical_correlations,
    })
}

/// `C^{-1/2}` by eigendecomposition, cutting eigenvalues `≤ rcond · λ_max`.
fn inv_sqrt(c: MatRef<'_, f64>, rcond: f64) -> Result<Mat<f64>> {
    let (vals, u) = dense::sym_eigen(c)?;
    let lmax = vals.last().copied().unwrap_or(0.0).max(0.0);
    let d: Vec<f64> = vals
        .iter()
        .map(|&v| {
            if v > rcond * lmax && v > 0.0 {
                1.0 / v.sqrt()
            } else {
                0.0
            }
        })
        .collect();
    let ud = Mat::from_fn(u.nrows(), u.ncols(), |i, j| u[(i, j)] * d[j]);
    dense::mul(ud.as_ref(), u.transpose())
}

/// Canonical correlations between the operator sets of two layers: singular values of
/// `C_tt^{-1/2} C_ts C_ss^{-1/2}` (RG-NOTES §4 item 3; ≤ 1 by Cauchy–Schwarz for any joint
/// distribution). Eigen-directions with eigenvalue `≤ rcond · λ_max` are projected out.
pub fn canonical_correlations(
    c_tt: MatRef<'_, f64>,
    c_ts: MatRef<'_, f64>,
    c_ss: MatRef<'_, f64>,
    rcond: f64,
) -> Result<Vec<f64>> {
    if c_ts.nrows() != c_tt.nrows() || c_ts.ncols() != c_ss.nrows() {
        return Err(Error::shape(format!(
            "canonical correlations: C_tt {}×{}, C_ts {}×{}, C_ss {}×{}",
            c_tt.nrows(),
            c_tt.ncols(),
            c_ts.nrows(),
            c_ts.ncols(),
            c_ss.nrows(),
            c_ss.ncols()
        )));
    }
    if !(rcond.is_finite() && (0.0..1.0).contains(&rcond)) {
        return Err(Error::invalid(format!(
            "canonical correlations: rcond = {rcond} must be finite and in [0, 1)"
        )));
    }
    let a = inv_sqrt(c_tt, rcond)?;
    let b = inv_sqrt(c_ss, rcond)?;
    let k = dense::mul(dense::mul(a.as_ref(), c_ts)?.as_ref(), b.as_ref())?;
    dense::singular_values(k.as_ref())
}

/// The product of stability matrices given in application order: `steps = [T_a, T_b, …, T_z]`
/// gives `T_z ⋯ T_b T_a` (e.g. `[T^{(2)}, …, T^{(N)}]` → `T^{(N)}⋯T^{(2)}`, SPEC §5).
pub fn chain_product(steps: &[Mat<f64>]) -> Result<Mat<f64>> {
    let first = steps
        .first()
        .ok_or_else(|| Error::invalid("chain_product of no matrices"))?;
    let mut p = first.clone();
    for t in &steps[1..] {
        p = dense::mul(t.as_ref(), p.as_ref())?;
    }
    Ok(p)
}

/// Settings of the per-input Monte Carlo RG analysis (SPEC §5, RG-NOTES §5 A11).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FlowParams {
    /// Ancestral samples S per input (RG-NOTES A11: S ≥ 10 × operators per layer).
    pub samples: usize,
    /// User seed; the stream is seeded from (model fingerprint, seed, input), SPEC §1.
    pub seed: u64,
    /// Correlator estimator.
    pub estimator: Estimator,
    /// Jackknife blocks (≥ 2 for error bars; 1 for none).
    pub blocks: usize,
    /// Inversion of `C_tt`.
    pub reg: Regularisation,
    /// Relative cut-off of the whitening in the canonical correlations (finite, in [0, 1)).
    pub cc_rcond: f64,
    /// Largest memory the correlator moments may take, in bytes (see
    /// [`FlowMoments::estimated_bytes`]); beyond it the analysis is refused with an error naming
    /// the operator counts. Default 2 GiB.
    #[serde(default = "default_memory_budget")]
    pub memory_budget: usize,
}

fn default_memory_budget() -> usize {
    DEFAULT_MEMORY_BUDGET
}

impl Default for FlowParams {
    /// S = 20 000 Rao-Blackwellised samples, 20 jackknife blocks, default ridge, cc cut 1e-12,
    /// 2 GiB memory budget.
    fn default() -> Self {
        FlowParams {
            samples: 20_000,
            seed: 0,
            estimator: Estimator::RaoBlackwell,
            blocks: 20,
            reg: Regularisation::default(),
            cc_rcond: 1e-12,
            memory_budget: DEFAULT_MEMORY_BUDGET,
        }
    }
}

fn stream(model: &DeepRbm, seed: u64, tag: &[u8], v: &[f32]) -> LaneRng {
    let h = fnv1a64_f32(fnv1a64(tag), v);
    LaneRng::seed_from_u64(mix_seed(mix_seed(model.fingerprint(), seed), h))
}

impl Params for FlowParams {
    fn check(self) -> Result<Valid<Self>> {
        if self.blocks == 0 || self.samples < 2 * self.blocks {
            return Err(Error::invalid(format!(
                "flow parameters: {} samples cannot fill {} jackknife blocks",
                self.samples, self.blocks
            )));
        }
        if !(self.cc_rcond.is_finite() && (0.0..1.0).contains(&self.cc_rcond)) {
            return Err(Error::invalid(format!(
                "flow parameters: cc_rcond = {} must be finite and in [0, 1)",
                self.cc_rcond
            )));
        }
        Ok(Valid::checked(self))
    }
}

/// An error naming the first non-finite value of `v`.
pub(crate) fn check_finite(v: &[f32], what: &str) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(Error::invalid(format!(
            "{what}[{i}] = {} is not finite",
            v[i]
        ))),
        None => Ok(()),
    }
}

/// `s` rows drawn from the probability rows `rows` (row `pick(r)` for sample r) with the crate's
/// Bernoulli sampler.
fn draw_rows<R: BernoulliRng>(
    rows: &[Vec<f32>],
    s: usize,
    pick: impl Fn(usize) -> usize,
    rng: &mut R,
) -> LayerBatch {
    let w = rows.first().map_or(0, |r| r.len());
    let mut states = vec![0.0f32; s * w];
    let mut probs = vec![0.0f32; s * w];
    for r in 0..s {
        let p = &rows[pick(r)];
        bernoulli_into(p, rng, &mut states[r * w..(r + 1) * w]);
        probs[r * w..(r + 1) * w].copy_from_slice(p);
    }
    LayerBatch { states, probs }
}

/// RBMs `from…to` (1-based, inclusive) of `model` as a model of its own, so that the
/// crate's ancestral samplers run the rest of a pass from sampled layer states.
fn sub_model(model: &DeepRbm, from: usize, to: usize) -> Result<DeepRbm> {
    DeepRbm::new(model.layers[from - 1..to].to_vec())
}

/// Estimated memory, in bytes, of the ancestral samples of one flow of the stack `widths`: S
/// samples of every layer but the input, states and probabilities in f32 (what
/// [`sample_classification`] and [`sample_generation`] keep for the moments); with the same again
/// for the f64 conditionals of the Rao-Blackwell estimator. The moments have their own estimate
/// and budget ([`FlowMoments::estimated_bytes`], [`FlowParams::memory_budget`]). `None` when it
/// overflows.
pub fn flow_sample_bytes(widths: &[usize], samples: usize) -> Option<u64> {
    let units = widths
        .iter()
        .skip(1)
        .try_fold(0u64, |a, &w| a.checked_add(w as u64))?;
    units.checked_mul(samples as u64)?.checked_mul(4 * 2 * 2)
}

/// S ancestral samples up the classification network from x (SPEC §1; exact, no burn-in), in flow
/// order: element `k−1` is layer k = 1…N. Seeded from (model, `cfg.seed`, x). Layer 1 is drawn from
/// the single row `p_1 = σ(W_1 x + a_1)` (x is not replicated S times); the rest of the pass is
/// [`crate::sample::sample_up`] on the rows of `h_1`.
pub fn sample_classification(
    model: &DeepRbm,
    x: &[f32],
    cfg: &Valid<FlowParams>,
) -> Result<Vec<LayerBatch>> {
    Ok(classification_samples(model, x, cfg)?.0)
}

/// [`sample_classification`] with the flow's kernels (f64 layer-1 probabilities).
fn classification_samples(
    model: &DeepRbm,
    x: &[f32],
    cfg: &Valid<FlowParams>,
) -> Result<(Vec<LayerBatch>, FlowKernels)> {
    if x.len() != model.n_inputs() {
        return Err(Error::shape(format!(
            "input has {} values, the model {} inputs",
            x.len(),
            model.n_inputs()
        )));
    }
    check_finite(x, "x")?;
    let mut rng = stream(model, cfg.seed, b"rg-classification", x);
    let s = cfg.samples;
    let n = model.depth();
    let r1 = model.rbm(1);
    let h1 = draw_rows(&[r1.up_probs(x, 1)], s, |_| 0, &mut rng);
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let kernels = FlowKernels {
        first: FirstProbs::Shared(up_probs_f64(r1, &x64)),
        steps: (2..=n)
            .map(|k| (model.rbm(k).clone(), StepDir::Up))
            .collect(),
    };
    let mut layers = Vec::with_capacity(n);
    let rest = if n >= 2 {
        sample_up(&sub_model(model, 2, n)?, &h1.states, s, n - 1, &mut rng)
    } else {
        Vec::new()
    };
    layers.push(h1);
    layers.extend(rest);
    Ok((layers, kernels))
}

/// S ancestral samples down the generation network from y (SPEC §2), in flow order: element 0 is
/// layer N−1, …, element N−1 is layer 0. Reading (P) draws layer N−1 from the single row
/// `σ(W_Nᵀ y + b_N)`; reading (C) draws a class `c ~ y` per sample and layer N−1 from
/// `σ(W_Nᵀ e_c + b_N)` (y must be a probability vector). The rest of the pass is
/// [`crate::sample::sample_down`].
pub fn sample_generation(
    model: &DeepRbm,
    y: &[f32],
    reading: OutputReading,
    cfg: &Valid<FlowParams>,
) -> Result<Vec<LayerBatch>> {
    Ok(generation_samples(model, y, reading, cfg)?.0)
}

/// [`sample_generation`] with the flow's kernels.
fn generation_samples(
    model: &DeepRbm,
    y: &[f32],
    reading: OutputReading,
    cfg: &Valid<FlowParams>,
) -> Result<(Vec<LayerBatch>, FlowKernels)> {
    let nn = model.n_outputs();
    if y.len() != nn {
        return Err(Error::shape(format!(
            "output has {} values, the model {nn} outputs",
            y.len()
        )));
    }
    check_finite(y, "y")?;
    let tag: &[u8] = match reading {
        OutputReading::PlugIn => b"rg-generation-P",
        OutputReading::Mixture => b"rg-generation-C",
    };
    let mut rng = stream(model, cfg.seed, tag, y);
    let s = cfg.samples;
    let n = model.depth();
    let top = model.rbm(n);
    let steps: Vec<(crate::model::Rbm, StepDir)> = (1..n)
        .rev()
        .map(|k| (model.rbm(k).clone(), StepDir::Down))
        .collect();
    let (first, kernels) = match reading {
        OutputReading::PlugIn => {
            let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
            let first = draw_rows(&[top.down_probs(y, 1)], s, |_| 0, &mut rng);
            let k = FlowKernels {
                first: FirstProbs::Shared(down_probs_f64(top, &y64)),
                steps,
            };
            (first, k)
        }
        OutputReading::Mixture => {
            let w = crate::rg::mixture_weights(y)?;
            let mut cdf = Vec::with_capacity(nn);
            let mut acc = 0.0f64;
            for &v in &w {
                acc += v;
                cdf.push(acc);
            }
            let class: Vec<usize> = (0..s)
                .map(|_| {
                    let u = uniform_f32(&mut rng) as f64 * acc;
                    cdf.iter().position(|&c| u < c).unwrap_or(nn - 1)
                })
                .collect();
            let onehot = |c: usize| {
                let mut e = vec![0.0f32; nn];
                e[c] = 1.0;
                e
            };
            let rows32: Vec<Vec<f32>> = (0..nn).map(|c| top.down_probs(&onehot(c), 1)).collect();
            let rows64: Vec<Vec<f64>> = (0..nn)
                .map(|c| {
                    let e: Vec<f64> = onehot(c).iter().map(|&v| v as f64).collect();
                    down_probs_f64(top, &e)
                })
                .collect();
            let first = draw_rows(&rows32, s, |r| class[r], &mut rng);
            let k = FlowKernels {
                first: FirstProbs::PerClass {
                    rows: rows64,
                    class,
                },
                steps,
            };
            (first, k)
        }
    };
    let mut layers = Vec::with_capacity(n);
    let rest = if n >= 2 {
        sample_down(&sub_model(model, 1, n - 1)?, &first.states, s, 0, &mut rng)
    } else {
        Vec::new()
    };
    layers.push(first);
    layers.extend(rest);
    Ok((layers, kernels))
}

fn moment_options(cfg: &Valid<FlowParams>, direct: bool, kernels: FlowKernels) -> MomentOptions {
    MomentOptions {
        estimator: cfg.estimator,
        blocks: cfg.blocks,
        direct,
        memory_budget: cfg.memory_budget,
        kernels: Some(kernels),
    }
}

/// Sampled moments of the classification flow given x (SPEC §5): `bases[k−1]` is the basis of
/// layer k = 1…N. `direct` also accumulates `Cov(O(h_N), O(h_1))`.
pub fn classification_moments(
    model: &DeepRbm,
    x: &[f32],
    bases: &[OperatorBasis],
    cfg: &Valid<FlowParams>,
    direct: bool,
) -> Result<FlowMoments> {
    check_classification_bases(model, bases)?;
    let (layers, kernels) = classification_samples(model, x, cfg)?;
    FlowMoments::accumulate_with(
        layers,
        bases,
        cfg.samples,
        moment_options(cfg, direct, kernels),
    )
}

/// Sampled moments of the generation flow given y (SPEC §5, §7): `bases[k]` is the basis of layer
/// k = 0…N−1 (the moments are in flow order, layer N−1 first). `direct` also accumulates
/// `Cov(O(h_0), O(h_{N−1}))`.
pub fn generation_moments(
    model: &DeepRbm,
    y: &[f32],
    bases: &[OperatorBasis],
    reading: OutputReading,
    cfg: &Valid<FlowParams>,
    direct: bool,
) -> Result<FlowMoments> {
    let flow = generation_flow_bases(model, bases)?;
    let (layers, kernels) = generation_samples(model, y, reading, cfg)?;
    FlowMoments::accumulate_with(
        layers,
        &flow,
        cfg.samples,
        moment_options(cfg, direct, kernels),
    )
}

/// One stability matrix of a flow with its diagnostics.
#[derive(Clone, Debug)]
pub struct StabilityStep {
    /// The paper's index: `T^{(k)}` (classification, rows = layer k) or `T̃^{(k)}` (generation,
    /// rows = layer k−1).
    pub k: usize,
    /// The matrix and the conditioning of `C_tt`.
    pub stability: Stability,
    /// Its spectra, canonical correlations included.
    pub spectra: Spectra,
    /// Element-wise delete-one-block jackknife standard errors of `T` (filled by the Fisher
    /// analyses, which run the jackknife anyway; None from [`flow_stability`] alone or with one
    /// block).
    pub t_std_err: Option<Mat<f64>>,
    /// Jackknife bias-corrected `T` (`B T̂ − (B − 1) T̄`); the reported value is `stability.t`.
    pub t_bias_corrected: Option<Mat<f64>>,
}

/// All stability matrices of a flow from its correlators, in application order (flow steps
/// j = 2…M). `k_of_step(j)` names the paper's index of flow step j.
pub fn flow_stability(
    corr: &FlowCorrelators,
    reg: Regularisation,
    cc_rcond: f64,
    k_of_step: impl Fn(usize) -> usize,
) -> Result<Vec<StabilityStep>> {
    corr.validate()?;
    let mut out = Vec::with_capacity(corr.depth().saturating_sub(1));
    for j in 2..=corr.depth() {
        let ctt = corr.self_cov[j - 1].as_ref();
        let cts = corr.cross_cov[j - 2].as_ref();
        let stability = stability_matrix(ctt, cts, reg)?;
        // Canonical correlations from a joint estimate that is PSD by construction (≤ 1).
        let spectra = spectra(stability.t.as_ref(), Some(corr.whitening(j)?), cc_rcond)?;
        out.push(StabilityStep {
            k: k_of_step(j),
            stability,
            spectra,
            t_std_err: None,
            t_bias_corrected: None,
        });
    }
    Ok(out)
}

/// Per-input stability matrices of the classification network, `T^{(k)}` for k = 2…N (SPEC §5;
/// the first layer is exact, RG-NOTES A5, so there is no `T^{(1)}`). `bases[k−1]` is layer k's
/// basis.
pub fn classification_stability(
    model: &DeepRbm,
    x: &[f32],
    bases: &[OperatorBasis],
    cfg: &Valid<FlowParams>,
) -> Result<Vec<StabilityStep>> {
    let fm = classification_moments(model, x, bases, cfg, false)?;
    flow_stability(&fm.correlators(None)?, cfg.reg, cfg.cc_rcond, |j| j)
}

/// Per-input stability matrices of the generation network, `T̃^{(k)}` for k = N−1 down to 1 (in
/// that, the application, order; SPEC §5, §7). `bases[k]` is layer k's basis, k = 0…N−1.
pub fn generation_stability(
    model: &DeepRbm,
    y: &[f32],
    bases: &[OperatorBasis],
    reading: OutputReading,
    cfg: &Valid<FlowParams>,
) -> Result<Vec<StabilityStep>> {
    let n = model.depth();
    let fm = generation_moments(model, y, bases, reading, cfg, false)?;
    flow_stability(&fm.correlators(None)?, cfg.reg, cfg.cc_rcond, |j| n + 1 - j)
}
