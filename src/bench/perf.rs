//! `rgshield bench perf`: rgshield beside the machine's limit and beside its peers, as ratios
//! measured in the same run (these 2-core machines are noisy; absolute times are not comparable
//! across runs). Each measurement is a [`PerfJob`] run in its own child process, so the peak
//! memory it reports (`VmHWM`) is its own; the numpy / scikit-learn references in
//! `benches/reference/` run as python processes on the same inputs and report theirs.
//!
//! What is compared (README "Performance", `docs/performance.md`):
//! 1. sampling: the ancestral up-pass (eq. 2) beside the bare f32 GEMMs of the same shapes, in the
//!    same chunking and threads — the rate the pass would have if drawing cost nothing;
//! 2. correlators: `bench rg`'s bit-packed path beside the f64 GEMM path and beside numpy (same
//!    states, results compared);
//! 3. training: CD-1 epochs of one RBM beside scikit-learn's `BernoulliRBM` on the same data, sizes,
//!    batch and learning rate; optionally the full eq. 14 training of a stack;
//! 4. a scaling table: each workload with the samples, the width and the depth doubled.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::npy;
use super::rg::{rg_bench, rg_bench_states, time_bitpacked, RgBenchConfig};
use crate::data::{self, DataSpec, Dataset, LoadOptions};
use crate::error::{Error, Result};
use crate::linalg::gemm_abt;
use crate::model::{DeepRbm, Rbm};
use crate::params::Params;
use crate::sample::{sample_up, LaneRng, CHUNK};
use crate::train::{cd_epoch, CdParams, Method, TrainParams, Trainer, Velocity};
use crate::util::mix_seed;

/// Goal of the up-pass: at least this fraction of the bare-GEMM rate on the same shapes.
pub const SAMPLING_GOAL: f64 = 0.5;
/// Goal of the correlators against numpy (and against the f64 GEMM path): this many times faster.
pub const CORRELATOR_GOAL: f64 = 5.0;
/// Goal of a CD-1 epoch against scikit-learn's `BernoulliRBM`.
pub const CD_GOAL: f64 = 3.0;

/// One measurement, run in a child process (`rgshield bench perf-job --job JSON`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "job", rename_all = "kebab-case")]
pub enum PerfJob {
    /// Ancestral up-pass of `samples` random binary inputs through a random stack `widths`
    /// (chunks of [`CHUNK`] in parallel, as the estimators run it), beside the same GEMMs alone.
    Sampling {
        /// Widths of the random stack.
        widths: Vec<usize>,
        /// Inputs sampled up the stack.
        samples: usize,
        /// Repetitions (at least 10; the up-pass and the GEMMs alternate, the fastest of each is
        /// kept).
        reps: usize,
        /// Seed of the stack and the inputs.
        seed: u64,
    },
    /// `bench rg` at `width` (order 2) and `samples`; with `dump`, the two layers' states and the
    /// bit-packed correlators are written there as `.npy` for the numpy reference.
    Correlators {
        /// Width of both layers.
        width: usize,
        /// Ancestral samples S.
        samples: usize,
        /// Repetitions (the fastest is kept).
        reps: usize,
        /// Seed of the stack and the samples.
        seed: u64,
        /// Where to write the states and correlators for the numpy reference.
        dump: Option<PathBuf>,
    },
    /// The bit-packed path of `bench rg` alone (pack both layers, `C_kk` and `C_k,k-1`), so that
    /// the process's peak memory is that path's.
    BitPacked {
        /// Width of both layers.
        width: usize,
        /// Ancestral samples S.
        samples: usize,
        /// Repetitions (the fastest is kept).
        reps: usize,
        /// Seed of the stack and the samples.
        seed: u64,
    },
    /// `epochs` CD-1 epochs (no momentum, no weight decay: scikit-learn's rule) of one RBM
    /// `n_features → hidden` on the training split of `data`; with `dump`, the training inputs
    /// are written there as `x.npy` for the scikit-learn reference.
    CdEpoch {
        /// Data set (as `--data`).
        data: String,
        /// k×k pooling of the images.
        pool: usize,
        /// Keep only the first n training rows.
        max_train: Option<usize>,
        /// Hidden units of the RBM.
        hidden: usize,
        /// Minibatch size.
        batch: usize,
        /// Learning rate.
        lr: f32,
        /// Epochs timed.
        epochs: usize,
        /// Seed of the initialisation and the minibatch order.
        seed: u64,
        /// Where to write the training inputs for the scikit-learn reference.
        dump: Option<PathBuf>,
    },
    /// Full training of `widths` on `data` with the method's documented defaults.
    Train {
        /// Data set (as `--data`).
        data: String,
        /// k×k pooling of the images.
        pool: usize,
        /// Keep only the first n training rows.
        max_train: Option<usize>,
        /// Widths of the trained stack.
        widths: Vec<usize>,
        /// Training method (its documented defaults).
        method: Method,
        /// Training seed.
        seed: u64,
    },
}

impl PerfJob {
    /// Estimated peak memory of the job on `threads` threads, in bytes, for the jobs whose size
    /// the job itself states: the up-pass (the model, the S inputs, and per thread a chunk of the
    /// pass and of the bare GEMMs, [`crate::sample::estimated_bytes`] each), the correlators
    /// ([`super::rg::rg_bench_bytes`]) and the bit-packed path ([`super::rg::bitpacked_bytes`]).
    /// `None` for the CD epoch and the full training, whose size depends on the data set they
    /// load, and on overflow (`u64::MAX` then, so that any budget refuses it).
    pub fn estimated_bytes(&self, threads: usize) -> Option<u64> {
        let sized = match self {
            PerfJob::Sampling {
                widths, samples, ..
            } => (|| {
                let inputs = (*widths.first()? as u64)
                    .checked_mul(*samples as u64)?
                    .checked_mul(4)?;
                crate::model::estimated_bytes(widths)?
                    .checked_add(inputs)?
                    .checked_add(crate::sample::estimated_bytes(widths, threads)?.checked_mul(2)?)
            })(),
            PerfJob::Correlators { width, samples, .. } => {
                super::rg::rg_bench_bytes(*width, *samples)
            }
            PerfJob::BitPacked { width, samples, .. } => {
                super::rg::bitpacked_bytes(*width, *samples)
            }
            PerfJob::CdEpoch { .. } | PerfJob::Train { .. } => return None,
        };
        Some(sized.unwrap_or(u64::MAX))
    }
}

/// What a job measured: named numbers (seconds, rates, accuracies) and the child's peak memory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PerfOutcome {
    /// The job that ran.
    pub job: PerfJob,
    /// Its measurements by name.
    pub metrics: BTreeMap<String, f64>,
    /// Peak resident set size of the process that ran the job (`VmHWM`), if readable.
    pub max_rss_bytes: Option<u64>,
}

impl PerfOutcome {
    /// A metric the job always writes; an error names it if missing.
    pub fn metric(&self, name: &str) -> Result<f64> {
        self.metrics
            .get(name)
            .copied()
            .ok_or_else(|| Error::invalid(format!("bench perf: job result lacks metric '{name}'")))
    }
}

/// Peak resident set size of this process (`VmHWM` of `/proc/self/status`), in bytes.
pub fn max_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn load(data: &str, pool: usize, max_train: Option<usize>) -> Result<Dataset> {
    let spec: DataSpec = data.parse()?;
    let opts = LoadOptions {
        pool,
        max_train,
        max_test: None,
        ..LoadOptions::default()
    };
    Ok(data::load(&spec, &opts)?)
}

/// Run one job in this process.
pub fn run_job(job: &PerfJob) -> Result<PerfOutcome> {
    let metrics = match job {
        PerfJob::Sampling {
            widths,
            samples,
            reps,
            seed,
        } => sampling(widths, *samples, *reps, *seed)?,
        PerfJob::Correlators {
            width,
            samples,
            reps,
            seed,
            dump,
        } => {
            let r = rg_bench(&RgBenchConfig {
                width: *width,
                samples: *samples,
                seed: *seed,
                reps: *reps,
                dump: dump.clone(),
            })?;
            let v = serde_json::to_value(&r)
                .map_err(|e| Error::invalid(format!("bench rg report: {e}")))?;
            v.as_object()
                .into_iter()
                .flatten()
                .filter_map(|(k, v)| v.as_f64().map(|x| (k.clone(), x)))
                .collect()
        }
        PerfJob::BitPacked {
            width,
            samples,
            reps,
            seed,
        } => {
            let (basis, lo, hi) = rg_bench_states(*width, *samples, *seed)?;
            let t = time_bitpacked(&basis, &lo, &hi, *samples, *reps)?;
            let mut m = BTreeMap::new();
            m.insert("pack_seconds".into(), t.pack_seconds);
            m.insert("bitpacked_seconds".into(), t.bitpacked_seconds);
            m.insert("operators".into(), t.ckk.nrows() as f64);
            m
        }
        PerfJob::CdEpoch {
            data,
            pool,
            max_train,
            hidden,
            batch,
            lr,
            epochs,
            seed,
            dump,
        } => {
            let d = load(data, *pool, *max_train)?;
            cd_epochs(&d, *hidden, *batch, *lr, *epochs, *seed, dump.as_deref())?
        }
        PerfJob::Train {
            data,
            pool,
            max_train,
            widths,
            method,
            seed,
        } => {
            let d = load(data, *pool, *max_train)?;
            let cfg = TrainParams::for_method(*method, *seed).check()?;
            let t0 = Instant::now();
            let (model, outcome) = Trainer::new(&d, &cfg)?.train(widths)?;
            let seconds = t0.elapsed().as_secs_f64();
            let mf = crate::sample::Predictor::new(&model, crate::sample::OutputMode::MeanField);
            let mut m = BTreeMap::new();
            m.insert("seconds".into(), seconds);
            m.insert("holdout_accuracy".into(), outcome.holdout_accuracy);
            m.insert("test_accuracy_mean_field".into(), mf.accuracy(&d.test));
            m
        }
    };
    Ok(PerfOutcome {
        job: job.clone(),
        metrics,
        max_rss_bytes: max_rss_bytes(),
    })
}

/// The up-pass beside its GEMMs: `unit_updates` = samples × Σ_k n_k over RBMs 1…N.
fn sampling(
    widths: &[usize],
    samples: usize,
    reps: usize,
    seed: u64,
) -> Result<BTreeMap<String, f64>> {
    use rand::RngExt;
    if samples == 0 {
        return Err(Error::invalid("bench perf: sampling with 0 samples"));
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let n0 = widths.first().copied().unwrap_or(0);
    let model = DeepRbm::random(widths, 1.0 / (n0.max(1) as f32).sqrt(), &mut rng)?;
    let x: Vec<f32> = (0..samples * n0)
        .map(|_| if rng.random::<bool>() { 1.0 } else { 0.0 })
        .collect();
    let depth = model.depth();
    // A pass takes milliseconds (the bare GEMMs of a width-64 stack ~5 ms at S = 20 000): the
    // fastest of at least 10 keeps timer and scheduler noise out of the ratio. The two passes
    // alternate, so that both see the same drift of a shared machine (timed one after the other,
    // the ratio of the same binary ranged 0.23–0.78 on a loaded 2-core VM).
    let reps = reps.max(10);
    let up_pass = || -> f64 {
        x.par_chunks(CHUNK * n0)
            .enumerate()
            .map(|(c, xc)| {
                let mut r = LaneRng::seed_from_u64(mix_seed(seed, c as u64));
                let layers = sample_up(&model, xc, xc.len() / n0, depth, &mut r);
                layers
                    .last()
                    .map_or(0.0, |l| l.states.iter().map(|&v| v as f64).sum::<f64>())
            })
            .sum::<f64>()
    };
    let gemms = || -> f64 {
        x.par_chunks(CHUNK * n0)
            .map(|xc| {
                let b = xc.len() / n0;
                let mut below: Vec<f32> = Vec::new();
                for k in 1..=depth {
                    let r: &Rbm = model.rbm(k);
                    let input: &[f32] = if k == 1 { xc } else { &below };
                    // The same zeroed output buffer per layer as the pass's probabilities.
                    let mut out = vec![0.0f32; b * r.n_up];
                    gemm_abt(&mut out, input, &r.w, b, r.n_down, r.n_up);
                    below = out;
                }
                below.first().copied().unwrap_or(0.0) as f64
            })
            .sum::<f64>()
    };
    let (mut sample_seconds, mut gemm_seconds, mut ones) = (f64::INFINITY, f64::INFINITY, 0.0);
    for _ in 0..reps {
        let t0 = Instant::now();
        ones = up_pass();
        sample_seconds = sample_seconds.min(t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        std::hint::black_box(gemms());
        gemm_seconds = gemm_seconds.min(t0.elapsed().as_secs_f64());
    }
    let units: usize = widths[1..].iter().sum();
    let macs: usize = widths.windows(2).map(|w| w[0] * w[1]).sum();
    let unit_updates = (samples * units) as f64;
    let mut m = BTreeMap::new();
    m.insert("sample_seconds".into(), sample_seconds);
    m.insert("gemm_seconds".into(), gemm_seconds);
    m.insert("unit_updates".into(), unit_updates);
    m.insert("unit_updates_per_s".into(), unit_updates / sample_seconds);
    m.insert(
        "gemm_unit_updates_per_s".into(),
        unit_updates / gemm_seconds,
    );
    m.insert(
        "gemm_gflops".into(),
        2.0 * (samples * macs) as f64 / gemm_seconds / 1e9,
    );
    m.insert("ratio".into(), gemm_seconds / sample_seconds);
    m.insert(
        "top_layer_mean".into(),
        ones / (samples * widths[widths.len() - 1]) as f64,
    );
    m.insert("threads".into(), rayon::current_num_threads() as f64);
    Ok(m)
}

/// `epochs` CD-1 epochs of a fresh RBM on `d`'s training inputs; seconds per epoch (mean) and
/// the pseudo-log-likelihood of the first 1000 rows after training (scikit-learn's
/// `score_samples`: one random unit flipped per row, `n · log σ(F(ṽ) − F(v))`).
fn cd_epochs(
    d: &Dataset,
    hidden: usize,
    batch: usize,
    lr: f32,
    epochs: usize,
    seed: u64,
    dump: Option<&Path>,
) -> Result<BTreeMap<String, f64>> {
    let (x, n) = (&d.train.x, d.train.n_features);
    let rows = d.train.len();
    if rows == 0 || epochs == 0 || hidden == 0 || batch == 0 {
        return Err(Error::invalid(format!(
            "bench perf: CD epoch needs rows, epochs, hidden and batch ≥ 1 (got {rows}, {epochs}, {hidden}, {batch})"
        )));
    }
    if let Some(dir) = dump {
        npy::write_u8(&dir.join("x.npy"), x, rows, n)?;
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut rbm = Rbm::random(n, hidden, 0.01, &mut rng)?;
    let mut vel = Velocity::new(&rbm);
    let p = CdParams {
        lr,
        momentum: 0.0,
        weight_decay: 0.0,
        steps: 1,
    };
    let t0 = Instant::now();
    for _ in 0..epochs {
        cd_epoch(&mut rbm, &mut vel, x, batch, &p, &mut rng);
    }
    let seconds_per_epoch = t0.elapsed().as_secs_f64() / epochs as f64;
    let mut m = BTreeMap::new();
    m.insert("seconds_per_epoch".into(), seconds_per_epoch);
    m.insert("rows".into(), rows as f64);
    m.insert("n_visible".into(), n as f64);
    m.insert(
        "pseudo_likelihood".into(),
        pseudo_likelihood(&rbm, x, rows.min(1000), &mut rng),
    );
    Ok(m)
}

/// Free energy `F(v) = −b·v − Σ_j softplus(a_j + W_j·v)` of one visible row.
fn free_energy(rbm: &Rbm, v: &[f32]) -> f64 {
    let vis: f64 = rbm.b.iter().zip(v).map(|(&b, &x)| (b * x) as f64).sum();
    let hid: f64 = rbm
        .w
        .chunks_exact(rbm.n_down)
        .zip(&rbm.a)
        .map(|(w, &a)| {
            let z = a as f64 + w.iter().zip(v).map(|(&w, &x)| (w * x) as f64).sum::<f64>();
            z.max(0.0) + (-z.abs()).exp().ln_1p()
        })
        .sum();
    -vis - hid
}

fn pseudo_likelihood(rbm: &Rbm, x: &[f32], rows: usize, rng: &mut Xoshiro256PlusPlus) -> f64 {
    use rand::RngExt;
    let n = rbm.n_down;
    let mut total = 0.0;
    for v in x.chunks_exact(n).take(rows) {
        let mut flipped = v.to_vec();
        let i = rng.random_range(0..n);
        flipped[i] = 1.0 - flipped[i];
        let delta = free_energy(rbm, &flipped) - free_energy(rbm, v);
        // n · log σ(Δ), computed stably.
        total += n as f64 * -((-delta).max(0.0) + (-delta.abs()).exp().ln_1p());
    }
    total / rows.max(1) as f64
}

/// Settings of `rgshield bench perf`.
#[derive(Clone, Debug)]
pub struct PerfConfig {
    /// Data set of the training comparison (Fashion-MNIST in the issue).
    pub data: String,
    /// Training rows of the CD comparison (None = the whole split).
    pub max_train: Option<usize>,
    /// Hidden units of the CD comparison's RBM.
    pub cd_hidden: usize,
    /// Minibatch size of the CD comparison.
    pub cd_batch: usize,
    /// Learning rate of the CD comparison.
    pub cd_lr: f32,
    /// CD epochs timed.
    pub cd_epochs: usize,
    /// Samples of the sampling and correlator comparisons.
    pub samples: usize,
    /// Repetitions of each timing (the fastest is reported).
    pub reps: usize,
    /// Seed of the random stacks and samples.
    pub seed: u64,
    /// `benches/reference/` (setup.sh, correlators.py, bernoulli_rbm.py).
    pub reference_dir: PathBuf,
    /// Skip the python references.
    pub no_reference: bool,
    /// Also run the scaling table.
    pub scaling: bool,
    /// Also run the full eq. 14 training of `n_features-256-256-classes` (long).
    pub full_training: bool,
    /// Scratch directory for the exchanged `.npy` files.
    pub work_dir: PathBuf,
    /// The thread count our jobs run with (`--threads`); the numpy reference gets the same.
    /// None: all cores for both.
    pub threads: Option<usize>,
}

/// A reference (python) run: its JSON line, or why it did not run.
#[derive(Clone, Debug, Serialize)]
pub struct ReferenceRun {
    /// What the reference measured.
    pub what: String,
    /// Its JSON result line.
    pub result: Option<serde_json::Value>,
    /// Why it did not run, when it did not.
    pub unavailable: Option<String>,
}

/// One headline comparison of the table.
#[derive(Clone, Debug, Serialize)]
pub struct PerfRow {
    /// The workload measured.
    pub workload: String,
    /// Our figure.
    pub ours: String,
    /// The reference's figure.
    pub reference: String,
    /// reference time / our time (> 1: we are faster), or our rate / the limit's rate.
    pub ratio: Option<f64>,
    /// The goal of the ratio, when there is one.
    pub goal: Option<f64>,
    /// Our job's peak memory.
    pub max_rss_bytes: Option<u64>,
    /// The reference's peak memory.
    pub reference_max_rss_bytes: Option<u64>,
    /// How the ratio was formed and anything to know about the row.
    pub note: String,
}

/// One line of the scaling table: a workload with one size doubled.
#[derive(Clone, Debug, Serialize)]
pub struct ScalingRow {
    /// The workload.
    pub workload: String,
    /// Which size was doubled.
    pub doubled: String,
    /// Seconds at the base size.
    pub base_seconds: f64,
    /// Seconds with the size doubled.
    pub seconds: f64,
    /// `seconds / base_seconds`.
    pub time_factor: f64,
    /// The factor (or range) the operation count predicts.
    pub expected: String,
    /// Peak memory at the base size.
    pub base_max_rss_bytes: Option<u64>,
    /// Peak memory with the size doubled.
    pub max_rss_bytes: Option<u64>,
}

/// Everything `bench perf` measured.
#[derive(Clone, Debug, Serialize)]
pub struct PerfReport {
    /// The CPU, as `/proc/cpuinfo` names it.
    pub machine: String,
    /// rayon threads.
    pub threads: usize,
    /// The headline comparisons.
    pub rows: Vec<PerfRow>,
    /// The scaling table.
    pub scaling: Vec<ScalingRow>,
    /// Every job's outcome.
    pub outcomes: Vec<PerfOutcome>,
    /// The python reference runs.
    pub references: Vec<ReferenceRun>,
    /// Optional measurements that failed (the run went on without them).
    pub failures: Vec<String>,
}

/// The CPU model of `/proc/cpuinfo` and the core count.
pub fn machine_description() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cores} cores")
}

/// The python interpreter with numpy and scikit-learn: the last stdout line of
/// `reference_dir/setup.sh` (which makes a local venv if needed).
fn reference_python(reference_dir: &Path) -> std::result::Result<PathBuf, String> {
    let setup = reference_dir.join("setup.sh");
    if !setup.is_file() {
        return Err(format!("{} not found", setup.display()));
    }
    let out = Command::new("bash")
        .arg(&setup)
        .output()
        .map_err(|e| format!("{}: {e}", setup.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            setup.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .map(|l| PathBuf::from(l.trim()))
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| format!("{} printed no interpreter", setup.display()))
}

/// Run a reference script; its last stdout line is a JSON object.
/// The JSON value on the last line of a child's stdout (the protocol of `bench perf-job` and of
/// the python references); the error names `what` and quotes the line.
pub fn last_json_line<T: serde::de::DeserializeOwned>(
    stdout: &str,
    what: &str,
) -> std::result::Result<T, String> {
    let line = stdout.lines().last().unwrap_or("");
    serde_json::from_str(line).map_err(|e| format!("{what}: bad result line '{line}': {e}"))
}

/// Run a reference script; its last stdout line is a JSON object. Whatever it wrote to stderr
/// (e.g. scikit-learn's warnings) is kept in the object under `"stderr"`.
fn run_reference(
    python: &Path,
    script: &Path,
    args: &[String],
) -> std::result::Result<serde_json::Value, String> {
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        return Err(format!("{} failed: {stderr}", script.display()));
    }
    let mut v: serde_json::Value = last_json_line(
        &String::from_utf8_lossy(&out.stdout),
        &script.display().to_string(),
    )?;
    if !stderr.is_empty() {
        if let Some(m) = v.as_object_mut() {
            m.insert("stderr".into(), serde_json::Value::String(stderr));
        }
    }
    Ok(v)
}

fn json_f64(v: &serde_json::Value, key: &str) -> Option<f64> {
    v.get(key).and_then(serde_json::Value::as_f64)
}

/// A number the reference must report; the error names the field.
fn json_required(v: &serde_json::Value, key: &str, what: &str) -> std::result::Result<f64, String> {
    json_f64(v, key).ok_or_else(|| format!("{what}: result lacks the number '{key}'"))
}

/// Widths as `784-256-256-10`.
fn dashed(widths: &[usize]) -> String {
    widths
        .iter()
        .map(|w| w.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

/// A field of a reference's JSON line as text (`?` when missing).
fn json_text(v: &serde_json::Value, key: &str) -> String {
    match v.get(key) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(x) => x.to_string(),
        None => "?".into(),
    }
}

fn mib(b: Option<u64>) -> String {
    b.map_or("–".into(), |b| {
        format!("{:.0} MiB", b as f64 / (1u64 << 20) as f64)
    })
}

/// Run the whole benchmark; `run` executes a job (in a child process, for its own peak memory),
/// `log` receives progress lines.
pub fn perf(
    cfg: &PerfConfig,
    run: impl Fn(&PerfJob) -> Result<PerfOutcome>,
    mut log: impl FnMut(&str),
) -> Result<PerfReport> {
    std::fs::create_dir_all(&cfg.work_dir).map_err(|e| Error::io(&cfg.work_dir, e))?;
    let mut rows = Vec::new();
    let mut outcomes = Vec::new();
    // Optional measurements (full training, scaling) that failed; the rest of the run goes on.
    let mut failures = Vec::new();
    let mut references = Vec::new();
    let python = if cfg.no_reference {
        Err("--no-reference".to_string())
    } else {
        log("reference: benches/reference/setup.sh");
        reference_python(&cfg.reference_dir)
    };

    // 1. Sampling beside its GEMMs.
    for widths in [vec![784, 256, 256, 10], vec![64, 64, 64, 64, 64, 64, 10]] {
        log(&format!("sampling {widths:?}"));
        let o = run(&PerfJob::Sampling {
            widths: widths.clone(),
            samples: cfg.samples,
            reps: cfg.reps,
            seed: cfg.seed,
        })?;
        rows.push(PerfRow {
            workload: format!("up-pass {}, S = {}", dashed(&widths), cfg.samples),
            ours: format!(
                "{:.0} M unit updates/s",
                o.metric("unit_updates_per_s")? / 1e6
            ),
            reference: format!(
                "f32 GEMM alone {:.0} M/s ({:.1} GFLOP/s)",
                o.metric("gemm_unit_updates_per_s")? / 1e6,
                o.metric("gemm_gflops")?
            ),
            ratio: Some(o.metric("ratio")?),
            goal: Some(SAMPLING_GOAL),
            max_rss_bytes: o.max_rss_bytes,
            reference_max_rss_bytes: None,
            note: "ratio = our rate / the GEMMs' rate (same shapes, chunks, threads)".into(),
        });
        outcomes.push(o);
    }

    // 2. Correlators: bit-packed beside f64 GEMM (same process) and numpy (same states).
    let dump = cfg.work_dir.join("correlators");
    std::fs::create_dir_all(&dump).map_err(|e| Error::io(&dump, e))?;
    log("correlators, width 64, order 2");
    let o = run(&PerfJob::Correlators {
        width: 64,
        samples: cfg.samples.max(2),
        reps: cfg.reps,
        seed: cfg.seed,
        dump: python.is_ok().then(|| dump.clone()),
    })?;
    let ours_total = o.metric("pack_seconds")? + o.metric("bitpacked_seconds")?;
    let float_total = o.metric("evaluate_seconds")? + o.metric("float_seconds")?;
    let label = format!(
        "C_kk, C_k,k-1: width 64, order 2 ({} operators), S = {}",
        o.metric("operators")?,
        o.metric("samples")?
    );
    let numpy = python.clone().and_then(|py| {
        let v = run_reference(
            &py,
            &cfg.reference_dir.join("correlators.py"),
            &[
                "--hi".into(),
                dump.join("hi.npy").display().to_string(),
                "--lo".into(),
                dump.join("lo.npy").display().to_string(),
                "--reps".into(),
                cfg.reps.to_string(),
                "--save-dir".into(),
                dump.display().to_string(),
            ]
            .into_iter()
            .chain(
                cfg.threads
                    .map(|t| ["--threads".to_string(), t.to_string()])
                    .into_iter()
                    .flatten(),
            )
            .collect::<Vec<_>>(),
        )?;
        let t = json_required(&v, "total_seconds", "correlators.py")?;
        let mut diff = 0.0f64;
        for name in ["ckk", "ckl"] {
            let (_, _, a) =
                npy::read_f64(&dump.join(format!("{name}.npy"))).map_err(|e| e.to_string())?;
            let (_, _, b) =
                npy::read_f64(&dump.join(format!("rust_{name}.npy"))).map_err(|e| e.to_string())?;
            if a.len() != b.len() {
                return Err(format!(
                    "numpy {name} has {} entries, ours {}",
                    a.len(),
                    b.len()
                ));
            }
            diff = a
                .iter()
                .zip(&b)
                .fold(diff, |d, (x, y)| d.max((x - y).abs()));
        }
        Ok((v, diff, t))
    });
    // The bit-packed path alone, after numpy: its own peak memory (the job above also holds the
    // float path's f64 operator matrices), and a second timing, so that ours brackets numpy's
    // (this machine's speed drifts within a run; the fastest of both is compared with numpy).
    let packed_only = run(&PerfJob::BitPacked {
        width: 64,
        samples: cfg.samples.max(2),
        reps: cfg.reps,
        seed: cfg.seed,
    })?;
    let same_process = ours_total;
    rows.push(PerfRow {
        workload: label.clone(),
        ours: format!("{same_process:.3} s bit-packed"),
        reference: format!("{float_total:.3} s f64 GEMM (faer)"),
        ratio: Some(float_total / same_process),
        goal: Some(CORRELATOR_GOAL),
        max_rss_bytes: packed_only.max_rss_bytes,
        reference_max_rss_bytes: o.max_rss_bytes,
        note: format!(
            "timed in one process (its RSS, both paths, is the reference's); max |difference| {:.1e}",
            o.metric("max_abs_difference")?
        ),
    });
    let ours_total = ours_total.min(job_seconds(&packed_only)?);
    match numpy {
        Ok((v, diff, t)) => {
            rows.push(PerfRow {
                workload: label,
                ours: format!("{ours_total:.3} s bit-packed"),
                reference: format!(
                    "{t:.3} s numpy {} ({}, {} threads)",
                    json_text(&v, "numpy"),
                    json_text(&v, "blas"),
                    json_text(&v, "threads")
                ),
                ratio: Some(t / ours_total),
                goal: Some(CORRELATOR_GOAL),
                max_rss_bytes: packed_only.max_rss_bytes,
                reference_max_rss_bytes: json_f64(&v, "max_rss_bytes").map(|b| b as u64),
                note: format!("same states; max |ours − numpy| {diff:.1e}"),
            });
            references.push(ReferenceRun {
                what: "correlators.py".into(),
                result: Some(v),
                unavailable: None,
            });
        }
        Err(e) => references.push(ReferenceRun {
            what: "correlators.py".into(),
            result: None,
            unavailable: Some(e),
        }),
    }
    outcomes.push(o);
    outcomes.push(packed_only);

    // 3. Training: CD-1 epochs beside scikit-learn.
    let cd_dump = cfg.work_dir.join("cd");
    std::fs::create_dir_all(&cd_dump).map_err(|e| Error::io(&cd_dump, e))?;
    log(&format!("CD-1 epochs on {}", cfg.data));
    // Ours and scikit-learn alternately, `reps` rounds, the fastest of each: this machine's
    // speed drifts by tens of per cent within minutes, and alternating keeps the drift out of
    // the ratio.
    let cd_job = |dump: Option<PathBuf>| PerfJob::CdEpoch {
        data: cfg.data.clone(),
        pool: 1,
        max_train: cfg.max_train,
        hidden: cfg.cd_hidden,
        batch: cfg.cd_batch,
        lr: cfg.cd_lr,
        epochs: cfg.cd_epochs,
        seed: cfg.seed,
        dump,
    };
    let sk_args: Vec<String> = vec![
        "--data".into(),
        cd_dump.join("x.npy").display().to_string(),
        "--hidden".into(),
        cfg.cd_hidden.to_string(),
        "--batch".into(),
        cfg.cd_batch.to_string(),
        "--lr".into(),
        cfg.cd_lr.to_string(),
        "--epochs".into(),
        cfg.cd_epochs.to_string(),
        "--seed".into(),
        cfg.seed.to_string(),
        // Our CD epoch runs on one thread (sequential batches, sequential GEMMs); the reference
        // gets the same. (OpenBLAS's default threads on batch-50 products are far slower on this
        // machine: benches/reference/README.md.)
        "--threads".into(),
        "1".into(),
    ];
    let mut best: Option<PerfOutcome> = None;
    let mut sk: std::result::Result<(serde_json::Value, f64), String> = Err("not run".to_string());
    for round in 0..cfg.reps.max(1) {
        let o = run(&cd_job(
            (round == 0 && python.is_ok()).then(|| cd_dump.clone()),
        ))?;
        let faster = match &best {
            None => true,
            Some(b) => job_seconds(&o)? < job_seconds(b)?,
        };
        if faster {
            best = Some(o);
        }
        let this = python.clone().and_then(|py| {
            log("scikit-learn BernoulliRBM");
            let v = run_reference(&py, &cfg.reference_dir.join("bernoulli_rbm.py"), &sk_args)?;
            let t = json_required(&v, "seconds_per_epoch", "bernoulli_rbm.py")?;
            Ok((v, t))
        });
        sk = match (sk, this) {
            (Ok(a), Ok(b)) => Ok(if b.1 < a.1 { b } else { a }),
            (_, this) => this,
        };
    }
    let o = best.ok_or_else(|| Error::invalid("bench perf: no CD round ran"))?;
    let ours = o.metric("seconds_per_epoch")?;
    let label = format!(
        "CD-1 epoch, RBM {}→{} on {} ({} rows), batch {}, lr {}",
        o.metric("n_visible")?,
        cfg.cd_hidden,
        cfg.data,
        o.metric("rows")?,
        cfg.cd_batch,
        cfg.cd_lr
    );
    let pl = o.metric("pseudo_likelihood")?;
    match sk {
        Ok((v, t)) => {
            rows.push(PerfRow {
                workload: label,
                ours: format!("{ours:.2} s/epoch (1 thread)"),
                reference: format!(
                    "{t:.2} s/epoch scikit-learn {} ({} threads, {})",
                    json_text(&v, "sklearn"),
                    json_text(&v, "threads"),
                    json_text(&v, "dtype")
                ),
                ratio: Some(t / ours),
                goal: Some(CD_GOAL),
                max_rss_bytes: o.max_rss_bytes,
                reference_max_rss_bytes: json_f64(&v, "max_rss_bytes").map(|b| b as u64),
                note: format!(
                    "pseudo-log-likelihood after {} epoch(s): ours {pl:.1}, scikit-learn {:.1}{}",
                    cfg.cd_epochs,
                    json_f64(&v, "pseudo_likelihood").unwrap_or(f64::NAN),
                    v.get("stderr")
                        .and_then(|x| x.as_str())
                        .map_or(String::new(), |w| format!("; its stderr: {w}"))
                ),
            });
            references.push(ReferenceRun {
                what: "bernoulli_rbm.py".into(),
                result: Some(v),
                unavailable: None,
            });
        }
        Err(e) => {
            rows.push(PerfRow {
                workload: label,
                ours: format!("{ours:.2} s/epoch (1 thread)"),
                reference: "scikit-learn unavailable".into(),
                ratio: None,
                goal: Some(CD_GOAL),
                max_rss_bytes: o.max_rss_bytes,
                reference_max_rss_bytes: None,
                note: e.clone(),
            });
            references.push(ReferenceRun {
                what: "bernoulli_rbm.py".into(),
                result: None,
                unavailable: Some(e),
            });
        }
    }
    outcomes.push(o);

    if cfg.full_training {
        log("full eq. 14 training (long)");
        let d = load(&cfg.data, 1, cfg.max_train)?;
        let widths = vec![d.n_features(), 256, 256, d.n_classes()];
        drop(d);
        let job = PerfJob::Train {
            data: cfg.data.clone(),
            pool: 1,
            max_train: cfg.max_train,
            widths: widths.clone(),
            method: Method::Eq14,
            seed: cfg.seed,
        };
        match run(&job) {
            Err(e) => {
                log(&format!("full training failed: {e}"));
                failures.push(format!("eq. 14 training {}: {e}", dashed(&widths)));
            }
            Ok(o) => {
                rows.push(PerfRow {
                    workload: format!("eq. 14 training {} on {}", dashed(&widths), cfg.data),
                    ours: format!("{:.0} s", o.metric("seconds")?),
                    reference: "–".into(),
                    ratio: None,
                    goal: None,
                    max_rss_bytes: o.max_rss_bytes,
                    reference_max_rss_bytes: None,
                    note: format!(
                        "documented eq. 14 defaults; test accuracy (mean field) {:.3}",
                        o.metric("test_accuracy_mean_field")?
                    ),
                });
                outcomes.push(o);
            }
        }
    }

    let mut scaling = Vec::new();
    if cfg.scaling {
        for (workload, base, doubled) in scaling_jobs(cfg) {
            log(&format!("scaling: {workload}"));
            let b = match run(&base) {
                Ok(b) => b,
                Err(e) => {
                    failures.push(format!("scaling {workload}: {e}"));
                    continue;
                }
            };
            let bt = job_seconds(&b)?;
            let workload = match b.metrics.get("rows") {
                Some(r) => format!("{workload}, {r} rows"),
                None => workload,
            };
            for d in doubled {
                let o = match run(&d.job) {
                    Ok(o) => o,
                    Err(e) => {
                        failures.push(format!("scaling {workload}, {} doubled: {e}", d.what));
                        continue;
                    }
                };
                let t = job_seconds(&o)?;
                let expected = match d.expected {
                    Expected::Factor(f) => format!("{f:.2}"),
                    Expected::Between(lo, hi) => format!("{lo:.0}–{hi:.0}"),
                    // The rows actually used (a small data set caps both runs at its size).
                    Expected::RowsRatio => format!("{:.2}", o.metric("rows")? / b.metric("rows")?),
                };
                scaling.push(ScalingRow {
                    workload: workload.clone(),
                    doubled: d.what.into(),
                    base_seconds: bt,
                    seconds: t,
                    time_factor: t / bt,
                    expected,
                    base_max_rss_bytes: b.max_rss_bytes,
                    max_rss_bytes: o.max_rss_bytes,
                });
            }
        }
    }

    Ok(PerfReport {
        machine: machine_description(),
        threads: rayon::current_num_threads(),
        rows,
        scaling,
        outcomes,
        references,
        failures,
    })
}

/// The time factor an operation count predicts for a doubling.
enum Expected {
    Factor(f64),
    /// Parts of the work scale differently (e.g. GEMMs ×4, draws ×2 when the width doubles).
    Between(f64, f64),
    /// The ratio of the training rows the two jobs really used.
    RowsRatio,
}

/// A workload with one size doubled, and the time factor its operation count predicts.
struct Doubling {
    what: &'static str,
    job: PerfJob,
    expected: Expected,
}

/// The scaling table's workloads: (name, base job, the base with one size doubled).
fn scaling_jobs(cfg: &PerfConfig) -> Vec<(String, PerfJob, Vec<Doubling>)> {
    let (s, reps, seed) = (cfg.samples, cfg.reps, cfg.seed);
    let sampling = |widths: Vec<usize>, samples: usize| PerfJob::Sampling {
        widths,
        samples,
        reps,
        seed,
    };
    let correlators = |width: usize, samples: usize| PerfJob::BitPacked {
        width,
        samples,
        reps,
        seed,
    };
    let cd = |rows: usize, hidden: usize| PerfJob::CdEpoch {
        data: cfg.data.clone(),
        pool: 1,
        max_train: Some(rows),
        hidden,
        batch: cfg.cd_batch,
        lr: cfg.cd_lr,
        epochs: 1,
        seed,
        dump: None,
    };
    let h = (cfg.cd_hidden / 2).max(1);
    let m = |w: f64| w * (w + 1.0) / 2.0;
    vec![
        (
            "up-pass 256-256-256".into(),
            sampling(vec![256; 3], s / 2),
            vec![
                // Every GEMM and every draw doubles with S; the GEMMs quadruple with the width
                // (the draws double); two more RBMs double everything.
                Doubling {
                    what: "samples",
                    job: sampling(vec![256; 3], s),
                    expected: Expected::Factor(2.0),
                },
                Doubling {
                    what: "width",
                    job: sampling(vec![512; 3], s / 2),
                    expected: Expected::Between(2.0, 4.0),
                },
                Doubling {
                    what: "depth",
                    job: sampling(vec![256; 5], s / 2),
                    expected: Expected::Factor(2.0),
                },
            ],
        ),
        (
            "correlators width 32, order 2".into(),
            correlators(32, s / 2),
            vec![
                Doubling {
                    what: "samples",
                    job: correlators(32, s),
                    expected: Expected::Factor(2.0),
                },
                // m = w(w+1)/2 operators (528 → 2080); the kernels are m² S.
                Doubling {
                    what: "width",
                    job: correlators(64, s / 2),
                    expected: Expected::Factor((m(64.0) / m(32.0)).powi(2)),
                },
            ],
        ),
        (
            format!("CD-1 epoch, hidden {h}"),
            cd(5000, h),
            vec![
                Doubling {
                    what: "samples",
                    job: cd(10_000, h),
                    expected: Expected::RowsRatio,
                },
                Doubling {
                    what: "width",
                    // GEMMs and hidden draws double, visible draws do not.
                    job: cd(5000, 2 * h),
                    expected: Expected::Between(1.0, 2.0),
                },
            ],
        ),
    ]
}

/// The time a job is judged by: the up-pass, the bit-packed correlators (pack + kernel), a CD
/// epoch, or a training run.
fn job_seconds(o: &PerfOutcome) -> Result<f64> {
    match o.job {
        PerfJob::Sampling { .. } => o.metric("sample_seconds"),
        PerfJob::Correlators { .. } | PerfJob::BitPacked { .. } => {
            Ok(o.metric("pack_seconds")? + o.metric("bitpacked_seconds")?)
        }
        PerfJob::CdEpoch { .. } => o.metric("seconds_per_epoch"),
        PerfJob::Train { .. } => o.metric("seconds"),
    }
}

/// The `bench perf` tables (Markdown), goals beside the ratios.
pub fn perf_table(r: &PerfReport) -> String {
    let mut s = format!(
        "bench perf: {} ({} rayon threads)\n\n| workload | rgshield | reference | ratio | goal | max RSS ours / reference | note |\n|---|---|---|---|---|---|---|\n",
        r.machine, r.threads
    );
    for row in &r.rows {
        let (ratio, goal) = match (row.ratio, row.goal) {
            (Some(x), Some(g)) => (
                format!("{x:.2}×"),
                format!("≥ {g}×: {}", if x >= g { "met" } else { "MISSED" }),
            ),
            (Some(x), None) => (format!("{x:.2}×"), "–".into()),
            (None, Some(g)) => ("–".into(), format!("≥ {g}×: not measured")),
            (None, None) => ("–".into(), "–".into()),
        };
        s.push_str(&format!(
            "| {} | {} | {} | {ratio} | {goal} | {} / {} | {} |\n",
            row.workload,
            row.ours,
            row.reference,
            mib(row.max_rss_bytes),
            mib(row.reference_max_rss_bytes),
            row.note
        ));
    }
    for rf in &r.references {
        if let Some(e) = &rf.unavailable {
            s.push_str(&format!("\nreference {} not run: {e}\n", rf.what));
        }
    }
    for f in &r.failures {
        s.push_str(&format!("\nFAILED (left out): {f}\n"));
    }
    if !r.scaling.is_empty() {
        s.push_str(
            "\nScaling (one size doubled; expected = operation count):\n\n| workload | doubled | base (s) | doubled (s) | time factor | expected | max RSS base → doubled |\n|---|---|---|---|---|---|---|\n",
        );
        for row in &r.scaling {
            s.push_str(&format!(
                "| {} | {} | {:.3} | {:.3} | {:.2} | {} | {} → {} |\n",
                row.workload,
                row.doubled,
                row.base_seconds,
                row.seconds,
                row.time_factor,
                row.expected,
                mib(row.base_max_rss_bytes),
                mib(row.max_rss_bytes)
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_memory_estimates() {
        let sampling = |samples| PerfJob::Sampling {
            widths: vec![784, 256, 256, 10],
            samples,
            reps: 1,
            seed: 0,
        };
        let small = sampling(20_000).estimated_bytes(2).unwrap();
        let large = sampling(40_000).estimated_bytes(2).unwrap();
        // 20 000 more inputs of 784 f32 values.
        assert_eq!(large - small, 20_000 * 784 * 4);
        assert_eq!(sampling(usize::MAX).estimated_bytes(2), Some(u64::MAX));
        let corr = PerfJob::Correlators {
            width: 64,
            samples: 20_000,
            reps: 1,
            seed: 0,
            dump: None,
        };
        assert_eq!(
            corr.estimated_bytes(2),
            crate::bench::rg::rg_bench_bytes(64, 20_000)
        );
        let train = PerfJob::Train {
            data: "digits".into(),
            pool: 1,
            max_train: None,
            widths: vec![64, 10],
            method: Method::Hybrid,
            seed: 0,
        };
        assert_eq!(train.estimated_bytes(2), None);
    }

    #[test]
    fn sampling_job_counts_units_and_rates() {
        let o = run_job(&PerfJob::Sampling {
            widths: vec![8, 6, 4],
            samples: 300,
            reps: 1,
            seed: 3,
        })
        .unwrap();
        assert_eq!(o.metric("unit_updates").unwrap(), 300.0 * 10.0);
        let r = o.metric("ratio").unwrap();
        assert!(r.is_finite() && r > 0.0, "{r}");
        let mean = o.metric("top_layer_mean").unwrap();
        assert!((0.0..=1.0).contains(&mean));
        // Linux (the only target of these benches) reports VmHWM; a process holds > 1 MiB.
        assert!(o.max_rss_bytes.expect("VmHWM") > 1 << 20);
    }

    #[test]
    fn free_energy_matches_enumeration_and_pl_is_negative() {
        // F(v) = −log Σ_h exp(−E(v,h)) with E = −aᵀh − bᵀv − hᵀWv: enumerate h for a 3→2 RBM.
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        let mut rbm = Rbm::random(3, 2, 0.8, &mut rng).unwrap();
        rbm.a = vec![0.3, -0.2];
        rbm.b = vec![0.1, -0.4, 0.25];
        let v = [1.0f32, 0.0, 1.0];
        let mut z = 0.0f64;
        for h in 0..4u32 {
            let hv = [(h & 1) as f64, ((h >> 1) & 1) as f64];
            let mut e = 0.0;
            for i in 0..2 {
                e += rbm.a[i] as f64 * hv[i];
                for j in 0..3 {
                    e += hv[i] * rbm.w[i * 3 + j] as f64 * v[j] as f64;
                }
            }
            e += (0..3).map(|j| rbm.b[j] as f64 * v[j] as f64).sum::<f64>();
            z += e.exp();
        }
        assert!((free_energy(&rbm, &v) + z.ln()).abs() < 1e-6);
        let pl = pseudo_likelihood(&rbm, &[1.0, 0.0, 1.0, 0.0, 1.0, 1.0], 2, &mut rng);
        assert!(pl < 0.0 && pl.is_finite());
    }

    #[test]
    fn job_json_round_trips() {
        let j = PerfJob::CdEpoch {
            data: "digits".into(),
            pool: 1,
            max_train: Some(10),
            hidden: 4,
            batch: 5,
            lr: 0.05,
            epochs: 1,
            seed: 0,
            dump: None,
        };
        let s = serde_json::to_string(&j).unwrap();
        assert_eq!(serde_json::from_str::<PerfJob>(&s).unwrap(), j);
    }

    #[test]
    fn cd_job_on_digits_reports_epoch_time_and_rejects_zero_hidden() {
        let mut job = PerfJob::CdEpoch {
            data: "digits".into(),
            pool: 1,
            max_train: Some(200),
            hidden: 8,
            batch: 20,
            lr: 0.05,
            epochs: 2,
            seed: 0,
            dump: None,
        };
        let o = run_job(&job).unwrap();
        assert_eq!(o.metric("rows").unwrap(), 200.0);
        assert_eq!(o.metric("n_visible").unwrap(), 64.0);
        assert!(o.metric("seconds_per_epoch").unwrap() > 0.0);
        if let PerfJob::CdEpoch { hidden, .. } = &mut job {
            *hidden = 0;
        }
        let e = run_job(&job).unwrap_err().to_string();
        assert!(e.contains("hidden"), "{e}");
    }
}
