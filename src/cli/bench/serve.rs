//! `rgshield bench serve`: load-test the HTTP API in process, and the cost of each defence.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use rand::SeedableRng;
use serde_json::json;

use crate::cli::common::{build_defence, check_samples, prepare_out_file, DefenceStoreArgs};
use crate::cli::Global;
use rgshield::defence::spec::DEFENCES;
use rgshield::defence::{Defence, DefenceParams};
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
    /// A defence whose cost is measured (repeatable; NAME[:key=value,...]). Default: every
    /// defence with its default knobs.
    #[arg(long = "defence")]
    defences: Vec<DefenceParams>,
    /// Batch sizes of the defence table.
    #[arg(long, value_delimiter = ',', default_value = "1,256")]
    batches: Vec<usize>,
    /// Samples S of the served output in the defence table (the server's default output).
    #[arg(long, default_value_t = 64)]
    defence_samples: usize,
    /// Alternations of undefended and defended phases per row (the fastest of each is kept).
    #[arg(long, default_value_t = 2)]
    reps: usize,
    /// Skip the defence table (only the HTTP-layer measurement).
    #[arg(long)]
    no_defences: bool,
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
    #[command(flatten)]
    store: DefenceStoreArgs,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Run `rgshield bench serve`.
pub fn run(a: &Args, g: &Global) -> Result<()> {
    if let Some(p) = &a.json {
        prepare_out_file(p).context("--json")?;
    }
    check_samples("bench serve: --defence-samples", a.defence_samples)?;
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
    let mut cfg = ServeBenchConfig {
        connections: a.connections,
        seconds: a.seconds,
        distinct_inputs: a.inputs,
        inline_max_work: a.inline_max_work,
        ..Default::default()
    };
    if let Some(t) = g.threads {
        cfg.worker_threads = t.max(1);
    }
    let report = serve::bench::serve_bench(&model, Arc::new(rgshield::defence::NoDefence), &cfg)?;
    println!("{}", serve::bench::format_report(&report));
    let mut rows = Vec::new();
    if !a.no_defences {
        let params: Vec<DefenceParams> = if a.defences.is_empty() {
            DEFENCES
                .iter()
                .filter(|(n, _)| *n != "none")
                .map(|(n, _)| n.parse())
                .collect::<rgshield::Result<_>>()?
        } else {
            a.defences.clone()
        };
        let key = a.store.key_for(&params)?;
        let caches = a.store.caches(&model, shape);
        let defences: Vec<Arc<dyn Defence>> = params
            .iter()
            .map(|p| build_defence(p, &model, &key, &caches))
            .collect::<Result<_>>()?;
        let dcfg = ServeBenchConfig {
            mode: OutputMode::Served {
                samples: a.defence_samples,
                seed: 0,
            },
            ..cfg.clone()
        };
        rows = serve::bench::defence_bench(&model, &defences, &a.batches, a.reps, &dcfg)?;
        println!("{}", serve::bench::format_defence_rows(&rows, dcfg.mode));
    }
    if let Some(p) = &a.json {
        rgshield::util::write_json(p, &json!({ "http": report, "defences": rows }))?;
    }
    Ok(())
}
