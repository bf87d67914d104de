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
    crate::import::run_import_cli(&args.checkpoint, &args.output, args.json)?;
    Ok(ExitCode::SUCCESS)
}
