//! Output defences (SPEC §8–9): a served output vector in, a defended output vector out.
//!
//! Every defence sees one served output row `ŷ ∈ [0,1]^{n_N}` (the victim's answer to one query)
//! and a per-query seed derived from (model, serve seed, input) by
//! [`crate::sample::Predictor::input_seed`], so the same input always gets the same answer. The
//! distortion actually applied is measured by [`distortion`].

use crate::error::{Error, Result};

pub mod baselines;
pub mod rg;
pub mod spec;

pub use baselines::{Gaussian, ReverseSigmoid, Rounding, Top1};
pub use rg::{PoisonCache, PoisonStep, RandomDirection, RgPoison, SignRule};
pub use spec::DefenceSpec;

/// A defence applied to served outputs (issue 4 item 1).
pub trait Defence: Send + Sync {
    /// Short name with its parameter, e.g. `rg(P, eps=0.02)`; used in reports and tables.
    fn name(&self) -> String;
    /// The defended output for the served output `y` of one query. `seed` is the query's seed
    /// (deterministic per input); defences without randomness ignore it. `y` is finite and in
    /// [0,1]; implementations return a vector of the same length, finite and in [0,1].
    fn apply(&self, y: &[f32], seed: u64) -> Result<Vec<f32>>;
    /// True when the defence guarantees `argmax(apply(y)) == argmax(y)` for every y.
    fn keeps_argmax(&self) -> bool;
}

/// No defence: the served output unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDefence;

impl Defence for NoDefence {
    fn name(&self) -> String {
        "none".into()
    }
    fn apply(&self, y: &[f32], _seed: u64) -> Result<Vec<f32>> {
        Ok(y.to_vec())
    }
    fn keeps_argmax(&self) -> bool {
        true
    }
}

/// Check a served output row: non-empty, every value finite and in [0,1] (the [`Defence`] contract);
/// the error names the first bad component.
pub fn check_served(y: &[f32]) -> Result<()> {
    if y.is_empty() {
        return Err(Error::shape("served output is empty"));
    }
    if let Some(i) = y
        .iter()
        .position(|v| !(v.is_finite() && (0.0..=1.0).contains(v)))
    {
        return Err(Error::invalid(format!(
            "served output y[{i}] = {} is not a finite value in [0,1]",
            y[i]
        )));
    }
    Ok(())
}

/// Distortion actually applied to one served output (SPEC §8: "report the distortion actually
/// applied (L1, L2, KL)").
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Distortion {
    /// `Σ_i |y'_i − y_i|`.
    pub l1: f64,
    /// `‖y' − y‖_2`.
    pub l2: f64,
    /// `KL(p ‖ p')` with `p = y/Σy`, `p' = y'/Σy'`, both floored at 1e-6 before normalising so a
    /// zeroed component (top-1, rounding) gives a large but finite value.
    pub kl: f64,
}

/// Floor applied to components before the KL divergence in [`distortion`].
pub const KL_FLOOR: f64 = 1e-6;

/// The distortion between a served output `y` and its defended version `y2` (same length).
pub fn distortion(y: &[f32], y2: &[f32]) -> Distortion {
    debug_assert_eq!(y.len(), y2.len());
    let mut l1 = 0.0;
    let mut l2 = 0.0;
    for (&a, &b) in y.iter().zip(y2) {
        let d = (b as f64 - a as f64).abs();
        l1 += d;
        l2 += d * d;
    }
    let norm = |v: &[f32]| -> Vec<f64> {
        let f: Vec<f64> = v.iter().map(|&a| (a as f64).max(KL_FLOOR)).collect();
        let s: f64 = f.iter().sum();
        f.into_iter().map(|a| a / s).collect()
    };
    let (p, q) = (norm(y), norm(y2));
    let kl = p
        .iter()
        .zip(&q)
        .map(|(&a, &b)| a * (a / b).ln())
        .sum::<f64>()
        .max(0.0);
    Distortion {
        l1,
        l2: l2.sqrt(),
        kl,
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod distortion_tests {
    use super::*;

    #[test]
    fn distortion_of_a_hand_computed_pair() {
        let d = distortion(&[0.5, 0.5], &[0.75, 0.25]);
        assert!((d.l1 - 0.5).abs() < 1e-12);
        assert!((d.l2 - (0.125f64).sqrt()).abs() < 1e-12);
        // KL((½,½) ‖ (¾,¼)) = ½ ln(2/3) + ½ ln 2 = ½ ln(4/3).
        assert!((d.kl - 0.5 * (4.0f64 / 3.0).ln()).abs() < 1e-12);
        assert_eq!(distortion(&[0.2, 0.7], &[0.2, 0.7]), Distortion::default());
    }
}
