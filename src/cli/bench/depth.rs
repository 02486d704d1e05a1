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
    /// Training seeds, e.g. 1,2,3: every (depth, method) is trained once per seed and the table
    /// ends with the median over seeds per depth (replaces --seed).
    #[arg(long, value_delimiter = ',', conflicts_with = "seed")]
    seeds: Vec<u64>,
    /// Samples S of the served output for the test accuracy.
    #[arg(long, default_value_t = DepthBenchParams::default().samples)]
    samples: usize,
    /// Also write the rows and the medians as JSON here (`{"rows": [...], "medians": [...]}`).
    #[arg(long)]
    json: Option<PathBuf>,
}

impl TryFrom<&Args> for Valid<DepthBenchParams> {
    type Error = anyhow::Error;
    fn try_from(a: &Args) -> Result<Self> {
        let seeds = if a.seeds.is_empty() {
            vec![a.train.seed]
        } else {
            a.seeds.clone()
        };
        let mut train = Vec::new();
        for &m in &a.methods {
            for &seed in &seeds {
                let mut p = a.train.params_for(m);
                p.seed = seed;
                train.push(p.check()?);
            }
        }
        Ok(DepthBenchParams {
            depths: a.depths.0.clone(),
            width: a.width,
            train,
            samples: a.samples,
        }
        .check()?)
    }
}

/// What `--json` holds.
#[derive(serde::Serialize)]
struct DepthJson {
    rows: Vec<bench::DepthRow>,
    medians: Vec<bench::DepthMedian>,
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
    let medians = bench::depth_medians(&rows);
    println!(
        "\nmedian over seeds of the served accuracy on {}\n\n{}",
        data.name,
        bench::depth_median_table(&medians)
    );
    if let Some(p) = &a.json {
        rgshield::util::write_json(p, &DepthJson { rows, medians })?;
    }
    Ok(())
}
