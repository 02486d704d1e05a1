//! `rgshield bench perf`: performance against the machine's limit and the peers, each measurement
//! in its own child process (`bench perf-job`) so that its peak memory is its own.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cli::common::{
    check_samples, prepare_out_dir, prepare_out_file, threads as common_threads,
};
use crate::cli::Global;
use rgshield::bench::perf::{self, PerfConfig, PerfJob, PerfOutcome};
use rgshield::error::Error;

/// Flags of `rgshield bench perf`.
#[derive(clap::Args)]
pub struct Args {
    /// Data set of the training comparison.
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// Keep only the first n training rows in the CD comparison (default: all).
    #[arg(long)]
    max_train: Option<usize>,
    /// Hidden units of the CD comparison's RBM.
    #[arg(long, default_value_t = 256)]
    cd_hidden: usize,
    /// Minibatch size of the CD comparison.
    #[arg(long, default_value_t = 50)]
    cd_batch: usize,
    /// Learning rate of the CD comparison.
    #[arg(long, default_value_t = 0.05)]
    cd_lr: f32,
    /// CD epochs timed (the mean per epoch is reported, for both tools).
    #[arg(long, default_value_t = 1)]
    cd_epochs: usize,
    /// Samples S of the sampling and correlator comparisons.
    #[arg(long, default_value_t = 20_000)]
    samples: usize,
    /// Repetitions of the correlator timings and rounds of the alternating CD / scikit-learn
    /// timings (the fastest of each is reported); the sampling takes at least 10.
    #[arg(long, default_value_t = 2)]
    reps: usize,
    /// Seed of the random stacks and samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory of the python references (setup.sh, correlators.py, bernoulli_rbm.py).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/reference"))]
    reference_dir: PathBuf,
    /// Skip the numpy / scikit-learn references.
    #[arg(long)]
    no_reference: bool,
    /// Skip the scaling table.
    #[arg(long)]
    no_scaling: bool,
    /// Also time the full eq. 14 training of n-256-256-classes on --data (tens of minutes).
    #[arg(long)]
    full_training: bool,
    /// Scratch directory for the .npy files exchanged with the references.
    #[arg(long, default_value = "runs/perf/work")]
    work_dir: PathBuf,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the tables (Markdown) here.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Run `rgshield bench perf`.
pub fn run(a: Args, g: &Global) -> Result<()> {
    check_samples("bench perf: --samples", a.samples)?;
    for (flag, p) in [("--json", &a.json), ("--out", &a.out)] {
        if let Some(p) = p {
            prepare_out_file(p).context(flag)?;
        }
    }
    prepare_out_dir(&a.work_dir).context("--work-dir")?;
    let threads = g.threads;
    let cfg = PerfConfig {
        data: a.data,
        max_train: a.max_train,
        cd_hidden: a.cd_hidden,
        cd_batch: a.cd_batch,
        cd_lr: a.cd_lr,
        cd_epochs: a.cd_epochs,
        samples: a.samples,
        reps: a.reps,
        seed: a.seed,
        reference_dir: a.reference_dir,
        no_reference: a.no_reference,
        scaling: !a.no_scaling,
        full_training: a.full_training,
        work_dir: a.work_dir,
        threads,
    };
    let exe = std::env::current_exe().context("bench perf: locating the rgshield binary")?;
    let run = |job: &PerfJob| -> rgshield::Result<PerfOutcome> {
        let json = serde_json::to_string(job)
            .map_err(|e| Error::invalid(format!("bench perf job: {e}")))?;
        // Each job before its process allocates (the CD epoch and the training load their data
        // set first and are not estimated here).
        if let Some(need) = job.estimated_bytes(common_threads()) {
            rgshield::util::memory::check_memory(
                &format!("bench perf job {json} (--samples, --reps)"),
                need,
                g.memory_budget,
                g.budget_source,
            )?;
        }
        let mut cmd = std::process::Command::new(&exe);
        if let Some(t) = threads {
            cmd.arg("--threads").arg(t.to_string());
        }
        let out = cmd
            .args(["bench", "perf-job", "--job", &json])
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| Error::io(&exe, e))?;
        if !out.status.success() {
            return Err(Error::invalid(format!(
                "bench perf job {json} failed ({})",
                out.status
            )));
        }
        perf::last_json_line(
            &String::from_utf8_lossy(&out.stdout),
            &format!("bench perf job {json}"),
        )
        .map_err(Error::invalid)
    };
    let report = perf::perf(&cfg, run, |m| eprintln!("bench perf: {m}"))?;
    let table = perf::perf_table(&report);
    println!("{table}");
    if let Some(p) = &a.json {
        rgshield::util::write_json(p, &report)?;
    }
    if let Some(p) = &a.out {
        rgshield::util::atomic_write(p, table.as_bytes())?;
    }
    Ok(())
}

/// Run one job (`bench perf-job`) and print its outcome as one JSON line.
pub fn run_job(job: &str) -> Result<()> {
    let job: PerfJob =
        serde_json::from_str(job).with_context(|| format!("bench perf-job: bad --job '{job}'"))?;
    let outcome = perf::run_job(&job)?;
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(())
}
