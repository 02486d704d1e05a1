//! The trainer: data preparation (held-out split, targets), greedy pretraining, eq. 14 sweeps and
//! the hybrid's fine-tuning, with early stopping and a history.

use std::time::Instant;

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use super::backprop::{backprop_gradient, mean_field_gradient, served_scores, Adam};
use super::cd::{
    batch_rows, cd_update, class_states, eq14_pairs, eq14_pairs_annealed, moment_difference,
    CdParams, Velocity,
};
use super::params::{Method, SweepOrder, Targets, TrainParams};
use crate::data::{Dataset, Split};
use crate::error::{Error, Result};
use crate::model::{check_widths, DeepRbm};
use crate::params::Valid;
use crate::progress::{NoProgress, Progress};
use crate::sample::{bernoulli, gibbs, sample_up, OutputMode, Predictor};
use crate::util::{mix_seed, shuffle};

/// One row of the training history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HistoryRow {
    /// "pretrain", "eq14", "finetune", "finetune-stochastic" or "refine".
    pub phase: String,
    /// Sweep, epoch or layer index within the phase.
    pub step: usize,
    /// Accuracy on the fitting rows.
    pub train_accuracy: f64,
    /// Accuracy on the held-out rows.
    pub holdout_accuracy: f64,
    /// Held-out mean per-unit Bernoulli cross-entropy of the one-hot label under the served ŷ.
    pub holdout_loss: f64,
    /// Per RBM k = 1…N: mean conditional cross-entropy per unit of the eq. 14 data pairs,
    /// `−[log t_k(h_k|h_{k-1}) + log t_k(h_{k-1}|h_k)] / (n_k + n_{k-1})` (a KL proxy).
    pub layer_proxy: Vec<f64>,
    /// Time since training started.
    pub seconds: f64,
}

/// What training returns besides the model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainOutcome {
    /// One row per recorded step.
    pub history: Vec<HistoryRow>,
    /// Final accuracy on the fitting rows.
    pub train_accuracy: f64,
    /// Final accuracy on the held-out rows.
    pub holdout_accuracy: f64,
    /// Held-out accuracy after each stage (e.g. "pretrain", "eq14", "finetune", "refine").
    pub stages: Vec<(String, f64)>,
    /// Training time.
    pub seconds: f64,
}

/// How the top-layer targets enter eq. 14: the two readings of a served answer (SPEC §6, §12).
/// One-hot labels read the same either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopReading {
    /// (P): a target row is the top layer's Bernoulli means (paper eq. 23).
    #[default]
    Means,
    /// (C): a target row is a class distribution; each pass draws a one-hot class state from it
    /// ([`class_states`]).
    Classes,
}

impl TopReading {
    /// The top layer's values for one pass over the target rows `y` (`batch × n`): `y` itself in
    /// reading (P) (no draw), one-hot class states in reading (C).
    fn top_values<R: rand::Rng>(
        self,
        y: Vec<f32>,
        batch: usize,
        n: usize,
        rng: &mut R,
    ) -> Vec<f32> {
        match self {
            TopReading::Means => y,
            TopReading::Classes => class_states(&y, batch, n, rng),
        }
    }
}

/// Training data as seen by the trainer: inputs and top-layer targets (one-hot labels, or the
/// served outputs an attacker received) with their reading, and a held-out part.
struct Prepared {
    fit: Split,
    fit_targets: Vec<f32>,
    reading: TopReading,
    holdout: Split,
    n_classes: usize,
}

fn one_hot(y: &[u32], n: usize) -> Vec<f32> {
    let mut o = vec![0.0; y.len() * n];
    for (i, &c) in y.iter().enumerate() {
        o[i * n + c as usize] = 1.0;
    }
    o
}

/// The rows `idx` of a split, in that order.
pub fn subset(s: &Split, idx: &[usize]) -> Split {
    let mut x = Vec::with_capacity(idx.len() * s.n_features);
    for &i in idx {
        x.extend_from_slice(s.row(i));
    }
    Split {
        x,
        y: idx.iter().map(|&i| s.y[i]).collect(),
        n_features: s.n_features,
    }
}

fn prepare(data: &Dataset, cfg: &TrainParams) -> Result<Prepared> {
    let n = data.train.len();
    if n == 0 {
        return Err(Error::invalid(format!(
            "data set '{}': empty training split",
            data.name
        )));
    }
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix_seed(cfg.seed, 0x5917));
    shuffle(&mut idx, &mut rng);
    let n_hold = ((n as f64) * cfg.holdout_frac).round() as usize;
    let (hold_idx, fit_idx) = idx.split_at(n_hold);
    let mut fit_idx = fit_idx.to_vec();
    fit_idx.sort_unstable();
    let mut hold_idx = hold_idx.to_vec();
    hold_idx.sort_unstable();
    let fit = subset(&data.train, &fit_idx);
    let holdout = subset(&data.train, &hold_idx);
    let n_classes = data.n_classes();
    Ok(Prepared {
        fit_targets: one_hot(&fit.y, n_classes),
        reading: TopReading::Means,
        fit,
        holdout,
        n_classes,
    })
}

/// Trains a deep RBM classifier on `data` with widths `n_0 … n_N`.
pub struct Trainer<'a> {
    cfg: &'a Valid<TrainParams>,
    prep: Prepared,
    rng: Xoshiro256PlusPlus,
    start: Instant,
    history: Vec<HistoryRow>,
    progress: &'a dyn Progress,
}

impl<'a> Trainer<'a> {
    /// A trainer on `data`'s training split (one-hot labels), part of it held out.
    pub fn new(data: &Dataset, cfg: &'a Valid<TrainParams>) -> Result<Self> {
        Ok(Self::with_prepared(prepare(data, cfg)?, cfg))
    }

    /// A trainer on given top-layer targets instead of one-hot labels (SPEC §9: a clone trained on
    /// `(x, ŷ')`): `targets` is `fit.len() × n_classes` row-major, finite and in [0,1], entering
    /// eq. 14 as the top layer's values (reading (P), paper eq. 23; see [`Trainer::with_reading`])
    /// and the fine-tuning loss as soft labels. `fit.y` and `holdout.y` are the labels used for the reported accuracies and early
    /// stopping (for an attacker: the argmax of what was served).
    pub fn with_targets(
        fit: Split,
        targets: Vec<f32>,
        holdout: Split,
        n_classes: usize,
        cfg: &'a Valid<TrainParams>,
    ) -> Result<Self> {
        if fit.is_empty() {
            return Err(Error::invalid("training on targets: no rows"));
        }
        if targets.len() != fit.len() * n_classes {
            return Err(Error::shape(format!(
                "training on targets: {} target values for {} rows of {n_classes} classes",
                targets.len(),
                fit.len()
            )));
        }
        if let Some(i) = targets
            .iter()
            .position(|v| !(v.is_finite() && (0.0..=1.0).contains(v)))
        {
            return Err(Error::invalid(format!(
                "training on targets: target[{}][{}] = {} is not in [0, 1]",
                i / n_classes,
                i % n_classes,
                targets[i]
            )));
        }
        for (what, split) in [("fit", &fit), ("holdout", &holdout)] {
            if split.x.len() != split.len() * split.n_features || split.n_features != fit.n_features
            {
                return Err(Error::shape(format!(
                    "training on targets: {what} split has {} values for {} rows of {} features",
                    split.x.len(),
                    split.len(),
                    fit.n_features
                )));
            }
            if let Some(&c) = split.y.iter().find(|&&c| c as usize >= n_classes) {
                return Err(Error::invalid(format!(
                    "training on targets: {what} label {c} with {n_classes} classes"
                )));
            }
        }
        Ok(Self::with_prepared(
            Prepared {
                fit,
                fit_targets: targets,
                reading: TopReading::Means,
                holdout,
                n_classes,
            },
            cfg,
        ))
    }

    fn with_prepared(prep: Prepared, cfg: &'a Valid<TrainParams>) -> Self {
        Trainer {
            cfg,
            prep,
            rng: Xoshiro256PlusPlus::seed_from_u64(cfg.seed),
            start: Instant::now(),
            history: Vec::new(),
            progress: &NoProgress,
        }
    }

    /// Read the top-layer targets in `reading` in eq. 14 (the fine-tuning loss is the same in both).
    pub fn with_reading(mut self, reading: TopReading) -> Self {
        self.prep.reading = reading;
        self
    }

    /// Report progress (one step per pretraining epoch, sweep and fine-tuning epoch).
    pub fn with_progress(mut self, progress: &'a dyn Progress) -> Self {
        self.progress = progress;
        self
    }

    /// Run the configured method from a fresh random initialisation.
    pub fn train(mut self, widths: &[usize]) -> Result<(DeepRbm, TrainOutcome)> {
        check_widths(widths)?;
        if widths[0] != self.prep.fit.n_features || widths[widths.len() - 1] != self.prep.n_classes
        {
            return Err(Error::shape(format!(
                "widths {widths:?} do not fit {} features and {} classes",
                self.prep.fit.n_features, self.prep.n_classes
            )));
        }
        let mut model = DeepRbm::random(widths, self.cfg.init_scale, &mut self.rng)?;
        let n = model.depth();
        let total = self.cfg.pretrain_epochs * (n - 1)
            + self.cfg.sweeps
            + if self.cfg.method == Method::Hybrid {
                self.cfg.finetune_epochs + self.cfg.finetune_stochastic_epochs
            } else {
                0
            };
        self.progress.start(
            &format!("train {} {widths:?}", self.cfg.method),
            total as u64,
        );
        let mut stages = Vec::new();
        self.pretrain(&mut model);
        let h = self.record(&model, "pretrain", 0).0;
        stages.push(("pretrain".to_string(), h));
        match self.cfg.method {
            Method::Eq14 => {
                let h = self.eq14_sweeps(&mut model, "eq14", self.cfg.lr)?;
                stages.push(("eq14".to_string(), h));
            }
            Method::Hybrid => {
                let h = self.finetune(&mut model);
                stages.push(("finetune".to_string(), h));
                let h = self.eq14_sweeps(&mut model, "refine", self.cfg.lr)?;
                stages.push(("refine".to_string(), h));
            }
        }
        self.progress.finish();
        let predictor = self.predictor(&model);
        let outcome = TrainOutcome {
            train_accuracy: predictor.accuracy(&self.prep.fit),
            holdout_accuracy: predictor.accuracy(&self.prep.holdout),
            history: self.history,
            stages,
            seconds: self.start.elapsed().as_secs_f64(),
        };
        Ok((model, outcome))
    }

    fn predictor<'m>(&self, model: &'m DeepRbm) -> Predictor<'m> {
        Predictor::new(
            model,
            OutputMode::Served {
                samples: self.cfg.eval_samples,
                seed: self.cfg.seed,
            },
        )
    }

    fn tick(&self) {
        self.progress.inc(1);
    }

    /// Append a history row; returns the held-out (accuracy, loss) of the served output.
    fn record(&mut self, model: &DeepRbm, phase: &str, step: usize) -> (f64, f64) {
        let p = self.predictor(model);
        let hold = if self.prep.holdout.is_empty() {
            &self.prep.fit
        } else {
            &self.prep.holdout
        };
        let (accuracy, loss) = served_scores(&p, hold, self.prep.n_classes);
        let row = HistoryRow {
            phase: phase.to_string(),
            step,
            train_accuracy: p.accuracy(&self.prep.fit),
            holdout_accuracy: accuracy,
            holdout_loss: loss,
            layer_proxy: self.layer_proxy(model),
            seconds: self.start.elapsed().as_secs_f64(),
        };
        self.progress
            .message(&format!("{phase} {step}: held-out {accuracy:.3}"));
        self.history.push(row);
        (accuracy, loss)
    }

    /// Mean conditional cross-entropy of eq. 14 data pairs under each RBM (see [`HistoryRow`]).
    fn layer_proxy(&mut self, model: &DeepRbm) -> Vec<f64> {
        let rows = self.prep.fit.len().min(super::params::PROXY_ROWS);
        let idx: Vec<usize> = (0..rows).collect();
        let n0 = self.prep.fit.n_features;
        let x = batch_rows(&self.prep.fit.x, &idx, n0);
        let nc = self.prep.n_classes;
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix_seed(self.cfg.seed, 0xC0FFEE));
        let y = self.prep.reading.top_values(
            batch_rows(&self.prep.fit_targets, &idx, nc),
            rows,
            nc,
            &mut rng,
        );
        (1..=model.depth())
            .map(|k| {
                let (u, l) = eq14_pairs(model, k, &x, &y, rows, Targets::Samples, &mut rng);
                let r = model.rbm(k);
                let pu = r.up_probs(&l, rows);
                let pl = r.down_probs(&u, rows);
                let xent = |p: &[f32], t: &[f32]| -> f64 {
                    p.iter()
                        .zip(t)
                        .map(|(&p, &t)| {
                            let p = (p as f64).clamp(1e-7, 1.0 - 1e-7);
                            -(t as f64 * p.ln() + (1.0 - t as f64) * (1.0 - p).ln())
                        })
                        .sum()
                };
                (xent(&pu, &u) + xent(&pl, &l)) / (rows * (r.n_up + r.n_down)) as f64
            })
            .collect()
    }

    /// Greedy CD pretraining of RBMs 1…N-1 on up-samples of x (a deep belief net).
    fn pretrain(&mut self, model: &mut DeepRbm) {
        let n = model.depth();
        let cfg = self.cfg;
        let rows = self.prep.fit.len();
        let n0 = self.prep.fit.n_features;
        let cd = CdParams {
            lr: cfg.pretrain_lr,
            momentum: cfg.momentum,
            weight_decay: cfg.weight_decay,
            steps: cfg.cd_k,
        };
        for k in 1..n {
            let mut vel = Velocity::new(model.rbm(k));
            for _epoch in 0..cfg.pretrain_epochs {
                let mut order: Vec<usize> = (0..rows).collect();
                shuffle(&mut order, &mut self.rng);
                for chunk in order.chunks(cfg.batch) {
                    let b = chunk.len();
                    let x = batch_rows(&self.prep.fit.x, chunk, n0);
                    let v = if k == 1 {
                        x
                    } else {
                        cfg.targets
                            .last_step(sample_up(model, &x, b, k - 1, &mut self.rng))
                    };
                    cd_update(
                        &mut model.layers[k - 1],
                        &mut vel,
                        &v,
                        b,
                        &cd,
                        &mut self.rng,
                    );
                }
                self.tick();
            }
        }
    }

    /// One epoch of eq. 14 updates of RBM k over the fitting data, the targets annealed with
    /// weight `alpha` on the up-sampled pairs ([`eq14_pairs_annealed`]).
    fn eq14_epoch(
        &mut self,
        model: &mut DeepRbm,
        k: usize,
        lr: f32,
        alpha: f32,
        vel: &mut Velocity,
        chains: &mut Option<Vec<f32>>,
    ) {
        let cfg = self.cfg;
        let rows = self.prep.fit.len();
        let (n0, nc) = (self.prep.fit.n_features, self.prep.n_classes);
        let mut order: Vec<usize> = (0..rows).collect();
        shuffle(&mut order, &mut self.rng);
        for chunk in order.chunks(cfg.batch) {
            let b = chunk.len();
            let x = batch_rows(&self.prep.fit.x, chunk, n0);
            let y = self.prep.reading.top_values(
                batch_rows(&self.prep.fit_targets, chunk, nc),
                b,
                nc,
                &mut self.rng,
            );
            let (u, l) =
                eq14_pairs_annealed(model, k, &x, &y, b, cfg.targets, alpha, &mut self.rng);
            let r = model.rbm(k);
            let start: Vec<f32> = match chains {
                Some(c) if cfg.persistent && c.len() == l.len() => c.clone(),
                _ => bernoulli(&l, &mut self.rng),
            };
            let g = gibbs(r, &start, b, cfg.cd_k, &mut self.rng);
            let grad = moment_difference(&u, &l, &g.h_probs, &g.v, b, r.n_up, r.n_down);
            if cfg.persistent {
                *chains = Some(g.v);
            }
            vel.step(
                &mut model.layers[k - 1],
                &grad,
                lr,
                cfg.momentum,
                cfg.weight_decay,
            );
        }
    }

    /// Eq. 14 sweeps with early stopping on the held-out accuracy; the best model is restored.
    /// Returns the best held-out accuracy (including the starting point, sweep 0).
    fn eq14_sweeps(&mut self, model: &mut DeepRbm, phase: &str, lr0: f32) -> Result<f64> {
        let cfg = self.cfg;
        let n = model.depth();
        let mut best = (self.record(model, phase, 0).0, model.clone());
        let mut vels: Vec<Velocity> = model.layers.iter().map(Velocity::new).collect();
        let mut chains: Vec<Option<Vec<f32>>> = vec![None; n];
        let mut since = 0;
        let mut lr = lr0;
        let order: Vec<usize> = match cfg.sweep_order {
            SweepOrder::TopDown => (1..=n).rev().collect(),
            SweepOrder::BottomUp => (1..=n).collect(),
        };
        for sweep in 1..=cfg.sweeps {
            let alpha = if cfg.anneal_sweeps == 0 {
                0.0
            } else {
                (1.0 - (sweep - 1) as f32 / cfg.anneal_sweeps as f32).max(0.0)
            };
            for &k in &order {
                let lr_k = if k == n { lr } else { lr * cfg.lower_lr_factor };
                if lr_k == 0.0 {
                    continue;
                }
                for _ in 0..cfg.epochs_per_layer {
                    self.eq14_epoch(model, k, lr_k, alpha, &mut vels[k - 1], &mut chains[k - 1]);
                }
            }
            model.validate().map_err(|e| {
                Error::invalid(format!(
                    "eq. 14 training diverged at sweep {sweep}: {e}; lower --lr"
                ))
            })?;
            lr *= cfg.lr_decay;
            self.tick();
            let hold = self.record(model, phase, sweep).0;
            if hold > best.0 {
                best = (hold, model.clone());
                since = 0;
            } else {
                since += 1;
                if since >= cfg.patience {
                    break;
                }
            }
        }
        *model = best.1;
        Ok(best.0)
    }

    /// Back-propagation fine-tuning of all `W_k, a_k` with Adam (hybrid only): mean field or
    /// straight-through stochastic (`finetune_stochastic`), then, after mean field, at most
    /// `finetune_stochastic_epochs` stochastic epochs from its optimum. The model kept is the one
    /// of lowest served held-out loss over both phases; returns its held-out accuracy.
    fn finetune(&mut self, model: &mut DeepRbm) -> f64 {
        let cfg = self.cfg;
        // Selection by held-out loss: smoother than the accuracy of a small held-out set.
        let mut best = (self.record(model, "finetune", 0), model.clone());
        self.finetune_phase(
            model,
            &mut best,
            "finetune",
            cfg.finetune_stochastic,
            cfg.finetune_epochs,
        );
        if cfg.finetune_stochastic_epochs > 0 {
            model.clone_from(&best.1);
            // step 0: the phase starts at the mean-field optimum (recording draws no random number)
            self.record(model, "finetune-stochastic", 0);
            self.finetune_phase(
                model,
                &mut best,
                "finetune-stochastic",
                true,
                cfg.finetune_stochastic_epochs,
            );
        }
        *model = best.1;
        best.0 .0
    }

    /// At most `epochs` epochs of Adam from `model`, early-stopped on the served held-out loss
    /// (checked every 5 epochs, patience `5 · patience` epochs); `best` keeps the lowest loss seen
    /// and its model.
    fn finetune_phase(
        &mut self,
        model: &mut DeepRbm,
        best: &mut ((f64, f64), DeepRbm),
        phase: &str,
        stochastic: bool,
        epochs: usize,
    ) {
        let cfg = self.cfg;
        let rows = self.prep.fit.len();
        let (n0, nc) = (self.prep.fit.n_features, self.prep.n_classes);
        let mut adam = Adam::new(model, cfg.finetune_lr);
        let mut since = 0;
        for epoch in 1..=epochs {
            let mut order: Vec<usize> = (0..rows).collect();
            shuffle(&mut order, &mut self.rng);
            for chunk in order.chunks(cfg.batch.min(32)) {
                let b = chunk.len();
                let mut x = batch_rows(&self.prep.fit.x, chunk, n0);
                if cfg.finetune_input_noise > 0.0 {
                    for v in &mut x {
                        if crate::sample::uniform_f32(&mut self.rng) < cfg.finetune_input_noise {
                            *v = 1.0 - *v;
                        }
                    }
                }
                let y = batch_rows(&self.prep.fit_targets, chunk, nc);
                let grads = if stochastic {
                    backprop_gradient(model, &x, &y, b, Some(&mut self.rng))
                } else {
                    mean_field_gradient(model, &x, &y, b)
                };
                adam.step(model, &grads, cfg.weight_decay);
            }
            self.tick();
            // Early stopping on the mean-field held-out accuracy every epoch would be cheap, but the
            // served output is what users get: check it every 5 epochs.
            if epoch % 5 == 0 || epoch == epochs {
                let hold = self.record(model, phase, epoch);
                if hold.1 < best.0 .1 {
                    *best = (hold, model.clone());
                    since = 0;
                } else {
                    since += 5;
                    if since >= cfg.patience * 5 {
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Params;

    /// The eq. 14 epoch reads the targets as configured: from the same model and random stream, on
    /// soft targets, reading (C) moves the weights differently from reading (P), which is the
    /// default; on one-hot targets the drawn class states equal the targets.
    #[test]
    fn eq14_epochs_use_the_reading_they_are_given() {
        let x = [
            [1.0f32, 0.0, 1.0, 0.0],
            [0.0, 1.0, 1.0, 1.0],
            [1.0, 1.0, 0.0, 0.0],
        ]
        .concat()
        .repeat(4);
        let fit = Split {
            x: x.clone(),
            y: [0, 1, 2].repeat(4),
            n_features: 4,
        };
        let soft = [0.5f32, 0.3, 0.2, 0.2, 0.6, 0.2, 0.1, 0.3, 0.6].repeat(4);
        let hard = one_hot(&fit.y, 3);
        let cfg = TrainParams::for_method(Method::Eq14, 3).check().unwrap();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
        let start = DeepRbm::random(&[4, 3, 3], 0.5, &mut rng).unwrap();
        let epoch = |targets: &[f32], reading: Option<TopReading>| -> DeepRbm {
            let t =
                Trainer::with_targets(fit.clone(), targets.to_vec(), fit.clone(), 3, &cfg).unwrap();
            let mut t = match reading {
                Some(r) => t.with_reading(r),
                None => t,
            };
            let mut m = start.clone();
            for k in [2, 1] {
                let mut vel = Velocity::new(m.rbm(k));
                t.eq14_epoch(&mut m, k, 0.1, 0.0, &mut vel, &mut None);
            }
            m
        };
        let means = epoch(&soft, Some(TopReading::Means));
        assert_eq!(means, epoch(&soft, None));
        assert_ne!(means, epoch(&soft, Some(TopReading::Classes)));
        assert_ne!(means, start);
        // one-hot targets: reading (C) draws exactly the targets, but consumes random numbers
        let drawn = TopReading::Classes.top_values(hard.clone(), 12, 3, &mut rng);
        assert_eq!(drawn, hard);
    }
}
