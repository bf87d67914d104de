//! The input gradient of a convolution, computed as a convolution: the transpose of
//! a convolution is one (channels swapped within each group, filters turned 180
//! degrees), run on the output gradient with zeros let in between its cells where the
//! layer had a stride. So the backward pass takes the forward's fast paths
//! (depthwise, pointwise GEMM, Winograd, im2col GEMM) instead of a scatter loop.

use rayon::prelude::*;

use super::{Act, Conv2d, ConvGeom, Pad};

/// A layer's transpose, ready to carry gradients from its output back to its input.
#[derive(Clone, Debug)]
pub struct ConvTranspose {
    /// The forward layer's geometry.
    geom: ConvGeom,
    /// The transposed convolution: stride 1, `out_ch` -> `in_ch`.
    conv: Conv2d,
    /// Whether `conv` writes the input gradient directly (stride 1, padding at most
    /// the kernel's span on each side); else it writes the gradient of the padded
    /// input, which is then cut to the input.
    direct: bool,
}

impl ConvTranspose {
    /// The transpose of `layer` (its bias and activation play no part).
    pub fn of(layer: &Conv2d) -> ConvTranspose {
        let g = layer.geom().clone();
        let (kh, kw) = g.kernel;
        let (cin_g, cout_g) = (g.in_ch / g.groups, g.out_ch / g.groups);
        let w = layer.weight();
        let mut t = vec![0f32; w.len()];
        for gi in 0..g.groups {
            for co in 0..cout_g {
                for ci in 0..cin_g {
                    let src = ((gi * cout_g + co) * cin_g + ci) * kh * kw;
                    let dst = ((gi * cin_g + ci) * cout_g + co) * kh * kw;
                    for a in 0..kh {
                        for b in 0..kw {
                            t[dst + (kh - 1 - a) * kw + (kw - 1 - b)] = w[src + a * kw + b];
                        }
                    }
                }
            }
        }
        let span = (g.dilation.0 * (kh - 1), g.dilation.1 * (kw - 1));
        let p = g.pad;
        let direct =
            g.stride == (1, 1) && p.top.max(p.bottom) <= span.0 && p.left.max(p.right) <= span.1;
        let pad = if direct {
            Pad {
                top: span.0 - p.top,
                bottom: span.0 - p.bottom,
                left: span.1 - p.left,
                right: span.1 - p.right,
            }
        } else {
            Pad {
                top: span.0,
                bottom: span.0,
                left: span.1,
                right: span.1,
            }
        };
        let tg = ConvGeom {
            in_ch: g.out_ch,
            out_ch: g.in_ch,
            kernel: g.kernel,
            stride: (1, 1),
            pad,
            dilation: g.dilation,
            groups: g.groups,
        };
        ConvTranspose {
            geom: g,
            conv: Conv2d::new(tg, t, None, Act::None),
            direct,
        }
    }

    /// The gradient with respect to the layer's input `[n, in_ch, h, w]` from the
    /// gradient `dy` with respect to its output `[n, out_ch, oh, ow]` (before bias
    /// and activation, which the caller has already gone back through), into `dx`
    /// (every element written). `scratch` holds the spread and padded gradients
    /// between calls (strided or padded layers), so that they are not allocated again.
    ///
    /// # Panics
    /// If `dy` is not of the output's size for an `h` x `w` input, or `dx` not of the
    /// input's.
    #[allow(clippy::too_many_arguments)]
    pub fn input_grad_into(
        &self,
        dy: &[f32],
        n: usize,
        h: usize,
        w: usize,
        dx: &mut [f32],
        scratch: &mut (Vec<f32>, Vec<f32>),
    ) {
        let g = &self.geom;
        let (oh, ow) = g.out_hw(h, w);
        assert_eq!(
            dy.len(),
            n * g.out_ch * oh * ow,
            "conv backward: gradient is not {n} x {} x {oh} x {ow}",
            g.out_ch
        );
        assert_eq!(dx.len(), n * g.in_ch * h * w, "conv backward: input size");
        if self.direct {
            return self.conv.forward_into(dy, n, oh, ow, dx);
        }
        // The padded input's side less the kernel's span: the output cells' places
        // with the stride's zeros between them, and the rows and columns at the end
        // that no window reached (their gradient is zero).
        let p = g.pad;
        let (ph, pw) = (h + p.top + p.bottom, w + p.left + p.right);
        let (uh, uw) = (
            ph - g.dilation.0 * (g.kernel.0 - 1),
            pw - g.dilation.1 * (g.kernel.1 - 1),
        );
        let (sy, sx) = g.stride;
        let (up, padded) = scratch;
        up.clear();
        up.resize(n * g.out_ch * uh * uw, 0.0);
        up.par_chunks_mut(uh * uw)
            .zip(dy.par_chunks(oh * ow))
            .for_each(|(u, d)| {
                for (y, row) in d.chunks(ow).enumerate() {
                    let urow = &mut u[y * sy * uw..];
                    for (x, &v) in row.iter().enumerate() {
                        urow[x * sx] = v;
                    }
                }
            });
        if (ph, pw) == (h, w) {
            return self.conv.forward_into(up, n, uh, uw, dx);
        }
        padded.resize(n * g.in_ch * ph * pw, 0.0);
        self.conv.forward_into(up, n, uh, uw, padded);
        dx.par_chunks_mut(h * w)
            .zip(padded.par_chunks(ph * pw))
            .for_each(|(d, s)| {
                for (y, row) in d.chunks_mut(w).enumerate() {
                    row.copy_from_slice(&s[(y + p.top) * pw + p.left..][..w]);
                }
            });
    }
}
