//! Fisher information with respect to the input (SPEC §6, RG-NOTES §1.6) and to the served output
//! (SPEC §7, paper eq. 19–23), by the chain of stability matrices and by the direct estimator, with
//! the data-processing bounds and the deterministic mean-field comparison (SPEC §6 "two readings").
//!
//! Generic form on a flow `L_1 … L_M` (see [`crate::rg::correlators`] for the flow order): with
//! `J_1 = ∂g(L_1)/∂θ` the exact derivative of the first sampled layer's couplings,
//! * chain: `J = T_M ⋯ T_2 J_1`, `F = Jᵀ C_{MM} J` (and `F(j) = J_jᵀ C_{jj} J_j` at every depth);
//! * direct: `G = Cov(O(L_M), O(L_1)) J_1`, `F = Gᵀ C_{MM}^{-1} G` — no intermediate T, exact when
//!   the basis of `L_M` is complete (and, if `J_1` is not itself exact on `L_1`'s basis, that of
//!   `L_1` too).
//!
//! Classification: θ = x, `J_1 = ∂g^{(1)}/∂x = −W_1` on order-1 rows (RG-NOTES §1.3, A5).
//! Generation: θ = y, `J_1 = ∂g̃^{(N−1)}/∂y`: (P) `−W_Nᵀ` on order-1 rows (eq. 23); (C)
//! `−C̃_{N−1,N−1}^{-1} D` with `D_{:,c} = ⟨O⟩_{t_N(·|e_c)}` (RG-NOTES §5 A2).

use faer::{Mat, MatRef};

use crate::error::{Error, Result};
use crate::linalg::dense;
use crate::model::kernels::{down_probs_f64, up_probs_f64};
use crate::model::DeepRbm;
use crate::params::Valid;
use crate::rg::basis::{check_classification_bases, generation_flow_bases};
use crate::rg::correlators::{jackknife, Estimator, FlowCorrelators};
use crate::rg::operators::OperatorBasis;
use crate::rg::stability::{
    chain_product, check_finite, classification_moments, condition_number, flow_stability,
    generation_moments, spectra, stability_matrix_with, FlowParams, Regularisation,
    RegularisedInverse, Spectra, Stability, StabilityStep,
};
use crate::rg::OutputReading;

/// `∂g^{(1)}/∂x` (`m_1 × n_0`): `−W_1` on the order-1 rows of layer 1's basis, zero on the others
/// (SPEC §6, RG-NOTES §1.3 and A5: `H^{(1)}_x = −(W_1 x + a_1)ᵀ h + const` exactly).
pub fn input_source_jacobian(model: &DeepRbm, basis1: &OperatorBasis) -> Result<Mat<f64>> {
    let r = model.rbm(1);
    if basis1.width() != r.n_up {
        return Err(Error::shape(format!(
            "layer-1 basis is for {} units, layer 1 has {}",
            basis1.width(),
            r.n_up
        )));
    }
    let rows = basis1.order1_rows()?;
    let mut j = Mat::<f64>::zeros(basis1.len(), r.n_down);
    for (i, &row) in rows.iter().enumerate() {
        for c in 0..r.n_down {
            j[(row, c)] = -(r.w[i * r.n_down + c] as f64);
        }
    }
    Ok(j)
}

/// `∂g̃^{(N−1)}/∂y` (`m_{N−1} × n_N`) for the given reading (SPEC §7, RG-NOTES §5 A2):
/// (P) `−W_Nᵀ` on the order-1 rows of layer N−1's basis (paper eq. 23); (C)
/// `−C̃_{N−1,N−1}^{-1} D`, `D_{:,c} = ⟨O⟩_{t_N(·|e_c)} = Π_{i∈S} σ(W_N[c,:] + b_N)_i` analytic, with
/// `c_top = C̃_{N−1,N−1}` (ignored for (P)). Under (C) only sum-zero directions of y are meaningful
/// (the mixture is normalised only on the simplex): use the projected `P F̃ P`.
pub fn output_source_jacobian(
    model: &DeepRbm,
    basis_top: &OperatorBasis,
    reading: OutputReading,
    c_top: MatRef<'_, f64>,
    reg: Regularisation,
) -> Result<Mat<f64>> {
    output_source_jacobian_with(model, basis_top, reading, c_top, reg, false)
}

fn output_source_jacobian_with(
    model: &DeepRbm,
    basis_top: &OperatorBasis,
    reading: OutputReading,
    c_top: MatRef<'_, f64>,
    reg: Regularisation,
    fast: bool,
) -> Result<Mat<f64>> {
    let top = top_rbm_for(model, basis_top)?;
    let nn = top.n_up;
    match reading {
        OutputReading::PlugIn => {
            let rows = basis_top.order1_rows()?;
            let mut j = Mat::<f64>::zeros(basis_top.len(), nn);
            for (u, &row) in rows.iter().enumerate() {
                for c in 0..nn {
                    j[(row, c)] = -(top.w[c * top.n_down + u] as f64);
                }
            }
            Ok(j)
        }
        OutputReading::Mixture => {
            let d = class_conditional_means(model, basis_top)?;
            let inv = if fast {
                RegularisedInverse::fast(c_top, reg)?
            } else {
                RegularisedInverse::new(c_top, reg)?
            };
            let mut j = inv.solve(d.as_ref())?;
            for c in 0..j.ncols() {
                for r in 0..j.nrows() {
                    j[(r, c)] = -j[(r, c)];
                }
            }
            Ok(j)
        }
    }
}

/// RBM N, after checking the model and that `basis_top` is a basis of layer N−1.
fn top_rbm_for<'m>(model: &'m DeepRbm, basis_top: &OperatorBasis) -> Result<&'m crate::Rbm> {
    let top = model.rbm(model.depth());
    if basis_top.width() != top.n_down {
        return Err(Error::shape(format!(
            "layer N−1 basis is for {} units, the layer has {}",
            basis_top.width(),
            top.n_down
        )));
    }
    Ok(top)
}

/// `D_{:,c} = ⟨O(h_{N−1})⟩_{t_N(·|e_c)}` for every class c (`m_{N−1} × n_N`), RG-NOTES §5 A2.
pub fn class_conditional_means(model: &DeepRbm, basis_top: &OperatorBasis) -> Result<Mat<f64>> {
    let top = top_rbm_for(model, basis_top)?;
    let nn = top.n_up;
    let mut d = Mat::<f64>::zeros(basis_top.len(), nn);
    for c in 0..nn {
        let mut e = vec![0.0f64; nn];
        e[c] = 1.0;
        let mu = basis_top.conditional_means_one(&down_probs_f64(top, &e))?;
        for (r, v) in mu.into_iter().enumerate() {
            d[(r, c)] = v;
        }
    }
    Ok(d)
}

/// The chain-rule Fisher matrix of a flow and its ingredients (SPEC §6 and §7).
#[derive(Clone, Debug)]
pub struct ChainFisher {
    /// `F = Jᵀ C_{MM} J`.
    pub fisher: Mat<f64>,
    /// `J = T_M ⋯ T_2 J_1` (`m_M × n`).
    pub jacobian: Mat<f64>,
    /// `F(j) = J_jᵀ C_{jj} J_j` for flow layers j = 1…M (the last equals `fisher`): the Fisher
    /// information of layer j, non-increasing in j for exact correlators (RG-NOTES §4 items 1–2).
    pub per_layer: Vec<Mat<f64>>,
    /// The stability matrices `T_2 … T_M` used.
    pub steps: Vec<Stability>,
}

fn sandwich(j: MatRef<'_, f64>, c: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let cj = dense::mul(c, j)?;
    dense::symmetrise(dense::mul_tn(j, cj.as_ref())?.as_ref())
}

/// Chain-rule Fisher matrix `F = Jᵀ C_{MM} J`, `J = T_M ⋯ T_2 J_1` (SPEC §6, RG-NOTES §1.6; seed
/// eq. 20, 22 on the generation side). Exact to rounding with complete bases and exact correlators.
pub fn chain_fisher(
    corr: &FlowCorrelators,
    j1: MatRef<'_, f64>,
    reg: Regularisation,
) -> Result<ChainFisher> {
    Ok(chain_impl(corr, j1, reg, false)?.0)
}

/// The chain, also returning the inverse of `C_{MM}` when one was formed (M ≥ 2).
fn chain_impl(
    corr: &FlowCorrelators,
    j1: MatRef<'_, f64>,
    reg: Regularisation,
    fast: bool,
) -> Result<(ChainFisher, Option<RegularisedInverse>)> {
    corr.validate()?;
    if j1.nrows() != corr.self_cov[0].nrows() {
        return Err(Error::shape(format!(
            "chain Fisher: J_1 has {} rows, layer 1 has {} operators",
            j1.nrows(),
            corr.self_cov[0].nrows()
        )));
    }
    let mut j = j1.to_owned();
    let mut per_layer = vec![sandwich(j.as_ref(), corr.self_cov[0].as_ref())?];
    let mut steps = Vec::new();
    let mut last_inv = None;
    for k in 2..=corr.depth() {
        let (st, inv) = stability_matrix_with(
            corr.self_cov[k - 1].as_ref(),
            corr.cross_cov[k - 2].as_ref(),
            reg,
            fast,
        )?;
        j = dense::mul(st.t.as_ref(), j.as_ref())?;
        per_layer.push(sandwich(j.as_ref(), corr.self_cov[k - 1].as_ref())?);
        steps.push(st);
        last_inv = Some(inv);
    }
    Ok((
        ChainFisher {
            fisher: per_layer[per_layer.len() - 1].clone(),
            jacobian: j,
            per_layer,
            steps,
        },
        last_inv,
    ))
}

/// Direct estimator `F = Gᵀ C_{MM}^{-1} G`, `G = Cov(O(L_M), O(L_1)) J_1` (SPEC §6, RG-NOTES §1.6:
/// classification `W_1ᵀ Cov(h_1, O_N) C_{NN}^{-1} Cov(O_N, h_1) W_1`). Needs `corr.direct_cov`.
pub fn direct_fisher(
    corr: &FlowCorrelators,
    j1: MatRef<'_, f64>,
    reg: Regularisation,
) -> Result<Mat<f64>> {
    corr.validate()?;
    let inv = RegularisedInverse::new(corr.self_cov[corr.depth() - 1].as_ref(), reg)?;
    direct_impl(corr, j1, &inv)
}

fn direct_impl(
    corr: &FlowCorrelators,
    j1: MatRef<'_, f64>,
    inv: &RegularisedInverse,
) -> Result<Mat<f64>> {
    let d = corr.direct_cov.as_ref().ok_or_else(|| {
        Error::invalid("direct Fisher estimator: the correlators lack Cov(O(L_M), O(L_1))")
    })?;
    let g = dense::mul(d.as_ref(), j1)?;
    let cg = inv.solve(g.as_ref())?;
    dense::symmetrise(dense::mul_tn(g.as_ref(), cg.as_ref())?.as_ref())
}

/// Chain and direct estimates from one set of correlators, sharing the inverse of `C_{MM}`. With
/// one flow layer (M = 1) the direct estimator `(C J)ᵀ C^{-1} (C J)` is `Jᵀ C J`, the chain: it is
/// returned as such, without inverting `C_{11}` (which is singular when a unit never flips).
fn chain_and_direct(
    corr: &FlowCorrelators,
    j1: MatRef<'_, f64>,
    reg: Regularisation,
    fast: bool,
) -> Result<(ChainFisher, Mat<f64>)> {
    let (chain, inv) = chain_impl(corr, j1, reg, fast)?;
    let direct = match inv {
        Some(i) => direct_impl(corr, j1, &i)?,
        None => chain.fisher.clone(),
    };
    Ok((chain, direct))
}

/// Largest eigenvalue of a symmetric matrix and its unit eigenvector, with the sign fixed so that
/// the component of largest modulus is positive (first one on ties).
pub fn top_eigen(f: MatRef<'_, f64>) -> Result<(f64, Vec<f64>)> {
    let (vals, u) = dense::sym_eigen(f)?;
    let n = vals.len();
    if n == 0 {
        return Err(Error::invalid("top eigenvector of an empty matrix"));
    }
    let mut v: Vec<f64> = (0..n).map(|i| u[(i, n - 1)]).collect();
    dense::orient_largest_positive(&mut v);
    Ok((vals[n - 1], v))
}

/// The poison direction (SPEC §7 decision): top eigenpair of `P F̃ P`, `P = I − 11ᵀ/n`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PoisonDirection {
    /// Top eigenvalue of `P F̃ P`.
    pub value: f64,
    /// Unit vector u with `Σ u = 0` (sign: largest component positive; the served sign is chosen
    /// per query, SPEC §8).
    pub direction: Vec<f64>,
}

/// `P F̃_y P` with `P = I − 11ᵀ/n` (outputs sum to a constant, SPEC §7).
pub fn project_sum_zero(f: MatRef<'_, f64>) -> Result<Mat<f64>> {
    let n = f.nrows();
    if f.ncols() != n || n == 0 {
        return Err(Error::shape(format!(
            "sum-zero projection of a {}×{} matrix",
            f.nrows(),
            f.ncols()
        )));
    }
    let p = Mat::from_fn(n, n, |i, j| {
        (if i == j { 1.0 } else { 0.0 }) - 1.0 / n as f64
    });
    let pf = dense::mul(p.as_ref(), f)?;
    dense::symmetrise(dense::mul(pf.as_ref(), p.as_ref())?.as_ref())
}

/// Top eigenvector of `P F̃ P` (SPEC §7 decision). Needs at least 2 outputs: with one there is no
/// non-zero sum-zero direction.
pub fn poison_direction(f_tilde: MatRef<'_, f64>) -> Result<PoisonDirection> {
    if f_tilde.nrows() < 2 {
        return Err(Error::invalid(format!(
            "poison direction: {} output(s) admit no sum-zero direction (need at least 2)",
            f_tilde.nrows()
        )));
    }
    let pfp = project_sum_zero(f_tilde)?;
    let (value, direction) = top_eigen(pfp.as_ref())?;
    Ok(PoisonDirection { value, direction })
}

/// The first-layer bound `W_1ᵀ diag(μ_1(1−μ_1)) W_1`, `μ_1 = σ(W_1 x + a_1)` (SPEC §6): equal to
/// `F_x` for N = 1 and an upper bound (⪰) of `F_x` at every depth (data-processing inequality,
/// RG-NOTES §4 item 1). It is `BᵀB` for the factor of [`first_layer_bound_factor`].
pub fn first_layer_bound(model: &DeepRbm, x: &[f32]) -> Result<Mat<f64>> {
    let b = first_layer_bound_factor(model, x)?;
    dense::mul_tn(b.as_ref(), b.as_ref())
}

/// The factor `B = diag(√(μ_1(1−μ_1))) W_1` (`n_1 × n_0`) of the first-layer bound `BᵀB`: its top
/// eigenpair comes from the `n_1 × n_1` Gram matrix ([`dense::top_eigen_of_gram`]).
pub fn first_layer_bound_factor(model: &DeepRbm, x: &[f32]) -> Result<Mat<f64>> {
    let r = model.rbm(1);
    if x.len() != r.n_down {
        return Err(Error::shape(format!(
            "input has {} values, the model {} inputs",
            x.len(),
            r.n_down
        )));
    }
    check_finite(x, "x")?;
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mu = up_probs_f64(r, &x64);
    let n0 = r.n_down;
    Ok(Mat::from_fn(r.n_up, n0, |i, c| {
        (mu[i] * (1.0 - mu[i])).sqrt() * r.w[i * n0 + c] as f64
    }))
}

/// The output-side bound `W_N diag(σ'(W_Nᵀ y + b_N)) W_Nᵀ` (SPEC §7, reading (P)): `F̃_y` of every
/// depth is ⪯ this (RG-NOTES §4 item 2).
pub fn output_bound(model: &DeepRbm, y: &[f32]) -> Result<Mat<f64>> {
    let top = model.rbm(model.depth());
    if y.len() != top.n_up {
        return Err(Error::shape(format!(
            "output has {} values, the model {} outputs",
            y.len(),
            top.n_up
        )));
    }
    check_finite(y, "y")?;
    let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
    let mu = down_probs_f64(top, &y64);
    let (nn, nd) = (top.n_up, top.n_down);
    Ok(Mat::from_fn(nn, nn, |a, b| {
        (0..nd)
            .map(|j| mu[j] * (1.0 - mu[j]) * top.w[a * nd + j] as f64 * top.w[b * nd + j] as f64)
            .sum()
    }))
}

/// The deterministic mean-field network `μ_k = σ(W_k μ_{k−1} + a_k)`, `μ_0 = x` (SPEC §6 reading
/// (ii), RG-NOTES §4 item 6) — the only reading in which depth can amplify sensitivity.
///
/// What is compared with the stochastic network, precisely:
/// * `jacobian` = `∂μ_N/∂x = Π_k diag(μ_k(1−μ_k)) W_k` (`n_N × n_0`) — compare with the stochastic
///   served-output Jacobian `∂E[h_N|x]/∂x` ([`InputFisherReport::served_jacobian`]);
/// * `fisher` = `Jᵀ diag(1/(μ_N(1−μ_N))) J`, the Fisher information w.r.t. x of the product-Bernoulli
///   output `Π_i Bern(μ_{N,i}(x))` — the mean-field twin of `F_x`, equal to it (and to the
///   first-layer bound) at N = 1, but not bounded by the data-processing inequality for N > 1;
/// * `jtj` = `JᵀJ`, the Euclidean sensitivity of the mean output (its top eigenvalue is the
///   squared spectral norm of J).
#[derive(Clone, Debug)]
pub struct MeanFieldReading {
    /// `μ_k` for k = 1…N.
    pub means: Vec<Vec<f64>>,
    /// `∂μ_N/∂x`.
    pub jacobian: Mat<f64>,
    /// Product-Bernoulli Fisher of the mean-field output.
    pub fisher: Mat<f64>,
    /// Its factor `B = diag(√(μ_N(1−μ_N))) W_N ∂μ_{N−1}/∂x` (`n_N × n_0`): `fisher = BᵀB`, so its top
    /// eigenpair comes from the small Gram matrix ([`dense::top_eigen_of_gram`]).
    pub fisher_factor: Mat<f64>,
    /// The same at every depth k = 1…N (the last equals `fisher`).
    pub per_layer_fisher: Vec<Mat<f64>>,
    /// `JᵀJ`.
    pub jtj: Mat<f64>,
}

/// The mean-field reading at x (see [`MeanFieldReading`]).
pub fn mean_field_reading(model: &DeepRbm, x: &[f32]) -> Result<MeanFieldReading> {
    let n0 = model.n_inputs();
    if x.len() != n0 {
        return Err(Error::shape(format!(
            "input has {} values, the model {n0} inputs",
            x.len()
        )));
    }
    check_finite(x, "x")?;
    let mut mu: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mut j = Mat::from_fn(n0, n0, |a, b| if a == b { 1.0 } else { 0.0 });
    let mut means = Vec::new();
    let mut per_layer_fisher = Vec::new();
    let mut fisher_factor = Mat::zeros(0, 0);
    for k in 1..=model.depth() {
        let r = model.rbm(k);
        let next = up_probs_f64(r, &mu);
        let w = Mat::from_fn(r.n_up, r.n_down, |i, c| r.w[i * r.n_down + c] as f64);
        let wj = dense::mul(w.as_ref(), j.as_ref())?;
        let d: Vec<f64> = next.iter().map(|m| m * (1.0 - m)).collect();
        let b = Mat::from_fn(wj.nrows(), wj.ncols(), |i, c| d[i].sqrt() * wj[(i, c)]);
        per_layer_fisher.push(dense::mul_tn(b.as_ref(), b.as_ref())?);
        fisher_factor = b;
        j = Mat::from_fn(wj.nrows(), wj.ncols(), |i, c| d[i] * wj[(i, c)]);
        means.push(next.clone());
        mu = next;
    }
    let jtj = dense::mul_tn(j.as_ref(), j.as_ref())?;
    Ok(MeanFieldReading {
        means,
        fisher: per_layer_fisher[per_layer_fisher.len() - 1].clone(),
        jacobian: j,
        fisher_factor,
        per_layer_fisher,
        jtj,
    })
}

/// A Fisher matrix with jackknife errors and its top eigenvalue.
///
/// **The reported value is `value`** (the plug-in estimate on all samples; `top`, `top_vector`
/// and every ratio and poison direction derive from it). The delete-one-block jackknife also gives
/// the bias-corrected `B θ̂ − (B − 1) θ̄`, which removes the O(1/S) bias of the ratio estimator
/// (`C^{-1}` of an estimated C) at the price of a larger variance; it is carried alongside, for
/// comparison, and is not used downstream.
#[derive(Clone, Debug)]
pub struct FisherEstimate {
    /// The estimate on all samples (the reported value).
    pub value: Mat<f64>,
    /// Element-wise delete-one-block jackknife standard errors (None with one block).
    pub std_err: Option<Mat<f64>>,
    /// Jackknife bias-corrected estimate `B F̂ − (B − 1) F̄` (None with one block).
    pub bias_corrected: Option<Mat<f64>>,
    /// Largest eigenvalue of `value`.
    pub top: f64,
    /// Its jackknife standard error.
    pub top_std_err: Option<f64>,
    /// Jackknife bias-corrected largest eigenvalue (None with one block).
    pub top_bias_corrected: Option<f64>,
    /// Top eigenvector (unit, largest component positive).
    pub top_vector: Vec<f64>,
}

/// Per-input Fisher analysis of the classification network (SPEC §6), both readings.
#[derive(Clone, Debug)]
pub struct InputFisherReport {
    /// Chain estimate `F_x = J_xᵀ C_{NN} J_x` (the paper's method).
    pub chain: FisherEstimate,
    /// Direct estimate `W_1ᵀ Cov(h_1, O_N) C_{NN}^{-1} Cov(O_N, h_1) W_1` (the default for attacks).
    pub direct: FisherEstimate,
    /// Chain `F_x(k)` at every depth k = 1…N (non-increasing in k up to sampling/truncation).
    pub per_layer: Vec<Mat<f64>>,
    /// First-layer bound `W_1ᵀ diag(μ_1(1−μ_1)) W_1` and its top eigenvalue.
    pub bound: Mat<f64>,
    /// `λ_max` of the first-layer bound.
    pub top_bound: f64,
    /// `λ_max(F_x)/λ_max(bound)` for the chain and direct estimates (≤ 1 for the stochastic net).
    pub ratio_chain: f64,
    /// `λ_max(F_x^{direct})/λ_max(bound)`.
    pub ratio_direct: f64,
    /// Stochastic served-output Jacobian `∂E[h_N|x]/∂x = Cov(h_N, O_1) (−J_1)` (`n_N × n_0`), when
    /// layer N's basis contains all order-1 operators.
    pub served_jacobian: Option<Mat<f64>>,
    /// `T^{(k)}`, k = 2…N, with conditioning and spectra.
    pub steps: Vec<StabilityStep>,
    /// Spectra of `T^{(N)}⋯T^{(2)}` (N ≥ 2).
    pub product: Option<Spectra>,
    /// `cond(C_{NN})`, the matrix the direct estimator inverts (N ≥ 2; at N = 1, `cond(C_{11})`
    /// is reported but not inverted, the direct estimate being the chain `J_1ᵀ C_{11} J_1`).
    pub cond_direct: f64,
    /// The deterministic mean-field reading, and its `λ_max(fisher)/λ_max(bound)`.
    pub mean_field: MeanFieldReading,
    /// `λ_max(mean-field fisher)/λ_max(bound)` — may exceed 1 (SPEC §6 reading (ii)).
    pub ratio_mean_field: f64,
    /// Samples used.
    pub samples: usize,
    /// Correlator estimator used.
    pub estimator: Estimator,
}

/// Per-input Fisher analysis of the served output (SPEC §7).
#[derive(Clone, Debug)]
pub struct OutputFisherReport {
    /// Reading used for `∂/∂y`.
    pub reading: OutputReading,
    /// Chain estimate `F̃_y = J_yᵀ C̃_{00} J_y` (paper eq. 20, 22). Reading (C): its sum-zero
    /// projection `P F̃_y P`, the only part that is a Fisher information of normalised
    /// distributions (the literal `∂/∂y_c` of the mixture also moves its total mass); `top` and the
    /// jackknife errors are of the projected matrix.
    pub chain: FisherEstimate,
    /// Direct estimate `J_1ᵀ Cov(O_{N−1}, O_0) C̃_{00}^{-1} Cov(O_0, O_{N−1}) J_1` (exact with
    /// complete bases on layer 0 — and on layer N−1 under (C)); projected as `chain` under (C).
    pub direct: FisherEstimate,
    /// Chain `F̃` at layers N−1, N−2, …, 0 (flow order); projected under (C).
    pub per_layer: Vec<Mat<f64>>,
    /// The data-processing bound of the reading: (P) `W_N diag(σ'(W_Nᵀ y + b_N)) W_Nᵀ` (RG-NOTES §4
    /// item 2); (C) `P diag(1/y) P`, the Fisher information of the class label itself
    /// ([`crate::rg::mixture_bound`]; infinite at a one-hot y, hence the smoothed class anchor).
    pub bound: Option<Mat<f64>>,
    /// `λ_max(F̃_y^{chain})/λ_max(bound)` for (P); `λ_max(P F̃_y^{chain} P)/λ_max(bound)` for (C)
    /// (None when the (C) bound is infinite). ≤ 1 for the exact F̃.
    pub ratio_chain: Option<f64>,
    /// Poison directions (top eigenvector of `P F̃ P`) from the chain and the direct estimate.
    pub poison_chain: PoisonDirection,
    /// Poison direction from the direct estimate.
    pub poison_direct: PoisonDirection,
    /// `T̃^{(k)}` for k = N−1 … 1 (application order), with conditioning and spectra.
    pub steps: Vec<StabilityStep>,
    /// Spectra of `T̃^{(1)}⋯T̃^{(N−1)}` (N ≥ 2).
    pub product: Option<Spectra>,
    /// `cond(C̃_{00})`, the matrix the direct estimator inverts (N ≥ 2; at N = 1 reported, not
    /// inverted, as on the input side).
    pub cond_direct: f64,
    /// Reading (C) only: `cond(C̃_{N−1,N−1})`, inverted by the source Jacobian `J_1`.
    pub cond_source: Option<f64>,
    /// Samples used.
    pub samples: usize,
    /// Correlator estimator used.
    pub estimator: Estimator,
}

fn flat(m: &Mat<f64>) -> Vec<f64> {
    dense::to_row_major(m.as_ref())
}

/// Chain and direct Fisher estimates of a sampled flow with jackknife errors. `j1_of(corr, fast)`
/// computes `J_1` from a set of correlators (it may depend on them, reading (C)). The full-sample
/// estimate uses eigendecompositions (conditioning reported); the delete-one-block replicates use
/// Cholesky solves (same values to rounding, ~10× cheaper).
type J1Of<'a> = dyn Fn(&FlowCorrelators, bool) -> Result<Mat<f64>> + 'a;

/// Jackknife standard errors and bias-corrected values of each T of the chain.
type TJackknife = Vec<(Mat<f64>, Mat<f64>)>;

/// [`chain_and_direct`], projected onto sum-zero directions (`P F P`, chain per layer too) when
/// `project` (reading (C)).
fn chain_and_direct_projected(
    corr: &FlowCorrelators,
    j1: MatRef<'_, f64>,
    reg: Regularisation,
    fast: bool,
    project: bool,
) -> Result<(ChainFisher, Mat<f64>)> {
    let (mut chain, mut direct) = chain_and_direct(corr, j1, reg, fast)?;
    if project {
        chain.fisher = project_sum_zero(chain.fisher.as_ref())?;
        for f in &mut chain.per_layer {
            *f = project_sum_zero(f.as_ref())?;
        }
        direct = project_sum_zero(direct.as_ref())?;
    }
    Ok((chain, direct))
}

fn estimate_pair(
    fm: &crate::rg::correlators::FlowMoments,
    reg: Regularisation,
    j1_of: &J1Of<'_>,
    project: bool,
) -> Result<(
    FisherEstimate,
    FisherEstimate,
    ChainFisher,
    FlowCorrelators,
    TJackknife,
)> {
    let corr = fm.correlators(None)?;
    let j1 = j1_of(&corr, false)?;
    let (chain, direct) = chain_and_direct_projected(&corr, j1.as_ref(), reg, false, project)?;
    let n = direct.nrows();
    let (tc, vc) = top_eigen(chain.fisher.as_ref())?;
    let (td, vd) = top_eigen(direct.as_ref())?;
    let (mut se_c, mut se_d, mut se_tc, mut se_td) = (None, None, None, None);
    let (mut bc_c, mut bc_d, mut bc_tc, mut bc_td) = (None, None, None, None);
    let mut t_jk = Vec::new();
    if fm.blocks() >= 2 {
        let jk = jackknife(fm.blocks(), |ex| {
            let c = fm.correlators(ex)?;
            let j1 = j1_of(&c, true)?;
            let (fc, fd) = chain_and_direct_projected(&c, j1.as_ref(), reg, true, project)?;
            let mut v = flat(&fc.fisher);
            v.extend(flat(&fd));
            v.push(top_eigen(fc.fisher.as_ref())?.0);
            v.push(top_eigen(fd.as_ref())?.0);
            for st in &fc.steps {
                v.extend(flat(&st.t));
            }
            Ok(v)
        })?;
        let e = &jk.std_err;
        se_c = Some(dense::from_row_major(&e[..n * n], n, n)?);
        se_d = Some(dense::from_row_major(&e[n * n..2 * n * n], n, n)?);
        se_tc = Some(e[2 * n * n]);
        se_td = Some(e[2 * n * n + 1]);
        let b = &jk.bias_corrected;
        bc_c = Some(dense::from_row_major(&b[..n * n], n, n)?);
        bc_d = Some(dense::from_row_major(&b[n * n..2 * n * n], n, n)?);
        bc_tc = Some(b[2 * n * n]);
        bc_td = Some(b[2 * n * n + 1]);
        let mut at = 2 * n * n + 2;
        for st in &chain.steps {
            let (r, c) = (st.t.nrows(), st.t.ncols());
            t_jk.push((
                dense::from_row_major(&e[at..at + r * c], r, c)?,
                dense::from_row_major(&b[at..at + r * c], r, c)?,
            ));
            at += r * c;
        }
    }
    Ok((
        FisherEstimate {
            value: chain.fisher.clone(),
            std_err: se_c,
            bias_corrected: bc_c,
            top: tc,
            top_std_err: se_tc,
            top_bias_corrected: bc_tc,
            top_vector: vc,
        },
        FisherEstimate {
            value: direct,
            std_err: se_d,
            bias_corrected: bc_d,
            top: td,
            top_std_err: se_td,
            top_bias_corrected: bc_td,
            top_vector: vd,
        },
        chain,
        corr,
        t_jk,
    ))
}

/// Attach the jackknife errors and bias-corrected values of T to the steps.
fn attach_t_jackknife(steps: &mut [StabilityStep], t_jk: TJackknife) {
    for (st, (se, bc)) in steps.iter_mut().zip(t_jk) {
        st.t_std_err = Some(se);
        st.t_bias_corrected = Some(bc);
    }
}

fn product_spectra(steps: &[StabilityStep]) -> Result<Option<Spectra>> {
    if steps.is_empty() {
        return Ok(None);
    }
    let ts: Vec<Mat<f64>> = steps.iter().map(|s| s.stability.t.clone()).collect();
    let p = chain_product(&ts)?;
    Ok(Some(spectra(p.as_ref(), None, 0.0)?))
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        f64::NAN
    }
}

/// Sampled per-input Fisher analysis w.r.t. x (SPEC §6): S ancestral samples seeded from (model,
/// `cfg.seed`, x); `bases[k−1]` is layer k's basis (layer 1's must contain all order-1 operators).
/// Chain and direct estimates with jackknife errors, the first-layer bound, the stability matrices
/// with spectra, and the mean-field reading.
pub fn input_fisher(
    model: &DeepRbm,
    x: &[f32],
    bases: &[OperatorBasis],
    cfg: &Valid<FlowParams>,
) -> Result<InputFisherReport> {
    check_classification_bases(model, bases)?;
    let j1 = input_source_jacobian(model, &bases[0])?;
    let fm = classification_moments(model, x, bases, cfg, true)?;
    let (chain, direct, cf, corr, t_jk) =
        estimate_pair(&fm, cfg.reg, &|_, _| Ok(j1.clone()), false)?;
    let mut steps = flow_stability(&corr, cfg.reg, cfg.cc_rcond, |j| j)?;
    attach_t_jackknife(&mut steps, t_jk);
    let bound = first_layer_bound(model, x)?;
    let top_bound = top_eigen(bound.as_ref())?.0;
    let served_jacobian = match bases[bases.len() - 1].order1_rows() {
        Ok(rows) => {
            let d = corr
                .direct_cov
                .as_ref()
                .ok_or_else(|| Error::invalid("direct correlators missing"))?;
            let g = dense::mul(d.as_ref(), j1.as_ref())?;
            Some(Mat::from_fn(rows.len(), g.ncols(), |i, c| -g[(rows[i], c)]))
        }
        Err(_) => None,
    };
    let mean_field = mean_field_reading(model, x)?;
    let top_mf = top_eigen(mean_field.fisher.as_ref())?.0;
    let cond_direct = condition_number(corr.self_cov[corr.depth() - 1].as_ref())?;
    Ok(InputFisherReport {
        ratio_chain: ratio(chain.top, top_bound),
        ratio_direct: ratio(direct.top, top_bound),
        ratio_mean_field: ratio(top_mf, top_bound),
        chain,
        direct,
        per_layer: cf.per_layer,
        bound,
        top_bound,
        served_jacobian,
        product: product_spectra(&steps)?,
        steps,
        cond_direct,
        mean_field,
        samples: fm.samples(),
        estimator: fm.estimator(),
    })
}

/// Sampled per-input Fisher analysis w.r.t. the served output y (SPEC §7): S downward samples
/// seeded from (model, `cfg.seed`, y); `bases[k]` is layer k's basis, k = 0…N−1 (layer N−1's must
/// contain all order-1 operators under (P)). For N = 1 there is no T and the chain is
/// `J_1ᵀ C̃_{00} J_1`.
pub fn output_fisher(
    model: &DeepRbm,
    y: &[f32],
    bases: &[OperatorBasis],
    reading: OutputReading,
    cfg: &Valid<FlowParams>,
) -> Result<OutputFisherReport> {
    let flow = generation_flow_bases(model, bases)?;
    let n = model.depth();
    let fm = generation_moments(model, y, bases, reading, cfg, true)?;
    let top_basis = flow[0].clone();
    let reg = cfg.reg;
    let j1_of = move |c: &FlowCorrelators, fast: bool| -> Result<Mat<f64>> {
        output_source_jacobian_with(
            model,
            &top_basis,
            reading,
            c.self_cov[0].as_ref(),
            reg,
            fast,
        )
    };
    let project = reading == OutputReading::Mixture;
    let (chain, direct, cf, corr, t_jk) = estimate_pair(&fm, cfg.reg, &j1_of, project)?;
    let mut steps = flow_stability(&corr, cfg.reg, cfg.cc_rcond, |j| n + 1 - j)?;
    attach_t_jackknife(&mut steps, t_jk);
    let (bound, ratio_chain) = match reading {
        OutputReading::PlugIn => {
            let b = output_bound(model, y)?;
            let t = top_eigen(b.as_ref())?.0;
            (Some(b), Some(ratio(chain.top, t)))
        }
        OutputReading::Mixture if y.iter().all(|&v| v > 0.0) => {
            let b = crate::rg::mixture_bound(y)?;
            let t = top_eigen(b.as_ref())?.0;
            (Some(b), Some(ratio(chain.top, t)))
        }
        OutputReading::Mixture => (None, None),
    };
    let cond_direct = condition_number(corr.self_cov[corr.depth() - 1].as_ref())?;
    let cond_source = match reading {
        OutputReading::PlugIn => None,
        OutputReading::Mixture => Some(condition_number(corr.self_cov[0].as_ref())?),
    };
    Ok(OutputFisherReport {
        reading,
        poison_chain: poison_direction(chain.value.as_ref())?,
        poison_direct: poison_direction(direct.value.as_ref())?,
        chain,
        direct,
        per_layer: cf.per_layer,
        bound,
        ratio_chain,
        product: product_spectra(&steps)?,
        steps,
        cond_direct,
        cond_source,
        samples: fm.samples(),
        estimator: fm.estimator(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn mean_field_fisher_equals_the_bound_at_depth_one() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let m = DeepRbm::random(&[5, 3], 1.3, &mut rng).unwrap();
        let x = [1.0, 0.0, 1.0, 0.0, 1.0];
        let mf = mean_field_reading(&m, &x).unwrap();
        let b = first_layer_bound(&m, &x).unwrap();
        assert!(dense::rel_frobenius(mf.fisher.as_ref(), b.as_ref()).unwrap() < 1e-14);
        // And for N = 1 the exact Fisher equals the bound too.
        let e = crate::exact::fisher_input(&m, &x).unwrap();
        let e = dense::from_row_major(&e, 5, 5).unwrap();
        assert!(dense::rel_frobenius(e.as_ref(), b.as_ref()).unwrap() < 1e-13);
    }

    #[test]
    fn poison_direction_is_sum_zero_and_unit() {
        let f = Mat::from_fn(3, 3, |i, j| if i == j { 1.0 + i as f64 } else { 0.2 });
        let p = poison_direction(f.as_ref()).unwrap();
        let s: f64 = p.direction.iter().sum();
        let n: f64 = p.direction.iter().map(|v| v * v).sum();
        assert!(s.abs() < 1e-12 && (n - 1.0).abs() < 1e-12);
        assert!(p.value > 0.0);
    }
}
