//! Fully connected layer: GEMM for batches, a weight-streaming kernel for a few images.

use gemm::Parallelism;

use rayon::prelude::*;

use super::simd::{madd, multiversion};
use super::vector::{dispatch, Kernel, V16};
use super::{add_act_chunk, apply_act, Act};

/// `y = act(x W^T + b)` with `W` stored `[out, in]` as in torch.
#[derive(Clone, Debug)]
pub struct Linear {
    /// Transposed and cut into blocks of `OB` output features, `[out / OB][in][OB]`
    /// (last block zero-padded): every kernel streams one block from start to end,
    /// reading along output features. (Plainly transposed, a block's rows lay a
    /// whole row of outputs apart, and fc6's 151 MB were read without prefetching.)
    wt: Vec<f32>,
    bias: Option<Vec<f32>>,
    act: Act,
    in_f: usize,
    out_f: usize,
}

impl Linear {
    /// `weight`: `[out, in]` row-major; `out` is the bias length and `in` follows
    /// from it. Without a bias the shape is ambiguous: use [`Linear::with_shape`].
    ///
    /// # Panics
    /// Without a bias (shape unknown) or if `weight.len()` is not a multiple of it.
    pub fn new(weight: Vec<f32>, bias: Option<Vec<f32>>, act: Act) -> Linear {
        let out_f = bias
            .as_ref()
            .map(Vec::len)
            .expect("Linear::new needs the bias to know the shape; use with_shape");
        assert!(
            out_f > 0 && weight.len().is_multiple_of(out_f),
            "linear: weight length not a multiple of the bias length"
        );
        let in_f = weight.len() / out_f;
        Linear::with_shape(weight, bias, act, in_f, out_f)
    }

    /// Like [`Linear::new`] with the shape given, bias optional.
    ///
    /// # Panics
    /// If the lengths do not match the shape.
    pub fn with_shape(
        weight: Vec<f32>,
        bias: Option<Vec<f32>>,
        act: Act,
        in_f: usize,
        out_f: usize,
    ) -> Linear {
        assert_eq!(
            weight.len(),
            in_f * out_f,
            "linear: weight is not {out_f} x {in_f}"
        );
        if let Some(b) = &bias {
            assert_eq!(b.len(), out_f, "linear: bias length is not {out_f}");
        }
        Linear {
            wt: pack(&weight, out_f, in_f),
            bias,
            act,
            in_f,
            out_f,
        }
    }

    /// Takes the activation out of the layer and returns it (see `Conv2d::take_act`).
    pub fn take_act(&mut self) -> Act {
        std::mem::replace(&mut self.act, Act::None)
    }

    pub fn in_features(&self) -> usize {
        self.in_f
    }

    pub fn out_features(&self) -> usize {
        self.out_f
    }

    /// The weight from input `i` to output `o` (`weight[o][i]` as given to `new`).
    pub fn weight(&self, o: usize, i: usize) -> f32 {
        assert!(
            o < self.out_f && i < self.in_f,
            "weight ({o}, {i}) out of range"
        );
        self.wt[(o / OB) * self.in_f * OB + i * OB + o % OB]
    }

    /// The gradient with respect to the input, `dx = dy W` (`dy`: `[n, out]`, the
    /// gradient after the activation has been gone back through), one GEMM per block
    /// of outputs, each adding into `dx`.
    ///
    /// # Panics
    /// If `dy.len() != n * out_features()`.
    pub fn backward_input(&self, dy: &[f32], n: usize) -> Vec<f32> {
        let (in_f, out_f) = (self.in_f, self.out_f);
        assert_eq!(
            dy.len(),
            n * out_f,
            "linear backward: gradient is not {n} x {out_f}"
        );
        let mut dx = vec![0f32; n * in_f];
        if dx.is_empty() {
            return dx;
        }
        let par = match super::threads() {
            1 => Parallelism::None,
            t => Parallelism::Rayon(t),
        };
        for blk in 0..out_f.div_ceil(OB) {
            let k = OB.min(out_f - blk * OB);
            // SAFETY: dx is n x in_f (row stride in_f); dy's block is n x k at row
            // stride out_f from column blk * OB; the block of `wt` is read as k x in_f
            // with element (j, i) at (blk * in_f + i) * OB + j, inside the block.
            unsafe {
                gemm::gemm(
                    n,
                    in_f,
                    k,
                    dx.as_mut_ptr(),
                    1,
                    in_f as isize,
                    blk > 0,
                    dy.as_ptr().add(blk * OB),
                    1,
                    out_f as isize,
                    self.wt.as_ptr().add(blk * in_f * OB),
                    OB as isize,
                    1,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                );
            }
        }
        dx
    }

    /// `x`: `[n, in]` -> `[n, out]`.
    ///
    /// # Panics
    /// If `x.len() != n * in_features()`.
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        assert_eq!(
            x.len(),
            n * self.in_f,
            "linear: input is not {n} x {}",
            self.in_f
        );
        let mut out = vec![0f32; n * self.out_f];
        if out.is_empty() {
            return out;
        }
        if n <= SMALL_BATCH {
            self.forward_small(x, n, &mut out);
        } else if super::isa::isa() != super::isa::Isa::Portable {
            self.forward_blocked(x, n, &mut out);
        } else {
            self.forward_gemm(x, n, &mut out);
        }
        match &self.bias {
            Some(b) => out
                .chunks_mut(self.out_f)
                .for_each(|row| add_act_chunk(row, b, self.act)),
            None => apply_act(&mut out, self.act),
        }
        out
    }

    /// Block `blk` of the packed weights: `in_f` rows of `OB`.
    fn block(&self, blk: usize) -> &[f32] {
        &self.wt[blk * self.in_f * OB..][..self.in_f * OB]
    }

    fn forward_gemm(&self, x: &[f32], n: usize, out: &mut [f32]) {
        let par = match super::threads() {
            1 => Parallelism::None,
            t => Parallelism::Rayon(t),
        };
        for blk in 0..self.out_f.div_ceil(OB) {
            let o0 = blk * OB;
            let cols = OB.min(self.out_f - o0);
            let w = self.block(blk);
            let dst = &mut out[o0..];
            assert!(dst.len() >= (n - 1) * self.out_f + cols);
            // SAFETY: dst holds n rows of stride out_f with cols columns each (checked
            // above), x is n x in_f row-major, the block in_f x OB row-major.
            unsafe {
                let shape = (n, cols, self.in_f);
                super::gemm_rows(
                    shape,
                    dst.as_mut_ptr(),
                    self.out_f,
                    x.as_ptr(),
                    self.in_f,
                    w.as_ptr(),
                    OB,
                    par,
                );
            }
        }
    }

    /// A few images: `out[b] += x[b][i] * wt[i]` row by row of the transposed
    /// weights, which are streamed once (the layer is bound by reading them) while
    /// the outputs stay in cache; tasks take blocks of output columns.
    fn forward_small(&self, x: &[f32], n: usize, out: &mut [f32]) {
        let (in_f, out_f) = (self.in_f, self.out_f);
        let blocks = out_f.div_ceil(OB);
        let parts: Vec<Vec<f32>> = (0..blocks)
            .into_par_iter()
            .map(|blk| {
                let cols = OB.min(out_f - blk * OB);
                let mut part = vec![0f32; n * cols];
                axpy_rows(self.block(blk), OB, cols, x, in_f, &mut part);
                part
            })
            .collect();
        for (blk, part) in parts.iter().enumerate() {
            let o0 = blk * OB;
            let cols = part.len() / n;
            for b in 0..n {
                out[b * out_f + o0..][..cols].copy_from_slice(&part[b * cols..][..cols]);
            }
        }
    }
}

impl Linear {
    /// Larger batches: the weights are read once per batch, in blocks of `KB`
    /// inputs x `OB` outputs that stay in L2 while every group of images passes
    /// over them (`GB` images, 24 accumulators per step, on AVX-512; fewer where
    /// `V16::ACC` is smaller). The `gemm` crate repacked all of
    /// AlexNet's 151 MB fc6 weights on every call: 60 GFLOP/s there, where streaming
    /// them once is what bounds the layer.
    fn forward_blocked(&self, x: &[f32], n: usize, out: &mut [f32]) {
        let (in_f, out_f) = (self.in_f, self.out_f);
        let blocks = out_f.div_ceil(OB);
        let parts: Vec<Vec<f32>> = (0..blocks)
            .into_par_iter()
            .map(|blk| {
                let o0 = blk * OB;
                let cols = OB.min(out_f - o0);
                let mut part = vec![0f32; n * OB];
                dispatch(Block {
                    wt: self.block(blk),
                    pitch: OB,
                    o0: 0,
                    cols,
                    x,
                    n,
                    in_f,
                    part: &mut part,
                });
                part
            })
            .collect();
        for (blk, part) in parts.iter().enumerate() {
            let o0 = blk * OB;
            let cols = OB.min(out_f - o0);
            for b in 0..n {
                out[b * out_f + o0..][..cols].copy_from_slice(&part[b * OB..][..cols]);
            }
        }
    }
}

/// Output features per block of packed weights, and per task (four vectors).
const OB: usize = 64;
/// Rows of weights the first pass over a block prefetches ahead (16 KiB).
const PREFETCH: usize = 64;
/// Images per pass over a block of weights.
const GB: usize = 6;
/// Inputs per block of weights (`KB x OB` floats: 256 KiB).
const KB: usize = 1024;

/// `part[b][j] = sum_i x[b][i] * wt[i * pitch + o0 + j]` for j < cols, b < n.
struct Block<'a> {
    wt: &'a [f32],
    pitch: usize,
    o0: usize,
    cols: usize,
    x: &'a [f32],
    n: usize,
    in_f: usize,
    part: &'a mut [f32],
}

impl Kernel for Block<'_> {
    type Out = ();
    #[inline(always)]
    fn run<V: V16>(self) {
        // Images per pass x vectors of outputs: 6 x 4 accumulators on AVX-512; where
        // registers are fewer, 6 x 1 (AVX2: 12 of 16 registers; the weights read
        // once per 6 images, not per image: AlexNet fc6 at batch 16 in 26 ms, 13 ms
        // this way). Below that, the portable type's 3 x 1.
        match V::ACC {
            24.. => self.images::<V, GB, 4>(),
            6.. => self.images::<V, GB, 1>(),
            _ => self.images::<V, 3, 1>(),
        }
    }
}

impl Block<'_> {
    /// Images `IMGS` at a time, over `NV` of the block's `OB / 16` vectors of
    /// outputs at a time.
    #[inline(always)]
    fn images<V: V16, const IMGS: usize, const NV: usize>(self) {
        let Block {
            wt,
            pitch,
            o0,
            cols,
            x,
            n,
            in_f,
            part,
        } = self;
        assert!(o0 + cols <= pitch && wt.len() >= in_f * pitch && x.len() >= n * in_f);
        assert!(part.len() >= n * OB && cols <= OB);
        let lanes: [usize; OB / 16] = std::array::from_fn(|v| cols.saturating_sub(16 * v).min(16));
        let mut k0 = 0;
        while k0 < in_f {
            let kb = KB.min(in_f - k0);
            for v0 in (0..OB / 16).step_by(NV).take_while(|&v0| lanes[v0] > 0) {
                let mut b0 = 0;
                while b0 < n {
                    let g = IMGS.min(n - b0);
                    // SAFETY (all accesses): rows b0..b0+g of part and x, inputs
                    // k0..k0+kb of the weights' rows, columns below `cols` (asserted
                    // above; `lanes` is 0 past them).
                    unsafe {
                        let mut acc = [[V::zero(); NV]; IMGS];
                        for (b, row) in acc.iter_mut().enumerate().take(g) {
                            for (v, a) in row.iter_mut().enumerate() {
                                *a = V::load(part.as_ptr().add((b0 + b) * OB + 16 * (v0 + v)));
                            }
                        }
                        let xs: [*const f32; IMGS] = std::array::from_fn(|b| {
                            x.as_ptr().add((b0 + b.min(g - 1)) * in_f + k0)
                        });
                        let mut w = wt.as_ptr().add(k0 * pitch + o0);
                        // The first group brings the block in from memory (all its
                        // vectors of outputs): ask for it ahead.
                        let fetch = b0 == 0 && v0 == 0;
                        for i in 0..kb {
                            if fetch {
                                for v in 0..OB / 16 {
                                    prefetch(w.wrapping_add(PREFETCH * pitch + 16 * v));
                                }
                            }
                            let mut wv = [V::zero(); NV];
                            for (v, wv) in wv.iter_mut().enumerate() {
                                *wv = V::load_lanes(w.add(16 * (v0 + v)), 0, lanes[v0 + v]);
                            }
                            for (b, row) in acc.iter_mut().enumerate() {
                                let xb = V::splat(*xs[b].add(i));
                                for (a, &wv) in row.iter_mut().zip(&wv) {
                                    *a = xb.mul_add(wv, *a);
                                }
                            }
                            w = w.add(pitch);
                        }
                        for (b, row) in acc.iter().enumerate().take(g) {
                            for (v, a) in row.iter().enumerate() {
                                a.store(part.as_mut_ptr().add((b0 + b) * OB + 16 * (v0 + v)));
                            }
                        }
                    }
                    b0 += g;
                }
            }
            k0 += kb;
        }
    }
}

/// Asks for the cache line at `p` (a hint: any address is fine).
#[inline(always)]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching never faults; SSE is part of x86-64.
    unsafe {
        use std::arch::x86_64::*;
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Batches up to this size use the streaming kernel.
const SMALL_BATCH: usize = 4;

multiversion! {
    /// `part[b][j] = sum_i x[b][i] * wt[i * pitch + j]` for j < cols.
    fn axpy_rows(wt: &[f32], pitch: usize, cols: usize, x: &[f32], k: usize, part: &mut [f32]) {
        for (b, acc) in part.chunks_exact_mut(cols).enumerate() {
            let xb = &x[b * k..][..k];
            for (i, &xv) in xb.iter().enumerate() {
                let w = &wt[i * pitch..][..cols];
                for (a, &wv) in acc.iter_mut().zip(w) {
                    *a = madd::<FMA>(xv, wv, *a);
                }
            }
        }
    }
}

/// `[out, in]` weights -> blocks of `OB` outputs, `[out / OB][in][OB]`, zero-padded.
fn pack(m: &[f32], out_f: usize, in_f: usize) -> Vec<f32> {
    let blocks = out_f.div_ceil(OB);
    let mut t = vec![0f32; blocks * in_f * OB];
    for (o, row) in m.chunks_exact(in_f.max(1)).enumerate().take(out_f) {
        let (blk, j) = (o / OB, o % OB);
        for (i, &v) in row.iter().enumerate() {
            t[(blk * in_f + i) * OB + j] = v;
        }
    }
    t
}
