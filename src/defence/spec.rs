//! Defences by name, with typed knobs: the one syntax every command and the server read,
//! `NAME[:key=value,...]`, e.g. `rg-vertex:objective=B,reading=P,eps=0.6,margin=0.02`.
//!
//! * Knobs left out take their defaults (the table of [`knobs_of`], printed by
//!   [`describe_defences`]); an unknown name, key or value is an error that lists what is accepted.
//! * A sweep gives several values of knobs separated by `|` (`eps=0.1|0.3|0.6`); [`DefenceSweep`]
//!   expands them (every combination) into [`DefenceParams`].
//! * [`DefenceParams`] prints as its canonical string — the name and every knob, in table order —
//!   which parses back to the same value, and is the defence's name in reports.
//! * [`DefenceParams::build`] makes the defence; the ones that need more than their knobs take it
//!   from a [`DefenceContext`]: the victim (objective B, the victim surrogate, the input width),
//!   the defender's [`Key`] (every randomised or keyed choice), and the [`PoisonCaches`] (the
//!   per-class Fisher information of `rg`, `rg-vertex` A and `rg-logit`).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use super::baselines::{Gaussian, ReverseSigmoid, Rounding, Top1, MAX_DECIMALS};
use super::feasible::MAX_CLASSES;
use super::key::Key;
use super::logit::RgLogit;
use super::objectives::{keyed_directions, VertexObjective};
use super::rg::{PoisonCache, RandomDirection, RgPoison, SignRule, DEFAULT_CACHE_SAMPLES};
use super::surrogate::{Surrogate, SurrogateKind};
use super::vertex::{partner_table, VertexDefence, VertexRule};
use super::{Defence, NoDefence, Query};
use crate::error::{Error, Result};
use crate::model::DeepRbm;
use crate::rg::OutputReading;

/// Objective A or B of `rg-vertex` (SPEC §11).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RgObjective {
    /// The seed-literal Fisher quadratic `δᵀ P F̃_c P δ`.
    A,
    /// The exact KL of the generation chain (reading P) or of the class mixtures (reading C).
    B,
}

/// A defence with every knob set (SPEC §8, §9, §11). Prints as its canonical string.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum DefenceParams {
    /// The served output unchanged.
    None,
    /// The one-hot of the argmax.
    Top1,
    /// First form (§8): a step along the cached poison direction u_c.
    Rg {
        /// Reading of `∂/∂y`.
        reading: OutputReading,
        /// Largest step ε (L2 along the unit u_c).
        eps: f64,
        /// Margin kept over the runner-up.
        margin: f64,
        /// How the sign of the step is chosen.
        sign: SignRule,
    },
    /// First form along a random sum-zero direction per query (§9 control).
    Random {
        /// Largest step ε.
        eps: f64,
        /// Margin kept over the runner-up.
        margin: f64,
        /// How the sign of the step is chosen.
        sign: SignRule,
    },
    /// Gaussian noise, renormalised to the served sum.
    Gaussian {
        /// Standard deviation σ.
        sigma: f64,
    },
    /// Reverse sigmoid (Lee et al. 2019), renormalised to the served sum.
    ReverseSigmoid {
        /// Strength β.
        beta: f64,
        /// Slope γ.
        gamma: f64,
    },
    /// Rounding to a number of decimals.
    Rounding {
        /// Decimals kept (0…6).
        decimals: u32,
    },
    /// Second form (§11): the vertex of F with the largest objective A or B.
    RgVertex {
        /// A or B.
        objective: RgObjective,
        /// Reading P or C.
        reading: OutputReading,
        /// L1 budget ε.
        eps: f64,
        /// Margin m.
        margin: f64,
        /// Floor f.
        floor: f64,
    },
    /// The poison in logit coordinates.
    RgLogit {
        /// Reading of the cached Fisher matrices.
        reading: OutputReading,
        /// Logit step τ.
        tau: f64,
        /// Margin m.
        margin: f64,
        /// Floor f.
        floor: f64,
    },
    /// MAD, keeping the class: the vertex maximising the angle of the attacker's gradient.
    MadArgmax {
        /// L1 budget ε.
        eps: f64,
        /// Margin m.
        margin: f64,
        /// Floor f.
        floor: f64,
        /// The attacker's surrogate.
        surrogate: SurrogateKind,
    },
    /// GRAD², keeping the class: the exact LP along the anti-learning direction.
    Grad2Argmax {
        /// L1 budget ε.
        eps: f64,
        /// Margin m.
        margin: f64,
        /// Floor f.
        floor: f64,
        /// The attacker's surrogate.
        surrogate: SurrogateKind,
    },
    /// MAD without the margin rows (the class may change).
    Mad {
        /// L1 budget ε.
        eps: f64,
        /// Floor f.
        floor: f64,
        /// The attacker's surrogate.
        surrogate: SurrogateKind,
    },
    /// A vertex of the solver drawn uniformly by the keyed query seed.
    RandomVertex {
        /// L1 budget ε.
        eps: f64,
        /// Margin m.
        margin: f64,
        /// Floor f.
        floor: f64,
    },
    /// The vertex maximising `u_cᵀỹ` for one keyed random direction per class.
    RandomFixed {
        /// L1 budget ε.
        eps: f64,
        /// Margin m.
        margin: f64,
        /// Floor f.
        floor: f64,
    },
    /// The budget moved onto one keyed partner class per predicted class.
    PartnerTable {
        /// L1 budget ε.
        eps: f64,
        /// Margin m.
        margin: f64,
        /// Floor f.
        floor: f64,
    },
}

/// One knob of a defence: its key, default and help.
#[derive(Clone, Copy, Debug)]
pub struct KnobSpec {
    /// The key in `NAME:key=value`.
    pub key: &'static str,
    /// Its default value, as written.
    pub default: &'static str,
    /// What it is and which values it takes.
    pub help: &'static str,
}

const EPS: KnobSpec = KnobSpec {
    key: "eps",
    default: "0.6",
    help: "L1 budget ε of the answer's distortion (finite, ≥ 0)",
};
const MARGIN: KnobSpec = KnobSpec {
    key: "margin",
    default: "0.02",
    help: "margin m the class keeps over the runner-up (in [0, 1); the served gap when smaller)",
};
const FLOOR: KnobSpec = KnobSpec {
    key: "floor",
    default: "0.0001",
    help: "floor f: every value of the answer lies in [f, 1 − f] (in [0, 0.1])",
};
const READING: KnobSpec = KnobSpec {
    key: "reading",
    default: "P",
    help: "how a soft output enters the generation network: P (plug-in) or C (class mixture)",
};
const SURROGATE: KnobSpec = KnobSpec {
    key: "surrogate",
    default: "random",
    help: "the attacker's surrogate: random (an untrained model of its architecture) or victim",
};
const FIRST_EPS: KnobSpec = KnobSpec {
    key: "eps",
    default: "0.02",
    help: "largest step ε along the unit direction (finite, ≥ 0)",
};
const FIRST_MARGIN: KnobSpec = KnobSpec {
    key: "margin",
    default: "0.001",
    help: "margin kept over the runner-up (finite, ≥ 0)",
};
const SIGN: KnobSpec = KnobSpec {
    key: "sign",
    default: "feasible",
    help: "sign of the step: feasible (the longer step) or keyed (a keyed coin per query)",
};

/// Every defence name with its one-line description.
pub const DEFENCES: &[(&str, &str)] = &[
    ("none", "the served output unchanged"),
    ("top1", "the one-hot of the argmax (labels only)"),
    (
        "rg",
        "first form (SPEC §8): a step along the cached per-class poison direction",
    ),
    (
        "random",
        "first form along a keyed random sum-zero direction per query",
    ),
    (
        "gaussian",
        "Gaussian noise, renormalised to the served sum (class may change)",
    ),
    (
        "reverse-sigmoid",
        "reverse sigmoid of Lee et al. (class may change)",
    ),
    (
        "rounding",
        "each value rounded to a number of decimals (class may change on ties)",
    ),
    (
        "rg-vertex",
        "second form (SPEC §11): the vertex of the feasible set with the largest RG objective",
    ),
    (
        "rg-logit",
        "the RG poison in logit coordinates, margin-checked",
    ),
    (
        "mad-argmax",
        "MAD (Orekondy et al.) over the feasible set, keeping the class",
    ),
    (
        "grad2-argmax",
        "GRAD² over the feasible set: an exact linear programme, keeping the class",
    ),
    ("mad", "MAD without the margin rows (the class may change)"),
    (
        "random-vertex",
        "control: the candidate of a keyed random subset of classes (SPEC §11 solver)",
    ),
    (
        "random-fixed",
        "control: the exact maximum over the feasible set of one keyed random direction per class",
    ),
    (
        "partner-table",
        "control: the budget moved onto one keyed partner class per class",
    ),
];

/// The knobs of a defence, in canonical order; `None` for an unknown name.
pub fn knobs_of(name: &str) -> Option<&'static [KnobSpec]> {
    const TAU: KnobSpec = KnobSpec {
        key: "tau",
        default: "1",
        help: "logit step τ (finite, ≥ 0)",
    };
    const OBJECTIVE: KnobSpec = KnobSpec {
        key: "objective",
        default: "B",
        help: "A (the Fisher quadratic δᵀPF̃Pδ, the paper's objective) or B (the exact KL of the generation chain)",
    };
    const SIGMA: KnobSpec = KnobSpec {
        key: "sigma",
        default: "0.05",
        help: "standard deviation σ (finite, ≥ 0)",
    };
    const BETA: KnobSpec = KnobSpec {
        key: "beta",
        default: "0.3",
        help: "strength β (finite, ≥ 0)",
    };
    const GAMMA: KnobSpec = KnobSpec {
        key: "gamma",
        default: "0.1",
        help: "slope γ (finite, > 0)",
    };
    const DECIMALS: KnobSpec = KnobSpec {
        key: "decimals",
        default: "1",
        help: "decimals kept (an integer from 0 to 6)",
    };
    Some(match name {
        "none" | "top1" => &[],
        "rg" => &[READING, FIRST_EPS, FIRST_MARGIN, SIGN],
        "random" => &[FIRST_EPS, FIRST_MARGIN, SIGN],
        "gaussian" => &[SIGMA],
        "reverse-sigmoid" => &[BETA, GAMMA],
        "rounding" => &[DECIMALS],
        "rg-vertex" => &[OBJECTIVE, READING, EPS, MARGIN, FLOOR],
        "rg-logit" => &[READING, TAU, MARGIN, FLOOR],
        "mad-argmax" | "grad2-argmax" => &[EPS, MARGIN, FLOOR, SURROGATE],
        "mad" => &[EPS, FLOOR, SURROGATE],
        "random-vertex" | "random-fixed" | "partner-table" => &[EPS, MARGIN, FLOOR],
        _ => return None,
    })
}

/// The accepted names and, per name, its knobs with defaults (for `--help` and error messages).
pub fn describe_defences() -> String {
    let mut s = String::new();
    for (name, what) in DEFENCES {
        s += &format!("{name}: {what}\n");
        for k in knobs_of(name).unwrap_or(&[]) {
            s += &format!("    {}={} — {}\n", k.key, k.default, k.help);
        }
    }
    s
}

fn names() -> String {
    DEFENCES
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A defence name with, per knob, one or more values (`key=v1|v2`): a sweep.
#[derive(Clone, Debug, PartialEq)]
pub struct DefenceSweep {
    name: String,
    /// `(key, values)` in canonical order, every knob present (defaults filled in).
    knobs: Vec<(String, Vec<String>)>,
}

impl FromStr for DefenceSweep {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let (name, rest) = match s.split_once(':') {
            Some((n, r)) => (n.trim(), Some(r)),
            None => (s, None),
        };
        let specs = knobs_of(name).ok_or_else(|| {
            Error::invalid(format!(
                "unknown defence '{name}' (expected one of: {})",
                names()
            ))
        })?;
        let mut given: Vec<(String, Vec<String>)> = Vec::new();
        for item in rest.map(|r| r.split(',')).into_iter().flatten() {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let (k, v) = item.split_once('=').ok_or_else(|| {
                Error::invalid(format!(
                    "defence '{s}': '{item}' is not key=value (keys of {name}: {})",
                    keys_of(specs)
                ))
            })?;
            let k = k.trim();
            if !specs.iter().any(|sp| sp.key == k) {
                return Err(Error::invalid(format!(
                    "defence '{s}': unknown key '{k}' for {name} (accepted: {})",
                    if specs.is_empty() {
                        "none".to_string()
                    } else {
                        keys_of(specs)
                    }
                )));
            }
            if given.iter().any(|(g, _)| g == k) {
                return Err(Error::invalid(format!(
                    "defence '{s}': key '{k}' is given twice"
                )));
            }
            let values: Vec<String> = v.split('|').map(|x| x.trim().to_string()).collect();
            if values.iter().any(|x| x.is_empty()) {
                return Err(Error::invalid(format!(
                    "defence '{s}': key '{k}' has an empty value"
                )));
            }
            given.push((k.to_string(), values));
        }
        let knobs = specs
            .iter()
            .map(|sp| {
                let v = given
                    .iter()
                    .find(|(k, _)| k == sp.key)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_else(|| vec![sp.default.to_string()]);
                (sp.key.to_string(), v)
            })
            .collect();
        let sweep = DefenceSweep {
            name: name.to_string(),
            knobs,
        };
        // Every combination must parse: errors surface now, not in the middle of a run.
        sweep.expand()?;
        Ok(sweep)
    }
}

fn keys_of(specs: &[KnobSpec]) -> String {
    specs
        .iter()
        .map(|k| format!("{} (default {})", k.key, k.default))
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for DefenceSweep {
    /// `NAME:key=v1|v2,…` with every knob; parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (i, (k, v)) in self.knobs.iter().enumerate() {
            write!(f, "{}{k}={}", if i == 0 { ":" } else { "," }, v.join("|"))?;
        }
        Ok(())
    }
}

impl DefenceSweep {
    /// The defence's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every combination of the swept values, in order (the first knob varies slowest).
    pub fn expand(&self) -> Result<Vec<DefenceParams>> {
        let mut combos: Vec<Vec<(&str, &str)>> = vec![Vec::new()];
        for (k, values) in &self.knobs {
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((k.as_str(), v.as_str()));
                        c
                    })
                })
                .collect();
        }
        combos
            .iter()
            .map(|c| DefenceParams::from_knobs(&self.name, c))
            .collect()
    }
}

fn float(name: &str, key: &str, v: &str, lo: f64, hi: f64, lo_open: bool) -> Result<f64> {
    let x: f64 = v
        .parse()
        .map_err(|_| Error::invalid(format!("defence {name}: {key}={v} is not a number")))?;
    let ok = x.is_finite() && (if lo_open { x > lo } else { x >= lo }) && x <= hi;
    if !ok {
        let lo_s = if lo_open { "> " } else { "≥ " };
        let hi_s = if hi.is_finite() {
            format!(" and ≤ {hi}")
        } else {
            String::new()
        };
        return Err(Error::invalid(format!(
            "defence {name}: {key}={v} (must be finite, {lo_s}{lo}{hi_s})"
        )));
    }
    Ok(x)
}

fn reading(name: &str, v: &str) -> Result<OutputReading> {
    match v {
        "P" | "p" => Ok(OutputReading::PlugIn),
        "C" | "c" => Ok(OutputReading::Mixture),
        _ => Err(Error::invalid(format!(
            "defence {name}: reading={v} (expected P or C)"
        ))),
    }
}

fn reading_letter(r: OutputReading) -> &'static str {
    match r {
        OutputReading::PlugIn => "P",
        OutputReading::Mixture => "C",
    }
}

impl DefenceParams {
    /// Build from `(key, value)` pairs of a known defence (every knob present).
    fn from_knobs(name: &str, kv: &[(&str, &str)]) -> Result<Self> {
        let get =
            |k: &str| -> &str { kv.iter().find(|(key, _)| *key == k).map_or("", |(_, v)| *v) };
        let f = |k: &str, lo: f64, hi: f64, open: bool| float(name, k, get(k), lo, hi, open);
        let eps = || f("eps", 0.0, f64::INFINITY, false);
        let margin = || {
            f("margin", 0.0, 1.0, false).and_then(|m| {
                if m >= 1.0 {
                    Err(Error::invalid(format!(
                        "defence {name}: margin={m} (must be < 1)"
                    )))
                } else {
                    Ok(m)
                }
            })
        };
        let floor = || f("floor", 0.0, 0.1, false);
        let surrogate = || get("surrogate").parse::<SurrogateKind>();
        let sign = || match get("sign") {
            "feasible" => Ok(SignRule::Feasible),
            "keyed" => Ok(SignRule::Seeded),
            v => Err(Error::invalid(format!(
                "defence {name}: sign={v} (expected feasible or keyed)"
            ))),
        };
        Ok(match name {
            "none" => DefenceParams::None,
            "top1" => DefenceParams::Top1,
            "rg" => DefenceParams::Rg {
                reading: reading(name, get("reading"))?,
                eps: eps()?,
                margin: f("margin", 0.0, f64::INFINITY, false)?,
                sign: sign()?,
            },
            "random" => DefenceParams::Random {
                eps: eps()?,
                margin: f("margin", 0.0, f64::INFINITY, false)?,
                sign: sign()?,
            },
            "gaussian" => DefenceParams::Gaussian {
                sigma: f("sigma", 0.0, f64::INFINITY, false)?,
            },
            "reverse-sigmoid" => DefenceParams::ReverseSigmoid {
                beta: f("beta", 0.0, f64::INFINITY, false)?,
                gamma: f("gamma", 0.0, f64::INFINITY, true)?,
            },
            "rounding" => {
                let v = get("decimals");
                let d: u32 = v.parse().ok().filter(|d| *d <= MAX_DECIMALS).ok_or_else(|| {
                    Error::invalid(format!(
                        "defence {name}: decimals={v} (expected an integer from 0 to {MAX_DECIMALS})"
                    ))
                })?;
                DefenceParams::Rounding { decimals: d }
            }
            "rg-vertex" => DefenceParams::RgVertex {
                objective: match get("objective") {
                    "A" | "a" => RgObjective::A,
                    "B" | "b" => RgObjective::B,
                    v => {
                        return Err(Error::invalid(format!(
                            "defence {name}: objective={v} (expected A or B)"
                        )))
                    }
                },
                reading: reading(name, get("reading"))?,
                eps: eps()?,
                margin: margin()?,
                floor: floor()?,
            },
            "rg-logit" => DefenceParams::RgLogit {
                reading: reading(name, get("reading"))?,
                tau: f("tau", 0.0, f64::INFINITY, false)?,
                margin: margin()?,
                floor: floor()?,
            },
            "mad-argmax" => DefenceParams::MadArgmax {
                eps: eps()?,
                margin: margin()?,
                floor: floor()?,
                surrogate: surrogate()?,
            },
            "grad2-argmax" => DefenceParams::Grad2Argmax {
                eps: eps()?,
                margin: margin()?,
                floor: floor()?,
                surrogate: surrogate()?,
            },
            "mad" => DefenceParams::Mad {
                eps: eps()?,
                floor: floor()?,
                surrogate: surrogate()?,
            },
            "random-vertex" => DefenceParams::RandomVertex {
                eps: eps()?,
                margin: margin()?,
                floor: floor()?,
            },
            "random-fixed" => DefenceParams::RandomFixed {
                eps: eps()?,
                margin: margin()?,
                floor: floor()?,
            },
            "partner-table" => DefenceParams::PartnerTable {
                eps: eps()?,
                margin: margin()?,
                floor: floor()?,
            },
            _ => {
                return Err(Error::invalid(format!(
                    "unknown defence '{name}' (expected one of: {})",
                    names()
                )))
            }
        })
    }

    /// The defence's name (`rg-vertex`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            DefenceParams::None => "none",
            DefenceParams::Top1 => "top1",
            DefenceParams::Rg { .. } => "rg",
            DefenceParams::Random { .. } => "random",
            DefenceParams::Gaussian { .. } => "gaussian",
            DefenceParams::ReverseSigmoid { .. } => "reverse-sigmoid",
            DefenceParams::Rounding { .. } => "rounding",
            DefenceParams::RgVertex { .. } => "rg-vertex",
            DefenceParams::RgLogit { .. } => "rg-logit",
            DefenceParams::MadArgmax { .. } => "mad-argmax",
            DefenceParams::Grad2Argmax { .. } => "grad2-argmax",
            DefenceParams::Mad { .. } => "mad",
            DefenceParams::RandomVertex { .. } => "random-vertex",
            DefenceParams::RandomFixed { .. } => "random-fixed",
            DefenceParams::PartnerTable { .. } => "partner-table",
        }
    }

    /// The knob a sweep usually varies (ε, σ, β, decimals or τ); `None` for `none` and `top1`.
    pub fn strength(&self) -> Option<f64> {
        Some(match *self {
            DefenceParams::None | DefenceParams::Top1 => return None,
            DefenceParams::Gaussian { sigma } => sigma,
            DefenceParams::ReverseSigmoid { beta, .. } => beta,
            DefenceParams::Rounding { decimals } => decimals as f64,
            DefenceParams::RgLogit { tau, .. } => tau,
            DefenceParams::Rg { eps, .. }
            | DefenceParams::Random { eps, .. }
            | DefenceParams::RgVertex { eps, .. }
            | DefenceParams::MadArgmax { eps, .. }
            | DefenceParams::Grad2Argmax { eps, .. }
            | DefenceParams::Mad { eps, .. }
            | DefenceParams::RandomVertex { eps, .. }
            | DefenceParams::RandomFixed { eps, .. }
            | DefenceParams::PartnerTable { eps, .. } => eps,
        })
    }

    /// Whether the defence guarantees the class of every answer.
    pub fn keeps_class(&self) -> bool {
        !matches!(
            self,
            DefenceParams::Gaussian { .. }
                | DefenceParams::ReverseSigmoid { .. }
                | DefenceParams::Rounding { .. }
                | DefenceParams::Mad { .. }
        )
    }

    /// Whether the defence may draw from the defender's secret key (keyed query seeds, keyed
    /// directions, tables or surrogates); the deterministic baselines do not, and need no key
    /// file.
    pub fn uses_key(&self) -> bool {
        !matches!(
            self,
            DefenceParams::None
                | DefenceParams::Top1
                | DefenceParams::Rounding { .. }
                | DefenceParams::ReverseSigmoid { .. }
        )
    }

    /// The reading whose poison cache the defence needs, if any.
    pub fn needs_cache(&self) -> Option<OutputReading> {
        match *self {
            DefenceParams::Rg { reading, .. } | DefenceParams::RgLogit { reading, .. } => {
                Some(reading)
            }
            DefenceParams::RgVertex {
                objective: RgObjective::A,
                reading,
                ..
            } => Some(reading),
            _ => None,
        }
    }

    /// Build the defence (its name is the canonical string). Errors: a cache that does not fit
    /// the model, fewer than 2 classes for the defences that move mass between classes.
    pub fn build(&self, ctx: &DefenceContext<'_>) -> Result<Box<dyn Defence>> {
        let k = ctx.model.n_outputs();
        let cache = |r: OutputReading| ctx.caches.get(ctx.model, r);
        let surrogate = |kind: SurrogateKind| -> Result<Arc<Surrogate>> {
            Ok(Arc::new(Surrogate::new(
                kind,
                ctx.model,
                ctx.key.derive("surrogate"),
            )?))
        };
        if k < 2 && !matches!(self, DefenceParams::None | DefenceParams::Top1) {
            return Err(Error::invalid(format!(
                "defence {self}: the model has {k} output; moving mass between classes needs 2"
            )));
        }
        let uses_masks = matches!(
            self,
            DefenceParams::RgVertex { .. }
                | DefenceParams::MadArgmax { .. }
                | DefenceParams::Mad { .. }
                | DefenceParams::RandomVertex { .. }
                | DefenceParams::PartnerTable { .. }
        );
        if k > MAX_CLASSES && uses_masks {
            return Err(Error::invalid(format!(
                "defence {self}: the model has {k} outputs; the vertex defences index the classes \
                 of a subset by the bits of a 64-bit mask, so at most {MAX_CLASSES}"
            )));
        }
        let vertex = |rule: VertexRule, eps: f64, margin: f64, floor: f64, keeps: bool| {
            Box::new(VertexDefence {
                rule,
                eps,
                margin,
                floor,
                keeps_class: keeps,
            }) as Box<dyn Defence>
        };
        let inner: Box<dyn Defence> = match *self {
            DefenceParams::None => Box::new(NoDefence),
            DefenceParams::Top1 => Box::new(Top1),
            DefenceParams::Rg {
                reading,
                eps,
                margin,
                sign,
            } => Box::new(RgPoison::new(
                (*cache(reading)?).clone(),
                eps,
                margin,
                sign,
            )?),
            DefenceParams::Random { eps, margin, sign } => {
                Box::new(RandomDirection::new(eps, margin, sign)?)
            }
            DefenceParams::Gaussian { sigma } => Box::new(Gaussian::new(sigma)?),
            DefenceParams::ReverseSigmoid { beta, gamma } => {
                Box::new(ReverseSigmoid::new(beta, gamma)?)
            }
            DefenceParams::Rounding { decimals } => Box::new(Rounding::new(decimals)?),
            DefenceParams::RgVertex {
                objective,
                reading,
                eps,
                margin,
                floor,
            } => {
                let obj = match (objective, reading) {
                    (RgObjective::A, r) => VertexObjective::FisherQuadratic(cache(r)?),
                    (RgObjective::B, OutputReading::PlugIn) => {
                        VertexObjective::generation_kl(ctx.model)
                    }
                    (RgObjective::B, OutputReading::Mixture) => {
                        VertexObjective::mixture_kl(ctx.model)
                    }
                };
                obj.check(k)?;
                vertex(VertexRule::Maximise(obj), eps, margin, floor, true)
            }
            DefenceParams::RgLogit {
                reading,
                tau,
                margin,
                floor,
            } => {
                let c = cache(reading)?;
                VertexObjective::FisherQuadratic(c.clone()).check(k)?;
                Box::new(RgLogit {
                    cache: c,
                    tau,
                    margin,
                    floor,
                })
            }
            DefenceParams::MadArgmax {
                eps,
                margin,
                floor,
                surrogate: s,
            } => vertex(
                VertexRule::Maximise(VertexObjective::MadAngle(surrogate(s)?)),
                eps,
                margin,
                floor,
                true,
            ),
            DefenceParams::Grad2Argmax {
                eps,
                margin,
                floor,
                surrogate: s,
            } => vertex(VertexRule::Grad2(surrogate(s)?), eps, margin, floor, true),
            DefenceParams::Mad {
                eps,
                floor,
                surrogate: s,
            } => vertex(
                VertexRule::Maximise(VertexObjective::MadAngle(surrogate(s)?)),
                eps,
                0.0,
                floor,
                false,
            ),
            DefenceParams::RandomVertex { eps, margin, floor } => {
                vertex(VertexRule::RandomVertex, eps, margin, floor, true)
            }
            DefenceParams::RandomFixed { eps, margin, floor } => vertex(
                VertexRule::FixedDirection(keyed_directions(k, ctx.key.derive("random-fixed"))?),
                eps,
                margin,
                floor,
                true,
            ),
            DefenceParams::PartnerTable { eps, margin, floor } => vertex(
                VertexRule::Partner(partner_table(k, ctx.key.derive("partner-table"))),
                eps,
                margin,
                floor,
                true,
            ),
        };
        Ok(Box::new(Built {
            name: self.to_string(),
            inner,
        }))
    }
}

impl fmt::Display for DefenceParams {
    /// The canonical string: the name and every knob in table order; parses back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = |s: SignRule| match s {
            SignRule::Feasible => "feasible",
            SignRule::Seeded => "keyed",
        };
        let obj = |o: RgObjective| match o {
            RgObjective::A => "A",
            RgObjective::B => "B",
        };
        match *self {
            DefenceParams::None => write!(f, "none"),
            DefenceParams::Top1 => write!(f, "top1"),
            DefenceParams::Rg {
                reading,
                eps,
                margin,
                sign: s,
            } => write!(
                f,
                "rg:reading={},eps={eps},margin={margin},sign={}",
                reading_letter(reading),
                sign(s)
            ),
            DefenceParams::Random {
                eps,
                margin,
                sign: s,
            } => write!(f, "random:eps={eps},margin={margin},sign={}", sign(s)),
            DefenceParams::Gaussian { sigma } => write!(f, "gaussian:sigma={sigma}"),
            DefenceParams::ReverseSigmoid { beta, gamma } => {
                write!(f, "reverse-sigmoid:beta={beta},gamma={gamma}")
            }
            DefenceParams::Rounding { decimals } => write!(f, "rounding:decimals={decimals}"),
            DefenceParams::RgVertex {
                objective,
                reading,
                eps,
                margin,
                floor,
            } => write!(
                f,
                "rg-vertex:objective={},reading={},eps={eps},margin={margin},floor={floor}",
                obj(objective),
                reading_letter(reading)
            ),
            DefenceParams::RgLogit {
                reading,
                tau,
                margin,
                floor,
            } => write!(
                f,
                "rg-logit:reading={},tau={tau},margin={margin},floor={floor}",
                reading_letter(reading)
            ),
            DefenceParams::MadArgmax {
                eps,
                margin,
                floor,
                surrogate,
            } => write!(
                f,
                "mad-argmax:eps={eps},margin={margin},floor={floor},surrogate={surrogate}"
            ),
            DefenceParams::Grad2Argmax {
                eps,
                margin,
                floor,
                surrogate,
            } => write!(
                f,
                "grad2-argmax:eps={eps},margin={margin},floor={floor},surrogate={surrogate}"
            ),
            DefenceParams::Mad {
                eps,
                floor,
                surrogate,
            } => write!(f, "mad:eps={eps},floor={floor},surrogate={surrogate}"),
            DefenceParams::RandomVertex { eps, margin, floor } => {
                write!(f, "random-vertex:eps={eps},margin={margin},floor={floor}")
            }
            DefenceParams::RandomFixed { eps, margin, floor } => {
                write!(f, "random-fixed:eps={eps},margin={margin},floor={floor}")
            }
            DefenceParams::PartnerTable { eps, margin, floor } => {
                write!(f, "partner-table:eps={eps},margin={margin},floor={floor}")
            }
        }
    }
}

impl FromStr for DefenceParams {
    type Err = Error;
    /// One defence (a sweep with more than one combination is refused).
    fn from_str(s: &str) -> Result<Self> {
        let mut all = s.parse::<DefenceSweep>()?.expand()?;
        if all.len() != 1 {
            return Err(Error::invalid(format!(
                "defence '{s}': {} combinations given where one defence is expected",
                all.len()
            )));
        }
        Ok(all.remove(0))
    }
}

impl serde::Serialize for DefenceParams {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for DefenceParams {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A built defence under its canonical name.
struct Built {
    name: String,
    inner: Box<dyn Defence>,
}

impl Defence for Built {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn apply(&self, q: &Query<'_>) -> Result<Vec<f32>> {
        self.inner.apply(q)
    }
    fn keeps_argmax(&self) -> bool {
        self.inner.keeps_argmax()
    }
}

/// What building a defence may need besides its knobs.
pub struct DefenceContext<'a> {
    /// The victim.
    pub model: &'a DeepRbm,
    /// The defender's secret key.
    pub key: &'a Key,
    /// Where the poison caches come from.
    pub caches: &'a PoisonCaches,
}

/// The poison caches of one model, by reading: loaded from a cache directory when a fitting file
/// is there, computed otherwise (and saved there when the directory is writable). Memoised; what
/// happened is kept in [`PoisonCaches::notes`] for the caller to report.
pub struct PoisonCaches {
    dir: Option<PathBuf>,
    image_shape: Option<(usize, usize)>,
    loaded: Mutex<Vec<Arc<PoisonCache>>>,
    notes: Mutex<Vec<String>>,
}

impl PoisonCaches {
    /// Caches read from and written to `dir` (created when missing; `None`: in memory only).
    /// `image_shape` shapes the input layer's nearest-neighbour operators.
    pub fn new(dir: Option<PathBuf>, image_shape: Option<(usize, usize)>) -> Self {
        PoisonCaches {
            dir,
            image_shape,
            loaded: Mutex::new(Vec::new()),
            notes: Mutex::new(Vec::new()),
        }
    }

    /// Caches given in advance (tests, experiments that computed them).
    pub fn with(caches: Vec<PoisonCache>) -> Self {
        let c = PoisonCaches::new(None, None);
        *c.loaded.lock().unwrap_or_else(|e| e.into_inner()) =
            caches.into_iter().map(Arc::new).collect();
        c
    }

    /// The cache directory used by default for a model: `$RGSHIELD_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/rgshield`, else `$HOME/.cache/rgshield`, then the model's fingerprint —
    /// outside the model directory, so a read-only model directory serves.
    pub fn default_dir(model: &DeepRbm) -> Option<PathBuf> {
        let base = std::env::var_os("RGSHIELD_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| Path::new(&d).join("rgshield")))
            .or_else(|| {
                std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache").join("rgshield"))
            })?;
        Some(base.join(model.fingerprint_hex()))
    }

    /// What was loaded, computed or could not be saved, one line each (drains the list).
    pub fn notes(&self) -> Vec<String> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn note(&self, s: String) {
        self.notes.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }

    /// The cache of `reading` for `model` (see the type's documentation).
    pub fn get(&self, model: &DeepRbm, reading: OutputReading) -> Result<Arc<PoisonCache>> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = loaded.iter().find(|c| c.reading == reading) {
            c.check_model(model)?;
            return Ok(c.clone());
        }
        let path = self.dir.as_ref().map(|d| PoisonCache::path_in(d, reading));
        if let Some(p) = path.as_ref().filter(|p| p.exists()) {
            match PoisonCache::load(p) {
                Ok(c) if c.check_model(model).is_ok() && !c.fisher.is_empty() => {
                    self.note(format!("loaded poison cache {}", p.display()));
                    let c = Arc::new(c);
                    loaded.push(c.clone());
                    return Ok(c);
                }
                Ok(_) => self.note(format!(
                    "{} is for another model or an older format: recomputing",
                    p.display()
                )),
                Err(e) => self.note(format!("{e}: recomputing")),
            }
        }
        let c = PoisonCache::for_model(model, self.image_shape, reading, DEFAULT_CACHE_SAMPLES, 0)?;
        match &path {
            Some(p) => {
                let saved = p
                    .parent()
                    .map_or(Ok(()), |d| {
                        std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))
                    })
                    .and_then(|_| c.save(p));
                match saved {
                    Ok(()) => self.note(format!(
                        "computed poison directions per class ({} samples per class) into {}",
                        c.samples,
                        p.display()
                    )),
                    Err(e) => self.note(format!(
                        "computed poison directions per class; not saved ({e}): kept in memory"
                    )),
                }
            }
            None => self.note("computed poison directions per class (in memory)".into()),
        }
        let c = Arc::new(c);
        loaded.push(c.clone());
        Ok(c)
    }
}
