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

pub mod budget;
pub use budget::Reservation;

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
/// as PIL's `convert("RGB")` does, so references made with PIL agree. Decoding waits
/// for its share of the process's decode budget (`budget`).
pub fn open_image(path: &Path, max_pixels: u64) -> Result<RgbImage> {
    open_image_reserved(path, max_pixels, &mut budget::GLOBAL.reserve())
}

/// `open_image`, holding what the decoding needed in `r` until the caller is done
/// with the pixels (and drops `r`).
pub fn open_image_reserved(
    path: &Path,
    max_pixels: u64,
    r: &mut Reservation<'_>,
) -> Result<RgbImage> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = ImageReader::new(BufReader::new(file));
    decode_with(reader, path, max_pixels, r, |r| {
        jpeg::decode(path, max_pixels, r)
    })
}

/// Decodes image bytes held in memory (a frame sent to `serve`) as `open_image`
/// decodes a file, within the same budget; `name` names them in errors.
pub fn decode_bytes(data: &[u8], name: &Path, max_pixels: u64) -> Result<RgbImage> {
    let reader = ImageReader::new(std::io::Cursor::new(data));
    let r = &mut budget::GLOBAL.reserve();
    decode_with(reader, name, max_pixels, r, |r| {
        jpeg::decode_mem(data, name, max_pixels, r)
    })
}

/// The one decoding path: the format from the content, the size refused from the
/// header before any pixel is decoded, JPEGs by `jpeg` (libjpeg's decoder, `None`
/// for CMYK/YCCK, which `image` decodes), everything within the decode budget.
fn decode_with<R: std::io::BufRead + std::io::Seek>(
    reader: ImageReader<R>,
    path: &Path,
    max_pixels: u64,
    r: &mut Reservation<'_>,
    jpeg: impl FnOnce(&mut Reservation<'_>) -> Result<Option<RgbImage>>,
) -> Result<RgbImage> {
    let decode_err = |reason: String| Error::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let mut reader = reader
        .with_guessed_format()
        .map_err(|e| Error::io(path, e))?;
    match reader.format() {
        None => return Err(decode_err("not a recognised image format".into())),
        // libjpeg-turbo's decoding (PIL's), except for CMYK/YCCK files, left to `image`.
        Some(image::ImageFormat::Jpeg) => {
            if let Some(img) = jpeg(r)? {
                return Ok(img);
            }
        }
        Some(_) => {}
    }
    // The decoders' own allocations (PNG's, for one) within the whole budget too.
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(budget::GLOBAL.limit());
    reader.limits(limits);
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
    // The decoded pixels in their own type, their RGB copy, and a turned copy.
    let turned = orientation.is_some_and(|o| o != image::metadata::Orientation::NoTransforms);
    r.grow_to(
        path,
        decoder.total_bytes() + pixels * 3 * (1 + turned as u64),
    )?;
    let mut img =
        image::DynamicImage::from_decoder(decoder).map_err(|e| decode_err(e.to_string()))?;
    if let Some(o) = orientation {
        img.apply_orientation(o);
    }
    Ok(img.into_rgb8())
}

/// JPEG decoding as PIL does it: libjpeg-turbo's (here mozjpeg's, the same decoder built
/// without SIMD) accurate integer IDCT and fancy chroma upsampling, output as RGB
/// (grayscale replicated), then the EXIF orientation.
mod jpeg {
    use std::os::raw::c_int;
    use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
    use std::path::Path;

    use image::metadata::Orientation;
    use image::{DynamicImage, RgbImage};
    use mozjpeg::{Decompress, Marker};
    use mozjpeg_sys as ffi;

    use super::Reservation;
    use crate::{Error, Result};

    /// libjpeg's message for the current error or warning.
    fn message(cinfo: &mut ffi::jpeg_common_struct) -> String {
        // JMSG_LENGTH_MAX is 200; the binding's type says 80, so pass a buffer that fits.
        let mut buf = [0u8; 256];
        // SAFETY: `err` is the manager libjpeg was given; format_message writes at most
        // JMSG_LENGTH_MAX bytes, NUL included, into the buffer.
        unsafe {
            let code = (*cinfo.err).msg_code;
            let Some(f) = (*cinfo.err).format_message else {
                return format!("libjpeg message {code}");
            };
            let f: unsafe extern "C-unwind" fn(&mut ffi::jpeg_common_struct, *mut u8) =
                std::mem::transmute(f);
            f(cinfo, buf.as_mut_ptr());
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    }

    extern "C-unwind" fn error_exit(cinfo: &mut ffi::jpeg_common_struct) {
        let msg = message(cinfo);
        resume_unwind(Box::new(msg));
    }

    /// Warnings are data libjpeg recovers from and PIL ignores, except running out of
    /// data: PIL refuses a truncated file, and so do we.
    extern "C-unwind" fn emit_message(cinfo: &mut ffi::jpeg_common_struct, level: c_int) {
        // SAFETY: as in `message`.
        let code = unsafe { (*cinfo.err).msg_code };
        if level < 0 && code == ffi::JWRN_JPEG_EOF as c_int {
            resume_unwind(Box::new("the file is truncated".to_string()));
        }
    }

    /// The decoded image, or `None` for a colour space left to the `image` crate.
    pub(super) fn decode(
        path: &Path,
        max_pixels: u64,
        r: &mut Reservation<'_>,
    ) -> Result<Option<RgbImage>> {
        // The file is read whole, so it counts against the budget too.
        let size = std::fs::metadata(path)
            .map_err(|e| Error::io(path, e))?
            .len();
        r.grow_to(path, size)?;
        let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        decode_mem(&data, path, max_pixels, r)
    }

    /// As `decode`, for JPEG bytes in memory; `path` names them in errors.
    pub(super) fn decode_mem(
        data: &[u8],
        path: &Path,
        max_pixels: u64,
        r: &mut Reservation<'_>,
    ) -> Result<Option<RgbImage>> {
        let decode_err = |reason: String| Error::Decode {
            path: path.to_path_buf(),
            reason,
        };
        let run = || -> Result<Option<RgbImage>> {
            let io = |e: std::io::Error| decode_err(e.to_string());
            // SAFETY: a zeroed manager is what jpeg_std_error expects to fill in.
            let mut err: ffi::jpeg_error_mgr = unsafe { std::mem::zeroed() };
            unsafe { ffi::jpeg_std_error(&mut err) };
            err.error_exit = Some(error_exit);
            err.emit_message = Some(emit_message);
            let d = Decompress::builder()
                .with_err(err)
                .with_markers(&[Marker::APP(1)])
                .from_mem(data)
                .map_err(io)?;
            let (w, h) = d.size();
            let pixels = w as u64 * h as u64;
            if pixels > max_pixels {
                return Err(Error::TooLarge {
                    path: path.to_path_buf(),
                    width: w as u32,
                    height: h as u32,
                    mp: pixels as f64 / 1e6,
                    limit_mp: max_pixels as f64 / 1e6,
                });
            }
            if pixels == 0 {
                return Err(decode_err("image has no pixels".into()));
            }
            // The file, the RGB pixels and a turned copy of them.
            r.grow_to(path, data.len() as u64 + pixels * 6)?;
            if matches!(
                d.color_space(),
                ffi::J_COLOR_SPACE::JCS_CMYK | ffi::J_COLOR_SPACE::JCS_YCCK
            ) {
                return Ok(None);
            }
            // The first Exif APP1 segment, as PIL reads it.
            let orientation = d
                .markers()
                .find(|m| m.marker == Marker::APP(1) && m.data.starts_with(b"Exif\0\0"))
                .and_then(|m| Orientation::from_exif_chunk(&m.data[6..]));
            let mut started = d.rgb().map_err(io)?;
            let rgb: Vec<u8> = started.read_scanlines().map_err(io)?;
            // Not finishing: a file whose pixels are all there but lacks its end marker
            // decodes, as in PIL.
            drop(started);
            let img = RgbImage::from_raw(w as u32, h as u32, rgb)
                .ok_or_else(|| decode_err("short pixel data".into()))?;
            Ok(Some(match orientation {
                Some(o) if o != Orientation::NoTransforms => {
                    let mut img = DynamicImage::ImageRgb8(img);
                    img.apply_orientation(o);
                    img.into_rgb8()
                }
                _ => img,
            }))
        };
        match catch_unwind(AssertUnwindSafe(run)) {
            Ok(r) => r,
            Err(payload) => Err(decode_err(match payload.downcast::<String>() {
                Ok(msg) => *msg,
                Err(_) => "the JPEG decoder failed".into(),
            })),
        }
    }
}

/// The network input for `img` per `recipe` (CHW f32, `3*size*size`) and its transform.
pub fn prepare(img: &RgbImage, recipe: &Recipe) -> (Vec<f32>, Transform) {
    let (w, h) = img.dimensions();
    let size = recipe.size as usize;
    let (pixels, crop) = match recipe.resize {
        Some(short) => resize_then_crop(img, short, size, recipe.filter),
        None => {
            // Whole pixels, rounded half to even, as the reference (PIL crop, Python
            // round) does.
            let side = recipe.crop_fraction * w.min(h) as f64;
            let (x0, y0) = (
                ((w as f64 - side) / 2.0).round_ties_even(),
                ((h as f64 - side) / 2.0).round_ties_even(),
            );
            let side = side.round_ties_even().max(1.0);
            let crop = [x0, y0, side, side];
            (resample(img, crop, size, recipe.filter), crop)
        }
    };
    let mut out = vec![0f32; 3 * size * size];
    let plane = size * size;
    let order = if recipe.bgr { [2, 1, 0] } else { [0, 1, 2] };
    for (i, px) in pixels.chunks_exact(3).enumerate() {
        for c in 0..3 {
            let v = px[order[c]] as f32;
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

/// torchvision's `Resize(short)` then `CenterCrop(size)` on a PIL image: PIL resizes
/// the whole image (short side to `short`, long side to `int(short * long / short)`),
/// and the crop keeps the centre `size` outputs (offsets rounded half to even, as
/// Python's `round`). Computing only those outputs of the same filter taps gives the
/// same bytes. Returns the pixels and the crop in original-image coordinates.
fn resize_then_crop(
    img: &RgbImage,
    short: u32,
    size: usize,
    filter: Filter,
) -> (Vec<u8>, [f64; 4]) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let short = short as usize;
    let (ow, oh) = if w <= h {
        (short, (short as u64 * h as u64 / w.max(1) as u64) as usize)
    } else {
        ((short as u64 * w as u64 / h.max(1) as u64) as usize, short)
    };
    let (ow, oh) = (ow.max(size), oh.max(size));
    let left = ((ow - size) as f64 / 2.0).round_ties_even() as usize;
    let top = ((oh - size) as f64 / 2.0).round_ties_even() as usize;
    // PIL resizes the whole axis and torchvision then crops; only the kept outputs are
    // computed here, the same numbers.
    let xt = taps_of(0.0, w as f32, w, ow, left..left + size, filter);
    let yt = taps_of(0.0, h as f32, h, oh, top..top + size, filter);
    let (sx, sy) = (w as f64 / ow as f64, h as f64 / oh as f64);
    let crop = [
        left as f64 * sx,
        top as f64 * sy,
        size as f64 * sx,
        size as f64 * sy,
    ];
    (resample_taps(img, &xt, &yt, size, true, true), crop)
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

/// PIL's fixed-point precision for 8-bit resampling (`PRECISION_BITS` in Resample.c):
/// weights are integers scaled by 2^22, sums are 32-bit.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// A 1-D resampling from the span [in0, in1) of an axis of `in_len` pixels to `out_len`
/// pixels, as PIL's `precompute_coeffs` + `normalize_coeffs_8bpc` compute it: per output
/// pixel the first input index and its fixed-point weights. When shrinking, the kernel
/// is widened by the scale (antialiasing); taps that fall outside the image are dropped
/// and the rest renormalised (in f64, before rounding to fixed point).
struct Taps {
    first: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

fn taps(in0: f32, in1: f32, in_len: usize, out_len: usize, filter: Filter) -> Taps {
    taps_of(in0, in1, in_len, out_len, 0..out_len, filter)
}

/// `taps` for the outputs `outs` only: a resize to a huge axis (a 1 x 10^8 photo's short
/// side to 256) is cut to its centre without computing the rest.
fn taps_of(
    in0: f32,
    in1: f32,
    in_len: usize,
    out_len: usize,
    outs: std::ops::Range<usize>,
    filter: Filter,
) -> Taps {
    let (kernel, support): (fn(f64) -> f64, f64) = match filter {
        Filter::Bicubic => (bicubic, 2.0),
        Filter::Bilinear => (triangle, 1.0),
    };
    // PIL takes the box as f32 and subtracts in f32.
    let scale = (in1 - in0) as f64 / out_len as f64;
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    let ss = 1.0 / filterscale;
    let one = (1i64 << PRECISION_BITS) as f64;
    let mut first = Vec::with_capacity(outs.len());
    let mut weights = Vec::with_capacity(outs.len());
    for i in outs {
        let center = in0 as f64 + (i as f64 + 0.5) * scale;
        // C's (int) casts: truncation toward zero.
        let lo = ((center - support + 0.5) as i64).max(0);
        let hi = ((center + support + 0.5) as i64).min(in_len as i64);
        let mut w: Vec<f64> = (lo..hi.max(lo))
            .map(|j| kernel((j as f64 - center + 0.5) * ss))
            .collect();
        let sum: f64 = w.iter().sum();
        if sum != 0.0 {
            w.iter_mut().for_each(|v| *v /= sum);
        }
        first.push(lo as usize);
        weights.push(
            w.iter()
                .map(|&v| {
                    if v < 0.0 {
                        (-0.5 + v * one) as i32
                    } else {
                        (0.5 + v * one) as i32
                    }
                })
                .collect(),
        );
    }
    Taps { first, weights }
}

/// A fixed-point sum back to 8 bits: PIL's `clip8` (the sums start at half a unit, so
/// the shift rounds).
#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resamples the `crop` region ([x0, y0, w, h]) of `img` to `size` x `size` RGB exactly
/// as PIL's `Image.resize(box=...)` does for an 8-bit RGB image: fixed-point weights,
/// horizontal pass first (over only the rows the vertical pass reads) with 8-bit
/// rounding in between, and a pass skipped when it would be the identity.
fn resample(img: &RgbImage, crop: [f64; 4], size: usize, filter: Filter) -> Vec<u8> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let bx = [
        crop[0] as f32,
        crop[1] as f32,
        (crop[0] + crop[2]) as f32,
        (crop[1] + crop[3]) as f32,
    ];
    let need_h = size != w || bx[0] != 0.0 || bx[2] != size as f32;
    let need_v = size != h || bx[1] != 0.0 || bx[3] != size as f32;
    let xt = taps(bx[0], bx[2], w, size, filter);
    let yt = taps(bx[1], bx[3], h, size, filter);
    resample_taps(img, &xt, &yt, size, need_h, need_v)
}

/// The two passes of PIL's resampling with given taps, horizontal then vertical (each
/// rounded to 8 bits), to `size` x `size`; a pass not needed is skipped as PIL does.
fn resample_taps(
    img: &RgbImage,
    xt: &Taps,
    yt: &Taps,
    size: usize,
    need_h: bool,
    need_v: bool,
) -> Vec<u8> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let half = 1i32 << (PRECISION_BITS - 1);
    let raw = img.as_raw();
    // The rows the vertical pass reads, and the image it reads them from.
    let (row_lo, row_hi) = if need_v {
        (yt.first[0], yt.first[size - 1] + yt.weights[size - 1].len())
    } else {
        (0, h)
    };
    let tmp: std::borrow::Cow<[u8]> = if need_h {
        let mut tmp = vec![0u8; (row_hi - row_lo) * size * 3];
        for (src, dst) in raw[row_lo * w * 3..row_hi * w * 3]
            .chunks_exact(w * 3)
            .zip(tmp.chunks_exact_mut(size * 3))
        {
            for ((lo, ws), out) in xt
                .first
                .iter()
                .zip(&xt.weights)
                .zip(dst.chunks_exact_mut(3))
            {
                let (mut r, mut g, mut b) = (half, half, half);
                for (p, &k) in src[lo * 3..].chunks_exact(3).zip(ws) {
                    r += p[0] as i32 * k;
                    g += p[1] as i32 * k;
                    b += p[2] as i32 * k;
                }
                out.copy_from_slice(&[clip8(r), clip8(g), clip8(b)]);
            }
        }
        tmp.into()
    } else {
        raw[row_lo * w * 3..row_hi * w * 3].into()
    };
    if !need_v {
        return tmp.into_owned();
    }
    let stride = size * 3;
    let mut out = vec![0u8; size * stride];
    let mut acc = vec![0i32; stride];
    for ((lo, ws), dst) in yt
        .first
        .iter()
        .zip(&yt.weights)
        .zip(out.chunks_exact_mut(stride))
    {
        acc.fill(half);
        for (k, &wk) in ws.iter().enumerate() {
            let row = &tmp[(lo + k - row_lo) * stride..][..stride];
            for (a, &p) in acc.iter_mut().zip(row) {
                *a += p as i32 * wk;
            }
        }
        for (d, &a) in dst.iter_mut().zip(&acc) {
            *d = clip8(a);
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
            resize: None,
            bgr: false,
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
    fn a_sliver_resized_by_its_short_side_computes_only_the_centre() {
        // Resize(256) would make this 256 x 10^9: only the centre 224 x 224 is computed.
        let img = RgbImage::from_pixel(1, 4_000_000, image::Rgb([10, 200, 30]));
        let r = Recipe {
            resize: Some(256),
            ..recipe(224, Filter::Bilinear)
        };
        let (x, t) = prepare(&img, &r);
        assert_eq!(x.len(), 3 * 224 * 224);
        assert!(x[..224 * 224].iter().all(|&v| v == 10.0));
        assert!(x[2 * 224 * 224..].iter().all(|&v| v == 30.0));
        // The crop maps back to the middle of the sliver: 224/256 of its width, and the
        // matching 224 / 256 px of its height around the centre.
        let [x0, y0, w, h] = t.crop;
        assert!(
            (w - 0.875).abs() < 1e-9 && (x0 - 16.0 / 256.0).abs() < 1e-9,
            "{:?}",
            t.crop
        );
        assert!(
            (h - 0.875).abs() < 1e-6 && (y0 + h / 2.0 - 2e6).abs() < 1.0,
            "{:?}",
            t.crop
        );
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
            resize: None,
            bgr: false,
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

    /// Golden values from Pillow 12.3 (`Image.resize(size, filter, box=...)` on the same
    /// 7 x 5 RGB image): the fixed-point resampler must agree to the bit, shrinking (with
    /// overshoot clipped at 0 and 255), enlarging, and for both filters.
    #[test]
    fn resampling_matches_pil_to_the_bit() {
        let img = RgbImage::from_fn(7, 5, |x, y| {
            image::Rgb([
                ((x * 37 + y * 11) % 256) as u8,
                ((x * x * 13 + y * 29 + 5) % 256) as u8,
                ((255 + 256 - x * 19 - y * 23) % 256) as u8,
            ])
        });
        #[rustfmt::skip]
        let cases: [(usize, [f64; 4], Filter, &[u8]); 3] = [
            (3, [1.0, 0.0, 5.0, 5.0], Filter::Bicubic, &[
                49, 37, 224, 115, 147, 190, 181, 158, 156, 67, 91, 186, 133, 144, 152, 200, 101,
                118, 85, 140, 148, 152, 177, 114, 202, 118, 80,
            ]),
            (6, [0.0, 0.0, 5.0, 5.0], Filter::Bicubic, &[
                0, 4, 255, 26, 11, 243, 59, 37, 226, 89, 80, 210, 120, 147, 194, 151, 208, 178, 7,
                26, 239, 34, 33, 226, 67, 59, 209, 97, 101, 193, 128, 173, 177, 159, 247, 161, 16,
                51, 220, 43, 58, 206, 76, 84, 189, 106, 135, 173, 137, 159, 157, 168, 103, 141, 26,
                75, 200, 53, 82, 186, 86, 108, 169, 116, 165, 153, 147, 156, 137, 178, 10, 121, 35,
                100, 180, 62, 107, 166, 95, 133, 149, 125, 189, 133, 156, 185, 117, 187, 53, 101,
                43, 122, 163, 70, 129, 149, 103, 155, 132, 133, 211, 116, 164, 207, 100, 196, 75,
                84,
            ]),
            (4, [1.0, 1.0, 4.0, 4.0], Filter::Bilinear, &[
                48, 47, 213, 85, 86, 194, 122, 151, 175, 159, 242, 156, 59, 76, 190, 96, 115, 171,
                133, 180, 152, 170, 15, 133, 70, 105, 167, 107, 144, 148, 144, 209, 129, 181, 44,
                110, 81, 134, 144, 118, 173, 125, 155, 238, 106, 192, 73, 87,
            ]),
        ];
        for (size, crop, filter, want) in cases {
            assert_eq!(
                resample(&img, crop, size, filter),
                want,
                "{size} {crop:?} {filter:?}"
            );
        }
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
