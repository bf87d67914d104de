//! `neurodex classify IMAGE...`: the model's top classes for each image.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Serialize;

use crate::model::{imagenet_label, Network, DEFAULT_MODEL};
use crate::preprocess::{self, DEFAULT_MAX_PIXELS};

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
}

#[derive(Serialize)]
struct Guess {
    class: usize,
    label: &'static str,
    prob: f32,
}

#[derive(Serialize)]
struct Answer<'a> {
    path: &'a Path,
    top: Vec<Guess>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let net = Network::open(&args.model, args.weights.as_deref())?;
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
        let (x, _) = preprocess::prepare(&img, &net.arch.recipe);
        let probs = net.classify(&x, 1)?.pop().expect("one image");
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
        let top: Vec<Guess> = order
            .iter()
            .take(args.top)
            .map(|&c| Guess {
                class: c,
                label: imagenet_label(c),
                prob: probs[c],
            })
            .collect();
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
