//! The moment rules of one RBM (SPEC §3): the eq. 14 data pairs, data-minus-model moments,
//! contrastive divergence (CD-k) and its momentum step.

use super::params::Targets;
use crate::linalg::gemm_atb_acc;
use crate::model::{DeepRbm, Rbm};
use crate::sample::{bernoulli, gibbs_from, sample_down, sample_up, uniform_f32};
use crate::util::shuffle;

/// The eq. 14 data pairs for RBM k on a minibatch: `(upper h_k, lower h_{k-1})`, row-major.
/// Lower: x (k = 1) or drawn up the classification network from x through RBMs 1…k-1.
/// Upper: y (k = N) or drawn down the generation network from y through RBMs N…k+1.
/// With [`Targets::Probs`] the last sampled step on each side is replaced by its conditional
/// probabilities (inputs and labels themselves are never replaced).
pub fn eq14_pairs<R: crate::sample::BernoulliRng>(
    model: &DeepRbm,
    k: usize,
    x: &[f32],
    y: &[f32],
    batch: usize,
    targets: Targets,
    rng: &mut R,
) -> (Vec<f32>, Vec<f32>) {
    let n = model.depth();
    let pick = |layers: Vec<crate::sample::LayerBatch>| targets.last_step(layers);
    let lower = if k == 1 {
        x.to_vec()
    } else {
        pick(sample_up(model, x, batch, k - 1, rng))
    };
    let upper = if k == n {
        y.to_vec()
    } else {
        pick(sample_down(model, y, batch, k, rng))
    };
    (upper, lower)
}

/// [`eq14_pairs`] with annealed targets (`TrainParams::anneal_sweeps`): each row's pair is, with
/// probability `alpha`, drawn wholly up the classification network from x — `h_{k-1}` as for eq. 14
/// (its binary states), then `h_k ~ t_k(·|h_{k-1})` (its probabilities with [`Targets::Probs`]:
/// unbiased, as `h_k` is drawn given that `h_{k-1}`) — and otherwise it is eq. 14's pair. The
/// expected moments are the mixture `alpha · ⟨·⟩_up + (1 − alpha) · ⟨·⟩_eq14`
/// ([`crate::exact::eq14_up_moments`], [`crate::exact::eq14`]). For k = N (the labels are the
/// target) or `alpha ≤ 0` it is [`eq14_pairs`], with the same random stream.
#[allow(clippy::too_many_arguments)]
pub fn eq14_pairs_annealed<R: crate::sample::BernoulliRng>(
    model: &DeepRbm,
    k: usize,
    x: &[f32],
    y: &[f32],
    batch: usize,
    targets: Targets,
    alpha: f32,
    rng: &mut R,
) -> (Vec<f32>, Vec<f32>) {
    let n = model.depth();
    if k == n || alpha <= 0.0 {
        return eq14_pairs(model, k, x, y, batch, targets, rng);
    }
    let (lower_states, lower_probs) = if k == 1 {
        (x.to_vec(), x.to_vec())
    } else {
        match sample_up(model, x, batch, k - 1, rng).pop() {
            Some(l) => (l.states, l.probs),
            None => (x.to_vec(), x.to_vec()),
        }
    };
    let down = targets.last_step(sample_down(model, y, batch, k, rng));
    let rbm = model.rbm(k);
    let up_probs = rbm.up_probs(&lower_states, batch);
    let up_states = bernoulli(&up_probs, rng);
    let (nu, nl) = (rbm.n_up, rbm.n_down);
    let mut upper = Vec::with_capacity(batch * nu);
    let mut lower = Vec::with_capacity(batch * nl);
    for r in 0..batch {
        let (u, l) = (r * nu..(r + 1) * nu, r * nl..(r + 1) * nl);
        if uniform_f32(rng) < alpha {
            upper.extend_from_slice(match targets {
                Targets::Samples => &up_states[u],
                Targets::Probs => &up_probs[u],
            });
            lower.extend_from_slice(&lower_states[l]);
        } else {
            upper.extend_from_slice(&down[u]);
            lower.extend_from_slice(match targets {
                Targets::Samples => &lower_states[l],
                Targets::Probs => &lower_probs[l],
            });
        }
    }
    (upper, lower)
}

/// Reading (C) of top-layer targets (SPEC §12): each of the `batch` rows of `y` (width `n`) replaced
/// by a one-hot class state `e_c`, `c` drawn with probability `y_c / Σ_j y_j` (uniformly for a row
/// summing to 0). In expectation the row is the class distribution `y / Σ y`, so the top RBM's data
/// moments equal reading (P)'s on renormalised rows; the lower RBMs' targets, drawn down the
/// generation network from a class state instead of a product of Bernoullis, differ.
pub fn class_states<R: rand::Rng>(y: &[f32], batch: usize, n: usize, rng: &mut R) -> Vec<f32> {
    debug_assert_eq!(y.len(), batch * n, "class_states: {batch} rows of {n}");
    let mut out = vec![0.0f32; batch * n];
    if n == 0 {
        return out;
    }
    for (row, o) in y.chunks_exact(n).zip(out.chunks_exact_mut(n)).take(batch) {
        let total: f64 = row.iter().map(|&v| v.max(0.0) as f64).sum();
        let u = crate::sample::uniform_f32(rng) as f64;
        let c = if total > 0.0 {
            let mut acc = 0.0;
            let target = u * total;
            row.iter()
                .position(|&v| {
                    acc += v.max(0.0) as f64;
                    acc > target
                })
                .unwrap_or_else(|| {
                    // rounding: the last class with mass
                    row.iter().rposition(|&v| v > 0.0).unwrap_or(n - 1)
                })
        } else {
            ((u * n as f64) as usize).min(n - 1)
        };
        o[c] = 1.0;
    }
    out
}

/// Moments `⟨u lᵀ⟩, ⟨u⟩, ⟨l⟩` of a batch of paired rows (upper width `nu`, lower width `nl`).
pub fn pair_moments(upper: &[f32], lower: &[f32], batch: usize, nu: usize, nl: usize) -> Moments {
    let mut w = vec![0.0; nu * nl];
    gemm_atb_acc(&mut w, upper, lower, batch, nu, nl, 1.0 / batch as f32);
    Moments {
        w,
        a: column_means(upper, batch, nu),
        b: column_means(lower, batch, nl),
    }
}

pub(crate) fn column_means(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut s = vec![0.0f32; cols];
    for r in m.chunks_exact(cols) {
        for (a, &v) in s.iter_mut().zip(r) {
            *a += v;
        }
    }
    s.iter_mut().for_each(|v| *v /= rows as f32);
    s
}

/// Second and first moments of one RBM's two layers.
#[derive(Clone, Debug)]
pub struct Moments {
    /// `⟨h_k h_{k-1}ᵀ⟩`, row-major `n_k × n_{k-1}`.
    pub w: Vec<f32>,
    /// `⟨h_k⟩`.
    pub a: Vec<f32>,
    /// `⟨h_{k-1}⟩`.
    pub b: Vec<f32>,
}

/// Learning rule of contrastive divergence (CD-k) for one RBM.
#[derive(Clone, Copy, Debug)]
pub struct CdParams {
    /// Learning rate.
    pub lr: f32,
    /// Momentum.
    pub momentum: f32,
    /// L2 weight decay on W.
    pub weight_decay: f32,
    /// Gibbs steps k of the negative phase.
    pub steps: usize,
}

/// One CD-k update of `rbm` on a batch of `batch` lower-layer rows `v`: data moments
/// `⟨σ(Wv + a) vᵀ⟩` minus the moments after `steps` block Gibbs rounds started at the data, through
/// the momentum step. The greedy pretraining's update (and `bench perf`'s CD epoch).
pub fn cd_update<R: crate::sample::BernoulliRng>(
    rbm: &mut Rbm,
    vel: &mut Velocity,
    v: &[f32],
    batch: usize,
    p: &CdParams,
    rng: &mut R,
) {
    let ph = rbm.up_probs(v, batch);
    let g = gibbs_from(rbm, v, ph.clone(), batch, p.steps, rng);
    let grad = moment_difference(&ph, v, &g.h_probs, &g.v, batch, rbm.n_up, rbm.n_down);
    vel.step(rbm, &grad, p.lr, p.momentum, p.weight_decay);
}

/// The KL gradient of eq. 14 / CD: data moments minus model moments, `⟨u lᵀ⟩_data − ⟨u lᵀ⟩_model`
/// (and the first-moment differences), each side a batch of `batch` rows (`u`: `batch × nu`,
/// `l`: `batch × nl`). Both products accumulate into one `nu × nl` matrix (the model's with
/// weight −1/batch) instead of forming two second-moment matrices and their difference
/// (`docs/performance.md`).
pub fn moment_difference(
    data_u: &[f32],
    data_l: &[f32],
    model_u: &[f32],
    model_l: &[f32],
    batch: usize,
    nu: usize,
    nl: usize,
) -> Moments {
    let mut w = vec![0.0; nu * nl];
    let inv = 1.0 / batch as f32;
    gemm_atb_acc(&mut w, data_u, data_l, batch, nu, nl, inv);
    gemm_atb_acc(&mut w, model_u, model_l, batch, nu, nl, -inv);
    let diff =
        |d: Vec<f32>, m: Vec<f32>| -> Vec<f32> { d.iter().zip(&m).map(|(d, m)| d - m).collect() };
    Moments {
        w,
        a: diff(
            column_means(data_u, batch, nu),
            column_means(model_u, batch, nu),
        ),
        b: diff(
            column_means(data_l, batch, nl),
            column_means(model_l, batch, nl),
        ),
    }
}

/// One epoch of CD-k over `rows` rows of `x` (row-major, `rbm.n_down` wide) in shuffled batches of
/// `batch` (the last one shorter).
pub fn cd_epoch<R: crate::sample::BernoulliRng>(
    rbm: &mut Rbm,
    vel: &mut Velocity,
    x: &[f32],
    batch: usize,
    p: &CdParams,
    rng: &mut R,
) {
    let rows = x.len() / rbm.n_down;
    let mut order: Vec<usize> = (0..rows).collect();
    shuffle(&mut order, rng);
    for chunk in order.chunks(batch.max(1)) {
        let v = batch_rows(x, chunk, rbm.n_down);
        cd_update(rbm, vel, &v, chunk.len(), p, rng);
    }
}

/// Momentum SGD state for one RBM.
pub struct Velocity {
    w: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
}

impl Velocity {
    /// Zero velocity for `r`'s parameters.
    pub fn new(r: &Rbm) -> Self {
        Velocity {
            w: vec![0.0; r.w.len()],
            a: vec![0.0; r.a.len()],
            b: vec![0.0; r.b.len()],
        }
    }
    /// `v ← m v + lr (grad − wd·W)` (no decay on biases), then `θ ← θ + v`; `grad` is the
    /// data-minus-model [`moment_difference`].
    pub(crate) fn step(&mut self, r: &mut Rbm, grad: &Moments, lr: f32, mom: f32, wd: f32) {
        for ((v, w), g) in self.w.iter_mut().zip(&mut r.w).zip(&grad.w) {
            *v = mom * *v + lr * (g - wd * *w);
            *w += *v;
        }
        for (vel, par, g) in [
            (&mut self.a, &mut r.a, &grad.a),
            (&mut self.b, &mut r.b, &grad.b),
        ] {
            for ((v, p), g) in vel.iter_mut().zip(par.iter_mut()).zip(g) {
                *v = mom * *v + lr * g;
                *p += *v;
            }
        }
    }
}

pub(crate) fn batch_rows(s: &[f32], idx: &[usize], width: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(idx.len() * width);
    for &i in idx {
        out.extend_from_slice(&s[i * width..(i + 1) * width]);
    }
    out
}
