//! `rgshield bench depth`: accuracy and training time against depth, for each method.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::cli::common::{check_samples, prepare_out_file, Bar, DataArgs, Depths, TrainArgs};
use crate::cli::train::check_train_memory;
use crate::cli::Global;
use rgshield::bench::{self, DepthBenchParams};
use rgshield::model::stack_widths;
use rgshield::train::Method;
use rgshield::{Params, Valid};

/// Flags of `rgshield bench depth`.
#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    /// Depths to train, e.g. 1,2,3,4,5,6.
    #[arg(long, default_value_t = Depths(DepthBenchParams::default().depths))]
    depths: Depths,
    /// Hidden width.
    #[arg(long, default_value_t = DepthBenchParams::default().width)]
    width: usize,
    /// Methods to compare.
    #[arg(long, value_delimiter = ',', default_value = "eq14,hybrid")]
    methods: Vec<Method>,
    /// Training settings (the method flag is overridden by --methods).
    #[command(flatten)]
    train: TrainArgs,
    /// Samples S of the served output for the test accuracy.
    #[arg(long, default_value_t = DepthBenchParams::default().samples)]
    samples: usize,
    /// Also write the table as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

impl TryFrom<&Args> for Valid<DepthBenchParams> {
    type Error = anyhow::Error;
    fn try_from(a: &Args) -> Result<Self> {
        let train = a
            .methods
            .iter()
            .map(|&m| Ok(a.train.params_for(m).check()?))
            .collect::<Result<Vec<_>>>()?;
        Ok(DepthBenchParams {
            depths: a.depths.0.clone(),
            width: a.width,
            train,
            samples: a.samples,
        }
        .check()?)
    }
}

/// Run `rgshield bench depth`.
pub fn run(a: &Args, g: &Global) -> Result<()> {
    check_samples("bench depth: --samples", a.samples)?;
    let params: Valid<DepthBenchParams> = a.try_into()?;
    if let Some(p) = &a.json {
        prepare_out_file(p).context("--json")?;
    }
    let data = a.data.load()?;
    for &n in &params.depths {
        let widths = stack_widths(data.n_features(), params.width, n, data.n_classes());
        for t in &params.train {
            check_train_memory(g, &widths, t, &data)?;
        }
    }
    println!("{}", bench::depth_table_header(&data));
    let rows = bench::depth_bench(&data, &params, &Bar::new(), |row| {
        println!("{}", bench::depth_table_row(row))
    })?;
    if let Some(p) = &a.json {
        rgshield::util::write_json(p, &rows)?;
    }
    Ok(())
}
