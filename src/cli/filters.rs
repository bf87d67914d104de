//! `neurodex filters --layer L -o filters.png`: a convolution layer's weights as
//! pictures (BatchNorm folded in: the filter the unit effectively applies).

use std::path::PathBuf;
use std::process::ExitCode;

use neurodex::arch::Op;
use neurodex::model::{Network, DEFAULT_MODEL};
use neurodex::render::{self, filters};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Layer name (a convolution; see `neurodex layers`)
    #[arg(long)]
    pub layer: String,
    /// Output picture: .png, .jpg or .jpeg
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Architecture
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Weights file (default: the embedded weights)
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// For layers drawn as filter x input matrices: at most this many filters (rows)
    #[arg(long, default_value_t = 64)]
    pub max_filters: usize,
    /// ... and this many input channels (columns)
    #[arg(long, default_value_t = 64)]
    pub max_inputs: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    render::output_format(&args.output)?;
    let net = Network::open(&args.model, args.weights.as_deref())?;
    let idx = net.arch.resolve(&args.layer)?;
    let Some((geom, w)) = net.conv_weights(idx) else {
        let node = &net.arch.nodes[idx];
        // A residual sum has no weights of its own; point at the conv feeding it.
        let convs: Vec<&str> = node
            .inputs
            .iter()
            .map(|&i| &net.arch.nodes[i])
            .filter(|n| matches!(n.op, Op::Conv { .. }))
            .map(|n| n.name.as_str())
            .collect();
        let hint = if convs.is_empty() {
            String::new()
        } else {
            format!("; try {}", convs.join(" or "))
        };
        anyhow::bail!(
            "layer {} ({}) is not a convolution: it has no filters to draw{hint}",
            args.layer,
            node.op.describe()
        );
    };
    let shape = filters::FilterShape {
        out: geom.out_ch,
        inputs: geom.in_ch / geom.groups.max(1),
        kh: geom.kernel.0,
        kw: geom.kernel.1,
    };
    let title = format!("{} {}", net.arch.name, args.layer);
    let img = filters::filter_grid(
        w,
        shape,
        &title,
        args.max_filters.max(1),
        args.max_inputs.max(1),
    );
    render::save_image(&img, &args.output)?;
    eprintln!(
        "wrote {} ({}x{})",
        args.output.display(),
        img.width(),
        img.height()
    );
    Ok(ExitCode::SUCCESS)
}
