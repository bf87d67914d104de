//! Joining indexes of parts of one folder (the shards of `index --shard`, or any
//! indexes of the same run) into one, exactly.
//!
//! Everything an index keeps per unit merges without loss: the top-K is a selection
//! under a total order (value, then the earlier image in the walk of the folder), so
//! the K best of the inputs' K best are the K best of all; counts, sums, extremes and
//! histograms add. The merged database numbers its images in walk order, so that
//! order, and with it every tie and every "first copy of a content", is the one a
//! single `index` of the whole folder gives. Where an input cannot vouch for its
//! lists (a path in two inputs, or an input whose numbering strayed from walk order
//! because files were added between its runs) both are recomputed from the copied
//! peaks instead: slower, as exact.
//!
//! The result is built in `OUT.merging` and renamed over `OUT` when complete, so an
//! interrupted merge leaves `OUT` as it was and the next one starts afresh; an `OUT`
//! that already holds an index is one more input (merging adds to it).

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::shard::{self, Shard};
use crate::store::{self, LayerInfo, MergeTarget, MergedInput, Progress, RunInfo, Store};
use crate::{Error, Result};

/// One input as the merge saw it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Input {
    pub path: PathBuf,
    pub shard: Option<Shard>,
    pub images: u64,
    pub failed: u64,
    /// The output itself, merged into.
    pub is_output: bool,
    /// What it covers: a shard, the whole folder, or (an earlier merge) its shards.
    pub covers: String,
}

/// What a merge did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub inputs: Vec<Input>,
    /// Inputs given more than once (or the output named again), merged once.
    pub repeated_inputs: Vec<PathBuf>,
    pub images: u64,
    pub failed: u64,
    /// Paths in more than one input, counted once.
    pub repeated_paths: u64,
    /// Why statistics and top-K were recomputed from the peaks, when they were.
    pub recomputed: Option<String>,
    /// Which part of the folder the merged index covers, and whether all of it.
    pub coverage: String,
    pub complete: bool,
    /// The instruction sets the inputs were computed on (more than one: their values
    /// may differ in the last bits, and with them ties).
    pub isas: Vec<String>,
    pub seconds: f64,
}

/// The most images per unit and units an input may have (top-K lists are held in
/// memory for every unit while merging: at these, 16 bytes x K x units).
const MAX_TOP_K: usize = 100_000;
const MAX_UNITS: usize = 1 << 20;

/// The file the merge is built in, beside `out`.
pub fn work_path(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".merging");
    PathBuf::from(p)
}

struct Opened {
    path: PathBuf,
    run: RunInfo,
    layers: Vec<LayerInfo>,
    images: u64,
    failed: u64,
    merged: Vec<MergedInput>,
    isa: Vec<String>,
    is_output: bool,
    /// When it last looked at the folder (the output: before every input).
    seen_at: i64,
}

fn refuse(path: &Path, reason: String) -> Error {
    Error::Store {
        path: path.to_path_buf(),
        reason,
    }
}

/// Opens an input; `held`: the caller holds its writer lock (no `index` can be
/// writing to it).
fn open_input(path: &Path, is_output: bool, held: bool) -> Result<Option<Opened>> {
    let store = Store::open_readonly(path)?;
    let Some(run) = store.run_info_opt()? else {
        if is_output {
            return Ok(None);
        }
        return Err(refuse(path, "nothing has been indexed into it".into()));
    };
    let progress = if held {
        store.progress_held()?
    } else {
        store.progress()?
    };
    match progress {
        Progress::Complete => {}
        Progress::Building { holder, .. } => {
            return Err(refuse(
                path,
                format!("it is still being indexed ({holder}); merge it once that has ended"),
            ))
        }
        Progress::CutShort { .. } => {
            return Err(refuse(
                path,
                "its last `neurodex index` stopped before the end; run the same command \
                 again (it resumes) and then merge"
                    .into(),
            ))
        }
    }
    let layers = store.layers()?;
    // What a hostile file could ask to be allocated: a million-hit list per unit, or
    // a million units.
    if run.top_k > MAX_TOP_K || layers.iter().map(|l| l.channels).sum::<usize>() > MAX_UNITS {
        return Err(refuse(
            path,
            format!(
                "its run keeps {} images per unit over {} units: beyond what neurodex makes \
                 ({MAX_TOP_K} and {MAX_UNITS}); not merged",
                run.top_k,
                layers.iter().map(|l| l.channels).sum::<usize>()
            ),
        ));
    }
    Ok(Some(Opened {
        path: path.to_path_buf(),
        layers,
        images: store.count_images("ok")?,
        failed: store.count_images("failed")?,
        merged: store.merged_inputs()?,
        isa: store.isas()?,
        seen_at: if is_output {
            i64::MIN
        } else {
            store.seen_at()?
        },
        run,
        is_output,
    }))
}

/// What makes `b` a different index from `a`, in words (empty: the same run).
fn differences(a: &Opened, b: &Opened) -> Vec<String> {
    let (x, y) = (&a.run, &b.run);
    let mut why = Vec::new();
    let mut differ = |what: &str, l: String, r: String| {
        if l != r {
            why.push(format!("{what} {r} (against {l})"));
        }
    };
    differ("model", x.model.clone(), y.model.clone());
    differ("weights", short(&x.weights_id), short(&y.weights_id));
    differ(
        "folder",
        x.root.display().to_string(),
        y.root.display().to_string(),
    );
    differ("top-K of", x.top_k.to_string(), y.top_k.to_string());
    differ(
        "pixel limit",
        x.max_pixels.to_string(),
        y.max_pixels.to_string(),
    );
    let batch = |b: Option<usize>| b.map_or("any".into(), |b| b.to_string());
    differ("batches of", batch(x.batch), batch(y.batch));
    differ(
        "duplicates",
        dup_words(x.keep_duplicates),
        dup_words(y.keep_duplicates),
    );
    if x.recipe != y.recipe {
        why.push(format!("preprocessing {} (against {})", y.recipe, x.recipe));
    }
    let names = |o: &Opened| o.layers.iter().map(|l| l.name.clone()).collect::<Vec<_>>();
    if names(a) != names(b) {
        why.push(format!(
            "layers {} (against {})",
            names(b).join(","),
            names(a).join(",")
        ));
    } else if a.layers != b.layers {
        why.push("the same layers with other shapes, fields or ranking stage".into());
    }
    why
}

fn dup_words(keep: bool) -> String {
    if keep { "kept" } else { "one per content" }.to_string()
}

fn short(id: &str) -> String {
    id[..id.len().min(12)].to_string()
}

/// How the merged database came together, and the inputs it records.
type Built = (store::Numbered, Option<String>, Vec<MergedInput>);

/// Builds the merged database in `work` from `opened` and renames it over `out`.
fn build(
    work: &Path,
    out: &Path,
    run: &RunInfo,
    layers: &[LayerInfo],
    opened: &[Opened],
    say: &dyn Fn(&str),
) -> Result<Built> {
    let mut target = MergeTarget::create(work, run, layers)?;
    say(&format!("reading the images of {} indexes", opened.len()));
    for (i, o) in opened.iter().enumerate() {
        target.add_images(i, &o.path, o.seen_at)?;
    }
    let numbered = target.number_images(run.keep_duplicates)?;
    let mut recomputed = None;
    if numbered.repeated_paths > 0 {
        recomputed = Some(format!(
            "{} paths were in more than one input",
            numbered.repeated_paths
        ));
    }
    for (i, o) in opened.iter().enumerate() {
        if recomputed.is_none() && !target.in_walk_order(i)? {
            recomputed = Some(format!(
                "{} numbered its images out of walk order (files were added to the \
                 folder between its runs)",
                o.path.display()
            ));
        }
    }
    say("copying peaks and labels");
    for (i, o) in opened.iter().enumerate() {
        target.copy_rows(i, &o.path)?;
    }
    let channels: Vec<usize> = layers.iter().map(|l| l.channels).collect();
    let (mut stats, mut tops) = crate::stats::fresh(&channels, run.top_k);
    if recomputed.is_none() {
        say("selecting every unit's top-K from the inputs' lists");
        for (i, o) in opened.iter().enumerate() {
            target.add_derived(i, &o.path, &mut stats, &mut tops)?;
        }
    } else {
        say("recomputing statistics and top-K from the peaks");
    }
    let now = store::unix_now();
    let mut records: Vec<MergedInput> = Vec::new();
    for o in opened {
        let mine = if o.merged.is_empty() {
            vec![MergedInput {
                path: o.path.display().to_string(),
                shard: o.run.shard,
                images: o.images,
                failed: o.failed,
                created_at: o.run.created_at,
                merged_at: now,
                isa: o.isa.clone(),
            }]
        } else {
            o.merged.clone()
        };
        for m in mine {
            // The same input merged again is recorded once.
            let same = |r: &MergedInput| {
                (&r.path, r.shard, r.created_at) == (&m.path, m.shard, m.created_at)
            };
            if !records.iter().any(same) {
                records.push(m);
            }
        }
    }
    let derived = recomputed
        .is_none()
        .then_some((stats.as_slice(), tops.as_slice()));
    target.finish(out, derived, &records)?;
    Ok((numbered, recomputed, records))
}

/// Merges `inputs` into `out` (created, or added to when it holds an index). Holds
/// `out`'s writer lock throughout, so an `index` into it waits its turn (exit 3).
pub fn run(out: &Path, inputs: &[PathBuf], progress: bool) -> Result<Summary> {
    let start = Instant::now();
    let say = |what: &str| {
        if progress {
            eprintln!("merge: {what} ({:.1} s)", start.elapsed().as_secs_f64());
        }
    };
    let _lock = store::WriterLock::acquire(out)?;
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mut seen: Vec<PathBuf> = Vec::new();
    let mut opened: Vec<Opened> = Vec::new();
    let mut repeated_inputs = Vec::new();
    if out.exists() {
        seen.push(canon(out));
        opened.extend(open_input(out, true, true)?);
    }
    // Each input's writer lock too, for as long as the merge reads it: an `index` that
    // starts on a shard meanwhile waits (exit 3) instead of changing it under the
    // merge. Where the lock file cannot be made (read-only storage) nothing can write.
    let mut locks = Vec::new();
    for p in inputs {
        let c = canon(p);
        if seen.contains(&c) {
            repeated_inputs.push(p.clone());
            continue;
        }
        seen.push(c);
        if !p.exists() {
            return Err(open_input(p, false, false)
                .err()
                .unwrap_or_else(|| refuse(p, "no such database".into())));
        }
        let held = match store::WriterLock::acquire(p) {
            Ok(lock) => {
                locks.push(lock);
                true
            }
            Err(e @ Error::Locked { .. }) => return Err(e),
            Err(_) => false,
        };
        opened.extend(open_input(p, false, held)?);
    }
    let Some(first) = opened.first() else {
        return Err(refuse(
            out,
            "nothing to merge: give the shards' databases".into(),
        ));
    };
    for o in &opened[1..] {
        let why = differences(first, o);
        if !why.is_empty() {
            return Err(refuse(
                &o.path,
                format!(
                    "it indexes another run than {}: {}; only indexes of the same folder, \
                     model, weights, preprocessing, layers and K merge",
                    first.path.display(),
                    why.join(", ")
                ),
            ));
        }
    }
    let shards: Vec<Option<Shard>> = opened.iter().map(|o| o.run.shard).collect();
    let mut run = first.run.clone();
    run.shard = if shards.iter().all(|s| *s == shards[0]) {
        shards[0]
    } else {
        None
    };
    run.tool_version = env!("CARGO_PKG_VERSION").to_string();
    run.created_at = opened.iter().map(|o| o.run.created_at).min().unwrap_or(0);
    run.needs_rebuild = false;
    run.derived_upto = 0;
    let layers = first.layers.clone();

    // OUT's own log, folded in now: a reader that keeps it open stops the merge
    // before the work, not after.
    store::make_way(out)?;
    let work = work_path(out);
    if work.exists() {
        say("removing an unfinished merge left by an earlier run");
    }
    let built = build(&work, out, &run, &layers, &opened, &say);
    if built.is_err() {
        // Nothing of a failed merge is kept (the next one would start afresh anyway).
        for suffix in ["", "-journal"] {
            let _ = std::fs::remove_file(store::side_file(&work, suffix));
        }
    }
    let (numbered, recomputed, records) = built?;
    say("done");

    let merged = Store::open_readonly(out)?;
    let parts: Vec<Option<Shard>> = records.iter().map(|r| r.shard).collect();
    let (coverage, complete) = shard::coverage(&parts);
    Ok(Summary {
        inputs: opened
            .iter()
            .map(|o| Input {
                path: o.path.clone(),
                shard: o.run.shard,
                images: o.images,
                failed: o.failed,
                is_output: o.is_output,
                covers: if o.merged.is_empty() {
                    o.run
                        .shard
                        .map_or("the whole folder".into(), |s| format!("shard {s}"))
                } else {
                    let parts: Vec<_> = o.merged.iter().map(|m| m.shard).collect();
                    format!("merged: {}", shard::coverage(&parts).0)
                },
            })
            .collect(),
        repeated_inputs,
        images: merged.count_images("ok")?,
        failed: merged.count_images("failed")?,
        repeated_paths: numbered.repeated_paths,
        recomputed,
        coverage,
        complete,
        isas: {
            let mut all: Vec<String> = opened.iter().flat_map(|o| o.isa.clone()).collect();
            all.sort();
            all.dedup();
            all
        },
        seconds: start.elapsed().as_secs_f64(),
    })
}
