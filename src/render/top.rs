//! A unit's top images as one sheet: each tile is the receptive-field crop, the
//! region where the unit's map is active (`region`), the whole image with either
//! outlined, or the whole image under the unit's activation map (maps are recomputed
//! by running the images through the network again).

use std::path::{Path, PathBuf};

use image::RgbImage;
use rayon::prelude::*;

use super::colormap::Colormap;
use super::grid::{self, Tile};
use super::region;
use super::tile::{self, UnitMap};
use crate::model::{Network, Tap};
use crate::preprocess::{self, Transform};
use crate::query::{self, TopHit};
use crate::receptive::Field;
use crate::store::Store;
use crate::Result;

/// How each top image is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Mode {
    /// The receptive field, cut out (padded where it leaves the image).
    #[default]
    Crop,
    /// Where the unit's map is active on the image, cut out: the map upsampled to
    /// the input, above half-way from its median to its peak, the connected part
    /// holding the peak, its bounding box padded.
    Region,
    /// The whole image with the field (or, where the field is larger than the
    /// input, the active region) outlined.
    Box,
    /// The whole image under the unit's activation map.
    Heat,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Crop => "crop",
            Mode::Region => "region",
            Mode::Box => "box",
            Mode::Heat => "heat",
        }
    }
}

/// What shows where a unit fired: its receptive field while that fits in the
/// network input (early layers), the active region beyond (a field of 339-851 px on
/// a 224 px input is the whole photo).
pub fn default_mode(field: &Field, input_size: u32) -> Mode {
    if fits(field, input_size) {
        Mode::Crop
    } else {
        Mode::Region
    }
}

fn fits(field: &Field, input_size: u32) -> bool {
    field.size.iter().all(|&s| s <= input_size as i64)
}

/// One top image of a unit, as recorded in the index.
#[derive(Clone, Debug)]
pub struct Shot {
    pub path: PathBuf,
    /// Decoded original image; `None` when it could not be read any more.
    pub image: Option<RgbImage>,
    pub transform: Transform,
    /// The network's value at the peak (after the activation), and its position in
    /// the layer's map.
    pub value: f32,
    pub y: usize,
    pub x: usize,
    /// The value before the activation (the rank key) when the index has it.
    pub pre: Option<f32>,
    /// Tied with a neighbour in the ranking.
    pub tie: bool,
    /// The unit's whole map on this image (`map_hw`), before the activation when
    /// `pre` is known: for heat, region and box modes.
    pub map: Option<Vec<f32>>,
}

impl Shot {
    /// The value the index ranks by.
    pub fn key(&self) -> f32 {
        self.pre.unwrap_or(self.value)
    }

    /// The tile's caption: rank, value, and the value before the activation.
    pub fn label(&self, rank: usize) -> String {
        let tie = if self.tie { "=" } else { "" };
        match self.pre {
            Some(p) if p != self.value => format!("#{rank}{tie} {:.3} | {:.3}", self.value, p),
            _ => format!("#{rank}{tie} {:.3}", self.value),
        }
    }
}

/// Where a layer's units look and how large its maps are.
#[derive(Clone, Copy, Debug)]
pub struct LayerGeometry {
    pub field: Field,
    /// (h, w) of the layer's output at the network's input size.
    pub map_hw: (usize, usize),
}

/// The shot's active region in original pixels (needs its map).
pub fn shot_region(shot: &Shot, geo: &LayerGeometry) -> Option<region::Region> {
    let m = shot.map.as_ref()?;
    let map = UnitMap {
        data: m,
        h: geo.map_hw.0,
        w: geo.map_hw.1,
    };
    region::region(map, &geo.field, &shot.transform)
}

/// The tile for one shot in `mode`, fitted in `side` x `side`; `range` scales heat
/// maps. Region mode without a map falls back to the field's crop.
pub fn shot_tile(
    shot: &Shot,
    geo: &LayerGeometry,
    mode: Mode,
    side: u32,
    range: (f32, f32),
) -> Option<RgbImage> {
    let img = shot.image.as_ref()?;
    let b = geo.field.unit_box(shot.y, shot.x);
    let field = shot.transform.box_to_original(b).exact;
    let input = shot.transform.size;
    let active = || shot_region(shot, geo).map(|r| r.original);
    Some(match (mode, &shot.map) {
        (Mode::Crop, _) => tile::crop_padded(img, field, side, side),
        (Mode::Region, _) => tile::crop_padded(img, active().unwrap_or(field), side, side),
        (Mode::Box, _) if !fits(&geo.field, input) => {
            tile::with_box(img, active().unwrap_or(field), side, side)
        }
        (Mode::Box, _) | (Mode::Heat, None) => tile::with_box(img, field, side, side),
        (Mode::Heat, Some(m)) => tile::heat(
            img,
            &shot.transform,
            &geo.field,
            UnitMap {
                data: m,
                h: geo.map_hw.0,
                w: geo.map_hw.1,
            },
            range,
            Colormap::Viridis,
            (side, side),
        ),
    })
}

/// The heat scale of a unit: from 0 to its highest peak over the indexed images
/// (`dataset_max`, in the maps' terms: before the activation where they are), so
/// that every sheet of the unit reads on one scale; without it, the shots' own.
pub fn heat_range(shots: &[Shot], dataset_max: Option<f32>) -> (f32, f32) {
    let hi = dataset_max
        .filter(|m| m.is_finite() && *m > 0.0)
        .unwrap_or_else(|| {
            let all = shots.iter().filter_map(|s| s.map.as_deref()).flatten();
            super::maps::finite_range(&all.copied().collect::<Vec<_>>()).1
        });
    (0.0, hi)
}

/// The sheet of `shots`, ranked in the given order, labelled "#rank value | before";
/// heat sheets get a colour bar of `range` under them, captioned `scale`.
pub fn top_grid(
    title: &str,
    shots: &[Shot],
    geo: &LayerGeometry,
    mode: Mode,
    side: u32,
    range: (f32, f32),
    scale: &str,
) -> RgbImage {
    let tiles: Vec<Tile> = shots
        .iter()
        .enumerate()
        .map(|(i, s)| Tile::new(shot_tile(s, geo, mode, side, range), s.label(i + 1)))
        .collect();
    let sheet = grid::compose(Some(title), &tiles, side, side);
    if mode != Mode::Heat || shots.iter().all(|s| s.map.is_none()) {
        return sheet;
    }
    let w = sheet.width().saturating_sub(16).clamp(120, 480);
    let bar = super::colormap::colorbar(Colormap::Viridis, range, w, scale);
    let mut framed = RgbImage::from_pixel(bar.width() + 8, bar.height(), grid::BACKGROUND);
    grid::paste(&mut framed, &bar, 8, 0, bar.width(), bar.height());
    grid::stack(&[sheet, framed], 4)
}

/// Runs every shot with an image through `net` again and stores unit `unit`'s map of
/// `tap` in it (before the activation where the shots rank by that, which needs
/// `net` split there). Returns one warning per image whose recomputed value at the
/// recorded position differs from the recorded one by more than 1e-3 relative (the
/// file changed, or other weights were used).
pub fn recompute_maps(
    net: &Network,
    tap: Tap,
    unit: usize,
    shots: &mut [Shot],
) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    let size = net.arch.recipe.size as usize;
    let idx: Vec<usize> = (0..shots.len())
        .filter(|&i| shots[i].image.is_some())
        .collect();
    for chunk in idx.chunks(8) {
        let mut input = Vec::with_capacity(chunk.len() * 3 * size * size);
        for &i in chunk {
            let (x, _) = preprocess::prepare(shots[i].image.as_ref().unwrap(), &net.arch.recipe);
            input.extend_from_slice(&x);
        }
        let act = net.forward_taps(&input, chunk.len(), &[tap])?.remove(0);
        let hw = act.h * act.w;
        for (j, &i) in chunk.iter().enumerate() {
            let map = act.image(j)[unit * hw..(unit + 1) * hw].to_vec();
            let s = &mut shots[i];
            let got = map.get(s.y * act.w + s.x).copied().unwrap_or(f32::NAN);
            let want = if tap.pre { s.key() } else { s.value };
            if !close(got, want) {
                warnings.push(format!(
                    "{}: recomputed activation {got} differs from the indexed peak {want} \
                     (image changed since indexing, or different weights?)",
                    s.path.display(),
                ));
            }
            s.map = Some(map);
        }
    }
    Ok(warnings)
}

/// Shots for `hits`, decoding the images in parallel; a file that cannot be read any
/// more gives a shot without image and a warning.
pub fn shots_from_hits(hits: &[TopHit], max_pixels: u64) -> (Vec<Shot>, Vec<String>) {
    let loaded: Vec<(Shot, Option<String>)> = hits
        .par_iter()
        .map(|h| {
            let (image, warn) = match preprocess::open_image(&h.abs_path, max_pixels) {
                Ok(img) => (Some(img), None),
                Err(e) => (None, Some(e.to_string())),
            };
            let shot = Shot {
                path: h.abs_path.clone(),
                image,
                transform: h.transform.clone(),
                value: h.value,
                y: h.y,
                x: h.x,
                pre: h.pre,
                tie: h.tie,
                map: None,
            };
            (shot, warn)
        })
        .collect();
    let warnings = loaded.iter().filter_map(|(_, w)| w.clone()).collect();
    (loaded.into_iter().map(|(s, _)| s).collect(), warnings)
}

/// The network an index was built with: its model, with `weights` or the embedded
/// ones, split where the index ranks before the activation (so that maps can be
/// recomputed as indexed); a warning when the weights differ from those indexed.
pub fn index_network(store: &Store, weights: Option<&Path>) -> Result<(Network, Option<String>)> {
    let run = store.run_info()?;
    let mut net = Network::open(&run.model, weights)?;
    let split: Vec<usize> = store
        .layers()?
        .iter()
        .filter(|l| l.pre)
        .map(|l| l.node)
        .collect();
    net.split_activations(&split);
    let warn = (net.weights_id() != run.weights_id).then(|| {
        format!(
            "weights {} differ from the indexed ones ({}); heat maps may not match the index",
            &net.weights_id()[..12.min(net.weights_id().len())],
            &run.weights_id[..12.min(run.weights_id.len())]
        )
    });
    Ok((net, warn))
}

/// Whether `mode` needs the units' maps on a layer with this field and input.
pub fn needs_maps(mode: Mode, field: &Field, input_size: u32) -> bool {
    match mode {
        Mode::Heat | Mode::Region => true,
        Mode::Box => !fits(field, input_size),
        Mode::Crop => false,
    }
}

/// `neurodex top ... -o FILE [--mode M]`: the sheet of a unit's `hits` (in the
/// layer's default mode when `mode` is `None`), and warnings (missing images,
/// recomputed peaks that disagree with the index).
pub fn render_hits(
    store: &Store,
    layer: &str,
    unit: usize,
    hits: &[TopHit],
    mode: Option<Mode>,
    weights: Option<&Path>,
    side: u32,
) -> Result<(RgbImage, Vec<String>)> {
    let l = query::layer(store, layer)?;
    let run = store.run_info()?;
    let (mut shots, mut warnings) = shots_from_hits(hits, run.max_pixels);
    let input = crate::arch::by_name(&run.model).map_or(224, |a| a.recipe.size);
    let mode = mode.unwrap_or_else(|| default_mode(&l.field, input));
    if needs_maps(mode, &l.field, input) {
        let (net, warn) = index_network(store, weights)?;
        warnings.extend(warn);
        let tap = Tap::new(l.node, l.pre);
        warnings.extend(recompute_maps(&net, tap, unit, &mut shots)?);
    }
    let geo = LayerGeometry {
        field: l.field,
        map_hw: (l.height, l.width),
    };
    let act = l.act.name();
    let (values, scale) = if l.pre && l.act != crate::arch::Act::None {
        (format!("value | before {act}"), format!("before {act}"))
    } else {
        ("value".to_string(), "value".to_string())
    };
    let title = format!(
        "{} {} unit {unit} - top {} ({}); {values}",
        run.model,
        l.name,
        hits.len(),
        mode.name()
    );
    let max = query::unit_stats(store, &l, unit)?.max as f32;
    let range = heat_range(&shots, Some(max));
    let scale = format!(
        "{scale}, 0 to the unit's highest peak on the {} images",
        run_images(store)?
    );
    Ok((
        top_grid(&title, &shots, &geo, mode, side, range, &scale),
        warnings,
    ))
}

fn run_images(store: &Store) -> Result<u64> {
    Ok(query::overview(store, 0)?.images_ok)
}

/// The `-o/--mode/--weights` options `neurodex top` takes to draw its grid.
#[derive(clap::Args, Debug, Default)]
pub struct GridArgs {
    /// Also draw the top images as a grid, to this picture (.png, .jpg or .jpeg)
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// How each image is drawn in the grid (default: crop where the layer's
    /// receptive field fits in the network input, region beyond)
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Weights for --mode heat, when the index was built with a weights file
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// Tile side in pixels
    #[arg(long, default_value_t = 160)]
    pub tile: u32,
}

/// Draws the grid when `-o` was given; warnings go to stderr. Exit status 1 when
/// some images could not be drawn or disagree with the index.
pub fn write_top_grid(
    store: &Store,
    layer: &str,
    unit: usize,
    hits: &[TopHit],
    args: &GridArgs,
) -> anyhow::Result<std::process::ExitCode> {
    let Some(out) = &args.output else {
        return Ok(std::process::ExitCode::SUCCESS);
    };
    let (img, warnings) = render_hits(
        store,
        layer,
        unit,
        hits,
        args.mode,
        args.weights.as_deref(),
        args.tile.clamp(16, 1024),
    )?;
    super::save_image(&img, out)?;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    eprintln!("wrote {} ({}x{})", out.display(), img.width(), img.height());
    Ok(if warnings.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(crate::cli::EXIT_PARTIAL)
    })
}

/// Equal within 1e-3 relative (absolute near 0).
pub fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-3 * a.abs().max(b.abs()).max(1.0) || (a.is_nan() && b.is_nan())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    #[test]
    fn regions_are_the_default_where_the_field_outgrows_the_input() {
        let arch = crate::arch::by_name("efficientnet-lite0").unwrap();
        let fields = crate::receptive::fields(&arch);
        let mode = |name: &str| default_mode(&fields[arch.resolve(name).unwrap()], 224);
        // Fields 3, 147 and 339 px (see `neurodex layers`).
        assert_eq!(mode("stem"), Mode::Crop);
        assert_eq!(mode("blocks.7"), Mode::Crop);
        assert_eq!(mode("blocks.10"), Mode::Region);
        assert_eq!(mode("head"), Mode::Region);
    }

    #[test]
    fn labels_give_both_values_and_mark_ties() {
        let t = Transform {
            orig_w: 8,
            orig_h: 8,
            crop: [0.0, 0.0, 8.0, 8.0],
            size: 8,
        };
        let mut s = Shot {
            path: "x".into(),
            image: None,
            transform: t,
            value: 6.0,
            y: 0,
            x: 0,
            pre: Some(15.368),
            tie: false,
            map: None,
        };
        assert_eq!(s.label(1), "#1 6.000 | 15.368");
        s.tie = true;
        s.pre = Some(6.0);
        assert_eq!(s.label(2), "#2= 6.000");
        assert_eq!(s.key(), 6.0);
    }

    #[test]
    fn tolerance_is_relative() {
        assert!(close(1000.0, 1000.9));
        assert!(!close(1000.0, 1001.5));
        assert!(close(0.0, 0.0009));
        assert!(!close(0.0, 0.002));
    }

    #[test]
    fn grid_of_crops_has_one_tile_per_shot_and_marks_missing_files() {
        let t = Transform {
            orig_w: 64,
            orig_h: 64,
            crop: [0.0, 0.0, 64.0, 64.0],
            size: 32,
        };
        let shot = |v: f32, img: Option<RgbImage>| Shot {
            path: "x.png".into(),
            image: img,
            transform: t.clone(),
            value: v,
            y: 1,
            x: 2,
            pre: None,
            tie: false,
            map: None,
        };
        let white = RgbImage::from_pixel(64, 64, Rgb([250, 250, 250]));
        let shots = vec![
            shot(3.0, Some(white.clone())),
            shot(2.0, None),
            shot(1.0, Some(white)),
        ];
        let geo = LayerGeometry {
            field: Field {
                size: [8, 8],
                jump: [4, 4],
                offset: [0, 0],
            },
            map_hw: (8, 8),
        };
        let img = top_grid("u", &shots, &geo, Mode::Crop, 40, (0.0, 1.0), "");
        let s = grid::Sheet::new(3, 40, 40, Some("u"), true);
        assert_eq!(img.dimensions(), (s.width, s.height));
        // Unit (1, 2): input box x 8..16, y 4..12 -> original 16..32 x 8..24, all white.
        let (x, y) = s.cell_origin(0);
        assert_eq!(img.get_pixel(x + 20, y + 20).0, [250, 250, 250]);
        let (x, y) = s.cell_origin(1);
        assert_eq!(*img.get_pixel(x + 20, y + 30), grid::MISSING);
    }
}
