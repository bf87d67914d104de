//! A static HTML gallery of an index, readable from `file://` or any static server:
//! an index of layers, a page per layer listing its units (one small contact sheet
//! each, sortable by max, mean and sparsity, with a jump-to-unit box), and a page per
//! unit with its top images large, their values before and after the activation, its
//! peak histogram, its filter where one picture shows it, and keyboard links to its
//! neighbours. The layer's data is in JSON beside its page. When the index has
//! labels (`neurodex labels`), unit pages list their best concepts (AP, AUROC, top-9
//! counts, class selectivity, the classifier hint), layer pages sort by best AP and
//! selectivity, and `concepts.html` shows each concept's detector units with their
//! sheets.
//!
//! The gallery stays small because pictures are shared wherever they can be: each
//! top image is written once, as one whole-image thumbnail (`img/`), and the unit
//! pages crop it (active regions, deep layers) or lay the unit's map over it (heat)
//! in the browser; only what is the unit's own is a file, one contact sheet per unit
//! (`s/`): its receptive-field crops where those fit the input, and a small sheet
//! for the layer page. Units that never fire get no pictures at all.
//!
//! Work is image-major: each image is decoded and run through the network once, and
//! every tile that shows it is cut then, in parallel.

mod pages;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use image::RgbImage;
use rayon::prelude::*;

use crate::model::Tap;
use crate::preprocess;
use crate::query::{self, TopHit};
use crate::render::grid::{self, Tile};
use crate::render::region;
use crate::render::tile::{Pyramid, UnitMap};
use crate::render::top::{self, Mode};
use crate::shots;
use crate::stats::UnitStats;
use crate::store::{LayerInfo, Store};
use crate::{Error, Result};

#[derive(Clone, Debug)]
pub struct Options {
    pub out: PathBuf,
    /// Top images per unit.
    pub k: usize,
    /// Tile side in pixels.
    pub tile: u32,
    /// Draw activation heat maps (re-runs each top image through the network).
    pub heat: bool,
    /// Weights when the index was not built with the embedded ones.
    pub weights: Option<PathBuf>,
    /// Only these layers (default: all indexed).
    pub layers: Option<Vec<String>>,
    /// Unit pages also show each top image's gradient projection (a projection
    /// mode: backprop, guided or deconv), cut as the tiles are.
    pub projections: Option<Mode>,
}

impl Options {
    pub fn new(out: impl Into<PathBuf>) -> Options {
        Options {
            out: out.into(),
            k: 9,
            tile: 112,
            heat: true,
            weights: None,
            layers: None,
            projections: None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub layers: usize,
    pub units: usize,
    /// Units that never fire on the indexed images (no pictures written).
    pub dead: usize,
    pub pages: usize,
    /// Picture files written (thumbnails and contact sheets).
    pub tiles: usize,
    pub images: usize,
    pub missing_images: usize,
    pub warnings: Vec<String>,
}

/// Side of a cell of the layer page's small contact sheets.
pub const MINI: u32 = 32;
/// Longest side of a cell of the browser-side heat maps (larger maps are max-pooled:
/// a 112 x 112 stem map would weigh 12 kB per image on the page).
pub const MAP_SIDE: usize = 28;

/// A name safe as one path component (layer names hold dots, never slashes, but be sure).
pub fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// File names, relative to the gallery root.
fn thumb_file(image_id: i64) -> String {
    format!("img/{image_id}.jpg")
}
fn sheet_file(l: &str, unit: usize) -> String {
    format!("s/{}/{unit}.jpg", slug(l))
}
fn mini_file(l: &str, unit: usize) -> String {
    format!("s/{}/{unit}m.jpg", slug(l))
}
fn filter_file(l: &str, unit: usize) -> String {
    format!("f/{}/{unit}.png", slug(l))
}
fn visual_file(l: &str, unit: usize) -> String {
    format!("v/{}/{unit}.png", slug(l))
}
fn projection_file(l: &str, unit: usize) -> String {
    format!("g/{}/{unit}.jpg", slug(l))
}
fn layer_page(l: &str) -> String {
    format!("layers/{}.html", slug(l))
}
fn layer_json(l: &str) -> String {
    format!("layers/{}.json", slug(l))
}
fn unit_page(l: &str, unit: usize) -> String {
    format!("units/{}/{unit}.html", slug(l))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    crate::output::write(path, bytes)
}

fn write_jpeg(img: &RgbImage, path: &Path, quality: u8) -> Result<()> {
    crate::output::write_with(path, |w| {
        image::codecs::jpeg::JpegEncoder::new_with_quality(w, quality)
            .encode_image(img)
            .map_err(|cause| Error::Encode {
                path: path.to_path_buf(),
                cause,
            })
    })
}

/// A unit's map on one image, max-pooled to at most `MAP_SIDE` a side (so the peak
/// stays visible) and quantised to 0..=255 of the unit's heat scale.
#[derive(Clone, Debug)]
pub(crate) struct HeatMap {
    pub w: usize,
    pub h: usize,
    /// Map cells pooled into one.
    pub factor: usize,
    pub bytes: Vec<u8>,
}

impl HeatMap {
    fn pooled(map: &UnitMap, hi: f32) -> HeatMap {
        let factor = map.h.max(map.w).div_ceil(MAP_SIDE).max(1);
        let (h, w) = (map.h.div_ceil(factor), map.w.div_ceil(factor));
        let mut bytes = vec![0u8; h * w];
        for (i, b) in bytes.iter_mut().enumerate() {
            let (py, px) = (i / w, i % w);
            let mut m = f32::NEG_INFINITY;
            for y in py * factor..((py + 1) * factor).min(map.h) {
                for x in px * factor..((px + 1) * factor).min(map.w) {
                    m = m.max(map.data[y * map.w + x]);
                }
            }
            *b = (m / hi * 255.0).round().clamp(0.0, 255.0) as u8;
        }
        HeatMap {
            w,
            h,
            factor,
            bytes,
        }
    }
}

/// What the pages show of one top image beyond its thumbnail.
#[derive(Clone, Debug, Default)]
pub(crate) struct Shown {
    /// Where the unit fired, in original pixels (layers shown by region).
    pub region: Option<[f64; 4]>,
    pub heat: Option<HeatMap>,
}

/// A unit's pictures as cut from its top images, by rank.
#[derive(Default)]
struct UnitTiles {
    /// Receptive-field crops at the tile size (layers shown by crop).
    crops: BTreeMap<usize, RgbImage>,
    minis: BTreeMap<usize, RgbImage>,
}

/// One top image's place: layer, unit, rank (0-based) and its hit.
struct Job<'a> {
    layer: usize,
    unit: usize,
    slot: usize,
    hit: &'a TopHit,
}

/// How a layer's top images are shown: their receptive field while it fits in the
/// network input, the active region beyond (needs the maps, so the network).
fn layer_mode(l: &LayerInfo, input: u32, maps: bool) -> Mode {
    match top::default_mode(&l.field, input) {
        Mode::Region if maps => Mode::Region,
        _ => Mode::Crop,
    }
}

/// Everything the pages are made from.
pub(crate) struct Data {
    pub run: crate::store::RunInfo,
    pub layers: Vec<LayerInfo>,
    pub stats: Vec<Vec<UnitStats>>,
    /// Top hits per layer and unit (empty for units that never fire).
    pub tops: Vec<Vec<Vec<TopHit>>>,
    pub dead: Vec<Vec<bool>>,
    pub modes: Vec<Mode>,
    /// Per (layer, unit, rank): region and heat map.
    pub shown: HashMap<(usize, usize, usize), Shown>,
    /// Thumbnail size per image written.
    pub thumbs: HashMap<i64, (u32, u32)>,
    pub missing: HashSet<i64>,
    pub filters: Vec<bool>,
    /// Per layer and unit: whether a feature visualisation was written.
    pub visuals: Vec<Vec<bool>>,
    /// Per layer and unit: whether a projection sheet was written, and in which mode.
    pub projections: Vec<Vec<bool>>,
    pub projection_mode: Option<Mode>,
    pub tile: u32,
    /// The units scored against the index's labels (`None`: it has none).
    pub concepts: Option<Concepts>,
}

/// What the gallery shows of the labels: the scores of the gallery's layers, every
/// stored concept's name (`set/name`) and each top image's labels (indices into it),
/// and per layer, for the one before the classifier, the classes each unit pushes.
pub(crate) struct Concepts {
    pub scores: crate::concepts::Scores,
    pub names: Vec<String>,
    pub of_image: HashMap<i64, Vec<usize>>,
    pub hints: Vec<Option<Vec<Vec<crate::concepts::Hint>>>>,
}

/// Scores the gallery's layers against the index's labels, when it has any.
fn concepts_of(
    store: &Store,
    layers: &[LayerInfo],
    net: Option<&crate::model::Network>,
) -> Result<Option<Concepts>> {
    let stored = store.concepts()?;
    if stored.is_empty() {
        return Ok(None);
    }
    let opts = crate::concepts::Options {
        layers: Some(layers.iter().map(|l| l.name.clone()).collect()),
        ..Default::default()
    };
    let scores = crate::concepts::score(store, &opts)?;
    let index: HashMap<i64, usize> = stored.iter().enumerate().map(|(i, c)| (c.id, i)).collect();
    let mut of_image: HashMap<i64, Vec<usize>> = HashMap::new();
    for (cid, img) in store.concept_images()? {
        if let Some(&i) = index.get(&cid) {
            of_image.entry(img).or_default().push(i);
        }
    }
    let hints = layers
        .iter()
        .zip(&scores.layers)
        .map(|(l, ls)| net.and_then(|n| crate::concepts::hints(n, l, &ls.mean_value, 3)))
        .collect();
    Ok(Some(Concepts {
        scores,
        names: stored
            .iter()
            .map(|c| format!("{}/{}", c.set, c.name))
            .collect(),
        of_image,
        hints,
    }))
}

/// Builds the gallery of `store` into `opts.out`.
pub fn build(store: &Store, opts: &Options) -> Result<Summary> {
    crate::output::refuse_linked_dirs(&opts.out)?;
    let chosen = choose(store, opts)?;
    let mut summary = Summary {
        layers: chosen.layers.len(),
        units: chosen.layers.iter().map(|l| l.channels).sum(),
        dead: chosen.dead.iter().flatten().filter(|&&d| d).count(),
        ..Default::default()
    };
    let net = if opts.heat {
        match shots::index_network(store, opts.weights.as_deref()) {
            Ok((net, warn)) => {
                summary.warnings.extend(warn);
                Some(net)
            }
            Err(e) => {
                summary
                    .warnings
                    .push(format!("no heat maps: cannot load the network: {e}"));
                None
            }
        }
    } else {
        None
    };
    let input = chosen.run.input_size();
    let modes: Vec<Mode> = chosen
        .layers
        .iter()
        .map(|l| layer_mode(l, input, net.is_some()))
        .collect();
    let cut = Cutter {
        out: &opts.out,
        layers: &chosen.layers,
        stats: &chosen.stats,
        modes: &modes,
        tile: opts.tile,
        max_pixels: chosen.run.max_pixels,
    };
    let cuts = cut.all(&chosen.tops, net.as_ref())?;
    summary.images = cuts.images;
    summary.tiles = cuts.thumbs.len();
    summary.missing_images = cuts.missing.len();
    if !cuts.missing.is_empty() {
        summary.warnings.push(format!(
            "{} top images could not be read any more; their tiles are marked missing",
            cuts.missing.len()
        ));
    }
    if cuts.mismatched > 0 {
        summary.warnings.push(format!(
            "{} recomputed peaks differ from the index by more than 1e-3 relative \
             (images changed since indexing, or other weights)",
            cuts.mismatched
        ));
    }
    summary.tiles += write_sheets(
        &opts.out,
        &chosen.layers,
        &chosen.tops,
        &modes,
        cuts.tiles,
        opts.tile,
    )?;
    let filters = write_filters(&opts.out, &chosen.layers, net.as_ref())?;
    let visuals = write_visuals(store, &opts.out, &chosen.layers, &chosen.dead)?;
    summary.tiles += visuals.iter().flatten().filter(|&&v| v).count();
    let projections = match opts.projections.filter(|m| m.rule().is_some()) {
        Some(mode) => write_projections(
            store,
            opts,
            mode,
            &chosen.layers,
            &chosen.tops,
            &mut summary.warnings,
        )?,
        None => chosen
            .layers
            .iter()
            .map(|l| vec![false; l.channels])
            .collect(),
    };
    summary.tiles += projections.iter().flatten().filter(|&&v| v).count();
    let concepts = concepts_of(store, &chosen.layers, net.as_ref())?;
    let data = Data {
        run: chosen.run,
        layers: chosen.layers,
        stats: chosen.stats,
        tops: chosen.tops,
        dead: chosen.dead,
        modes,
        shown: cuts.shown,
        thumbs: cuts.thumbs,
        missing: cuts.missing,
        filters,
        visuals,
        projections,
        projection_mode: opts.projections,
        tile: opts.tile,
        concepts,
    };
    summary.pages = pages::write_all(&data, &opts.out)?;
    Ok(summary)
}

/// What the gallery shows: the layers, their units' statistics, which units never
/// fire, and the others' top images.
struct Chosen {
    run: crate::store::RunInfo,
    layers: Vec<LayerInfo>,
    stats: Vec<Vec<UnitStats>>,
    dead: Vec<Vec<bool>>,
    tops: Vec<Vec<Vec<TopHit>>>,
}

fn choose(store: &Store, opts: &Options) -> Result<Chosen> {
    let run = store.run_info()?;
    let layers = match &opts.layers {
        Some(want) => want
            .iter()
            .map(|w| query::layer(store, w))
            .collect::<Result<Vec<_>>>()?,
        None => store.layers()?,
    };
    let stats_all = store.load_stats(&store.layers()?)?;
    let stats: Vec<Vec<UnitStats>> = layers
        .iter()
        .map(|l| stats_all.get(l.id as usize).cloned().unwrap_or_default())
        .collect();
    let dead: Vec<Vec<bool>> = layers
        .iter()
        .zip(&stats)
        .map(|(l, st)| {
            (0..l.channels)
                .map(|u| st.get(u).is_some_and(|s| query::never_fires(l, s)))
                .collect()
        })
        .collect();
    let k = opts.k.clamp(1, run.top_k.max(1));
    let tops: Vec<Vec<Vec<TopHit>>> = layers
        .iter()
        .enumerate()
        .map(|(li, l)| {
            (0..l.channels)
                .map(|u| match dead[li][u] {
                    true => Ok(Vec::new()),
                    false => query::top(store, &l.name, u, k),
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    Ok(Chosen {
        run,
        layers,
        stats,
        dead,
        tops,
    })
}

/// What cutting every top image gave.
struct Cuts {
    /// Distinct top images.
    images: usize,
    shown: HashMap<(usize, usize, usize), Shown>,
    thumbs: HashMap<i64, (u32, u32)>,
    missing: HashSet<i64>,
    mismatched: usize,
    tiles: HashMap<(usize, usize), UnitTiles>,
}

/// Cuts the tiles of images, one chunk at a time.
struct Cutter<'a> {
    out: &'a Path,
    layers: &'a [LayerInfo],
    stats: &'a [Vec<UnitStats>],
    modes: &'a [Mode],
    tile: u32,
    max_pixels: u64,
}

/// What one image gave.
struct ImageCut {
    thumb: (u32, u32),
    mismatched: usize,
    shown: Vec<((usize, usize, usize), Shown)>,
}

impl Cutter<'_> {
    /// Every top image, image by image (each decoded and run through `net` once),
    /// eight at a time.
    fn all(&self, tops: &[Vec<Vec<TopHit>>], net: Option<&crate::model::Network>) -> Result<Cuts> {
        let mut per_image: BTreeMap<i64, Vec<Job>> = BTreeMap::new();
        for (li, units) in tops.iter().enumerate() {
            for (u, hits) in units.iter().enumerate() {
                for (slot, hit) in hits.iter().enumerate() {
                    per_image.entry(hit.image_id).or_default().push(Job {
                        layer: li,
                        unit: u,
                        slot,
                        hit,
                    });
                }
            }
        }
        let taps: Vec<Tap> = self
            .layers
            .iter()
            .map(|l| Tap::new(l.node, l.pre))
            .collect();
        let tiles: Mutex<HashMap<(usize, usize), UnitTiles>> = Mutex::new(HashMap::new());
        let mut cuts = Cuts {
            images: per_image.len(),
            shown: HashMap::new(),
            thumbs: HashMap::new(),
            missing: HashSet::new(),
            mismatched: 0,
            tiles: HashMap::new(),
        };
        let entries: Vec<(&i64, &Vec<Job>)> = per_image.iter().collect();
        for chunk in entries.chunks(8) {
            let cut = self.chunk(chunk, net, &taps, &tiles)?;
            for (id, c) in chunk.iter().map(|(id, _)| **id).zip(cut) {
                match c {
                    None => {
                        cuts.missing.insert(id);
                    }
                    Some(c) => {
                        cuts.thumbs.insert(id, c.thumb);
                        cuts.mismatched += c.mismatched;
                        cuts.shown.extend(c.shown);
                    }
                }
            }
        }
        cuts.tiles = tiles.into_inner().unwrap_or_else(|e| e.into_inner());
        Ok(cuts)
    }

    /// Decodes the chunk's images, runs them through `net` (all layers at once), writes
    /// their thumbnails and files their tiles in `tiles`; `None` for an unreadable image.
    fn chunk(
        &self,
        chunk: &[(&i64, &Vec<Job>)],
        net: Option<&crate::model::Network>,
        taps: &[Tap],
        tiles: &Mutex<HashMap<(usize, usize), UnitTiles>>,
    ) -> Result<Vec<Option<ImageCut>>> {
        let decoded: Vec<Option<Pyramid>> = chunk
            .par_iter()
            .map(|(_, jobs)| {
                preprocess::open_image(&jobs[0].hit.abs_path, self.max_pixels)
                    .ok()
                    .map(Pyramid::new)
            })
            .collect();
        let present: Vec<usize> = (0..chunk.len()).filter(|&i| decoded[i].is_some()).collect();
        let acts = match net {
            Some(net) if !present.is_empty() => {
                let images: Vec<&RgbImage> = present
                    .iter()
                    .map(|&i| decoded[i].as_ref().expect("present").original())
                    .collect();
                Some(net.run_images(&images, taps)?.0)
            }
            _ => None,
        };
        let cut: Vec<Result<ImageCut>> = present
            .par_iter()
            .enumerate()
            .map(|(slot, &i)| {
                let (id, jobs) = chunk[i];
                let maps = acts.as_ref().map(|a| (a.as_slice(), slot));
                self.image(*id, decoded[i].as_ref().unwrap(), jobs, maps, tiles)
            })
            .collect();
        let mut cut = cut.into_iter();
        (0..chunk.len())
            .map(|i| match decoded[i] {
                Some(_) => cut.next().unwrap().map(Some),
                None => Ok(None),
            })
            .collect()
    }

    /// One image: its thumbnail, and for each of its jobs the crop or region, the small
    /// tile and the pooled heat map.
    fn image(
        &self,
        id: i64,
        pyr: &Pyramid,
        jobs: &[Job],
        maps: Option<(&[crate::model::Activation], usize)>,
        tiles: &Mutex<HashMap<(usize, usize), UnitTiles>>,
    ) -> Result<ImageCut> {
        let (thumb, _) = pyr.whole(2 * self.tile, 2 * self.tile);
        write_jpeg(&thumb, &self.out.join(thumb_file(id)), 85)?;
        let mut cut = ImageCut {
            thumb: thumb.dimensions(),
            mismatched: 0,
            shown: Vec::new(),
        };
        for job in jobs {
            let l = &self.layers[job.layer];
            let h = job.hit;
            let mut shown = Shown::default();
            let map = maps.map(|(acts, slot)| {
                let a = &acts[job.layer];
                let hw = a.h * a.w;
                UnitMap {
                    data: &a.image(slot)[job.unit * hw..(job.unit + 1) * hw],
                    h: a.h,
                    w: a.w,
                }
            });
            if let Some(map) = &map {
                let got = map.data.get(h.y * map.w + h.x).copied().unwrap_or(f32::NAN);
                if !shots::close(got, h.pre.unwrap_or(h.value)) {
                    cut.mismatched += 1;
                }
                let hi = self.stats[job.layer]
                    .get(job.unit)
                    .map_or(0.0, |s| s.max as f32);
                let hi = if hi > 0.0 { hi } else { map.max() };
                shown.heat = Some(HeatMap::pooled(map, hi));
            }
            let field = h
                .transform
                .box_to_original(l.field.unit_box(h.y, h.x))
                .exact;
            let area = match (self.modes[job.layer], &map) {
                (Mode::Region, Some(map)) => {
                    let r = region::region(*map, &l.field, &h.transform);
                    shown.region = r.map(|r| r.original);
                    shown.region.unwrap_or(field)
                }
                _ => field,
            };
            let mini = pyr.crop(area, MINI, MINI);
            let crop = (self.modes[job.layer] == Mode::Crop)
                .then(|| pyr.crop(field, self.tile, self.tile));
            {
                let mut t = tiles.lock().unwrap();
                let e = t.entry((job.layer, job.unit)).or_default();
                e.minis.insert(job.slot, mini);
                if let Some(c) = crop {
                    e.crops.insert(job.slot, c);
                }
            }
            cut.shown.push(((job.layer, job.unit, job.slot), shown));
        }
        Ok(cut)
    }
}

/// The caption of a top image on a sheet: rank, tie mark, value, and the value before
/// the activation where it differs.
pub(crate) fn hit_label(h: &TopHit) -> String {
    let tie = if h.tie { "=" } else { "" };
    match h.pre {
        Some(p) if p != h.value => format!("#{}{tie} {:.3} | {:.3}", h.rank, h.value, p),
        _ => format!("#{}{tie} {:.3}", h.rank, h.value),
    }
}

/// Writes each live unit's small sheet and, on crop layers, its labelled crop sheet;
/// returns the number of files.
fn write_sheets(
    out: &Path,
    layers: &[LayerInfo],
    tops: &[Vec<Vec<TopHit>>],
    modes: &[Mode],
    tiles: HashMap<(usize, usize), UnitTiles>,
    side: u32,
) -> Result<usize> {
    let units: Vec<((usize, usize), UnitTiles)> = tiles.into_iter().collect();
    let written: Vec<usize> = units
        .into_par_iter()
        .map(|((li, u), mut t)| {
            let l = &layers[li];
            let hits = &tops[li][u];
            let tiles = |imgs: &mut BTreeMap<usize, RgbImage>, label: bool| -> Vec<Tile> {
                (0..hits.len())
                    .map(|s| {
                        let text = if label {
                            hit_label(&hits[s])
                        } else {
                            String::new()
                        };
                        Tile::new(imgs.remove(&s), text)
                    })
                    .collect()
            };
            let mini = grid::compose(None, &tiles(&mut t.minis, false), MINI, MINI);
            write_jpeg(&mini, &out.join(mini_file(&l.name, u)), 55)?;
            if modes[li] != Mode::Crop {
                return Ok(1);
            }
            let sheet = grid::compose(None, &tiles(&mut t.crops, true), side, side);
            write_jpeg(&sheet, &out.join(sheet_file(&l.name, u)), 75)?;
            Ok(2)
        })
        .collect::<Result<_>>()?;
    Ok(written.iter().sum())
}

/// The feature visualisations the index holds for the gallery's units that fire,
/// copied out as PNG files; per layer and unit whether one was.
fn write_visuals(
    store: &Store,
    out: &Path,
    layers: &[LayerInfo],
    dead: &[Vec<bool>],
) -> Result<Vec<Vec<bool>>> {
    let mut written = Vec::with_capacity(layers.len());
    for (l, dead) in layers.iter().zip(dead) {
        let mut have = vec![false; l.channels];
        for u in store.visualised_units(&l.name)? {
            if u >= l.channels || dead[u] {
                continue;
            }
            if let Some(v) = store.visual(&l.name, u)? {
                write_file(&out.join(visual_file(&l.name, u)), &v.png)?;
                have[u] = true;
            }
        }
        written.push(have);
    }
    Ok(written)
}

/// Each firing unit's top images run back from its peak by `mode`'s rule and drawn as
/// a sheet (cut as `neurodex top --mode` cuts them); per layer and unit whether one
/// was written.
fn write_projections(
    store: &Store,
    opts: &Options,
    mode: Mode,
    layers: &[LayerInfo],
    tops: &[Vec<Vec<TopHit>>],
    warnings: &mut Vec<String>,
) -> Result<Vec<Vec<bool>>> {
    let rule = mode.rule().expect("a projection mode");
    let (net, warn) = shots::index_network(store, opts.weights.as_deref())?;
    warnings.extend(warn);
    let input = store.run_info()?.input_size();
    let mut written = Vec::with_capacity(layers.len());
    for (l, tops) in layers.iter().zip(tops) {
        let maps = top::needs_maps(mode, &l.field, input);
        let mut have = vec![false; l.channels];
        for (u, hits) in tops.iter().enumerate() {
            if hits.is_empty() {
                continue;
            }
            // The maps (for region cuts) from the network already loaded, not a new one.
            let tap = Tap::new(l.node, l.pre);
            let mut unit = shots::for_unit(store, &l.name, u, hits, false, None)?;
            if maps {
                warnings.extend(shots::recompute_maps(&net, tap, u, &mut unit.shots)?);
            }
            warnings.extend(std::mem::take(&mut unit.warnings));
            shots::recompute_projections(&net, tap, u, rule, &mut unit.shots)?;
            let tiles: Vec<Tile> = unit
                .shots
                .iter()
                .zip(hits)
                .map(|(s, h)| {
                    Tile::new(
                        top::shot_tile(s, &unit.geo, mode, opts.tile, (0.0, 1.0)),
                        hit_label(h),
                    )
                })
                .collect();
            let sheet = grid::compose(None, &tiles, opts.tile, opts.tile);
            write_jpeg(&sheet, &opts.out.join(projection_file(&l.name, u)), 80)?;
            have[u] = true;
        }
        written.push(have);
    }
    Ok(written)
}

/// Computes and stores in the index (`db`, opened for writing: the writer lock is
/// taken) a feature visualisation for each unit of `layers` that fires and has none
/// yet, `batch` units at a time; `progress` hears the units done and to do. Returns
/// how many were made.
pub fn visualise_missing(
    db: &Path,
    layers: &[String],
    settings: &crate::visualize::Settings,
    batch: usize,
    weights: Option<&Path>,
    mut progress: impl FnMut(usize, usize),
) -> Result<usize> {
    let store = Store::open(db)?;
    let (mut net, _) = shots::index_network(&store, weights)?;
    // At the index's input size, as many units together as that size allows.
    let settings = &crate::visualize::Settings {
        size: store.run_info()?.input_size() as usize,
        ..settings.clone()
    };
    let batch = batch.min(crate::visualize::batch_for(settings.size));
    let mut todo: Vec<(LayerInfo, Vec<usize>)> = Vec::new();
    for name in layers {
        let l = query::layer(&store, name)?;
        let have: HashSet<usize> = store.visualised_units(&l.name)?.into_iter().collect();
        let mut units = Vec::new();
        for u in (0..l.channels).filter(|u| !have.contains(u)) {
            if !query::never_fires(&l, &query::unit_stats(&store, &l, u)?) {
                units.push(u);
            }
        }
        todo.push((l, units));
    }
    let total: usize = todo.iter().map(|t| t.1.len()).sum();
    let mut done = 0;
    progress(0, total);
    for (l, units) in todo {
        if l.pre {
            net.split_activations(&[l.node]);
        }
        for chunk in units.chunks(batch.max(1)) {
            let tap = Tap::new(l.node, l.pre);
            let made = crate::visualize::visualize(&net, tap, chunk, settings, |_, _| {})?;
            for v in made {
                keep_visual(&store, &net, &l.name, l.pre, settings, &v)?;
            }
            done += chunk.len();
            progress(done, total);
        }
    }
    Ok(done)
}

/// Keeps `v`, made for `layer` (before its activation where `pre`) with `settings`
/// on `net`, in the index, replacing an earlier one.
pub fn keep_visual(
    store: &Store,
    net: &crate::model::Network,
    layer: &str,
    pre: bool,
    settings: &crate::visualize::Settings,
    v: &crate::visualize::Visualisation,
) -> Result<()> {
    store.put_visual(&crate::store::StoredVisual {
        layer: layer.to_string(),
        unit: v.unit,
        stage: if pre { "pre" } else { "post" }.into(),
        steps: settings.steps,
        size: settings.size,
        seed: settings.seed,
        weights_id: net.weights_id().to_string(),
        value: v.value,
        png: crate::render::png_bytes(&v.image)?,
    })
}

/// Filters, where one picture shows a unit's filter (RGB or single-input); per layer
/// whether they were drawn.
fn write_filters(
    out: &Path,
    layers: &[LayerInfo],
    net: Option<&crate::model::Network>,
) -> Result<Vec<bool>> {
    use crate::render::filters::{self, FilterShape};
    let mut shown = vec![false; layers.len()];
    let Some(net) = net else {
        return Ok(shown);
    };
    for (li, l) in layers.iter().enumerate() {
        let Some((g, w)) = net.conv_weights(l.node) else {
            continue;
        };
        let shape = FilterShape {
            out: g.out_ch,
            inputs: g.in_ch / g.groups.max(1),
            kh: g.kernel.0,
            kw: g.kernel.1,
        };
        if shape.inputs != 1 && shape.inputs != 3 || shape.out != l.channels {
            continue;
        }
        let zoom = (64 / shape.kh.max(shape.kw).max(1) as u32).max(1);
        (0..shape.out).into_par_iter().try_for_each(|u| {
            let p = filters::filter_picture(w, shape, u, zoom).expect("1 or 3 inputs");
            crate::render::save_png(&p, &out.join(filter_file(&l.name, u)))
        })?;
        shown[li] = true;
    }
    Ok(shown)
}

/// Where map cell (0, 0) of a pooled map sits and how far apart cells are, in
/// network-input pixels: (centre x, centre y, step x, step y).
pub(crate) fn map_grid(field: &crate::receptive::Field, factor: usize) -> [f64; 4] {
    let centre = |a: usize| field.offset[a] as f64 + field.size[a] as f64 / 2.0;
    let (jy, jx) = (field.jump[0] as f64, field.jump[1] as f64);
    let f = factor as f64;
    [
        centre(1) + (f - 1.0) / 2.0 * jx,
        centre(0) + (f - 1.0) / 2.0 * jy,
        f * jx,
        f * jy,
    ]
}
