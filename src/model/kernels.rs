//! The conditionals of one RBM in f64, for a single real-valued conditioning vector:
//! `σ(W h + a)` (up, eq. 3) and `σ(Wᵀ h + b)` (down, eq. 10).
//!
//! The RG estimators recompute conditional probabilities in f64 from sampled parent states: the
//! f32 probabilities the sampler keeps saturate to exactly 1 for pre-activations above ≈ 16.6,
//! which would zero the conditional variances `p(1 − p)` the Rao-Blackwellised terms need. The
//! exact-enumeration oracle uses the same functions.

use super::Rbm;

/// Direction of a kernel step through an RBM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepDir {
    /// `σ(W h + a)`: lower layer → upper layer (classification).
    Up,
    /// `σ(Wᵀ h + b)`: upper layer → lower layer (generation).
    Down,
}

impl StepDir {
    /// Widths (source, target) of a step through `rbm`.
    pub fn widths(self, rbm: &Rbm) -> (usize, usize) {
        match self {
            StepDir::Up => (rbm.n_down, rbm.n_up),
            StepDir::Down => (rbm.n_up, rbm.n_down),
        }
    }
}

/// The logistic function in f64.
pub fn sigmoid_f64(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// Up probabilities `σ(W h + a)` of an RBM in f64, for a real lower vector `h` (length `n_down`).
pub fn up_probs_f64(rbm: &Rbm, h: &[f64]) -> Vec<f64> {
    (0..rbm.n_up)
        .map(|i| {
            let z: f64 = (0..rbm.n_down)
                .map(|j| rbm.w[i * rbm.n_down + j] as f64 * h[j])
                .sum::<f64>()
                + rbm.a[i] as f64;
            sigmoid_f64(z)
        })
        .collect()
}

/// Down probabilities `σ(Wᵀ h + b)` of an RBM in f64, for a real upper vector `h` (length `n_up`).
pub fn down_probs_f64(rbm: &Rbm, h: &[f64]) -> Vec<f64> {
    (0..rbm.n_down)
        .map(|j| {
            let z: f64 = (0..rbm.n_up)
                .map(|i| rbm.w[i * rbm.n_down + j] as f64 * h[i])
                .sum::<f64>()
                + rbm.b[j] as f64;
            sigmoid_f64(z)
        })
        .collect()
}

/// Unit probabilities (f64) of the target layer of a step in direction `dir` given a source
/// vector `h`.
pub fn step_probs(rbm: &Rbm, dir: StepDir, h: &[f64]) -> Vec<f64> {
    match dir {
        StepDir::Up => up_probs_f64(rbm, h),
        StepDir::Down => down_probs_f64(rbm, h),
    }
}
