//! The `rgshield` command line: a thin layer over the library.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

use rgshield::bench::{self, DepthBenchConfig};
use rgshield::data::{self, Binarize, DataSpec, Dataset, LoadOptions};
use rgshield::defence::{Defence, DefenceSpec, PoisonCache};
use rgshield::model::io::{self as model_io, ModelMeta};
use rgshield::model::parse_widths;
use rgshield::model::DeepRbm;
use rgshield::sample::{OutputMode, Predictor};
use rgshield::serve::{self, Limits, ServeState};
use rgshield::train::{check_widths_fit, Method, SweepOrder, Targets, TrainConfig, Trainer};
use rgshield::util::write_json;
use std::str::FromStr;

#[derive(Parser)]
#[command(
    name = "rgshield",
    version,
    about = "Deep RBM classifiers, their RG analysis, and RG poisoning against cloning"
)]
struct Cli {
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a deep RBM classifier (SPEC §3) and write model.safetensors, model.json, train_report.json.
    Train(TrainArgs),
    /// Evaluate a saved model's accuracy on a data set's test split.
    Eval(EvalArgs),
    /// Train and evaluate on the embedded digits and print a summary (the main job).
    Demo(DemoArgs),
    /// RG analysis of a model (SPEC §4-7): stability spectra, input and output Fisher information,
    /// poison directions; writes analysis.json.
    Analyze(AnalyzeArgs),
    /// Adversarial attack (SPEC §6): input-Fisher directions against gradient baselines, judged by
    /// the served class; writes attack.json (with the vulnerability summary) and plots.
    Attack(AttackArgs),
    /// Cloning experiment (SPEC §9): attackers train clones on defended outputs; clone accuracy,
    /// fidelity, adversarial transfer, utility and distortion per defence; writes clone_eval.json,
    /// clone_eval.md and plots.
    CloneEval(Box<CloneEvalArgs>),
    /// Serve a model's predictions over HTTP/JSON with an output defence (POST /v1/predict,
    /// GET /v1/health, GET /v1/model); stops on Ctrl-C.
    Serve(ServeArgs),
    /// Benchmarks that print tables.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Args, Clone)]
struct DataArgs {
    /// Data set: digits (embedded), fashion-mnist[:DIR], mnist:DIR, csv:FILE, ising[:L].
    #[arg(long, default_value = "digits")]
    data: String,
    /// Binarisation: "default" (the loader's documented threshold), "off", or a threshold on the
    /// native pixel scale (value > t → 1).
    #[arg(long, default_value = "default")]
    binarize: String,
    /// k×k mean pooling of image inputs before binarisation (e.g. 2 turns 28×28 into 14×14).
    #[arg(long, default_value_t = 1)]
    pool: usize,
    /// Keep only the first n training rows.
    #[arg(long)]
    max_train: Option<usize>,
    /// Keep only the first n test rows.
    #[arg(long)]
    max_test: Option<usize>,
    /// Seed for generated data sets (ising).
    #[arg(long, default_value_t = 0)]
    data_seed: u64,
}

impl DataArgs {
    fn load(&self) -> Result<Dataset> {
        let spec: DataSpec = self.data.parse()?;
        let binarize: Binarize = self
            .binarize
            .parse()
            .map_err(|e: String| anyhow::anyhow!("--binarize: {e}"))?;
        let opts = LoadOptions {
            binarize,
            pool: self.pool,
            max_train: self.max_train,
            max_test: self.max_test,
            seed: self.data_seed,
        };
        Ok(data::load(&spec, &opts)?)
    }
}

/// Parses [`TrainKnobs`] alone, to get `rgshield train`'s defaults in code.
#[derive(Parser)]
struct KnobsOnly {
    #[command(flatten)]
    knobs: TrainKnobs,
}

#[derive(Args, Clone)]
struct TrainKnobs {
    /// Training procedure: eq14 (the seed's rule after greedy pretraining) or hybrid
    /// (pretraining, mean-field back-propagation fine-tuning, eq. 14 refinement).
    #[arg(long, value_enum, default_value = "hybrid")]
    method: Method,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Maximum eq. 14 sweeps (hybrid: refinement sweeps).
    #[arg(long)]
    sweeps: Option<usize>,
    /// Eq. 14 learning rate (hybrid: refinement rate).
    #[arg(long)]
    lr: Option<f32>,
    /// Greedy CD pretraining epochs per RBM 1…N-1.
    #[arg(long)]
    pretrain_epochs: Option<usize>,
    /// Hybrid: maximum mean-field fine-tuning epochs.
    #[arg(long)]
    finetune_epochs: Option<usize>,
    /// Gibbs steps for the model moments.
    #[arg(long)]
    cd_k: Option<usize>,
    /// Persistent chains instead of CD restarts.
    #[arg(long)]
    persistent: bool,
    /// Eq. 14 targets in the last sampled step: samples or probs.
    #[arg(long, value_enum)]
    targets: Option<Targets>,
    /// Layer order within a sweep.
    #[arg(long, value_enum)]
    sweep_order: Option<SweepOrder>,
    #[arg(long)]
    batch: Option<usize>,
    /// Sweeps without held-out improvement before stopping.
    #[arg(long)]
    patience: Option<usize>,
    /// Passes over the data per layer within one sweep.
    #[arg(long)]
    epochs_per_layer: Option<usize>,
    /// Multiplicative learning-rate decay per sweep.
    #[arg(long)]
    lr_decay: Option<f32>,
    #[arg(long)]
    momentum: Option<f32>,
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Greedy pretraining learning rate.
    #[arg(long)]
    pretrain_lr: Option<f32>,
    /// Hybrid: Adam learning rate of the fine-tuning.
    #[arg(long)]
    finetune_lr: Option<f32>,
    /// Standard deviation of the initial Gaussian weights.
    #[arg(long)]
    init_scale: Option<f32>,
    /// Eq. 14 learning rate of RBMs 1…N-1 relative to the top RBM.
    #[arg(long)]
    lower_lr_factor: Option<f32>,
    /// Hybrid: fine-tune through sampled hidden states (true) or the mean field (false).
    #[arg(long)]
    finetune_stochastic: Option<bool>,
    /// Hybrid: probability of flipping each input value in fine-tuning batches (augmentation).
    #[arg(long)]
    finetune_input_noise: Option<f32>,
}

impl TrainKnobs {
    /// The defaults of `rgshield train` for a method.
    fn defaults(method: Method, seed: u64) -> Self {
        let method = format!("{method:?}").to_lowercase();
        KnobsOnly::parse_from(["rgshield", "--method", &method, "--seed", &seed.to_string()]).knobs
    }

    fn config(&self) -> TrainConfig {
        let mut c = TrainConfig::defaults_for(self.method, self.seed);
        macro_rules! set { ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = v; } )* } }
        set!(
            sweeps,
            lr,
            pretrain_epochs,
            finetune_epochs,
            cd_k,
            targets,
            sweep_order,
            batch,
            patience,
            epochs_per_layer,
            lr_decay,
            momentum,
            weight_decay,
            pretrain_lr,
            finetune_lr,
            init_scale,
            lower_lr_factor,
            finetune_stochastic,
            finetune_input_noise
        );
        c.persistent |= self.persistent;
        c
    }
}

#[derive(Args)]
struct TrainArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Layer widths n_0,…,n_N (first = input size, last = number of classes); default
    /// INPUT,64,64,CLASSES.
    #[arg(long)]
    widths: Option<String>,
    #[command(flatten)]
    knobs: TrainKnobs,
    /// Samples S of the served output for the reported accuracies.
    #[arg(long, default_value_t = 64)]
    samples: usize,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
struct EvalArgs {
    /// Model directory (holding model.json and model.safetensors).
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Samples S of the served output.
    #[arg(long, default_value_t = 64)]
    samples: usize,
    /// Seed of the served output's sampler.
    #[arg(long, default_value_t = 0)]
    serve_seed: u64,
    /// Use the deterministic mean-field output instead of the served one.
    #[arg(long)]
    mean_field: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct AnalyzeArgs {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Test-split inputs to analyse: a range A..B or a comma list.
    #[arg(long, default_value = "0..20")]
    inputs: String,
    /// Ancestral samples S per input and per class.
    #[arg(long, default_value_t = 20_000)]
    samples: usize,
    /// Hidden-layer operator basis: order1, order2 (all pairs: 2080 operators at width 64, slow and
    /// memory-hungry), or order2:M (order 1 plus the M pairs of largest |covariance|, frozen).
    #[arg(long, default_value = "order2:200")]
    basis: String,
    /// Jackknife blocks for the error bars.
    #[arg(long, default_value_t = 20)]
    blocks: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory (default: MODEL/analysis).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct CloneEvalArgs {
    /// Victim model directory (the poison caches of `rg` are kept there).
    #[arg(long, required_unless_present = "from_json")]
    model: Option<PathBuf>,
    /// Print (and write beside it as clone_eval.md) the tables of an existing clone_eval.json
    /// instead of running: the mean ± sd cells and the paired differences.
    #[arg(long)]
    from_json: Option<PathBuf>,
    #[command(flatten)]
    data: DataArgs,
    /// Defences: none, rg (= rg:P), rg:C, random, gaussian, reverse-sigmoid, rounding, top1.
    #[arg(
        long,
        default_value = "none,rg,random,gaussian,reverse-sigmoid,rounding,top1"
    )]
    defences: String,
    /// ε values of rg and random (default 0.05,0.1,0.2,0.4); the other defences sweep their own
    /// documented parameter lists.
    #[arg(long, value_delimiter = ',')]
    epsilons: Option<Vec<f64>>,
    /// Attackers: eq14, distill, LEARNER+roundD, LEARNER+top1, adaptive (= distill+round1,distill+top1).
    #[arg(long, default_value = "eq14,distill,adaptive")]
    attackers: String,
    /// Queries per attacker.
    #[arg(long, default_value_t = 1000)]
    budget: usize,
    /// Number of seeds (1…N): query split, augmentation and clone initialisation.
    #[arg(long, default_value_t = 5)]
    seeds: u64,
    /// L2 norm of the transfer perturbations.
    #[arg(long, default_value_t = 1.0)]
    transfer_epsilon: f64,
    /// Correctly served evaluation inputs used for the transfer measurement.
    #[arg(long, default_value_t = 100)]
    transfer_inputs: usize,
    /// Samples S of the victim's (and eq14 clones') served output.
    #[arg(long, default_value_t = 64)]
    samples: usize,
    /// Eq. 14 clone: greedy pretraining epochs (default: the eq14 training default, 60).
    #[arg(long)]
    clone_pretrain_epochs: Option<usize>,
    /// Eq. 14 clone: maximum sweeps (default: the eq14 training default, 60).
    #[arg(long)]
    clone_sweeps: Option<usize>,
    /// Output directory (default: MODEL/clone).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct AttackArgs {
    /// Model directory.
    #[arg(long)]
    model: PathBuf,
    #[command(flatten)]
    data: DataArgs,
    /// Test-split inputs to attack: a range A..B or a comma list.
    #[arg(long, default_value = "0..200")]
    inputs: String,
    /// L2 budgets ε of the continuous methods (actual norm after clipping to [0,1]).
    #[arg(long, value_delimiter = ',', default_value = "0.1,0.2,0.5,1,2,3")]
    epsilons: Vec<f64>,
    /// Pixel budgets k of the binary (flip) methods.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    pixels: Vec<usize>,
    /// Ancestral samples S of the input-Fisher estimate.
    #[arg(long, default_value_t = 3000)]
    samples: usize,
    /// Hidden-layer operator basis: order1, order2 or order2:M (see `analyze`).
    #[arg(long, default_value = "order2:200")]
    basis: String,
    /// Samples S of the served output that judges success.
    #[arg(long, default_value_t = 64)]
    serve_samples: usize,
    /// PGD steps K (step size 2.5ε/K).
    #[arg(long, default_value_t = 10)]
    pgd_steps: usize,
    /// The ε at which the vulnerability summary quotes success rates.
    #[arg(long, default_value_t = 1.0)]
    reference_epsilon: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory (default: MODEL/attack).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_inputs(s: &str) -> Result<Vec<usize>> {
    if let Some((a, b)) = s.split_once("..") {
        let a: usize = a
            .trim()
            .parse()
            .with_context(|| format!("--inputs '{s}': bad start"))?;
        let b: usize = b
            .trim()
            .parse()
            .with_context(|| format!("--inputs '{s}': bad end"))?;
        if b <= a {
            bail!("--inputs '{s}': empty range");
        }
        return Ok((a..b).collect());
    }
    s.split(',')
        .map(|t| {
            t.trim()
                .parse::<usize>()
                .with_context(|| format!("--inputs '{s}': '{t}' is not an index"))
        })
        .collect()
}

#[derive(Args)]
struct ServeArgs {
    /// Model directory (holding model.json and model.safetensors).
    #[arg(long)]
    model: PathBuf,
    /// Address to listen on (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Output defence: none (the others arrive with the defence module).
    #[arg(long, default_value = "none")]
    defence: String,
    /// Strength ε of the defence.
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
}

#[derive(Args)]
struct DemoArgs {
    /// Where the demo writes its model and reports.
    #[arg(long, default_value = "runs/demo")]
    out: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Train depths N = 1…6 (hidden width 64) with eq. 14 and the hybrid; print accuracy and time.
    Depth(Box<DepthArgs>),
    /// Time the correlators and stability matrix of one layer: bit-packed beside float GEMM.
    Rg(RgBenchArgs),
    /// Load-test the HTTP API in process: in-process vs HTTP rate, with and without a defence.
    Serve(ServeBenchArgs),
    /// Depth study (SPEC §10): per depth N, train or reuse a model, analyse and attack it; prints
    /// a Markdown table row by row and writes depth_study.json and plots against N.
    DepthStudy(Box<DepthStudyArgs>),
    /// Performance against the machine's limit and the peers (numpy, scikit-learn), measured side
    /// by side in one run; each measurement in its own process for its peak memory.
    Perf(Box<PerfArgs>),
    /// Run one `bench perf` measurement (JSON job) and print its result as one JSON line.
    #[command(hide = true)]
    PerfJob {
        #[arg(long)]
        job: String,
    },
}

#[derive(Args)]
struct PerfArgs {
    /// Data set of the training comparison.
    #[arg(long, default_value = "fashion-mnist")]
    data: String,
    /// Keep only the first n training rows in the CD comparison (default: all).
    #[arg(long)]
    max_train: Option<usize>,
    /// Hidden units of the CD comparison's RBM.
    #[arg(long, default_value_t = 256)]
    cd_hidden: usize,
    #[arg(long, default_value_t = 50)]
    cd_batch: usize,
    #[arg(long, default_value_t = 0.05)]
    cd_lr: f32,
    /// CD epochs timed (the mean per epoch is reported, for both tools).
    #[arg(long, default_value_t = 1)]
    cd_epochs: usize,
    /// Samples S of the sampling and correlator comparisons.
    #[arg(long, default_value_t = 20_000)]
    samples: usize,
    /// Repetitions of the correlator timings and rounds of the alternating CD / scikit-learn
    /// timings (the fastest of each is reported); the sampling takes at least 10.
    #[arg(long, default_value_t = 2)]
    reps: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Directory of the python references (setup.sh, correlators.py, bernoulli_rbm.py).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/reference"))]
    reference_dir: PathBuf,
    /// Skip the numpy / scikit-learn references.
    #[arg(long)]
    no_reference: bool,
    /// Skip the scaling table.
    #[arg(long)]
    no_scaling: bool,
    /// Also time the full eq. 14 training of n-256-256-classes on --data (tens of minutes).
    #[arg(long)]
    full_training: bool,
    /// Scratch directory for the .npy files exchanged with the references.
    #[arg(long, default_value = "runs/perf/work")]
    work_dir: PathBuf,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the tables (Markdown) here.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct DepthStudyArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Depths N, e.g. 1,2,3,4,5,6.
    #[arg(long, default_value = "1,2,3,4,5,6")]
    depths: String,
    /// Hidden width.
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Training method (its documented defaults, as `rgshield train --method`).
    #[arg(long, value_enum, default_value = "hybrid")]
    method: Method,
    /// Training seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Models are saved to, and reused from, DIR/dN (reused when model.json exists with matching
    /// widths; a mismatched model is refused, never overwritten).
    #[arg(long, default_value = "runs/depth-study")]
    models_dir: PathBuf,
    /// Test-split inputs analysed and attacked: a range A..B or a comma list.
    #[arg(long, default_value = "0..50")]
    inputs: String,
    /// Ancestral samples S of the analysis and the attack's Fisher estimate.
    #[arg(long, default_value_t = 3000)]
    samples: usize,
    /// Hidden-layer operator basis (see `analyze`).
    #[arg(long, default_value = "order2:200")]
    basis: String,
    /// Jackknife blocks of the analysis.
    #[arg(long, default_value_t = 4)]
    blocks: usize,
    /// L2 budget ε of the attack success columns.
    #[arg(long, default_value_t = 1.0)]
    attack_epsilon: f64,
    /// Training: override the hybrid's fine-tuning epochs (a short run for tests).
    #[arg(long)]
    finetune_epochs: Option<usize>,
    /// Training: override the maximum eq. 14 sweeps.
    #[arg(long)]
    sweeps: Option<usize>,
    /// Training: override the greedy pretraining epochs.
    #[arg(long)]
    pretrain_epochs: Option<usize>,
    /// Output directory for depth_study.json, the plots and dN/{analysis,attack}.json (default:
    /// --models-dir).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct RgBenchArgs {
    /// Layer width (order 2 gives w(w+1)/2 operators).
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Ancestral samples S.
    #[arg(long, default_value_t = 20_000)]
    samples: usize,
    /// Repetitions (the fastest is reported).
    #[arg(long, default_value_t = 2)]
    reps: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct ServeBenchArgs {
    /// Model directory; default a random [64, 64, 64, 10] model (digits-sized, seed 0).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Second defence to compare with none: any name that `serve --defence` accepts (`rg` needs
    /// --model).
    #[arg(long, default_value = "random")]
    defence: String,
    /// Strength ε of the second defence.
    #[arg(long, default_value_t = 0.02)]
    epsilon: f64,
    /// Use the served output with S samples instead of the mean field.
    #[arg(long)]
    samples: Option<usize>,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seconds per timed phase.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Distinct random binary inputs, cycled through.
    #[arg(long, default_value_t = 1000)]
    inputs: usize,
    /// Requests estimated at most this many multiply-adds run on the reactor thread, larger ones
    /// in the blocking pool (0: all in the blocking pool).
    #[arg(long, default_value_t = serve::DEFAULT_INLINE_MAX_WORK)]
    inline_max_work: u64,
    /// Also write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct DepthArgs {
    #[command(flatten)]
    data: DataArgs,
    /// Depths to train, e.g. 1,2,3,4,5,6.
    #[arg(long, default_value = "1,2,3,4,5,6")]
    depths: String,
    /// Hidden width.
    #[arg(long, default_value_t = 64)]
    width: usize,
    /// Methods to compare.
    #[arg(long, value_delimiter = ',', default_value = "eq14,hybrid")]
    methods: Vec<Method>,
    /// Training settings (the method flag is overridden by --methods).
    #[command(flatten)]
    knobs: TrainKnobs,
    /// Samples S of the served output for the test accuracy.
    #[arg(long, default_value_t = 64)]
    samples: usize,
    /// Also write the table as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// Keep freed heap memory in the process instead of trimming it back to the kernel at every
/// free (glibc's default trims anything over 128 KiB at the top of the heap). The samplers
/// allocate and free a chunk's layers (hundreds of KiB) thousands of times; with trimming, every
/// chunk paid fresh page faults and zeroing — 16% of the up-pass at width 64 (perf,
/// `docs/performance.md`). Blocks of 4 MiB and more are still mapped and returned on their own:
/// with a 32 MiB threshold the large f64 temporaries of `analyze` fragmented the kept heap and
/// raised its peak memory by 16%; at 4 MiB the peak is below the untuned one and the speed equal.
fn keep_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets allocator parameters; called once before any thread starts.
        unsafe {
            libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
            libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        }
    }
}

fn main() {
    keep_freed_heap();
    let cli = Cli::parse();
    if let Some(t) = cli.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
        {
            eprintln!("error: --threads {t}: {e}");
            std::process::exit(2);
        }
    }
    let res = match cli.cmd {
        Cmd::Train(a) => cmd_train(a).map(|_| ()),
        Cmd::Eval(a) => cmd_eval(a),
        Cmd::Demo(a) => cmd_demo(a),
        Cmd::Analyze(a) => cmd_analyze(a),
        Cmd::Attack(a) => cmd_attack(a),
        Cmd::CloneEval(a) => cmd_clone_eval(*a),
        Cmd::Serve(a) => cmd_serve(a, cli.threads),
        Cmd::Bench(BenchCmd::Depth(a)) => cmd_bench_depth(*a),
        Cmd::Bench(BenchCmd::Rg(a)) => cmd_bench_rg(a),
        Cmd::Bench(BenchCmd::Serve(a)) => cmd_bench_serve(a, cli.threads),
        Cmd::Bench(BenchCmd::DepthStudy(a)) => cmd_bench_depth_study(*a),
        Cmd::Bench(BenchCmd::Perf(a)) => cmd_bench_perf(*a, cli.threads),
        Cmd::Bench(BenchCmd::PerfJob { job }) => cmd_bench_perf_job(&job),
    };
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn progress(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_prefix(what.to_string());
    bar
}

fn default_widths(data: &Dataset) -> Vec<usize> {
    vec![data.n_features(), 64, 64, data.n_classes()]
}

/// Train, save and report; returns the train report as JSON.
fn train_and_save(
    data: &Dataset,
    widths: &[usize],
    cfg: &TrainConfig,
    samples: usize,
    out: &Path,
) -> Result<serde_json::Value> {
    check_widths_fit(widths, data)?;
    let t0 = Instant::now();
    let bar = progress(0, &format!("train {:?} {:?}", cfg.method, widths));
    let (model, outcome) = Trainer::new(data, cfg)?.with_progress(bar).train(widths)?;
    let predictor = Predictor::new(&model, OutputMode::Served { samples, seed: 0 });
    let test_accuracy = predictor.accuracy(&data.test);
    let train_accuracy = predictor.accuracy(&data.train);
    let mf = Predictor::new(&model, OutputMode::MeanField);
    let test_accuracy_mean_field = mf.accuracy(&data.test);
    let seconds = t0.elapsed().as_secs_f64();
    let mut meta = ModelMeta::new(&model, data.class_names.clone());
    meta.dataset = Some(data.info());
    meta.training = Some(serde_json::to_value(cfg)?);
    meta.metrics.insert("test_accuracy".into(), test_accuracy);
    meta.metrics.insert("train_accuracy".into(), train_accuracy);
    meta.metrics
        .insert("test_accuracy_mean_field".into(), test_accuracy_mean_field);
    meta.metrics.insert("served_samples".into(), samples as f64);
    model_io::save(out, &model, &meta)?;
    let report = json!({
        "test_accuracy": test_accuracy,
        "train_accuracy": train_accuracy,
        "test_accuracy_mean_field": test_accuracy_mean_field,
        "holdout_accuracy": outcome.holdout_accuracy,
        "served_output": {"samples": samples, "seed": 0},
        "widths": widths,
        "method": cfg.method,
        "stages": outcome.stages,
        "history": outcome.history,
        "seconds": seconds,
        "dataset": data.info(),
        "config": cfg,
    });
    write_json(&out.join("train_report.json"), &report)?;
    Ok(report)
}

fn cmd_train(a: TrainArgs) -> Result<serde_json::Value> {
    let data = a.data.load()?;
    let widths = match &a.widths {
        Some(w) => parse_widths(w)?,
        None => default_widths(&data),
    };
    check_widths_fit(&widths, &data)?;
    let cfg = a.knobs.config();
    cfg.validate()?;
    let r = train_and_save(&data, &widths, &cfg, a.samples, &a.out)?;
    println!(
        "trained {:?} on {} ({} train / {} test) by {:?} in {:.1} s",
        widths,
        data.name,
        data.train.len(),
        data.test.len(),
        cfg.method,
        r["seconds"].as_f64().unwrap_or(f64::NAN)
    );
    println!(
        "test accuracy {:.4} (served, S = {}), train accuracy {:.4}; wrote {}",
        r["test_accuracy"].as_f64().unwrap_or(f64::NAN),
        a.samples,
        r["train_accuracy"].as_f64().unwrap_or(f64::NAN),
        a.out.display()
    );
    Ok(r)
}

fn cmd_eval(a: EvalArgs) -> Result<()> {
    let _: DataSpec = a.data.data.parse()?; // a bad --data fails before any file is read
    let (model, meta) = model_io::load(&a.model)?;
    let data = a.data.load()?;
    if model.n_inputs() != data.n_features() {
        bail!(
            "model {} takes {} inputs but data set '{}' has {} features",
            a.model.display(),
            model.n_inputs(),
            data.name,
            data.n_features()
        );
    }
    if model.n_outputs() != data.n_classes() {
        bail!(
            "model {} has {} outputs but data set '{}' has {} classes",
            a.model.display(),
            model.n_outputs(),
            data.name,
            data.n_classes()
        );
    }
    if let Some(d) = &meta.dataset {
        if d.fingerprint != data.fingerprint {
            eprintln!(
                "warning: the model was trained on data with fingerprint {} ({}), evaluating on {} ({})",
                d.fingerprint, d.name, data.fingerprint, data.name
            );
        }
    }
    let mode = if a.mean_field {
        OutputMode::MeanField
    } else {
        OutputMode::Served {
            samples: a.samples,
            seed: a.serve_seed,
        }
    };
    let p = Predictor::new(&model, mode);
    let test_accuracy = p.accuracy(&data.test);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "test_accuracy": test_accuracy,
                "n_test": data.test.len(),
                "output": mode,
                "model": a.model,
                "widths": model.widths(),
                "dataset": data.name,
            }))?
        );
    } else {
        let how = match mode {
            OutputMode::MeanField => "mean-field output".to_string(),
            OutputMode::Served { samples, seed } => {
                format!("served output, S = {samples}, seed {seed}")
            }
        };
        println!(
            "{}: test accuracy {test_accuracy:.4} on {} ({} inputs, {how})",
            a.model.display(),
            data.name,
            data.test.len()
        );
    }
    Ok(())
}

fn cmd_clone_eval(a: CloneEvalArgs) -> Result<()> {
    use rgshield::extraction::{self, AttackerSpec, CloneEvalConfig, DefenceSetting};
    if let Some(f) = &a.from_json {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let saved: extraction::SavedRows = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a clone_eval.json", f.display()))?;
        let md = extraction::tables(
            &format!("clone-eval tables of {}\n\n", f.display()),
            &saved.baselines,
            &saved.rows,
        );
        let out = f.with_file_name("clone_eval.tables.md");
        rgshield::util::atomic_write(&out, md.as_bytes())?;
        println!("{md}");
        return Ok(());
    }
    let model_dir = a.model.clone().context("--model is required")?;
    let (model, meta) = model_io::load(&model_dir)?;
    let data = a.data.load()?;
    let shape = meta
        .dataset
        .as_ref()
        .and_then(|d| d.image_shape)
        .or(data.image_shape);
    let mut specs: Vec<DefenceSpec> = Vec::new();
    for t in a.defences.split(',') {
        let spec: DefenceSpec = t
            .trim()
            .parse()
            .with_context(|| format!("--defences '{t}'"))?;
        if specs.contains(&spec) {
            bail!("--defences: '{t}' is listed twice");
        }
        specs.push(spec);
    }
    let mut caches = Vec::new();
    for s in &specs {
        if let DefenceSpec::Rg(reading) = s {
            if caches.iter().any(|c: &PoisonCache| c.reading == *reading) {
                continue;
            }
            let (c, computed) = PoisonCache::load_or_compute(&model_dir, &model, shape, *reading)?;
            if computed {
                eprintln!(
                    "computed poison directions per class into {}",
                    PoisonCache::path_in(&model_dir, *reading).display()
                );
            }
            caches.push(c);
        }
    }
    let mut eq14 = TrainConfig::defaults_for(Method::Eq14, 1);
    if let Some(v) = a.clone_pretrain_epochs {
        eq14.pretrain_epochs = v;
    }
    if let Some(v) = a.clone_sweeps {
        eq14.sweeps = v;
    }
    let cfg = CloneEvalConfig {
        defences: specs
            .iter()
            .map(|&s| DefenceSetting::default_for(s, a.epsilons.as_deref()))
            .collect(),
        attackers: AttackerSpec::parse_list(&a.attackers)?,
        budget: a.budget,
        seeds: (1..=a.seeds).collect(),
        serve: OutputMode::Served {
            samples: a.samples,
            seed: 0,
        },
        transfer_epsilon: a.transfer_epsilon,
        transfer_inputs: a.transfer_inputs,
        eq14,
        ..CloneEvalConfig::default()
    };
    let clones: usize = cfg
        .defences
        .iter()
        .map(|d| d.strengths.len())
        .sum::<usize>()
        * cfg.attackers.len()
        * cfg.seeds.len();
    let out = a.out.clone().unwrap_or_else(|| model_dir.join("clone"));
    let bar = progress(clones as u64, "clones");
    let report = extraction::clone_eval(&model, &data, &cfg, &caches, &|| bar.inc(1))?;
    bar.finish_and_clear();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    write_json(&out.join("clone_eval.json"), &report)?;
    let md = extraction::markdown(&report);
    rgshield::util::atomic_write(&out.join("clone_eval.md"), md.as_bytes())?;
    let plots = extraction::write_plots(&report, &out)?;
    println!("{md}");
    println!(
        "wrote {} , clone_eval.md and {} plots in {} ({:.0} s)",
        out.join("clone_eval.json").display(),
        plots.len(),
        out.display(),
        report.seconds
    );
    Ok(())
}

fn cmd_analyze(a: AnalyzeArgs) -> Result<()> {
    let basis: rgshield::analyze::BasisChoice = a.basis.parse()?;
    let inputs = parse_inputs(&a.inputs)?;
    let (model, _meta) = model_io::load(&a.model)?;
    let data = a.data.load()?;
    let cfg = rgshield::analyze::AnalyzeConfig {
        inputs,
        samples: a.samples,
        seed: a.seed,
        basis,
        blocks: a.blocks,
        pilot_samples: 4_000,
    };
    let out = a.out.clone().unwrap_or_else(|| a.model.join("analysis"));
    let bar = progress((cfg.inputs.len() + data.n_classes()) as u64, "analyze");
    let report = rgshield::analyze::analyze(&model, &data, &cfg, &|| bar.inc(1))?;
    bar.finish_and_clear();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    write_json(&out.join("analysis.json"), &report)?;
    let plots = rgshield::analyze::write_plots(&report, &out, data.image_shape)?;
    let med = |f: &dyn Fn(&rgshield::analyze::InputAnalysis) -> f64| {
        let mut v: Vec<f64> = report
            .inputs
            .iter()
            .map(f)
            .filter(|x| x.is_finite())
            .collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    println!(
        "analysed {} inputs of {} with model {:?} in {:.1} s; operators per layer {:?}",
        report.inputs.len(),
        data.name,
        report.widths,
        report.seconds,
        report.classification_operators
    );
    println!(
        "median ratio of the top input-Fisher eigenvalue to the first-layer bound: chain {:.3}, direct {:.3}, mean-field {:.3}",
        med(&|i| i.fisher.ratio_chain),
        med(&|i| i.fisher.ratio_direct),
        med(&|i| i.fisher.ratio_mean_field)
    );
    let warned = report
        .inputs
        .iter()
        .filter(|i| !i.warnings.is_empty())
        .count();
    if warned > 0 {
        println!("{warned} inputs carry warnings (see analysis.json)");
    }
    println!(
        "wrote {} and {} plots in {}",
        out.join("analysis.json").display(),
        plots.len(),
        out.display()
    );
    Ok(())
}

fn cmd_attack(a: AttackArgs) -> Result<()> {
    use rgshield::attack::{self, AttackConfig};
    let cfg = AttackConfig {
        inputs: parse_inputs(&a.inputs)?,
        epsilons: a.epsilons.clone(),
        pixels: a.pixels.clone(),
        samples: a.samples,
        basis: a.basis.parse()?,
        serve_samples: a.serve_samples,
        seed: a.seed,
        pgd_steps: a.pgd_steps,
        reference_epsilon: a.reference_epsilon,
        ..AttackConfig::default()
    };
    cfg.validate()?;
    let (model, _meta) = model_io::load(&a.model)?;
    let data = a.data.load()?;
    let out = a.out.clone().unwrap_or_else(|| a.model.join("attack"));
    let bar = progress(cfg.inputs.len() as u64, "attack");
    let report = attack::attack(&model, &data, &cfg, &|| bar.inc(1))?;
    bar.finish_and_clear();
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    write_json(&out.join("attack.json"), &report)?;
    let plots = attack::write_plots(&report, &out, data.image_shape, &data.class_names)?;
    println!(
        "attacked {} of {} inputs of {} (served correctly at ε = 0) with model {:?} in {:.1} s; operators per layer {:?}",
        report.n_correct,
        report.n_inputs,
        data.name,
        report.widths,
        report.seconds,
        report.operators
    );
    println!("success rate (mean actual L2 norm):\n");
    print!("{}", attack::table(&report));
    let v = &report.vulnerability;
    let q = |x: &attack::Quartiles| {
        format!(
            "{:.3} [{:.3}, {:.3}]",
            x.median.unwrap_or(f64::NAN),
            x.q1.unwrap_or(f64::NAN),
            x.q3.unwrap_or(f64::NAN)
        )
    };
    println!(
        "top input-Fisher eigenvalue, median [quartiles]: direct {}, mean-field {}, bound {}; ratio to bound: direct {}, mean-field {}",
        q(&v.fisher_top_direct),
        q(&v.fisher_top_mean_field),
        q(&v.fisher_top_bound),
        q(&v.ratio_direct),
        q(&v.ratio_mean_field)
    );
    println!(
        "wrote {} and {} plots in {}",
        out.join("attack.json").display(),
        plots.len(),
        out.display()
    );
    Ok(())
}

fn cmd_demo(a: DemoArgs) -> Result<()> {
    use rgshield::attack::{self, AttackConfig};
    use rgshield::extraction::{self, AttackerSpec, CloneEvalConfig, DefenceSetting};
    use rgshield::rg::OutputReading;
    let t0 = Instant::now();
    let data = data::load(&DataSpec::Digits, &LoadOptions::default())?;
    println!("rgshield demo: {} — {}", data.name, data.description);
    let widths = vec![data.n_features(), 64, 64, data.n_classes()];
    let mut md = String::from(
        "# rgshield demo report (digits)\n\nWritten by `rgshield demo`; every number below was measured in this run.\n\n",
    );
    // 1. Train.
    let mut rows = Vec::new();
    for method in [Method::Eq14, Method::Hybrid] {
        let knobs = TrainKnobs::defaults(method, a.seed);
        let dir = a.out.join(format!("{method:?}").to_lowercase());
        let r = train_and_save(&data, &widths, &knobs.config(), 64, &dir)
            .with_context(|| format!("training {method:?}"))?;
        rows.push((method, dir, r));
    }
    let mut table = String::from(
        "| method | widths | test accuracy (served, S=64) | mean-field | seconds | model |\n|---|---|---|---|---|---|\n",
    );
    for (m, dir, r) in &rows {
        table += &format!(
            "| {:?} | {:?} | {:.4} | {:.4} | {:.1} | {} |\n",
            m,
            widths,
            r["test_accuracy"].as_f64().unwrap_or(f64::NAN),
            r["test_accuracy_mean_field"].as_f64().unwrap_or(f64::NAN),
            r["seconds"].as_f64().unwrap_or(f64::NAN),
            dir.display()
        );
    }
    println!("\n{table}");
    md += "## 1. Training (seed eq. 14 rule, and the hybrid)\n\nThe classifier is a stack of binary RBMs \
           (64 → 64 → 64 → 10). `Eq14` trains it by the seed's layerwise KL rule after greedy pretraining; \
           `Hybrid` fine-tunes by back-propagation through sampled hidden states and then refines by eq. 14. \
           The served output is the Rao-Blackwellised mean of the top layer over S = 64 ancestral samples.\n\n";
    md += &table;
    let dir = rows[1].1.clone();
    let (model, _) = model_io::load(&dir)?;
    // 2. RG analysis of a few inputs.
    let an_cfg = rgshield::analyze::AnalyzeConfig {
        inputs: (0..4).collect(),
        samples: 3000,
        seed: 0,
        basis: "order2:200".parse()?,
        blocks: 4,
        pilot_samples: 4_000,
    };
    let bar = progress((an_cfg.inputs.len() + data.n_classes()) as u64, "analyze");
    let an = rgshield::analyze::analyze(&model, &data, &an_cfg, &|| bar.inc(1))?;
    bar.finish_and_clear();
    let an_dir = dir.join("analysis");
    std::fs::create_dir_all(&an_dir)?;
    write_json(&an_dir.join("analysis.json"), &an)?;
    let an_plots = rgshield::analyze::write_plots(&an, &an_dir, data.image_shape)?;
    md += "\n## 2. RG analysis (`analyze`)\n\nFor each input x the network is a Markov chain x → h₁ → h₂ → h₃; \
           the stability matrices T⁽ᵏ⁾ = C_kk⁻¹ C_k,k−1 of the couplings are estimated from 3000 exact ancestral \
           samples, and chained into the Fisher information of the output w.r.t. the input. The data-processing \
           inequality bounds it by the first layer's Fisher information:\n\n\
           | input | label | top F_x (direct) | first-layer bound | ratio | mean-field ratio |\n|---|---|---|---|---|---|\n";
    for i in &an.inputs {
        md += &format!(
            "| {} | {} | {:.3} ± {:.3} | {:.2} | {:.3} | {:.3} |\n",
            i.index,
            i.label,
            i.fisher.direct_top,
            i.fisher.direct_top_std_err.unwrap_or(f64::NAN),
            i.fisher.bound_top,
            i.fisher.ratio_direct,
            i.fisher.ratio_mean_field
        );
    }
    md += "\nPlots:\n\n";
    for p in &an_plots {
        md += &format!(
            "![{0}](hybrid/analysis/{0})\n",
            p.file_name().and_then(|f| f.to_str()).unwrap_or("")
        );
    }
    // 3. Adversarial attack.
    let at_cfg = AttackConfig {
        inputs: (0..20).collect(),
        epsilons: vec![0.5, 1.0, 2.0],
        pixels: vec![1, 4],
        samples: 1000,
        ..AttackConfig::default()
    };
    let bar = progress(at_cfg.inputs.len() as u64, "attack");
    let at = attack::attack(&model, &data, &at_cfg, &|| bar.inc(1))?;
    bar.finish_and_clear();
    let at_dir = dir.join("attack");
    std::fs::create_dir_all(&at_dir)?;
    write_json(&at_dir.join("attack.json"), &at)?;
    attack::write_plots(&at, &at_dir, data.image_shape, &data.class_names)?;
    md += &format!(
        "\n## 3. Adversarial attack (`attack`)\n\nThe top eigenvector of the input Fisher information is the \
         most dangerous direction (SPEC §6). Success = the served class changes, over the {} of {} inputs \
         served correctly, at equal actual L2 norm:\n\n{}\n![curves](hybrid/attack/attack_curves.png)\n\
         ![examples](hybrid/attack/attack_examples.png)\n",
        at.n_correct,
        at.n_inputs,
        attack::table(&at)
    );
    // 4. Serve-side poisoning of one answer.
    let (cache, _) =
        PoisonCache::load_or_compute(&dir, &model, data.image_shape, OutputReading::PlugIn)?;
    let rg = DefenceSpec::Rg(OutputReading::PlugIn).build(0.2, Some(&cache))?;
    let predictor = Predictor::new(
        &model,
        OutputMode::Served {
            samples: 64,
            seed: 0,
        },
    );
    let x = data.test.row(0);
    let y = predictor.output(x);
    let y2 = rg.apply(&y, predictor.input_seed(x))?;
    let d = rgshield::defence::distortion(&y, &y2);
    let fmt = |v: &[f32]| {
        v.iter()
            .map(|a| format!("{a:.3}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    md += &format!(
        "\n## 4. Poisoned serving (`serve --defence rg`)\n\nThe poison direction u of each class is the top \
         eigenvector of the projected Fisher information of the generation network w.r.t. the output \
         (SPEC §7, cached per class in `{}`). Test input 0, defence {}:\n\n\
         - served ŷ  = [{}] (class {})\n- poisoned ŷ' = [{}] (class {})\n- distortion: L1 {:.4}, L2 {:.4}, KL {:.5}\n\n\
         The step is clipped per query so that the class never changes and every value stays in [0, 1]; \
         `rgshield serve --model {} --defence rg --epsilon 0.2` serves it over HTTP.\n",
        PoisonCache::path_in(&dir, OutputReading::PlugIn).display(),
        rg.name(),
        fmt(&y),
        rgshield::sample::argmax(&y),
        fmt(&y2),
        rgshield::sample::argmax(&y2),
        d.l1,
        d.l2,
        d.kl,
        dir.display()
    );
    // 5. A small cloning experiment.
    let mut eq14 = TrainConfig::defaults_for(Method::Eq14, 1);
    // The clone-training budget of the README's experiments (20 pretraining epochs, ≤ 20
    // sweeps): with 10 and 10 an eq. 14 clone of 500 queries stays at chance.
    eq14.pretrain_epochs = 20;
    eq14.sweeps = 20;
    let ce_cfg = CloneEvalConfig {
        defences: vec![
            DefenceSetting::default_for(DefenceSpec::None, None),
            DefenceSetting {
                spec: DefenceSpec::Rg(OutputReading::PlugIn),
                strengths: vec![0.2],
            },
            DefenceSetting {
                spec: DefenceSpec::Random,
                strengths: vec![0.2],
            },
            DefenceSetting::default_for(DefenceSpec::Top1, None),
        ],
        attackers: AttackerSpec::parse_list("eq14,distill")?,
        budget: 500,
        seeds: vec![1, 2],
        transfer_inputs: 50,
        eq14,
        ..CloneEvalConfig::default()
    };
    let bar = progress(16, "clones");
    let ce = extraction::clone_eval(&model, &data, &ce_cfg, &[cache], &|| bar.inc(1))?;
    bar.finish_and_clear();
    let ce_dir = dir.join("clone");
    std::fs::create_dir_all(&ce_dir)?;
    write_json(&ce_dir.join("clone_eval.json"), &ce)?;
    extraction::write_plots(&ce, &ce_dir)?;
    let ce_md = extraction::markdown(&ce);
    println!("{ce_md}");
    md += &format!(
        "\n## 5. Cloning (`clone-eval`, small budget)\n\nAn attacker queries {} inputs (test images it was \
         never trained on, topped up with pixel-flipped copies), receives the defended outputs, and trains a \
         clone: `eq14` copies the victim's architecture and the seed's training rule ({} pretraining \
         epochs, at most {} sweeps), `distill` fits a softmax MLP. Transfer = the victim's class changes \
         under the clone's Fisher-direction perturbation at L2 = {}. Two seeds only: differences smaller \
         than the spread are noise. The full experiment is `rgshield clone-eval` (README).\n\n{}\n",
        ce_cfg.budget,
        ce_cfg.eq14.pretrain_epochs,
        ce_cfg.eq14.sweeps,
        ce_cfg.transfer_epsilon,
        ce_md
    );
    md += &format!("\nDemo run time: {:.0} s.\n", t0.elapsed().as_secs_f64());
    let report_path = a.out.join("report.md");
    rgshield::util::atomic_write(&report_path, md.as_bytes())?;
    println!(
        "wrote {} (training, RG analysis, attack, poisoned serving, cloning) in {:.0} s",
        report_path.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn cmd_bench_rg(a: RgBenchArgs) -> Result<()> {
    let r = bench::rg_bench(&bench::RgBenchConfig {
        width: a.width,
        samples: a.samples,
        seed: a.seed,
        reps: a.reps,
        dump: None,
    })?;
    println!("{}", bench::rg_bench_table(&r));
    if let Some(p) = a.json {
        write_json(&p, &r)?;
    }
    Ok(())
}

fn cmd_bench_perf(a: PerfArgs, threads: Option<usize>) -> Result<()> {
    use bench::perf::{perf, perf_table, PerfConfig, PerfOutcome};
    let cfg = PerfConfig {
        data: a.data,
        max_train: a.max_train,
        cd_hidden: a.cd_hidden,
        cd_batch: a.cd_batch,
        cd_lr: a.cd_lr,
        cd_epochs: a.cd_epochs,
        samples: a.samples,
        reps: a.reps,
        seed: a.seed,
        reference_dir: a.reference_dir,
        no_reference: a.no_reference,
        scaling: !a.no_scaling,
        full_training: a.full_training,
        work_dir: a.work_dir,
        threads,
    };
    let exe = std::env::current_exe().context("bench perf: locating the rgshield binary")?;
    let run = |job: &bench::perf::PerfJob| -> rgshield::error::Result<PerfOutcome> {
        let json = serde_json::to_string(job)
            .map_err(|e| rgshield::error::Error::invalid(format!("bench perf job: {e}")))?;
        let mut cmd = std::process::Command::new(&exe);
        if let Some(t) = threads {
            cmd.arg("--threads").arg(t.to_string());
        }
        let out = cmd
            .args(["bench", "perf-job", "--job", &json])
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| rgshield::error::Error::io(&exe, e))?;
        if !out.status.success() {
            return Err(rgshield::error::Error::invalid(format!(
                "bench perf job {json} failed ({})",
                out.status
            )));
        }
        bench::perf::last_json_line(
            &String::from_utf8_lossy(&out.stdout),
            &format!("bench perf job {json}"),
        )
        .map_err(rgshield::error::Error::invalid)
    };
    let report = perf(&cfg, run, |m| eprintln!("bench perf: {m}"))?;
    let table = perf_table(&report);
    println!("{table}");
    if let Some(p) = a.json {
        write_json(&p, &report)?;
    }
    if let Some(p) = a.out {
        rgshield::util::atomic_write(&p, table.as_bytes())?;
    }
    Ok(())
}

fn cmd_bench_perf_job(job: &str) -> Result<()> {
    let job: bench::perf::PerfJob =
        serde_json::from_str(job).with_context(|| format!("bench perf-job: bad --job '{job}'"))?;
    let outcome = bench::perf::run_job(&job)?;
    println!("{}", serde_json::to_string(&outcome)?);
    Ok(())
}

fn parse_depths(s: &str) -> Result<Vec<usize>> {
    let depths: Vec<usize> = s
        .split(',')
        .map(|t| {
            t.trim()
                .parse::<usize>()
                .with_context(|| format!("--depths: '{t}' is not a depth"))
        })
        .collect::<Result<_>>()?;
    if depths.contains(&0) {
        bail!("--depths: depth 0 is not a network");
    }
    Ok(depths)
}

fn cmd_bench_depth_study(a: DepthStudyArgs) -> Result<()> {
    use rgshield::depth_study::{self, DepthStudyConfig};
    let depths = parse_depths(&a.depths)?;
    let inputs = parse_inputs(&a.inputs)?;
    let mut cfg = DepthStudyConfig::defaults_for(a.method, a.seed);
    cfg.depths = depths;
    cfg.width = a.width;
    cfg.models_dir = a.models_dir.clone();
    cfg.inputs = inputs;
    cfg.samples = a.samples;
    cfg.basis = a.basis.parse()?;
    cfg.blocks = a.blocks;
    cfg.attack_epsilon = a.attack_epsilon;
    if let Some(v) = a.finetune_epochs {
        cfg.train.finetune_epochs = v;
    }
    if let Some(v) = a.sweeps {
        cfg.train.sweeps = v;
    }
    if let Some(v) = a.pretrain_epochs {
        cfg.train.pretrain_epochs = v;
    }
    cfg.validate()?;
    let data = a.data.load()?;
    let out = a.out.clone().unwrap_or_else(|| a.models_dir.clone());
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    println!("{}", depth_study::table_header(&data, &cfg));
    let bar_for = |stage: &str, n: usize, len: u64| progress(len, &format!("N={n} {stage}"));
    let report = depth_study::depth_study(&data, &cfg, Some(&out), &bar_for, |row| {
        println!("{}", depth_study::table_row(row))
    })?;
    let json = out.join("depth_study.json");
    write_json(&json, &report)?;
    let plots = depth_study::write_plots(&report, &out)?;
    for r in &report.rows {
        let how = match r.model_source {
            depth_study::ModelSource::Trained => {
                format!("trained and saved in {:.1} s", r.train_seconds)
            }
            depth_study::ModelSource::Reused => "reused (widths match)".to_string(),
        };
        println!(
            "N={}: model {} {how}, fingerprint {}",
            r.depth, r.model_dir, r.fingerprint
        );
    }
    println!(
        "\nwrote {} and {} plots in {} ({:.1} s)",
        json.display(),
        plots.len(),
        out.display(),
        report.seconds
    );
    Ok(())
}

fn cmd_bench_depth(a: DepthArgs) -> Result<()> {
    let data = a.data.load()?;
    let depths = parse_depths(&a.depths)?;
    let cfg = DepthBenchConfig {
        depths,
        width: a.width,
        methods: a.methods.clone(),
        seed: a.knobs.seed,
        samples: a.samples,
    };
    let configs = |m: Method| {
        TrainKnobs {
            method: m,
            ..a.knobs.clone()
        }
        .config()
    };
    println!("{}", bench::depth_table_header(&data));
    let rows = bench::depth_bench(
        &data,
        &cfg,
        configs,
        |d, m| progress(0, &format!("N={d} {m:?}")),
        |row| println!("{}", bench::depth_table_row(row)),
    )?;
    if let Some(p) = a.json {
        write_json(&p, &rows)?;
    }
    Ok(())
}

/// The output defence called `name` with strength `strength` for `model`. Only `none` exists
/// until the defence module lands; any other name is an error that lists the choices.
/// The defence named on the command line; `rg` uses the model directory's poison cache (computed
/// and saved there on first use).
fn build_defence(
    name: &str,
    strength: f64,
    model: &DeepRbm,
    model_dir: Option<&std::path::Path>,
    image_shape: Option<(usize, usize)>,
) -> Result<Arc<dyn Defence>> {
    let spec: DefenceSpec = name
        .parse()
        .with_context(|| format!("--defence '{name}'"))?;
    let cache = match spec {
        DefenceSpec::Rg(reading) => {
            let dir =
                model_dir.context("--defence rg needs a model directory for its poison cache")?;
            let (cache, computed) = PoisonCache::load_or_compute(dir, model, image_shape, reading)?;
            if computed {
                eprintln!(
                    "computed poison directions per class ({} samples per class) into {}",
                    cache.samples,
                    PoisonCache::path_in(dir, reading).display()
                );
            }
            Some(cache)
        }
        _ => None,
    };
    Ok(Arc::from(spec.build(strength, cache.as_ref())?))
}

fn cmd_serve(a: ServeArgs, threads: Option<usize>) -> Result<()> {
    let (model, meta) = model_io::load(&a.model)?;
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
    if let Some(t) = threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    println!(
        "serving {} ({:?}, defence {}) — Ctrl-C stops",
        a.model.display(),
        state.info().widths,
        state.defence().name()
    );
    rt.block_on(serve::run(a.addr, Arc::new(state)))?;
    println!("stopped");
    Ok(())
}

fn cmd_bench_serve(a: ServeBenchArgs, threads: Option<usize>) -> Result<()> {
    let (model, shape) = match &a.model {
        Some(dir) => {
            let (m, meta) = model_io::load(dir)?;
            let shape = meta.dataset.as_ref().and_then(|d| d.image_shape);
            (m, shape)
        }
        None => {
            use rand::SeedableRng;
            let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(0);
            (DeepRbm::random(&[64, 64, 64, 10], 0.5, &mut rng)?, None)
        }
    };
    let defence = if DefenceSpec::from_str(&a.defence)?.needs_cache() && a.model.is_none() {
        bail!(
            "--defence {}: needs --model (its poison cache lives in the model directory)",
            a.defence
        );
    } else {
        build_defence(&a.defence, a.epsilon, &model, a.model.as_deref(), shape)?
    };
    let mut cfg = serve::bench::ServeBenchConfig {
        connections: a.connections,
        seconds: a.seconds,
        distinct_inputs: a.inputs,
        inline_max_work: a.inline_max_work,
        ..Default::default()
    };
    if let Some(s) = a.samples {
        cfg.mode = OutputMode::Served {
            samples: s,
            seed: 0,
        };
    }
    if let Some(t) = threads {
        cfg.worker_threads = t.max(1);
    }
    let report = serve::bench::serve_bench(&model, defence, &cfg)?;
    println!("{}", serve::bench::format_report(&report));
    if let Some(p) = a.json {
        write_json(&p, &report)?;
    }
    Ok(())
}
