//! Measuring the guard (`rgshield bench guard`, issue 16 items 3 and 5): the extraction
//! monitor's false alarms on benign clients and its detection of the three query strategies
//! ([`super::query_strategy`]), and the watermark's p-values for clones of every attacker
//! (soft-label distillation and labels only) across budgets, for innocent models, and what it
//! costs the defender.
//!
//! Protocol (seed s):
//! * the victim serves the probabilities of its mean-field output; with the watermark at rate
//!   `r` under the key `public("guard-eval s r")` ([`crate::guard::watermark`]);
//! * each strategy spends the largest budget against the watermarked victim, drawing from the
//!   test split (the pool); the monitor ([`crate::guard::monitor`]) watches the transcript in
//!   order, with the served class before the watermark, and the first query at which
//!   `W < δ` is recorded for each δ of a grid;
//! * for each budget `b`, two MLP clones ([`crate::model::mlp`]) are trained on the first `b`
//!   queries: `distill` on the answers as probabilities, `labels` on their argmax only; each is
//!   verified against the watermarked queries among those `b` (exact binomial test);
//! * benign clients send natural test images (sessions of 100 to 540 queries) in four orders:
//!   random, sorted by class in runs, random with 10% re-sent images, and one image class at a
//!   time in short bursts; the false-positive rate is the fraction of them the monitor flags;
//! * innocent models: MLPs of several widths and seeds, and RBM classifiers of the victim's
//!   family with other widths and seeds, trained on random 70% subsets of the training split with
//!   the true labels, verified against every watermark log (and by the label-free test);
//! * the label-free test: the victim served with `random-fixed` under a per-seed key, natural and
//!   adaptive thieves, soft and labels-only clones, tested by
//!   [`crate::guard::watermark::soft_bias_test`] on the test images.

use rand::{RngExt, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use super::query_strategy::{self, StrategyKind, StrategyParams, Transcript};
use crate::data::{Dataset, Split};
use crate::defence::Key;
use crate::defence::{DefenceContext, DefenceParams, PoisonCaches, Query};
use crate::error::{Error, Result};
use crate::guard::monitor::{ClientMonitor, MonitorParams};
use crate::guard::store::{MonitorDelta, WatermarkRecord};
use crate::guard::watermark::{soft_bias_test, verify_classes, Watermark, WatermarkParams};
use crate::model::mlp::{Mlp, MlpParams};
use crate::model::DeepRbm;
use crate::params::{Params, Valid};
use crate::sample::{argmax, OutputMode, Predictor};
use crate::train::{Method, TrainParams, Trainer};

/// Settings of the measurement.
#[derive(Clone, Debug, Serialize)]
pub struct GuardEvalParams {
    /// Null draws of the label-free soft-bias test (0: skip that part).
    pub soft_draws: usize,
    /// Attack seeds per strategy.
    pub seeds: usize,
    /// Clone budgets (queries); the largest is what each strategy spends.
    pub budgets: Vec<usize>,
    /// Watermark rates.
    pub rates: Vec<f64>,
    /// δ grid of the monitor (its other knobs from `monitor`).
    pub deltas: Vec<f64>,
    /// The monitor.
    pub monitor: MonitorParams,
    /// Benign clients.
    pub benign_clients: usize,
    /// Innocent MLPs.
    pub innocent_models: usize,
    /// Innocent RBM classifiers (the victim's architecture family, other widths and seeds).
    pub innocent_rbms: usize,
    /// The clones (and the innocent models, whose widths vary around it).
    pub clone: MlpParams,
    /// The strategies' knobs.
    pub strategy: StrategyParams,
    /// Training configuration of the innocent RBM classifiers (each gets its own seed, 10
    /// fine-tuning epochs, 3 pretraining epochs and no refinement on top of it).
    pub rbm_training: TrainParams,
}

impl Default for GuardEvalParams {
    /// 3 seeds, budgets 250/500/1000/2000, rates 0.005 and 0.05, δ ∈ {0.8, 0.85, 0.9, 0.95},
    /// 24 benign clients, 24 innocent models, clones of 100 hidden units trained 40 epochs.
    fn default() -> Self {
        GuardEvalParams {
            soft_draws: 999,
            seeds: 3,
            budgets: vec![250, 500, 1000, 2000],
            rates: vec![0.005, 0.05],
            deltas: vec![0.8, 0.85, 0.9, 0.95],
            monitor: MonitorParams::default(),
            benign_clients: 24,
            innocent_models: 24,
            innocent_rbms: 6,
            clone: MlpParams {
                epochs: 40,
                ..MlpParams::default()
            },
            strategy: StrategyParams::default(),
            rbm_training: TrainParams::for_method(Method::Hybrid, 1),
        }
    }
}

impl Params for GuardEvalParams {
    fn check(self) -> Result<Valid<Self>> {
        crate::error::check_at_least("guard eval: seeds", self.seeds, 1)?;
        if self.budgets.is_empty() || self.budgets.contains(&0) {
            return Err(Error::invalid(format!(
                "guard eval: budgets {:?} (need at least one, each ≥ 1)",
                self.budgets
            )));
        }
        for &r in &self.rates {
            WatermarkParams { rate: r }.check()?;
        }
        for &d in &self.deltas {
            MonitorParams {
                delta: d,
                ..self.monitor.clone()
            }
            .check()?;
        }
        self.monitor.clone().check()?;
        self.clone.clone().check()?;
        let _ = self.strategy.clone().check()?;
        Ok(Valid::checked(self))
    }
}

/// The monitor on one query stream.
#[derive(Clone, Debug, Serialize)]
pub struct MonitorRun {
    /// `benign:<order>` or the strategy's name.
    pub client: String,
    /// Seed (attacks) or client index (benign).
    pub seed: u64,
    /// Queries in the stream.
    pub queries: usize,
    /// (queries seen, W) at each test.
    pub w_trace: Vec<(usize, f64)>,
    /// Per δ of the grid: the first query count at which W < δ, if any.
    pub detected_at: Vec<Option<usize>>,
    /// Normalised class entropy at the end.
    pub class_entropy: f64,
}

/// One clone's verification.
#[derive(Clone, Debug, Serialize)]
pub struct CloneRow {
    /// The strategy.
    pub strategy: StrategyKind,
    /// `distill` or `labels`.
    pub learner: String,
    /// Attack seed.
    pub seed: u64,
    /// Watermark rate.
    pub rate: f64,
    /// Queries.
    pub budget: usize,
    /// Watermarked queries among them.
    pub marks: usize,
    /// Marks the clone reproduces.
    pub agree: usize,
    /// Marks where the clone leaves the victim's class.
    pub disagree: usize,
    /// The p-value.
    pub p_value: f64,
    /// Clone accuracy on the test split (true labels).
    pub accuracy: f64,
}

/// One innocent model against one watermark log.
#[derive(Clone, Debug, Serialize)]
pub struct InnocentRow {
    /// Hidden units (an RBM's widths are in `architecture`).
    pub hidden: usize,
    /// `mlp` or `rbm 64-H-10`.
    pub architecture: String,
    /// Training seed.
    pub seed: u64,
    /// The log: strategy, attack seed, rate.
    pub log: String,
    /// Marks replayed.
    pub marks: usize,
    /// p-value.
    pub p_value: f64,
}

/// The label-free soft-bias test of one clone, or of an innocent model (strategy `innocent`),
/// against the `random-fixed` defence's keyed directions.
#[derive(Clone, Debug, Serialize)]
pub struct SoftRow {
    /// `natural`, `adaptive` or `innocent:<hidden>`.
    pub suspect: String,
    /// `distill`, `labels` or `true-labels`.
    pub learner: String,
    /// Seed (the key's).
    pub seed: u64,
    /// Queries (0 for innocent models).
    pub budget: usize,
    /// `(S − mean_null)/sd_null`.
    pub z: f64,
    /// The Monte Carlo p-value.
    pub p_value: f64,
}

/// The defender's accuracy with the watermark on.
#[derive(Clone, Debug, Serialize)]
pub struct AccuracyCost {
    /// Watermark rate.
    pub rate: f64,
    /// Victim accuracy on the test split without the watermark.
    pub plain: f64,
    /// With it (mean over the seeds' keys).
    pub watermarked: f64,
}

/// Everything measured.
#[derive(Clone, Debug, Serialize)]
pub struct GuardEvalReport {
    /// The settings.
    pub params: GuardEvalParams,
    /// The data set.
    pub dataset: String,
    /// Victim widths.
    pub victim_widths: Vec<usize>,
    /// Victim accuracy (served probabilities' argmax) on the test split.
    pub victim_accuracy: f64,
    /// Monitor on benign clients.
    pub benign: Vec<MonitorRun>,
    /// Monitor on attacks (first rate's runs).
    pub attacks: Vec<MonitorRun>,
    /// Clones.
    pub clones: Vec<CloneRow>,
    /// Innocent models.
    pub innocent: Vec<InnocentRow>,
    /// Accuracy cost.
    pub accuracy_cost: Vec<AccuracyCost>,
    /// The label-free soft-bias test (victim served with `random-fixed`).
    pub soft: Vec<SoftRow>,
}

fn to_probs(v: &[f32]) -> Vec<f32> {
    let s: f64 = v.iter().map(|&a| a as f64).sum();
    if s > 0.0 {
        v.iter().map(|&a| (a as f64 / s) as f32).collect()
    } else {
        vec![1.0 / v.len() as f32; v.len()]
    }
}

/// Run the monitor over a stream, recording W at each test.
fn monitor_run(
    params: &Valid<GuardEvalParams>,
    name: &str,
    seed: u64,
    x: &[Vec<f32>],
    classes: &[usize],
    k: usize,
) -> Result<MonitorRun> {
    // δ = 0 never alarms, so the trace is complete; detection per δ is read off the trace.
    let mp = Valid::checked(MonitorParams {
        delta: f64::MIN_POSITIVE,
        ..params.monitor.clone()
    });
    let mut m = ClientMonitor::new(mp, k);
    let mut trace = Vec::new();
    let mut last = 0usize;
    for (i, (xi, &c)) in x.iter().zip(classes).enumerate() {
        let mut d = MonitorDelta::default();
        m.observe(xi, c, &mut d);
        if m.distances().len() != last {
            last = m.distances().len();
            let w = params.monitor.window;
            if last >= w && (last - w).is_multiple_of(params.monitor.stride) {
                if let Some(wv) = m.summary().last_w {
                    trace.push((i + 1, wv));
                }
            }
        }
    }
    let detected_at = params
        .deltas
        .iter()
        .map(|&d| trace.iter().find(|(_, w)| *w < d).map(|t| t.0))
        .collect();
    Ok(MonitorRun {
        client: name.into(),
        seed,
        queries: x.len(),
        w_trace: trace,
        detected_at,
        class_entropy: m.class_signal().0,
    })
}

fn benign_stream(
    test: &Split,
    labels: &[u32],
    order: usize,
    rng: &mut Xoshiro256PlusPlus,
) -> Vec<usize> {
    let n = test.len();
    let size = rng.random_range(100..=n.max(101));
    let mut idx: Vec<usize> = (0..n).collect();
    crate::util::shuffle(&mut idx, rng);
    idx.truncate(size.min(n));
    match order {
        // Sorted by class: a client working through its documents class by class.
        1 => idx.sort_by_key(|&i| labels[i]),
        // Random with 10% re-sent images.
        2 => {
            let mut out = Vec::with_capacity(idx.len());
            for &i in &idx {
                out.push(i);
                if rng.random::<f64>() < 0.1 {
                    out.push(out[rng.random_range(0..out.len())]);
                }
            }
            idx = out;
        }
        // Bursts of 5 to 20 images of one class, classes in random order.
        3 => {
            let mut by: Vec<Vec<usize>> = vec![Vec::new(); 16];
            for &i in &idx {
                by[labels[i] as usize % 16].push(i);
            }
            let mut out = Vec::new();
            while out.len() < idx.len() {
                let c = rng.random_range(0..by.len());
                let take = rng.random_range(5..=20).min(by[c].len());
                out.extend(by[c].drain(..take));
            }
            idx = out;
        }
        _ => {}
    }
    idx
}

/// Keep the first record of each distinct input (the server logs a repeated query once).
fn dedup(recs: &mut Vec<WatermarkRecord>) {
    let mut seen = std::collections::BTreeSet::new();
    recs.retain(|r| seen.insert(r.input.iter().map(|v| v.to_bits()).collect::<Vec<u32>>()));
}

fn train_mlp(x: &[f32], targets: &[Vec<f32>], p: &Valid<MlpParams>, seed: u64) -> Result<Mlp> {
    let rows = targets.len();
    let x64: Vec<f64> = x[..rows * (x.len() / rows.max(1))]
        .iter()
        .map(|&v| v as f64)
        .collect();
    let t64: Vec<f64> = targets
        .iter()
        .flat_map(|r| r.iter().map(|&v| v as f64))
        .collect();
    Mlp::distill(&x64, &t64, rows, p, seed)
}

fn mlp_accuracy(m: &Mlp, s: &Split) -> f64 {
    let ok = (0..s.len())
        .filter(|&i| {
            let x: Vec<f64> = s.row(i).iter().map(|&v| v as f64).collect();
            m.class(&x) == s.y[i] as usize
        })
        .count();
    ok as f64 / s.len().max(1) as f64
}

fn mlp_classes(m: &Mlp, recs: &[WatermarkRecord]) -> Vec<usize> {
    recs.iter()
        .map(|r| m.class(&r.input.iter().map(|&v| v as f64).collect::<Vec<_>>()))
        .collect()
}

/// Run the measurement (module docs) against `victim` on `data`.
pub fn guard_eval(
    data: &Dataset,
    victim: &DeepRbm,
    params: &Valid<GuardEvalParams>,
    log: &mut dyn FnMut(&str),
) -> Result<GuardEvalReport> {
    let k = victim.n_outputs();
    let pred = Predictor::new(victim, OutputMode::MeanField);
    let served = |x: &[f32]| to_probs(&pred.output(x));
    let test = &data.test;
    let victim_accuracy = (0..test.len())
        .filter(|&i| argmax(&served(test.row(i))) == test.y[i] as usize)
        .count() as f64
        / test.len() as f64;
    let max_budget = *params.budgets.iter().max().unwrap_or(&1);
    let sp = Valid::checked(params.strategy.clone());
    let cp = Valid::checked(params.clone.clone());

    // Benign clients.
    let mut benign = Vec::new();
    let orders = ["random", "sorted", "repeats", "bursts"];
    for c in 0..params.benign_clients {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1000 + c as u64);
        let order = c % orders.len();
        let idx = benign_stream(test, &test.y, order, &mut rng);
        let x: Vec<Vec<f32>> = idx.iter().map(|&i| test.row(i).to_vec()).collect();
        let classes: Vec<usize> = x.iter().map(|xi| argmax(&served(xi))).collect();
        benign.push(monitor_run(
            params,
            &format!("benign:{}", orders[order]),
            c as u64,
            &x,
            &classes,
            k,
        )?);
    }
    log(&format!("benign clients: {} streams", benign.len()));

    // Attacks, clones, watermark logs.
    let mut attacks = Vec::new();
    let mut clones = Vec::new();
    let mut logs: Vec<(String, Vec<WatermarkRecord>)> = Vec::new();
    let mut cost = Vec::new();
    for (ri, &rate) in params.rates.iter().enumerate() {
        let mut wm_acc = 0.0;
        for s in 0..params.seeds as u64 {
            let wm = Watermark::new(
                &Key::public(&format!("guard-eval {s} {rate}")),
                &Valid::checked(WatermarkParams { rate }),
            );
            wm_acc += (0..test.len())
                .filter(|&i| {
                    let mut y = served(test.row(i));
                    wm.mark(test.row(i), &mut y);
                    argmax(&y) == test.y[i] as usize
                })
                .count() as f64
                / test.len() as f64;
            for kind in StrategyKind::ALL {
                let mut marks: Vec<Option<(usize, usize)>> = Vec::new();
                let mut oracle = |x: &[f32]| {
                    let mut y = served(x);
                    let m = wm.mark(x, &mut y);
                    marks.push(m.map(|m| (m.original, m.target)));
                    y
                };
                let t: Transcript =
                    query_strategy::run(kind, test, max_budget, &sp, 7919 * s + 13, &mut oracle)?;
                let original: Vec<usize> = t
                    .classes()
                    .iter()
                    .zip(&marks)
                    .map(|(&c, m)| m.map_or(c, |m| m.0))
                    .collect();
                if ri == 0 {
                    let xs: Vec<Vec<f32>> = (0..t.len()).map(|i| t.row(i).to_vec()).collect();
                    attacks.push(monitor_run(params, kind.name(), s, &xs, &original, k)?);
                }
                let recs_all: Vec<(usize, WatermarkRecord)> = marks
                    .iter()
                    .enumerate()
                    .filter_map(|(i, m)| {
                        m.map(|(o, tg)| {
                            (
                                i,
                                WatermarkRecord {
                                    client: None,
                                    time: 0.0,
                                    input: t.row(i).to_vec(),
                                    original: o,
                                    target: tg,
                                },
                            )
                        })
                    })
                    .collect();
                for &b in &params.budgets {
                    let b = b.min(t.len());
                    let mut recs: Vec<WatermarkRecord> = recs_all
                        .iter()
                        .filter(|(i, _)| *i < b)
                        .map(|(_, r)| r.clone())
                        .collect();
                    // A repeated query is logged once.
                    dedup(&mut recs);
                    for learner in ["distill", "labels"] {
                        let targets = learner_targets(learner, &t.answers[..b]);
                        let m = train_mlp(&t.x[..b * t.n_features], &targets, &cp, 31 * s + 7)?;
                        let v = verify_classes(&recs, &mlp_classes(&m, &recs), k)?;
                        clones.push(CloneRow {
                            strategy: kind,
                            learner: learner.into(),
                            seed: s,
                            rate,
                            budget: b,
                            marks: recs.len(),
                            agree: v.agree_target,
                            disagree: v.disagree_original,
                            p_value: v.p_value,
                            accuracy: mlp_accuracy(&m, test),
                        });
                    }
                }
                let mut all: Vec<WatermarkRecord> = recs_all.into_iter().map(|r| r.1).collect();
                dedup(&mut all);
                logs.push((format!("{} seed {s} rate {rate}", kind.name()), all));
                log(&format!(
                    "rate {rate} seed {s} {}: {} queries",
                    kind.name(),
                    t.len()
                ));
            }
        }
        cost.push(AccuracyCost {
            rate,
            plain: victim_accuracy,
            watermarked: wm_acc / params.seeds as f64,
        });
    }

    // The label-free test: the victim served with `random-fixed` under a per-seed key.
    let mut soft = Vec::new();
    let soft_keys: Vec<Key> = (0..params.seeds as u64)
        .map(|s| Key::public(&format!("guard-eval soft {s}")))
        .collect();
    let test_probs = |m: &Mlp| -> Vec<Vec<f32>> {
        (0..test.len())
            .map(|i| {
                let x: Vec<f64> = test.row(i).iter().map(|&v| v as f64).collect();
                m.probs(&x).into_iter().map(|v| v as f32).collect()
            })
            .collect()
    };
    if params.soft_draws > 0 {
        let defence_params: DefenceParams = "random-fixed".parse()?;
        let caches = PoisonCaches::new(None, None);
        for (s, key) in soft_keys.iter().enumerate() {
            let defence = defence_params.build(&DefenceContext {
                model: victim,
                key,
                caches: &caches,
            })?;
            for kind in [StrategyKind::Natural, StrategyKind::Adaptive] {
                let mut err = None;
                let mut oracle = |x: &[f32]| {
                    let y = pred.output(x);
                    match defence.apply(&Query {
                        x,
                        y: &y,
                        seed: key.query_seed(x),
                    }) {
                        Ok(out) => to_probs(&out),
                        Err(e) => {
                            err.get_or_insert(e);
                            to_probs(&y)
                        }
                    }
                };
                let t = query_strategy::run(
                    kind,
                    test,
                    max_budget,
                    &sp,
                    104_729 * s as u64 + 3,
                    &mut oracle,
                )?;
                if let Some(e) = err {
                    return Err(e);
                }
                for &b in &params.budgets {
                    let b = b.min(t.len());
                    for learner in ["distill", "labels"] {
                        let targets = learner_targets(learner, &t.answers[..b]);
                        let m =
                            train_mlp(&t.x[..b * t.n_features], &targets, &cp, 37 * s as u64 + 5)?;
                        let r = soft_bias_test(key, &test_probs(&m), params.soft_draws)?;
                        soft.push(SoftRow {
                            suspect: kind.name().into(),
                            learner: learner.into(),
                            seed: s as u64,
                            budget: b,
                            z: (r.statistic - r.null_mean) / r.null_sd.max(1e-300),
                            p_value: r.p_value,
                        });
                    }
                }
                log(&format!("soft bias: seed {s} {}", kind.name()));
            }
        }
    }

    // Innocent models: true labels, 70% subsets of the training split, several widths.
    let mut innocent = Vec::new();
    let train = &data.train;
    let widths = [32usize, 64, 100];
    for i in 0..params.innocent_models {
        let hidden = widths[i % widths.len()];
        let seed = 500 + i as u64;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let rows: Vec<usize> = (0..train.len())
            .filter(|_| rng.random::<f64>() < 0.7)
            .collect();
        let x: Vec<f32> = rows
            .iter()
            .flat_map(|&r| train.row(r).iter().copied())
            .collect();
        let t: Vec<Vec<f32>> = rows
            .iter()
            .map(|&r| {
                let mut o = vec![0.0; k];
                o[train.y[r] as usize] = 1.0;
                o
            })
            .collect();
        let p = Valid::checked(MlpParams {
            hidden,
            ..params.clone.clone()
        });
        let m = train_mlp(&x, &t, &p, seed)?;
        if params.soft_draws > 0 {
            let probs = test_probs(&m);
            for (s, key) in soft_keys.iter().enumerate() {
                let r = soft_bias_test(key, &probs, params.soft_draws)?;
                soft.push(SoftRow {
                    suspect: format!("innocent:{hidden}"),
                    learner: "true-labels".into(),
                    seed: s as u64,
                    budget: 0,
                    z: (r.statistic - r.null_mean) / r.null_sd.max(1e-300),
                    p_value: r.p_value,
                });
            }
        }
        for (name, recs) in &logs {
            if recs.is_empty() {
                continue;
            }
            let v = verify_classes(recs, &mlp_classes(&m, recs), k)?;
            innocent.push(InnocentRow {
                architecture: "mlp".into(),
                hidden,
                seed,
                log: name.clone(),
                marks: recs.len(),
                p_value: v.p_value,
            });
        }
    }
    // Innocent RBM classifiers: the victim's family, other widths and seeds, 70% subsets.
    for i in 0..params.innocent_rbms {
        let hidden = [16usize, 32, 64][i % 3];
        let seed = 900 + i as u64;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let rows: Vec<usize> = (0..train.len())
            .filter(|_| rng.random::<f64>() < 0.7)
            .collect();
        let d = Dataset {
            train: crate::train::subset(train, &rows),
            ..data.clone()
        };
        let tp = TrainParams {
            seed,
            finetune_epochs: 10,
            pretrain_epochs: 3,
            sweeps: 0,
            ..params.rbm_training.clone()
        }
        .check()?;
        let (m, _) = Trainer::new(&d, &tp)?.train(&[victim.n_inputs(), hidden, k])?;
        let mp = Predictor::new(&m, OutputMode::MeanField);
        let arch = format!("rbm {}-{hidden}-{k}", victim.n_inputs());
        for (name, recs) in &logs {
            if recs.is_empty() {
                continue;
            }
            let classes: Vec<usize> = recs.iter().map(|r| argmax(&mp.output(&r.input))).collect();
            let v = verify_classes(recs, &classes, k)?;
            innocent.push(InnocentRow {
                architecture: arch.clone(),
                hidden,
                seed,
                log: name.clone(),
                marks: recs.len(),
                p_value: v.p_value,
            });
        }
        if params.soft_draws > 0 {
            let probs: Vec<Vec<f32>> = (0..test.len())
                .map(|j| to_probs(&mp.output(test.row(j))))
                .collect();
            for (s, key) in soft_keys.iter().enumerate() {
                let r = soft_bias_test(key, &probs, params.soft_draws)?;
                soft.push(SoftRow {
                    suspect: format!("innocent:{arch}"),
                    learner: "true-labels".into(),
                    seed: s as u64,
                    budget: 0,
                    z: (r.statistic - r.null_mean) / r.null_sd.max(1e-300),
                    p_value: r.p_value,
                });
            }
        }
    }
    log(&format!(
        "innocent models: {} MLPs, {} RBMs",
        params.innocent_models, params.innocent_rbms
    ));
    Ok(GuardEvalReport {
        params: (**params).clone(),
        dataset: data.name.clone(),
        victim_widths: victim.widths(),
        victim_accuracy,
        benign,
        attacks,
        clones,
        innocent,
        accuracy_cost: cost,
        soft,
    })
}

/// The report as Markdown tables: monitor detection per δ, watermark p-values (median over
/// seeds) per strategy, learner, rate and budget, innocent p-values, accuracy cost.
pub fn markdown(r: &GuardEvalReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let p = &r.params;
    let _ = writeln!(
        s,
        "# Guard measurement on {} (victim {:?}, accuracy {:.3})\n",
        r.dataset, r.victim_widths, r.victim_accuracy
    );
    let _ = writeln!(
        s,
        "## Extraction monitor (PRADA, window {}, stride {})\n",
        p.monitor.window, p.monitor.stride
    );
    let _ = writeln!(
        s,
        "| stream | runs | median min W | median class entropy | {} |",
        p.deltas
            .iter()
            .map(|d| format!("flagged at δ={d} (median queries)"))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    let _ = writeln!(s, "|---|---|---|---|{}", "---|".repeat(p.deltas.len()));
    let mut groups: Vec<(String, Vec<&MonitorRun>)> = Vec::new();
    for run in r.benign.iter().chain(&r.attacks) {
        let key = if run.client.starts_with("benign") {
            "benign (all orders)".to_string()
        } else {
            run.client.clone()
        };
        match groups.iter_mut().find(|g| g.0 == key) {
            Some(g) => g.1.push(run),
            None => groups.push((key, vec![run])),
        }
    }
    for (name, runs) in &groups {
        let minw: Vec<f64> = runs
            .iter()
            .map(|r| r.w_trace.iter().map(|t| t.1).fold(f64::INFINITY, f64::min))
            .collect();
        let cells: Vec<String> = (0..p.deltas.len())
            .map(|j| {
                let hits: Vec<usize> = runs.iter().filter_map(|r| r.detected_at[j]).collect();
                let med = crate::report::stats::median(
                    &hits.iter().map(|&h| h as f64).collect::<Vec<_>>(),
                );
                format!(
                    "{}/{}{}",
                    hits.len(),
                    runs.len(),
                    med.map(|m| format!(" ({m:.0})")).unwrap_or_default()
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {:.3} | {} |",
            runs.len(),
            crate::report::stats::median(&minw)
                .map(|m| format!("{m:.3}"))
                .unwrap_or("—".into()),
            crate::report::stats::median(&runs.iter().map(|r| r.class_entropy).collect::<Vec<_>>())
                .unwrap_or(0.0),
            cells.join(" | ")
        );
    }
    let _ = writeln!(
        s,
        "\n## Watermark: p-values of clones (median over seeds; marks in parentheses)\n"
    );
    for &rate in &p.rates {
        let _ = writeln!(s, "### rate {rate}\n");
        let _ = writeln!(
            s,
            "| strategy | learner | {} |",
            p.budgets
                .iter()
                .map(|b| format!("b={b}"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let _ = writeln!(s, "|---|---|{}", "---|".repeat(p.budgets.len()));
        for kind in StrategyKind::ALL {
            for learner in ["distill", "labels"] {
                let cells: Vec<String> = p
                    .budgets
                    .iter()
                    .map(|&b| {
                        let rows: Vec<&CloneRow> = r
                            .clones
                            .iter()
                            .filter(|c| {
                                c.strategy == kind
                                    && c.learner == learner
                                    && c.rate == rate
                                    && c.budget == b
                            })
                            .collect();
                        let pv = crate::report::stats::median(
                            &rows.iter().map(|c| c.p_value).collect::<Vec<_>>(),
                        );
                        let mk = crate::report::stats::median(
                            &rows.iter().map(|c| c.marks as f64).collect::<Vec<_>>(),
                        );
                        let acc = crate::report::stats::median(
                            &rows.iter().map(|c| c.accuracy).collect::<Vec<_>>(),
                        );
                        format!(
                            "{} ({:.0} marks, acc {:.2})",
                            pv.map(|v| format!("{v:.1e}")).unwrap_or("—".into()),
                            mk.unwrap_or(0.0),
                            acc.unwrap_or(0.0)
                        )
                    })
                    .collect();
                let _ = writeln!(s, "| {} | {learner} | {} |", kind.name(), cells.join(" | "));
            }
        }
        let _ = writeln!(s);
    }
    let ps: Vec<f64> = r.innocent.iter().map(|i| i.p_value).collect();
    let below = |a: f64| ps.iter().filter(|&&v| v <= a).count();
    let _ = writeln!(
        s,
        "## Innocent models\n\n{} models ({} MLPs, {} RBMs) × {} logs = {} tests: p ≤ 0.05 in {}, p ≤ 0.01 in {}, smallest p {:.3}.\n",
        p.innocent_models + p.innocent_rbms,
        p.innocent_models,
        p.innocent_rbms,
        ps.len()
            .checked_div(p.innocent_models + p.innocent_rbms)
            .unwrap_or(0),
        ps.len(),
        below(0.05),
        below(0.01),
        ps.iter().cloned().fold(1.0, f64::min)
    );
    if !r.soft.is_empty() {
        let _ = writeln!(
            s,
            "## Label-free test (victim served with random-fixed; {} null draws)\n",
            p.soft_draws
        );
        let _ = writeln!(
            s,
            "| suspect | learner | {} |",
            p.budgets
                .iter()
                .map(|b| format!("b={b}: median p (z)"))
                .collect::<Vec<_>>()
                .join(" | ")
        );
        let _ = writeln!(s, "|---|---|{}", "---|".repeat(p.budgets.len()));
        for kind in ["natural", "adaptive"] {
            for learner in ["distill", "labels"] {
                let cells: Vec<String> = p
                    .budgets
                    .iter()
                    .map(|&b| {
                        let rows: Vec<&SoftRow> = r
                            .soft
                            .iter()
                            .filter(|c| c.suspect == kind && c.learner == learner && c.budget == b)
                            .collect();
                        let med = |f: &dyn Fn(&SoftRow) -> f64| {
                            crate::report::stats::median(
                                &rows.iter().map(|c| f(c)).collect::<Vec<_>>(),
                            )
                            .unwrap_or(f64::NAN)
                        };
                        format!("{:.3} ({:.1})", med(&|c| c.p_value), med(&|c| c.z))
                    })
                    .collect();
                let _ = writeln!(s, "| {kind} | {learner} | {} |", cells.join(" | "));
            }
        }
        let inn: Vec<f64> = r
            .soft
            .iter()
            .filter(|c| c.suspect.starts_with("innocent"))
            .map(|c| c.p_value)
            .collect();
        let _ = writeln!(
            s,
            "\nInnocent models: {} tests, p ≤ 0.05 in {}, p ≤ 0.01 in {}.\n",
            inn.len(),
            inn.iter().filter(|&&v| v <= 0.05).count(),
            inn.iter().filter(|&&v| v <= 0.01).count()
        );
    }
    let _ = writeln!(
        s,
        "## Defender's accuracy cost\n\n| rate | plain | watermarked |\n|---|---|---|"
    );
    for c in &r.accuracy_cost {
        let _ = writeln!(s, "| {} | {:.4} | {:.4} |", c.rate, c.plain, c.watermarked);
    }
    s
}

/// Plot the median p-value against the budget, one line per strategy and learner, per rate.
pub fn write_plots(r: &GuardEvalReport, dir: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
    let mut out = Vec::new();
    for &rate in &r.params.rates {
        let mut series = Vec::new();
        for kind in StrategyKind::ALL {
            for learner in ["distill", "labels"] {
                let pts: Vec<(f64, f64)> = r
                    .params
                    .budgets
                    .iter()
                    .filter_map(|&b| {
                        let v: Vec<f64> = r
                            .clones
                            .iter()
                            .filter(|c| {
                                c.strategy == kind
                                    && c.learner == learner
                                    && c.rate == rate
                                    && c.budget == b
                            })
                            .map(|c| c.p_value.max(1e-300))
                            .collect();
                        crate::report::stats::median(&v).map(|m| (b as f64, m))
                    })
                    .collect();
                series.push(crate::report::plots::Series::new(
                    format!("{} {learner}", kind.name()),
                    pts,
                ));
            }
        }
        let path = dir.join(format!("pvalue_vs_budget_rate{rate}.png"));
        crate::report::plots::line_plot(
            &path,
            &crate::report::plots::LinePlot {
                title: &format!("watermark p-value of clones (rate {rate}, median over seeds)"),
                x_label: "budget (queries)",
                y_label: "p-value (exact binomial upper tail)",
                log_y: true,
                bars: None,
            },
            &series,
        )?;
        out.push(path);
    }
    Ok(out)
}

/// What a thief of kind `learner` trains on: the renormalised answers (`distill`) or their
/// one-hot argmax (`labels`).
fn learner_targets(learner: &str, answers: &[Vec<f32>]) -> Vec<Vec<f32>> {
    answers
        .iter()
        .map(|y| {
            if learner == "distill" {
                to_probs(y)
            } else {
                let mut o = vec![0.0; y.len()];
                o[argmax(y)] = 1.0;
                o
            }
        })
        .collect()
}
