//! `serve --api-keys/--state/--watermark/--monitor`, `keys new` and `verify`, end to end
//! through the binary (issue 16).

mod common;

use std::path::Path;

use common::{rgshield, Server};
use rgshield::guard::store::Store;
use rgshield::model::io as model_io;
use rgshield::DeepRbm;
use serde_json::Value;

/// A small random model (12 inputs, 5 classes) saved in `dir`.
fn model_dir(dir: &Path) {
    use rand::SeedableRng;
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(4);
    let m = DeepRbm::random(&[12, 8, 6, 5], 0.8, &mut rng).expect("model");
    let names = (0..5).map(|c| c.to_string()).collect();
    model_io::save(dir, &m, &model_io::ModelMeta::new(&m, names)).expect("save");
}

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8").to_string()
}

fn new_key(file: &Path, name: &str, extra: &[&str]) -> String {
    let (ok, out, err) = rgshield(
        &[
            &["keys", "new", "--file", &s(file), "--name", name][..],
            extra,
        ]
        .concat(),
    );
    assert!(ok, "keys new: {err}");
    out.trim().to_string()
}

fn inputs(n: usize, seed: u64) -> Vec<Vec<f32>> {
    use rand::{RngExt, SeedableRng};
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..12).map(|_| rng.random::<f32>()).collect())
        .collect()
}

fn body(rows: &[Vec<f32>]) -> String {
    serde_json::json!({ "inputs": rows }).to_string()
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

#[test]
fn keys_quotas_and_admin_endpoints_with_json_reasons_and_counts_that_survive_a_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (model, keys, db) = (
        tmp.path().join("m"),
        tmp.path().join("keys.json"),
        tmp.path().join("state.db"),
    );
    model_dir(&model);
    let alice = new_key(&keys, "alice", &["--quota", "5"]);
    let admin = new_key(&keys, "ops", &["--admin"]);
    assert!(alice.starts_with("rgs_") && alice != admin);
    let text = std::fs::read_to_string(&keys).expect("key file");
    assert!(!text.contains(&alice[4..]), "the key itself is not stored");
    let (ok, _, err) = rgshield(&["keys", "new", "--file", &s(&keys), "--name", "alice"]);
    assert!(!ok && err.contains("'alice' exists already"), "{err}");
    let (ok, out, _) = rgshield(&["keys", "list", "--file", &s(&keys)]);
    assert!(
        ok && out.contains("alice\tquota 5") && out.contains("ops") && out.contains("admin"),
        "{out}"
    );

    let args = [
        "--model",
        &s(&model),
        "--mean-field",
        "--api-keys",
        &s(&keys),
        "--state",
        &s(&db),
    ];
    let srv = Server::spawn(&args);
    let b = body(&inputs(2, 1));
    let (st, resp) = srv.request("POST", "/v1/predict", Some(&b));
    assert_eq!(st, 401);
    assert_eq!(json(&resp)["reason"], "missing_key", "{resp}");
    let (st, resp) = srv.request_as("rgs_nope", "POST", "/v1/predict", Some(&b));
    assert_eq!(
        (st, json(&resp)["reason"].as_str()),
        (401, Some("unknown_key")),
        "{resp}"
    );
    let (st, resp) = srv.request_as(&alice, "POST", "/v1/predict", Some(&b));
    assert_eq!(st, 200, "{resp}");
    assert_eq!(json(&resp)["classes"].as_array().map(Vec::len), Some(2));
    let (st, resp) = srv.request_as(&alice, "POST", "/v1/predict", Some(&body(&inputs(4, 2))));
    assert_eq!(st, 429);
    let v = json(&resp);
    assert_eq!(v["reason"], "quota_exceeded");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or("")
            .contains("3 of the quota of 5 left"),
        "{v}"
    );
    let (st, resp) = srv.request_as(&alice, "GET", "/v1/usage", None);
    assert_eq!(st, 200);
    let u = json(&resp);
    assert_eq!(
        (
            u["client"].as_str(),
            u["queries"].as_u64(),
            u["remaining"].as_u64()
        ),
        (Some("alice"), Some(2), Some(3)),
        "{u}"
    );
    let (st, resp) = srv.request_as(&alice, "GET", "/v1/admin/alerts", None);
    assert_eq!(
        (st, json(&resp)["reason"].as_str()),
        (403, Some("not_admin"))
    );
    let (st, resp) = srv.request_as(&admin, "GET", "/v1/admin/usage", None);
    assert_eq!(st, 200, "{resp}");
    assert_eq!(json(&resp)["clients"].as_array().map(Vec::len), Some(2));
    let (st, resp) = srv.request_as(&admin, "GET", "/v1/admin/alerts", None);
    assert_eq!((st, resp.as_str()), (200, r#"{"alerts":[]}"#));
    drop(srv);

    let srv = Server::spawn(&args);
    let (_, resp) = srv.request_as(&alice, "GET", "/v1/usage", None);
    assert_eq!(json(&resp)["queries"].as_u64(), Some(2), "{resp}");
    let (st, _) = srv.request_as(&alice, "POST", "/v1/predict", Some(&body(&inputs(3, 3))));
    assert_eq!(st, 200);
    let (st, resp) = srv.request_as(&alice, "POST", "/v1/predict", Some(&body(&inputs(1, 4))));
    assert_eq!(
        (st, json(&resp)["reason"].as_str()),
        (429, Some("quota_exceeded"))
    );
    // Health and model stay open; without --api-keys the usage route does not exist.
    assert_eq!(srv.request("GET", "/v1/health", None).0, 200);
    drop(srv);
    let plain = Server::spawn(&["--model", &s(&model), "--mean-field"]);
    assert_eq!(plain.request("GET", "/v1/usage", None).0, 404);
    assert_eq!(plain.request("POST", "/v1/predict", Some(&b)).0, 200);
}

#[test]
fn a_kill_during_writes_leaves_a_consistent_database_that_counts_every_answer() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (model, keys, db) = (
        tmp.path().join("m"),
        tmp.path().join("keys.json"),
        tmp.path().join("state.db"),
    );
    model_dir(&model);
    let key = new_key(&keys, "c", &[]);
    let args = [
        "--model",
        &s(&model),
        "--mean-field",
        "--api-keys",
        &s(&keys),
        "--state",
        &s(&db),
        "--watermark",
        "rate=0.3",
        "--key-file",
        &s(&tmp.path().join("secret")),
    ];
    let mut srv = Server::spawn(&args);
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let addr = srv.addr.clone();
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let (answered, addr, key) = (answered.clone(), addr.clone(), key.clone());
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                for i in 0..10_000u64 {
                    let b = body(&inputs(1, 1000 * t + i));
                    let Ok(mut c) = std::net::TcpStream::connect(&addr) else { return };
                    let head = format!(
                        "POST /v1/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        b.len()
                    );
                    if c.write_all(head.as_bytes()).and_then(|_| c.write_all(b.as_bytes())).is_err() {
                        return;
                    }
                    let mut r = String::new();
                    if c.read_to_string(&mut r).is_err() || !r.starts_with("HTTP/1.1 200") {
                        return;
                    }
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        })
        .collect();
    while answered.load(std::sync::atomic::Ordering::SeqCst) < 150 {
        std::thread::yield_now();
    }
    srv.kill();
    for w in workers {
        w.join().expect("worker");
    }
    let n = answered.load(std::sync::atomic::Ordering::SeqCst);
    let store = Store::open(&db).expect("the database opens after the kill");
    assert_eq!(store.integrity_check().expect("check"), "ok");
    let counted = store.usage().expect("usage")["c"].queries;
    // Every answer was charged before it was sent; at most the 4 requests in flight were
    // charged and not answered.
    assert!(
        counted >= n && counted <= n + 4,
        "{counted} charged, {n} answered"
    );
    let marks = store.watermarks().expect("watermarks");
    assert!(
        !marks.is_empty() && marks.len() as u64 <= counted,
        "{} marks",
        marks.len()
    );
    drop(store);
    let srv = Server::spawn(&args);
    let (_, resp) = srv.request_as(&key, "GET", "/v1/usage", None);
    assert_eq!(json(&resp)["queries"].as_u64(), Some(counted), "{resp}");
}

#[test]
fn watermarked_answers_are_verified_against_a_copy_and_an_innocent_model() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (model, db) = (tmp.path().join("m"), tmp.path().join("state.db"));
    model_dir(&model);
    let args = [
        "--model",
        &s(&model),
        "--mean-field",
        "--state",
        &s(&db),
        "--watermark",
        "rate=0.2",
        "--key-file",
        &s(&tmp.path().join("secret")),
    ];
    let srv = Server::spawn(&args);
    let rows = inputs(400, 9);
    let (st, resp) = srv.request("POST", "/v1/predict", Some(&body(&rows)));
    assert_eq!(st, 200, "{resp}");
    let first = json(&resp);
    // Repeated queries get the same (marked) answers.
    let (_, again) = srv.request("POST", "/v1/predict", Some(&body(&rows)));
    assert_eq!(json(&again), first);
    let marks = Store::open(&db).expect("db").watermarks().expect("marks");
    // Binomial(400, 0.2): 80 ± 8; 4 sd.
    assert!(
        (marks.len() as f64 - 80.0).abs() < 32.0,
        "{} marked",
        marks.len()
    );
    let plain = Server::spawn(&["--model", &s(&model), "--mean-field"]);
    let (_, unmarked) = plain.request("POST", "/v1/predict", Some(&body(&rows)));
    let changed = first["classes"]
        .as_array()
        .unwrap()
        .iter()
        .zip(json(&unmarked)["classes"].as_array().unwrap())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        changed,
        marks.len(),
        "exactly the logged queries changed class"
    );

    // The victim's own weights (never trained on the marks): agrees with the original classes,
    // so m = 0 and p = 1.
    let out = tmp.path().join("v.json");
    let (ok, stdout, err) = rgshield(&[
        "verify",
        "--state",
        &s(&db),
        "--suspect-model",
        &s(&model),
        "--out",
        &s(&out),
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("p-value"), "{stdout}");
    let v = json(&std::fs::read_to_string(&out).expect("out"));
    assert_eq!(
        (v["agree_target"].as_u64(), v["p_value"].as_f64()),
        (Some(0), Some(1.0)),
        "{v}"
    );
    // The watermarking server itself, as a suspect API: it gives every target.
    let url = format!("http://{}", srv.addr);
    let (ok, _, err) = rgshield(&[
        "verify",
        "--state",
        &s(&db),
        "--suspect-url",
        &url,
        "--out",
        &s(&out),
    ]);
    assert!(ok, "{err}");
    let v = json(&std::fs::read_to_string(&out).expect("out"));
    assert_eq!(v["agree_target"].as_u64(), Some(marks.len() as u64));
    assert!(v["p_value"].as_f64().unwrap() < 1e-30, "{v}");
    let (ok, _, err) = rgshield(&[
        "verify",
        "--state",
        &s(&tmp.path().join("none.db")),
        "--suspect-model",
        &s(&model),
    ]);
    assert!(!ok && err.contains("none.db"), "{err}");
}

#[test]
fn guard_flags_are_checked_before_serving() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tmp.path().join("m");
    model_dir(&model);
    let m = s(&model);
    let (ok, _, err) = rgshield(&["serve", "--model", &m, "--api-keys", "k.json"]);
    assert!(!ok && err.contains("--state"), "{err}");
    let (ok, _, err) = rgshield(&[
        "serve",
        "--model",
        &m,
        "--state",
        &s(&tmp.path().join("db")),
        "--watermark",
        "rate=2",
    ]);
    assert!(!ok && err.contains("watermark rate = 2"), "{err}");
    let (ok, _, err) = rgshield(&["serve", "--model", &m, "--state", "db", "--monitor"]);
    assert!(!ok && err.contains("--api-keys"), "{err}");
    let bad = tmp.path().join("bad.json");
    std::fs::write(&bad, "{\"clients\": 3}").expect("write");
    let (ok, _, err) = rgshield(&[
        "serve",
        "--model",
        &m,
        "--api-keys",
        &s(&bad),
        "--state",
        &s(&tmp.path().join("db")),
    ]);
    assert!(!ok && err.contains("bad.json"), "{err}");
}

/// Issue 16: `verify` gives p ≈ uniform on innocent models. Small MLPs trained on the digits'
/// training split with true labels (different seeds, widths and subsets) are verified against
/// the watermark logs of 25 keys each on the test images; under H₀ the fraction of p ≤ α must
/// stay within binomial error of at most α (the binomial test is valid, and conservative).
#[test]
fn verify_is_calibrated_on_many_small_innocent_models() {
    use rand::{RngExt, SeedableRng};
    use rgshield::data::{self, DataSpec, LoadOptions};
    use rgshield::defence::Key;
    use rgshield::guard::store::WatermarkRecord;
    use rgshield::guard::watermark::{verify_classes, Watermark, WatermarkParams};
    use rgshield::model::mlp::{Mlp, MlpParams};
    use rgshield::Params;

    let d = data::load(&DataSpec::Digits, &LoadOptions::default()).expect("digits");
    let (train, test) = (&d.train, &d.test);
    let cfg = MlpParams {
        hidden: 16,
        epochs: 4,
        ..MlpParams::default()
    }
    .check()
    .expect("params");
    let mut ps = Vec::new();
    for model in 0..8u64 {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(model);
        let rows: Vec<usize> = (0..train.len())
            .filter(|_| rng.random::<f64>() < 0.6)
            .collect();
        let x: Vec<f64> = rows
            .iter()
            .flat_map(|&r| train.row(r).iter().map(|&v| v as f64))
            .collect();
        let mut t = vec![0.0; rows.len() * 10];
        for (i, &r) in rows.iter().enumerate() {
            t[i * 10 + train.y[r] as usize] = 1.0;
        }
        let m = Mlp::distill(&x, &t, rows.len(), &cfg, model).expect("train");
        let classes: Vec<usize> = (0..test.len())
            .map(|i| m.class(&test.row(i).iter().map(|&v| v as f64).collect::<Vec<_>>()))
            .collect();
        for key in 0..25 {
            let w = Watermark::new(
                &Key::public(&format!("innocent {model} {key}")),
                &WatermarkParams { rate: 0.5 }.check().expect("rate"),
            );
            // The victim's class: the true label (any key-independent classes would do).
            let (mut recs, mut suspect) = (Vec::new(), Vec::new());
            for (i, &class) in classes.iter().enumerate() {
                let x = test.row(i);
                if w.selects(x) {
                    let original = test.y[i] as usize;
                    recs.push(WatermarkRecord {
                        client: None,
                        time: 0.0,
                        input: x.to_vec(),
                        original,
                        target: w.target(x, original, 10),
                    });
                    suspect.push(class);
                }
            }
            ps.push(verify_classes(&recs, &suspect, 10).expect("verify").p_value);
        }
    }
    let n = ps.len() as f64;
    for alpha in [0.01, 0.05, 0.1, 0.25, 0.5] {
        let frac = ps.iter().filter(|&&p| p <= alpha).count() as f64 / n;
        let band = 3.0 * (alpha * (1.0 - alpha) / n).sqrt();
        assert!(
            frac <= alpha + band,
            "P(p ≤ {alpha}) = {frac} over {n} innocent tests"
        );
    }
    // Not degenerate: the innocent models disagree with the victim often enough for the test
    // to have room (else every p would be 1 and the check above could not fail).
    let frac = ps.iter().filter(|&&p| p <= 0.5).count() as f64 / n;
    assert!(frac > 0.15, "P(p ≤ 0.5) = {frac}");
}

/// `bench guard` end to end on a small setting: it writes its report, and the JBDA stream (a
/// few seeds and λ-steps) is flagged by the monitor at its first window, as PRADA reports.
#[test]
fn bench_guard_writes_its_report_and_flags_jbda() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path().join("g");
    let (ok, stdout, err) = rgshield(&[
        "bench",
        "guard",
        "--out",
        &s(&out),
        "--seeds",
        "1",
        "--budgets",
        "120",
        "--benign",
        "2",
        "--innocent",
        "2",
        "--innocent-rbms",
        "1",
        "--clone-epochs",
        "3",
        "--rates",
        "0.05",
        "--deltas",
        "0.8",
    ]);
    assert!(ok, "{err}");
    assert!(stdout.contains("## Innocent models"), "{stdout}");
    let r = json(&std::fs::read_to_string(out.join("guard_eval.json")).expect("json"));
    assert!(
        out.join("guard_eval.md").exists() && out.join("pvalue_vs_budget_rate0.05.png").exists()
    );
    let jbda = r["attacks"]
        .as_array()
        .expect("attacks")
        .iter()
        .find(|a| a["client"] == "jbda")
        .expect("jbda");
    assert!(jbda["detected_at"][0].as_u64().is_some(), "{jbda}");
    assert_eq!(r["clones"].as_array().map(Vec::len), Some(3 * 2));
    assert_eq!(r["benign"].as_array().map(Vec::len), Some(2));
    let archs: Vec<&str> = r["innocent"]
        .as_array()
        .expect("innocent")
        .iter()
        .filter_map(|i| i["architecture"].as_str())
        .collect();
    assert!(
        archs.contains(&"mlp") && archs.contains(&"rbm 64-16-10"),
        "{archs:?}"
    );
}

/// Over HTTP: the rate limit answers 429 with `Retry-After`, and a monitor alarm is listed at
/// `/v1/admin/alerts` and cuts the client (403) when `--on-alarm cut`. The rate is 0.01 query/s
/// so that no refill can happen during the test, however slow the machine.
#[test]
fn rate_limits_and_monitor_alarms_over_http() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (model, keys, db) = (
        tmp.path().join("m"),
        tmp.path().join("keys.json"),
        tmp.path().join("state.db"),
    );
    model_dir(&model);
    let slow = new_key(&keys, "slow", &["--rate", "0.01", "--burst", "2"]);
    let thief = new_key(&keys, "thief", &[]);
    let ops = new_key(&keys, "ops", &["--admin"]);
    let srv = Server::spawn(&[
        "--model",
        &s(&model),
        "--mean-field",
        "--api-keys",
        &s(&keys),
        "--state",
        &s(&db),
        "--monitor",
        "window=10,stride=1",
        "--on-alarm",
        "cut",
    ]);
    let (st, resp) = srv.request_as(&slow, "POST", "/v1/predict", Some(&body(&inputs(3, 1))));
    assert_eq!(
        (st, json(&resp)["reason"].as_str()),
        (429, Some("batch_over_burst")),
        "{resp}"
    );
    assert_eq!(
        srv.request_as(&slow, "POST", "/v1/predict", Some(&body(&inputs(2, 2))))
            .0,
        200
    );
    use std::io::{Read, Write};
    let b = body(&inputs(1, 3));
    let mut c = std::net::TcpStream::connect(&srv.addr).expect("connect");
    write!(
        c,
        "POST /v1/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {slow}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
        b.len()
    )
    .expect("write");
    let mut r = String::new();
    c.read_to_string(&mut r).expect("read");
    assert!(r.starts_with("HTTP/1.1 429"), "{r}");
    // (1 − b)/0.01 s with b the few tokens refilled since the last request: 100 s, a little
    // less on a slow machine.
    let retry: u64 = r
        .to_ascii_lowercase()
        .lines()
        .find_map(|l| {
            l.strip_prefix("retry-after: ")
                .map(|v| v.trim().parse().expect("a number"))
        })
        .expect("a Retry-After header");
    assert!((50..=100).contains(&retry), "{r}");
    assert!(r.contains("\"reason\":\"rate_limited\""), "{r}");

    // The same input 11 times: 10 zero distances, W = 0 at the first window.
    let same = body(&inputs(1, 4));
    for i in 0..11 {
        let (st, resp) = srv.request_as(&thief, "POST", "/v1/predict", Some(&same));
        assert_eq!(st, 200, "request {i}: {resp}");
    }
    let (st, resp) = srv.request_as(&thief, "POST", "/v1/predict", Some(&same));
    assert_eq!(
        (st, json(&resp)["reason"].as_str()),
        (403, Some("cut")),
        "{resp}"
    );
    let (_, resp) = srv.request_as(&ops, "GET", "/v1/admin/alerts", None);
    let alerts = json(&resp)["alerts"].as_array().cloned().expect("alerts");
    assert_eq!(alerts.len(), 1, "{resp}");
    assert_eq!(
        (
            alerts[0]["client"].as_str(),
            alerts[0]["signal"].as_str(),
            alerts[0]["action"].as_str()
        ),
        (Some("thief"), Some("prada"), Some("cut"))
    );
    assert_eq!(alerts[0]["queries"].as_u64(), Some(11));
    let (_, resp) = srv.request_as(&ops, "GET", "/v1/admin/usage", None);
    let u = json(&resp);
    let t = u["clients"]
        .as_array()
        .expect("clients")
        .iter()
        .find(|c| c["client"] == "thief")
        .expect("thief")
        .clone();
    assert_eq!(
        (t["status"].as_str(), t["monitor"]["queries"].as_u64()),
        (Some("cut"), Some(11)),
        "{u}"
    );
}

/// The label-free test through the CLI: a server answering with `random-fixed` under a key is
/// found by `verify --soft-bias` with that key (p at its floor, 1/(1 + draws)); the same weights
/// without the defence are not.
#[test]
fn verify_soft_bias_finds_random_fixed_answers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let model = tmp.path().join("m");
    // A small digits model (a fraction of a second to train): the defence needs answers with
    // room in their feasible set, which a random model's near-uniform outputs do not give. Its
    // training is pinned by flags: the fine-tuning rate is the one this fixture was written with;
    // under the default raised to 0.005 by issue 14's second round, the 10-epoch model gives the
    // soft-bias test less power (p = 0.03 instead of 0.01 with 99 draws).
    let (ok, _, err) = rgshield(&[
        "train",
        "--data",
        "digits",
        "--widths",
        "64,16,10",
        "--method",
        "hybrid",
        "--sweeps",
        "0",
        "--finetune-epochs",
        "10",
        "--finetune-lr",
        "0.003",
        "--pretrain-epochs",
        "3",
        "--out",
        &s(&model),
    ]);
    assert!(ok, "{err}");
    let (key, cache) = (s(&tmp.path().join("key")), s(&tmp.path().join("cache")));
    let srv = Server::spawn(&[
        "--model",
        &s(&model),
        "--mean-field",
        "--defence",
        "random-fixed",
        "--key-file",
        &key,
        "--cache-dir",
        &cache,
    ]);
    let out = tmp.path().join("soft.json");
    let url = format!("http://{}", srv.addr);
    let args = |suspect: &[&str]| -> Value {
        let (ok, _, err) = rgshield(
            &[
                &[
                    "verify",
                    "--soft-bias",
                    "--soft-draws",
                    "99",
                    "--key-file",
                    &key,
                    "--out",
                    &s(&out),
                ][..],
                suspect,
            ]
            .concat(),
        );
        assert!(ok, "{err}");
        json(&std::fs::read_to_string(&out).expect("out"))
    };
    let thief = args(&["--suspect-url", &url]);
    assert_eq!(thief["p_value"].as_f64(), Some(0.01), "{thief}");
    let innocent = args(&["--suspect-model", &s(&model)]);
    assert!(innocent["p_value"].as_f64().unwrap() > 0.05, "{innocent}");
}

/// The kept guard measurement comes out of the code at HEAD: its command, run again, writes the
/// same `guard_eval.json` (the file has no timings), on one thread where the kept run used two.
/// The first kept run had silently stopped
/// reproducing after a merge changed the MLP clones; this test keeps that from happening again
/// (about 45 s on 2 cores).
#[test]
fn kept_guard_run_is_reproduced_by_the_code_at_head() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/results/2026-11-30-guard");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (ok, _, err) = rgshield(&[
        "bench",
        "guard",
        "--threads",
        "1",
        "--out",
        &s(tmp.path()),
        "--deltas",
        "0.6,0.7,0.8,0.85,0.9,0.95",
        "--train-config",
        &s(&root.join("train_config.json")),
    ]);
    assert!(ok, "{err}");
    let read = |p: &Path| -> Value { json(&std::fs::read_to_string(p).expect("guard_eval.json")) };
    let (got, kept) = (
        read(&tmp.path().join("guard_eval.json")),
        read(&root.join("guard_eval.json")),
    );
    assert!(
        got == kept,
        "the kept guard run does not reproduce at HEAD: write it again with the command in \
         docs/results/2026-11-30-guard/README.md and update docs/guide/guard.md"
    );
}
