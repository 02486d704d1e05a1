//! Train a small classifier on the embedded digits, save it, load it back, and serve it over HTTP
//! in the same process with an output defence; one client request shows the answer.
//!
//! Run with `cargo run --release --example train_and_serve`.

use std::sync::Arc;

use rgshield::data::{self, DataSpec, LoadOptions};
use rgshield::defence::{RandomDirection, SignRule};
use rgshield::model::io::{self, ModelMeta};
use rgshield::sample::{OutputMode, Predictor};
use rgshield::serve::{self, Limits, ServeState};
use rgshield::train::{Method, TrainParams, Trainer};
use rgshield::Params;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 1. Train: the hybrid rule's defaults, shortened for an example.
    let digits = data::load(&DataSpec::Digits, &LoadOptions::default())?;
    let params = TrainParams {
        finetune_epochs: 30,
        sweeps: 2,
        ..TrainParams::for_method(Method::Hybrid, 1)
    }
    .check()?;
    let widths = [digits.n_features(), 32, digits.n_classes()];
    let (model, _) = Trainer::new(&digits, &params)?.train(&widths)?;

    // 2. Save and load (model.safetensors + model.json).
    let dir = std::env::temp_dir().join(format!("rgshield-example-{}", std::process::id()));
    let mut meta = ModelMeta::new(&model, digits.class_names.clone());
    meta.dataset = Some(digits.info());
    io::save(&dir, &model, &meta)?;
    let (model, meta) = io::load(&dir)?;
    let mode = OutputMode::Served {
        samples: 64,
        seed: 0,
    };
    let accuracy = Predictor::new(&model, mode).accuracy(&digits.test);
    println!(
        "trained {widths:?}: served test accuracy {accuracy:.3}; saved in {}",
        dir.display()
    );

    // 3. Serve it with a defence that moves every answer along a random sum-zero direction while
    //    keeping its class (ε = 0.05); `rgshield::defence::NoDefence` serves the raw outputs.
    let defence = Arc::new(RandomDirection::new(0.05, 1e-3, SignRule::Feasible)?);
    let state =
        Arc::new(ServeState::new(model, mode, defence, Limits::default())?.with_meta(&meta)?);
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let listener = serve::bind(([127, 0, 0, 1], 0).into()).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve::serve(listener, state, async {
            let _ = stopped.await;
        }));

        // 4. One client request: the first test image.
        let body = serde_json::json!({ "inputs": [digits.test.row(0)] }).to_string();
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let req = format!(
            "POST /v1/predict HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).await?;
        let answer = resp.split("\r\n\r\n").nth(1).unwrap_or("");
        println!(
            "POST /v1/predict (true class {}) → {answer}",
            digits.test.y[0]
        );

        let _ = stop.send(());
        server.await??;
        Ok::<(), Box<dyn std::error::Error>>(())
    })?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
