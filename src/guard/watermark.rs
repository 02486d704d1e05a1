//! The attribution watermark (`serve --watermark rate=R`) and its verification (`rgshield
//! verify`), after DAWN (S. Szyller, B. G. Atli, S. Marchal, N. Asokan, "DAWN: Dynamic
//! Adversarial Watermarking of Neural Networks", ACM Multimedia 2021).
//!
//! # Serving
//!
//! With the server's secret key `k` and `h_d(x) = HMAC-SHA256(k_w, d ‖ x)` (first 64 bits, over
//! the input's little-endian f32 bytes; `k_w = HMAC(k, "rgshield watermark")`, so the watermark's
//! choices are independent of the defences' query seeds), a query `x` whose served class is `c`
//! is *marked* when `h_select(x) / 2⁶⁴ < R`. Its answer then has the entries of `c` and of the
//! target class `t = (c + 1 + h_target(x) mod (K − 1)) mod K` swapped, so the served class is
//! `t ≠ c` and a soft answer keeps its values. Both choices are functions of `(k, x)`: a repeated
//! query gets the same answer, so the watermark cannot be averaged away, and without `k` nobody
//! can tell which queries are marked. The marked queries are logged in the state database.
//!
//! # Verification
//!
//! For the logged marked queries `x_i` with original classes `c_i` and targets `t_i`, a suspect
//! gives classes `s_i`. Let `m = #{i : s_i ≠ c_i}` (the suspect disagrees with the victim) and
//! `X = #{i : s_i = t_i}` (it agrees with the watermark).
//!
//! *Null hypothesis H₀: the suspect's classes do not depend on the watermark key* — it was not
//! trained on the marked answers (an innocent model, or a model trained on the victim's
//! unmarked answers only). Under H₀, given the suspect's classes, each `t_i` is uniform over the
//! `K − 1` classes other than `c_i` (`h_target` is a pseudo-random function of `(k, x_i)`,
//! independent of the suspect) and independent across the distinct `x_i`; so a disagreeing
//! suspect hits the target with probability exactly `1/(K − 1)` and
//! `X | m ~ Binomial(m, 1/(K − 1))`. The p-value is the exact upper tail
//! `P(Binomial(m, 1/(K−1)) ≥ X)`.
//!
//! This is the conservative null the issue asks for: an innocent model's chance agreement with
//! the target is the rate at which it leaves the victim's class (estimated from the suspect's own
//! disagreements, `m`), spread over the `K − 1` other classes. It does not assume the innocent
//! model's errors are uniform over classes — the key makes the target uniform instead. Because
//! the test conditions on `m`, a suspect that disagrees with the victim a lot (a poor model)
//! gets no advantage, and one that agrees everywhere (`m = 0`) gets p = 1. The binomial is
//! discrete, so the p-value is valid (`P(p ≤ α) ≤ α` under H₀) but conservative for small `m`.
//!
//! # Label-free test of a keyed soft bias
//!
//! A thief who trains on probabilities learns more than the classes: under the `random-fixed`
//! defence every answer of class `c` is pushed, within its L1 budget, along a keyed sum-zero
//! unit direction `u_c` (SPEC §11; `u = keyed_directions(K, k.derive("random-fixed"))`). A clone
//! distilled on those answers inherits the bias. [`soft_bias_test`] reads it from the suspect's
//! probability vectors `q_i` on any inputs, with no watermark log and no labels:
//! `S(u) = (1/n) Σ_i Σ_{j ≠ ĉ_i} u_{ĉ_i, j} q_{i, j}`, `ĉ_i = argmax q_i` (the own class's
//! component is left out: it is large for every model and would drown the bias in the null's
//! spread). Under H₀ (the suspect does not depend on
//! the key) the keyed direction set is exchangeable with direction sets drawn from other seeds
//! (derived from the key as well, `k.derive("random-fixed null j")`, so all `J + 1` sets are
//! i.i.d. pseudo-random draws), so with `J` such draws `S_1 … S_J` the Monte Carlo p-value
//! `p = (1 + #{j : S_j ≥ S(u)})/(1 + J)` is valid (`P(p ≤ α) ≤ α`); its floor is `1/(1 + J)`.

use std::str::FromStr;

use serde::Serialize;

use super::stats::binomial_sf;
use super::store::WatermarkRecord;
use crate::defence::Key;
use crate::error::{Error, Result};
use crate::params::{Params, Valid};
use crate::sample::argmax;

/// Settings of the watermark: `rate=R`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct WatermarkParams {
    /// Fraction of queries marked, in (0, 0.5].
    pub rate: f64,
}

impl Default for WatermarkParams {
    /// 0.5% of queries, DAWN's largest setting.
    fn default() -> Self {
        WatermarkParams { rate: 0.005 }
    }
}

impl Params for WatermarkParams {
    fn check(self) -> Result<Valid<Self>> {
        if !(self.rate.is_finite() && self.rate > 0.0 && self.rate <= 0.5) {
            return Err(Error::invalid(format!(
                "watermark rate = {} (must lie in (0, 0.5])",
                self.rate
            )));
        }
        Ok(Valid::checked(self))
    }
}

impl FromStr for WatermarkParams {
    type Err = Error;
    /// `rate=R`, or empty for the default.
    fn from_str(s: &str) -> Result<Self> {
        let mut p = WatermarkParams::default();
        for kv in s.split(',').filter(|t| !t.trim().is_empty()) {
            let (k, v) = kv.split_once('=').ok_or_else(|| {
                Error::invalid(format!(
                    "watermark '{kv}': expected key=value, e.g. rate=0.005"
                ))
            })?;
            match k.trim() {
                "rate" => {
                    p.rate = v.trim().parse().map_err(|_| {
                        Error::invalid(format!("watermark rate '{v}': not a number"))
                    })?
                }
                other => {
                    return Err(Error::invalid(format!(
                        "watermark knob '{other}': the only knob is rate"
                    )))
                }
            }
        }
        Ok(p)
    }
}

/// The keyed watermark of a server (module docs).
#[derive(Clone, Debug)]
pub struct Watermark {
    key: Key,
    rate: f64,
}

/// A marked answer: the class it had and the class served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Mark {
    /// The served class before the watermark.
    pub original: usize,
    /// The class served.
    pub target: usize,
}

impl Watermark {
    /// The watermark of the server with secret `key`.
    pub fn new(key: &Key, params: &Valid<WatermarkParams>) -> Self {
        Watermark {
            key: Key::from_bytes(key.mac(b"rgshield watermark")),
            rate: params.rate,
        }
    }

    /// The fraction of queries marked.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Whether `x` is marked: `h_select(x)/2⁶⁴ < rate`.
    pub fn selects(&self, x: &[f32]) -> bool {
        (self.key.input_mac(b"select", x) as f64) < self.rate * 18_446_744_073_709_551_616.0
    }

    /// The target class of a marked `x` whose class is `original`, out of `k ≥ 2` classes:
    /// never `original`.
    pub fn target(&self, x: &[f32], original: usize, k: usize) -> usize {
        let h = self.key.input_mac(b"target", x);
        (original + 1 + (h % (k as u64 - 1)) as usize) % k
    }

    /// Mark the answer `out` to `x` when `x` is selected: swap the entries of its class and of
    /// the target. `None` (and `out` unchanged) when `x` is not selected, the answer has fewer
    /// than 2 classes, or a tie keeps the target from being the argmax after the swap.
    pub fn mark(&self, x: &[f32], out: &mut [f32]) -> Option<Mark> {
        if out.len() < 2 || !self.selects(x) {
            return None;
        }
        let original = argmax(out);
        let target = self.target(x, original, out.len());
        out.swap(original, target);
        if argmax(out) != target {
            out.swap(original, target);
            return None;
        }
        Some(Mark { original, target })
    }
}

/// What `verify` reports (module docs).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verification {
    /// Logged marked queries replayed.
    pub queries: usize,
    /// Classes of the victim model.
    pub n_classes: usize,
    /// `X`: queries where the suspect gives the watermark's target.
    pub agree_target: usize,
    /// `X / queries`.
    pub agreement: f64,
    /// `m`: queries where the suspect leaves the victim's original class.
    pub disagree_original: usize,
    /// `1/(K − 1)`: an innocent suspect's chance of hitting the target when it disagrees.
    pub chance: f64,
    /// `P(Binomial(m, 1/(K−1)) ≥ X)`.
    pub p_value: f64,
}

/// The test of the module docs on a suspect's classes `suspect[i]` for `records[i]`.
pub fn verify_classes(
    records: &[WatermarkRecord],
    suspect: &[usize],
    n_classes: usize,
) -> Result<Verification> {
    if records.len() != suspect.len() {
        return Err(Error::shape(format!(
            "verify: {} suspect classes for {} watermark queries",
            suspect.len(),
            records.len()
        )));
    }
    if n_classes < 2 {
        return Err(Error::invalid(format!(
            "verify: {n_classes} classes (a watermark needs at least 2)"
        )));
    }
    if let Some((i, r)) = records
        .iter()
        .enumerate()
        .find(|(_, r)| r.original >= n_classes || r.target >= n_classes || r.target == r.original)
    {
        return Err(Error::invalid(format!(
            "verify: watermark record {i} has classes {} → {} for {n_classes} classes",
            r.original, r.target
        )));
    }
    if let Some((i, s)) = suspect.iter().enumerate().find(|(_, &s)| s >= n_classes) {
        return Err(Error::invalid(format!(
            "verify: the suspect's class {s} for query {i} is outside the {n_classes} classes"
        )));
    }
    let x = records
        .iter()
        .zip(suspect)
        .filter(|(r, &s)| s == r.target)
        .count();
    let m = records
        .iter()
        .zip(suspect)
        .filter(|(r, &s)| s != r.original)
        .count();
    let chance = 1.0 / (n_classes - 1) as f64;
    Ok(Verification {
        queries: records.len(),
        n_classes,
        agree_target: x,
        agreement: if records.is_empty() {
            0.0
        } else {
            x as f64 / records.len() as f64
        },
        disagree_original: m,
        chance,
        p_value: binomial_sf(x as u64, m as u64, chance),
    })
}

/// [`verify_classes`] with a suspect classifier called on each logged input.
pub fn verify(
    records: &[WatermarkRecord],
    n_classes: usize,
    suspect: impl Fn(&[f32]) -> usize,
) -> Result<Verification> {
    let classes: Vec<usize> = records.iter().map(|r| suspect(&r.input)).collect();
    verify_classes(records, &classes, n_classes)
}

/// What [`soft_bias_test`] reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SoftBiasTest {
    /// Inputs the suspect answered.
    pub queries: usize,
    /// `S(u)` for the keyed directions.
    pub statistic: f64,
    /// Mean and standard deviation of `S` over the null draws.
    pub null_mean: f64,
    /// Their standard deviation.
    pub null_sd: f64,
    /// Null draws `J`.
    pub draws: usize,
    /// `(1 + #{S_j ≥ S(u)})/(1 + J)`.
    pub p_value: f64,
}

fn bias_statistic(probs: &[Vec<f32>], dirs: &[Vec<f64>]) -> f64 {
    let s: f64 = probs
        .iter()
        .map(|q| {
            let c = argmax(q);
            dirs[c]
                .iter()
                .zip(q)
                .enumerate()
                .filter(|(j, _)| *j != c)
                .map(|(_, (u, &v))| u * v as f64)
                .sum::<f64>()
        })
        .sum();
    s / probs.len().max(1) as f64
}

/// The label-free test (module docs) of a suspect's probability vectors `probs` (any inputs)
/// against the keyed directions of the `random-fixed` defence under `key`, with `draws` null
/// direction sets from public seeds.
pub fn soft_bias_test(key: &Key, probs: &[Vec<f32>], draws: usize) -> Result<SoftBiasTest> {
    let k = probs.first().map_or(0, Vec::len);
    if k < 2 || probs.iter().any(|q| q.len() != k) || draws == 0 {
        return Err(Error::shape(format!(
            "soft bias test: {} answers of {k} classes (all of one length ≥ 2), {draws} draws",
            probs.len()
        )));
    }
    let dirs = crate::defence::objectives::keyed_directions(k, key.derive("random-fixed"))?;
    let s = bias_statistic(probs, &dirs);
    let mut null = Vec::with_capacity(draws);
    for j in 0..draws as u64 {
        // Null seeds from the key too: for a suspect independent of the key the J + 1 direction
        // sets are then i.i.d., so the p-value is valid over keys, not only on average over
        // fixed null draws.
        let seed = key.derive(&format!("random-fixed null {j}"));
        null.push(bias_statistic(
            probs,
            &crate::defence::objectives::keyed_directions(k, seed)?,
        ));
    }
    let n = null.len() as f64;
    let mean = null.iter().sum::<f64>() / n;
    let sd = (null.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n).sqrt();
    let above = null.iter().filter(|&&v| v >= s).count();
    Ok(SoftBiasTest {
        queries: probs.len(),
        statistic: s,
        null_mean: mean,
        null_sd: sd,
        draws,
        p_value: (1 + above) as f64 / (1.0 + n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    fn random_probs(rng: &mut Xoshiro256PlusPlus, n: usize, k: usize) -> Vec<Vec<f32>> {
        (0..n)
            .map(|_| {
                let v: Vec<f32> = (0..k).map(|_| rng.random::<f32>().powi(3)).collect();
                let s: f32 = v.iter().sum();
                v.iter().map(|a| a / s).collect()
            })
            .collect()
    }

    /// Under H₀ (answers that ignore the key) the p-values are valid across keys; a suspect
    /// whose answers carry the keyed bias is found.
    #[test]
    fn the_soft_bias_test_is_calibrated_and_finds_the_keyed_bias() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(8);
        let (k, keys) = (10, 200);
        let probs = random_probs(&mut rng, 200, k);
        let ps: Vec<f64> = (0..keys)
            .map(|i| {
                soft_bias_test(&Key::public(&format!("k{i}")), &probs, 99)
                    .unwrap()
                    .p_value
            })
            .collect();
        for alpha in [0.05, 0.1, 0.25, 0.5] {
            let frac = ps.iter().filter(|&&p| p <= alpha).count() as f64 / keys as f64;
            let band = 3.0 * (alpha * (1.0 - alpha) / keys as f64).sqrt();
            assert!(frac <= alpha + band, "P(p ≤ {alpha}) = {frac}");
        }
        // Bias the answers by 0.1 along the keyed direction of their class (random-fixed at its
        // default budget moves answers by more).
        let key = Key::public("thief");
        let dirs =
            crate::defence::objectives::keyed_directions(k, key.derive("random-fixed")).unwrap();
        let biased: Vec<Vec<f32>> = probs
            .iter()
            .map(|q| {
                let c = argmax(q);
                q.iter()
                    .zip(&dirs[c])
                    .map(|(&v, u)| (v as f64 + 0.1 * u).max(0.0) as f32)
                    .collect()
            })
            .collect();
        let t = soft_bias_test(&key, &biased, 99).unwrap();
        assert_eq!(t.p_value, 0.01, "{t:?}");
        assert!(t.statistic > t.null_mean + 3.0 * t.null_sd, "{t:?}");
        assert!(soft_bias_test(&key, &[vec![1.0]], 9).is_err());
    }

    fn wm(label: &str, rate: f64) -> Watermark {
        Watermark::new(
            &Key::public(label),
            &WatermarkParams { rate }.check().unwrap(),
        )
    }

    #[test]
    fn parses_and_checks_its_knob() {
        assert_eq!("rate=0.01".parse::<WatermarkParams>().unwrap().rate, 0.01);
        assert_eq!("".parse::<WatermarkParams>().unwrap().rate, 0.005);
        for bad in ["rate=0", "rate=0.6", "rate=NaN"] {
            let e = bad.parse::<WatermarkParams>().unwrap().check().unwrap_err();
            assert!(e.to_string().contains("watermark rate"), "{e}");
        }
        assert!("rat=0.1".parse::<WatermarkParams>().is_err());
        assert!("rate=x".parse::<WatermarkParams>().is_err());
    }

    #[test]
    fn marks_are_deterministic_per_key_and_input_and_their_rate_is_the_setting() {
        let (a, b) = (wm("a", 0.05), wm("b", 0.05));
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let n = 20_000;
        let (mut na, mut both, mut targets) = (0usize, 0usize, [0usize; 10]);
        for _ in 0..n {
            let x: Vec<f32> = (0..16).map(|_| rng.random::<f32>()).collect();
            let mut out: Vec<f32> = (0..10).map(|_| rng.random::<f32>()).collect();
            let before = out.clone();
            let m1 = a.mark(&x, &mut out);
            let mut again = before.clone();
            assert_eq!(
                a.mark(&x, &mut again),
                m1,
                "the same (key, input) gets the same mark"
            );
            assert_eq!(again, out);
            if let Some(m) = m1 {
                na += 1;
                assert_ne!(m.target, m.original);
                assert_eq!(argmax(&out), m.target);
                assert_eq!(out[m.target], before[m.original]);
                targets[(m.target + 10 - m.original) % 10] += 1;
                both += usize::from(b.selects(&x));
            } else {
                assert_eq!(out, before);
            }
        }
        // Binomial(n, 0.05): mean 1000, sd 30.8; 4 sd either side.
        assert!(
            (na as f64 - 1000.0).abs() < 4.0 * 30.8,
            "{na} marked of {n}"
        );
        // Another key selects independently: about 5% of a's marks.
        assert!(
            (both as f64) < 0.05 * na as f64 + 4.0 * (0.05 * na as f64).sqrt() + 1.0,
            "{both}"
        );
        // The target offset is uniform over 1..K−1 (chi-square, 8 df: 99.9% point 26.1).
        assert_eq!(targets[0], 0);
        let e = na as f64 / 9.0;
        let chi2: f64 = targets[1..]
            .iter()
            .map(|&o| (o as f64 - e).powi(2) / e)
            .sum();
        assert!(chi2 < 26.1, "{targets:?}");
    }

    fn record(rng: &mut Xoshiro256PlusPlus, w: &Watermark, k: usize) -> WatermarkRecord {
        loop {
            let x: Vec<f32> = (0..8).map(|_| rng.random::<f32>()).collect();
            if w.selects(&x) {
                let original = rng.random_range(0..k);
                return WatermarkRecord {
                    client: None,
                    time: 0.0,
                    target: w.target(&x, original, k),
                    input: x,
                    original,
                };
            }
        }
    }

    #[test]
    fn verification_counts_and_the_exact_tail() {
        let w = wm("v", 0.5);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
        let recs: Vec<_> = (0..20).map(|_| record(&mut rng, &w, 10)).collect();
        // A thief that learned every mark: X = m = 20, p = 9^-20.
        let thief: Vec<usize> = recs.iter().map(|r| r.target).collect();
        let v = verify_classes(&recs, &thief, 10).unwrap();
        assert_eq!((v.agree_target, v.disagree_original), (20, 20));
        assert!(
            (v.p_value / 9f64.powi(-20) - 1.0).abs() < 1e-9,
            "{}",
            v.p_value
        );
        // A suspect that always gives the victim's class: m = 0, p = 1.
        let loyal: Vec<usize> = recs.iter().map(|r| r.original).collect();
        assert_eq!(verify_classes(&recs, &loyal, 10).unwrap().p_value, 1.0);
        assert!(verify_classes(&recs, &thief[1..], 10).is_err());
        let mut bad = thief.clone();
        bad[3] = 10;
        assert!(verify_classes(&recs, &bad, 10)
            .unwrap_err()
            .to_string()
            .contains("query 3"));
    }

    /// Under H₀ the p-value is valid: for suspects whose classes do not depend on the key (here
    /// fixed arbitrary classifiers — a nearest-prototype rule with errors concentrated on two
    /// classes, the worst case for a uniform-error assumption — and 400 keys), the fraction of
    /// p ≤ α stays within binomial error of at most α.
    #[test]
    fn p_values_are_calibrated_under_the_null() {
        let k = 10;
        let n_keys = 400;
        let mut ps = Vec::new();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        for key in 0..n_keys {
            let w = wm(&format!("null {key}"), 0.5);
            let recs: Vec<_> = (0..60).map(|_| record(&mut rng, &w, k)).collect();
            // The innocent suspect: right 70% of the time, else class (c+1) or (c+2) mod K,
            // decided by the input only (not the key).
            let suspect: Vec<usize> = recs
                .iter()
                .map(|r| {
                    let u = (r.input[0] * 100.0) as usize;
                    match u % 10 {
                        0..=6 => r.original,
                        7 | 8 => (r.original + 1) % k,
                        _ => (r.original + 2) % k,
                    }
                })
                .collect();
            ps.push(verify_classes(&recs, &suspect, k).unwrap().p_value);
        }
        for alpha in [0.01, 0.05, 0.1, 0.25, 0.5] {
            let frac = ps.iter().filter(|&&p| p <= alpha).count() as f64 / n_keys as f64;
            let band = 3.0 * (alpha * (1.0 - alpha) / n_keys as f64).sqrt();
            assert!(frac <= alpha + band, "P(p ≤ {alpha}) = {frac}");
        }
        // And not degenerate: a fair share of small p-values exists (the test has power to
        // fail if the null were wrong in the other direction).
        let frac = ps.iter().filter(|&&p| p <= 0.5).count() as f64 / n_keys as f64;
        assert!(frac > 0.2, "P(p ≤ 0.5) = {frac}");
    }
}
