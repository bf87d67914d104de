//! `neurodex units --db F --layer L`: a layer's units by statistic.

use std::path::PathBuf;
use std::process::ExitCode;

use neurodex::query::{self, SortBy};

/// `--sort`: the statistic units are listed by, largest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sort {
    Max,
    Mean,
    Sparsity,
    Unit,
}

impl From<Sort> for SortBy {
    fn from(s: Sort) -> SortBy {
        match s {
            Sort::Max => SortBy::Max,
            Sort::Mean => SortBy::Mean,
            Sort::Sparsity => SortBy::Sparsity,
            Sort::Unit => SortBy::Unit,
        }
    }
}
use neurodex::store::Store;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Index database (see `neurodex index`)
    #[arg(long)]
    pub db: PathBuf,
    /// Layer name (see `neurodex stats`)
    #[arg(long)]
    pub layer: String,
    /// Largest first; `sparsity` = fraction of images where the unit stays <= 0
    #[arg(long, value_enum, default_value_t = Sort::Max)]
    pub sort: Sort,
    /// Show only the first N units
    #[arg(short = 'n', long)]
    pub limit: Option<usize>,
    /// One JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

/// The index keeps each unit's peaks in log-spaced bins four to an octave, so p50
/// and p99 are a bin's centre: within about 19% of the true value.
const QUANTILE_NOTE: &str = "p50 and p99 are approximate (from histogram bins about 19% wide)";

/// `v` to two significant digits (three from 100 up), marked `~`: more digits than
/// the quantiles' accuracy would look precise.
fn approx(v: Option<f64>) -> String {
    let Some(v) = v else { return "-".into() };
    if v == 0.0 || !v.is_finite() {
        return format!("~{v}");
    }
    let decimals = (1 - v.abs().log10().floor() as i32).max(0) as usize;
    format!("~{v:.decimals$}")
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open_readonly(&args.db)?;
    super::note_progress(&store)?;
    let (layer, mut units) = query::units(&store, &args.layer, args.sort.into())?;
    if let Some(n) = args.limit {
        units.truncate(n);
    }
    if args.json {
        let out = serde_json::json!({
            "layer": layer.name,
            "note": QUANTILE_NOTE,
            "units": units,
        });
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
            approx(u.p50),
            approx(u.p99),
            f(u.max),
            u.sparsity
                .map(|s| format!("{s:.3}"))
                .unwrap_or_else(|| "-".into())
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::approx;

    #[test]
    fn quantiles_show_two_significant_digits_marked_approximate() {
        assert_eq!(approx(Some(4.7568)), "~4.8");
        assert_eq!(approx(Some(29.3441)), "~29");
        assert_eq!(approx(Some(0.012345)), "~0.012");
        assert_eq!(approx(Some(-0.5)), "~-0.50");
        assert_eq!(approx(Some(123.4)), "~123");
        assert_eq!(approx(Some(0.0)), "~0");
        assert_eq!(approx(None), "-");
    }
}
