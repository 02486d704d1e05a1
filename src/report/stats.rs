//! Summary statistics of the reports, written once: means with their sample standard deviation,
//! medians and quartiles of the finite values of a sample.

use serde::{Deserialize, Serialize};

/// Mean and sample standard deviation (n − 1 in the denominator; 0 for a single value, NaN for
/// none).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, sd)
}

/// Quartiles of the finite values of a sample (non-finite ones, e.g. `cond = ∞` of a singular
/// `C_kk`, are counted apart).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Quartiles {
    /// Finite values summarised.
    pub n: usize,
    /// Values left out because they are infinite or NaN.
    pub non_finite: usize,
    /// First quartile.
    pub q1: Option<f64>,
    /// Median.
    pub median: Option<f64>,
    /// Third quartile.
    pub q3: Option<f64>,
    /// Largest finite value.
    pub max: Option<f64>,
}

/// The p-quantile (0 ≤ p ≤ 1) of sorted finite values by linear interpolation between order
/// statistics (`None` when empty).
fn quantile_sorted(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let h = p * (v.len() - 1) as f64;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    Some(v[lo] + (h - lo as f64) * (v[hi] - v[lo]))
}

fn sorted_finite(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// Quartiles by linear interpolation between order statistics.
pub fn quartiles(values: &[f64]) -> Quartiles {
    let v = sorted_finite(values);
    Quartiles {
        n: v.len(),
        non_finite: values.len() - v.len(),
        q1: quantile_sorted(&v, 0.25),
        median: quantile_sorted(&v, 0.5),
        q3: quantile_sorted(&v, 0.75),
        max: v.last().copied(),
    }
}

/// Median of the finite values (the mean of the two middle ones for an even count); `None` when
/// there is no finite value.
pub fn median(values: &[f64]) -> Option<f64> {
    quantile_sorted(&sorted_finite(values), 0.5)
}

/// Median of values in which +∞ stands for "larger than every finite value" (a censored
/// measurement): the middle of all values sorted, the mean of the two middle ones for an even
/// count, +∞ when a middle one is +∞; `None` when there is no value or any is NaN.
pub fn median_censored(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|x| x.is_nan()) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        let (a, b) = (v[n / 2 - 1], v[n / 2]);
        if b.is_infinite() {
            f64::INFINITY
        } else {
            0.5 * (a + b)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn censored_median_counts_infinity_as_largest() {
        let inf = f64::INFINITY;
        assert_eq!(median_censored(&[3.0, inf, 1.0]), Some(3.0));
        assert_eq!(median_censored(&[inf, inf, 1.0]), Some(inf));
        assert_eq!(median_censored(&[1.0, 2.0, inf, inf]), Some(inf));
        assert_eq!(median_censored(&[1.0, 2.0, 4.0, inf]), Some(3.0));
        assert_eq!(median_censored(&[]), None);
        assert_eq!(median_censored(&[1.0, f64::NAN]), None);
        // the finite-only median drops the censored values instead
        assert_eq!(median(&[1.0, 2.0, inf, inf]), Some(1.5));
    }

    #[test]
    fn hand_computed_summaries() {
        let (m, sd) = mean_sd(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, 2.5);
        assert!((sd - (5.0f64 / 3.0).sqrt()).abs() < 1e-15);
        assert_eq!(mean_sd(&[7.0]), (7.0, 0.0));
        assert_eq!(median(&[3.0, f64::NAN, 1.0, 2.0, 10.0]), Some(2.5));
        assert_eq!(median(&[f64::INFINITY]), None);
        let q = quartiles(&[5.0, 1.0, f64::INFINITY, 3.0, 2.0, f64::NAN, 4.0]);
        assert_eq!(
            (q.n, q.non_finite, q.q1, q.median, q.q3, q.max),
            (5, 2, Some(2.0), Some(3.0), Some(4.0), Some(5.0))
        );
        assert_eq!(quartiles(&[1.0, 2.0]).median, Some(1.5));
        assert_eq!(quartiles(&[]).median, None);
    }
}
