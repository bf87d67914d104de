//! Receptive fields of classic networks against published or hand-computed values.
//!
//! Per layer (kernel k, stride s, top/left padding p): j = j_in * s,
//! r = r_in + (k - 1) * j_in, o = o_in - p * j_in; the input pixel is r 1, j 1, o 0.
//! A residual sum covers the union of its branches.

use neurodex::arch::{self, Act, Arch, Builder, Filter, Norm, Op, Pad, Recipe};
use neurodex::receptive::{fields, Field};

/// (size, jump, offset), the same on both axes.
fn rf(arch: &Arch, layer: &str) -> (i64, i64, i64) {
    let i = arch
        .find(layer)
        .unwrap_or_else(|| panic!("{}: no layer {layer}", arch.name));
    let f: Field = fields(arch)[i];
    assert_eq!(f.size[0], f.size[1], "{layer}: square field");
    assert_eq!(f.jump[0], f.jump[1]);
    assert_eq!(f.offset[0], f.offset[1]);
    (f.size[0], f.jump[0], f.offset[0])
}

fn check(arch: &Arch, expected: &[(&str, (i64, i64, i64))]) {
    for &(layer, want) in expected {
        assert_eq!(
            rf(arch, layer),
            want,
            "{} {layer}: (size, jump, offset)",
            arch.name
        );
    }
}

/// CaffeNet's geometry (227 px; conv1 k11 s4 p0; pools k3 s2; conv2 k5 p2 and conv4/5 in
/// two groups; conv3-5 k3 p1). LRN is left out: it changes values, not fields.
fn caffenet() -> Arch {
    let mut b = Builder::new();
    let pool = || Op::MaxPool {
        kernel: (3, 3),
        stride: (2, 2),
        pad: Pad::default(),
        ceil_mode: false,
    };
    b.then(
        "conv1",
        Op::conv("conv1", 3, 96, 11, 4, Pad::default())
            .with_bias()
            .with_act(Act::Relu),
    );
    b.then("pool1", pool());
    b.then(
        "conv2",
        Op::conv("conv2", 96, 256, 5, 1, Pad::same(2))
            .with_bias()
            .with_groups(2)
            .with_act(Act::Relu),
    );
    b.then("pool2", pool());
    b.then(
        "conv3",
        Op::conv("conv3", 256, 384, 3, 1, Pad::same(1))
            .with_bias()
            .with_act(Act::Relu),
    );
    b.then(
        "conv4",
        Op::conv("conv4", 384, 384, 3, 1, Pad::same(1))
            .with_bias()
            .with_groups(2)
            .with_act(Act::Relu),
    );
    b.then(
        "conv5",
        Op::conv("conv5", 384, 256, 3, 1, Pad::same(1))
            .with_bias()
            .with_groups(2)
            .with_act(Act::Relu),
    );
    b.then("pool5", pool());
    let recipe = Recipe {
        size: 227,
        crop_fraction: 1.0,
        filter: Filter::Bilinear,
        norm: Norm::Affine { sub: 0.0, div: 1.0 },
        resize: None,
        bgr: false,
    };
    b.finish("caffenet", "CaffeNet geometry", recipe, &["conv5"])
}

/// The golden values of the Deep Visualization Toolbox / Caffe literature.
#[test]
fn caffenet_fields_are_the_published_ones() {
    check(
        &caffenet(),
        &[
            ("conv1", (11, 4, 0)),
            ("pool1", (19, 8, 0)),
            ("conv2", (51, 8, -16)),
            ("pool2", (67, 16, -16)),
            ("conv3", (99, 16, -32)),
            ("conv4", (131, 16, -48)),
            ("conv5", (163, 16, -64)),
            ("pool5", (195, 32, -64)),
        ],
    );
}

/// torchvision's AlexNet has CaffeNet's kernels and strides but pads conv1 by 2, which
/// moves conv1's offset by 2 * j_in = 2 pixels, a shift every later layer keeps:
/// conv1 r11 j4 o-2; pool1 r19 j8 o-2; conv2 r 19+4*8 = 51, o -2-2*8 = -18;
/// pool2 r 51+2*8 = 67 j16; conv3 r 67+2*16 = 99, o -18-16 = -34; conv4 r131 o-50;
/// conv5 r163 o-66; pool5 r 163+2*16 = 195 j32 o-66.
#[test]
fn torchvision_alexnet_fields() {
    let a = arch::by_name("alexnet").unwrap();
    check(
        &a,
        &[
            ("conv1", (11, 4, -2)),
            ("pool1", (19, 8, -2)),
            ("conv2", (51, 8, -18)),
            ("pool2", (67, 16, -18)),
            ("conv3", (99, 16, -34)),
            ("conv4", (131, 16, -50)),
            ("features.10", (163, 16, -66)),
            ("pool5", (195, 32, -66)),
        ],
    );
    // conv5 is 13x13 at 224: the first unit starts 66 px before the image, the last
    // (12 * 16 - 66 = 126) ends at 289, 65 px past it.
    let f = fields(&a)[a.find("conv5").unwrap()];
    assert_eq!(f.unit_box(0, 0), [-66.0, -66.0, 97.0, 97.0]);
    assert_eq!(f.unit_box(12, 12), [126.0, 126.0, 289.0, 289.0]);
}

/// VGG-16: 3x3 convs with padding 1 add 2 * j_in to r and move o by -j_in; 2x2/s2 pools
/// add j_in to r and double j.
///   conv1_1 r3 o-1, conv1_2 r5 o-2, pool1 r6 j2 o-2;
///   conv2_1 r 6+4 = 10 o-4, conv2_2 r14 o-6, pool2 r16 j4 o-6;
///   conv3_1 r 16+8 = 24 o-10, conv3_2 r32 o-14, conv3_3 r40 o-18, pool3 r44 j8 o-18;
///   conv4_1 r 44+16 = 60 o-26, conv4_2 r76 o-34, conv4_3 r92 o-42, pool4 r100 j16 o-42;
///   conv5_1 r 100+32 = 132 o-58, conv5_2 r164 o-74, conv5_3 r196 o-90, pool5 r212 j32 o-90.
#[test]
fn vgg16_fields() {
    check(
        &arch::by_name("vgg16").unwrap(),
        &[
            ("conv1_1", (3, 1, -1)),
            ("conv1_2", (5, 1, -2)),
            ("pool1", (6, 2, -2)),
            ("conv2_2", (14, 2, -6)),
            ("pool2", (16, 4, -6)),
            ("conv3_3", (40, 4, -18)),
            ("pool3", (44, 8, -18)),
            ("conv4_3", (92, 8, -42)),
            ("pool4", (100, 16, -42)),
            ("conv5_3", (196, 16, -90)),
            ("pool5", (212, 32, -90)),
        ],
    );
}

/// ResNet-18: conv1 k7 s2 p3 r7 j2 o-3; maxpool k3 s2 p1 r 7+2*2 = 11 j4 o -3-2 = -5.
/// A basic block at jump j adds two 3x3 convs (+2j each to r, -j each to o); the
/// shortcut's field lies inside the main branch's, so the sum keeps the main one.
///   layer1.0.conv1 r19 o-9, layer1.0 r27 o-13, layer1.1 r43 o-21;
///   layer2.0.conv1 (s2, at j4) r 43+8 = 51 j8 o-25; layer2.0.conv2 r 51+16 = 67 o-33;
///   layer2.0.downsample (1x1 s2) r43 j8 o-21, inside [-33, 34); layer2.1 r99 o-49;
///   layer3.0 conv1 r 99+16 = 115 j16 o-57, block r 115+32 = 147 o-73; layer3.1 r211 o-105;
///   layer4.0 conv1 r 211+32 = 243 j32 o-121, block r 243+64 = 307 o-153; layer4.1 r435 o-217.
#[test]
fn resnet18_fields() {
    check(
        &arch::by_name("resnet18").unwrap(),
        &[
            ("conv1", (7, 2, -3)),
            ("maxpool", (11, 4, -5)),
            ("layer1.0.conv1", (19, 4, -9)),
            ("layer1.0", (27, 4, -13)),
            ("layer1", (43, 4, -21)),
            ("layer2.0.conv1", (51, 8, -25)),
            ("layer2.0.downsample", (43, 8, -21)),
            ("layer2.0", (67, 8, -33)),
            ("layer2", (99, 8, -49)),
            ("layer3.0", (147, 16, -73)),
            ("layer3", (211, 16, -105)),
            ("layer4.0.conv1", (243, 32, -121)),
            ("layer4", (435, 32, -217)),
        ],
    );
}

/// ResNet-50: bottlenecks grow the field only through their 3x3 conv2 (stride 2 in the
/// first block of layers 2-4); from maxpool (r11 j4 o-5):
///   layer1.0-2 (+8 each) r19/27/35, o -9/-13/-17;
///   layer2.0.conv2 (s2 at j4) r 35+8 = 43 j8 o-21; layer2.1-3 (+16 each) r91 o-45;
///   layer3.0 r 91+16 = 107 j16 o-53; layer3.1-5 (+32 each) r267 o-133;
///   layer4.0 r 267+32 = 299 j32 o-149; layer4.1-2 (+64 each) r427 o-213.
#[test]
fn resnet50_fields() {
    check(
        &arch::by_name("resnet50").unwrap(),
        &[
            ("layer1.0.conv1", (11, 4, -5)),
            ("layer1", (35, 4, -17)),
            ("layer2.0.conv2", (43, 8, -21)),
            ("layer2", (91, 8, -45)),
            ("layer3.0", (107, 16, -53)),
            ("layer3", (267, 16, -133)),
            ("layer4.0", (299, 32, -149)),
            ("layer4", (427, 32, -213)),
        ],
    );
}
