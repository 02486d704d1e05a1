//! A thief's generic learner (SPEC §9 (b), §12): a one-hidden-layer ReLU network
//! `z = W2 relu(W1 x + b1) + b2`, trained by Adam either by cross-entropy of `softmax(z)` against
//! probability rows (distillation) or by the squared error of z against target logits
//! (`distill-logit`). The distillation attackers train it; the MAD and GRAD² defences use a
//! randomly initialised one as their surrogate of the attacker (SPEC §11).
//!
//! Everything is f64 and sequential per network (experiments train many in parallel), and the
//! seed fixes every number. `W1` is stored input-major (`n_in × hidden`), so an input's hidden
//! pre-activations are the sum of the rows of its non-zero pixels: binary images touch a third of
//! `W1` forwards and backwards, in contiguous rows the compiler vectorises.

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

/// `z = W2 relu(W1 x + b1) + b2`, `p = softmax(z)`.
#[derive(Clone, Debug)]
pub struct Mlp {
    /// Inputs.
    pub n_in: usize,
    /// Hidden ReLU units.
    pub hidden: usize,
    /// Outputs (classes).
    pub n_out: usize,
    /// `W1ᵀ`, `n_in × hidden` row-major: row i holds the weights from input i.
    pub w1: Vec<f64>,
    /// `b1`.
    pub b1: Vec<f64>,
    /// `W2`, `n_out × hidden` row-major.
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
            w1: (0..n_in * hidden)
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
        let mut f = Forward {
            pre: vec![0.0; self.hidden],
            h: vec![0.0; self.hidden],
            z: vec![0.0; self.n_out],
        };
        self.forward_into(x, &mut f);
        f
    }

    /// The forward pass into reused buffers; inputs equal to 0 are skipped.
    fn forward_into(&self, x: &[f64], f: &mut Forward) {
        let h = self.hidden;
        f.pre.copy_from_slice(&self.b1);
        for (i, &xi) in x.iter().enumerate() {
            if xi == 0.0 {
                continue;
            }
            let row = &self.w1[i * h..(i + 1) * h];
            if xi == 1.0 {
                f.pre.iter_mut().zip(row).for_each(|(p, w)| *p += w);
            } else {
                f.pre.iter_mut().zip(row).for_each(|(p, w)| *p += xi * w);
            }
        }
        for (o, &p) in f.h.iter_mut().zip(&f.pre) {
            *o = p.max(0.0);
        }
        for (c, z) in f.z.iter_mut().enumerate() {
            let row = &self.w2[c * h..(c + 1) * h];
            *z = self.b2[c] + row.iter().zip(&f.h).map(|(a, b)| a * b).sum::<f64>();
        }
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

    /// The Jacobian `∂z/∂x` (`n_out × n_in`, row-major) at x:
    /// `J_ci = Σ_h W2_ch 1[pre_h > 0] W1_hi`.
    pub fn logit_jacobian(&self, x: &[f64]) -> Vec<f64> {
        let f = self.forward(x);
        let h = self.hidden;
        // g_c = W2_c ⊙ 1[pre > 0], then J_ci = ⟨g_c, row i of W1ᵀ⟩.
        let g: Vec<f64> = (0..self.n_out)
            .flat_map(|c| {
                let pre = &f.pre;
                self.w2[c * h..(c + 1) * h]
                    .iter()
                    .zip(pre)
                    .map(|(&w, &p)| if p > 0.0 { w } else { 0.0 })
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut j = vec![0.0; self.n_out * self.n_in];
        for i in 0..self.n_in {
            let row = &self.w1[i * h..(i + 1) * h];
            for c in 0..self.n_out {
                j[c * self.n_in + i] = g[c * h..(c + 1) * h]
                    .iter()
                    .zip(row)
                    .map(|(a, b)| a * b)
                    .sum();
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
        let b = self.input_fisher_factor(x);
        let n = self.n_in;
        let mut f = vec![0.0; n * n];
        for bc in b.chunks_exact(n) {
            for (a, &ba) in bc.iter().enumerate() {
                if ba == 0.0 {
                    continue;
                }
                for (fab, &bb) in f[a * n..(a + 1) * n].iter_mut().zip(bc) {
                    *fab += ba * bb;
                }
            }
        }
        f
    }

    /// A factor `B` (`n_out × n_in`, row-major) of the input Fisher, `F = BᵀB`: row c is
    /// `√p_c (J_c − pᵀJ)`, since `Jᵀ(diag p − ppᵀ)J = Σ_c p_c (J_c − pᵀJ)ᵀ(J_c − pᵀJ)`. Its top
    /// eigenvector is cheap through the `n_out × n_out` Gram matrix
    /// ([`crate::linalg::dense::top_eigen_of_gram`]).
    pub fn input_fisher_factor(&self, x: &[f64]) -> Vec<f64> {
        let p = self.probs(x);
        let mut b = self.logit_jacobian(x);
        let n = self.n_in;
        let mut pj = vec![0.0; n];
        for (c, jc) in b.chunks_exact(n).enumerate() {
            for (a, &v) in pj.iter_mut().zip(jc) {
                *a += p[c] * v;
            }
        }
        for (c, bc) in b.chunks_exact_mut(n).enumerate() {
            let s = p[c].sqrt();
            for (v, &m) in bc.iter_mut().zip(&pj) {
                *v = s * (*v - m);
            }
        }
        b
    }

    /// Mean loss over `rows` with its gradient in the parameter order (w1, b1, w2, b2), the
    /// gradient added into `g` (zeroed by the caller). Cross-entropy `−Σ_c t_c log p_c`, or the
    /// squared error `½ Σ_c (z_c − t_c)²` for [`DistillLoss::LogitMse`].
    fn loss_and_gradient_into(
        &self,
        x: &[f64],
        t: &[f64],
        rows: &[usize],
        loss_kind: DistillLoss,
        s: &mut Scratch,
        g: &mut [f64],
    ) -> f64 {
        let (n, h, c) = (self.n_in, self.hidden, self.n_out);
        let (gw1, rest) = g.split_at_mut(n * h);
        let (gb1, rest) = rest.split_at_mut(h);
        let (gw2, gb2) = rest.split_at_mut(c * h);
        let mut loss = 0.0;
        let scale = 1.0 / rows.len() as f64;
        for &r in rows {
            let xr = &x[r * n..(r + 1) * n];
            let tr = &t[r * c..(r + 1) * c];
            self.forward_into(xr, &mut s.f);
            match loss_kind {
                DistillLoss::CrossEntropy => {
                    let p = softmax(&s.f.z);
                    for k in 0..c {
                        loss -= scale * tr[k] * p[k].max(1e-300).ln();
                        s.dz[k] = scale * (p[k] - tr[k]);
                    }
                }
                DistillLoss::LogitMse => {
                    for k in 0..c {
                        let e = s.f.z[k] - tr[k];
                        loss += scale * 0.5 * e * e;
                        s.dz[k] = scale * e;
                    }
                }
            }
            s.dh.fill(0.0);
            for k in 0..c {
                let dz = s.dz[k];
                gb2[k] += dz;
                let w2 = &self.w2[k * h..(k + 1) * h];
                let gw2k = &mut gw2[k * h..(k + 1) * h];
                for i in 0..h {
                    gw2k[i] += dz * s.f.h[i];
                    s.dh[i] += dz * w2[i];
                }
            }
            for (d, &p) in s.dh.iter_mut().zip(&s.f.pre) {
                if p <= 0.0 {
                    *d = 0.0;
                }
            }
            for (b, d) in gb1.iter_mut().zip(&s.dh) {
                *b += d;
            }
            for (i, &xi) in xr.iter().enumerate() {
                if xi == 0.0 {
                    continue;
                }
                let row = &mut gw1[i * h..(i + 1) * h];
                row.iter_mut().zip(&s.dh).for_each(|(o, d)| *o += xi * d);
            }
        }
        loss
    }

    /// [`Mlp::loss_and_gradient_into`] with fresh buffers.
    #[cfg(test)]
    fn loss_and_gradient(
        &self,
        x: &[f64],
        t: &[f64],
        rows: &[usize],
        loss: DistillLoss,
    ) -> (f64, Vec<f64>) {
        let mut s = Scratch::new(self);
        let mut g = vec![0.0; self.n_params()];
        let l = self.loss_and_gradient_into(x, t, rows, loss, &mut s, &mut g);
        (l, g)
    }

    fn n_params(&self) -> usize {
        self.w1.len() + self.b1.len() + self.w2.len() + self.b2.len()
    }

    fn params_mut(&mut self) -> [&mut Vec<f64>; 4] {
        [&mut self.w1, &mut self.b1, &mut self.w2, &mut self.b2]
    }

    /// Train by Adam on `rows` inputs `x` (row-major) and target probability rows `t` (each
    /// non-negative, summing to 1) by cross-entropy.
    pub fn distill(
        x: &[f64],
        t: &[f64],
        rows: usize,
        cfg: &Valid<MlpParams>,
        seed: u64,
    ) -> Result<Self> {
        Mlp::fit(x, t, rows, cfg, DistillLoss::CrossEntropy, seed)
    }

    /// Train by Adam on `rows` inputs `x` (row-major) and targets `t` (`rows × n_out`): probability
    /// rows for [`DistillLoss::CrossEntropy`], finite logits for [`DistillLoss::LogitMse`].
    pub fn fit(
        x: &[f64],
        t: &[f64],
        rows: usize,
        cfg: &Valid<MlpParams>,
        loss: DistillLoss,
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
            let bad = match loss {
                DistillLoss::CrossEntropy => {
                    let s: f64 = tr.iter().sum();
                    (tr.iter().any(|v| !v.is_finite() || *v < 0.0) || (s - 1.0).abs() > 1e-6)
                        .then(|| format!("is not a probability vector (sum {s})"))
                }
                DistillLoss::LogitMse => tr
                    .iter()
                    .any(|v| !v.is_finite())
                    .then(|| "has a non-finite logit".to_string()),
            };
            if let Some(why) = bad {
                return Err(Error::invalid(format!(
                    "distillation: target row {r} {why}"
                )));
            }
        }
        let mut m = Mlp::new(n_in, cfg.hidden, n_out, seed)?;
        let sizes = [m.w1.len(), m.b1.len(), m.w2.len(), m.b2.len()];
        let total = m.n_params();
        let (mut m1, mut m2) = (vec![0.0; total], vec![0.0; total]);
        let mut g = vec![0.0; total];
        let mut scratch = Scratch::new(&m);
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0xd157);
        let mut order: Vec<usize> = (0..rows).collect();
        let mut step = 0i32;
        for _ in 0..cfg.epochs {
            crate::util::shuffle(&mut order, &mut rng);
            for chunk in order.chunks(cfg.batch) {
                g.fill(0.0);
                m.loss_and_gradient_into(x, t, chunk, loss, &mut scratch, &mut g);
                step += 1;
                let (c1, c2) = (1.0 - b1.powi(step), 1.0 - b2.powi(step));
                let mut off = 0;
                let wd = cfg.weight_decay;
                for (pi, p) in m.params_mut().into_iter().enumerate() {
                    let decay = if pi % 2 == 0 { wd } else { 0.0 };
                    let (m1, m2, g) = (
                        &mut m1[off..off + sizes[pi]],
                        &mut m2[off..off + sizes[pi]],
                        &g[off..off + sizes[pi]],
                    );
                    for k in 0..p.len() {
                        let gk = g[k] + decay * p[k];
                        m1[k] = b1 * m1[k] + (1.0 - b1) * gk;
                        m2[k] = b2 * m2[k] + (1.0 - b2) * gk * gk;
                        p[k] -= cfg.lr * (m1[k] / c1) / ((m2[k] / c2).sqrt() + eps);
                    }
                    off += sizes[pi];
                }
            }
        }
        Ok(m)
    }
}

/// Reused buffers of one training run.
struct Scratch {
    f: Forward,
    dz: Vec<f64>,
    dh: Vec<f64>,
}

impl Scratch {
    fn new(m: &Mlp) -> Self {
        Scratch {
            f: Forward {
                pre: vec![0.0; m.hidden],
                h: vec![0.0; m.hidden],
                z: vec![0.0; m.n_out],
            },
            dz: vec![0.0; m.n_out],
            dh: vec![0.0; m.hidden],
        }
    }
}

/// What a distilled MLP is fitted to (SPEC §12's attackers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum DistillLoss {
    /// Cross-entropy of the softmax against probability rows (`distill`, `distill-top1`).
    CrossEntropy,
    /// Squared error of the logits against target logits (`distill-logit`).
    LogitMse,
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
        let rows = [0usize, 1];
        // Probability rows for cross-entropy, arbitrary finite logits for the logit MSE.
        for (loss, t) in [
            (
                DistillLoss::CrossEntropy,
                vec![0.2, 0.7, 0.1, 0.0, 0.0, 1.0],
            ),
            (DistillLoss::LogitMse, vec![1.5, -0.3, 0.2, -2.0, 0.7, 3.1]),
        ] {
            let (_, g) = m.loss_and_gradient(&x, &t, &rows, loss);
            let h = 1e-6;
            let mut k = 0;
            for pi in 0..4 {
                let len = [m.w1.len(), m.b1.len(), m.w2.len(), m.b2.len()][pi];
                for i in 0..len {
                    let (mut mp, mut mm) = (m.clone(), m.clone());
                    mp.params_mut()[pi][i] += h;
                    mm.params_mut()[pi][i] -= h;
                    let fd = (mp.loss_and_gradient(&x, &t, &rows, loss).0
                        - mm.loss_and_gradient(&x, &t, &rows, loss).0)
                        / (2.0 * h);
                    assert!(
                        (fd - g[k]).abs() < 1e-6 * (1.0 + fd.abs()),
                        "{loss:?} param {pi}[{i}]: {fd} vs {}",
                        g[k]
                    );
                    k += 1;
                }
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
