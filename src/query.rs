//! Questions asked of an index: a unit's top images (with the receptive-field box in
//! original-image pixels), a layer's units by statistic, the units an image excites
//! most, and an overview. All read-only; they work while `index` is writing.

use std::path::PathBuf;

use serde::Serialize;

use crate::preprocess::Transform;
use crate::stats::{TopK, UnitStats};
use crate::store::{self, LayerInfo, Store};
use crate::{Error, Result};

/// One of a unit's top images.
#[derive(Clone, Debug, Serialize)]
pub struct TopHit {
    /// 1-based rank.
    pub rank: usize,
    pub image_id: i64,
    /// Relative to the indexed directory, as found there (lossy UTF-8 for display).
    pub path: String,
    /// The file on disk (root joined with the exact relative path).
    pub abs_path: PathBuf,
    /// The network's value at the peak (after the layer's activation).
    pub value: f32,
    /// The value before the activation, by which the index ranks (`None` for
    /// databases ranked after the activation, made before this existed).
    pub pre: Option<f32>,
    /// Whether another image in the unit's list has exactly the same rank value
    /// (order among them: the earlier-indexed image first).
    pub tie: bool,
    /// Peak position in the layer's feature map.
    pub y: usize,
    pub x: usize,
    /// Receptive field of (y, x) in original-image pixels, clipped to the image:
    /// `[x0, y0, x1, y1]`, end exclusive.
    pub box_orig: [u32; 4],
    /// The same, unclipped (may extend past the image).
    pub box_exact: [f64; 4],
    /// How far the field reaches past the left, top, right, bottom borders, in
    /// original pixels.
    pub spill: [f64; 4],
    pub transform: Transform,
}

/// Finds an indexed layer by name, or by an alias the model knows (`conv5`, `logits`).
pub fn layer(store: &Store, name: &str) -> Result<LayerInfo> {
    let layers = store.layers()?;
    if let Some(l) = layers.iter().find(|l| l.name == name) {
        return Ok(l.clone());
    }
    let indexed = layers
        .iter()
        .map(|l| l.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let model = store.run_info()?.model;
    // A misspelling and a real layer this index skipped need different advice.
    let reason = match crate::model::describe(&model) {
        Ok(arch) => match arch.find(name) {
            Some(node) if arch.nodes[node].tap || layers.iter().any(|l| l.node == node) => {
                if let Some(l) = layers.iter().find(|l| l.node == node) {
                    return Ok(l.clone());
                }
                format!(
                    "layer {name} exists in {model} but this index does not hold it; \
                     indexed layers: {indexed}; index into a new --db with --layers {name} \
                     to see it"
                )
            }
            _ => {
                let hint = arch
                    .closest_tap(name)
                    .map(|c| format!("; did you mean {c}?"))
                    .unwrap_or_default();
                format!(
                    "unknown layer {name:?} for {model} (see `neurodex layers --model \
                     {model}`){hint}"
                )
            }
        },
        Err(_) => format!("layer {name:?} is not indexed here; indexed layers: {indexed}"),
    };
    Err(Error::Store {
        path: store.path().to_path_buf(),
        reason,
    })
}

fn check_unit(store: &Store, l: &LayerInfo, unit: usize) -> Result<()> {
    if unit >= l.channels {
        return Err(Error::Store {
            path: store.path().to_path_buf(),
            reason: format!(
                "layer {} has {} units (0..{}); there is no unit {unit}",
                l.name,
                l.channels,
                l.channels - 1
            ),
        });
    }
    Ok(())
}

/// The `k` images that excite `unit` of `layer` most, best first (at most the
/// index's top-K). One entry per image (and per distinct content, unless the index
/// keeps duplicates). Ranked by the value before the layer's activation, higher
/// first; exact ties by the earlier-indexed image (lower image id) first, and marked.
pub fn top(store: &Store, layer_name: &str, unit: usize, k: usize) -> Result<Vec<TopHit>> {
    let l = layer(store, layer_name)?;
    check_unit(store, &l, unit)?;
    let root = store.run_info()?.root;
    let mut out: Vec<TopHit> = Vec::new();
    let mut hits = store.top_hits(l.id, unit)?;
    // Images committed since the top-K was last saved (an index running, or one cut
    // short) compete from their stored peaks, so the answer is never behind them.
    let (_, pending) = store.pending(&l)?;
    if let Some(extra) = pending.get(unit).filter(|t| !t.is_empty()) {
        let mut merged = TopK::new(store.run_info()?.top_k);
        for h in hits.iter().chain(extra.sorted().iter()) {
            merged.offer(*h);
        }
        hits = merged.sorted();
    }
    for hit in hits {
        if out.len() > k {
            break;
        }
        let Some(row) = store.image_row(hit.image_id)? else {
            continue;
        };
        // Changed or vanished since: its entries go at the end of the running index.
        if row.status != "ok" {
            continue;
        }
        let path = row.path;
        let transform: Transform = row
            .transform
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .ok_or_else(|| Error::Store {
                path: store.path().to_path_buf(),
                reason: format!("image {path}: missing or corrupt transform"),
            })?;
        let (y, x) = (hit.y as usize, hit.x as usize);
        let mapped = transform.box_to_original(l.field.unit_box(y, x));
        out.push(TopHit {
            rank: out.len() + 1,
            image_id: hit.image_id,
            abs_path: root.join(&row.rel),
            path,
            value: l.value_of(hit.value),
            pre: l.pre_of(hit.value),
            tie: false,
            y,
            x,
            box_orig: mapped.clipped,
            box_exact: mapped.exact,
            spill: mapped.spill,
            transform,
        });
    }
    // One past `k` was read to see whether the last place is tied.
    let key = |h: &TopHit| h.pre.unwrap_or(h.value);
    for i in 0..out.len() {
        let same = |j: usize| out.get(j).is_some_and(|o| key(o) == key(&out[i]));
        out[i].tie = (i > 0 && same(i - 1)) || same(i + 1);
    }
    out.truncate(k);
    Ok(out)
}

/// Whether a unit never fires on the indexed images: where the layer's activation
/// zeroes negatives, no image drives it above 0 before that activation; elsewhere
/// (and in databases ranked after the activation) its peak is the same number on
/// every image, so nothing ranks the images. A unit with no data yet is not dead.
pub fn never_fires(l: &LayerInfo, s: &UnitStats) -> bool {
    if s.count == 0 {
        return false;
    }
    if l.pre && l.act.zeroes_negatives() {
        s.max <= 0.0
    } else {
        s.max == s.min
    }
}

/// The statistics of one unit.
pub fn unit_stats(store: &Store, l: &LayerInfo, unit: usize) -> Result<UnitStats> {
    check_unit(store, l, unit)?;
    let mut s = store.unit_stats(l.id, unit)?;
    if let Some(extra) = store.pending(l)?.0.get(unit) {
        s.merge(extra);
    }
    Ok(s)
}

/// A unit with its statistics.
#[derive(Clone, Debug, Serialize)]
pub struct UnitSummary {
    pub unit: usize,
    pub count: u64,
    pub mean: Option<f64>,
    pub std: Option<f64>,
    pub max: Option<f64>,
    pub min: Option<f64>,
    /// Approximate median and 99th percentile of the per-image peaks.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    /// Fraction of images on which the unit's peak is <= 0.
    pub sparsity: Option<f64>,
}

/// What `units` orders a layer's units by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortBy {
    Max,
    Mean,
    Sparsity,
    Unit,
}

fn summarize(unit: usize, s: &UnitStats) -> UnitSummary {
    let fin = |v: f64| v.is_finite().then_some(v);
    UnitSummary {
        unit,
        count: s.count,
        mean: s.mean(),
        std: s.std(),
        max: fin(s.max),
        min: fin(s.min),
        p50: s.quantile(0.5),
        p99: s.quantile(0.99),
        sparsity: s.sparsity(),
    }
}

/// Statistics of every unit of a layer; `sort` puts the largest first (unit order
/// for `Unit`). Units with no data go last.
pub fn units(
    store: &Store,
    layer_name: &str,
    sort: SortBy,
) -> Result<(LayerInfo, Vec<UnitSummary>)> {
    let l = layer(store, layer_name)?;
    let mut saved = vec![UnitStats::new(); l.channels];
    for (u, s) in store.layer_stats(l.id)? {
        if let Some(slot) = saved.get_mut(u) {
            *slot = s;
        }
    }
    // Images the saved statistics do not hold yet (see `top`).
    let (pending, _) = store.pending(&l)?;
    for (s, extra) in saved.iter_mut().zip(&pending) {
        s.merge(extra);
    }
    let mut out: Vec<UnitSummary> = saved
        .iter()
        .enumerate()
        .map(|(u, s)| summarize(u, s))
        .collect();
    let key = |u: &UnitSummary| match sort {
        SortBy::Max => u.max,
        SortBy::Mean => u.mean,
        SortBy::Sparsity => u.sparsity,
        SortBy::Unit => Some(-(u.unit as f64)),
    };
    out.sort_by(|a, b| match (key(a), key(b)) {
        (Some(x), Some(y)) => y.total_cmp(&x).then(a.unit.cmp(&b.unit)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.unit.cmp(&b.unit),
    });
    Ok((l, out))
}

/// How strongly one image drives one unit.
#[derive(Clone, Debug, Serialize)]
pub struct ImageUnit {
    pub layer: String,
    pub unit: usize,
    /// The network's value (after the activation).
    pub value: f32,
    /// The value before the activation, when the index has it.
    pub pre: Option<f32>,
    pub y: usize,
    pub x: usize,
    /// `value` over the unit's highest peak on any indexed image.
    pub relative: f64,
    /// Rank of this image in the unit's top-K, when it is in it.
    pub top_rank: Option<usize>,
}

/// An indexed image and the units it excites most.
#[derive(Clone, Debug, Serialize)]
pub struct ImageReport {
    pub path: String,
    pub image_id: i64,
    pub status: String,
    pub error: Option<String>,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub units: Vec<ImageUnit>,
}

/// Looks an image up by its path relative to the root, or by any path to the file
/// under the root (absolute or relative to the current directory).
pub fn find_image(store: &Store, path: &std::path::Path) -> Result<i64> {
    if let Some(id) = store.image_id(&store::path_bytes(path))? {
        return Ok(id);
    }
    let root = store.run_info()?.root;
    if let Ok(abs) = std::fs::canonicalize(path) {
        if let Ok(rel) = abs.strip_prefix(&root) {
            if let Some(id) = store.image_id(&store::path_bytes(rel))? {
                return Ok(id);
            }
        }
    }
    Err(Error::Store {
        path: store.path().to_path_buf(),
        reason: format!(
            "{} is not in the index (give its path relative to {})",
            path.display(),
            root.display()
        ),
    })
}

/// The `n` units of each layer (or of `only`) that `path` drives closest to their
/// collection-wide maximum.
pub fn image(
    store: &Store,
    path: &std::path::Path,
    only: Option<&str>,
    n: usize,
) -> Result<ImageReport> {
    let id = find_image(store, path)?;
    let row = store.image_row(id)?.ok_or_else(|| Error::Store {
        path: store.path().to_path_buf(),
        reason: format!("image {id} vanished from the index while reading it"),
    })?;
    let layers = match only {
        Some(name) => vec![layer(store, name)?],
        None => store.layers()?,
    };
    let mut units = Vec::new();
    for l in &layers {
        let Some(peaks) = store.peaks(id, l.id)? else {
            continue;
        };
        let maxes = store.unit_maxima(l.id)?;
        let mut mine: Vec<ImageUnit> = peaks
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.value.is_nan())
            .map(|(u, p)| {
                let max = maxes.get(u).copied().flatten().unwrap_or(0.0);
                let relative = if max > 0.0 { p.value as f64 / max } else { 0.0 };
                ImageUnit {
                    layer: l.name.clone(),
                    unit: u,
                    value: l.value_of(p.value),
                    pre: l.pre_of(p.value),
                    y: p.y as usize,
                    x: p.x as usize,
                    relative,
                    top_rank: None,
                }
            })
            .collect();
        mine.sort_by(|a, b| b.relative.total_cmp(&a.relative).then(a.unit.cmp(&b.unit)));
        mine.truncate(n);
        for u in &mut mine {
            u.top_rank = store
                .top_hits(l.id, u.unit)?
                .iter()
                .position(|h| h.image_id == id)
                .map(|r| r + 1);
        }
        units.extend(mine);
    }
    Ok(ImageReport {
        path: row.path,
        image_id: id,
        status: row.status,
        error: row.error,
        width: row.width,
        height: row.height,
        units,
    })
}

/// Overview of a database.
#[derive(Clone, Debug, Serialize)]
pub struct Overview {
    pub db: PathBuf,
    pub model: String,
    pub weights_id: String,
    pub root: PathBuf,
    pub tool_version: String,
    pub top_k: usize,
    pub max_pixels: u64,
    pub schema_version: i64,
    pub images_ok: u64,
    pub images_failed: u64,
    pub images_removed: u64,
    /// Indexed files whose content is that of an earlier indexed file.
    pub duplicates: u64,
    /// Whether duplicates take places in the top-K lists.
    pub keep_duplicates: bool,
    /// Failed inputs by kind.
    pub failed_by_kind: Vec<(String, u64)>,
    /// Some failed inputs: (path, kind, reason).
    pub failures: Vec<(String, String, String)>,
    pub layers: Vec<LayerOverview>,
    pub sessions: u64,
    /// Sessions that did not finish (killed, or running now).
    pub sessions_unfinished: u64,
    pub db_bytes: u64,
    /// The one shard of the folder this index holds (`index --shard`), if so.
    pub shard: Option<crate::shard::Shard>,
    /// The indexes merged into this one (`neurodex merge`), and what they cover.
    pub merged_from: Vec<crate::store::MergedInput>,
    pub merged_coverage: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct LayerOverview {
    pub name: String,
    pub units: usize,
    pub height: usize,
    pub width: usize,
    /// Receptive field side (y, x) in network-input pixels.
    pub field: [i64; 2],
    /// `pre`: ranked by the value before the activation; `post`: after it.
    pub ranked: &'static str,
    pub activation: &'static str,
}

pub fn overview(store: &Store, max_failures: usize) -> Result<Overview> {
    let info = store.run_info()?;
    let failures = store.failures(max_failures)?;
    let (sessions, unfinished) = store.sessions()?;
    let merged_from = store.merged_inputs()?;
    let merged_coverage = (!merged_from.is_empty()).then(|| {
        let parts: Vec<_> = merged_from.iter().map(|m| m.shard).collect();
        crate::shard::coverage(&parts).0
    });
    Ok(Overview {
        db: store.path().to_path_buf(),
        model: info.model,
        weights_id: info.weights_id,
        root: info.root,
        tool_version: info.tool_version,
        top_k: info.top_k,
        max_pixels: info.max_pixels,
        schema_version: store.schema_version()?,
        images_ok: store.count_images("ok")?,
        images_failed: store.count_images("failed")?,
        images_removed: store.count_images("removed")?,
        duplicates: store.count_duplicates()?,
        keep_duplicates: info.keep_duplicates,
        failed_by_kind: failures.by_kind,
        failures: failures.some,
        layers: store
            .layers()?
            .into_iter()
            .map(|l| LayerOverview {
                name: l.name,
                units: l.channels,
                height: l.height,
                width: l.width,
                field: l.field.size,
                ranked: if l.pre { "pre" } else { "post" },
                activation: if l.pre { l.act.name() } else { "unrecorded" },
            })
            .collect(),
        sessions,
        sessions_unfinished: unfinished,
        db_bytes: store.db_bytes()?,
        shard: info.shard,
        merged_from,
        merged_coverage,
    })
}
