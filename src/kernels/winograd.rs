//! Winograd convolution F(m x m, 3 x 3) for 3x3 stride-1 layers (Lavin & Gray, 2015).
//!
//! Each m x m block of output pixels ("tile") is computed from an (m+2) x (m+2) block
//! of input: transformed (`V = Bt d B`), multiplied point by point with the
//! transformed filter (`U = G g Gt`, made once per layer) and summed over input
//! channels, then transformed back (`Y = At M A`). Summed over channels, the
//! point-by-point products are (m+2)^2 ordinary GEMMs, `M[xi] = U[xi] x V[xi]` with
//! tiles as columns, so the multiplies per output and input channel fall from 9 to
//! 4 with F(2x2) and 2.25 with F(4x4). ResNet-18 does 83% of its work in such layers.
//!
//! The transforms are vectorised across 16 channels (a [`V16`] on every ISA): input
//! rows are transposed 16 channels x 16 pixels
//! at a time into pixel-major blocks, so every tile, whatever the plane's width,
//! uses whole vectors; the transformed tiles are stored channel-innermost, which
//! the GEMM reads as a column-major operand, and outputs are transposed back into
//! planes with bias, residual and activation applied on the way.
//!
//! Work is cut into chunks of whole tile rows (of any images of the batch), sized
//! so a chunk's transformed input and products stay in L2 between the three steps
//! while each transformed filter is still reused over many tiles.

use gemm::Parallelism;
use rayon::prelude::*;

use super::vector::{dispatch, load_each, Kernel, V16};
use super::{act_bounds, Act, ConvGeom};

/// Filter transform G of F(2x2, 3x3): interpolation points 0, 1, -1, infinity.
const G2: [[f64; 3]; 4] = [
    [1., 0., 0.],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0., 0., 1.],
];

/// Filter transform G of F(4x4, 3x3): points 0, 1, -1, 2, -2, infinity.
const G4: [[f64; 3]; 6] = [
    [1. / 4., 0., 0.],
    [-1. / 6., -1. / 6., -1. / 6.],
    [-1. / 6., 1. / 6., -1. / 6.],
    [1. / 24., 1. / 12., 1. / 6.],
    [1. / 24., -1. / 12., 1. / 6.],
    [0., 0., 1.],
];

/// Whether a conv layer takes this path: 3x3, stride 1, no dilation, one group,
/// and enough channels that the GEMMs, not the transforms, dominate.
pub(super) fn suits(g: &ConvGeom) -> bool {
    g.kernel == (3, 3)
        && g.stride == (1, 1)
        && g.dilation == (1, 1)
        && g.groups == 1
        && g.in_ch >= 16
        && g.out_ch >= 16
}

/// Output tile side for an `oh` x `ow` output: F(4x4) has 1.8x fewer multiplies
/// but loses some of that to padding on small planes (13x13 computed as 16x16).
pub(super) fn tile_for(oh: usize, ow: usize) -> usize {
    let waste = |m: usize| (oh.div_ceil(m) * ow.div_ceil(m) * m * m) as f64 / (oh * ow) as f64;
    let cost = |m: usize| waste(m) * ((m + 2) * (m + 2)) as f64 / (m * m) as f64;
    if cost(4) < cost(2) {
        4
    } else {
        2
    }
}

/// Whether Winograd beats im2col + GEMM for `n` images of `h` x `w` (`suits`
/// aside), by a rough model of this class of machine: the transformed
/// filters are read from memory once per call (about 10 GB/s) while the GEMMs run
/// near 250 GFLOP/s, against im2col at about 220 GFLOP/s with its filters in cache.
/// Large late layers only pay on a batch: ResNet-18's last ones have 37 MB of `U`
/// for 4 tiles per image.
pub(super) fn pays(g: &ConvGeom, n: usize, oh: usize, ow: usize) -> bool {
    let m = tile_for(oh, ow);
    let a = (m + 2) as f64;
    let tiles = (n * oh.div_ceil(m) * ow.div_ceil(m)) as f64;
    let cc = (g.in_ch * g.out_ch) as f64;
    let wino = a * a * cc * 4.0 / 10e9 + a * a * cc * tiles * 2.0 / 250e9;
    let im2col = 9.0 * cc * (n * oh * ow) as f64 * 2.0 / 220e9;
    wino < im2col
}

/// Transformed filters `U` for tile side `m`: (m+2)^2 matrices `[out_ch][in_ch]`,
/// one per point, computed in f64.
pub(super) fn transform_filters(m: usize, weight: &[f32], in_ch: usize, out_ch: usize) -> Vec<f32> {
    let g: &[[f64; 3]] = if m == 2 { &G2 } else { &G4 };
    let a = m + 2;
    let mut u = vec![0f32; a * a * out_ch * in_ch];
    for o in 0..out_ch {
        for c in 0..in_ch {
            let w = &weight[(o * in_ch + c) * 9..][..9];
            // t = G w (a x 3), then U = t Gt (a x a).
            // Rows past `a` stay zero and unused (on the stack: no allocation per pair).
            let mut t = [[0f64; 3]; 6];
            for (i, row) in t.iter_mut().enumerate().take(a) {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (0..3).map(|k| g[i][k] * w[k * 3 + j] as f64).sum();
                }
            }
            for i in 0..a {
                for j in 0..a {
                    let v: f64 = (0..3).map(|k| t[i][k] * g[j][k]).sum();
                    u[((i * a + j) * out_ch + o) * in_ch + c] = v as f32;
                }
            }
        }
    }
    u
}

/// What one call computes: the layer, its transformed filters and the epilogue.
pub(super) struct Job<'a> {
    pub geom: &'a ConvGeom,
    /// Output tile side, 2 or 4 (as `u` was made for).
    pub m: usize,
    pub u: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub act: Act,
    /// `out = then(conv + residual)`, for a layer whose own `act` is None.
    pub residual: Option<(&'a [f32], Act)>,
}

/// Geometry shared by the steps of one call.
#[derive(Clone, Copy)]
struct Plan {
    m: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    /// Tiles down and across an image.
    th: usize,
    tw: usize,
    /// Channels rounded up to whole vectors.
    cinp: usize,
    coutp: usize,
    /// Pixels per staged input row (the tiles' padded width, whole vectors).
    pw_in: usize,
    /// Pixels per staged output row.
    pw_out: usize,
}

/// The output, written by several chunks at once at disjoint tile rows.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: chunks write disjoint pixels (their own tile rows); see `forward`.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

/// Per-thread staging of one tile row (16 channels, pixel-major), in and out.
#[derive(Default)]
struct Stage {
    input: Vec<f32>,
    output: Vec<f32>,
}

/// A chunk's transformed input (per point, per tile, the channels) and GEMM
/// products (per point, per tile, the output channels).
#[derive(Default)]
struct Chunk {
    v: Vec<f32>,
    prod: Vec<f32>,
}

/// Shared pointers into a `Chunk`, for steps split over threads.
#[derive(Clone, Copy)]
struct ChunkPtr {
    v: *mut f32,
    prod: *mut f32,
}
// SAFETY: the steps write disjoint parts (see `spread`).
unsafe impl Send for ChunkPtr {}
unsafe impl Sync for ChunkPtr {}

// Buffers per thread, kept between calls: fresh megabytes each call would be page
// faults. A thread that finds its own in use (a nested call) takes fresh ones.
thread_local! {
    static STAGE: std::cell::RefCell<Stage> = Default::default();
    static CHUNK: std::cell::RefCell<Chunk> = Default::default();
}

fn with_local<T: Default, R>(
    key: &'static std::thread::LocalKey<std::cell::RefCell<T>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut t) => f(&mut t),
        Err(_) => f(&mut T::default()),
    })
}

/// `x`: `[n, in_ch, h, w]` -> `out`: `[n, out_ch, oh, ow]`, every element written.
/// Call only where [`suits`] holds.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    job: &Job,
    x: &[f32],
    n: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    out: &mut [f32],
) {
    assert!(suits(job.geom), "winograd: unsupported layer");
    let g = job.geom;
    let m = job.m;
    let a = m + 2;
    assert_eq!(
        job.u.len(),
        a * a * g.in_ch * g.out_ch,
        "winograd: filters for another m"
    );
    assert_eq!(x.len(), n * g.in_ch * h * w);
    assert_eq!(out.len(), n * g.out_ch * oh * ow);
    if let Some((r, _)) = job.residual {
        assert_eq!(r.len(), out.len());
    }
    let (th, tw) = (oh.div_ceil(m), ow.div_ceil(m));
    let plan = Plan {
        m,
        h,
        w,
        oh,
        ow,
        th,
        tw,
        cinp: g.in_ch.next_multiple_of(16),
        coutp: g.out_ch.next_multiple_of(16),
        pw_in: (m * tw + 2).next_multiple_of(16),
        pw_out: (m * tw).next_multiple_of(16),
    };
    // Tiles per chunk: the transformed input and products within about 1.5 MB,
    // but at least 96 tiles, so each filter matrix (ResNet's last layers: 37 MB
    // in all) is read from memory once per 96 tiles or more.
    let per_tile = a * a * (plan.cinp + plan.coutp);
    let want = ((384 << 10) / per_tile).max(96);
    let rows = n * th;
    let mut per_chunk = want.div_ceil(tw).clamp(1, rows);
    let threads = super::threads();
    let mut chunks = rows.div_ceil(per_chunk);
    if threads > 1 && chunks < threads && rows * tw >= threads * 48 {
        per_chunk = rows.div_ceil(threads);
        chunks = rows.div_ceil(per_chunk);
    }
    let ptr = OutPtr(out.as_mut_ptr());
    let rows_of = |i: usize| i * per_chunk..((i + 1) * per_chunk).min(rows);
    if threads > 1 && chunks >= threads {
        (0..chunks).into_par_iter().with_max_len(1).for_each(|i| {
            // SAFETY: chunk i writes only the pixels of its tile rows, which no
            // other chunk covers.
            with_local(&CHUNK, |c| unsafe {
                spread(job, &plan, x, rows_of(i), ptr, c, 1)
            });
        });
    } else {
        // One thread, or fewer chunks than threads (a few large late layers): the
        // chunks one after another, each step of each split over the threads.
        for i in 0..chunks {
            // SAFETY: one chunk at a time.
            with_local(&CHUNK, |c| unsafe {
                spread(job, &plan, x, rows_of(i), ptr, c, threads)
            });
        }
    }
}

/// Tile rows `rows` (numbered image after image) through the three steps, each
/// split over `threads` (1: all on this thread).
///
/// # Safety
/// `out` must point to the whole output, and no other thread may touch the pixels
/// of these tile rows meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn spread(
    job: &Job,
    p: &Plan,
    x: &[f32],
    rows: std::ops::Range<usize>,
    out: OutPtr,
    c: &mut Chunk,
    threads: usize,
) {
    let g = job.geom;
    let a = p.m + 2;
    let cols = rows.len() * p.tw;
    c.v.resize(a * a * cols * p.cinp, 0.0);
    c.prod.resize(a * a * cols * p.coutp, 0.0);
    let cp = ChunkPtr {
        v: c.v.as_mut_ptr(),
        prod: c.prod.as_mut_ptr(),
    };
    let (ib, ob) = (p.cinp / 16, p.coutp / 16);
    let first = rows.start;
    // SAFETY (all three steps): unit (k, block) of the transforms touches only tile
    // row k's columns of its own 16 channels of V / the products, and of the output
    // only row k's pixels in its own 16 planes; gemm xi only point xi.
    let input = |i: usize| {
        with_local(&STAGE, |s| {
            dispatch(InputUnit {
                p,
                g,
                x,
                first,
                cols,
                k: i / ib,
                cb: i % ib,
                s,
                cp,
            })
        })
    };
    let gemm = |xi: usize| unsafe { gemm_unit(job, p, cols, xi, cp) };
    let output = |i: usize| {
        with_local(&STAGE, |s| {
            dispatch(OutputUnit {
                job,
                p,
                first,
                cols,
                k: i / ob,
                ob: i % ob,
                s,
                cp,
                out,
            })
        })
    };
    if threads > 1 {
        (0..rows.len() * ib).into_par_iter().for_each(input);
        (0..a * a).into_par_iter().with_max_len(1).for_each(gemm);
        (0..rows.len() * ob).into_par_iter().for_each(output);
    } else {
        (0..rows.len() * ib).for_each(input);
        (0..a * a).for_each(gemm);
        (0..rows.len() * ob).for_each(output);
    }
}

/// Input transform of tile row `first + k`, channels `16*cb..`: writes only that
/// row's columns of its own 16 channels of the chunk's V.
struct InputUnit<'a> {
    p: &'a Plan,
    g: &'a ConvGeom,
    x: &'a [f32],
    first: usize,
    cols: usize,
    k: usize,
    cb: usize,
    s: &'a mut Stage,
    cp: ChunkPtr,
}

impl Kernel for InputUnit<'_> {
    type Out = ();
    #[inline(always)]
    fn run<V: V16>(self) {
        let InputUnit {
            p,
            g,
            x,
            first,
            cols,
            k,
            cb,
            s,
            cp,
        } = self;
        let a = p.m + 2;
        let (img, ty) = ((first + k) / p.th, (first + k) % p.th);
        let image = &x[img * g.in_ch * p.h * p.w..][..g.in_ch * p.h * p.w];
        s.input.resize(a * p.pw_in * 16, 0.0);
        stage_input::<V>(image, g, p, cb, ty, &mut s.input);
        // SAFETY: the caller gives this unit its columns of the chunk's V.
        unsafe {
            let v = cp.v.add(k * p.tw * p.cinp + cb * 16);
            if p.m == 2 {
                input_tiles::<V, 2>(&s.input, p, cols, v);
            } else {
                input_tiles::<V, 4>(&s.input, p, cols, v);
            }
        }
    }
}

/// GEMM of point `xi`: products = U[xi] x V[xi].
unsafe fn gemm_unit(job: &Job, p: &Plan, cols: usize, xi: usize, cp: ChunkPtr) {
    let (cin, cout) = (job.geom.in_ch, job.geom.out_ch);
    // SAFETY: U[xi] is cout x cin row-major; V[xi] holds tile t's channels at
    // t * cinp (cin x cols, column-major); the products likewise at t * coutp.
    unsafe {
        super::gemm_strided(
            (cout, cols, cin),
            (cp.prod.add(xi * cols * p.coutp), 1, p.coutp),
            (job.u[xi * cout * cin..].as_ptr(), cin, 1),
            (cp.v.add(xi * cols * p.cinp), 1, p.cinp),
            Parallelism::None,
        );
    }
}

/// Output transform of tile row `first + k`, output channels `16*ob..`, into `out`:
/// reads that row's columns of the products, writes that row's pixels of its own
/// 16 planes.
struct OutputUnit<'a> {
    job: &'a Job<'a>,
    p: &'a Plan,
    first: usize,
    cols: usize,
    k: usize,
    ob: usize,
    s: &'a mut Stage,
    cp: ChunkPtr,
    out: OutPtr,
}

impl Kernel for OutputUnit<'_> {
    type Out = ();
    #[inline(always)]
    fn run<V: V16>(self) {
        let OutputUnit {
            job,
            p,
            first,
            cols,
            k,
            ob,
            s,
            cp,
            out,
        } = self;
        let (img, ty) = ((first + k) / p.th, (first + k) % p.th);
        s.output.resize(p.m * p.pw_out * 16, 0.0);
        let mut bias = [0f32; 16];
        if let Some(b) = job.bias {
            for (l, v) in bias.iter_mut().enumerate() {
                *v = b.get(ob * 16 + l).copied().unwrap_or(0.0);
            }
        }
        // SAFETY: the caller gives this unit these columns and output pixels.
        unsafe {
            let prod = cp.prod.add(k * p.tw * p.coutp + ob * 16);
            if p.m == 2 {
                output_tiles::<V, 2>(prod, p, cols, &bias, &mut s.output);
            } else {
                output_tiles::<V, 4>(prod, p, cols, &bias, &mut s.output);
            }
            store_output::<V>(&s.output, job, p, img, ty, ob, out);
        }
    }
}

/// Copies the input rows tile row `ty` reads (zero where they fall in the padding)
/// for channels `16*cb..16*cb+16` into `stage`: row r, pixel q at `(r * pw_in + q) * 16`.
#[inline(always)]
fn stage_input<V: V16>(
    image: &[f32],
    g: &ConvGeom,
    p: &Plan,
    cb: usize,
    ty: usize,
    stage: &mut [f32],
) {
    let a = p.m + 2;
    let (h, w) = (p.h as isize, p.w as isize);
    assert!(stage.len() >= a * p.pw_in * 16);
    for r in 0..a {
        let iy = (p.m * ty + r) as isize - g.pad.top as isize;
        for q0 in (0..p.pw_in).step_by(16) {
            let ix0 = q0 as isize - g.pad.left as isize;
            // Lanes of the 16 pixels that lie inside the row.
            let lo = (-ix0).clamp(0, 16) as usize;
            let hi = (w - ix0).clamp(0, 16) as usize;
            let mut v = [V::zero(); 16];
            if (0..h).contains(&iy) && hi > lo {
                for (l, v) in v.iter_mut().enumerate() {
                    let c = cb * 16 + l;
                    if c >= g.in_ch {
                        break;
                    }
                    let row = (c as isize * h + iy) * w;
                    // wrapping_offset: the first lanes may point before the row;
                    // only lanes lo..hi are read.
                    let ptr = image.as_ptr().wrapping_offset(row + ix0);
                    // SAFETY: lanes lo..hi address pixels of this row.
                    *v = unsafe { V::load_lanes(ptr, lo, hi) };
                }
            }
            V::transpose(&mut v);
            for (q, v) in v.iter().enumerate() {
                let at = (r * p.pw_in + q0 + q) * 16;
                // SAFETY: `stage` holds a * pw_in pixels of 16 (asserted above).
                unsafe { v.store(stage.as_mut_ptr().add(at)) };
            }
        }
    }
}

/// `Bt` applied to `d` (a values along one axis), hand-factored.
#[inline(always)]
fn input_1d<V: V16, const M: usize>(d: &[V; 6]) -> [V; 6] {
    if M == 2 {
        let z = V::zero();
        [
            d[0].sub(d[2]),
            d[1].add(d[2]),
            d[2].sub(d[1]),
            d[1].sub(d[3]),
            z,
            z,
        ]
    } else {
        // Rows of Bt: [4 0 -5 0 1 0], [0 -4 -4 1 1 0], [0 4 -4 -1 1 0],
        // [0 -2 -1 2 1 0], [0 2 -1 -2 1 0], [0 4 0 -5 0 1].
        let (four, five) = (V::splat(4.0), V::splat(5.0));
        let t1 = four.neg_mul_add(d[2], d[4]);
        let t2 = four.neg_mul_add(d[1], d[3]);
        let t3 = d[4].sub(d[2]);
        let t4 = d[3].sub(d[1]);
        let t4 = t4.add(t4);
        [
            four.mul_add(d[0], five.neg_mul_add(d[2], d[4])),
            t1.add(t2),
            t1.sub(t2),
            t3.add(t4),
            t3.sub(t4),
            four.mul_add(d[1], five.neg_mul_add(d[3], d[5])),
        ]
    }
}

/// `At` applied to `m` (a products along one axis): the m outputs, hand-factored.
#[inline(always)]
fn output_1d<V: V16, const M: usize>(m: &[V; 6]) -> [V; 4] {
    if M == 2 {
        let z = V::zero();
        let s = m[1].add(m[2]);
        let d = m[1].sub(m[2]);
        [m[0].add(s), d.sub(m[3]), z, z]
    } else {
        // Rows of At: [1 1 1 1 1 0], [0 1 -1 2 -2 0], [0 1 1 4 4 0], [0 1 -1 8 -8 1].
        let s12 = m[1].add(m[2]);
        let d12 = m[1].sub(m[2]);
        let s34 = m[3].add(m[4]);
        let d34 = m[3].sub(m[4]);
        [
            m[0].add(s12).add(s34),
            V::splat(2.0).mul_add(d34, d12),
            V::splat(4.0).mul_add(s34, s12),
            V::splat(8.0).mul_add(d34, d12).add(m[5]),
        ]
    }
}

/// Transforms every tile of the staged row (16 channels): point xi of tile tx goes
/// to `v[(xi * cols + tx) * cinp]` (`v` starts at this row's first tile and block).
///
/// # Safety
/// `v` must be this unit's part of the chunk's transformed input.
#[inline(always)]
unsafe fn input_tiles<V: V16, const M: usize>(stage: &[f32], p: &Plan, cols: usize, v: *mut f32) {
    let a = M + 2;
    let st = stage.as_ptr();
    for tx in 0..p.tw {
        // e = d B (along each row), then V = Bt e (down each column).
        let mut e = [[V::zero(); 6]; 6];
        for (r, e) in e.iter_mut().enumerate().take(a) {
            let mut d = [V::zero(); 6];
            for (j, d) in d.iter_mut().enumerate().take(a) {
                // SAFETY: pixel M*tx + j < M*tw + 2 <= pw_in of staged row r.
                *d = unsafe { V::load(st.add((r * p.pw_in + M * tx + j) * 16)) };
            }
            *e = input_1d::<V, M>(&d);
        }
        // Column j of e (an index, not an iterator: e is row-major).
        #[allow(clippy::needless_range_loop)]
        for j in 0..a {
            let mut col = [V::zero(); 6];
            for (c, e) in col.iter_mut().zip(&e) {
                *c = e[j];
            }
            let out = input_1d::<V, M>(&col);
            for (i, o) in out.iter().enumerate().take(a) {
                let at = ((i * a + j) * cols + tx) * p.cinp;
                // SAFETY: inside the chunk's transformed input (see `chunk`).
                unsafe { o.store(v.add(at)) };
            }
        }
    }
}

/// Back-transforms every tile of one row of products for 16 output channels (`prod`
/// starts at this row's first tile and block) and adds the bias: output pixel
/// (u, x) of the row goes to `out[(u * pw_out + x) * 16]`.
///
/// # Safety
/// `prod` must be this unit's part of the chunk's products.
#[inline(always)]
unsafe fn output_tiles<V: V16, const M: usize>(
    prod: *const f32,
    p: &Plan,
    cols: usize,
    bias: &[f32; 16],
    out: &mut [f32],
) {
    let a = M + 2;
    // SAFETY: 16 floats.
    let b = unsafe { V::load(bias.as_ptr()) };
    assert!(out.len() >= M * p.pw_out * 16);
    let op = out.as_mut_ptr();
    for tx in 0..p.tw {
        // e = m A (along each row), then Y = At e (down each column).
        let mut e = [[V::zero(); 4]; 6];
        for (i, e) in e.iter_mut().enumerate().take(a) {
            let mut mm = [V::zero(); 6];
            for (j, mm) in mm.iter_mut().enumerate().take(a) {
                let at = ((i * a + j) * cols + tx) * p.coutp;
                // SAFETY: inside the chunk's products (see `chunk`).
                *mm = unsafe { V::load(prod.add(at)) };
            }
            *e = output_1d::<V, M>(&mm);
        }
        #[allow(clippy::needless_range_loop)]
        for x in 0..M {
            let mut col = [V::zero(); 6];
            for (c, e) in col.iter_mut().zip(&e) {
                *c = e[x];
            }
            let y = output_1d::<V, M>(&col);
            for (u, y) in y.iter().enumerate().take(M) {
                let at = (u * p.pw_out + M * tx + x) * 16;
                // SAFETY: M rows of pw_out >= M*tw pixels (asserted above).
                unsafe { y.add(b).store(op.add(at)) };
            }
        }
    }
}

/// Transposes one staged output row block back into the 16 channel planes of image
/// `img` (tile row `ty`), with the residual and activation.
///
/// # Safety
/// `out` must point to the whole output and these pixels be the caller's alone.
#[inline(always)]
unsafe fn store_output<V: V16>(
    staged: &[f32],
    job: &Job,
    p: &Plan,
    img: usize,
    ty: usize,
    ob: usize,
    out: OutPtr,
) {
    let cout = job.geom.out_ch;
    let (lo, hi) = match job.residual {
        Some((_, then)) => act_bounds(then),
        None => act_bounds(job.act),
    };
    let (lo, hi) = (V::splat(lo), V::splat(hi));
    let sp = staged.as_ptr();
    for u in 0..p.m {
        let oy = p.m * ty + u;
        if oy >= p.oh {
            break;
        }
        for x0 in (0..p.ow).step_by(16) {
            // SAFETY: pixels x0..x0 + 16 <= pw_out of staged row u.
            let mut v: [V; 16] = unsafe { load_each(sp.add((u * p.pw_out + x0) * 16), 16) };
            V::transpose(&mut v);
            let n = (p.ow - x0).min(16);
            for (l, v) in v.iter().enumerate() {
                let o = ob * 16 + l;
                if o >= cout {
                    break;
                }
                let at = ((img * cout + o) * p.oh + oy) * p.ow + x0;
                let mut v = *v;
                if let Some((res, _)) = job.residual {
                    // SAFETY: the residual has the output's shape; lanes below n
                    // are pixels of this row.
                    v = v.add(unsafe { V::load_lanes(res.as_ptr().add(at), 0, n) });
                }
                // SAFETY: as above, inside the output.
                unsafe { v.clamp(lo, hi).store_lanes(out.0.add(at), 0, n) };
            }
        }
    }
}
