//! `rgshield clone-eval`: cloning attacks against defended outputs (SPEC §9).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::common::{
    check_memory, check_samples, emit, prepare_out_dir, prepare_out_file, threads, widths_flag,
    Bar, CacheArgs, DataArgs,
};
use super::Global;
use rgshield::data::Dataset;
use rgshield::defence::{DefenceSweep, PoisonCaches};
use rgshield::experiments::clone_eval::{
    self, expand_defences, AttackerSpec, CloneEvalParams, CloneEvalReport, DEFAULT_DEFENCES,
};
use rgshield::experiments::protocol::{self, ProtocolSpec};
use rgshield::model::io as model_io;
use rgshield::sample::OutputMode;
use rgshield::{DeepRbm, Params, Valid};

/// Flags of `rgshield clone-eval`.
#[derive(clap::Args)]
pub struct Args {
    /// Victim model directory (the single-victim experiment; --protocol trains its own victims).
    #[arg(long, required_unless_present_any = ["from_json", "protocol"])]
    model: Option<PathBuf>,
    /// Instead of running: regenerate tables from kept results. A clone_eval.json file: print its
    /// tables and write them beside it as clone_eval.tables.md. Protocol run directories (repeat
    /// the flag to summarise several together; their primary comparisons share one Holm
    /// correction): write summary.md and summary.json into --out (default: the first directory).
    #[arg(long, num_args = 1)]
    from_json: Vec<PathBuf>,
    /// Run the SPEC §12 protocol described by this JSON file (victims, pools, budgets, attacker
    /// seeds, grid) into --out; rerun the same command to resume after an interruption.
    #[arg(long, conflicts_with_all = ["model", "from_json"], requires = "out")]
    protocol: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// A defence to evaluate, NAME[:key=value,...], with sweeps as key=v1|v2|… (e.g.
    /// rg-vertex:objective=B,eps=0.1|0.3|0.6|1); repeat the flag for each defence. Default: none,
    /// rg and random (eps 0.05…0.4), gaussian, reverse-sigmoid and rounding (their own sweeps),
    /// top1.
    #[arg(long = "defence", default_values_t = DEFAULT_DEFENCES.iter().map(|s| s.parse::<DefenceSweep>().expect("a valid default")).collect::<Vec<_>>())]
    defences: Vec<DefenceSweep>,
    /// Attackers: eq14, distill, LEARNER+roundD, LEARNER+top1, adaptive (= distill+round1,distill+top1).
    #[arg(long, default_value = "eq14,distill,adaptive")]
    attackers: String,
    /// Queries per attacker.
    #[arg(long, default_value_t = CloneEvalParams::default().budget)]
    budget: usize,
    /// Number of seeds (1…N): query split, augmentation and clone initialisation.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// L2 norm of the transfer perturbations.
    #[arg(long, default_value_t = CloneEvalParams::default().transfer_epsilon)]
    transfer_epsilon: f64,
    /// Correctly served evaluation inputs used for the transfer measurement.
    #[arg(long, default_value_t = CloneEvalParams::default().transfer_inputs)]
    transfer_inputs: usize,
    /// Samples S of the victim's (and eq14 clones') served output.
    #[arg(long, default_value_t = 64)]
    samples: usize,
    /// Eq. 14 clone: greedy pretraining epochs (default: the eq14 training default).
    #[arg(long)]
    clone_pretrain_epochs: Option<usize>,
    /// Eq. 14 clone: maximum sweeps (default: the eq14 training default).
    #[arg(long)]
    clone_sweeps: Option<usize>,
    #[command(flatten)]
    cache: CacheArgs,
    /// Output directory (default: MODEL/clone).
    #[arg(long)]
    out: Option<PathBuf>,
}

impl TryFrom<&Args> for Valid<CloneEvalParams> {
    type Error = anyhow::Error;
    fn try_from(a: &Args) -> Result<Self> {
        let mut p = CloneEvalParams {
            defences: expand_defences(&a.defences)?,
            attackers: AttackerSpec::parse_list(&a.attackers)?,
            budget: a.budget,
            seeds: (1..=a.seeds).collect(),
            serve: OutputMode::Served {
                samples: a.samples,
                seed: 0,
            },
            transfer_epsilon: a.transfer_epsilon,
            transfer_inputs: a.transfer_inputs,
            ..CloneEvalParams::default()
        };
        if let Some(v) = a.clone_pretrain_epochs {
            p.eq14.pretrain_epochs = v;
        }
        if let Some(v) = a.clone_sweeps {
            p.eq14.sweeps = v;
        }
        Ok(p.check()?)
    }
}

/// Run the cloning experiment on `model` and write `clone_eval.json`, `clone_eval.md` and the
/// plots into `out`; returns the report and its Markdown tables.
pub fn run_in(
    model: &DeepRbm,
    data: &Dataset,
    params: &Valid<CloneEvalParams>,
    caches: &PoisonCaches,
    out: &Path,
) -> Result<(CloneEvalReport, String)> {
    prepare_out_dir(out)?;
    let report = clone_eval::clone_eval(model, data, params, caches, &Bar::new())?;
    let md = clone_eval::markdown(&report);
    emit(
        out,
        "clone_eval.json",
        &report,
        Some(("clone_eval.md", &md)),
        |dir| clone_eval::write_plots(&report, dir),
    )?;
    Ok((report, md))
}

/// Print and write the tables of a written `clone_eval.json`.
fn tables_from_json(f: &Path) -> Result<()> {
    let md_path = f.with_file_name("clone_eval.tables.md");
    prepare_out_file(&md_path)?;
    let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
    let saved: clone_eval::SavedRows = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a clone_eval.json", f.display()))?;
    let md = clone_eval::tables(
        &format!("clone-eval tables of {}\n\n", f.display()),
        &saved.baselines,
        &saved.rows,
    );
    rgshield::util::atomic_write(&md_path, md.as_bytes())?;
    println!("{md}");
    Ok(())
}

/// Summarise protocol run directories into `out/summary.md` and `out/summary.json`.
fn summary_of_runs(dirs: &[PathBuf], out: &Path) -> Result<()> {
    let runs = dirs
        .iter()
        .map(|d| {
            protocol::summary::load_run(d)
                .with_context(|| format!("{}: not a protocol run directory", d.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let s = protocol::summary::summarise(&runs);
    let md = protocol::summary::markdown(&s);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    rgshield::util::atomic_write(&out.join("summary.md"), md.as_bytes())?;
    rgshield::util::atomic_write(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&s)?.as_bytes(),
    )?;
    let primary: Vec<usize> = runs.iter().map(|r| r.spec.primary_budget).collect();
    for p in protocol::plots::write_plots(&s, &primary, out)? {
        eprintln!("wrote {}", p.display());
    }
    println!("{md}");
    Ok(())
}

/// Run `rgshield clone-eval`.
pub fn run(a: &Args, g: &Global) -> Result<()> {
    if let Some(f) = &a.protocol {
        let out = a.out.as_ref().context("--protocol needs --out")?;
        let spec = ProtocolSpec::read(f)?.check()?;
        protocol::run(&spec, out, &Bar::new())?;
        return summary_of_runs(std::slice::from_ref(out), out);
    }
    match a.from_json.as_slice() {
        [] => {}
        [f] if f.is_file() => return tables_from_json(f),
        dirs => {
            let out = a.out.clone().unwrap_or_else(|| dirs[0].clone());
            return summary_of_runs(dirs, &out);
        }
    }
    let model_dir = a.model.clone().context("--model is required")?;
    check_samples("clone-eval: --samples", a.samples)?;
    let params: Valid<CloneEvalParams> = a.try_into()?;
    if let Some(out) = &a.out {
        prepare_out_dir(out).context("--out")?;
    }
    let (model, meta) = model_io::load(&model_dir)?;
    // The default output directory is inside the model's: checked once the model is found.
    let out = a.out.clone().unwrap_or_else(|| model_dir.join("clone"));
    prepare_out_dir(&out).context("--out")?;
    // The eq. 14 clones copy the victim's widths and train on the queries, one per thread.
    let widths = model.widths();
    let need = rgshield::train::estimated_bytes(&widths, &params.eq14, params.budget, 1)
        .and_then(|b| b.checked_mul(threads() as u64));
    check_memory(
        g,
        &format!(
            "clone-eval: clones of {} trained on --budget {} queries, {} at once",
            widths_flag(&widths),
            params.budget,
            threads()
        ),
        need,
    )?;
    let data = a.data.load()?;
    let shape = meta
        .dataset
        .as_ref()
        .and_then(|d| d.image_shape)
        .or(data.image_shape);
    let caches = a.cache.caches(&model, shape);
    let (report, md) = run_in(&model, &data, &params, &caches, &out)?;
    for n in caches.notes() {
        eprintln!("{n}");
    }
    println!("{md}");
    println!("clone-eval took {:.0} s", report.seconds);
    Ok(())
}
