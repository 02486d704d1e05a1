//! The prediction API (`rgshield serve`): an HTTP/JSON server in front of a deep RBM classifier,
//! with an output [`Defence`] applied to every answer (SPEC §8).
//!
//! Endpoints:
//!
//! * `POST /v1/predict`, body `{"inputs": [[x_1, …, x_{n_0}], …]}` (content type
//!   `application/json`) → `{"outputs": [[…]], "classes": [...]}`. Each output is the defence's
//!   answer to the served `ŷ(x)` ([`Defence::apply`]) with the query seed `HMAC(key, x)` of the
//!   server's secret [`Key`], and each class the argmax of that answer. With
//!   [`OutputKind::Probabilities`] each answer is divided by its sum (the default,
//!   [`OutputKind::Scores`], serves the network's per-class output units as they are: independent
//!   sigmoids whose sum is near, not at, 1). The same input gets the same answer, bit for bit,
//!   alone or in any batch.
//! * `GET /v1/health` → `{"status":"ok","in_flight":N}`, N the predict requests in flight (their
//!   body being read or their answer computed).
//! * `GET /v1/model` → widths, class names, the weights' fingerprint, the output mode (without
//!   the serving seed) and kind, and the request limits; never weights. The defence and its knobs
//!   appear there, and in every answer, only when the server discloses them
//!   ([`ServeState::disclosing_defence`]).
//!
//! With a guard ([`ServeState::with_guard`], `serve --api-keys/--state/--watermark/--monitor`,
//! [`crate::guard`]):
//!
//! * every request to `/v1/predict`, `/v1/usage` and `/v1/admin/…` needs `Authorization: Bearer
//!   KEY` when the guard has keys: 401 without a known key; 429 over the key's quota or rate
//!   (with `Retry-After` for the rate), 403 when the monitor cut the client off. These bodies are
//!   `{"error": "…", "reason": "…"}`, `reason` one of the codes of [`Denied::reason`]. A request
//!   is charged (in the state database) before it is answered.
//! * `GET /v1/usage` → the key holder's [`UsageReport`].
//! * `GET /v1/admin/usage` → every client's usage with the monitor's view; `GET
//!   /v1/admin/alerts` → `{"alerts": [...]}`, the monitor's alarms; both need an admin key (403
//!   `not_admin` otherwise).
//! * with a watermark, a keyed fraction of answers has its class changed
//!   ([`crate::guard::watermark`]) and those queries are logged.
//!
//! Without a guard none of this exists: the routes above are 404 and no header is read.
//!
//! Error contract: every rejected request gets a 4xx status and a JSON body `{"error": "…"}` that
//! names what is wrong — 400 malformed JSON (which includes the literal tokens `NaN` and
//! `Infinity`, which JSON does not have), an empty batch, an input of the wrong length, a value
//! that is not finite or lies outside [0, 1]; 422 well-formed JSON of the wrong shape (missing
//! `inputs`, unknown fields, wrong types); 413 a body over `max_body_bytes` or more than
//! `max_batch` inputs; 415 a content type other than `application/json`; 404 an unknown route;
//! 405 a wrong method. A failure inside the server (a defence error, a panic) gets 500 with the
//! same JSON shape; no input can make a handler panic.

pub mod bench;
pub mod client;

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::defence::{Defence, Key, Query};
use crate::error::{Error, Result};
use crate::guard::{Client, Denied, Guard, UsageReport};
use crate::model::io::ModelMeta;
use crate::model::DeepRbm;
use crate::sample::{argmax, OutputMode, Predictor};

/// Limits on one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Largest accepted request body in bytes (413 above it).
    pub max_body_bytes: usize,
    /// Most inputs in one request (413 above it).
    pub max_batch: usize,
}

impl Default for Limits {
    /// 16 MiB and 1024 inputs: a full batch of 784-pixel images written with 8 significant
    /// digits fits.
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 << 20,
            max_batch: 1024,
        }
    }
}

impl Limits {
    /// Inputs one request can carry: `max_batch`, or fewer when `max_body_bytes` cannot hold that
    /// many inputs of `n_inputs` values (each value takes at least 2 bytes of JSON, `0,`).
    pub fn largest_batch(&self, n_inputs: usize) -> u64 {
        let by_body = (self.max_body_bytes as u64 / (2 * n_inputs.max(1) as u64)).max(1);
        (self.max_batch as u64).min(by_body)
    }

    /// Estimated peak memory of one predict request at these limits for a model of `widths`, in
    /// bytes (`None` on overflow): the body buffer, the inputs parsed as f64 rows and converted to
    /// f32 rows and to the flat batch, the served and the defended outputs, and the JSON answer
    /// (at most 24 bytes per value), with 24 bytes per row vector. Counted as if all were alive at
    /// once, an upper bound.
    pub fn request_bytes(&self, widths: &[usize]) -> Option<u64> {
        let (n_in, n_out) = (*widths.first()? as u64, *widths.last()? as u64);
        let batch = self.largest_batch(n_in as usize);
        let per_input = n_in
            .checked_mul(8 + 4 + 4)?
            .checked_add(n_out.checked_mul(4 + 4 + 24)?)?
            .checked_add(4 * 24)?;
        batch
            .checked_mul(per_input)?
            .checked_add(self.max_body_bytes as u64)
    }
}

/// Estimated memory of a server for a model of `widths` at `limits` with `concurrent` requests
/// at their peak at once and `threads` sampler threads: the model, the samplers
/// ([`crate::sample::estimated_bytes`]) and `concurrent` × [`Limits::request_bytes`]. `None` on
/// overflow.
pub fn estimated_bytes(
    widths: &[usize],
    limits: &Limits,
    concurrent: usize,
    threads: usize,
) -> Option<u64> {
    crate::model::estimated_bytes(widths)?
        .checked_add(crate::sample::estimated_bytes(widths, threads)?)?
        .checked_add(
            limits
                .request_bytes(widths)?
                .checked_mul(concurrent.max(1) as u64)?,
        )
}

/// Requests whose estimated work (multiply-adds over the batch) is at most this are computed on
/// the reactor thread: a single mean-field input of a digits-sized model takes a few microseconds,
/// less than the hand-off to the blocking pool. Larger requests go to
/// [`tokio::task::spawn_blocking`] (and rayon within it) so they never stall the reactor.
pub const DEFAULT_INLINE_MAX_WORK: u64 = 50_000;

/// Bodies larger than this are parsed in the blocking pool: a body near the 16 MiB default limit
/// takes tens of milliseconds to parse, too long to hold the reactor.
pub const INLINE_PARSE_MAX_BYTES: usize = 64 << 10;

/// What `GET /v1/model` shows about the model: never weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Layer widths `n_0 … n_N`.
    pub widths: Vec<usize>,
    /// One name per output unit.
    pub class_names: Vec<String>,
    /// FNV-1a fingerprint of the weights (hex), as in `model.json`.
    pub weights_fingerprint: String,
    /// Name of the data set the model was trained on, when known.
    pub dataset: Option<String>,
}

/// Everything a request handler needs: the model, its public metadata, the output mode, the
/// defence and the limits. Built once, shared by all requests behind an [`Arc`].
pub struct ServeState {
    model: DeepRbm,
    fingerprint: u64,
    info: ModelInfo,
    mode: OutputMode,
    defence: Arc<dyn Defence>,
    limits: Limits,
    inline_max_work: u64,
    key: Key,
    output: OutputKind,
    disclose_defence: bool,
    in_flight: AtomicUsize,
    guard: Option<Arc<Guard>>,
}

/// What each answer holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutputKind {
    /// The defended output units as they are: one sigmoid per class (sum near 1, not 1).
    #[default]
    Scores,
    /// The defended output divided by its sum: a probability vector (what clients such as IBM's
    /// Adversarial Robustness Toolbox expect).
    Probabilities,
}

impl std::str::FromStr for OutputKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "scores" => Ok(OutputKind::Scores),
            "probabilities" => Ok(OutputKind::Probabilities),
            _ => Err(Error::invalid(format!(
                "output '{s}': expected scores or probabilities"
            ))),
        }
    }
}

impl std::fmt::Display for OutputKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OutputKind::Scores => "scores",
            OutputKind::Probabilities => "probabilities",
        })
    }
}

/// Counts a predict request as in flight while it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        InFlight(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ServeState {
    /// State for `model` with class names `"0"…"n_N−1"` (see [`ServeState::with_meta`]).
    /// Fails when a limit is zero or the served output has no samples.
    pub fn new(
        model: DeepRbm,
        mode: OutputMode,
        defence: Arc<dyn Defence>,
        limits: Limits,
    ) -> Result<Self> {
        if limits.max_batch == 0 {
            return Err(Error::invalid("max_batch must be at least 1"));
        }
        if limits.max_body_bytes == 0 {
            return Err(Error::invalid("max_body_bytes must be at least 1"));
        }
        if let OutputMode::Served { samples: 0, .. } = mode {
            return Err(Error::invalid("the served output needs at least 1 sample"));
        }
        let fingerprint = model.fingerprint();
        let info = ModelInfo {
            widths: model.widths(),
            class_names: (0..model.n_outputs()).map(|i| i.to_string()).collect(),
            weights_fingerprint: format!("{fingerprint:016x}"),
            dataset: None,
        };
        Ok(ServeState {
            model,
            fingerprint,
            info,
            mode,
            defence,
            limits,
            inline_max_work: DEFAULT_INLINE_MAX_WORK,
            key: Key::public("rgshield serve"),
            output: OutputKind::Scores,
            disclose_defence: false,
            in_flight: AtomicUsize::new(0),
            guard: None,
        })
    }

    /// The secret key the query seeds come from (default: a public key, which makes every
    /// randomised or keyed defence predictable — the command line always sets one).
    pub fn with_key(mut self, key: Key) -> Self {
        self.key = key;
        self
    }

    /// What each answer holds (default [`OutputKind::Scores`]).
    pub fn with_output(mut self, output: OutputKind) -> Self {
        self.output = output;
        self
    }

    /// Whether answers and `/v1/model` name the defence and its knobs (default: no).
    pub fn disclosing_defence(mut self, disclose: bool) -> Self {
        self.disclose_defence = disclose;
        self
    }

    /// Put a guard (keys, quotas, monitor, watermark) in front of the model (default: none, and
    /// the server behaves as without this module).
    pub fn with_guard(mut self, guard: Arc<Guard>) -> Self {
        self.guard = Some(guard);
        self
    }

    /// The guard, when there is one.
    pub fn guard(&self) -> Option<&Arc<Guard>> {
        self.guard.as_ref()
    }

    /// Take class names and the data set's name from `model.json`'s contents; fails when they do
    /// not describe this model (widths, fingerprint, number of class names).
    pub fn with_meta(mut self, meta: &ModelMeta) -> Result<Self> {
        if meta.widths != self.info.widths {
            return Err(Error::shape(format!(
                "model.json has widths {:?} but the weights have {:?}",
                meta.widths, self.info.widths
            )));
        }
        if meta.weights_fingerprint != self.info.weights_fingerprint {
            return Err(Error::invalid(format!(
                "model.json has weights fingerprint {} but the weights hash to {}",
                meta.weights_fingerprint, self.info.weights_fingerprint
            )));
        }
        if meta.class_names.len() != self.model.n_outputs() {
            return Err(Error::shape(format!(
                "model.json has {} class names for {} outputs",
                meta.class_names.len(),
                self.model.n_outputs()
            )));
        }
        self.info.class_names = meta.class_names.clone();
        self.info.dataset = meta.dataset.as_ref().map(|d| d.name.clone());
        Ok(self)
    }

    /// Change the work threshold below which a request is computed on the reactor thread
    /// ([`DEFAULT_INLINE_MAX_WORK`]); 0 sends every request to the blocking pool.
    pub fn with_inline_max_work(mut self, work: u64) -> Self {
        self.inline_max_work = work;
        self
    }

    /// The served model.
    pub fn model(&self) -> &DeepRbm {
        &self.model
    }
    /// What `/v1/model` shows.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
    /// The output mode.
    pub fn mode(&self) -> OutputMode {
        self.mode
    }
    /// The defence applied to every answer.
    pub fn defence(&self) -> &Arc<dyn Defence> {
        &self.defence
    }
    /// The request limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }
    /// Predict requests in flight now: from their headers (the body still being read) to their
    /// answer.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// A predictor for this state's model and mode (cheap: the fingerprint is cached).
    pub fn predictor(&self) -> Predictor<'_> {
        Predictor::with_fingerprint(&self.model, self.mode, self.fingerprint)
    }

    /// Estimated multiply-adds to answer `rows` inputs.
    fn work(&self, rows: usize) -> u64 {
        let first = (self.model.rbm(1).n_up * self.model.rbm(1).n_down) as u64;
        let rest: u64 = self.model.layers[1..]
            .iter()
            .map(|l| (l.n_up * l.n_down) as u64)
            .sum();
        let per_input = match self.mode {
            OutputMode::MeanField => first + rest,
            OutputMode::Served { samples, .. } => first + rest * samples as u64,
        };
        per_input.saturating_mul(rows as u64)
    }

    /// The output kind of the answers.
    pub fn output(&self) -> OutputKind {
        self.output
    }

    /// The defended output for one input: the defence's answer to `ŷ(x)` with the keyed query
    /// seed, checked for length and range so a faulty defence cannot send garbage, then divided
    /// by its sum for [`OutputKind::Probabilities`].
    pub fn answer(&self, p: &Predictor<'_>, x: &[f32]) -> Result<Vec<f32>> {
        let y = p.output(x);
        let out = self.defence.apply(&Query {
            x,
            y: &y,
            seed: self.key.query_seed(x),
        })?;
        if out.len() != y.len() {
            return Err(Error::shape(format!(
                "defence {} returned {} values for {} outputs",
                self.defence.name(),
                out.len(),
                y.len()
            )));
        }
        if let Some((i, v)) = out
            .iter()
            .enumerate()
            .find(|(_, v)| !(v.is_finite() && (0.0..=1.0).contains(*v)))
        {
            return Err(Error::invalid(format!(
                "defence {} returned output[{i}] = {v}, outside [0, 1]",
                self.defence.name()
            )));
        }
        Ok(match self.output {
            OutputKind::Scores => out,
            OutputKind::Probabilities => to_probabilities(&out),
        })
    }

    /// Defended outputs for a validated batch (`rows` inputs, row-major), in parallel across
    /// inputs; each row is computed alone, so batch composition does not change any answer.
    pub fn answer_batch(&self, x: &[f32], rows: usize) -> Result<Vec<Vec<f32>>> {
        let n0 = self.model.n_inputs();
        if x.len() != rows * n0 {
            return Err(Error::shape(format!(
                "batch of {rows} inputs has {} values, expected {}",
                x.len(),
                rows * n0
            )));
        }
        let p = self.predictor();
        if rows == 1 {
            return Ok(vec![self.answer(&p, x)?]);
        }
        x.par_chunks(n0).map(|row| self.answer(&p, row)).collect()
    }
}

/// A row divided by its sum (uniform when the sum is 0), summed in f64.
pub fn to_probabilities(v: &[f32]) -> Vec<f32> {
    let s: f64 = v.iter().map(|&a| a as f64).sum();
    if s > 0.0 {
        v.iter().map(|&a| (a as f64 / s) as f32).collect()
    } else {
        vec![1.0 / v.len().max(1) as f32; v.len()]
    }
}

/// Body of `POST /v1/predict`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// One row of `n_0` values in [0, 1] per input.
    #[serde(deserialize_with = "rows_via_f64")]
    pub inputs: Vec<Vec<f32>>,
}

/// Rows of JSON numbers read as f64 and then rounded to f32, so a number beyond f32's range
/// (valid JSON, e.g. `1e39`) becomes ±inf and [`validate_inputs`] names its field, instead of a
/// parse error without one.
fn rows_via_f64<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Vec<Vec<f32>>, D::Error> {
    let rows: Vec<Vec<f64>> = Deserialize::deserialize(d)?;
    Ok(rows
        .into_iter()
        .map(|r| r.into_iter().map(|v| v as f32).collect())
        .collect())
}

/// Answer of `POST /v1/predict`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PredictResponse {
    /// Defended outputs, one row of `n_N` values per input.
    pub outputs: Vec<Vec<f32>>,
    /// Argmax of each defended output.
    pub classes: Vec<usize>,
    /// The defence and its knobs, only when the server discloses them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defence: Option<String>,
}

/// An error answer: a status and `{"error": message}`.
#[derive(Clone, Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// The message of the `error` field.
    pub message: String,
    /// A stable code in the `reason` field (the guard's refusals); absent otherwise.
    pub reason: Option<&'static str>,
    /// Seconds in a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error answer.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            reason: None,
            retry_after: None,
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        ApiError {
            status: StatusCode::from_u16(d.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            message: d.message,
            reason: Some(d.reason),
            retry_after: d.retry_after,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match self.reason {
            None => serde_json::json!({ "error": self.message }),
            Some(r) => serde_json::json!({ "error": self.message, "reason": r }),
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(s));
        }
        resp
    }
}

/// The `POST /v1/predict` body, extracted with JSON errors instead of axum's plain-text
/// rejections: 415 for a wrong content type, 413 over the body limit, 400 for malformed JSON,
/// 422 for JSON of the wrong shape.
pub struct PredictBody(pub PredictRequest);

impl FromRequest<Arc<ServeState>> for PredictBody {
    type Rejection = ApiError;

    async fn from_request(
        req: Request,
        state: &Arc<ServeState>,
    ) -> std::result::Result<Self, ApiError> {
        check_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|rej| {
            if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "request body is larger than the limit of {} bytes",
                        state.limits.max_body_bytes
                    ),
                )
            } else {
                ApiError::bad_request(format!("could not read the request body: {rej}"))
            }
        })?;
        if bytes.len() <= INLINE_PARSE_MAX_BYTES {
            return parse_predict_request(&bytes).map(PredictBody);
        }
        tokio::task::spawn_blocking(move || parse_predict_request(&bytes))
            .await
            .map_err(|e| ApiError::internal(format!("parsing task failed: {e}")))?
            .map(PredictBody)
    }
}

/// 415 unless the content type is `application/json` (parameters such as `charset` allowed).
fn check_content_type(headers: &axum::http::HeaderMap) -> std::result::Result<(), ApiError> {
    let unsupported = |what: &str| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content type must be application/json, got {what}"),
        )
    };
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(unsupported("none"));
    };
    let Ok(text) = value.to_str() else {
        return Err(unsupported("a header that is not text"));
    };
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(unsupported(&format!("'{text}'")))
    }
}

/// Parse a predict body: 400 for bytes that are not JSON, 422 for JSON of the wrong shape.
pub fn parse_predict_request(bytes: &[u8]) -> std::result::Result<PredictRequest, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("request body does not match {{\"inputs\": [[number, …], …]}}: {e}"),
            ),
            Category::Syntax | Category::Eof | Category::Io => {
                ApiError::bad_request(format!("malformed JSON: {e}"))
            }
        }
    })
}

/// Check a batch against the model and the limits and flatten it row-major.
pub fn validate_inputs(
    inputs: &[Vec<f32>],
    n_inputs: usize,
    max_batch: usize,
) -> std::result::Result<Vec<f32>, ApiError> {
    if inputs.is_empty() {
        return Err(ApiError::bad_request(
            "inputs is empty: send at least one input",
        ));
    }
    if inputs.len() > max_batch {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "inputs has {} rows, more than the limit of {max_batch} per request",
                inputs.len()
            ),
        ));
    }
    let mut flat = Vec::with_capacity(inputs.len() * n_inputs);
    for (i, row) in inputs.iter().enumerate() {
        if row.len() != n_inputs {
            let values = if row.len() == 1 { "value" } else { "values" };
            return Err(ApiError::bad_request(format!(
                "inputs[{i}] has {} {values}, the model takes {n_inputs}",
                row.len()
            )));
        }
        for (j, &v) in row.iter().enumerate() {
            if !v.is_finite() {
                return Err(ApiError::bad_request(format!(
                    "inputs[{i}][{j}] = {v}: values must be finite numbers in [0, 1]"
                )));
            }
            if !(0.0..=1.0).contains(&v) {
                return Err(ApiError::bad_request(format!(
                    "inputs[{i}][{j}] = {v}: values must lie in [0, 1]"
                )));
            }
        }
        flat.extend_from_slice(row);
    }
    Ok(flat)
}

/// Compute a validated batch, catching panics so a bug becomes a 500, never a dropped connection.
fn compute(
    state: &ServeState,
    x: &[f32],
    rows: usize,
) -> std::result::Result<Vec<Vec<f32>>, ApiError> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| state.answer_batch(x, rows))) {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(ApiError::internal(format!("prediction failed: {e}"))),
        Err(_) => Err(ApiError::internal("prediction failed: internal panic")),
    }
}

/// Run a guard call (SQLite, possibly an fsync) in the blocking pool.
async fn guarded<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, ApiError> + Send + 'static,
) -> std::result::Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("guard task failed: {e}")))?
}

async fn predict(
    State(state): State<Arc<ServeState>>,
    client: Option<axum::Extension<Client>>,
    PredictBody(req): PredictBody,
) -> std::result::Result<Json<PredictResponse>, ApiError> {
    let mut x = validate_inputs(&req.inputs, state.model.n_inputs(), state.limits.max_batch)?;
    drop(req);
    let rows = x.len() / state.model.n_inputs();
    let client = client.map(|c| c.0);
    if let (Some(g), Some(c)) = (&state.guard, &client) {
        let (g, c) = (Arc::clone(g), c.clone());
        guarded(move || g.admit(&c, rows as u64).map_err(ApiError::from)).await?;
    }
    let mut outputs = if state.work(rows) <= state.inline_max_work {
        compute(&state, &x, rows)?
    } else {
        let st = Arc::clone(&state);
        let (back, out) = tokio::task::spawn_blocking(move || {
            let out = compute(&st, &x, rows);
            (x, out)
        })
        .await
        .map_err(|e| ApiError::internal(format!("prediction task failed: {e}")))?;
        x = back;
        out?
    };
    let mut classes: Vec<usize> = outputs.iter().map(|y| argmax(y)).collect();
    if let Some(g) = &state.guard {
        let n0 = state.model.n_inputs();
        let marks: Vec<_> = match g.watermark() {
            Some(w) => outputs
                .iter_mut()
                .enumerate()
                .map(|(i, out)| w.mark(&x[i * n0..(i + 1) * n0], out))
                .collect(),
            None => vec![None; rows],
        };
        let original = classes.clone();
        for (c, m) in classes.iter_mut().zip(&marks) {
            if let Some(m) = m {
                *c = m.target;
            }
        }
        let g = Arc::clone(g);
        guarded(move || {
            g.record(client.as_ref(), &x, &original, &marks)
                .map(|_| ())
                .map_err(|e| ApiError::internal(format!("recording the request failed: {e}")))
        })
        .await?;
    }
    Ok(Json(PredictResponse {
        outputs,
        classes,
        defence: state.disclose_defence.then(|| state.defence.name()),
    }))
}

/// Count a predict request as in flight from its headers (its body still being read) to its
/// answer.
async fn count_in_flight(
    State(state): State<Arc<ServeState>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let _in_flight = InFlight::enter(&state.in_flight);
    next.run(req).await
}

/// With a guard that has keys: authenticate the request from its `Authorization` header before
/// its body is read (401 with a JSON reason), and hand the [`Client`] to the handler.
async fn authenticate(
    State(state): State<Arc<ServeState>>,
    mut req: Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(g) = state.guard.as_ref().filter(|g| g.accounting()) {
        let header = req
            .headers()
            .get(header::AUTHORIZATION)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"));
        match g.authenticate(header) {
            Ok(c) => {
                req.extensions_mut().insert(c);
            }
            Err(d) => return ApiError::from(d).into_response(),
        }
    }
    next.run(req).await
}

fn guard_of(state: &ServeState) -> std::result::Result<&Arc<Guard>, ApiError> {
    state
        .guard
        .as_ref()
        .ok_or_else(|| ApiError::internal("no guard"))
}

async fn usage(
    State(state): State<Arc<ServeState>>,
    axum::Extension(client): axum::Extension<Client>,
) -> std::result::Result<Json<UsageReport>, ApiError> {
    guard_of(&state)?
        .usage(&client)
        .map(Json)
        .ok_or_else(|| ApiError::internal(format!("no usage for client '{}'", client.name)))
}

fn admin_only(client: &Client) -> std::result::Result<(), ApiError> {
    if client.admin {
        Ok(())
    } else {
        Err(ApiError::from(Denied {
            status: 403,
            reason: "not_admin",
            message: format!("client '{}' has no admin key", client.name),
            retry_after: None,
        }))
    }
}

async fn admin_usage(
    State(state): State<Arc<ServeState>>,
    axum::Extension(client): axum::Extension<Client>,
) -> std::result::Result<Json<serde_json::Value>, ApiError> {
    admin_only(&client)?;
    Ok(Json(
        serde_json::json!({ "clients": guard_of(&state)?.usage_all() }),
    ))
}

async fn admin_alerts(
    State(state): State<Arc<ServeState>>,
    axum::Extension(client): axum::Extension<Client>,
) -> std::result::Result<Json<serde_json::Value>, ApiError> {
    admin_only(&client)?;
    let g = Arc::clone(guard_of(&state)?);
    let alerts = guarded(move || {
        g.alerts()
            .map_err(|e| ApiError::internal(format!("reading the alerts failed: {e}")))
    })
    .await?;
    Ok(Json(serde_json::json!({ "alerts": alerts })))
}

async fn health(State(state): State<Arc<ServeState>>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok", "in_flight": state.in_flight() }))
}

/// The output mode as `/v1/model` shows it: the serving seed stays private, since with it and
/// the fingerprint anyone could reproduce every per-query seed a randomised defence uses.
fn public_mode(mode: OutputMode) -> serde_json::Value {
    match mode {
        OutputMode::MeanField => serde_json::json!("mean-field"),
        OutputMode::Served { samples, .. } => {
            serde_json::json!({ "served": { "samples": samples } })
        }
    }
}

async fn model_info(State(state): State<Arc<ServeState>>) -> Json<serde_json::Value> {
    let mut v = serde_json::json!({
        "widths": state.info.widths,
        "class_names": state.info.class_names,
        "weights_fingerprint": state.info.weights_fingerprint,
        "dataset": state.info.dataset,
        "output_mode": public_mode(state.mode),
        "output": state.output,
        "limits": state.limits,
    });
    if state.disclose_defence {
        v["defence"] = serde_json::json!(state.defence.name());
        v["defence_keeps_argmax"] = serde_json::json!(state.defence.keeps_argmax());
    }
    Json(v)
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route {} {}: the API has POST /v1/predict, GET /v1/health, GET /v1/model",
            req.method(),
            req.uri().path()
        ),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "method {} is not allowed on {}",
            req.method(),
            req.uri().path()
        ),
    )
}

/// The API's routes over `state`, with JSON errors for unknown routes and wrong methods.
pub fn router(state: Arc<ServeState>) -> Router {
    let limit = state.limits.max_body_bytes;
    let auth = || axum::middleware::from_fn_with_state(Arc::clone(&state), authenticate);
    let mut r = Router::new().route(
        "/v1/predict",
        post(predict)
            .layer(auth())
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&state),
                count_in_flight,
            )),
    );
    if state.guard.as_ref().is_some_and(|g| g.accounting()) {
        r = r
            .route("/v1/usage", get(usage).layer(auth()))
            .route("/v1/admin/usage", get(admin_usage).layer(auth()))
            .route("/v1/admin/alerts", get(admin_alerts).layer(auth()));
    }
    r.route("/v1/health", get(health))
        .route("/v1/model", get(model_info))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Bind a TCP listener on `addr`.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|err| Error::Net {
            addr: addr.to_string(),
            err,
        })
}

/// Serve the API on `listener` until `shutdown` completes, then finish the requests in flight
/// (graceful shutdown). Connections use TCP_NODELAY (small JSON answers on keep-alive connections
/// would otherwise wait for delayed acknowledgements).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ServeState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    use axum::serve::ListenerExt;
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "listener".into());
    let listener = listener.tap_io(|tcp| {
        // Only latency depends on it; serving goes on without it.
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|err| Error::Net { addr, err })
}

/// [`serve`] that gives the requests in flight at most `drain` to finish once `shutdown`
/// completes: new connections are refused at once, idle ones closed, and the server returns when
/// the last request is answered — or with an error when `drain` runs out first (the requests
/// still in flight are then abandoned when the runtime shuts down).
pub async fn serve_with_drain(
    listener: tokio::net::TcpListener,
    state: Arc<ServeState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "listener".into());
    let (fired, on_fire) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = fired.send(());
    };
    let st = Arc::clone(&state);
    let server = serve(listener, state, shutdown);
    tokio::pin!(server);
    let deadline = async move {
        match on_fire.await {
            Ok(()) => tokio::time::sleep(drain).await,
            // The server stopped without a shutdown: no deadline.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        res = &mut server => res,
        () = deadline => Err(Error::Net {
            addr,
            err: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "{} requests still in flight after the drain timeout of {} s; stopped without them",
                    st.in_flight(),
                    drain.as_secs_f64()
                ),
            ),
        }),
    }
}

/// Completes on Ctrl-C (SIGINT). If the signal handler cannot be installed it never completes,
/// and the server runs until killed.
pub async fn ctrl_c() {
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The signals that stop the server gracefully: SIGINT (Ctrl-C) and SIGTERM (what systemd,
/// Docker and Kubernetes send), with their handlers installed at creation — so a signal that
/// arrives before the server first waits for one is not lost (nor kills the process).
pub struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    /// Install the handlers (inside a tokio runtime).
    pub fn install() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let err = |name: &str, err| Error::Net {
                addr: format!("signal handler for {name}"),
                err,
            };
            Ok(ShutdownSignals {
                interrupt: signal(SignalKind::interrupt()).map_err(|e| err("SIGINT", e))?,
                terminate: signal(SignalKind::terminate()).map_err(|e| err("SIGTERM", e))?,
            })
        }
        #[cfg(not(unix))]
        Ok(ShutdownSignals {})
    }

    /// Wait for the first of the signals; returns its name (`"SIGINT"` or `"SIGTERM"`).
    pub async fn recv(mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// Default time the requests in flight get to finish after a stop signal (`serve
/// --drain-seconds`).
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// Bind `addr`, print `listening on http://ADDR` (the bound address, so port 0 shows the port
/// chosen) and serve until SIGINT (Ctrl-C) or SIGTERM; then say on stdout that it drains, and
/// give the requests in flight at most `drain` to finish ([`serve_with_drain`]).
pub async fn run(addr: SocketAddr, state: Arc<ServeState>, drain: Duration) -> Result<()> {
    let signals = ShutdownSignals::install()?;
    let listener = bind(addr).await?;
    let local = listener.local_addr().map_err(|err| Error::Net {
        addr: addr.to_string(),
        err,
    })?;
    println!("listening on http://{local}");
    let st = Arc::clone(&state);
    let shutdown = async move {
        let name = signals.recv().await;
        println!(
            "received {name}: draining — new connections refused, {} requests in flight get up to {} s",
            st.in_flight(),
            drain.as_secs_f64()
        );
    };
    serve_with_drain(listener, state, shutdown, drain).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_memory_follows_the_batch_until_the_body_limit_caps_it() {
        let widths = [64, 32, 10];
        let at = |max_batch, max_body_bytes| Limits {
            max_batch,
            max_body_bytes,
        };
        // 10 inputs of 64 values: 64·16 + 10·32 + 96 = 1440 bytes each, plus the body buffer.
        assert_eq!(
            at(10, 1 << 20).request_bytes(&widths),
            Some(14_400 + (1 << 20))
        );
        // Twice the batch, twice the per-input part.
        assert_eq!(
            at(20, 1 << 20).request_bytes(&widths),
            Some(28_800 + (1 << 20))
        );
        // A body of 1280 bytes holds at most 10 inputs of 64 values, whatever max_batch says.
        assert_eq!(at(1_000_000, 1280).largest_batch(64), 10);
        assert_eq!(
            at(1_000_000, 1280).request_bytes(&widths),
            Some(14_400 + 1280)
        );
        // The server: model, samplers, and each concurrent request.
        let one = estimated_bytes(&widths, &at(10, 1 << 20), 1, 2).unwrap();
        let four = estimated_bytes(&widths, &at(10, 1 << 20), 4, 2).unwrap();
        assert_eq!(four - one, 3 * (14_400 + (1 << 20)));
        assert_eq!(
            estimated_bytes(&widths, &at(usize::MAX, usize::MAX), usize::MAX, 2),
            None
        );
    }

    #[test]
    fn validate_names_the_bad_value() {
        let e = validate_inputs(&[vec![0.0, 1.0], vec![0.5, 1.5]], 2, 10).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("inputs[1][1] = 1.5"), "{}", e.message);
        let e = validate_inputs(&[vec![f32::NAN, 0.0]], 2, 10).unwrap_err();
        assert!(e.message.contains("inputs[0][0] = NaN"), "{}", e.message);
        assert_eq!(
            validate_inputs(&[vec![0.0, 1.0], vec![0.25, 0.5]], 2, 10).unwrap(),
            vec![0.0, 1.0, 0.25, 0.5]
        );
    }

    #[test]
    fn content_type_with_charset_is_json() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            "Application/JSON; charset=utf-8".parse().unwrap(),
        );
        assert!(check_content_type(&h).is_ok());
        h.insert(header::CONTENT_TYPE, "application/jsonp".parse().unwrap());
        assert_eq!(
            check_content_type(&h).unwrap_err().status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }
}
