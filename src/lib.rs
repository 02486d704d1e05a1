//! rgshield: protect deep RBM classifiers served through a prediction API against cloning, with
//! the Renormalisation-Group (RG) reading of deep networks.
//!
//! The mathematics, with every decision taken where the papers are vague, is in
//! `docs/design/SPEC.md` and `docs/design/RG-NOTES.md`; comments cite them as `SPEC §N` and
//! `RG-NOTES §N`, and "eq. N" is an equation of R. Kenway, *Protection against Cloning for Deep
//! Learning*, arXiv:1803.10995 ("the paper").
//!
//! # Module map
//!
//! Dependencies run one way, from the foundations to the experiments and the server:
//!
//! | layer | modules | what |
//! |---|---|---|
//! | foundations | [`error`], [`util`], [`params`], [`progress`], [`report`] | errors; hashing, seeds and atomic writes; the params pattern; progress events; plots and summary statistics |
//! | data, algebra | [`data`], [`linalg`] | data sets (embedded digits, IDX, CSV, Ising) and their binarisation; f32 products and f64 decompositions (faer) |
//! | model | [`model`] | the RBM and the deep stack (eq. 1), its conditionals, model files |
//! | sampling | [`sample`] | exact ancestral passes up and down (eq. 2, 9), block Gibbs, the served output (SPEC §1) |
//! | training, RG | [`train`], [`rg`] | eq. 14 and the hybrid; operator bases, correlators, stability matrices, Fisher information (SPEC §3–7) |
//! | attacks, defences, guard | [`perturb`], [`defence`], [`guard`] | input perturbations (FGSM, PGD, Fisher directions); output defences (SPEC §8, §11); API keys, quotas, the extraction monitor and the watermark (SPEC §13) |
//! | experiments | [`experiments`] | `analyze`, `attack`, `clone-eval`, the depth study |
//! | serving, benchmarks | [`serve`], [`bench`] | the HTTP prediction API; the benchmark tables |
//!
//! [`exact`] enumerates tiny stacks: it is the oracle every sampler and estimator is tested
//! against, and nothing but the tests (and cross-checks) uses it.
//!
//! # Example
//!
//! Train a small classifier on the embedded digits, save it, load it back and classify:
//!
//! ```
//! use rgshield::data::{self, DataSpec, LoadOptions};
//! use rgshield::model::io;
//! use rgshield::sample::{OutputMode, Predictor};
//! use rgshield::train::{Method, TrainParams, Trainer};
//! use rgshield::Params;
//!
//! # fn main() -> rgshield::Result<()> {
//! let digits = data::load(&DataSpec::Digits, &LoadOptions::default())?;
//! let params = TrainParams {
//!     finetune_epochs: 30,
//!     sweeps: 1,
//!     ..TrainParams::for_method(Method::Hybrid, 1)
//! }
//! .check()?;
//! let (model, _outcome) = Trainer::new(&digits, &params)?.train(&[64, 16, 10])?;
//!
//! let dir = tempfile::tempdir().expect("a temporary directory");
//! io::save(dir.path(), &model, &io::ModelMeta::new(&model, digits.class_names.clone()))?;
//! let (loaded, _meta) = io::load(dir.path())?;
//! assert_eq!(loaded, model);
//!
//! let served = Predictor::new(&loaded, OutputMode::Served { samples: 16, seed: 0 });
//! let accuracy = served.accuracy(&digits.test);
//! assert!(accuracy > 0.5, "{accuracy}");
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]
// Index loops read like the formulas they implement (W[i][j] against SPEC equations).
#![allow(clippy::needless_range_loop)]

pub mod bench;
pub mod data;
pub mod defence;
pub mod error;
pub mod exact;
pub mod experiments;
pub mod guard;
pub mod linalg;
pub mod model;
pub mod params;
pub mod perturb;
pub mod progress;
pub mod report;
pub mod rg;
pub mod sample;
pub mod serve;
pub mod train;
pub mod util;

pub use error::{Error, Result};
pub use model::{DeepRbm, Rbm};
pub use params::{Params, Valid};
pub use progress::{NoProgress, Progress};
