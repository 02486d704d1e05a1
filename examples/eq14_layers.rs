//! Issue 14 item 1: why deep eq. 14 loses accuracy with depth, measured on the validation view of
//! the digits (the test split is never read).
//!
//! For depths N = 3 and 6, seeds 1, 2, 3, and three eq. 14 schedules that differ only in the rate of
//! the lower RBMs 1…N-1 (`lower_lr_factor` 1, the default's, and 0: lower layers frozen at their
//! greedy CD pretraining), it trains a model and measures at every layer k = 0…N-1 how much class
//! information two kinds of samples carry, by the accuracy of a nearest-class-centroid readout (a
//! lower bound on the information; chance is 0.1):
//!
//! * `up`: `h_k` drawn up the classification network from x (the lower side of the eq. 14 pairs,
//!   and what the served output passes through): centroids from the fitting rows' samples,
//!   accuracy on the validation rows' samples;
//! * `down`: `h_k` drawn down the generation network from the one-hot y (the upper side of RBM k's
//!   eq. 14 pairs, its target): centroids from 150 samples per class, accuracy on 150 others;
//! * `agree`: validation up-samples classified by the down-samples' centroids (do the two sides
//!   of the eq. 14 pairs put the classes in the same places?).
//!
//! It also writes the held-out accuracy after every sweep (the trainer's own early-stopping
//! hold-out). Run: `cargo run --profile dev-opt --example eq14_layers -- OUT_DIR`; writes
//! `OUT_DIR/eq14_layers.json` and `OUT_DIR/eq14_layers.md`.

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rgshield::data::{self, DataSpec, LoadOptions, Split};
use rgshield::model::stack_widths;
use rgshield::sample::{sample_down, sample_up, OutputMode, Predictor};
use rgshield::train::{Method, TrainParams, Trainer};
use rgshield::{DeepRbm, Params};

/// Per-class centroids of `rows` (row-major, `width` columns) with labels `y`.
fn centroids(rows: &[f32], y: &[u32], width: usize, classes: usize) -> Vec<Vec<f64>> {
    let mut c = vec![vec![0.0; width]; classes];
    let mut n = vec![0usize; classes];
    for (r, &l) in rows.chunks_exact(width).zip(y) {
        n[l as usize] += 1;
        for (a, &v) in c[l as usize].iter_mut().zip(r) {
            *a += v as f64;
        }
    }
    for (ci, ni) in c.iter_mut().zip(&n) {
        ci.iter_mut().for_each(|v| *v /= (*ni).max(1) as f64);
    }
    c
}

/// Accuracy of the nearest-centroid readout on `rows` with labels `y`.
fn readout(c: &[Vec<f64>], rows: &[f32], y: &[u32], width: usize) -> f64 {
    let mut right = 0usize;
    for (r, &l) in rows.chunks_exact(width).zip(y) {
        let best = (0..c.len())
            .min_by(|&a, &b| {
                let d = |ci: &[f64]| -> f64 {
                    ci.iter().zip(r).map(|(m, &v)| (m - v as f64).powi(2)).sum()
                };
                d(&c[a]).total_cmp(&d(&c[b]))
            })
            .unwrap_or(0);
        right += usize::from(best == l as usize);
    }
    right as f64 / y.len().max(1) as f64
}

/// Layer k of `x` (k = 0: x itself), one sample per row.
fn up(model: &DeepRbm, s: &Split, k: usize, rng: &mut Xoshiro256PlusPlus) -> Vec<f32> {
    if k == 0 {
        return s.x.clone();
    }
    sample_up(model, &s.x, s.len(), k, rng)
        .pop()
        .map(|l| l.states)
        .unwrap_or_default()
}

/// `per` samples of layer k drawn down from each class's one-hot y, with their labels.
fn down(
    model: &DeepRbm,
    k: usize,
    classes: usize,
    per: usize,
    rng: &mut Xoshiro256PlusPlus,
) -> (Vec<f32>, Vec<u32>) {
    let mut y = vec![0.0f32; classes * per * classes];
    let mut labels = Vec::with_capacity(classes * per);
    for c in 0..classes {
        for i in 0..per {
            y[(c * per + i) * classes + c] = 1.0;
            labels.push(c as u32);
        }
    }
    let layers = sample_down(model, &y, classes * per, k, rng);
    // element 0 is layer N-1, the last is layer k
    (layers.last().map(|l| l.states.clone()).unwrap_or(y), labels)
}

#[derive(serde::Serialize)]
struct Layer {
    k: usize,
    up: f64,
    down: f64,
    agree: f64,
}

#[derive(serde::Serialize)]
struct Run {
    depth: usize,
    lower_lr_factor: f32,
    seed: u64,
    validation_accuracy: f64,
    holdout_by_sweep: Vec<f64>,
    layers: Vec<Layer>,
}

fn median(v: Vec<f64>) -> f64 {
    rgshield::report::stats::median(&v).unwrap_or(f64::NAN)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "docs/results/2026-11-30-train-defaults".into()),
    );
    std::fs::create_dir_all(&out)?;
    let data = data::load(&DataSpec::Digits, &LoadOptions::default())?.validation_view()?;
    let nc = data.n_classes();
    let factors = [1.0f32, 0.05, 0.0];
    let mut runs = Vec::new();
    for depth in [3usize, 6] {
        let widths = stack_widths(data.n_features(), 64, depth, nc);
        for &f in &factors {
            for seed in 1..=3u64 {
                let params = TrainParams {
                    lower_lr_factor: f,
                    ..TrainParams::for_method(Method::Eq14, seed)
                }
                .check()?;
                let (model, outcome) = Trainer::new(&data, &params)?.train(&widths)?;
                let mode = OutputMode::Served {
                    samples: 64,
                    seed: 0,
                };
                let acc = Predictor::new(&model, mode).accuracy(&data.test);
                let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed ^ 0xE914);
                let mut layers = Vec::new();
                for k in 0..depth {
                    let w = if k == 0 { data.n_features() } else { 64 };
                    let fit = up(&model, &data.train, k, &mut rng);
                    let val = up(&model, &data.test, k, &mut rng);
                    let c_up = centroids(&fit, &data.train.y, w, nc);
                    let (d_fit, l_fit) = down(&model, k, nc, 150, &mut rng);
                    let (d_val, l_val) = down(&model, k, nc, 150, &mut rng);
                    let c_down = centroids(&d_fit, &l_fit, w, nc);
                    layers.push(Layer {
                        k,
                        up: readout(&c_up, &val, &data.test.y, w),
                        down: readout(&c_down, &d_val, &l_val, w),
                        agree: readout(&c_down, &val, &data.test.y, w),
                    });
                }
                let holdout_by_sweep = outcome
                    .history
                    .iter()
                    .filter(|h| h.phase == "eq14")
                    .map(|h| h.holdout_accuracy)
                    .collect();
                eprintln!("N={depth} factor={f} seed={seed}: validation {acc:.4}");
                runs.push(Run {
                    depth,
                    lower_lr_factor: f,
                    seed,
                    validation_accuracy: acc,
                    holdout_by_sweep,
                    layers,
                });
            }
        }
    }
    std::fs::write(
        out.join("eq14_layers.json"),
        serde_json::to_string_pretty(&runs)?,
    )?;

    let mut md = String::from(
        "# Eq. 14 with depth: class information per layer (digits:validation)\n\n\
         Written by `cargo run --profile dev-opt --example eq14_layers -- \
         docs/results/2026-11-30-train-defaults` (see the example's doc comment). Nearest-class-\
         centroid readout accuracy (chance 0.10), median over seeds 1, 2, 3. `up`: h_k drawn up \
         from x (validation rows); `down`: h_k drawn down from the one-hot y (RBM k's eq. 14 \
         target); `agree`: validation up-samples read with the down-samples' centroids. \
         `lower_lr_factor` 0 = lower RBMs frozen at their greedy pretraining.\n\n\
         | N | lower_lr_factor | served validation acc (median) | k | up | down | agree |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for depth in [3usize, 6] {
        for &f in &factors {
            let of: Vec<&Run> = runs
                .iter()
                .filter(|r| r.depth == depth && r.lower_lr_factor == f)
                .collect();
            let acc = median(of.iter().map(|r| r.validation_accuracy).collect());
            for k in 0..depth {
                let m = |g: fn(&Layer) -> f64| median(of.iter().map(|r| g(&r.layers[k])).collect());
                md.push_str(&format!(
                    "| {depth} | {f} | {acc:.4} | {k} | {:.3} | {:.3} | {:.3} |\n",
                    m(|l| l.up),
                    m(|l| l.down),
                    m(|l| l.agree)
                ));
            }
        }
    }
    md.push_str(
        "\nHeld-out accuracy (the trainer's early-stopping hold-out) after each eq. 14 sweep, \
         seed 1 (sweep 0 = after pretraining, top RBM still random; training stops after \
         `patience` sweeps without improvement and keeps the best):\n\n",
    );
    for r in runs.iter().filter(|r| r.seed == 1) {
        let c: Vec<String> = r
            .holdout_by_sweep
            .iter()
            .map(|a| format!("{a:.2}"))
            .collect();
        md.push_str(&format!(
            "* N = {}, lower_lr_factor {}: {}\n",
            r.depth,
            r.lower_lr_factor,
            c.join(" ")
        ));
    }
    std::fs::write(out.join("eq14_layers.md"), md)?;
    Ok(())
}
