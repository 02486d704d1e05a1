//! Clone evaluation, second form: the field's protocol as one resumable grid (SPEC §12).
//!
//! A protocol file ([`ProtocolSpec`]) fixes the victims (one per training seed, hybrid rule), the
//! attacker's query pool (never seen by the victim), the evaluation set, the budgets, the attacker
//! seeds, the MLP thief's tuning grid and the cells. A run:
//! 1. trains or loads each victim (`victims/seed-N/`), and serves its answers (S samples) to the
//!    evaluation set and to every pool row some attacker will ask;
//! 2. tunes the MLP thief per budget on *undefended* answers (first victim, first attacker seed,
//!    hold-out agreement) and keeps the choice in `tuning.json` before any defended clone;
//! 3. per victim and defence point, defends every answer once and records what the defence does
//!    to the answers ([`answers::AnswerStats`]: distortion, changed classes, reveal, calibration,
//!    detectability) in `points.jsonl`;
//! 4. per (victim, budget, attacker seed), trains every attacker of every defence point on the
//!    first `1 − h` of the attacker's queries — the first `budget` rows of a permutation of the pool
//!    fixed by the attacker seed, so budgets are nested and every defence sees the same queries and
//!    the same clone initialisation — and appends one row per clone to `rows.jsonl`.
//!
//! Finished cells are never redone: the keys of `points.jsonl` and `rows.jsonl` are read first, so
//! an interrupted run resumes where it stopped and gives the same rows (every number is a function
//! of the seeds, not of the order or the thread count). [`summary`] turns the rows into the tables.

pub mod answers;
pub mod attackers;
pub mod plots;
pub mod spec;
pub mod summary;

pub use attackers::AttackerKind;
pub use spec::{
    Block, GridBlock, MlpTuning, PinnedTraining, ProtocolData, ProtocolSpec, VictimTraining,
};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{self, DataSpec, Dataset, LoadOptions, Split};
use crate::defence::{Defence, DefenceContext, DefenceParams, Key, PoisonCaches, Query};
use crate::error::{Error, Result};
use crate::experiments::query_strategy::{self, Oracle, StrategyParams};
use crate::model::mlp::MlpParams;
use crate::model::DeepRbm;
use crate::params::{Params, Valid};
use crate::perturb::step_to_norm;
use crate::progress::Progress;
use crate::sample::{argmax, OutputMode, Predictor};
use crate::train::{kept_model, subset, train_and_keep, Method, Unrecorded};
use crate::util::{atomic_write, fnv1a64, mix_seed, shuffle};

use answers::AnswerStats;
use attackers::{FittedClone, Received};

/// The public key of the experiment's keyed defences (the same as `clone-eval`'s).
pub const EXPERIMENT_KEY: &str = "rgshield clone-eval";

/// The three splits of a protocol: the victim's training data, the attacker's pool, evaluation.
pub struct Layout {
    /// The victim's data set (train = the victim's rows; test = the evaluation set).
    pub victim: Dataset,
    /// The attacker's query pool.
    pub pool: Split,
}

fn concat(a: &Split, b: &Split) -> Split {
    Split {
        x: [a.x.as_slice(), b.x.as_slice()].concat(),
        y: [a.y.as_slice(), b.y.as_slice()].concat(),
        n_features: a.n_features,
    }
}

/// Stratified order of `labels`: within each class the rows are shuffled (one seeded stream),
/// then all rows are sorted by their relative position `(i + 0.5) / n_c` within their class, so
/// every prefix holds the classes in their overall proportions (ties: by class).
pub fn stratified_order(labels: &[u32], seed: u64) -> Vec<usize> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let classes: BTreeSet<u32> = labels.iter().copied().collect();
    let mut keyed: Vec<(f64, u32, usize)> = Vec::with_capacity(labels.len());
    for c in classes {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        shuffle(&mut idx, &mut rng);
        let n = idx.len() as f64;
        keyed.extend(
            idx.into_iter()
                .enumerate()
                .map(|(r, i)| ((r as f64 + 0.5) / n, c, i)),
        );
    }
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    keyed.into_iter().map(|k| k.2).collect()
}

/// Digits re-split (victim 900, pool 600, evaluation 297).
pub const DIGITS_SPLIT: (usize, usize) = (900, 600);
/// Fashion-MNIST: victim = training rows `[0, 20 000)`, pool = `[20 000, 60 000)`.
pub const FASHION_VICTIM_ROWS: usize = 20_000;

/// The splits of `which` (see [`ProtocolData`]).
pub fn layout(which: ProtocolData) -> Result<Layout> {
    match which {
        ProtocolData::Digits => {
            let d = data::load(&DataSpec::Digits, &LoadOptions::default())?;
            let all = concat(&d.train, &d.test);
            let order = stratified_order(&all.y, data::SPLIT_SEED ^ 0x5EC0);
            let (nv, np) = DIGITS_SPLIT;
            let sorted = |r: std::ops::Range<usize>| {
                let mut v = order[r].to_vec();
                v.sort_unstable();
                subset(&all, &v)
            };
            let train = sorted(0..nv);
            let pool = sorted(nv..nv + np);
            let test = sorted(nv + np..all.len());
            let victim = Dataset {
                name: "digits-protocol".into(),
                fingerprint: data::fingerprint("digits-protocol", &train, &test),
                description: format!(
                    "{}; re-split stratified: victim {nv} / pool {np} / evaluation {}",
                    d.description,
                    test.len()
                ),
                train,
                test,
                ..d
            };
            Ok(Layout { victim, pool })
        }
        ProtocolData::FashionMnist => {
            let mut d = data::load(
                &DataSpec::FashionMnist {
                    dir: PathBuf::from(data::FASHION_MNIST_DIR),
                },
                &LoadOptions::default(),
            )?;
            if d.train.len() <= FASHION_VICTIM_ROWS {
                return Err(Error::invalid(format!(
                    "fashion-mnist has {} training rows (the protocol needs more than {FASHION_VICTIM_ROWS})",
                    d.train.len()
                )));
            }
            let pool_idx: Vec<usize> = (FASHION_VICTIM_ROWS..d.train.len()).collect();
            let pool = subset(&d.train, &pool_idx);
            d.train.truncate(FASHION_VICTIM_ROWS);
            Ok(Layout { victim: d, pool })
        }
    }
}

/// One victim as the run knows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VictimRecord {
    /// Training seed.
    pub seed: u64,
    /// Served accuracy on the evaluation set (S = the protocol's samples).
    pub served_accuracy: f64,
    /// Whether this run trained it (false: loaded from `victims/seed-N/`).
    pub trained_here: bool,
    /// Wall-clock seconds of training (0 when loaded).
    pub seconds: f64,
}

/// The answer-level record of one (victim, defence point).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PointRow {
    /// Victim seed.
    pub victim: u64,
    /// Defence point, e.g. `rg-vertex:objective=B,eps=0.6`.
    pub defence: String,
    /// Its kind.
    pub defence_kind: String,
    /// Its swept knob (0 without one).
    pub strength: f64,
    /// Whether it keeps every class.
    pub keeps_class: bool,
    /// What it does to the answers.
    pub stats: AnswerStats,
}

/// One clone.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CloneRow {
    /// Victim seed.
    pub victim: u64,
    /// Queries.
    pub budget: usize,
    /// Attacker seed.
    pub attacker_seed: u64,
    /// Defence point.
    pub defence: String,
    /// Attacker.
    pub attacker: AttackerKind,
    /// Clone accuracy on the evaluation set (true labels).
    pub clone_accuracy: f64,
    /// Clone class = victim's served class, on the evaluation set.
    pub fidelity: f64,
    /// Victim's served class changed by the clone's input-Fisher direction at the transfer ε
    /// (`null` when not measured).
    pub transfer: Option<f64>,
    /// The clone's agreement with its own hold-out labels.
    pub holdout_agreement: f64,
    /// `distill-select` only: whether it kept the labels-only clone.
    #[serde(default)]
    pub chose_labels: Option<bool>,
    /// Wall-clock seconds (0 for clones shared with another cell).
    pub seconds: f64,
}

impl CloneRow {
    /// The resume key.
    pub fn key(&self) -> String {
        cell_key(
            self.victim,
            self.budget,
            self.attacker_seed,
            &self.defence,
            self.attacker,
        )
    }
}

fn cell_key(v: u64, b: usize, a: u64, d: &str, k: AttackerKind) -> String {
    format!("{v}/{b}/{a}/{d}/{}", k.name())
}

/// The tuned MLP settings of one budget, with the grid's scores.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TuningChoice {
    /// Budget.
    pub budget: usize,
    /// Chosen epochs.
    pub epochs: usize,
    /// Chosen rate.
    pub lr: f64,
    /// `(epochs, lr, hold-out agreement)` of every candidate.
    pub grid: Vec<(usize, f64, f64)>,
}

/// Read a JSON-lines file (missing: empty); a torn last line (a crash mid-write) is dropped.
pub fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::invalid(format!("{}: {e}", path.display()))),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        match serde_json::from_str(l) {
            Ok(v) => out.push(v),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => {
                return Err(Error::invalid(format!(
                    "{} line {}: {e}",
                    path.display(),
                    i + 1
                )))
            }
        }
    }
    Ok(out)
}

/// Appends whole lines to a JSON-lines file, each flushed and synced.
struct Appender {
    file: Mutex<std::fs::File>,
    path: PathBuf,
}

impl Appender {
    fn open(path: &Path) -> Result<Self> {
        // Drop a torn last line left by a crash, so appended lines start clean.
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.is_empty() && !text.ends_with('\n') {
                let keep = text.rfind('\n').map_or(0, |i| i + 1);
                atomic_write(path, &text.as_bytes()[..keep])?;
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
        Ok(Appender {
            file: Mutex::new(file),
            path: path.to_path_buf(),
        })
    }

    fn push<T: Serialize>(&self, v: &T) -> Result<()> {
        let mut line = serde_json::to_string(v)
            .map_err(|e| Error::invalid(format!("{}: {e}", self.path.display())))?;
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
        f.write_all(line.as_bytes())
            .and_then(|_| f.sync_data())
            .map_err(|e| Error::invalid(format!("{}: {e}", self.path.display())))
    }
}

/// The pool rows attacker seed `a` asks, in order (the first `budget` of them for a budget).
pub fn query_order(pool_len: usize, attacker_seed: u64) -> Vec<usize> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(mix_seed(attacker_seed, 0x9E11));
    let mut idx: Vec<usize> = (0..pool_len).collect();
    shuffle(&mut idx, &mut rng);
    idx
}

fn victim_dir(out: &Path, seed: u64) -> PathBuf {
    out.join("victims").join(format!("seed-{seed}"))
}

/// Train (or load) the victim of `seed`: kept in `victims/seed-N/` with its data set and
/// training configuration, reused only when both are this protocol's ([`kept_model`]).
fn victim(
    spec: &ProtocolSpec,
    lay: &Layout,
    out: &Path,
    seed: u64,
    progress: &dyn Progress,
) -> Result<(DeepRbm, bool, f64)> {
    let dir = victim_dir(out, seed);
    let mut params = PinnedTraining::params(spec.training.as_ref(), Method::Hybrid, seed);
    if let Some(e) = spec.victim_training.finetune_epochs {
        params.finetune_epochs = e;
    }
    if let Some(s) = spec.victim_training.sweeps {
        params.sweeps = s;
    }
    let params = params.check()?;
    let remedy = format!("remove {} to train it again", dir.display());
    // The run's protocol.json vouches for the directory: victims kept before rgshield recorded
    // their data set and training (the kept depth-clone runs') are reused on their widths.
    let found = kept_model(
        &dir,
        &spec.victim_widths,
        &lay.victim,
        &params,
        &remedy,
        Unrecorded::ReuseOnWidths,
    )?;
    if let Some((m, _)) = found {
        return Ok((m, false, 0.0));
    }
    let t0 = std::time::Instant::now();
    progress.message(&format!("training victim seed {seed}"));
    // The trainer's own progress bar would replace the run's: it trains without one.
    let quiet = crate::progress::NoProgress;
    let (m, ..) = train_and_keep(&dir, &lay.victim, &spec.victim_widths, &params, &quiet)?;
    Ok((m, true, t0.elapsed().as_secs_f64()))
}

/// Rows `idx` of `s`, row-major.
fn gather(s: &Split, idx: &[usize]) -> Vec<f32> {
    let mut x = Vec::with_capacity(idx.len() * s.n_features);
    for &i in idx {
        x.extend_from_slice(s.row(i));
    }
    x
}

/// Everything one victim needs for its clones: answers honest and defended.
struct VictimAnswers {
    /// Served class of each evaluation input.
    eval_class: Vec<usize>,
    /// Position in the answer arrays of each asked pool row.
    pool_pos: HashMap<usize, usize>,
    /// Per defence point (by name): defended answers to the asked pool rows, in `pool_pos` order.
    defended_pool: BTreeMap<String, Vec<f32>>,
    /// Per defence point (by name): the defence itself (for the adaptive thief's own queries).
    defences: BTreeMap<String, Box<dyn Defence>>,
}

/// Run (or resume) the protocol into `out`.
pub fn run(spec: &Valid<ProtocolSpec>, out: &Path, progress: &dyn Progress) -> Result<()> {
    std::fs::create_dir_all(out).map_err(|e| Error::invalid(format!("{}: {e}", out.display())))?;
    let spec_path = out.join("protocol.json");
    let spec_json = serde_json::to_string_pretty(&**spec)
        .map_err(|e| Error::invalid(format!("protocol: {e}")))?;
    match std::fs::read_to_string(&spec_path) {
        Ok(old) if old != spec_json => {
            return Err(Error::invalid(format!(
                "{} holds another protocol: resume only with the same file (or use a new --out)",
                spec_path.display()
            )))
        }
        Ok(_) => {}
        Err(_) => atomic_write(&spec_path, spec_json.as_bytes())?,
    }
    let lay = layout(spec.data)?;
    let blocks = spec.blocks()?;
    let eval = &lay.victim.test;
    let n_in = eval.n_features;
    let n_out = lay.victim.n_classes();
    let max_budget = *spec.budgets.iter().max().unwrap_or(&0);
    if max_budget > lay.pool.len() {
        return Err(Error::invalid(format!(
            "protocol '{}': budget {max_budget} exceeds the pool of {} rows",
            spec.name,
            lay.pool.len()
        )));
    }
    // Each attacker seed asks the first rows of its order, up to the largest budget it is run at.
    let orders: BTreeMap<u64, Vec<usize>> = spec
        .attacker_seeds
        .iter()
        .map(|&a| {
            let most = blocks
                .iter()
                .filter(|b| b.attacker_seeds.contains(&a))
                .flat_map(|b| b.budgets.iter().copied())
                .chain(std::iter::once(if a == spec.attacker_seeds[0] {
                    max_budget
                } else {
                    0
                }))
                .max()
                .unwrap_or(0);
            (a, query_order(lay.pool.len(), a)[..most].to_vec())
        })
        .collect();
    let mut asked: BTreeSet<usize> = orders.values().flatten().copied().collect();
    // The detectability sets take natural answers beyond the evaluation set from the pool.
    let need_detect = (4 * spec.detect_rows).saturating_sub(eval.len());
    asked.extend((0..lay.pool.len()).take(need_detect));
    let asked: Vec<usize> = asked.into_iter().collect();
    let pool_pos: HashMap<usize, usize> = asked.iter().enumerate().map(|(p, &i)| (i, p)).collect();
    let pool_x = gather(&lay.pool, &asked);

    let points_path = out.join("points.jsonl");
    let rows_path = out.join("rows.jsonl");
    let done_points: BTreeSet<(u64, String)> = read_jsonl::<PointRow>(&points_path)?
        .into_iter()
        .map(|p| (p.victim, p.defence))
        .collect();
    let done_rows: BTreeSet<String> = read_jsonl::<CloneRow>(&rows_path)?
        .iter()
        .map(CloneRow::key)
        .collect();
    let points_out = Appender::open(&points_path)?;
    let rows_out = Appender::open(&rows_path)?;
    let key = Key::public(EXPERIMENT_KEY);
    let mode = OutputMode::Served {
        samples: spec.serve_samples,
        seed: 0,
    };
    let mut victims_seen: Vec<VictimRecord> = read_json_or(&out.join("victims.json"))?;
    let mut tuning: Option<Vec<TuningChoice>> =
        read_json_or::<Vec<TuningChoice>>(&out.join("tuning.json"))
            .map(|v| (!v.is_empty()).then_some(v))?;

    for &v in &spec.victim_seeds {
        let my_blocks: Vec<&Block> = blocks.iter().filter(|b| b.victims.contains(&v)).collect();
        let (model, trained, secs) = victim(spec, &lay, out, v, progress)?;
        let predictor = Predictor::new(&model, mode);
        progress.message(&format!(
            "victim {v}: serving the evaluation set and the pool"
        ));
        let eval_y = predictor.outputs(&eval.x, eval.len());
        let pool_y = predictor.outputs(&pool_x, asked.len());
        let eval_class: Vec<usize> = eval_y.chunks_exact(n_out).map(argmax).collect();
        let served_accuracy = eval_class
            .iter()
            .zip(&eval.y)
            .filter(|(c, &y)| **c == y as usize)
            .count() as f64
            / eval.len() as f64;
        if !victims_seen.iter().any(|r| r.seed == v) {
            victims_seen.push(VictimRecord {
                seed: v,
                served_accuracy,
                trained_here: trained,
                seconds: secs,
            });
            write_json(&out.join("victims.json"), &victims_seen)?;
        }
        // Tuning, once, on the first victim's undefended answers.
        if tuning.is_none() {
            let t = tune(
                spec, &orders, &pool_pos, &pool_x, &pool_y, n_in, n_out, progress,
            )?;
            write_json(&out.join("tuning.json"), &t)?;
            tuning = Some(t);
        }
        let tuning = tuning.as_ref().expect("set above");
        // Defend every answer once per defence point.
        let caches = PoisonCaches::new(
            Some(out.join("caches").join(format!("seed-{v}"))),
            lay.victim.image_shape,
        );
        let ctx = DefenceContext {
            model: &model,
            key: &key,
            caches: &caches,
        };
        let mut points: Vec<DefenceParams> = Vec::new();
        for b in &my_blocks {
            for d in &b.defences {
                if !points.contains(d) {
                    points.push(*d);
                }
            }
        }
        progress.start(&format!("victim {v}: defence points"), points.len() as u64);
        let mut answers = VictimAnswers {
            eval_class,
            pool_pos: pool_pos.clone(),
            defended_pool: BTreeMap::new(),
            defences: BTreeMap::new(),
        };
        let detect_honest: Vec<f32> = [eval_y.as_slice(), pool_y.as_slice()].concat();
        for d in &points {
            let defence = d.build(&ctx)?;
            let defend = |x: &[f32], y: &[f32]| -> Result<Vec<f32>> {
                let rows: Vec<(&[f32], &[f32])> =
                    x.chunks_exact(n_in).zip(y.chunks_exact(n_out)).collect();
                let parts = rows
                    .par_iter()
                    .map(|(xr, yr)| {
                        defence.apply(&Query {
                            x: xr,
                            y: yr,
                            seed: key.query_seed(xr),
                        })
                    })
                    .collect::<Result<Vec<Vec<f32>>>>()?;
                Ok(parts.concat())
            };
            let name = d.to_string();
            let def_eval = defend(&eval.x, &eval_y)?;
            let def_pool = defend(&pool_x, &pool_y)?;
            if !done_points.contains(&(v, name.clone())) {
                let detect_def: Vec<f32> = [def_eval.as_slice(), def_pool.as_slice()].concat();
                let stats = answers::answer_stats(
                    &eval_y,
                    &def_eval,
                    n_out,
                    &eval.y,
                    &detect_honest,
                    &detect_def,
                    spec.detect_rows,
                );
                points_out.push(&PointRow {
                    victim: v,
                    defence: name.clone(),
                    defence_kind: d.kind().to_string(),
                    strength: d.strength().unwrap_or(0.0),
                    keeps_class: d.keeps_class(),
                    stats,
                })?;
            }
            answers.defended_pool.insert(name.clone(), def_pool);
            answers.defences.insert(name, defence);
            progress.inc(1);
        }
        progress.finish();
        for &budget in &spec.budgets {
            let choice = tuning
                .iter()
                .find(|t| t.budget == budget)
                .ok_or_else(|| Error::invalid(format!("tuning.json has no budget {budget}")))?;
            let mlp = MlpParams {
                hidden: spec.mlp.hidden,
                epochs: choice.epochs,
                batch: spec.mlp.batch,
                lr: choice.lr,
                weight_decay: spec.mlp.weight_decay,
            }
            .check()?;
            for &a in &spec.attacker_seeds {
                let mut jobs: BTreeSet<(String, AttackerKind)> = BTreeSet::new();
                for b in my_blocks
                    .iter()
                    .filter(|b| b.budgets.contains(&budget) && b.attacker_seeds.contains(&a))
                {
                    for d in &b.defences {
                        let name = d.to_string();
                        for &k in &b.attackers {
                            if !done_rows.contains(&cell_key(v, budget, a, &name, k)) {
                                jobs.insert((name.clone(), k));
                            }
                        }
                    }
                }
                if jobs.is_empty() {
                    continue;
                }
                let cell = Cell {
                    spec,
                    victim: v,
                    budget,
                    attacker_seed: a,
                    order: &orders[&a][..budget],
                    answers: &answers,
                    eval,
                    predictor: &predictor,
                    mlp: &mlp,
                    n_in,
                    n_out,
                    pool_x: &pool_x,
                    pool: &lay.pool,
                    key: &key,
                };
                progress.start(
                    &format!("victim {v} budget {budget} attacker seed {a}: clones"),
                    jobs.len() as u64,
                );
                cell.run(&jobs, &rows_out, progress)?;
                progress.finish();
            }
        }
    }
    Ok(())
}

fn read_json_or<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T> {
    match std::fs::read_to_string(path) {
        Ok(t) => {
            serde_json::from_str(&t).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(Error::invalid(format!("{}: {e}", path.display()))),
    }
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let s = serde_json::to_vec_pretty(v).map_err(|e| Error::invalid(format!("{e}")))?;
    atomic_write(path, &s)
}

/// The clone seed of a cell: shared by every defence (common random numbers).
fn clone_seed(victim: u64, budget: usize, attacker_seed: u64, k: AttackerKind) -> u64 {
    let base = match k {
        // select reuses the distill clones' seeds through its parts.
        AttackerKind::DistillSelect => AttackerKind::Distill,
        o => o,
    };
    mix_seed(
        mix_seed(victim, attacker_seed),
        mix_seed(budget as u64, fnv1a64(base.name().as_bytes())),
    )
}

/// Tune the MLP's epochs and rate per budget (see the module documentation).
#[allow(clippy::too_many_arguments)]
fn tune(
    spec: &ProtocolSpec,
    orders: &BTreeMap<u64, Vec<usize>>,
    pool_pos: &HashMap<usize, usize>,
    pool_x: &[f32],
    pool_y: &[f32],
    n_in: usize,
    n_out: usize,
    progress: &dyn Progress,
) -> Result<Vec<TuningChoice>> {
    let a = spec.attacker_seeds[0];
    let grid: Vec<(usize, f64)> = spec
        .mlp
        .epochs
        .iter()
        .flat_map(|&e| spec.mlp.lr.iter().map(move |&r| (e, r)))
        .collect();
    progress.start(
        "tuning the MLP thief on undefended answers",
        (grid.len() * spec.budgets.len()) as u64,
    );
    let mut out = Vec::new();
    for &budget in &spec.budgets {
        let (x, y, hx, hy) = received(
            &orders[&a][..budget],
            pool_pos,
            pool_x,
            pool_y,
            n_in,
            n_out,
            spec.holdout_fraction,
        );
        let r = Received {
            x: &x,
            y: &y,
            hold_x: &hx,
            hold_y: &hy,
            n_in,
            n_out,
        };
        let scores = grid
            .par_iter()
            .map(|&(epochs, lr)| {
                let mlp = MlpParams {
                    hidden: spec.mlp.hidden,
                    epochs,
                    batch: spec.mlp.batch,
                    lr,
                    weight_decay: spec.mlp.weight_decay,
                }
                .check()?;
                let seed = clone_seed(spec.victim_seeds[0], budget, a, AttackerKind::Distill);
                let f = attackers::fit(AttackerKind::Distill, &r, &mlp, &[], None, seed)?;
                progress.inc(1);
                Ok((epochs, lr, f.holdout_agreement))
            })
            .collect::<Result<Vec<_>>>()?;
        // Best hold-out agreement; ties go to the earlier candidate (the file's order).
        let best = scores
            .iter()
            .fold(None::<&(usize, f64, f64)>, |b, s| match b {
                Some(b) if b.2 >= s.2 => Some(b),
                _ => Some(s),
            })
            .expect("a non-empty grid");
        out.push(TuningChoice {
            budget,
            epochs: best.0,
            lr: best.1,
            grid: scores.clone(),
        });
    }
    progress.finish();
    Ok(out)
}

/// How many of `n` queries a thief trains on: all but `round(n · holdout_fraction)`, which it
/// holds out (at least one of each).
fn fit_rows(n: usize, holdout_fraction: f64) -> usize {
    n - ((n as f64 * holdout_fraction).round() as usize).clamp(1, n - 1)
}

/// The training part and the hold-out of the queries `order`, with their answers `pool_y`.
fn received(
    order: &[usize],
    pool_pos: &HashMap<usize, usize>,
    pool_x: &[f32],
    pool_y: &[f32],
    n_in: usize,
    n_out: usize,
    holdout_fraction: f64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let n_fit = fit_rows(order.len(), holdout_fraction);
    let take = |rows: &[usize], v: &[f32], w: usize| -> Vec<f32> {
        let mut o = Vec::with_capacity(rows.len() * w);
        for i in rows {
            let p = pool_pos[i];
            o.extend_from_slice(&v[p * w..(p + 1) * w]);
        }
        o
    };
    (
        take(&order[..n_fit], pool_x, n_in),
        take(&order[..n_fit], pool_y, n_out),
        take(&order[n_fit..], pool_x, n_in),
        take(&order[n_fit..], pool_y, n_out),
    )
}

/// One (victim, budget, attacker seed) group of clones.
struct Cell<'a> {
    spec: &'a ProtocolSpec,
    victim: u64,
    budget: usize,
    attacker_seed: u64,
    order: &'a [usize],
    answers: &'a VictimAnswers,
    eval: &'a Split,
    predictor: &'a Predictor<'a>,
    mlp: &'a Valid<MlpParams>,
    n_in: usize,
    n_out: usize,
    /// The asked pool rows, in answer order.
    pool_x: &'a [f32],
    /// The whole pool (the adaptive thief draws from it).
    pool: &'a Split,
    /// The experiment's key (the defences' per-query seeds).
    key: &'a Key,
}

/// The victim behind a defence, as the adaptive thief queries it; the first error is kept.
struct DefendedOracle<'a> {
    predictor: &'a Predictor<'a>,
    defence: &'a dyn Defence,
    key: &'a Key,
    error: Option<Error>,
}

impl Oracle for DefendedOracle<'_> {
    fn answer(&mut self, x: &[f32]) -> Vec<f32> {
        let y = self.predictor.output(x);
        match self.defence.apply(&Query {
            x,
            y: &y,
            seed: self.key.query_seed(x),
        }) {
            Ok(a) => a,
            Err(e) => {
                self.error.get_or_insert(e);
                y
            }
        }
    }
}

/// What a clone measured.
#[derive(Clone)]
struct Measured {
    clone_accuracy: f64,
    fidelity: f64,
    transfer: Option<f64>,
    holdout_agreement: f64,
    seconds: f64,
}

impl Cell<'_> {
    /// The adaptive thief against defence point `d`: its own queries (KnockoffNets' bandit over
    /// the pool, the same seed for every defence), the first `1 − h` to train `distill` on.
    fn adaptive(&self, d: &str) -> Result<Measured> {
        let t0 = std::time::Instant::now();
        let mut oracle = DefendedOracle {
            predictor: self.predictor,
            defence: self.answers.defences[d].as_ref(),
            key: self.key,
            error: None,
        };
        let strategy = StrategyParams::default().check()?;
        let seed = mix_seed(mix_seed(self.victim, self.attacker_seed), 0xADA);
        let t = query_strategy::adaptive(self.pool, self.budget, &strategy, seed, &mut oracle)?;
        if let Some(e) = oracle.error {
            return Err(e);
        }
        let y: Vec<f32> = t.answers.concat();
        let n_fit = fit_rows(t.len(), self.spec.holdout_fraction);
        let r = Received {
            x: &t.x[..n_fit * self.n_in],
            y: &y[..n_fit * self.n_out],
            hold_x: &t.x[n_fit * self.n_in..],
            hold_y: &y[n_fit * self.n_out..],
            n_in: self.n_in,
            n_out: self.n_out,
        };
        let seed = clone_seed(
            self.victim,
            self.budget,
            self.attacker_seed,
            AttackerKind::AdaptiveDistill,
        );
        let f = attackers::fit(
            AttackerKind::AdaptiveDistill,
            &r,
            self.mlp,
            &self.spec.victim_widths,
            self.spec.training.as_ref(),
            seed,
        )?;
        self.measure(&f, t0.elapsed().as_secs_f64())
    }

    fn measure(&self, f: &FittedClone, seconds: f64) -> Result<Measured> {
        let eval = self.eval;
        let classes = f.clone.classes(&eval.x, eval.len());
        let n = eval.len() as f64;
        let clone_accuracy = classes
            .iter()
            .zip(&eval.y)
            .filter(|(c, &y)| **c == y as usize)
            .count() as f64
            / n;
        let fidelity = classes
            .iter()
            .zip(&self.answers.eval_class)
            .filter(|(c, v)| c == v)
            .count() as f64
            / n;
        let transfer = if self.spec.transfer_inputs == 0 {
            None
        } else {
            let inputs: Vec<usize> = (0..eval.len())
                .filter(|&i| self.answers.eval_class[i] == eval.y[i] as usize)
                .take(self.spec.transfer_inputs)
                .collect();
            let hits = inputs
                .iter()
                .map(|&i| {
                    let c = self.answers.eval_class[i];
                    let x64: Vec<f64> = eval.row(i).iter().map(|&v| v as f64).collect();
                    let d = f.clone.attack_direction(eval.row(i), c)?;
                    let (xp, _) = step_to_norm(&x64, &d, self.spec.transfer_epsilon);
                    let xp: Vec<f32> = xp.iter().map(|&v| v as f32).collect();
                    Ok(usize::from(argmax(&self.predictor.output(&xp)) != c))
                })
                .collect::<Result<Vec<usize>>>()?;
            Some(hits.iter().sum::<usize>() as f64 / inputs.len().max(1) as f64)
        };
        Ok(Measured {
            clone_accuracy,
            fidelity,
            transfer,
            holdout_agreement: f.holdout_agreement,
            seconds,
        })
    }

    fn run(
        &self,
        jobs: &BTreeSet<(String, AttackerKind)>,
        rows_out: &Appender,
        progress: &dyn Progress,
    ) -> Result<()> {
        // Clones to train: each (defence, attacker) job and the parts of distill-select; the
        // labels-only clone once per distinct label vector.
        let mut train: BTreeSet<(String, AttackerKind)> = BTreeSet::new();
        for (d, k) in jobs.iter().filter(|j| j.1 != AttackerKind::AdaptiveDistill) {
            if k.needs().is_empty() {
                train.insert((d.clone(), *k));
            }
            for &p in k.needs() {
                train.insert((d.clone(), p));
            }
        }
        let labels_of = |d: &str| -> u64 {
            let y = &self.answers.defended_pool[d];
            let mut h = 0xcbf29ce484222325u64;
            for &i in self.order {
                let p = self.answers.pool_pos[&i];
                h = mix_seed(h, argmax(&y[p * self.n_out..(p + 1) * self.n_out]) as u64);
            }
            h
        };
        // Map each training job to its representative (labels-only: first defence with those labels).
        let mut rep: BTreeMap<(String, AttackerKind), (String, AttackerKind)> = BTreeMap::new();
        let mut by_labels: HashMap<u64, String> = HashMap::new();
        for (d, k) in &train {
            if k.labels_only() {
                let h = labels_of(d);
                let r = by_labels.entry(h).or_insert_with(|| d.clone()).clone();
                rep.insert((d.clone(), *k), (r, *k));
            } else {
                rep.insert((d.clone(), *k), (d.clone(), *k));
            }
        }
        let unique: BTreeSet<(String, AttackerKind)> = rep.values().cloned().collect();
        let unique: Vec<(String, AttackerKind)> = unique.into_iter().collect();
        let fitted: Vec<Measured> = unique
            .par_iter()
            .map(|(d, k)| {
                let t0 = std::time::Instant::now();
                let (x, y, hx, hy) = received(
                    self.order,
                    &self.answers.pool_pos,
                    self.pool_x,
                    &self.answers.defended_pool[d],
                    self.n_in,
                    self.n_out,
                    self.spec.holdout_fraction,
                );
                let r = Received {
                    x: &x,
                    y: &y,
                    hold_x: &hx,
                    hold_y: &hy,
                    n_in: self.n_in,
                    n_out: self.n_out,
                };
                let seed = clone_seed(self.victim, self.budget, self.attacker_seed, *k);
                let f = attackers::fit(
                    *k,
                    &r,
                    self.mlp,
                    &self.spec.victim_widths,
                    self.spec.training.as_ref(),
                    seed,
                )?;
                let m = self.measure(&f, t0.elapsed().as_secs_f64())?;
                if jobs.contains(&(d.clone(), *k)) {
                    progress.inc(1);
                }
                Ok(m)
            })
            .collect::<Result<_>>()?;
        let result: HashMap<&(String, AttackerKind), &Measured> =
            unique.iter().zip(&fitted).collect();
        let adaptive: BTreeMap<String, Measured> = jobs
            .par_iter()
            .filter(|j| j.1 == AttackerKind::AdaptiveDistill)
            .map(|(d, _)| Ok((d.clone(), self.adaptive(d)?)))
            .collect::<Result<_>>()?;
        progress.inc(adaptive.len() as u64);
        let get = |d: &str, k: AttackerKind| -> (Measured, bool) {
            let r = &rep[&(d.to_string(), k)];
            let shared = r.0 != d;
            (result[r].clone(), shared)
        };
        for (d, k) in jobs {
            let (m, chose_labels) = match k {
                AttackerKind::AdaptiveDistill => (adaptive[d].clone(), None),
                AttackerKind::DistillSelect => {
                    let (soft, _) = get(d, AttackerKind::Distill);
                    let (hard, _) = get(d, AttackerKind::DistillTop1);
                    let labels = hard.holdout_agreement > soft.holdout_agreement;
                    (
                        Measured {
                            seconds: 0.0,
                            ..(if labels { hard } else { soft })
                        },
                        Some(labels),
                    )
                }
                _ => {
                    let (m, shared) = get(d, *k);
                    let seconds = if shared { 0.0 } else { m.seconds };
                    (Measured { seconds, ..m }, None)
                }
            };
            if !unique.contains(&(d.clone(), *k)) && *k != AttackerKind::AdaptiveDistill {
                progress.inc(1);
            }
            rows_out.push(&CloneRow {
                victim: self.victim,
                budget: self.budget,
                attacker_seed: self.attacker_seed,
                defence: d.clone(),
                attacker: *k,
                clone_accuracy: m.clone_accuracy,
                fidelity: m.fidelity,
                transfer: m.transfer,
                holdout_agreement: m.holdout_agreement,
                chose_labels,
                seconds: m.seconds,
            })?;
        }
        Ok(())
    }
}
