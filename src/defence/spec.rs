//! Defences by name, for the CLI (SPEC §8–9): `none`, `rg` (reading P), `rg:P`, `rg:C`, `random`,
//! `gaussian`, `reverse-sigmoid`, `rounding`, `top1`, each built with one strength parameter.

use std::fmt;
use std::str::FromStr;

use super::baselines::{
    Gaussian, ReverseSigmoid, Rounding, Top1, MAX_DECIMALS, REVERSE_SIGMOID_GAMMA,
};
use super::rg::{PoisonCache, RandomDirection, RgPoison, SignRule, DEFAULT_MARGIN};
use super::{Defence, NoDefence};
use crate::error::{Error, Result};
use crate::rg::OutputReading;

/// A defence named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefenceSpec {
    /// No defence.
    None,
    /// RG poisoning (SPEC §8) with directions of the given reading (`rg` = `rg:P`).
    Rg(OutputReading),
    /// The same step along a random sum-zero direction (SPEC §9 control).
    Random,
    /// Gaussian noise, clipped to [0,1].
    Gaussian,
    /// Reverse sigmoid (Lee et al. 2019), γ = [`REVERSE_SIGMOID_GAMMA`].
    ReverseSigmoid,
    /// Rounding to a number of decimals.
    Rounding,
    /// One-hot of the argmax.
    Top1,
}

/// The names [`DefenceSpec::from_str`] accepts.
pub const DEFENCE_NAMES: &str =
    "none, rg, rg:P, rg:C, random, gaussian, reverse-sigmoid, rounding, top1";

impl FromStr for DefenceSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "none" => DefenceSpec::None,
            "rg" | "rg:P" => DefenceSpec::Rg(OutputReading::PlugIn),
            "rg:C" => DefenceSpec::Rg(OutputReading::Mixture),
            "random" => DefenceSpec::Random,
            "gaussian" => DefenceSpec::Gaussian,
            "reverse-sigmoid" => DefenceSpec::ReverseSigmoid,
            "rounding" => DefenceSpec::Rounding,
            "top1" => DefenceSpec::Top1,
            _ => {
                if let Some(r) = s.strip_prefix("rg:") {
                    return Err(Error::invalid(format!(
                        "defence '{s}': unknown reading '{r}' (expected rg:P or rg:C)"
                    )));
                }
                return Err(Error::invalid(format!(
                    "unknown defence '{s}' (expected one of: {DEFENCE_NAMES})"
                )));
            }
        })
    }
}

impl fmt::Display for DefenceSpec {
    /// The canonical name (`rg` prints as `rg:P`); parses back to the same spec.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DefenceSpec::None => "none",
            DefenceSpec::Rg(OutputReading::PlugIn) => "rg:P",
            DefenceSpec::Rg(OutputReading::Mixture) => "rg:C",
            DefenceSpec::Random => "random",
            DefenceSpec::Gaussian => "gaussian",
            DefenceSpec::ReverseSigmoid => "reverse-sigmoid",
            DefenceSpec::Rounding => "rounding",
            DefenceSpec::Top1 => "top1",
        })
    }
}

impl DefenceSpec {
    /// Whether [`DefenceSpec::build`] needs a [`PoisonCache`].
    pub fn needs_cache(&self) -> bool {
        matches!(self, DefenceSpec::Rg(_))
    }

    /// Build the defence. `strength` is the defence's own parameter: ε (maximal step) for `rg` and
    /// `random` (margin [`DEFAULT_MARGIN`], sign rule [`SignRule::Feasible`]), σ for `gaussian`, β
    /// for `reverse-sigmoid` (γ = [`REVERSE_SIGMOID_GAMMA`]), the number of decimals (an integer
    /// 0…6) for `rounding`; ignored for `none` and `top1`. `rg` needs a cache of its reading.
    pub fn build(&self, strength: f64, cache: Option<&PoisonCache>) -> Result<Box<dyn Defence>> {
        Ok(match *self {
            DefenceSpec::None => Box::new(NoDefence),
            DefenceSpec::Top1 => Box::new(Top1),
            DefenceSpec::Rg(reading) => {
                let cache = cache.ok_or_else(|| {
                    Error::invalid(format!(
                        "defence '{self}' needs a poison cache (directions per class), none given"
                    ))
                })?;
                if cache.reading != reading {
                    return Err(Error::invalid(format!(
                        "defence '{self}' needs directions of reading {reading:?}, the poison cache holds reading {:?}",
                        cache.reading
                    )));
                }
                Box::new(RgPoison::new(
                    cache.clone(),
                    strength,
                    DEFAULT_MARGIN,
                    SignRule::Feasible,
                )?)
            }
            DefenceSpec::Random => Box::new(RandomDirection::new(
                strength,
                DEFAULT_MARGIN,
                SignRule::Feasible,
            )?),
            DefenceSpec::Gaussian => Box::new(Gaussian::new(strength)?),
            DefenceSpec::ReverseSigmoid => {
                Box::new(ReverseSigmoid::new(strength, REVERSE_SIGMOID_GAMMA)?)
            }
            DefenceSpec::Rounding => {
                if !(strength.is_finite()
                    && strength >= 0.0
                    && strength.fract() == 0.0
                    && strength <= MAX_DECIMALS as f64)
                {
                    return Err(Error::invalid(format!(
                        "rounding to {strength} decimals: expected an integer from 0 to {MAX_DECIMALS}"
                    )));
                }
                Box::new(Rounding::new(strength as u32)?)
            }
        })
    }
}
