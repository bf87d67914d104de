//! Fully connected layer on the `gemm` crate.

use gemm::Parallelism;

use super::{add_act_chunk, apply_act, Act};

/// `y = act(x W^T + b)` with `W` stored `[out, in]` as in torch.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Vec<f32>,
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
            out_f > 0 && weight.len() % out_f == 0,
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
            weight,
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

    /// `[out, in]` weights.
    pub fn weight(&self) -> &[f32] {
        &self.weight
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
        // SAFETY: out is n x out_f row-major, x is n x in_f row-major, and the right
        // operand is W^T (in_f x out_f) read from W [out_f, in_f] with swapped strides.
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
                self.weight.as_ptr(),
                self.in_f as isize,
                1,
                0.0,
                1.0,
                false,
                false,
                false,
                Parallelism::Rayon(rayon::current_num_threads()),
            );
        }
        match &self.bias {
            Some(b) => out
                .chunks_mut(self.out_f)
                .for_each(|row| add_act_chunk(row, b, self.act)),
            None => apply_act(&mut out, self.act),
        }
        out
    }
}
