//! Input perturbations (SPEC §6, RG-NOTES §1.7): the mean-field margin and its gradient, steps
//! that stay in the input box `[0,1]^n`, the exact projection onto an L2 ball inside the box, the
//! gradient attacks (FGSM, PGD), binary pixel flips and the sign rule of a Fisher direction. The
//! `attack` and `clone-eval` experiments build on these.
//!
//! **Clipping.** Inputs are binary, so a raw step `x + ε d` leaves `[0,1]^n` on about half of its
//! components. [`step_to_norm`] applies a direction as `x'(t) = clip(x + t d, 0, 1)` with t chosen
//! so that the *actual* norm `‖x'(t) − x‖₂ = ε`: components that point out of the box contribute
//! nothing and the feasible ones carry the whole budget. [`project_ball_box`] projects on the same
//! set (ε-ball ∩ box), so every continuous method is compared at equal actual L2 norm.

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::error::{Error, Result};
use crate::linalg::{dot, norm2};
use crate::model::kernels::up_probs_f64;
use crate::DeepRbm;

// ---------------------------------------------------------------------------------------------
// The mean-field margin and its gradient.

/// Mean-field margin `m(x) = μ_{N,c} − max_{j≠c} μ_{N,j}` of `μ_k = σ(W_k μ_{k−1} + a_k)` and its
/// analytic gradient w.r.t. x (back-propagation through the sigmoid layers, f64; SPEC §6 reading
/// (ii)). At a tie of the runner-up the first one is used (a subgradient).
pub fn mean_field_margin(model: &DeepRbm, x: &[f64], class: usize) -> Result<(f64, Vec<f64>)> {
    if x.len() != model.n_inputs() {
        return Err(Error::shape(format!(
            "input has {} values, the model {} inputs",
            x.len(),
            model.n_inputs()
        )));
    }
    let nn = model.n_outputs();
    if class >= nn || nn < 2 {
        return Err(Error::invalid(format!(
            "margin of class {class} with {nn} outputs (need class < outputs, outputs ≥ 2)"
        )));
    }
    let mut mus: Vec<Vec<f64>> = vec![x.to_vec()];
    for k in 1..=model.depth() {
        let next = up_probs_f64(model.rbm(k), &mus[k - 1]);
        mus.push(next);
    }
    let out = &mus[model.depth()];
    let mut runner = usize::MAX;
    for j in 0..nn {
        if j != class && (runner == usize::MAX || out[j] > out[runner]) {
            runner = j;
        }
    }
    let m = out[class] - out[runner];
    let mut g = vec![0.0f64; nn];
    g[class] = 1.0;
    g[runner] = -1.0;
    for k in (1..=model.depth()).rev() {
        let r = model.rbm(k);
        let mu = &mus[k];
        let gz: Vec<f64> = (0..r.n_up).map(|i| g[i] * mu[i] * (1.0 - mu[i])).collect();
        g = (0..r.n_down)
            .map(|c| {
                (0..r.n_up)
                    .map(|i| r.w[i * r.n_down + c] as f64 * gz[i])
                    .sum()
            })
            .collect();
    }
    Ok((m, g))
}

// ---------------------------------------------------------------------------------------------
// Geometry: steps, projections, flips.

/// Room of component i in direction `d_i` inside `[0, 1]`.
fn room(x: f64, d: f64) -> f64 {
    if d > 0.0 {
        (1.0 - x).max(0.0)
    } else if d < 0.0 {
        x.max(0.0)
    } else {
        0.0
    }
}

/// The feasible part `P_x(d)` of a direction at x ∈ `[0,1]^n`: components with no room are zeroed.
pub fn feasible_part(x: &[f64], d: &[f64]) -> Vec<f64> {
    x.iter()
        .zip(d)
        .map(|(&xi, &di)| if room(xi, di) > 0.0 { di } else { 0.0 })
        .collect()
}

/// `x' = clip(x + t d, 0, 1)` with t ≥ 0 chosen so that `‖x' − x‖₂ = ε` exactly (the module's
/// clipping decision), found exactly from the sorted saturation points of the components. When ε
/// exceeds the largest reachable norm (all feasible components saturated) the saturated point is
/// returned. Returns `(x', actual norm)`.
pub fn step_to_norm(x: &[f64], d: &[f64], eps: f64) -> (Vec<f64>, f64) {
    // Components with room, as (saturation time room/|d|, room, d²).
    let mut comps: Vec<(f64, f64, f64)> = x
        .iter()
        .zip(d)
        .filter_map(|(&xi, &di)| {
            let r = room(xi, di);
            (r > 0.0).then(|| (r / di.abs(), r, di * di))
        })
        .collect();
    comps.sort_by(|a, b| a.0.total_cmp(&b.0));
    let target = eps * eps;
    // Σ d² of the components not yet saturated, as suffix sums (summed from the end, not by
    // subtracting from the total: with one slow component left, the subtraction cancelled to a
    // relative error of 1e-10 and the step overshot ε — found by the proptest in tests/attack.rs).
    let mut free = vec![0.0f64; comps.len() + 1];
    for i in (0..comps.len()).rev() {
        free[i] = free[i + 1] + comps[i].2;
    }
    let mut saturated = 0.0; // Σ room² of saturated components
    let mut t = f64::INFINITY;
    for (i, &(ts, r, _)) in comps.iter().enumerate() {
        // norm²(ts) with components before this one saturated.
        if saturated + ts * ts * free[i] >= target {
            t = ((target - saturated) / free[i]).max(0.0).sqrt();
            break;
        }
        saturated += r * r;
    }
    let xp: Vec<f64> = x
        .iter()
        .zip(d)
        .map(|(&xi, &di)| {
            if t.is_finite() {
                (xi + t * di).clamp(0.0, 1.0)
            } else if room(xi, di) > 0.0 {
                if di > 0.0 {
                    1.0
                } else {
                    0.0
                }
            } else {
                xi
            }
        })
        .collect();
    let n = norm2(&xp.iter().zip(x).map(|(a, b)| a - b).collect::<Vec<_>>());
    (xp, n)
}

/// Euclidean projection of δ onto `{δ : ‖δ‖₂ ≤ ε, x + δ ∈ [0,1]^n}` (x ∈ `[0,1]^n`): by the KKT
/// conditions `δ = clip(z/(1+μ), −x, 1−x)` with the smallest μ ≥ 0 that puts it in the ball
/// (bisection on μ, keeping the feasible end, so the result never leaves the set).
pub fn project_ball_box(x: &[f64], z: &[f64], eps: f64) -> Vec<f64> {
    let at = |mu: f64| -> Vec<f64> {
        x.iter()
            .zip(z)
            .map(|(&xi, &zi)| (zi / (1.0 + mu)).clamp(-xi, 1.0 - xi))
            .collect()
    };
    let d0 = at(0.0);
    if norm2(&d0) <= eps {
        return d0;
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while norm2(&at(hi)) > eps {
        hi *= 2.0;
        if hi > 1e300 {
            return vec![0.0; x.len()];
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if norm2(&at(mid)) > eps {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-15 * hi {
            break;
        }
    }
    at(hi)
}

/// L2 PGD on the mean-field margin of `class` (SPEC §6 reading (ii)): from δ = 0, K steps
/// `δ ← Π(δ − α ∇m/‖∇m‖)`, α = 2.5ε/K, Π the projection onto ε-ball ∩ box ([`project_ball_box`]).
/// Returns x + δ (stops early where ∇m = 0).
pub fn pgd(model: &DeepRbm, x: &[f64], class: usize, eps: f64, steps: usize) -> Result<Vec<f64>> {
    let alpha = 2.5 * eps / steps.max(1) as f64;
    let mut delta = vec![0.0f64; x.len()];
    for _ in 0..steps {
        let xp: Vec<f64> = x.iter().zip(&delta).map(|(a, b)| a + b).collect();
        let (_, g) = mean_field_margin(model, &xp, class)?;
        let gn = norm2(&g);
        if !(gn > 0.0 && gn.is_finite()) {
            break;
        }
        let z: Vec<f64> = delta
            .iter()
            .zip(&g)
            .map(|(d, gi)| d - alpha * gi / gn)
            .collect();
        delta = project_ball_box(x, &z, eps);
    }
    Ok(x.iter()
        .zip(&delta)
        .map(|(a, b)| (a + b).clamp(0.0, 1.0))
        .collect())
}

/// Which FGSM direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FgsmKind {
    /// `δ = −ε ∇m/‖∇m‖`.
    L2,
    /// `δ = −ε sign(∇m)/√(nnz)`: the sign direction scaled to L2 norm ε.
    Sign,
}

/// The raw FGSM step (before clipping): exactly of L2 norm ε, or zero where ∇m = 0.
pub fn fgsm_delta(grad: &[f64], eps: f64, kind: FgsmKind) -> Vec<f64> {
    let d: Vec<f64> = match kind {
        FgsmKind::L2 => grad.iter().map(|g| -g).collect(),
        FgsmKind::Sign => grad
            .iter()
            .map(|&g| {
                if g > 0.0 {
                    -1.0
                } else if g < 0.0 {
                    1.0
                } else {
                    0.0
                }
            })
            .collect(),
    };
    let n = norm2(&d);
    if n > 0.0 && n.is_finite() {
        d.iter().map(|v| eps * v / n).collect()
    } else {
        vec![0.0; grad.len()]
    }
}

/// Flip the k feasible pixels of largest |score|: 0 → 1 only where `score_i > 0`, 1 → 0 only
/// where `score_i < 0` (x is read as binary at 0.5). The result is in {0,1}^n; fewer than k
/// pixels flip when fewer are feasible. Returns `(x', pixels flipped)`.
pub fn binary_flip(x: &[f32], score: &[f64], k: usize) -> (Vec<f32>, usize) {
    let bin: Vec<f32> = x
        .iter()
        .map(|&v| if v >= 0.5 { 1.0 } else { 0.0 })
        .collect();
    let mut cand: Vec<usize> = (0..x.len())
        .filter(|&i| {
            let s = score.get(i).copied().unwrap_or(0.0);
            (bin[i] == 0.0 && s > 0.0) || (bin[i] == 1.0 && s < 0.0)
        })
        .collect();
    // Stable: ties keep the lower index first.
    cand.sort_by(|&a, &b| score[b].abs().total_cmp(&score[a].abs()));
    let mut out = bin;
    let n = k.min(cand.len());
    for &i in &cand[..n] {
        out[i] = 1.0 - out[i];
    }
    (out, n)
}

/// The sign s ∈ {±1} of a Fisher direction v (see the module doc): the one whose feasible part
/// lowers the mean-field margin most per unit norm, to first order; +1 when neither lowers it.
pub fn fisher_sign(x: &[f64], v: &[f64], grad: &[f64]) -> f64 {
    let rate = |s: f64| {
        let sv: Vec<f64> = v.iter().map(|a| s * a).collect();
        let p = feasible_part(x, &sv);
        let n = norm2(&p);
        if n > 0.0 {
            dot(&p, grad) / n
        } else {
            f64::INFINITY
        }
    };
    if rate(-1.0) < rate(1.0) {
        -1.0
    } else {
        1.0
    }
}

/// The unit direction `s·v` of a unit attack direction v, with the sign s of [`fisher_sign`].
pub fn signed_direction(x: &[f64], v: &[f64], grad: &[f64]) -> Vec<f64> {
    let s = fisher_sign(x, v, grad);
    v.iter().map(|a| s * a).collect()
}

/// A unit vector in a uniformly random direction of `R^n`, drawn from `seed` (the random
/// baseline of the attacks).
pub fn random_unit_direction(n: usize, seed: u64) -> Vec<f64> {
    let g = gaussian_vector(n, seed);
    let gn = norm2(&g);
    g.iter().map(|a| a / gn).collect()
}

/// A vector of `n` independent standard normal values drawn from `seed` (the random baselines).
pub fn gaussian_vector(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..n)
        .map(|_| crate::model::standard_normal(&mut rng) as f64)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Minimal adversarial norm by bisection (SPEC §10, the depth study's primary metric).

/// Settings of [`minimal_budget`]: the largest budget tried and the bisection's tolerance.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bisection {
    /// Largest L2 budget tried; an attack that fails there is censored (reported as "> max").
    pub max: f64,
    /// The bisection stops when the bracket `[lo, hi]` is at most this wide.
    pub tol: f64,
}

/// A successful point found by [`minimal_budget`].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MinimalBudget {
    /// The budget ε at the top of the final bracket (success there).
    pub budget: f64,
    /// The actual L2 norm of the successful point (≤ ε: smaller where the step saturated).
    pub norm: f64,
    /// Budgets tried.
    pub evaluations: usize,
}

/// The smallest budget at which an attack succeeds, by bisection. `attempt(ε)` runs the attack
/// at budget ε and returns `Some(actual norm)` when it succeeds, `None` when it fails. The budget
/// `max` is tried first: `Ok(None)` when the attack fails there (censored). Otherwise the bracket
/// starts at `[0, max]` (budget 0 counts as a failure: the clean input is served correctly) and is
/// halved, keeping a failure at `lo` and a success at `hi`, until `hi − lo ≤ tol`; the success at
/// `hi` is returned. Success need not be monotone in ε, so the result is a boundary crossing of
/// the attack, not always the first one: an upper bound on the attack's minimal norm, within
/// `tol` of a budget where it fails.
pub fn minimal_budget(
    b: Bisection,
    mut attempt: impl FnMut(f64) -> Result<Option<f64>>,
) -> Result<Option<MinimalBudget>> {
    if !(b.max > 0.0 && b.max.is_finite() && b.tol > 0.0 && b.tol.is_finite()) {
        return Err(Error::invalid(format!(
            "minimal-norm bisection: max {} and tol {} must be finite and > 0",
            b.max, b.tol
        )));
    }
    let mut evaluations = 1;
    let Some(mut norm) = attempt(b.max)? else {
        return Ok(None);
    };
    let (mut lo, mut hi) = (0.0, b.max);
    while hi - lo > b.tol {
        let mid = 0.5 * (lo + hi);
        evaluations += 1;
        match attempt(mid)? {
            Some(n) => {
                hi = mid;
                norm = n;
            }
            None => lo = mid,
        }
    }
    Ok(Some(MinimalBudget {
        budget: hi,
        norm,
        evaluations,
    }))
}
