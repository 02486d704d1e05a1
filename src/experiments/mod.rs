//! The experiments: each one runs the library over a model and a data set and returns a report
//! that serialises to the JSON the command line writes (with its tables and plots).
//!
//! * [`analyze`] — the RG analysis of a model over inputs and classes (SPEC §4–7);
//! * [`attack`] — adversarial attacks along Fisher directions beside gradient baselines (SPEC §6);
//! * [`clone_eval`] — cloning attacks against defended outputs and what each defence does to them
//!   (SPEC §9);
//! * [`depth_study`] — all of the above against depth (SPEC §10).

pub mod analyze;
pub mod attack;
pub mod clone_eval;
pub mod depth_study;
pub mod guard_eval;
pub mod protocol;
pub mod query_strategy;
