//! The protocol file (SPEC §12): one JSON document that fixes the whole grid — the victims, the
//! query pools, the budgets, the attacker seeds, the attackers' tuning grid and the cells (defence
//! sweeps × attackers × budgets) — so a run is reproducible from the file and the code alone.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::defence::{DefenceParams, DefenceSweep};
use crate::error::{Error, Result};
use crate::params::{Params, Valid};

use super::attackers::AttackerKind;
use crate::train::{Method, TrainParams};

/// Which data set and which split of it (SPEC §12, "victims" and "query pools").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtocolData {
    /// The embedded digits, all 1 797 rows re-split stratified into victim 900 / pool 600 /
    /// evaluation 297.
    Digits,
    /// Fashion-MNIST 28×28 binarised: victim = training images 0–19 999, pool = 20 000–59 999,
    /// evaluation = the 10 000 test images.
    FashionMnist,
}

/// One block of the grid: every defence point of `defences` against every attacker, at every
/// budget of `budgets` (default: all), for every victim of `victims` (default: all) and every
/// attacker seed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GridBlock {
    /// A name for the report.
    pub name: String,
    /// Defence sweeps in the `NAME[:key=v1|v2,…]` syntax.
    pub defences: Vec<String>,
    /// Attackers (see [`AttackerKind`]).
    pub attackers: Vec<AttackerKind>,
    /// Budgets of this block (a subset of the protocol's); all when absent.
    #[serde(default)]
    pub budgets: Option<Vec<usize>>,
    /// Victim seeds of this block; all when absent.
    #[serde(default)]
    pub victims: Option<Vec<u64>>,
    /// Attacker seeds of this block; all when absent.
    #[serde(default)]
    pub attacker_seeds: Option<Vec<u64>>,
}

/// The MLP thief's settings and the grid its epochs and rate are tuned on (undefended answers,
/// hold-out agreement, per budget, before any defended run).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpTuning {
    /// Hidden ReLU units.
    pub hidden: usize,
    /// Minibatch size.
    pub batch: usize,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Candidate epoch counts.
    pub epochs: Vec<usize>,
    /// Candidate Adam rates.
    pub lr: Vec<f64>,
}

/// The whole protocol (SPEC §12).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolSpec {
    /// A name for the report.
    pub name: String,
    /// The data set and its split.
    pub data: ProtocolData,
    /// The victims' widths `n_0 … n_N`.
    pub victim_widths: Vec<usize>,
    /// One victim per training seed (trained by the hybrid rule with its defaults).
    pub victim_seeds: Vec<u64>,
    /// Changes to the hybrid defaults of the victims' training (small test protocols only;
    /// absent in the kept runs).
    #[serde(default, skip_serializing_if = "VictimTraining::is_default")]
    pub victim_training: VictimTraining,
    /// Training configurations pinned for this protocol: every field of the hybrid's (victims and
    /// same-architecture thieves) and eq. 14's (eq. 14 thieves), each seed replaced by the
    /// victim's or the clone's. Absent: the methods' defaults of the running code
    /// (`TrainParams::for_method`), so a kept run pins them to stay reproducible when the
    /// defaults change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<PinnedTraining>,
    /// Samples S of the victim's served output.
    pub serve_samples: usize,
    /// Query budgets.
    pub budgets: Vec<usize>,
    /// The budget of the primary comparisons (SPEC §12; one of `budgets`).
    pub primary_budget: usize,
    /// Attacker seeds (query draw, clone initialisation); shared by every defence.
    pub attacker_seeds: Vec<u64>,
    /// Share of each attacker's queries held out (for its early choices and `distill-select`).
    pub holdout_fraction: f64,
    /// The MLP thief.
    pub mlp: MlpTuning,
    /// Answers of each kind (honest, defended) that train, and again that test, the
    /// detectability classifier.
    pub detect_rows: usize,
    /// Correctly served evaluation inputs on which adversarial transfer is measured (0: not
    /// measured; it costs a Fisher eigenvector per input and clone).
    pub transfer_inputs: usize,
    /// L2 norm of the transfer perturbation.
    pub transfer_epsilon: f64,
    /// The grid.
    pub blocks: Vec<GridBlock>,
}

/// Training configurations pinned by a protocol ([`ProtocolSpec::training`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedTraining {
    /// The hybrid's configuration.
    pub hybrid: TrainParams,
    /// Eq. 14's configuration.
    pub eq14: TrainParams,
}

impl PinnedTraining {
    /// The training parameters of `method` with `seed`: pinned when given, else the defaults.
    pub fn params(pinned: Option<&PinnedTraining>, method: Method, seed: u64) -> TrainParams {
        match (pinned, method) {
            (Some(p), Method::Hybrid) => p.hybrid.with_seed(seed),
            (Some(p), Method::Eq14) => p.eq14.with_seed(seed),
            (None, m) => TrainParams::for_method(m, seed),
        }
    }
}

/// Changes to the victims' hybrid training defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VictimTraining {
    /// Maximum fine-tuning epochs.
    #[serde(default)]
    pub finetune_epochs: Option<usize>,
    /// Maximum eq. 14 refinement sweeps.
    #[serde(default)]
    pub sweeps: Option<usize>,
}

impl VictimTraining {
    fn is_default(&self) -> bool {
        *self == VictimTraining::default()
    }
}

/// A [`GridBlock`] with its sweeps expanded and its subsets resolved.
#[derive(Clone, Debug, Serialize)]
pub struct Block {
    /// The block's name.
    pub name: String,
    /// Defence points.
    pub defences: Vec<DefenceParams>,
    /// Attackers.
    pub attackers: Vec<AttackerKind>,
    /// Budgets.
    pub budgets: Vec<usize>,
    /// Victim seeds.
    pub victims: Vec<u64>,
    /// Attacker seeds.
    pub attacker_seeds: Vec<u64>,
}

impl ProtocolSpec {
    /// Read a protocol file; errors name the file.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::invalid(format!("{}: not a protocol file: {e}", path.display())))
    }

    /// The blocks with sweeps expanded (checked specs only).
    pub fn blocks(&self) -> Result<Vec<Block>> {
        self.blocks
            .iter()
            .map(|b| {
                let mut defences: Vec<DefenceParams> = Vec::new();
                for s in &b.defences {
                    let sweep: DefenceSweep = s.parse().map_err(|e| {
                        Error::invalid(format!("protocol block '{}': defence '{s}': {e}", b.name))
                    })?;
                    for d in sweep.expand()? {
                        if defences.contains(&d) {
                            return Err(Error::invalid(format!(
                                "protocol block '{}': defence {d} is listed twice",
                                b.name
                            )));
                        }
                        defences.push(d);
                    }
                }
                let subset =
                    |what: &str, sub: &Option<Vec<u64>>, all: &[u64]| -> Result<Vec<u64>> {
                        match sub {
                            None => Ok(all.to_vec()),
                            Some(v) => match v.iter().find(|s| !all.contains(s)) {
                                Some(s) => Err(Error::invalid(format!(
                                    "protocol block '{}': {what} {s} is not one of {all:?}",
                                    b.name
                                ))),
                                None => Ok(v.clone()),
                            },
                        }
                    };
                let budgets = match &b.budgets {
                    None => self.budgets.clone(),
                    Some(v) => match v.iter().find(|s| !self.budgets.contains(s)) {
                        Some(s) => {
                            return Err(Error::invalid(format!(
                                "protocol block '{}': budget {s} is not one of {:?}",
                                b.name, self.budgets
                            )))
                        }
                        None => v.clone(),
                    },
                };
                Ok(Block {
                    name: b.name.clone(),
                    defences,
                    attackers: b.attackers.clone(),
                    budgets,
                    victims: subset("victim", &b.victims, &self.victim_seeds)?,
                    attacker_seeds: subset(
                        "attacker seed",
                        &b.attacker_seeds,
                        &self.attacker_seeds,
                    )?,
                })
            })
            .collect()
    }
}

impl Params for ProtocolSpec {
    fn check(self) -> Result<Valid<Self>> {
        let bad = |m: String| Err(Error::invalid(format!("protocol '{}': {m}", self.name)));
        if self.victim_seeds.is_empty() || self.attacker_seeds.is_empty() || self.budgets.is_empty()
        {
            return bad("needs at least one victim seed, attacker seed and budget".into());
        }
        if self.budgets.iter().any(|&b| b < 10) {
            return bad(format!("budgets {:?}: each must be ≥ 10", self.budgets));
        }
        if !self.budgets.contains(&self.primary_budget) {
            return bad(format!(
                "primary_budget {} is not one of the budgets {:?}",
                self.primary_budget, self.budgets
            ));
        }
        if !(self.holdout_fraction >= 0.05 && self.holdout_fraction <= 0.5) {
            return bad(format!(
                "holdout_fraction {} not in [0.05, 0.5]",
                self.holdout_fraction
            ));
        }
        if self.serve_samples == 0 {
            return bad("serve_samples 0 (the served output needs S ≥ 1)".into());
        }
        if let Some(p) = &self.training {
            if !self.victim_training.is_default() {
                return bad(
                    "victim_training beside training: with training pinned, set the victims' \
                     finetune_epochs and sweeps in training.hybrid"
                        .into(),
                );
            }
            for (what, t, m) in [
                ("training.hybrid", &p.hybrid, Method::Hybrid),
                ("training.eq14", &p.eq14, Method::Eq14),
            ] {
                if t.method != m {
                    return bad(format!("{what}.method is {}, expected {m}", t.method));
                }
                if let Err(e) = t.clone().check() {
                    return bad(format!("{what}: {e}"));
                }
            }
        }
        if self.detect_rows < 10 {
            return bad(format!("detect_rows {} (need ≥ 10)", self.detect_rows));
        }
        if !(self.transfer_epsilon.is_finite() && self.transfer_epsilon > 0.0) {
            return bad(format!("transfer_epsilon {}", self.transfer_epsilon));
        }
        let m = &self.mlp;
        if m.hidden == 0 || m.batch == 0 || m.epochs.is_empty() || m.lr.is_empty() {
            return bad("mlp: hidden, batch, epochs and lr must be non-empty and positive".into());
        }
        if m.epochs.contains(&0) || m.lr.iter().any(|r| !(r.is_finite() && *r > 0.0)) {
            return bad(format!("mlp: epochs {:?}, lr {:?}", m.epochs, m.lr));
        }
        if self.blocks.is_empty() {
            return bad("no grid block".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for b in &self.blocks {
            if !names.insert(b.name.clone()) {
                return bad(format!("block '{}' is listed twice", b.name));
            }
            if b.defences.is_empty() || b.attackers.is_empty() {
                return bad(format!("block '{}' has no defence or no attacker", b.name));
            }
        }
        self.blocks()?;
        Ok(Valid::checked(self))
    }
}
