//! The HTTP API (`rgshield::serve`): every error path of the contract, the answers against the
//! in-process predictor, determinism across batches and execution paths, and one real socket.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use http_body_util::BodyExt;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;
use serde_json::{json, Value};
use tower::ServiceExt;

use rgshield::defence::{Defence, NoDefence, Query};
use rgshield::model::io::ModelMeta;
use rgshield::sample::{argmax, OutputMode};
use rgshield::serve::{router, Limits, ServeState};
use rgshield::DeepRbm;

const WIDTHS: [usize; 4] = [6, 5, 4, 3];
const SERVED: OutputMode = OutputMode::Served {
    samples: 64,
    seed: 7,
};

fn model() -> DeepRbm {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(11);
    DeepRbm::random(&WIDTHS, 1.5, &mut rng).expect("random model")
}

fn state_with(mode: OutputMode, defence: Arc<dyn Defence>, limits: Limits) -> Arc<ServeState> {
    Arc::new(ServeState::new(model(), mode, defence, limits).expect("state"))
}

fn state(mode: OutputMode) -> Arc<ServeState> {
    state_with(mode, Arc::new(NoDefence), Limits::default())
}

fn inputs(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            (0..WIDTHS[0])
                .map(|_| rgshield::sample::uniform_f32(&mut rng))
                .collect()
        })
        .collect()
}

/// Send one request through the router in process; status, body parsed as JSON, body length.
async fn send(state: &Arc<ServeState>, req: Request<Body>) -> (StatusCode, Value, usize) {
    let resp = router(state.clone())
        .oneshot(req)
        .await
        .expect("infallible");
    let status = resp.status();
    let ct = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("").to_string());
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(
        ct.as_deref(),
        Some("application/json"),
        "status {status}: every answer is JSON, got {:?}",
        String::from_utf8_lossy(&bytes)
    );
    let v: Value = serde_json::from_slice(&bytes).expect("JSON body");
    (status, v, bytes.len())
}

fn post_raw(path: &str, content_type: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::builder().method(Method::POST).uri(path);
    if let Some(ct) = content_type {
        b = b.header(header::CONTENT_TYPE, ct);
    }
    b.body(body.into()).expect("request")
}

fn post_json(body: &str) -> Request<Body> {
    post_raw("/v1/predict", Some("application/json"), body.to_string())
}

fn get(path: &str) -> Request<Body> {
    Request::builder()
        .uri(path)
        .body(Body::empty())
        .expect("request")
}

/// Assert a 4xx/5xx answer with `{"error": …}` containing every word of `words`.
fn assert_error(got: (StatusCode, Value, usize), status: StatusCode, words: &[&str]) {
    let (s, v, _) = got;
    assert_eq!(s, status, "body {v}");
    let msg = v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field in {v}"));
    for w in words {
        assert!(msg.contains(w), "error {msg:?} should mention {w:?}");
    }
    assert_eq!(
        v.as_object().map(|o| o.len()),
        Some(1),
        "only the error field: {v}"
    );
}

fn outputs_of(v: &Value) -> Vec<Vec<f32>> {
    serde_json::from_value(v["outputs"].clone()).expect("outputs")
}

#[tokio::test]
async fn predict_matches_the_predictor_with_argmax_classes() {
    for mode in [SERVED, OutputMode::MeanField] {
        let st = state(mode);
        let xs = inputs(5, 1);
        let (s, v, _) = send(&st, post_json(&json!({ "inputs": xs }).to_string())).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let outs = outputs_of(&v);
        let classes: Vec<usize> = serde_json::from_value(v["classes"].clone()).expect("classes");
        assert_eq!(outs.len(), 5);
        // The defence is not named unless the server discloses it.
        assert!(v.get("defence").is_none(), "{v}");
        let p = st.predictor();
        for (i, x) in xs.iter().enumerate() {
            assert_eq!(outs[i].len(), WIDTHS[3]);
            // JSON carries f32 exactly (shortest round-trip form), so the bits survive.
            let want = p.output(x);
            assert_eq!(
                outs[i].iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|f| f.to_bits()).collect::<Vec<_>>(),
                "mode {mode:?} input {i}"
            );
            assert_eq!(classes[i], argmax(&outs[i]));
        }
    }
}

/// A defence that moves every output, so classes must follow the defended values.
struct Reverse;
impl Defence for Reverse {
    fn name(&self) -> String {
        "reverse".into()
    }
    fn apply(&self, q: &Query<'_>) -> rgshield::Result<Vec<f32>> {
        Ok(q.y.iter().map(|v| 1.0 - v).collect())
    }
    fn keeps_argmax(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn outputs_are_defended_and_classes_are_their_argmax() {
    let st = Arc::new(
        ServeState::new(model(), SERVED, Arc::new(Reverse), Limits::default())
            .expect("state")
            .disclosing_defence(true),
    );
    let xs = inputs(8, 2);
    let (s, v, _) = send(&st, post_json(&json!({ "inputs": xs }).to_string())).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["defence"], "reverse");
    let outs = outputs_of(&v);
    let classes: Vec<usize> = serde_json::from_value(v["classes"].clone()).expect("classes");
    let p = st.predictor();
    for (i, x) in xs.iter().enumerate() {
        let want: Vec<f32> = p.output(x).iter().map(|v| 1.0 - v).collect();
        assert_eq!(outs[i], want);
        assert_eq!(classes[i], argmax(&want));
    }
}

#[tokio::test]
async fn same_input_gets_the_same_bits_alone_in_a_batch_and_off_the_reactor() {
    let inline = state(SERVED);
    let blocking = Arc::new(
        ServeState::new(model(), SERVED, Arc::new(NoDefence), Limits::default())
            .expect("state")
            .with_inline_max_work(0),
    );
    let xs = inputs(9, 3);
    let bits = |o: &[f32]| o.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    let (s, v, _) = send(&inline, post_json(&json!({ "inputs": xs }).to_string())).await;
    assert_eq!(s, StatusCode::OK);
    let batch = outputs_of(&v);
    let mut reversed = xs.clone();
    reversed.reverse();
    let (_, v, _) = send(
        &blocking,
        post_json(&json!({ "inputs": reversed }).to_string()),
    )
    .await;
    let batch_rev = outputs_of(&v);
    for (i, x) in xs.iter().enumerate() {
        for st in [&inline, &blocking] {
            let (s, v, _) = send(st, post_json(&json!({ "inputs": [x] }).to_string())).await;
            assert_eq!(s, StatusCode::OK);
            let alone = outputs_of(&v);
            assert_eq!(bits(&alone[0]), bits(&batch[i]), "input {i}");
        }
        assert_eq!(
            bits(&batch_rev[xs.len() - 1 - i]),
            bits(&batch[i]),
            "input {i}"
        );
    }
    // Different inputs do get different served outputs (the test is not vacuous).
    assert_ne!(bits(&batch[0]), bits(&batch[1]));
}

#[tokio::test]
async fn health_is_ok() {
    let (s, v, _) = send(&state(SERVED), get("/v1/health")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, json!({"status": "ok", "in_flight": 0}));
}

#[tokio::test]
async fn model_endpoint_shows_metadata_never_weights() {
    let m = model();
    let mut meta = ModelMeta::new(&m, vec!["cat".into(), "dog".into(), "eel".into()]);
    meta.metrics.insert("test_accuracy".into(), 0.5);
    let limits = Limits {
        max_body_bytes: 5000,
        max_batch: 17,
    };
    let st = Arc::new(
        ServeState::new(m.clone(), SERVED, Arc::new(NoDefence), limits)
            .expect("state")
            .with_meta(&meta)
            .expect("meta fits"),
    );
    let (s, v, len) = send(&st, get("/v1/model")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["widths"], json!(WIDTHS));
    assert_eq!(v["class_names"], json!(["cat", "dog", "eel"]));
    assert_eq!(v["weights_fingerprint"], json!(meta.weights_fingerprint));
    assert_eq!(v["output_mode"], json!({"served": {"samples": 64}}));
    assert_eq!(v["output"], json!("scores"));
    assert!(
        v.get("defence").is_none(),
        "the defence is hidden by default: {v}"
    );
    assert_eq!(
        v["limits"],
        json!({"max_body_bytes": 5000, "max_batch": 17})
    );
    // No weights: the body is far smaller than the 6·5+5·4+4·3 weights would need, no weight
    // fields appear anywhere, no weight value is printed, and the serving seed stays private.
    assert!(len < 600, "model info is {len} bytes: {v}");
    let text = v.to_string();
    for key in [
        "\"w\"",
        "\"W\"",
        "\"a\"",
        "\"b\"",
        "layers",
        "weights\"",
        "seed",
    ] {
        assert!(!text.contains(key), "{key} in {text}");
    }
    for l in m.rbms() {
        for w in l.w().iter().take(5) {
            assert!(!text.contains(&w.to_string()), "weight {w} in {text}");
        }
    }
    // Metadata that belongs to another model is refused.
    let other = ModelMeta::new(&model(), vec!["x".into(); 2]);
    assert!(ServeState::new(m, SERVED, Arc::new(NoDefence), limits)
        .expect("state")
        .with_meta(&other)
        .is_err());
}

#[tokio::test]
async fn malformed_json_and_non_json_number_tokens_are_400() {
    let st = state(SERVED);
    assert_error(
        send(&st, post_json("{\"inputs\": [[0, 1,")).await,
        StatusCode::BAD_REQUEST,
        &["malformed JSON", "EOF"],
    );
    assert_error(
        send(&st, post_json("")).await,
        StatusCode::BAD_REQUEST,
        &["malformed JSON"],
    );
    assert_error(
        send(
            &st,
            post_json("{\"inputs\": [[0, 0, 0, 0, 0, 0]]} trailing"),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["malformed JSON", "trailing"],
    );
    // JSON has no NaN or Infinity: the literal tokens are a syntax error, named with position.
    for tok in ["NaN", "Infinity", "-Infinity"] {
        let body = format!("{{\"inputs\": [[0, 0, 0, 0, 0, {tok}]]}}");
        assert_error(
            send(&st, post_json(&body)).await,
            StatusCode::BAD_REQUEST,
            &["malformed JSON", "column"],
        );
    }
}

#[tokio::test]
async fn wrong_shape_json_is_422_naming_the_field() {
    let st = state(SERVED);
    assert_error(
        send(&st, post_json("{\"input\": [[0, 0, 0, 0, 0, 0]]}")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        &["unknown field `input`"],
    );
    assert_error(
        send(
            &st,
            post_json("{\"inputs\": [[0, 0, 0, 0, 0, 0]], \"extra\": 1}"),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        &["unknown field `extra`"],
    );
    assert_error(
        send(&st, post_json("{}")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        &["missing field `inputs`"],
    );
    assert_error(
        send(&st, post_json("{\"inputs\": [[0, \"a\", 0, 0, 0, 0]]}")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        &["invalid type", "string"],
    );
    assert_error(
        send(&st, post_json("[1, 2]")).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        &["inputs"],
    );
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let st = state(SERVED);
    let body = json!({"inputs": inputs(1, 4)}).to_string();
    assert_error(
        send(
            &st,
            post_raw("/v1/predict", Some("text/plain"), body.clone()),
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        &["application/json", "text/plain"],
    );
    assert_error(
        send(&st, post_raw("/v1/predict", None, body.clone())).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        &["application/json", "none"],
    );
    let (s, _, _) = send(
        &st,
        post_raw("/v1/predict", Some("application/json; charset=utf-8"), body),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn empty_and_oversized_batches_are_refused() {
    let limits = Limits {
        max_batch: 4,
        ..Limits::default()
    };
    let st = state_with(SERVED, Arc::new(NoDefence), limits);
    assert_error(
        send(&st, post_json("{\"inputs\": []}")).await,
        StatusCode::BAD_REQUEST,
        &["inputs is empty"],
    );
    assert_error(
        send(&st, post_json(&json!({"inputs": inputs(5, 5)}).to_string())).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        &["5 rows", "limit of 4"],
    );
    let (s, _, _) = send(&st, post_json(&json!({"inputs": inputs(4, 5)}).to_string())).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn large_bodies_parsed_off_the_reactor_give_the_same_answers_and_errors() {
    let st = state(SERVED);
    let xs = inputs(1000, 10);
    let body = json!({ "inputs": xs }).to_string();
    assert!(body.len() > rgshield::serve::INLINE_PARSE_MAX_BYTES);
    let (s, v, _) = send(&st, post_json(&body)).await;
    assert_eq!(s, StatusCode::OK);
    let outs = outputs_of(&v);
    let p = st.predictor();
    assert_eq!(outs[999], p.output(&xs[999]));
    let mut bad = body.clone();
    bad.pop();
    assert_error(
        send(&st, post_json(&bad)).await,
        StatusCode::BAD_REQUEST,
        &["malformed JSON", "EOF"],
    );
}

#[tokio::test]
async fn input_of_wrong_length_is_named() {
    let st = state(SERVED);
    let mut xs = inputs(5, 6);
    xs[3].pop();
    assert_error(
        send(&st, post_json(&json!({ "inputs": xs }).to_string())).await,
        StatusCode::BAD_REQUEST,
        &["inputs[3] has 5 values, the model takes 6"],
    );
    xs[3] = vec![0.0; 7];
    assert_error(
        send(&st, post_json(&json!({ "inputs": xs }).to_string())).await,
        StatusCode::BAD_REQUEST,
        &["inputs[3] has 7 values, the model takes 6"],
    );
}

#[tokio::test]
async fn values_outside_the_unit_interval_or_overflowing_are_named() {
    let st = state(SERVED);
    assert_error(
        send(
            &st,
            post_json("{\"inputs\": [[0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1.5]]}"),
        )
        .await,
        StatusCode::BAD_REQUEST,
        &["inputs[1][5] = 1.5", "[0, 1]"],
    );
    assert_error(
        send(&st, post_json("{\"inputs\": [[0, -0.25, 0, 0, 0, 0]]}")).await,
        StatusCode::BAD_REQUEST,
        &["inputs[0][1] = -0.25"],
    );
    // 1e39 is valid JSON but overflows f32 to infinity.
    assert_error(
        send(&st, post_json("{\"inputs\": [[0, 0, 1e39, 0, 0, 0]]}")).await,
        StatusCode::BAD_REQUEST,
        &["inputs[0][2] = inf", "finite"],
    );
    // The boundaries themselves are fine.
    let (s, _, _) = send(&st, post_json("{\"inputs\": [[0, 1, 0.0, 1.0, 0, 1]]}")).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let limits = Limits {
        max_body_bytes: 200,
        ..Limits::default()
    };
    let st = state_with(SERVED, Arc::new(NoDefence), limits);
    let big = json!({"inputs": inputs(10, 7)}).to_string();
    assert!(big.len() > 200);
    assert_error(
        send(&st, post_json(&big)).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        &["larger than the limit of 200 bytes"],
    );
    // Without a Content-Length the limit still holds (streamed body).
    let chunks: Vec<Vec<u8>> = big.as_bytes().chunks(50).map(|c| c.to_vec()).collect();
    let streamed = Body::new(ChunkBody(chunks.into_iter().rev().collect()));
    assert_error(
        send(
            &st,
            post_raw("/v1/predict", Some("application/json"), streamed),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        &["limit of 200 bytes"],
    );
}

/// A body sent in chunks with no Content-Length (chunks stored last-first, popped in order).
struct ChunkBody(Vec<Vec<u8>>);

impl http_body::Body for ChunkBody {
    type Data = axum::body::Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Ready(
            self.0
                .pop()
                .map(|v| Ok(http_body::Frame::data(axum::body::Bytes::from(v)))),
        )
    }
}

#[tokio::test]
async fn unknown_route_is_404_and_wrong_method_405_in_json() {
    let st = state(SERVED);
    assert_error(
        send(&st, get("/v1/nothing")).await,
        StatusCode::NOT_FOUND,
        &["no route GET /v1/nothing", "/v1/predict"],
    );
    assert_error(
        send(&st, get("/v1/predict")).await,
        StatusCode::METHOD_NOT_ALLOWED,
        &["method GET is not allowed on /v1/predict"],
    );
    assert_error(
        send(&st, post_json("{}").tap_uri("/v1/health")).await,
        StatusCode::METHOD_NOT_ALLOWED,
        &["POST", "/v1/health"],
    );
}

trait TapUri {
    fn tap_uri(self, uri: &str) -> Self;
}
impl TapUri for Request<Body> {
    fn tap_uri(mut self, uri: &str) -> Self {
        *self.uri_mut() = uri.parse().expect("uri");
        self
    }
}

/// Defences that fail or panic: the client gets a 500 JSON answer, never a dropped connection.
struct Failing {
    panic: bool,
}
impl Defence for Failing {
    fn name(&self) -> String {
        "failing".into()
    }
    fn apply(&self, q: &Query<'_>) -> rgshield::Result<Vec<f32>> {
        if self.panic {
            panic!("defence bug");
        }
        if q.y.len() == 3 {
            Ok(vec![2.0; 3])
        } else {
            Err(rgshield::Error::invalid("never"))
        }
    }
    fn keeps_argmax(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn internal_failures_are_500_json() {
    let body = json!({"inputs": inputs(2, 8)}).to_string();
    let st = state_with(
        SERVED,
        Arc::new(Failing { panic: false }),
        Limits::default(),
    );
    assert_error(
        send(&st, post_json(&body)).await,
        StatusCode::INTERNAL_SERVER_ERROR,
        &["defence failing returned output[0] = 2, outside [0, 1]"],
    );
    for inline in [u64::MAX, 0] {
        let st = Arc::new(
            ServeState::new(
                model(),
                SERVED,
                Arc::new(Failing { panic: true }),
                Limits::default(),
            )
            .expect("state")
            .with_inline_max_work(inline),
        );
        assert_error(
            send(&st, post_json(&body)).await,
            StatusCode::INTERNAL_SERVER_ERROR,
            &["panic"],
        );
    }
}

#[test]
fn state_refuses_zero_limits_and_zero_samples() {
    let d: Arc<dyn Defence> = Arc::new(NoDefence);
    for (limits, mode) in [
        (
            Limits {
                max_batch: 0,
                ..Limits::default()
            },
            SERVED,
        ),
        (
            Limits {
                max_body_bytes: 0,
                ..Limits::default()
            },
            SERVED,
        ),
        (
            Limits::default(),
            OutputMode::Served {
                samples: 0,
                seed: 0,
            },
        ),
    ] {
        assert!(ServeState::new(model(), mode, d.clone(), limits).is_err());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_socket_end_to_end_with_graceful_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let st = state(SERVED);
    let listener = rgshield::serve::bind(([127, 0, 0, 1], 0).into())
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(rgshield::serve::serve(listener, st.clone(), async {
        let _ = stopped.await;
    }));
    let x = inputs(1, 9);
    let body = json!({ "inputs": x }).to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "POST /v1/predict HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).await.expect("read");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let json_part = resp.split("\r\n\r\n").nth(1).expect("body");
    let v: Value = serde_json::from_str(json_part).expect("JSON");
    assert_eq!(outputs_of(&v)[0], st.predictor().output(&x[0]));
    stop.send(()).expect("server alive");
    tokio::time::timeout(std::time::Duration::from_secs(10), server)
        .await
        .expect("server stops after shutdown")
        .expect("task")
        .expect("serve ok");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// A model directory holding a random model of [`WIDTHS`].
fn model_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let m = model();
    let meta = ModelMeta::new(&m, vec!["a".into(), "b".into(), "c".into()]);
    rgshield::model::io::save(dir.path(), &m, &meta).expect("save");
    dir
}

#[test]
fn serve_cli_prints_its_address_answers_and_stops_on_sigint() {
    use std::io::{BufRead, BufReader, Read, Write};
    let dir = model_dir();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rgshield"))
        .args(["serve", "--model"])
        .arg(dir.path())
        .args(["--addr", "127.0.0.1:0", "--mean-field", "--threads", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn rgshield serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = loop {
        let line = lines.next().expect("a line before exit").expect("utf-8");
        if let Some(a) = line.strip_prefix("listening on http://") {
            break a.to_string();
        }
    };
    let mut s = std::net::TcpStream::connect(&addr).expect("connect");
    s.write_all(
        format!("GET /v1/model HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.contains("\"class_names\":[\"a\",\"b\",\"c\"]"),
        "{resp}"
    );
    assert!(resp.contains("\"output_mode\":\"mean-field\""), "{resp}");
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill -INT");
    assert!(killed.success());
    // Never hang the test run: a server that ignores SIGINT is killed and the test fails.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("rgshield serve did not stop within 20 s of SIGINT");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "graceful exit after Ctrl-C, got {status}");
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    assert!(rest.iter().any(|l| l == "stopped"), "{rest:?}");
}

/// `rgshield serve --mean-field` on [`model_dir`] with `extra` flags: the child (stdout and stderr
/// piped), its address and its remaining stdout lines.
fn spawn_serve(
    dir: &std::path::Path,
    extra: &[&str],
) -> (
    std::process::Child,
    String,
    std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rgshield"))
        .args(["serve", "--model"])
        .arg(dir)
        .args(["--addr", "127.0.0.1:0", "--mean-field", "--threads", "1"])
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn rgshield serve");
    let mut lines = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let addr = loop {
        let line = lines.next().expect("a line before exit").expect("utf-8");
        if let Some(a) = line.strip_prefix("listening on http://") {
            break a.to_string();
        }
    };
    (child, addr, lines)
}

/// `GET /v1/health`'s `in_flight`.
fn in_flight(addr: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.write_all(
        format!("GET /v1/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let body = resp.split("\r\n\r\n").nth(1).expect("body");
    let v: Value = serde_json::from_str(body).expect("JSON");
    v["in_flight"].as_u64().expect("in_flight")
}

/// Poll until `ready()` holds, at most `secs` seconds (only so that a broken server cannot hang
/// the test run; no duration is asserted).
fn eventually(secs: u64, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {secs} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Wait for the child's exit (killing it after `secs` seconds so that the test cannot hang).
fn exit_status(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("rgshield serve did not stop within {secs} s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A predict request on a connection, its body sent only in part: the server holds it in flight
/// until the rest is sent — a request in flight for as long as the test needs, without timing.
fn partial_predict(addr: &str) -> (std::net::TcpStream, Vec<u8>) {
    use std::io::Write;
    let body = json!({ "inputs": inputs(1, 4) }).to_string().into_bytes();
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let head = format!(
        "POST /v1/predict HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("write head");
    let half = body.len() / 2;
    s.write_all(&body[..half]).expect("write half the body");
    s.flush().expect("flush");
    (s, body[half..].to_vec())
}

fn kill(signal: &str, child: &std::process::Child) {
    let ok = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(ok.success());
}

#[test]
fn sigterm_drains_the_request_in_flight_refuses_new_connections_and_exits_0() {
    use std::io::{Read, Write};
    let dir = model_dir();
    let (mut child, addr, mut lines) = spawn_serve(dir.path(), &["--drain-seconds", "300"]);
    let (mut s, rest) = partial_predict(&addr);
    eventually(30, "the request in flight", || in_flight(&addr) == 1);
    kill("-TERM", &child);
    let draining = loop {
        let line = lines.next().expect("a line before exit").expect("utf-8");
        if line.starts_with("received SIGTERM: draining") {
            break line;
        }
    };
    assert!(draining.contains("1 requests in flight"), "{draining}");
    // New connections are refused while the request in flight holds the server up.
    eventually(30, "new connections refused", || {
        std::net::TcpStream::connect(&addr).is_err()
    });
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the server exited with a request in flight"
    );
    // The request in flight completes and gets its whole answer.
    s.write_all(&rest).expect("write the rest of the body");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let v: Value =
        serde_json::from_str(resp.split("\r\n\r\n").nth(1).expect("body")).expect("JSON");
    let outputs = outputs_of(&v);
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].len(), WIDTHS[WIDTHS.len() - 1]);
    let status = exit_status(&mut child, 60);
    assert!(
        status.success(),
        "graceful exit after SIGTERM, got {status}"
    );
    let rest: Vec<String> = lines.map_while(|l| l.ok()).collect();
    assert!(rest.iter().any(|l| l == "stopped"), "{rest:?}");
}

#[test]
fn a_request_that_outlasts_the_drain_timeout_is_abandoned_with_an_error() {
    use std::io::Read;
    let dir = model_dir();
    let (mut child, addr, _lines) = spawn_serve(dir.path(), &["--drain-seconds", "0.5"]);
    let (_s, _rest) = partial_predict(&addr);
    eventually(30, "the request in flight", || in_flight(&addr) == 1);
    kill("-TERM", &child);
    let status = exit_status(&mut child, 60);
    assert!(
        !status.success(),
        "a drain timeout must not look like a clean stop"
    );
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    assert!(
        err.contains("1 requests still in flight after the drain timeout of 0.5 s"),
        "{err}"
    );
}

#[test]
fn serve_counts_the_request_limits_against_the_memory_budget() {
    let dir = model_dir();
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rgshield"))
            .args(["--memory-budget", "64M", "serve", "--model"])
            .arg(dir.path())
            .args(["--addr", "127.0.0.1:0", "--threads", "1"])
            .args(extra)
            .output()
            .expect("run rgshield serve");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A tiny model and a body buffer that fits (57 MiB), but requests of up to 5 million inputs
    // (as many as 60 MB of JSON can hold): refused at start, naming the limits and the budget.
    let (ok, stderr) = run(&["--max-batch", "10000000", "--max-body-bytes", "60000000"]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("--max-batch 10000000") && stderr.contains("memory budget of 64.0 MiB"),
        "{stderr}"
    );
    // The body buffer alone can exceed it.
    let (ok, stderr) = run(&["--max-batch", "1", "--max-body-bytes", "100000000"]);
    assert!(
        !ok && stderr.contains("--max-body-bytes 100000000"),
        "{stderr}"
    );
    // The default limits fit the same budget: the server starts (and is stopped here).
    let (mut child, _addr, _lines) = spawn_serve(dir.path(), &["--memory-budget", "64M"]);
    kill("-TERM", &child);
    assert!(exit_status(&mut child, 30).success());
}
