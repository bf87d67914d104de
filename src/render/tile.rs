//! Single tiles cut from an original image: the receptive-field crop (padded, never
//! stretched, where the field spills past the border), the whole image with the field
//! outlined, and the whole image with a unit's activation map laid over it.
//!
//! Coordinates are original-image pixels, continuous: pixel i spans [i, i+1).

use image::{Rgb, RgbImage};

use super::colormap::{normalise, Colormap};
use super::grid::outline;
use crate::preprocess::Transform;
use crate::receptive::Field;

/// The two greys of the hatching that marks area outside the image.
const PAD_A: Rgb<u8> = Rgb([58, 58, 64]);
const PAD_B: Rgb<u8> = Rgb([40, 40, 46]);
pub const BOX_COLOR: Rgb<u8> = Rgb([255, 214, 0]);

/// Whether `c` is one of the padding colours.
pub fn is_padding(c: Rgb<u8>) -> bool {
    c == PAD_A || c == PAD_B
}

fn pad_at(x: u32, y: u32) -> Rgb<u8> {
    if ((x + y) / 4).is_multiple_of(2) {
        PAD_A
    } else {
        PAD_B
    }
}

/// Largest `(w, h)` with the aspect of `w` x `h` that fits in `max_w` x `max_h`.
pub fn fit(w: f64, h: f64, max_w: u32, max_h: u32) -> (u32, u32) {
    if !(w > 0.0 && h > 0.0) {
        return (max_w.max(1), max_h.max(1));
    }
    let s = (max_w as f64 / w).min(max_h as f64 / h);
    (
        ((w * s).round() as u32).clamp(1, max_w.max(1)),
        ((h * s).round() as u32).clamp(1, max_h.max(1)),
    )
}

/// Per output pixel along one axis: the source pixels it averages `[lo, hi)` (possibly
/// outside `0..len`) and whether its centre lies inside the image.
fn spans(start: f64, end: f64, len: u32, out: u32) -> Vec<(i64, i64, bool)> {
    let step = (end - start) / out as f64;
    (0..out)
        .map(|o| {
            let a = start + o as f64 * step;
            let b = a + step;
            let centre = (a + b) / 2.0;
            let inside = centre >= 0.0 && centre < len as f64;
            // Source pixels whose centres fall in [a, b); at least the nearest one.
            let mut lo = (a - 0.5).ceil() as i64;
            let mut hi = (b - 0.5).ceil() as i64;
            if hi <= lo {
                lo = centre.floor() as i64;
                hi = lo + 1;
            }
            let lo = lo.clamp(0, len as i64 - 1);
            let hi = hi.clamp(lo + 1, len as i64);
            (lo, hi, inside)
        })
        .collect()
}

/// Resamples the region `[x0, y0, x1, y1]` of `img` to `out_w` x `out_h`: box-averaged
/// when shrinking, nearest pixel when enlarging (a small field shows its real pixels);
/// output pixels whose centre falls outside the image are hatched grey.
pub fn sample_region(img: &RgbImage, r: [f64; 4], out_w: u32, out_h: u32) -> RgbImage {
    let xs = spans(r[0], r[2], img.width(), out_w);
    let ys = spans(r[1], r[3], img.height(), out_h);
    let mut out = RgbImage::new(out_w, out_h);
    for (oy, &(y0, y1, yin)) in ys.iter().enumerate() {
        for (ox, &(x0, x1, xin)) in xs.iter().enumerate() {
            let px = if xin && yin {
                let mut acc = [0u32; 3];
                for y in y0..y1 {
                    for x in x0..x1 {
                        let p = img.get_pixel(x as u32, y as u32).0;
                        for c in 0..3 {
                            acc[c] += p[c] as u32;
                        }
                    }
                }
                let n = ((y1 - y0) * (x1 - x0)) as u32;
                Rgb(acc.map(|a| ((a + n / 2) / n) as u8))
            } else {
                pad_at(ox as u32, oy as u32)
            };
            out.put_pixel(ox as u32, oy as u32, px);
        }
    }
    out
}

/// An image with successively halved copies, so that shrinking a large region to a
/// small tile reads a few pixels per output pixel instead of the whole region.
pub struct Pyramid {
    levels: Vec<RgbImage>,
}

impl Pyramid {
    /// Halves (2x2 means) until the short side would drop below 64 pixels.
    pub fn new(img: RgbImage) -> Pyramid {
        let mut levels = vec![img];
        loop {
            let last = levels.last().unwrap();
            let (w, h) = (last.width() / 2, last.height() / 2);
            if w.min(h) < 64 {
                break;
            }
            let half = RgbImage::from_fn(w, h, |x, y| {
                let mut acc = [0u32; 3];
                for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                    let p = last.get_pixel(2 * x + dx, 2 * y + dy).0;
                    for c in 0..3 {
                        acc[c] += p[c] as u32;
                    }
                }
                Rgb(acc.map(|a| ((a + 2) / 4) as u8))
            });
            levels.push(half);
        }
        Pyramid { levels }
    }

    pub fn original(&self) -> &RgbImage {
        &self.levels[0]
    }

    /// `sample_region` on the original, read from the smallest level that still has
    /// at least one pixel per output pixel.
    pub fn sample(&self, r: [f64; 4], out_w: u32, out_h: u32) -> RgbImage {
        let step = ((r[2] - r[0]) / out_w as f64).min((r[3] - r[1]) / out_h as f64);
        let mut k = 0;
        while k + 1 < self.levels.len() && (1u64 << (k + 1)) as f64 <= step {
            k += 1;
        }
        let (l, o) = (&self.levels[k], &self.levels[0]);
        let (sx, sy) = (
            l.width() as f64 / o.width() as f64,
            l.height() as f64 / o.height() as f64,
        );
        sample_region(
            l,
            [r[0] * sx, r[1] * sy, r[2] * sx, r[3] * sy],
            out_w,
            out_h,
        )
    }

    /// `crop_padded` through the pyramid.
    pub fn crop(&self, exact: [f64; 4], max_w: u32, max_h: u32) -> RgbImage {
        let (w, h) = fit(exact[2] - exact[0], exact[3] - exact[1], max_w, max_h);
        self.sample(exact, w, h)
    }

    /// `whole` through the pyramid.
    pub fn whole(&self, max_w: u32, max_h: u32) -> (RgbImage, f64) {
        let o = &self.levels[0];
        let (iw, ih) = (o.width() as f64, o.height() as f64);
        let (w, h) = fit(iw, ih, max_w, max_h);
        (self.sample([0.0, 0.0, iw, ih], w, h), w as f64 / iw)
    }
}

/// The receptive-field box `exact` ([x0, y0, x1, y1], original pixels, unclipped)
/// scaled to fit `max_w` x `max_h`, keeping its aspect; the part of the field outside
/// the image is padded with hatching, so the image content keeps its true position.
pub fn crop_padded(img: &RgbImage, exact: [f64; 4], max_w: u32, max_h: u32) -> RgbImage {
    let (w, h) = fit(exact[2] - exact[0], exact[3] - exact[1], max_w, max_h);
    sample_region(img, exact, w, h)
}

/// The whole image fitted to `max_w` x `max_h`, and the scale used.
pub fn whole(img: &RgbImage, max_w: u32, max_h: u32) -> (RgbImage, f64) {
    let (iw, ih) = (img.width() as f64, img.height() as f64);
    let (w, h) = fit(iw, ih, max_w, max_h);
    (sample_region(img, [0.0, 0.0, iw, ih], w, h), w as f64 / iw)
}

/// The whole image with the box `exact` (original pixels) outlined just outside its
/// edge; a box that spills past the border shows no edge on that side.
pub fn with_box(img: &RgbImage, exact: [f64; 4], max_w: u32, max_h: u32) -> RgbImage {
    let (mut out, s) = whole(img, max_w, max_h);
    let mut r = exact.map(|v| (v * s).round() as i64);
    // Keep tiny fields visible: at least 3 px inside the frame.
    for a in 0..2 {
        if r[a + 2] - r[a] < 3 {
            let c = (r[a] + r[a + 2]) / 2;
            r[a] = c - 1;
            r[a + 2] = c + 2;
        }
    }
    outline(
        &mut out,
        [r[0] - 2, r[1] - 2, r[2] + 2, r[3] + 2],
        BOX_COLOR,
        2,
    );
    out
}

/// One channel of a layer's output for one image: `h` x `w` values, row-major.
#[derive(Clone, Copy, Debug)]
pub struct UnitMap<'a> {
    pub data: &'a [f32],
    pub h: usize,
    pub w: usize,
}

impl UnitMap<'_> {
    /// Bilinear sample at map coordinates (cell centres at integers), clamped to the edge.
    pub fn bilinear(&self, my: f64, mx: f64) -> f32 {
        let my = my.clamp(0.0, (self.h - 1) as f64);
        let mx = mx.clamp(0.0, (self.w - 1) as f64);
        let (y0, x0) = (my.floor() as usize, mx.floor() as usize);
        let (y1, x1) = ((y0 + 1).min(self.h - 1), (x0 + 1).min(self.w - 1));
        let (fy, fx) = ((my - y0 as f64) as f32, (mx - x0 as f64) as f32);
        let at = |y: usize, x: usize| self.data[y * self.w + x];
        let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
        let bot = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
        top * (1.0 - fy) + bot * fy
    }

    pub fn max(&self) -> f32 {
        self.data.iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }
}

/// Network-input coordinates of original-image point (x, y): the inverse of
/// `Transform::to_original`.
pub fn to_input(t: &Transform, x: f64, y: f64) -> (f64, f64) {
    let s = t.size as f64;
    (
        (x - t.crop[0]) * s / t.crop[2],
        (y - t.crop[1]) * s / t.crop[3],
    )
}

/// The whole image fitted to `max` (w, h) with `map` upsampled (bilinear) and
/// colour-mapped over the part the network saw. Unit (i, j) of the map sits at the
/// centre of its receptive field in network-input pixels, which `t` maps onto the
/// original image; values are scaled from `range` to [0, 1]. Outside the crop the
/// image is dimmed.
pub fn heat(
    img: &RgbImage,
    t: &Transform,
    field: &Field,
    map: UnitMap,
    range: (f32, f32),
    cmap: Colormap,
    max: (u32, u32),
) -> RgbImage {
    let (out, s) = whole(img, max.0, max.1);
    heat_on(out, s, t, field, map, range, cmap)
}

/// `heat` over `base`, the whole image already scaled by `s`.
pub fn heat_on(
    mut out: RgbImage,
    s: f64,
    t: &Transform,
    field: &Field,
    map: UnitMap,
    range: (f32, f32),
    cmap: Colormap,
) -> RgbImage {
    let size = t.size as f64;
    let centre = |a: usize| field.offset[a] as f64 + field.size[a] as f64 / 2.0;
    let (cy, cx) = (centre(0), centre(1));
    let (jy, jx) = (field.jump[0] as f64, field.jump[1] as f64);
    for (ox, oy, px) in out.enumerate_pixels_mut() {
        let (x, y) = ((ox as f64 + 0.5) / s, (oy as f64 + 0.5) / s);
        let (u, v) = to_input(t, x, y);
        if !(0.0..size).contains(&u) || !(0.0..size).contains(&v) {
            px.0 = px.0.map(|c| (c as f32 * 0.35) as u8);
            continue;
        }
        let val = map.bilinear((v - cy) / jy, (u - cx) / jx);
        let k = normalise(val, range.0, range.1);
        let c = cmap.map(k);
        let a = 0.2 + 0.6 * k;
        for i in 0..3 {
            px.0[i] = (px.0[i] as f32 * (1.0 - a) + c.0[i] as f32 * a).round() as u8;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 100 x 60 image: x encodes the red channel, y the green one.
    fn ramp() -> RgbImage {
        RgbImage::from_fn(100, 60, |x, y| Rgb([x as u8 * 2, y as u8 * 3, 77]))
    }

    #[test]
    fn fit_keeps_aspect() {
        assert_eq!(fit(100.0, 50.0, 64, 64), (64, 32));
        assert_eq!(fit(10.0, 40.0, 64, 64), (16, 64));
        assert_eq!(fit(3.0, 3.0, 96, 96), (96, 96));
    }

    #[test]
    fn crop_inside_the_image_is_the_exact_pixels_when_not_scaled() {
        let img = ramp();
        let c = crop_padded(&img, [10.0, 20.0, 30.0, 40.0], 20, 20);
        assert_eq!(c.dimensions(), (20, 20));
        for (x, y, p) in c.enumerate_pixels() {
            assert_eq!(p, img.get_pixel(10 + x, 20 + y));
        }
    }

    #[test]
    fn a_field_spilling_past_the_corner_is_padded_not_stretched() {
        let img = ramp();
        // A 40 x 40 field starting 10 px left of and 20 px above the image, shown at
        // 2x: the first 20 columns and 40 rows are outside the image.
        let c = crop_padded(&img, [-10.0, -20.0, 30.0, 20.0], 80, 80);
        assert_eq!(c.dimensions(), (80, 80));
        for (x, y, p) in c.enumerate_pixels() {
            let outside = x < 20 || y < 40;
            assert_eq!(is_padding(*p), outside, "({x}, {y})");
            if !outside {
                // Enlarged 2x by repeating pixels: output (x, y) is source (x/2-10, y/2-20).
                assert_eq!(p, img.get_pixel(x / 2 - 10, y / 2 - 20));
            }
        }
    }

    #[test]
    fn pyramid_agrees_with_direct_sampling_on_smooth_images() {
        let img = RgbImage::from_fn(1000, 600, |x, y| Rgb([(x / 4) as u8, (y / 3) as u8, 50]));
        let p = Pyramid::new(img.clone());
        for r in [[0.0, 0.0, 1000.0, 600.0], [-100.0, 300.0, 500.0, 900.0]] {
            let a = sample_region(&img, r, 60, 60);
            let b = p.sample(r, 60, 60);
            for (pa, pb) in a.pixels().zip(b.pixels()) {
                assert_eq!(is_padding(*pa), is_padding(*pb));
                for c in 0..3 {
                    assert!(
                        (pa.0[c] as i32 - pb.0[c] as i32).abs() <= 2,
                        "{pa:?} {pb:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn shrinking_averages_blocks() {
        let img = RgbImage::from_fn(4, 2, |x, _| Rgb([if x % 2 == 0 { 0 } else { 200 }, 0, 0]));
        let c = crop_padded(&img, [0.0, 0.0, 4.0, 2.0], 2, 1);
        assert_eq!(c.get_pixel(0, 0).0, [100, 0, 0]);
        assert_eq!(c.get_pixel(1, 0).0, [100, 0, 0]);
    }

    #[test]
    fn box_mode_outlines_the_field_on_the_whole_image() {
        let img = RgbImage::from_pixel(200, 100, Rgb([0, 0, 0]));
        let b = with_box(&img, [40.0, 20.0, 80.0, 60.0], 100, 100);
        // Scale 0.5: box [20, 10, 40, 30], frame 2 px just outside it.
        assert_eq!(b.dimensions(), (100, 50));
        assert_eq!(*b.get_pixel(18, 20), BOX_COLOR);
        assert_eq!(*b.get_pixel(41, 20), BOX_COLOR);
        assert_eq!(*b.get_pixel(30, 8), BOX_COLOR);
        assert_eq!(*b.get_pixel(30, 20), Rgb([0, 0, 0]));
        assert_eq!(*b.get_pixel(10, 20), Rgb([0, 0, 0]));
    }

    #[test]
    fn heat_peaks_where_the_hot_unit_maps_in_the_original() {
        // 400 x 300 image, centre crop 300 x 300 at x0 = 50, to a 150 px input
        // (2 original px per input px). A 5x5 map with jump 30, offset -10, size 40:
        // unit (1, 3) is centred at input (x = 3*30 - 10 + 20, y = 1*30 - 10 + 20) =
        // (100, 40), i.e. original (50 + 200, 80) = (250, 80).
        let img = RgbImage::from_pixel(400, 300, Rgb([128, 128, 128]));
        let t = Transform {
            orig_w: 400,
            orig_h: 300,
            crop: [50.0, 0.0, 300.0, 300.0],
            size: 150,
        };
        let field = Field {
            size: [40, 40],
            jump: [30, 30],
            offset: [-10, -10],
        };
        let mut data = vec![0f32; 25];
        data[5 + 3] = 2.0;
        let map = UnitMap {
            data: &data,
            h: 5,
            w: 5,
        };
        let h = heat(
            &img,
            &t,
            &field,
            map,
            (0.0, 2.0),
            Colormap::Viridis,
            (400, 300),
        );
        assert_eq!(h.dimensions(), (400, 300));
        let hot = Colormap::Viridis.map(1.0);
        let dist = |p: &Rgb<u8>| {
            (0..3)
                .map(|i| (p.0[i] as i32 - hot.0[i] as i32).abs())
                .sum::<i32>()
        };
        let (bx, by, _) = h
            .enumerate_pixels()
            .min_by_key(|(_, _, p)| dist(p))
            .unwrap();
        assert!(
            (bx as i32 - 250).abs() <= 1 && (by as i32 - 80).abs() <= 1,
            "{bx},{by}"
        );
        // Outside the crop (x < 50) the image is only dimmed.
        assert_eq!(h.get_pixel(10, 150).0, [44, 44, 44]);
    }
}
