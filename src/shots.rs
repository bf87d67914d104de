//! A unit's top images made ready to draw: decoded again from the indexed files, and
//! where a view needs them, run through the network again for the unit's whole map.
//! Between `query` (which says which images and where) and `render` (which draws):
//! this is the one place that turns index answers back into pixels and maps.

use std::path::{Path, PathBuf};

use image::RgbImage;
use rayon::prelude::*;

use crate::arch::Act;
use crate::model::{Network, Objective, Pick, Rule, Tap};
use crate::preprocess::Transform;
use crate::query::{self, TopHit};
use crate::receptive::Field;
use crate::store::{LayerInfo, Store};
use crate::Result;

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
    /// The input gradient of the unit's value at the peak (or its guided or deconvnet
    /// projection), `[3, s, s]` on the network input in RGB order: for the
    /// projection modes.
    pub projection: Option<Vec<f32>>,
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

impl LayerGeometry {
    pub fn of(l: &LayerInfo) -> LayerGeometry {
        LayerGeometry {
            field: l.field,
            map_hw: (l.height, l.width),
        }
    }
}

/// Shots for `hits`, decoding the images in parallel; a file that cannot be read any
/// more gives a shot without image and a warning.
pub fn from_hits(hits: &[TopHit], max_pixels: u64) -> (Vec<Shot>, Vec<String>) {
    let loaded: Vec<(Shot, Option<String>)> = hits
        .par_iter()
        .map(|h| {
            let (image, warn) = match crate::preprocess::open_image(&h.abs_path, max_pixels) {
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
                projection: None,
            };
            (shot, warn)
        })
        .collect();
    let warnings = loaded.iter().filter_map(|(_, w)| w.clone()).collect();
    (loaded.into_iter().map(|(s, _)| s).collect(), warnings)
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
    let idx: Vec<usize> = (0..shots.len())
        .filter(|&i| shots[i].image.is_some())
        .collect();
    for chunk in idx.chunks(8) {
        let images: Vec<&RgbImage> = chunk
            .iter()
            .map(|&i| shots[i].image.as_ref().expect("filtered"))
            .collect();
        let act = net.run_images(&images, &[tap])?.0.remove(0);
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

/// Runs every shot with an image through `net` and back from unit `unit`'s value at
/// its recorded peak on `tap` by `rule`, storing the projection in the shot (what the
/// toolbox's crop_max_patches draws per top image).
pub fn recompute_projections(
    net: &Network,
    tap: Tap,
    unit: usize,
    rule: Rule,
    shots: &mut [Shot],
) -> Result<()> {
    let recipe = &net.arch.recipe;
    let s = recipe.size as usize;
    let idx: Vec<usize> = (0..shots.len())
        .filter(|&i| shots[i].image.is_some())
        .collect();
    for chunk in idx.chunks(8) {
        let mut input = Vec::with_capacity(chunk.len() * 3 * s * s);
        let mut objs = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let sh = &shots[i];
            input
                .extend(crate::preprocess::prepare(sh.image.as_ref().expect("filtered"), recipe).0);
            objs.push(Objective {
                unit,
                pick: Pick::At { y: sh.y, x: sh.x },
            });
        }
        let g = net.input_gradient(&input, (chunk.len(), s, s), tap, &objs, rule)?;
        for (j, &i) in chunk.iter().enumerate() {
            let mut p = g.image(j).to_vec();
            if recipe.bgr {
                // Caffe's networks take BGR: the projection in the picture's order.
                let hw = s * s;
                let (b, rest) = p.split_at_mut(hw);
                b.swap_with_slice(&mut rest[hw..]);
            }
            shots[i].projection = Some(p);
        }
    }
    Ok(())
}

/// The network an index was built with: its model, with `weights` or the embedded
/// ones, split where the index ranks before the activation (so that maps can be
/// recomputed as indexed); a warning when the weights differ from those indexed.
pub fn index_network(store: &Store, weights: Option<&Path>) -> Result<(Network, Option<String>)> {
    let run = store.run_info()?;
    let mut net = Network::open(&run.model, weights)?;
    // Maps are recomputed from the images prepared as they were indexed.
    if let Some(r) = run.parsed_recipe() {
        net.arch.recipe = r;
    }
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

/// A unit's top images ready to draw, with what a sheet of them says about them.
pub struct UnitShots {
    pub model: String,
    pub layer: LayerInfo,
    pub unit: usize,
    pub geo: LayerGeometry,
    pub shots: Vec<Shot>,
    /// The unit's highest peak over the indexed images, in the maps' terms (before
    /// the activation where the index ranks so).
    pub max: f32,
    /// Images the index holds.
    pub images: u64,
    /// Images that could not be read, recomputed peaks that disagree with the index.
    pub warnings: Vec<String>,
}

impl UnitShots {
    /// What the values on a sheet are: "value", or "value | before relu6" where the
    /// index ranks before the activation; and the heat scale's name.
    pub fn value_names(&self) -> (String, String) {
        let l = &self.layer;
        let act = l.act.name();
        if l.pre && l.act != Act::None {
            (format!("value | before {act}"), format!("before {act}"))
        } else {
            ("value".to_string(), "value".to_string())
        }
    }
}

/// The shots of `hits` (a unit's top images from `query::top`), with the unit's maps
/// when `maps` (recomputed with `weights`, or the embedded ones).
pub fn for_unit(
    store: &Store,
    layer: &str,
    unit: usize,
    hits: &[TopHit],
    maps: bool,
    weights: Option<&Path>,
) -> Result<UnitShots> {
    let l = query::layer(store, layer)?;
    let run = store.run_info()?;
    let (mut shots, mut warnings) = from_hits(hits, run.max_pixels);
    if maps {
        let (net, warn) = index_network(store, weights)?;
        warnings.extend(warn);
        let tap = Tap::new(l.node, l.pre);
        warnings.extend(recompute_maps(&net, tap, unit, &mut shots)?);
    }
    let max = query::unit_stats(store, &l, unit)?.max as f32;
    let images = query::overview(store, 0)?.images_ok;
    Ok(UnitShots {
        model: run.model,
        geo: LayerGeometry::of(&l),
        layer: l,
        unit,
        shots,
        max,
        images,
        warnings,
    })
}

/// Equal within 1e-3 relative (absolute near 0): a recomputed activation against the
/// indexed one.
pub fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-3 * a.abs().max(b.abs()).max(1.0) || (a.is_nan() && b.is_nan())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            projection: None,
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
}
