//! A thief's generic learner (SPEC §9 (b)): a one-hidden-layer ReLU network with a softmax output,
//! trained by cross-entropy on served vectors (normalised to probabilities). The distillation
//! attackers train it; the MAD and GRAD² defences use a randomly initialised one as their
//! surrogate of the attacker (SPEC §11).
//! Everything is f64 and sequential; the sizes (64 inputs, 100 hidden units, 10 classes, 1000
//! queries) make that cheap, and the clone's seed fixes every number.

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use crate::error::{check_at_least, check_positive, Error, Result};
use crate::model::standard_normal;
use crate::params::{Params, Valid};

/// Settings of the distilled clone.
#[derive(Clone, Debug, Serialize)]
pub struct MlpParams {
    /// Hidden ReLU units.
    pub hidden: usize,
    /// Passes over the queries.
    pub epochs: usize,
    /// Minibatch size.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
}

impl Default for MlpParams {
    /// 100 hidden units, 60 epochs of minibatches of 32, Adam at 3e-3, weight decay 1e-4.
    fn default() -> Self {
        MlpParams {
            hidden: 100,
            epochs: 60,
            batch: 32,
            lr: 3e-3,
            weight_decay: 1e-4,
        }
    }
}

impl Params for MlpParams {
    fn check(self) -> Result<Valid<Self>> {
        check_at_least("distillation: hidden units", self.hidden, 1)?;
        check_at_least("distillation: batch", self.batch, 1)?;
        check_positive("distillation: learning rate", self.lr)?;
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::invalid(format!(
                "distillation: weight decay = {} (must be finite and ≥ 0)",
                self.weight_decay
            )));
        }
        Ok(Valid::checked(self))
    }
}

/// `z = W2 relu(W1 x + b1) + b2`, `p = softmax(z)`. Row-major weights.
#[derive(Clone, Debug)]
pub struct Mlp {
    /// Inputs.
    pub n_in: usize,
    /// Hidden ReLU units.
    pub hidden: usize,
    /// Outputs (classes).
    pub n_out: usize,
    /// `W1`, `hidden × n_in`.
    pub w1: Vec<f64>,
    /// `b1`.
    pub b1: Vec<f64>,
    /// `W2`, `n_out × hidden`.
    pub w2: Vec<f64>,
    /// `b2`.
    pub b2: Vec<f64>,
}

/// Activations of one forward pass.
struct Forward {
    pre: Vec<f64>,
    h: Vec<f64>,
    z: Vec<f64>,
}

fn softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = z.iter().map(|&v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

impl Mlp {
    /// He-initialised weights from `seed`.
    pub fn new(n_in: usize, hidden: usize, n_out: usize, seed: u64) -> Result<Self> {
        if n_in == 0 || hidden == 0 || n_out < 2 {
            return Err(Error::invalid(format!(
                "MLP sizes {n_in}-{hidden}-{n_out}: need inputs, hidden units and ≥ 2 outputs"
            )));
        }
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let s1 = (2.0 / n_in as f64).sqrt();
        let s2 = (2.0 / hidden as f64).sqrt();
        Ok(Mlp {
            n_in,
            hidden,
            n_out,
            w1: (0..hidden * n_in)
                .map(|_| s1 * standard_normal(&mut rng) as f64)
                .collect(),
            b1: vec![0.0; hidden],
            w2: (0..n_out * hidden)
                .map(|_| s2 * standard_normal(&mut rng) as f64)
                .collect(),
            b2: vec![0.0; n_out],
        })
    }

    fn forward(&self, x: &[f64]) -> Forward {
        let pre: Vec<f64> = (0..self.hidden)
            .map(|i| {
                let row = &self.w1[i * self.n_in..(i + 1) * self.n_in];
                self.b1[i] + row.iter().zip(x).map(|(a, b)| a * b).sum::<f64>()
            })
            .collect();
        let h: Vec<f64> = pre.iter().map(|&v| v.max(0.0)).collect();
        let z = (0..self.n_out)
            .map(|c| {
                let row = &self.w2[c * self.hidden..(c + 1) * self.hidden];
                self.b2[c] + row.iter().zip(&h).map(|(a, b)| a * b).sum::<f64>()
            })
            .collect();
        Forward { pre, h, z }
    }

    /// Class probabilities of one input.
    pub fn probs(&self, x: &[f64]) -> Vec<f64> {
        softmax(&self.forward(x).z)
    }

    /// Predicted class of one input.
    pub fn class(&self, x: &[f64]) -> usize {
        let z = self.forward(x).z;
        let mut best = 0;
        for (c, &v) in z.iter().enumerate() {
            if v > z[best] {
                best = c;
            }
        }
        best
    }

    /// The Jacobian `∂z/∂x` (`n_out × n_in`, row-major) at x.
    pub fn logit_jacobian(&self, x: &[f64]) -> Vec<f64> {
        let f = self.forward(x);
        let mut j = vec![0.0; self.n_out * self.n_in];
        for i in 0..self.hidden {
            if f.pre[i] <= 0.0 {
                continue;
            }
            let w1 = &self.w1[i * self.n_in..(i + 1) * self.n_in];
            for c in 0..self.n_out {
                let g = self.w2[c * self.hidden + i];
                for (o, &w) in j[c * self.n_in..(c + 1) * self.n_in].iter_mut().zip(w1) {
                    *o += g * w;
                }
            }
        }
        j
    }

    /// Logit margin `z_c − max_{j≠c} z_j` and its gradient w.r.t. x.
    pub fn margin(&self, x: &[f64], class: usize) -> Result<(f64, Vec<f64>)> {
        if class >= self.n_out || x.len() != self.n_in {
            return Err(Error::invalid(format!(
                "MLP margin of class {class} for an input of {} values ({} inputs, {} outputs)",
                x.len(),
                self.n_in,
                self.n_out
            )));
        }
        let z = self.forward(x).z;
        let mut other = usize::MAX;
        for (c, &v) in z.iter().enumerate() {
            if c != class && (other == usize::MAX || v > z[other]) {
                other = c;
            }
        }
        let j = self.logit_jacobian(x);
        let grad = (0..self.n_in)
            .map(|i| j[class * self.n_in + i] - j[other * self.n_in + i])
            .collect();
        Ok((z[class] - z[other], grad))
    }

    /// Fisher information of the categorical output w.r.t. the input,
    /// `F = Jᵀ (diag p − p pᵀ) J` (`n_in × n_in`, row-major) — the distilled clone's analogue of
    /// the input Fisher information of SPEC §6.
    pub fn input_fisher(&self, x: &[f64]) -> Vec<f64> {
        let p = self.probs(x);
        let j = self.logit_jacobian(x);
        let n = self.n_in;
        // A = (diag p − p pᵀ) J = diag(p) J − p (pᵀ J).
        let mut pj = vec![0.0; n];
        for c in 0..self.n_out {
            for i in 0..n {
                pj[i] += p[c] * j[c * n + i];
            }
        }
        let mut f = vec![0.0; n * n];
        for c in 0..self.n_out {
            let jc = &j[c * n..(c + 1) * n];
            for a in 0..n {
                // Σ_c p_c (J_ca − pj_a)(J_cb − pj_b) = Jᵀ(diag p − ppᵀ)J.
                let da = jc[a] - pj[a];
                if da == 0.0 {
                    continue;
                }
                for b in 0..n {
                    f[a * n + b] += p[c] * da * (jc[b] - pj[b]);
                }
            }
        }
        f
    }

    /// Mean cross-entropy `−Σ_c t_c log p_c` over rows, with its gradient in the parameter order
    /// (w1, b1, w2, b2).
    fn loss_and_gradient(&self, x: &[f64], t: &[f64], rows: &[usize]) -> (f64, Vec<f64>) {
        let (n, h, c) = (self.n_in, self.hidden, self.n_out);
        let mut g = vec![0.0; h * n + h + c * h + c];
        let (gw1, rest) = g.split_at_mut(h * n);
        let (gb1, rest) = rest.split_at_mut(h);
        let (gw2, gb2) = rest.split_at_mut(c * h);
        let mut loss = 0.0;
        let scale = 1.0 / rows.len() as f64;
        for &r in rows {
            let xr = &x[r * n..(r + 1) * n];
            let tr = &t[r * c..(r + 1) * c];
            let f = self.forward(xr);
            let p = softmax(&f.z);
            let mut dh = vec![0.0; h];
            for k in 0..c {
                loss -= scale * tr[k] * p[k].max(1e-300).ln();
                let dz = scale * (p[k] - tr[k]);
                gb2[k] += dz;
                for i in 0..h {
                    gw2[k * h + i] += dz * f.h[i];
                    dh[i] += dz * self.w2[k * h + i];
                }
            }
            for i in 0..h {
                if f.pre[i] <= 0.0 {
                    continue;
                }
                gb1[i] += dh[i];
                for (o, &xv) in gw1[i * n..(i + 1) * n].iter_mut().zip(xr) {
                    *o += dh[i] * xv;
                }
            }
        }
        (loss, g)
    }

    fn params_mut(&mut self) -> [&mut Vec<f64>; 4] {
        [&mut self.w1, &mut self.b1, &mut self.w2, &mut self.b2]
    }

    /// Train by Adam on `rows` inputs `x` (row-major) and target probability rows `t` (each
    /// non-negative, summing to 1).
    pub fn distill(
        x: &[f64],
        t: &[f64],
        rows: usize,
        cfg: &Valid<MlpParams>,
        seed: u64,
    ) -> Result<Self> {
        if rows == 0 || !x.len().is_multiple_of(rows) || !t.len().is_multiple_of(rows) {
            return Err(Error::shape(format!(
                "distillation: {} input values and {} target values for {rows} rows",
                x.len(),
                t.len()
            )));
        }
        let (n_in, n_out) = (x.len() / rows, t.len() / rows);
        for r in 0..rows {
            let tr = &t[r * n_out..(r + 1) * n_out];
            let s: f64 = tr.iter().sum();
            if tr.iter().any(|v| !v.is_finite() || *v < 0.0) || (s - 1.0).abs() > 1e-6 {
                return Err(Error::invalid(format!(
                    "distillation: target row {r} is not a probability vector (sum {s})"
                )));
            }
        }
        let mut m = Mlp::new(n_in, cfg.hidden, n_out, seed)?;
        let sizes = [m.w1.len(), m.b1.len(), m.w2.len(), m.b2.len()];
        let total: usize = sizes.iter().sum();
        let (mut m1, mut m2) = (vec![0.0; total], vec![0.0; total]);
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0xd157);
        let mut order: Vec<usize> = (0..rows).collect();
        let mut step = 0i32;
        for _ in 0..cfg.epochs {
            for i in (1..rows).rev() {
                let j = rand::RngExt::random_range(&mut rng, 0..=i);
                order.swap(i, j);
            }
            for chunk in order.chunks(cfg.batch) {
                let (_, g) = m.loss_and_gradient(x, t, chunk);
                step += 1;
                let (c1, c2) = (1.0 - b1.powi(step), 1.0 - b2.powi(step));
                let mut off = 0;
                let wd = cfg.weight_decay;
                for (pi, p) in m.params_mut().into_iter().enumerate() {
                    let decay = if pi % 2 == 0 { wd } else { 0.0 };
                    for (k, v) in p.iter_mut().enumerate() {
                        let gk = g[off + k] + decay * *v;
                        m1[off + k] = b1 * m1[off + k] + (1.0 - b1) * gk;
                        m2[off + k] = b2 * m2[off + k] + (1.0 - b2) * gk * gk;
                        *v -= cfg.lr * (m1[off + k] / c1) / ((m2[off + k] / c2).sqrt() + eps);
                    }
                    off += sizes[pi];
                }
            }
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> (Mlp, Vec<f64>) {
        let mut m = Mlp::new(5, 7, 3, 3).unwrap();
        for (i, b) in m.b1.iter_mut().enumerate() {
            *b = 0.3 * i as f64 - 0.8; // some units off, some on
        }
        (m, vec![0.9, 0.1, 0.4, 0.0, 1.0])
    }

    #[test]
    fn margin_gradient_matches_central_differences() {
        let (m, x) = tiny();
        let (_, g) = m.margin(&x, 1).unwrap();
        let h = 1e-6;
        for i in 0..x.len() {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            let fd = (m.margin(&xp, 1).unwrap().0 - m.margin(&xm, 1).unwrap().0) / (2.0 * h);
            assert!((fd - g[i]).abs() < 1e-6, "component {i}: {fd} vs {}", g[i]);
        }
    }

    #[test]
    fn input_fisher_is_the_expected_outer_product_of_score_gradients() {
        // F = Σ_c p_c ∇ log p_c ∇ log p_cᵀ, with ∇ log p_c by central differences.
        let (m, x) = tiny();
        let f = m.input_fisher(&x);
        let p = m.probs(&x);
        let n = x.len();
        let h = 1e-6;
        let grad_log = |c: usize| -> Vec<f64> {
            (0..n)
                .map(|i| {
                    let (mut xp, mut xm) = (x.clone(), x.clone());
                    xp[i] += h;
                    xm[i] -= h;
                    (m.probs(&xp)[c].ln() - m.probs(&xm)[c].ln()) / (2.0 * h)
                })
                .collect()
        };
        let mut want = vec![0.0; n * n];
        for c in 0..m.n_out {
            let g = grad_log(c);
            for a in 0..n {
                for b in 0..n {
                    want[a * n + b] += p[c] * g[a] * g[b];
                }
            }
        }
        for (a, b) in f.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn loss_gradient_matches_central_differences() {
        let (m, x0) = tiny();
        let x: Vec<f64> = [x0.clone(), x0.iter().map(|v| 1.0 - v).collect()].concat();
        let t = vec![0.2, 0.7, 0.1, 0.0, 0.0, 1.0];
        let rows = [0usize, 1];
        let (_, g) = m.loss_and_gradient(&x, &t, &rows);
        let h = 1e-6;
        let mut k = 0;
        for pi in 0..4 {
            let len = [m.w1.len(), m.b1.len(), m.w2.len(), m.b2.len()][pi];
            for i in 0..len {
                let (mut mp, mut mm) = (m.clone(), m.clone());
                mp.params_mut()[pi][i] += h;
                mm.params_mut()[pi][i] -= h;
                let fd = (mp.loss_and_gradient(&x, &t, &rows).0
                    - mm.loss_and_gradient(&x, &t, &rows).0)
                    / (2.0 * h);
                assert!(
                    (fd - g[k]).abs() < 1e-6,
                    "param {pi}[{i}]: {fd} vs {}",
                    g[k]
                );
                k += 1;
            }
        }
    }

    #[test]
    fn distillation_fits_a_separable_teacher_and_rejects_bad_targets() {
        // Teacher: class = whether x_0 + x_1 > x_2 + x_3 (soft targets 0.9 / 0.1).
        let rows = 200;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(9);
        let mut x = Vec::new();
        let mut t = Vec::new();
        for _ in 0..rows {
            let v: Vec<f64> = (0..4)
                .map(|_| rand::RngExt::random::<f64>(&mut rng))
                .collect();
            let c = usize::from(v[0] + v[1] > v[2] + v[3]);
            x.extend(&v);
            t.extend(if c == 1 { [0.1, 0.9] } else { [0.9, 0.1] });
        }
        let cfg = MlpParams::default().check().unwrap();
        let m = Mlp::distill(&x, &t, rows, &cfg, 1).unwrap();
        let agree = (0..rows)
            .filter(|&r| m.class(&x[r * 4..(r + 1) * 4]) == usize::from(t[r * 2 + 1] > 0.5))
            .count();
        assert!(agree as f64 / rows as f64 > 0.9, "{agree}/{rows}");
        let mut bad = t.clone();
        bad[0] = 0.5; // row 0 sums to 0.6
        let e = Mlp::distill(&x, &bad, rows, &cfg, 1).unwrap_err();
        assert!(e.to_string().contains("target row 0"), "{e}");
    }
}
