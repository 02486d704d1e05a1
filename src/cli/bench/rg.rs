//! `rgshield bench rg`: the correlators of one layer, bit-packed beside float GEMM.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cli::common::{check_memory, check_samples, prepare_out_file};
use crate::cli::Global;

use rgshield::bench;

/// Flags of `rgshield bench rg`.
#[derive(clap::Args)]
pub struct Args {
    /// Layer width (order 2 gives w(w+1)/2 operators).
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Ancestral samples S.
    #[arg(long, default_value_t = 20_000)]
    samples: usize,
    /// Repetitions (the fastest is reported).
    #[arg(long, default_value_t = 2)]
    reps: usize,
    /// Seed of the random stack and the samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Run `rgshield bench rg`.
pub fn run(a: &Args, g: &Global) -> Result<()> {
    check_samples("bench rg: --samples", a.samples)?;
    check_memory(
        g,
        &format!("bench rg: --samples {} at --width {}", a.samples, a.width),
        bench::rg::rg_bench_bytes(a.width, a.samples),
    )?;
    if let Some(p) = &a.json {
        prepare_out_file(p).context("--json")?;
    }
    let r = bench::rg_bench(&bench::RgBenchConfig {
        width: a.width,
        samples: a.samples,
        seed: a.seed,
        reps: a.reps,
        dump: None,
    })?;
    println!("{}", bench::rg_bench_table(&r));
    if let Some(p) = &a.json {
        rgshield::util::write_json(p, &r)?;
    }
    Ok(())
}
