//! rgshield: protect deep RBM classifiers against cloning with Renormalisation-Group poisoning.
//!
//! The modules follow the data's path (see `../shared/design/SPEC.md` for the mathematics):
//! [`data`] → [`model`] (RBM, deep stack, file I/O) → [`sample`] (ancestral up/down passes, Gibbs,
//! the served output) → [`train`] (the seed's layerwise KL rule, eq. 14, and the documented hybrid).
//! [`exact`] enumerates tiny stacks and is the reference every estimator is tested against.

// Index loops read like the formulas they implement (W[i][j] against SPEC equations).
#![allow(clippy::needless_range_loop)]

pub mod analyze;
pub mod attack;
pub mod bench;
pub mod data;
pub mod defence;
pub mod depth_study;
pub mod error;
pub mod exact;
pub mod extraction;
pub mod linalg;
pub mod model;
pub mod report;
pub mod rg;
pub mod sample;
pub mod serve;
pub mod train;
pub mod util;

pub use error::{Error, Result};
pub use model::{DeepRbm, Rbm};
