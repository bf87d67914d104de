//! Channel-blocked activations (`[c/16][h][w][16]` per image, "NCHW16c") and the
//! 1x1, depthwise and stem convolutions that run on them, written once over
//! [`V16`] (one AVX-512 register, two AVX2 or four NEON registers) with micro-tiles
//! sized by each ISA's `V16::ACC`.
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

use super::vector::{dispatch, load_each, Apart, Kernel, V16};
use super::{act_bounds, Act, Conv2d};

/// Channels per block: one [`V16`].
pub const LANES: usize = 16;

/// Numbers in one image of `c` channels over `hw` pixels, blocked.
pub fn image_len(c: usize, hw: usize) -> usize {
    c.div_ceil(LANES) * LANES * hw
}

/// Output blocks whose 1x1 weights are packed together (64 channels): the most one
/// micro-tile computes (AVX-512's).
const NB: usize = 4;

/// Output blocks one 1x1 micro-tile computes at most on an ISA with `acc`
/// accumulators, and the pixels it computes for each number of blocks: 16-24
/// accumulators on AVX-512; on AVX2 one block by 6 pixels (12 of its 16 registers,
/// the weights and a broadcast in the rest: 2 x 3 spilled).
fn pw_tiles(acc: usize) -> (usize, [usize; NB + 1]) {
    match acc {
        24.. => (4, [0, 16, 12, 8, 6]),
        // At most 6 pixels: the tiles compiled for ISAs below AVX-512.
        _ => (1, [0, acc.clamp(1, 6), 0, 0, 0]),
    }
}
/// Input blocks (of 16 channels) a 1x1 pass sums before moving on: the group's
/// weights for them are 32 KB.
const KC_BLOCKS: usize = 8;
/// Pixels a 1x1 pass covers before the next group of outputs (all of a 7x7
/// plane). Probed with 4/8/12 blocks and 12/24/54 pixels (as tiles of 6) on Lite0's
/// late layers: 8 and 54 were fastest, 5-25% ahead of summing all input channels
/// at once.
const PASS_PX: usize = 54;
/// Output pixels one depthwise micro-tile computes along a row, at most.
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

/// Output pixels of a depthwise micro-tile on an ISA with `acc` accumulators: 8
/// where 8 fit, else at most the 6 compiled for ISAs below AVX-512.
fn dw_tile_px(acc: usize) -> usize {
    if acc >= DW_T {
        DW_T
    } else {
        acc.clamp(1, 6)
    }
}

/// Output pixels of a stem micro-tile along a row, at most (two blocks of 12 on
/// AVX-512).
const STEM_T: usize = 12;

/// Output blocks and pixels of a stem micro-tile on an ISA with `acc` accumulators.
fn stem_tile(acc: usize) -> (usize, usize) {
    if acc >= 24 {
        (2, STEM_T)
    } else {
        // At most 6 pixels: the tiles compiled for ISAs below AVX-512.
        (1, acc.clamp(1, 6))
    }
}

/// A stem (`is_stem`) on NCHW `[n][ci][h][w]` -> blocked `[n][co/16][oh][ow][16]`,
/// bias and activation applied: 16 output channels per vector, each input value
/// broadcast, two output blocks by up to 12 pixels of accumulators.
///
/// # Panics
/// If a slice does not match the shapes or the layer is no stem.
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
    assert!(is_stem(conv), "blocked stem: not a stem");
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
        let out = o.get().wrapping_add(img * cbo * oh * ow * LANES);
        // Each work item writes its own rows of one image.
        dispatch(StemRows {
            conv,
            pk,
            x: xi,
            h,
            w,
            oh,
            ow,
            rows,
            out,
            buf,
        })
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

/// Output rows `rows` of one image's stem; `out` points at the image's blocked
/// output, whose rows `rows` are this job's alone.
struct StemRows<'a> {
    conv: &'a Conv2d,
    pk: &'a ByOutput,
    x: &'a [f32],
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    rows: std::ops::Range<usize>,
    out: *mut f32,
    buf: &'a mut Vec<f32>,
}

impl Kernel for StemRows<'_> {
    type Out = ();
    #[inline(always)]
    fn run<V: V16>(self) {
        let StemRows {
            conv,
            pk,
            x,
            h,
            w,
            oh,
            ow,
            rows,
            out,
            buf,
        } = self;
        let g = conv.geom();
        let (ci, (kh, kw), (sy, sx)) = (g.in_ch, g.kernel, g.stride);
        let cbo = g.out_ch.div_ceil(LANES);
        let wp = (ow - 1) * sx + kw;
        // The padded input rows one output row reads: [ci][ky][wp], zeros outside.
        buf.resize(ci * kh * wp, 0.0);
        let (bmax, tmax) = stem_tile(V::ACC);
        let tiles = ow.div_ceil(tmax);
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
            for ob0 in (0..cbo).step_by(bmax) {
                let nb = bmax.min(cbo - ob0);
                for i in 0..tiles {
                    let (ox, ox1) = (ow * i / tiles, ow * (i + 1) / tiles);
                    // SAFETY: the offsets stay inside the padded rows, the packed
                    // weights and this image's output (rows `oy`, columns ox..ox1).
                    let job = unsafe {
                        StemTile {
                            src: buf.as_ptr().add(ox * sx),
                            wp,
                            taps: (ci, kh, kw, sx),
                            w: pk.weights.as_ptr().add(ob0 * ci * kh * kw * LANES),
                            bias: pk.bias.as_ptr().add(ob0 * LANES),
                            out: out.add((ob0 * oh * ow + oy * ow + ox) * LANES),
                            block: oh * ow * LANES,
                            act: conv.act(),
                        }
                    };
                    macro_rules! go {
                        ($($t:literal)*) => {
                            match (nb, ox1 - ox) {
                                $((1, $t) => V::apart(StemCall::<1, $t>(&job)),
                                  (2, $t) => V::apart(StemCall::<2, $t>(&job)),)*
                                _ => unreachable!(),
                            }
                        };
                    }
                    if V::ACC >= 24 {
                        go!(1 2 3 4 5 6 7 8 9 10 11 12)
                    } else {
                        go!(1 2 3 4 5 6)
                    }
                }
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

/// `StemTile::run::<V, B, T>` as a kernel of its own (see `V16::apart`).
struct StemCall<'a, const B: usize, const T: usize>(&'a StemTile);

impl<V: V16, const B: usize, const T: usize> Apart<V> for StemCall<'_, B, T> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        // SAFETY: as `StemRows` makes the tile.
        unsafe { self.0.run::<V, B, T>() }
    }
}

impl StemTile {
    /// # Safety
    /// The pointers cover what the tile reads and writes (see `StemRows`).
    #[inline(always)]
    unsafe fn run<V: V16, const B: usize, const T: usize>(&self) {
        let (ci, kh, kw, sx) = self.taps;
        let k = ci * kh * kw;
        // SAFETY (the loads and stores): inside the tile's rows, weights and output.
        unsafe {
            let bias: [V; B] = load_each(self.bias, LANES);
            let mut acc = [[V::zero(); T]; B];
            for (a, &b) in acc.iter_mut().zip(&bias) {
                *a = [b; T];
            }
            for r in 0..ci * kh {
                let row = self.src.add(r * self.wp);
                for kx in 0..kw {
                    let tap = r * kw + kx;
                    let wv: [V; B] = load_each(self.w.add(tap * LANES), k * LANES);
                    for t in 0..T {
                        let xv = V::splat(*row.add(t * sx + kx));
                        for (a, &wj) in acc.iter_mut().zip(&wv) {
                            a[t] = wj.mul_add(xv, a[t]);
                        }
                    }
                }
            }
            let (lo, hi) = act_bounds(self.act);
            let (lo, hi) = (V::splat(lo), V::splat(hi));
            for (j, a) in acc.iter().enumerate() {
                for (t, &v) in a.iter().enumerate() {
                    v.clamp(lo, hi)
                        .store(self.out.add(j * self.block + t * LANES));
                }
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
/// If a slice does not match the shapes.
pub fn to_blocked(x: &[f32], n: usize, c: usize, hw: usize, out: &mut [f32]) {
    assert_eq!(x.len(), n * c * hw, "to_blocked: input shape");
    assert_eq!(out.len(), n * image_len(c, hw), "to_blocked: output shape");
    let cb = c.div_ceil(LANES);
    let work = |i: usize, o: &mut [f32]| {
        let (img, b) = (i / cb, i % cb);
        let lanes = LANES.min(c - b * LANES);
        let src = &x[(img * c + b * LANES) * hw..][..lanes * hw];
        dispatch(Transpose {
            into_blocks: true,
            planes: lanes,
            hw,
            src: src.as_ptr(),
            dst: o.as_mut_ptr(),
        })
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
/// If a slice does not match the shapes.
pub fn from_blocked(x: &[f32], n: usize, c: usize, hw: usize, out: &mut [f32]) {
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
        dispatch(Transpose {
            into_blocks: false,
            planes: o.len() / hw,
            hw,
            src: src.as_ptr(),
            dst: o.as_mut_ptr(),
        })
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

/// One block of 16 channels between NCHW and blocked: `planes` planes of `hw`
/// pixels (at `src` going in, at `dst` coming out) and `hw` pixels of 16 lanes.
/// Built from slices of those sizes by `to_blocked` and `from_blocked`.
struct Transpose {
    into_blocks: bool,
    planes: usize,
    hw: usize,
    src: *const f32,
    dst: *mut f32,
}

impl Kernel for Transpose {
    type Out = ();
    #[inline(always)]
    fn run<V: V16>(self) {
        let (planes, hw) = (self.planes, self.hw);
        debug_assert!(planes <= LANES);
        for p0 in (0..hw).step_by(LANES) {
            let cnt = LANES.min(hw - p0);
            let mut r = [V::zero(); LANES];
            // SAFETY (loads and stores): lanes below `cnt` of planes below `planes`
            // lie inside the planes; pixels below `cnt` inside the blocks.
            unsafe {
                if self.into_blocks {
                    for (l, r) in r.iter_mut().enumerate().take(planes) {
                        *r = V::load_lanes(self.src.add(l * hw + p0), 0, cnt);
                    }
                    V::transpose(&mut r);
                    for (q, r) in r.iter().enumerate().take(cnt) {
                        r.store(self.dst.add((p0 + q) * LANES));
                    }
                } else {
                    for (q, r) in r.iter_mut().enumerate().take(cnt) {
                        *r = V::load(self.src.add((p0 + q) * LANES));
                    }
                    V::transpose(&mut r);
                    for (l, r) in r.iter().enumerate().take(planes) {
                        r.store_lanes(self.dst.add(l * hw + p0), 0, cnt);
                    }
                }
            }
        }
    }
}

/// A 1x1 conv on blocked `[n][ci/16][p][16]` -> `[n][co/16][p][16]`, bias and
/// activation applied; with `residual` (blocked like the output), `then(conv +
/// residual)` instead.
///
/// # Panics
/// If a slice does not match the shapes.
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
        // Finding the live channels reads a pass's input once; a tile of each output
        // block reads it again: with fewer than 4 blocks (Lite0's first layers, 16-40
        // channels, whose inputs are also less sparse) the search cost more than the
        // skipping saved.
        skip: conv.sparse_input() && g.out_ch.div_ceil(LANES) >= 4,
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
                // o, xi and r are one image each.
                job.run(xi, o.as_mut_ptr(), r, 0, p)
            });
    } else if threads > 1 {
        // Few images on several threads: each takes a run of pixel tiles.
        // (6: a multiple of every ISA's widest tile for 4 and 2 blocks.)
        let per = p.div_ceil(threads).next_multiple_of(6);
        for (i, xi) in x.chunks(in_img).enumerate() {
            let o = Shared(out[i * out_img..].as_mut_ptr());
            let r = res_ptr.map(|r| r + i * out_img * 4);
            (0..p.div_ceil(per)).into_par_iter().for_each(|t| {
                let (p0, p1) = (t * per, ((t + 1) * per).min(p));
                // The tasks write disjoint pixel ranges of this image's output.
                job.run(xi, o.get(), r.map(|r| r as *const f32), p0, p1)
            });
        }
    } else {
        for (i, (o, xi)) in out.chunks_mut(out_img).zip(x.chunks(in_img)).enumerate() {
            let r = res_ptr.map(|r| (r as *const f32).wrapping_add(i * out_img));
            // One image each.
            job.run(xi, o.as_mut_ptr(), r, 0, p)
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
    skip: bool,
}

impl PwJob<'_> {
    /// Pixels `p0..p1` of one image; `out` and `res` point at the image's blocked
    /// output and residual, valid for one blocked image of `cbo` blocks over `p`
    /// pixels, whose pixels `p0..p1` are this call's alone; `x` is one blocked
    /// image of `ci` channels.
    fn run(&self, x: &[f32], out: *mut f32, res: Option<*const f32>, p0: usize, p1: usize) {
        dispatch(PwRun {
            job: self,
            x,
            out,
            res,
            p0,
            p1,
        })
    }
}

struct PwRun<'a> {
    job: &'a PwJob<'a>,
    x: &'a [f32],
    out: *mut f32,
    res: Option<*const f32>,
    p0: usize,
    p1: usize,
}

impl Kernel for PwRun<'_> {
    type Out = ();
    #[inline(always)]
    fn run<V: V16>(self) {
        let PwRun {
            job,
            x,
            out,
            res,
            p0,
            p1,
        } = self;
        let (bmax, px_for) = pw_tiles(V::ACC);
        let stride = job.p * LANES;
        let mut rows = [(0usize, 0usize); KC_BLOCKS * LANES];
        let (mut scan, mut dense_run) = (job.skip, 0);
        let cbi = job.ci.div_ceil(LANES);
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
                let n = if scan {
                    // SAFETY: the pass's pixels of blocks k0..k1 lie inside `x`.
                    unsafe {
                        live_channels::<V>(x.as_ptr(), stride, job.ci, k0, k1, a, b, &mut rows)
                    }
                } else {
                    0
                };
                // Worth its indirection when an eighth of the channels or more are out.
                let all = (k1 * LANES).min(job.ci) - k0 * LANES;
                let live =
                    (scan && n * 8 <= all * 7).then(|| &rows[..n] as *const [(usize, usize)]);
                // Two passes in a row with next to nothing to skip: no more searching.
                dense_run = if scan && live.is_none() {
                    dense_run + 1
                } else {
                    0
                };
                scan &= dense_run < 2;
                let mut w = job.pk.weights.as_ptr();
                for ob0 in (0..job.cbo).step_by(NB) {
                    // The group's weights are packed for nb blocks; a tile takes up
                    // to bmax of them.
                    let nb = NB.min(job.cbo - ob0);
                    for sb in (0..nb).step_by(bmax) {
                        let tb = bmax.min(nb - sb);
                        // SAFETY: offsets inside the packed weights, the bias and
                        // the image's output and residual.
                        let t = unsafe {
                            Tile {
                                w: w.add(k0 * LANES * nb * LANES + sb * LANES),
                                pitch: nb * LANES,
                                bias: job.pk.bias.as_ptr().add((ob0 + sb) * LANES),
                                x: x.as_ptr(),
                                stride,
                                ci: job.ci,
                                k0,
                                k1,
                                first: k0 == 0,
                                last: k1 == cbi,
                                out: out.add((ob0 + sb) * stride),
                                res: res.map(|r| r.add((ob0 + sb) * stride)),
                                act: job.act,
                                then: job.then,
                                live,
                            }
                        };
                        // Tiles of equal width as far as possible (49 pixels: 4 x 6
                        // + 5 x 5, not 8 x 6 + 1), since a tile streams the weights
                        // whatever its width; tiles of fewer blocks are wider, so
                        // that the accumulators fill the registers.
                        let tiles = (b - a).div_ceil(px_for[tb]);
                        let edge = |i: usize| a + (b - a) * i / tiles;
                        for i in 0..tiles {
                            let (q, px) = (edge(i), edge(i + 1) - edge(i));
                            macro_rules! go {
                                ($($nb:literal: ($($px:literal)*))*) => {
                                    match tb {
                                        $($nb => match px {
                                            $($px => V::apart(PwTile::<$nb, $px> { t: &t, q }),)*
                                            _ => unreachable!(),
                                        },)*
                                        _ => unreachable!(),
                                    }
                                };
                            }
                            // Pixels q..q+px lie inside this call's range. (Only
                            // the tiles this ISA takes are compiled for it.)
                            if V::ACC >= 24 {
                                go!(
                                    1: (1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16)
                                    2: (1 2 3 4 5 6 7 8 9 10 11 12)
                                    3: (1 2 3 4 5 6 7 8)
                                    4: (1 2 3 4 5 6)
                                )
                            } else {
                                go!(1: (1 2 3 4 5 6))
                            }
                        }
                    }
                    w = unsafe { w.add(nb * LANES * job.ci) };
                }
            }
        }
    }
}

/// `Tile::tile::<V, B, P>(q)` as a kernel of its own (see `V16::apart`); `q..q + P`
/// inside the image.
struct PwTile<'a, const B: usize, const P: usize> {
    t: &'a Tile,
    q: usize,
}

impl<V: V16, const B: usize, const P: usize> Apart<V> for PwTile<'_, B, P> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        // SAFETY: as `PwRun` makes the tile and picks q.
        unsafe { self.t.tile::<V, B, P>(self.q) }
    }
}

/// One group of output blocks of a 1x1 conv, for one image.
struct Tile {
    /// The tile's first output block's packed weights from input channel `16 * k0`
    /// (the group's are `[ci][16 * nb]`).
    w: *const f32,
    /// Numbers between one input channel's weights and the next one's (`16 * nb`).
    pitch: usize,
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
    /// The input channels to sum, where some are left out (`live_channels`).
    live: Option<*const [(usize, usize)]>,
}

impl Tile {
    /// Outputs of `B` blocks at pixels `q..q + P`: `B * P` accumulators, each input
    /// channel broadcast once per pixel and multiplied by `B` weight vectors.
    ///
    /// # Safety
    /// Pixels `q..q + P` inside the image; the pointers as `PwRun` makes them.
    #[inline(always)]
    unsafe fn tile<V: V16, const B: usize, const P: usize>(&self, q: usize) {
        // SAFETY (loads and stores): inside the weights, the input blocks k0..k1
        // and the output and residual at pixels q..q + P.
        unsafe {
            let mut acc = [[V::zero(); P]; B];
            for (j, a) in acc.iter_mut().enumerate() {
                for (k, a) in a.iter_mut().enumerate() {
                    *a = if self.first {
                        V::load(self.bias.add(j * LANES))
                    } else {
                        V::load(self.out.add(j * self.stride + (q + k) * LANES))
                    };
                }
            }
            if let Some(live) = self.live {
                // Only the channels some pixel of the pass has nonzero.
                let xq = self.x.add(q * LANES);
                for &(xo, row) in &*live {
                    pw_step(0, xq.add(xo), self.w.add(row * self.pitch), &mut acc);
                }
            }
            let mut w = self.w;
            let full = self.ci / LANES;
            let dense = if self.live.is_some() {
                self.k0..self.k0
            } else {
                self.k0..self.k1
            };
            for cb in dense {
                let xb = self.x.add(cb * self.stride + q * LANES);
                let lanes = if cb < full { LANES } else { self.ci % LANES };
                if lanes == LANES {
                    // A constant trip count for whole blocks, so the loop unrolls.
                    for l in 0..LANES {
                        pw_step(l, xb, w.add(l * self.pitch), &mut acc);
                    }
                } else {
                    for l in 0..lanes {
                        pw_step(l, xb, w.add(l * self.pitch), &mut acc);
                    }
                }
                w = w.add(lanes * self.pitch);
            }
            let (lo, hi) = act_bounds(self.act);
            let (tlo, thi) = act_bounds(self.then);
            let (lo, hi, tlo, thi) = (V::splat(lo), V::splat(hi), V::splat(tlo), V::splat(thi));
            for (j, a) in acc.iter().enumerate() {
                for (k, &v) in a.iter().enumerate() {
                    let off = j * self.stride + (q + k) * LANES;
                    let v = if !self.last {
                        v
                    } else if let Some(r) = self.res {
                        v.clamp(lo, hi).add(V::load(r.add(off))).clamp(tlo, thi)
                    } else {
                        v.clamp(lo, hi)
                    };
                    v.store(self.out.add(off));
                }
            }
        }
    }
}

/// The input channels of blocks `k0..k1` that are nonzero at one of pixels `a..b`
/// at least, into `rows` as (offset of the channel's pixel 0 from the image's input,
/// its row in the packed weights from block `k0`); returns how many. A channel
/// that is zero over the pass adds +-0 to each sum there: leaving it out changes
/// nothing (with finite weights; at most the sign of a sum that is exactly zero).
///
/// # Safety
/// Pixels `a..b` of blocks `k0..k1` readable from `x` (blocks `stride` apart).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn live_channels<V: V16>(
    x: *const f32,
    stride: usize,
    ci: usize,
    k0: usize,
    k1: usize,
    a: usize,
    b: usize,
    rows: &mut [(usize, usize); KC_BLOCKS * LANES],
) -> usize {
    let mut n = 0;
    for cb in k0..k1 {
        let lanes = (ci - cb * LANES).min(LANES);
        // SAFETY: by the contract.
        let xb = unsafe { x.add(cb * stride) };
        let mut any = V::zero();
        for q in a..b {
            // SAFETY: by the contract.
            any = any.or_bits(unsafe { V::load(xb.add(q * LANES)) });
        }
        let mut m = any.nonzero_lanes() & ((1u32 << lanes) - 1);
        while m != 0 {
            let l = m.trailing_zeros() as usize;
            m &= m - 1;
            rows[n] = (cb * stride + l, (cb - k0) * LANES + l);
            n += 1;
        }
    }
    n
}

/// One input channel (lane `l` of the block at `xb`) into a 1x1 tile's
/// accumulators: its `B` weight vectors at `w` times each pixel's value.
///
/// # Safety
/// `w` holds `B` vectors; `xb` `P` pixels of 16 lanes.
#[inline(always)]
unsafe fn pw_step<V: V16, const B: usize, const P: usize>(
    l: usize,
    xb: *const f32,
    w: *const f32,
    acc: &mut [[V; P]; B],
) {
    // SAFETY: by the contract.
    unsafe {
        let wv: [V; B] = load_each(w, LANES);
        for k in 0..P {
            let xv = V::splat(*xb.add(k * LANES + l));
            for (a, &wj) in acc.iter_mut().zip(&wv) {
                a[k] = wj.mul_add(xv, a[k]);
            }
        }
    }
}

/// A depthwise conv on blocked `[n][c/16][h][w][16]` -> `[n][c/16][oh][ow][16]`,
/// bias and activation applied.
///
/// # Panics
/// If a slice does not match the shapes or the layer is not one `suits` accepts.
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
    assert!(suits(conv) && g.is_depthwise(), "blocked depthwise: layer");
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
        // Block i of the input and output.
        dispatch(DwBlock {
            job: &job,
            x: &x[i * bin..][..bin],
            b: i % job.cb,
            out: o,
            buf,
        })
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

/// One 16-channel block (`b` within its image) of a depthwise layer, output row by
/// output row in tiles of up to `DW_T` pixels.
struct DwBlock<'a> {
    job: &'a DwJob<'a>,
    x: &'a [f32],
    b: usize,
    out: &'a mut [f32],
    buf: &'a mut Vec<f32>,
}

impl Kernel for DwBlock<'_> {
    type Out = ();
    #[inline(always)]
    fn run<V: V16>(self) {
        let DwBlock {
            job,
            x,
            b,
            out,
            buf,
        } = self;
        let (k, s) = (job.k, job.s);
        let wp = (job.ow - 1) * s + k;
        let tmax = dw_tile_px(V::ACC);
        // A ring of k padded rows, filled as the output rows move down: each input
        // row is copied once, into a buffer that stays in L1 (a whole padded copy of
        // a 112x112 block is 800 KB, written and read again).
        buf.resize(k * wp * LANES + LANES, 0.0);
        let base = buf.as_mut_ptr();
        // SAFETY (pointer arithmetic and accesses below): the ring lies inside
        // `buf`, rows inside the ring, weights and bias inside the packed layer,
        // outputs inside this block's `out`.
        unsafe {
            let ring = base.add(base.align_offset(64));
            let slot = |py: usize| ring.add(py % k * wp * LANES);
            let mut filled = 0;
            let wt = job.pk.weights.as_ptr().add(b * job.taps * LANES);
            let bias = job.pk.bias.as_ptr().add(b * LANES);
            for oy in 0..job.oh {
                // Padded rows up to this output row's last tap: zeros above and below
                // the input, its pixels between zero margins.
                while filled < oy * s + k {
                    let row = std::slice::from_raw_parts_mut(slot(filled), wp * LANES);
                    match filled.checked_sub(job.pad_top).filter(|&iy| iy < job.h) {
                        Some(iy) => {
                            let left = job.pad_left.min(wp);
                            let cols = job.w.min(wp - left);
                            row[..left * LANES].fill(0.0);
                            row[left * LANES..(left + cols) * LANES]
                                .copy_from_slice(&x[iy * job.w * LANES..][..cols * LANES]);
                            row[(left + cols) * LANES..].fill(0.0);
                        }
                        None => row.fill(0.0),
                    }
                    filled += 1;
                }
                let rows: [*const f32; 7] =
                    std::array::from_fn(|ky| slot(oy * s + ky.min(k - 1)).cast_const());
                let dst = out.as_mut_ptr().add(oy * job.ow * LANES);
                let mut ox = 0;
                while ox < job.ow {
                    let t = tmax.min(job.ow - ox);
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
                                $($t => V::apart(DwTile::<$k, $s, $t> {
                                    rows: &rows,
                                    col,
                                    wt,
                                    bias,
                                    dst: d,
                                    act: job.act,
                                }),)*
                                _ => unreachable!(),
                            }
                        };
                    }
                    if V::ACC >= 8 {
                        go!((3, 1) (3, 2) (5, 1) (5, 2) (7, 1) (7, 2); (1 2 3 4 5 6 7 8))
                    } else {
                        go!((3, 1) (3, 2) (5, 1) (5, 2) (7, 1) (7, 2); (1 2 3 4 5 6))
                    }
                    ox += t;
                }
            }
        }
    }
}

/// `dw_tile` as a kernel of its own (see `V16::apart`).
struct DwTile<'a, const K: usize, const S: usize, const T: usize> {
    rows: &'a [*const f32; 7],
    col: usize,
    wt: *const f32,
    bias: *const f32,
    dst: *mut f32,
    act: Act,
}

impl<V: V16, const K: usize, const S: usize, const T: usize> Apart<V> for DwTile<'_, K, S, T> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        // SAFETY: as `DwBlock` makes the pointers.
        unsafe {
            dw_tile::<V, K, S, T>(self.rows, self.col, self.wt, self.bias, self.dst, self.act)
        }
    }
}

/// `T` output pixels of one row: `rows[ky]` is the padded input row of tap row
/// `ky`, `col` the offset of the tile's first tap in it. Each input pixel of a
/// kernel row is loaded once and used by every output it reaches.
///
/// # Safety
/// The rows hold the tile's taps; `wt`, `bias` and `dst` as `DwBlock` makes them.
#[inline(always)]
unsafe fn dw_tile<V: V16, const K: usize, const S: usize, const T: usize>(
    rows: &[*const f32; 7],
    col: usize,
    wt: *const f32,
    bias: *const f32,
    dst: *mut f32,
    act: Act,
) {
    // SAFETY: by the contract.
    unsafe {
        let mut acc = [V::load(bias); T];
        for (ky, &row) in rows.iter().enumerate().take(K) {
            let row = row.add(col);
            for kx in 0..K {
                let wk = V::load(wt.add((ky * K + kx) * LANES));
                for (t, a) in acc.iter_mut().enumerate() {
                    // The same input pixel serves several (t, kx): with the loops
                    // unrolled each is loaded once.
                    *a = wk.mul_add(V::load(row.add((t * S + kx) * LANES)), *a);
                }
            }
        }
        let (lo, hi) = act_bounds(act);
        let (lo, hi) = (V::splat(lo), V::splat(hi));
        for (t, a) in acc.iter().enumerate() {
            a.clamp(lo, hi).store(dst.add(t * LANES));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_sizes_stay_within_the_tiles_compiled_for_every_accumulator_count() {
        // The `match`es compile (blocks, pixels) up to these for ACC >= 24 (AVX-512),
        // and up to 1 x 6 (1x1, stems) or 6 (depthwise) below it.
        for acc in 1..=40 {
            let wide = acc >= 24;
            let (b, px) = pw_tiles(acc);
            let most: [usize; NB + 1] = if wide {
                [0, 16, 12, 8, 6]
            } else {
                [0, 6, 0, 0, 0]
            };
            assert!(
                b >= 1 && b <= if wide { 4 } else { 1 },
                "acc {acc}: {b} blocks"
            );
            for nb in 1..=b {
                assert!(
                    px[nb] >= 1 && px[nb] <= most[nb],
                    "acc {acc}: 1x1 {nb} x {}",
                    px[nb]
                );
            }
            let (sb, st) = stem_tile(acc);
            assert!(
                (1..=2).contains(&sb) && st >= 1 && st <= if wide { 12 } else { 6 },
                "acc {acc}: stem"
            );
            let t = dw_tile_px(acc);
            assert!(
                t >= 1 && t <= if acc >= 8 { 8 } else { 6 },
                "acc {acc}: depthwise {t}"
            );
        }
    }
}
