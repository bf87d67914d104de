//! Max pooling, average pooling and adaptive average pooling (torch semantics), one
//! plane per task.

use rayon::prelude::*;

use super::simd::multiversion;
use super::Pad;

/// Max pooling over `[n, c, h, w]`; returns the output and its height and width.
///
/// Padded cells never win (they count as -inf); NaN propagates like in torch.
/// With `ceil_mode` the output size rounds up, but a window must start inside the
/// input or its top/left padding (torch's rule).
#[allow(clippy::too_many_arguments)]
pub fn max_pool2d(
    x: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    pad: Pad,
    ceil_mode: bool,
) -> (Vec<f32>, usize, usize) {
    assert_eq!(
        x.len(),
        n * c * h * w,
        "max_pool2d: input length does not match {n}x{c}x{h}x{w}"
    );
    let oh = pooled_len(h, pad.top, pad.bottom, kernel.0, stride.0, ceil_mode);
    let ow = pooled_len(w, pad.left, pad.right, kernel.1, stride.1, ceil_mode);
    let mut out = super::alloc_output(n * c * oh * ow);
    if out.is_empty() {
        return (out, oh, ow);
    }
    let geo = PoolGeom {
        h,
        w,
        kernel,
        stride,
        pad,
        oh,
        ow,
    };
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .for_each_init(Default::default, |scratch, (o, xp)| {
            max_plane(xp, &geo, o, scratch)
        });
    (out, oh, ow)
}

struct PoolGeom {
    h: usize,
    w: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    pad: Pad,
    oh: usize,
    ow: usize,
}

/// Larger of two values, NaN winning (torch's max pooling propagates NaN).
#[inline(always)]
fn max_nan(m: f32, v: f32) -> f32 {
    if v > m || v.is_nan() {
        v
    } else {
        m
    }
}

multiversion! {
    /// One plane, separably: the max over the window's rows, a whole row at a time
    /// (vectorised), then over the window's columns.
    fn max_plane(x: &[f32], g: &PoolGeom, out: &mut [f32], scratch: &mut (Vec<f32>, Vec<f32>)) {
        let _ = FMA;
        let (row, split) = scratch;
        let (kh, kw) = g.kernel;
        let (sy, sx) = g.stride;
        let (w, pl) = (g.w, g.pad.left);
        // The row of column maxima with -inf padding on both sides, so that every
        // output's window is a plain in-bounds run.
        // Slots per phase that the windows read.
        let span = g.ow + (kw - 1) / sx;
        row.clear();
        row.resize((pl + w).max(span * sx) + kw, f32::NEG_INFINITY);
        split.resize(span * sx, 0.0);
        for oy in 0..g.oh {
            // Window rows clipped to the input: [y0, y1).
            let top = (oy * sy) as isize - g.pad.top as isize;
            let y0 = top.max(0) as usize;
            let y1 = ((top + kh as isize).max(0) as usize).min(g.h);
            let orow = &mut out[oy * g.ow..][..g.ow];
            if y0 >= y1 {
                orow.fill(f32::NEG_INFINITY);
                continue;
            }
            let mid = &mut row[pl..pl + w];
            mid.copy_from_slice(&x[y0 * w..][..w]);
            for y in y0 + 1..y1 {
                for (m, &v) in mid.iter_mut().zip(&x[y * w..][..w]) {
                    *m = max_nan(*m, v);
                }
            }
            // Columns: split the row by phase modulo the stride, so that window
            // column kx of every output is one contiguous run, then take running maxima.
            let phases: &[f32] = if sx == 1 {
                row
            } else {
                split_phases(row, sx, span, split);
                split
            };
            for kx in 0..kw {
                let src = &phases[(kx % sx) * span + kx / sx..][..g.ow];
                if kx == 0 {
                    orow.copy_from_slice(src);
                } else {
                    for (o, &v) in orow.iter_mut().zip(src) {
                        *o = max_nan(*o, v);
                    }
                }
            }
        }
    }
}

/// `split[q * span + j] = row[j * sx + q]` for every phase q < sx and slot j < span.
#[inline(always)]
fn split_phases(row: &[f32], sx: usize, span: usize, split: &mut [f32]) {
    if sx == 2 {
        let (even, odd) = split.split_at_mut(span);
        for ((e, o), pair) in even.iter_mut().zip(odd).zip(row.chunks_exact(2)) {
            *e = pair[0];
            *o = pair[1];
        }
        return;
    }
    for (q, dst) in split.chunks_exact_mut(span).enumerate() {
        for (d, s) in dst.iter_mut().zip(row[q..].iter().step_by(sx)) {
            *d = *s;
        }
    }
}

/// Pooled length of one axis, torch's formula (without dilation).
fn pooled_len(
    len: usize,
    before: usize,
    after: usize,
    k: usize,
    s: usize,
    ceil_mode: bool,
) -> usize {
    let padded = len + before + after;
    if k == 0 || s == 0 || padded < k {
        return 0;
    }
    let room = padded - k;
    let mut out = if ceil_mode {
        room.div_ceil(s)
    } else {
        room / s
    } + 1;
    if ceil_mode && (out - 1) * s >= len + before {
        out -= 1;
    }
    out
}

/// Average pooling over `[n, c, h, w]` (output size rounded down); returns the output
/// and its height and width. Padded cells are zeros that count in the average with
/// `count_include_pad`, and are left out of it otherwise.
#[allow(clippy::too_many_arguments)]
pub fn avg_pool2d(
    x: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    kernel: (usize, usize),
    stride: (usize, usize),
    pad: Pad,
    count_include_pad: bool,
) -> (Vec<f32>, usize, usize) {
    assert_eq!(
        x.len(),
        n * c * h * w,
        "avg_pool2d: input length does not match {n}x{c}x{h}x{w}"
    );
    let oh = pooled_len(h, pad.top, pad.bottom, kernel.0, stride.0, false);
    let ow = pooled_len(w, pad.left, pad.right, kernel.1, stride.1, false);
    let mut out = vec![0f32; n * c * oh * ow];
    if out.is_empty() {
        return (out, oh, ow);
    }
    // Window [start, start + k) on one axis, clipped to the input (and, for the count,
    // to the padded input).
    let window = |o: usize, s: usize, k: usize, before: usize, len: usize, after: usize| {
        let start = (o * s) as isize - before as isize;
        let end = start + k as isize;
        let padded = (end.min((len + after) as isize) - start.max(-(before as isize))) as usize;
        let (a, b) = (start.max(0) as usize, end.clamp(0, len as isize) as usize);
        (a, b.max(a), padded)
    };
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .for_each(|(o, xp)| {
            for oy in 0..oh {
                let (y0, y1, py) = window(oy, stride.0, kernel.0, pad.top, h, pad.bottom);
                for ox in 0..ow {
                    let (x0, x1, px) = window(ox, stride.1, kernel.1, pad.left, w, pad.right);
                    let mut sum = 0f32;
                    for y in y0..y1 {
                        sum += xp[y * w + x0..y * w + x1].iter().sum::<f32>();
                    }
                    let count = if count_include_pad {
                        py * px
                    } else {
                        (y1 - y0) * (x1 - x0)
                    };
                    o[oy * ow + ox] = sum / count.max(1) as f32;
                }
            }
        });
    (out, oh, ow)
}

/// Adaptive average pooling of `[n, c, h, w]` to `[n, c, oh, ow]`: output cell i
/// averages input rows `floor(i*h/oh) .. ceil((i+1)*h/oh)` (and likewise columns),
/// which also covers upsampling (h < oh).
pub fn adaptive_avg_pool2d(
    x: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
) -> Vec<f32> {
    assert_eq!(
        x.len(),
        n * c * h * w,
        "adaptive_avg_pool2d: input length does not match {n}x{c}x{h}x{w}"
    );
    let mut out = vec![0f32; n * c * oh * ow];
    if out.is_empty() {
        return out;
    }
    if h == 0 || w == 0 {
        out.fill(f32::NAN);
        return out;
    }
    let span = |i: usize, len: usize, olen: usize| (i * len / olen, ((i + 1) * len).div_ceil(olen));
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .for_each(|(o, xp)| {
            for oy in 0..oh {
                let (y0, y1) = span(oy, h, oh);
                for ox in 0..ow {
                    let (x0, x1) = span(ox, w, ow);
                    let mut sum = 0f32;
                    for y in y0..y1 {
                        sum += xp[y * w + x0..y * w + x1].iter().sum::<f32>();
                    }
                    o[oy * ow + ox] = sum / ((y1 - y0) * (x1 - x0)) as f32;
                }
            }
        });
    out
}
