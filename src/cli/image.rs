//! `neurodex image --db F PATH`: the units an image excites most.

use std::path::PathBuf;
use std::process::ExitCode;

use neurodex::query;
use neurodex::store::Store;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Index database (see `neurodex index`)
    #[arg(long)]
    pub db: PathBuf,
    /// The image: its path relative to the indexed directory, or any path to it
    pub path: PathBuf,
    /// Only this layer (default: every indexed layer)
    #[arg(long)]
    pub layer: Option<String>,
    /// Units per layer
    #[arg(short = 'n', default_value_t = 5)]
    pub n: usize,
    /// One JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open_readonly(&args.db)?;
    let r = query::image(&store, &args.path, args.layer.as_deref(), args.n)?;
    if args.json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{} ({})", r.path, r.status);
    if let Some(e) = &r.error {
        println!("  error: {e}");
    }
    if let (Some(w), Some(h)) = (r.width, r.height) {
        println!("  {w}x{h} pixels");
    }
    println!(
        "{:<14}  {:>5}  {:>9}  {:>9}  {:>8}  {:>9}  {:>8}",
        "layer", "unit", "value", "before", "of max", "(y, x)", "top rank"
    );
    for u in &r.units {
        let before = match u.pre {
            Some(p) if p != u.value => format!("{p:.4}"),
            _ => String::new(),
        };
        println!(
            "{:<14}  {:>5}  {:>9.4}  {:>9}  {:>7.1}%  {:>9}  {:>8}",
            u.layer,
            u.unit,
            u.value,
            before,
            u.relative * 100.0,
            format!("({}, {})", u.y, u.x),
            u.top_rank
                .map(|r| r.to_string())
                .unwrap_or_else(|| "-".into())
        );
    }
    println!("(before: the value before the layer's activation, which ranks; of max: of the unit's highest on any image)");
    Ok(ExitCode::SUCCESS)
}
