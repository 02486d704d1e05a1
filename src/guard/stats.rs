//! The statistics the guard needs, with no dependency beyond `std`: the standard normal
//! distribution, the exact binomial upper tail, and the Shapiro–Wilk normality test.
//!
//! # Shapiro–Wilk (Royston 1995, algorithm AS R94)
//!
//! For a sample sorted as `x_(1) ≤ … ≤ x_(n)`, `W = (Σ_{i ≤ n/2} a_i (x_(n+1−i) − x_(i)))² /
//! Σ (x_i − x̄)²`, with Royston's approximation of the coefficients `a` from the normal scores
//! `m_i = Φ⁻¹((i − 3/8)/(n + 1/4))` (the two largest corrected by polynomials in `1/√n`) and of
//! the null distribution of `W`: `log(1 − W)` is normal with mean and log-sd polynomial in `n`
//! (for `n ≤ 11` after the transform `−log(γ − log(1 − W))`, `γ = −2.273 + 0.459 n`); for `n = 3`
//! the exact `p = (6/π)(asin √W − π/3)`. P. Royston, "Remark AS R94: A remark on algorithm AS 181:
//! the W-test for normality", *Applied Statistics* 44(4), 1995. Valid for `3 ≤ n ≤ 5000`. The
//! tests compare `W` and `p` with scipy's `shapiro`, which implements the same algorithm
//! (`scripts/shapiro_reference.py` prints the reference values).

use crate::error::{Error, Result};

/// `Φ(z)`, the standard normal distribution function (relative error below 1e-7 in both tails).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

/// `1 − Φ(z)`, computed without cancellation for large `z`.
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function (Chebyshev fit of Numerical Recipes §6.2, fractional error
/// below 1.2e-7 everywhere).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let ans = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        ans
    } else {
        2.0 - ans
    }
}

/// `Φ⁻¹(p)` for `0 < p < 1` (P. J. Acklam's rational approximation, relative error below
/// 1.2e-9); ±∞ at 0 and 1, NaN outside.
pub fn normal_quantile(p: f64) -> f64 {
    if !(0.0..=1.0).contains(&p) || p.is_nan() {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let lo = 0.024_25;
    if p < lo {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - lo {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -normal_quantile(1.0 - p)
    }
}

/// `ln Γ(x)` for `x > 0` (Lanczos, g = 7, nine terms; relative error near 1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// `P(X ≥ k)` for `X ~ Binomial(n, q)`: the exact sum of the terms, in log space (no
/// approximation; `n` up to millions is cheap).
pub fn binomial_sf(k: u64, n: u64, q: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    if k > n || q <= 0.0 {
        return 0.0;
    }
    if q >= 1.0 {
        return 1.0;
    }
    let (lq, lq1) = (q.ln(), (-q).ln_1p());
    let lnf = |j: u64| ln_gamma(j as f64 + 1.0);
    let ln_n = lnf(n);
    let terms: Vec<f64> = (k..=n)
        .map(|j| ln_n - lnf(j) - lnf(n - j) + j as f64 * lq + (n - j) as f64 * lq1)
        .collect();
    let m = terms.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = terms.iter().map(|t| (t - m).exp()).sum();
    (m + s.ln()).exp().min(1.0)
}

/// Result of [`shapiro_wilk`].
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct ShapiroWilk {
    /// The statistic `W` in (0, 1]; small values speak against normality.
    pub w: f64,
    /// Its p-value under normality.
    pub p: f64,
}

fn poly(c: &[f64], x: f64) -> f64 {
    c.iter().rev().fold(0.0, |acc, &ci| acc * x + ci)
}

/// The Shapiro–Wilk test of `x` (any order) for normality, Royston's AS R94 (module docs).
/// Fails for fewer than 3 or more than 5000 values, non-finite values, or a sample whose values
/// are all equal.
pub fn shapiro_wilk(x: &[f64]) -> Result<ShapiroWilk> {
    let n = x.len();
    if !(3..=5000).contains(&n) {
        return Err(Error::invalid(format!(
            "Shapiro–Wilk: {n} values (the approximation holds for 3 to 5000)"
        )));
    }
    if let Some(v) = x.iter().find(|v| !v.is_finite()) {
        return Err(Error::invalid(format!(
            "Shapiro–Wilk: value {v} is not finite"
        )));
    }
    let mut s = x.to_vec();
    s.sort_by(f64::total_cmp);
    if s[n - 1] - s[0] <= 0.0 {
        return Err(Error::invalid(
            "Shapiro–Wilk: all values are equal (no spread to test)",
        ));
    }
    let an = n as f64;
    let nn2 = n / 2;
    let mut a = vec![0.0; nn2];
    if n == 3 {
        a[0] = std::f64::consts::FRAC_1_SQRT_2;
    } else {
        let an25 = an + 0.25;
        let m: Vec<f64> = (1..=nn2)
            .map(|i| normal_quantile((i as f64 - 0.375) / an25))
            .collect();
        let summ2 = 2.0 * m.iter().map(|v| v * v).sum::<f64>();
        let ssumm2 = summ2.sqrt();
        let rsn = 1.0 / an.sqrt();
        const C1: [f64; 6] = [0.0, 0.221_157, -0.147_981, -2.071_19, 4.434_685, -2.706_056];
        const C2: [f64; 6] = [
            0.0, 0.042_981, -0.293_762, -1.752_461, 5.682_633, -3.582_633,
        ];
        let a1 = poly(&C1, rsn) - m[0] / ssumm2;
        let (i1, fac) = if n > 5 {
            let a2 = -m[1] / ssumm2 + poly(&C2, rsn);
            a[1] = a2;
            let fac = ((summ2 - 2.0 * m[0] * m[0] - 2.0 * m[1] * m[1])
                / (1.0 - 2.0 * a1 * a1 - 2.0 * a2 * a2))
                .sqrt();
            (2, fac)
        } else {
            (
                1,
                ((summ2 - 2.0 * m[0] * m[0]) / (1.0 - 2.0 * a1 * a1)).sqrt(),
            )
        };
        a[0] = a1;
        for i in i1..nn2 {
            a[i] = -m[i] / fac;
        }
    }
    let mean = s.iter().sum::<f64>() / an;
    let sst: f64 = s.iter().map(|v| (v - mean) * (v - mean)).sum();
    let num: f64 = (0..nn2).map(|i| a[i] * (s[n - 1 - i] - s[i])).sum();
    let w = (num * num / sst).min(1.0);
    let w1 = 1.0 - w;
    if n == 3 {
        let p = (6.0 / std::f64::consts::PI) * (w.sqrt().asin() - std::f64::consts::FRAC_PI_3);
        return Ok(ShapiroWilk { w, p: p.max(0.0) });
    }
    if w1 <= 0.0 {
        return Ok(ShapiroWilk { w, p: 1.0 });
    }
    let y = w1.ln();
    let (y, m, sd) = if n <= 11 {
        let gamma = -2.273 + 0.459 * an;
        if y >= gamma {
            return Ok(ShapiroWilk { w, p: 1e-99 });
        }
        (
            -(gamma - y).ln(),
            poly(&[0.544, -0.399_78, 0.025_054, -6.714e-4], an),
            poly(&[1.3822, -0.778_57, 0.062_767, -0.002_032_2], an).exp(),
        )
    } else {
        let xx = an.ln();
        (
            y,
            poly(&[-1.5861, -0.310_82, -0.083_751, 0.003_891_5], xx),
            poly(&[-0.4803, -0.082_676, 0.003_030_2], xx).exp(),
        )
    };
    Ok(ShapiroWilk {
        w,
        p: normal_sf((y - m) / sd),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_functions_match_known_values() {
        assert!((normal_cdf(1.959_963_985) - 0.975).abs() < 1e-7);
        assert!((normal_sf(3.0) - 1.349_898_031_630_094_6e-3).abs() < 1e-9);
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-8);
        assert!((normal_quantile(1e-6) + 4.753_424_308_822_899).abs() < 1e-7);
        assert!((ln_gamma(10.0) - 362_880f64.ln()).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
    }

    #[test]
    fn binomial_tail_matches_hand_sums() {
        // P(X ≥ 2), X ~ Bin(3, 1/2) = 4/8.
        assert!((binomial_sf(2, 3, 0.5) - 0.5).abs() < 1e-12);
        // P(X ≥ 1), X ~ Bin(10, 0.1) = 1 − 0.9^10.
        assert!((binomial_sf(1, 10, 0.1) - (1.0 - 0.9f64.powi(10))).abs() < 1e-12);
        // P(X ≥ 10), X ~ Bin(10, 1/9) = 9^-10.
        assert!((binomial_sf(10, 10, 1.0 / 9.0) / 9f64.powi(-10) - 1.0).abs() < 1e-9);
        assert_eq!(binomial_sf(0, 5, 0.3), 1.0);
        assert_eq!(binomial_sf(6, 5, 0.3), 0.0);
    }

    /// Reference values from `scripts/shapiro_reference.py` (scipy.stats.shapiro).
    #[test]
    fn shapiro_wilk_matches_scipy() {
        for (x, w, p) in super::reference::CASES {
            let r = shapiro_wilk(x).unwrap();
            assert!((r.w - w).abs() < 1e-5, "n={}: W {} vs {w}", x.len(), r.w);
            assert!(
                (r.p - p).abs() < 1e-4 + 1e-3 * p,
                "n={}: p {} vs {p}",
                x.len(),
                r.p
            );
        }
    }

    #[test]
    fn shapiro_wilk_refuses_what_it_cannot_test() {
        assert!(shapiro_wilk(&[1.0, 2.0]).is_err());
        assert!(shapiro_wilk(&[1.0, 1.0, 1.0, 1.0]).is_err());
        assert!(shapiro_wilk(&[1.0, f64::NAN, 2.0]).is_err());
    }
}

#[cfg(test)]
#[path = "stats_reference.rs"]
mod reference;
