//! From a file to the network input, remembering how: decode (by content), EXIF
//! orientation, centre crop, resize, normalise. The returned `Transform` maps points
//! and boxes in network-input pixels back to original-image pixels.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use image::{ImageDecoder, ImageReader, RgbImage};
use serde::{Deserialize, Serialize};

use crate::arch::{Filter, Norm, Recipe};
use crate::{Error, Result};

/// Images above this many pixels are refused before their pixels are decoded.
pub const DEFAULT_MAX_PIXELS: u64 = 100_000_000;

/// Where the network input came from: the crop `[x0, y0, w, h]` of the (oriented)
/// original image, in its pixels, that was resized to `size` x `size`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transform {
    pub orig_w: u32,
    pub orig_h: u32,
    pub crop: [f64; 4],
    pub size: u32,
}

/// A box mapped to original-image pixels.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MappedBox {
    /// `[x0, y0, x1, y1]`, unclipped: may lie partly outside the image.
    pub exact: [f64; 4],
    /// The part inside the image, whole pixels, end exclusive.
    pub clipped: [u32; 4],
    /// How far `exact` reaches past the left, top, right and bottom borders (>= 0).
    pub spill: [f64; 4],
}

impl Transform {
    /// Input-pixel coordinates (pixel i spans [i, i+1)) to original-image coordinates.
    pub fn to_original(&self, x: f64, y: f64) -> (f64, f64) {
        let [x0, y0, w, h] = self.crop;
        let s = self.size as f64;
        (x0 + x * w / s, y0 + y * h / s)
    }

    /// Maps `[x0, y0, x1, y1]` in input pixels to the original image.
    pub fn box_to_original(&self, b: [f64; 4]) -> MappedBox {
        let (x0, y0) = self.to_original(b[0], b[1]);
        let (x1, y1) = self.to_original(b[2], b[3]);
        let (w, h) = (self.orig_w as f64, self.orig_h as f64);
        let clip = |v: f64, hi: f64| v.clamp(0.0, hi);
        MappedBox {
            exact: [x0, y0, x1, y1],
            clipped: [
                clip(x0.floor(), w) as u32,
                clip(y0.floor(), h) as u32,
                clip(x1.ceil(), w) as u32,
                clip(y1.ceil(), h) as u32,
            ],
            spill: [
                (-x0).max(0.0),
                (-y0).max(0.0),
                (x1 - w).max(0.0),
                (y1 - h).max(0.0),
            ],
        }
    }
}

/// Decodes an image file as 8-bit RGB, upright per its EXIF orientation. The format
/// is found from the content. Alpha is dropped and 16-bit or grayscale data converted,
/// as PIL's `convert("RGB")` does, so references made with PIL agree.
pub fn open_image(path: &Path, max_pixels: u64) -> Result<RgbImage> {
    let decode_err = |reason: String| Error::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    if reader.format().is_none() {
        return Err(decode_err("not a recognised image format".into()));
    }
    let mut decoder = reader
        .into_decoder()
        .map_err(|e| decode_err(e.to_string()))?;
    let (w, h) = decoder.dimensions();
    let pixels = w as u64 * h as u64;
    if pixels > max_pixels {
        return Err(Error::TooLarge {
            path: path.to_path_buf(),
            width: w,
            height: h,
            mp: pixels as f64 / 1e6,
            limit_mp: max_pixels as f64 / 1e6,
        });
    }
    if pixels == 0 {
        return Err(decode_err("image has no pixels".into()));
    }
    let orientation = decoder.orientation().ok();
    let mut img =
        image::DynamicImage::from_decoder(decoder).map_err(|e| decode_err(e.to_string()))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(img.into_rgb8())
}

/// The network input for `img` per `recipe` (CHW f32, `3*size*size`) and its transform.
pub fn prepare(img: &RgbImage, recipe: &Recipe) -> (Vec<f32>, Transform) {
    let (w, h) = img.dimensions();
    // Whole pixels, rounded half to even, as the reference (PIL crop, Python round) does.
    let side = recipe.crop_fraction * w.min(h) as f64;
    let (x0, y0) = (
        ((w as f64 - side) / 2.0).round_ties_even(),
        ((h as f64 - side) / 2.0).round_ties_even(),
    );
    let side = side.round_ties_even().max(1.0);
    let crop = [x0, y0, side, side];
    let size = recipe.size as usize;
    let pixels = resample(img, crop, size, recipe.filter);
    let mut out = vec![0f32; 3 * size * size];
    let plane = size * size;
    for (i, px) in pixels.chunks_exact(3).enumerate() {
        for c in 0..3 {
            let v = px[c] as f32;
            out[c * plane + i] = match recipe.norm {
                Norm::Affine { sub, div } => (v - sub) / div,
                Norm::MeanStd { mean, std } => (v / 255.0 - mean[c]) / std[c],
            };
        }
    }
    let t = Transform {
        orig_w: w,
        orig_h: h,
        crop,
        size: recipe.size,
    };
    (out, t)
}

/// Keys' cubic convolution kernel with a = -0.5 (PIL's and Catmull-Rom's bicubic).
fn bicubic(x: f64) -> f64 {
    let a = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

fn triangle(x: f64) -> f64 {
    (1.0 - x.abs()).max(0.0)
}

/// Taps of a 1-D resampling from the span [start, start+len) of an axis of `in_len`
/// pixels to `out_len` pixels: per output pixel, the first input index and its weights.
/// When shrinking, the kernel is widened by the scale (antialiasing), as PIL does;
/// taps that fall outside the image are dropped and the rest renormalised.
fn taps(
    start: f64,
    len: f64,
    in_len: usize,
    out_len: usize,
    filter: Filter,
) -> Vec<(usize, Vec<f64>)> {
    let (kernel, support): (fn(f64) -> f64, f64) = match filter {
        Filter::Bicubic => (bicubic, 2.0),
        Filter::Bilinear => (triangle, 1.0),
    };
    let scale = len / out_len as f64;
    let widen = scale.max(1.0);
    let support = support * widen;
    (0..out_len)
        .map(|i| {
            let center = start + (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0) as usize).min(in_len - 1);
            let hi = ((center + support + 0.5).floor() as usize).clamp(lo + 1, in_len);
            let mut w: Vec<f64> = (lo..hi)
                .map(|j| kernel((j as f64 + 0.5 - center) / widen))
                .collect();
            let sum: f64 = w.iter().sum();
            if sum != 0.0 {
                w.iter_mut().for_each(|v| *v /= sum);
            }
            (lo, w)
        })
        .collect()
}

/// Resamples the `crop` region ([x0, y0, w, h], fractional) of `img` to `size` x
/// `size` RGB, horizontal pass first with 8-bit rounding in between, like PIL.
fn resample(img: &RgbImage, crop: [f64; 4], size: usize, filter: Filter) -> Vec<u8> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let xt = taps(crop[0], crop[2], w, size, filter);
    let yt = taps(crop[1], crop[3], h, size, filter);
    // Only the rows the vertical pass reads.
    let row_lo = yt.first().map(|t| t.0).unwrap_or(0);
    let row_hi = yt.iter().map(|(lo, w)| lo + w.len()).max().unwrap_or(h);
    let raw = img.as_raw();
    // Round half away from zero, as `f64::round` does for these non-negative values,
    // but inline: without SSE4.1 in the baseline target `round` is a libm call per
    // value (3% of an index run's CPU time).
    let to_u8 = |v: f64| (v.clamp(0.0, 255.0) + 0.5) as u8;
    let mut tmp = vec![0u8; (row_hi - row_lo) * size * 3];
    for y in row_lo..row_hi {
        let src = &raw[y * w * 3..(y + 1) * w * 3];
        let dst = &mut tmp[(y - row_lo) * size * 3..(y - row_lo + 1) * size * 3];
        for (x, (lo, ws)) in xt.iter().enumerate() {
            let mut acc = [0f64; 3];
            for (k, wk) in ws.iter().enumerate() {
                let p = &src[(lo + k) * 3..(lo + k) * 3 + 3];
                for c in 0..3 {
                    acc[c] += wk * p[c] as f64;
                }
            }
            for c in 0..3 {
                dst[x * 3 + c] = to_u8(acc[c]);
            }
        }
    }
    let mut out = vec![0u8; size * size * 3];
    for (y, (lo, ws)) in yt.iter().enumerate() {
        for x in 0..size {
            let mut acc = [0f64; 3];
            for (k, wk) in ws.iter().enumerate() {
                let p = &tmp[((lo + k - row_lo) * size + x) * 3..][..3];
                for c in 0..3 {
                    acc[c] += wk * p[c] as f64;
                }
            }
            for c in 0..3 {
                out[(y * size + x) * 3 + c] = to_u8(acc[c]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe(size: u32, filter: Filter) -> Recipe {
        Recipe {
            size,
            crop_fraction: 1.0,
            filter,
            norm: Norm::Affine { sub: 0.0, div: 1.0 },
        }
    }

    #[test]
    fn identity_resize_keeps_every_pixel() {
        let img = RgbImage::from_fn(9, 9, |x, y| image::Rgb([(x * 20) as u8, (y * 25) as u8, 7]));
        for filter in [Filter::Bicubic, Filter::Bilinear] {
            let (x, _) = prepare(&img, &recipe(9, filter));
            for y in 0..9 {
                for xx in 0..9 {
                    assert_eq!(x[y * 9 + xx], (xx * 20) as f32);
                    assert_eq!(x[81 + y * 9 + xx], (y * 25) as f32);
                }
            }
        }
    }

    #[test]
    fn flat_image_stays_flat_and_normalises() {
        let img = RgbImage::from_pixel(300, 200, image::Rgb([255, 127, 0]));
        let r = Recipe {
            size: 224,
            crop_fraction: 0.875,
            filter: Filter::Bicubic,
            norm: Norm::Affine {
                sub: 127.0,
                div: 128.0,
            },
        };
        let (x, t) = prepare(&img, &r);
        let plane = 224 * 224;
        assert!(x[..plane].iter().all(|&v| v == 1.0));
        assert!(x[plane..2 * plane].iter().all(|&v| v == 0.0));
        assert!(x[2 * plane..].iter().all(|&v| v == -127.0 / 128.0));
        // 87.5% of the short side (200) = 175, centred in 300 x 200 at (62.5, 12.5), rounded half to even.
        assert_eq!(t.crop, [62.0, 12.0, 175.0, 175.0]);
    }

    #[test]
    fn boxes_map_back_through_the_crop() {
        let t = Transform {
            orig_w: 400,
            orig_h: 300,
            crop: [50.0, 0.0, 300.0, 300.0],
            size: 150,
        };
        // Input pixel 0..150 covers the crop; 2 original px per input px.
        assert_eq!(t.to_original(0.0, 0.0), (50.0, 0.0));
        assert_eq!(t.to_original(150.0, 150.0), (350.0, 300.0));
        let b = t.box_to_original([-10.0, -5.0, 20.0, 160.0]);
        assert_eq!(b.exact, [30.0, -10.0, 90.0, 320.0]);
        assert_eq!(b.clipped, [30, 0, 90, 300]);
        assert_eq!(b.spill, [0.0, 10.0, 0.0, 20.0]);
    }

    #[test]
    fn shrinking_averages_like_an_antialiased_filter() {
        // A 1-pixel checkerboard shrunk 4x becomes mid-grey, not aliased stripes.
        let img = RgbImage::from_fn(64, 64, |x, y| {
            let v = if (x + y) % 2 == 0 { 255 } else { 0 };
            image::Rgb([v, v, v])
        });
        let (x, _) = prepare(&img, &recipe(16, Filter::Bicubic));
        for v in &x[16 * 3..16 * 13] {
            assert!((v - 127.5).abs() <= 2.0, "{v}");
        }
    }
}
