//! Output defences (SPEC §8, §9, §11): a served output vector in, a defended output vector out.
//!
//! Every defence sees one [`Query`]: the input x, the served output row `ŷ ∈ [0,1]^K` (the
//! victim's answer) and a per-query seed. The seed comes from the defender's secret [`Key`]
//! (`HMAC(key, x)`, [`key`]), so a repeated query gets the same answer and no client can predict a
//! randomised or keyed defence's choices. [`Defence::defend`] returns the answer with the
//! distortion actually applied (L1, L2, KL) and whether its class changed.
//!
//! The defences, by name ([`spec`] parses `NAME[:key=value,…]`):
//! * first form (SPEC §8): `rg` (a step along the cached poison direction, clipped to keep the
//!   class; [`rg`]), `random` (the same step along a random direction);
//! * second form (SPEC §11; [`feasible`], [`vertex`], [`lp`], [`logit`]): `rg-vertex` (objective A,
//!   the Fisher quadratic, or B, the exact KL of the generation chain), `rg-logit`, `mad-argmax`,
//!   `grad2-argmax` (an exact linear programme), `mad` (class not kept), and the controls
//!   `random-vertex`, `random-fixed`, `partner-table` — all over one feasible set with an L1
//!   budget, a floor and a margin;
//! * baselines (SPEC §9; [`baselines`]): `gaussian`, `reverse-sigmoid`, `rounding`, `top1`, and
//!   `none`.

use crate::error::{Error, Result};

pub mod baselines;
pub mod feasible;
pub mod key;
pub mod logit;
pub mod lp;
pub mod objectives;
pub mod rg;
pub mod spec;
pub mod surrogate;
pub mod vertex;

pub use baselines::{Gaussian, ReverseSigmoid, Rounding, Top1};
pub use key::Key;
pub use rg::{PoisonCache, PoisonStep, RandomDirection, RgPoison, SignRule};
pub use spec::{DefenceContext, DefenceParams, DefenceSweep, PoisonCaches};

/// One query as a defence sees it.
#[derive(Clone, Copy, Debug)]
pub struct Query<'a> {
    /// The input x (what the client sent).
    pub x: &'a [f32],
    /// The served output ŷ(x): finite, in [0, 1].
    pub y: &'a [f32],
    /// The query's seed, `Key::query_seed(x)` when served (defences without randomness ignore it).
    pub seed: u64,
}

/// A defended answer and what the defence did to it.
#[derive(Clone, Debug, PartialEq)]
pub struct Answer {
    /// The defended output, same length as ŷ, finite and in [0, 1].
    pub output: Vec<f32>,
    /// Distortion against the served output.
    pub distortion: Distortion,
    /// Whether `argmax(output) ≠ argmax(ŷ)`.
    pub class_changed: bool,
}

/// A defence applied to served outputs.
pub trait Defence: Send + Sync {
    /// The defence's canonical name with every knob, e.g.
    /// `rg-vertex:objective=B,reading=P,eps=0.6,margin=0.02,floor=0.0001`; parses back.
    fn name(&self) -> String;
    /// The defended output for one query: same length as `q.y`, finite and in [0, 1].
    fn apply(&self, q: &Query<'_>) -> Result<Vec<f32>>;
    /// True when the defence guarantees `argmax(apply(q)) == argmax(q.y)` for every query.
    fn keeps_argmax(&self) -> bool;
    /// [`Defence::apply`] with the distortion actually applied and the class check.
    fn defend(&self, q: &Query<'_>) -> Result<Answer> {
        let output = self.apply(q)?;
        if output.len() != q.y.len() {
            return Err(Error::shape(format!(
                "defence {} returned {} values for {} outputs",
                self.name(),
                output.len(),
                q.y.len()
            )));
        }
        Ok(Answer {
            distortion: distortion(q.y, &output),
            class_changed: crate::sample::argmax(&output) != crate::sample::argmax(q.y),
            output,
        })
    }
}

/// No defence: the served output unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoDefence;

impl Defence for NoDefence {
    fn name(&self) -> String {
        "none".into()
    }
    fn apply(&self, q: &Query<'_>) -> Result<Vec<f32>> {
        Ok(q.y.to_vec())
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
mod tests_second_form;

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
