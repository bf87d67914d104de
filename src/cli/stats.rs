//! `neurodex stats --db F`: what an index holds and what failed.

use std::path::PathBuf;
use std::process::ExitCode;

use neurodex::query;
use neurodex::store::Store;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Index database (see `neurodex index`)
    #[arg(long)]
    pub db: PathBuf,
    /// How many failed inputs to list
    #[arg(long, default_value_t = 20)]
    pub failures: usize,
    /// One JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = Store::open_readonly(&args.db)?;
    super::note_progress(&store)?;
    let o = query::overview(&store, args.failures)?;
    if args.json {
        println!("{}", serde_json::to_string(&o)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "database   {} ({:.1} MB, schema {})",
        o.db.display(),
        o.db_bytes as f64 / 1e6,
        o.schema_version
    );
    println!(
        "model      {} (weights {})",
        o.model,
        &o.weights_id[..o.weights_id.len().min(16)]
    );
    println!("directory  {}", o.root.display());
    if let Some(sh) = o.shard {
        println!("shard      {sh}: the files of the folder whose paths hash to it");
    }
    if let Some(cov) = &o.merged_coverage {
        println!(
            "merged     from {} indexes (`neurodex merge`), covering {cov}",
            o.merged_from.len()
        );
    }
    println!(
        "images     {} indexed, {} failed, {} removed",
        o.images_ok, o.images_failed, o.images_removed
    );
    println!(
        "duplicates {} files have the content of an earlier one ({})",
        o.duplicates,
        if o.keep_duplicates {
            "each takes its own place in the top images"
        } else {
            "kept out of the top images"
        }
    );
    println!(
        "top-K      {} per unit; runs: {} ({} unfinished)",
        o.top_k, o.sessions, o.sessions_unfinished
    );
    println!("layers");
    for l in &o.layers {
        let ranked = match (l.ranked, l.activation) {
            ("pre", "none") => "ranked by its output (no activation)".to_string(),
            ("pre", a) => format!("ranked before its {a}"),
            _ => "ranked after its activation (made by an older neurodex)".to_string(),
        };
        println!(
            "  {:<16} {:>5} units  {:>3}x{:<3}  field {}x{}  {ranked}",
            l.name, l.units, l.height, l.width, l.field[0], l.field[1]
        );
    }
    if !o.failures.is_empty() {
        let kinds: Vec<String> = o
            .failed_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!("failed     {}", kinds.join(", "));
        for (path, kind, reason) in &o.failures {
            println!("  {path}: {kind}: {reason}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
