//! What the commands share: the data-set flags, the training flags, the basis flag, test-input
//! selections, progress bars, and `emit` (write a report's JSON, Markdown and plots and say so).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;

use rgshield::data::{self, Binarize, DataSpec, Dataset, LoadOptions};
use rgshield::defence::{Defence, DefenceContext, DefenceParams, Key, PoisonCaches};
use rgshield::rg::basis::{BasisChoice, DEFAULT_BASIS};
use rgshield::train::{Method, SweepOrder, Targets, TrainParams};
use rgshield::{DeepRbm, Params, Progress, Valid};

use super::Global;

/// The data-set flags of every command that reads data.
#[derive(Args, Clone)]
pub struct DataArgs {
    /// Data set: digits (embedded), fashion-mnist[:DIR], mnist:DIR, csv:FILE, ising[:L].
    #[arg(long, default_value = "digits")]
    pub data: DataSpec,
    /// Binarisation: "default" (the loader's documented threshold), "off", or a threshold on the
    /// native pixel scale (value > t → 1).
    #[arg(long, default_value_t = Binarize::Default)]
    pub binarize: Binarize,
    /// k×k mean pooling of image inputs before binarisation (e.g. 2 turns 28×28 into 14×14).
    #[arg(long, default_value_t = 1)]
    pub pool: usize,
    /// Keep only the first n training rows.
    #[arg(long)]
    pub max_train: Option<usize>,
    /// Keep only the first n test rows.
    #[arg(long)]
    pub max_test: Option<usize>,
    /// Seed for generated data sets (ising).
    #[arg(long, default_value_t = 0)]
    pub data_seed: u64,
    /// Evaluate on a validation split instead of the test split: 20% of each class of the
    /// training split is held out (stratified, fixed seed) and plays the test split's part; the
    /// test split is not used. Choose settings with this flag, report without it.
    #[arg(long)]
    pub validation: bool,
    /// Evaluate on fold I of a stratified K-fold cut of the training split (written I/K, e.g.
    /// 2/5) instead of the test split; the other folds are the training split and the test split
    /// is not used. Run I = 1…K to evaluate every training row once (a less noisy choice than
    /// --validation's single hold-out).
    #[arg(long, conflicts_with = "validation")]
    pub validation_fold: Option<data::ValidationFold>,
}

impl DataArgs {
    /// Load the data set these flags describe.
    pub fn load(&self) -> Result<Dataset> {
        let opts = LoadOptions {
            binarize: self.binarize,
            pool: self.pool,
            max_train: self.max_train,
            max_test: self.max_test,
            seed: self.data_seed,
        };
        let data = data::load(&self.data, &opts)?;
        Ok(match (self.validation, self.validation_fold) {
            (true, _) => data.validation_view()?,
            (false, Some(fold)) => data.validation_fold_view(fold)?,
            (false, None) => data,
        })
    }
}

/// The operator basis flag of the RG commands (its default is the library's).
#[derive(Args, Clone)]
pub struct BasisArg {
    /// Hidden-layer operator basis: order1, order2 (all pairs: 2080 operators at width 64, slow
    /// and memory-hungry), or order2:M (order 1 plus the M pairs of largest |covariance|, chosen
    /// from pilot samples and frozen). The output layer gets the complete basis when it has at
    /// most 12 units.
    #[arg(long, default_value_t = DEFAULT_BASIS)]
    pub basis: BasisChoice,
}

/// Test-split inputs: a range `A..B` or a comma list `i,j,k`.
#[derive(Clone, Debug, PartialEq)]
pub struct Inputs(pub Vec<usize>);

impl FromStr for Inputs {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        if let Some((a, b)) = s.split_once("..") {
            let a: usize = a
                .trim()
                .parse()
                .with_context(|| format!("'{s}': bad start"))?;
            let b: usize = b
                .trim()
                .parse()
                .with_context(|| format!("'{s}': bad end"))?;
            if b <= a {
                bail!("'{s}': empty range");
            }
            return Ok(Inputs((a..b).collect()));
        }
        s.split(',')
            .map(|t| {
                t.trim()
                    .parse::<usize>()
                    .with_context(|| format!("'{s}': '{t}' is not an index"))
            })
            .collect::<Result<_>>()
            .map(Inputs)
    }
}

impl fmt::Display for Inputs {
    /// `A..B` for a contiguous range, else the comma list.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = &self.0;
        let contiguous = v.len() > 1 && v.windows(2).all(|w| w[1] == w[0] + 1);
        if contiguous {
            return write!(f, "{}..{}", v[0], v[v.len() - 1] + 1);
        }
        let items: Vec<String> = v.iter().map(|i| i.to_string()).collect();
        f.write_str(&items.join(","))
    }
}

/// Depths N: a comma list such as `1,2,3` (each ≥ 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Depths(pub Vec<usize>);

impl FromStr for Depths {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let d: Vec<usize> = s
            .split(',')
            .map(|t| {
                t.trim()
                    .parse::<usize>()
                    .with_context(|| format!("'{t}' is not a depth"))
            })
            .collect::<Result<_>>()?;
        rgshield::model::check_depths("--depths", &d)?;
        Ok(Depths(d))
    }
}

impl fmt::Display for Depths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let items: Vec<String> = self.0.iter().map(|i| i.to_string()).collect();
        f.write_str(&items.join(","))
    }
}

/// The training flags. Each one left out takes the method's documented default
/// (`TrainParams::for_method`; `rgshield train --print-defaults` shows them).
#[derive(Args, Clone)]
pub struct TrainArgs {
    /// Training procedure: eq14 (greedy CD pretraining, then the paper's eq. 14 sweeps) or hybrid
    /// (back-propagation fine-tuning from a random start, mean field by default, then eq. 14
    /// refinement).
    #[arg(long, default_value_t = TrainParams::default().method)]
    pub method: Method,
    /// Seed of the initialisation, minibatch order, samplers and held-out split.
    #[arg(long, default_value_t = TrainParams::default().seed)]
    pub seed: u64,
    /// Maximum eq. 14 sweeps (hybrid: refinement sweeps).
    #[arg(long)]
    pub sweeps: Option<usize>,
    /// Eq. 14 learning rate (hybrid: refinement rate).
    #[arg(long)]
    pub lr: Option<f32>,
    /// Greedy CD pretraining epochs per RBM 1…N-1.
    #[arg(long)]
    pub pretrain_epochs: Option<usize>,
    /// Hybrid: maximum fine-tuning epochs (early-stopped on the held-out loss).
    #[arg(long)]
    pub finetune_epochs: Option<usize>,
    /// Gibbs steps k of the model moments (CD-k).
    #[arg(long)]
    pub cd_k: Option<usize>,
    /// Persistent chains instead of CD restarts at the data.
    #[arg(long)]
    pub persistent: bool,
    /// Eq. 14 targets in the last sampled step: samples or probs.
    #[arg(long)]
    pub targets: Option<Targets>,
    /// Layer order within a sweep: top-down or bottom-up.
    #[arg(long)]
    pub sweep_order: Option<SweepOrder>,
    /// Eq. 14: sweeps over which the lower RBMs' targets move from up-samples of x to eq. 14's
    /// down-samples of y (annealed targets; 0 = none).
    #[arg(long)]
    pub anneal_sweeps: Option<usize>,
    /// Minibatch size of pretraining and eq. 14 (the fine-tuning uses at most 32).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Sweeps (or fine-tuning checks) without held-out improvement before stopping.
    #[arg(long)]
    pub patience: Option<usize>,
    /// Passes over the data per layer within one sweep.
    #[arg(long)]
    pub epochs_per_layer: Option<usize>,
    /// Multiplicative learning-rate decay per sweep.
    #[arg(long)]
    pub lr_decay: Option<f32>,
    /// Momentum of the CD and eq. 14 updates, in [0, 1).
    #[arg(long)]
    pub momentum: Option<f32>,
    /// L2 weight decay on the weights W (CD, eq. 14 and fine-tuning).
    #[arg(long)]
    pub weight_decay: Option<f32>,
    /// Greedy pretraining learning rate.
    #[arg(long)]
    pub pretrain_lr: Option<f32>,
    /// Hybrid: Adam learning rate of the fine-tuning.
    #[arg(long)]
    pub finetune_lr: Option<f32>,
    /// Standard deviation of the initial Gaussian weights.
    #[arg(long)]
    pub init_scale: Option<f32>,
    /// Eq. 14 learning rate of RBMs 1…N-1 relative to the top RBM.
    #[arg(long)]
    pub lower_lr_factor: Option<f32>,
    /// Hybrid: fine-tune through sampled hidden states (true) or the mean field (false).
    #[arg(long)]
    pub finetune_stochastic: Option<bool>,
    /// Hybrid: probability of flipping each input value in fine-tuning batches (augmentation).
    #[arg(long)]
    pub finetune_input_noise: Option<f32>,
    /// Hybrid, after mean-field fine-tuning: at most this many epochs of stochastic
    /// (straight-through) fine-tuning from its optimum, kept where they lower the served held-out
    /// loss (0 = none).
    #[arg(long)]
    pub finetune_stochastic_epochs: Option<usize>,
}

impl TrainArgs {
    /// The method's defaults with every given flag applied (not yet checked).
    pub fn params(&self) -> TrainParams {
        self.params_for(self.method)
    }

    /// [`TrainArgs::params`] for another method (the flags apply to every method compared).
    pub fn params_for(&self, method: Method) -> TrainParams {
        let mut c = TrainParams::for_method(method, self.seed);
        macro_rules! set { ($($f:ident),*) => { $( if let Some(v) = self.$f { c.$f = v; } )* } }
        set!(
            sweeps,
            lr,
            pretrain_epochs,
            finetune_epochs,
            cd_k,
            targets,
            sweep_order,
            anneal_sweeps,
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
            finetune_input_noise,
            finetune_stochastic_epochs
        );
        c.persistent |= self.persistent;
        c
    }
}

/// A training configuration from a JSON file, as `rgshield train --print-defaults` prints it
/// (every field): the `--train-config` flag of the benchmarks that pin their models' training.
pub fn read_train_config(path: &Path) -> Result<TrainParams> {
    TrainParams::read(path).with_context(|| format!("--train-config {}", path.display()))
}

impl TryFrom<&TrainArgs> for Valid<TrainParams> {
    type Error = anyhow::Error;
    fn try_from(a: &TrainArgs) -> Result<Self> {
        Ok(a.params().check()?)
    }
}

/// A progress bar on the terminal (hidden when stderr is not one) for the library's [`Progress`]
/// events.
pub struct Bar(indicatif::ProgressBar);

impl Bar {
    /// A hidden bar until the first stage starts.
    pub fn new() -> Self {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Bar(bar)
    }
}

impl Progress for Bar {
    fn start(&self, what: &str, len: u64) {
        self.0.reset();
        self.0.set_length(len);
        self.0.set_prefix(what.to_string());
        self.0.set_message("");
    }
    fn inc(&self, n: u64) {
        self.0.inc(n);
    }
    fn message(&self, msg: &str) {
        self.0.set_message(msg.to_string());
    }
    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// Refuse a command whose estimated memory `need` (bytes; `None`: beyond any addressable
/// amount) exceeds the budget of `g`; `what` names the flags that drive the estimate.
pub fn check_memory(g: &Global, what: &str, need: Option<u64>) -> Result<()> {
    let need = need.unwrap_or(u64::MAX);
    rgshield::util::memory::check_memory(what, need, g.memory_budget, g.budget_source)?;
    Ok(())
}

/// Refuse a sample count of 0 for the flag `flag` (a served output or an estimate needs at least
/// one sample; 0 used to run silently as 1).
pub fn check_samples(flag: &str, samples: usize) -> Result<()> {
    rgshield::error::check_at_least(flag, samples, 1)?;
    Ok(())
}

/// Threads the rayon pool runs on (for the memory estimates of parallel work).
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Widths as the `--widths` flag writes them.
pub fn widths_flag(widths: &[usize]) -> String {
    let w: Vec<String> = widths.iter().map(|w| w.to_string()).collect();
    format!("--widths {}", w.join(","))
}

/// Create `dir` (and its parents) and check that a file can be written there, before any long
/// work: a bad output path — a file where a directory is wanted, a parent that cannot be created
/// or written — must fail at once, not after the run.
pub fn prepare_out_dir(dir: &Path) -> Result<()> {
    if let Some(file) = dir.ancestors().find(|a| a.is_file()) {
        if file == dir {
            bail!(
                "{} exists and is a file; an output directory is needed here",
                dir.display()
            );
        }
        bail!(
            "{}: {} is a file, not a directory",
            dir.display(),
            file.display()
        );
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let probe = dir.join(format!(".rgshield-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| format!("{} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Check, before any work, that `path` can receive an output file: not a directory, and its
/// folder can be created and written ([`prepare_out_dir`]).
pub fn prepare_out_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!(
            "{} is a directory; an output file name is needed here",
            path.display()
        );
    }
    if path.file_name().is_none() {
        bail!("{}: not a file name", path.display());
    }
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if let Some(file) = folder.ancestors().find(|a| a.is_file()) {
        bail!(
            "{}: {} is a file, not a directory",
            path.display(),
            file.display()
        );
    }
    prepare_out_dir(folder)
}

/// Check, before any work, that the model directory `dir` can be written as a whole
/// ([`rgshield::model::io::save_with_files`]): missing, empty or a model directory (which is
/// replaced), and its parent folder can be created and written (the new directory is prepared
/// there, beside it). Creates the parent, not `dir`.
pub fn prepare_model_dir(dir: &Path) -> Result<()> {
    rgshield::util::transaction::check_replaceable(dir, rgshield::model::io::META_FILE)?;
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    prepare_out_dir(parent)
}

/// The flags that say where a defence's secret key and derived data live.
#[derive(Args, Clone)]
pub struct DefenceStoreArgs {
    /// The defender's secret key (64 hexadecimal digits). Every randomised or keyed defence draws
    /// from it; created with owner-only permissions when missing. Default:
    /// $RGSHIELD_KEY_FILE, else $XDG_CONFIG_HOME/rgshield/key, else ~/.config/rgshield/key.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// Where derived data (poison caches) live.
#[derive(Args, Clone)]
pub struct CacheArgs {
    /// Where poison caches (per-class Fisher information) are read and written. Default:
    /// $RGSHIELD_CACHE_DIR, else $XDG_CACHE_HOME/rgshield, else ~/.cache/rgshield, then the
    /// model's fingerprint — never the model directory, so a read-only model serves.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

impl CacheArgs {
    /// The poison caches of `model`.
    pub fn caches(&self, model: &DeepRbm, image_shape: Option<(usize, usize)>) -> PoisonCaches {
        let dir = self
            .cache_dir
            .clone()
            .map(|d| d.join(model.fingerprint_hex()))
            .or_else(|| PoisonCaches::default_dir(model));
        PoisonCaches::new(dir, image_shape)
    }
}

impl DefenceStoreArgs {
    /// The key file's path (flag, environment, or the default).
    pub fn key_path(&self) -> Result<PathBuf> {
        if let Some(p) = &self.key_file {
            return Ok(p.clone());
        }
        if let Some(p) = std::env::var_os("RGSHIELD_KEY_FILE") {
            return Ok(PathBuf::from(p));
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
            .ok_or_else(|| {
                anyhow::anyhow!("no key file given and neither XDG_CONFIG_HOME nor HOME is set: pass --key-file")
            })?;
        Ok(base.join("rgshield").join("key"))
    }

    /// Load the key, or generate and save it (saying where on stderr).
    pub fn key(&self) -> Result<Key> {
        let path = self.key_path()?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let (key, generated) = Key::load_or_generate(&path)?;
        if Key::readable_by_others(&path) {
            eprintln!(
                "warning: the key file {} can be read by other users (chmod 600 it): whoever \
                 reads it can predict the keyed defences' choices",
                path.display()
            );
        }
        if generated {
            eprintln!(
                "generated a secret key (owner-only) in {}: keep it; answers depend on it",
                path.display()
            );
        }
        Ok(key)
    }

    /// The key for `defences`: loaded (or generated) only when one of them uses a key, so that
    /// the deterministic defences need no key file; otherwise a public placeholder that nothing
    /// draws from.
    pub fn key_for(&self, defences: &[DefenceParams]) -> Result<Key> {
        if defences.iter().any(DefenceParams::uses_key) {
            self.key()
        } else {
            Ok(Key::public("rgshield: no keyed defence"))
        }
    }

    /// The poison caches of `model`.
    pub fn caches(&self, model: &DeepRbm, image_shape: Option<(usize, usize)>) -> PoisonCaches {
        self.cache.caches(model, image_shape)
    }
}

/// Build a defence and print what its caches did.
pub fn build_defence(
    params: &DefenceParams,
    model: &DeepRbm,
    key: &Key,
    caches: &PoisonCaches,
) -> Result<Arc<dyn Defence>> {
    let d = params
        .build(&DefenceContext { model, key, caches })
        .with_context(|| format!("--defence {params}"))?;
    for n in caches.notes() {
        eprintln!("{n}");
    }
    Ok(Arc::from(d))
}

/// Write a report into `dir`: `json_name` (pretty JSON), the Markdown `markdown` as
/// `(file name, text)` when given, and the plots `plots(dir)` draws; then print one line that
/// says what was written where. Returns the plots' paths.
pub fn emit<T: Serialize>(
    dir: &Path,
    json_name: &str,
    report: &T,
    markdown: Option<(&str, &str)>,
    plots: impl FnOnce(&Path) -> rgshield::Result<Vec<PathBuf>>,
) -> Result<Vec<PathBuf>> {
    prepare_out_dir(dir)?;
    let json = dir.join(json_name);
    rgshield::util::write_json(&json, report)?;
    let mut wrote = json.display().to_string();
    if let Some((name, text)) = markdown {
        let md = dir.join(name);
        rgshield::util::atomic_write(&md, text.as_bytes())?;
        wrote += &format!(", {}", md.display());
    }
    let plots = plots(dir)?;
    println!(
        "wrote {wrote} and {} plot{} in {}",
        plots.len(),
        if plots.len() == 1 { "" } else { "s" },
        dir.display()
    );
    Ok(plots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_parse_and_print_back() {
        assert_eq!("2..5".parse::<Inputs>().unwrap(), Inputs(vec![2, 3, 4]));
        assert_eq!("7, 1,3".parse::<Inputs>().unwrap(), Inputs(vec![7, 1, 3]));
        assert_eq!(Inputs(vec![0, 1, 2]).to_string(), "0..3");
        assert_eq!(Inputs(vec![4, 1]).to_string(), "4,1");
        for bad in ["5..5", "a..3", "1,x", ""] {
            assert!(bad.parse::<Inputs>().is_err(), "{bad}");
        }
        assert!("1,0".parse::<Depths>().is_err());
        assert_eq!("1,3".parse::<Depths>().unwrap().to_string(), "1,3");
    }
}
