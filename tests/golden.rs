//! Golden outputs: fixed-seed runs of `train`, `eval`, `analyze`, `attack`, `clone-eval` and one
//! `serve` request through the command line, compared as JSON with the files in `tests/golden/`.
//!
//! They pin the behaviour while the code is reorganised: every commit keeps them identical (the
//! JSON of every float, hence its bits), unless the commit says why an output changes and rewrites
//! the files with `RGSHIELD_BLESS=1 cargo test --release --test golden`. Wall-clock fields
//! (`seconds`) and the temporary directory's path are the only parts left out of the comparison.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

mod common;
use common::rgshield;

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Drop every `seconds` field and replace the temporary directory's path by `$TMP`.
fn normalise(v: Value, tmp: &str) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(k, _)| k != "seconds")
                .map(|(k, v)| (k, normalise(v, tmp)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| normalise(v, tmp)).collect()),
        Value::String(s) => Value::String(s.replace(tmp, "$TMP")),
        other => other,
    }
}

/// The first path at which two JSON values differ, for a readable failure.
fn first_difference(a: &Value, b: &Value, at: String) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys()) {
                match (x.get(k), y.get(k)) {
                    (Some(p), Some(q)) => {
                        if let Some(d) = first_difference(p, q, format!("{at}.{k}")) {
                            return Some(d);
                        }
                    }
                    _ => return Some(format!("{at}.{k}: present on one side only")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(format!("{at}: length {} vs {}", x.len(), y.len()));
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (p, q))| first_difference(p, q, format!("{at}[{i}]")))
        }
        _ => (a != b).then(|| format!("{at}: {a} vs {b}")),
    }
}

fn check(name: &str, got: Value, tmp: &str) {
    let got = normalise(got, tmp);
    let path = golden_dir().join(format!("{name}.json"));
    if std::env::var_os("RGSHIELD_BLESS").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        let mut s = serde_json::to_string_pretty(&got).unwrap();
        s.push('\n');
        std::fs::write(&path, s).unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; write it with RGSHIELD_BLESS=1 cargo test --release --test golden",
            path.display()
        )
    });
    let want: Value = serde_json::from_str(&text).unwrap();
    if let Some(d) = first_difference(&want, &got, name.to_string()) {
        panic!(
            "{name} differs from {} at {d}\n(if the change is intended, say why in the commit and \
             rewrite with RGSHIELD_BLESS=1)",
            path.display()
        );
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn run(args: &[&str]) -> String {
    let (ok, stdout, stderr) = rgshield(args);
    assert!(ok, "rgshield {args:?} failed:\n{stdout}\n{stderr}");
    stdout
}

/// One POST /v1/predict to `rgshield serve` with the given extra flags; returns the JSON answer.
fn serve_request(model: &Path, flags: &[&str], body: &str) -> Value {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rgshield"))
        .args(["serve", "--model"])
        .arg(model)
        .args(["--addr", "127.0.0.1:0", "--threads", "1"])
        .args(flags)
        .stdout(Stdio::piped())
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
    let req = format!(
        "POST /v1/predict HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let _ = child.kill();
    let _ = child.wait();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    serde_json::from_str(resp.split("\r\n\r\n").nth(1).expect("body")).expect("JSON")
}

#[test]
fn fixed_seed_outputs_match_the_golden_files() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().to_str().unwrap().to_string();
    let m = dir.path().join("m");
    let ms = m.to_str().unwrap();

    run(&[
        "train",
        "--data",
        "digits",
        "--widths",
        "64,16,10",
        "--seed",
        "3",
        "--finetune-epochs",
        "10",
        "--sweeps",
        "2",
        "--samples",
        "16",
        "--out",
        ms,
    ]);
    check(
        "train_report",
        read_json(&m.join("train_report.json")),
        &tmp,
    );
    check("model_json", read_json(&m.join("model.json")), &tmp);

    let ev = run(&["eval", "--model", ms, "--samples", "16", "--json"]);
    check("eval", serde_json::from_str(&ev).unwrap(), &tmp);

    let an = dir.path().join("an");
    run(&[
        "analyze",
        "--model",
        ms,
        "--inputs",
        "0..2",
        "--samples",
        "400",
        "--blocks",
        "2",
        "--basis",
        "order2:20",
        "--out",
        an.to_str().unwrap(),
    ]);
    check("analysis", read_json(&an.join("analysis.json")), &tmp);

    let at = dir.path().join("at");
    run(&[
        "attack",
        "--model",
        ms,
        "--inputs",
        "0..4",
        "--samples",
        "300",
        "--epsilons",
        "0.5,1",
        "--pixels",
        "1,2",
        "--serve-samples",
        "16",
        "--basis",
        "order2:20",
        "--out",
        at.to_str().unwrap(),
    ]);
    check("attack", read_json(&at.join("attack.json")), &tmp);

    let ce = dir.path().join("ce");
    run(&[
        "clone-eval",
        "--model",
        ms,
        "--defence",
        "none",
        "--defence",
        "rg:eps=0.1",
        "--defence",
        "random:eps=0.1",
        "--defence",
        "rg-vertex:eps=0.3",
        "--defence",
        "top1",
        "--attackers",
        "distill,eq14",
        "--budget",
        "60",
        "--seeds",
        "1",
        "--transfer-inputs",
        "5",
        "--samples",
        "16",
        "--clone-pretrain-epochs",
        "2",
        "--clone-sweeps",
        "2",
        "--out",
        ce.to_str().unwrap(),
    ]);
    check("clone_eval", read_json(&ce.join("clone_eval.json")), &tmp);

    // Three inputs of the digits test split's shape: all zeros, all ones, a checkerboard.
    let rows: Vec<Vec<f32>> = vec![
        vec![0.0; 64],
        vec![1.0; 64],
        (0..64).map(|i| ((i + i / 8) % 2) as f32).collect(),
    ];
    let body = serde_json::json!({ "inputs": rows }).to_string();
    // A fixed key and a cache directory of the test's own (a generated key would make keyed
    // answers differ run to run).
    let key = dir.path().join("key");
    std::fs::write(&key, format!("{}\n", "0123456789abcdef".repeat(4))).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let cache = dir.path().join("cache");
    let store = [
        "--key-file",
        key.to_str().unwrap(),
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    let flags = [
        &["--defence", "rg:eps=0.1", "--disclose-defence"][..],
        &store,
    ]
    .concat();
    let answer = serve_request(&m, &flags, &body);
    check("serve_rg", answer, &tmp);
    let flags = [&["--defence", "rg-vertex:objective=B,eps=0.6"][..], &store].concat();
    let answer = serve_request(&m, &flags, &body);
    check("serve_rg_vertex", answer, &tmp);
    let flags = [&["--defence", "random-vertex:eps=0.6"][..], &store].concat();
    let answer = serve_request(&m, &flags, &body);
    check("serve_random_vertex", answer, &tmp);
    let answer = serve_request(&m, &["--mean-field"], &body);
    check("serve_mean_field", answer, &tmp);
}
