//! `neurodex classify IMAGE...`: the model's top classes for each image.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use neurodex::model::{top_classes, Guess, Network, Tap, DEFAULT_MODEL};
use neurodex::preprocess::{self, DEFAULT_MAX_PIXELS};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Image files (JPEG, PNG, GIF, BMP, WebP, ...)
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Architecture (see `neurodex models`)
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Weights file (safetensors or PyTorch .pth) for the architecture
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// How many classes to show per image
    #[arg(long, default_value_t = 5)]
    pub top: usize,
    /// One JSON object per image: {"path", "top": [{"class", "label", "prob"}]}
    #[arg(long)]
    pub json: bool,
    /// Class names, one per line in output order (default: ImageNet-1k's for 1000
    /// outputs, else class numbers)
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    #[command(flatten)]
    pub recipe: super::RecipeArgs,
}

#[derive(Serialize)]
struct Answer<'a> {
    path: &'a Path,
    top: Vec<Guess>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut net = Network::open(&args.model, args.weights.as_deref())?;
    net.arch.recipe = args.recipe.recipe(&net.arch.recipe)?;
    super::set_labels(&mut net, args.labels.as_deref())?;
    let last = Tap::post(net.arch.resolve("logits")?);
    let mut failed = 0;
    for path in &args.images {
        let img = match preprocess::open_image(path, DEFAULT_MAX_PIXELS) {
            Ok(img) => img,
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
                continue;
            }
        };
        let logits = net.run_images(&[&img], &[last])?.0.remove(0);
        let top = top_classes(&logits.data, args.top, &net.labels);
        if args.json {
            println!("{}", serde_json::to_string(&Answer { path, top })?);
        } else {
            println!("{}", path.display());
            for g in &top {
                println!("  {:6.3}  {:4}  {}", g.prob, g.class, g.label);
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(super::EXIT_PARTIAL)
    } else {
        ExitCode::SUCCESS
    })
}
