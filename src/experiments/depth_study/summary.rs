//! The depth study's summaries (SPEC §10): per depth over seeds, the trends against N with Holm's
//! correction, matched-confidence bins, and the Markdown report.
//!
//! * **Per model** a statistic is the median over the attacked inputs; for a minimal norm a
//!   censored input counts as +∞ ([`median_censored`]), so the median is censored itself when
//!   more than half are; a depth with a censored seed has no mean ("censored (k seeds)").
//! * **Per depth** ([`SeedSpread`]) the seeds' values, their mean and a 95% t interval over seeds
//!   (`seeds − 1` degrees of freedom: the training seeds are the sampling units).
//! * **Trend** ([`Trend`]): for each seed the least-squares slope of its per-model medians against
//!   N over a range of depths (the models of one seed at different depths are independent draws,
//!   so each seed gives one independent slope); the estimate is their mean with a t interval over
//!   seeds. The trends tested (minimal norm of PGD and of the Fisher direction, over N = 1…max
//!   and over N = 2…max) form one family, Holm-corrected at α = 0.05, fixed before the runs; a
//!   trend with a censored seed median is reported untestable and stays in the family.
//! * **Matched confidence** ([`MARGIN_BINS`]): inputs pooled over seeds, binned by their clean
//!   served margin; the median minimal norm per bin and depth compares depths at equal
//!   confidence.

use serde::{Deserialize, Serialize};

use super::{f, ConvergenceRow, DepthStudyReport, InputRobustness, ModelRobustness};
use crate::report::compare::{holm, paired};
use crate::report::stats::{median, median_censored};

/// Edges of the served-margin bins of the matched-confidence table: `[0, 0.5)`, `[0.5, 0.9)`,
/// `[0.9, 1]` (the last bin is closed: it holds margin 1, [`in_margin_bin`]).
pub const MARGIN_BINS: [f64; 4] = [0.0, 0.5, 0.9, 1.0];

/// Whether margin `m` falls in the bin `[lo, hi)`, closed at the top for the last bin (`hi` = 1).
fn in_margin_bin(m: f64, lo: f64, hi: f64) -> bool {
    m >= lo && (m < hi || (hi >= 1.0 && m <= hi))
}

/// Family level of the trend tests.
pub const TREND_ALPHA: f64 = 0.05;

/// A per-model statistic over the seeds of one depth.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedSpread {
    /// One value per seed whose value is finite.
    pub per_seed: Vec<f64>,
    /// Seeds whose value is censored (+∞: more than half of the model's inputs censored); the
    /// mean and interval are then undefined.
    #[serde(default)]
    pub censored: usize,
    /// Their mean (`None` when a seed is censored or none is finite).
    pub mean: Option<f64>,
    /// 95% t interval over seeds (`None` with fewer than two values or a censored seed).
    pub interval: Option<(f64, f64)>,
}

impl SeedSpread {
    fn of(values: Vec<f64>) -> Self {
        let censored = values.iter().filter(|x| **x == f64::INFINITY).count();
        let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() || censored > 0 {
            return SeedSpread {
                per_seed: v,
                censored,
                mean: None,
                interval: None,
            };
        }
        let e = paired(&v);
        let interval = (v.len() >= 2).then(|| e.interval(0.95));
        SeedSpread {
            mean: Some(e.mean),
            interval,
            censored,
            per_seed: v,
        }
    }

    fn cell(&self, digits: usize) -> String {
        if self.censored > 0 {
            return format!(
                "censored ({} seed{})",
                self.censored,
                if self.censored == 1 { "" } else { "s" }
            );
        }
        match (self.mean, self.interval) {
            (Some(m), Some((lo, hi))) => format!(
                "{} [{}, {}]",
                f(Some(m), digits),
                f(Some(lo), digits),
                f(Some(hi), digits)
            ),
            (m, _) => f(m, digits),
        }
    }
}

/// One matched-confidence bin of one depth.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MarginBin {
    /// Lower edge of the served margin.
    pub lo: f64,
    /// Upper edge (exclusive, except the last).
    pub hi: f64,
    /// Inputs × seeds in the bin.
    pub count: usize,
    /// Median minimal norm of PGD (pooled over seeds; +∞, written `null` in JSON, when more than
    /// half are censored).
    pub pgd: Option<f64>,
    /// Median minimal norm along the Fisher direction.
    pub fisher: Option<f64>,
}

/// One depth over its seeds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DepthSummary {
    /// Depth N.
    pub depth: usize,
    /// Served test accuracy.
    pub test_accuracy: SeedSpread,
    /// Median minimal L2 of PGD.
    pub min_l2_pgd: SeedSpread,
    /// Median minimal L2 along the Fisher direction.
    pub min_l2_fisher: SeedSpread,
    /// Median minimal L2 along a random direction.
    pub min_l2_random: SeedSpread,
    /// Censored inputs (no success up to the box diagonal), over all seeds: PGD.
    pub censored_pgd: usize,
    /// Censored inputs along the Fisher direction.
    pub censored_fisher: usize,
    /// Censored inputs along the random direction.
    pub censored_random: usize,
    /// Inputs × seeds.
    pub attacked: usize,
    /// Success rate of PGD at the fixed ε.
    pub success_pgd: SeedSpread,
    /// Success rate of the Fisher direction at the fixed ε.
    pub success_fisher: SeedSpread,
    /// Median top input-Fisher eigenvalue (direct estimate).
    pub fisher_top: SeedSpread,
    /// Median jackknife bias-corrected top eigenvalue.
    pub fisher_top_bias_corrected: SeedSpread,
    /// Median first-layer bound.
    pub fisher_bound: SeedSpread,
    /// Median top eigenvalue of the mean-field Fisher matrix.
    pub mean_field_fisher_top: SeedSpread,
    /// Median top singular value of the mean-field Jacobian.
    pub mean_field_jacobian_top: SeedSpread,
    /// Median clean served margin.
    pub served_margin: SeedSpread,
    /// Matched-confidence bins.
    pub by_margin: Vec<MarginBin>,
}

/// The slope of a per-model median against N (module doc).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trend {
    /// `"pgd"` or `"fisher"`: whose minimal norm.
    pub attack: String,
    /// First depth of the range.
    pub from: usize,
    /// Last depth of the range.
    pub to: usize,
    /// One slope per seed whose medians are all finite (L2 units per added RBM).
    pub per_seed: Vec<f64>,
    /// Seeds without a slope: a per-model median censored (or fewer than two depths). The trend
    /// is untestable then (no estimate, p-value or interval), and still counts in Holm's family.
    #[serde(default)]
    pub untestable_seeds: usize,
    /// Their mean.
    pub slope: Option<f64>,
    /// Two-sided p-value of "slope = 0" (t over seeds).
    pub p_value: Option<f64>,
    /// Holm-adjusted p-value over the family of trends.
    pub holm_p: Option<f64>,
    /// Whether Holm rejects at [`TREND_ALPHA`].
    pub rejected: bool,
    /// The interval at the level Holm's step used.
    pub interval: Option<(f64, f64)>,
    /// That level.
    pub level: f64,
}

/// Median over a model's inputs of a finite statistic.
fn model_median(m: &ModelRobustness, g: impl Fn(&InputRobustness) -> f64) -> f64 {
    median(&m.inputs.iter().map(g).collect::<Vec<_>>()).unwrap_or(f64::NAN)
}

/// Median over a model's inputs of a minimal norm, censored inputs counting as +∞
/// ([`median_censored`]): +∞ when more than half are censored.
pub(super) fn model_median_norm(m: &ModelRobustness, g: impl Fn(&InputRobustness) -> f64) -> f64 {
    median_censored(&m.inputs.iter().map(g).collect::<Vec<_>>()).unwrap_or(f64::NAN)
}

pub(super) fn norm_pgd(i: &InputRobustness) -> f64 {
    InputRobustness::norm_or_inf(&i.pgd)
}
pub(super) fn norm_fisher(i: &InputRobustness) -> f64 {
    InputRobustness::norm_or_inf(&i.fisher)
}
pub(super) fn norm_random(i: &InputRobustness) -> f64 {
    InputRobustness::norm_or_inf(&i.random)
}

fn rate(m: &ModelRobustness, g: impl Fn(&InputRobustness) -> bool) -> f64 {
    m.inputs.iter().filter(|i| g(i)).count() as f64 / m.inputs.len().max(1) as f64
}

/// Least-squares slope of `y` on `x` (NaN with fewer than two distinct x or a non-finite y).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 || points.iter().any(|p| !p.1.is_finite()) {
        return f64::NAN;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 {
        return f64::NAN;
    }
    points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>() / sxx
}

/// Per-depth summaries and the trends (module doc).
pub fn summarise_depths(
    models: &[ModelRobustness],
    depths: &[usize],
) -> (Vec<DepthSummary>, Vec<Trend>) {
    let mut out = Vec::new();
    for &n in depths {
        let ms: Vec<&ModelRobustness> = models.iter().filter(|m| m.depth == n).collect();
        let spread =
            |g: &dyn Fn(&ModelRobustness) -> f64| SeedSpread::of(ms.iter().map(|m| g(m)).collect());
        let censored = |g: &dyn Fn(&InputRobustness) -> f64| {
            ms.iter()
                .flat_map(|m| &m.inputs)
                .filter(|i| g(i).is_infinite())
                .count()
        };
        let pooled: Vec<&InputRobustness> = ms.iter().flat_map(|m| &m.inputs).collect();
        let by_margin = MARGIN_BINS
            .windows(2)
            .map(|w| {
                let inside: Vec<&&InputRobustness> = pooled
                    .iter()
                    .filter(|i| in_margin_bin(i.served_margin, w[0], w[1]))
                    .collect();
                MarginBin {
                    lo: w[0],
                    hi: w[1],
                    count: inside.len(),
                    pgd: median_censored(&inside.iter().map(|i| norm_pgd(i)).collect::<Vec<_>>()),
                    fisher: median_censored(
                        &inside.iter().map(|i| norm_fisher(i)).collect::<Vec<_>>(),
                    ),
                }
            })
            .collect();
        out.push(DepthSummary {
            depth: n,
            test_accuracy: spread(&|m| m.test_accuracy),
            min_l2_pgd: spread(&|m| model_median_norm(m, norm_pgd)),
            min_l2_fisher: spread(&|m| model_median_norm(m, norm_fisher)),
            min_l2_random: spread(&|m| model_median_norm(m, norm_random)),
            censored_pgd: censored(&norm_pgd),
            censored_fisher: censored(&norm_fisher),
            censored_random: censored(&norm_random),
            attacked: pooled.len(),
            success_pgd: spread(&|m| rate(m, |i| i.pgd_success_at_epsilon)),
            success_fisher: spread(&|m| rate(m, |i| i.fisher_success_at_epsilon)),
            fisher_top: spread(&|m| model_median(m, |i| i.fisher_top)),
            fisher_top_bias_corrected: spread(&|m| {
                model_median(m, |i| i.fisher_top_bias_corrected.unwrap_or(f64::NAN))
            }),
            fisher_bound: spread(&|m| model_median(m, |i| i.fisher_bound)),
            mean_field_fisher_top: spread(&|m| model_median(m, |i| i.mean_field_fisher_top)),
            mean_field_jacobian_top: spread(&|m| model_median(m, |i| i.mean_field_jacobian_top)),
            served_margin: spread(&|m| model_median(m, |i| i.served_margin)),
            by_margin,
        });
    }
    (out, trends(models, depths))
}

/// The family of trends (module doc): PGD and Fisher over all depths and over depths ≥ 2.
fn trends(models: &[ModelRobustness], depths: &[usize]) -> Vec<Trend> {
    let (lo, hi) = match (depths.iter().min(), depths.iter().max()) {
        (Some(&a), Some(&b)) => (a, b),
        _ => return Vec::new(),
    };
    let mut seeds: Vec<u64> = models.iter().map(|m| m.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let mut ranges = vec![(lo, hi)];
    if lo < 2 && depths.iter().filter(|&&d| d >= 2).count() >= 2 {
        ranges.push((2, hi));
    }
    let mut raw = Vec::new();
    for (attack, g) in [
        ("pgd", norm_pgd as fn(&InputRobustness) -> f64),
        ("fisher", norm_fisher),
    ] {
        for &(from, to) in &ranges {
            let slopes: Vec<f64> = seeds
                .iter()
                .map(|&s| {
                    let pts: Vec<(f64, f64)> = models
                        .iter()
                        .filter(|m| m.seed == s && m.depth >= from && m.depth <= to)
                        .map(|m| (m.depth as f64, model_median_norm(m, g)))
                        .collect();
                    slope(&pts)
                })
                .collect();
            raw.push((attack, from, to, slopes));
        }
    }
    // A trend with a seed lacking its slope is untestable: NaN p-value, never rejected, but it
    // stays in the family fixed before the runs.
    let testable = |v: &[f64]| v.len() >= 2 && v.iter().all(|x| x.is_finite());
    let estimates: Vec<_> = raw
        .iter()
        .map(|r| testable(&r.3).then(|| paired(&r.3)))
        .collect();
    let p: Vec<f64> = estimates
        .iter()
        .map(|e| e.map_or(f64::NAN, |e| e.p_value()))
        .collect();
    let steps = holm(&p, TREND_ALPHA);
    raw.into_iter()
        .zip(estimates)
        .zip(steps)
        .zip(p)
        .map(|((((attack, from, to, slopes), e), h), p)| Trend {
            attack: attack.to_string(),
            from,
            to,
            untestable_seeds: slopes.iter().filter(|v| !v.is_finite()).count(),
            per_seed: slopes.into_iter().filter(|v| v.is_finite()).collect(),
            slope: e.map(|e| e.mean),
            p_value: p.is_finite().then_some(p),
            holm_p: h.adjusted_p.is_finite().then_some(h.adjusted_p),
            rejected: h.rejected,
            interval: e.map(|e| e.interval(h.level)),
            level: h.level,
        })
        .collect()
}

fn convergence_table(rows: &[ConvergenceRow]) -> String {
    let mut t = String::from(
        "| N | input | S | top (raw) | ± jackknife se | bias-corrected | bound |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.depth,
            r.input,
            r.samples,
            f(Some(r.top), 4),
            f(r.top_std_err, 4),
            f(r.top_bias_corrected, 4),
            f(Some(r.bound), 3)
        ));
    }
    t
}

/// The study's Markdown report.
pub fn summary_markdown(r: &DepthStudyReport) -> String {
    let s = &r.settings;
    let mut t = format!(
        "# Depth study on {}\n\nDepths {:?}, width {}, training seeds {:?} (method {}, one recorded \
         configuration in depth_study.json); {} of {} candidate test inputs are served correctly by every \
         model at S = {} and the first {} are attacked. Fisher directions: direct estimate at S = {} with \
         {} jackknife blocks. Minimal L2 by bisection up to {:.3} (the box diagonal) to ±{}; PGD with K = {} \
         steps. Values: mean over seeds of the per-model medians over inputs [95% t interval over seeds]; \
         censored = inputs × seeds with no success up to the diagonal.\n\n",
        r.dataset,
        s.depths,
        s.width,
        s.seeds,
        s.train.method,
        r.commonly_correct,
        s.inputs.len(),
        s.judge_samples,
        r.attacked_inputs.len(),
        s.samples,
        s.blocks,
        r.bisection.max,
        r.bisection.tol,
        s.pgd_steps,
    );
    t.push_str(
        "## Minimal adversarial L2 (primary)\n\n| N | test accuracy | PGD | Fisher direction | random direction | censored pgd / fisher / random of | success at ε: pgd / fisher |\n|---|---|---|---|---|---|---|\n",
    );
    for d in &r.depths {
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} / {} / {} of {} | {} / {} |\n",
            d.depth,
            d.test_accuracy.cell(4),
            d.min_l2_pgd.cell(3),
            d.min_l2_fisher.cell(3),
            d.min_l2_random.cell(3),
            d.censored_pgd,
            d.censored_fisher,
            d.censored_random,
            d.attacked,
            d.success_pgd.cell(3),
            d.success_fisher.cell(3),
        ));
    }
    t.push_str(&format!(
        "\nSuccess at ε = {}: share of attacked inputs, mean over seeds [95% t interval].\n\n\
         ## Trends against N (Holm over the {} trends, α = {TREND_ALPHA})\n\n\
         | minimal norm of | depths | slope per added RBM | interval (level) | p | Holm p | rejected | per seed |\n|---|---|---|---|---|---|---|---|\n",
        s.attack_epsilon,
        r.trends.len()
    ));
    for tr in &r.trends {
        let interval = match tr.interval {
            Some((lo, hi)) => format!("[{}, {}] ({:.4})", f(Some(lo), 4), f(Some(hi), 4), tr.level),
            None => format!("untestable: {} seed(s) censored", tr.untestable_seeds),
        };
        t.push_str(&format!(
            "| {} | {}…{} | {} | {} | {} | {} | {} | {} |\n",
            tr.attack,
            tr.from,
            tr.to,
            f(tr.slope, 4),
            interval,
            f(tr.p_value, 4),
            f(tr.holm_p, 4),
            if tr.rejected { "yes" } else { "no" },
            tr.per_seed
                .iter()
                .map(|v| format!("{v:.4}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    t.push_str("\n## Matched confidence: median minimal L2 by clean served margin (pooled over seeds)\n\n| N |");
    for w in MARGIN_BINS.windows(2) {
        // The last bin holds margin 1 (in_margin_bin): a closed bracket.
        let close = if w[1] >= 1.0 { ']' } else { ')' };
        t.push_str(&format!(
            " margin [{:.1}, {:.1}{close}: n, pgd, fisher |",
            w[0], w[1]
        ));
    }
    t.push_str("\n|---|");
    t.push_str(&"---|".repeat(MARGIN_BINS.len() - 1));
    t.push('\n');
    for d in &r.depths {
        t.push_str(&format!("| {} |", d.depth));
        for b in &d.by_margin {
            t.push_str(&format!(
                " {}, {}, {} |",
                b.count,
                f(b.pgd, 3),
                f(b.fisher, 3)
            ));
        }
        t.push('\n');
    }
    t.push_str(
        "\n## Input Fisher and mean-field sensitivity (medians over inputs; mean over seeds [95% t interval])\n\n\
         | N | top F (direct) | bias-corrected | first-layer bound | mean-field F | mean-field σ_max(∂μ/∂x) | served margin |\n|---|---|---|---|---|---|---|\n",
    );
    for d in &r.depths {
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            d.depth,
            d.fisher_top.cell(4),
            d.fisher_top_bias_corrected.cell(4),
            d.fisher_bound.cell(3),
            d.mean_field_fisher_top.cell(4),
            d.mean_field_jacobian_top.cell(4),
            d.served_margin.cell(3),
        ));
    }
    if !r.convergence.is_empty() {
        t.push_str("\n## Convergence of the top input-Fisher eigenvalue in S (first seed)\n\n");
        t.push_str(&convergence_table(&r.convergence));
    }
    if !r.rows.is_empty() {
        t.push_str("\n## RG diagnostics (first seed)\n\n");
        t.push_str(&super::rg_table(&r.rows));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_bins_partition_zero_to_one_with_one_in_the_last() {
        let bin_of = |m: f64| -> Vec<usize> {
            (0..MARGIN_BINS.len() - 1)
                .filter(|&b| in_margin_bin(m, MARGIN_BINS[b], MARGIN_BINS[b + 1]))
                .collect()
        };
        assert_eq!(bin_of(0.0), vec![0]);
        assert_eq!(bin_of(0.5), vec![1]);
        assert_eq!(bin_of(0.8999), vec![1]);
        assert_eq!(bin_of(0.9), vec![2]);
        assert_eq!(bin_of(1.0), vec![2]);
        assert!(bin_of(-0.1).is_empty());
    }

    #[test]
    fn slope_of_a_line_and_of_degenerate_inputs() {
        assert!((slope(&[(1.0, 3.0), (2.0, 5.0), (4.0, 9.0)]) - 2.0).abs() < 1e-12);
        assert!(slope(&[(1.0, 3.0)]).is_nan());
        assert!(slope(&[(1.0, 3.0), (1.0, 4.0)]).is_nan());
        assert!(slope(&[(1.0, 3.0), (2.0, f64::INFINITY)]).is_nan());
    }

    #[test]
    fn seed_spread_is_a_t_interval_over_seeds() {
        let s = SeedSpread::of(vec![1.0, 2.0, 3.0]);
        assert_eq!(s.mean, Some(2.0));
        // sd 1, se 1/√3, t(2, 0.975) = 4.3027
        let (lo, hi) = s.interval.unwrap();
        assert!((hi - 2.0 - 4.302_652_7 / 3f64.sqrt()).abs() < 1e-5, "{hi}");
        assert!((2.0 - lo - (hi - 2.0)).abs() < 1e-12);
        let one = SeedSpread::of(vec![f64::NAN, 5.0]);
        assert_eq!((one.mean, one.interval), (Some(5.0), None));
    }
}
