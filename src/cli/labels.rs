//! `neurodex labels --db F ...`: put concept labels into an index, replace or remove
//! them, or list what it holds. Labels never need a re-index: they name images
//! already indexed (`--concept` indexes its folder first when it must).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use neurodex::concepts::{self, LabelReport};
use neurodex::store::Store;

#[derive(clap::Args, Debug)]
#[command(
    group(clap::ArgGroup::new("source").args(["csv", "from_dirs", "concept", "remove"])),
    after_help = "Examples:\n  \
        neurodex labels --db demo.db --csv datasets/demo/labels/face.csv\n  \
        neurodex labels --db demo.db --from-dirs --set category\n  \
        neurodex labels --db demo.db --concept striped=photos/stripes\n  \
        neurodex labels --db demo.db --remove face\n  \
        neurodex labels --db demo.db            (lists the label sets)\n\n\
        Images in ImageNet-style folders (n01440764/...) are labelled by `neurodex index` \
        itself, in the set `imagenet`."
)]
pub struct Args {
    /// Index database (see `neurodex index`)
    #[arg(long)]
    pub db: PathBuf,
    /// A label file: `path,label[,label...]` per line (TSV when it ends in .tsv),
    /// paths relative to the indexed directory; a header line `path,...` is skipped
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Label every indexed image by its folder's name (ImageNet's WordNet ids are
    /// named through the ImageNet-1k synset table)
    #[arg(long)]
    pub from_dirs: bool,
    /// An ad hoc concept: the images under DIR (inside the indexed directory; those
    /// not yet indexed are indexed first). Repeatable
    #[arg(long, value_name = "NAME=DIR", value_parser = neurodex::labels::parse_concept_arg)]
    pub concept: Vec<(String, PathBuf)>,
    /// The label set's name (default: the file's stem for --csv; `imagenet` or
    /// `folders` for --from-dirs)
    #[arg(long, value_name = "NAME", value_parser = set_name)]
    pub set: Option<String>,
    /// Replace the set's (or the concept's) earlier labels instead of adding to them
    #[arg(long)]
    pub replace: bool,
    /// Remove a label set, or one concept of it as SET/CONCEPT
    #[arg(long, value_name = "SET[/CONCEPT]")]
    pub remove: Option<String>,
    /// Weights the index was built with, for --concept folders that need indexing
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// One JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

fn set_name(s: &str) -> Result<String, String> {
    let s = neurodex::labels::check_label(s)?;
    if s.contains('/') {
        return Err("a set's name cannot contain `/` (SET/CONCEPT names a concept)".into());
    }
    Ok(s)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(what) = &args.remove {
        return remove(&args, what);
    }
    if args.csv.is_none() && !args.from_dirs && args.concept.is_empty() {
        return list(&args);
    }
    let mut store = Store::open(&args.db)?;
    let mut reports = Vec::new();
    if let Some(file) = &args.csv {
        let table = neurodex::labels::read_table(file)?;
        let set = match &args.set {
            Some(s) => s.clone(),
            None => set_name(&file.file_stem().unwrap_or_default().to_string_lossy())
                .map_err(|e| anyhow::anyhow!("{}: {e}; name the set with --set", file.display()))?,
        };
        let origin = format!("label file {}", file.display());
        reports.push(concepts::add_table(
            &mut store,
            &table,
            &set,
            &origin,
            args.replace,
        )?);
    }
    if args.from_dirs {
        reports.push(concepts::add_from_dirs(
            &mut store,
            args.set.as_deref(),
            args.replace,
        )?);
    }
    let mut indexed = None;
    for (name, dir) in &args.concept {
        let todo = concepts::unindexed_under(&store, dir)?;
        if !todo.is_empty() && indexed.is_none() {
            eprintln!(
                "{} files under {} are not indexed yet: indexing them first",
                todo.len(),
                dir.display()
            );
            drop(store);
            indexed = Some(index_root(&args.db, args.weights.as_deref())?);
            store = Store::open(&args.db)?;
        }
        reports.push(concepts::add_concept_dir(
            &mut store,
            name,
            dir,
            args.replace,
        )?);
    }
    if args.json {
        let out = serde_json::json!({ "added": reports, "indexed": indexed });
        println!("{out}");
    } else {
        for r in &reports {
            print_report(r);
        }
    }
    let partial =
        reports.iter().any(|r| r.missing > 0 || r.images == 0) || indexed.is_some_and(|f| f > 0);
    Ok(if partial {
        ExitCode::from(super::EXIT_PARTIAL)
    } else {
        ExitCode::SUCCESS
    })
}

/// Indexes the index's own directory again with its own settings (only new and
/// changed files are read): returns how many files failed.
fn index_root(db: &Path, weights: Option<&Path>) -> anyhow::Result<u64> {
    let run = Store::open_readonly(db)?.run_info()?;
    let mut net = neurodex::model::Network::open(&run.model, weights)
        .with_context(|| format!("loading {} to index the concept's images", run.model))?;
    // index::run refuses weights other than the index's, naming both.
    if let Some(r) = run.parsed_recipe() {
        net.arch.recipe = r;
    }
    let mut store = Store::open(db)?;
    let opts = neurodex::index::Options {
        root: run.root.clone(),
        layers: None,
        batch: neurodex::index::DEFAULT_BATCH,
        top_k: None,
        max_pixels: run.max_pixels,
        progress: std::io::stderr().is_terminal(),
        keep_duplicates: None,
        // A shard's database takes its own shard's files of the concept's folder.
        shard: run.shard,
    };
    let s = neurodex::index::run(&mut net, &mut store, &opts)?;
    eprintln!("indexed {} images ({} failed)", s.indexed, s.failed);
    for (path, kind, reason) in &s.failures {
        eprintln!("  {path}: {kind}: {reason}");
    }
    Ok(s.failed)
}

fn print_report(r: &LabelReport) {
    let kind = r.kind.map_or("", |k| k.name());
    println!(
        "{}: {} labels added to {} images{}; the set now has {} concept{} ({kind})",
        r.set,
        r.added,
        r.images,
        if r.removed > 0 {
            format!(", {} earlier ones replaced", r.removed)
        } else {
            String::new()
        },
        r.concepts,
        if r.concepts == 1 { "" } else { "s" }
    );
    if r.images == 0 {
        eprintln!("warning: no indexed image got a label in {}", r.set);
    }
    if !r.unlabelled_lines.is_empty() {
        let lines: Vec<String> = r.unlabelled_lines.iter().map(|l| l.to_string()).collect();
        eprintln!(
            "warning: lines with a path but no label: {}",
            lines.join(", ")
        );
    }
    if r.missing > 0 {
        eprintln!(
            "warning: {} paths are not in the index (not under its directory, not \
             indexed, or failed); they were left out:",
            r.missing
        );
        for p in &r.missing_some {
            eprintln!("  {p}");
        }
        if r.missing as usize > r.missing_some.len() {
            eprintln!(
                "  ... and {} more",
                r.missing as usize - r.missing_some.len()
            );
        }
    }
}

fn remove(args: &Args, what: &str) -> anyhow::Result<ExitCode> {
    let mut store = Store::open(&args.db)?;
    let (set, concept) = match what.split_once('/') {
        Some((s, c)) => (s, Some(c)),
        None => (what, None),
    };
    match store.remove_labels(set, concept)? {
        Some(n) => {
            if args.json {
                println!("{}", serde_json::json!({ "removed": what, "labels": n }));
            } else {
                println!("removed {what} ({n} labels)");
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let sets: Vec<String> = store.label_sets()?.into_iter().map(|s| s.name).collect();
            anyhow::bail!(
                "{} has no label {} {what:?} (sets: {})",
                args.db.display(),
                if concept.is_some() { "concept" } else { "set" },
                if sets.is_empty() {
                    "none".into()
                } else {
                    sets.join(", ")
                }
            )
        }
    }
}

fn list(args: &Args) -> anyhow::Result<ExitCode> {
    let store = Store::open_readonly(&args.db)?;
    let sets = store.label_sets()?;
    let concepts = store.concepts()?;
    if args.json {
        let out = serde_json::json!({ "sets": sets, "concepts": concepts });
        println!("{out}");
        return Ok(ExitCode::SUCCESS);
    }
    if sets.is_empty() {
        println!(
            "{} has no labels yet: add some with --csv FILE, --from-dirs or --concept NAME=DIR",
            args.db.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    for s in &sets {
        println!(
            "{}  ({}, {} concepts over {} images; from {})",
            s.name,
            s.kind.name(),
            s.concepts,
            s.images,
            s.origin
        );
        let mut mine: Vec<_> = concepts.iter().filter(|c| c.set == s.name).collect();
        mine.sort_by(|a, b| b.images.cmp(&a.images).then(a.name.cmp(&b.name)));
        const SHOWN: usize = 30;
        for c in mine.iter().take(SHOWN) {
            println!("  {:>6}  {}", c.images, c.name);
        }
        if mine.len() > SHOWN {
            println!("  ... and {} more", mine.len() - SHOWN);
        }
    }
    Ok(ExitCode::SUCCESS)
}
