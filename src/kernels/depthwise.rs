//! Direct depthwise convolution (one filter per channel).
//!
//! Each plane is first copied into a zero-padded buffer split by phase modulo the
//! stride on both axes: padded pixel (r, c) = (r'*sy + qy, j*sx + qx) goes to block
//! (qy, qx), row r', column j, every row `len` wide. In that layout output pixel
//! (oy, ox), stored at `oy*len + ox`, reads tap (ky, kx) at a fixed offset from the
//! same index, for any stride and dilation. So the whole plane is one flat loop of
//! shifted multiply-adds over contiguous memory, which vectorises well even for
//! 7x7 planes; the few extra columns per row (`len - ow`) are computed and dropped.

use rayon::prelude::*;

use super::depthwise16;
use super::simd::{madd, multiversion};
use super::{act_bounds, clamp, Act, Conv2d};

/// Output pixels per accumulator block (one AVX-512 register).
const BLOCK: usize = 16;

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
    let (sy, sx) = g.stride;
    debug_assert_eq!(out.len(), n * c * oh * ow);
    if depthwise16::available() {
        let (plane_in, plane_out) = (h * w, oh * ow);
        let threads = super::threads();
        if threads > 1 && n == 1 {
            // One image on several threads: each takes a run of 16-channel groups.
            let per = c.div_ceil(threads).next_multiple_of(16);
            out.par_chunks_mut(per * plane_out)
                .enumerate()
                .for_each_init(Vec::new, |buf, (i, o)| {
                    depthwise16::channels(conv, x, i * per, h, w, oh, ow, o, buf)
                });
        } else if threads > 1 {
            out.par_chunks_mut(c * plane_out)
                .zip(x.par_chunks(c * plane_in))
                .with_max_len(1)
                .for_each_init(Vec::new, |buf, (o, xi)| {
                    depthwise16::channels(conv, xi, 0, h, w, oh, ow, o, buf)
                });
        } else {
            let mut buf = Vec::new();
            for (o, xi) in out.chunks_mut(c * plane_out).zip(x.chunks(c * plane_in)) {
                depthwise16::channels(conv, xi, 0, h, w, oh, ow, o, &mut buf);
            }
        }
        return;
    }
    let (layout, offsets) = Layout::for_conv(g, h, w, oh, ow);
    let (rows, len) = (layout.rows, layout.len);
    let flat = oh * len;
    // The last tap reads up to one row plus one rounded-up block past the last phase block.
    let buf_len = sy * sx * rows * len + len + BLOCK;
    let taps = Taps {
        offsets: &offsets,
        buf_len,
        acc_len: flat.next_multiple_of(BLOCK),
    };
    out.par_chunks_mut(oh * ow).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(buf, acc), (i, o)| {
            let ch = i % c;
            let wk = &conv.weight()[ch * kh * kw..][..kh * kw];
            let epilogue = (conv.bias_of(ch), conv.act());
            plane(
                &x[i * h * w..][..h * w],
                wk,
                &layout,
                &taps,
                epilogue,
                buf,
                acc,
                o,
            );
        },
    );
}

/// Where the phase-split padded plane comes from.
pub(super) struct Layout {
    pub(super) h: usize,
    pub(super) w: usize,
    pub(super) pad_top: usize,
    pub(super) pad_left: usize,
    pub(super) sy: usize,
    pub(super) sx: usize,
    /// Rows per phase block.
    pub(super) rows: usize,
    /// Columns per row.
    pub(super) len: usize,
    /// Output width (the first `ow` of every `len` computed columns are kept).
    pub(super) ow: usize,
}

impl Layout {
    /// The phase-split layout (phases = the conv's strides) of the padded input rows
    /// and columns an `oh` x `ow` output reads, and every kernel tap's flat offset
    /// from an output pixel's index `oy * len + ox`.
    pub(super) fn for_conv(
        g: &super::ConvGeom,
        h: usize,
        w: usize,
        oh: usize,
        ow: usize,
    ) -> (Layout, Vec<usize>) {
        let (kh, kw) = g.kernel;
        let (sy, sx) = g.stride;
        let (dy, dx) = g.dilation;
        let rows = (oh - 1) + (kh - 1) * dy / sy + 1;
        let len = (ow - 1) + (kw - 1) * dx / sx + 1;
        let offsets = (0..kh * kw)
            .map(|t| {
                let (ty, tx) = ((t / kw) * dy, (t % kw) * dx);
                ((ty % sy * sx + tx % sx) * rows + ty / sy) * len + tx / sx
            })
            .collect();
        let layout = Layout {
            h,
            w,
            pad_top: g.pad.top,
            pad_left: g.pad.left,
            sy,
            sx,
            rows,
            len,
            ow,
        };
        (layout, offsets)
    }
}

/// The kernel taps as flat offsets, and the scratch sizes they need.
struct Taps<'a> {
    offsets: &'a [usize],
    buf_len: usize,
    acc_len: usize,
}

multiversion! {
    /// One plane: fill the phase-split buffer, `acc[i] = sum_t wk[t] * buf[offsets[t] + i]`,
    /// then `out` = act(acc + bias) without the extra columns.
    fn plane(
        x: &[f32],
        wk: &[f32],
        l: &Layout,
        taps: &Taps,
        epilogue: (f32, Act),
        buf: &mut Vec<f32>,
        acc: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        // Stale contents past the filled rows only feed outputs that are dropped.
        if buf.len() < taps.buf_len {
            buf.resize(taps.buf_len, 0.0);
        }
        if acc.len() < taps.acc_len {
            acc.resize(taps.acc_len, 0.0);
        }
        fill_phased(x, l, buf);
        let acc = &mut acc[..taps.acc_len];
        match wk.len() {
            9 => taps_fixed::<FMA, 9>(buf, wk, taps.offsets, epilogue, acc),
            25 => taps_fixed::<FMA, 25>(buf, wk, taps.offsets, epilogue, acc),
            _ => taps_any::<FMA>(buf, wk, taps.offsets, epilogue, acc),
        }
        for (orow, arow) in out.chunks_exact_mut(l.ow).zip(acc.chunks(l.len)) {
            orow.copy_from_slice(&arow[..l.ow]);
        }
    }
}

multiversion! {
    /// `fill_phased` for callers outside a multiversioned function.
    pub(super) fn fill_phased_dispatch(x: &[f32], l: &Layout, buf: &mut [f32]) {
        let _ = FMA;
        fill_phased(x, l, buf)
    }
}

/// Writes the phase-split padded copy of plane `x`, zeros included, into `buf`.
#[inline(always)]
pub(super) fn fill_phased(x: &[f32], l: &Layout, buf: &mut [f32]) {
    for qy in 0..l.sy {
        for r in 0..l.rows {
            let block_row = |qx: usize| ((qy * l.sx + qx) * l.rows + r) * l.len;
            let Some(iy) = (r * l.sy + qy)
                .checked_sub(l.pad_top)
                .filter(|&iy| iy < l.h)
            else {
                for qx in 0..l.sx {
                    buf[block_row(qx)..][..l.len].fill(0.0);
                }
                continue;
            };
            let src = &x[iy * l.w..][..l.w];
            if l.sx == 2 {
                // Split even and odd input columns in one pass that vectorises.
                let (a, b) = buf.split_at_mut(block_row(1));
                let (d0, d1) = (&mut a[block_row(0)..][..l.len], &mut b[..l.len]);
                // Input column 2m lands in phase pl % 2 at slot m + pl / 2, column 2m+1
                // in the other phase at slot m + (pl + 1) / 2.
                let pl = l.pad_left;
                let (de, dd) = if pl.is_multiple_of(2) {
                    (d0, d1)
                } else {
                    (d1, d0)
                };
                let (se, so) = (pl / 2, pl.div_ceil(2));
                de.fill(0.0);
                dd.fill(0.0);
                let pairs = (l.w / 2)
                    .min(l.len.saturating_sub(se))
                    .min(l.len.saturating_sub(so));
                for ((e, o), p) in de[se..se + pairs]
                    .iter_mut()
                    .zip(&mut dd[so..so + pairs])
                    .zip(src.chunks_exact(2))
                {
                    *e = p[0];
                    *o = p[1];
                }
                // Columns past the full pairs (odd width, or clipped by len).
                for (ix, &v) in src.iter().enumerate().skip(2 * pairs) {
                    let (d, slot) = if ix % 2 == 0 {
                        (&mut *de, se + ix / 2)
                    } else {
                        (&mut *dd, so + ix / 2)
                    };
                    if slot < l.len {
                        d[slot] = v;
                    }
                }
                continue;
            }
            for qx in 0..l.sx {
                let dst = &mut buf[block_row(qx)..][..l.len];
                let (lo, hi) = phase_span(l, qx);
                dst[..lo].fill(0.0);
                dst[hi.max(lo)..].fill(0.0);
                if lo >= hi {
                    continue;
                }
                let first = lo * l.sx + qx - l.pad_left;
                if l.sx == 1 {
                    dst[lo..hi].copy_from_slice(&src[first..first + hi - lo]);
                } else {
                    for (d, s) in dst[lo..hi]
                        .iter_mut()
                        .zip(src[first..].iter().step_by(l.sx))
                    {
                        *d = *s;
                    }
                }
            }
        }
    }
}

/// Slots `lo..hi` of phase `qx` whose input column `j*sx + qx - pad_left` lies in [0, w).
#[inline(always)]
fn phase_span(l: &Layout, qx: usize) -> (usize, usize) {
    let lo = l.pad_left.saturating_sub(qx).div_ceil(l.sx).min(l.len);
    let hi = (l.w + l.pad_left)
        .saturating_sub(qx)
        .div_ceil(l.sx)
        .min(l.len);
    (lo, hi)
}

/// `acc[i] = sum_t wk[t] * buf[offsets[t] + i]` with the T taps unrolled; blocks of
/// `WIDE` outputs keep two independent accumulator registers in flight (one chain of
/// dependent multiply-adds would wait on latency; with more, LLVM kept them on the
/// stack or gave up vectorising, 1.5x slower), the rest goes by `BLOCK`.
#[inline(always)]
fn taps_fixed<const FMA: bool, const T: usize>(
    buf: &[f32],
    wk: &[f32],
    offsets: &[usize],
    (bias, act): (f32, Act),
    acc: &mut [f32],
) {
    const WIDE: usize = 2 * BLOCK;
    let (lo, hi) = act_bounds(act);
    let wk: &[f32; T] = wk.try_into().unwrap();
    let n = acc.len();
    // Each tap's source cut to exactly acc's length: the loop needs no bounds checks.
    let srcs: [&[f32]; T] = std::array::from_fn(|t| &buf[offsets[t]..offsets[t] + n]);
    let wide_end = n / WIDE * WIDE;
    for b in (0..wide_end).step_by(WIDE) {
        taps_block::<FMA, T, WIDE>(&srcs, wk, b, (bias, lo, hi), acc);
    }
    for b in (wide_end..n).step_by(BLOCK) {
        taps_block::<FMA, T, BLOCK>(&srcs, wk, b, (bias, lo, hi), acc);
    }
}

#[inline(always)]
fn taps_block<const FMA: bool, const T: usize, const B: usize>(
    srcs: &[&[f32]; T],
    wk: &[f32; T],
    b: usize,
    (bias, lo, hi): (f32, f32, f32),
    acc: &mut [f32],
) {
    let mut a = [bias; B];
    for t in 0..T {
        let s: &[f32; B] = srcs[t][b..b + B].try_into().unwrap();
        for l in 0..B {
            a[l] = madd::<FMA>(wk[t], s[l], a[l]);
        }
    }
    for v in a.iter_mut() {
        *v = clamp(*v, lo, hi);
    }
    acc[b..b + B].copy_from_slice(&a);
}

/// Any number of taps: one pass over the plane per tap.
#[inline(always)]
fn taps_any<const FMA: bool>(
    buf: &[f32],
    wk: &[f32],
    offsets: &[usize],
    (bias, act): (f32, Act),
    acc: &mut [f32],
) {
    acc.fill(bias);
    let n = acc.len();
    for (&o, &wv) in offsets.iter().zip(wk) {
        for (a, s) in acc.iter_mut().zip(&buf[o..o + n]) {
            *a = madd::<FMA>(wv, *s, *a);
        }
    }
    let (lo, hi) = act_bounds(act);
    acc.iter_mut().for_each(|v| *v = clamp(*v, lo, hi));
}
