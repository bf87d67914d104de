//! `neurodex saliency IMAGE|X.npy --layer L --unit U [--mode M] -o out.png [--raw out.npy]`:
//! the gradient of a unit's spatial maximum (or its value at one cell) with respect to
//! the input, plain, by guided backprop or by the deconvnet: beside the input as the
//! network saw it, as colours centred on grey and as a magnitude heat map.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use neurodex::model::{Network, Objective, Pick, Rule, Tap, DEFAULT_MODEL};
use neurodex::render::{self, colormap::Colormap, gradient, grid};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image, or a .npy input tensor [N, 3, H, W] or [3, H, W] used exactly as it is
    pub input: PathBuf,
    /// Layer name (see `neurodex layers`)
    #[arg(long)]
    pub layer: String,
    /// Unit (channel) number
    #[arg(long)]
    pub unit: usize,
    /// How the signal passes rectifiers on the way back: backprop (the gradient),
    /// guided (guided backprop: where the gradient passes and is positive) or deconv
    /// (the deconvnet: where the signal coming back is positive)
    #[arg(long, default_value = "backprop", value_parser = ["backprop", "guided", "deconv"])]
    pub mode: String,
    /// Differentiate the unit's value at this cell of its map (ROW,COL) instead of its
    /// maximum
    #[arg(long, value_name = "ROW,COL", value_parser = parse_cell)]
    pub at: Option<(usize, usize)>,
    /// Differentiate the value after the layer's activation (default: before, the
    /// value the index ranks by, whose gradient a saturated ReLU6 does not cut)
    #[arg(long)]
    pub post: bool,
    /// Output picture: .png, .jpg or .jpeg
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write the raw input gradient as a .npy array [N, 3, H, W] (f32)
    #[arg(long, value_name = "FILE")]
    pub raw: Option<PathBuf>,
    /// One JSON object on stdout: the value differentiated and where, per image
    #[arg(long)]
    pub json: bool,
    /// Architecture or ONNX file
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Weights file (default: the embedded weights)
    #[arg(long)]
    pub weights: Option<PathBuf>,
    #[command(flatten)]
    pub recipe: super::RecipeArgs,
}

fn parse_cell(s: &str) -> Result<(usize, usize), String> {
    let (r, c) = s.split_once(',').ok_or("expected ROW,COL")?;
    let num = |v: &str| v.trim().parse::<usize>().map_err(|e| format!("{v:?}: {e}"));
    Ok((num(r)?, num(c)?))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(out) = &args.output {
        render::output_format(out)?;
    }
    if args.output.is_none() && args.raw.is_none() && !args.json {
        anyhow::bail!("nothing to write: give -o PICTURE, --raw FILE.npy or --json");
    }
    let mut net = Network::open(&args.model, args.weights.as_deref())?;
    net.arch.recipe = args.recipe.recipe(&net.arch.recipe)?;
    let node = net.arch.resolve(&args.layer)?;
    let pre = !args.post;
    if pre {
        net.split_activations(&[node]);
    }
    let input = super::read_input(&args.input, &net)?;
    let (n, h, w) = (input.n, input.h, input.w);
    if n * h * w == 0 {
        anyhow::bail!(
            "{}: an empty input ({n} x 3 x {h} x {w})",
            args.input.display()
        );
    }
    let rule = Rule::from_name(&args.mode).expect("clap checked the mode");
    let pick = match args.at {
        Some((y, x)) => Pick::At { y, x },
        None => Pick::Max,
    };
    let objs = vec![
        Objective {
            unit: args.unit,
            pick
        };
        n
    ];
    // A few images at a time: a pass keeps the outputs the way back reads.
    let per = 3 * h * w;
    let mut g = neurodex::model::InputGradient {
        data: Vec::with_capacity(input.x.len()),
        n,
        h,
        w,
        values: Vec::with_capacity(n),
        at: Vec::with_capacity(n),
    };
    for (x, objs) in input.x.chunks(8 * per).zip(objs.chunks(8)) {
        let part = net.input_gradient(x, (objs.len(), h, w), Tap::new(node, pre), objs, rule)?;
        g.data.extend(part.data);
        g.values.extend(part.values);
        g.at.extend(part.at);
    }
    let stage = match net.arch.nodes[node].op.act() {
        neurodex::arch::Act::None => String::new(),
        a if pre => format!(" before {}", a.name()),
        a => format!(" after {}", a.name()),
    };
    let what = match args.at {
        Some(_) => "value",
        None => "max",
    };
    if args.json {
        let images: Vec<serde_json::Value> = (0..n)
            .map(|i| {
                let m = gradient::magnitude(g.image(i), h, w);
                serde_json::json!({
                    "value": g.values[i],
                    "y": g.at[i].0,
                    "x": g.at[i].1,
                    "gradient_max_abs": m.iter().fold(0f32, |a, &v| a.max(v)),
                })
            })
            .collect();
        let out = serde_json::json!({
            "layer": args.layer, "unit": args.unit, "mode": rule.name(),
            "stage": if pre { "pre" } else { "post" }, "images": images,
        });
        println!("{out}");
    }
    if let Some(raw) = &args.raw {
        neurodex::import::npy::write(raw, &[n, 3, h, w], &g.data)
            .with_context(|| format!("writing {}", raw.display()))?;
        eprintln!("wrote {} [{n}, 3, {h}, {w}]", raw.display());
    }
    if let Some(out) = &args.output {
        let name = args
            .input
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut tiles = Vec::with_capacity(3 * n);
        for i in 0..n {
            let per = 3 * h * w;
            let seen =
                gradient::input_picture(&input.x[i * per..(i + 1) * per], h, w, &net.arch.recipe);
            let gi = g.image(i);
            let (y, x) = g.at[i];
            tiles.push(grid::Tile::new(
                Some(seen.clone()),
                format!("input; {what} {:.3} at ({y}, {x})", g.values[i]),
            ));
            tiles.push(grid::Tile::new(
                Some(gradient::projection(gi, h, w, net.arch.recipe.bgr)),
                format!("{} (grey = 0)", rule.name()),
            ));
            tiles.push(grid::Tile::new(
                Some(gradient::magnitude_over(&seen, gi, Colormap::Inferno)),
                "magnitude",
            ));
        }
        let title = format!(
            "{name} {} unit {}{stage}: {} of its {what}",
            args.layer,
            args.unit,
            rule.name()
        );
        let side = (h.max(w) as u32).clamp(160, 448);
        let sheet = grid::compose_cols(Some(&title), &tiles, side, side, 3);
        render::save_image(&sheet, out).with_context(|| format!("writing {}", out.display()))?;
        eprintln!(
            "wrote {} ({}x{})",
            out.display(),
            sheet.width(),
            sheet.height()
        );
    }
    Ok(ExitCode::SUCCESS)
}
