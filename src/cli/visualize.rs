//! `neurodex visualize --layer L --unit U[,U...] -o fv.png [--steps 512] [--size 224]
//! [--seed S]`: for each unit an image optimised to excite it (Lucid's feature
//! visualisation), all units in one batch.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use neurodex::model::{Network, Tap, DEFAULT_MODEL};
use neurodex::render::{self, grid};
use neurodex::visualize::{self, Settings};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Layer name (see `neurodex layers`); the classifier's output (`logits`) gives
    /// class visualisations
    #[arg(long)]
    pub layer: String,
    /// Units (channels, or classes), comma-separated: optimised together, 16 at a time
    /// at 224 px (fewer for larger images)
    #[arg(long, value_delimiter = ',', required = true)]
    pub unit: Vec<usize>,
    /// Output picture: .png, .jpg or .jpeg (one tile per unit)
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Optimisation steps
    #[arg(long, default_value_t = 512)]
    pub steps: usize,
    /// Image side in pixels (the network runs at this size)
    #[arg(long, default_value_t = 224)]
    pub size: usize,
    /// Seed of every random draw: the same seed gives the same picture (on the same
    /// machine and thread count)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Maximise the mean after the layer's activation (default: before it, which a
    /// saturated ReLU6 does not flatten)
    #[arg(long)]
    pub post: bool,
    /// Also save each unit's image on its own, as DIR/<layer>_u<unit>.png
    #[arg(long, value_name = "DIR")]
    pub each: Option<PathBuf>,
    /// One JSON object on stdout: each unit's final mean activation
    #[arg(long)]
    pub json: bool,
    /// Use the network this index was built with, and keep the visualisations in it
    /// (its gallery pages then show them)
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Architecture or ONNX file
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Weights file (default: the embedded weights)
    #[arg(long)]
    pub weights: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    render::output_format(&args.output)?;
    let store = match &args.db {
        Some(db) => Some(neurodex::store::Store::open(db)?),
        None => None,
    };
    let mut net = match &store {
        Some(st) => neurodex::shots::index_network(st, args.weights.as_deref())?.0,
        None => Network::open(&args.model, args.weights.as_deref())?,
    };
    let node = net.arch.resolve(&args.layer)?;
    let pre = !args.post && net.arch.nodes[node].op.act() != neurodex::arch::Act::None;
    if pre {
        net.split_activations(&[node]);
    }
    let units = net.arch.shapes_for(args.size, args.size)[node][0];
    if let Some(&u) = args.unit.iter().find(|&&u| u >= units) {
        anyhow::bail!(
            "layer {} has {units} units; there is no unit {u}",
            args.layer
        );
    }
    let settings = Settings {
        steps: args.steps,
        size: args.size,
        seed: args.seed,
        ..Settings::default()
    };
    let bar = ProgressBar::new(args.steps as u64).with_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let t = Instant::now();
    // Batches of a few units: the memory of a pass grows with the batch.
    let batch = visualize::batch_for(args.size);
    let batches = args.unit.len().div_ceil(batch);
    bar.set_length((args.steps * batches) as u64);
    let mut out = Vec::with_capacity(args.unit.len());
    for (b, units) in args.unit.chunks(batch).enumerate() {
        out.extend(visualize::visualize(
            &net,
            Tap::new(node, pre),
            units,
            &settings,
            |i, v| {
                let mean = v.iter().sum::<f32>() / v.len().max(1) as f32;
                bar.set_position((b * args.steps + i) as u64 + 1);
                bar.set_message(format!("objective {mean:.3}"));
            },
        )?);
    }
    bar.finish_and_clear();
    let secs = t.elapsed().as_secs_f64();
    let stage = if pre { " before the activation" } else { "" };
    let tiles: Vec<grid::Tile> = out
        .iter()
        .map(|v| {
            grid::Tile::new(
                Some(v.image.clone()),
                format!("unit {} mean {:.2}", v.unit, v.value),
            )
        })
        .collect();
    let title = format!(
        "{} {}: each unit's mean{stage} maximised, {} steps, seed {}",
        net.arch.name, args.layer, args.steps, args.seed
    );
    let side = args.size as u32;
    let sheet = grid::compose(Some(&title), &tiles, side, side);
    render::save_image(&sheet, &args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    if let Some(dir) = &args.each {
        for v in &out {
            let path = dir.join(format!("{}_u{}.png", args.layer, v.unit));
            render::save_png(&v.image, &path)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some(st) = &store {
        let name = &net.arch.nodes[node].name;
        for v in &out {
            neurodex::gallery::keep_visual(st, &net, name, pre, &settings, v)?;
        }
    }
    if args.json {
        let units: Vec<serde_json::Value> = out
            .iter()
            .map(|v| serde_json::json!({"unit": v.unit, "mean": v.value}))
            .collect();
        let j = serde_json::json!({
            "layer": args.layer, "stage": if pre { "pre" } else { "post" },
            "steps": args.steps, "size": args.size, "seed": args.seed,
            "seconds": secs, "units": units,
        });
        println!("{j}");
    }
    eprintln!(
        "wrote {} ({} units, {} steps in {secs:.1} s)",
        args.output.display(),
        out.len(),
        args.steps
    );
    Ok(ExitCode::SUCCESS)
}
