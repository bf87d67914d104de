//! Where a unit fired on one image, as a region of the photo rather than its
//! theoretical receptive field (which deep in a network is larger than the input).
//!
//! As NetDissect does, the unit's map is upsampled to the network input and
//! thresholded; the region is the connected part above the threshold that holds the
//! peak. NetDissect's threshold is a dataset-wide quantile of every activation,
//! which an index of per-image peaks cannot give, so the level here is the image's
//! own: half-way from the map's median (its background) to its peak. A map after a
//! ReLU has a median of 0, and the level is then half the peak.

use crate::preprocess::Transform;
use crate::receptive::Field;

use super::tile::UnitMap;

/// Share of the region's side added on each side of its bounding box, so that the
/// crop shows a little of what surrounds the object.
const PAD: f64 = 0.1;

/// The threshold of `map`: half-way from its median to its maximum.
pub fn level(map: &UnitMap) -> f32 {
    let mut v: Vec<f32> = map.data.iter().copied().filter(|v| v.is_finite()).collect();
    if v.is_empty() {
        return f32::NAN;
    }
    let mid = v.len() / 2;
    let (_, &mut median, _) = v.select_nth_unstable_by(mid, f32::total_cmp);
    let peak = map.max();
    median + 0.5 * (peak - median)
}

/// A unit's active region on one image.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Region {
    /// Bounding box in network-input pixels `[x0, y0, x1, y1]`, padded, within the input.
    pub input: [f64; 4],
    /// The same in original-image pixels.
    pub original: [f64; 4],
    /// The threshold used.
    pub level: f32,
    /// Input pixels in the region (before padding).
    pub area: usize,
}

/// The connected region (4-neighbours) of `map`, bilinearly upsampled to the
/// `t.size` network input with each cell at the centre of its receptive field, where
/// it reaches `level(map)`, that holds the map's peak; `None` for a map without a
/// finite value.
pub fn region(map: UnitMap, field: &Field, t: &Transform) -> Option<Region> {
    let lvl = level(&map);
    if !lvl.is_finite() || map.data.is_empty() {
        return None;
    }
    let s = t.size as usize;
    let centre = |a: usize| field.offset[a] as f64 + field.size[a] as f64 / 2.0;
    let (cy, cx) = (centre(0), centre(1));
    let (jy, jx) = (field.jump[0] as f64, field.jump[1] as f64);
    let up: Vec<f32> = (0..s * s)
        .map(|i| {
            let (v, u) = ((i / s) as f64 + 0.5, (i % s) as f64 + 0.5);
            map.bilinear((v - cy) / jy, (u - cx) / jx)
        })
        .collect();
    // The peak cell, and the input pixel nearest its centre.
    let peak = (0..map.data.len())
        .filter(|&i| map.data[i].is_finite())
        .max_by(|&a, &b| map.data[a].total_cmp(&map.data[b]).then(b.cmp(&a)))?;
    let (py, px) = (peak / map.w, peak % map.w);
    let pix = |c: f64, j: f64, p: usize| {
        ((c + p as f64 * j - 0.5).round()).clamp(0.0, (s - 1) as f64) as usize
    };
    let seed = pix(cy, jy, py) * s + pix(cx, jx, px);
    let mut inside = vec![false; s * s];
    let mut stack = vec![seed];
    inside[seed] = true;
    let (mut x0, mut y0, mut x1, mut y1) = (s, s, 0, 0);
    let mut area = 0;
    while let Some(i) = stack.pop() {
        let (y, x) = (i / s, i % s);
        area += 1;
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1));
        let mut visit = |j: usize| {
            if !inside[j] && up[j] >= lvl {
                inside[j] = true;
                stack.push(j);
            }
        };
        if x > 0 {
            visit(i - 1);
        }
        if x + 1 < s {
            visit(i + 1);
        }
        if y > 0 {
            visit(i - s);
        }
        if y + 1 < s {
            visit(i + s);
        }
    }
    let (w, h) = ((x1 - x0) as f64, (y1 - y0) as f64);
    let pad = PAD * w.max(h);
    let input = [
        (x0 as f64 - pad).max(0.0),
        (y0 as f64 - pad).max(0.0),
        (x1 as f64 + pad).min(s as f64),
        (y1 as f64 + pad).min(s as f64),
    ];
    Some(Region {
        input,
        original: t.box_to_original(input).exact,
        level: lvl,
        area,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 7x7 map on a 224 px input with jump 32, cells centred at 16 + 32 i (field
    /// offset -400, size 832 as deep in a network): one hot 2x2 blob.
    fn blob_map() -> Vec<f32> {
        let mut m = vec![-1.0f32; 49];
        for (y, x) in [(2, 4), (2, 5), (3, 4), (3, 5)] {
            m[y * 7 + x] = 4.0;
        }
        m[2 * 7 + 5] = 6.0;
        // A second hot spot, not connected to the first.
        m[6 * 7] = 5.0;
        m
    }

    const DEEP: Field = Field {
        size: [832, 832],
        jump: [32, 32],
        offset: [-400, -400],
    };

    fn identity(size: u32) -> Transform {
        Transform {
            orig_w: size,
            orig_h: size,
            crop: [0.0, 0.0, size as f64, size as f64],
            size,
        }
    }

    #[test]
    fn level_is_half_way_from_the_median_to_the_peak() {
        let m = blob_map();
        let map = UnitMap {
            data: &m,
            h: 7,
            w: 7,
        };
        // Median -1 (44 of 49 cells), peak 6.
        assert_eq!(level(&map), 2.5);
        let relu: Vec<f32> = m.iter().map(|v| v.max(0.0)).collect();
        let map = UnitMap {
            data: &relu,
            h: 7,
            w: 7,
        };
        assert_eq!(level(&map), 3.0);
    }

    #[test]
    fn the_region_is_the_blob_around_the_peak_not_the_field() {
        let m = blob_map();
        let map = UnitMap {
            data: &m,
            h: 7,
            w: 7,
        };
        let r = region(map, &DEEP, &identity(224)).unwrap();
        // Cells x 4..=5, y 2..=3 are centred at 144..176 and 80..112; bilinear
        // interpolation from 4 (or 6) down to -1 over 32 px crosses 2.5 about 9.6 px
        // (4 -> -1) to 22.4 px (6 -> -1) out: x from ~134 to ~199, y from ~70 to ~124.
        let [x0, y0, x1, y1] = r.input;
        let (w, h) = (x1 - x0, y1 - y0);
        assert!(w < 100.0 && h < 100.0, "{:?}", r.input);
        assert!(
            (120.0..140.0).contains(&x0) && (190.0..215.0).contains(&x1),
            "{:?}",
            r.input
        );
        assert!(
            (55.0..75.0).contains(&y0) && (115.0..140.0).contains(&y1),
            "{:?}",
            r.input
        );
        // The other hot spot (cell (6, 0), at x 16, y 208) is not in it.
        assert!(x0 > 40.0 && y1 < 200.0);
        assert_eq!(r.original, r.input);
    }

    #[test]
    fn regions_map_back_through_the_crop() {
        let m = blob_map();
        let map = UnitMap {
            data: &m,
            h: 7,
            w: 7,
        };
        // A 448 x 600 photo whose centre 448 x 448 square was resized to 224.
        let t = Transform {
            orig_w: 448,
            orig_h: 600,
            crop: [0.0, 76.0, 448.0, 448.0],
            size: 224,
        };
        let r = region(map, &DEEP, &t).unwrap();
        for a in 0..2 {
            assert!((r.original[a] - (r.input[a] * 2.0 + [0.0, 76.0][a])).abs() < 1e-9);
            assert!((r.original[a + 2] - (r.input[a + 2] * 2.0 + [0.0, 76.0][a])).abs() < 1e-9);
        }
    }

    #[test]
    fn a_flat_map_gives_the_whole_input_and_a_nan_map_none() {
        let flat = vec![2.0f32; 49];
        let map = UnitMap {
            data: &flat,
            h: 7,
            w: 7,
        };
        let r = region(map, &DEEP, &identity(224)).unwrap();
        assert_eq!(r.input, [0.0, 0.0, 224.0, 224.0]);
        let nan = vec![f32::NAN; 49];
        let map = UnitMap {
            data: &nan,
            h: 7,
            w: 7,
        };
        assert!(region(map, &DEEP, &identity(224)).is_none());
    }
}
