//! Depthwise convolution vectorised across channels (AVX-512).
//!
//! The per-plane kernel in `depthwise` vectorises along a plane's rows; on the 14x14
//! and 7x7 planes of a network's last stages filling its padded copy and storing a
//! few short rows costs more than the arithmetic (EfficientNet-Lite0's 7x7 5x5 layers
//! ran 5x slower than onnxruntime). Here 16 channels at a time are gathered into one
//! padded block laid out pixel by pixel (`[y][x][16 channels]`), every output pixel
//! is one vector multiply-add per tap with all lanes busy, and the result is
//! scattered back to the channels' planes. Measured in Lite0's forward pass it is
//! also ahead on large planes (112x112: 0.41 vs 0.46 ms, 56x56 s2: 0.58 vs 0.74,
//! 28x28: 0.25 vs 0.34 per image), so it takes every depthwise layer where AVX-512
//! is available.

use super::{act_bounds, Conv2d};

/// Whether this CPU can run it.
pub(super) fn available() -> bool {
    super::simd::isa() == super::simd::Isa::Avx512
}

/// Channels `c0..` of one image, as many as `out` holds planes for: `x` is the
/// image's whole `[c, h, w]` input, `out` those channels' `[_, oh, ow]` output.
///
/// # Panics
/// If AVX-512 is missing or a slice does not match the shapes.
#[allow(clippy::too_many_arguments)]
pub(super) fn channels(
    conv: &Conv2d,
    x: &[f32],
    c0: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    out: &mut [f32],
    buf: &mut Vec<f32>,
) {
    let c = conv.geom().in_ch;
    assert!(
        super::simd::detected() == super::simd::Isa::Avx512,
        "depthwise16 needs AVX-512"
    );
    assert_eq!(x.len(), c * h * w, "depthwise16: input shape");
    assert!(
        out.len().is_multiple_of(oh * ow),
        "depthwise16: output shape"
    );
    let count = out.len() / (oh * ow);
    assert!(c0 + count <= c, "depthwise16: channels past the input");
    // i32 lane offsets into the planes must not overflow.
    assert!(16 * h * w < i32::MAX as usize && 16 * oh * ow < i32::MAX as usize);
    for first in (0..count).step_by(16) {
        let lanes = 16.min(count - first);
        // SAFETY: AVX-512 checked above; `group` reads the planes of channels
        // c0+first.. c0+first+lanes (inside x, checked above), writes the matching
        // planes of out (masked to `lanes`) and its own buffer.
        unsafe {
            group(
                conv,
                x,
                c0 + first,
                lanes,
                h,
                w,
                oh,
                ow,
                &mut out[first * oh * ow..],
                buf,
            )
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn group(
    conv: &Conv2d,
    x: &[f32],
    c0: usize,
    lanes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    out: &mut [f32],
    buf: &mut Vec<f32>,
) {
    use std::arch::x86_64::*;
    let g = conv.geom();
    let c = g.in_ch;
    let (kh, kw) = g.kernel;
    let (sy, sx) = g.stride;
    let (dy, dx) = g.dilation;
    let taps = kh * kw;
    debug_assert!(c0 + lanes <= c && out.len() >= (lanes - 1) * oh * ow + oh * ow);
    let mask: __mmask16 = if lanes == 16 { !0 } else { (1u16 << lanes) - 1 };
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    let idx = |stride: usize| _mm512_mullo_epi32(lane, _mm512_set1_epi32(stride as i32));

    // Padded block: every pixel the outputs read, zeros outside the input.
    let hp = (oh - 1) * sy + (kh - 1) * dy + 1;
    let wp = (ow - 1) * sx + (kw - 1) * dx + 1;
    // Start on a 64-byte boundary: every pixel's 16 channels are then one cache
    // line, and no load of the taps below straddles two.
    buf.resize(hp * wp * 16 + 16, 0.0);
    let base = buf.as_mut_ptr();
    let base = base.add(base.align_offset(64));
    let xin = idx(h * w);
    let planes = x.as_ptr().add(c0 * h * w);
    for py in 0..hp {
        let iy = py.checked_sub(g.pad.top).filter(|&iy| iy < h);
        for px in 0..wp {
            let ix = px.checked_sub(g.pad.left).filter(|&ix| ix < w);
            let v = match (iy, ix) {
                (Some(iy), Some(ix)) => _mm512_mask_i32gather_ps::<4>(
                    _mm512_setzero_ps(),
                    mask,
                    xin,
                    planes.add(iy * w + ix),
                ),
                _ => _mm512_setzero_ps(),
            };
            _mm512_store_ps(base.add((py * wp + px) * 16), v);
        }
    }

    // Per tap, the 16 channels' weights; bias likewise.
    let wk = conv.weight().as_ptr().add(c0 * taps);
    let wtap = idx(taps);
    // On the stack for kernels up to 7x7 (a heap vector per group of 16 channels
    // was measurable on 7x7 planes).
    let mut wstack = [_mm512_setzero_ps(); 49];
    let mut wheap = Vec::new();
    let weights: &mut [__m512] = if taps <= 49 {
        &mut wstack[..taps]
    } else {
        wheap.resize(taps, _mm512_setzero_ps());
        &mut wheap
    };
    for (t, wv) in weights.iter_mut().enumerate() {
        *wv = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), mask, wtap, wk.add(t));
    }
    let weights = &*weights;
    let bias = match conv.bias() {
        Some(b) => _mm512_maskz_loadu_ps(mask, b.as_ptr().add(c0)),
        None => _mm512_setzero_ps(),
    };
    let (lo, hi) = act_bounds(conv.act());
    let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    // Tap offsets in the block, in floats.
    let mut ostack = [0usize; 49];
    let mut oheap = Vec::new();
    let offsets: &mut [usize] = if taps <= 49 {
        &mut ostack[..taps]
    } else {
        oheap.resize(taps, 0);
        &mut oheap
    };
    for (t, o) in offsets.iter_mut().enumerate() {
        *o = ((t / kw) * dy * wp + (t % kw) * dx) * 16;
    }
    let offsets = &*offsets;
    let xout = idx(oh * ow);
    let dst = out.as_mut_ptr();
    let b = base as *const f32;
    let step = sx * 16;
    for oy in 0..oh {
        let mut ox = 0;
        while ox < ow {
            // Up to 8 output pixels of a row at once: independent accumulators keep
            // the multiply-adds from waiting on each other, and each tap's weights
            // are loaded once for all of them.
            let at = b.add((oy * sy * wp + ox * sx) * 16);
            let d = dst.add(oy * ow + ox);
            let e = Epi {
                bias,
                lo,
                hi,
                mask,
                xout,
            };
            ox += match ow - ox {
                1 => pixels::<1>(weights, offsets, at, step, d, &e),
                2 => pixels::<2>(weights, offsets, at, step, d, &e),
                3 => pixels::<3>(weights, offsets, at, step, d, &e),
                4 => pixels::<4>(weights, offsets, at, step, d, &e),
                5 => pixels::<5>(weights, offsets, at, step, d, &e),
                6 => pixels::<6>(weights, offsets, at, step, d, &e),
                7 => pixels::<7>(weights, offsets, at, step, d, &e),
                _ => pixels::<8>(weights, offsets, at, step, d, &e),
            };
        }
    }
}

/// What is done to each output vector before it is scattered to its 16 planes.
#[cfg(target_arch = "x86_64")]
struct Epi {
    bias: std::arch::x86_64::__m512,
    lo: std::arch::x86_64::__m512,
    hi: std::arch::x86_64::__m512,
    mask: std::arch::x86_64::__mmask16,
    /// Lane l writes `l * oh * ow` floats further.
    xout: std::arch::x86_64::__m512i,
}

/// `J` consecutive output pixels of one row, starting at block position `at`
/// (inputs `step` floats apart), written to `d` and the next `J - 1` pixels of each
/// plane. Returns `J`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn pixels<const J: usize>(
    weights: &[std::arch::x86_64::__m512],
    offsets: &[usize],
    at: *const f32,
    step: usize,
    d: *mut f32,
    e: &Epi,
) -> usize {
    use std::arch::x86_64::*;
    let mut acc = [e.bias; J];
    for (wv, &o) in weights.iter().zip(offsets) {
        let p = at.add(o);
        for (j, a) in acc.iter_mut().enumerate() {
            *a = _mm512_fmadd_ps(*wv, _mm512_loadu_ps(p.add(j * step)), *a);
        }
    }
    for (j, a) in acc.iter().enumerate() {
        // NaN passes through, as in `clamp`: vmaxps/vminps return their second
        // operand when either is NaN.
        let v = _mm512_min_ps(e.hi, _mm512_max_ps(e.lo, *a));
        _mm512_mask_i32scatter_ps::<4>(d.add(j), e.mask, e.xout, v);
    }
    J
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn group(
    _: &Conv2d,
    _: &[f32],
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: &mut [f32],
    _: &mut Vec<f32>,
) {
    unreachable!("available() is false off x86-64")
}
