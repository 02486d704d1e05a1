//! `rgshield bench …`: the benchmark subcommands, one file each.

mod depth;
mod depth_study;
mod guard;
mod perf;
mod rg;
mod serve;

use clap::Subcommand;

use super::Global;

/// The benchmarks.
#[derive(Subcommand)]
pub enum Cmd {
    /// Train depths N = 1…6 (hidden width 64) with eq. 14 and the hybrid; print accuracy and time.
    Depth(Box<depth::Args>),
    /// Time the correlators and stability matrix of one layer: bit-packed beside float GEMM.
    Rg(rg::Args),
    /// Load-test the HTTP API in process: in-process vs HTTP rate, with and without a defence.
    Serve(serve::Args),
    /// Depth study (SPEC §10): per depth N, train or reuse a model, analyse and attack it; prints
    /// a Markdown table row by row and writes depth_study.json and plots against N.
    DepthStudy(Box<depth_study::Args>),
    /// The guard (issue 16): monitor false alarms on benign clients and detection of the
    /// natural, adaptive and JBDA attackers; watermark p-values of their clones across budgets,
    /// of innocent models, and the accuracy cost; writes guard_eval.json, guard_eval.md, plots.
    Guard(Box<guard::Args>),
    /// Performance against the machine's limit and the peers (numpy, scikit-learn), measured side
    /// by side in one run; each measurement in its own process for its peak memory.
    Perf(Box<perf::Args>),
    /// Run one `bench perf` measurement (JSON job) and print its result as one JSON line.
    #[command(hide = true)]
    PerfJob {
        /// The job, as JSON.
        #[arg(long)]
        job: String,
    },
}

/// Run a benchmark subcommand.
pub fn run(cmd: Cmd, g: &Global) -> anyhow::Result<()> {
    match cmd {
        Cmd::Depth(a) => depth::run(&a, g),
        Cmd::Rg(a) => rg::run(&a, g),
        Cmd::Serve(a) => serve::run(&a, g),
        Cmd::DepthStudy(a) => depth_study::run(&a, g),
        Cmd::Guard(a) => guard::run(&a, g),
        Cmd::Perf(a) => perf::run(*a, g),
        Cmd::PerfJob { job } => perf::run_job(&job),
    }
}
