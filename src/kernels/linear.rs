//! Fully connected layer: GEMM for batches, a weight-streaming kernel for a few images.

use gemm::Parallelism;

use rayon::prelude::*;

use super::simd::{madd, multiversion};
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
        } else if super::simd::isa() == super::simd::Isa::Avx512 {
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
    /// Larger batches on AVX-512: the weights are read once per batch, in blocks of
    /// `KB` inputs x `OB` outputs that stay in L2 while every group of `GB` images
    /// passes over them (24 accumulators per step). The `gemm` crate repacked all of
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
                // SAFETY: AVX-512 checked by the caller; `block` reads this block of
                // weights and x's n rows of in_f, writes part (n x OB).
                unsafe { block(self.block(blk), OB, 0, cols, x, n, in_f, &mut part) };
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
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    wt: &[f32],
    pitch: usize,
    o0: usize,
    cols: usize,
    x: &[f32],
    n: usize,
    in_f: usize,
    part: &mut [f32],
) {
    use std::arch::x86_64::*;
    assert!(o0 + cols <= pitch && wt.len() >= in_f * pitch && x.len() >= n * in_f);
    assert!(part.len() >= n * OB && cols <= OB);
    let masks: [u16; OB / 16] = std::array::from_fn(|v| {
        let lanes = cols.saturating_sub(16 * v).min(16);
        if lanes == 16 {
            !0
        } else {
            (1u16 << lanes) - 1
        }
    });
    let mut k0 = 0;
    while k0 < in_f {
        let kb = KB.min(in_f - k0);
        let mut b0 = 0;
        while b0 < n {
            let g = GB.min(n - b0);
            let mut acc = [[_mm512_setzero_ps(); OB / 16]; GB];
            for (b, row) in acc.iter_mut().enumerate().take(g) {
                for (v, a) in row.iter_mut().enumerate() {
                    *a = _mm512_loadu_ps(part.as_ptr().add((b0 + b) * OB + 16 * v));
                }
            }
            let xs: [*const f32; GB] =
                std::array::from_fn(|b| x.as_ptr().add((b0 + b.min(g - 1)) * in_f + k0));
            let mut w = wt.as_ptr().add(k0 * pitch + o0);
            // The first group brings the block in from memory: ask for it ahead.
            let fetch = b0 == 0;
            for i in 0..kb {
                if fetch {
                    for v in 0..OB / 16 {
                        _mm_prefetch::<_MM_HINT_T0>(
                            w.wrapping_add(PREFETCH * pitch + 16 * v) as *const i8
                        );
                    }
                }
                let wv: [__m512; OB / 16] =
                    std::array::from_fn(|v| _mm512_maskz_loadu_ps(masks[v], w.add(16 * v)));
                for (b, row) in acc.iter_mut().enumerate() {
                    let xb = _mm512_set1_ps(*xs[b].add(i));
                    for (a, &wv) in row.iter_mut().zip(&wv) {
                        *a = _mm512_fmadd_ps(xb, wv, *a);
                    }
                }
                w = w.add(pitch);
            }
            for (b, row) in acc.iter().enumerate().take(g) {
                for (v, a) in row.iter().enumerate() {
                    _mm512_storeu_ps(part.as_mut_ptr().add((b0 + b) * OB + 16 * v), *a);
                }
            }
            b0 += g;
        }
        k0 += kb;
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    _: &[f32],
    _: usize,
    _: usize,
    _: usize,
    _: &[f32],
    _: usize,
    _: usize,
    _: &mut [f32],
) {
    unreachable!("AVX-512 only on x86-64")
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
