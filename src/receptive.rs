//! Receptive fields computed from an architecture's layer description.
//!
//! Per axis, with kernel k, stride s, top/left padding p and dilation d
//! (k_eff = d(k-1)+1): jump j = j_in*s, size r = r_in + (k_eff-1)*j_in,
//! offset o = o_in - p*j_in. Unit i then covers input pixels [i*j + o, i*j + o + r).
//! A residual sum covers the union of its branches. Nothing here is per-architecture.

use serde::Serialize;

use crate::arch::{Arch, Op};

/// Receptive field of every unit of one layer, per axis `[y, x]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Field {
    pub size: [i64; 2],
    pub jump: [i64; 2],
    pub offset: [i64; 2],
}

impl Field {
    pub const PIXEL: Field = Field {
        size: [1, 1],
        jump: [1, 1],
        offset: [0, 0],
    };

    /// Input pixels seen by unit (y, x): `[x0, y0, x1, y1]`, end exclusive. The box
    /// may spill past the input's border (negative, or beyond its size).
    pub fn unit_box(&self, y: usize, x: usize) -> [f64; 4] {
        let x0 = x as i64 * self.jump[1] + self.offset[1];
        let y0 = y as i64 * self.jump[0] + self.offset[0];
        [
            x0 as f64,
            y0 as f64,
            (x0 + self.size[1]) as f64,
            (y0 + self.size[0]) as f64,
        ]
    }

    /// Through a sliding window (conv or pool) along both axes.
    fn window(
        &self,
        k: (usize, usize),
        s: (usize, usize),
        pad_before: (usize, usize),
        d: (usize, usize),
    ) -> Field {
        let mut f = *self;
        for (a, (k, s, p, d)) in [(k.0, s.0, pad_before.0, d.0), (k.1, s.1, pad_before.1, d.1)]
            .into_iter()
            .enumerate()
        {
            let k_eff = (d * (k - 1) + 1) as i64;
            f.size[a] = self.size[a] + (k_eff - 1) * self.jump[a];
            f.offset[a] = self.offset[a] - p as i64 * self.jump[a];
            f.jump[a] = self.jump[a] * s as i64;
        }
        f
    }

    /// The smallest field covering both (a residual sum's branches).
    fn union(&self, other: &Field) -> Field {
        let mut f = *self;
        for a in 0..2 {
            let start = self.offset[a].min(other.offset[a]);
            let end = (self.offset[a] + self.size[a]).max(other.offset[a] + other.size[a]);
            f.offset[a] = start;
            f.size[a] = end - start;
            f.jump[a] = self.jump[a].max(other.jump[a]);
        }
        f
    }
}

/// The receptive field of every node of `arch` at its recipe's input size.
pub fn fields(arch: &Arch) -> Vec<Field> {
    let shapes = arch.output_shapes();
    let mut out: Vec<Field> = Vec::with_capacity(arch.nodes.len());
    for (idx, node) in arch.nodes.iter().enumerate() {
        let field = match (&node.op, node.inputs.first()) {
            (Op::Input, _) | (_, None) => Field::PIXEL,
            (op, Some(&first)) => {
                let inp = out[first];
                let [_, h, w] = shapes[first];
                match op {
                    Op::Conv {
                        kernel,
                        stride,
                        pad,
                        dilation,
                        ..
                    } => inp.window(*kernel, *stride, (pad.top, pad.left), *dilation),
                    Op::MaxPool {
                        kernel,
                        stride,
                        pad,
                        ..
                    }
                    | Op::AvgPool {
                        kernel,
                        stride,
                        pad,
                        ..
                    } => inp.window(*kernel, *stride, (pad.top, pad.left), (1, 1)),
                    Op::AdaptiveAvgPool { out: (oh, ow) } => {
                        // Exact when the size divides evenly (including global pooling);
                        // otherwise the widest window, at the average stride.
                        let k = (adaptive_window(h, *oh), adaptive_window(w, *ow));
                        let s = ((h / oh).max(1), (w / ow).max(1));
                        inp.window(k, s, (0, 0), (1, 1))
                    }
                    // A unit of a sum sees every branch; a unit of a concatenation sees
                    // its own branch, and a layer's field is the union over its units.
                    Op::Add { .. } | Op::Concat => {
                        node.inputs[1..].iter().fold(inp, |f, &i| f.union(&out[i]))
                    }
                    Op::Unary { .. }
                    | Op::Shuffle { .. }
                    | Op::Slice { .. }
                    | Op::ChannelMean
                    | Op::LayerNorm { .. }
                    | Op::Softmax => inp,
                    // A per-channel gate (squeeze-and-excitation) scales a unit but does
                    // not move where it looks: the field is the map inputs' only.
                    Op::Mul | Op::Binary { .. } => {
                        let maps: Vec<usize> = node
                            .inputs
                            .iter()
                            .copied()
                            .filter(|&i| shapes[i][1..] == shapes[idx][1..])
                            .collect();
                        // (Broadcasting [1, H, 1] against [1, 1, W] has no map input.)
                        let first = maps.first().map_or(inp, |&i| out[i]);
                        maps.iter().skip(1).fold(first, |f, &i| f.union(&out[i]))
                    }
                    // Every output of a flattening or fully connected layer sees the whole map.
                    Op::Flatten | Op::Linear { .. } => {
                        inp.window((h, w), (h.max(1), w.max(1)), (0, 0), (1, 1))
                    }
                    Op::Input => unreachable!(),
                }
            }
        };
        out.push(field);
    }
    out
}

/// Widest window of torch's adaptive pooling: cell i reads [floor(i*len/out), ceil((i+1)*len/out)).
fn adaptive_window(len: usize, out: usize) -> usize {
    (0..out)
        .map(|i| ((i + 1) * len).div_ceil(out) - i * len / out)
        .max()
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch;

    fn field(arch: &Arch, name: &str) -> Field {
        fields(arch)[arch.find(name).unwrap()]
    }

    /// Hand-computed for EfficientNet-Lite0 (TF SAME padding, (0,1) on stride-2 k3, (1,2) on stride-2 k5):
    /// stem k3 s2 pad_top 0: r = 1 + 2*1 = 3, j = 2, o = 0 - 0 = 0.
    /// blocks.0.dw k3 s1 pad 1: r = 3 + 2*2 = 7, j 2, o = 0 - 1*2 = -2.
    /// blocks.1.dw k3 s2 pad_top 0 (after the 1x1 expand/project): r = 7 + 2*2 = 11, j 4, o = -2.
    /// blocks.2.dw k3 s1 pad 1: r = 11 + 2*4 = 19, j 4, o = -2 - 4 = -6; the residual sum
    /// unions it with blocks.1 (r 11, o -2): [-6, 13) and [-2, 9) -> r 19, o -6.
    /// blocks.3.dw k5 s2 pad_top 1: r = 19 + 4*4 = 35, j 8, o = -6 - 1*4 = -10.
    #[test]
    fn lite0_fields_follow_the_asymmetric_same_padding() {
        let a = arch::by_name("efficientnet-lite0").unwrap();
        let f = |n| field(&a, n);
        assert_eq!(
            f("stem"),
            Field {
                size: [3, 3],
                jump: [2, 2],
                offset: [0, 0]
            }
        );
        assert_eq!(
            f("blocks.0.dw"),
            Field {
                size: [7, 7],
                jump: [2, 2],
                offset: [-2, -2]
            }
        );
        assert_eq!(
            f("blocks.1"),
            Field {
                size: [11, 11],
                jump: [4, 4],
                offset: [-2, -2]
            }
        );
        assert_eq!(
            f("blocks.2"),
            Field {
                size: [19, 19],
                jump: [4, 4],
                offset: [-6, -6]
            }
        );
        assert_eq!(
            f("blocks.3.dw"),
            Field {
                size: [35, 35],
                jump: [8, 8],
                offset: [-10, -10]
            }
        );
        // The stem's unit (0, 0) reads pixels 0..3: no padding on the top/left side.
        assert_eq!(f("stem").unit_box(0, 0), [0.0, 0.0, 3.0, 3.0]);
        // Its last unit (111) reads 222..225: one padded pixel past the 224 border.
        assert_eq!(f("stem").unit_box(111, 111), [222.0, 222.0, 225.0, 225.0]);
    }

    #[test]
    fn global_pool_and_classifier_see_the_whole_map() {
        let a = arch::by_name("efficientnet-lite0").unwrap();
        let head = field(&a, "head");
        let pool = field(&a, "pool");
        // 7 head units at jump 32: the pool spans 6 more jumps.
        assert_eq!(pool.size[0], head.size[0] + 6 * head.jump[0]);
        assert_eq!(pool.offset, head.offset);
        assert_eq!(field(&a, "logits").size, pool.size);
    }
}
