//! Pictures of input gradients: a unit's projection onto the input as the Deep
//! Visualization Toolbox draws its backprop and deconv panes (each colour channel's
//! signal centred on grey, scaled by the largest magnitude), its magnitude as a heat
//! map over the input, and the input itself from the exact tensor.

use image::{Rgb, RgbImage};

use super::colormap::Colormap;
use crate::arch::{Norm, Recipe};

/// The signal `g` (`[3, h, w]`, the network's channel order) as colours: grey is 0,
/// and the magnitude that only the strongest 0.5% of values exceed reaches black or
/// full colour (those are clipped: a gradient's few largest values would otherwise
/// leave the rest grey). BGR networks' channels are turned back to RGB.
pub fn projection(g: &[f32], h: usize, w: usize, bgr: bool) -> RgbImage {
    let hw = h * w;
    let scale = high_magnitude(g, 0.995);
    let scale = if scale > 0.0 { scale } else { 1.0 };
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let at = y as usize * w + x as usize;
        let c = |ch: usize| {
            let v = g[ch * hw + at] / scale;
            (127.5 + 127.5 * v.clamp(-1.0, 1.0)).round() as u8
        };
        if bgr {
            Rgb([c(2), c(1), c(0)])
        } else {
            Rgb([c(0), c(1), c(2)])
        }
    })
}

/// The magnitude at quantile `q` of the finite values' magnitudes (the largest for
/// a few values).
pub fn high_magnitude(v: &[f32], q: f64) -> f32 {
    let mut m: Vec<f32> = v
        .iter()
        .filter(|x| x.is_finite())
        .map(|x| x.abs())
        .collect();
    if m.is_empty() {
        return 0.0;
    }
    let rank = ((q * m.len() as f64).ceil() as usize).clamp(1, m.len()) - 1;
    *m.select_nth_unstable_by(rank, f32::total_cmp).1
}

/// Per pixel, the largest magnitude over the channels (the saliency map of Simonyan
/// et al. 2014), `h * w` values.
pub fn magnitude(g: &[f32], h: usize, w: usize) -> Vec<f32> {
    let hw = h * w;
    (0..hw)
        .map(|p| (0..3).map(|c| g[c * hw + p].abs()).fold(0f32, f32::max))
        .collect()
}

/// Where a gradient is significant, as a box `[x0, y0, x1, y1]` in its pixels: between
/// the `(1 - mass) / 2` and `(1 + mass) / 2` quantiles of the magnitude's mass along
/// each axis (`mass` = 0.9: the middle 90%). The effective receptive field (Luo et al.
/// 2016) of the unit whose gradient it is, on this image; `None` for a zero gradient.
pub fn mass_box(g: &[f32], h: usize, w: usize, mass: f64) -> Option<[f64; 4]> {
    let m = magnitude(g, h, w);
    let mut rows = vec![0f64; h];
    let mut cols = vec![0f64; w];
    for (k, &v) in m.iter().enumerate() {
        if v.is_finite() {
            rows[k / w] += v as f64;
            cols[k % w] += v as f64;
        }
    }
    let total: f64 = rows.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let lo = (1.0 - mass) / 2.0 * total;
    let hi = (1.0 + mass) / 2.0 * total;
    // The first cell where the running sum passes `at`, and the end of the last one.
    let span = |marg: &[f64]| {
        let mut acc = 0.0;
        let mut first = None;
        let mut last = marg.len();
        for (i, &v) in marg.iter().enumerate() {
            acc += v;
            if first.is_none() && acc > lo {
                first = Some(i);
            }
            if acc >= hi {
                last = i + 1;
                break;
            }
        }
        (first.unwrap_or(0) as f64, last as f64)
    };
    let ((y0, y1), (x0, x1)) = (span(&rows), span(&cols));
    Some([x0, y0, x1, y1])
}

/// `base` (the input as the network saw it) dimmed, under the magnitude of `g`
/// colour-mapped from 0 to its high quantile (as `projection`), opaque where it is
/// strong.
pub fn magnitude_over(base: &RgbImage, g: &[f32], cmap: Colormap) -> RgbImage {
    let (w, h) = (base.width() as usize, base.height() as usize);
    let m = magnitude(g, h, w);
    let top = high_magnitude(&m, 0.995);
    let top = if top > 0.0 { top } else { 1.0 };
    RgbImage::from_fn(w as u32, h as u32, |x, y| {
        let t = (m[y as usize * w + x as usize] / top).clamp(0.0, 1.0);
        let heat = cmap.map(t).0;
        let under = base.get_pixel(x, y).0;
        // A ramp of opacity: weak gradients leave the photo visible.
        let a = t.sqrt();
        Rgb(std::array::from_fn(|k| {
            (under[k] as f32 * 0.45 * (1.0 - a) + heat[k] as f32 * a).round() as u8
        }))
    })
}

/// The input tensor `x` (`[3, h, w]`) as the picture it came from: the recipe's
/// normalisation undone, clamped to 0..=255.
pub fn input_picture(x: &[f32], h: usize, w: usize, recipe: &Recipe) -> RgbImage {
    let hw = h * w;
    let pixel = |ch: usize, v: f32| -> f32 {
        match recipe.norm {
            Norm::Affine { sub, div } => v * div + sub,
            Norm::MeanStd { mean, std } => (v * std[ch] + mean[ch]) * 255.0,
        }
    };
    RgbImage::from_fn(w as u32, h as u32, |px, py| {
        let at = py as usize * w + px as usize;
        let c = |ch: usize| pixel(ch, x[ch * hw + at]).clamp(0.0, 255.0).round() as u8;
        if recipe.bgr {
            Rgb([c(2), c(1), c(0)])
        } else {
            Rgb([c(0), c(1), c(2)])
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projections_centre_zero_on_grey_and_scale_by_the_largest_magnitude() {
        // 1 x 2 pixels: channel 0 = (2, -4), 1 = (0, 0), 2 = (1, 0).
        let g = [2.0, -4.0, 0.0, 0.0, 1.0, 0.0];
        let p = projection(&g, 1, 2, false);
        assert_eq!(p.get_pixel(0, 0).0, [191, 128, 159]);
        assert_eq!(p.get_pixel(1, 0).0, [0, 128, 128]);
        let q = projection(&g, 1, 2, true);
        assert_eq!(q.get_pixel(0, 0).0, [159, 128, 191]);
        assert_eq!(magnitude(&g, 1, 2), [2.0, 4.0]);
        // 1,000 values 1..=1000: the strongest 0.5% (996..1000) are clipped.
        let ramp: Vec<f32> = (1..=1000).map(|v| v as f32).collect();
        assert_eq!(high_magnitude(&ramp, 0.995), 995.0);
    }

    #[test]
    fn the_mass_box_holds_the_middle_of_the_gradients_mass() {
        // 10 x 10, one channel carrying mass: a block at rows 2..5, columns 6..9 and a
        // faint speck at (9, 0) that holds 1% of it.
        let mut g = vec![0f32; 3 * 100];
        for y in 2..5 {
            for x in 6..9 {
                g[y * 10 + x] = 11.0;
            }
        }
        g[90] = 1.0;
        assert_eq!(mass_box(&g, 10, 10, 0.9), Some([6.0, 2.0, 9.0, 5.0]));
        assert_eq!(mass_box(&[0.0; 12], 2, 2, 0.9), None);
    }

    #[test]
    fn input_pictures_undo_the_normalisation() {
        let recipe = crate::arch::by_name("efficientnet-lite0").unwrap().recipe;
        // (p - 127) / 128 for p = 255, 127, 0.
        let x = [1.0, 0.0, -127.0 / 128.0];
        assert_eq!(
            input_picture(&x, 1, 1, &recipe).get_pixel(0, 0).0,
            [255, 127, 0]
        );
    }
}
