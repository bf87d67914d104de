//! Which units detect what: every unit's stored per-image peaks scored as a detector
//! of each labelled concept, and the labels put into the index.
//!
//! A unit's score for a concept treats its peak (before the activation, as the
//! rankings use it) as a classifier score over the images the rankings hold:
//! average precision (AP, as scikit-learn computes it: tied peaks form one
//! threshold), the area under the ROC curve (AUROC, ties counted half), and the count
//! of the concept in the unit's top 9 (precision at 9). For label sets of classes
//! (one label per image) each unit also gets the class-selectivity index of Morcos et
//! al. 2018, `(mu_max - mu_rest) / (mu_max + mu_rest)`: mu_max the highest
//! class-conditional mean of its peak after the activation, mu_rest the mean of the
//! other classes' means (peaks shifted by the unit's minimum where they can be
//! negative, so that the index stays in [0, 1]).
//!
//! A unit is counted as a *detector* of a concept (NetDissect counts detectors per
//! layer the same way, by IoU >= 0.04 on segmentations) when AP >= 0.5 and AUROC >=
//! 0.9 over a concept of at least 5 images.
//!
//! Speed: the peak blobs are read once per group of layers that fits the memory
//! budget, one unit's images are sorted once (a radix sort), and one walk down that
//! order scores every concept at once, O(images + labels) per unit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Serialize;

use crate::labels::{self, Table};
use crate::store::{path_bytes, LayerInfo, SetKind, Store};
use crate::{Error, Result};

/// Detector thresholds (see the module doc).
pub const DETECTOR_AP: f32 = 0.5;
pub const DETECTOR_AUROC: f32 = 0.9;
pub const DETECTOR_MIN_IMAGES: usize = 5;
/// The size of the grid "precision at 9" counts.
pub const TOP: usize = 9;
/// Memory for the peaks of the layers scored at once, by default.
pub const DEFAULT_MEMORY: usize = 512 << 20;

// ---------------------------------------------------------------------------------
// Putting labels in.

/// What adding labels did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LabelReport {
    pub set: String,
    pub kind: Option<SetKind>,
    /// Concepts of the set after the write.
    pub concepts: u64,
    /// (image, concept) pairs added, and removed by `--replace`.
    pub added: u64,
    pub removed: u64,
    /// Indexed images that got a label.
    pub images: u64,
    /// Paths the labels named that the index does not hold: how many, and the first few.
    pub missing: u64,
    pub missing_some: Vec<String>,
    /// Label-file lines with a path and no label (the first few).
    pub unlabelled_lines: Vec<usize>,
}

const MISSING_SHOWN: usize = 20;

/// Adds a label file's rows to the set `set`: each path looked up in the index
/// (those it does not hold are counted and listed, the rest go in).
pub fn add_table(
    store: &mut Store,
    table: &Table,
    set: &str,
    origin: &str,
    replace: bool,
) -> Result<LabelReport> {
    let mut rep = LabelReport {
        set: set.into(),
        unlabelled_lines: table.unlabelled.clone(),
        ..Default::default()
    };
    let mut pairs = Vec::new();
    for (rel, names) in &table.rows {
        match indexed_id(store, rel)? {
            Some(id) => {
                rep.images += 1;
                pairs.extend(names.iter().map(|n| (id, n.clone())));
            }
            None => miss(&mut rep, rel),
        }
    }
    put(store, set, origin, &pairs, replace, rep)
}

/// Labels every indexed image by its parent folder's name (`labels::from_dirs`):
/// the set `imagenet` for WordNet-id folders, else `folders` (or `set` when given).
pub fn add_from_dirs(store: &mut Store, set: Option<&str>, replace: bool) -> Result<LabelReport> {
    let images = store.ok_images(0, u64::MAX)?;
    let (auto, pairs) = labels::from_dirs(images.iter().map(|(_, p)| Path::new(p.as_str())));
    let ids: HashMap<&Path, i64> = images
        .iter()
        .map(|(id, p)| (Path::new(p.as_str()), *id))
        .collect();
    let pairs: Vec<(i64, String)> = pairs
        .into_iter()
        .filter_map(|(p, l)| ids.get(p.as_path()).map(|&id| (id, l)))
        .collect();
    let set = set.map_or(auto.clone(), str::to_string);
    let origin = if auto == "imagenet" {
        "folder names (ImageNet-1k WordNet ids)"
    } else {
        "folder names"
    };
    let rep = LabelReport {
        set: set.clone(),
        images: pairs.len() as u64,
        ..Default::default()
    };
    put(store, &set, origin, &pairs, replace, rep)
}

/// Whether the indexed images sit in ImageNet-style folders (every one's parent a
/// WordNet id of ImageNet-1k), so that `index` labels them without being asked.
pub fn looks_like_imagenet(store: &Store) -> Result<bool> {
    let images = store.ok_images(0, u64::MAX)?;
    let (set, pairs) = labels::from_dirs(images.iter().map(|(_, p)| Path::new(p.as_str())));
    Ok(set == "imagenet" && pairs.len() == images.len())
}

/// The image files under `dir` (a folder under the indexed root) that the index
/// does not hold, as paths relative to the root; an error when `dir` is not under
/// the root.
pub fn unindexed_under(store: &Store, dir: &Path) -> Result<Vec<PathBuf>> {
    let prefix = under_root(store, dir)?;
    let mut out = Vec::new();
    for e in crate::crawl::walk(dir) {
        if let crate::crawl::Found::File { .. } = e.what {
            let rel = prefix.join(&e.rel);
            if indexed_id(store, &rel)?.is_none() {
                out.push(rel);
            }
        }
    }
    Ok(out)
}

/// Labels the indexed images under `dir` (a folder under the indexed root) with the
/// concept `name`, in the set `concepts` (ad hoc concepts, any number per image).
pub fn add_concept_dir(
    store: &mut Store,
    name: &str,
    dir: &Path,
    replace: bool,
) -> Result<LabelReport> {
    let prefix = under_root(store, dir)?;
    let mut rep = LabelReport {
        set: CONCEPT_SET.into(),
        ..Default::default()
    };
    let mut pairs = Vec::new();
    for e in crate::crawl::walk(dir) {
        if let crate::crawl::Found::File { .. } = e.what {
            let rel = prefix.join(&e.rel);
            match indexed_id(store, &rel)? {
                Some(id) => {
                    rep.images += 1;
                    pairs.push((id, name.to_string()));
                }
                None => miss(&mut rep, &rel),
            }
        }
    }
    if replace {
        store.remove_labels(CONCEPT_SET, Some(name))?;
    }
    let origin = format!("--concept {name}={}", dir.display());
    put(store, CONCEPT_SET, &origin, &pairs, false, rep)
}

/// The set `--concept NAME=DIR` concepts go in.
pub const CONCEPT_SET: &str = "concepts";

fn put(
    store: &mut Store,
    set: &str,
    origin: &str,
    pairs: &[(i64, String)],
    replace: bool,
    mut rep: LabelReport,
) -> Result<LabelReport> {
    let w = store.put_labels(set, origin, pairs, replace)?;
    rep.kind = w.kind;
    rep.concepts = w.concepts;
    rep.added = w.added;
    rep.removed = w.removed;
    Ok(rep)
}

fn miss(rep: &mut LabelReport, rel: &Path) {
    rep.missing += 1;
    if rep.missing_some.len() < MISSING_SHOWN {
        rep.missing_some.push(rel.display().to_string());
    }
}

/// The id of an indexed (status ok) image at `rel` under the root.
fn indexed_id(store: &Store, rel: &Path) -> Result<Option<i64>> {
    Ok(store
        .find_image(&path_bytes(rel))?
        .filter(|k| k.status == "ok")
        .map(|k| k.id))
}

/// `dir` relative to the indexed root (as given, else both resolved).
fn under_root(store: &Store, dir: &Path) -> Result<PathBuf> {
    let root = store.run_info()?.root;
    let not_dir = |e| Error::io(dir, e);
    if !std::fs::metadata(dir).map_err(not_dir)?.is_dir() {
        return Err(Error::NotADirectory(dir.to_path_buf()));
    }
    let abs = std::path::absolute(dir).map_err(not_dir)?;
    if let Ok(p) = abs.strip_prefix(&root) {
        return Ok(p.to_path_buf());
    }
    let canon = |p: &Path| std::fs::canonicalize(p).map_err(|e| Error::io(p, e));
    canon(dir)?
        .strip_prefix(canon(&root)?)
        .map(Path::to_path_buf)
        .map_err(|_| Error::Labels {
            path: dir.to_path_buf(),
            reason: format!(
                "not under the indexed root {}; a concept's images must be in the index \
                 (copy or link them under the root, then label them)",
                root.display()
            ),
        })
}

/// How many of some images (a unit's top-k) show a concept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LabelCount {
    pub set: String,
    pub concept: String,
    pub count: usize,
}

/// The labels of `images`, counted: most frequent first, then by set and name.
pub fn label_counts(store: &Store, images: &[i64]) -> Result<Vec<LabelCount>> {
    let mut counts: std::collections::BTreeMap<(String, String), usize> = Default::default();
    for &id in images {
        for key in store.image_concepts(id)? {
            *counts.entry(key).or_default() += 1;
        }
    }
    let mut v: Vec<LabelCount> = counts
        .into_iter()
        .map(|((set, concept), count)| LabelCount {
            set,
            concept,
            count,
        })
        .collect();
    v.sort_by_key(|l| std::cmp::Reverse(l.count));
    Ok(v)
}

// ---------------------------------------------------------------------------------
// Scoring.

/// What to score.
#[derive(Clone, Debug)]
pub struct Options {
    /// Layer names (`None`: every indexed layer).
    pub layers: Option<Vec<String>>,
    /// Concepts, by name or `set/name` (`None`: every concept).
    pub concepts: Option<Vec<String>>,
    /// Bytes for the peaks held at once (layers are scored in groups that fit).
    pub memory: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            layers: None,
            concepts: None,
            memory: DEFAULT_MEMORY,
        }
    }
}

/// A concept as scored.
#[derive(Clone, Debug, Serialize)]
pub struct ConceptInfo {
    pub id: i64,
    pub set: String,
    pub name: String,
    pub kind: SetKind,
    /// Scored images showing it.
    pub images: usize,
}

impl ConceptInfo {
    /// `set/name`, as `--concept` accepts it.
    pub fn qualified(&self) -> String {
        format!("{}/{}", self.set, self.name)
    }
}

/// One unit's score for one concept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Score {
    pub ap: f32,
    pub auroc: f32,
    /// Images of the concept among the unit's top 9 (fewer when fewer are scored).
    pub top9: u8,
}

impl Score {
    /// Precision at 9: `top9` over the grid's size.
    pub fn p9(&self, images: usize) -> f32 {
        self.top9 as f32 / TOP.min(images).max(1) as f32
    }
}

/// A unit's class-selectivity over one label set of classes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Selectivity {
    pub index: f32,
    /// The concept (index into `Scores::concepts`) with the highest mean.
    pub class: usize,
}

/// Every scored unit of one layer.
#[derive(Clone, Debug, Serialize)]
pub struct LayerScores {
    pub layer: String,
    pub layer_id: i64,
    pub units: usize,
    /// `[unit * concepts + concept]`.
    #[serde(skip)]
    pub scores: Vec<Score>,
    /// Per label set of classes (`Scores::class_sets`), `[unit]`.
    #[serde(skip)]
    pub selectivity: Vec<Vec<Selectivity>>,
    /// Each unit's mean peak after the activation (its typical activation).
    #[serde(skip)]
    pub mean_value: Vec<f32>,
}

/// A concept left out, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub concept: String,
    pub reason: String,
}

/// Every unit of the chosen layers scored against the chosen concepts.
#[derive(Clone, Debug, Serialize)]
pub struct Scores {
    /// Images scored (those the rankings hold).
    pub images: usize,
    pub concepts: Vec<ConceptInfo>,
    /// The label sets of classes that selectivity is computed over.
    pub class_sets: Vec<String>,
    pub layers: Vec<LayerScores>,
    pub skipped: Vec<Skipped>,
}

/// A unit and its score for one concept.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Ranked<'a> {
    #[serde(skip)]
    pub layer: &'a LayerScores,
    pub unit: usize,
    pub score: Score,
}

/// A layer's count of detectors, in NetDissect's terms.
#[derive(Clone, Debug, Serialize)]
pub struct LayerSummary {
    pub layer: String,
    pub units: usize,
    /// Units that detect at least one concept.
    pub detectors: usize,
    /// Distinct concepts those units detect best (each unit counted for its best one).
    pub concepts: usize,
}

impl Scores {
    fn n(&self) -> usize {
        self.concepts.len()
    }

    /// The score of `unit` of `layer` for concept index `c`.
    pub fn score(&self, layer: &LayerScores, unit: usize, c: usize) -> Score {
        layer.scores[unit * self.n() + c]
    }

    /// Concept indices matching `name` (`set/name` or a bare name).
    pub fn find(&self, name: &str) -> Vec<usize> {
        (0..self.n())
            .filter(|&c| {
                let k = &self.concepts[c];
                k.qualified() == name || k.name == name
            })
            .collect()
    }

    /// Whether a score counts as a detector of concept `c`.
    pub fn is_detector(&self, c: usize, s: &Score) -> bool {
        self.concepts[c].images >= DETECTOR_MIN_IMAGES
            && s.ap >= DETECTOR_AP
            && s.auroc >= DETECTOR_AUROC
    }

    /// Every unit for concept `c`, best first (AP, then AUROC, then network order).
    pub fn ranked(&self, c: usize) -> Vec<Ranked<'_>> {
        let mut v: Vec<Ranked> = self
            .layers
            .iter()
            .flat_map(|l| {
                (0..l.units).map(move |u| Ranked {
                    layer: l,
                    unit: u,
                    score: l.scores[u * self.n() + c],
                })
            })
            .collect();
        v.sort_by(|a, b| {
            b.score
                .ap
                .total_cmp(&a.score.ap)
                .then(b.score.auroc.total_cmp(&a.score.auroc))
        });
        v
    }

    /// A unit's `k` best concepts: `(concept index, score)`, best AP first.
    pub fn best(&self, layer: &LayerScores, unit: usize, k: usize) -> Vec<(usize, Score)> {
        let mut v: Vec<(usize, Score)> = (0..self.n())
            .map(|c| (c, self.score(layer, unit, c)))
            .collect();
        // Ranked by AP above the concept's base rate, so that a common concept does
        // not come first only for being common.
        let lift = |c: usize, s: &Score| s.ap - self.concepts[c].images as f32 / self.images as f32;
        v.sort_by(|a, b| lift(b.0, &b.1).total_cmp(&lift(a.0, &a.1)));
        v.truncate(k);
        v
    }

    pub fn layer(&self, name: &str) -> Option<&LayerScores> {
        self.layers.iter().find(|l| l.layer == name)
    }

    /// Per layer: how many units are detectors, of how many distinct concepts.
    pub fn summary(&self) -> Vec<LayerSummary> {
        self.layers
            .iter()
            .map(|l| {
                let mut detectors = 0;
                let mut distinct = std::collections::BTreeSet::new();
                for u in 0..l.units {
                    let best = (0..self.n())
                        .filter(|&c| self.is_detector(c, &self.score(l, u, c)))
                        .max_by(|&a, &b| self.score(l, u, a).ap.total_cmp(&self.score(l, u, b).ap));
                    if let Some(c) = best {
                        detectors += 1;
                        distinct.insert(c);
                    }
                }
                LayerSummary {
                    layer: l.layer.clone(),
                    units: l.units,
                    detectors,
                    concepts: distinct.len(),
                }
            })
            .collect()
    }
}

/// Scores the units of the chosen layers against the chosen concepts, from the
/// stored peaks of every image the rankings hold.
pub fn score(store: &Store, opts: &Options) -> Result<Scores> {
    let all_layers = store.layers()?;
    let layers: Vec<LayerInfo> = match &opts.layers {
        None => all_layers,
        Some(names) => names
            .iter()
            .map(|n| crate::query::layer(store, n))
            .collect::<Result<_>>()?,
    };
    let images = store.ranked_images()?;
    let dense: HashMap<i64, u32> = images
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i as u32))
        .collect();
    let n = images.len();

    // The concepts asked for, with their images.
    let stored = store.concepts()?;
    let wanted: Vec<&crate::store::Concept> = match &opts.concepts {
        None => stored.iter().collect(),
        Some(names) => {
            let mut v = Vec::new();
            for name in names {
                let hits: Vec<_> = stored
                    .iter()
                    .filter(|c| format!("{}/{}", c.set, c.name) == *name || c.name == *name)
                    .collect();
                if hits.is_empty() {
                    return Err(Error::Store {
                        path: store.path().to_path_buf(),
                        reason: format!(
                            "no concept {name:?} in this index (`neurodex labels --db {}` \
                             lists them)",
                            store.path().display()
                        ),
                    });
                }
                v.extend(hits);
            }
            v.dedup_by_key(|c| c.id);
            v
        }
    };
    let mut members: HashMap<i64, Vec<u32>> = HashMap::new();
    for (cid, img) in store.concept_images()? {
        if let Some(&d) = dense.get(&img) {
            members.entry(cid).or_default().push(d);
        }
    }
    let mut concepts = Vec::new();
    let mut skipped = Vec::new();
    let mut lists: Vec<Vec<u32>> = Vec::new();
    for c in wanted {
        let list = members.remove(&c.id).unwrap_or_default();
        let q = format!("{}/{}", c.set, c.name);
        if list.is_empty() {
            skipped.push(Skipped {
                concept: q,
                reason: "no indexed image shows it".into(),
            });
            continue;
        }
        if list.len() == n {
            skipped.push(Skipped {
                concept: q,
                reason: format!(
                    "all {n} indexed images show it: with nothing to tell it from, AP and \
                     AUROC say nothing"
                ),
            });
            continue;
        }
        concepts.push(ConceptInfo {
            id: c.id,
            set: c.set.clone(),
            name: c.name.clone(),
            kind: c.kind,
            images: list.len(),
        });
        lists.push(list);
    }
    let labels = Labels::new(n, &lists);
    let mut class_sets: Vec<String> = concepts
        .iter()
        .filter(|c| c.kind == SetKind::Classes)
        .map(|c| c.set.clone())
        .collect();
    class_sets.sort();
    class_sets.dedup();
    // Each image's class in each set of classes (u32::MAX: unlabelled there).
    let class_of: Vec<Vec<u32>> = class_sets
        .iter()
        .map(|s| {
            let mut v = vec![u32::MAX; n];
            for (c, list) in lists.iter().enumerate() {
                if concepts[c].set == *s {
                    for &i in list {
                        v[i as usize] = c as u32;
                    }
                }
            }
            v
        })
        .collect();

    let ctx = UnitCtx {
        labels: &labels,
        positives: lists.iter().map(Vec::len).collect(),
        class_of: &class_of,
        k: concepts.len(),
    };
    let mut out: Vec<LayerScores> = layers
        .iter()
        .map(|l| LayerScores {
            layer: l.name.clone(),
            layer_id: l.id,
            units: l.channels,
            scores: vec![Score::default(); l.channels * concepts.len()],
            selectivity: vec![vec![Selectivity::default(); l.channels]; class_sets.len()],
            mean_value: vec![0.0; l.channels],
        })
        .collect();
    if n == 0 {
        return Ok(Scores {
            images: 0,
            concepts,
            class_sets,
            layers: out,
            skipped,
        });
    }
    for group in groups(&layers, n, opts.memory) {
        // One pass over the stored peaks fills this group's values, unit-major.
        let mut vals: Vec<Vec<f32>> = group
            .iter()
            .map(|g| vec![f32::NAN; (g.to - g.from) * n])
            .collect();
        let ids: Vec<i64> = group.iter().map(|g| layers[g.layer].id).collect();
        store.scan_peaks(&ids, |image, layer, blob| {
            let Some(&d) = dense.get(&image) else {
                return Ok(());
            };
            let values = crate::peaks::values(blob).ok_or(Error::Corrupt {
                record: "peaks",
                len: blob.len(),
                unit: 8,
            })?;
            let values: Vec<f32> = values.collect();
            for (gi, g) in group.iter().enumerate() {
                if layers[g.layer].id != layer {
                    continue;
                }
                for u in g.from..g.to.min(values.len()) {
                    vals[gi][(u - g.from) * n + d as usize] = values[u];
                }
            }
            Ok(())
        })?;
        for (gi, g) in group.iter().enumerate() {
            let l = &layers[g.layer];
            let results: Vec<UnitResult> = vals[gi]
                .par_chunks(n)
                .map_init(|| Scratch::new(n, ctx.k), |s, v| score_unit(&ctx, l, v, s))
                .collect();
            let dst = &mut out[g.layer];
            for (j, r) in results.into_iter().enumerate() {
                let u = g.from + j;
                dst.scores[u * ctx.k..(u + 1) * ctx.k].copy_from_slice(&r.scores);
                for (s, sel) in r.selectivity.into_iter().enumerate() {
                    dst.selectivity[s][u] = sel;
                }
                dst.mean_value[u] = r.mean_value;
            }
        }
    }
    Ok(Scores {
        images: n,
        concepts,
        class_sets,
        layers: out,
        skipped,
    })
}

/// One class a unit pushes through the classifier (the label-free hint).
#[derive(Clone, Debug, Serialize)]
pub struct Hint {
    pub class: usize,
    pub name: String,
    /// The classifier's weight from the unit to the class.
    pub weight: f32,
    /// `weight` times the unit's typical activation (its mean peak after the
    /// activation): what the unit adds to the class's logit on a typical image.
    pub push: f32,
}

/// For a layer feeding the network's final fully connected layer through global
/// pooling only: per unit, the `k` classes it pushes most (`weight * mean_value`);
/// `None` for other layers. Needs no labels: it reads the classifier, as the
/// class-activation-map view does. (The classifier sees each unit's spatial mean,
/// which is below its peak: the push ranks classes, it is not the logit itself.)
pub fn hints(
    net: &crate::model::Network,
    layer: &LayerInfo,
    mean_value: &[f32],
    k: usize,
) -> Option<Vec<Vec<Hint>>> {
    let cols = net.classifier_columns(layer.node)?;
    Some(
        (0..layer.channels)
            .map(|u| {
                let typical = mean_value.get(u).copied().unwrap_or(0.0);
                let mut v: Vec<(usize, f32, f32)> = cols
                    .iter()
                    .enumerate()
                    .map(|(c, w)| (c, w[u], w[u] * typical))
                    .collect();
                // By the push; for a unit that never fires (push 0), by the weight.
                v.sort_by(|a, b| {
                    b.2.total_cmp(&a.2)
                        .then(b.1.total_cmp(&a.1))
                        .then(a.0.cmp(&b.0))
                });
                v.truncate(k);
                v.into_iter()
                    .map(|(class, weight, push)| Hint {
                        class,
                        name: net.labels.name(class),
                        weight,
                        push,
                    })
                    .collect()
            })
            .collect(),
    )
}

/// Units `from..to` of layer index `layer`.
#[derive(Clone, Copy, Debug)]
struct Chunk {
    layer: usize,
    from: usize,
    to: usize,
}

/// Layers (or parts of one) in groups whose values for `n` images fit `memory`.
fn groups(layers: &[LayerInfo], n: usize, memory: usize) -> Vec<Vec<Chunk>> {
    let per_unit = n.max(1) * std::mem::size_of::<f32>();
    let cap = (memory / per_unit).max(1);
    let mut out: Vec<Vec<Chunk>> = Vec::new();
    let mut cur: Vec<Chunk> = Vec::new();
    let mut used = 0;
    for (li, l) in layers.iter().enumerate() {
        let mut from = 0;
        while from < l.channels {
            if used == cap {
                out.push(std::mem::take(&mut cur));
                used = 0;
            }
            let to = l.channels.min(from + cap - used);
            cur.push(Chunk {
                layer: li,
                from,
                to,
            });
            used += to - from;
            from = to;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Each image's concepts (indices into the scored list), compressed rows.
struct Labels {
    start: Vec<u32>,
    concepts: Vec<u32>,
}

impl Labels {
    fn new(n: usize, lists: &[Vec<u32>]) -> Labels {
        let mut count = vec![0u32; n + 1];
        for l in lists {
            for &i in l {
                count[i as usize + 1] += 1;
            }
        }
        for i in 0..n {
            count[i + 1] += count[i];
        }
        let mut fill = count.clone();
        let mut concepts = vec![0u32; count[n] as usize];
        for (c, l) in lists.iter().enumerate() {
            for &i in l {
                concepts[fill[i as usize] as usize] = c as u32;
                fill[i as usize] += 1;
            }
        }
        Labels {
            start: count,
            concepts,
        }
    }

    fn of(&self, i: u32) -> &[u32] {
        &self.concepts[self.start[i as usize] as usize..self.start[i as usize + 1] as usize]
    }
}

struct UnitCtx<'a> {
    labels: &'a Labels,
    positives: Vec<usize>,
    class_of: &'a [Vec<u32>],
    k: usize,
}

struct UnitResult {
    scores: Vec<Score>,
    selectivity: Vec<Selectivity>,
    mean_value: f32,
}

/// Per-thread buffers, reused from unit to unit.
struct Scratch {
    order: Vec<u64>,
    tmp: Vec<u64>,
    in_group: Vec<u32>,
    touched: Vec<u32>,
    tp: Vec<u64>,
    ap: Vec<f64>,
    auc: Vec<f64>,
    sums: Vec<f64>,
    counts: Vec<u64>,
}

impl Scratch {
    fn new(n: usize, k: usize) -> Scratch {
        Scratch {
            order: Vec::with_capacity(n),
            tmp: vec![0; n],
            in_group: vec![0; k],
            touched: Vec::new(),
            tp: vec![0; k],
            ap: vec![0.0; k],
            auc: vec![0.0; k],
            sums: vec![0.0; k],
            counts: vec![0; k],
        }
    }
}

/// A key that sorts ascending as the value sorts descending (NaN last).
fn desc_key(v: f32) -> u32 {
    if v.is_nan() {
        return u32::MAX;
    }
    let b = v.to_bits();
    let asc = if b >> 31 == 1 { !b } else { b | 1 << 31 };
    // !asc puts the highest value first (-0.0 just below 0.0, as `f32::total_cmp`
    // orders them); u32::MAX is left to NaN alone.
    (!asc).min(u32::MAX - 1)
}

/// Sorts `(key << 32 | image)` by key, stably (images in order within a tie): LSD
/// radix on the key's 32 bits in 11-bit digits.
fn radix_sort(v: &mut Vec<u64>, tmp: &mut Vec<u64>) {
    tmp.resize(v.len(), 0);
    for shift in [32u32, 43, 54] {
        let mut count = [0usize; 2049];
        for &x in v.iter() {
            count[((x >> shift) & 0x7ff) as usize + 1] += 1;
        }
        if count[1..].contains(&v.len()) {
            continue; // every key has this digit: the pass would change nothing
        }
        for i in 0..2048 {
            count[i + 1] += count[i];
        }
        for &x in v.iter() {
            let d = ((x >> shift) & 0x7ff) as usize;
            tmp[count[d]] = x;
            count[d] += 1;
        }
        std::mem::swap(v, tmp);
    }
}

fn score_unit(ctx: &UnitCtx, layer: &LayerInfo, v: &[f32], s: &mut Scratch) -> UnitResult {
    let n = v.len();
    let k = ctx.k;
    s.order.clear();
    s.order.extend(
        v.iter()
            .enumerate()
            .map(|(i, &x)| (desc_key(x) as u64) << 32 | i as u64),
    );
    radix_sort(&mut s.order, &mut s.tmp);
    s.tp.iter_mut().for_each(|x| *x = 0);
    s.ap.iter_mut().for_each(|x| *x = 0.0);
    s.auc.iter_mut().for_each(|x| *x = 0.0);
    let mut scores = vec![Score::default(); k];
    let mut i = 0;
    while i < n {
        let key = s.order[i] >> 32;
        let mut j = i;
        while j < n && s.order[j] >> 32 == key {
            let img = s.order[j] as u32;
            for &c in ctx.labels.of(img) {
                if s.in_group[c as usize] == 0 {
                    s.touched.push(c);
                }
                s.in_group[c as usize] += 1;
                if j < TOP {
                    scores[c as usize].top9 += 1;
                }
            }
            j += 1;
        }
        // The tied run i..j is one threshold: all its images enter together.
        let g = (j - i) as u64;
        for &c in &s.touched {
            let c = c as usize;
            let pos_g = s.in_group[c] as u64;
            let p = ctx.positives[c] as f64;
            let neg = (n - ctx.positives[c]) as f64;
            let fp_before = i as u64 - s.tp[c];
            s.tp[c] += pos_g;
            s.ap[c] += pos_g as f64 / p * (s.tp[c] as f64 / j as f64);
            let neg_g = (g - pos_g) as f64;
            s.auc[c] += pos_g as f64 * (neg - fp_before as f64 - neg_g + 0.5 * neg_g);
            s.in_group[c] = 0;
        }
        s.touched.clear();
        i = j;
    }
    for (c, sc) in scores.iter_mut().enumerate() {
        let p = ctx.positives[c] as f64;
        let neg = (n - ctx.positives[c]) as f64;
        sc.ap = s.ap[c] as f32;
        sc.auroc = (s.auc[c] / (p * neg)) as f32;
    }
    // Class selectivity, on the values after the activation.
    let post = |x: f32| layer.value_of(x);
    let finite = || v.iter().map(|&x| post(x)).filter(|x| x.is_finite());
    let min = finite().fold(f32::INFINITY, f32::min);
    let shift = if min < 0.0 { -min as f64 } else { 0.0 };
    let (sum, cnt) = finite().fold((0.0f64, 0u64), |(s, c), x| (s + x as f64, c + 1));
    let mean_value = if cnt > 0 {
        (sum / cnt as f64) as f32
    } else {
        0.0
    };
    let mut selectivity = Vec::with_capacity(ctx.class_of.len());
    for classes in ctx.class_of {
        s.sums.iter_mut().for_each(|x| *x = 0.0);
        s.counts.iter_mut().for_each(|x| *x = 0);
        for (i, &c) in classes.iter().enumerate() {
            let x = post(v[i]);
            if c != u32::MAX && x.is_finite() {
                s.sums[c as usize] += x as f64 + shift;
                s.counts[c as usize] += 1;
            }
        }
        let means: Vec<(usize, f64)> = (0..k)
            .filter(|&c| s.counts[c] > 0)
            .map(|c| (c, s.sums[c] / s.counts[c] as f64))
            .collect();
        let sel = match means.iter().max_by(|a, b| a.1.total_cmp(&b.1)) {
            Some(&(class, max)) if means.len() > 1 => {
                let rest =
                    (means.iter().map(|m| m.1).sum::<f64>() - max) / (means.len() - 1) as f64;
                let index = if max + rest > 0.0 {
                    (max - rest) / (max + rest)
                } else {
                    0.0
                };
                Selectivity {
                    index: index as f32,
                    class,
                }
            }
            _ => Selectivity::default(),
        };
        selectivity.push(sel);
    }
    UnitResult {
        scores,
        selectivity,
        mean_value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_values_highest_first_nan_last() {
        let vals = [
            1.0f32,
            -2.0,
            f32::NAN,
            0.0,
            3.5,
            -0.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let mut v: Vec<u64> = vals
            .iter()
            .enumerate()
            .map(|(i, &x)| (desc_key(x) as u64) << 32 | i as u64)
            .collect();
        let mut tmp = Vec::new();
        radix_sort(&mut v, &mut tmp);
        let order: Vec<usize> = v.iter().map(|&x| x as u32 as usize).collect();
        assert_eq!(order, vec![6, 4, 0, 3, 5, 1, 7, 2]);
    }

    #[test]
    fn groups_fit_the_budget_and_cover_every_unit_once() {
        let l = |c| LayerInfo {
            id: 0,
            name: String::new(),
            node: 0,
            channels: c,
            height: 1,
            width: 1,
            field: crate::receptive::Field::PIXEL,
            pre: true,
            act: crate::arch::Act::None,
        };
        let layers = [l(3), l(10), l(4)];
        // 5 units of 100 images fit in 2,000 bytes.
        let g = groups(&layers, 100, 2000);
        for grp in &g {
            assert!(grp.iter().map(|c| c.to - c.from).sum::<usize>() <= 5);
        }
        let total: usize = g.iter().flatten().map(|c| c.to - c.from).sum();
        assert_eq!(total, 17);
    }
}
