//! `neurodex models`: the built-in architectures and whether weights ship with them.

use std::process::ExitCode;

use serde::Serialize;

use neurodex::arch;
use neurodex::model::DEFAULT_MODEL;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON object per model
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Row {
    name: String,
    default: bool,
    embedded_weights: bool,
    input: u32,
    taps: usize,
    default_layers: Vec<String>,
    description: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    for name in arch::names() {
        let a = arch::by_name(name)?;
        let row = Row {
            name: a.name.clone(),
            default: name == DEFAULT_MODEL,
            embedded_weights: name == DEFAULT_MODEL,
            input: a.recipe.size,
            taps: a.taps().len(),
            default_layers: a.default_layers.clone(),
            description: a.description.clone(),
        };
        if args.json {
            println!("{}", serde_json::to_string(&row)?);
        } else {
            let weights = if row.embedded_weights {
                "embedded weights"
            } else {
                "bring --weights"
            };
            println!(
                "{:<20} {:>3} taps  {:<17} {}",
                row.name, row.taps, weights, row.description
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
