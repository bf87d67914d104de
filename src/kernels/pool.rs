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
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .for_each(|(o, xp)| {
            for oy in 0..oh {
                let (y0, y1, py) = avg_window(oy, stride.0, kernel.0, pad.top, h, pad.bottom);
                for ox in 0..ow {
                    let (x0, x1, px) = avg_window(ox, stride.1, kernel.1, pad.left, w, pad.right);
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
    out.par_chunks_mut(oh * ow)
        .zip(x.par_chunks(h * w))
        .for_each(|(o, xp)| {
            for oy in 0..oh {
                let (y0, y1) = adaptive_span(oy, h, oh);
                for ox in 0..ow {
                    let (x0, x1) = adaptive_span(ox, w, ow);
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

/// The gradient of [`max_pool2d`] with respect to its input: each output cell's
/// gradient goes to the first cell of its window (row by row) holding the maximum,
/// as torch's switches send it. `x` is the input, `y` the output and `dy` its
/// gradient (`[n, c, oh, ow]`).
#[allow(clippy::too_many_arguments)]
pub fn max_pool2d_backward(
    x: &[f32],
    y: &[f32],
    dy: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    kernel: (usize, usize),
    stride: (usize, usize),
    pad: Pad,
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    assert_eq!(x.len(), n * c * h * w, "max_pool2d_backward: input size");
    assert!(
        y.len() == n * c * oh * ow && dy.len() == y.len(),
        "max_pool2d_backward: output size"
    );
    let mut dx = vec![0f32; x.len()];
    dx.par_chunks_mut(h * w)
        .zip(x.par_chunks(h * w))
        .zip(y.par_chunks(oh * ow).zip(dy.par_chunks(oh * ow)))
        .for_each(|((d, xp), (yp, dp))| {
            for oy in 0..oh {
                let top = (oy * stride.0) as isize - pad.top as isize;
                let (y0, y1) = (
                    top.max(0) as usize,
                    ((top + kernel.0 as isize).max(0) as usize).min(h),
                );
                for ox in 0..ow {
                    let left = (ox * stride.1) as isize - pad.left as isize;
                    let x0 = left.max(0) as usize;
                    let x1 = ((left + kernel.1 as isize).max(0) as usize).min(w);
                    let m = yp[oy * ow + ox];
                    let hit = (y0..y1)
                        .flat_map(|yy| (x0..x1).map(move |xx| yy * w + xx))
                        .find(|&k| xp[k] == m || (m.is_nan() && xp[k].is_nan()));
                    if let Some(k) = hit {
                        d[k] += dp[oy * ow + ox];
                    }
                }
            }
        });
    dx
}

/// The gradient of [`avg_pool2d`] with respect to its input, from the output's
/// gradient `dy` (`[n, c, oh, ow]`): each cell's share of every window it is in.
#[allow(clippy::too_many_arguments)]
pub fn avg_pool2d_backward(
    dy: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    kernel: (usize, usize),
    stride: (usize, usize),
    pad: Pad,
    count_include_pad: bool,
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    assert_eq!(
        dy.len(),
        n * c * oh * ow,
        "avg_pool2d_backward: output size"
    );
    let mut dx = vec![0f32; n * c * h * w];
    dx.par_chunks_mut(h * w)
        .zip(dy.par_chunks(oh * ow))
        .for_each(|(d, dp)| {
            for oy in 0..oh {
                let (y0, y1, py) = avg_window(oy, stride.0, kernel.0, pad.top, h, pad.bottom);
                for ox in 0..ow {
                    let (x0, x1, px) = avg_window(ox, stride.1, kernel.1, pad.left, w, pad.right);
                    let count = if count_include_pad {
                        py * px
                    } else {
                        (y1 - y0) * (x1 - x0)
                    };
                    let share = dp[oy * ow + ox] / count.max(1) as f32;
                    for yy in y0..y1 {
                        d[yy * w + x0..yy * w + x1]
                            .iter_mut()
                            .for_each(|v| *v += share);
                    }
                }
            }
        });
    dx
}

/// The gradient of [`adaptive_avg_pool2d`] with respect to its input, from the
/// output's gradient `dy` (`[n, c, oh, ow]`).
pub fn adaptive_avg_pool2d_backward(
    dy: &[f32],
    (n, c, h, w): (usize, usize, usize, usize),
    (oh, ow): (usize, usize),
) -> Vec<f32> {
    assert_eq!(
        dy.len(),
        n * c * oh * ow,
        "adaptive_avg_pool2d_backward: output size"
    );
    let mut dx = vec![0f32; n * c * h * w];
    if h == 0 || w == 0 {
        return dx;
    }
    dx.par_chunks_mut(h * w)
        .zip(dy.par_chunks(oh * ow))
        .for_each(|(d, dp)| {
            for oy in 0..oh {
                let (y0, y1) = adaptive_span(oy, h, oh);
                for ox in 0..ow {
                    let (x0, x1) = adaptive_span(ox, w, ow);
                    let share = dp[oy * ow + ox] / ((y1 - y0) * (x1 - x0)) as f32;
                    for yy in y0..y1 {
                        d[yy * w + x0..yy * w + x1]
                            .iter_mut()
                            .for_each(|v| *v += share);
                    }
                }
            }
        });
    dx
}

/// An average pool's window on one axis, `[start, start + k)` clipped to the input:
/// the first and last cell it covers, and how many cells of the padded input it does
/// (for `count_include_pad`).
fn avg_window(
    o: usize,
    s: usize,
    k: usize,
    before: usize,
    len: usize,
    after: usize,
) -> (usize, usize, usize) {
    let start = (o * s) as isize - before as isize;
    let end = start + k as isize;
    let padded = (end.min((len + after) as isize) - start.max(-(before as isize))) as usize;
    let (a, b) = (start.max(0) as usize, end.clamp(0, len as isize) as usize);
    (a, b.max(a), padded)
}

/// Adaptive pooling's cells on one axis for output cell `i` of `olen`:
/// `floor(i*len/olen) .. ceil((i+1)*len/olen)`.
fn adaptive_span(i: usize, len: usize, olen: usize) -> (usize, usize) {
    (i * len / olen, ((i + 1) * len).div_ceil(olen))
}
