//! `neurodex units --db F --layer L`: a layer's units by statistic.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::query::{self, SortBy};
use crate::store::Store;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub db: PathBuf,
    #[arg(long)]
    pub layer: String,
    /// Largest first; `sparsity` = fraction of images where the unit stays <= 0
    #[arg(long, value_enum, default_value_t = SortBy::Max)]
    pub sort: SortBy,
    /// Show only the first N units
    #[arg(short = 'n', long)]
    pub limit: Option<usize>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open_readonly(&args.db)?;
    let (layer, mut units) = query::units(&store, &args.layer, args.sort)?;
    if let Some(n) = args.limit {
        units.truncate(n);
    }
    if args.json {
        let out = serde_json::json!({ "layer": layer.name, "units": units });
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    let f = |v: Option<f64>| v.map(|v| format!("{v:.4}")).unwrap_or_else(|| "-".into());
    println!(
        "{:>5}  {:>7}  {:>9}  {:>9}  {:>9}  {:>9}  {:>8}",
        "unit", "images", "mean", "p50", "p99", "max", "sparsity"
    );
    for u in &units {
        println!(
            "{:>5}  {:>7}  {:>9}  {:>9}  {:>9}  {:>9}  {:>8}",
            u.unit,
            u.count,
            f(u.mean),
            f(u.p50),
            f(u.p99),
            f(u.max),
            u.sparsity
                .map(|s| format!("{s:.3}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    Ok(ExitCode::SUCCESS)
}
