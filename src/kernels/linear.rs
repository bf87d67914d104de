//! Fully connected layer: GEMM for batches, a weight-streaming kernel for a few images.

use gemm::Parallelism;

use rayon::prelude::*;

use super::simd::{madd, multiversion};
use super::{add_act_chunk, apply_act, Act};

/// `y = act(x W^T + b)` with `W` stored `[out, in]` as in torch.
#[derive(Clone, Debug)]
pub struct Linear {
    /// Transposed, `[in, out]`: both kernels read it along output features.
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
            wt: transpose(&weight, out_f, in_f),
            bias,
            act,
            in_f,
            out_f,
        }
    }

    pub fn in_features(&self) -> usize {
        self.in_f
    }

    pub fn out_features(&self) -> usize {
        self.out_f
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

    fn forward_gemm(&self, x: &[f32], n: usize, out: &mut [f32]) {
        // SAFETY: out is n x out_f row-major, x is n x in_f row-major, and the
        // stored transposed weights are in_f x out_f row-major.
        unsafe {
            gemm::gemm(
                n,
                self.out_f,
                self.in_f,
                out.as_mut_ptr(),
                1,
                self.out_f as isize,
                false,
                x.as_ptr(),
                1,
                self.in_f as isize,
                self.wt.as_ptr(),
                1,
                self.out_f as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                match super::threads() {
                    1 => Parallelism::None,
                    t => Parallelism::Rayon(t),
                },
            );
        }
    }

    /// A few images: `out[b] += x[b][i] * wt[i]` row by row of the transposed
    /// weights, which are streamed once (the layer is bound by reading them) while
    /// the outputs stay in cache; tasks take blocks of output columns.
    fn forward_small(&self, x: &[f32], n: usize, out: &mut [f32]) {
        let (in_f, out_f) = (self.in_f, self.out_f);
        let blocks = out_f.div_ceil(COLS);
        let parts: Vec<Vec<f32>> = (0..blocks)
            .into_par_iter()
            .map(|blk| {
                let o0 = blk * COLS;
                let cols = COLS.min(out_f - o0);
                let mut part = vec![0f32; n * cols];
                axpy_rows(&self.wt[o0..], out_f, cols, x, in_f, &mut part);
                part
            })
            .collect();
        for (blk, part) in parts.iter().enumerate() {
            let o0 = blk * COLS;
            let cols = part.len() / n;
            for b in 0..n {
                out[b * out_f + o0..][..cols].copy_from_slice(&part[b * cols..][..cols]);
            }
        }
    }
}

/// Batches up to this size use the streaming kernel.
const SMALL_BATCH: usize = 4;
/// Output columns per parallel task of the streaming kernel.
const COLS: usize = 256;

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

/// `[rows, cols]` -> `[cols, rows]`, in cache-sized blocks.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const BLK: usize = 32;
    let mut t = vec![0f32; m.len()];
    for r0 in (0..rows).step_by(BLK) {
        for c0 in (0..cols).step_by(BLK) {
            for r in r0..(r0 + BLK).min(rows) {
                for c in c0..(c0 + BLK).min(cols) {
                    t[c * rows + r] = m[r * cols + c];
                }
            }
        }
    }
    t
}
