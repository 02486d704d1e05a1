//! The surrogate of the attacker's learner that `mad-argmax`, `grad2-argmax` and `mad` reason
//! with (SPEC §11): only its class probabilities `p_s(x)` enter, because for the last layer the
//! attacker's descent direction on target q is `Gᵀq = (q − p_s) ⊗ [h_s; 1]`, and the common factor
//! `[h_s; 1]` cancels from both the MAD angle and the GRAD² direction.
//!
//! * [`Surrogate::Random`] (the default): a randomly initialised model of the attacker's
//!   architecture ([`Mlp`], the distilled clone's), initialised from the defender's key, as in
//!   Orekondy et al.'s MAD.
//! * [`Surrogate::Victim`] (an ablation): the victim's own mean-field output, normalised. Its
//!   `p_s` is close to the served p, so `p − p_s` is small and the MAD angle is nearly undefined
//!   there; the answer is then left at its floored base point.

use std::str::FromStr;

use crate::error::{Error, Result};
use crate::model::mlp::{Mlp, MlpParams};
use crate::model::DeepRbm;
use crate::sample::mean_field_layers;

/// Which surrogate (the `surrogate` knob).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SurrogateKind {
    /// A randomly initialised model of the attacker's architecture.
    Random,
    /// The victim itself (mean field).
    Victim,
}

impl FromStr for SurrogateKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "random" => Ok(SurrogateKind::Random),
            "victim" => Ok(SurrogateKind::Victim),
            _ => Err(Error::invalid(format!(
                "surrogate '{s}': expected random or victim"
            ))),
        }
    }
}

impl std::fmt::Display for SurrogateKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SurrogateKind::Random => "random",
            SurrogateKind::Victim => "victim",
        })
    }
}

/// A surrogate ready to answer.
#[derive(Clone, Debug)]
pub enum Surrogate {
    /// A random MLP `n_0 → hidden → K` (the distilled clone's architecture).
    Random(Mlp),
    /// The victim's mean-field network.
    Victim(DeepRbm),
}

impl Surrogate {
    /// The surrogate of `kind` for `victim`; the random one is initialised from `seed` (derived
    /// from the defender's key) with the attacker's default hidden width.
    pub fn new(kind: SurrogateKind, victim: &DeepRbm, seed: u64) -> Result<Self> {
        Ok(match kind {
            SurrogateKind::Random => Surrogate::Random(Mlp::new(
                victim.n_inputs(),
                MlpParams::default().hidden,
                victim.n_outputs(),
                seed,
            )?),
            SurrogateKind::Victim => Surrogate::Victim(victim.clone()),
        })
    }

    /// `p_s(x)`, the surrogate's class probabilities (summing to 1).
    pub fn probs(&self, x: &[f32]) -> Vec<f64> {
        match self {
            Surrogate::Random(m) => m.probs(&x.iter().map(|&v| v as f64).collect::<Vec<_>>()),
            Surrogate::Victim(m) => {
                let out = mean_field_layers(m, x, 1).pop().unwrap_or_default();
                let s: f64 = out.iter().map(|&v| v as f64).sum();
                out.iter()
                    .map(|&v| v as f64 / s.max(f64::MIN_POSITIVE))
                    .collect()
            }
        }
    }
}
