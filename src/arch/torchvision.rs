//! The classic torchvision ImageNet classifiers (AlexNet, VGG-16, ResNet-18/50), with
//! torchvision's tensor names so that their `.pth` checkpoints load unchanged.
//!
//! Node names are torchvision module paths (`features.10`, `layer3.1`, `layer3.1.conv2`);
//! the names used in papers (`conv5`, `conv4_3`, `fc7`) are aliases. A conv followed by
//! BatchNorm and ReLU in torchvision is one node here whose output is the post-ReLU value.
//! Dropout is the identity at evaluation time and has no node.

use super::{Act, Arch, Builder, Filter, Norm, Op, Pad, Recipe};

/// torchvision's BatchNorm2d default.
const BN_EPS: f32 = 1e-5;

/// torchvision's evaluation transform: resize to 256, centre crop 224, bilinear,
/// ImageNet mean/std.
fn imagenet_recipe() -> Recipe {
    Recipe {
        size: 224,
        crop_fraction: 0.875,
        filter: Filter::Bilinear,
        norm: Norm::MeanStd {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        },
        resize: None,
        bgr: false,
    }
}

fn max_pool(k: usize, s: usize, p: usize) -> Op {
    Op::MaxPool {
        kernel: (k, k),
        stride: (s, s),
        pad: Pad::same(p),
        ceil_mode: false,
    }
}

fn linear(weight: &str, in_f: usize, out_f: usize, act: Act) -> Op {
    Op::Linear {
        weight: weight.into(),
        in_f,
        out_f,
        act,
    }
}

/// Average pooling to `side`, a hidden flatten, then `(module index, in, out, relu)` linear
/// layers named `classifier.<index>` with aliases `fc6`, `fc7`, `fc8`.
fn classifier(b: &mut Builder, side: usize, layers: [(usize, usize, usize, bool); 3]) {
    b.then("avgpool", Op::AdaptiveAvgPool { out: (side, side) });
    let flat = b.then("flatten", Op::Flatten);
    b.hide(flat);
    for ((index, in_f, out_f, relu), alias) in layers.into_iter().zip(["fc6", "fc7", "fc8"]) {
        let name = format!("classifier.{index}");
        let act = if relu { Act::Relu } else { Act::None };
        let i = b.then(&name, linear(&name, in_f, out_f, act));
        b.alias(i, &[alias]);
    }
}

/// AlexNet as in torchvision (the "one weird trick" variant: 64-192-384-256-256 channels,
/// no LRN, no groups, conv1 padding 2).
pub fn alexnet() -> Arch {
    let mut b = Builder::new();
    // (features index, in, out, kernel, stride, pad, alias)
    let convs = [
        (0, 3, 64, 11, 4, 2, "conv1"),
        (3, 64, 192, 5, 1, 2, "conv2"),
        (6, 192, 384, 3, 1, 1, "conv3"),
        (8, 384, 256, 3, 1, 1, "conv4"),
        (10, 256, 256, 3, 1, 1, "conv5"),
    ];
    for (index, in_ch, out_ch, k, s, p, alias) in convs {
        let name = format!("features.{index}");
        let conv = Op::conv(&name, in_ch, out_ch, k, s, Pad::same(p))
            .with_bias()
            .with_act(Act::Relu);
        let i = b.then(&name, conv);
        b.alias(i, &[alias]);
        // Max pooling follows conv1, conv2 and conv5 (pool1, pool2, pool5).
        let pool = match index {
            0 => Some((2, "pool1")),
            3 => Some((5, "pool2")),
            10 => Some((12, "pool5")),
            _ => None,
        };
        if let Some((pool_index, pool_alias)) = pool {
            let i = b.then(&format!("features.{pool_index}"), max_pool(3, 2, 0));
            b.alias(i, &[pool_alias]);
        }
    }
    classifier(
        &mut b,
        6,
        [
            (1, 256 * 6 * 6, 4096, true),
            (4, 4096, 4096, true),
            (6, 4096, 1000, false),
        ],
    );
    b.finish(
        "alexnet",
        "AlexNet (torchvision layout: 64-192-384-256-256, no LRN), ImageNet-1k; needs --weights (alexnet-owt-*.pth)",
        imagenet_recipe(),
        &["features.0", "features.3", "features.6", "features.8", "features.10"],
    )
}

/// VGG-16 (configuration D, no BatchNorm) as in torchvision.
pub fn vgg16() -> Arch {
    let mut b = Builder::new();
    // Output channels of each stage's 3x3 convs; every stage ends with a 2x2 max pool.
    let stages: [&[usize]; 5] = [
        &[64, 64],
        &[128, 128],
        &[256, 256, 256],
        &[512, 512, 512],
        &[512, 512, 512],
    ];
    let mut index = 0;
    let mut in_ch = 3;
    for (stage, widths) in stages.iter().enumerate() {
        for (j, &out_ch) in widths.iter().enumerate() {
            let name = format!("features.{index}");
            let conv = Op::conv(&name, in_ch, out_ch, 3, 1, Pad::same(1))
                .with_bias()
                .with_act(Act::Relu);
            let i = b.then(&name, conv);
            b.alias(i, &[&format!("conv{}_{}", stage + 1, j + 1)]);
            in_ch = out_ch;
            index += 2; // conv, ReLU
        }
        let i = b.then(&format!("features.{index}"), max_pool(2, 2, 0));
        b.alias(i, &[&format!("pool{}", stage + 1)]);
        index += 1;
    }
    classifier(
        &mut b,
        7,
        [
            (0, 512 * 7 * 7, 4096, true),
            (3, 4096, 4096, true),
            (6, 4096, 1000, false),
        ],
    );
    b.finish(
        "vgg16",
        "VGG-16 (configuration D, no BatchNorm), ImageNet-1k; needs --weights (vgg16-*.pth)",
        imagenet_recipe(),
        // The last conv of each stage, just before its pool.
        &[
            "features.2",
            "features.7",
            "features.14",
            "features.21",
            "features.28",
        ],
    )
}

/// ResNet-18 (basic blocks, [2, 2, 2, 2]).
pub fn resnet18() -> Arch {
    resnet("resnet18", false, [2, 2, 2, 2])
}

/// ResNet-50 (bottleneck blocks, [3, 4, 6, 3]; stride on the 3x3 conv, torchvision's "v1.5").
pub fn resnet50() -> Arch {
    resnet("resnet50", true, [3, 4, 6, 3])
}

fn resnet(name: &str, bottleneck: bool, blocks: [usize; 4]) -> Arch {
    let expansion = if bottleneck { 4 } else { 1 };
    let mut b = Builder::new();
    b.then(
        "conv1",
        Op::conv("conv1", 3, 64, 7, 2, Pad::same(3))
            .with_bn("bn1", BN_EPS)
            .with_act(Act::Relu),
    );
    b.then("maxpool", max_pool(3, 2, 1));
    let mut in_ch = 64;
    for (stage, &count) in blocks.iter().enumerate() {
        let width = 64 << stage;
        let out_ch = width * expansion;
        for block in 0..count {
            let stride = if stage > 0 && block == 0 { 2 } else { 1 };
            let p = format!("layer{}.{block}", stage + 1);
            let block_in = b.last();
            // (conv index, in, out, kernel, stride); ReLU after all but the last.
            let convs: Vec<(usize, usize, usize, usize, usize)> = if bottleneck {
                vec![
                    (1, in_ch, width, 1, 1),
                    (2, width, width, 3, stride),
                    (3, width, out_ch, 1, 1),
                ]
            } else {
                vec![(1, in_ch, width, 3, stride), (2, width, width, 3, 1)]
            };
            let last = convs.len();
            for (n, cin, cout, k, s) in convs {
                let conv = Op::conv(&format!("{p}.conv{n}"), cin, cout, k, s, Pad::same(k / 2))
                    .with_bn(&format!("{p}.bn{n}"), BN_EPS)
                    .with_act(if n < last { Act::Relu } else { Act::None });
                b.then(&format!("{p}.conv{n}"), conv);
            }
            let main = b.last();
            let shortcut = if stride != 1 || in_ch != out_ch {
                let ds = Op::conv(
                    &format!("{p}.downsample.0"),
                    in_ch,
                    out_ch,
                    1,
                    stride,
                    Pad::default(),
                )
                .with_bn(&format!("{p}.downsample.1"), BN_EPS);
                b.push(&format!("{p}.downsample"), ds, &[block_in])
            } else {
                block_in
            };
            let out = b.push(&p, Op::Add { act: Act::Relu }, &[main, shortcut]);
            if block + 1 == count {
                b.alias(out, &[&format!("layer{}", stage + 1)]);
            }
            in_ch = out_ch;
        }
    }
    b.then("avgpool", Op::AdaptiveAvgPool { out: (1, 1) });
    let flat = b.then("flatten", Op::Flatten);
    b.hide(flat);
    b.then("fc", linear("fc", in_ch, 1000, Act::None));
    let depth = &name["resnet".len()..];
    b.finish(
        name,
        &format!("ResNet-{depth} (torchvision), ImageNet-1k; needs --weights ({name}-*.pth)"),
        imagenet_recipe(),
        &["conv1", "layer1", "layer2", "layer3", "layer4"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(arch: &Arch) -> usize {
        arch.parameters()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// Parameter counts published by torchvision (`weights.meta["num_params"]`), plus the
    /// BatchNorm running means and variances, which are buffers there: 2 x 4,800 BN channels
    /// in ResNet-18, 2 x 26,560 in ResNet-50.
    #[test]
    fn parameter_counts_match_torchvision() {
        assert_eq!(count(&alexnet()), 61_100_840);
        assert_eq!(count(&vgg16()), 138_357_544);
        assert_eq!(count(&resnet18()), 11_689_512 + 2 * 4_800);
        assert_eq!(count(&resnet50()), 25_557_032 + 2 * 26_560);
    }

    #[test]
    fn names_are_unique_and_aliases_resolve() {
        for arch in [alexnet(), vgg16(), resnet18(), resnet50()] {
            let mut names: Vec<&str> = arch
                .nodes
                .iter()
                .flat_map(|n| {
                    std::iter::once(n.name.as_str()).chain(n.aliases.iter().map(|a| a.as_str()))
                })
                .collect();
            let total = names.len();
            names.sort();
            names.dedup();
            assert_eq!(
                names.len(),
                total,
                "{}: duplicate node name or alias",
                arch.name
            );
            assert!(matches!(
                arch.nodes.last().unwrap().op,
                Op::Linear { out_f: 1000, .. }
            ));
            assert_eq!(arch.classes, 1000);
        }
        let a = alexnet();
        assert_eq!(a.find("conv5"), a.find("features.10"));
        assert_eq!(a.find("fc8"), a.find("logits"));
        let v = vgg16();
        assert_eq!(v.find("conv4_3"), v.find("features.21"));
        assert_eq!(v.find("pool5"), v.find("features.30"));
        let r = resnet50();
        assert_eq!(r.find("layer3"), r.find("layer3.5"));
        assert_eq!(r.find("fc"), r.find("logits"));
    }
}
