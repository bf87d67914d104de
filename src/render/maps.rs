//! Feature maps: every channel of one layer, for one image, as a grayscale slice on
//! ONE scale shared by the whole layer (bright = strong), so channels compare at a
//! glance; optionally one unit enlarged and colour-mapped beside the input image.

use image::{Rgb, RgbImage};

use super::colormap::{normalise, Colormap};
use super::font;
use super::grid::{self, Tile};
use super::tile::UnitMap;

/// Frame around the selected unit's slice.
pub const HIGHLIGHT: Rgb<u8> = Rgb([255, 64, 64]);

/// Smallest and largest finite value (0, 0 when there is none).
pub fn finite_range(data: &[f32]) -> (f32, f32) {
    let mut lo = f32::INFINITY;
    let mut hi = f32::NEG_INFINITY;
    for &v in data.iter().filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        (0.0, 0.0)
    } else {
        (lo, hi)
    }
}

/// A map enlarged `zoom` times (each cell a square block), coloured by `cmap` on `range`.
pub fn render_map(map: UnitMap, range: (f32, f32), cmap: Colormap, zoom: u32) -> RgbImage {
    let z = zoom.max(1);
    RgbImage::from_fn(map.w as u32 * z, map.h as u32 * z, |x, y| {
        let v = map.data[(y / z) as usize * map.w + (x / z) as usize];
        cmap.map(normalise(v, range.0, range.1))
    })
}

/// Zoom that makes a `h` x `w` map about 48 pixels or more on its long side.
fn zoom_for(h: usize, w: usize) -> u32 {
    (48 / h.max(w).max(1) as u32).max(1)
}

/// The grid of all `c` channels of a `[c, h, w]` output, gray on the layer's range.
/// `unit` frames one channel.
pub fn channel_grid(
    data: &[f32],
    c: usize,
    h: usize,
    w: usize,
    title: &str,
    unit: Option<usize>,
) -> RgbImage {
    let range = finite_range(data);
    let z = zoom_for(h, w);
    let label = c <= 256;
    let tiles: Vec<Tile> = (0..c)
        .map(|i| {
            let map = UnitMap {
                data: &data[i * h * w..(i + 1) * h * w],
                h,
                w,
            };
            let mut t = Tile::new(
                Some(render_map(map, range, Colormap::Gray, z)),
                if label { i.to_string() } else { String::new() },
            );
            if unit == Some(i) {
                t.frame = Some(HIGHLIGHT);
            }
            t
        })
        .collect();
    let title = format!("{title}, scale {:.2}..{:.2}", range.0, range.1);
    grid::compose(Some(&title), &tiles, w as u32 * z, h as u32 * z)
}

/// The input image (as the network saw it) beside one unit's map, enlarged to the
/// same size and colour-mapped on the unit's own range.
pub fn unit_beside_input(input: &RgbImage, map: UnitMap, unit: usize, cmap: Colormap) -> RgbImage {
    let side = input.width().max(input.height());
    let (lo, hi) = finite_range(map.data);
    let range = (lo.min(0.0), hi);
    let z = (side / map.h.max(map.w).max(1) as u32).max(1);
    let zoomed = render_map(map, range, cmap, z);
    let tiles = [
        Tile::new(Some(input.clone()), "input"),
        Tile::new(
            Some(zoomed),
            format!(
                "unit {unit}: {} {:.3} .. {:.3}",
                cmap.name(),
                range.0,
                range.1
            ),
        ),
    ];
    let cell = side
        .max(map.w as u32 * z)
        .max(font::text_width("unit 0000: viridis", 1));
    grid::compose_cols(None, &tiles, cell, side.max(map.h as u32 * z), 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::grid::Sheet;

    #[test]
    fn one_scale_for_the_whole_layer() {
        // Channel 0 peaks at 1, channel 1 at 4: under a shared scale channel 0's
        // brightest cell is a quarter as bright as channel 1's.
        let (h, w) = (2, 2);
        let data = [0.0, 1.0, 0.0, 0.0, 4.0, 0.0, 0.0, 2.0];
        let img = channel_grid(&data, 2, h, w, "t", None);
        let z = zoom_for(h, w);
        let title = "t, scale 0.00..4.00";
        let s = Sheet::new(2, 2 * z, 2 * z, Some(title), true);
        assert_eq!(img.dimensions(), (s.width, s.height));
        let px = |cell: usize, cy: u32, cx: u32| {
            let (x, y) = s.cell_origin(cell);
            img.get_pixel(x + cx * z + z / 2, y + cy * z + z / 2).0[0]
        };
        assert_eq!(px(0, 0, 1), 64); // 1/4 of 255
        assert_eq!(px(0, 0, 0), 0);
        assert_eq!(px(1, 0, 0), 255);
        assert_eq!(px(1, 1, 1), 128);
    }

    #[test]
    fn the_chosen_unit_is_framed() {
        let data = vec![1.0f32; 4 * 7 * 7];
        let img = channel_grid(&data, 4, 7, 7, "t", Some(3));
        let title = "t, scale 1.00..1.00";
        let z = 7 * zoom_for(7, 7);
        let s = Sheet::new(4, z, z, Some(title), true);
        let (x, y) = s.cell_origin(3);
        assert_eq!(*img.get_pixel(x - 1, y + 5), HIGHLIGHT);
        let (x, y) = s.cell_origin(2);
        assert_ne!(*img.get_pixel(x - 1, y + 5), HIGHLIGHT);
    }

    #[test]
    fn zoomed_unit_sits_beside_the_input() {
        let input = RgbImage::from_pixel(56, 56, Rgb([200, 10, 10]));
        let data: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let map = UnitMap {
            data: &data,
            h: 4,
            w: 4,
        };
        let img = unit_beside_input(&input, map, 5, Colormap::Viridis);
        let cell = font::text_width("unit 0000: viridis", 1).max(56);
        let s = Sheet::with_cols(2, 2, cell, 56, None, true);
        // Both pictures are 56 px wide, centred in their cells.
        let off = (cell - 56) / 2;
        let (x0, y0) = s.cell_origin(0);
        assert_eq!(img.get_pixel(x0 + off + 3, y0 + 3).0, [200, 10, 10]);
        let (x1, y1) = s.cell_origin(1);
        // 4x4 map enlarged 14x: the last cell holds the maximum, the first the minimum.
        assert_eq!(
            *img.get_pixel(x1 + off + 55, y1 + 55),
            Colormap::Viridis.map(1.0)
        );
        assert_eq!(
            *img.get_pixel(x1 + off + 1, y1 + 1),
            Colormap::Viridis.map(0.0)
        );
    }
}
