//! Exact enumeration of tiny stacks: the reference that samplers and estimators are tested against.
//!
//! A layer of width n ≤ [`MAX_WIDTH`] is enumerated as the 2^n states `s`, unit i = bit i of s.
//! Distributions are dense `Vec<f64>` of length 2^n. The input layer of the classification network
//! is never enumerated (x is given), so n_0 may be large there; every other enumerated layer must
//! be tiny.

use crate::error::{Error, Result};
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

fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
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

/// Up probabilities `σ(W h + a)` of an RBM in f64, for a real lower vector.
pub fn up_probs(rbm: &Rbm, h: &[f64]) -> Vec<f64> {
    (0..rbm.n_up)
        .map(|i| {
            let z: f64 = (0..rbm.n_down)
                .map(|j| rbm.w[i * rbm.n_down + j] as f64 * h[j])
                .sum::<f64>()
                + rbm.a[i] as f64;
            sigmoid(z)
        })
        .collect()
}

/// Down probabilities `σ(Wᵀ h + b)` of an RBM in f64, for a real upper vector.
pub fn down_probs(rbm: &Rbm, h: &[f64]) -> Vec<f64> {
    (0..rbm.n_down)
        .map(|j| {
            let z: f64 = (0..rbm.n_up)
                .map(|i| rbm.w[i * rbm.n_down + j] as f64 * h[i])
                .sum::<f64>()
                + rbm.b[j] as f64;
            sigmoid(z)
        })
        .collect()
}

/// Push a distribution over the lower layer through the up kernel `t_k(h_k|h_{k-1})`.
pub fn push_up(rbm: &Rbm, q_down: &[f64]) -> Result<Vec<f64>> {
    check_width(rbm.n_up, "an upper layer")?;
    let mut q = vec![0.0; 1 << rbm.n_up];
    for (s, &w) in q_down.iter().enumerate() {
        if w == 0.0 {
            continue;
        }
        let t = product_bernoulli(&up_probs(rbm, &state(s, rbm.n_down)));
        for (qi, ti) in q.iter_mut().zip(t) {
            *qi += w * ti;
        }
    }
    Ok(q)
}

/// Push a distribution over the upper layer through the down kernel `t_k(h_{k-1}|h_k)`.
pub fn push_down(rbm: &Rbm, q_up: &[f64]) -> Result<Vec<f64>> {
    check_width(rbm.n_down, "a lower layer")?;
    let mut q = vec![0.0; 1 << rbm.n_down];
    for (s, &w) in q_up.iter().enumerate() {
        if w == 0.0 {
            continue;
        }
        let t = product_bernoulli(&down_probs(rbm, &state(s, rbm.n_up)));
        for (qi, ti) in q.iter_mut().zip(t) {
            *qi += w * ti;
        }
    }
    Ok(q)
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
    pub data_a: Vec<f64>,
    pub data_b: Vec<f64>,
    /// Model moments under the joint RBM `t_k`.
    pub model_w: Vec<f64>,
    pub model_a: Vec<f64>,
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
    let lower_model = if k > 1 {
        Some(DeepRbm::new(model.layers[..k - 1].to_vec())?)
    } else {
        None
    };
    for (x, y) in xs.iter().zip(ys) {
        let lower = match &lower_model {
            None => {
                let mut d = vec![0.0; nd];
                d[index_of(x)] = 1.0;
                d
            }
            Some(m) => classification_marginals(m, x)?.pop().unwrap_or_default(),
        };
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
        for i in 0..n_up {
            model_a[i] += tv * ph[i];
            for j in 0..n_down {
                model_w[i * n_down + j] += tv * ph[i] * v[j];
            }
        }
        for j in 0..n_down {
            model_b[j] += tv * v[j];
        }
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
            for i in 0..n_up {
                data_a[i] += pp * us[i];
                for j in 0..n_down {
                    data_w[i * n_down + j] += pp * us[i] * v[j];
                }
            }
            for j in 0..n_down {
                data_b[j] += pp * v[j];
            }
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

fn softplus(z: f64) -> f64 {
    if z > 30.0 {
        z
    } else {
        z.exp().ln_1p()
    }
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
