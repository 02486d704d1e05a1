//! The exact maximum of a linear objective `wᵀỹ` over the feasible set F of SPEC §11 (the LP of
//! `grad2-argmax` and `random-fixed`, and each step of the vertex solver's successive linear
//! programme; see [`super::feasible`] for F).
//!
//! **Algorithm.** Write `d = ỹ − y0` and fix the final value t of the class c. For the other
//! classes the problem is then separable but for one sum and one budget row:
//! maximise `Σ_j w_j d_j` over `d_j ∈ [f − y0_j, min(1−f, t−m') − y0_j]`, `Σ_j d_j = y0_c − t`,
//! `Σ_j |d_j| ≤ ε' − |t − y0_c|`. Start every `d_j` at the point of its interval nearest 0 (the
//! moves the cap t − m' forces, at their cost); every further unit moved costs one unit of budget
//! whichever way it goes, so the best moves are greedy: the net change the sum requires goes to
//! the classes with the largest w (upwards) or the smallest w (downwards), and then pairs of moves
//! — one unit up on the best remaining class, one unit down on the worst — are added while the
//! pair gains (`w_up − w_down > 0`) and budget and capacity last. That solves the inner problem
//! exactly. Its optimal value `V(t)`, plus `w_c t`, is concave in t (the maximum over d of a linear
//! function over a convex set in (t, d) jointly), so its maximum over the feasible interval of t —
//! computed in closed form — is found by cutting planes (exact at a kink of the piecewise-linear
//! `V`, within 1e-13 otherwise).
//!
//! Without the margin rows (the `mad` family) there is no t: the greedy runs over all classes.
//!
//! The search allocates nothing per step (scratch buffers are reused); one LP at K = 10 takes
//! about a dozen inner solves, ~2 µs.

use super::feasible::FeasibleSet;

/// Most cutting-plane steps of [`maximise_concave`] (each removes at least one linear piece; a
/// bisection step is taken when a cut makes no progress).
const CUT_STEPS: usize = 64;

/// The inner problem over the classes `idx` (every class but c, or all of them).
struct Inner<'a> {
    w: &'a [f64],
    y0: &'a [f64],
    idx: Vec<usize>,
    /// `idx` sorted by w descending (the order of the upward moves).
    by_w_desc: Vec<usize>,
    floor: f64,
    top: f64,
}

/// Scratch of [`Inner::solve`], indexed like y0.
struct Scratch {
    d: Vec<f64>,
    up: Vec<f64>,
    down: Vec<f64>,
}

impl Scratch {
    fn new(k: usize) -> Self {
        Scratch {
            d: vec![0.0; k],
            up: vec![0.0; k],
            down: vec![0.0; k],
        }
    }
}

impl<'a> Inner<'a> {
    fn new(w: &'a [f64], y0: &'a [f64], idx: Vec<usize>, floor: f64) -> Self {
        let mut by_w_desc = idx.clone();
        by_w_desc.sort_by(|&a, &b| w[b].total_cmp(&w[a]).then(a.cmp(&b)));
        Inner {
            w,
            y0,
            idx,
            by_w_desc,
            floor,
            top: 1.0 - floor,
        }
    }

    /// Maximise `Σ w_j d_j` with `d_j ∈ [floor − y0_j, cap − y0_j]`, `Σ d_j = net`,
    /// `Σ |d_j| ≤ budget`; leaves the optimal d in `s.d` (indexed like `y0`) and returns its
    /// value, or `None` when infeasible.
    fn solve(&self, cap: f64, net: f64, budget: f64, s: &mut Scratch) -> Option<f64> {
        let (d, up, down) = (&mut s.d, &mut s.up, &mut s.down);
        let mut budget = budget;
        let mut net = net;
        for &j in &self.idx {
            let hi = cap.min(self.top) - self.y0[j];
            let lo = self.floor - self.y0[j];
            if hi < lo - 1e-15 {
                return None;
            }
            let start = hi.min(0.0);
            d[j] = start;
            budget += start; // start ≤ 0: its cost |start| is spent
            net -= start;
            up[j] = (hi - start).max(0.0);
            down[j] = (start - lo).max(0.0);
        }
        if budget < -1e-15 {
            return None;
        }
        let order = &self.by_w_desc;
        let mut ui = 0; // next upward class (w descending)
        let mut di = order.len(); // next downward class (w ascending, from the end)
                                  // The net change the sum requires, greedily, each unit at one unit of budget.
        if net > 0.0 {
            if net > budget + 1e-15 {
                return None;
            }
            budget -= net;
            while net > 0.0 && ui < order.len() {
                let j = order[ui];
                let a = up[j].min(net);
                d[j] += a;
                up[j] -= a;
                net -= a;
                if up[j] <= 0.0 {
                    ui += 1;
                }
            }
            if net > 1e-15 {
                return None;
            }
        } else if net < 0.0 {
            let mut need = -net;
            if need > budget + 1e-15 {
                return None;
            }
            budget -= need;
            while need > 0.0 && di > 0 {
                let j = order[di - 1];
                let a = down[j].min(need);
                d[j] -= a;
                down[j] -= a;
                need -= a;
                if down[j] <= 0.0 {
                    di -= 1;
                }
            }
            if need > 1e-15 {
                return None;
            }
        }
        // Profitable pairs: one unit up on the best class, one down on the worst.
        loop {
            while ui < order.len() && up[order[ui]] <= 0.0 {
                ui += 1;
            }
            while di > 0 && down[order[di - 1]] <= 0.0 {
                di -= 1;
            }
            if ui >= order.len() || di == 0 || budget <= 0.0 {
                break;
            }
            let (a, b) = (order[ui], order[di - 1]);
            if self.w[a] - self.w[b] <= 0.0 {
                break;
            }
            let amount = up[a].min(down[b]).min(budget / 2.0);
            if amount <= 0.0 {
                break;
            }
            d[a] += amount;
            up[a] -= amount;
            d[b] -= amount;
            down[b] -= amount;
            budget -= 2.0 * amount;
        }
        Some(self.idx.iter().map(|&j| self.w[j] * d[j]).sum())
    }
}

/// The answer `ỹ ∈ F` maximising `wᵀỹ` (module doc). `y0` when nothing can move.
pub fn maximize_linear(set: &FeasibleSet, w: &[f64]) -> Vec<f64> {
    let k = set.len();
    if !set.can_move() {
        return set.y0.clone();
    }
    let y0 = &set.y0;
    let mut scratch = Scratch::new(k);
    if !set.keeps_class {
        let inner = Inner::new(w, y0, (0..k).collect(), set.floor);
        return match inner.solve(f64::INFINITY, 0.0, set.budget, &mut scratch) {
            Some(_) => y0.iter().zip(&scratch.d).map(|(a, b)| a + b).collect(),
            None => y0.clone(),
        };
    }
    let c = set.class;
    let m = set.margin;
    let inner = Inner::new(w, y0, (0..k).filter(|&j| j != c).collect(), set.floor);
    let score = |t: f64, s: &mut Scratch| -> f64 {
        let budget = set.budget - (t - y0[c]).abs();
        if budget < -1e-15 {
            return f64::NEG_INFINITY;
        }
        inner
            .solve(t - m, y0[c] - t, budget.max(0.0), s)
            .map_or(f64::NEG_INFINITY, |v| v + w[c] * (t - y0[c]))
    };
    let (lo, hi) = t_interval(set);
    let t = maximise_concave(lo, hi, y0[c], |t| score(t, &mut scratch));

    if score(t, &mut scratch) == f64::NEG_INFINITY {
        return y0.clone();
    }
    let mut y: Vec<f64> = y0.iter().zip(&scratch.d).map(|(a, b)| a + b).collect();
    y[c] = t;
    y
}

/// The maximiser of a concave, piecewise-linear `v` on `[lo, hi]` (`start` inside, feasible), by
/// cutting planes on a bracket. A secant over `[l, l + h]` (h = 1e-6 of the interval) that rises
/// puts the maximiser right of l, one that falls puts it left of `l + h`, so the bracket `[a, b]`
/// shrinks rigorously; outside its own interval a concave function lies below each secant, so
/// the point where the bracket's two secants meet is the next trial, and their value there bounds
/// the maximum: the search stops when the best value found reaches that bound (at a kink of a
/// piecewise-linear `v` this is exact). When the secants stop helping (a bracket of a few h, or
/// the step limit), golden-section search finishes the bracket.
fn maximise_concave(lo: f64, hi: f64, start: f64, mut v: impl FnMut(f64) -> f64) -> f64 {
    if hi - lo <= 1e-15 {
        return start;
    }
    let h = 1e-6 * (hi - lo);
    let mut best = (f64::NEG_INFINITY, start);
    // The secant through t: (left end, value there, slope), its interval inside [lo, hi].
    let mut secant = |t: f64, best: &mut (f64, f64)| -> (f64, f64, f64) {
        let l = if t + h <= hi { t } else { hi - h };
        let (vl, vr) = (v(l), v(l + h));
        for (x, vx) in [(l, vl), (l + h, vr)] {
            if vx > best.0 {
                *best = (vx, x);
            }
        }
        (l, vl, (vr - vl) / h)
    };
    let left = secant(lo, &mut best);
    if left.2 <= 0.0 {
        return best.1;
    }
    let right = secant(hi - h, &mut best);
    if right.2 >= 0.0 {
        return best.1;
    }
    let (mut a, mut b) = (left.0, right.0 + h);
    let (mut la, mut lb) = (left, right);
    for _ in 0..CUT_STEPS {
        // Where the two secant lines meet, and their value there.
        let t = (lb.1 - la.1 + la.2 * la.0 - lb.2 * lb.0) / (la.2 - lb.2);
        // The lines bound v outside the secants' own intervals; inside one (a kink within h of
        // an evaluated point) they miss at most h times the jump in slope.
        let bound = la.1 + la.2 * (t - la.0);
        if bound - best.0 <= 1e-13 * (1.0 + best.0.abs()) {
            return best.1;
        }
        if !(t > a + h && t < b - h) {
            break;
        }
        let s = secant(t, &mut best);
        if s.2 > 0.0 {
            (a, la) = (s.0, s);
        } else if s.2 < 0.0 {
            (b, lb) = (s.0 + h, s);
        } else {
            return best.1;
        }
    }
    // Golden-section search on what is left of the bracket.
    let g = 0.5 * (5f64.sqrt() - 1.0);
    let (mut x1, mut x2) = (b - g * (b - a), a + g * (b - a));
    let (mut f1, mut f2) = (v(x1), v(x2));
    while b - a > 1e-14 * (hi - lo).max(1.0) {
        if f1 < f2 {
            a = x1;
            (x1, f1) = (x2, f2);
            x2 = a + g * (b - a);
            f2 = v(x2);
        } else {
            b = x2;
            (x2, f2) = (x1, f1);
            x1 = b - g * (b - a);
            f1 = v(x1);
        }
    }
    for (x, vx) in [(x1, f1), (x2, f2)] {
        if vx > best.0 {
            best = (vx, x);
        }
    }
    best.1
}

/// The interval of final values t of the class for which the inner problem is feasible, in
/// closed form; contains `y0_c`.
///
/// * Upwards, t ≥ y0_c costs `2(t − y0_c)` (the same mass must leave the others, which can give
///   at most `Σ (y0_j − f)`), and t ≤ 1 − f.
/// * Downwards, lowering c to t forces every j above `t − m'` down to it: the cost is
///   `2(y0_c − t) + 2 Σ_j max(0, y0_j − t + m')`, convex and decreasing in t, solved for the budget
///   on its linear pieces; the others must also be able to take the mass, `M − t ≤ (K−1)(t − m')`
///   (when `t − m' ≤ 1 − f`), and t ≥ f + m'.
fn t_interval(set: &FeasibleSet) -> (f64, f64) {
    let (y0, c, m, f, b) = (&set.y0, set.class, set.margin, set.floor, set.budget);
    let k = set.len();
    let give: f64 = (0..k).filter(|&j| j != c).map(|j| y0[j] - f).sum();
    let hi = (y0[c] + b / 2.0).min(1.0 - f).min(y0[c] + give).max(y0[c]);
    // Breakpoints of the cost: t = y0_j + m', descending.
    let mut bp: Vec<f64> = (0..k)
        .filter(|&j| j != c)
        .map(|j| y0[j] + m)
        .filter(|&t| t < y0[c])
        .collect();
    bp.sort_by(|a, b| b.total_cmp(a));
    // Walk down from y0_c: on the piece below breakpoint i the slope of the cost is
    // −2(1 + i) (i classes forced), starting from the cost at the piece's top.
    let mut t_top = y0[c];
    let mut cost_top = 0.0;
    let mut lo = f64::NEG_INFINITY;
    for i in 0..=bp.len() {
        let slope = 2.0 * (1 + i) as f64;
        let t_bottom = bp.get(i).copied().unwrap_or(f64::NEG_INFINITY);
        let cost_bottom = cost_top + slope * (t_top - t_bottom);
        if cost_bottom >= b {
            lo = t_top - (b - cost_top) / slope;
            break;
        }
        t_top = t_bottom;
        cost_top = cost_bottom;
    }
    // Mass: M − t ≤ (K−1)(t − m') with t − m' ≤ 1 − f, i.e. t ≥ (M + (K−1)m')/K.
    let mass_lo = (set.mass + (k - 1) as f64 * m) / k as f64;
    let lo = lo.max(f + m).max(mass_lo).min(y0[c]);
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_mass_from_the_worst_to_the_best_class_within_the_budget() {
        // ŷ = (0.6, 0.3, 0.1), w favours class 2 over 1 over 0; margin 0.02, ε = 0.2, f small.
        // Moving a unit from class 0 to class 2 gains 2 and costs 2 units of budget: 0.1 moves,
        // and the cap t − m' = 0.48 does not bind. Exact: y = (0.5, 0.3, 0.2).
        let set = FeasibleSet::new(&[0.6, 0.3, 0.1], 0.2, 0.02, 1e-6, true).unwrap();
        let y = maximize_linear(&set, &[0.0, 1.0, 2.0]);
        let want = [0.5, 0.3, 0.2];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{y:?}");
        }
        // With budget 1: c falls until the margin binds against the raised classes.
        let set = FeasibleSet::new(&[0.6, 0.3, 0.1], 1.0, 0.02, 1e-6, true).unwrap();
        let y = maximize_linear(&set, &[0.0, 1.0, 2.0]);
        assert!(set.contains_polytope(&y) && set.l1_from_base(&y) <= 1.0 + 1e-9);
        assert!((y[0] - y[2] - 0.02).abs() < 1e-9, "margin binds: {y:?}");
    }

    #[test]
    fn the_interval_of_t_is_where_the_inner_problem_is_feasible() {
        // y0 = (0.5, 0.3, 0.2), m' = 0.02, budget 0.3: lowering c to t forces class 1 down once
        // t < 0.32; cost 2(0.5 − t) reaches 0.3 at t = 0.35 (before the breakpoint).
        let set = FeasibleSet::new(&[0.5, 0.3, 0.2], 0.3, 0.02, 1e-6, true).unwrap();
        let (lo, hi) = t_interval(&set);
        assert!((lo - 0.35).abs() < 1e-6, "{lo}");
        assert!((hi - 0.65).abs() < 1e-6, "{hi}");
        // Budget 0.5: past the breakpoint 0.32 (cost 0.36) the slope is 4: t = 0.32 − 0.14/4.
        let set = FeasibleSet::new(&[0.5, 0.3, 0.2], 0.5, 0.02, 1e-6, true).unwrap();
        let (lo, _) = t_interval(&set);
        // The mass bound (M + 2m')/3 = 0.3467 binds first.
        assert!((lo - (1.0 + 0.04) / 3.0).abs() < 1e-6, "{lo}");
    }
}
