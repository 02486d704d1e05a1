//! Benchmarks printed as tables (`rgshield bench …`). Speed targets live here, as ratios against a
//! reference measured in the same run, never in timed tests.
//!
//! * [`depth`] — training accuracy and time against depth;
//! * [`rg`] — the RG correlators, bit-packed beside float GEMM;
//! * [`perf`] — sampling, correlators and training against the machine's limit and the peers
//!   (numpy, scikit-learn), each measurement in its own process; [`npy`] exchanges their data.

pub mod depth;
pub mod npy;
pub mod perf;
pub mod rg;

pub use depth::{
    depth_bench, depth_goal, depth_median_table, depth_medians, depth_table_header,
    depth_table_row, DepthBenchParams, DepthMedian, DepthRow,
};
pub use rg::{rg_bench, rg_bench_table, RgBenchConfig, RgBenchReport};
