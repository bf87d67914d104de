//! Channel-blocked activations (`[c/16][h][w][16]` per image, "NCHW16c") and the
//! 1x1, depthwise and stem convolutions that run on them (AVX-512).
//!
//! In plain NCHW a 1x1 conv is a GEMM vectorised along pixels, and the 49 pixels of
//! a 7x7 plane fill 16-lane vectors badly; a depthwise conv has to gather 16 planes
//! into one pixel-major block and scatter the result back. With the channels of an
//! activation interleaved by 16 both problems go away: a 1x1 conv multiplies a few
//! pixels (each input channel broadcast) by whole vectors of 16 output channels, so
//! any pixel count keeps every lane busy, and a depthwise conv reads and writes the
//! 16-channel pixels directly. EfficientNet-Lite0's blocks are made of just these
//! two layers, so their activations stay blocked from the stem (which reads the
//! NCHW image and writes blocked output) to the head.
//!
//! Channel counts that are not a multiple of 16 are padded; padded lanes hold zeros
//! (their weights and biases are zero), and reads of them are skipped.

use rayon::prelude::*;

use super::{act_bounds, Act, Conv2d};

/// Channels per block: one AVX-512 vector of `f32`.
pub const LANES: usize = 16;

/// Whether this CPU can run the blocked kernels.
pub(crate) fn available() -> bool {
    super::simd::isa() == super::simd::Isa::Avx512
}

/// Whether the CPU can run these kernels at all. Kernels assert this rather than
/// `available`: a test that forces a lower ISA meanwhile changes which path later
/// layers choose, not whether a blocked layer already under way may finish.
pub(crate) fn supported() -> bool {
    super::simd::detected() == super::simd::Isa::Avx512
}

/// Numbers in one image of `c` channels over `hw` pixels, blocked.
pub fn image_len(c: usize, hw: usize) -> usize {
    c.div_ceil(LANES) * LANES * hw
}

/// Output blocks one 1x1 micro-tile computes (64 channels).
const NB: usize = 4;
/// Pixels one 1x1 micro-tile computes at most, by its number of output blocks:
/// 16-24 accumulators.
const PX_FOR: [usize; NB + 1] = [0, 16, 12, 8, 6];
/// Input blocks (of 16 channels) a 1x1 pass sums before moving on: the group's
/// weights for them are 32 KB.
const KC_BLOCKS: usize = 8;
/// Pixels a 1x1 pass covers before the next group of outputs (all of a 7x7
/// plane). Probed with 4/8/12 blocks and 12/24/54 pixels (as tiles of 6) on Lite0's
/// late layers: 8 and 54 were fastest, 5-25% ahead of summing all input channels
/// at once.
const PASS_PX: usize = 54;
/// Output pixels one depthwise micro-tile computes along a row.
const DW_T: usize = 8;

/// Packed weights starting on a 64-byte boundary, so that each 16-float vector the
/// kernels load is one cache line (a `Vec<f32>` is only 16-byte aligned, and a load
/// straddling two lines costs two).
#[derive(Clone, Debug)]
struct Aligned {
    v: Vec<f32>,
    off: usize,
}

impl Aligned {
    fn new(data: &[f32]) -> Aligned {
        let mut v = vec![0.0; data.len() + LANES - 1];
        let off = v.as_ptr().align_offset(64).min(LANES - 1);
        v[off..off + data.len()].copy_from_slice(data);
        Aligned { v, off }
    }

    fn as_ptr(&self) -> *const f32 {
        self.v[self.off..].as_ptr()
    }
}

/// A 1x1 conv's weights for the blocked kernel: for each group of up to `NB` output
/// blocks, `[in_ch][16 * blocks]` (the group's outputs of one input channel
/// contiguous), then the bias padded to whole blocks.
#[derive(Clone, Debug)]
pub(crate) struct Pointwise {
    weights: Aligned,
    bias: Vec<f32>,
}

pub(crate) fn pack_pointwise(conv: &Conv2d) -> Pointwise {
    let g = conv.geom();
    let (ci, co) = (g.in_ch, g.out_ch);
    let cbo = co.div_ceil(LANES);
    let mut weights = Vec::with_capacity(cbo * LANES * ci);
    for ob0 in (0..cbo).step_by(NB) {
        let nb = NB.min(cbo - ob0);
        for i in 0..ci {
            for o in ob0 * LANES..(ob0 + nb) * LANES {
                weights.push(if o < co {
                    conv.weight()[o * ci + i]
                } else {
                    0.0
                });
            }
        }
    }
    let bias = (0..cbo * LANES)
        .map(|o| if o < co { conv.bias_of(o) } else { 0.0 })
        .collect();
    Pointwise {
        weights: Aligned::new(&weights),
        bias,
    }
}

/// Weights of a depthwise conv or a stem, by blocks of 16 outputs: `[co/16][w][16]`
/// where `w` runs over one output's weights (`[ci][kh][kw]`), then the padded bias.
#[derive(Clone, Debug)]
pub(crate) struct ByOutput {
    weights: Aligned,
    bias: Vec<f32>,
}

pub(crate) fn pack_by_output(conv: &Conv2d) -> ByOutput {
    let g = conv.geom();
    let k = g.weights_per_output();
    let cbo = g.out_ch.div_ceil(LANES);
    let mut weights = vec![0.0; cbo * k * LANES];
    for o in 0..g.out_ch {
        for t in 0..k {
            weights[((o / LANES) * k + t) * LANES + o % LANES] = conv.weight()[o * k + t];
        }
    }
    let bias = (0..cbo * LANES)
        .map(|o| if o < g.out_ch { conv.bias_of(o) } else { 0.0 })
        .collect();
    ByOutput {
        weights: Aligned::new(&weights),
        bias,
    }
}

/// Whether the blocked kernels take this layer: 1x1 stride-1 unpadded convs,
/// depthwise convs with square 3x3, 5x5 or 7x7 kernels, stride 1 or 2, no dilation,
/// and stems (`is_stem`).
pub(crate) fn suits(conv: &Conv2d) -> bool {
    let g = conv.geom();
    if is_stem(conv) {
        return true;
    }
    let pointwise = g.groups == 1
        && g.kernel == (1, 1)
        && g.stride == (1, 1)
        && g.dilation == (1, 1)
        && g.pad == super::Pad::default();
    let depthwise = g.is_depthwise()
        && matches!(g.kernel, (3, 3) | (5, 5) | (7, 7))
        && g.stride.0 == g.stride.1
        && g.stride.0 <= 2
        && g.dilation == (1, 1);
    pointwise || depthwise
}

/// A conv on at most 4 input channels (a network's first layer), no groups or
/// dilation: it reads NCHW (the image) and writes blocked output.
pub(crate) fn is_stem(conv: &Conv2d) -> bool {
    let g = conv.geom();
    g.in_ch <= 4 && g.groups == 1 && g.dilation == (1, 1)
}

/// Output pixels of a stem micro-tile along a row, for up to two output blocks.
const STEM_T: usize = 12;

/// A stem (`is_stem`) on NCHW `[n][ci][h][w]` -> blocked `[n][co/16][oh][ow][16]`,
/// bias and activation applied: 16 output channels per vector, each input value
/// broadcast, two output blocks by up to 12 pixels of accumulators.
///
/// # Panics
/// If a slice does not match the shapes, the layer is no stem, or AVX-512 is missing.
pub(crate) fn stem(
    conv: &Conv2d,
    pk: &ByOutput,
    x: &[f32],
    n: usize,
    h: usize,
    w: usize,
    out: &mut [f32],
) {
    let g = conv.geom();
    let (oh, ow) = g.out_hw(h, w);
    assert!(supported() && is_stem(conv));
    assert_eq!(x.len(), n * g.in_ch * h * w, "blocked stem: input");
    assert_eq!(
        out.len(),
        n * image_len(g.out_ch, oh * ow),
        "blocked stem: output"
    );
    let cbo = g.out_ch.div_ceil(LANES);
    // Work items: bands of output rows of one image, all output blocks.
    let band = 8.min(oh);
    let bands = oh.div_ceil(band);
    let o = Shared(out.as_mut_ptr());
    let work = |buf: &mut Vec<f32>, i: usize| {
        let (img, b) = (i / bands, i % bands);
        let rows = b * band..((b + 1) * band).min(oh);
        let xi = &x[img * g.in_ch * h * w..][..g.in_ch * h * w];
        let oi = o.get().wrapping_add(img * cbo * oh * ow * LANES);
        // SAFETY: AVX-512 checked; each work item writes its own rows of one image.
        unsafe { stem_rows(conv, pk, xi, h, w, oh, ow, rows, oi, buf) }
    };
    if super::threads() > 1 && n * bands > 1 {
        (0..n * bands)
            .into_par_iter()
            .for_each_init(Vec::new, |buf, i| work(buf, i));
    } else {
        let mut buf = Vec::new();
        for i in 0..n * bands {
            work(&mut buf, i);
        }
    }
}

/// Output rows `rows` of one image's stem; `out` points at the image's blocked output.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn stem_rows(
    conv: &Conv2d,
    pk: &ByOutput,
    x: &[f32],
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    rows: std::ops::Range<usize>,
    out: *mut f32,
    buf: &mut Vec<f32>,
) {
    let g = conv.geom();
    let (ci, (kh, kw), (sy, sx)) = (g.in_ch, g.kernel, g.stride);
    let cbo = g.out_ch.div_ceil(LANES);
    let wp = (ow - 1) * sx + kw;
    // The padded input rows one output row reads: [ci][ky][wp], zeros outside.
    buf.resize(ci * kh * wp, 0.0);
    let tiles = ow.div_ceil(STEM_T);
    for oy in rows {
        for c in 0..ci {
            for ky in 0..kh {
                let row = &mut buf[(c * kh + ky) * wp..][..wp];
                match (oy * sy + ky).checked_sub(g.pad.top).filter(|&iy| iy < h) {
                    Some(iy) => {
                        let left = g.pad.left.min(wp);
                        let cols = w.min(wp - left);
                        row[..left].fill(0.0);
                        row[left..left + cols].copy_from_slice(&x[(c * h + iy) * w..][..cols]);
                        row[left + cols..].fill(0.0);
                    }
                    None => row.fill(0.0),
                }
            }
        }
        for ob0 in (0..cbo).step_by(2) {
            let nb = 2.min(cbo - ob0);
            for i in 0..tiles {
                let (ox, ox1) = (ow * i / tiles, ow * (i + 1) / tiles);
                let job = StemTile {
                    src: buf.as_ptr().add(ox * sx),
                    wp,
                    taps: (ci, kh, kw, sx),
                    w: pk.weights.as_ptr().add(ob0 * ci * kh * kw * LANES),
                    bias: pk.bias.as_ptr().add(ob0 * LANES),
                    out: out.add((ob0 * oh * ow + oy * ow + ox) * LANES),
                    block: oh * ow * LANES,
                    act: conv.act(),
                };
                macro_rules! go {
                    ($($t:literal)*) => {
                        match (nb, ox1 - ox) {
                            $((1, $t) => job.run::<1, $t>(), (2, $t) => job.run::<2, $t>(),)*
                            _ => unreachable!(),
                        }
                    };
                }
                go!(1 2 3 4 5 6 7 8 9 10 11 12);
            }
        }
    }
}

struct StemTile {
    /// The padded rows at the tile's first column.
    src: *const f32,
    wp: usize,
    /// (input channels, kernel height, kernel width, horizontal stride)
    taps: (usize, usize, usize, usize),
    /// The first output block's packed weights.
    w: *const f32,
    bias: *const f32,
    out: *mut f32,
    /// Numbers between output blocks.
    block: usize,
    act: Act,
}

impl StemTile {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn run<const B: usize, const T: usize>(&self) {
        use std::arch::x86_64::*;
        let (ci, kh, kw, sx) = self.taps;
        let k = ci * kh * kw;
        let mut acc: [[__m512; T]; B] =
            std::array::from_fn(|j| [_mm512_loadu_ps(self.bias.add(j * LANES)); T]);
        for r in 0..ci * kh {
            let row = self.src.add(r * self.wp);
            for kx in 0..kw {
                let tap = r * kw + kx;
                let wv: [__m512; B] =
                    std::array::from_fn(|j| _mm512_loadu_ps(self.w.add((j * k + tap) * LANES)));
                for t in 0..T {
                    let xv = _mm512_set1_ps(*row.add(t * sx + kx));
                    for (a, &wj) in acc.iter_mut().zip(&wv) {
                        a[t] = _mm512_fmadd_ps(wj, xv, a[t]);
                    }
                }
            }
        }
        let (lo, hi) = act_bounds(self.act);
        let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
        for (j, a) in acc.iter().enumerate() {
            for (t, &v) in a.iter().enumerate() {
                _mm512_storeu_ps(self.out.add(j * self.block + t * LANES), clamp(v, lo, hi));
            }
        }
    }
}

/// A raw pointer that may cross to another thread: the kernels below hand each
/// task a disjoint part of one output.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: used only for disjoint writes, see each use.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    /// The pointer (a method, so that closures capture the whole `Shared`).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// NCHW `[n][c][hw]` -> blocked `[n][c/16][hw][16]`, padded lanes zeroed.
///
/// # Panics
/// If a slice does not match the shapes or AVX-512 is missing.
pub fn to_blocked(x: &[f32], n: usize, c: usize, hw: usize, out: &mut [f32]) {
    assert!(supported(), "blocked layout needs AVX-512");
    assert_eq!(x.len(), n * c * hw, "to_blocked: input shape");
    assert_eq!(out.len(), n * image_len(c, hw), "to_blocked: output shape");
    let cb = c.div_ceil(LANES);
    let work = |i: usize, o: &mut [f32]| {
        let (img, b) = (i / cb, i % cb);
        let lanes = LANES.min(c - b * LANES);
        let src = &x[(img * c + b * LANES) * hw..][..lanes * hw];
        // SAFETY: AVX-512 checked above; src holds `lanes` planes of hw, o is hw x 16.
        unsafe { transpose_in(src, lanes, hw, o) }
    };
    if super::threads() > 1 && n * cb > 1 {
        out.par_chunks_mut(hw * LANES)
            .enumerate()
            .for_each(|(i, o)| work(i, o));
    } else {
        for (i, o) in out.chunks_mut(hw * LANES).enumerate() {
            work(i, o);
        }
    }
}

/// Blocked `[n][c/16][hw][16]` -> NCHW `[n][c][hw]`.
///
/// # Panics
/// If a slice does not match the shapes or AVX-512 is missing.
pub fn from_blocked(x: &[f32], n: usize, c: usize, hw: usize, out: &mut [f32]) {
    assert!(supported(), "blocked layout needs AVX-512");
    assert_eq!(x.len(), n * image_len(c, hw), "from_blocked: input shape");
    assert_eq!(out.len(), n * c * hw, "from_blocked: output shape");
    let cb = c.div_ceil(LANES);
    // Output runs of 16 planes (fewer for the last block of an image).
    let mut runs: Vec<&mut [f32]> = Vec::with_capacity(n * cb);
    for img in out.chunks_mut(c * hw) {
        let mut rest = img;
        while !rest.is_empty() {
            let (a, b) = rest.split_at_mut((LANES * hw).min(rest.len()));
            runs.push(a);
            rest = b;
        }
    }
    let work = |i: usize, o: &mut [f32]| {
        let src = &x[i * hw * LANES..][..hw * LANES];
        // SAFETY: AVX-512 checked above; src is hw x 16, o holds o.len()/hw planes.
        unsafe { transpose_out(src, o.len() / hw, hw, o) }
    };
    if super::threads() > 1 && runs.len() > 1 {
        runs.into_par_iter()
            .enumerate()
            .for_each(|(i, o)| work(i, o));
    } else {
        for (i, o) in runs.into_iter().enumerate() {
            work(i, o);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_in(src: &[f32], lanes: usize, hw: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    debug_assert!(src.len() >= lanes * hw && out.len() >= hw * LANES);
    for p0 in (0..hw).step_by(LANES) {
        let cnt = LANES.min(hw - p0);
        let m: __mmask16 = if cnt == LANES { !0 } else { (1u16 << cnt) - 1 };
        let mut r = [_mm512_setzero_ps(); LANES];
        for (l, r) in r.iter_mut().enumerate().take(lanes) {
            *r = _mm512_maskz_loadu_ps(m, src.as_ptr().add(l * hw + p0));
        }
        super::winograd::transpose16(&mut r);
        for (q, r) in r.iter().enumerate().take(cnt) {
            _mm512_storeu_ps(out.as_mut_ptr().add((p0 + q) * LANES), *r);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_out(src: &[f32], lanes: usize, hw: usize, out: &mut [f32]) {
    use std::arch::x86_64::*;
    debug_assert!(src.len() >= hw * LANES && out.len() >= lanes * hw);
    for p0 in (0..hw).step_by(LANES) {
        let cnt = LANES.min(hw - p0);
        let m: __mmask16 = if cnt == LANES { !0 } else { (1u16 << cnt) - 1 };
        let mut r = [_mm512_setzero_ps(); LANES];
        for (q, r) in r.iter_mut().enumerate().take(cnt) {
            *r = _mm512_loadu_ps(src.as_ptr().add((p0 + q) * LANES));
        }
        super::winograd::transpose16(&mut r);
        for (l, r) in r.iter().enumerate().take(lanes) {
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(l * hw + p0), m, *r);
        }
    }
}

/// A 1x1 conv on blocked `[n][ci/16][p][16]` -> `[n][co/16][p][16]`, bias and
/// activation applied; with `residual` (blocked like the output), `then(conv +
/// residual)` instead.
///
/// # Panics
/// If a slice does not match the shapes or AVX-512 is missing.
pub(crate) fn pointwise(
    conv: &Conv2d,
    pk: &Pointwise,
    x: &[f32],
    n: usize,
    p: usize,
    out: &mut [f32],
    residual: Option<(&[f32], Act)>,
) {
    let g = conv.geom();
    assert!(supported(), "blocked layout needs AVX-512");
    assert_eq!(
        x.len(),
        n * image_len(g.in_ch, p),
        "blocked 1x1: input shape"
    );
    assert_eq!(
        out.len(),
        n * image_len(g.out_ch, p),
        "blocked 1x1: output shape"
    );
    if let Some((r, _)) = residual {
        assert_eq!(r.len(), out.len(), "blocked 1x1: residual shape");
    }
    let (act, then) = match residual {
        Some((_, then)) => (conv.act(), then),
        None => (conv.act(), Act::None),
    };
    let job = PwJob {
        pk,
        ci: g.in_ch,
        cbo: g.out_ch.div_ceil(LANES),
        p,
        act,
        then,
    };
    let (in_img, out_img) = (image_len(g.in_ch, p), image_len(g.out_ch, p));
    let threads = super::threads();
    // Addresses as integers, so that the parallel closures may capture them.
    let res_ptr = residual.map(|(r, _)| r.as_ptr() as usize);
    if threads > 1 && n >= threads {
        out.par_chunks_mut(out_img)
            .zip(x.par_chunks(in_img))
            .enumerate()
            .with_max_len(1)
            .for_each(|(i, (o, xi))| {
                let r = res_ptr.map(|r| (r as *const f32).wrapping_add(i * out_img));
                // SAFETY: AVX-512 checked; o, xi and r are one image each.
                unsafe { job.run(xi, o.as_mut_ptr(), r, 0, p) }
            });
    } else if threads > 1 {
        // Few images on several threads: each takes a run of pixel tiles.
        let per = p.div_ceil(threads).next_multiple_of(PX_FOR[NB]);
        for (i, xi) in x.chunks(in_img).enumerate() {
            let o = Shared(out[i * out_img..].as_mut_ptr());
            let r = res_ptr.map(|r| r + i * out_img * 4);
            (0..p.div_ceil(per)).into_par_iter().for_each(|t| {
                let (p0, p1) = (t * per, ((t + 1) * per).min(p));
                // SAFETY: AVX-512 checked; the tasks write disjoint pixel ranges
                // of this image's output.
                unsafe { job.run(xi, o.get(), r.map(|r| r as *const f32), p0, p1) }
            });
        }
    } else {
        for (i, (o, xi)) in out.chunks_mut(out_img).zip(x.chunks(in_img)).enumerate() {
            let r = res_ptr.map(|r| (r as *const f32).wrapping_add(i * out_img));
            // SAFETY: AVX-512 checked; one image each.
            unsafe { job.run(xi, o.as_mut_ptr(), r, 0, p) }
        }
    }
}

struct PwJob<'a> {
    pk: &'a Pointwise,
    ci: usize,
    cbo: usize,
    p: usize,
    act: Act,
    then: Act,
}

impl PwJob<'_> {
    /// Pixels `p0..p1` of one image; `out` and `res` point at the image's blocked
    /// output and residual.
    ///
    /// # Safety
    /// AVX-512F; `x` one blocked image of `ci` channels; `out` (and `res`) valid
    /// for one blocked image of `cbo` blocks over `p` pixels.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run(&self, x: &[f32], out: *mut f32, res: Option<*const f32>, p0: usize, p1: usize) {
        let stride = self.p * LANES;
        let cbi = self.ci.div_ceil(LANES);
        // Passes of up to PASS_PX pixels, of equal size as far as possible.
        let passes = (p1 - p0).div_ceil(PASS_PX);
        let pass_edge = |i: usize| p0 + (p1 - p0) * i / passes;
        // Input channels in chunks, so that a group's weights for the chunk and the
        // chunk of a pass's input stay in L1 while the tiles use them; partial sums
        // wait in the output.
        for k0 in (0..cbi).step_by(KC_BLOCKS) {
            let k1 = (k0 + KC_BLOCKS).min(cbi);
            for pass in 0..passes {
                let (a, b) = (pass_edge(pass), pass_edge(pass + 1));
                let mut w = self.pk.weights.as_ptr();
                for ob0 in (0..self.cbo).step_by(NB) {
                    let nb = NB.min(self.cbo - ob0);
                    let t = Tile {
                        w: w.add(k0 * LANES * nb * LANES),
                        bias: self.pk.bias.as_ptr().add(ob0 * LANES),
                        x: x.as_ptr(),
                        stride,
                        ci: self.ci,
                        k0,
                        k1,
                        first: k0 == 0,
                        last: k1 == cbi,
                        out: out.add(ob0 * stride),
                        res: res.map(|r| r.add(ob0 * stride)),
                        act: self.act,
                        then: self.then,
                    };
                    // Tiles of equal width as far as possible (49 pixels: 4 x 6 +
                    // 5 x 5, not 8 x 6 + 1), since a tile streams the weights whatever
                    // its width; groups of fewer blocks take wider tiles, so that
                    // there are always about 24 accumulators.
                    let tiles = (b - a).div_ceil(PX_FOR[nb]);
                    let edge = |i: usize| a + (b - a) * i / tiles;
                    for i in 0..tiles {
                        let (q, px) = (edge(i), edge(i + 1) - edge(i));
                        macro_rules! go {
                            ($($nb:literal: ($($px:literal)*))*) => {
                                match nb {
                                    $($nb => match px {
                                        $($px => t.tile::<$nb, $px>(q),)*
                                        _ => unreachable!(),
                                    },)*
                                    _ => unreachable!(),
                                }
                            };
                        }
                        go!(
                            1: (1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
                            2: (1 2 3 4 5 6 7 8 9 10 11 12)
                            3: (1 2 3 4 5 6 7 8)
                            4: (1 2 3 4 5 6)
                        );
                    }
                    w = w.add(nb * LANES * self.ci);
                }
            }
        }
    }
}

/// One group of output blocks of a 1x1 conv, for one image.
struct Tile {
    /// The group's packed weights from input channel `16 * k0`, `[ci][16 * nb]`.
    w: *const f32,
    bias: *const f32,
    /// The image's blocked input.
    x: *const f32,
    /// Numbers between consecutive blocks of the input and the output.
    stride: usize,
    ci: usize,
    /// Input blocks `k0..k1` are summed in this pass.
    k0: usize,
    k1: usize,
    /// Whether the sum starts here (from the bias) rather than from the output, and
    /// whether it ends here (epilogue applied).
    first: bool,
    last: bool,
    /// The group's first output block.
    out: *mut f32,
    res: Option<*const f32>,
    act: Act,
    then: Act,
}

impl Tile {
    /// Outputs of `B` blocks at pixels `q..q + P`: `B * P` accumulators, each input
    /// channel broadcast once per pixel and multiplied by `B` weight vectors.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn tile<const B: usize, const P: usize>(&self, q: usize) {
        use std::arch::x86_64::*;
        let mut acc = [[_mm512_setzero_ps(); P]; B];
        for (j, a) in acc.iter_mut().enumerate() {
            for (k, a) in a.iter_mut().enumerate() {
                *a = if self.first {
                    _mm512_loadu_ps(self.bias.add(j * LANES))
                } else {
                    _mm512_loadu_ps(self.out.add(j * self.stride + (q + k) * LANES))
                };
            }
        }
        let mut w = self.w;
        let full = self.ci / LANES;
        for cb in self.k0..self.k1 {
            let xb = self.x.add(cb * self.stride + q * LANES);
            let lanes = if cb < full { LANES } else { self.ci % LANES };
            let step = |l: usize, w: *const f32, acc: &mut [[__m512; P]; B]| {
                let wv: [__m512; B] = std::array::from_fn(|j| _mm512_loadu_ps(w.add(j * LANES)));
                for k in 0..P {
                    let xv = _mm512_set1_ps(*xb.add(k * LANES + l));
                    for (a, &wj) in acc.iter_mut().zip(&wv) {
                        a[k] = _mm512_fmadd_ps(wj, xv, a[k]);
                    }
                }
            };
            if lanes == LANES {
                for l in 0..LANES {
                    step(l, w.add(l * B * LANES), &mut acc);
                }
            } else {
                for l in 0..lanes {
                    step(l, w.add(l * B * LANES), &mut acc);
                }
            }
            w = w.add(lanes * B * LANES);
        }
        let (lo, hi) = act_bounds(self.act);
        let (tlo, thi) = act_bounds(self.then);
        let (lo, hi, tlo, thi) = (
            _mm512_set1_ps(lo),
            _mm512_set1_ps(hi),
            _mm512_set1_ps(tlo),
            _mm512_set1_ps(thi),
        );
        for (j, a) in acc.iter().enumerate() {
            for (k, &v) in a.iter().enumerate() {
                let off = j * self.stride + (q + k) * LANES;
                let v = if !self.last {
                    v
                } else if let Some(r) = self.res {
                    let v = clamp(v, lo, hi);
                    clamp(_mm512_add_ps(v, _mm512_loadu_ps(r.add(off))), tlo, thi)
                } else {
                    clamp(v, lo, hi)
                };
                _mm512_storeu_ps(self.out.add(off), v);
            }
        }
    }
}

/// Lane-wise clamp as two compare-free max/min, NaN kept (as `super::clamp`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn clamp(
    v: std::arch::x86_64::__m512,
    lo: std::arch::x86_64::__m512,
    hi: std::arch::x86_64::__m512,
) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // max/min return the second operand when either is NaN: v goes second.
    _mm512_min_ps(hi, _mm512_max_ps(lo, v))
}

/// A depthwise conv on blocked `[n][c/16][h][w][16]` -> `[n][c/16][oh][ow][16]`,
/// bias and activation applied.
///
/// # Panics
/// If a slice does not match the shapes, the layer is not one `suits` accepts, or
/// AVX-512 is missing.
#[allow(clippy::too_many_arguments)]
pub(crate) fn depthwise(
    conv: &Conv2d,
    pk: &ByOutput,
    x: &[f32],
    n: usize,
    h: usize,
    w: usize,
    out: &mut [f32],
) {
    let g = conv.geom();
    let (oh, ow) = g.out_hw(h, w);
    assert!(supported() && suits(conv) && g.is_depthwise());
    assert_eq!(
        x.len(),
        n * image_len(g.in_ch, h * w),
        "blocked depthwise: input"
    );
    assert_eq!(
        out.len(),
        n * image_len(g.in_ch, oh * ow),
        "blocked depthwise: output"
    );
    let job = DwJob {
        pk,
        k: g.kernel.0,
        s: g.stride.0,
        pad_top: g.pad.top,
        pad_left: g.pad.left,
        h,
        w,
        oh,
        ow,
        taps: g.kernel.0 * g.kernel.0,
        act: conv.act(),
        cb: g.in_ch.div_ceil(LANES),
    };
    let (bin, bout) = (h * w * LANES, oh * ow * LANES);
    let work = |buf: &mut Vec<f32>, i: usize, o: &mut [f32]| {
        // SAFETY: AVX-512 checked; block i of the input and output.
        unsafe { job.block(&x[i * bin..][..bin], i % job.cb, o, buf) }
    };
    if super::threads() > 1 && out.len() > bout {
        out.par_chunks_mut(bout)
            .enumerate()
            .for_each_init(Vec::new, |buf, (i, o)| work(buf, i, o));
    } else {
        let mut buf = Vec::new();
        for (i, o) in out.chunks_mut(bout).enumerate() {
            work(&mut buf, i, o);
        }
    }
}

struct DwJob<'a> {
    pk: &'a ByOutput,
    k: usize,
    s: usize,
    pad_top: usize,
    pad_left: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    taps: usize,
    act: Act,
    cb: usize,
}

impl DwJob<'_> {
    /// One 16-channel block (`b` within its image), output row by output row in
    /// tiles of `DW_T` pixels.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn block(&self, x: &[f32], b: usize, out: &mut [f32], buf: &mut Vec<f32>) {
        let (k, s) = (self.k, self.s);
        let wp = (self.ow - 1) * s + k;
        // A ring of k padded rows, filled as the output rows move down: each input
        // row is copied once, into a buffer that stays in L1 (a whole padded copy of
        // a 112x112 block is 800 KB, written and read again).
        buf.resize(k * wp * LANES + LANES, 0.0);
        let base = buf.as_mut_ptr();
        let ring = base.add(base.align_offset(64));
        let slot = |py: usize| ring.add(py % k * wp * LANES);
        let mut filled = 0;
        let wt = self.pk.weights.as_ptr().add(b * self.taps * LANES);
        let bias = self.pk.bias.as_ptr().add(b * LANES);
        for oy in 0..self.oh {
            // Padded rows up to this output row's last tap: zeros above and below
            // the input, its pixels between zero margins.
            while filled < oy * s + k {
                let row = std::slice::from_raw_parts_mut(slot(filled), wp * LANES);
                match filled.checked_sub(self.pad_top).filter(|&iy| iy < self.h) {
                    Some(iy) => {
                        let left = self.pad_left.min(wp);
                        let cols = self.w.min(wp - left);
                        row[..left * LANES].fill(0.0);
                        row[left * LANES..(left + cols) * LANES]
                            .copy_from_slice(&x[iy * self.w * LANES..][..cols * LANES]);
                        row[(left + cols) * LANES..].fill(0.0);
                    }
                    None => row.fill(0.0),
                }
                filled += 1;
            }
            let rows: [*const f32; 7] =
                std::array::from_fn(|ky| slot(oy * s + ky.min(k - 1)).cast_const());
            let dst = out.as_mut_ptr().add(oy * self.ow * LANES);
            let mut ox = 0;
            while ox < self.ow {
                let t = DW_T.min(self.ow - ox);
                let col = ox * s * LANES;
                let d = dst.add(ox * LANES);
                macro_rules! go {
                    ($(($k:literal, $s:literal))*; $ts:tt) => {
                        match (k, s) {
                            $(($k, $s) => go!(@t $k $s $ts),)*
                            _ => unreachable!("blocked depthwise: kernel {k} stride {s}"),
                        }
                    };
                    (@t $k:literal $s:literal ($($t:literal)*)) => {
                        match t {
                            $($t => dw_tile::<$k, $s, $t>(&rows, col, wt, bias, d, self.act),)*
                            _ => unreachable!(),
                        }
                    };
                }
                go!((3, 1) (3, 2) (5, 1) (5, 2) (7, 1) (7, 2); (1 2 3 4 5 6 7 8));
                ox += t;
            }
        }
    }
}

/// `T` output pixels of one row: `rows[ky]` is the padded input row of tap row
/// `ky`, `col` the offset of the tile's first tap in it. Each input pixel of a
/// kernel row is loaded once and used by every output it reaches.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn dw_tile<const K: usize, const S: usize, const T: usize>(
    rows: &[*const f32; 7],
    col: usize,
    wt: *const f32,
    bias: *const f32,
    dst: *mut f32,
    act: Act,
) {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_loadu_ps(bias); T];
    for (ky, &row) in rows.iter().enumerate().take(K) {
        let row = row.add(col);
        let wv: [__m512; K] =
            std::array::from_fn(|kx| _mm512_loadu_ps(wt.add((ky * K + kx) * LANES)));
        for (kx, &wk) in wv.iter().enumerate() {
            for (t, a) in acc.iter_mut().enumerate() {
                // The same input pixel serves several (t, kx): with the loops
                // unrolled each is loaded once.
                *a = _mm512_fmadd_ps(wk, _mm512_load_ps(row.add((t * S + kx) * LANES)), *a);
            }
        }
    }
    let (lo, hi) = act_bounds(act);
    let (lo, hi) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    for (t, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(dst.add(t * LANES), clamp(*a, lo, hi));
    }
}

// Off x86-64 `available()` is false and nothing here is called.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn transpose_in(_: &[f32], _: usize, _: usize, _: &mut [f32]) {
    unreachable!("available() is false off x86-64")
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn transpose_out(_: &[f32], _: usize, _: usize, _: &mut [f32]) {
    unreachable!("available() is false off x86-64")
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn stem_rows(
    _: &Conv2d,
    _: &ByOutput,
    _: &[f32],
    _: usize,
    _: usize,
    _: usize,
    _: usize,
    _: std::ops::Range<usize>,
    _: *mut f32,
    _: &mut Vec<f32>,
) {
    unreachable!("available() is false off x86-64")
}

#[cfg(not(target_arch = "x86_64"))]
impl PwJob<'_> {
    unsafe fn run(&self, _: &[f32], _: *mut f32, _: Option<*const f32>, _: usize, _: usize) {
        unreachable!("available() is false off x86-64")
    }
}

#[cfg(not(target_arch = "x86_64"))]
impl DwJob<'_> {
    unsafe fn block(&self, _: &[f32], _: usize, _: &mut [f32], _: &mut Vec<f32>) {
        unreachable!("available() is false off x86-64")
    }
}
