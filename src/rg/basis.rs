//! Which operators each layer's effective Hamiltonian is expanded in (SPEC §4, RG-NOTES A4): the
//! choice of basis, its planning from pilot samples, and the checks that a basis list fits a flow.
//!
//! * Classification bases, layers 1…N: the output layer gets the **complete** basis when it has at
//!   most [`MAX_COMPLETE_WIDTH`] units (then the direct Fisher estimator is exact up to sampling,
//!   SPEC §6); hidden layers get [`BasisChoice`]: order 1, order 2, or order 1 plus the M pairs of
//!   largest |covariance| chosen once from pilot samples pooled over the inputs and then frozen, so
//!   that the stability matrices of different inputs are comparable.
//! * Generation bases, layers 0…N−1: the input layer gets order 1 plus nearest-neighbour pairs on
//!   its image grid (or order 1), the hidden layers reuse the classification bases.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::DeepRbm;
use crate::params::Params;
use crate::rg::operators::{OperatorBasis, MAX_COMPLETE_WIDTH};
use crate::rg::stability::sample_classification;
use crate::rg::FlowParams;

/// Operator basis of the hidden layers (the output layer gets the complete basis when it has at
/// most [`MAX_COMPLETE_WIDTH`] units).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum BasisChoice {
    /// `{h_i}`.
    Order1,
    /// `{h_i} ∪ {h_i h_j}` (all pairs: 2080 operators at width 64, slow and memory-hungry).
    Order2,
    /// Order 1 plus the M pairs of largest |covariance|, chosen once per layer from pilot samples
    /// pooled over the analysed inputs, then frozen.
    TopPairs(usize),
}

/// The hidden-layer basis used when none is chosen: order 1 plus the 200 pairs of largest
/// |covariance| (`order2:200`).
pub const DEFAULT_BASIS: BasisChoice = BasisChoice::TopPairs(200);

/// Pilot samples (in total, pooled over up to [`PILOT_INPUTS`] inputs) that choose the frozen top
/// pairs when none are given.
pub const DEFAULT_PILOT_SAMPLES: usize = 4_000;

/// The most inputs whose samples are pooled to choose the top pairs.
pub const PILOT_INPUTS: usize = 32;

impl std::str::FromStr for BasisChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "order1" => Ok(BasisChoice::Order1),
            "order2" => Ok(BasisChoice::Order2),
            _ => match s.strip_prefix("order2:").map(str::parse::<usize>) {
                Some(Ok(m)) if m > 0 => Ok(BasisChoice::TopPairs(m)),
                _ => Err(Error::invalid(format!(
                    "--basis '{s}': expected order1, order2 or order2:M (M > 0 top pairs)"
                ))),
            },
        }
    }
}

impl std::fmt::Display for BasisChoice {
    /// The name [`BasisChoice::from_str`](std::str::FromStr) reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BasisChoice::Order1 => f.write_str("order1"),
            BasisChoice::Order2 => f.write_str("order2"),
            BasisChoice::TopPairs(m) => write!(f, "order2:{m}"),
        }
    }
}

/// How the classification bases are chosen: the hidden-layer [`BasisChoice`], and for
/// [`BasisChoice::TopPairs`] the pilot samples (in total) and the seed that draw them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BasisPlan {
    /// Basis of the hidden layers.
    pub choice: BasisChoice,
    /// Pilot samples in total, spread over the pilot inputs (top pairs only).
    pub pilot_samples: usize,
    /// Seed of the pilot sampler.
    pub seed: u64,
}

impl Default for BasisPlan {
    /// [`DEFAULT_BASIS`], [`DEFAULT_PILOT_SAMPLES`], seed 0.
    fn default() -> Self {
        BasisPlan {
            choice: DEFAULT_BASIS,
            pilot_samples: DEFAULT_PILOT_SAMPLES,
            seed: 0,
        }
    }
}

/// The frozen classification bases of layers 1…N (see the module documentation). For top pairs,
/// the pilot samples come from up to [`PILOT_INPUTS`] of `pilot_inputs`.
pub fn classification_bases(
    model: &DeepRbm,
    pilot_inputs: &[&[f32]],
    plan: &BasisPlan,
) -> Result<Vec<OperatorBasis>> {
    let widths = model.widths();
    let n = model.depth();
    let pilot_inputs = &pilot_inputs[..pilot_inputs.len().min(PILOT_INPUTS)];
    let mut pilot_states: Vec<Vec<f32>> = vec![Vec::new(); n];
    if let BasisChoice::TopPairs(_) = plan.choice {
        let per = (plan.pilot_samples / pilot_inputs.len().max(1)).max(2);
        for (i, x) in pilot_inputs.iter().enumerate() {
            let fc = FlowParams {
                samples: per,
                seed: plan.seed ^ 0x9110_7000 ^ i as u64,
                blocks: 1,
                ..FlowParams::default()
            }
            .check()?;
            for (k, layer) in sample_classification(model, x, &fc)?
                .into_iter()
                .enumerate()
            {
                pilot_states[k].extend(layer.states);
            }
        }
    }
    (1..=n)
        .map(|k| {
            let w = widths[k];
            if k == n && w <= MAX_COMPLETE_WIDTH {
                return OperatorBasis::complete(w);
            }
            match plan.choice {
                BasisChoice::Order1 => OperatorBasis::order1(w),
                BasisChoice::Order2 => OperatorBasis::order2(w),
                BasisChoice::TopPairs(m) => OperatorBasis::top_pairs(&pilot_states[k - 1], w, m),
            }
        })
        .collect()
}

/// The generation bases of layers 0…N−1: the input layer gets order 1 plus nearest-neighbour
/// pairs on its image grid (RG-NOTES A4), or order 1; hidden layers reuse the classification bases.
pub fn generation_bases(
    model: &DeepRbm,
    class_bases: &[OperatorBasis],
    image_shape: Option<(usize, usize)>,
) -> Result<Vec<OperatorBasis>> {
    let n0 = model.n_inputs();
    let input = match image_shape {
        Some((r, c)) if r * c == n0 => OperatorBasis::grid_nearest_neighbour(r, c)?,
        _ => OperatorBasis::order1(n0)?,
    };
    let mut v = vec![input];
    v.extend(class_bases[..model.depth() - 1].iter().cloned());
    Ok(v)
}

/// Check a basis list against the flow layer widths.
pub(crate) fn check_bases(bases: &[OperatorBasis], widths: &[usize], what: &str) -> Result<()> {
    if bases.len() != widths.len() {
        return Err(Error::shape(format!(
            "{what}: {} layers need {} bases, got {}",
            widths.len(),
            widths.len(),
            bases.len()
        )));
    }
    for (j, (b, &w)) in bases.iter().zip(widths).enumerate() {
        if b.width() != w {
            return Err(Error::shape(format!(
                "{what}: basis {j} is for {} units, the layer has {w}",
                b.width()
            )));
        }
    }
    Ok(())
}

/// Check flow-order bases of the classification network: `bases[k−1]` is layer k (k = 1…N).
pub(crate) fn check_classification_bases(model: &DeepRbm, bases: &[OperatorBasis]) -> Result<()> {
    let w = model.widths();
    check_bases(bases, &w[1..], "classification bases (layers 1…N)")
}

/// Generation bases are given by layer, `bases[k]` for k = 0…N−1; returns them in flow order
/// (layer N−1 first), after checking their widths.
pub(crate) fn generation_flow_bases(
    model: &DeepRbm,
    bases: &[OperatorBasis],
) -> Result<Vec<OperatorBasis>> {
    let w = model.widths();
    check_bases(bases, &w[..w.len() - 1], "generation bases (layers 0…N−1)")?;
    Ok(bases.iter().rev().cloned().collect())
}
