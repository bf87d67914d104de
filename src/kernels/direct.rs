//! Direct convolution for layers with very few input channels: the stems that read
//! the RGB image (Lite0's 3x3/2, ResNet's 7x7/2, AlexNet's 11x11/4).
//!
//! im2col would expand such a layer's input 9-121 fold only to feed a GEMM whose
//! inner dimension is just 27-363 long; here each input plane is instead copied
//! once into the padded phase-split layout `depthwise` uses, where every kernel tap
//! of a row of output pixels is one contiguous run, and 8 output channels x 32
//! pixels are accumulated in registers over all taps and input channels. AVX-512
//! only; elsewhere these layers keep the im2col path.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use rayon::prelude::*;

use super::depthwise::{fill_phased_dispatch, Layout};
use super::{act_bounds, Conv2d, ConvGeom};

/// Output channels per register block.
const G: usize = 8;
/// 16-pixel vectors per register block.
const P: usize = 2;

pub(super) fn available() -> bool {
    super::simd::isa() == super::simd::Isa::Avx512
}

/// A dense layer on at most 4 input channels with a real spatial kernel.
pub(super) fn suits(g: &ConvGeom) -> bool {
    g.groups == 1 && g.in_ch <= 4 && g.out_ch >= G && g.kernel.0 * g.kernel.1 > 1
}

/// Weights regrouped as `[out_ch / 8][in_ch][tap][8]` (zero-padded to whole groups):
/// the 8 weights a loaded input vector meets are adjacent.
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
/// Call only where [`available`] and [`suits`] hold.
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
    assert!(
        super::simd::detected() == super::simd::Isa::Avx512 && suits(conv.geom()),
        "direct conv: unsupported"
    );
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
        // SAFETY: AVX-512 asserted above; unit u writes only rows `oy` of image
        // img, inside `out`, which no other unit writes.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            rows_avx512(
                g,
                buf,
                plane,
                len,
                &offsets,
                packed,
                &bias,
                conv.act(),
                oy,
                oh,
                ow,
                ptr.offset(img * out_img),
            )
        };
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

/// Output rows `oys` of one image: for each run of 32 pixels and group of 8
/// channels, the sum over input channels and taps in 16 registers.
///
/// # Safety
/// AVX-512F; `out` points to this image's output, whose rows `oys` are the
/// caller's alone.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512(
    g: &ConvGeom,
    buf: &[f32],
    plane: usize,
    len: usize,
    offsets: &[usize],
    packed: &[f32],
    bias: &[f32],
    act: super::Act,
    oys: std::ops::Range<usize>,
    oh: usize,
    ow: usize,
    out: OutPtr,
) {
    let taps = offsets.len();
    let (lo, hi) = act_bounds(act);
    let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    let bp = buf.as_ptr();
    for oy in oys {
        for x0 in (0..ow).step_by(16 * P) {
            let i0 = oy * len + x0;
            for og in 0..g.out_ch.div_ceil(G) {
                let mut acc: [[__m512; G]; P] =
                    [std::array::from_fn(|k| _mm512_set1_ps(bias[og * G + k])); P];
                for c in 0..g.in_ch {
                    let wc = &packed[(og * g.in_ch + c) * taps * G..][..taps * G];
                    for (t, &off) in offsets.iter().enumerate() {
                        let at = c * plane + off + i0;
                        debug_assert!(at + 16 * P <= buf.len());
                        // SAFETY: `plane` leaves room for P whole vectors past the
                        // last output's run.
                        let v: [__m512; P] = std::array::from_fn(|p| unsafe {
                            _mm512_loadu_ps(bp.add(at + 16 * p))
                        });
                        for k in 0..G {
                            let wv = _mm512_set1_ps(wc[t * G + k]);
                            for p in 0..P {
                                acc[p][k] = _mm512_fmadd_ps(v[p], wv, acc[p][k]);
                            }
                        }
                    }
                }
                for k in 0..G {
                    let o = og * G + k;
                    if o >= g.out_ch {
                        break;
                    }
                    for (p, acc) in acc.iter().enumerate() {
                        let px = x0 + 16 * p;
                        if px >= ow {
                            break;
                        }
                        let n = (ow - px).min(16);
                        let mask = ((1u32 << n) - 1) as __mmask16;
                        // max/min keep NaN, as `clamp` does.
                        let v = _mm512_min_ps(hi, _mm512_max_ps(lo, acc[k]));
                        // SAFETY: pixel px..px+n of row oy of channel o.
                        unsafe {
                            _mm512_mask_storeu_ps(out.0.add((o * oh + oy) * ow + px), mask, v)
                        };
                    }
                }
            }
        }
    }
}
