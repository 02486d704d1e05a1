//! Cloning attacks against served outputs and what a defence does to them (SPEC §9).
//!
//! Protocol of one run (seed s): the test split — disjoint from the victim's training split — is
//! cut at random into an attacker's *query pool* and an *evaluation set*. The attacker's queries
//! are the pool, topped up to the budget with copies whose pixels are flipped with probability
//! `augment_flip` (digits has too few natural images for a budget of 1000; the count of natural
//! queries is reported). The victim serves its output ŷ for each query (its served mode, seeded per
//! input), the defence turns it into ŷ', and each attacker trains a clone on (x, view(ŷ')):
//! * `eq14` — the seed's threat model: the victim's architecture trained by eq. 14 (README,
//!   "Training", eq. 14 defaults) with ŷ' as the top layer's values (reading (P));
//! * `distill` — a softmax MLP ([`mlp`]) trained by cross-entropy on ŷ'/Σŷ';
//! * adaptive variants `+round1` (ŷ' rounded to one decimal) and `+top1` (argmax only).
//!
//! Metrics on the evaluation set: clone accuracy (true labels), fidelity (clone class = victim's
//! served class), adversarial transfer at a fixed L2 norm ε (the clone's input-Fisher direction,
//! SPEC §6, applied to the victim: success = the victim's served class changes; beside it the same
//! attack built on the victim itself and a random direction, both independent of the defence), and
//! the defender's utility (victim accuracy through ŷ', answers whose class changed) and distortion
//! (mean L1, L2, KL of ŷ' against ŷ over the queries).

pub mod mlp;

use std::collections::BTreeMap;
use std::str::FromStr;

use faer::Mat;
use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::Serialize;

use crate::attack::{fisher_sign, mean_field_margin, step_to_norm};
use crate::data::{Dataset, Split};
use crate::defence::{distortion, DefenceSpec, PoisonCache};
use crate::error::{Error, Result};
use crate::model::DeepRbm;
use crate::rg::fisher::{mean_field_reading, top_eigen};
use crate::sample::{argmax, OutputMode, Predictor};
use crate::train::{subset, Method, TrainConfig, Trainer};
use crate::util::{fnv1a64, mix_seed};
use mlp::{Mlp, MlpConfig};

/// How the clone is trained (SPEC §9 (a), (b)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Learner {
    /// The victim's architecture, eq. 14 on (x, ŷ') — the seed's threat model.
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
    pub learner: Learner,
    pub view: View,
}

impl std::fmt::Display for AttackerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = match self.learner {
            Learner::Eq14 => "eq14",
            Learner::Distill => "distill",
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
                    learner: Learner::Distill,
                    view: View::Round(1),
                });
                out.push(AttackerSpec {
                    learner: Learner::Distill,
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
            "eq14" => Learner::Eq14,
            "distill" => Learner::Distill,
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

/// A defence with the strengths (its own parameter) to sweep.
#[derive(Clone, Debug, Serialize)]
pub struct DefenceSetting {
    #[serde(serialize_with = "display")]
    pub spec: DefenceSpec,
    pub strengths: Vec<f64>,
}

/// JSON has no NaN: serde_json writes it as null, read back here as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    use serde::Deserialize;
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn display<S: serde::Serializer, T: std::fmt::Display>(
    v: &T,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&v.to_string())
}

impl DefenceSetting {
    /// The default sweep of each defence (its own parameter): ε ∈ {0.05, 0.1, 0.2, 0.4} for `rg`
    /// and `random`, σ ∈ {0.02, 0.05, 0.1, 0.2} for `gaussian`, β ∈ {0.1, 0.3, 0.6, 1} for
    /// `reverse-sigmoid`, decimals {2, 1, 0} for `rounding`; one run for `none` and `top1`.
    /// `epsilons`, when given, replaces the ε list of `rg` and `random`.
    pub fn default_for(spec: DefenceSpec, epsilons: Option<&[f64]>) -> Self {
        let strengths = match spec {
            DefenceSpec::Rg(_) | DefenceSpec::Random => epsilons
                .map(<[f64]>::to_vec)
                .unwrap_or_else(|| vec![0.05, 0.1, 0.2, 0.4]),
            DefenceSpec::Gaussian => vec![0.02, 0.05, 0.1, 0.2],
            DefenceSpec::ReverseSigmoid => vec![0.1, 0.3, 0.6, 1.0],
            DefenceSpec::Rounding => vec![2.0, 1.0, 0.0],
            DefenceSpec::None | DefenceSpec::Top1 => vec![0.0],
        };
        DefenceSetting { spec, strengths }
    }
}

/// Settings of [`clone_eval`].
#[derive(Clone, Debug, Serialize)]
pub struct CloneEvalConfig {
    pub defences: Vec<DefenceSetting>,
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
    pub eq14: TrainConfig,
    /// Distilled clone.
    pub mlp: MlpConfig,
}

impl Default for CloneEvalConfig {
    fn default() -> Self {
        CloneEvalConfig {
            defences: Vec::new(),
            attackers: vec![
                AttackerSpec {
                    learner: Learner::Eq14,
                    view: View::Raw,
                },
                AttackerSpec {
                    learner: Learner::Distill,
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
            eq14: TrainConfig::defaults_for(Method::Eq14, 1),
            mlp: MlpConfig::default(),
        }
    }
}

impl CloneEvalConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(format!("clone-eval: {m}")));
        if self.defences.is_empty() || self.defences.iter().any(|d| d.strengths.is_empty()) {
            return bad("no defence (or a defence without strengths) to evaluate".into());
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
        self.eq14.validate()
    }
}

/// One (seed, defence, strength, attacker) run.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct CloneRow {
    pub seed: u64,
    pub defence: String,
    pub defence_kind: String,
    pub strength: f64,
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
    pub l2: f64,
    pub kl: f64,
    pub seconds: f64,
}

/// Per-seed measurements that do not depend on the defence.
#[derive(Clone, Debug, Serialize, serde::Deserialize)]
pub struct SeedBaseline {
    pub seed: u64,
    pub queries: usize,
    pub natural_queries: usize,
    pub eval_inputs: usize,
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
    pub defence: String,
    pub defence_kind: String,
    pub strength: f64,
    pub attacker: String,
    pub seeds: usize,
    pub clone_accuracy: (f64, f64),
    pub fidelity: (f64, f64),
    pub transfer_success: (f64, f64),
    pub defended_accuracy: (f64, f64),
    pub changed_argmax: (f64, f64),
    pub l1: (f64, f64),
    pub kl: (f64, f64),
}

/// Everything `clone-eval` measured.
#[derive(Clone, Debug, Serialize)]
pub struct CloneEvalReport {
    pub victim_widths: Vec<usize>,
    pub dataset: String,
    pub config: CloneEvalConfig,
    pub protocol: String,
    pub baselines: Vec<SeedBaseline>,
    pub rows: Vec<CloneRow>,
    pub cells: Vec<CloneCell>,
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
/// rows for distillation.
fn view_targets(defended: &[f32], n_out: usize, view: View, learner: Learner) -> Vec<f32> {
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
        if learner == Learner::Distill {
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

/// A trained clone.
enum CloneModel {
    Rbm(DeepRbm),
    Mlp(Mlp),
}

impl CloneModel {
    /// Classes of the evaluation inputs.
    fn classes(&self, x: &[f32], rows: usize, serve: OutputMode) -> Vec<usize> {
        match self {
            CloneModel::Rbm(m) => Predictor::new(m, serve).classes(x, rows),
            CloneModel::Mlp(m) => x
                .chunks_exact(m.n_in)
                .map(|r| m.class(&r.iter().map(|&v| v as f64).collect::<Vec<_>>()))
                .collect(),
        }
    }

    /// The clone's input-Fisher direction at x (SPEC §6: mean-field reading for an RBM clone, the
    /// categorical Fisher for the MLP), signed to lower the clone's margin of `class`.
    fn attack_direction(&self, x: &[f32], class: usize) -> Result<Vec<f64>> {
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let (v, grad) = match self {
            CloneModel::Rbm(m) => {
                let f = mean_field_reading(m, x)?.fisher;
                (
                    top_eigen(f.as_ref())?.1,
                    mean_field_margin(m, &x64, class)?.1,
                )
            }
            CloneModel::Mlp(m) => {
                let n = m.n_in;
                let f = m.input_fisher(&x64);
                let f = Mat::from_fn(n, n, |i, j| f[i * n + j]);
                (top_eigen(f.as_ref())?.1, m.margin(&x64, class)?.1)
            }
        };
        let s = fisher_sign(&x64, &v, &grad);
        Ok(v.into_iter().map(|a| s * a).collect())
    }
}

fn victim_direction(victim: &DeepRbm, x: &[f32], class: usize) -> Result<Vec<f64>> {
    CloneModel::Rbm(victim.clone()).attack_direction(x, class)
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

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, sd)
}

/// Run the cloning experiment (see the module documentation). `caches` holds the poison caches
/// the `rg` defences need; `tick` is called after each clone.
pub fn clone_eval(
    victim: &DeepRbm,
    data: &Dataset,
    cfg: &CloneEvalConfig,
    caches: &[PoisonCache],
    tick: &(dyn Fn() + Sync),
) -> Result<CloneEvalReport> {
    let t0 = std::time::Instant::now();
    cfg.validate()?;
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
    // Build every defence once (rg needs its reading's cache).
    let mut defences = Vec::new();
    for d in &cfg.defences {
        let cache = match d.spec {
            DefenceSpec::Rg(reading) => Some(
                caches
                    .iter()
                    .find(|c| c.reading == reading)
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "clone-eval: defence '{}' needs a poison cache of its reading",
                            d.spec
                        ))
                    })?,
            ),
            _ => None,
        };
        if let Some(c) = cache {
            c.check_model(victim)?;
        }
        for &s in &d.strengths {
            defences.push((d.spec, s, d.spec.build(s, cache)?));
        }
    }
    let predictor = Predictor::new(victim, cfg.serve);
    let mut rows = Vec::new();
    let mut baselines = Vec::new();
    for &seed in &cfg.seeds {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix_seed(seed, 0xC10E));
        let mut idx: Vec<usize> = (0..data.test.len()).collect();
        for i in (1..idx.len()).rev() {
            let j = rng.random_range(0..=i);
            idx.swap(i, j);
        }
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
            |i| victim_direction(victim, eval.row(i), classes_of[&i]),
        )?;
        let random = transfer_rate(
            &predictor,
            &eval,
            &transfer_set,
            cfg.transfer_epsilon,
            |i| {
                let mut r =
                    Xoshiro256PlusPlus::seed_from_u64(mix_seed(mix_seed(seed, 0x4A4D), i as u64));
                Ok((0..n_in)
                    .map(|_| crate::model::standard_normal(&mut r) as f64)
                    .collect())
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
        // Attacker's hold-out for early stopping: the last 10% of the queries, labelled by what
        // was served.
        let n_hold = (nq / 10).max(1);
        let jobs: Vec<(usize, AttackerSpec)> = (0..defences.len())
            .flat_map(|d| cfg.attackers.iter().map(move |&a| (d, a)))
            .collect();
        let seed_rows = jobs
            .par_iter()
            .map(|&(d, attacker)| {
                let t1 = std::time::Instant::now();
                let (spec, strength, defence) = &defences[d];
                let defend = |x: &[f32], y: &[f32]| -> Result<Vec<f32>> {
                    let mut out = Vec::with_capacity(y.len());
                    for (xr, yr) in x.chunks_exact(n_in).zip(y.chunks_exact(n_out)) {
                        out.extend(defence.apply(yr, predictor.input_seed(xr))?);
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
                let targets = view_targets(&defended, n_out, attacker.view, attacker.learner);
                // Common random numbers: for a given seed and attacker every defence gets the same
                // clone initialisation and minibatch order, so defences are compared paired.
                let run_seed = mix_seed(seed, fnv1a64(attacker.to_string().as_bytes()));
                let clone = match attacker.learner {
                    Learner::Eq14 => {
                        let labels: Vec<u32> = targets
                            .chunks_exact(n_out)
                            .map(|r| argmax(r) as u32)
                            .collect();
                        let split_at = nq - n_hold;
                        let fit = Split {
                            x: qx[..split_at * n_in].to_vec(),
                            y: labels[..split_at].to_vec(),
                            n_features: n_in,
                        };
                        let hold = Split {
                            x: qx[split_at * n_in..].to_vec(),
                            y: labels[split_at..].to_vec(),
                            n_features: n_in,
                        };
                        let tc = TrainConfig {
                            seed: run_seed,
                            ..cfg.eq14.clone()
                        };
                        let (m, _) = Trainer::with_targets(
                            fit,
                            targets[..split_at * n_out].to_vec(),
                            hold,
                            n_out,
                            &tc,
                        )?
                        .train(&victim.widths())?;
                        CloneModel::Rbm(m)
                    }
                    Learner::Distill => {
                        let x64: Vec<f64> = qx.iter().map(|&v| v as f64).collect();
                        let t64: Vec<f64> = targets.iter().map(|&v| v as f64).collect();
                        let t64: Vec<f64> = t64
                            .chunks_exact(n_out)
                            .flat_map(|r| {
                                let s: f64 = r.iter().sum();
                                r.iter().map(move |v| v / s).collect::<Vec<_>>()
                            })
                            .collect();
                        CloneModel::Mlp(Mlp::distill(&x64, &t64, nq, &cfg.mlp, run_seed)?)
                    }
                };
                let clone_class = clone.classes(&eval.x, eval.len(), cfg.serve);
                let clone_accuracy = agreement(&clone_class, &labels);
                let fidelity = agreement(&clone_class, &victim_class);
                let transfer_success = transfer_rate(
                    &predictor,
                    &eval,
                    &transfer_set,
                    cfg.transfer_epsilon,
                    |i| clone.attack_direction(eval.row(i), classes_of[&i]),
                )?;
                tick();
                Ok(CloneRow {
                    seed,
                    defence: defence.name(),
                    defence_kind: spec.to_string(),
                    strength: *strength,
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
    let cells = summarise(&rows);
    Ok(CloneEvalReport {
        victim_widths: victim.widths(),
        dataset: data.name.clone(),
        config: cfg.clone(),
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

fn summarise(rows: &[CloneRow]) -> Vec<CloneCell> {
    let mut keys: Vec<(String, String, u64, String)> = Vec::new();
    for r in rows {
        let k = (
            r.defence.clone(),
            r.defence_kind.clone(),
            r.strength.to_bits(),
            r.attacker.clone(),
        );
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(defence, kind, bits, attacker)| {
            let sel: Vec<&CloneRow> = rows
                .iter()
                .filter(|r| {
                    r.defence == defence && r.strength.to_bits() == bits && r.attacker == attacker
                })
                .collect();
            let f =
                |g: fn(&CloneRow) -> f64| mean_sd(&sel.iter().map(|r| g(r)).collect::<Vec<_>>());
            CloneCell {
                defence,
                defence_kind: kind,
                strength: f64::from_bits(bits),
                attacker,
                seeds: sel.len(),
                clone_accuracy: f(|r| r.clone_accuracy),
                fidelity: f(|r| r.fidelity),
                transfer_success: f(|r| r.transfer_success),
                defended_accuracy: f(|r| r.defended_accuracy),
                changed_argmax: f(|r| r.changed_argmax),
                l1: f(|r| r.l1),
                kl: f(|r| r.kl),
            }
        })
        .collect()
}

/// A paired comparison of two defences over seeds (same seed, attacker and — for two defences
/// with a strength — the same strength: the clones share their initialisation, so the per-seed
/// difference removes most of the clone-to-clone noise).
#[derive(Clone, Debug, Serialize)]
pub struct PairedDifference {
    /// `a − b`, e.g. `rg:P − random`.
    pub defences: (String, String),
    pub attacker: String,
    /// Strength of `a` (and of `b` when it has one).
    pub strength: f64,
    pub seeds: usize,
    /// Mean and sd over seeds of the per-seed differences, and the mean over its standard error.
    pub clone_accuracy: (f64, f64, f64),
    pub transfer_success: (f64, f64, f64),
    /// Mean L1 distortion of `a` and of `b`.
    pub l1: (f64, f64),
}

/// Paired differences `a − b` for every attacker and strength of `a` (`b` = `none` or `top1`
/// is matched at any strength).
pub fn paired_differences(rows: &[CloneRow], a: &str, b: &str) -> Vec<PairedDifference> {
    let mut keys: Vec<(String, u64)> = Vec::new();
    for r in rows.iter().filter(|r| r.defence_kind == a) {
        let k = (r.attacker.clone(), r.strength.to_bits());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let strengthless = |k: &str| k == "none" || k == "top1";
    keys.into_iter()
        .filter_map(|(attacker, bits)| {
            let mut dacc = Vec::new();
            let mut dtr = Vec::new();
            let (mut la, mut lb) = (Vec::new(), Vec::new());
            for ra in rows.iter().filter(|r| {
                r.defence_kind == a && r.attacker == attacker && r.strength.to_bits() == bits
            }) {
                // A seed without a partner run is skipped (the cell's `seeds` says how many paired).
                let Some(rb) = rows.iter().find(|r| {
                    r.defence_kind == b
                        && r.attacker == attacker
                        && r.seed == ra.seed
                        && (strengthless(b) || r.strength.to_bits() == bits)
                }) else {
                    continue;
                };
                dacc.push(ra.clone_accuracy - rb.clone_accuracy);
                dtr.push(ra.transfer_success - rb.transfer_success);
                la.push(ra.l1);
                lb.push(rb.l1);
            }
            if dacc.is_empty() {
                return None;
            }
            let with_t = |v: &[f64]| {
                let (m, sd) = mean_sd(v);
                let se = sd / (v.len() as f64).sqrt();
                // A spread at rounding level (identical differences) has no meaningful ratio.
                (m, sd, if se > 1e-9 { m / se } else { f64::NAN })
            };
            Some(PairedDifference {
                defences: (a.to_string(), b.to_string()),
                attacker,
                strength: f64::from_bits(bits),
                seeds: dacc.len(),
                clone_accuracy: with_t(&dacc),
                transfer_success: with_t(&dtr),
                l1: (mean_sd(&la).0, mean_sd(&lb).0),
            })
        })
        .collect()
}

/// The Markdown table of the report: mean ± sd over seeds for every defence × strength × attacker.
pub fn markdown(r: &CloneEvalReport) -> String {
    let head = format!(
        "clone-eval: victim {:?} on {}, budget {}, seeds {:?}, transfer at L2 = {}\n\n",
        r.victim_widths, r.dataset, r.config.budget, r.config.seeds, r.config.transfer_epsilon
    );
    tables(&head, &r.baselines, &r.rows)
}

/// The rows and baselines of a written `clone_eval.json` (for [`tables`] without rerunning).
#[derive(serde::Deserialize)]
pub struct SavedRows {
    pub baselines: Vec<SeedBaseline>,
    pub rows: Vec<CloneRow>,
}

/// The Markdown tables of a run from its rows: the mean ± sd cells and the paired differences of
/// each `rg` defence against `random` and `none`.
pub fn tables(head: &str, baselines: &[SeedBaseline], rows: &[CloneRow]) -> String {
    let pm = |v: (f64, f64)| format!("{:.3} ± {:.3}", v.0, v.1);
    let mut s = head.to_string();
    let cells = summarise(rows);
    let r = SavedRows {
        baselines: baselines.to_vec(),
        rows: rows.to_vec(),
    };
    let b: Vec<f64> = r.baselines.iter().map(|b| b.victim_self_success).collect();
    let rnd: Vec<f64> = r.baselines.iter().map(|b| b.random_success).collect();
    s += &format!(
        "transfer references (independent of the defence): attack built on the victim itself {}, random direction {}\n\n",
        pm(mean_sd(&b)),
        pm(mean_sd(&rnd))
    );
    s += "| defence | strength | attacker | clone acc | fidelity | transfer | victim acc (defended) | changed argmax | L1 | KL |\n|---|---|---|---|---|---|---|---|---|---|\n";
    for c in &cells {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.4} | {:.4} |\n",
            c.defence_kind,
            c.strength,
            c.attacker,
            pm(c.clone_accuracy),
            pm(c.fidelity),
            pm(c.transfer_success),
            pm(c.defended_accuracy),
            c.changed_argmax.0,
            c.l1.0,
            c.kl.0
        );
    }
    let mut kinds: Vec<&str> = r.rows.iter().map(|x| x.defence_kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut pairs = Vec::new();
    for a in kinds.iter().filter(|k| k.starts_with("rg")) {
        for b in ["random", "none"] {
            pairs.extend(paired_differences(&r.rows, a, b));
        }
    }
    if !pairs.is_empty() {
        s += "\npaired differences over seeds (same seed, attacker and clone initialisation): mean ± sd [mean/se]\n\n\
              | a − b | attacker | strength | Δ clone acc | Δ transfer | L1 of a, b |\n|---|---|---|---|---|---|\n";
        for p in &pairs {
            s += &format!(
                "| {} − {} | {} | {} | {:+.3} ± {:.3} [{:+.1}] | {:+.3} ± {:.3} [{:+.1}] | {:.4}, {:.4} |\n",
                p.defences.0,
                p.defences.1,
                p.attacker,
                p.strength,
                p.clone_accuracy.0,
                p.clone_accuracy.1,
                p.clone_accuracy.2,
                p.transfer_success.0,
                p.transfer_success.1,
                p.transfer_success.2,
                p.l1.0,
                p.l1.1
            );
        }
    }
    s
}

/// Plots in the style of the prediction-poisoning literature: clone accuracy (and transfer
/// success) against the defender's mean L1 distortion, one curve per defence, one file per
/// attacker.
pub fn write_plots(r: &CloneEvalReport, dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let mut attackers: Vec<&str> = r.cells.iter().map(|c| c.attacker.as_str()).collect();
    attackers.dedup();
    attackers.sort_unstable();
    attackers.dedup();
    for a in attackers {
        for (metric, label, get) in [
            (
                "accuracy",
                "clone accuracy",
                (|c: &CloneCell| c.clone_accuracy.0) as fn(&CloneCell) -> f64,
            ),
            ("transfer", "transfer success", |c: &CloneCell| {
                c.transfer_success.0
            }),
        ] {
            let mut kinds: Vec<&str> = r.cells.iter().map(|c| c.defence_kind.as_str()).collect();
            kinds.sort_unstable();
            kinds.dedup();
            let series: Vec<(String, Vec<(f64, f64)>)> = kinds
                .iter()
                .map(|k| {
                    let mut pts: Vec<(f64, f64)> = r
                        .cells
                        .iter()
                        .filter(|c| c.attacker == a && c.defence_kind == *k)
                        .map(|c| (c.l1.0, get(c)))
                        .collect();
                    pts.sort_by(|x, y| x.0.total_cmp(&y.0));
                    (k.to_string(), pts)
                })
                .collect();
            let path = dir.join(format!("clone_{metric}_{}.png", a.replace('+', "_")));
            crate::report::line_plot(
                &path,
                &format!("{label} against distortion, attacker {a}"),
                "mean L1 distortion of the served outputs",
                label,
                &series,
                false,
            )?;
            files.push(path);
        }
    }
    Ok(files)
}

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
            view_targets(&y, 4, View::Round(1), Learner::Eq14),
            vec![0.1, 0.8, 0.0, 0.3]
        );
        assert_eq!(
            view_targets(&y, 4, View::Top1, Learner::Eq14),
            vec![0.0, 1.0, 0.0, 0.0]
        );
        let p = view_targets(&y, 4, View::Raw, Learner::Distill);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((p[1] - 0.76 / 1.21).abs() < 1e-6);
        // All zero after rounding: uniform.
        let z = view_targets(&[0.01, 0.02], 2, View::Round(1), Learner::Distill);
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
