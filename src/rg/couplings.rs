//! The coupling flow (SPEC §4 "eq. 5 flow", RG-NOTES §1.3): the couplings `g^{(k)}` of each layer,
//! fitted from samples by maximum pseudo-likelihood.
//!
//! A layer's distribution is read as `q_k(h|x) = exp(−H(h))/Z` with `H(h) = Σ_α g_α O_α(h)` on an
//! [`OperatorBasis`]. The partition function is intractable on wide layers, but the conditional of
//! one unit given the others is not: its log-odds are
//!
//! `ℓ_i(h) = log P(h_i=1|h_−i)/P(h_i=0|h_−i) = H(h|h_i=0) − H(h|h_i=1) = −Σ_{α∋i} g_α Π_{j∈α, j≠i} h_j`,
//!
//! linear in g with design `x_{i,α}(h) = −Π_{j∈α∖i} h_j` (zero unless α contains i). The fit maximises
//! the weighted mean pseudo-log-likelihood minus a ridge,
//!
//! `F(g) = Σ_s w_s Σ_i [h_i^{(s)} ℓ_i(h^{(s)}) − log(1 + e^{ℓ_i(h^{(s)})})] − (ridge/2)·|g|²`,  `Σ_s w_s = 1`,
//!
//! which is concave: its negative Hessian is `Σ_s w_s Σ_i p_i(1−p_i) x_i x_iᵀ + ridge·I` with
//! `p_i = σ(ℓ_i)`. Damped Newton (Cholesky solve, Armijo backtracking) converges in a handful of
//! steps. The Hessian is assembled unit by unit: only the `m_i` monomials that contain unit i enter
//! `x_i`, so the per-sample work is `O(Σ_i m_i²)` through dense `S × m_i` blocks and a matrix
//! product, never `O(m²)` per sample.
//!
//! Two penalties keep unidentifiable couplings finite (a pair whose units never fire together
//! would otherwise run off to +∞). A Gaussian prior `N(0, σ²)` per coupling on the *total*
//! pseudo-log-likelihood (ridge `1/(σ² S)` on the mean objective, default σ = 2.5): maximum a
//! posteriori rather than maximum likelihood, which keeps couplings that the samples cannot
//! determine near 0 instead of at the ridge's limit, and fades as S grows. And a tiny ridge on the
//! *mean* objective (default `1e-6`), which does not weaken with S; it biases a well-determined
//! coupling by about `1e-6·g / curvature`, far below the sampling error of any practical S.
//!
//! **Accuracy (measured against the exact couplings of enumerated 12-8-8 stacks,
//! `tests/couplings.rs`).** Pair couplings of order-2 fits have RMS errors of 0.13 at S = 3000
//! (0.06 at S = 10 000) on a layer whose units all vary given x — sampling noise, ∝ 1/√S. On a
//! layer with near-frozen units (3 of 8 with means ≤ 0.02 or ≥ 0.98 given x) the couplings touching
//! them are barely identifiable: the RMS error of the pair couplings, whose exact value is 0, is 1.4
//! at S = 3000 and 0.70 at S = 10 000 by maximum pseudo-likelihood, 0.68 and 0.45 with the prior.
//! The units of a trained network are mostly near-frozen given x, so its coupling flow is
//! qualitative (`analyze` says so, with each layer's noise level beside it).
//!
//! With a complete basis and exact (enumerated) weights the fit recovers the unique couplings of
//! RG-NOTES §1.3 (`log q(h) − log q(0) = −Σ_α g_α O_α(h)`); on layer 1, whose distribution is a
//! product, it recovers `g_i = −(W_1 x + a_1)_i` and zero for every higher operator.
//!
//! Everything is f64 and sequential (`Par::Seq`); [`coupling_flow`] draws its ancestral samples from
//! a stream seeded by (model fingerprint, seed, input), so results are bit-identical from run to run.

use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::linalg::triangular_inverse::invert_lower_triangular;
use faer::{Accum, Mat, Par};
use rand::SeedableRng;

use crate::error::{Error, Result};
use crate::linalg::{dense, norm2};
use crate::model::DeepRbm;
use crate::params::{Params, Valid};
use crate::rg::operators::OperatorBasis;
use crate::sample::LaneRng;
use crate::util::{fnv1a64, fnv1a64_f32, mix_seed};

/// Rows per dense design block when the Hessian is assembled (bounds memory at `ROW_CHUNK × m_i`).
const ROW_CHUNK: usize = 512;

/// Armijo sufficient-increase constant of the backtracking line search.
const ARMIJO: f64 = 1e-4;

/// Smallest step fraction tried by the line search before it gives up.
const MIN_STEP: f64 = 1.0 / (1u64 << 40) as f64;

/// The default standard deviation of the Gaussian prior on every coupling
/// ([`PseudoLikelihoodParams::prior_sd`]).
pub const DEFAULT_PRIOR_SD: f64 = 2.5;

/// Settings of the maximum pseudo-likelihood fit.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PseudoLikelihoodParams {
    /// L2 penalty `(ridge/2)·|g|²` subtracted from the *weighted mean* pseudo-log-likelihood
    /// (weights normalised to sum 1), on top of the prior's. Must be finite and ≥ 0; with no prior,
    /// 0 is allowed only when every coupling is identifiable from the samples (otherwise the Newton
    /// system is singular and the fit errors).
    pub ridge: f64,
    /// Standard deviation σ of an independent Gaussian prior `N(0, σ²)` on every coupling, added to
    /// the *total* pseudo-log-likelihood of the `S_eff` samples: on the mean objective it is a ridge
    /// `1/(σ² S_eff)`, so it fades as the samples grow and matters only where the data say little.
    /// `f64::INFINITY` = no prior (population fits with exact probabilities as weights, whose
    /// `S_eff` is not a sample size). Must be > 0.
    ///
    /// **decision:** σ = 2.5 (the weakly informative scale of Gelman, Jakulin, Pittau and Su, *A
    /// weakly informative default prior distribution for logistic and other regression models*,
    /// Ann. Appl. Stat. 2008: one coupling is not expected to move a unit's log-odds by more than
    /// ~5). Without it, a pair of units that (almost) never fire together given x runs off to the
    /// ridge's limit (~10): on layers with near-frozen units the pair couplings came out with RMS
    /// errors of 1.4–3 where the exact value is 0 (`tests/couplings.rs`, `docs/results/`).
    pub prior_sd: f64,
    /// Maximum number of Newton steps.
    pub max_iter: usize,
    /// Convergence threshold on the Euclidean norm of the gradient of the penalised mean objective.
    pub tol: f64,
}

impl Default for PseudoLikelihoodParams {
    /// ridge 1e-6, prior σ = [`DEFAULT_PRIOR_SD`], at most 100 Newton steps, gradient norm ≤ 1e-9.
    fn default() -> Self {
        PseudoLikelihoodParams {
            ridge: 1e-6,
            prior_sd: DEFAULT_PRIOR_SD,
            max_iter: 100,
            tol: 1e-9,
        }
    }
}

/// The fitted couplings of one layer and how the fit went.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CouplingFit {
    /// `g_α`, one per operator of the basis, in the basis order.
    pub couplings: Vec<f64>,
    /// Standard errors of the couplings from the inverse penalised Hessian:
    /// `se_α = sqrt([(Ĥ + ridge·I)^{-1}]_{αα} / S_eff)` (the ridge including the prior's, so a
    /// coupling the samples do not determine gets about the prior's σ), with `Ĥ` the weighted mean negative Hessian
    /// of the pseudo-log-likelihood and `S_eff = (Σw)²/Σw²` the Kish effective sample size (S for
    /// uniform weights). This is the asymptotic standard error when the pseudo-likelihood is the
    /// likelihood (a product distribution, e.g. layer 1); for correlated layers the sandwich
    /// estimator would be somewhat larger. Meaningless when the weights are exact probabilities
    /// rather than sample weights.
    pub std_err: Vec<f64>,
    /// Newton steps taken.
    pub iterations: usize,
    /// Euclidean norm of the gradient of the penalised mean objective at the returned couplings.
    pub grad_norm: f64,
    /// Weighted mean over samples of `Σ_i log P(h_i | h_−i)` at the returned couplings (nats per
    /// sample, without the ridge term).
    pub pseudo_log_likelihood: f64,
    /// Whether `grad_norm ≤ tol` was reached within `max_iter` steps.
    pub converged: bool,
    /// Kish effective sample size `(Σw)²/Σw²` of the weights (S for uniform weights).
    pub effective_samples: f64,
}

/// The design of one unit: the monomials containing it, each with its other units.
struct UnitDesign {
    alphas: Vec<usize>,
    /// Bit masks of the other units, `words` words per monomial, flattened.
    others: Vec<u64>,
}

/// Validated samples, normalised weights and per-unit designs.
struct Problem {
    n: usize,
    m: usize,
    s: usize,
    /// Number of u64 words per bit-packed row.
    words: usize,
    /// Samples bit-packed, `words` words per row.
    bits: Vec<u64>,
    /// Samples as bytes (unit values).
    h: Vec<u8>,
    w: Vec<f64>,
    units: Vec<UnitDesign>,
}

/// Objective, gradient and (optionally) penalised negative Hessian at one point.
struct Eval {
    objective: f64,
    pll: f64,
    grad: Vec<f64>,
    hess: Option<Mat<f64>>,
}

fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

/// Whether every unit of `mask` is on in `row` (both bit-packed).
#[inline]
fn covers(row: &[u64], mask: &[u64]) -> bool {
    row.iter().zip(mask).all(|(r, m)| r & m == *m)
}

impl Problem {
    fn new(basis: &OperatorBasis, samples: &[f32], weights: Option<&[f64]>) -> Result<Self> {
        let n = basis.width();
        let m = basis.len();
        if samples.is_empty() {
            return Err(Error::invalid(
                "pseudo-likelihood fit: no samples (need at least one row)",
            ));
        }
        if !samples.len().is_multiple_of(n) {
            return Err(Error::shape(format!(
                "pseudo-likelihood fit: {} sample values are not a multiple of the basis width {n}",
                samples.len()
            )));
        }
        let s = samples.len() / n;
        let mut h = Vec::with_capacity(samples.len());
        for (k, &v) in samples.iter().enumerate() {
            if v == 0.0 {
                h.push(0u8);
            } else if v == 1.0 {
                h.push(1u8);
            } else {
                let what = if v.is_finite() {
                    "not binary (must be 0 or 1)"
                } else {
                    "not finite"
                };
                return Err(Error::invalid(format!(
                    "pseudo-likelihood fit: sample {} unit {} = {v} is {what}",
                    k / n,
                    k % n
                )));
            }
        }
        let w = match weights {
            None => vec![1.0 / s as f64; s],
            Some(w) => {
                if w.len() != s {
                    return Err(Error::shape(format!(
                        "pseudo-likelihood fit: {} weights for {s} samples",
                        w.len()
                    )));
                }
                if let Some(k) = w.iter().position(|v| !v.is_finite() || *v < 0.0) {
                    return Err(Error::invalid(format!(
                        "pseudo-likelihood fit: weight {k} = {} is negative or not finite",
                        w[k]
                    )));
                }
                let total: f64 = w.iter().sum();
                if total <= 0.0 {
                    return Err(Error::invalid(
                        "pseudo-likelihood fit: the weights are all zero",
                    ));
                }
                if !total.is_finite() {
                    return Err(Error::invalid(
                        "pseudo-likelihood fit: the weights sum to infinity",
                    ));
                }
                w.iter().map(|v| v / total).collect()
            }
        };
        let words = n.div_ceil(64);
        let mut bits = vec![0u64; s * words];
        for (k, &v) in h.iter().enumerate() {
            let (r, i) = (k / n, k % n);
            bits[r * words + i / 64] |= (v as u64) << (i % 64);
        }
        let mut units: Vec<UnitDesign> = (0..n)
            .map(|_| UnitDesign {
                alphas: Vec::new(),
                others: Vec::new(),
            })
            .collect();
        for (a, mono) in basis.monomials().iter().enumerate() {
            for &i in mono {
                units[i].alphas.push(a);
                let mut mask = vec![0u64; words];
                for &j in mono.iter().filter(|&&j| j != i) {
                    mask[j / 64] |= 1u64 << (j % 64);
                }
                units[i].others.extend(mask);
            }
        }
        Ok(Problem {
            n,
            m,
            s,
            words,
            bits,
            h,
            w,
            units,
        })
    }

    fn effective_samples(&self) -> f64 {
        // Weights sum to 1, so S_eff = 1 / Σ w².
        1.0 / self.w.iter().map(|v| v * v).sum::<f64>()
    }

    /// Penalised mean objective (and pseudo-log-likelihood) only, for the line search.
    fn objective(&self, g: &[f64], ridge: f64) -> f64 {
        let pll = self.pll_only(g);
        pll - 0.5 * ridge * g.iter().map(|v| v * v).sum::<f64>()
    }

    fn pll_only(&self, g: &[f64]) -> f64 {
        let (n, nw) = (self.n, self.words);
        let mut pll = 0.0;
        for (i, u) in self.units.iter().enumerate() {
            for sidx in 0..self.s {
                let w = self.w[sidx];
                if w == 0.0 {
                    continue;
                }
                let row = &self.bits[sidx * nw..(sidx + 1) * nw];
                let mut l = 0.0;
                for (a, mask) in u.alphas.iter().zip(u.others.chunks_exact(nw)) {
                    if covers(row, mask) {
                        l -= g[*a];
                    }
                }
                pll += w * (self.h[sidx * n + i] as f64 * l - softplus(l));
            }
        }
        pll
    }

    /// Objective, gradient and, if asked, the penalised negative Hessian `Ĥ + ridge·I`.
    fn eval(&self, g: &[f64], ridge: f64, want_hess: bool) -> Eval {
        let (n, m, s, nw) = (self.n, self.m, self.s, self.words);
        let mut grad = vec![0.0f64; m];
        let mut pll = 0.0;
        let mut hess = if want_hess {
            Some(Mat::<f64>::zeros(m, m))
        } else {
            None
        };
        let mut active: Vec<usize> = Vec::new();
        for (i, u) in self.units.iter().enumerate() {
            let mi = u.alphas.len();
            let mut hi = if want_hess && mi > 0 {
                Some(Mat::<f64>::zeros(mi, mi))
            } else {
                None
            };
            let mut start = 0;
            while start < s {
                let rows = ROW_CHUNK.min(s - start);
                let mut xs = hi.as_ref().map(|_| Mat::<f64>::zeros(rows, mi));
                for r in 0..rows {
                    let sidx = start + r;
                    let w = self.w[sidx];
                    if w == 0.0 {
                        continue;
                    }
                    let row = &self.bits[sidx * nw..(sidx + 1) * nw];
                    active.clear();
                    let mut l = 0.0;
                    for (a, mask) in u.others.chunks_exact(nw).enumerate() {
                        if covers(row, mask) {
                            l -= g[u.alphas[a]];
                            active.push(a);
                        }
                    }
                    let hv = self.h[sidx * n + i] as f64;
                    pll += w * (hv * l - softplus(l));
                    let p = sigmoid(l);
                    // ∂/∂g_α of w·log P = w (h_i − p_i) x_{i,α}, with x_{i,α} = −1 on active α.
                    let res = w * (hv - p);
                    for &a in &active {
                        grad[u.alphas[a]] -= res;
                    }
                    if let Some(xs) = xs.as_mut() {
                        // The sign of x cancels in x xᵀ.
                        let c = (w * p * (1.0 - p)).sqrt();
                        for &a in &active {
                            xs[(r, a)] = c;
                        }
                    }
                }
                if let (Some(hi), Some(xs)) = (hi.as_mut(), xs.as_ref()) {
                    // Lower triangle of xsᵀ xs only (half the flops); mirrored below.
                    triangular::matmul(
                        hi.as_mut(),
                        BlockStructure::TriangularLower,
                        Accum::Add,
                        xs.transpose(),
                        BlockStructure::Rectangular,
                        xs.as_ref(),
                        BlockStructure::Rectangular,
                        1.0,
                        Par::Seq,
                    );
                    crate::linalg::clear_upper_vector_state();
                }
                start += rows;
            }
            if let (Some(h), Some(hi)) = (hess.as_mut(), hi.as_ref()) {
                for (a, &alpha) in u.alphas.iter().enumerate() {
                    for (b, &beta) in u.alphas.iter().enumerate() {
                        h[(alpha, beta)] += if b <= a { hi[(a, b)] } else { hi[(b, a)] };
                    }
                }
            }
        }
        for (gr, &gv) in grad.iter_mut().zip(g) {
            *gr -= ridge * gv;
        }
        if let Some(h) = hess.as_mut() {
            for a in 0..m {
                h[(a, a)] += ridge;
            }
        }
        let objective = pll - 0.5 * ridge * g.iter().map(|v| v * v).sum::<f64>();
        Eval {
            objective,
            pll,
            grad,
            hess,
        }
    }
}

/// Cholesky factor of the Newton system (the ridge is already in it), via the crate's one
/// Cholesky routine, with the hint that matters for a pseudo-likelihood fit.
fn cholesky_lower(a: Mat<f64>, ridge: f64) -> Result<Mat<f64>> {
    dense::cholesky(a.as_ref(), 0.0).map_err(|e| {
        Error::invalid(format!(
            "pseudo-likelihood fit (ridge {ridge:e}): {e}; some coupling is not identifiable from \
             the samples, use a positive ridge"
        ))
    })
}

fn cholesky_solve(l: &Mat<f64>, b: &[f64]) -> Result<Vec<f64>> {
    let rhs = Mat::<f64>::from_fn(b.len(), 1, |i, _| b[i]);
    let x = dense::cholesky_solve(l.as_ref(), rhs.as_ref())?;
    Ok((0..b.len()).map(|i| x[(i, 0)]).collect())
}

/// `diag(A^{-1})` from the Cholesky factor `L` of `A`: the squared column norms of `L^{-1}`.
fn inverse_diagonal(l: &Mat<f64>) -> Vec<f64> {
    let n = l.nrows();
    let mut li = Mat::<f64>::zeros(n, n);
    invert_lower_triangular(li.as_mut(), l.as_ref(), Par::Seq);
    crate::linalg::clear_upper_vector_state();
    (0..n)
        .map(|j| (j..n).map(|k| li[(k, j)] * li[(k, j)]).sum())
        .collect()
}

impl Params for PseudoLikelihoodParams {
    fn check(self) -> Result<Valid<Self>> {
        if !self.ridge.is_finite() || self.ridge < 0.0 {
            return Err(Error::invalid(format!(
                "pseudo-likelihood parameters: ridge = {} must be finite and ≥ 0",
                self.ridge
            )));
        }
        if self.prior_sd.is_nan() || self.prior_sd <= 0.0 {
            return Err(Error::invalid(format!(
                "pseudo-likelihood parameters: prior_sd = {} must be > 0 (∞ for no prior)",
                self.prior_sd
            )));
        }
        if !self.tol.is_finite() || self.tol < 0.0 {
            return Err(Error::invalid(format!(
                "pseudo-likelihood parameters: tol = {} must be finite and ≥ 0",
                self.tol
            )));
        }
        Ok(Valid::checked(self))
    }
}

/// Fit the couplings of `basis` to samples of one layer by maximum pseudo-likelihood (module docs).
///
/// `samples`: S rows of `basis.width()` values in {0, 1}, row-major f32. `weights`: one
/// non-negative weight per row (normalised internally to sum 1; `None` = uniform). Passing the 2^n
/// enumerated states of a tiny layer with their exact probabilities as weights gives the
/// population fit. Starts from g = 0 and takes damped Newton steps until the gradient norm is at
/// most `cfg.tol` or `cfg.max_iter` steps have been taken (`converged` tells which).
///
/// Errors: no samples, a length that is not a multiple of the width, a value other than 0 or 1
/// (including NaN/∞), weights of the wrong length, negative, non-finite or all zero, or (only with
/// `ridge = 0`) an unidentifiable coupling.
pub fn fit_couplings(
    basis: &OperatorBasis,
    samples: &[f32],
    weights: Option<&[f64]>,
    cfg: &Valid<PseudoLikelihoodParams>,
) -> Result<CouplingFit> {
    let prob = Problem::new(basis, samples, weights)?;
    // The prior N(0, σ²) on the total pseudo-log-likelihood of S_eff samples, on the mean scale.
    let ridge = cfg.ridge + 1.0 / (cfg.prior_sd * cfg.prior_sd * prob.effective_samples());
    let mut g = vec![0.0f64; prob.m];
    let mut iterations = 0;
    let mut ev = prob.eval(&g, ridge, true);
    loop {
        let gn = norm2(&ev.grad);
        if gn <= cfg.tol || iterations >= cfg.max_iter {
            break;
        }
        let l = cholesky_lower(ev.hess.take().expect("Hessian requested"), ridge)?;
        let d = cholesky_solve(&l, &ev.grad)?;
        // Newton decrement λ² = ∇Fᵀ d ≥ 0.
        let decrement: f64 = ev.grad.iter().zip(&d).map(|(a, b)| a * b).sum();
        // The full step is evaluated with its Hessian, which is reused when it is accepted (the
        // usual case); backtracking uses the cheaper objective alone. In the quadratic region the
        // objective's change is at rounding level and cannot steer a line search: the full Newton
        // step is taken.
        let quadratic = decrement <= 1e-10 * (1.0 + ev.objective.abs());
        let full: Vec<f64> = g.iter().zip(&d).map(|(gv, dv)| gv + dv).collect();
        let full_ev = prob.eval(&full, ridge, true);
        if quadratic
            || (full_ev.objective.is_finite()
                && full_ev.objective >= ev.objective + ARMIJO * decrement)
        {
            g = full;
            ev = full_ev;
            iterations += 1;
            continue;
        }
        let mut t = 0.5;
        let accepted = loop {
            let trial: Vec<f64> = g.iter().zip(&d).map(|(gv, dv)| gv + t * dv).collect();
            let f = prob.objective(&trial, ridge);
            if f.is_finite() && f >= ev.objective + ARMIJO * t * decrement {
                break Some(trial);
            }
            t *= 0.5;
            if t < MIN_STEP {
                break None;
            }
        };
        match accepted {
            Some(trial) => {
                g = trial;
                iterations += 1;
                ev = prob.eval(&g, ridge, true);
            }
            // No measurable increase at any step length outside the quadratic region: stalled
            // (reported through `converged = false`).
            None => break,
        }
    }
    let grad_norm = norm2(&ev.grad);
    let hess = match ev.hess.take() {
        Some(h) => h,
        None => prob.eval(&g, ridge, true).hess.expect("Hessian requested"),
    };
    let l = cholesky_lower(hess, ridge)?;
    let s_eff = prob.effective_samples();
    let std_err = inverse_diagonal(&l)
        .into_iter()
        .map(|v| (v / s_eff).sqrt())
        .collect();
    Ok(CouplingFit {
        couplings: g,
        std_err,
        iterations,
        grad_norm,
        pseudo_log_likelihood: ev.pll,
        converged: grad_norm <= cfg.tol,
        effective_samples: s_eff,
    })
}

/// The coupling flow (SPEC §4 "eq. 5 flow"): layer k's couplings `g^{(k)}` for k = 1…N, each fitted
/// by [`fit_couplings`] on `bases[k−1]` from `samples` exact ancestral samples of the
/// classification network conditioned on the input `x` ([`crate::sample::sample_up`]). The stream
/// is a [`LaneRng`] seeded from (model fingerprint, `seed`, x), so the result is
/// bit-identical from run to run. Element `k−1` of the result is layer k.
///
/// Errors: `x` of the wrong length or not finite, `bases.len() ≠ N`, a basis whose width is not
/// that of its layer, `samples = 0`, and every error of [`fit_couplings`].
pub fn coupling_flow(
    model: &DeepRbm,
    x: &[f32],
    bases: &[OperatorBasis],
    samples: usize,
    seed: u64,
    cfg: &Valid<PseudoLikelihoodParams>,
) -> Result<Vec<CouplingFit>> {
    let widths = model.widths();
    let depth = model.depth();
    if x.len() != model.n_inputs() {
        return Err(Error::shape(format!(
            "coupling flow: input has {} values, the model takes {}",
            x.len(),
            model.n_inputs()
        )));
    }
    if let Some(j) = x.iter().position(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "coupling flow: input x[{j}] = {} is not finite",
            x[j]
        )));
    }
    if bases.len() != depth {
        return Err(Error::shape(format!(
            "coupling flow: {} operator bases for a stack of {depth} layers",
            bases.len()
        )));
    }
    for (k, b) in bases.iter().enumerate() {
        if b.width() != widths[k + 1] {
            return Err(Error::shape(format!(
                "coupling flow: basis {k} has width {}, layer {} has width {}",
                b.width(),
                k + 1,
                widths[k + 1]
            )));
        }
    }
    if samples == 0 {
        return Err(Error::invalid(
            "coupling flow: need at least one ancestral sample",
        ));
    }
    let h = fnv1a64_f32(fnv1a64(b"coupling_flow"), x);
    let mut rng = LaneRng::seed_from_u64(mix_seed(mix_seed(model.fingerprint(), seed), h));
    let batch: Vec<f32> = x.iter().copied().cycle().take(x.len() * samples).collect();
    let layers = crate::sample::sample_up(model, &batch, samples, depth, &mut rng);
    layers
        .iter()
        .zip(bases)
        .map(|(lb, b)| fit_couplings(b, &lb.states, None, cfg))
        .collect()
}
