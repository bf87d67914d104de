//! `neurodex index DIR --db FILE`: crawl a directory into an index database.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use neurodex::index::{self, Options, Summary};
use neurodex::model::{Network, DEFAULT_MODEL};
use neurodex::store::Store;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Directory of images (walked recursively; symbolic links followed)
    pub dir: PathBuf,
    /// Index database (created if missing; a rerun indexes only new or changed files)
    #[arg(long)]
    pub db: PathBuf,
    /// Architecture (default: the database's, else efficientnet-lite0)
    #[arg(long)]
    pub model: Option<String>,
    /// Weights file (safetensors or torch .pth); default: the embedded weights
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Layers to index, comma-separated, or `all` (default: the model's spread of layers)
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<String>>,
    /// Images per forward pass (for networks whose values depend on it, such as ResNet's,
    /// fixed when the database is created: short batches are padded to it)
    #[arg(long, default_value_t = index::DEFAULT_BATCH)]
    pub batch: usize,
    /// Worker threads (default: one per core)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Images kept per unit in the exact top-K table (fixed when the database is created)
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Refuse images above this many megapixels (checked before decoding)
    #[arg(long, default_value_t = (neurodex::preprocess::DEFAULT_MAX_PIXELS / 1_000_000) as f64)]
    pub max_megapixels: f64,
    /// Memory the image decoders may hold at once, in MB, whatever the thread count
    /// (default: what one image at the pixel limit needs as 16-bit RGBA plus RGB)
    #[arg(long, value_name = "MB")]
    pub decode_memory_mb: Option<u64>,
    /// Let identical files each take a place in a unit's top images (default: one
    /// place per distinct content; fixed when the database is created)
    #[arg(long)]
    pub keep_duplicates: bool,
    /// Index one shard of the folder: `I/N` (0-based: 0/8 to 7/8); `auto` in a Slurm
    /// array task submitted as --array=0-(N-1) (the task's number of the array's size);
    /// `auto/N` in a Kubernetes indexed job (JOB_COMPLETION_INDEX) or a Slurm task rerun
    /// on its own (its number). Each file belongs to one shard, by a hash of its path
    /// under DIR; `neurodex merge` joins the shards' databases
    #[arg(long, value_name = "I/N|auto|auto/N")]
    pub shard: Option<String>,
    /// No progress bar or summary
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub recipe: super::RecipeArgs,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Some(n) = args.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            .build_global()
            .context("cannot set up the thread pool")?;
    }
    let max_pixels = (args.max_megapixels * 1e6) as u64;
    neurodex::preprocess::budget::GLOBAL.set_limit(match args.decode_memory_mb {
        Some(mb) => mb.saturating_mul(1_000_000),
        None => max_pixels.saturating_mul(11),
    });
    let db = args.db.clone();
    let shard = match &args.shard {
        Some(s) => Some(
            neurodex::shard::Shard::parse(s, |k| std::env::var(k).ok())
                .map_err(|e| anyhow::anyhow!("--shard {s}: {e}"))?,
        ),
        None => None,
    };
    // Before anything is created: a mistyped directory leaves no database behind.
    match std::fs::metadata(&args.dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(neurodex::Error::NotADirectory(args.dir.clone()).into()),
        Err(e) => return Err(neurodex::Error::io(&args.dir, e).into()),
    }
    // The network is loaded before the database is opened for writing, so that a
    // bad --weights file leaves no database behind (nor an empty schema).
    let indexed = || -> Option<neurodex::store::RunInfo> {
        let store = Store::open_readonly(&db).ok()?;
        store.run_info_opt().ok()?
    };
    let indexed = if db.exists() { indexed() } else { None };
    let model = match (&args.model, &indexed) {
        (Some(m), _) => m.clone(),
        (None, Some(run)) => run.model.clone(),
        (None, None) => DEFAULT_MODEL.to_string(),
    };
    let mut net = Network::open(&model, args.weights.as_deref())?;
    // A rerun prepares images as the index did unless told otherwise (and is refused
    // if told otherwise).
    if let Some(r) = indexed
        .as_ref()
        .filter(|run| run.model == net.arch.name)
        .and_then(|run| run.parsed_recipe())
    {
        net.arch.recipe = r;
    }
    if args.recipe.given() {
        net.arch.recipe = args.recipe.recipe(&net.arch.recipe)?;
    }
    if let Some(why) = &net.arch.unsupported {
        eprintln!("note: {model}: the graph's {why}; only the layers before them can be indexed");
    }
    let mut store = Store::open(&db)?;
    let opts = Options {
        root: args.dir.clone(),
        layers: args.layers.clone(),
        batch: args.batch,
        top_k: args.top_k,
        max_pixels: (args.max_megapixels * 1e6) as u64,
        progress: !args.quiet && std::io::stderr().is_terminal(),
        keep_duplicates: args.keep_duplicates.then_some(true),
        shard,
    };
    let summary = index::run(&mut net, &mut store, &opts)?;
    if let Some(b) = store.run_info()?.batch.filter(|&b| b != args.batch) {
        eprintln!(
            "note: this index computes images in batches of {b}, as it began (this network's \
             values depend on the batch size, and every run and shard must agree): --batch \
             {} not taken",
            args.batch
        );
    }
    if !args.quiet {
        print_summary(&summary);
        if let Some(s) = shard {
            eprintln!(
                "shard {s}: {} files left to the other shards",
                summary.other_shards
            );
        }
    }
    label_imagenet_folders(&mut store, &summary, args.quiet)?;
    Ok(if summary.failed_total > 0 {
        ExitCode::from(super::EXIT_PARTIAL)
    } else {
        ExitCode::SUCCESS
    })
}

/// An ImageNet-style tree (`n01440764/...`) is labelled by its folders as it is
/// indexed, in the set `imagenet`, so that `neurodex concepts` works at once; again
/// after each run that changed what is indexed.
fn label_imagenet_folders(store: &mut Store, s: &Summary, quiet: bool) -> anyhow::Result<()> {
    let have = store.label_sets()?.iter().any(|l| l.name == "imagenet");
    let changed = s.indexed + s.changed + s.removed > 0;
    if (have && !changed) || !neurodex::concepts::looks_like_imagenet(store)? {
        return Ok(());
    }
    let r = neurodex::concepts::add_from_dirs(store, None, true)?;
    if !quiet {
        eprintln!(
            "labelled {} images with {} ImageNet classes from their folder names (set `imagenet`)",
            r.images, r.concepts
        );
    }
    Ok(())
}

fn print_summary(s: &Summary) {
    let rate = if s.seconds > 0.0 {
        s.indexed as f64 / s.seconds
    } else {
        0.0
    };
    eprintln!(
        "indexed {} images in {:.1} s ({rate:.1} images/s); {} unchanged, {} changed, {} removed, {} non-image names ignored",
        s.indexed, s.seconds, s.unchanged, s.changed, s.removed, s.ignored
    );
    eprintln!(
        "time: forward {:.1} s, database writes {:.1} s, waiting for decoding {:.1} s",
        s.forward_seconds, s.write_seconds, s.wait_seconds
    );
    if s.failed > 0 {
        let mut kinds = s.failed_by_kind.clone();
        kinds.sort_by_key(|(k, _)| index::kind_order(k));
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        eprintln!("failed: {} ({})", s.failed, kinds.join(", "));
        for (path, kind, reason) in &s.failures {
            eprintln!("  {path}: {kind}: {reason}");
        }
        if s.failed as usize > s.failures.len() {
            eprintln!(
                "  ... and {} more (see `neurodex stats`)",
                s.failed as usize - s.failures.len()
            );
        }
    }
    if s.unchanged_failed > 0 {
        eprintln!(
            "{} unchanged files failed in an earlier run and were not retried",
            s.unchanged_failed
        );
    }
}
