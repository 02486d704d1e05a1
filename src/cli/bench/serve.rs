//! `rgshield bench serve`: load-test the HTTP API in process.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use rand::SeedableRng;

use crate::cli::common::{build_defence, check_samples, prepare_out_file};
use crate::cli::Global;
use rgshield::defence::DefenceSpec;
use rgshield::model::io as model_io;
use rgshield::sample::OutputMode;
use rgshield::serve::{self, bench::ServeBenchConfig};
use rgshield::DeepRbm;

/// Flags of `rgshield bench serve`.
#[derive(clap::Args)]
pub struct Args {
    /// Model directory; default a random [64, 64, 64, 10] model (digits-sized, seed 0).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Second defence to compare with none: any name that `serve --defence` accepts (`rg` needs
    /// --model).
    #[arg(long, default_value = "random")]
    defence: String,
    /// Strength ε of the second defence.
    #[arg(long, default_value_t = 0.02)]
    epsilon: f64,
    /// Use the served output with S samples instead of the mean field.
    #[arg(long)]
    samples: Option<usize>,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = ServeBenchConfig::default().connections)]
    connections: usize,
    /// Seconds per timed phase.
    #[arg(long, default_value_t = ServeBenchConfig::default().seconds)]
    seconds: f64,
    /// Distinct random binary inputs, cycled through.
    #[arg(long, default_value_t = ServeBenchConfig::default().distinct_inputs)]
    inputs: usize,
    /// Requests estimated at most this many multiply-adds run on the reactor thread, larger ones
    /// in the blocking pool (0: all in the blocking pool).
    #[arg(long, default_value_t = serve::DEFAULT_INLINE_MAX_WORK)]
    inline_max_work: u64,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Run `rgshield bench serve`.
pub fn run(a: &Args, g: &Global) -> Result<()> {
    if let Some(p) = &a.json {
        prepare_out_file(p).context("--json")?;
    }
    if let Some(s) = a.samples {
        check_samples("bench serve: --samples", s)?;
    }
    let spec: DefenceSpec = a.defence.parse()?;
    if spec.needs_cache() && a.model.is_none() {
        bail!(
            "--defence {}: needs --model (its poison cache lives in the model directory)",
            a.defence
        );
    }
    let (model, shape) = match &a.model {
        Some(dir) => {
            let (m, meta) = model_io::load(dir)?;
            let shape = meta.dataset.as_ref().and_then(|d| d.image_shape);
            (m, shape)
        }
        None => {
            let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(0);
            (DeepRbm::random(&[64, 64, 64, 10], 0.5, &mut rng)?, None)
        }
    };
    let defence = build_defence(&a.defence, a.epsilon, &model, a.model.as_deref(), shape)?;
    let mut cfg = ServeBenchConfig {
        connections: a.connections,
        seconds: a.seconds,
        distinct_inputs: a.inputs,
        inline_max_work: a.inline_max_work,
        ..Default::default()
    };
    if let Some(s) = a.samples {
        cfg.mode = OutputMode::Served {
            samples: s,
            seed: 0,
        };
    }
    if let Some(t) = g.threads {
        cfg.worker_threads = t.max(1);
    }
    let report = serve::bench::serve_bench(&model, defence, &cfg)?;
    println!("{}", serve::bench::format_report(&report));
    if let Some(p) = &a.json {
        rgshield::util::write_json(p, &report)?;
    }
    Ok(())
}
