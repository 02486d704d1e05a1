//! `rgshield serve`: the HTTP prediction API with an output defence.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::common::{
    build_defence, check_memory, check_samples, threads, widths_flag, DefenceStoreArgs,
};
use super::Global;
use rgshield::defence::DefenceParams;
use rgshield::guard::accounts::{KeyFile, SystemClock};
use rgshield::guard::{Guard, GuardConfig};
use rgshield::model::io as model_io;
use rgshield::sample::OutputMode;
use rgshield::serve::{self, Limits, OutputKind, ServeState};
use rgshield::Params;

/// Flags of `rgshield serve`.
#[derive(clap::Args)]
pub struct Args {
    /// Model directory (holding model.json and model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Output defence, NAME[:key=value,...], e.g. rg-vertex:objective=B,eps=0.6 (knobs left out
    /// take their defaults). Names: none, top1, rg, random, gaussian, reverse-sigmoid, rounding,
    /// rg-vertex, rg-logit, mad-argmax, grad2-argmax, mad, random-vertex, random-fixed,
    /// partner-table; `rgshield defences` lists every knob.
    #[arg(long, default_value = "none")]
    defence: DefenceParams,
    /// What each answer holds: scores (the output units as they are: one sigmoid per class, the
    /// sum near but not at 1) or probabilities (each answer divided by its sum).
    #[arg(long, default_value_t = OutputKind::Scores)]
    output: OutputKind,
    /// Name the defence and its knobs in every answer and in GET /v1/model (off: clients are not
    /// told how their answers are defended).
    #[arg(long)]
    disclose_defence: bool,
    #[command(flatten)]
    store: DefenceStoreArgs,
    /// Serve the deterministic mean-field output instead of the sampled one.
    #[arg(long, conflicts_with_all = ["samples", "serve_seed"])]
    mean_field: bool,
    /// Samples S of the served output.
    #[arg(long, default_value_t = 64)]
    samples: usize,
    /// Seed of the served output's sampler (each input's samples are drawn from it and the
    /// input, so the same input gets the same output).
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
    /// Key file of the clients (written by `rgshield keys new`): every request then needs
    /// `Authorization: Bearer KEY` and is held to the key's quota and rate; adds GET /v1/usage
    /// and the admin endpoints. Needs --state.
    #[arg(long, requires = "state")]
    api_keys: Option<PathBuf>,
    /// SQLite database of the guard's state (query counts, monitor, alerts, watermarked
    /// queries); created when missing, kept across restarts.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Change the class of a keyed fraction of answers and log those queries, for `rgshield
    /// verify` (DAWN-style watermark): rate=R, e.g. rate=0.005. Needs --state and the secret key.
    #[arg(long, requires = "state")]
    watermark: Option<rgshield::guard::watermark::WatermarkParams>,
    /// Run the extraction monitor (PRADA) on every client: knobs delta=0.7,window=100,stride=10,
    /// entropy=H,entropy-min=200 (an empty value takes the defaults). Needs --api-keys.
    #[arg(long, requires = "api_keys", num_args = 0..=1, default_missing_value = "")]
    monitor: Option<rgshield::guard::monitor::MonitorParams>,
    /// What a client flagged by the monitor gets: log (nothing), throttle (a tenth of its rate),
    /// cut (403 from then on).
    #[arg(long, default_value_t = rgshield::guard::OnAlarm::Log, requires = "monitor")]
    on_alarm: rgshield::guard::OnAlarm,
}

/// The guard of `a`, when --state is given.
fn guard(a: &Args, state: &ServeState) -> Result<Option<Arc<Guard>>> {
    let Some(db) = &a.state else {
        return Ok(None);
    };
    let keys = a.api_keys.as_ref().map(|p| KeyFile::load(p)).transpose()?;
    let watermark = a.watermark.map(|w| w.check()).transpose()?;
    let monitor = a.monitor.clone().map(|m| m.check()).transpose()?;
    // The watermark's choices must be secret: they come from the defender's key, whatever the
    // defence.
    let key = if watermark.is_some() {
        a.store.key()?
    } else {
        rgshield::defence::Key::public("rgshield: no watermark")
    };
    let info = state.info();
    let g = Guard::open(
        GuardConfig {
            keys,
            watermark,
            monitor,
            on_alarm: a.on_alarm,
        },
        db,
        &key,
        info.class_names.len(),
        &info.weights_fingerprint,
        Arc::new(SystemClock),
    )?;
    Ok(Some(Arc::new(g)))
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
    let limits = Limits {
        max_body_bytes: a.max_body_bytes,
        max_batch: a.max_batch,
    };
    let (model, meta) = model_io::load(&a.model)?;
    // Requests at their peak at once: one per thread (more concurrent large requests need more).
    check_memory(
        g,
        &format!(
            "serving {} with --max-batch {} and --max-body-bytes {} ({} requests at once)",
            widths_flag(&model.widths()),
            a.max_batch,
            a.max_body_bytes,
            threads()
        ),
        serve::estimated_bytes(&model.widths(), &limits, threads(), threads()),
    )?;
    let shape = meta.dataset.as_ref().and_then(|d| d.image_shape);
    let key = a.store.key_for(std::slice::from_ref(&a.defence))?;
    let caches = a.store.caches(&model, shape);
    let defence = build_defence(&a.defence, &model, &key, &caches)?;
    let mode = if a.mean_field {
        OutputMode::MeanField
    } else {
        OutputMode::Served {
            samples: a.samples,
            seed: a.serve_seed,
        }
    };
    let state = ServeState::new(model, mode, defence, limits)?
        .with_meta(&meta)
        .with_context(|| format!("model {}", a.model.display()))?
        .with_key(key)
        .with_output(a.output)
        .disclosing_defence(a.disclose_defence);
    let state = match guard(a, &state)? {
        Some(g) => {
            println!(
                "guard: state {}{}{}{}",
                a.state
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                if g.accounting() {
                    ", API keys required"
                } else {
                    ""
                },
                a.watermark
                    .map(|w| format!(", watermark rate {}", w.rate))
                    .unwrap_or_default(),
                if a.monitor.is_some() {
                    format!(", monitor on (on alarm: {})", a.on_alarm)
                } else {
                    String::new()
                }
            );
            state.with_guard(g)
        }
        None => state,
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = g.threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    println!(
        "serving {} ({:?}, defence {}, {} output{}) — SIGTERM or Ctrl-C stops after the requests in flight",
        a.model.display(),
        state.info().widths,
        state.defence().name(),
        a.output,
        if a.disclose_defence {
            ", defence disclosed to clients"
        } else {
            ""
        }
    );
    let res = rt.block_on(serve::run(a.addr, Arc::new(state), drain));
    // Requests abandoned at the drain timeout may still run in the blocking pool: do not wait.
    rt.shutdown_background();
    res?;
    println!("stopped");
    Ok(())
}
