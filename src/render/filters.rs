//! Convolution weights as pictures. A filter over RGB input (the first conv) is shown
//! in colour; every other filter one grayscale slice per input channel. Each filter is
//! normalised on its own, symmetrically around 0: 0 is mid-grey, the largest |weight|
//! reaches black or white (or full colour), so sign and shape read the same everywhere.

use image::{Rgb, RgbImage};

use super::grid::{self, Tile};

/// Shape of a conv weight tensor `[out, in_per_group, kh, kw]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterShape {
    pub out: usize,
    pub inputs: usize,
    pub kh: usize,
    pub kw: usize,
}

impl FilterShape {
    pub fn per_filter(&self) -> usize {
        self.inputs * self.kh * self.kw
    }
}

fn grey(v: f32, m: f32) -> u8 {
    if m > 0.0 && v.is_finite() {
        (127.5 + 127.5 * (v / m).clamp(-1.0, 1.0)).round() as u8
    } else {
        128
    }
}

fn max_abs(w: &[f32]) -> f32 {
    w.iter()
        .filter(|v| v.is_finite())
        .fold(0f32, |m, v| m.max(v.abs()))
}

/// Filter `f` of `w` as a picture enlarged `zoom` times: colour when it reads 3
/// channels, grayscale when it reads 1; `None` otherwise (no single picture fits).
pub fn filter_picture(w: &[f32], shape: FilterShape, f: usize, zoom: u32) -> Option<RgbImage> {
    let FilterShape { inputs, kh, kw, .. } = shape;
    if inputs != 1 && inputs != 3 {
        return None;
    }
    let fw = &w[f * shape.per_filter()..(f + 1) * shape.per_filter()];
    let m = max_abs(fw);
    let z = zoom.max(1);
    Some(RgbImage::from_fn(kw as u32 * z, kh as u32 * z, |x, y| {
        let at = |c: usize| fw[c * kh * kw + (y / z) as usize * kw + (x / z) as usize];
        if inputs == 3 {
            Rgb([grey(at(0), m), grey(at(1), m), grey(at(2), m)])
        } else {
            let g = grey(at(0), m);
            Rgb([g, g, g])
        }
    }))
}

/// Slice `c` of filter `f` in grayscale, on the whole filter's scale.
fn slice_picture(w: &[f32], shape: FilterShape, f: usize, c: usize, zoom: u32) -> RgbImage {
    let FilterShape { kh, kw, .. } = shape;
    let fw = &w[f * shape.per_filter()..(f + 1) * shape.per_filter()];
    let m = max_abs(fw);
    let s = &fw[c * kh * kw..(c + 1) * kh * kw];
    RgbImage::from_fn(kw as u32 * zoom, kh as u32 * zoom, |x, y| {
        let g = grey(s[(y / zoom) as usize * kw + (x / zoom) as usize], m);
        Rgb([g, g, g])
    })
}

/// All filters of a layer. RGB and single-input (depthwise) filters form a near-square
/// grid labelled by unit; other layers one row per filter, one column per input
/// channel, the first `max_rows` x `max_cols` of them.
pub fn filter_grid(
    w: &[f32],
    shape: FilterShape,
    title: &str,
    max_rows: usize,
    max_cols: usize,
) -> RgbImage {
    let k = shape.kh.max(shape.kw).max(1) as u32;
    if shape.inputs == 1 || shape.inputs == 3 {
        let zoom = (48 / k).max(1);
        let tiles: Vec<Tile> = (0..shape.out)
            .map(|f| Tile::new(filter_picture(w, shape, f, zoom), f.to_string()))
            .collect();
        let title = format!(
            "{title}: {} filters {}x{}x{}",
            shape.out, shape.inputs, shape.kh, shape.kw
        );
        return grid::compose(
            Some(&title),
            &tiles,
            shape.kw as u32 * zoom,
            shape.kh as u32 * zoom,
        );
    }
    let zoom = (12 / k).max(1);
    let (rows, cols) = (shape.out.min(max_rows), shape.inputs.min(max_cols));
    let mut tiles = Vec::with_capacity(rows * cols);
    for f in 0..rows {
        for c in 0..cols {
            tiles.push(Tile::new(Some(slice_picture(w, shape, f, c, zoom)), ""));
        }
    }
    let title = format!(
        "{title}: filters 0-{} of {} (rows) x inputs 0-{} of {} (cols), {}x{}",
        rows - 1,
        shape.out,
        cols - 1,
        shape.inputs,
        shape.kh,
        shape.kw
    );
    grid::compose_cols(
        Some(&title),
        &tiles,
        shape.kw as u32 * zoom,
        shape.kh as u32 * zoom,
        cols,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rgb_filter_is_normalised_symmetrically_per_filter() {
        // Two 1x2 RGB filters; the second is the first times 10, so both draw alike.
        let shape = FilterShape {
            out: 2,
            inputs: 3,
            kh: 1,
            kw: 2,
        };
        let f0 = [0.5, -0.5, 0.0, 0.25, -0.25, 0.0]; // R: .5 -.5, G: 0 .25, B: -.25 0
        let w: Vec<f32> = f0
            .iter()
            .chain(f0.iter())
            .enumerate()
            .map(|(i, v)| if i >= 6 { v * 10.0 } else { *v })
            .collect();
        for f in 0..2 {
            let p = filter_picture(&w, shape, f, 1).unwrap();
            assert_eq!(p.dimensions(), (2, 1));
            // Left pixel: R = +max -> 255, G = 0 -> 128, B = -max/2 -> 64.
            assert_eq!(p.get_pixel(0, 0).0, [255, 128, 64]);
            assert_eq!(p.get_pixel(1, 0).0, [0, 191, 128]);
        }
    }

    #[test]
    fn deep_filters_have_no_single_picture_but_a_matrix() {
        let shape = FilterShape {
            out: 4,
            inputs: 5,
            kh: 1,
            kw: 1,
        };
        assert!(filter_picture(&[0.0; 20], shape, 0, 4).is_none());
        // Filter 1: input 2 is its largest weight (white), input 0 its most negative (black).
        let mut w = vec![0f32; 20];
        w[5] = -2.0;
        w[7] = 2.0;
        let img = filter_grid(&w, shape, "x", 3, 4);
        let title = "x: filters 0-2 of 4 (rows) x inputs 0-3 of 5 (cols), 1x1";
        let s = grid::Sheet::with_cols(12, 4, 12, 12, Some(title), false);
        assert_eq!(img.dimensions(), (s.width, s.height));
        let at = |i: usize| {
            let (x, y) = s.cell_origin(i);
            img.get_pixel(x + 6, y + 6).0[0]
        };
        assert_eq!(at(4), 0);
        assert_eq!(at(6), 255);
        assert_eq!(at(5), 128);
        assert_eq!(at(0), 128); // an all-zero filter is flat grey
    }
}
