//! `neurodex maps IMAGE --layer L -o maps.png [--unit U]`: every channel of a layer
//! on one image, on one shared scale; optionally one unit enlarged beside the input.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use neurodex::model::{Network, Tap, DEFAULT_MODEL};
use neurodex::preprocess::{self, DEFAULT_MAX_PIXELS};
use neurodex::render::{self, colormap, colormap::Colormap, grid, maps, tile};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image
    pub image: PathBuf,
    /// Layer name (see `neurodex layers`)
    #[arg(long)]
    pub layer: String,
    /// Output picture: .png, .jpg or .jpeg
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Also show this unit enlarged and colour-mapped beside the input
    #[arg(long)]
    pub unit: Option<usize>,
    /// Architecture
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Weights file (default: the embedded weights)
    #[arg(long)]
    pub weights: Option<PathBuf>,
    #[command(flatten)]
    pub recipe: super::RecipeArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    render::output_format(&args.output)?;
    let mut net = Network::open(&args.model, args.weights.as_deref())?;
    net.arch.recipe = args.recipe.recipe(&net.arch.recipe)?;
    let idx = net.arch.resolve(&args.layer)?;
    let img = preprocess::open_image(&args.image, DEFAULT_MAX_PIXELS)?;
    let (mut acts, mut t) = net.run_images(&[&img], &[Tap::post(idx)])?;
    let (act, t) = (acts.remove(0), t.remove(0));
    if let Some(u) = args.unit.filter(|&u| u >= act.c) {
        anyhow::bail!(
            "layer {} has {} units; there is no unit {u}",
            args.layer,
            act.c
        );
    }
    let name = args
        .image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let title = format!("{name} {} {}x{}x{}", args.layer, act.c, act.h, act.w);
    let sheet = maps::channel_grid(act.image(0), act.c, act.h, act.w, &title, args.unit);
    // What a grey level means, in the layer's numbers.
    let range = maps::finite_range(act.image(0));
    let bar = colormap::colorbar(
        Colormap::Gray,
        range,
        sheet.width().clamp(120, 480),
        "grey: every channel on this one scale",
    );
    let sheet = grid::stack(&[sheet, bar], 4);
    let out = match args.unit {
        None => sheet,
        Some(u) => {
            let hw = act.h * act.w;
            let map = tile::UnitMap {
                data: &act.image(0)[u * hw..(u + 1) * hw],
                h: act.h,
                w: act.w,
            };
            // What the network saw: the crop, at its input size.
            let [x0, y0, w, h] = t.crop;
            let view = tile::sample_region(&img, [x0, y0, x0 + w, y0 + h], t.size, t.size);
            let head = maps::unit_beside_input(&view, map, u, Colormap::Viridis);
            grid::stack(&[head, sheet], 4)
        }
    };
    render::save_image(&out, &args.output)
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "wrote {} ({}x{})",
        args.output.display(),
        out.width(),
        out.height()
    );
    Ok(ExitCode::SUCCESS)
}
