//! A unit's top images as one sheet: each tile is the receptive-field crop, the
//! region where the unit's map is active (`region`), the whole image with either
//! outlined, or the whole image under the unit's activation map. The shots, and
//! their maps where a mode needs them, come from `shots`.

use image::RgbImage;

use super::colormap::Colormap;
use super::gradient;
use super::grid::{self, Tile};
use super::region;
use super::tile::{self, UnitMap};
use crate::model::Rule;
use crate::receptive::Field;
use crate::shots::{LayerGeometry, Shot, UnitShots};

/// How each top image is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
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
    /// The gradient of the unit's peak with respect to the input, cut out where crop
    /// or region would cut the image (the Deep Visualization Toolbox's backprop).
    Backprop,
    /// The same by guided backprop (Springenberg et al. 2015).
    Guided,
    /// The same by the deconvnet (Zeiler & Fergus 2014).
    Deconv,
    /// The photo cut where the gradient of the unit's peak is significant (the box
    /// holding the middle 90% of its magnitude along each axis): the effective
    /// receptive field (Luo et al. 2016), truer than the theoretical one.
    Erf,
}

impl Mode {
    pub const ALL: [Mode; 8] = [
        Mode::Crop,
        Mode::Region,
        Mode::Box,
        Mode::Heat,
        Mode::Backprop,
        Mode::Guided,
        Mode::Deconv,
        Mode::Erf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Crop => "crop",
            Mode::Region => "region",
            Mode::Box => "box",
            Mode::Heat => "heat",
            Mode::Backprop => "backprop",
            Mode::Guided => "guided",
            Mode::Deconv => "deconv",
            Mode::Erf => "erf",
        }
    }

    /// How a projection mode goes back through the network (`None`: the mode draws
    /// the image itself).
    pub fn rule(self) -> Option<Rule> {
        match self {
            Mode::Backprop | Mode::Erf => Some(Rule::Gradient),
            Mode::Guided => Some(Rule::Guided),
            Mode::Deconv => Some(Rule::Deconv),
            _ => None,
        }
    }

    /// What the mode draws, in a few words (for `--help`).
    pub fn help(self) -> &'static str {
        match self {
            Mode::Crop => "the receptive field, cut out (padded where it leaves the image)",
            Mode::Region => {
                "where the unit's map is active, cut out (the connected part above \
                 half-way from its median to its peak that holds the peak)"
            }
            Mode::Box => "the whole image with the field (or the active region) outlined",
            Mode::Heat => "the whole image under the unit's activation map",
            Mode::Backprop => {
                "the gradient of the unit's peak on the input, cut out as crop or region \
                 would (grey is 0)"
            }
            Mode::Guided => "the peak's guided-backprop projection, cut out likewise",
            Mode::Deconv => "the peak's deconvnet projection, cut out likewise",
            Mode::Erf => {
                "the photo where the gradient of the peak is significant (its effective \
                 receptive field: the middle 90% of the gradient's mass on each axis)"
            }
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Mode, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Mode::ALL.iter().map(|m| m.name()).collect();
                format!("unknown mode {s:?} ({})", names.join(", "))
            })
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

/// Whether `mode` needs the units' maps on a layer with this field and input.
pub fn needs_maps(mode: Mode, field: &Field, input_size: u32) -> bool {
    match mode {
        Mode::Heat | Mode::Region => true,
        Mode::Box | Mode::Backprop | Mode::Guided | Mode::Deconv => !fits(field, input_size),
        Mode::Crop | Mode::Erf => false,
    }
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
        (Mode::Backprop | Mode::Guided | Mode::Deconv, _) => {
            // The projection lives on the network input: the cut, mapped there.
            let g = shot.projection.as_deref()?;
            let s = side_of(g)?;
            let pic = gradient::projection(g, s, s, false);
            let fitted = fits(&geo.field, input);
            let cut = if fitted {
                field
            } else {
                active().unwrap_or(field)
            };
            let (x0, y0) = tile::to_input(&shot.transform, cut[0], cut[1]);
            let (x1, y1) = tile::to_input(&shot.transform, cut[2], cut[3]);
            tile::crop_padded(&pic, [x0, y0, x1, y1], side, side)
        }
        (Mode::Erf, _) => {
            let g = shot.projection.as_deref()?;
            let s = side_of(g)?;
            let b = gradient::mass_box(g, s, s, 0.9)
                .map(|b| shot.transform.box_to_original(b).exact)
                .unwrap_or(field);
            tile::crop_padded(img, b, side, side)
        }
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

/// The side of a square `[3, s, s]` projection (`None` for another length).
fn side_of(g: &[f32]) -> Option<usize> {
    let s = ((g.len() / 3) as f64).sqrt().round() as usize;
    (3 * s * s == g.len() && s > 0).then_some(s)
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

/// A unit's sheet as `neurodex top -o` draws it: titled with the model, layer, unit
/// and mode, heat on the scale of the unit's highest peak over the index.
pub fn unit_sheet(u: &UnitShots, mode: Mode, side: u32) -> RgbImage {
    let (values, scale) = u.value_names();
    // An imported model is named by its file, not by the path to it (which would make
    // the title wider than the grid).
    let model = std::path::Path::new(&u.model)
        .file_name()
        .map_or(u.model.clone(), |f| f.to_string_lossy().into_owned());
    let title = format!(
        "{} {} unit {} - top {} ({}); {values}",
        model,
        u.layer.name,
        u.unit,
        u.shots.len(),
        mode.name()
    );
    let range = heat_range(&u.shots, Some(u.max));
    let scale = format!(
        "{scale}, 0 to the unit's highest peak on the {} images",
        u.images
    );
    top_grid(&title, &u.shots, &u.geo, mode, side, range, &scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preprocess::Transform;
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
    fn modes_parse_from_their_names_only() {
        for m in Mode::ALL {
            assert_eq!(m.name().parse::<Mode>(), Ok(m));
        }
        assert!("Crop".parse::<Mode>().is_err());
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
            projection: None,
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
