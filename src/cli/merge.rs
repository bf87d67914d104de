//! `neurodex merge --db OUT SHARD...`: join the databases of an index's shards.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use neurodex::merge;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "The inputs must index the same folder with the same model, weights, \
preprocessing, layers, --top-k and (for networks whose values depend on it) batch size; each \
must have finished (a shard cut short is refused: run its `index` again). The merged top-K \
lists, statistics, images, failures and labels equal what one `neurodex index` of the whole \
folder gives. OUT is written only when the merge is complete (it is built in OUT.merging); an \
OUT that already holds an index is merged into, and a path met in two inputs, or an input \
given twice, counts once, as the input that looked at the folder last saw it.\n\n\
Exit status: 0 merged, 1 merged and the index holds files that failed, 2 refused or an error, \
3 OUT or an input is being written by another neurodex."
)]
pub struct Args {
    /// The merged database (created, or added to)
    #[arg(long)]
    pub db: PathBuf,
    /// The databases to merge (e.g. the shards of `neurodex index --shard`)
    #[arg(required = true, value_name = "SHARD.db")]
    pub inputs: Vec<PathBuf>,
    /// No progress or summary on stderr
    #[arg(long, short)]
    pub quiet: bool,
    /// One JSON object on stdout
    #[arg(long)]
    pub json: bool,
}

/// `index` labels an ImageNet-style tree by its folders when every indexed image sits
/// in one, so each shard decided that for its own images; the merged index decides
/// it for all of them, as one index of the folder would.
fn settle_imagenet_labels(db: &std::path::Path) -> anyhow::Result<Option<String>> {
    use neurodex::concepts;
    let mut store = neurodex::store::Store::open(db)?;
    let auto = "folder names (ImageNet-1k WordNet ids)";
    let have = store
        .label_sets()?
        .iter()
        .any(|l| l.name == "imagenet" && l.origin == auto);
    if concepts::looks_like_imagenet(&store)? {
        let r = concepts::add_from_dirs(&mut store, None, true)?;
        return Ok(Some(format!(
            "labelled {} images with {} ImageNet classes from their folder names (set `imagenet`)",
            r.images, r.concepts
        )));
    }
    if have {
        store.remove_labels("imagenet", None)?;
        return Ok(Some(
            "removed the shards' `imagenet` labels: not every image of the merged index sits \
             in an ImageNet class folder"
                .into(),
        ));
    }
    Ok(None)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let progress = !args.quiet && !args.json && std::io::stderr().is_terminal();
    let s = merge::run(&args.db, &args.inputs, progress)?;
    let relabelled = settle_imagenet_labels(&args.db)?;
    if args.json {
        println!("{}", serde_json::to_string(&s)?);
    } else if !args.quiet {
        for p in &s.repeated_inputs {
            eprintln!("note: {} was given twice; merged once", p.display());
        }
        for i in &s.inputs {
            let what = if i.is_output {
                format!("the index merged into ({})", i.covers)
            } else {
                i.covers.clone()
            };
            eprintln!(
                "  {}: {what}, {} images, {} failed",
                i.path.display(),
                i.images,
                i.failed
            );
        }
        eprintln!(
            "merged {} indexes into {} in {:.1} s: {} images, {} failed; covers {}",
            s.inputs.len(),
            args.db.display(),
            s.seconds,
            s.images,
            s.failed,
            s.coverage
        );
        match &s.recomputed {
            None => eprintln!("top-K lists re-selected from the inputs' lists, statistics added"),
            Some(why) => eprintln!("top-K lists and statistics recomputed from the peaks: {why}"),
        }
        if s.repeated_paths > 0 {
            eprintln!(
                "{} paths were in more than one input: each counted once (the newest file's row)",
                s.repeated_paths
            );
        }
        if s.isas.len() > 1 {
            eprintln!(
                "note: the inputs were computed on different instruction sets ({}): their \
                 values can differ in the last bits, so units whose top images tie or \
                 nearly tie may be ordered otherwise than one index on one machine would",
                s.isas.join(", ")
            );
        }
        if let Some(what) = relabelled {
            eprintln!("{what}");
        }
        if !s.complete {
            eprintln!(
                "note: not every shard is in yet; merge the others into {} when they are done",
                args.db.display()
            );
        }
    }
    Ok(if s.failed > 0 {
        ExitCode::from(super::EXIT_PARTIAL)
    } else {
        ExitCode::SUCCESS
    })
}
