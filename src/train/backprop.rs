//! Back-propagation through the network (the hybrid's fine-tuning, SPEC §3): the mean-field and
//! straight-through stochastic gradients, the served loss, and Adam.

use rand_xoshiro::Xoshiro256PlusPlus;

use super::cd::column_means;
use crate::data::Split;
use crate::linalg::gemm_atb_acc;
use crate::model::DeepRbm;
use crate::sample::{bernoulli, Predictor};

/// Accuracy and mean per-unit Bernoulli cross-entropy of the one-hot labels under `p`'s outputs.
pub fn served_scores(p: &Predictor, split: &Split, n_classes: usize) -> (f64, f64) {
    if split.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let out = p.outputs(&split.x, split.len());
    let mut hits = 0usize;
    let mut loss = 0.0f64;
    for (row, &c) in out.chunks_exact(n_classes).zip(&split.y) {
        if crate::sample::argmax(row) == c as usize {
            hits += 1;
        }
        for (i, &v) in row.iter().enumerate() {
            let q = (v as f64).clamp(1e-7, 1.0 - 1e-7);
            loss -= if i == c as usize {
                q.ln()
            } else {
                (1.0 - q).ln()
            };
        }
    }
    let n = split.len() as f64;
    (hits as f64 / n, loss / (n * n_classes as f64))
}

/// Gradients of the mean per-unit Bernoulli cross-entropy of one-hot `y` under the mean-field
/// network's output, w.r.t. each `W_k` and `a_k` (the down biases `b_k` do not enter).
pub fn mean_field_gradient(
    model: &DeepRbm,
    x: &[f32],
    y: &[f32],
    batch: usize,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    backprop_gradient(model, x, y, batch, None::<&mut Xoshiro256PlusPlus>)
}

/// Back-propagated gradients of the per-unit Bernoulli cross-entropy of one-hot `y` under the
/// output layer's conditional `σ(W_N s_{N-1} + a_N)`. With `rng = None`, `s_k = μ_k` (mean field).
/// With an `rng`, the hidden states are sampled, `s_k ~ Bern(σ(W_k s_{k-1} + a_k))`, as in the
/// served network, and the gradient passes through the sampling by the straight-through rule
/// (`∂s_k/∂μ_k = 1`): the loss is then the expected cross-entropy of one ancestral sample, an
/// upper bound (Jensen) on the cross-entropy of the served `ŷ`.
pub fn backprop_gradient<R: crate::sample::BernoulliRng>(
    model: &DeepRbm,
    x: &[f32],
    y: &[f32],
    batch: usize,
    mut rng: Option<&mut R>,
) -> Vec<(Vec<f32>, Vec<f32>)> {
    let n = model.depth();
    // forward: probabilities μ_k and the states s_k fed to the next layer
    let mut mus: Vec<Vec<f32>> = Vec::with_capacity(n);
    let mut states: Vec<Vec<f32>> = Vec::with_capacity(n);
    for k in 1..=n {
        let below: &[f32] = if k == 1 { x } else { &states[k - 2] };
        let mu = model.rbm(k).up_probs(below, batch);
        let st = match rng.as_deref_mut() {
            Some(r) if k < n => bernoulli(&mu, r),
            _ => mu.clone(),
        };
        mus.push(mu);
        states.push(st);
    }
    let mut grads = vec![(Vec::new(), Vec::new()); n];
    // δ_N = (μ_N − y) / B
    let mut delta: Vec<f32> = mus[n - 1]
        .iter()
        .zip(y)
        .map(|(m, t)| (m - t) / batch as f32)
        .collect();
    for k in (1..=n).rev() {
        let r = model.rbm(k);
        let below: &[f32] = if k == 1 { x } else { &states[k - 2] };
        let mut gw = vec![0.0; r.w.len()];
        gemm_atb_acc(&mut gw, &delta, below, batch, r.n_up, r.n_down, 1.0);
        let ga = column_means(&delta, batch, r.n_up)
            .into_iter()
            .map(|v| v * batch as f32)
            .collect();
        if k > 1 {
            let mut back = vec![0.0; batch * r.n_down];
            crate::linalg::gemm_ab(&mut back, &delta, &r.w, batch, r.n_up, r.n_down);
            for (d, &m) in back.iter_mut().zip(&mus[k - 2]) {
                *d *= m * (1.0 - m);
            }
            delta = back;
        }
        grads[k - 1] = (gw, ga);
    }
    grads
}

/// Adam optimiser over all `W_k, a_k` (minimising).
pub(crate) struct Adam {
    lr: f32,
    t: i32,
    m: Vec<(Vec<f32>, Vec<f32>)>,
    v: Vec<(Vec<f32>, Vec<f32>)>,
}

impl Adam {
    pub(crate) fn new(model: &DeepRbm, lr: f32) -> Self {
        let z: Vec<_> = model
            .layers
            .iter()
            .map(|l| (vec![0.0; l.w.len()], vec![0.0; l.a.len()]))
            .collect();
        Adam {
            lr,
            t: 0,
            m: z.clone(),
            v: z,
        }
    }
    pub(crate) fn step(&mut self, model: &mut DeepRbm, grads: &[(Vec<f32>, Vec<f32>)], wd: f32) {
        let (b1, b2, eps) = (0.9f32, 0.999f32, 1e-8f32);
        self.t += 1;
        let c1 = 1.0 - b1.powi(self.t);
        let c2 = 1.0 - b2.powi(self.t);
        for (k, layer) in model.layers.iter_mut().enumerate() {
            let upd = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], decay: f32| {
                for i in 0..p.len() {
                    let gi = g[i] + decay * p[i];
                    m[i] = b1 * m[i] + (1.0 - b1) * gi;
                    v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                    p[i] -= self.lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
                }
            };
            let (mw, ma) = &mut self.m[k];
            let (vw, va) = &mut self.v[k];
            upd(&mut layer.w, &grads[k].0, mw, vw, wd);
            upd(&mut layer.a, &grads[k].1, ma, va, 0.0);
        }
    }
}
