//! Bookkeeping of an attack run: success rates per method, budget and class, and the per-model
//! vulnerability summary.

use serde::Serialize;

use super::{InputAttack, LayerDiagnostics, Method};
use crate::report::stats::{quartiles, Quartiles};

/// Successes among attacked inputs of one class.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ClassRate {
    /// Class index.
    pub class: usize,
    /// Correctly classified inputs of this class (attacked).
    pub attacked: usize,
    /// Inputs whose served class changed.
    pub successes: usize,
    /// `successes / attacked` (NaN → null when none attacked).
    pub rate: Option<f64>,
}

/// Success rate of one method at one budget.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MethodRate {
    /// The method.
    pub method: Method,
    /// ε or k.
    pub budget: f64,
    /// Attacked (correctly served) inputs.
    pub attacked: usize,
    /// Inputs whose served class changed.
    pub successes: usize,
    /// `successes / attacked`, none when nothing was attacked.
    pub rate: Option<f64>,
    /// Mean actual `‖x' − x‖₂` over the attacked inputs.
    pub mean_norm: Option<f64>,
    /// The same per true class.
    pub per_class: Vec<ClassRate>,
}

fn rate(s: usize, n: usize) -> Option<f64> {
    (n > 0).then(|| s as f64 / n as f64)
}

/// Tally the outcomes of the attacked (correctly classified) inputs per method and budget, in
/// the order methods and budgets first appear.
pub fn tally(inputs: &[InputAttack], n_classes: usize) -> Vec<MethodRate> {
    let mut keys: Vec<(Method, f64)> = Vec::new();
    for i in inputs.iter().filter(|i| i.correct) {
        for o in &i.outcomes {
            if !keys
                .iter()
                .any(|&(m, b)| m == o.method && b.to_bits() == o.budget.to_bits())
            {
                keys.push((o.method, o.budget));
            }
        }
    }
    keys.into_iter()
        .map(|(m, b)| {
            let mut attacked = vec![0usize; n_classes];
            let mut succ = vec![0usize; n_classes];
            let mut norm_sum = 0.0;
            for i in inputs.iter().filter(|i| i.correct) {
                for o in i
                    .outcomes
                    .iter()
                    .filter(|o| o.method == m && o.budget.to_bits() == b.to_bits())
                {
                    let c = (i.label as usize).min(n_classes.saturating_sub(1));
                    attacked[c] += 1;
                    succ[c] += o.success as usize;
                    norm_sum += o.norm;
                }
            }
            let n: usize = attacked.iter().sum();
            let s: usize = succ.iter().sum();
            MethodRate {
                method: m,
                budget: b,
                attacked: n,
                successes: s,
                rate: rate(s, n),
                mean_norm: (n > 0).then(|| norm_sum / n as f64),
                per_class: (0..n_classes)
                    .map(|c| ClassRate {
                        class: c,
                        attacked: attacked[c],
                        successes: succ[c],
                        rate: rate(succ[c], attacked[c]),
                    })
                    .collect(),
            }
        })
        .collect()
}

/// RG diagnostics of one stability matrix over the inputs.
#[derive(Clone, Debug, Serialize)]
pub struct LayerVulnerability {
    /// `T^{(k)}`.
    pub k: usize,
    /// Count of `|λ(T)| > 1` per input. **Labelling-dependent**: eig(T) changes with the arbitrary
    /// order of hidden units and is a coordinate statement (RG-NOTES §4 item 6, §5 A7).
    pub n_relevant: Quartiles,
    /// Inputs with at least one `|λ(T)| > 1`.
    pub inputs_with_relevant: usize,
    /// Size: the largest `|λ(T)|` per input (labelling-dependent as well).
    pub spectral_radius: Quartiles,
    /// Always true: eig(T) depends on the labelling of hidden units.
    pub labelling_dependent: bool,
    /// Largest canonical correlation (basis-invariant, ≤ 1).
    pub top_canonical_correlation: Quartiles,
    /// `cond(C_kk)`.
    pub cond: Quartiles,
}

/// Per-model vulnerability summary (SPEC §6, §10): the ingredients of a verdict, without one.
///
/// No verdict is drawn: the paper's thresholds are unknown (RG-NOTES §5), and by the
/// data-processing inequality the stochastic ratios are ≤ 1 at every depth, so a threshold on them
/// would not measure depth-driven vulnerability. Compare models on these numbers instead.
#[derive(Clone, Debug, Serialize)]
pub struct Vulnerability {
    /// Inputs analysed (all, correct or not).
    pub inputs: usize,
    /// Top eigenvalue of the direct (stochastic) input-Fisher estimate.
    pub fisher_top_direct: Quartiles,
    /// Top eigenvalue of the mean-field reading's Fisher matrix.
    pub fisher_top_mean_field: Quartiles,
    /// Top eigenvalue of the first-layer bound.
    pub fisher_top_bound: Quartiles,
    /// Per-input ratio direct / bound (≤ 1 up to sampling error, RG-NOTES §4 item 1).
    pub ratio_direct: Quartiles,
    /// Per-input ratio mean-field / bound (not bounded by 1).
    pub ratio_mean_field: Quartiles,
    /// Per stability matrix `T^{(k)}`, k = 2…N.
    pub layers: Vec<LayerVulnerability>,
    /// The ε of the quoted success rates.
    pub reference_epsilon: f64,
    /// Success rate of `fisher` at the reference ε (None when ε was not swept or nothing attacked).
    pub success_fisher: Option<f64>,
    /// Success rate of `pgd` at the reference ε.
    pub success_pgd: Option<f64>,
    /// Success rate of `random` at the reference ε (the floor).
    pub success_random: Option<f64>,
}

/// Summarise per-input attacks into a [`Vulnerability`].
pub fn vulnerability(
    inputs: &[InputAttack],
    rates: &[MethodRate],
    reference_epsilon: f64,
) -> Vulnerability {
    let col =
        |f: &dyn Fn(&InputAttack) -> f64| quartiles(&inputs.iter().map(f).collect::<Vec<_>>());
    let ks: Vec<usize> = inputs
        .first()
        .map(|i| i.layers.iter().map(|l| l.k).collect())
        .unwrap_or_default();
    let layers = ks
        .iter()
        .enumerate()
        .map(|(j, &k)| {
            let ls: Vec<&LayerDiagnostics> =
                inputs.iter().filter_map(|i| i.layers.get(j)).collect();
            let of = |f: &dyn Fn(&LayerDiagnostics) -> Option<f64>| {
                quartiles(&ls.iter().filter_map(|l| f(l)).collect::<Vec<_>>())
            };
            LayerVulnerability {
                k,
                n_relevant: of(&|l| l.n_relevant.map(|n| n as f64)),
                inputs_with_relevant: ls.iter().filter(|l| l.n_relevant.unwrap_or(0) > 0).count(),
                spectral_radius: of(&|l| l.spectral_radius),
                labelling_dependent: true,
                top_canonical_correlation: of(&|l| l.top_canonical_correlation),
                cond: of(&|l| Some(l.cond)),
            }
        })
        .collect();
    let at = |m: Method| {
        rates
            .iter()
            .find(|r| r.method == m && (r.budget - reference_epsilon).abs() < 1e-12)
            .and_then(|r| r.rate)
    };
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    Vulnerability {
        inputs: inputs.len(),
        fisher_top_direct: col(&|i| i.fisher_top_direct),
        fisher_top_mean_field: col(&|i| i.fisher_top_mean_field),
        fisher_top_bound: col(&|i| i.fisher_top_bound),
        ratio_direct: col(&|i| ratio(i.fisher_top_direct, i.fisher_top_bound)),
        ratio_mean_field: col(&|i| ratio(i.fisher_top_mean_field, i.fisher_top_bound)),
        layers,
        reference_epsilon,
        success_fisher: at(Method::Fisher),
        success_pgd: at(Method::Pgd),
        success_random: at(Method::Random),
    }
}
