//! `neurodex layers`: every tap of a model with its output shape and receptive field.

use std::process::ExitCode;

use serde::Serialize;

use neurodex::model::DEFAULT_MODEL;
use neurodex::receptive::{self, Field};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Architecture (see `neurodex models`)
    #[arg(long, short, default_value = DEFAULT_MODEL)]
    pub model: String,
    /// Print one JSON object per layer
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Row<'a> {
    name: &'a str,
    aliases: &'a [String],
    op: String,
    shape: [usize; 3],
    receptive_field: Field,
    default: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let a = neurodex::model::describe(&args.model)?;
    let shapes = a.output_shapes();
    let fields = receptive::fields(&a);
    if let Some(why) = &a.unsupported {
        eprintln!(
            "note: {}: the graph's {why}; the layers listed are those before them",
            a.name
        );
    }
    if !args.json {
        println!(
            "{:<22} {:<34} {:>16} {:>9} {:>5} {:>7}",
            "layer", "op", "C x H x W", "rf size", "jump", "offset"
        );
    }
    for i in a.taps() {
        let node = &a.nodes[i];
        let row = Row {
            name: &node.name,
            aliases: &node.aliases,
            op: node.op.describe(),
            shape: shapes[i],
            receptive_field: fields[i],
            default: a.default_layers.contains(&node.name),
        };
        if args.json {
            println!("{}", serde_json::to_string(&row)?);
        } else {
            let [c, h, w] = row.shape;
            let f = row.receptive_field;
            let mut name = node.name.clone();
            if !node.aliases.is_empty() {
                name = format!("{name} ({})", node.aliases.join(","));
            }
            println!(
                "{:<22} {:<34} {:>16} {:>9} {:>5} {:>7}{}",
                name,
                row.op,
                format!("{c} x {h} x {w}"),
                f.size[0],
                f.jump[0],
                f.offset[0],
                if row.default { "  *" } else { "" }
            );
        }
    }
    if !args.json {
        println!("(* = indexed by default)");
    }
    Ok(ExitCode::SUCCESS)
}
