//! `neurodex top --db F --layer L --unit U`: the images that excite a unit most.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::query;
use crate::store::Store;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Index database (see `neurodex index`)
    #[arg(long)]
    pub db: PathBuf,
    /// Layer name (see `neurodex stats`)
    #[arg(long)]
    pub layer: String,
    /// Unit (channel) number
    #[arg(long)]
    pub unit: usize,
    /// How many images (at most the index's top-K, see `neurodex stats`)
    #[arg(short, default_value_t = 9, value_parser = at_least_one)]
    pub k: usize,
    /// One JSON object on stdout
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub grid: crate::render::top::GridArgs,
}

/// `-k 0` would draw an empty grid; clap's own range message prints `u64::MAX`.
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(k) => Ok(k),
        Err(e) => Err(e.to_string()),
    }
}

pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    if let Some(out) = &args.grid.output {
        crate::render::output_format(out)?;
    }
    let store = Store::open_readonly(&args.db)?;
    let kept = store.run_info()?.top_k;
    if args.k > kept {
        eprintln!("warning: the index keeps the top {kept} per unit; showing {kept} at most");
        args.k = kept;
    }
    let hits = query::top(&store, &args.layer, args.unit, args.k)?;
    if args.json {
        let images: Vec<serde_json::Value> = hits
            .iter()
            .map(|h| {
                serde_json::json!({
                    "path": h.path,
                    "value": h.value,
                    "y": h.y,
                    "x": h.x,
                    "box": h.box_orig,
                    "spill": h.spill,
                })
            })
            .collect();
        let out = serde_json::json!({
            "layer": query::layer(&store, &args.layer)?.name,
            "unit": args.unit,
            "images": images,
        });
        println!("{out}");
    } else {
        println!(
            "{:>4}  {:>9}  {:>9}  {:<22}  path",
            "rank", "value", "(y, x)", "box x0,y0,x1,y1"
        );
        for h in &hits {
            let b = h.box_orig;
            println!(
                "{:>4}  {:>9.4}  {:>9}  {:<22}  {}",
                h.rank,
                h.value,
                format!("({}, {})", h.y, h.x),
                format!("{},{},{},{}", b[0], b[1], b[2], b[3]),
                h.path
            );
        }
    }
    crate::render::top::write_top_grid(&store, &args.layer, args.unit, &hits, &args.grid)
}
