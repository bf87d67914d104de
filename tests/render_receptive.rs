//! The receptive-field crop of the unit that fires on a bright square contains that
//! square, in original-image pixels. Networks are tiny, with hand-set weights: every
//! conv averages brightness, so the strongest unit is the one centred on the square.
//! Two geometries: stride-2 convs with TF-style asymmetric padding, and AlexNet's.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use image::{Rgb, RgbImage};
use neurodex::arch::{Act, Arch, Builder, Filter, Norm, Op, Pad, Recipe};
use neurodex::model::Network;
use neurodex::preprocess::{self, Transform};
use neurodex::receptive;
use neurodex::render::tile;

fn recipe(size: u32, crop_fraction: f64) -> Recipe {
    Recipe {
        size,
        crop_fraction,
        filter: Filter::Bilinear,
        norm: Norm::Affine {
            sub: 0.0,
            div: 255.0,
        },
        resize: None,
        bgr: false,
    }
}

/// Averaging weights for every conv of `arch`: each output is the mean of its window.
fn averaging_weights(arch: &Arch) -> HashMap<String, Tensor> {
    arch.parameters()
        .into_iter()
        .map(|(name, shape)| {
            let n: usize = shape.iter().product();
            let per_out = n / shape[0];
            let v = if name.ends_with(".weight") {
                1.0 / per_out as f32
            } else {
                0.0
            };
            let t = Tensor::from_vec(vec![v; n], shape.as_slice(), &Device::Cpu).unwrap();
            (name, t)
        })
        .collect()
}

fn conv(name: &str, inp: usize, k: usize, s: usize, pad: Pad) -> Op {
    Op::conv(name, inp, 1, k, s, pad).with_act(Act::Relu)
}

/// Three stride-2 convs with "SAME" padding that puts the odd pixel bottom/right.
fn stride2_asym(crop_fraction: f64) -> Arch {
    let mut b = Builder::new();
    b.then("c1", conv("c1", 3, 3, 2, Pad::asym(0, 1)));
    b.then("c2", conv("c2", 1, 3, 2, Pad::asym(0, 1)));
    b.then("c3", conv("c3", 1, 5, 2, Pad::asym(1, 2)));
    b.finish(
        "s2",
        "stride-2 asym test",
        recipe(64, crop_fraction),
        &["c3"],
    )
}

/// torchvision AlexNet's feature extractor geometry, one channel wide.
fn alexnet_like() -> Arch {
    let mut b = Builder::new();
    b.then("conv1", conv("f0", 3, 11, 4, Pad::same(2)).with_bias());
    let pool = |b: &mut Builder, n: &str| {
        b.then(
            n,
            Op::MaxPool {
                kernel: (3, 3),
                stride: (2, 2),
                pad: Pad::default(),
                ceil_mode: false,
            },
        )
    };
    pool(&mut b, "pool1");
    b.then("conv2", conv("f3", 1, 5, 1, Pad::same(2)).with_bias());
    pool(&mut b, "pool2");
    b.then("conv3", conv("f6", 1, 3, 1, Pad::same(1)).with_bias());
    b.then("conv4", conv("f8", 1, 3, 1, Pad::same(1)).with_bias());
    b.then("conv5", conv("f10", 1, 3, 1, Pad::same(1)).with_bias());
    b.finish(
        "alex",
        "alexnet geometry test",
        recipe(224, 0.875),
        &["conv5"],
    )
}

/// A black `w` x `h` image with a white square `[x0, y0, x0+side, y0+side)`.
fn square_image(w: u32, h: u32, x0: u32, y0: u32, side: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let inside = (x0..x0 + side).contains(&x) && (y0..y0 + side).contains(&y);
        if inside {
            Rgb([255, 255, 255])
        } else {
            Rgb([0, 0, 0])
        }
    })
}

struct Found {
    exact: [f64; 4],
    transform: Transform,
}

/// Runs `img` through `arch`, finds the strongest unit of `layer` (naive argmax) and
/// maps its receptive field back to the original image.
fn strongest_field(arch: Arch, layer: &str, img: &RgbImage) -> Found {
    let tensors = averaging_weights(&arch);
    let idx = arch.resolve(layer).unwrap();
    let field = receptive::fields(&arch)[idx];
    let net = Network::from_tensors(arch, &tensors).unwrap();
    let (x, t) = preprocess::prepare(img, &net.arch.recipe);
    let act = net.forward_raw(&x, 1, &[idx]).unwrap().remove(0);
    let mut best = (f32::NEG_INFINITY, 0, 0);
    for y in 0..act.h {
        for xx in 0..act.w {
            let v = act.data[y * act.w + xx];
            if v > best.0 {
                best = (v, y, xx);
            }
        }
    }
    assert!(best.0 > 0.0, "the square must excite the unit");
    let b = field.unit_box(best.1, best.2);
    Found {
        exact: t.box_to_original(b).exact,
        transform: t,
    }
}

fn contains(outer: [f64; 4], inner: [f64; 4]) -> bool {
    outer[0] <= inner[0] && outer[1] <= inner[1] && outer[2] >= inner[2] && outer[3] >= inner[3]
}

/// The crop tile shows the square where it lies within the field, and padding
/// exactly where the field leaves the image.
fn check_crop(img: &RgbImage, found: &Found, square: [f64; 4]) {
    let e = found.exact;
    let crop = tile::crop_padded(img, e, 128, 128);
    let s = crop.width() as f64 / (e[2] - e[0]);
    let cx = ((square[0] + square[2]) / 2.0 - e[0]) * s;
    let cy = ((square[1] + square[3]) / 2.0 - e[1]) * s;
    assert_eq!(
        crop.get_pixel(cx as u32, cy as u32).0,
        [255, 255, 255],
        "square centre in the crop"
    );
    // Spill: the tile column at the left image border, scaled.
    if e[0] < 0.0 {
        let border = (-e[0] * s) as u32;
        assert!(border >= 2);
        assert!(tile::is_padding(
            *crop.get_pixel(border - 2, crop.height() / 2)
        ));
        assert!(!tile::is_padding(
            *crop.get_pixel(border + 2, crop.height() / 2)
        ));
    }
    if e[1] < 0.0 {
        let border = (-e[1] * s) as u32;
        assert!(tile::is_padding(
            *crop.get_pixel(crop.width() / 2, border - 2)
        ));
    }
}

#[test]
fn stride2_asymmetric_field_holds_the_square() {
    let arch = stride2_asym(0.875);
    // Hand-computed: c3 size 3 + 2*2 + 4*4 = 23, jump 8, offset -1*4 = -4.
    let f = receptive::fields(&arch)[arch.resolve("c3").unwrap()];
    assert_eq!((f.size, f.jump, f.offset), ([23, 23], [8, 8], [-4, -4]));
    // 200 x 150 original; the net sees the centre 87.5% of the short side (131.25 px,
    // whole pixels or not) at x0 = 34.375, y0 = 9.375.
    let square = [120.0, 60.0, 128.0, 68.0];
    let img = square_image(200, 150, 120, 60, 8);
    let found = strongest_field(arch, "c3", &img);
    let c = found.transform.crop;
    for (got, want) in c.iter().zip([34.375, 9.375, 131.25, 131.25]) {
        assert!((got - want).abs() <= 0.5, "{c:?}");
    }
    assert!(contains(found.exact, square), "{:?}", found.exact);
    // 23 input px at crop/64 original px each: the crop is tight, not the whole image.
    assert!((found.exact[2] - found.exact[0] - 23.0 * c[2] / 64.0).abs() < 1e-9);
    check_crop(&img, &found, square);
}

#[test]
fn stride2_field_at_the_corner_spills_and_is_padded() {
    // The net sees the whole height (crop [25, 0, 150, 150]); the square touches the
    // top of the image, so the top units' fields (offset -4 input px) reach above it.
    let square = [26.0, 1.0, 32.0, 7.0];
    let img = square_image(200, 150, 26, 1, 6);
    let found = strongest_field(stride2_asym(1.0), "c3", &img);
    assert_eq!(found.transform.crop, [25.0, 0.0, 150.0, 150.0]);
    assert!(contains(found.exact, square), "{:?}", found.exact);
    assert!(
        found.exact[1] < 0.0,
        "the field leaves the image at the top"
    );
    check_crop(&img, &found, square);
}

#[test]
fn alexnet_geometry_field_holds_the_square() {
    let arch = alexnet_like();
    // FACTS: torchvision AlexNet conv5 has size 163, jump 16, offset -66.
    let f = receptive::fields(&arch)[arch.resolve("conv5").unwrap()];
    assert_eq!(
        (f.size, f.jump, f.offset),
        ([163, 163], [16, 16], [-66, -66])
    );
    // 320 x 240 original, 210 px crop at (55, 15); a square near its top-left corner.
    let square = [70.0, 25.0, 90.0, 45.0];
    let img = square_image(320, 240, 70, 25, 20);
    let found = strongest_field(arch, "conv5", &img);
    assert_eq!(found.transform.crop, [55.0, 15.0, 210.0, 210.0]);
    assert!(contains(found.exact, square), "{:?}", found.exact);
    assert!(
        found.exact[1] < 0.0 || found.exact[0] < 0.0,
        "a corner field spills"
    );
    check_crop(&img, &found, square);
}
