//! The thieves of the protocol (SPEC §12). Each trains on the first `1 − h` of its queries and
//! keeps the last `h` as its own hold-out, labelled by the argmax of what was served (those labels
//! are the victim's classes under any class-keeping defence).
//!
//! * `distill` — the MLP, soft cross-entropy on the renormalised answers;
//! * `distill-top1` — the MLP on the argmax labels only: the floor no class-keeping defence can
//!   push a clone below;
//! * `distill-select` — the careful thief: trains both and keeps the one that agrees better with
//!   its hold-out labels (ties: the soft clone). It costs no extra training here: it reuses the
//!   other two clones of the same cell;
//! * `distill-logit` — the MLP fitted by squared error to the centred logarithms of the clipped,
//!   renormalised answers, `ln max(ỹ_k, 10⁻⁶) − mean_j ln max(ỹ_j, 10⁻⁶)` (a softmax's logits up to
//!   their shift);
//! * `hybrid` — the victim's architecture trained by the hybrid rule on the soft answers;
//! * `eq14` — the victim's architecture trained by the paper's eq. 14, reading (P): each answer is
//!   the top layer's Bernoulli means;
//! * `eq14-c` — the same in reading (C): each answer is a class distribution, and every pass draws a
//!   one-hot class state from it ([`crate::train::TopReading::Classes`]);
//! * `adaptive-distill` — the `distill` learner on queries chosen by KnockoffNets' adaptive bandit
//!   ([`crate::experiments::query_strategy::adaptive`]) against the defended answers themselves,
//!   instead of the fixed permutation of the pool.

use serde::{Deserialize, Serialize};

use super::spec::PinnedTraining;
use crate::data::Split;
use crate::error::Result;
use crate::experiments::clone_eval::{Classifier, RbmClassifier};
use crate::model::mlp::{DistillLoss, Mlp, MlpParams};
use crate::params::{Params, Valid};
use crate::sample::{argmax, OutputMode};
use crate::train::{Method, TopReading, Trainer};

/// An attacker of the protocol (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AttackerKind {
    /// Soft cross-entropy.
    Distill,
    /// Labels only.
    DistillTop1,
    /// The better of the two on its own hold-out.
    DistillSelect,
    /// Squared error on logits.
    DistillLogit,
    /// Same architecture, hybrid rule.
    Hybrid,
    /// Same architecture, eq. 14 (reading P).
    Eq14,
    /// Same architecture, eq. 14 (reading C).
    Eq14C,
    /// `distill` on adaptively chosen queries.
    AdaptiveDistill,
}

impl AttackerKind {
    /// The name used in files and tables.
    pub fn name(self) -> &'static str {
        match self {
            AttackerKind::Distill => "distill",
            AttackerKind::DistillTop1 => "distill-top1",
            AttackerKind::DistillSelect => "distill-select",
            AttackerKind::DistillLogit => "distill-logit",
            AttackerKind::Hybrid => "hybrid",
            AttackerKind::Eq14 => "eq14",
            AttackerKind::Eq14C => "eq14-c",
            AttackerKind::AdaptiveDistill => "adaptive-distill",
        }
    }

    /// What it is built from: `distill-select` needs `distill` and `distill-top1` of the same cell.
    pub fn needs(self) -> &'static [AttackerKind] {
        match self {
            AttackerKind::DistillSelect => &[AttackerKind::Distill, AttackerKind::DistillTop1],
            _ => &[],
        }
    }

    /// Whether it sees only the labels (its clone is shared by every defence that keeps them).
    pub fn labels_only(self) -> bool {
        self == AttackerKind::DistillTop1
    }
}

/// What an attacker received: its training queries and answers, and its hold-out.
pub struct Received<'a> {
    /// Training queries, row-major.
    pub x: &'a [f32],
    /// Answers to them (as served, possibly defended), row-major.
    pub y: &'a [f32],
    /// Hold-out queries.
    pub hold_x: &'a [f32],
    /// Hold-out answers.
    pub hold_y: &'a [f32],
    /// Inputs per query.
    pub n_in: usize,
    /// Classes.
    pub n_out: usize,
}

/// A trained clone with its hold-out agreement (share of hold-out queries whose class is the
/// argmax of the served answer).
pub struct FittedClone {
    /// The clone.
    pub clone: Box<dyn Classifier>,
    /// Hold-out agreement.
    pub holdout_agreement: f64,
}

fn renormalised(y: &[f32], n_out: usize) -> Vec<f64> {
    y.chunks_exact(n_out)
        .flat_map(|r| {
            let s: f64 = r.iter().map(|&v| v as f64).sum();
            r.iter().map(move |&v| {
                if s > 0.0 {
                    v as f64 / s
                } else {
                    1.0 / n_out as f64
                }
            })
        })
        .collect()
}

fn one_hot(y: &[f32], n_out: usize) -> Vec<f64> {
    y.chunks_exact(n_out)
        .flat_map(|r| {
            let c = argmax(r);
            (0..n_out).map(move |j| if j == c { 1.0 } else { 0.0 })
        })
        .collect()
}

/// Centred logarithms of the clipped, renormalised answers (the `distill-logit` targets).
pub fn logit_targets(y: &[f32], n_out: usize) -> Vec<f64> {
    renormalised(y, n_out)
        .chunks_exact(n_out)
        .flat_map(|r| {
            let l: Vec<f64> = r.iter().map(|&p| p.max(1e-6).ln()).collect();
            let m = l.iter().sum::<f64>() / n_out as f64;
            l.into_iter().map(move |v| v - m)
        })
        .collect()
}

/// Share of hold-out queries classified as the argmax of their served answers.
fn holdout_agreement(clone: &dyn Classifier, r: &Received<'_>) -> f64 {
    let rows = r.hold_y.len() / r.n_out;
    if rows == 0 {
        return f64::NAN;
    }
    let got = clone.classes(r.hold_x, rows);
    let want = r.hold_y.chunks_exact(r.n_out).map(argmax);
    got.iter().zip(want).filter(|(a, b)| **a == *b).count() as f64 / rows as f64
}

/// Train `kind` on what it received. `mlp` are the tuned MLP settings of this budget; `widths` the
/// victim's (for the same-architecture thieves), trained with `pinned` (the protocol's pinned
/// configurations, else the defaults); `seed` fixes the clone's initialisation and order.
/// `distill-select` is not trained here (it is read off its two parts).
pub fn fit(
    kind: AttackerKind,
    r: &Received<'_>,
    mlp: &Valid<MlpParams>,
    widths: &[usize],
    pinned: Option<&PinnedTraining>,
    seed: u64,
) -> Result<FittedClone> {
    let rows = r.y.len() / r.n_out;
    let mlp_on = |targets: Vec<f64>, loss: DistillLoss| -> Result<Box<dyn Classifier>> {
        let x64: Vec<f64> = r.x.iter().map(|&v| v as f64).collect();
        Ok(Box::new(Mlp::fit(&x64, &targets, rows, mlp, loss, seed)?))
    };
    let clone: Box<dyn Classifier> = match kind {
        AttackerKind::Distill | AttackerKind::AdaptiveDistill => {
            mlp_on(renormalised(r.y, r.n_out), DistillLoss::CrossEntropy)?
        }
        AttackerKind::DistillTop1 => mlp_on(one_hot(r.y, r.n_out), DistillLoss::CrossEntropy)?,
        AttackerKind::DistillLogit => mlp_on(logit_targets(r.y, r.n_out), DistillLoss::LogitMse)?,
        AttackerKind::Hybrid | AttackerKind::Eq14 | AttackerKind::Eq14C => {
            let method = if kind == AttackerKind::Hybrid {
                Method::Hybrid
            } else {
                Method::Eq14
            };
            let labels = |y: &[f32]| -> Vec<u32> {
                y.chunks_exact(r.n_out).map(|v| argmax(v) as u32).collect()
            };
            let fit = Split {
                x: r.x.to_vec(),
                y: labels(r.y),
                n_features: r.n_in,
            };
            let hold = Split {
                x: r.hold_x.to_vec(),
                y: labels(r.hold_y),
                n_features: r.n_in,
            };
            let targets: Vec<f32> = renormalised(r.y, r.n_out)
                .into_iter()
                .map(|v| v as f32)
                .collect();
            let params = PinnedTraining::params(pinned, method, seed).check()?;
            let reading = if kind == AttackerKind::Eq14C {
                TopReading::Classes
            } else {
                TopReading::Means
            };
            let (m, _) = Trainer::with_targets(fit, targets, hold, r.n_out, &params)?
                .with_reading(reading)
                .train(widths)?;
            Box::new(RbmClassifier::owned(m, OutputMode::MeanField))
        }
        AttackerKind::DistillSelect => {
            return Err(crate::error::Error::invalid(
                "distill-select is read off distill and distill-top1, not trained",
            ))
        }
    };
    let holdout_agreement = holdout_agreement(clone.as_ref(), r);
    Ok(FittedClone {
        clone,
        holdout_agreement,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logit_targets_are_centred_logs_of_the_renormalised_clipped_answers() {
        let t = logit_targets(&[0.2, 0.6, 0.0, 0.0, 0.5, 0.5], 3);
        let l = [(0.25f64).ln(), (0.75f64).ln(), (1e-6f64).ln()];
        let m = l.iter().sum::<f64>() / 3.0;
        for k in 0..3 {
            assert!((t[k] - (l[k] - m)).abs() < 1e-6, "{k}: {}", t[k]);
        }
        assert!(t[3] < -8.0 && (t[4] - t[5]).abs() < 1e-12);
        assert!(t.chunks(3).all(|r| r.iter().sum::<f64>().abs() < 1e-9));
    }

    #[test]
    fn serde_names_match_the_table_names() {
        for k in [
            AttackerKind::Distill,
            AttackerKind::DistillTop1,
            AttackerKind::DistillSelect,
            AttackerKind::DistillLogit,
            AttackerKind::Hybrid,
            AttackerKind::Eq14,
            AttackerKind::Eq14C,
            AttackerKind::AdaptiveDistill,
        ] {
            let s = serde_json::to_string(&k).unwrap();
            assert_eq!(s, format!("\"{}\"", k.name()));
        }
    }
}
