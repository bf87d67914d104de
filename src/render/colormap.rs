//! Colour maps for activations: perceptually ordered tables (after matplotlib's viridis
//! and inferno, sampled at nine points and interpolated linearly) and plain grey.

use image::Rgb;

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
    fn out_of_range_and_nan_are_clamped() {
        let cm = Colormap::Viridis;
        assert_eq!(cm.map(-3.0), cm.map(0.0));
        assert_eq!(cm.map(7.0), cm.map(1.0));
        assert_eq!(cm.map(f32::NAN), cm.map(0.0));
        assert_eq!(normalise(5.0, 0.0, 10.0), 0.5);
        assert_eq!(normalise(5.0, 3.0, 3.0), 0.0);
    }
}
