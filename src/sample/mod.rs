//! Sampling (SPEC §1–2): exact ancestral passes up (classification, eq. 2) and down (generation,
//! eq. 9), block Gibbs for one RBM, the Rao-Blackwellised served output and the mean-field pass.
//!
//! Determinism: every random stream is seeded from (model fingerprint, user seed, input bytes,
//! chunk index), and each chunk is computed sequentially, so results are bit-identical whatever the
//! number of rayon threads.
//!
//! The samplers are generic over a [`BernoulliRng`]: [`LaneRng`] (eight xoshiro256++ generators in
//! vector lanes, [`lanes`]) is the one the served output, the RG estimators and the benchmarks use;
//! a scalar `Xoshiro256PlusPlus` draws two 24-bit uniforms from each 64-bit output (the training
//! code's generator).

pub mod lanes;

pub use lanes::LaneRng;

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;

use crate::data::Split;
use crate::model::{sigmoid, DeepRbm, Rbm};
use crate::util::{fnv1a64_f32, mix_seed};

/// Samples per chunk: the unit of sequential work and of independent random streams.
pub const CHUNK: usize = 256;

/// Estimated memory, in bytes, of the served-output samplers of a stack of `widths` running on
/// `threads` threads: each holds one chunk of [`CHUNK`] samples, states and probabilities of
/// every layer in f32, whatever the number of samples S (chunks are summed as they finish).
/// `None` when it overflows.
pub fn estimated_bytes(widths: &[usize], threads: usize) -> Option<u64> {
    let units = widths
        .iter()
        .try_fold(0u64, |a, &w| a.checked_add(w as u64))?;
    units
        .checked_mul(CHUNK as u64 * 4 * 2)?
        .checked_mul(threads.max(1) as u64)
}

/// A uniform deviate in [0, 1) with 24 random bits.
#[inline]
pub fn uniform_f32<R: Rng>(rng: &mut R) -> f32 {
    (rng.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// A random generator the samplers draw Bernoulli variates from: how it turns its bits into
/// draws is its own (each implementation documents which bits decide which draw).
pub trait BernoulliRng: Rng {
    /// Independent Bernoulli(p) values in {0, 1} into `out` (the length of `probs`).
    fn fill_bernoulli(&mut self, probs: &[f32], out: &mut [f32]);
}

impl BernoulliRng for LaneRng {
    /// 16 draws per step of the eight lanes ([`lanes`]).
    fn fill_bernoulli(&mut self, probs: &[f32], out: &mut [f32]) {
        LaneRng::fill_bernoulli(self, probs, out);
    }
}

impl BernoulliRng for Xoshiro256PlusPlus {
    /// Two 24-bit uniforms from each 64-bit draw (bits 40–63 and 16–39), in order; an odd last
    /// draw takes bits 40–63 of one more output.
    fn fill_bernoulli(&mut self, probs: &[f32], out: &mut [f32]) {
        const SCALE: f32 = 1.0 / (1u32 << 24) as f32;
        debug_assert_eq!(out.len(), probs.len());
        let mut o2 = out.chunks_exact_mut(2);
        let mut p2 = probs.chunks_exact(2);
        for (o, p) in (&mut o2).zip(&mut p2) {
            let r = self.next_u64();
            let u0 = (r >> 40) as f32 * SCALE;
            let u1 = ((r >> 16) & 0xFF_FFFF) as f32 * SCALE;
            o[0] = if u0 < p[0] { 1.0 } else { 0.0 };
            o[1] = if u1 < p[1] { 1.0 } else { 0.0 };
        }
        for (o, &p) in o2.into_remainder().iter_mut().zip(p2.remainder()) {
            *o = if uniform_f32(self) < p { 1.0 } else { 0.0 };
        }
    }
}

/// Draw independent Bernoulli(p) values in {0, 1} into `out` ([`BernoulliRng::fill_bernoulli`]).
pub fn bernoulli_into<R: BernoulliRng>(probs: &[f32], rng: &mut R, out: &mut [f32]) {
    rng.fill_bernoulli(probs, out);
}

/// Draw independent Bernoulli(p) values in {0, 1}.
pub fn bernoulli<R: BernoulliRng>(probs: &[f32], rng: &mut R) -> Vec<f32> {
    let mut out = vec![0.0; probs.len()];
    bernoulli_into(probs, rng, &mut out);
    out
}

/// One layer of a batch of ancestral samples: the binary states and the conditional
/// probabilities they were drawn from (kept for Rao-Blackwellised estimators).
#[derive(Clone, Debug)]
pub struct LayerBatch {
    /// Binary states, row-major `batch × width`.
    pub states: Vec<f32>,
    /// The probabilities they were drawn from.
    pub probs: Vec<f32>,
}

/// Ancestral sampling up the classification network (eq. 2) from a batch of `batch` inputs
/// (row-major, real values accepted) through RBMs 1..=`to_layer`. Element `k-1` of the result is
/// layer k. Exact: the chain x → h_1 → … is directed, so no burn-in is needed.
pub fn sample_up<R: BernoulliRng>(
    model: &DeepRbm,
    x: &[f32],
    batch: usize,
    to_layer: usize,
    rng: &mut R,
) -> Vec<LayerBatch> {
    let mut out: Vec<LayerBatch> = Vec::with_capacity(to_layer);
    for k in 1..=to_layer {
        let below = if k == 1 { x } else { &out[k - 2].states };
        let probs = model.rbm(k).up_probs(below, batch);
        let states = bernoulli(&probs, rng);
        out.push(LayerBatch { states, probs });
    }
    out
}

/// Ancestral sampling down the generation network (eq. 9) from a batch of `batch` outputs `y`
/// (real values accepted in the first step, SPEC §2, reading (P)) down to layer `to_layer`.
/// Element 0 of the result is layer N-1, element 1 layer N-2, and so on.
pub fn sample_down<R: BernoulliRng>(
    model: &DeepRbm,
    y: &[f32],
    batch: usize,
    to_layer: usize,
    rng: &mut R,
) -> Vec<LayerBatch> {
    let n = model.depth();
    let mut out: Vec<LayerBatch> = Vec::with_capacity(n - to_layer);
    for k in ((to_layer + 1)..=n).rev() {
        let above = if k == n { y } else { &out[n - k - 1].states };
        let probs = model.rbm(k).down_probs(above, batch);
        let states = bernoulli(&probs, rng);
        out.push(LayerBatch { states, probs });
    }
    out
}

/// Result of `steps` rounds of block Gibbs sampling of one RBM started from lower states `v`.
pub struct GibbsState {
    /// Lower-layer states after the last round.
    pub v: Vec<f32>,
    /// Upper-layer probabilities `σ(W v + a)` given the final `v` (Rao-Blackwellised upper moments).
    pub h_probs: Vec<f32>,
}

/// Block Gibbs sampling of the joint `t_k(h_k, h_{k-1})` of one RBM: `steps` rounds of
/// h ~ t(h|v), v ~ t(v|h), starting from lower states `v0` (a batch of `batch` chains).
pub fn gibbs<R: BernoulliRng>(
    rbm: &Rbm,
    v0: &[f32],
    batch: usize,
    steps: usize,
    rng: &mut R,
) -> GibbsState {
    gibbs_from(rbm, v0, rbm.up_probs(v0, batch), batch, steps, rng)
}

/// [`gibbs`] given the upper probabilities `h_probs0 = σ(W v0 + a)` the caller already holds (CD
/// needs them for its data moments; recomputing them would be a sixth GEMM per batch).
pub fn gibbs_from<R: BernoulliRng>(
    rbm: &Rbm,
    v0: &[f32],
    h_probs0: Vec<f32>,
    batch: usize,
    steps: usize,
    rng: &mut R,
) -> GibbsState {
    debug_assert_eq!(h_probs0.len(), batch * rbm.n_up);
    let mut v = v0.to_vec();
    let mut h_probs = h_probs0;
    let mut h = vec![0.0; h_probs.len()];
    for _ in 0..steps {
        bernoulli_into(&h_probs, rng, &mut h);
        let v_probs = rbm.down_probs(&h, batch);
        bernoulli_into(&v_probs, rng, &mut v);
        rbm.up_probs_into(&v, batch, &mut h_probs);
    }
    GibbsState { v, h_probs }
}

/// Deterministic mean-field pass `μ_k = σ(W_k μ_{k-1} + a_k)` for a batch; returns every layer's
/// means (element `k-1` = layer k). The last element is the mean-field output.
pub fn mean_field_layers(model: &DeepRbm, x: &[f32], batch: usize) -> Vec<Vec<f32>> {
    let mut out: Vec<Vec<f32>> = Vec::with_capacity(model.depth());
    for k in 1..=model.depth() {
        let below = if k == 1 { x } else { &out[k - 2] };
        out.push(model.rbm(k).up_probs(below, batch));
    }
    out
}

/// How the classifier's output vector is computed.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum OutputMode {
    /// The served output `ŷ(x) = E_{q_N}[h_N|x]` (SPEC §1), Rao-Blackwellised over `samples`
    /// ancestral samples of `h_{N-1}`, seeded from (model, input, seed).
    Served {
        /// Samples S (≥ 1).
        samples: usize,
        /// Seed of the sampler (keep it private when a defence is randomised).
        seed: u64,
    },
    /// The deterministic mean-field approximation.
    MeanField,
}

/// Computes outputs for a fixed model; caches the model fingerprint used for seeding.
pub struct Predictor<'m> {
    model: &'m DeepRbm,
    mode: OutputMode,
    seed_base: u64,
}

impl<'m> Predictor<'m> {
    /// A predictor of `model`'s outputs in `mode`.
    pub fn new(model: &'m DeepRbm, mode: OutputMode) -> Self {
        Self::with_fingerprint(model, mode, model.fingerprint())
    }

    /// [`Predictor::new`] with the model's fingerprint already computed; `fingerprint` must be
    /// `model.fingerprint()`. For callers that build a predictor per request (the HTTP server):
    /// hashing the weights costs more than a mean-field pass.
    pub fn with_fingerprint(model: &'m DeepRbm, mode: OutputMode, fingerprint: u64) -> Self {
        debug_assert_eq!(fingerprint, model.fingerprint());
        let seed = match mode {
            OutputMode::Served { seed, .. } => seed,
            OutputMode::MeanField => 0,
        };
        Predictor {
            model,
            mode,
            seed_base: mix_seed(fingerprint, seed),
        }
    }

    /// The output mode.
    pub fn mode(&self) -> OutputMode {
        self.mode
    }

    /// The seed of the random stream for one input (SPEC §1: the same query gets the same answer).
    pub fn input_seed(&self, x: &[f32]) -> u64 {
        mix_seed(self.seed_base, fnv1a64_f32(0xcbf2_9ce4_8422_2325, x))
    }

    /// The output vector for one input (length `n_N`).
    pub fn output(&self, x: &[f32]) -> Vec<f32> {
        match self.mode {
            OutputMode::MeanField => mean_field_layers(self.model, x, 1)
                .pop()
                .unwrap_or_default(),
            OutputMode::Served { samples, .. } => self.served_output(x, samples.max(1)),
        }
    }

    /// Rao-Blackwellised `ŷ = (1/S) Σ_s σ(W_N h_{N-1}^{(s)} + a_N)` (SPEC §1). For N = 1 this is
    /// exact: `σ(W_1 x + a_1)`.
    fn served_output(&self, x: &[f32], samples: usize) -> Vec<f32> {
        let m = self.model;
        let n = m.depth();
        let top = m.rbm(n);
        if n == 1 {
            return top.up_probs(x, 1);
        }
        let input_seed = self.input_seed(x);
        let p1 = m.rbm(1).up_probs(x, 1);
        // Chunks run in parallel, each on its own stream; their sums are added in chunk order, so
        // the result does not depend on the thread count.
        let chunk_sums: Vec<Vec<f64>> = (0..samples.div_ceil(CHUNK))
            .into_par_iter()
            .map(|c| {
                let b = CHUNK.min(samples - c * CHUNK);
                let mut rng = LaneRng::seed_from_u64(mix_seed(input_seed, c as u64));
                let (_, py) = ancestral_chunk(m, &p1, b, &mut rng);
                let mut sum = vec![0.0f64; top.n_up];
                for row in py.chunks_exact(top.n_up) {
                    for (s, &v) in sum.iter_mut().zip(row) {
                        *s += v as f64;
                    }
                }
                sum
            })
            .collect();
        let mut sum = vec![0.0f64; top.n_up];
        for cs in &chunk_sums {
            for (s, v) in sum.iter_mut().zip(cs) {
                *s += v;
            }
        }
        sum.iter().map(|s| (s / samples as f64) as f32).collect()
    }

    /// Outputs for `rows` inputs (row-major `x`), in parallel across inputs; row-major result.
    pub fn outputs(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let n0 = self.model.n_inputs();
        assert_eq!(x.len(), rows * n0, "input batch has the wrong length");
        // One input at a time in both modes: a batched product can differ from a single-row one in
        // the last bit, and the same query must get the same answer whatever batch it came in.
        x.par_chunks(n0)
            .flat_map_iter(|row| self.output(row))
            .collect()
    }

    /// Predicted classes (argmax of the outputs) for `rows` inputs.
    pub fn classes(&self, x: &[f32], rows: usize) -> Vec<usize> {
        let out = self.outputs(x, rows);
        out.chunks_exact(self.model.n_outputs())
            .map(argmax)
            .collect()
    }

    /// Fraction of a split classified correctly.
    pub fn accuracy(&self, split: &Split) -> f64 {
        if split.is_empty() {
            return f64::NAN;
        }
        let pred = self.classes(&split.x, split.len());
        let hits = pred
            .iter()
            .zip(&split.y)
            .filter(|(p, y)| **p == **y as usize)
            .count();
        hits as f64 / split.len() as f64
    }
}

/// One chunk of `b` ancestral samples of the classification network (depth N ≥ 2) from the
/// layer-1 probabilities `p1` of an input: `h_1 ~ p1`, then `h_k ~ t_k(·|h_{k−1})` up to layer
/// N−1. Returns `h_1` (row-major `b × n_1`) and the top layer's probabilities
/// `σ(W_N h_{N−1} + a_N)` (`b × n_N`). The served output and the output states' Fisher estimator
/// ([`crate::rg::state_fisher`]) both draw through it, so they see the same samples.
pub(crate) fn ancestral_chunk<R: BernoulliRng>(
    model: &DeepRbm,
    p1: &[f32],
    b: usize,
    rng: &mut R,
) -> (Vec<f32>, Vec<f32>) {
    let n = model.depth();
    let h1 = bernoulli(&p1.repeat(b), rng);
    let mut upper: Option<Vec<f32>> = None;
    for k in 2..n {
        let p = model.rbm(k).up_probs(upper.as_deref().unwrap_or(&h1), b);
        upper = Some(bernoulli(&p, rng));
    }
    let py = model.rbm(n).up_probs(upper.as_deref().unwrap_or(&h1), b);
    (h1, py)
}

/// Index of the largest value (the first on ties; NaN never wins).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] || v[best].is_nan() {
            best = i;
        }
    }
    best
}

/// Sigmoid of a slice, in place.
pub fn sigmoid_inplace(v: &mut [f32]) {
    for x in v {
        *x = sigmoid(*x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_prefers_first_on_ties() {
        assert_eq!(argmax(&[0.1, 0.5, 0.5]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.2]), 1);
    }

    #[test]
    fn bernoulli_edges_are_exact() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
        let s = bernoulli(&[0.0, 1.0, 0.0, 1.0], &mut rng);
        assert_eq!(s, vec![0.0, 1.0, 0.0, 1.0]);
    }
}
