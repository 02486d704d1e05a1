//! The tables of a cloning run: mean ± sd cells over seeds and paired differences between
//! defences.

use serde::Serialize;

use super::{CloneCell, CloneEvalReport, CloneRow, SeedBaseline};
use crate::report::stats::mean_sd;

/// Mean and sd over seeds of every (defence, strength, attacker) cell, in order of appearance.
pub(crate) fn summarise(rows: &[CloneRow]) -> Vec<CloneCell> {
    let mut keys: Vec<(String, String, u64, String)> = Vec::new();
    for r in rows {
        let k = (
            r.defence.clone(),
            r.defence_kind.clone(),
            r.strength.to_bits(),
            r.attacker.clone(),
        );
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(defence, kind, bits, attacker)| {
            let sel: Vec<&CloneRow> = rows
                .iter()
                .filter(|r| {
                    r.defence == defence && r.strength.to_bits() == bits && r.attacker == attacker
                })
                .collect();
            let f =
                |g: fn(&CloneRow) -> f64| mean_sd(&sel.iter().map(|r| g(r)).collect::<Vec<_>>());
            CloneCell {
                defence,
                defence_kind: kind,
                strength: f64::from_bits(bits),
                attacker,
                seeds: sel.len(),
                clone_accuracy: f(|r| r.clone_accuracy),
                fidelity: f(|r| r.fidelity),
                transfer_success: f(|r| r.transfer_success),
                defended_accuracy: f(|r| r.defended_accuracy),
                changed_argmax: f(|r| r.changed_argmax),
                l1: f(|r| r.l1),
                kl: f(|r| r.kl),
            }
        })
        .collect()
}

/// A paired comparison of two defences over seeds (same seed, attacker and — for two defences
/// with a strength — the same strength: the clones share their initialisation, so the per-seed
/// difference removes most of the clone-to-clone noise).
#[derive(Clone, Debug, Serialize)]
pub struct PairedDifference {
    /// `a − b`, e.g. `rg:P − random`.
    pub defences: (String, String),
    /// The attacker.
    pub attacker: String,
    /// Strength of `a` (and of `b` when it has one).
    pub strength: f64,
    /// Seeds paired.
    pub seeds: usize,
    /// Mean and sd over seeds of the per-seed differences, and the mean over its standard error.
    pub clone_accuracy: (f64, f64, f64),
    /// Transfer success: mean, sd and mean/se of the per-seed differences.
    pub transfer_success: (f64, f64, f64),
    /// Mean L1 distortion of `a` and of `b`.
    pub l1: (f64, f64),
}

/// Paired differences `a − b` for every attacker and strength of `a` (`b` = `none` or `top1`
/// is matched at any strength).
pub fn paired_differences(rows: &[CloneRow], a: &str, b: &str) -> Vec<PairedDifference> {
    let mut keys: Vec<(String, u64)> = Vec::new();
    for r in rows.iter().filter(|r| r.defence_kind == a) {
        let k = (r.attacker.clone(), r.strength.to_bits());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    let strengthless = |k: &str| k == "none" || k == "top1";
    keys.into_iter()
        .filter_map(|(attacker, bits)| {
            let mut dacc = Vec::new();
            let mut dtr = Vec::new();
            let (mut la, mut lb) = (Vec::new(), Vec::new());
            for ra in rows.iter().filter(|r| {
                r.defence_kind == a && r.attacker == attacker && r.strength.to_bits() == bits
            }) {
                // A seed without a partner run is skipped (the cell's `seeds` says how many paired).
                let Some(rb) = rows.iter().find(|r| {
                    r.defence_kind == b
                        && r.attacker == attacker
                        && r.seed == ra.seed
                        && (strengthless(b) || r.strength.to_bits() == bits)
                }) else {
                    continue;
                };
                dacc.push(ra.clone_accuracy - rb.clone_accuracy);
                dtr.push(ra.transfer_success - rb.transfer_success);
                la.push(ra.l1);
                lb.push(rb.l1);
            }
            if dacc.is_empty() {
                return None;
            }
            let with_t = |v: &[f64]| {
                let (m, sd) = mean_sd(v);
                let se = sd / (v.len() as f64).sqrt();
                // A spread at rounding level (identical differences) has no meaningful ratio.
                (m, sd, if se > 1e-9 { m / se } else { f64::NAN })
            };
            Some(PairedDifference {
                defences: (a.to_string(), b.to_string()),
                attacker,
                strength: f64::from_bits(bits),
                seeds: dacc.len(),
                clone_accuracy: with_t(&dacc),
                transfer_success: with_t(&dtr),
                l1: (mean_sd(&la).0, mean_sd(&lb).0),
            })
        })
        .collect()
}

/// The Markdown table of the report: mean ± sd over seeds for every defence × strength × attacker.
pub fn markdown(r: &CloneEvalReport) -> String {
    let head = format!(
        "clone-eval: victim {:?} on {}, budget {}, seeds {:?}, transfer at L2 = {}\n\n",
        r.victim_widths, r.dataset, r.config.budget, r.config.seeds, r.config.transfer_epsilon
    );
    tables(&head, &r.baselines, &r.rows)
}

/// The rows and baselines of a written `clone_eval.json` (for [`tables`] without rerunning).
#[derive(serde::Deserialize)]
pub struct SavedRows {
    /// Per-seed baselines.
    pub baselines: Vec<SeedBaseline>,
    /// The clone rows.
    pub rows: Vec<CloneRow>,
}

/// The Markdown tables of a run from its rows: the mean ± sd cells and the paired differences of
/// each `rg` defence against `random` and `none`.
pub fn tables(head: &str, baselines: &[SeedBaseline], rows: &[CloneRow]) -> String {
    // One seed has no spread: say n = 1 rather than print ± 0.000.
    let pm_n = |v: (f64, f64), n: usize| {
        if n == 1 {
            format!("{:.3} (n = 1)", v.0)
        } else {
            format!("{:.3} ± {:.3}", v.0, v.1)
        }
    };
    let mut s = head.to_string();
    let cells = summarise(rows);
    let r = SavedRows {
        baselines: baselines.to_vec(),
        rows: rows.to_vec(),
    };
    let b: Vec<f64> = r.baselines.iter().map(|b| b.victim_self_success).collect();
    let rnd: Vec<f64> = r.baselines.iter().map(|b| b.random_success).collect();
    s += &format!(
        "transfer references (independent of the defence): attack built on the victim itself {}, random direction {}\n\n",
        pm_n(mean_sd(&b), b.len()),
        pm_n(mean_sd(&rnd), rnd.len())
    );
    s += "| defence | strength | attacker | clone acc | fidelity | transfer | victim acc (defended) | changed argmax | L1 | KL |\n|---|---|---|---|---|---|---|---|---|---|\n";
    for c in &cells {
        let pm = |v| pm_n(v, c.seeds);
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.3} | {:.4} | {:.4} |\n",
            c.defence_kind,
            c.strength,
            c.attacker,
            pm(c.clone_accuracy),
            pm(c.fidelity),
            pm(c.transfer_success),
            pm(c.defended_accuracy),
            c.changed_argmax.0,
            c.l1.0,
            c.kl.0
        );
    }
    let mut kinds: Vec<&str> = r.rows.iter().map(|x| x.defence_kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let mut pairs = Vec::new();
    for a in kinds.iter().filter(|k| k.starts_with("rg")) {
        for b in ["random", "none"] {
            pairs.extend(paired_differences(&r.rows, a, b));
        }
    }
    if !pairs.is_empty() {
        s += "\npaired differences over seeds (same seed, attacker and clone initialisation): mean ± sd [mean/se]\n\n\
              | a − b | attacker | strength | Δ clone acc | Δ transfer | L1 of a, b |\n|---|---|---|---|---|---|\n";
        // One pair has no spread and no standard error: n = 1 instead of ± 0.000 [NaN].
        let diff = |d: (f64, f64, f64), n: usize| {
            if n == 1 {
                format!("{:+.3} (n = 1)", d.0)
            } else {
                format!("{:+.3} ± {:.3} [{:+.1}]", d.0, d.1, d.2)
            }
        };
        for p in &pairs {
            s += &format!(
                "| {} − {} | {} | {} | {} | {} | {:.4}, {:.4} |\n",
                p.defences.0,
                p.defences.1,
                p.attacker,
                p.strength,
                diff(p.clone_accuracy, p.seeds),
                diff(p.transfer_success, p.seeds),
                p.l1.0,
                p.l1.1
            );
        }
    }
    s
}
