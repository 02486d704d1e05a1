//! Comparisons between defences (SPEC §12): paired differences with t intervals, clustered by
//! victim when the question is about models, Holm's step-down correction over the comparisons
//! made, and curves read at equal distortion.
//!
//! * **Student t.** For integer degrees of freedom ν the CDF has a closed form (Abramowitz &
//!   Stegun 26.7.3–4): with `θ = atan(t/√ν)`, odd ν sums cosine powers times `sin θ` and adds
//!   `2θ/π`, even ν sums them times `sin θ` alone. Quantiles invert it by bisection to 1e-12.
//! * **Clustered estimate.** Differences `d_{v,s}` (victim v, attacker seed s) are averaged per
//!   victim; the estimate is the mean of the victims' means and its standard error their sample
//!   sd over `√V`, with `V − 1` degrees of freedom — the victims are the sampling units (seeds
//!   within a victim are not independent draws of "a model"). With one victim it reduces to the
//!   seeds' paired t (`n − 1` degrees of freedom).
//! * **Holm.** For m comparisons with p-values sorted ascending `p_(1) ≤ … ≤ p_(m)`, the adjusted
//!   value is `p̃_(i) = max_{k ≤ i} min(1, (m − k + 1) p_(k))`; a comparison is rejected at α when
//!   `p̃ ≤ α`. Each interval is drawn at the level its step used, `1 − α/(m − i + 1)` for the
//!   rejected steps and, from the first step that is not rejected on, that step's level for all the
//!   rest — so an interval excludes 0 exactly when Holm rejects.
//! * **Equal distortion.** A defence's sweep gives a curve of (realised L1, metric) points; it is
//!   read at a target L1 by linear interpolation between the two points around it, never
//!   extrapolated.

use serde::{Deserialize, Serialize};

/// `P(T ≤ t)` for Student's t with `df ≥ 1` degrees of freedom (module doc).
pub fn t_cdf(df: u32, t: f64) -> f64 {
    assert!(
        df >= 1,
        "t distribution needs at least one degree of freedom"
    );
    if t.is_nan() {
        return f64::NAN;
    }
    if t.is_infinite() {
        return if t > 0.0 { 1.0 } else { 0.0 };
    }
    let nu = df as f64;
    let theta = (t / nu.sqrt()).atan();
    let (s, c) = theta.sin_cos();
    let c2 = c * c;
    // A(t|ν) = P(|T| ≤ |t|) with the sign of t (A&S 26.7.3, 26.7.4).
    let a = if df % 2 == 1 {
        let mut sum = 0.0;
        if df > 1 {
            let mut term = c;
            sum = term;
            let mut k = 1;
            while 2 * k + 1 < df {
                term *= c2 * (2 * k) as f64 / (2 * k + 1) as f64;
                sum += term;
                k += 1;
            }
        }
        (2.0 / std::f64::consts::PI) * (theta + s * sum)
    } else {
        let mut term = 1.0;
        let mut sum = 1.0;
        let mut k = 1;
        while 2 * k < df {
            term *= c2 * (2 * k - 1) as f64 / (2 * k) as f64;
            sum += term;
            k += 1;
        }
        s * sum
    };
    0.5 + 0.5 * a
}

/// The p-quantile of Student's t with `df` degrees of freedom (`0 < p < 1`), by bisection.
pub fn t_quantile(df: u32, p: f64) -> f64 {
    assert!(p > 0.0 && p < 1.0, "quantile level {p} outside (0, 1)");
    if p == 0.5 {
        return 0.0;
    }
    if p < 0.5 {
        return -t_quantile(df, 1.0 - p);
    }
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while t_cdf(df, hi) < p {
        hi *= 2.0;
        if hi > 1e12 {
            return f64::INFINITY;
        }
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(df, mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-12 * hi.max(1.0) {
            break;
        }
    }
    0.5 * (lo + hi)
}

/// A mean difference with its standard error and degrees of freedom.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Differences that went in.
    pub n: usize,
    /// Sampling units (victims for a clustered estimate, else `n`).
    pub units: usize,
    /// The mean difference.
    pub mean: f64,
    /// Its standard error (NaN with one unit).
    pub se: f64,
    /// Degrees of freedom of the t reference (`units − 1`).
    pub df: u32,
}

impl Estimate {
    /// Two-sided p-value of "mean = 0" (NaN without a standard error; 0 or 1 when the
    /// differences are all equal, with se = 0).
    pub fn p_value(&self) -> f64 {
        if self.df == 0 || self.se.is_nan() {
            return f64::NAN;
        }
        if self.se == 0.0 {
            return if self.mean == 0.0 { 1.0 } else { 0.0 };
        }
        let t = (self.mean / self.se).abs();
        (2.0 * (1.0 - t_cdf(self.df, t))).min(1.0)
    }

    /// The two-sided interval at confidence `level` (e.g. 0.95).
    pub fn interval(&self, level: f64) -> (f64, f64) {
        if self.df == 0 || self.se.is_nan() {
            return (f64::NAN, f64::NAN);
        }
        let q = t_quantile(self.df, 0.5 + 0.5 * level);
        (self.mean - q * self.se, self.mean + q * self.se)
    }
}

/// The clustered estimate of the mean of `diffs` = (cluster, difference) (module doc).
pub fn clustered<C: PartialEq + Clone>(diffs: &[(C, f64)]) -> Estimate {
    let mut clusters: Vec<(C, Vec<f64>)> = Vec::new();
    for (c, d) in diffs {
        match clusters.iter_mut().find(|(k, _)| k == c) {
            Some((_, v)) => v.push(*d),
            None => clusters.push((c.clone(), vec![*d])),
        }
    }
    if clusters.len() == 1 {
        return paired(&clusters[0].1);
    }
    let means: Vec<f64> = clusters
        .iter()
        .map(|(_, v)| v.iter().sum::<f64>() / v.len() as f64)
        .collect();
    let mut e = paired(&means);
    e.n = diffs.len();
    e
}

/// The one-sample estimate of the mean of paired differences (`n − 1` degrees of freedom).
pub fn paired(diffs: &[f64]) -> Estimate {
    let n = diffs.len();
    let mean = diffs.iter().sum::<f64>() / n as f64;
    let se = if n > 1 {
        let var = diffs.iter().map(|d| (d - mean) * (d - mean)).sum::<f64>() / (n - 1) as f64;
        (var / n as f64).sqrt()
    } else {
        f64::NAN
    };
    Estimate {
        n,
        units: n,
        mean,
        se,
        df: n.saturating_sub(1) as u32,
    }
}

/// Holm's step-down result for one comparison.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct HolmStep {
    /// Holm-adjusted p-value.
    pub adjusted_p: f64,
    /// Whether the comparison is rejected at the family level α.
    pub rejected: bool,
    /// Confidence level of its interval (module doc).
    pub level: f64,
}

/// Holm's correction of `p` (in the caller's order) at family level `alpha`; NaN p-values are
/// never rejected and count as comparisons made.
pub fn holm(p: &[f64], alpha: f64) -> Vec<HolmStep> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (p[a], p[b]);
        x.is_nan().cmp(&y.is_nan()).then(x.total_cmp(&y))
    });
    let mut out = vec![
        HolmStep {
            adjusted_p: f64::NAN,
            rejected: false,
            level: 1.0 - alpha,
        };
        m
    ];
    let mut running = 0.0f64;
    let mut stopped_level: Option<f64> = None;
    for (i, &j) in order.iter().enumerate() {
        let factor = (m - i) as f64;
        let step_alpha = alpha / factor;
        if p[j].is_nan() {
            out[j] = HolmStep {
                adjusted_p: f64::NAN,
                rejected: false,
                level: stopped_level.unwrap_or(1.0 - step_alpha),
            };
            stopped_level.get_or_insert(1.0 - step_alpha);
            continue;
        }
        running = running.max((factor * p[j]).min(1.0));
        let rejected = stopped_level.is_none() && running <= alpha;
        if !rejected && stopped_level.is_none() {
            stopped_level = Some(1.0 - step_alpha);
        }
        out[j] = HolmStep {
            adjusted_p: running,
            rejected,
            level: stopped_level.unwrap_or(1.0 - step_alpha),
        };
    }
    out
}

/// The curve `points` (x, y) read at `x`: linear interpolation between the nearest points on
/// either side, `None` outside the points' range (or with no point). Points with equal x are
/// averaged first.
pub fn interpolate(points: &[(f64, f64)], x: f64) -> Option<f64> {
    let mut pts: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut merged: Vec<(f64, f64, usize)> = Vec::new();
    for (a, b) in pts {
        match merged.last_mut() {
            Some(last) if last.0 == a => {
                last.1 += b;
                last.2 += 1;
            }
            _ => merged.push((a, b, 1)),
        }
    }
    let pts: Vec<(f64, f64)> = merged.iter().map(|&(a, b, n)| (a, b / n as f64)).collect();
    let (first, last) = (pts.first()?, pts.last()?);
    if !(x >= first.0 && x <= last.0) {
        return None;
    }
    let i = pts.partition_point(|p| p.0 < x);
    if pts[i].0 == x {
        return Some(pts[i].1);
    }
    let (a, b) = (pts[i - 1], pts[i]);
    Some(a.1 + (b.1 - a.1) * (x - a.0) / (b.0 - a.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_distribution_matches_tables() {
        // Two-sided 95% critical values (any statistics table).
        for (df, q) in [
            (1, 12.706_204_736),
            (2, 4.302_652_730),
            (3, 3.182_446_305),
            (4, 2.776_445_105),
            (9, 2.262_157_163),
            (14, 2.144_786_688),
            (30, 2.042_272_456),
        ] {
            let got = t_quantile(df, 0.975);
            assert!((got - q).abs() < 1e-8, "df {df}: {got} vs {q}");
            assert!((t_cdf(df, q) - 0.975).abs() < 1e-9);
        }
        // ν = 1 is Cauchy: F(t) = ½ + atan(t)/π; ν = 2: F(t) = ½ + t / (2√(2 + t²)).
        for t in [-3.0, -0.5, 0.0, 0.7, 5.0] {
            let cauchy = 0.5 + f64::atan(t) / std::f64::consts::PI;
            assert!((t_cdf(1, t) - cauchy).abs() < 1e-15);
            let two = 0.5 + t / (2.0 * (2.0 + t * t).sqrt());
            assert!((t_cdf(2, t) - two).abs() < 1e-15);
        }
        assert_eq!(t_quantile(5, 0.5), 0.0);
        assert!((t_quantile(5, 0.025) + t_quantile(5, 0.975)).abs() < 1e-12);
    }

    #[test]
    fn paired_and_clustered_estimates_by_hand() {
        // d = 1, 2, 3, 6: mean 3, sd √(14/3), se √(14/3)/2.
        let e = paired(&[1.0, 2.0, 3.0, 6.0]);
        assert_eq!((e.n, e.units, e.df), (4, 4, 3));
        assert_eq!(e.mean, 3.0);
        assert!((e.se - (14.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-15);
        // t = 2.7775 with 3 df: p = 0.069136869 (scipy.stats.ttest_1samp).
        assert!(
            (e.p_value() - 0.069_136_869).abs() < 1e-9,
            "{}",
            e.p_value()
        );
        let (lo, hi) = e.interval(0.95);
        assert!((hi - lo - 2.0 * 3.182_446_305 * e.se).abs() < 1e-9);
        // Clustered: victims a (1, 3) → 2, b (2, 6) → 4, c (0) → 0: mean 2, se = 2/√3.
        let c = clustered(&[("a", 1.0), ("b", 2.0), ("a", 3.0), ("b", 6.0), ("c", 0.0)]);
        assert_eq!((c.n, c.units, c.df), (5, 3, 2));
        assert_eq!(c.mean, 2.0);
        assert!((c.se - 2.0 / 3f64.sqrt()).abs() < 1e-15);
        // One cluster: the seeds' paired t.
        assert_eq!(clustered(&[(0, 1.0), (0, 3.0)]), paired(&[1.0, 3.0]));
        assert!(paired(&[1.0]).p_value().is_nan());
    }

    #[test]
    fn holm_by_hand() {
        // p = 0.01, 0.04, 0.03, 0.005 (m = 4) sorted: 0.005·4 = 0.02, 0.01·3 = 0.03,
        // 0.03·2 = 0.06, 0.04·1 → max 0.06.
        let h = holm(&[0.01, 0.04, 0.03, 0.005], 0.05);
        let adj: Vec<f64> = h.iter().map(|s| s.adjusted_p).collect();
        for (a, b) in adj.iter().zip([0.03, 0.06, 0.06, 0.02]) {
            assert!((a - b).abs() < 1e-15, "{adj:?}");
        }
        let rej: Vec<bool> = h.iter().map(|s| s.rejected).collect();
        assert_eq!(rej, [true, false, false, true]);
        // Levels: steps 1 and 2 rejected at α/4 and α/3; from step 3 on, α/2.
        let lv: Vec<f64> = h.iter().map(|s| s.level).collect();
        for (a, b) in lv
            .iter()
            .zip([1.0 - 0.05 / 3.0, 0.975, 0.975, 1.0 - 0.05 / 4.0])
        {
            assert!((a - b).abs() < 1e-15, "{lv:?}");
        }
        // A NaN counts as a comparison and is never rejected.
        let h = holm(&[0.001, f64::NAN], 0.05);
        assert!(h[0].rejected && !h[1].rejected);
        assert!((h[0].adjusted_p - 0.002).abs() < 1e-15);
    }

    #[test]
    fn intervals_agree_with_holm() {
        // The interval at each step's level excludes 0 exactly when Holm rejects.
        let ests: Vec<Estimate> = [(0.5, 0.2), (0.3, 0.2), (-0.9, 0.3), (0.05, 0.1)]
            .iter()
            .map(|&(mean, se)| Estimate {
                n: 10,
                units: 10,
                mean,
                se,
                df: 9,
            })
            .collect();
        let h = holm(
            &ests.iter().map(Estimate::p_value).collect::<Vec<_>>(),
            0.05,
        );
        for (e, s) in ests.iter().zip(&h) {
            let (lo, hi) = e.interval(s.level);
            assert_eq!(lo > 0.0 || hi < 0.0, s.rejected, "{e:?} {s:?}");
        }
    }

    #[test]
    fn interpolation_on_known_curves() {
        let line = [(0.0, 1.0), (1.0, 3.0), (0.5, 2.0)];
        assert_eq!(interpolate(&line, 0.25), Some(1.5));
        assert_eq!(interpolate(&line, 1.0), Some(3.0));
        assert_eq!(interpolate(&line, 0.0), Some(1.0));
        assert_eq!(interpolate(&line, 1.01), None);
        assert_eq!(interpolate(&line, -0.1), None);
        assert_eq!(interpolate(&[], 0.3), None);
        // Equal x averaged; NaN points ignored.
        let c = [
            (0.0, 0.0),
            (0.6, 1.0),
            (0.6, 3.0),
            (1.0, f64::NAN),
            (1.2, 4.0),
        ];
        assert_eq!(interpolate(&c, 0.6), Some(2.0));
        assert_eq!(interpolate(&c, 0.3), Some(1.0));
        assert_eq!(interpolate(&c, 0.9), Some(3.0));
        // A piecewise-linear curve is reproduced exactly at any point.
        let f = |x: f64| if x < 0.4 { 2.0 * x } else { 0.8 - (x - 0.4) };
        let pts: Vec<(f64, f64)> = [0.0, 0.4, 1.0].iter().map(|&x| (x, f(x))).collect();
        for x in [0.1, 0.3, 0.4, 0.6, 0.95] {
            assert!((interpolate(&pts, x).unwrap() - f(x)).abs() < 1e-15);
        }
    }
}
