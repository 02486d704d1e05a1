//! The feasible set of the second-form defences (SPEC §11) and the candidate answers of its
//! vertex solver.
//!
//! For a served row `ŷ ∈ [0,1]^K` with class `c = argmax ŷ`, mass `M = Σŷ`, a floor f, a margin m
//! and an L1 budget ε:
//!
//! 1. **Floor.** The base point `y0 = Φ_f(ŷ)` lies in `[f, 1−f]^K` with the same sum: each value
//!    goes through a continuous, strictly increasing map that is the identity on `[2f, 1−2f]` and
//!    squeezes `[0, 2f]` onto `[f, 2f]` and `[1−2f, 1]` onto `[1−2f, 1−f]`; the sum is then
//!    restored by scaling the excesses over f (or the rooms under 1−f) by one factor. Every step is
//!    strictly increasing, so `y0` orders the classes exactly as `ŷ` does (ties stay ties) and
//!    keeps its argmax. Its cost `‖y0 − ŷ‖₁` is at most `2·K·f`.
//! 2. **The set.** `F = { ỹ ∈ [f, 1−f]^K : Σỹ = M, ỹ_c − ỹ_j ≥ m' ∀ j ≠ c, ‖ỹ − y0‖₁ ≤ ε' }` with
//!    `m' = min(m, gap of y0)` and `ε' = ε − ‖y0 − ŷ‖₁`; so every answer in F is within ε of ŷ
//!    (whenever ε covers the floor's cost, which it does for ε ≥ 2Kf) and keeps the class by at
//!    least m'. The defences without the class guarantee (`mad`) drop the margin rows.
//! 3. **Candidates** (SPEC §11 "Solver"): for every `S ⊆ {1..K}` with `c ∈ S`, the target `y*_S`
//!    that puts the others at the floor and spreads the remaining mass evenly over S with c raised
//!    by m' (for `mad`, every non-empty S and no raise), moved into the box; the candidate is the
//!    point `y0 + α_S (y*_S − y0)` with `α_S = min(1, ε'/‖y*_S − y0‖₁)`. Each `y*_S` is in F's
//!    polytope and the cone of class-keeping vectors is convex, so every candidate is in F.
//!
//! **Degenerate rows.** When `M < K·f + m` (every output near zero) or `M > K(1−f)` (every output
//! near one) F is empty; [`FeasibleSet::new`] returns `None` and the defences serve ŷ unchanged.

use crate::sample::argmax;

/// Margins below this are treated as a tie at the top: no candidate moves (the class could not be
/// kept through f32 rounding).
pub const MIN_MARGIN: f64 = 1e-6;

/// The most classes a subset mask (`u64`) can index: the vertex defences refuse larger models
/// when they are built.
pub const MAX_CLASSES: usize = 64;

/// Tolerance of the constraint checks in f64.
const TOL: f64 = 1e-12;

/// The floor map `Φ_f` (module doc, step 1): `Some(y0)`, or `None` when the mass cannot be kept
/// inside `[f, 1−f]^K`.
pub fn floor_map(y: &[f64], f: f64) -> Option<Vec<f64>> {
    floor_map_to(y, f, y.iter().sum())
}

/// [`floor_map`] to a given total `mass` instead of `Σy` (the same strictly increasing squeeze,
/// then the one scaling that reaches `mass`).
pub fn floor_map_to(y: &[f64], f: f64, mass: f64) -> Option<Vec<f64>> {
    let k = y.len() as f64;
    let m = mass;
    if !(m >= k * f && m <= k * (1.0 - f)) {
        return None;
    }
    let squeeze = |v: f64| {
        if v < 2.0 * f {
            f + 0.5 * v.max(0.0)
        } else if v > 1.0 - 2.0 * f {
            1.0 - 2.0 * f + 0.5 * (v.min(1.0) - (1.0 - 2.0 * f))
        } else {
            v
        }
    };
    let z: Vec<f64> = y.iter().map(|&v| squeeze(v)).collect();
    let zs: f64 = z.iter().sum();
    let y0: Vec<f64> = if zs > m {
        let lambda = (m - k * f) / (zs - k * f);
        z.iter().map(|&v| f + lambda * (v - f)).collect()
    } else if zs < m {
        let lambda = (k * (1.0 - f) - m) / (k * (1.0 - f) - zs);
        z.iter()
            .map(|&v| (1.0 - f) - lambda * ((1.0 - f) - v))
            .collect()
    } else {
        z
    };
    Some(y0)
}

/// The feasible set of one query (module doc, step 2).
#[derive(Clone, Debug)]
pub struct FeasibleSet {
    /// The served row ŷ (f64).
    pub served: Vec<f64>,
    /// The floored base point `y0`.
    pub y0: Vec<f64>,
    /// The class c = argmax ŷ.
    pub class: usize,
    /// The served mass `M = Σŷ`.
    pub mass: f64,
    /// The floor f.
    pub floor: f64,
    /// The margin m' the class keeps (0 when the set has no margin rows).
    pub margin: f64,
    /// The budget ε' of moves from `y0`.
    pub budget: f64,
    /// Whether the margin rows are part of the set (all class-keeping defences).
    pub keeps_class: bool,
}

impl FeasibleSet {
    /// The set for served row `y`, budget `eps`, margin setting `margin` and floor `floor`;
    /// `keeps_class = false` drops the margin rows. `None` when F is empty (degenerate rows).
    pub fn new(y: &[f32], eps: f64, margin: f64, floor: f64, keeps_class: bool) -> Option<Self> {
        let served: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        let k = served.len();
        let y0 = floor_map(&served, floor)?;
        let class = argmax(y);
        let mass: f64 = served.iter().sum();
        let gap = (0..k)
            .filter(|&j| j != class)
            .map(|j| y0[class] - y0[j])
            .fold(f64::INFINITY, f64::min);
        let margin = if keeps_class { margin.min(gap) } else { 0.0 };
        if keeps_class && mass < k as f64 * floor + margin {
            return None;
        }
        let cost: f64 = served.iter().zip(&y0).map(|(a, b)| (a - b).abs()).sum();
        Some(FeasibleSet {
            served,
            y0,
            class,
            mass,
            floor,
            margin,
            budget: (eps - cost).max(0.0),
            keeps_class,
        })
    }

    /// Number of classes K.
    pub fn len(&self) -> usize {
        self.y0.len()
    }

    /// Whether the set is over no class (never: at least one).
    pub fn is_empty(&self) -> bool {
        self.y0.is_empty()
    }

    /// Whether moves are allowed at all: a positive budget and, for class-keeping sets, a margin
    /// of at least [`MIN_MARGIN`] (a tie at the top is served as `y0`).
    pub fn can_move(&self) -> bool {
        self.budget > 0.0 && (!self.keeps_class || self.margin >= MIN_MARGIN)
    }

    /// The target `y*_S` of a subset (a bit mask over the classes; for class-keeping sets it must
    /// contain c), or `None` when it cannot be placed inside the box.
    pub fn target(&self, mask: u64) -> Option<Vec<f64>> {
        let mut t = vec![0.0; self.len()];
        self.target_into(mask, &mut t).then_some(t)
    }

    /// [`FeasibleSet::target`] written into `t` (length K); false when there is none.
    pub fn target_into(&self, mask: u64, t: &mut [f64]) -> bool {
        let k = self.len();
        let f = self.floor;
        let s = mask.count_ones() as usize;
        if s == 0 || (self.keeps_class && mask & (1 << self.class) == 0) {
            return false;
        }
        let raise = if self.keeps_class { self.margin } else { 0.0 };
        let v = (self.mass - (k - s) as f64 * f - raise) / s as f64;
        for (i, x) in t.iter_mut().enumerate() {
            *x = if mask & (1 << i) != 0 { v } else { f };
        }
        if self.keeps_class {
            t[self.class] += raise;
        }
        // Move into the box: a value above 1 − f passes its excess evenly to the others of S (or,
        // when S has no room, to the classes outside S).
        let top = 1.0 - f;
        let excess: f64 = t.iter().map(|&x| (x - top).max(0.0)).sum();
        if excess > 0.0 {
            t.iter_mut().for_each(|x| *x = x.min(top));
            let room = |i: usize, t: &[f64]| t[i] < top - TOL;
            let in_s = (0..k)
                .filter(|&i| room(i, t) && mask & (1 << i) != 0)
                .count();
            let (takers, only_s) = if in_s > 0 {
                (in_s, true)
            } else {
                ((0..k).filter(|&i| room(i, t)).count(), false)
            };
            if takers == 0 {
                return false;
            }
            let share = excess / takers as f64;
            for i in 0..k {
                if room(i, t) && (!only_s || mask & (1 << i) != 0) {
                    t[i] += share;
                }
            }
        }
        self.contains_polytope(t)
    }

    /// Whether `y` satisfies the box, sum and margin rows (not the budget).
    pub fn contains_polytope(&self, y: &[f64]) -> bool {
        let (f, c) = (self.floor, self.class);
        let sum: f64 = y.iter().sum();
        y.len() == self.len()
            && y.iter().all(|&v| v >= f - TOL && v <= 1.0 - f + TOL)
            && (sum - self.mass).abs() <= 1e-9 * self.mass.max(1.0)
            && (!self.keeps_class
                || (0..y.len()).all(|j| j == c || y[c] - y[j] >= self.margin - TOL))
    }

    /// `‖y − y0‖₁`.
    pub fn l1_from_base(&self, y: &[f64]) -> f64 {
        y.iter().zip(&self.y0).map(|(a, b)| (a - b).abs()).sum()
    }

    /// The candidate point on the segment from `y0` towards `target`: `y0 + α(target − y0)` with
    /// the largest `α ≤ 1` the budget allows.
    pub fn step_towards(&self, target: &[f64]) -> Vec<f64> {
        let mut y = target.to_vec();
        self.step_towards_in_place(&mut y);
        y
    }

    /// [`FeasibleSet::step_towards`] in place: `y` holds the target on entry, the point on exit.
    pub fn step_towards_in_place(&self, y: &mut [f64]) {
        let d = self.l1_from_base(y);
        let alpha = if d > 0.0 {
            (self.budget / d).min(1.0)
        } else {
            0.0
        };
        for (v, a) in y.iter_mut().zip(&self.y0) {
            *v = a + alpha * (*v - a);
        }
    }

    /// Call `f` with every subset the vertex solver considers of at most `size` classes (every
    /// S ∋ c for class-keeping sets, every non-empty S otherwise), as bit masks, smaller subsets
    /// first; enumerates the subsets themselves, not the 2^K masks.
    pub fn for_each_subset(&self, size: usize, mut f: impl FnMut(u64)) {
        let k = self.len();
        let (base, free): (u64, Vec<usize>) = if self.keeps_class {
            let c = self.class;
            (1 << c, (0..k).filter(|&j| j != c).collect())
        } else {
            (0, (0..k).collect())
        };
        let extra = if self.keeps_class {
            size.saturating_sub(1)
        } else {
            size
        }
        .min(free.len());
        if base != 0 {
            f(base);
        }
        // Subsets of `free` by size, each size in lexicographic order of its indices.
        let mut idx: Vec<usize> = Vec::with_capacity(extra);
        for r in 1..=extra {
            idx.clear();
            idx.extend(0..r);
            loop {
                f(idx.iter().fold(base, |m, &i| m | 1 << free[i]));
                // Next combination of r out of free.len().
                let n = free.len();
                let Some(p) = (0..r).rev().find(|&p| idx[p] < n - r + p) else {
                    break;
                };
                idx[p] += 1;
                for q in p + 1..r {
                    idx[q] = idx[q - 1] + 1;
                }
            }
        }
    }

    /// Every candidate answer of the vertex solver with its subset (module doc, step 3).
    pub fn candidates(&self) -> Vec<(u64, Vec<f64>)> {
        self.candidates_up_to(usize::MAX)
    }

    /// The candidates of the subsets of at most `size` classes.
    pub fn candidates_up_to(&self, size: usize) -> Vec<(u64, Vec<f64>)> {
        let mut out = Vec::new();
        self.for_each_candidate(size, |m, y| out.push((m, y.to_vec())));
        out
    }

    /// Call `f` with every candidate of the subsets of at most `size` classes and its subset; the
    /// point lives in one reused buffer.
    pub fn for_each_candidate(&self, size: usize, mut f: impl FnMut(u64, &[f64])) {
        if !self.can_move() {
            return;
        }
        let mut y = vec![0.0; self.len()];
        self.for_each_subset(size, |m| {
            if self.target_into(m, &mut y) {
                self.step_towards_in_place(&mut y);
                f(m, &y);
            }
        });
    }

    /// The pair transfers: for every ordered pair (i, j), i ≠ j, the point `y0 + t(e_i − e_j)` with
    /// the largest t the budget (`t ≤ ε'/2`), the box and the margin rows allow — the vertices of
    /// the budget ball that an objective reaches by moving mass between two classes only (the
    /// segment candidates of [`FeasibleSet::candidates`] move mass between many).
    pub fn transfers(&self) -> Vec<Vec<f64>> {
        let mut out = Vec::new();
        self.for_each_transfer(|y| out.push(y.to_vec()));
        out
    }

    /// Call `f` with every pair transfer ([`FeasibleSet::transfers`]); the point lives in one
    /// reused buffer.
    pub fn for_each_transfer(&self, mut f: impl FnMut(&[f64])) {
        if !self.can_move() {
            return;
        }
        let (k, fl, c, m) = (self.len(), self.floor, self.class, self.margin);
        let y = &self.y0;
        let mut p = y.clone();
        for i in 0..k {
            for j in 0..k {
                if i == j {
                    continue;
                }
                let mut t = (self.budget / 2.0).min(1.0 - fl - y[i]).min(y[j] - fl);
                if self.keeps_class {
                    if j == c {
                        // c falls while i rises: y_c − t − (y_i + t) ≥ m', and every other class
                        // stays m' below the lowered c.
                        t = t.min(0.5 * (y[c] - y[i] - m));
                        let others = (0..k)
                            .filter(|&l| l != c && l != i)
                            .map(|l| y[c] - y[l] - m)
                            .fold(f64::INFINITY, f64::min);
                        t = t.min(others);
                    } else if i != c {
                        t = t.min(y[c] - y[i] - m);
                    }
                }
                if t > 0.0 {
                    p[i] += t;
                    p[j] -= t;
                    f(&p);
                    p[i] = y[i];
                    p[j] = y[j];
                }
            }
        }
    }

    /// Round an f64 answer to f32 and check the guarantees again (box in f32, argmax, budget up to
    /// rounding); returns `None` when rounding broke one.
    pub fn finalize(&self, y: &[f64]) -> Option<Vec<f32>> {
        let out: Vec<f32> = y.iter().map(|&v| v as f32).collect();
        let (lo, hi) = (self.floor as f32, (1.0 - self.floor) as f32);
        let in_box = out.iter().all(|v| v.is_finite() && *v >= lo && *v <= hi);
        let class_ok = !self.keeps_class || argmax(&out) == self.class;
        (in_box && class_ok).then_some(out)
    }

    /// The f32 answer for `y`, falling back to `y0` and then to ŷ itself when f32 rounding
    /// breaks a guarantee (never observed; kept so that no answer can break one).
    pub fn answer(&self, y: &[f64]) -> Vec<f32> {
        self.finalize(y)
            .or_else(|| self.finalize(&self.y0))
            .unwrap_or_else(|| self.served.iter().map(|&v| v as f32).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_map_orders_sums_and_boxes() {
        let f = 1e-4;
        for y in [
            vec![1.0, 0.0, 0.0, 0.0],
            vec![0.99995, 0.99994, 3e-5, 0.0],
            vec![0.6, 0.2, 0.2, 0.0],
            vec![0.25; 4],
        ] {
            let y0 = floor_map(&y, f).unwrap();
            let (s, s0): (f64, f64) = (y.iter().sum(), y0.iter().sum());
            assert!((s - s0).abs() < 1e-12, "{y:?} → {y0:?}");
            assert!(y0.iter().all(|&v| v >= f - 1e-15 && v <= 1.0 - f + 1e-15));
            for i in 0..4 {
                for j in 0..4 {
                    if y[i] < y[j] {
                        assert!(y0[i] < y0[j], "{y:?} → {y0:?}");
                    }
                    if y[i] == y[j] {
                        assert_eq!(y0[i], y0[j]);
                    }
                }
            }
            let cost: f64 = y.iter().zip(&y0).map(|(a, b)| (a - b).abs()).sum();
            assert!(cost <= 2.0 * 4.0 * f + 1e-15, "cost {cost}");
        }
        // Already inside [2f, 1 − 2f]: untouched.
        assert_eq!(floor_map(&[0.3, 0.5], f).unwrap(), vec![0.3, 0.5]);
        // Mass below K·f or above K(1 − f): no feasible point.
        assert!(floor_map(&[0.0, 0.0, 1e-5], f).is_none());
        assert!(floor_map(&[1.0, 1.0], f).is_none());
    }

    #[test]
    fn targets_are_vertices_of_the_polytope() {
        // ŷ = (0.7, 0.2, 0.1), m = 0.02, f = 1e-4. S = {0, 1}: v = (1 − f − 0.02)/2,
        // y* = (v + 0.02, v, f).
        let set = FeasibleSet::new(&[0.7, 0.2, 0.1], 1.0, 0.02, 1e-4, true).unwrap();
        assert_eq!(set.class, 0);
        let t = set.target(0b011).unwrap();
        let v = (set.mass - 1e-4 - 0.02) / 2.0;
        assert!((t[0] - (v + 0.02)).abs() < 1e-12 && (t[1] - v).abs() < 1e-12);
        assert!((t[2] - 1e-4).abs() < 1e-15);
        assert!(set.target(0b010).is_none(), "S must contain the class");
        // Budget binds: ‖y* − y0‖₁ = 0.6998 > 0.3 → α = 0.3/0.6998.
        let small = FeasibleSet::new(&[0.7, 0.2, 0.1], 0.3, 0.02, 1e-4, true).unwrap();
        let p = small.step_towards(&t);
        assert!((small.l1_from_base(&p) - 0.3).abs() < 1e-12);
        assert!(small.contains_polytope(&p));
        // 2^(K−1) = 4 candidates, all in the set.
        let cands = small.candidates();
        assert_eq!(cands.len(), 4);
        for (_, y) in &cands {
            assert!(small.contains_polytope(y) && small.l1_from_base(y) <= 0.3 + 1e-12);
        }
    }

    #[test]
    fn ties_and_empty_sets_do_not_move() {
        let tie = FeasibleSet::new(&[0.4, 0.4, 0.2], 1.0, 0.02, 1e-4, true).unwrap();
        assert!(!tie.can_move() && tie.candidates().is_empty());
        assert!(FeasibleSet::new(&[1e-6, 2e-6], 1.0, 0.02, 1e-4, true).is_none());
    }
}
