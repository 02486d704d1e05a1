//! The two roles of the cloning experiment as traits: a [`Classifier`] answers and can be attacked
//! (the victim in its served mode, or a trained clone), a [`Learner`] fits a clone to the answers
//! an attacker received. The experiment works with `dyn` values of both, so a new kind of clone
//! is one new implementation, not a new arm in every match.

use std::borrow::Cow;

use crate::data::Split;
use crate::error::{Error, Result};
use crate::linalg::dense;
use crate::model::mlp::{Mlp, MlpParams};
use crate::model::DeepRbm;
use crate::params::Valid;
use crate::perturb::{mean_field_margin, signed_direction};
use crate::rg::fisher::mean_field_reading;
use crate::sample::{argmax, OutputMode, Predictor};
use crate::train::{TrainParams, Trainer};

/// A trained classifier that the experiment queries and attacks.
pub trait Classifier: Send + Sync {
    /// Predicted classes of `rows` inputs (row-major `x`).
    fn classes(&self, x: &[f32], rows: usize) -> Vec<usize>;
    /// The classifier's input-Fisher direction at x (SPEC §6), unit, signed to lower its own
    /// margin of `class` ([`fisher_sign`]).
    fn attack_direction(&self, x: &[f32], class: usize) -> Result<Vec<f64>>;
}

/// A deep RBM as a classifier: classes from its output in `mode`; the attack direction from its
/// mean-field reading (the top eigenvector of the mean-field network's input Fisher, through its
/// factor's Gram matrix).
pub struct RbmClassifier<'m> {
    model: Cow<'m, DeepRbm>,
    mode: OutputMode,
}

impl<'m> RbmClassifier<'m> {
    /// A classifier over a borrowed model (the victim).
    pub fn borrowed(model: &'m DeepRbm, mode: OutputMode) -> Self {
        RbmClassifier {
            model: Cow::Borrowed(model),
            mode,
        }
    }
}

impl RbmClassifier<'static> {
    /// A classifier that owns its model (a clone).
    pub fn owned(model: DeepRbm, mode: OutputMode) -> Self {
        RbmClassifier {
            model: Cow::Owned(model),
            mode,
        }
    }
}

impl Classifier for RbmClassifier<'_> {
    fn classes(&self, x: &[f32], rows: usize) -> Vec<usize> {
        Predictor::new(&self.model, self.mode).classes(x, rows)
    }

    fn attack_direction(&self, x: &[f32], class: usize) -> Result<Vec<f64>> {
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let b = mean_field_reading(&self.model, x)?.fisher_factor;
        let v = dense::top_eigen_of_gram(b.as_ref())?.1;
        let grad = mean_field_margin(&self.model, &x64, class)?.1;
        Ok(signed_direction(&x64, &v, &grad))
    }
}

impl Classifier for Mlp {
    fn classes(&self, x: &[f32], _rows: usize) -> Vec<usize> {
        x.chunks_exact(self.n_in)
            .map(|r| self.class(&r.iter().map(|&v| v as f64).collect::<Vec<_>>()))
            .collect()
    }

    /// The top eigenvector of the categorical Fisher `Jᵀ(diag p − ppᵀ)J`, signed by the logit
    /// margin's gradient (computed through its `n_out × n_out` Gram factor).
    fn attack_direction(&self, x: &[f32], class: usize) -> Result<Vec<f64>> {
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let b = self.input_fisher_factor(&x64);
        let b = dense::from_row_major(&b, self.n_out, self.n_in)?;
        let v = dense::top_eigen_of_gram(b.as_ref())?.1;
        let grad = self.margin(&x64, class)?.1;
        Ok(signed_direction(&x64, &v, &grad))
    }
}

/// What a learner is given: the attacker's queries and one target row per query (the view of the
/// served answers the attacker keeps; probability rows for learners that ask for them).
pub struct CloneData<'a> {
    /// Queries, row-major, `rows × n_inputs`.
    pub x: &'a [f32],
    /// Targets, row-major, `rows × n_classes`, finite and in [0, 1].
    pub targets: &'a [f32],
    /// Number of queries.
    pub rows: usize,
    /// Number of classes.
    pub n_classes: usize,
}

impl CloneData<'_> {
    fn check(&self) -> Result<()> {
        if self.rows == 0
            || self.n_classes < 2
            || !self.x.len().is_multiple_of(self.rows)
            || self.targets.len() != self.rows * self.n_classes
        {
            return Err(Error::shape(format!(
                "clone data: {} input values and {} targets for {} rows of {} classes",
                self.x.len(),
                self.targets.len(),
                self.rows,
                self.n_classes
            )));
        }
        Ok(())
    }
}

/// Trains a clone on what an attacker received.
pub trait Learner: Sync {
    /// Whether the targets must be probability rows (each row renormalised to sum 1).
    fn wants_probabilities(&self) -> bool;
    /// Fit a clone; `seed` fixes its initialisation and minibatch order.
    fn fit(&self, data: &CloneData<'_>, seed: u64) -> Result<Box<dyn Classifier>>;
}

/// The paper's threat model (SPEC §9 (a)): the victim's architecture trained by eq. 14 on
/// `(x, ŷ')`, the targets entering as the top layer's values (reading (P)). Early stopping holds
/// out the last 10% of the queries, labelled by the argmax of their targets.
pub struct Eq14Learner {
    /// Training parameters; the seed is replaced by the clone's.
    pub params: Valid<TrainParams>,
    /// The architecture (the victim's widths).
    pub widths: Vec<usize>,
    /// How the clone's classes are read (the victim's output mode).
    pub mode: OutputMode,
}

impl Learner for Eq14Learner {
    fn wants_probabilities(&self) -> bool {
        false
    }

    fn fit(&self, data: &CloneData<'_>, seed: u64) -> Result<Box<dyn Classifier>> {
        data.check()?;
        let (nq, n_out) = (data.rows, data.n_classes);
        let n_in = data.x.len() / nq;
        let n_hold = (nq / 10).max(1);
        let split_at = nq - n_hold;
        let labels: Vec<u32> = data
            .targets
            .chunks_exact(n_out)
            .map(|r| argmax(r) as u32)
            .collect();
        let fit = Split {
            x: data.x[..split_at * n_in].to_vec(),
            y: labels[..split_at].to_vec(),
            n_features: n_in,
        };
        let hold = Split {
            x: data.x[split_at * n_in..].to_vec(),
            y: labels[split_at..].to_vec(),
            n_features: n_in,
        };
        let params = Valid::checked(TrainParams {
            seed,
            ..(*self.params).clone()
        });
        let (m, _) = Trainer::with_targets(
            fit,
            data.targets[..split_at * n_out].to_vec(),
            hold,
            n_out,
            &params,
        )?
        .train(&self.widths)?;
        Ok(Box::new(RbmClassifier::owned(m, self.mode)))
    }
}

/// The common real-world thief (SPEC §9 (b)): a softmax MLP ([`Mlp`]) distilled by cross-entropy
/// on the renormalised answers.
pub struct DistillLearner {
    /// The MLP's settings.
    pub params: Valid<MlpParams>,
}

impl Learner for DistillLearner {
    fn wants_probabilities(&self) -> bool {
        true
    }

    fn fit(&self, data: &CloneData<'_>, seed: u64) -> Result<Box<dyn Classifier>> {
        data.check()?;
        let x64: Vec<f64> = data.x.iter().map(|&v| v as f64).collect();
        let t64: Vec<f64> = data
            .targets
            .chunks_exact(data.n_classes)
            .flat_map(|r| {
                let s: f64 = r.iter().map(|&v| v as f64).sum();
                r.iter().map(move |&v| v as f64 / s).collect::<Vec<_>>()
            })
            .collect();
        Ok(Box::new(Mlp::distill(
            &x64,
            &t64,
            data.rows,
            &self.params,
            seed,
        )?))
    }
}
