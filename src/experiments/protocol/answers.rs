//! What a defence point does to the answers themselves, before any clone (SPEC §12): distortion,
//! changed classes, answers that reveal a defence, calibration, and detectability.
//!
//! * **Reveal**: an answer holding an exact 0 or 1, which the served sigmoid output never does.
//! * **Brier** `= mean_i Σ_k (p̃_ik − [y_i = k])²` and **ECE** (10 equal-width bins of the top
//!   probability, `Σ_b n_b/n · |acc_b − conf_b|`) of the renormalised answers p̃ against the true
//!   labels.
//! * **Detectability**: a logistic regression on the sorted renormalised answer and the logs of its
//!   entries (clipped at 10⁻¹²), trained on `n` honest and `n` defended answers of *different*
//!   inputs and tested on `n` + `n` more; its AUC (0.5: the defence cannot be told apart from the
//!   honest outputs by their shape).

use serde::{Deserialize, Serialize};

use crate::defence::distortion;
use crate::sample::argmax;

/// The answer-level measurements of one defence point on one victim.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AnswerStats {
    /// Mean L1 distortion over the evaluation answers.
    pub l1: f64,
    /// Mean L2 distortion.
    pub l2: f64,
    /// Mean KL distortion.
    pub kl: f64,
    /// Share of answers whose class changed.
    pub changed: f64,
    /// Share of answers holding an exact 0 or 1.
    pub reveal: f64,
    /// Defender accuracy: argmax of the defended answer against the true labels.
    pub defender_accuracy: f64,
    /// Brier score of the renormalised answers.
    pub brier: f64,
    /// Expected calibration error (10 bins).
    pub ece: f64,
    /// AUC of the detectability classifier (NaN when too few answers).
    pub detect_auc: f64,
}

impl AnswerStats {
    /// Field by field, the mean of `all` (NaN when empty; NaN fields stay NaN).
    pub fn mean<'a>(all: impl Iterator<Item = &'a AnswerStats>) -> AnswerStats {
        let (mut m, mut n) = (AnswerStats::default(), 0.0);
        for s in all {
            m.l1 += s.l1;
            m.l2 += s.l2;
            m.kl += s.kl;
            m.changed += s.changed;
            m.reveal += s.reveal;
            m.defender_accuracy += s.defender_accuracy;
            m.brier += s.brier;
            m.ece += s.ece;
            m.detect_auc += s.detect_auc;
            n += 1.0;
        }
        let d = if n > 0.0 { n } else { f64::NAN };
        for f in [
            &mut m.l1,
            &mut m.l2,
            &mut m.kl,
            &mut m.changed,
            &mut m.reveal,
            &mut m.defender_accuracy,
            &mut m.brier,
            &mut m.ece,
            &mut m.detect_auc,
        ] {
            *f /= d;
        }
        m
    }
}

fn renorm(r: &[f32]) -> Vec<f64> {
    let s: f64 = r.iter().map(|&v| v as f64).sum();
    r.iter()
        .map(|&v| {
            if s > 0.0 {
                v as f64 / s
            } else {
                1.0 / r.len() as f64
            }
        })
        .collect()
}

/// Brier score and ECE of `answers` (row-major, `k` per row) against `labels`.
pub fn calibration(answers: &[f32], k: usize, labels: &[u32]) -> (f64, f64) {
    let n = labels.len().max(1) as f64;
    let mut brier = 0.0;
    let mut bins = [(0usize, 0.0f64, 0.0f64); 10];
    for (r, &y) in answers.chunks_exact(k).zip(labels) {
        let p = renorm(r);
        brier += p
            .iter()
            .enumerate()
            .map(|(j, &q)| (q - f64::from(u8::from(j == y as usize))).powi(2))
            .sum::<f64>();
        let c = argmax(r);
        let b = ((p[c] * 10.0) as usize).min(9);
        bins[b].0 += 1;
        bins[b].1 += f64::from(u8::from(c == y as usize));
        bins[b].2 += p[c];
    }
    let ece = bins
        .iter()
        .filter(|b| b.0 > 0)
        .map(|&(_, acc, conf)| (acc - conf).abs() / n)
        .sum();
    (brier / n, ece)
}

/// The detectability features of one answer: its sorted renormalised values and their logs.
fn features(r: &[f32]) -> Vec<f64> {
    let mut p = renorm(r);
    p.sort_by(|a, b| b.total_cmp(a));
    let logs: Vec<f64> = p.iter().map(|v| v.max(1e-12).ln()).collect();
    p.into_iter().chain(logs).collect()
}

/// Area under the ROC curve of `scores` for `positive` (ties count one half).
pub fn auc(scores: &[f64], positive: &[bool]) -> f64 {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Mid-ranks of tied runs.
    let mut rank = vec![0.0; scores.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        for &t in &idx[i..=j] {
            rank[t] = mid;
        }
        i = j + 1;
    }
    let n_pos = positive.iter().filter(|&&p| p).count() as f64;
    let n_neg = positive.len() as f64 - n_pos;
    if n_pos == 0.0 || n_neg == 0.0 {
        return f64::NAN;
    }
    let sum_pos: f64 = rank
        .iter()
        .zip(positive)
        .filter(|(_, &p)| p)
        .map(|(r, _)| r)
        .sum();
    (sum_pos - n_pos * (n_pos + 1.0) / 2.0) / (n_pos * n_neg)
}

/// Logistic regression by full-batch gradient descent on standardised features (L2 penalty
/// 10⁻³, 500 steps of rate 0.5); returns the test scores.
fn logistic_scores(train: &[Vec<f64>], labels: &[bool], test: &[Vec<f64>]) -> Vec<f64> {
    let d = train[0].len();
    let n = train.len() as f64;
    let mean: Vec<f64> = (0..d)
        .map(|j| train.iter().map(|r| r[j]).sum::<f64>() / n)
        .collect();
    let sd: Vec<f64> = (0..d)
        .map(|j| {
            let v = train.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / n;
            if v > 1e-18 {
                v.sqrt()
            } else {
                1.0
            }
        })
        .collect();
    let z = |r: &Vec<f64>| -> Vec<f64> { (0..d).map(|j| (r[j] - mean[j]) / sd[j]).collect() };
    let xs: Vec<Vec<f64>> = train.iter().map(z).collect();
    let (mut w, mut b) = (vec![0.0; d], 0.0);
    for _ in 0..500 {
        let (mut gw, mut gb) = (vec![0.0; d], 0.0);
        for (x, &y) in xs.iter().zip(labels) {
            let s = b + x.iter().zip(&w).map(|(a, c)| a * c).sum::<f64>();
            let e = 1.0 / (1.0 + (-s).exp()) - f64::from(u8::from(y));
            gb += e;
            gw.iter_mut().zip(x).for_each(|(g, a)| *g += e * a);
        }
        b -= 0.5 * gb / n;
        for (wj, gj) in w.iter_mut().zip(&gw) {
            *wj -= 0.5 * (gj / n + 1e-3 * *wj);
        }
    }
    test.iter()
        .map(|r| b + z(r).iter().zip(&w).map(|(a, c)| a * c).sum::<f64>())
        .collect()
}

/// Detectability AUC from honest and defended answers of the same inputs (row-major, `k` per
/// row): honest rows `[0, n)` and defended rows `[n, 2n)` train, honest `[2n, 3n)` and defended
/// `[3n, 4n)` test, so no input appears in both classes of one set. NaN with fewer than `4n` rows.
pub fn detectability(honest: &[f32], defended: &[f32], k: usize, n: usize) -> f64 {
    let rows = honest.len() / k;
    if rows < 4 * n || n == 0 {
        return f64::NAN;
    }
    let f = |v: &[f32], i: usize| features(&v[i * k..(i + 1) * k]);
    let train: Vec<Vec<f64>> = (0..n)
        .map(|i| f(honest, i))
        .chain((n..2 * n).map(|i| f(defended, i)))
        .collect();
    let test: Vec<Vec<f64>> = (2 * n..3 * n)
        .map(|i| f(honest, i))
        .chain((3 * n..4 * n).map(|i| f(defended, i)))
        .collect();
    let labels: Vec<bool> = (0..2 * n).map(|i| i >= n).collect();
    let scores = logistic_scores(&train, &labels, &test);
    auc(&scores, &labels)
}

/// All of [`AnswerStats`] for one defence point: `honest`/`defended` answers of the evaluation
/// inputs (with their `labels`), and those of further natural inputs appended for the
/// detectability sets (`detect_n` of each kind, twice).
pub fn answer_stats(
    honest: &[f32],
    defended: &[f32],
    k: usize,
    labels: &[u32],
    detect_honest: &[f32],
    detect_defended: &[f32],
    detect_n: usize,
) -> AnswerStats {
    let rows = labels.len();
    let mut s = AnswerStats::default();
    for (a, b) in honest.chunks_exact(k).zip(defended.chunks_exact(k)) {
        let d = distortion(a, b);
        s.l1 += d.l1;
        s.l2 += d.l2;
        s.kl += d.kl;
        s.changed += f64::from(u8::from(argmax(a) != argmax(b)));
        s.reveal += f64::from(u8::from(b.iter().any(|&v| v == 0.0 || v == 1.0)));
    }
    let n = rows.max(1) as f64;
    s.l1 /= n;
    s.l2 /= n;
    s.kl /= n;
    s.changed /= n;
    s.reveal /= n;
    s.defender_accuracy = defended
        .chunks_exact(k)
        .zip(labels)
        .filter(|(r, &y)| argmax(r) == y as usize)
        .count() as f64
        / n;
    (s.brier, s.ece) = calibration(defended, k, labels);
    s.detect_auc = detectability(detect_honest, detect_defended, k, detect_n);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_pairs_and_ties() {
        assert_eq!(auc(&[0.1, 0.2, 0.3, 0.4], &[false, false, true, true]), 1.0);
        assert_eq!(auc(&[0.4, 0.3, 0.2, 0.1], &[false, false, true, true]), 0.0);
        // One tie between a positive and a negative: 3 of 4 pairs won, one half.
        assert_eq!(
            auc(&[0.1, 0.5, 0.5, 0.9], &[false, false, true, true]),
            0.875
        );
    }

    #[test]
    fn calibration_of_hand_made_answers() {
        // Two answers: confident and right, uniform and wrong.
        let a = [1.0f32, 0.0, 0.5, 0.5];
        let (brier, ece) = calibration(&a, 2, &[0, 1]);
        // Brier: row 0 = 0; row 1 = 0.25 + 0.25. Mean 0.25.
        assert!((brier - 0.25).abs() < 1e-12);
        // Bins: conf 1.0 (bin 9) acc 1; conf 0.5 (bin 5) acc 0 (argmax picks class 0).
        assert!((ece - 0.25).abs() < 1e-12, "{ece}");
    }

    #[test]
    fn detectability_separates_revealing_answers_and_not_identical_ones() {
        // Honest answers: sigmoid-like vectors; "defended": the same with an exact 0 planted.
        let k = 4;
        let n = 60;
        let mut honest = Vec::new();
        for i in 0..4 * n {
            let t = (i as f32 * 0.37).sin().abs();
            honest.extend([0.6 + 0.3 * t, 0.2 * (1.0 - t) + 0.01, 0.05, 0.02 + 0.01 * t]);
        }
        let mut revealing = honest.clone();
        for r in revealing.chunks_exact_mut(k) {
            r[3] = 0.0;
        }
        let a = detectability(&honest, &revealing, k, n);
        assert!(a > 0.95, "{a}");
        let same = detectability(&honest, &honest, k, n);
        assert!((same - 0.5).abs() < 0.2, "{same}");
        assert!(detectability(&honest[..k * 10], &honest[..k * 10], k, n).is_nan());
    }
}
