//! `rgshield serve`: the HTTP prediction API with an output defence.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::common::{build_defence, check_memory, check_samples, threads, widths_flag};
use super::Global;
use rgshield::model::io as model_io;
use rgshield::sample::OutputMode;
use rgshield::serve::{self, Limits, ServeState};

/// Flags of `rgshield serve`.
#[derive(clap::Args)]
pub struct Args {
    /// Model directory (holding model.json and model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Output defence: none, rg (= rg:P), rg:C, random, gaussian, reverse-sigmoid, rounding, top1.
    #[arg(long, default_value = "none")]
    defence: String,
    /// Strength of the defence (ε of rg and random, σ of gaussian, β of reverse-sigmoid,
    /// decimals of rounding).
    #[arg(long, default_value_t = 0.02)]
    epsilon: f64,
    /// Serve the deterministic mean-field output instead of the sampled one.
    #[arg(long, conflicts_with_all = ["samples", "serve_seed"])]
    mean_field: bool,
    /// Samples S of the served output.
    #[arg(long, default_value_t = 64)]
    samples: usize,
    /// Seed of the served output's sampler; keep it private when a defence is randomised.
    #[arg(long, default_value_t = 0)]
    serve_seed: u64,
    /// Most inputs in one request (413 above it).
    #[arg(long, default_value_t = Limits::default().max_batch)]
    max_batch: usize,
    /// Largest request body in bytes (413 above it).
    #[arg(long, default_value_t = Limits::default().max_body_bytes)]
    max_body_bytes: usize,
    /// On SIGTERM or Ctrl-C: seconds the requests in flight get to finish (new connections are
    /// refused at once); past it the server stops without them and exits with an error.
    #[arg(long, default_value_t = serve::DEFAULT_DRAIN.as_secs_f64())]
    drain_seconds: f64,
}

/// Run `rgshield serve` until SIGTERM or Ctrl-C, then drain.
pub fn run(a: &Args, g: &Global) -> Result<()> {
    if !a.mean_field {
        check_samples("serve: --samples", a.samples)?;
    }
    let drain = Duration::try_from_secs_f64(a.drain_seconds)
        .ok()
        .filter(|_| a.drain_seconds.is_finite())
        .with_context(|| {
            format!(
                "--drain-seconds {}: must be a finite number of seconds ≥ 0",
                a.drain_seconds
            )
        })?;
    let (model, meta) = model_io::load(&a.model)?;
    check_memory(
        g,
        &format!("serving {}", widths_flag(&model.widths())),
        rgshield::sample::estimated_bytes(&model.widths(), threads()),
    )?;
    let shape = meta.dataset.as_ref().and_then(|d| d.image_shape);
    let defence = build_defence(&a.defence, a.epsilon, &model, Some(&a.model), shape)?;
    let mode = if a.mean_field {
        OutputMode::MeanField
    } else {
        OutputMode::Served {
            samples: a.samples,
            seed: a.serve_seed,
        }
    };
    let limits = Limits {
        max_body_bytes: a.max_body_bytes,
        max_batch: a.max_batch,
    };
    let state = ServeState::new(model, mode, defence, limits)?
        .with_meta(&meta)
        .with_context(|| format!("model {}", a.model.display()))?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = g.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    println!(
        "serving {} ({:?}, defence {}) — SIGTERM or Ctrl-C stops after the requests in flight",
        a.model.display(),
        state.info().widths,
        state.defence().name()
    );
    let res = rt.block_on(serve::run(a.addr, Arc::new(state), drain));
    // Requests abandoned at the drain timeout may still run in the blocking pool: do not wait.
    rt.shutdown_background();
    res?;
    println!("stopped");
    Ok(())
}
