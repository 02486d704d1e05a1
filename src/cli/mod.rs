//! The command line: one file per command, each with its flags (`Args`), their conversion into
//! the library's checked parameters (`TryFrom<&Args>`), and `run`. This file only dispatches.

mod analyze;
mod attack;
mod bench;
mod clone_eval;
mod common;
mod defences;
mod demo;
mod eval;
mod keys;
mod serve;
mod train;
mod verify;

use clap::{Parser, Subcommand};

/// Deep RBM classifiers, their RG analysis, and RG poisoning against cloning.
#[derive(Parser)]
#[command(
    name = "rgshield",
    version,
    after_help = "SPEC § numbers refer to docs/design/SPEC.md; each command has a guide in \
                  docs/guide/<command>.md."
)]
pub struct Cli {
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// Memory a command may take (e.g. 8G, 512M; K, M, G, T are powers of 1024). Every command
    /// estimates its memory from its widths, samples and operators and refuses to start above
    /// this. Default: the memory available now (MemAvailable of /proc/meminfo).
    #[arg(long, global = true, value_parser = parse_budget)]
    memory_budget: Option<u64>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a deep RBM classifier (SPEC §3) and write model.safetensors, model.json and
    /// train_report.json.
    #[command(
        after_help = "Training flags left out take the method's defaults: --print-defaults shows them."
    )]
    Train(train::Args),
    /// Evaluate a saved model's accuracy on a data set's test split.
    Eval(eval::Args),
    /// The main job on the embedded digits: train, analyse, attack, poison one answer, clone;
    /// writes a report.
    Demo(demo::Args),
    /// RG analysis of a model (SPEC §4-7): stability spectra, input and output Fisher information,
    /// poison directions; writes analysis.json and plots.
    Analyze(analyze::Args),
    /// Adversarial attack (SPEC §6): input-Fisher directions against gradient baselines, judged by
    /// the served class; writes attack.json (with the vulnerability summary) and plots.
    Attack(attack::Args),
    /// Cloning experiment (SPEC §9): attackers train clones on defended outputs; clone accuracy,
    /// fidelity, adversarial transfer, utility and distortion per defence; writes clone_eval.json,
    /// clone_eval.md and plots.
    CloneEval(Box<clone_eval::Args>),
    /// List the output defences with their knobs, defaults and guarantees (the syntax of
    /// --defence).
    Defences(defences::Args),
    /// Serve a model's predictions over HTTP/JSON with an output defence (POST /v1/predict,
    /// GET /v1/health, GET /v1/model); stops on Ctrl-C or SIGTERM after the requests in flight.
    Serve(serve::Args),
    /// API keys for `serve --api-keys`: create one (printed once, stored hashed), list them.
    #[command(subcommand)]
    Keys(keys::Cmd),
    /// Replay the watermarked queries logged by `serve --watermark` against a suspect model or
    /// API; report its agreement with the watermark and an exact binomial p-value.
    Verify(verify::Args),
    /// Benchmarks that print tables.
    #[command(subcommand)]
    Bench(bench::Cmd),
}

/// Settings every command sees.
pub struct Global {
    /// `--threads`, when given.
    pub threads: Option<usize>,
    /// The memory budget in bytes (`--memory-budget`, else the available memory).
    pub memory_budget: u64,
    /// Where the budget comes from, for messages.
    pub budget_source: &'static str,
}

fn parse_budget(s: &str) -> Result<u64, String> {
    rgshield::util::memory::parse_bytes(s).map_err(|e| e.to_string())
}

/// Parse the command line, set up the thread pool and run the command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(t) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .map_err(|e| anyhow::anyhow!("--threads {t}: {e}"))?;
    }
    let (memory_budget, budget_source) = match cli.memory_budget {
        Some(b) => (b, "--memory-budget"),
        None => match rgshield::util::memory::available_memory() {
            Some(b) => (b, "the memory available now; --memory-budget sets another"),
            None => (
                u64::MAX,
                "the available memory is unknown here; --memory-budget sets one",
            ),
        },
    };
    let g = Global {
        threads: cli.threads,
        memory_budget,
        budget_source,
    };
    match cli.cmd {
        Cmd::Train(a) => train::run(&a, &g),
        Cmd::Eval(a) => eval::run(&a, &g),
        Cmd::Demo(a) => demo::run(&a, &g),
        Cmd::Analyze(a) => analyze::run(&a, &g),
        Cmd::Attack(a) => attack::run(&a, &g),
        Cmd::CloneEval(a) => clone_eval::run(&a, &g),
        Cmd::Defences(a) => defences::run(&a),
        Cmd::Serve(a) => serve::run(&a, &g),
        Cmd::Keys(c) => keys::run(&c),
        Cmd::Verify(a) => verify::run(&a),
        Cmd::Bench(c) => bench::run(c, &g),
    }
}
