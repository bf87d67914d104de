//! One live frame: decode the bytes the page sent (JPEG from the camera canvas, or
//! any uploaded picture), run the network once, and answer the chosen layer's maps
//! as u8 on ONE scale shared by the whole layer, with the top-5 classes.
//!
//! With a unit and a mode, the frame also goes back through the network from that
//! unit's maximum (the toolbox's backprop pane): its projection on the input.
//!
//! Wire format of a reply (`application/octet-stream`): a little-endian u32 `n`,
//! `n` bytes of JSON (`Header`), then `c * h * w` bytes, channel-major, then with a
//! projection its `size * size` RGB pixels (3 bytes each, row by row). Raw bytes
//! rather than a PNG atlas: nothing to encode on the server, and the page draws
//! them straight into an `ImageData`.

use std::time::Instant;

use image::RgbImage;
use serde::Serialize;

use crate::model::{top_classes, Guess, Network, Objective, Pick, Rule, Tap};
use crate::preprocess::{self, Transform};

/// What the page needs to draw a reply.
#[derive(Clone, Debug, Serialize)]
pub struct Header {
    pub layer: String,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    /// The shared scale: byte 0 is `lo`, byte 255 is `hi`.
    pub lo: f32,
    pub hi: f32,
    pub top5: Vec<Guess>,
    /// Where the network looked, in the frame's pixels.
    pub transform: Transform,
    /// Server-side milliseconds: decoding, the forward pass, everything.
    pub decode_ms: f64,
    pub forward_ms: f64,
    pub total_ms: f64,
    /// The unit's projection, when one was asked for.
    pub projection: Option<Projection>,
}

/// What the projection's pixels show.
#[derive(Clone, Debug, Serialize)]
pub struct Projection {
    pub unit: usize,
    pub mode: &'static str,
    /// Side of the square picture (the network input's).
    pub size: usize,
    /// The unit's maximum (before its activation where it has one) and where.
    pub value: f32,
    pub y: usize,
    pub x: usize,
    pub ms: f64,
}

/// A frame's answer: the header, the quantised maps and the projection's pixels.
pub struct Reply {
    pub header: Header,
    pub maps: Vec<u8>,
    pub projection: Vec<u8>,
}

impl Reply {
    /// The bytes sent to the page (see the module doc).
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(&self.header).expect("header serialises");
        let mut out = Vec::with_capacity(4 + json.len() + self.maps.len() + self.projection.len());
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(&json);
        out.extend_from_slice(&self.maps);
        out.extend_from_slice(&self.projection);
        out
    }
}

/// Decodes a frame's bytes as the index decodes image files (format from the
/// content, size refused from the header, within the decode budget).
pub fn decode(bytes: &[u8], max_pixels: u64) -> crate::Result<RgbImage> {
    let name = std::path::Path::new("frame");
    if bytes.is_empty() {
        return Err(crate::Error::Decode {
            path: name.to_path_buf(),
            reason: "empty: no image bytes were sent".into(),
        });
    }
    preprocess::decode_bytes(bytes, name, max_pixels)
}

/// The layer's scale: from min(0, smallest) to the largest finite value, so that
/// 0 stays black for ReLU layers and comparable across frames of one scene.
pub fn scale(data: &[f32]) -> (f32, f32) {
    let (lo, hi) = crate::render::maps::finite_range(data);
    (lo.min(0.0), hi)
}

/// `v` on `[lo, hi]` as a byte, rounded; non-finite values and flat layers give 0.
pub fn quantise(v: f32, lo: f32, hi: f32) -> u8 {
    if !v.is_finite() || hi <= lo {
        return 0;
    }
    (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Runs `img` through `net` once and answers node `layer`'s maps (named `name`)
/// and, when the network ends in ImageNet classes, the top 5; with `back`, the
/// projection of that unit's maximum by that rule too.
pub fn infer(
    net: &Network,
    img: &RgbImage,
    layer: usize,
    name: &str,
    decode_ms: f64,
    back: Option<(usize, Rule)>,
) -> crate::Result<Reply> {
    let start = Instant::now();
    let last = net.arch.nodes.len() - 1;
    let (x, transform) = preprocess::prepare(img, &net.arch.recipe);
    let mut acts = net.forward_taps(&x, 1, &[Tap::post(layer), Tap::post(last)])?;
    let logits = acts.pop().expect("two taps");
    let act = acts.pop().expect("two taps");
    let forward_ms = start.elapsed().as_secs_f64() * 1e3;
    let (projection, pixels) = match back {
        Some((unit, rule)) => {
            let t = Instant::now();
            let s = net.arch.recipe.size as usize;
            let tap = Tap::new(layer, net.has_pre(layer));
            let obj = [Objective {
                unit,
                pick: Pick::Max,
            }];
            let g = net.input_gradient(&x, (1, s, s), tap, &obj, rule)?;
            let pic = crate::render::gradient::projection(&g.data, s, s, net.arch.recipe.bgr);
            let info = Projection {
                unit,
                mode: rule.name(),
                size: s,
                value: g.values[0],
                y: g.at[0].0,
                x: g.at[0].1,
                ms: t.elapsed().as_secs_f64() * 1e3,
            };
            (Some(info), pic.into_raw())
        }
        None => (None, Vec::new()),
    };
    let (lo, hi) = scale(&act.data);
    let maps = act.data.iter().map(|&v| quantise(v, lo, hi)).collect();
    let top5 = if net.arch.classes > 0 && logits.data.len() == net.arch.classes {
        top_classes(&logits.data, 5, &net.labels)
    } else {
        Vec::new()
    };
    Ok(Reply {
        header: Header {
            layer: name.to_string(),
            c: act.c,
            h: act.h,
            w: act.w,
            lo,
            hi,
            top5,
            transform,
            decode_ms,
            forward_ms,
            total_ms: decode_ms + start.elapsed().as_secs_f64() * 1e3,
            projection,
        },
        maps,
        projection: pixels,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_span_zero_to_the_layer_maximum() {
        let data = [0.0, 1.0, 2.0, 4.0, f32::NAN];
        let (lo, hi) = scale(&data);
        assert_eq!((lo, hi), (0.0, 4.0));
        let q: Vec<u8> = data.iter().map(|&v| quantise(v, lo, hi)).collect();
        // 1/4 of 255 = 63.75 -> 64; 2/4 -> 127.5 -> 128.
        assert_eq!(q, [0, 64, 128, 255, 0]);
        // A layer with negative values keeps its minimum at 0.
        assert_eq!(scale(&[-2.0, 2.0]), (-2.0, 2.0));
        assert_eq!(quantise(0.0, -2.0, 2.0), 128);
        // A flat layer is all zeros rather than a division by zero.
        assert_eq!(quantise(3.0, 3.0, 3.0), 0);
    }

    #[test]
    fn reply_is_length_prefixed_json_then_maps() {
        let r = Reply {
            header: Header {
                layer: "x".into(),
                c: 1,
                h: 1,
                w: 2,
                lo: 0.0,
                hi: 1.0,
                top5: vec![],
                transform: Transform {
                    orig_w: 2,
                    orig_h: 2,
                    crop: [0.0, 0.0, 2.0, 2.0],
                    size: 2,
                },
                decode_ms: 0.0,
                forward_ms: 0.0,
                total_ms: 0.0,
                projection: None,
            },
            maps: vec![7, 9],
            projection: vec![1, 2, 3],
        };
        let b = r.encode();
        let n = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
        let v: serde_json::Value = serde_json::from_slice(&b[4..4 + n]).unwrap();
        assert_eq!(v["layer"], "x");
        assert_eq!(&b[4 + n..], &[7, 9, 1, 2, 3]);
    }

    #[test]
    fn bad_frames_are_refused_with_a_sentence() {
        let says = |bytes: &[u8], max: u64| decode(bytes, max).unwrap_err().to_string();
        assert!(says(b"", 100).contains("empty"));
        assert!(says(b"definitely not a picture", 100).contains("not a recognised image"));
        // A PPM header announcing 5000 x 5000 pixels is refused before decoding.
        let e = says(b"P6\n5000 5000\n255\n\0\0\0", 1_000_000);
        assert!(e.contains("5000x5000"), "{e}");
        let mut png = Vec::new();
        RgbImage::from_pixel(3, 2, image::Rgb([1, 2, 3]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(decode(&png, 100).unwrap().get_pixel(2, 1).0, [1, 2, 3]);
        assert!(decode(&png[..png.len() / 2], 100).is_err());
    }
}
