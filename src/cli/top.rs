//! `neurodex top --db F --layer L --unit U`: the images that excite a unit most.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use neurodex::query::{self, TopHit};
use neurodex::render::top::{self, Mode};
use neurodex::shots;
use neurodex::store::Store;

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
    pub grid: GridArgs,
}

/// The `-o/--mode/--weights` options `neurodex top` takes to draw its grid.
#[derive(clap::Args, Debug, Default)]
pub struct GridArgs {
    /// Also draw the top images as a grid, to this picture (.png, .jpg or .jpeg)
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// How each image is drawn in the grid (default: crop where the layer's
    /// receptive field fits in the network input, region beyond)
    #[arg(long, value_parser = mode_parser())]
    pub mode: Option<Mode>,
    /// Weights for the modes that run the network again (heat, region, backprop,
    /// guided, deconv), when the index was built with a weights file
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Tile side in pixels
    #[arg(long, default_value_t = 160)]
    pub tile: u32,
}

/// `--mode` takes the library's mode names, each listed with what it draws.
fn mode_parser() -> impl clap::builder::TypedValueParser<Value = Mode> {
    let values = Mode::ALL.map(|m| PossibleValue::new(m.name()).help(m.help()));
    PossibleValuesParser::new(values).map(|s| s.parse::<Mode>().expect("a listed name"))
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
        neurodex::render::output_format(out)?;
    }
    let store = Store::open_readonly(&args.db)?;
    let kept = store.run_info()?.top_k;
    if args.k > kept {
        eprintln!("warning: the index keeps the top {kept} per unit; showing {kept} at most");
        args.k = kept;
    }
    let l = query::layer(&store, &args.layer)?;
    let progress = super::note_progress(&store)?;
    let stats = query::unit_stats(&store, &l, args.unit)?;
    if query::never_fires(&l, &stats) {
        let why = if l.pre && l.act.zeroes_negatives() {
            format!(
                "its peak before the {} is at most {} on every one",
                l.act.name(),
                fmt_value(stats.max as f32)
            )
        } else {
            format!("its peak is {} on every one", fmt_value(stats.max as f32))
        };
        let msg = format!(
            "unit {} of {} never fires on the {} indexed images: {why}",
            args.unit, l.name, stats.count
        );
        if args.json {
            let out = serde_json::json!({
                "layer": l.name, "unit": args.unit, "dead": true,
                "reason": msg, "images": [], "index": progress,
            });
            println!("{out}");
        } else {
            println!("{msg}");
        }
        if let Some(o) = &args.grid.output {
            eprintln!(
                "no grid written to {}: the unit has no top images",
                o.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let hits = query::top(&store, &args.layer, args.unit, args.k)?;
    let ids: Vec<i64> = hits.iter().map(|h| h.image_id).collect();
    let labels = neurodex::concepts::label_counts(&store, &ids)?;
    if args.json {
        let images: Vec<serde_json::Value> = hits
            .iter()
            .map(|h| {
                serde_json::json!({
                    "path": h.path,
                    "value": h.value,
                    "pre": h.pre,
                    "tie": h.tie,
                    "y": h.y,
                    "x": h.x,
                    "box": h.box_orig,
                    "spill": h.spill,
                })
            })
            .collect();
        let out = serde_json::json!({
            "layer": l.name,
            "unit": args.unit,
            "ranked": if l.pre { "pre" } else { "post" },
            "activation": l.act.name(),
            "dead": false,
            "images": images,
            "labels": labels,
            "index": progress,
        });
        println!("{out}");
    } else {
        if !l.pre {
            eprintln!(
                "note: this index was ranked after the activation (made by an older neurodex); \
                 saturated values tie. Index into a new --db to rank before it."
            );
        }
        let pre_col = if l.pre && l.act != neurodex::arch::Act::None {
            format!("before {}", l.act.name())
        } else {
            String::new()
        };
        println!(
            "{:>4}  {:>9}  {:>12}  {:>9}  {:<22}  path",
            "rank", "value", pre_col, "(y, x)", "box x0,y0,x1,y1"
        );
        for h in &hits {
            let b = h.box_orig;
            let pre = match h.pre {
                Some(p) if !pre_col.is_empty() => fmt_value(p),
                _ => String::new(),
            };
            println!(
                "{:>4}{} {:>9}  {:>12}  {:>9}  {:<22}  {}",
                h.rank,
                if h.tie { "=" } else { " " },
                fmt_value(h.value),
                pre,
                format!("({}, {})", h.y, h.x),
                format!("{},{},{},{}", b[0], b[1], b[2], b[3]),
                h.path
            );
        }
        if hits.iter().any(|h| h.tie) {
            println!("(= tied: same value exactly; the earlier-indexed image ranks first)");
        }
        if !labels.is_empty() {
            let counts: Vec<String> = labels
                .iter()
                .map(|l| format!("{} {}/{} ({})", l.concept, l.count, hits.len(), l.set))
                .collect();
            println!("labels of these {}: {}", hits.len(), counts.join(", "));
        }
    }
    write_grid(&store, &args.layer, args.unit, &hits, &args.grid)
}

/// Draws the grid when `-o` was given (in the layer's default mode unless `--mode`);
/// warnings go to stderr. Exit status 1 when some images could not be drawn or
/// disagree with the index.
fn write_grid(
    store: &Store,
    layer: &str,
    unit: usize,
    hits: &[TopHit],
    args: &GridArgs,
) -> anyhow::Result<ExitCode> {
    let Some(out) = &args.output else {
        return Ok(ExitCode::SUCCESS);
    };
    let l = query::layer(store, layer)?;
    let input = store.run_info()?.input_size();
    let mode = args
        .mode
        .unwrap_or_else(|| top::default_mode(&l.field, input));
    let maps = top::needs_maps(mode, &l.field, input);
    let mut u = shots::for_unit(store, layer, unit, hits, maps, args.weights.as_deref())?;
    if let Some(rule) = mode.rule() {
        let (net, warn) = shots::index_network(store, args.weights.as_deref())?;
        if !maps {
            u.warnings.extend(warn);
        }
        let tap = neurodex::model::Tap::new(l.node, l.pre);
        shots::recompute_projections(&net, tap, unit, rule, &mut u.shots)?;
    }
    let img = top::unit_sheet(&u, mode, args.tile.clamp(16, 1024));
    neurodex::render::save_image(&img, out)?;
    for w in &u.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!("wrote {} ({}x{})", out.display(), img.width(), img.height());
    Ok(if u.warnings.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(super::EXIT_PARTIAL)
    })
}

/// Four decimals, as the index stores f32 peaks.
fn fmt_value(v: f32) -> String {
    format!("{v:.4}")
}
