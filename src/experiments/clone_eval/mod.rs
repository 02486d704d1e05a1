//! Cloning attacks against served outputs and what a defence does to them (SPEC §9).
//!
//! Protocol of one run (seed s): the test split — disjoint from the victim's training split — is
//! cut at random into an attacker's *query pool* and an *evaluation set*. The attacker's queries
//! are the pool, topped up to the budget with copies whose pixels are flipped with probability
//! `augment_flip` (digits has too few natural images for a budget of 1000; the count of natural
//! queries is reported). The victim serves its output ŷ for each query (its served mode, seeded per
//! input), the defence turns it into ŷ', and each attacker trains a clone on (x, view(ŷ')):
//! * `eq14` — the paper's threat model: the victim's architecture trained by eq. 14 (README,
//!   "Training", eq. 14 defaults) with ŷ' as the top layer's values (reading (P));
//! * `distill` — a softmax MLP ([`crate::model::mlp`]) trained by cross-entropy on ŷ'/Σŷ';
//! * adaptive variants `+round1` (ŷ' rounded to one decimal) and `+top1` (argmax only).
//!
//! Metrics on the evaluation set: clone accuracy (true labels), fidelity (clone class = victim's
//! served class), adversarial transfer at a fixed L2 norm ε (the clone's input-Fisher direction,
//! SPEC §6, applied to the victim: success = the victim's served class changes; beside it the same
//! attack built on the victim itself and a random direction, both independent of the defence), and
//! the defender's utility (victim accuracy through ŷ', answers whose class changed) and distortion
//! (mean L1, L2, KL of ŷ' against ŷ over the queries).

mod classifier;
mod plots;
mod tables;

pub use classifier::{Classifier, CloneData, DistillLearner, Eq14Learner, Learner, RbmClassifier};
pub use plots::write_plots;
pub use tables::{markdown, paired_differences, tables, PairedDifference, SavedRows};

use std::collections::BTreeMap;
use std::str::FromStr;

use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::Serialize;

use crate::data::{Dataset, Split};
use crate::defence::{
    distortion, DefenceContext, DefenceParams, DefenceSweep, Key, PoisonCaches, Query,
};
use crate::error::{Error, Result};
use crate::model::mlp::MlpParams;
use crate::model::DeepRbm;
use crate::params::{Params, Valid};
use crate::perturb::{gaussian_vector, step_to_norm};
use crate::progress::Progress;
use crate::sample::{argmax, OutputMode, Predictor};
use crate::train::{subset, Method, TrainParams};
use crate::util::{fnv1a64, mix_seed, shuffle};

/// How the clone is trained (SPEC §9 (a), (b)); [`LearnerKind::build`] makes its [`Learner`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LearnerKind {
    /// The victim's architecture, eq. 14 on (x, ŷ') — the paper's threat model.
    Eq14,
    /// A softmax MLP distilled by cross-entropy.
    Distill,
}

/// What the attacker keeps of each served vector before training (SPEC §9 (c)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum View {
    /// ŷ' as served.
    Raw,
    /// Each component rounded to this many decimals.
    Round(u32),
    /// The argmax as a one-hot vector.
    Top1,
}

/// One attacker: a learner and a view of the served outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AttackerSpec {
    /// How the clone is trained.
    pub learner: LearnerKind,
    /// What the attacker keeps of each answer.
    pub view: View,
}

impl LearnerKind {
    /// The learner with the experiment's settings.
    pub fn build(self, params: &Valid<CloneEvalParams>, widths: &[usize]) -> Box<dyn Learner> {
        match self {
            // Both were checked by `CloneEvalParams::check`.
            LearnerKind::Eq14 => Box::new(Eq14Learner {
                params: Valid::checked(params.eq14.clone()),
                widths: widths.to_vec(),
                mode: params.serve,
            }),
            LearnerKind::Distill => Box::new(DistillLearner {
                params: Valid::checked(params.mlp.clone()),
            }),
        }
    }
}

impl std::fmt::Display for AttackerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = match self.learner {
            LearnerKind::Eq14 => "eq14",
            LearnerKind::Distill => "distill",
        };
        match self.view {
            View::Raw => write!(f, "{l}"),
            View::Round(d) => write!(f, "{l}+round{d}"),
            View::Top1 => write!(f, "{l}+top1"),
        }
    }
}

impl AttackerSpec {
    /// Parse a comma list: `eq14`, `distill`, `LEARNER+roundD`, `LEARNER+top1`, and `adaptive`
    /// (= `distill+round1,distill+top1`).
    pub fn parse_list(s: &str) -> Result<Vec<AttackerSpec>> {
        let mut out = Vec::new();
        for tok in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if tok == "adaptive" {
                out.push(AttackerSpec {
                    learner: LearnerKind::Distill,
                    view: View::Round(1),
                });
                out.push(AttackerSpec {
                    learner: LearnerKind::Distill,
                    view: View::Top1,
                });
            } else {
                out.push(tok.parse()?);
            }
        }
        if out.is_empty() {
            return Err(Error::invalid(format!("attackers '{s}': none given")));
        }
        Ok(out)
    }
}

impl FromStr for AttackerSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let (l, v) = match s.split_once('+') {
            Some((l, v)) => (l, Some(v)),
            None => (s, None),
        };
        let learner = match l {
            "eq14" => LearnerKind::Eq14,
            "distill" => LearnerKind::Distill,
            _ => {
                return Err(Error::invalid(format!(
                    "attacker '{s}': unknown learner '{l}' (eq14, distill, adaptive)"
                )))
            }
        };
        let view = match v {
            None => View::Raw,
            Some("top1") => View::Top1,
            Some(r) if r.starts_with("round") => {
                let d: u32 = r["round".len()..].parse().map_err(|_| {
                    Error::invalid(format!(
                        "attacker '{s}': '{r}' needs a digit count, e.g. round1"
                    ))
                })?;
                if d > 6 {
                    return Err(Error::invalid(format!(
                        "attacker '{s}': rounding to {d} decimals (at most 6)"
                    )));
                }
                View::Round(d)
            }
            Some(o) => {
                return Err(Error::invalid(format!(
                    "attacker '{s}': unknown view '{o}' (roundD, top1)"
                )))
            }
        };
        Ok(AttackerSpec { learner, view })
    }
}

/// JSON has no NaN: serde_json writes it as null, read back here as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    use serde::Deserialize;
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// The default defences of `clone-eval`, each a sweep of its own knob (SPEC §9's baselines and
/// the first-form RG poison).
pub const DEFAULT_DEFENCES: &[&str] = &[
    "none",
    "rg:eps=0.05|0.1|0.2|0.4",
    "random:eps=0.05|0.1|0.2|0.4",
    "gaussian:sigma=0.02|0.05|0.1|0.2",
    "reverse-sigmoid:beta=0.1|0.3|0.6|1",
    "rounding:decimals=2|1|0",
    "top1",
];

/// Expand defence sweeps (`NAME[:key=v1|v2,…]`) into the list of defences, refusing repeats.
pub fn expand_defences(sweeps: &[DefenceSweep]) -> Result<Vec<DefenceParams>> {
    let mut out: Vec<DefenceParams> = Vec::new();
    for s in sweeps {
        for d in s.expand()? {
            if out.contains(&d) {
                return Err(Error::invalid(format!("defence {d} is listed twice")));
            }
            out.push(d);
        }
    }
    Ok(out)
}

/// Settings of [`clone_eval`].
#[derive(Clone, Debug, Serialize)]
pub struct CloneEvalParams {
    /// Defences (every sweep expanded).
    pub defences: Vec<DefenceParams>,
    /// Attackers.
    pub attackers: Vec<AttackerSpec>,
    /// Queries per attacker.
    pub budget: usize,
    /// One run per seed (query split, augmentation, clone initialisation).
    pub seeds: Vec<u64>,
    /// Fraction of the test split given to the attacker's query pool (the rest is evaluation).
    pub pool_fraction: f64,
    /// Pixel-flip probability of the augmented queries.
    pub augment_flip: f64,
    /// The victim's served output.
    pub serve: OutputMode,
    /// L2 norm of the transfer perturbations.
    pub transfer_epsilon: f64,
    /// Evaluation inputs (correctly served ones, in order) used for the transfer measurement.
    pub transfer_inputs: usize,
    /// Eq. 14 clone training (its seed is replaced per run).
    pub eq14: TrainParams,
    /// Distilled clone.
    pub mlp: MlpParams,
}

impl Default for CloneEvalParams {
    /// Attackers eq14 and distill, budget 1000, seeds 1…5, half the test split as the pool, 5%
    /// flips, served S = 64, transfer at L2 = 1 on 100 inputs, the eq. 14 and MLP defaults; no
    /// defence.
    fn default() -> Self {
        CloneEvalParams {
            defences: Vec::new(),
            attackers: vec![
                AttackerSpec {
                    learner: LearnerKind::Eq14,
                    view: View::Raw,
                },
                AttackerSpec {
                    learner: LearnerKind::Distill,
                    view: View::Raw,
                },
            ],
            budget: 1000,
            seeds: (1..=5).collect(),
            pool_fraction: 0.5,
            augment_flip: 0.05,
            serve: OutputMode::Served {
                samples: 64,
                seed: 0,
            },
            transfer_epsilon: 1.0,
            transfer_inputs: 100,
            eq14: TrainParams::for_method(Method::Eq14, 1),
            mlp: MlpParams::default(),
        }
    }
}

impl Params for CloneEvalParams {
    fn check(self) -> Result<Valid<Self>> {
        let bad = |m: String| Err(Error::invalid(format!("clone-eval: {m}")));
        if self.defences.is_empty() {
            return bad("no defence to evaluate".into());
        }
        if self.attackers.is_empty() || self.seeds.is_empty() || self.budget < 10 {
            return bad(format!(
                "{} attackers, {} seeds, budget {} (need ≥ 1, ≥ 1, ≥ 10)",
                self.attackers.len(),
                self.seeds.len(),
                self.budget
            ));
        }
        if !(self.pool_fraction > 0.0 && self.pool_fraction < 1.0) {
            return bad(format!(
                "pool fraction {} not in (0, 1)",
                self.pool_fraction
            ));
        }
        if !(0.0..=0.5).contains(&self.augment_flip) {
            return bad(format!(
                "augment flip {} not in [0, 0.5]",
                self.augment_flip
            ));
        }
        if self.transfer_inputs == 0 {
            return bad(
                "transfer inputs 0: the transfer measurement needs at least one input".into(),
            );
        }
        if !(self.transfer_epsilon.is_finite() && self.transfer_epsilon > 0.0) {
            return bad(format!("transfer ε = {}", self.transfer_epsilon));
        }
        if let OutputMode::Served { samples: 0, .. } = self.serve {
            return bad("served output with 0 samples".into());
        }
        self.eq14.clone().check()?;
        self.mlp.clone().check()?;
        Ok(Valid::checked(self))
    }
}

/// One (seed, defence, strength, attacker) run.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct CloneRow {
    /// Seed of the query split, augmentation and clone initialisation.
    pub seed: u64,
    /// The defence's name with its parameter.
    pub defence: String,
    /// The defence's kind (its CLI name).
    pub defence_kind: String,
    /// The defence's parameter.
    pub strength: f64,
    /// The attacker (learner and view).
    pub attacker: String,
    /// Clone accuracy on the evaluation set (true labels).
    pub clone_accuracy: f64,
    /// Clone class = victim's served class on the evaluation set.
    pub fidelity: f64,
    /// Victim's served class changed by the clone's input-Fisher direction at ε (NaN, written as
    /// null, when no evaluation input was served correctly).
    #[serde(deserialize_with = "nan_if_null")]
    pub transfer_success: f64,
    /// Victim accuracy through the defended outputs on the evaluation set.
    pub defended_accuracy: f64,
    /// Victim accuracy undefended on the evaluation set.
    pub undefended_accuracy: f64,
    /// Fraction of evaluation answers whose class the defence changed.
    pub changed_argmax: f64,
    /// Mean distortion over the queries.
    pub l1: f64,
    /// Mean L2 distortion over the queries.
    pub l2: f64,
    /// Mean KL distortion over the queries.
    pub kl: f64,
    /// Wall-clock time of this clone.
    pub seconds: f64,
}

/// Per-seed measurements that do not depend on the defence.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct SeedBaseline {
    /// The seed.
    pub seed: u64,
    /// Queries sent.
    pub queries: usize,
    /// Queries that were natural images (the rest are flipped copies).
    pub natural_queries: usize,
    /// Evaluation inputs.
    pub eval_inputs: usize,
    /// Evaluation inputs used for the transfer measurement.
    pub transfer_inputs: usize,
    /// The same attack built on the victim itself (its mean-field input-Fisher direction).
    #[serde(deserialize_with = "nan_if_null")]
    pub victim_self_success: f64,
    /// A random direction of the same norm.
    #[serde(deserialize_with = "nan_if_null")]
    pub random_success: f64,
}

/// Mean and sample standard deviation over seeds of one (defence, strength, attacker) cell.
#[derive(Clone, Debug, Serialize)]
pub struct CloneCell {
    /// The defence's name.
    pub defence: String,
    /// The defence's kind.
    pub defence_kind: String,
    /// The defence's parameter.
    pub strength: f64,
    /// The attacker.
    pub attacker: String,
    /// Seeds in the cell.
    pub seeds: usize,
    /// Clone accuracy, mean and sd.
    pub clone_accuracy: (f64, f64),
    /// Fidelity, mean and sd.
    pub fidelity: (f64, f64),
    /// Transfer success, mean and sd.
    pub transfer_success: (f64, f64),
    /// Victim accuracy through the defence, mean and sd.
    pub defended_accuracy: (f64, f64),
    /// Share of changed answers, mean and sd.
    pub changed_argmax: (f64, f64),
    /// Mean L1 distortion, mean and sd.
    pub l1: (f64, f64),
    /// Mean KL distortion, mean and sd.
    pub kl: (f64, f64),
}

/// Everything `clone-eval` measured.
#[derive(Clone, Debug, Serialize)]
pub struct CloneEvalReport {
    /// Widths of the victim.
    pub victim_widths: Vec<usize>,
    /// Data set name.
    pub dataset: String,
    /// The experiment's settings.
    pub config: Valid<CloneEvalParams>,
    /// The protocol in one paragraph.
    pub protocol: String,
    /// Per seed, the measurements that do not depend on the defence.
    pub baselines: Vec<SeedBaseline>,
    /// One row per (seed, defence, strength, attacker).
    pub rows: Vec<CloneRow>,
    /// Mean and sd over seeds per cell.
    pub cells: Vec<CloneCell>,
    /// Wall-clock time of the run.
    pub seconds: f64,
}

/// The attacker's queries: the pool's rows, then flipped copies up to `budget`.
fn build_queries(
    pool: &Split,
    budget: usize,
    flip: f64,
    rng: &mut Xoshiro256PlusPlus,
) -> (Vec<f32>, usize) {
    let n = pool.n_features;
    let natural = pool.len().min(budget);
    let mut x = pool.x[..natural * n].to_vec();
    let mut i = 0;
    while x.len() < budget * n {
        for &v in pool.row(i % pool.len()) {
            x.push(if rng.random::<f64>() < flip {
                1.0 - v
            } else {
                v
            });
        }
        i += 1;
    }
    (x, natural)
}

/// The attacker's training targets from the defended outputs: (P) values for eq. 14, probability
/// rows (`normalise`) for distillation.
fn view_targets(defended: &[f32], n_out: usize, view: View, normalise: bool) -> Vec<f32> {
    let mut out = Vec::with_capacity(defended.len());
    for row in defended.chunks_exact(n_out) {
        let mut r: Vec<f32> = match view {
            View::Raw => row.to_vec(),
            View::Round(d) => {
                let p = 10f32.powi(d as i32);
                row.iter().map(|v| (v * p).round() / p).collect()
            }
            View::Top1 => {
                let c = argmax(row);
                (0..n_out).map(|j| if j == c { 1.0 } else { 0.0 }).collect()
            }
        };
        if normalise {
            let s: f32 = r.iter().sum();
            if s > 0.0 {
                r.iter_mut().for_each(|v| *v /= s);
            } else {
                r.iter_mut().for_each(|v| *v = 1.0 / n_out as f32);
            }
        }
        out.extend(r.into_iter().map(|v| v.clamp(0.0, 1.0)));
    }
    out
}

/// Fraction of `inputs` whose victim served class changes when moved to norm ε along `dir(i)`.
fn transfer_rate(
    victim: &Predictor,
    eval: &Split,
    inputs: &[(usize, usize)],
    eps: f64,
    dir: impl Fn(usize) -> Result<Vec<f64>> + Sync,
) -> Result<f64> {
    if inputs.is_empty() {
        return Ok(f64::NAN);
    }
    let hits = inputs
        .par_iter()
        .map(|&(i, class)| {
            let x64: Vec<f64> = eval.row(i).iter().map(|&v| v as f64).collect();
            let d = dir(i)?;
            let (xp, _) = step_to_norm(&x64, &d, eps);
            let xp: Vec<f32> = xp.iter().map(|&v| v as f32).collect();
            Ok(usize::from(argmax(&victim.output(&xp)) != class))
        })
        .collect::<Result<Vec<usize>>>()?;
    Ok(hits.iter().sum::<usize>() as f64 / inputs.len() as f64)
}

/// Fraction of positions where `a[i] == b[i]` (accuracy against labels, or agreement).
fn agreement<T: PartialEq>(a: &[T], b: &[T]) -> f64 {
    a.iter().zip(b).filter(|(x, y)| x == y).count() as f64 / a.len().max(1) as f64
}

/// Run the cloning experiment (see the module documentation). `caches` gives the poison caches
/// the RG defences need; the defences' keyed choices come from a public experiment key;
/// `progress` counts the clones.
pub fn clone_eval(
    victim: &DeepRbm,
    data: &Dataset,
    params: &Valid<CloneEvalParams>,
    caches: &PoisonCaches,
    progress: &dyn Progress,
) -> Result<CloneEvalReport> {
    let t0 = std::time::Instant::now();
    let cfg = params;
    crate::train::check_widths_fit(&victim.widths(), data)?;
    if data.test.len() < 20 {
        return Err(Error::invalid(format!(
            "clone-eval: the test split of '{}' has {} rows (need ≥ 20 for queries and evaluation)",
            data.name,
            data.test.len()
        )));
    }
    let n_out = victim.n_outputs();
    let n_in = victim.n_inputs();
    // Build every defence once.
    let key = Key::public("rgshield clone-eval");
    let ctx = DefenceContext {
        model: victim,
        key: &key,
        caches,
    };
    let defences = cfg
        .defences
        .iter()
        .map(|d| Ok((*d, d.build(&ctx)?)))
        .collect::<Result<Vec<_>>>()?;
    let predictor = Predictor::new(victim, cfg.serve);
    let victim_classifier = RbmClassifier::borrowed(victim, cfg.serve);
    let learners: Vec<Box<dyn Learner>> = cfg
        .attackers
        .iter()
        .map(|a| a.learner.build(params, &victim.widths()))
        .collect();
    let clones = cfg.defences.len() * cfg.attackers.len() * cfg.seeds.len();
    progress.start("clones", clones as u64);
    let mut rows = Vec::new();
    let mut baselines = Vec::new();
    for &seed in &cfg.seeds {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix_seed(seed, 0xC10E));
        let mut idx: Vec<usize> = (0..data.test.len()).collect();
        shuffle(&mut idx, &mut rng);
        let n_pool = ((idx.len() as f64) * cfg.pool_fraction).round() as usize;
        let (pool_idx, eval_idx) = idx.split_at(n_pool.clamp(1, idx.len() - 1));
        let pool = subset(&data.test, pool_idx);
        let eval = subset(&data.test, eval_idx);
        let (qx, natural) = build_queries(&pool, cfg.budget, cfg.augment_flip, &mut rng);
        let nq = cfg.budget;
        let served = predictor.outputs(&qx, nq);
        let eval_out = predictor.outputs(&eval.x, eval.len());
        let victim_class: Vec<usize> = eval_out.chunks_exact(n_out).map(argmax).collect();
        let labels: Vec<usize> = eval.y.iter().map(|&c| c as usize).collect();
        let undefended_accuracy = agreement(&victim_class, &labels);
        let transfer_set: Vec<(usize, usize)> = (0..eval.len())
            .filter(|&i| victim_class[i] == eval.y[i] as usize)
            .take(cfg.transfer_inputs)
            .map(|i| (i, victim_class[i]))
            .collect();
        let classes_of: BTreeMap<usize, usize> = transfer_set.iter().copied().collect();
        let victim_self = transfer_rate(
            &predictor,
            &eval,
            &transfer_set,
            cfg.transfer_epsilon,
            |i| victim_classifier.attack_direction(eval.row(i), classes_of[&i]),
        )?;
        let random = transfer_rate(
            &predictor,
            &eval,
            &transfer_set,
            cfg.transfer_epsilon,
            |i| {
                Ok(gaussian_vector(
                    n_in,
                    mix_seed(mix_seed(seed, 0x4A4D), i as u64),
                ))
            },
        )?;
        baselines.push(SeedBaseline {
            seed,
            queries: nq,
            natural_queries: natural,
            eval_inputs: eval.len(),
            transfer_inputs: transfer_set.len(),
            victim_self_success: victim_self,
            random_success: random,
        });
        let jobs: Vec<(usize, usize)> = (0..defences.len())
            .flat_map(|d| (0..cfg.attackers.len()).map(move |a| (d, a)))
            .collect();
        let seed_rows = jobs
            .par_iter()
            .map(|&(d, a)| {
                let attacker = cfg.attackers[a];
                let learner = &learners[a];
                let t1 = std::time::Instant::now();
                let (params, defence) = &defences[d];
                let defend = |x: &[f32], y: &[f32]| -> Result<Vec<f32>> {
                    let mut out = Vec::with_capacity(y.len());
                    for (xr, yr) in x.chunks_exact(n_in).zip(y.chunks_exact(n_out)) {
                        out.extend(defence.apply(&Query {
                            x: xr,
                            y: yr,
                            seed: key.query_seed(xr),
                        })?);
                    }
                    Ok(out)
                };
                let defended = defend(&qx, &served)?;
                let eval_defended = defend(&eval.x, &eval_out)?;
                let mut dist = (0.0, 0.0, 0.0);
                for (a, b) in served.chunks_exact(n_out).zip(defended.chunks_exact(n_out)) {
                    let d = distortion(a, b);
                    dist = (dist.0 + d.l1, dist.1 + d.l2, dist.2 + d.kl);
                }
                let def_class: Vec<usize> = eval_defended.chunks_exact(n_out).map(argmax).collect();
                let defended_accuracy = agreement(&def_class, &labels);
                let changed = 1.0 - agreement(&def_class, &victim_class);
                let targets = view_targets(
                    &defended,
                    n_out,
                    attacker.view,
                    learner.wants_probabilities(),
                );
                // Common random numbers: for a given seed and attacker every defence gets the same
                // clone initialisation and minibatch order, so defences are compared paired.
                let run_seed = mix_seed(seed, fnv1a64(attacker.to_string().as_bytes()));
                let clone = learner.fit(
                    &CloneData {
                        x: &qx,
                        targets: &targets,
                        rows: nq,
                        n_classes: n_out,
                    },
                    run_seed,
                )?;
                let clone_class = clone.classes(&eval.x, eval.len());
                let clone_accuracy = agreement(&clone_class, &labels);
                let fidelity = agreement(&clone_class, &victim_class);
                let transfer_success = transfer_rate(
                    &predictor,
                    &eval,
                    &transfer_set,
                    cfg.transfer_epsilon,
                    |i| clone.attack_direction(eval.row(i), classes_of[&i]),
                )?;
                progress.inc(1);
                Ok(CloneRow {
                    seed,
                    defence: defence.name(),
                    defence_kind: params.kind().to_string(),
                    strength: params.strength().unwrap_or(0.0),
                    attacker: attacker.to_string(),
                    clone_accuracy,
                    fidelity,
                    transfer_success,
                    defended_accuracy,
                    undefended_accuracy,
                    changed_argmax: changed,
                    l1: dist.0 / nq as f64,
                    l2: dist.1 / nq as f64,
                    kl: dist.2 / nq as f64,
                    seconds: t1.elapsed().as_secs_f64(),
                })
            })
            .collect::<Result<Vec<CloneRow>>>()?;
        rows.extend(seed_rows);
    }
    progress.finish();
    let cells = tables::summarise(&rows);
    Ok(CloneEvalReport {
        victim_widths: victim.widths(),
        dataset: data.name.clone(),
        config: params.clone(),
        protocol: PROTOCOL.to_string(),
        baselines,
        rows,
        cells,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// One-paragraph protocol written into the report.
pub const PROTOCOL: &str = "Per seed: the test split (disjoint from the victim's training split) is cut at random \
into the attacker's query pool and an evaluation set; queries = the pool topped up to the budget with \
pixel-flipped copies; the victim serves its output, the defence distorts it, each attacker trains a clone \
on what it sees. Clone accuracy and fidelity on the evaluation set; transfer = victim's served class \
changed by the clone's input-Fisher direction at L2 norm epsilon (clipped to [0,1]) on correctly served \
evaluation inputs; distortion = mean over the queries.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attacker_specs_parse_and_reject() {
        let v = AttackerSpec::parse_list("eq14,distill+round2,adaptive").unwrap();
        let names: Vec<String> = v.iter().map(|a| a.to_string()).collect();
        assert_eq!(
            names,
            ["eq14", "distill+round2", "distill+round1", "distill+top1"]
        );
        for bad in ["knn", "eq14+round", "eq14+round9", "distill+median", ""] {
            assert!(AttackerSpec::parse_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn views_round_keep_top1_and_normalise_for_distillation() {
        let y = [0.14f32, 0.76, 0.0, 0.31];
        assert_eq!(
            view_targets(&y, 4, View::Round(1), false),
            vec![0.1, 0.8, 0.0, 0.3]
        );
        assert_eq!(
            view_targets(&y, 4, View::Top1, false),
            vec![0.0, 1.0, 0.0, 0.0]
        );
        let p = view_targets(&y, 4, View::Raw, true);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[1] - 0.76 / 1.21).abs() < 1e-6);
        // All zero after rounding: uniform.
        let z = view_targets(&[0.01, 0.02], 2, View::Round(1), true);
        assert_eq!(z, vec![0.5, 0.5]);
    }

    #[test]
    fn queries_are_the_pool_then_flipped_copies() {
        let pool = Split {
            x: vec![1.0, 0.0, 0.0, 1.0],
            y: vec![0, 1],
            n_features: 2,
        };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let (x, natural) = build_queries(&pool, 5, 0.0, &mut rng);
        assert_eq!(natural, 2);
        assert_eq!(x, vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0]);
        let (x, _) = build_queries(&pool, 400, 0.5, &mut rng);
        assert!(x.iter().all(|&v| v == 0.0 || v == 1.0));
        let flipped = x[4..]
            .chunks_exact(2)
            .enumerate()
            .filter(|(i, r)| *r != pool.row(i % 2))
            .count();
        assert!(
            flipped > 200 && flipped < 360,
            "{flipped} of 398 copies differ"
        );
    }
}
