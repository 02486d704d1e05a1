//! `rgshield bench serve`: a load test of the prediction API, in process.
//!
//! It starts the server on 127.0.0.1:0 inside its own tokio runtime and drives it with a minimal
//! keep-alive HTTP/1.1 client over several concurrent connections. Two parts:
//! * [`serve_bench`]: single-input requests with no defence against the in-process rate of the
//!   same predictions (the HTTP layer's cost);
//! * [`defence_bench`]: for each defence, the answer rate at batch 1 and at batch 256 beside the
//!   rate with no defence measured in alternation (the defence's cost), with its goal.
//!
//! Client and server share the machine's cores, so the HTTP rates include the client's own cost.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::{Limits, PredictResponse, ServeState};
use crate::defence::{Defence, NoDefence};
use crate::error::{Error, Result};
use crate::model::DeepRbm;
use crate::sample::{argmax, OutputMode};

/// Goal: HTTP requests/s at least this fraction of the in-process rate (HTTP layer ≤ 20% cost).
pub const GOAL_HTTP_RATIO: f64 = 0.8;
/// Goal: defended requests/s at least this fraction of undefended (defence ≤ 5% cost).
pub const GOAL_DEFENCE_RATIO: f64 = 0.95;
/// Goal: single-input mean-field predictions per second over HTTP on 2 cores.
pub const GOAL_HTTP_RATE: f64 = 20_000.0;
/// Goal at batch 256: the analytic second-form defences (`rg-vertex` B in reading P,
/// `grad2-argmax`) answer at least this fraction of the undefended rate (≤ 10% cost).
pub const GOAL_ANALYTIC_RATIO: f64 = 0.90;
/// Goal at batch 256: the searching second-form defences (`mad-argmax`, `rg-vertex` A) answer at
/// least this fraction of the undefended rate (≤ 25% cost).
pub const GOAL_SEARCH_RATIO: f64 = 0.75;

/// The batch-256 goal of a defence (by its canonical name), if it has one.
pub fn defence_goal(name: &str) -> Option<f64> {
    if name.starts_with("grad2-argmax")
        || (name.starts_with("rg-vertex:objective=B") && name.contains("reading=P"))
    {
        Some(GOAL_ANALYTIC_RATIO)
    } else if name.starts_with("mad-argmax") || name.starts_with("rg-vertex:objective=A") {
        Some(GOAL_SEARCH_RATIO)
    } else {
        None
    }
}

/// Settings of `rgshield bench serve`.
#[derive(Clone, Debug, Serialize)]
pub struct ServeBenchConfig {
    /// Output mode of the server and of the in-process reference (mean-field for the goal).
    pub mode: OutputMode,
    /// Concurrent keep-alive connections.
    pub connections: usize,
    /// Wall-clock length of each timed phase.
    pub seconds: f64,
    /// Stop a phase after this many requests even if time is left.
    pub max_requests: u64,
    /// Distinct random binary inputs, cycled through.
    pub distinct_inputs: usize,
    /// Seed of the inputs.
    pub seed: u64,
    /// tokio worker threads (client and server share them).
    pub worker_threads: usize,
    /// The server's [`ServeState::with_inline_max_work`] threshold (0: every request goes to the
    /// blocking pool).
    pub inline_max_work: u64,
}

impl Default for ServeBenchConfig {
    fn default() -> Self {
        ServeBenchConfig {
            mode: OutputMode::MeanField,
            connections: 8,
            seconds: 5.0,
            max_requests: 10_000_000,
            distinct_inputs: 1000,
            seed: 0,
            worker_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            inline_max_work: super::DEFAULT_INLINE_MAX_WORK,
        }
    }
}

/// One timed HTTP phase.
#[derive(Clone, Debug, Serialize)]
pub struct HttpPhase {
    /// The defence of this phase.
    pub defence: String,
    /// Requests answered.
    pub requests: u64,
    /// Seconds of the phase.
    pub seconds: f64,
    /// Answers (inputs) per second.
    pub per_s: f64,
    /// Failed requests: I/O errors, non-200 answers, unreadable bodies.
    pub errors: u64,
    /// Answers whose class differs from the argmax of the undefended in-process output.
    pub changed_argmax: u64,
}

/// Result of [`serve_bench`].
#[derive(Clone, Debug, Serialize)]
pub struct ServeBenchReport {
    /// The benchmark's settings.
    pub config: ServeBenchConfig,
    /// Widths of the served model.
    pub widths: Vec<usize>,
    /// In-process predictions per second (same inputs and mode, all cores, no defence).
    pub in_process_per_s: f64,
    /// HTTP phase without a defence.
    pub undefended: HttpPhase,
    /// HTTP phase with the defence.
    pub defended: HttpPhase,
    /// `undefended.per_s / in_process_per_s`.
    pub http_ratio: f64,
    /// `defended.per_s / undefended.per_s`.
    pub defence_ratio: f64,
}

/// One defence's row of [`defence_bench`].
#[derive(Clone, Debug, Serialize)]
pub struct DefenceRow {
    /// The defence (canonical name).
    pub defence: String,
    /// Inputs per request.
    pub batch: usize,
    /// Answers per second with no defence, in the phases alternating with this one.
    pub undefended_per_s: f64,
    /// Answers per second with the defence.
    pub defended_per_s: f64,
    /// `defended_per_s / undefended_per_s`.
    pub ratio: f64,
    /// The ratio's goal at batch 256, when the defence has one.
    pub goal: Option<f64>,
    /// Failed requests in both phases.
    pub errors: u64,
    /// Answers whose class differs from the undefended one (0 for class-keeping defences).
    pub changed_argmax: u64,
}

/// Random binary inputs for the benchmark.
fn random_inputs(n: usize, n_in: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            (0..n_in)
                .map(|_| if rng.next_u64() >> 63 == 1 { 1.0 } else { 0.0 })
                .collect()
        })
        .collect()
}

/// Run the load test: in-process rate, then HTTP with [`NoDefence`], then HTTP with `defence`.
pub fn serve_bench(
    model: &DeepRbm,
    defence: Arc<dyn Defence>,
    cfg: &ServeBenchConfig,
) -> Result<ServeBenchReport> {
    if cfg.connections == 0 || cfg.distinct_inputs == 0 || cfg.worker_threads == 0 {
        return Err(Error::invalid(
            "bench serve needs at least one connection, input and worker thread",
        ));
    }
    if !(cfg.seconds > 0.0 && cfg.seconds.is_finite()) {
        return Err(Error::invalid(format!(
            "bench serve: seconds must be positive, got {}",
            cfg.seconds
        )));
    }
    let n_in = model.n_inputs();
    let inputs = random_inputs(cfg.distinct_inputs, n_in, cfg.seed);
    let flat: Vec<f32> = inputs.iter().flatten().copied().collect();

    // In-process reference: the same predictions through the same Predictor, all cores.
    let reference = ServeState::new(
        model.clone(),
        cfg.mode,
        Arc::new(NoDefence),
        Limits::default(),
    )?;
    let p = reference.predictor();
    let expected: Vec<usize> = p
        .outputs(&flat, inputs.len())
        .chunks_exact(model.n_outputs())
        .map(argmax)
        .collect();
    let t0 = Instant::now();
    let mut done = 0u64;
    while t0.elapsed().as_secs_f64() < cfg.seconds.min(2.0) && done < cfg.max_requests {
        std::hint::black_box(p.outputs(&flat, inputs.len()));
        done += inputs.len() as u64;
    }
    let in_process_per_s = done as f64 / t0.elapsed().as_secs_f64();

    let (bodies, expected) = requests(&inputs, &expected, 1);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.worker_threads)
        .enable_all()
        .build()
        .map_err(|e| Error::invalid(format!("cannot start the tokio runtime: {e}")))?;
    let phase = |d: Arc<dyn Defence>| -> Result<HttpPhase> {
        let state = Arc::new(
            ServeState::new(model.clone(), cfg.mode, d, Limits::default())?
                .with_inline_max_work(cfg.inline_max_work),
        );
        rt.block_on(http_phase(state, bodies.clone(), expected.clone(), cfg))
    };
    let undefended = phase(Arc::new(NoDefence))?;
    let defended = phase(defence)?;
    Ok(ServeBenchReport {
        config: cfg.clone(),
        widths: model.widths(),
        in_process_per_s,
        http_ratio: undefended.per_s / in_process_per_s,
        defence_ratio: defended.per_s / undefended.per_s,
        undefended,
        defended,
    })
}

/// Prepared POST requests of `batch` consecutive inputs each (cycling), with the undefended
/// classes of their inputs.
#[allow(clippy::type_complexity)]
fn requests(
    inputs: &[Vec<f32>],
    classes: &[usize],
    batch: usize,
) -> (Arc<Vec<Vec<u8>>>, Arc<Vec<Vec<usize>>>) {
    let n = inputs.len();
    let count = n.div_ceil(batch).max(1);
    let mut bodies = Vec::with_capacity(count);
    let mut expected = Vec::with_capacity(count);
    for r in 0..count {
        let idx: Vec<usize> = (0..batch).map(|j| (r * batch + j) % n).collect();
        let rows: Vec<&Vec<f32>> = idx.iter().map(|&i| &inputs[i]).collect();
        let body = serde_json::json!({ "inputs": rows }).to_string();
        bodies.push(
            format!(
                "POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        );
        expected.push(idx.iter().map(|&i| classes[i]).collect());
    }
    (Arc::new(bodies), Arc::new(expected))
}

/// For each defence and batch size: answers per second through HTTP with the defence and, in
/// alternating phases of `cfg.seconds`, without it; `reps` alternations, the fastest phase of
/// each kind kept (this machine's speed drifts within a run).
pub fn defence_bench(
    model: &DeepRbm,
    defences: &[Arc<dyn Defence>],
    batches: &[usize],
    reps: usize,
    cfg: &ServeBenchConfig,
) -> Result<Vec<DefenceRow>> {
    if batches.contains(&0) || reps == 0 {
        return Err(Error::invalid(
            "bench serve: batch sizes and repetitions must be at least 1",
        ));
    }
    let inputs = random_inputs(
        cfg.distinct_inputs.max(*batches.iter().max().unwrap_or(&1)),
        model.n_inputs(),
        cfg.seed,
    );
    let flat: Vec<f32> = inputs.iter().flatten().copied().collect();
    let reference = ServeState::new(
        model.clone(),
        cfg.mode,
        Arc::new(NoDefence),
        Limits::default(),
    )?;
    let classes: Vec<usize> = reference
        .predictor()
        .outputs(&flat, inputs.len())
        .chunks_exact(model.n_outputs())
        .map(argmax)
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.worker_threads)
        .enable_all()
        .build()
        .map_err(|e| Error::invalid(format!("cannot start the tokio runtime: {e}")))?;
    let limits = Limits {
        max_batch: Limits::default()
            .max_batch
            .max(*batches.iter().max().unwrap_or(&1)),
        ..Limits::default()
    };
    let phase = |d: Arc<dyn Defence>, bodies: &Arc<Vec<Vec<u8>>>, exp: &Arc<Vec<Vec<usize>>>| {
        let state = Arc::new(
            ServeState::new(model.clone(), cfg.mode, d, limits)?
                .with_inline_max_work(cfg.inline_max_work),
        );
        rt.block_on(http_phase(state, bodies.clone(), exp.clone(), cfg))
    };
    let mut rows = Vec::new();
    for &batch in batches {
        let (bodies, exp) = requests(&inputs, &classes, batch);
        for d in defences {
            let (mut none, mut with) = (None::<HttpPhase>, None::<HttpPhase>);
            for _ in 0..reps {
                let a = phase(Arc::new(NoDefence), &bodies, &exp)?;
                let b = phase(d.clone(), &bodies, &exp)?;
                if none.as_ref().is_none_or(|x| a.per_s > x.per_s) {
                    none = Some(a);
                }
                if with.as_ref().is_none_or(|x| b.per_s > x.per_s) {
                    with = Some(b);
                }
            }
            let (none, with) = (none.expect("reps ≥ 1"), with.expect("reps ≥ 1"));
            rows.push(DefenceRow {
                defence: d.name(),
                batch,
                undefended_per_s: none.per_s,
                defended_per_s: with.per_s,
                ratio: with.per_s / none.per_s,
                goal: if batch >= 256 {
                    defence_goal(&d.name())
                } else {
                    None
                },
                errors: none.errors + with.errors,
                changed_argmax: with.changed_argmax,
            });
        }
    }
    Ok(rows)
}

/// The defence table as Markdown: answers/s at each batch size beside none, the ratio and goal.
pub fn format_defence_rows(rows: &[DefenceRow], mode: OutputMode) -> String {
    let mode = match mode {
        OutputMode::MeanField => "mean-field".to_string(),
        OutputMode::Served { samples, .. } => format!("served S={samples}"),
    };
    let mut s = format!(
        "defence cost ({mode} output; answers/s over HTTP, the fastest of alternating phases with and without the defence)\n\n\
         | defence | batch | none answers/s | defended answers/s | ratio | goal | errors | changed class |\n|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        let goal = match r.goal {
            Some(g) => format!("≥ {g:.2}: {}", if r.ratio >= g { "met" } else { "MISSED" }),
            None => "–".into(),
        };
        s += &format!(
            "| {} | {} | {:.0} | {:.0} | {:.3} | {goal} | {} | {} |\n",
            r.defence,
            r.batch,
            r.undefended_per_s,
            r.defended_per_s,
            r.ratio,
            r.errors,
            r.changed_argmax
        );
    }
    s
}

/// Start a server on 127.0.0.1:0, drive it from `cfg.connections` clients until the time or the
/// request budget runs out, shut it down, and count.
async fn http_phase(
    state: Arc<ServeState>,
    requests: Arc<Vec<Vec<u8>>>,
    expected: Arc<Vec<Vec<usize>>>,
    cfg: &ServeBenchConfig,
) -> Result<HttpPhase> {
    let defence = state.defence().name();
    let listener = super::bind(([127, 0, 0, 1], 0).into()).await?;
    let addr = listener.local_addr().map_err(|err| Error::Net {
        addr: "127.0.0.1:0".into(),
        err,
    })?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(super::serve(listener, state, async {
        let _ = stop_rx.await;
    }));
    let issued = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let changed = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(cfg.seconds);
    let t0 = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..cfg.connections {
        let (requests, expected) = (requests.clone(), expected.clone());
        let (issued, completed, errors, changed, next) = (
            issued.clone(),
            completed.clone(),
            errors.clone(),
            changed.clone(),
            next.clone(),
        );
        let max = cfg.max_requests;
        clients.push(tokio::spawn(async move {
            let mut conn: Option<Conn> = None;
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max {
                completed.fetch_add(1, Ordering::Relaxed);
                let i = next.fetch_add(1, Ordering::Relaxed) % requests.len();
                if conn.is_none() {
                    conn = Conn::open(addr).await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match c.call(&requests[i]).await {
                    Ok((200, body)) => match serde_json::from_slice::<PredictResponse>(&body) {
                        Ok(r) if r.classes.len() == expected[i].len() => {
                            let diff = r.classes.iter().zip(&expected[i]).filter(|(a, b)| a != b);
                            changed.fetch_add(diff.count() as u64, Ordering::Relaxed);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    Ok(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
            }
        }));
    }
    for c in clients {
        if c.await.is_err() {
            errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    match server.await {
        Ok(r) => r?,
        Err(e) => return Err(Error::invalid(format!("server task failed: {e}"))),
    }
    let done = completed.load(Ordering::Relaxed);
    let errors = errors.load(Ordering::Relaxed);
    let per_request = expected.first().map_or(1, |e| e.len()) as f64;
    Ok(HttpPhase {
        defence,
        requests: done,
        seconds,
        per_s: done.saturating_sub(errors) as f64 * per_request / seconds,
        errors,
        changed_argmax: changed.load(Ordering::Relaxed),
    })
}

/// A keep-alive HTTP/1.1 connection that sends prepared requests and reads
/// `Content-Length`-framed answers (what the server sends).
struct Conn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    line: String,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> std::io::Result<Self> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        Ok(Conn {
            reader: BufReader::new(r),
            writer: w,
            line: String::new(),
        })
    }

    /// Send one request; return the status and the body.
    async fn call(&mut self, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
        let bad =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
        self.writer.write_all(request).await?;
        self.line.clear();
        self.reader.read_line(&mut self.line).await?;
        let status: u16 = self
            .line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("no status line"))?;
        let mut len: Option<usize> = None;
        loop {
            self.line.clear();
            if self.reader.read_line(&mut self.line).await? == 0 {
                return Err(bad("connection closed in the headers"));
            }
            let h = self.line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().ok();
                }
            }
        }
        let len = len.ok_or_else(|| bad("no content-length"))?;
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body).await?;
        Ok((status, body))
    }
}

/// The report as a markdown table with the goals beside the measurements.
pub fn format_report(r: &ServeBenchReport) -> String {
    let mode = match r.config.mode {
        OutputMode::MeanField => "mean-field".to_string(),
        OutputMode::Served { samples, .. } => format!("served S={samples}"),
    };
    let ok = |b: bool| if b { "met" } else { "missed" };
    let mut s = format!(
        "bench serve: model {:?}, {mode} output, single-input requests, {} connections, {} tokio workers, {:.1} s per phase\n\n",
        r.widths, r.config.connections, r.config.worker_threads, r.config.seconds
    );
    s += "| measurement | value | goal | |\n|---|---|---|---|\n";
    s += &format!(
        "| in-process predictions/s (Predictor, all cores) | {:.0} | | |\n",
        r.in_process_per_s
    );
    s += &format!(
        "| HTTP requests/s, defence {} | {:.0} | ≥ {:.0} | {} |\n",
        r.undefended.defence,
        r.undefended.per_s,
        GOAL_HTTP_RATE,
        ok(r.undefended.per_s >= GOAL_HTTP_RATE)
    );
    s += &format!(
        "| HTTP requests/s, defence {} | {:.0} | | |\n",
        r.defended.defence, r.defended.per_s
    );
    s += &format!(
        "| HTTP / in-process | {:.3} | ≥ {GOAL_HTTP_RATIO} (HTTP layer ≤ 20% cost) | {} |\n",
        r.http_ratio,
        ok(r.http_ratio >= GOAL_HTTP_RATIO)
    );
    s += &format!(
        "| defended / undefended | {:.3} | ≥ {GOAL_DEFENCE_RATIO} (defence ≤ 5% cost) | {} |\n",
        r.defence_ratio,
        ok(r.defence_ratio >= GOAL_DEFENCE_RATIO)
    );
    let errors = r.undefended.errors + r.defended.errors;
    let changed = r.undefended.changed_argmax + r.defended.changed_argmax;
    s += &format!(
        "| errors ({} + {} requests) | {errors} | 0 | {} |\n",
        r.undefended.requests,
        r.defended.requests,
        ok(errors == 0)
    );
    s += &format!(
        "| changed argmax (none / defended) | {} / {} | 0 | {} |\n",
        r.undefended.changed_argmax,
        r.defended.changed_argmax,
        ok(changed == 0)
    );
    s
}
