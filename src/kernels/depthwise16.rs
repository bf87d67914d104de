//! Depthwise convolution vectorised across channels (a [`V16`] of 16 channels).
//!
//! The per-plane kernel in `depthwise` vectorises along a plane's rows; on the 14x14
//! and 7x7 planes of a network's last stages filling its padded copy and storing a
//! few short rows costs more than the arithmetic (EfficientNet-Lite0's 7x7 5x5 layers
//! ran 5x slower than onnxruntime). Here 16 channels at a time are gathered into one
//! padded block laid out pixel by pixel (`[y][x][16 channels]`), every output pixel
//! is one vector multiply-add per tap with all lanes busy, and the result is
//! scattered back to the channels' planes. Measured in Lite0's forward pass it is
//! also ahead on large planes (112x112: 0.41 vs 0.46 ms, 56x56 s2: 0.58 vs 0.74,
//! 28x28: 0.25 vs 0.34 per image, on AVX-512, whose gathers and scatters are single
//! instructions), so it takes every NCHW depthwise layer but on the portable ISA.

use super::isa::{isa, Isa};
use super::vector::{dispatch, Apart, Kernel, V16};
use super::{act_bounds, Conv2d};

/// Whether NCHW depthwise layers take this kernel rather than `depthwise`'s planes.
pub(super) fn available() -> bool {
    isa() != Isa::Portable
}

/// Channels `c0..` of one image, as many as `out` holds planes for: `x` is the
/// image's whole `[c, h, w]` input, `out` those channels' `[_, oh, ow]` output.
///
/// # Panics
/// If a slice does not match the shapes.
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
        // `Group` reads the planes of channels c0+first.. c0+first+lanes (inside
        // x, checked above), writes the matching planes of out and its own buffer.
        dispatch(Group {
            conv,
            x,
            c0: c0 + first,
            lanes,
            h,
            w,
            oh,
            ow,
            out: &mut out[first * oh * ow..],
            buf,
        })
    }
}

/// Channels `c0..c0 + lanes` (at most 16) of one image.
struct Group<'a> {
    conv: &'a Conv2d,
    x: &'a [f32],
    c0: usize,
    lanes: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    out: &'a mut [f32],
    buf: &'a mut Vec<f32>,
}

impl Kernel for Group<'_> {
    type Out = ();
    #[inline(always)]
    fn run<V: V16>(self) {
        let Group {
            conv,
            x,
            c0,
            lanes,
            h,
            w,
            oh,
            ow,
            out,
            buf,
        } = self;
        let g = conv.geom();
        let c = g.in_ch;
        let (kh, kw) = g.kernel;
        let (sy, sx) = g.stride;
        let (dy, dx) = g.dilation;
        let taps = kh * kw;
        assert!(c0 + lanes <= c && lanes <= 16 && out.len() >= lanes * oh * ow);

        // Padded block: every pixel the outputs read, zeros outside the input.
        let hp = (oh - 1) * sy + (kh - 1) * dy + 1;
        let wp = (ow - 1) * sx + (kw - 1) * dx + 1;
        // Start on a 64-byte boundary: every pixel's 16 channels are then one cache
        // line, and no load of the taps below straddles two.
        buf.resize(hp * wp * 16 + 16, 0.0);
        let base = buf.as_mut_ptr();
        // SAFETY (the pointer arithmetic and accesses below): the block lies inside
        // `buf`; planes c0..c0+lanes inside `x`; the weights of those channels
        // inside the layer's; outputs inside `out`'s `lanes` planes.
        unsafe {
            let base = base.add(base.align_offset(64));
            let planes = x.as_ptr().add(c0 * h * w);
            for py in 0..hp {
                let iy = py.checked_sub(g.pad.top).filter(|&iy| iy < h);
                for px in 0..wp {
                    let ix = px.checked_sub(g.pad.left).filter(|&ix| ix < w);
                    let v = match (iy, ix) {
                        (Some(iy), Some(ix)) => V::gather(planes.add(iy * w + ix), h * w, lanes),
                        _ => V::zero(),
                    };
                    v.store(base.add((py * wp + px) * 16));
                }
            }

            // Per tap, the 16 channels' weights; bias likewise.
            let wk = conv.weight().as_ptr().add(c0 * taps);
            // On the stack for kernels up to 7x7 (a heap vector per group of 16
            // channels was measurable on 7x7 planes).
            let mut wstack = [V::zero(); 49];
            let mut wheap = Vec::new();
            let weights: &mut [V] = if taps <= 49 {
                &mut wstack[..taps]
            } else {
                wheap.resize(taps, V::zero());
                &mut wheap
            };
            for (t, wv) in weights.iter_mut().enumerate() {
                *wv = V::gather(wk.add(t), taps, lanes);
            }
            let weights = &*weights;
            let bias = match conv.bias() {
                Some(b) => V::load_lanes(b.as_ptr().add(c0), 0, lanes),
                None => V::zero(),
            };
            let (lo, hi) = act_bounds(conv.act());
            let (lo, hi) = (V::splat(lo), V::splat(hi));
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
            let dst = out.as_mut_ptr();
            let b = base as *const f32;
            let step = sx * 16;
            let e = Epi {
                bias,
                lo,
                hi,
                lanes,
                plane: oh * ow,
            };
            let most = 8.min(V::ACC);
            for oy in 0..oh {
                let mut ox = 0;
                while ox < ow {
                    // Several output pixels of a row at once: independent
                    // accumulators keep the multiply-adds from waiting on each
                    // other, and each tap's weights are loaded once for all of them.
                    let at = b.add((oy * sy * wp + ox * sx) * 16);
                    let d = dst.add(oy * ow + ox);
                    ox += match (ow - ox).min(most) {
                        1 => V::apart(Pixels::<V, 1> {
                            weights,
                            offsets,
                            at,
                            step,
                            d,
                            e: &e,
                        }),
                        2 => V::apart(Pixels::<V, 2> {
                            weights,
                            offsets,
                            at,
                            step,
                            d,
                            e: &e,
                        }),
                        3 => V::apart(Pixels::<V, 3> {
                            weights,
                            offsets,
                            at,
                            step,
                            d,
                            e: &e,
                        }),
                        4 => V::apart(Pixels::<V, 4> {
                            weights,
                            offsets,
                            at,
                            step,
                            d,
                            e: &e,
                        }),
                        5 => V::apart(Pixels::<V, 5> {
                            weights,
                            offsets,
                            at,
                            step,
                            d,
                            e: &e,
                        }),
                        6 => V::apart(Pixels::<V, 6> {
                            weights,
                            offsets,
                            at,
                            step,
                            d,
                            e: &e,
                        }),
                        7 => V::apart(Pixels::<V, 7> {
                            weights,
                            offsets,
                            at,
                            step,
                            d,
                            e: &e,
                        }),
                        _ => V::apart(Pixels::<V, 8> {
                            weights,
                            offsets,
                            at,
                            step,
                            d,
                            e: &e,
                        }),
                    };
                }
            }
        }
    }
}

/// What is done to each output vector before it is scattered to its planes.
struct Epi<V> {
    bias: V,
    lo: V,
    hi: V,
    /// Channels (lanes) written.
    lanes: usize,
    /// Lane l writes `l * plane` floats further.
    plane: usize,
}

/// `pixels` as a kernel of its own (see `V16::apart`).
struct Pixels<'a, V, const J: usize> {
    weights: &'a [V],
    offsets: &'a [usize],
    at: *const f32,
    step: usize,
    d: *mut f32,
    e: &'a Epi<V>,
}

impl<V: V16, const J: usize> Apart<V> for Pixels<'_, V, J> {
    type Out = usize;
    #[inline(always)]
    fn run(self) -> usize {
        // SAFETY: the pointers as `Group` makes them.
        unsafe {
            pixels::<V, J>(
                self.weights,
                self.offsets,
                self.at,
                self.step,
                self.d,
                self.e,
            )
        }
    }
}

/// `J` consecutive output pixels of one row, starting at block position `at`
/// (inputs `step` floats apart), written to `d` and the next `J - 1` pixels of each
/// plane. Returns `J`.
///
/// # Safety
/// The taps of those pixels lie inside the block; `d` as `Group` makes it.
#[inline(always)]
unsafe fn pixels<V: V16, const J: usize>(
    weights: &[V],
    offsets: &[usize],
    at: *const f32,
    step: usize,
    d: *mut f32,
    e: &Epi<V>,
) -> usize {
    // SAFETY: by the contract.
    unsafe {
        let mut acc = [e.bias; J];
        for (wv, &o) in weights.iter().zip(offsets) {
            let p = at.add(o);
            for (j, a) in acc.iter_mut().enumerate() {
                *a = wv.mul_add(V::load(p.add(j * step)), *a);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            a.clamp(e.lo, e.hi).scatter(d.add(j), e.plane, e.lanes);
        }
    }
    J
}
