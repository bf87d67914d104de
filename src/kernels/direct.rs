//! Direct convolution for layers with very few input channels: the stems that read
//! the RGB image (Lite0's 3x3/2, ResNet's 7x7/2, AlexNet's 11x11/4).
//!
//! im2col would expand such a layer's input 9-121 fold only to feed a GEMM whose
//! inner dimension is just 27-363 long; here each input plane is instead copied
//! once into the padded phase-split layout `depthwise` uses, where every kernel tap
//! of a row of output pixels is one contiguous run, and 8 output channels x 32
//! pixels are accumulated in registers over all taps and input channels (on
//! AVX-512; 6 or 2 channels x 16 pixels where `V16::ACC` is smaller).

use rayon::prelude::*;

use super::depthwise::{fill_phased_dispatch, Layout};
use super::vector::{dispatch, load_each, Kernel, V16};
use super::{act_bounds, Conv2d, ConvGeom};

/// Output channels per packed group: a multiple of every register block's channels
/// (8 on AVX-512, 6 on AVX2 and NEON, 2 on the portable type).
const G: usize = 24;
/// 16-pixel vectors per register block, at most.
const P: usize = 2;

/// A dense layer on at most 4 input channels with a real spatial kernel.
pub(super) fn suits(g: &ConvGeom) -> bool {
    g.groups == 1 && g.in_ch <= 4 && g.out_ch >= 8 && g.kernel.0 * g.kernel.1 > 1
}

/// Weights regrouped as `[out_ch / G][in_ch][tap][G]` (zero-padded to whole groups):
/// the weights a loaded input vector meets are adjacent.
pub(super) fn pack(g: &ConvGeom, weight: &[f32]) -> Vec<f32> {
    let taps = g.kernel.0 * g.kernel.1;
    let groups = g.out_ch.div_ceil(G);
    let mut p = vec![0f32; groups * g.in_ch * taps * G];
    for o in 0..g.out_ch {
        for c in 0..g.in_ch {
            for t in 0..taps {
                p[(((o / G) * g.in_ch + c) * taps + t) * G + o % G] =
                    weight[(o * g.in_ch + c) * taps + t];
            }
        }
    }
    p
}

/// `x`: `[n, in_ch, h, w]` -> `out`: `[n, out_ch, oh, ow]` with bias and activation.
/// Call only where [`suits`] holds.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    conv: &Conv2d,
    packed: &[f32],
    x: &[f32],
    n: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    out: &mut [f32],
) {
    assert!(suits(conv.geom()), "direct conv: unsupported layer");
    let g = conv.geom();
    let (layout, offsets) = Layout::for_conv(g, h, w, oh, ow);
    let (sy, sx, rows, len) = (layout.sy, layout.sx, layout.rows, layout.len);
    // Past the last phase block: the last tap's run, and whole vectors beyond it.
    let plane = sy * sx * rows * len + len + 16 * P;
    let bias: Vec<f32> = (0..g.out_ch.next_multiple_of(G))
        .map(|o| if o < g.out_ch { conv.bias_of(o) } else { 0.0 })
        .collect();
    let threads = super::threads();
    // Bands of output rows per image: the threads share a single image.
    let bands = if n >= threads { 1 } else { threads.min(oh) };
    let per_band = oh.div_ceil(bands);
    let out_img = g.out_ch * oh * ow;
    let ptr = OutPtr(out.as_mut_ptr());
    let unit = |buf: &mut Vec<f32>, u: usize| {
        let (img, band) = (u / bands, u % bands);
        let xi = &x[img * g.in_ch * h * w..][..g.in_ch * h * w];
        buf.resize(g.in_ch * plane, 0.0);
        for (c, dst) in buf.chunks_exact_mut(plane).enumerate() {
            fill_phased_dispatch(&xi[c * h * w..][..h * w], &layout, dst);
        }
        let oy = band * per_band..((band + 1) * per_band).min(oh);
        // Unit u writes only rows `oy` of image img, inside `out`, which no other
        // unit writes.
        dispatch(Rows {
            g,
            buf,
            plane,
            len,
            offsets: &offsets,
            packed,
            bias: &bias,
            act: conv.act(),
            oys: oy,
            oh,
            ow,
            // SAFETY: image img's output lies inside `out`.
            out: unsafe { ptr.offset(img * out_img) },
        });
    };
    let units = n * bands;
    if threads > 1 {
        (0..units)
            .into_par_iter()
            .with_max_len(1)
            .for_each_init(Vec::new, unit);
    } else {
        let mut buf = Vec::new();
        (0..units).for_each(|u| unit(&mut buf, u));
    }
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: units write disjoint output rows (see `forward`).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// # Safety
    /// `by` must stay inside the output.
    unsafe fn offset(self, by: usize) -> OutPtr {
        // SAFETY: passed on from the caller.
        OutPtr(unsafe { self.0.add(by) })
    }
}

/// Output rows `oys` of one image: for each run of pixels and group of channels,
/// the sum over input channels and taps in registers. `out` points to this image's
/// output, whose rows `oys` are this job's alone.
struct Rows<'a> {
    g: &'a ConvGeom,
    buf: &'a [f32],
    plane: usize,
    len: usize,
    offsets: &'a [usize],
    packed: &'a [f32],
    bias: &'a [f32],
    act: super::Act,
    oys: std::ops::Range<usize>,
    oh: usize,
    ow: usize,
    out: OutPtr,
}

impl Kernel for Rows<'_> {
    type Out = ();
    #[inline(always)]
    fn run<V: V16>(self) {
        // Channels x 16-pixel vectors per register block.
        // (AVX2: 6 x 1 is 12 of its 16 registers; 4 x 1 left too few sums in flight
        // to keep both FMA units busy.)
        match V::ACC {
            24.. => self.blocks::<V, 8, 2>(),
            6.. => self.blocks::<V, 6, 1>(),
            _ => self.blocks::<V, 2, 1>(),
        }
    }
}

impl Rows<'_> {
    /// Blocks of `GS` channels (of a packed group of `G`) by `PV` vectors of pixels.
    #[inline(always)]
    fn blocks<V: V16, const GS: usize, const PV: usize>(&self) {
        let g = self.g;
        let taps = self.offsets.len();
        let (lo, hi) = act_bounds(self.act);
        let (lo, hi) = (V::splat(lo), V::splat(hi));
        let bp = self.buf.as_ptr();
        let ow = self.ow;
        debug_assert!(PV <= P && G.is_multiple_of(GS));
        for oy in self.oys.clone() {
            for x0 in (0..ow).step_by(16 * PV) {
                let i0 = oy * self.len + x0;
                for og in 0..g.out_ch.div_ceil(G) {
                    for k0 in (0..G).step_by(GS) {
                        if og * G + k0 >= g.out_ch {
                            break;
                        }
                        let mut first = [V::zero(); GS];
                        for (k, a) in first.iter_mut().enumerate() {
                            *a = V::splat(self.bias[og * G + k0 + k]);
                        }
                        let mut acc: [[V; GS]; PV] = [first; PV];
                        for c in 0..g.in_ch {
                            let wc = &self.packed[(og * g.in_ch + c) * taps * G..][..taps * G];
                            for (t, &off) in self.offsets.iter().enumerate() {
                                let at = c * self.plane + off + i0;
                                debug_assert!(at + 16 * PV <= self.buf.len());
                                // SAFETY: `plane` leaves room for P whole vectors past
                                // the last output's run.
                                let v: [V; PV] = unsafe { load_each(bp.add(at), 16) };
                                for k in 0..GS {
                                    let wv = V::splat(wc[t * G + k0 + k]);
                                    for p in 0..PV {
                                        acc[p][k] = v[p].mul_add(wv, acc[p][k]);
                                    }
                                }
                            }
                        }
                        for k in 0..GS {
                            let o = og * G + k0 + k;
                            if o >= g.out_ch {
                                break;
                            }
                            for (p, acc) in acc.iter().enumerate() {
                                let px = x0 + 16 * p;
                                if px >= ow {
                                    break;
                                }
                                let n = (ow - px).min(16);
                                // SAFETY: pixels px..px+n of row oy of channel o.
                                unsafe {
                                    acc[k].clamp(lo, hi).store_lanes(
                                        self.out.0.add((o * self.oh + oy) * ow + px),
                                        0,
                                        n,
                                    )
                                };
                            }
                        }
                    }
                }
            }
        }
    }
}
