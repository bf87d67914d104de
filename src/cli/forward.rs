//! `neurodex forward --model M --input X.npy|IMAGE --taps L1,L2 -o OUT.safetensors`: the
//! named layers' outputs and the network's final output for one exact input, to set
//! against another framework's.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use candle_core::{Device, Tensor};

use neurodex::model::{Network, Tap, DEFAULT_MODEL};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Architecture or ONNX file (see `neurodex models`)
    #[arg(long, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Weights file for a built-in architecture
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// The input: a .npy array [N, 3, H, W] or [3, H, W] (f32 or f64, used as it is),
    /// or an image (prepared as the model's recipe says)
    #[arg(long)]
    pub input: PathBuf,
    /// Layers whose outputs to write, comma-separated (see `neurodex layers`)
    #[arg(long, value_delimiter = ',')]
    pub taps: Vec<String>,
    /// Also write each tap's value before its activation, as `<layer>:pre`
    #[arg(long)]
    pub pre: bool,
    /// Output file: safetensors, one [N, C, H, W] tensor per tap and `output`
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
    /// Also write "input": the tensor the network was given (an image's, prepared)
    #[arg(long)]
    pub save_input: bool,
    #[command(flatten)]
    pub recipe: super::RecipeArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut net = Network::open(&args.model, args.weights.as_deref())?;
    net.arch.recipe = args.recipe.recipe(&net.arch.recipe)?;
    let nodes = args
        .taps
        .iter()
        .map(|t| net.arch.resolve(t.trim()))
        .collect::<neurodex::Result<Vec<_>>>()?;
    let super::Input { x, n, h, w, .. } = super::read_input(&args.input, &net)?;
    if args.pre {
        net.split_activations(&nodes);
    }
    let mut taps: Vec<(String, Tap)> = Vec::new();
    for (name, &node) in args.taps.iter().zip(&nodes) {
        taps.push((name.trim().to_string(), Tap::post(node)));
        if args.pre && net.has_pre(node) {
            taps.push((format!("{}:pre", name.trim()), Tap::pre(node)));
        }
    }
    match &net.arch.unsupported {
        None => taps.push(("output".into(), Tap::post(net.arch.nodes.len() - 1))),
        Some(why) => eprintln!("note: no \"output\": the graph's {why}"),
    }
    let acts = net.forward_taps_hw(&x, n, h, w, &taps.iter().map(|t| t.1).collect::<Vec<_>>())?;
    let mut tensors = HashMap::new();
    if args.save_input {
        tensors.insert(
            "input".to_string(),
            Tensor::from_vec(x.clone(), (n, 3, h, w), &Device::Cpu)?,
        );
    }
    for ((name, _), a) in taps.iter().zip(acts) {
        let shape = (a.n, a.c, a.h, a.w);
        eprintln!("{name}: {:?}", [a.n, a.c, a.h, a.w]);
        tensors.insert(name.clone(), Tensor::from_vec(a.data, shape, &Device::Cpu)?);
    }
    let tmp = args.output.with_extension("safetensors.part");
    candle_core::safetensors::save(&tensors, &tmp)
        .with_context(|| format!("{}: cannot write", tmp.display()))?;
    std::fs::rename(&tmp, &args.output)
        .with_context(|| format!("{}: cannot write", args.output.display()))?;
    eprintln!(
        "wrote {} ({} tensors)",
        args.output.display(),
        tensors.len()
    );
    Ok(ExitCode::SUCCESS)
}
