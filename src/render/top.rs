//! A unit's top images as one sheet: each tile is the receptive-field crop, the whole
//! image with the field outlined, or the whole image under the unit's activation map
//! (recomputed by running the image through the network again).

use std::path::{Path, PathBuf};

use image::RgbImage;
use rayon::prelude::*;

use super::colormap::Colormap;
use super::grid::{self, Tile};
use super::tile::{self, UnitMap};
use crate::model::Network;
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
    /// The whole image with the receptive field outlined.
    Box,
    /// The whole image under the unit's activation map.
    Heat,
}

/// One top image of a unit, as recorded in the index.
#[derive(Clone, Debug)]
pub struct Shot {
    pub path: PathBuf,
    /// Decoded original image; `None` when it could not be read any more.
    pub image: Option<RgbImage>,
    pub transform: Transform,
    /// Peak value and its position in the layer's map.
    pub value: f32,
    pub y: usize,
    pub x: usize,
    /// The unit's whole map on this image (`map_hw`), for heat mode.
    pub map: Option<Vec<f32>>,
}

/// Where a layer's units look and how large its maps are.
#[derive(Clone, Copy, Debug)]
pub struct LayerGeometry {
    pub field: Field,
    /// (h, w) of the layer's output at the network's input size.
    pub map_hw: (usize, usize),
}

/// The tile for one shot in `mode`, fitted in `side` x `side`; `range` scales heat maps.
pub fn shot_tile(
    shot: &Shot,
    geo: &LayerGeometry,
    mode: Mode,
    side: u32,
    range: (f32, f32),
) -> Option<RgbImage> {
    let img = shot.image.as_ref()?;
    let b = geo.field.unit_box(shot.y, shot.x);
    let exact = shot.transform.box_to_original(b).exact;
    Some(match (mode, &shot.map) {
        (Mode::Crop, _) => tile::crop_padded(img, exact, side, side),
        (Mode::Box, _) | (Mode::Heat, None) => tile::with_box(img, exact, side, side),
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

/// The shared heat scale of a set of shots: 0 (or the lowest value) to the highest.
pub fn heat_range(shots: &[Shot]) -> (f32, f32) {
    let all = shots.iter().filter_map(|s| s.map.as_deref()).flatten();
    let (lo, hi) = super::maps::finite_range(&all.copied().collect::<Vec<_>>());
    (lo.min(0.0), hi)
}

/// The sheet of `shots`, ranked in the given order, labelled "#rank value".
pub fn top_grid(
    title: &str,
    shots: &[Shot],
    geo: &LayerGeometry,
    mode: Mode,
    side: u32,
) -> RgbImage {
    let range = heat_range(shots);
    let tiles: Vec<Tile> = shots
        .iter()
        .enumerate()
        .map(|(i, s)| {
            Tile::new(
                shot_tile(s, geo, mode, side, range),
                format!("#{} {:.3}", i + 1, s.value),
            )
        })
        .collect();
    grid::compose(Some(title), &tiles, side, side)
}

/// Runs every shot with an image through `net` again and stores unit `unit`'s map of
/// layer node `layer` in it. Returns one warning per image whose recomputed value at
/// the recorded position differs from the recorded peak by more than 1e-3 relative
/// (the file changed, or other weights were used).
pub fn recompute_maps(
    net: &Network,
    layer: usize,
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
        let act = net.forward_raw(&input, chunk.len(), &[layer])?.remove(0);
        let hw = act.h * act.w;
        for (j, &i) in chunk.iter().enumerate() {
            let map = act.image(j)[unit * hw..(unit + 1) * hw].to_vec();
            let s = &mut shots[i];
            let got = map.get(s.y * act.w + s.x).copied().unwrap_or(f32::NAN);
            if !close(got, s.value) {
                warnings.push(format!(
                    "{}: recomputed activation {got} differs from the indexed peak {} \
                     (image changed since indexing, or different weights?)",
                    s.path.display(),
                    s.value
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
                map: None,
            };
            (shot, warn)
        })
        .collect();
    let warnings = loaded.iter().filter_map(|(_, w)| w.clone()).collect();
    (loaded.into_iter().map(|(s, _)| s).collect(), warnings)
}

/// The network an index was built with: its model, with `weights` or the embedded
/// ones; a warning when the weights differ from those indexed.
pub fn index_network(store: &Store, weights: Option<&Path>) -> Result<(Network, Option<String>)> {
    let run = store.run_info()?;
    let net = Network::open(&run.model, weights)?;
    let warn = (net.weights_id() != run.weights_id).then(|| {
        format!(
            "weights {} differ from the indexed ones ({}); heat maps may not match the index",
            &net.weights_id()[..12.min(net.weights_id().len())],
            &run.weights_id[..12.min(run.weights_id.len())]
        )
    });
    Ok((net, warn))
}

/// `neurodex top ... -o FILE --mode M`: the sheet of a unit's `hits`, and warnings
/// (missing images, recomputed peaks that disagree with the index).
pub fn render_hits(
    store: &Store,
    layer: &str,
    unit: usize,
    hits: &[TopHit],
    mode: Mode,
    weights: Option<&Path>,
    side: u32,
) -> Result<(RgbImage, Vec<String>)> {
    let l = query::layer(store, layer)?;
    let run = store.run_info()?;
    let (mut shots, mut warnings) = shots_from_hits(hits, run.max_pixels);
    if mode == Mode::Heat {
        let (net, warn) = index_network(store, weights)?;
        warnings.extend(warn);
        warnings.extend(recompute_maps(&net, l.node, unit, &mut shots)?);
    }
    let geo = LayerGeometry {
        field: l.field,
        map_hw: (l.height, l.width),
    };
    let mode_name = format!("{mode:?}").to_lowercase();
    let title = format!(
        "{} {} unit {unit} - top {} ({mode_name})",
        run.model,
        l.name,
        hits.len()
    );
    Ok((top_grid(&title, &shots, &geo, mode, side), warnings))
}

/// The `-o/--mode/--weights` options `neurodex top` takes to draw its grid.
#[derive(clap::Args, Debug, Default)]
pub struct GridArgs {
    /// Also draw the top images as a grid, to this PNG file
    #[arg(short = 'o', long = "output", value_name = "PNG")]
    pub output: Option<PathBuf>,
    /// How each image is drawn in the grid
    #[arg(long, value_enum, default_value_t = Mode::Crop)]
    pub mode: Mode,
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
        let img = top_grid("u", &shots, &geo, Mode::Crop, 40);
        let s = grid::Sheet::new(3, 40, 40, Some("u"), true);
        assert_eq!(img.dimensions(), (s.width, s.height));
        // Unit (1, 2): input box x 8..16, y 4..12 -> original 16..32 x 8..24, all white.
        let (x, y) = s.cell_origin(0);
        assert_eq!(img.get_pixel(x + 20, y + 20).0, [250, 250, 250]);
        let (x, y) = s.cell_origin(1);
        assert_eq!(*img.get_pixel(x + 20, y + 30), grid::MISSING);
    }
}
