//! Colour maps for activations: perceptually ordered tables (after matplotlib's viridis
//! and inferno, sampled at nine points and interpolated linearly) and plain grey.

use image::{Rgb, RgbImage};

use super::font;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Colormap {
    #[default]
    Viridis,
    Inferno,
    Gray,
}

const VIRIDIS: [[u8; 3]; 9] = [
    [0x44, 0x01, 0x54],
    [0x47, 0x2d, 0x7b],
    [0x3b, 0x52, 0x8b],
    [0x2c, 0x72, 0x8e],
    [0x21, 0x91, 0x8c],
    [0x28, 0xae, 0x80],
    [0x5e, 0xc9, 0x62],
    [0xad, 0xdc, 0x30],
    [0xfd, 0xe7, 0x25],
];

const INFERNO: [[u8; 3]; 9] = [
    [0x00, 0x00, 0x04],
    [0x1f, 0x0c, 0x48],
    [0x55, 0x0f, 0x6d],
    [0x88, 0x22, 0x6a],
    [0xba, 0x36, 0x55],
    [0xe3, 0x59, 0x33],
    [0xf9, 0x8e, 0x09],
    [0xf9, 0xcb, 0x35],
    [0xfc, 0xff, 0xa4],
];

impl Colormap {
    /// Colour of `t` in [0, 1] (clamped; NaN maps to the low end).
    pub fn map(self, t: f32) -> Rgb<u8> {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let table = match self {
            Colormap::Viridis => &VIRIDIS,
            Colormap::Inferno => &INFERNO,
            Colormap::Gray => {
                let v = (t * 255.0).round() as u8;
                return Rgb([v, v, v]);
            }
        };
        let pos = t * (table.len() - 1) as f32;
        let i = (pos.floor() as usize).min(table.len() - 2);
        let f = pos - i as f32;
        let (a, b) = (table[i], table[i + 1]);
        Rgb(std::array::from_fn(|c| {
            (a[c] as f32 + (b[c] as f32 - a[c] as f32) * f).round() as u8
        }))
    }

    pub fn name(self) -> &'static str {
        match self {
            Colormap::Viridis => "viridis",
            Colormap::Inferno => "inferno",
            Colormap::Gray => "gray",
        }
    }
}

/// Maps `v` from [lo, hi] to [0, 1]; a flat range maps everything to 0.
pub fn normalise(v: f32, lo: f32, hi: f32) -> f32 {
    if hi > lo {
        ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// Text colour of colour-bar labels, on the sheets' dark background.
const BAR_TEXT: Rgb<u8> = Rgb([230, 230, 230]);
const BAR_BACKGROUND: Rgb<u8> = Rgb([24, 24, 24]);
/// Height of the gradient strip.
const BAR_H: u32 = 10;

/// A legend for `cmap` on `range`: a `width` px gradient strip with tick labels at
/// both ends and the middle, and `caption` saying what the values are.
pub fn colorbar(cmap: Colormap, range: (f32, f32), width: u32, caption: &str) -> RgbImage {
    let width = width.max(40);
    let th = font::text_height(1);
    let (strip_y, ticks_y, cap_y) = (2, 2 + BAR_H + 3, 2 + BAR_H + 3 + th + 3);
    let height = cap_y + if caption.is_empty() { 0 } else { th + 2 };
    let mut img = RgbImage::from_pixel(width, height, BAR_BACKGROUND);
    for x in 0..width {
        let c = cmap.map(x as f32 / (width - 1) as f32);
        for y in strip_y..strip_y + BAR_H {
            img.put_pixel(x, y, c);
        }
    }
    let (lo, hi) = range;
    for (i, v) in [lo, (lo + hi) / 2.0, hi].into_iter().enumerate() {
        let t = tick(v);
        let tw = font::text_width(&t, 1);
        let x = match i {
            0 => 0,
            1 => (width / 2).saturating_sub(tw / 2),
            _ => width.saturating_sub(tw),
        };
        font::draw_text(&mut img, x as i64, ticks_y as i64, &t, BAR_TEXT, 1);
    }
    if !caption.is_empty() {
        let c = font::fit(caption, width, 1);
        font::draw_text(&mut img, 0, cap_y as i64, &c, BAR_TEXT, 1);
    }
    img
}

/// A tick label with three significant digits.
fn tick(v: f32) -> String {
    let a = v.abs();
    if a == 0.0 || !v.is_finite() {
        format!("{v}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rec. 709 luma, an independent measure of brightness.
    fn luma(c: Rgb<u8>) -> f32 {
        0.2126 * c.0[0] as f32 + 0.7152 * c.0[1] as f32 + 0.0722 * c.0[2] as f32
    }

    #[test]
    fn ends_are_the_published_endpoints() {
        assert_eq!(Colormap::Viridis.map(0.0), Rgb([68, 1, 84]));
        assert_eq!(Colormap::Viridis.map(1.0), Rgb([253, 231, 37]));
        assert_eq!(Colormap::Inferno.map(0.0), Rgb([0, 0, 4]));
        assert_eq!(Colormap::Inferno.map(1.0), Rgb([252, 255, 164]));
        assert_eq!(Colormap::Gray.map(0.5), Rgb([128, 128, 128]));
    }

    #[test]
    fn brightness_rises_monotonically_so_strong_reads_as_bright() {
        for cm in [Colormap::Viridis, Colormap::Inferno, Colormap::Gray] {
            let mut prev = -1.0;
            for i in 0..=100 {
                let l = luma(cm.map(i as f32 / 100.0));
                assert!(l >= prev - 0.5, "{} at {i}: {l} < {prev}", cm.name());
                prev = l;
            }
        }
    }

    #[test]
    fn the_colour_bar_runs_from_the_low_to_the_high_colour() {
        let bar = colorbar(Colormap::Viridis, (0.0, 15.4), 200, "before relu6");
        assert_eq!(bar.width(), 200);
        assert_eq!(*bar.get_pixel(0, 5), Colormap::Viridis.map(0.0));
        assert_eq!(*bar.get_pixel(199, 5), Colormap::Viridis.map(1.0));
        assert_eq!(tick(15.4), "15.4");
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(7.7), "7.70");
        // Labels are drawn under the strip.
        let drawn = (0..bar.height())
            .flat_map(|y| (0..bar.width()).map(move |x| (x, y)))
            .filter(|&(x, y)| *bar.get_pixel(x, y) == BAR_TEXT)
            .count();
        assert!(drawn > 50, "{drawn}");
    }

    #[test]
    fn out_of_range_and_nan_are_clamped() {
        let cm = Colormap::Viridis;
        assert_eq!(cm.map(-3.0), cm.map(0.0));
        assert_eq!(cm.map(7.0), cm.map(1.0));
        assert_eq!(cm.map(f32::NAN), cm.map(0.0));
        assert_eq!(normalise(5.0, 0.0, 10.0), 0.5);
        assert_eq!(normalise(5.0, 3.0, 3.0), 0.0);
    }
}
