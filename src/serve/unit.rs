//! What the page asks of the index: a unit's top images with receptive-field crops and
//! its filter (and, filled in by `super::concepts`, what the labels say of it), the
//! list of indexed images, and an indexed image's bytes. Images are found by database
//! id only; the path comes from the database, never from the client.

use std::path::{Path, PathBuf};

use image::RgbImage;
use serde::Serialize;

use super::concepts::UnitConcept;
use crate::concepts::{Hint, LabelCount};
use crate::model::{Network, Tap};
use crate::query;
use crate::render::filters::{filter_picture, FilterShape};
use crate::render::top;
use crate::shots::{self, LayerGeometry};
use crate::store::Store;
use crate::Result;

/// Side of a receptive-field crop tile, in pixels.
pub const CROP_SIDE: u32 = 112;

/// One of a unit's top images.
#[derive(Clone, Debug, Serialize)]
pub struct TopImage {
    pub rank: usize,
    pub image_id: i64,
    pub path: String,
    pub value: f32,
    pub y: usize,
    pub x: usize,
    /// Receptive field in original pixels, clipped: [x0, y0, x1, y1].
    pub r#box: [u32; 4],
    /// The crop as a `data:image/png;base64,...` URL (`None`: the file is unreadable).
    pub crop: Option<String>,
}

/// `/api/unit/{layer}/{unit}`.
#[derive(Clone, Debug, Serialize)]
pub struct UnitReport {
    pub layer: String,
    pub unit: usize,
    pub channels: usize,
    /// The unit's filter as a PNG data URL, when one picture shows it (RGB or
    /// single-input filters).
    pub filter: Option<String>,
    /// Whether the database indexes this layer.
    pub indexed: bool,
    /// Whether the unit never fires on the indexed images (`query::never_fires`):
    /// then there are no top images to show, only that.
    pub never_fires: bool,
    pub top: Vec<TopImage>,
    /// The unit's best concepts (AP above the concept's base rate first); empty when
    /// the index has no labels.
    pub concepts: Vec<UnitConcept>,
    /// The labels of the `top` images, counted, most frequent first.
    pub labels: Vec<LabelCount>,
    /// For the layer feeding the classifier only: the classes the unit pushes most.
    pub hints: Option<Vec<Hint>>,
    /// Why there are no top images, or what went wrong with some.
    pub notes: Vec<String>,
}

/// `img` as a PNG data URL.
pub fn png_data_url(img: &RgbImage) -> String {
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .expect("PNG encoding into memory");
    format!("data:image/png;base64,{}", base64(&png))
}

/// Standard base64 with padding (RFC 4648).
pub fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The filter picture of `unit` of node `node`, when the node is a convolution
/// whose filters read 1 or 3 channels.
pub fn filter(net: &Network, node: usize, unit: usize) -> Option<RgbImage> {
    let (geom, w) = net.conv_weights(node)?;
    if unit >= geom.out_ch {
        return None;
    }
    let shape = FilterShape {
        out: geom.out_ch,
        inputs: geom.in_ch / geom.groups.max(1),
        kh: geom.kernel.0,
        kw: geom.kernel.1,
    };
    let zoom = (96 / shape.kh.max(shape.kw).max(1) as u32).max(1);
    filter_picture(w, shape, unit, zoom)
}

/// A database's layers are fixed when it is created, so the way to see another is a
/// new database.
fn not_indexed_note(name: &str, db: &Path, indexed: &[&str]) -> String {
    format!(
        "layer {name} is not indexed in {}, which holds {}; index into a new --db \
         with --layers {name} to see its top images",
        db.display(),
        indexed.join(", ")
    )
}

/// The report for `unit` of the network's node `node` (called `name`), with up to
/// `k` top images from `db`.
pub fn report(
    net: &Network,
    db: Option<&Path>,
    node: usize,
    name: &str,
    channels: usize,
    unit: usize,
    k: usize,
) -> Result<UnitReport> {
    let mut rep = UnitReport {
        layer: name.to_string(),
        unit,
        channels,
        filter: filter(net, node, unit).map(|f| png_data_url(&f)),
        indexed: false,
        never_fires: false,
        top: Vec::new(),
        concepts: Vec::new(),
        labels: Vec::new(),
        hints: None,
        notes: Vec::new(),
    };
    let Some(db) = db else {
        rep.notes
            .push("no database: start `neurodex serve --db FILE` to see top images".into());
        return Ok(rep);
    };
    let store = Store::open_readonly(db)?;
    let layers = store.layers()?;
    let Some(layer) = layers.iter().find(|l| l.node == node).cloned() else {
        let indexed: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
        rep.notes.push(not_indexed_note(name, db, &indexed));
        return Ok(rep);
    };
    rep.indexed = true;
    let stats = query::unit_stats(&store, &layer, unit)?;
    if query::never_fires(&layer, &stats) {
        rep.never_fires = true;
        rep.notes.push(format!(
            "unit {unit} never fires on the {} indexed images",
            stats.count
        ));
        return Ok(rep);
    }
    let hits = query::top(&store, &layer.name, unit, k)?;
    let run = store.run_info()?;
    let (mut shots, warnings) = shots::from_hits(&hits, run.max_pixels);
    rep.notes.extend(warnings);
    let geo = LayerGeometry::of(&layer);
    // Deep layers show where the unit fired, which needs the top images' maps.
    let input = net.arch.recipe.size;
    let mode = top::default_mode(&layer.field, input);
    if top::needs_maps(mode, &layer.field, input) {
        let tap = Tap::new(node, layer.pre && net.has_pre(node));
        rep.notes
            .extend(shots::recompute_maps(net, tap, unit, &mut shots)?);
    }
    for (h, s) in hits.iter().zip(&shots) {
        let crop = top::shot_tile(s, &geo, mode, CROP_SIDE, (0.0, 1.0));
        rep.top.push(TopImage {
            rank: h.rank,
            image_id: h.image_id,
            path: h.path.clone(),
            value: h.value,
            y: h.y,
            x: h.x,
            r#box: h.box_orig,
            crop: crop.as_ref().map(png_data_url),
        });
    }
    if hits.is_empty() {
        rep.notes
            .push("no images recorded for this unit yet".into());
    }
    Ok(rep)
}

/// An indexed image, for the page's dataset picker.
#[derive(Clone, Debug, Serialize)]
pub struct Listed {
    pub id: i64,
    pub path: String,
}

/// Up to `limit` successfully indexed images from `offset`, by id.
pub fn list_images(db: &Path, offset: u64, limit: u64) -> Result<(usize, Vec<Listed>)> {
    let store = Store::open_readonly(db)?;
    let total = store.count_images("ok")?;
    let list = store
        .ok_images(offset, limit)?
        .into_iter()
        .map(|(id, path)| Listed { id, path })
        .collect();
    Ok((total as usize, list))
}

/// Where indexed image `id` lives and what the index recorded of it.
pub struct IndexedFile {
    pub root: PathBuf,
    pub rel: PathBuf,
    pub size: Option<u64>,
    pub mtime_ns: Option<i64>,
}

/// The file of indexed image `id`, to open with `source::open_indexed` (which
/// checks that it is still that file, under the root); `None` when there is no such
/// image or it was not indexed successfully.
pub fn image_file(db: &Path, id: i64) -> Result<Option<IndexedFile>> {
    let store = Store::open_readonly(db)?;
    let Some(row) = store.image_row(id)?.filter(|r| r.status == "ok") else {
        return Ok(None);
    };
    Ok(Some(IndexedFile {
        root: store.run_info()?.root,
        rel: row.rel,
        size: row.size,
        mtime_ns: row.mtime_ns,
    }))
}

/// MIME type of image bytes, from their content.
pub fn mime(bytes: &[u8]) -> &'static str {
    match image::guess_format(bytes) {
        Ok(f) => f.to_mime_type(),
        Err(_) => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unindexed_layer_is_advised_a_new_database() {
        let note = not_indexed_note("blocks.13", Path::new("ix.db"), &["stem", "head"]);
        assert_eq!(
            note,
            "layer blocks.13 is not indexed in ix.db, which holds stem, head; index into a \
             new --db with --layers blocks.13 to see its top images"
        );
    }

    #[test]
    fn base64_matches_rfc4648_examples() {
        // RFC 4648 section 10 test vectors.
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, enc) in cases {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
        assert_eq!(base64(&[0xff, 0xfe, 0xfd]), "//79");
    }
}
