//! `neurodex import`: convert a PyTorch checkpoint (legacy or zip) or safetensors file to f32 safetensors.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint to read (.pth/.pt in either torch format, or .safetensors)
    pub checkpoint: PathBuf,
    /// Where to write the f32 safetensors file
    #[arg(short, long)]
    pub output: PathBuf,
    /// Print the summary as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let summary = neurodex::import::import(&args.checkpoint, &args.output)?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        println!(
            "{}: {} checkpoint, {} tensors, {} numbers -> {}",
            args.checkpoint.display(),
            summary.format,
            summary.tensors,
            summary.numbers,
            args.output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
