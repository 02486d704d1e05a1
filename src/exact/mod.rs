//! Exact enumeration of tiny stacks: the reference that samplers and estimators are tested against.
//!
//! A layer of width n ≤ [`MAX_WIDTH`] is enumerated as the 2^n states `s`, unit i = bit i of s.
//! Distributions are dense `Vec<f64>` of length 2^n. The input layer of the classification network
//! is never enumerated (x is given), so n_0 may be large there; every other enumerated layer must
//! be tiny.

use crate::error::{Error, Result};
use crate::model::kernels::{
    down_probs_f64 as down_probs, step_probs, up_probs_f64 as up_probs, StepDir as Dir,
};
use crate::model::{DeepRbm, Rbm};

/// Largest layer width that is enumerated.
pub const MAX_WIDTH: usize = 12;

fn check_width(n: usize, what: &str) -> Result<()> {
    if n > MAX_WIDTH {
        return Err(Error::invalid(format!(
            "exact enumeration of {what}: width {n} exceeds {MAX_WIDTH}"
        )));
    }
    Ok(())
}

/// The binary vector of state `s` on `n` units.
pub fn state(s: usize, n: usize) -> Vec<f64> {
    (0..n).map(|i| ((s >> i) & 1) as f64).collect()
}

/// The state index of a binary vector (values > 0.5 count as 1).
pub fn index_of(h: &[f32]) -> usize {
    h.iter()
        .enumerate()
        .map(|(i, &v)| if v > 0.5 { 1 << i } else { 0 })
        .sum()
}

/// Product-Bernoulli distribution over 2^n states with unit means `p`.
pub fn product_bernoulli(p: &[f64]) -> Vec<f64> {
    let n = p.len();
    (0..1usize << n)
        .map(|s| {
            (0..n)
                .map(|i| if (s >> i) & 1 == 1 { p[i] } else { 1.0 - p[i] })
                .product()
        })
        .collect()
}

/// Push a distribution over the lower layer through the up kernel `t_k(h_k|h_{k-1})`.
pub fn push_up(rbm: &Rbm, q_down: &[f64]) -> Result<Vec<f64>> {
    push_columns(rbm, Dir::Up, q_down, 1)
}

/// Push a distribution over the upper layer through the down kernel `t_k(h_{k-1}|h_k)`.
pub fn push_down(rbm: &Rbm, q_up: &[f64]) -> Result<Vec<f64>> {
    push_columns(rbm, Dir::Down, q_up, 1)
}

/// Exact layer distributions of the classification network (eq. 2) given a real input x:
/// element `k-1` is `q_k(·|x)` over the 2^{n_k} states of layer k, k = 1…N.
pub fn classification_marginals(model: &DeepRbm, x: &[f32]) -> Result<Vec<Vec<f64>>> {
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let r1 = model.rbm(1);
    check_width(r1.n_up, "layer 1")?;
    let mut out = vec![product_bernoulli(&up_probs(r1, &x64))];
    for k in 2..=model.depth() {
        let next = push_up(model.rbm(k), &out[k - 2])?;
        out.push(next);
    }
    Ok(out)
}

/// Exact layer distributions of the generation network (eq. 9) given a real output y, reading (P)
/// of SPEC §7 (y plugged into `σ(W_Nᵀ y + b_N)`): element 0 is `q̃_{N-1}(·|y)`, element 1
/// `q̃_{N-2}`, …, the last `q̃_0(x|y)`.
pub fn generation_marginals(model: &DeepRbm, y: &[f32]) -> Result<Vec<Vec<f64>>> {
    let n = model.depth();
    let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
    let top = model.rbm(n);
    check_width(top.n_down, "layer N-1")?;
    let mut out = vec![product_bernoulli(&down_probs(top, &y64))];
    for k in (1..n).rev() {
        let next = push_down(model.rbm(k), &out[n - k - 1])?;
        out.push(next);
    }
    Ok(out)
}

/// The exact joint distribution of the whole generation chain given a real output y, reading
/// (P): over the states of layers N−1, N−2, …, 0 together, the state index being
/// `s_{N−1} + 2^{n_{N−1}} (s_{N−2} + 2^{n_{N−2}} (…))` (layer N−1 in the lowest bits). For tiny
/// stacks only: the total width of layers 0…N−1 must be at most 20.
pub fn generation_joint(model: &DeepRbm, y: &[f32]) -> Result<Vec<f64>> {
    let n = model.depth();
    let widths = model.widths();
    let total: usize = widths[..n].iter().sum();
    if total > 20 {
        return Err(Error::invalid(format!(
            "exact joint of the generation chain: {total} units (at most 20)"
        )));
    }
    let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
    // Start: q̃_{N−1}(h|y), then multiply in each kernel t_k(h_{k−1}|h_k), k = N−1 … 1.
    let mut joint = product_bernoulli(&down_probs(model.rbm(n), &y64));
    let mut bits = widths[n - 1];
    for k in (1..n).rev() {
        let (nk, nlow) = (widths[k], widths[k - 1]);
        let mut next = vec![0.0; joint.len() << nlow];
        for (s, &p) in joint.iter().enumerate() {
            if p == 0.0 {
                continue;
            }
            // The state of layer k sits in bits [bits − n_k, bits).
            let hk = state((s >> (bits - nk)) & ((1 << nk) - 1), nk);
            let t = product_bernoulli(&down_probs(model.rbm(k), &hk));
            for (l, &q) in t.iter().enumerate() {
                next[s | (l << bits)] = p * q;
            }
        }
        joint = next;
        bits += nlow;
    }
    Ok(joint)
}

/// `KL(p ‖ q)` of two distributions on the same states (terms with `p = 0` are 0).
pub fn kl(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .filter(|(a, _)| **a > 0.0)
        .map(|(a, b)| a * (a / b).ln())
        .sum()
}

/// Unit means `E[h_i]` of a distribution over 2^n states.
pub fn unit_means(q: &[f64], n: usize) -> Vec<f64> {
    let mut m = vec![0.0; n];
    for (s, &w) in q.iter().enumerate() {
        for (i, mi) in m.iter_mut().enumerate() {
            if (s >> i) & 1 == 1 {
                *mi += w;
            }
        }
    }
    m
}

/// The exact served output `ŷ(x) = E[σ(W_N h_{N-1} + a_N)]` and the per-unit variance of
/// `σ(W_N h_{N-1} + a_N)` under `q_{N-1}(·|x)` — the variance of one Rao-Blackwellised sample,
/// so a mean of S samples has standard error `sqrt(var/S)`.
pub fn served_output(model: &DeepRbm, x: &[f32]) -> Result<(Vec<f64>, Vec<f64>)> {
    let n = model.depth();
    let top = model.rbm(n);
    if n == 1 {
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        return Ok((up_probs(top, &x64), vec![0.0; top.n_up]));
    }
    let q = classification_marginals(&DeepRbm::new(model.layers[..n - 1].to_vec())?, x)?;
    let q_last = &q[n - 2];
    let mut mean = vec![0.0; top.n_up];
    let mut sq = vec![0.0; top.n_up];
    for (s, &w) in q_last.iter().enumerate() {
        let p = up_probs(top, &state(s, top.n_down));
        for i in 0..top.n_up {
            mean[i] += w * p[i];
            sq[i] += w * p[i] * p[i];
        }
    }
    let var = mean
        .iter()
        .zip(&sq)
        .map(|(m, s)| (s - m * m).max(0.0))
        .collect();
    Ok((mean, var))
}

/// The exact layerwise objective of eq. 14 for RBM k on a (tiny) data set, and its moments.
#[derive(Clone, Debug)]
pub struct Eq14Exact {
    /// `KL(P_k ‖ t_k)`.
    pub kl: f64,
    /// Data moments under `P_k`: `⟨h_k h_{k-1}ᵀ⟩` (row-major `n_k × n_{k-1}`), `⟨h_k⟩`, `⟨h_{k-1}⟩`.
    pub data_w: Vec<f64>,
    /// Data moments `⟨h_k⟩`.
    pub data_a: Vec<f64>,
    /// Data moments `⟨h_{k-1}⟩`.
    pub data_b: Vec<f64>,
    /// Model moments under the joint RBM `t_k`.
    pub model_w: Vec<f64>,
    /// Model moments `⟨h_k⟩`.
    pub model_a: Vec<f64>,
    /// Model moments `⟨h_{k-1}⟩`.
    pub model_b: Vec<f64>,
}

impl Eq14Exact {
    /// The descent direction of the KL, `−∂KL/∂W = data − model` (and likewise for a, b).
    pub fn ascent_w(&self) -> Vec<f64> {
        self.data_w
            .iter()
            .zip(&self.model_w)
            .map(|(d, m)| d - m)
            .collect()
    }
}

/// The classification network's RBMs 1…k-1 of `model` (none for k = 1), for [`lower_marginal`].
fn lower_network(model: &DeepRbm, k: usize) -> Result<Option<DeepRbm>> {
    if k > 1 {
        Ok(Some(DeepRbm::new(model.layers[..k - 1].to_vec())?))
    } else {
        Ok(None)
    }
}

/// Exact distribution of `h_{k-1}` given x over its `2^{n_{k-1}}` states: the point mass at x
/// for k = 1, else the up-pass marginal through `lower` (from [`lower_network`]).
fn lower_marginal(lower: &Option<DeepRbm>, x: &[f32], n_states: usize) -> Result<Vec<f64>> {
    Ok(match lower {
        None => {
            let mut d = vec![0.0; n_states];
            d[index_of(x)] = 1.0;
            d
        }
        Some(m) => classification_marginals(m, x)?.pop().unwrap_or_default(),
    })
}

/// Add `wt · (ph vᵀ, ph, v)` to the moments `(w, a, b)` (`ph` upper, `v` lower).
fn add_pair_moments(wt: f64, ph: &[f64], v: &[f64], w: &mut [f64], a: &mut [f64], b: &mut [f64]) {
    let nl = v.len();
    for (i, &p) in ph.iter().enumerate() {
        a[i] += wt * p;
        for (wij, &vj) in w[i * nl..(i + 1) * nl].iter_mut().zip(v) {
            *wij += wt * p * vj;
        }
    }
    for (bj, &vj) in b.iter_mut().zip(v) {
        *bj += wt * vj;
    }
}

/// The eq. 14 target distribution `P_k(h_k, h_{k-1}) = (1/D) Σ_d q̃_k(h_k|y_d) q_{k-1}(h_{k-1}|x_d)`
/// as a dense `2^{n_k} × 2^{n_{k-1}}` table (row = upper state).
pub fn eq14_target(
    model: &DeepRbm,
    k: usize,
    xs: &[Vec<f32>],
    ys: &[Vec<f32>],
) -> Result<Vec<f64>> {
    let n = model.depth();
    if xs.is_empty() || xs.len() != ys.len() {
        return Err(Error::invalid(
            "eq14_target: need equally many (≥1) inputs and outputs",
        ));
    }
    let rbm = model.rbm(k);
    check_width(rbm.n_up, "eq. 14 upper layer")?;
    check_width(rbm.n_down, "eq. 14 lower layer")?;
    let (nu, nd) = (1usize << rbm.n_up, 1usize << rbm.n_down);
    let mut p = vec![0.0; nu * nd];
    let lower_model = lower_network(model, k)?;
    for (x, y) in xs.iter().zip(ys) {
        let lower = lower_marginal(&lower_model, x, nd)?;
        let upper = if k == n {
            let mut d = vec![0.0; nu];
            d[index_of(y)] = 1.0;
            d
        } else {
            let g = generation_marginals(model, y)?;
            g[n - 1 - k].clone()
        };
        for (u, &pu) in upper.iter().enumerate() {
            if pu == 0.0 {
                continue;
            }
            for (l, &pl) in lower.iter().enumerate() {
                p[u * nd + l] += pu * pl / xs.len() as f64;
            }
        }
    }
    Ok(p)
}

/// Exact eq. 14 objective and moments for RBM k (1-based) on a tiny data set.
pub fn eq14(model: &DeepRbm, k: usize, xs: &[Vec<f32>], ys: &[Vec<f32>]) -> Result<Eq14Exact> {
    let rbm = model.rbm(k);
    let p = eq14_target(model, k, xs, ys)?;
    let (n_up, n_down) = (rbm.n_up, rbm.n_down);
    let nd = 1usize << n_down;
    // log of the joint's unnormalised weight, and log z by summing out h analytically.
    let log_w = |u: &[f64], l: &[f64]| -> f64 {
        let mut e = 0.0;
        for i in 0..n_up {
            let z: f64 = (0..n_down)
                .map(|j| rbm.w[i * n_down + j] as f64 * l[j])
                .sum::<f64>();
            e += u[i] * (z + rbm.a[i] as f64);
        }
        e + (0..n_down).map(|j| rbm.b[j] as f64 * l[j]).sum::<f64>()
    };
    let mut log_terms = Vec::with_capacity(nd);
    let mut model_w = vec![0.0; n_up * n_down];
    let mut model_a = vec![0.0; n_up];
    let mut model_b = vec![0.0; n_down];
    let mut per_v = Vec::with_capacity(nd);
    for l in 0..nd {
        let v = state(l, n_down);
        let mut lt: f64 = (0..n_down).map(|j| rbm.b[j] as f64 * v[j]).sum();
        let ph = up_probs(rbm, &v);
        for i in 0..n_up {
            let z: f64 = (0..n_down)
                .map(|j| rbm.w[i * n_down + j] as f64 * v[j])
                .sum::<f64>()
                + rbm.a[i] as f64;
            lt += softplus(z);
        }
        log_terms.push(lt);
        per_v.push((v, ph));
    }
    let mx = log_terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = log_terms.iter().map(|t| (t - mx).exp()).sum();
    let log_z = mx + z.ln();
    for (l, (v, ph)) in per_v.iter().enumerate() {
        let tv = (log_terms[l] - log_z).exp();
        add_pair_moments(tv, ph, v, &mut model_w, &mut model_a, &mut model_b);
    }
    let mut kl = 0.0;
    let mut data_w = vec![0.0; n_up * n_down];
    let mut data_a = vec![0.0; n_up];
    let mut data_b = vec![0.0; n_down];
    for u in 0..(1usize << n_up) {
        let us = state(u, n_up);
        for (l, (v, _)) in per_v.iter().enumerate() {
            let pp = p[u * nd + l];
            if pp == 0.0 {
                continue;
            }
            kl += pp * (pp.ln() - (log_w(&us, v) - log_z));
            add_pair_moments(pp, &us, v, &mut data_w, &mut data_a, &mut data_b);
        }
    }
    Ok(Eq14Exact {
        kl,
        data_w,
        data_a,
        data_b,
        model_w,
        model_a,
        model_b,
    })
}

/// Exact data moments `(⟨h_k h_{k-1}ᵀ⟩, ⟨h_k⟩, ⟨h_{k-1}⟩)` of RBM k's up-sampled pairs
/// `P^up_k(h_k, h_{k-1}) = (1/D) Σ_d t_k(h_k|h_{k-1}) q_{k-1}(h_{k-1}|x_d)` (both layers drawn up
/// the classification network from x; the start of the annealed eq. 14 targets,
/// [`crate::train::eq14_pairs_annealed`]). Binary inputs when k = 1.
pub fn eq14_up_moments(
    model: &DeepRbm,
    k: usize,
    xs: &[Vec<f32>],
) -> Result<(Vec<f64>, Vec<f64>, Vec<f64>)> {
    if xs.is_empty() {
        return Err(Error::invalid("eq14_up_moments: need at least one input"));
    }
    let rbm = model.rbm(k);
    check_width(rbm.n_down, "eq. 14 lower layer")?;
    let (nu, nl) = (rbm.n_up, rbm.n_down);
    let lower_model = lower_network(model, k)?;
    let (mut w, mut a, mut b) = (vec![0.0; nu * nl], vec![0.0; nu], vec![0.0; nl]);
    let d = xs.len() as f64;
    for x in xs {
        for (l, &pl) in lower_marginal(&lower_model, x, 1 << nl)?.iter().enumerate() {
            if pl == 0.0 {
                continue;
            }
            let v = state(l, nl);
            add_pair_moments(pl / d, &up_probs(rbm, &v), &v, &mut w, &mut a, &mut b);
        }
    }
    Ok((w, a, b))
}

fn softplus(z: f64) -> f64 {
    if z > 30.0 {
        z
    } else {
        z.exp().ln_1p()
    }
}

// ---------------------------------------------------------------------------------------------
// Exact references for the RG estimators (SPEC §5–7, RG-NOTES Appendix): Fisher matrices by
// propagating dq/dθ through the kernels, and connected correlators of any operator basis under the
// exact joint distribution of consecutive layers.
// ---------------------------------------------------------------------------------------------

/// Push `cols` columns of functions on the source layer (row-major `2^{n_src} × cols`) through the
/// kernel: `out[t, c] = Σ_s K(t|s) in[s, c]`.
fn push_columns(rbm: &Rbm, dir: Dir, input: &[f64], cols: usize) -> Result<Vec<f64>> {
    let (ns, nt) = dir.widths(rbm);
    check_width(ns, "a kernel's source layer")?;
    check_width(nt, "a kernel's target layer")?;
    let (ss, st) = (1usize << ns, 1usize << nt);
    if input.len() != ss * cols {
        return Err(Error::shape(format!(
            "push: {} values for {ss} states × {cols} columns",
            input.len()
        )));
    }
    let mut out = vec![0.0; st * cols];
    for s in 0..ss {
        let row = &input[s * cols..(s + 1) * cols];
        if row.iter().all(|&v| v == 0.0) {
            continue;
        }
        let t = product_bernoulli(&step_probs(rbm, dir, &state(s, ns)));
        for (ti, &k) in t.iter().enumerate() {
            let o = &mut out[ti * cols..(ti + 1) * cols];
            for (oc, &ic) in o.iter_mut().zip(row) {
                *oc += k * ic;
            }
        }
    }
    Ok(out)
}

/// Columns `[q, ∂q/∂θ_0, …]` (row-major, `cols` per state) split into `q` and the row-major `dq`.
fn split_columns(cur: &[f64], cols: usize) -> (Vec<f64>, Vec<f64>) {
    let q = cur.iter().step_by(cols).copied().collect();
    let dq = cur
        .chunks_exact(cols)
        .flat_map(|r| r[1..].iter().copied())
        .collect();
    (q, dq)
}

/// `F = Σ_h dq dqᵀ / q` from `q` and the columns of `dq` (row-major `2^n × p`), row-major `p × p`.
fn fisher_from(q: &[f64], dq: &[f64], p: usize) -> Vec<f64> {
    let mut f = vec![0.0; p * p];
    for (s, &qs) in q.iter().enumerate() {
        if qs <= 0.0 {
            continue;
        }
        let d = &dq[s * p..(s + 1) * p];
        for a in 0..p {
            if d[a] == 0.0 {
                continue;
            }
            let da = d[a] / qs;
            for b in 0..p {
                f[a * p + b] += da * d[b];
            }
        }
    }
    // Symmetrise exactly.
    for a in 0..p {
        for b in (a + 1)..p {
            let m = 0.5 * (f[a * p + b] + f[b * p + a]);
            f[a * p + b] = m;
            f[b * p + a] = m;
        }
    }
    f
}

/// Exact Fisher information w.r.t. x of `q_k(·|x)` at every depth k = 1…N (element `k−1`,
/// row-major `n_0 × n_0`; SPEC §6, RG-NOTES Appendix (i)): `F_k = Σ_h q_k s sᵀ`,
/// `s = ∂ log q_k(h|x)/∂x`, from `∂q_1/∂x = q_1(h) (h − μ_1)ᵀ W_1` pushed through the kernels.
/// `F_1 = W_1ᵀ diag(μ_1(1−μ_1)) W_1`, and `F_k ⪯ F_{k−1}` (data-processing inequality).
pub fn fisher_input_layers(model: &DeepRbm, x: &[f32]) -> Result<Vec<Vec<f64>>> {
    let r1 = model.rbm(1);
    if x.len() != r1.n_down {
        return Err(Error::shape(format!(
            "input has {} values, the model {} inputs",
            x.len(),
            r1.n_down
        )));
    }
    check_width(r1.n_up, "layer 1")?;
    let n0 = r1.n_down;
    let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let mu = up_probs(r1, &x64);
    let q1 = product_bernoulli(&mu);
    // Columns: [q, ∂q/∂x_0, …, ∂q/∂x_{n0−1}].
    let cols = 1 + n0;
    let mut cur = vec![0.0; q1.len() * cols];
    for (s, &qs) in q1.iter().enumerate() {
        let h = state(s, r1.n_up);
        cur[s * cols] = qs;
        for c in 0..n0 {
            let g: f64 = (0..r1.n_up)
                .map(|i| (h[i] - mu[i]) * r1.w[i * n0 + c] as f64)
                .sum();
            cur[s * cols + 1 + c] = qs * g;
        }
    }
    let mut out = Vec::with_capacity(model.depth());
    let (q, dq) = split_columns(&cur, cols);
    out.push(fisher_from(&q, &dq, n0));
    for k in 2..=model.depth() {
        cur = push_columns(model.rbm(k), Dir::Up, &cur, cols)?;
        let (q, dq) = split_columns(&cur, cols);
        out.push(fisher_from(&q, &dq, n0));
    }
    Ok(out)
}

/// Exact Fisher information w.r.t. x of the output distribution `q_N(·|x)` (row-major
/// `n_0 × n_0`), SPEC §6 "independent check".
pub fn fisher_input(model: &DeepRbm, x: &[f32]) -> Result<Vec<f64>> {
    fisher_input_layers(model, x)?
        .pop()
        .ok_or_else(|| Error::invalid("a model without layers"))
}

/// The layer-(N−1) distribution of the generation network and its derivative w.r.t. y, as
/// columns `[q, ∂q/∂y_0, …]` (row-major `2^{n_{N−1}} × (1 + n_N)`).
fn generation_top(
    model: &DeepRbm,
    y: &[f32],
    reading: crate::rg::OutputReading,
) -> Result<Vec<f64>> {
    let top = model.rbm(model.depth());
    let (nn, nd) = (top.n_up, top.n_down);
    if y.len() != nn {
        return Err(Error::shape(format!(
            "output has {} values, the model {nn} outputs",
            y.len()
        )));
    }
    check_width(nd, "layer N-1")?;
    let cols = 1 + nn;
    let ss = 1usize << nd;
    let mut cur = vec![0.0; ss * cols];
    match reading {
        crate::rg::OutputReading::PlugIn => {
            let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
            let mu = down_probs(top, &y64);
            let q = product_bernoulli(&mu);
            for (s, &qs) in q.iter().enumerate() {
                let h = state(s, nd);
                cur[s * cols] = qs;
                for c in 0..nn {
                    let g: f64 = (0..nd)
                        .map(|j| (h[j] - mu[j]) * top.w[c * nd + j] as f64)
                        .sum();
                    cur[s * cols + 1 + c] = qs * g;
                }
            }
        }
        crate::rg::OutputReading::Mixture => {
            let w = crate::rg::mixture_weights(y)?;
            for c in 0..nn {
                let mut e = vec![0.0; nn];
                e[c] = 1.0;
                let t = product_bernoulli(&down_probs(top, &e));
                for (s, &ts) in t.iter().enumerate() {
                    cur[s * cols] += w[c] * ts;
                    cur[s * cols + 1 + c] = ts;
                }
            }
        }
    }
    Ok(cur)
}

/// Exact layer distributions of the generation network under reading (C) of SPEC §7,
/// `q̃_{N−1}(h|y) = Σ_c y_c t_N(h|e_c)` (y a probability vector): element 0 is layer N−1, …, the
/// last `q̃_0(x|y)`.
pub fn generation_marginals_mixture(model: &DeepRbm, y: &[f32]) -> Result<Vec<Vec<f64>>> {
    let cur = generation_top(model, y, crate::rg::OutputReading::Mixture)?;
    let cols = 1 + model.n_outputs();
    let mut out = vec![cur.iter().step_by(cols).copied().collect::<Vec<f64>>()];
    let n = model.depth();
    for k in (1..n).rev() {
        let next = push_down(model.rbm(k), &out[n - k - 1])?;
        out.push(next);
    }
    Ok(out)
}

/// Exact Fisher information w.r.t. y of `q̃_k(·|y)` at layers k = N−1, N−2, …, 0 (element 0 is
/// layer N−1; row-major `n_N × n_N`), SPEC §7. Reading (P): `∂q̃_{N−1}/∂y = q̃ (h − μ)ᵀ W_Nᵀ`.
/// Reading (C): `∂q̃_{N−1}/∂y_c = t_N(·|e_c)` (the literal derivative of the mixture; only its
/// sum-zero projection `P F̃ P` is a Fisher information of normalised distributions).
pub fn fisher_output_layers(
    model: &DeepRbm,
    y: &[f32],
    reading: crate::rg::OutputReading,
) -> Result<Vec<Vec<f64>>> {
    let nn = model.n_outputs();
    let cols = 1 + nn;
    let mut cur = generation_top(model, y, reading)?;
    let (q, dq) = split_columns(&cur, cols);
    let mut out = vec![fisher_from(&q, &dq, nn)];
    for k in (1..model.depth()).rev() {
        cur = push_columns(model.rbm(k), Dir::Down, &cur, cols)?;
        let (q, dq) = split_columns(&cur, cols);
        out.push(fisher_from(&q, &dq, nn));
    }
    Ok(out)
}

/// Exact Fisher information w.r.t. y of `q̃_0(·|y)` (row-major `n_N × n_N`), SPEC §7 eq. 20.
pub fn fisher_output(
    model: &DeepRbm,
    y: &[f32],
    reading: crate::rg::OutputReading,
) -> Result<Vec<f64>> {
    fisher_output_layers(model, y, reading)?
        .pop()
        .ok_or_else(|| Error::invalid("a model without layers"))
}

/// Exact couplings of a strictly positive distribution `q` over the 2^n states of a layer on the
/// monomials of `basis` (any subset of the complete basis), by Möbius inversion of
/// `log q(h) = −Σ_S g_S O_S(h) − log Z` (RG-NOTES §1.3):
/// `g_S = −Σ_{R⊆S} (−1)^{|S|−|R|} log q(1_R)`, `1_R` the state with exactly the units of R on.
/// Independent of every correlator: the reference the stability matrices are checked against.
pub fn couplings_from_distribution(
    q: &[f64],
    basis: &crate::rg::OperatorBasis,
) -> Result<Vec<f64>> {
    let n = basis.width();
    check_width(n, "a coupling layer")?;
    if q.len() != 1usize << n {
        return Err(Error::shape(format!(
            "couplings: {} probabilities for {} states",
            q.len(),
            1usize << n
        )));
    }
    if let Some(s) = q.iter().position(|&v| !(v > 0.0 && v.is_finite())) {
        return Err(Error::invalid(format!(
            "couplings need a strictly positive distribution; q[{s}] = {}",
            q[s]
        )));
    }
    let mut g = Vec::with_capacity(basis.len());
    for mono in basis.monomials() {
        let bits: usize = mono.iter().map(|&i| 1usize << i).sum();
        // Enumerate the subsets R of S as sub-masks of `bits`.
        let mut acc = 0.0;
        let mut r = bits;
        loop {
            let sign = if (bits.count_ones() - r.count_ones()).is_multiple_of(2) {
                1.0
            } else {
                -1.0
            };
            acc += sign * q[r].ln();
            if r == 0 {
                break;
            }
            r = (r - 1) & bits;
        }
        g.push(-acc);
    }
    Ok(g)
}

/// Operator values at every state of a layer: `2^n × m` (row-major in a `Mat`).
fn operator_table(basis: &crate::rg::OperatorBasis) -> Result<faer::Mat<f64>> {
    let n = basis.width();
    check_width(n, "an operator layer")?;
    let mut t = faer::Mat::<f64>::zeros(1 << n, basis.len());
    let mut v = vec![0.0; basis.len()];
    for s in 0..(1usize << n) {
        basis.evaluate_one(&state(s, n), &mut v);
        for (a, &x) in v.iter().enumerate() {
            t[(s, a)] = x;
        }
    }
    Ok(t)
}

/// `Σ_s q(s) (A_s − ā)(B_s − b̄)ᵀ` with `ā = Σ q A`, `b̄ = Σ q B` (rows of A, B indexed by state).
fn weighted_cov(q: &[f64], a: &faer::Mat<f64>, b: &faer::Mat<f64>) -> faer::Mat<f64> {
    let mean = |m: &faer::Mat<f64>| -> Vec<f64> {
        (0..m.ncols())
            .map(|j| q.iter().enumerate().map(|(s, &w)| w * m[(s, j)]).sum())
            .collect()
    };
    let (ma, mb) = (mean(a), mean(b));
    let mut c = faer::Mat::<f64>::zeros(a.ncols(), b.ncols());
    for (s, &w) in q.iter().enumerate() {
        if w == 0.0 {
            continue;
        }
        for i in 0..a.ncols() {
            let da = w * (a[(s, i)] - ma[i]);
            if da == 0.0 {
                continue;
            }
            for j in 0..b.ncols() {
                c[(i, j)] += da * (b[(s, j)] - mb[j]);
            }
        }
    }
    c
}

/// Exact correlators of a flow: `q1` the distribution of `L_1`, `steps[j−2]` the kernel from `L_{j−1}`
/// to `L_j`, `bases[j−1]` the basis of `L_j`.
fn flow_correlators(
    q1: Vec<f64>,
    steps: &[(&Rbm, Dir)],
    bases: &[crate::rg::OperatorBasis],
    direct: bool,
) -> Result<crate::rg::FlowCorrelators> {
    let m = bases.len();
    if steps.len() + 1 != m {
        return Err(Error::shape(format!(
            "exact correlators: {m} bases for {} layers",
            steps.len() + 1
        )));
    }
    for (j, (r, d)) in steps.iter().enumerate() {
        let (ns, nt) = d.widths(r);
        if bases[j].width() != ns || bases[j + 1].width() != nt {
            return Err(Error::shape(format!(
                "exact correlators: bases of widths {} → {} for a {ns} → {nt} kernel",
                bases[j].width(),
                bases[j + 1].width()
            )));
        }
    }
    if q1.len() != 1usize << bases[0].width() {
        return Err(Error::shape("exact correlators: q_1 has the wrong length"));
    }
    // Layer distributions.
    let mut qs = vec![q1];
    for (j, (r, d)) in steps.iter().enumerate() {
        let next = push_columns(r, *d, &qs[j], 1)?;
        qs.push(next);
    }
    let tables = bases
        .iter()
        .map(operator_table)
        .collect::<Result<Vec<_>>>()?;
    // Conditional means E[O(L_j) | L_{j−1} = s] for every source state, j = 2…M.
    let cond = |j: usize| -> Result<faer::Mat<f64>> {
        let (r, d) = steps[j - 2];
        let ns = bases[j - 2].width();
        let mut t = faer::Mat::<f64>::zeros(1 << ns, bases[j - 1].len());
        for s in 0..(1usize << ns) {
            let mu = bases[j - 1].conditional_means_one(&step_probs(r, d, &state(s, ns)))?;
            for (a, v) in mu.into_iter().enumerate() {
                t[(s, a)] = v;
            }
        }
        Ok(t)
    };
    let self_cov: Vec<faer::Mat<f64>> = (0..m)
        .map(|j| weighted_cov(&qs[j], &tables[j], &tables[j]))
        .collect();
    let mut cross_cov = Vec::with_capacity(m.saturating_sub(1));
    for j in 2..=m {
        let mu = cond(j)?;
        cross_cov.push(weighted_cov(&qs[j - 2], &mu, &tables[j - 2]));
    }
    let direct_cov = if !direct {
        None
    } else if m == 1 {
        Some(self_cov[0].clone())
    } else if m == 2 {
        Some(cross_cov[0].clone())
    } else {
        // P(L_{M−1} = t | L_1 = s) for all s: push the identity through the kernels 2…M−1.
        let n1 = 1usize << bases[0].width();
        let mut p = vec![0.0; n1 * n1];
        for s in 0..n1 {
            p[s * n1 + s] = 1.0;
        }
        for (r, d) in &steps[..m - 2] {
            p = push_columns(r, *d, &p, n1)?;
        }
        let mu = cond(m)?; // rows: states of L_{M−1}
        let nt = mu.nrows();
        // E[O(L_M) | L_1 = s] = Σ_t P(t|s) μ(t).
        let e = faer::Mat::from_fn(n1, mu.ncols(), |s, a| {
            (0..nt).map(|t| p[t * n1 + s] * mu[(t, a)]).sum()
        });
        Some(weighted_cov(&qs[0], &e, &tables[0]))
    };
    Ok(crate::rg::FlowCorrelators {
        self_cov,
        cross_cov,
        direct_cov,
        source_cov: None,
    })
}

/// Exact correlators of the classification flow given x (SPEC §5): `bases[k−1]` is the basis of
/// layer k = 1…N; `C_{k,k}` under `q_k(·|x)`, `C_{k,k−1}` under the joint
/// `t_k(h_k|h_{k−1}) q_{k−1}(h_{k−1}|x)`, and with `direct` also `Cov(O(h_N), O(h_1))`.
pub fn classification_correlators(
    model: &DeepRbm,
    x: &[f32],
    bases: &[crate::rg::OperatorBasis],
    direct: bool,
) -> Result<crate::rg::FlowCorrelators> {
    if x.len() != model.n_inputs() {
        return Err(Error::shape(format!(
            "input has {} values, the model {} inputs",
            x.len(),
            model.n_inputs()
        )));
    }
    let n = model.depth();
    if bases.len() != n {
        return Err(Error::shape(format!(
            "exact classification correlators: {n} layers need {n} bases, got {}",
            bases.len()
        )));
    }
    let q1 = classification_marginals(&DeepRbm::new(vec![model.rbm(1).clone()])?, x)?
        .pop()
        .ok_or_else(|| Error::invalid("no layer 1"))?;
    let steps: Vec<(&Rbm, Dir)> = (2..=n).map(|k| (model.rbm(k), Dir::Up)).collect();
    flow_correlators(q1, &steps, bases, direct)
}

/// Exact correlators of the generation flow given y (SPEC §5, §7), in flow order (layer N−1
/// first): `bases[k]` is the basis of layer k = 0…N−1. `C̃_{k−1,k}` is under the joint
/// `t_k(h_{k−1}|h_k) q̃_k(h_k|y)`; reading (P) or (C) fixes `q̃_{N−1}`. With `direct`, also
/// `Cov(O(h_0), O(h_{N−1}))`.
pub fn generation_correlators(
    model: &DeepRbm,
    y: &[f32],
    bases: &[crate::rg::OperatorBasis],
    reading: crate::rg::OutputReading,
    direct: bool,
) -> Result<crate::rg::FlowCorrelators> {
    let n = model.depth();
    if bases.len() != n {
        return Err(Error::shape(format!(
            "exact generation correlators: layers 0…N−1 need {n} bases, got {}",
            bases.len()
        )));
    }
    let top = generation_top(model, y, reading)?;
    let cols = 1 + model.n_outputs();
    let q1: Vec<f64> = top.iter().step_by(cols).copied().collect();
    let steps: Vec<(&Rbm, Dir)> = (1..n).rev().map(|k| (model.rbm(k), Dir::Down)).collect();
    let flow: Vec<crate::rg::OperatorBasis> = bases.iter().rev().cloned().collect();
    flow_correlators(q1, &steps, &flow, direct)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn stack(widths: &[usize], scale: f32, seed: u64) -> DeepRbm {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let mut m = DeepRbm::random(widths, scale, &mut rng).unwrap();
        for l in &mut m.layers {
            for (i, a) in l.a.iter_mut().enumerate() {
                *a = 0.3 * ((i as f32) - 1.0);
            }
            for (j, b) in l.b.iter_mut().enumerate() {
                *b = -0.2 * (j as f32 % 3.0);
            }
        }
        m
    }

    #[test]
    fn distributions_are_normalised() {
        let m = stack(&[5, 4, 3, 2], 1.0, 1);
        for q in classification_marginals(&m, &[1.0, 0.0, 0.5, 1.0, 0.0]).unwrap() {
            assert!((q.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        for q in generation_marginals(&m, &[0.0, 1.0]).unwrap() {
            assert!((q.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn kl_is_zero_iff_gradient_vanishes_on_its_own_samples() {
        // The eq. 14 gradient equals the numerical derivative of the exact KL.
        let mut m = stack(&[3, 3, 2], 0.8, 2);
        let xs = vec![
            vec![1.0, 0.0, 1.0],
            vec![0.0, 1.0, 1.0],
            vec![1.0, 1.0, 0.0],
        ];
        let ys = vec![vec![1.0, 0.0], vec![0.0, 1.0], vec![0.0, 1.0]];
        for k in 1..=2 {
            let e = eq14(&m, k, &xs, &ys).unwrap();
            let g = e.ascent_w();
            for idx in [0usize, 2, 4] {
                let h = 1e-3f32;
                let w0 = m.layers[k - 1].w[idx];
                m.layers[k - 1].w[idx] = w0 + h;
                let kp = eq14(&m, k, &xs, &ys).unwrap().kl;
                m.layers[k - 1].w[idx] = w0 - h;
                let km = eq14(&m, k, &xs, &ys).unwrap().kl;
                m.layers[k - 1].w[idx] = w0;
                let fd = (kp - km) / (2.0 * h as f64);
                // -dKL/dW = data - model
                assert!(
                    (fd + g[idx]).abs() < 1e-4,
                    "k={k} idx={idx}: fd {fd} vs {}",
                    -g[idx]
                );
            }
            assert!(e.kl >= 0.0);
        }
    }
}
