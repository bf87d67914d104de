//! Direct depthwise convolution (one filter per channel).
//!
//! Each plane is first copied into a zero-padded buffer whose columns are split by
//! phase modulo the horizontal stride: column `j*sx + q` goes to phase `q`, slot `j`.
//! Then every kernel tap reads a contiguous run of that buffer for any stride or
//! dilation, and the inner loops are plain multiply-adds over rows that vectorise.

use rayon::prelude::*;

use super::simd::{madd, multiversion};
use super::{bias_act, Conv2d};

#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    conv: &Conv2d,
    x: &[f32],
    n: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    out: &mut [f32],
) {
    let g = conv.geom();
    let c = g.in_ch;
    let (kh, kw) = g.kernel;
    let taps = kh * kw;
    debug_assert_eq!(out.len(), n * c * oh * ow);
    out.par_chunks_mut(oh * ow)
        .enumerate()
        .for_each_init(Vec::new, |buf, (i, o)| {
            let ch = i % c;
            let geo = Geometry {
                h,
                w,
                kernel: g.kernel,
                stride: g.stride,
                dilation: g.dilation,
                pad_top: g.pad.top,
                pad_left: g.pad.left,
                oh,
                ow,
            };
            plane(
                &x[i * h * w..][..h * w],
                &conv.weight()[ch * taps..][..taps],
                &geo,
                o,
                buf,
            );
            bias_act(o, conv.bias_of(ch), conv.act());
        });
}

/// Everything about one plane's convolution except the data.
struct Geometry {
    h: usize,
    w: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
    pad_top: usize,
    pad_left: usize,
    oh: usize,
    ow: usize,
}

multiversion! {
    /// One plane: `out` (oh x ow) = sum over taps of weight x shifted input.
    fn plane(x: &[f32], wk: &[f32], g: &Geometry, out: &mut [f32], buf: &mut Vec<f32>) {
        let (kh, kw) = g.kernel;
        let (sy, sx) = g.stride;
        let (dy, dx) = g.dilation;
        let (oh, ow) = (g.oh, g.ow);
        // Padded rows and per-phase row length that the output actually reads.
        let rows = (oh - 1) * sy + (kh - 1) * dy + 1;
        let len = (ow - 1) + (kw - 1) * dx / sx + 1;
        fill_phased(x, g.h, g.w, g.pad_top, g.pad_left, sx, rows, len, buf);
        for oy in 0..oh {
            let orow = &mut out[oy * ow..][..ow];
            orow.fill(0.0);
            for ky in 0..kh {
                let r = oy * sy + ky * dy;
                for kx in 0..kw {
                    let off = kx * dx;
                    let src = &buf[(r * sx + off % sx) * len + off / sx..][..ow];
                    let wv = wk[ky * kw + kx];
                    for (o, s) in orow.iter_mut().zip(src) {
                        *o = madd::<FMA>(wv, *s, *o);
                    }
                }
            }
        }
    }
}

/// Writes the zero-padded, phase-split copy of plane `x` into `buf`:
/// `buf[(r * sx + q) * len + j]` = input row `r - pt`, column `j*sx + q - pl`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn fill_phased(
    x: &[f32],
    h: usize,
    w: usize,
    pt: usize,
    pl: usize,
    sx: usize,
    rows: usize,
    len: usize,
    buf: &mut Vec<f32>,
) {
    buf.clear();
    buf.resize(rows * sx * len, 0.0);
    for r in 0..rows {
        let Some(iy) = r.checked_sub(pt).filter(|&iy| iy < h) else {
            continue;
        };
        let src = &x[iy * w..][..w];
        for q in 0..sx {
            let dst = &mut buf[(r * sx + q) * len..][..len];
            // Slots j with input column j*sx + q - pl inside [0, w).
            let lo = pl.saturating_sub(q).div_ceil(sx);
            let hi = (w + pl).saturating_sub(q).div_ceil(sx).min(len);
            for j in lo..hi {
                dst[j] = src[j * sx + q - pl];
            }
        }
    }
}
