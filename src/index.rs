//! The indexing pipeline: walk -> decode (rayon, one batch ahead) -> forward ->
//! per-unit peaks -> one SQLite transaction per batch.
//!
//! Four threads: the walker decides what needs indexing (new, changed, restored
//! files) from the database; the decoder loads and prepares a batch in parallel while
//! the main thread runs the network on the previous one; the writer commits the batch
//! before that. Every batch's
//! writes (image rows, peaks, top-K changes, statistics) are one transaction, so a
//! killed run loses at most the batch in flight and the rerun ends where an
//! uninterrupted run would. Batches hold `batch` successfully decoded images, so their
//! boundaries do not depend on where a run was interrupted.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;

use crate::crawl::{self, Entry, FailKind, Failure, Found, Loaded};
use crate::model::{Network, Tap};
use crate::peaks::{self, Peak};
use crate::shard::Shard;
use crate::stats::{Hit, Offer, TopK, UnitStats};
use crate::store::{self, LayerInfo, RunInfo, Store};
use crate::{Error, Result};

pub const DEFAULT_TOP_K: usize = 100;
pub const DEFAULT_BATCH: usize = 16;

#[derive(Clone, Debug)]
pub struct Options {
    pub root: PathBuf,
    /// Layer names; `None` = the database's layers, or the model's defaults for a new
    /// database; `["all"]` = every tap.
    pub layers: Option<Vec<String>>,
    pub batch: usize,
    /// `None` = the database's K, or `DEFAULT_TOP_K`.
    pub top_k: Option<usize>,
    pub max_pixels: u64,
    pub progress: bool,
    /// Let files with the same content each take a place in the top-K lists
    /// (`None` = the database's choice, or one place per content for a new one).
    pub keep_duplicates: Option<bool>,
    /// Index only this shard's files (fixed when the database is created).
    pub shard: Option<Shard>,
}

/// What one `index` run did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    pub indexed: u64,
    /// Inputs that failed in this run.
    pub failed: u64,
    /// Unchanged files already in the index (indexed or failed before).
    pub unchanged: u64,
    /// ... of which had failed before and still do.
    pub unchanged_failed: u64,
    /// Files indexed before whose content changed (re-indexed).
    pub changed: u64,
    pub removed: u64,
    /// Files skipped because their names do not look like images.
    pub ignored: u64,
    /// Files left to the other shards.
    pub other_shards: u64,
    /// Failures of this run by kind.
    pub failed_by_kind: Vec<(String, u64)>,
    /// The first failures of this run: (path, kind, reason).
    pub failures: Vec<(String, String, String)>,
    /// Failed inputs now recorded in the database (this run's and earlier ones').
    pub failed_total: u64,
    pub seconds: f64,
    /// Of which: network forward and peak extraction, writing to the database, and
    /// waiting for the decoder (the part of decoding the forward pass did not hide).
    pub forward_seconds: f64,
    pub write_seconds: f64,
    pub wait_seconds: f64,
}

/// Most failures and touched files held back waiting for a batch of images.
const SIDE_BATCH: usize = 256;

/// Failures kept for the end-of-run summary (all are in the database).
const KEEP_FAILURES: usize = 50;

/// Work for the decoder, from the walker.
enum Work {
    /// Decode and index; `prev` is the row of a file seen before, with whether it
    /// was indexed successfully then.
    Index {
        entry: Entry,
        size: u64,
        mtime_ns: i64,
        prev: Option<(i64, bool)>,
    },
    /// Record a failure found by the walk.
    Fail {
        entry: Entry,
        failure: Failure,
        prev: Option<(i64, bool)>,
    },
    /// Content unchanged, new modification time.
    Touch { id: i64, mtime_ns: i64 },
}

/// The row a file had before (id, and whether it was indexed successfully).
type Prev = Option<(i64, bool)>;
/// A decoded image: entry, size, mtime, previous row, network input.
type OkItem = (Entry, u64, i64, Prev, Loaded);
/// A failed input: entry, size and mtime when known, previous row, reason.
type FailedItem = (Entry, Option<u64>, Option<i64>, Prev, Failure);

/// A unit of commit: up to `batch` decoded images plus the failures met meanwhile.
#[derive(Default)]
struct Batch {
    ok: Vec<OkItem>,
    failed: Vec<FailedItem>,
    touched: Vec<(i64, i64)>,
}

struct WalkReport {
    seen: Vec<u64>,
    unchanged: u64,
    unchanged_failed: u64,
    ignored: u64,
    other_shards: u64,
}

fn rel_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Resolves the layers to index for a new database.
fn choose_layers(net: &Network, names: Option<&[String]>) -> Result<Vec<LayerInfo>> {
    let arch = &net.arch;
    let nodes = arch.layer_nodes(names)?;
    let shapes = arch.output_shapes();
    let fields = crate::receptive::fields(arch);
    Ok(nodes
        .into_iter()
        .enumerate()
        .map(|(i, n)| LayerInfo {
            id: i as i64,
            name: arch.nodes[n].name.clone(),
            node: n,
            channels: shapes[n][0],
            height: shapes[n][1],
            width: shapes[n][2],
            field: fields[n],
            pre: true,
            act: arch.nodes[n].op.act(),
        })
        .collect())
}

fn recipe_json(net: &Network) -> String {
    serde_json::to_string(&net.arch.recipe).expect("recipe serialises")
}

/// Checks that this run matches the database's, or describes a new one.
fn prepare_run(net: &Network, store: &mut Store, opts: &Options, root: &Path) -> Result<RunInfo> {
    let bad = |reason: String| Error::Store {
        path: store.path().to_path_buf(),
        reason,
    };
    if let Some(run) = store.run_info_opt()? {
        let mut why = Vec::new();
        if run.model != net.arch.name {
            why.push(format!("model {} (asked: {})", run.model, net.arch.name));
        }
        if run.weights_id != net.weights_id() {
            why.push(format!(
                "weights {} (given: {})",
                short(&run.weights_id),
                short(net.weights_id())
            ));
        }
        if run.root != root {
            why.push(format!(
                "directory {} (asked: {})",
                run.root.display(),
                root.display()
            ));
        }
        if run.recipe != recipe_json(net) {
            why.push("a different preprocessing recipe".into());
        }
        if let Some(k) = opts.top_k {
            if k != run.top_k {
                why.push(format!("--top-k {} (asked: {k})", run.top_k));
            }
        }
        if let Some(keep) = opts.keep_duplicates {
            if keep != run.keep_duplicates {
                why.push(if run.keep_duplicates {
                    "every duplicate file (asked: one per content)".to_string()
                } else {
                    "one file per content (asked: --keep-duplicates)".to_string()
                });
            }
        }
        if let Some(names) = &opts.layers {
            let want: Vec<String> = choose_layers(net, Some(names))?
                .into_iter()
                .map(|l| l.name)
                .collect();
            if want != run.layers {
                why.push(format!(
                    "layers {} (asked: {})",
                    run.layers.join(","),
                    want.join(",")
                ));
            }
        }
        if opts.shard != run.shard {
            let name =
                |s: Option<Shard>| s.map_or("every file".to_string(), |s| format!("shard {s}"));
            why.push(format!("{} (asked: {})", name(run.shard), name(opts.shard)));
        }
        if !why.is_empty() {
            return Err(bad(format!(
                "this database indexes {}; index into a new --db instead",
                why.join(", ")
            )));
        }
        return Ok(run);
    }
    let layers = choose_layers(net, opts.layers.as_deref())?;
    let run = RunInfo {
        model: net.arch.name.clone(),
        weights_id: net.weights_id().to_string(),
        root: root.to_path_buf(),
        recipe: recipe_json(net),
        max_pixels: opts.max_pixels,
        top_k: opts.top_k.unwrap_or(DEFAULT_TOP_K),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at: store::unix_now(),
        layers: layers.iter().map(|l| l.name.clone()).collect(),
        keep_duplicates: opts.keep_duplicates.unwrap_or(false),
        needs_rebuild: false,
        derived_upto: 0,
        shard: opts.shard,
        batch: {
            let taps: Vec<Tap> = layers.iter().map(|l| Tap::new(l.node, l.pre)).collect();
            (!net.batch_invariant(&taps, opts.batch.max(1))).then_some(opts.batch.max(1))
        },
    };
    store.create_run(&run, &layers)?;
    Ok(run)
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Indexes `opts.root` into `store` with `net`, whose indexed layers' activations
/// it splits off (`Network::split_activations`) to rank before them.
pub fn run(net: &mut Network, store: &mut Store, opts: &Options) -> Result<Summary> {
    let start = Instant::now();
    let root = std::fs::canonicalize(&opts.root).map_err(|e| Error::io(&opts.root, e))?;
    if !root.is_dir() {
        return Err(Error::NotADirectory(root));
    }
    let run = prepare_run(net, store, opts, &root)?;
    // A network whose values depend on the batch size keeps the one it began with.
    let batch = run.batch.unwrap_or(opts.batch).max(1);
    let layers = store.layers()?;
    // Databases made before rankings moved ahead of the activation go on as they began.
    let taps: Vec<Tap> = layers.iter().map(|l| Tap::new(l.node, l.pre)).collect();
    let split: Vec<usize> = layers.iter().filter(|l| l.pre).map(|l| l.node).collect();
    net.split_activations(&split);
    let net = &*net;
    // Where the network computes some taps on the whole batch, a short batch (the last
    // one, or any of a shard) is padded to the full size, so that every image's values
    // are those any run with this batch size gives it (shards merge exactly).
    let pad_to = run.batch.unwrap_or(0);
    let keep_duplicates = run.keep_duplicates;
    let mut stats = store.load_stats(&layers)?;
    let mut tops = store.load_top(&layers, run.top_k)?;
    // Images committed after the last save of the statistics (an interrupted run).
    let run = store.run_info()?;
    store.replay_after(run.derived_upto, &layers, &mut stats, &mut tops)?;
    let mut derived = Derived {
        dirty: layers.iter().map(|l| vec![true; l.channels]).collect(),
        stats,
        tops,
    };
    let max_id_at_start = store.max_image_id()?;
    let session = store.start_session()?;

    let pb = if opts.progress {
        let pb = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        pb.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{wide_bar}] {pos}/{len} images, {per_sec}, ETA {eta}",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        pb
    } else {
        ProgressBar::hidden()
    };

    let mut summary = Summary::default();
    let recipe = net.arch.recipe.clone();
    let max_pixels = opts.max_pixels;
    let db_path = store.path().to_path_buf();

    let mut times = (0.0, 0.0);
    let result: Result<WalkReport> = std::thread::scope(|s| {
        let (work_tx, work_rx) = sync_channel::<Work>(batch * 4);
        let (batch_tx, batch_rx) = sync_channel::<Batch>(1);
        let walker = {
            let root = root.clone();
            let pb = pb.clone();
            let db_path = db_path.clone();
            let shard = opts.shard;
            s.spawn(move || walker(&root, &db_path, shard, max_id_at_start, work_tx, &pb))
        };
        let decoder = s.spawn(move || decoder(work_rx, batch_tx, batch, &recipe, max_pixels));
        let (peaks_tx, peaks_rx) = sync_channel::<(Batch, BatchPeaks)>(1);
        let writer = s.spawn(|| {
            write_loop(
                store,
                &layers,
                keep_duplicates,
                &mut derived,
                peaks_rx,
                &pb,
                &mut summary,
            )
        });
        let forwarded = forward_loop(net, &taps, pad_to, batch_rx, peaks_tx);
        // On error the receivers are gone: the other threads stop at their next send.
        let written = writer.join().expect("writer thread");
        let walked = walker.join().expect("walker thread");
        decoder.join().expect("decoder thread");
        written?;
        times = forwarded?;
        walked
    });
    let report = result?;
    pb.finish_and_clear();
    (summary.forward_seconds, summary.wait_seconds) = times;
    summary.unchanged = report.unchanged;
    summary.unchanged_failed = report.unchanged_failed;
    summary.ignored = report.ignored;
    summary.other_shards = report.other_shards;

    // Rows of files that were not met this time.
    {
        let tx = store.begin()?;
        let gone: Vec<(i64, String)> = tx
            .live_images_upto(max_id_at_start)?
            .into_iter()
            .filter(|(id, _)| !bit(&report.seen, *id))
            .collect();
        for (id, status) in &gone {
            tx.mark_removed(*id)?;
            if status == "ok" {
                tx.set_needs_rebuild(true)?;
            }
        }
        summary.removed = gone.len() as u64;
        tx.commit()?;
    }
    if store.run_info()?.needs_rebuild {
        store.rebuild()?;
    }
    summary.failed_total = store.count_images("failed")?;
    summary.seconds = start.elapsed().as_secs_f64();
    store.finish_session(
        session,
        [
            summary.indexed,
            summary.failed,
            summary.unchanged,
            summary.removed,
        ],
    )?;
    Ok(summary)
}

fn bit(bits: &[u64], id: i64) -> bool {
    let i = id as usize;
    bits.get(i / 64).is_some_and(|w| w >> (i % 64) & 1 == 1)
}

fn set_bit(bits: &mut [u64], id: i64) {
    let i = id as usize;
    if let Some(w) = bits.get_mut(i / 64) {
        *w |= 1 << (i % 64);
    }
}

/// Walks the root and sends what needs doing; returns which known rows it met.
fn walker(
    root: &Path,
    db: &Path,
    shard: Option<Shard>,
    max_id: i64,
    tx: SyncSender<Work>,
    pb: &ProgressBar,
) -> Result<WalkReport> {
    let store = Store::open_readonly(db)?;
    let mut report = WalkReport {
        seen: vec![0u64; max_id as usize / 64 + 1],
        unchanged: 0,
        unchanged_failed: 0,
        ignored: 0,
        other_shards: 0,
    };
    let mut walk = crawl::walk(root);
    for entry in walk.by_ref() {
        let rel = store::path_bytes(&entry.rel);
        if shard.is_some_and(|s| !s.owns(&rel)) {
            report.other_shards += 1;
            continue;
        }
        let known = store.find_image(&rel)?;
        if let Some(k) = &known {
            set_bit(&mut report.seen, k.id);
        }
        let prev = known.as_ref().map(|k| (k.id, k.status == "ok"));
        let work = match entry.what.clone() {
            Found::Problem(failure) => Work::Fail {
                entry,
                failure,
                prev,
            },
            Found::File { size, mtime_ns } => {
                let mut work = Work::Index {
                    entry,
                    size,
                    mtime_ns,
                    prev,
                };
                if let Some(k) = known.filter(|k| k.status != "removed") {
                    if k.size == Some(size) {
                        let same = k.mtime_ns == Some(mtime_ns)
                            || match (&k.sha256, &work) {
                                // Same size, new time: the content decides.
                                (Some(h), Work::Index { entry, .. }) => {
                                    crawl::sha256_file(&entry.abs).ok().as_ref() == Some(h)
                                }
                                _ => false,
                            };
                        if same {
                            report.unchanged += 1;
                            report.unchanged_failed += (k.status == "failed") as u64;
                            if k.mtime_ns == Some(mtime_ns) {
                                continue;
                            }
                            work = Work::Touch { id: k.id, mtime_ns };
                        }
                    }
                }
                work
            }
        };
        if !matches!(work, Work::Touch { .. }) {
            pb.inc_length(1);
        }
        if tx.send(work).is_err() {
            break;
        }
    }
    report.ignored = walk.ignored;
    Ok(report)
}

/// Groups work into batches of `batch` decoded images, decoding each group in parallel.
fn decoder(
    rx: Receiver<Work>,
    tx: SyncSender<Batch>,
    batch: usize,
    recipe: &crate::arch::Recipe,
    max_pixels: u64,
) {
    let mut done = false;
    while !done {
        let mut b = Batch::default();
        while b.ok.len() < batch && !done {
            let mut todo = Vec::new();
            while todo.len() + b.ok.len() < batch {
                // Long runs of failures or touched files go out on their own, so that
                // they are committed (and memory stays bounded) without waiting for
                // images; decoded images keep their batch boundaries.
                if b.failed.len() + b.touched.len() >= SIDE_BATCH {
                    let side = Batch {
                        ok: Vec::new(),
                        failed: std::mem::take(&mut b.failed),
                        touched: std::mem::take(&mut b.touched),
                    };
                    if tx.send(side).is_err() {
                        return;
                    }
                }
                match rx.recv() {
                    Err(_) => {
                        done = true;
                        break;
                    }
                    Ok(Work::Touch { id, mtime_ns }) => b.touched.push((id, mtime_ns)),
                    Ok(Work::Fail {
                        entry,
                        failure,
                        prev,
                    }) => b.failed.push((entry, None, None, prev, failure)),
                    Ok(Work::Index {
                        entry,
                        size,
                        mtime_ns,
                        prev,
                    }) => todo.push((entry, size, mtime_ns, prev)),
                }
            }
            let loaded: Vec<_> = todo
                .into_par_iter()
                .map(|(entry, size, mtime_ns, prev)| {
                    let r = crawl::load(&entry.abs, size, recipe, max_pixels);
                    (entry, size, mtime_ns, prev, r)
                })
                .collect();
            for (entry, size, mtime_ns, prev, r) in loaded {
                match r {
                    Ok(l) => b.ok.push((entry, size, mtime_ns, prev, l)),
                    Err(f) => b.failed.push((entry, Some(size), Some(mtime_ns), prev, f)),
                }
            }
        }
        if b.ok.is_empty() && b.failed.is_empty() && b.touched.is_empty() {
            break;
        }
        if tx.send(b).is_err() {
            break;
        }
    }
}

/// Peaks of a batch, `[layer][image][unit]`.
type BatchPeaks = Vec<Vec<Vec<Peak>>>;

/// Runs the network on each batch and hands it to the writer. Returns the seconds
/// spent in the forward pass and waiting for the decoder.
fn forward_loop(
    net: &Network,
    taps: &[Tap],
    pad_to: usize,
    rx: Receiver<Batch>,
    tx: SyncSender<(Batch, BatchPeaks)>,
) -> Result<(f64, f64)> {
    let (mut forward, mut wait) = (0.0, 0.0);
    let mut waited = Instant::now();
    for mut b in rx {
        wait += waited.elapsed().as_secs_f64();
        let t0 = Instant::now();
        let n = b.ok.len();
        let peaks: BatchPeaks = if n > 0 {
            let mut input = Vec::with_capacity(n * b.ok[0].4.input.len());
            for item in &mut b.ok {
                input.extend_from_slice(&std::mem::take(&mut item.4.input));
            }
            let per_image = input.len() / n;
            let m = n.max(pad_to);
            input.resize(m * per_image, 0.0);
            let found = net.forward_peaks(&input, m, taps)?;
            drop(input);
            found
                .iter()
                .map(|t| {
                    peaks::of_tap(t).map(|mut v| {
                        v.truncate(n);
                        v
                    })
                })
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        forward += t0.elapsed().as_secs_f64();
        if tx.send((b, peaks)).is_err() {
            break; // the writer failed; it reports why
        }
        waited = Instant::now();
    }
    Ok((forward, wait))
}

/// Commits each batch, in order, while the network runs on the next.
#[allow(clippy::too_many_arguments)]
fn write_loop(
    store: &mut Store,
    layers: &[LayerInfo],
    keep_duplicates: bool,
    d: &mut Derived,
    rx: Receiver<(Batch, BatchPeaks)>,
    pb: &ProgressBar,
    summary: &mut Summary,
) -> Result<()> {
    let mut by_kind: Vec<(String, u64)> = Vec::new();
    let mut unsaved = 0;
    for (b, peaks) in rx {
        let t = Instant::now();
        unsaved += !b.ok.is_empty() as usize;
        let flush = unsaved >= SAVE_EVERY;
        if flush {
            unsaved = 0;
        }
        commit(store, layers, keep_duplicates, d, &b, &peaks, flush)?;
        summary.write_seconds += t.elapsed().as_secs_f64();
        let n = b.ok.len();
        summary.indexed += n as u64;
        summary.changed +=
            b.ok.iter()
                .filter(|i| matches!(i.3, Some((_, true))))
                .count() as u64;
        summary.failed += b.failed.len() as u64;
        for (entry, _, _, _, f) in &b.failed {
            match by_kind.iter_mut().find(|(k, _)| k == f.kind.as_str()) {
                Some((_, c)) => *c += 1,
                None => by_kind.push((f.kind.as_str().to_string(), 1)),
            }
            if summary.failures.len() < KEEP_FAILURES {
                summary.failures.push((
                    rel_text(&entry.rel),
                    f.kind.as_str().to_string(),
                    f.reason.clone(),
                ));
            }
        }
        pb.inc((n + b.failed.len()) as u64);
    }
    let t = Instant::now();
    let tx = store.begin()?;
    d.save(&tx, layers)?;
    tx.commit()?;
    summary.write_seconds += t.elapsed().as_secs_f64();
    summary.failed_by_kind = by_kind;
    Ok(())
}

/// Statistics and top-K lists in memory; saved to the database every
/// `SAVE_EVERY` batches and at the end, in the transaction of a batch.
struct Derived {
    stats: Vec<Vec<UnitStats>>,
    tops: Vec<Vec<TopK>>,
    /// Units whose top-K changed since the last save.
    dirty: Vec<Vec<bool>>,
}

impl Derived {
    fn save(&mut self, tx: &store::Batch, layers: &[LayerInfo]) -> Result<()> {
        for (li, layer) in layers.iter().enumerate() {
            for (u, s) in self.stats[li].iter().enumerate() {
                tx.write_stats(layer.id, u, s)?;
                if std::mem::take(&mut self.dirty[li][u]) {
                    tx.write_top(layer.id, u, &self.tops[li][u])?;
                }
            }
        }
        tx.set_derived_upto()
    }
}

/// Batches between saves of the statistics and top-K lists: rewriting every unit's
/// row for each batch would cost more than the rest of the bookkeeping together.
const SAVE_EVERY: usize = 8;

/// One batch, one transaction: image rows and peaks always; statistics and top-K
/// when `flush`. Until then a kill loses nothing: the peaks are replayed.
#[allow(clippy::too_many_arguments)]
fn commit(
    store: &mut Store,
    layers: &[LayerInfo],
    keep_duplicates: bool,
    d: &mut Derived,
    b: &Batch,
    peaks: &[Vec<Vec<Peak>>],
    flush: bool,
) -> Result<()> {
    let tx = store.begin()?;
    for &(id, mtime_ns) in &b.touched {
        tx.touch_image(id, mtime_ns)?;
    }
    // A file indexed before whose content changed: its old contribution goes.
    let forget = |id: Option<(i64, bool)>| -> Result<()> {
        if let Some((id, true)) = id {
            tx.drop_image_data(id)?;
            tx.set_needs_rebuild(true)?;
        }
        Ok(())
    };
    for (entry, size, mtime_ns, prev, f) in &b.failed {
        forget(*prev)?;
        let raw = store::path_bytes(&entry.rel);
        let path = rel_text(&entry.rel);
        tx.upsert_image(&store::ImageRecord {
            path_raw: &raw,
            path: &path,
            size: *size,
            mtime_ns: *mtime_ns,
            sha256: None,
            width: None,
            height: None,
            transform: None,
            status: "failed",
            error_kind: Some(f.kind.as_str()),
            error: Some(&f.reason),
        })?;
    }
    let mut ids = Vec::with_capacity(b.ok.len());
    for (entry, size, mtime_ns, prev, l) in &b.ok {
        forget(*prev)?;
        let raw = store::path_bytes(&entry.rel);
        let path = rel_text(&entry.rel);
        let transform = serde_json::to_string(&l.transform).expect("transform serialises");
        let id = tx.upsert_image(&store::ImageRecord {
            path_raw: &raw,
            path: &path,
            size: Some(*size),
            mtime_ns: Some(*mtime_ns),
            sha256: Some(&l.sha256),
            width: Some(l.width),
            height: Some(l.height),
            transform: Some(&transform),
            status: "ok",
            error_kind: None,
            error: None,
        })?;
        ids.push(id);
    }
    // Files with the content of an earlier one add to the statistics only. One
    // indexed before a later copy takes the copy's places (by rebuilding).
    let mut ranked = vec![true; ids.len()];
    if !keep_duplicates {
        for (i, (&id, item)) in ids.iter().zip(&b.ok).enumerate() {
            let sha = &item.4.sha256;
            ranked[i] = tx.duplicate_of(id, sha)?.is_none();
            if ranked[i] && tx.has_later_copy(id, sha)? {
                tx.set_needs_rebuild(true)?;
            }
        }
    }
    for (li, layer) in layers.iter().enumerate() {
        for (i, &id) in ids.iter().enumerate() {
            tx.put_peaks(id, layer.id, &peaks[li][i])?;
        }
        for (u, (s, top)) in d.stats[li]
            .iter_mut()
            .zip(d.tops[li].iter_mut())
            .enumerate()
        {
            for (i, &id) in ids.iter().enumerate() {
                let p = &peaks[li][i][u];
                s.add(p.value);
                if ranked[i] && top.offer(Hit::new(p, id)) != Offer::Rejected {
                    d.dirty[li][u] = true;
                }
            }
        }
    }
    if flush {
        d.save(&tx, layers)?;
    }
    tx.commit()
}

/// Reasons in the order they are most worth reading.
pub fn kind_order(k: &str) -> usize {
    [
        FailKind::Walk,
        FailKind::Unreadable,
        FailKind::Empty,
        FailKind::NotImage,
        FailKind::TooLarge,
        FailKind::Decode,
    ]
    .iter()
    .position(|f| f.as_str() == k)
    .unwrap_or(usize::MAX)
}
