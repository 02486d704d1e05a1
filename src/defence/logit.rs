//! `rg-logit` (SPEC §11): the poison in logit coordinates, `ỹ = σ(logit ŷ + τ s v_c)`, aimed at
//! thieves that match logits.
//!
//! `v_c` is the top eigenvector of `D F̃_c D`, `D = diag(ŷ(1−ŷ))` (the Fisher metric carried into
//! logit coordinates: a logit step `dℓ` moves the output by `D dℓ`), with `F̃_c` the cached
//! per-class Fisher information of the generation network (§7). The result goes through the floor
//! map to the served sum (strictly increasing, so the class order it produced is kept), and the
//! class must keep the margin `min(m, gap)`: otherwise τ is halved, at most [`HALVINGS`] times,
//! before the floored served row is answered. Of the two signs s the one with the larger Fisher
//! quadratic `δᵀ F̃_c δ` is served. Deterministic given ŷ.

use std::sync::Arc;

use faer::Mat;

use super::feasible::{floor_map_to, FeasibleSet};
use super::rg::PoisonCache;
use super::{check_served, Defence, Query};
use crate::error::Result;
use crate::linalg::dense;
use crate::sample::argmax;

/// Times τ is halved before giving up on a query.
pub const HALVINGS: usize = 12;

/// The `rg-logit` defence.
#[derive(Clone, Debug)]
pub struct RgLogit {
    /// The per-class Fisher matrices (and their reading).
    pub cache: Arc<PoisonCache>,
    /// Logit step τ.
    pub tau: f64,
    /// Margin m.
    pub margin: f64,
    /// Floor f.
    pub floor: f64,
}

impl RgLogit {
    fn direction(&self, set: &FeasibleSet) -> Result<Vec<f64>> {
        let k = set.len();
        let f = &self.cache.fisher[set.class];
        let d: Vec<f64> = set.y0.iter().map(|v| v * (1.0 - v)).collect();
        let m = Mat::from_fn(k, k, |i, j| d[i] * f[i * k + j] * d[j]);
        let (vals, vecs) = dense::sym_eigen(m.as_ref())?;
        let top = (0..k)
            .max_by(|&a, &b| vals[a].total_cmp(&vals[b]))
            .unwrap_or(0);
        Ok((0..k).map(|i| vecs[(i, top)]).collect())
    }

    fn quadratic(&self, set: &FeasibleSet, y: &[f64]) -> f64 {
        let k = set.len();
        let f = &self.cache.fisher[set.class];
        let d: Vec<f64> = y.iter().zip(&set.served).map(|(a, b)| a - b).collect();
        (0..k)
            .map(|i| d[i] * (0..k).map(|j| f[i * k + j] * d[j]).sum::<f64>())
            .sum()
    }

    /// The answer for sign `s`, with τ halved until the class keeps its margin.
    fn signed(&self, set: &FeasibleSet, v: &[f64], s: f64) -> Option<Vec<f64>> {
        let logit: Vec<f64> = set.y0.iter().map(|&p| (p / (1.0 - p)).ln()).collect();
        let mut tau = self.tau;
        for _ in 0..=HALVINGS {
            let raw: Vec<f64> = logit
                .iter()
                .zip(v)
                .map(|(l, vi)| 1.0 / (1.0 + (-(l + tau * s * vi)).exp()))
                .collect();
            if let Some(y) = floor_map_to(&raw, set.floor, set.mass) {
                if set.contains_polytope(&y) && argmax_f64(&y) == set.class {
                    return Some(y);
                }
            }
            tau *= 0.5;
        }
        None
    }
}

fn argmax_f64(v: &[f64]) -> usize {
    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    argmax(&f)
}

impl Defence for RgLogit {
    fn name(&self) -> String {
        format!("rg-logit(tau={})", self.tau)
    }

    fn apply(&self, q: &Query<'_>) -> Result<Vec<f32>> {
        check_served(q.y)?;
        // The budget is unlimited here (τ is the knob); the set gives the floor, margin and sum.
        let Some(set) = FeasibleSet::new(q.y, f64::INFINITY, self.margin, self.floor, true) else {
            return Ok(q.y.to_vec());
        };
        if !set.can_move() || self.tau == 0.0 {
            return Ok(set.answer(&set.y0));
        }
        let v = self.direction(&set)?;
        let best = [1.0, -1.0]
            .into_iter()
            .filter_map(|s| self.signed(&set, &v, s))
            .max_by(|a, b| self.quadratic(&set, a).total_cmp(&self.quadratic(&set, b)));
        Ok(set.answer(&best.unwrap_or_else(|| set.y0.clone())))
    }

    fn keeps_argmax(&self) -> bool {
        true
    }
}
