//! Baseline defences of SPEC §9 ("Baseline defences at equal distortion"): Gaussian noise, reverse
//! sigmoid, rounding and top-1 only. (The random sum-zero direction is
//! [`crate::defence::rg::RandomDirection`], which shares the RG poison's step.)

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use super::{check_served, Defence, Query};
use crate::error::{Error, Result};
use crate::model::standard_normal;
use crate::sample::argmax;
use crate::util::mix_seed;

const GAUSSIAN_TAG: u64 = 0x4741_5553; // "GAUS"

/// Gaussian noise: `r_i = clip(ŷ_i + σ z_i, 0, 1)`, `z_i ~ N(0, 1)` independent, drawn from the
/// query seed, rescaled to the served sum `Σŷ` ([`to_served_sum`]). Does **not** guarantee the
/// argmax.
#[derive(Clone, Copy, Debug)]
pub struct Gaussian {
    sigma: f64,
}

impl Gaussian {
    /// σ finite and ≥ 0.
    pub fn new(sigma: f64) -> Result<Self> {
        if !(sigma.is_finite() && sigma >= 0.0) {
            return Err(Error::invalid(format!(
                "Gaussian noise σ = {sigma}: must be finite and ≥ 0"
            )));
        }
        Ok(Gaussian { sigma })
    }
}

impl Defence for Gaussian {
    fn name(&self) -> String {
        format!("gaussian(sigma={})", self.sigma)
    }
    fn apply(&self, q: &Query<'_>) -> Result<Vec<f32>> {
        let y = q.y;
        check_served(y)?;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix_seed(q.seed, GAUSSIAN_TAG));
        let noisy: Vec<f64> = y
            .iter()
            .map(|&v| {
                let z = standard_normal(&mut rng) as f64;
                (v as f64 + self.sigma * z).clamp(0.0, 1.0)
            })
            .collect();
        Ok(to_served_sum(y, &noisy))
    }
    fn keeps_argmax(&self) -> bool {
        false
    }
}

/// γ used by [`crate::defence::spec::DefenceSpec`] for the reverse sigmoid: 0.1, the default of
/// the reference implementation (IBM Adversarial Robustness Toolbox, `ReverseSigmoid(beta=1.0,
/// gamma=0.1)`).
pub const REVERSE_SIGMOID_GAMMA: f64 = 0.1;

/// Clamp of p before the logit in [`ReverseSigmoid`].
pub const LOGIT_CLAMP: f64 = 1e-6;

/// Reverse sigmoid (T. Lee, B. Edwards, I. Molloy, D. Su, "Defending Against Neural Network Model
/// Stealing Attacks Using Deceptive Perturbations", IEEE S&P Workshops 2019, arXiv:1806.00054; the
/// same formula as IBM ART's `ReverseSigmoid` postprocessor, applied here to the normalised
/// output). Exactly:
/// 1. `p = ŷ/Σŷ` (ŷ itself when `Σŷ = 0`);
/// 2. `r_i = p_i − β (σ(γ·logit(p̄_i)) − 1/2)`, `p̄_i = clamp(p_i, 1e-6, 1 − 1e-6)`,
///    `logit(q) = ln(q/(1−q))`, `σ` the logistic function;
/// 3. `r_i ← max(r_i, 0)`, then `ŷ'_i = Σŷ · r_i/Σ_j r_j` (the uniform vector should every r_i be
///    0): the served sum is kept, as by every defence here ([`to_served_sum`]).
///
/// Large β can push the top class below another (e.g. β = 3, γ = 1, p = (0.9, 0.1) → (0, 1)):
/// **argmax may change**, and the clipping at 0 leaves exact zeros.
#[derive(Clone, Copy, Debug)]
pub struct ReverseSigmoid {
    beta: f64,
    gamma: f64,
}

impl ReverseSigmoid {
    /// β finite and ≥ 0, γ finite and > 0.
    pub fn new(beta: f64, gamma: f64) -> Result<Self> {
        if !(beta.is_finite() && beta >= 0.0) {
            return Err(Error::invalid(format!(
                "reverse sigmoid β = {beta}: must be finite and ≥ 0"
            )));
        }
        if !(gamma.is_finite() && gamma > 0.0) {
            return Err(Error::invalid(format!(
                "reverse sigmoid γ = {gamma}: must be finite and > 0"
            )));
        }
        Ok(ReverseSigmoid { beta, gamma })
    }
}

/// `v` rescaled to the served sum `Σŷ` (the renormalisation every defence shares: answers
/// redistribute the served mass, so their L1 distortion measures a redistribution), then clipped
/// to [0, 1] (which binds only when the served sum is near K).
pub(crate) fn to_served_sum(y: &[f32], v: &[f64]) -> Vec<f32> {
    let served: f64 = y.iter().map(|&a| a as f64).sum();
    let total: f64 = v.iter().sum();
    let scale = if total > 0.0 { served / total } else { 0.0 };
    v.iter()
        .map(|&a| ((a * scale) as f32).clamp(0.0, 1.0))
        .collect()
}

impl Defence for ReverseSigmoid {
    fn name(&self) -> String {
        format!("reverse-sigmoid(beta={}, gamma={})", self.beta, self.gamma)
    }
    fn apply(&self, q: &Query<'_>) -> Result<Vec<f32>> {
        let y = q.y;
        check_served(y)?;
        let n = y.len();
        let s: f64 = y.iter().map(|&v| v as f64).sum();
        if s <= 0.0 {
            return Ok(y.to_vec());
        }
        let r: Vec<f64> = y
            .iter()
            .map(|&v| {
                let p = v as f64 / s;
                let q = p.clamp(LOGIT_CLAMP, 1.0 - LOGIT_CLAMP);
                let logit = (q / (1.0 - q)).ln();
                let sig = 1.0 / (1.0 + (-self.gamma * logit).exp());
                (p - self.beta * (sig - 0.5)).max(0.0)
            })
            .collect();
        let rs: f64 = r.iter().sum();
        if rs <= 0.0 || !rs.is_finite() {
            return Ok(to_served_sum(y, &vec![1.0 / n as f64; n]));
        }
        Ok(to_served_sum(y, &r))
    }
    fn keeps_argmax(&self) -> bool {
        false
    }
}

/// The largest number of decimals [`Rounding`] accepts (f32 outputs carry about 7).
pub const MAX_DECIMALS: u32 = 6;

/// Rounding each component to `decimals` decimals (half away from zero). Components that differ
/// only beyond the kept decimals become equal, and the first of tied components wins the argmax,
/// so **argmax may change** (e.g. (0.44, 0.46) at 0 decimals → (0, 0)).
#[derive(Clone, Copy, Debug)]
pub struct Rounding {
    decimals: u32,
}

impl Rounding {
    /// `decimals ≤ 6`.
    pub fn new(decimals: u32) -> Result<Self> {
        if decimals > MAX_DECIMALS {
            return Err(Error::invalid(format!(
                "rounding to {decimals} decimals: at most {MAX_DECIMALS}"
            )));
        }
        Ok(Rounding { decimals })
    }
}

impl Defence for Rounding {
    fn name(&self) -> String {
        format!("rounding(decimals={})", self.decimals)
    }
    fn apply(&self, q: &Query<'_>) -> Result<Vec<f32>> {
        let y = q.y;
        check_served(y)?;
        let scale = 10f64.powi(self.decimals as i32);
        Ok(y.iter()
            .map(|&v| ((v as f64 * scale).round() / scale) as f32)
            .collect())
    }
    fn keeps_argmax(&self) -> bool {
        false
    }
}

/// Top-1 only: the one-hot vector of the argmax (first on ties).
#[derive(Clone, Copy, Debug, Default)]
pub struct Top1;

impl Defence for Top1 {
    fn name(&self) -> String {
        "top1".into()
    }
    fn apply(&self, q: &Query<'_>) -> Result<Vec<f32>> {
        let y = q.y;
        check_served(y)?;
        let mut out = vec![0.0; y.len()];
        if !y.is_empty() {
            out[argmax(y)] = 1.0;
        }
        Ok(out)
    }
    fn keeps_argmax(&self) -> bool {
        true
    }
}
