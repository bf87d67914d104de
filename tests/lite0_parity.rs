//! The embedded EfficientNet-Lite0 reproduces onnxruntime's activations.
//!
//! `fixtures/efficientnet_lite0_reference.safetensors` holds, for two photos, the exact
//! preprocessed input and the outputs of several stages and the logits, computed with
//! onnxruntime from the same checkpoint. Our forward must match every stage and the
//! logits within 1e-5 of the stage's largest magnitude (max abs difference): f32 sums
//! taken in another order than onnxruntime's drift by about 2-6e-6 of it by blocks.2
//! (whose values reach 50), depending on the kernels' order of summation.

use candle_core::{DType, Device, Tensor};
use neurodex::model::Network;

/// The forward pass on a candle tensor `[N, 3, H, W]`: one `[N, C, H, W]` tensor per
/// named tap, so the outputs compare with the reference tensors directly.
fn forward(net: &Network, input: &Tensor, taps: &[&str]) -> neurodex::Result<Vec<Tensor>> {
    let (n, _, h, w) = input.dims4()?;
    let nodes = taps
        .iter()
        .map(|t| net.arch.resolve(t))
        .collect::<neurodex::Result<Vec<_>>>()?;
    let x = input
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    net.forward_hw(&x, n, h, w, &nodes)?
        .into_iter()
        .map(|a| {
            Ok(Tensor::from_vec(
                a.data,
                (a.n, a.c, a.h, a.w),
                &Device::Cpu,
            )?)
        })
        .collect()
}

const STAGES: [&str; 9] = [
    "stem",
    "blocks.0",
    "blocks.2",
    "blocks.4",
    "blocks.7",
    "blocks.10",
    "blocks.14",
    "blocks.15",
    "head",
];

/// Largest |element|.
fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The allowed max abs difference from reference stage `want`.
fn tolerance(want: &Tensor) -> f32 {
    1e-5 * max_abs(want).max(1.0)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    max_abs(&(a - b).unwrap())
}

#[test]
fn stages_and_logits_match_onnxruntime() {
    let refs = candle_core::safetensors::load(
        "tests/fixtures/efficientnet_lite0_reference.safetensors",
        &Device::Cpu,
    )
    .unwrap();
    let net = Network::embedded_default().unwrap();
    // On each instruction set this CPU has: the channel-blocked kernels all the way.
    neurodex::kernels::isa::on_every_isa(|isa| stages_match(&net, &refs, isa.name()));
}

fn stages_match(net: &Network, refs: &std::collections::HashMap<String, Tensor>, isa: &str) {
    for photo in ["chelsea", "astronaut"] {
        let input = &refs[&format!("{photo}.input")];
        let mut taps: Vec<&str> = STAGES.to_vec();
        taps.push("logits");
        let outs = forward(net, input, &taps).unwrap();
        for (name, out) in STAGES.iter().zip(&outs) {
            let want = &refs[&format!("{photo}.{name}")];
            let d = max_abs_diff(out, want);
            eprintln!("{isa}: {photo} {name}: max abs diff {d:.2e}");
            assert!(
                d <= tolerance(want),
                "{isa}: {photo} {name}: max abs diff {d}"
            );
        }
        let logits = outs.last().unwrap().reshape((1, 1000)).unwrap();
        let want = &refs[&format!("{photo}.logits")];
        let d = max_abs_diff(&logits, want);
        eprintln!("{isa}: {photo} logits: max abs diff {d:.2e}");
        assert!(
            d <= tolerance(want),
            "{isa}: {photo} logits: max abs diff {d}"
        );
    }
}

#[test]
fn batches_give_the_same_answer_as_single_images() {
    let refs = candle_core::safetensors::load(
        "tests/fixtures/efficientnet_lite0_reference.safetensors",
        &Device::Cpu,
    )
    .unwrap();
    let net = Network::embedded_default().unwrap();
    let batch = Tensor::cat(&[&refs["chelsea.input"], &refs["astronaut.input"]], 0).unwrap();
    let both = forward(&net, &batch, &["blocks.4", "logits"]).unwrap();
    for (i, photo) in ["chelsea", "astronaut"].iter().enumerate() {
        let want = &refs[&format!("{photo}.blocks.4")];
        let d = max_abs_diff(&both[0].narrow(0, i, 1).unwrap(), want);
        assert!(
            d <= tolerance(want),
            "{photo} blocks.4 in a batch of 2: {d}"
        );
    }
}

#[test]
fn forward_stops_at_the_deepest_tap_and_returns_taps_in_the_order_asked() {
    let net = Network::embedded_default().unwrap();
    let x = Tensor::zeros((1, 3, 224, 224), candle_core::DType::F32, &Device::Cpu).unwrap();
    let outs = forward(&net, &x, &["blocks.2", "stem"]).unwrap();
    assert_eq!(outs[0].dims(), &[1, 24, 56, 56]);
    assert_eq!(outs[1].dims(), &[1, 32, 112, 112]);
    let err = forward(&net, &x, &["blocks.99"]).unwrap_err().to_string();
    assert!(err.contains("blocks.99"), "{err}");
}

/// Our decode + centre crop + bicubic + (x-127)/128 agrees with the reference input,
/// made with PIL from the original PNGs; the demo copies are JPEGs, so allow their
/// compression noise on average, and check that no pixel is off by more than a few levels.
#[test]
fn preprocessing_matches_the_reference_input() {
    let refs = candle_core::safetensors::load(
        "tests/fixtures/efficientnet_lite0_reference.safetensors",
        &Device::Cpu,
    )
    .unwrap();
    let net = Network::embedded_default().unwrap();
    for (photo, file) in [
        ("chelsea", "animals__chelsea.jpg"),
        ("astronaut", "people__astronaut.jpg"),
    ] {
        let img = neurodex::preprocess::open_image(
            std::path::Path::new(&format!("datasets/demo/images/{file}")),
            neurodex::preprocess::DEFAULT_MAX_PIXELS,
        )
        .unwrap();
        let (x, t) = neurodex::preprocess::prepare(&img, &net.arch.recipe);
        let want = refs[&format!("{photo}.input")]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let diffs: Vec<f32> = x
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs() * 128.0)
            .collect();
        let mean = diffs.iter().sum::<f32>() / diffs.len() as f32;
        let mut sorted = diffs.clone();
        sorted.sort_by(f32::total_cmp);
        let p99 = sorted[sorted.len() * 99 / 100];
        eprintln!(
            "{photo}: mean {mean:.3} levels, p99 {p99:.1}, crop {:?}",
            t.crop
        );
        assert!(mean < 3.0, "{photo}: mean abs diff {mean} grey levels");
        assert!(
            p99 < 12.0,
            "{photo}: 99th percentile diff {p99} grey levels"
        );
    }
}

/// Batches larger than the thread count run a few images at a time; the concatenated
/// taps must still hold each image's own activations, in order.
#[test]
fn a_batch_of_five_matches_each_image_alone() {
    let refs = candle_core::safetensors::load(
        "tests/fixtures/efficientnet_lite0_reference.safetensors",
        &Device::Cpu,
    )
    .unwrap();
    let net = Network::embedded_default().unwrap();
    let (c, a) = (&refs["chelsea.input"], &refs["astronaut.input"]);
    let order = [c, a, a, c, a];
    let batch = Tensor::cat(&order, 0).unwrap();
    for threads in [1, 2, 3] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let outs = pool.install(|| forward(&net, &batch, &["blocks.7", "logits"]).unwrap());
        for (i, img) in order.iter().enumerate() {
            let photo = if std::ptr::eq(*img, c) {
                "chelsea"
            } else {
                "astronaut"
            };
            let want = &refs[&format!("{photo}.blocks.7")];
            let d = max_abs_diff(&outs[0].narrow(0, i, 1).unwrap(), want);
            assert!(
                d <= tolerance(want),
                "{threads} threads, image {i} ({photo}) blocks.7: {d}"
            );
            let logits = outs[1].narrow(0, i, 1).unwrap().reshape((1, 1000)).unwrap();
            let want = &refs[&format!("{photo}.logits")];
            let d = max_abs_diff(&logits, want);
            assert!(
                d <= tolerance(want),
                "{threads} threads, image {i} ({photo}) logits: {d}"
            );
        }
    }
}

/// f32 tensor as a flat vector.
fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(candle_core::DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// BatchNorm (eps 1e-3) of one channel's conv sum, in f64, from the checkpoint's
/// own tensors `{bn}.weight/bias/running_mean/running_var`.
fn batch_norm(
    w: &std::collections::HashMap<String, Tensor>,
    bn: &str,
) -> impl Fn(usize, f64) -> f64 {
    let g = flat(&w[&format!("{bn}.weight")]);
    let b = flat(&w[&format!("{bn}.bias")]);
    let m = flat(&w[&format!("{bn}.running_mean")]);
    let v = flat(&w[&format!("{bn}.running_var")]);
    move |o, s| (s - m[o] as f64) / (v[o] as f64 + 1e-3).sqrt() * g[o] as f64 + b[o] as f64
}

/// The taps before ReLU6 are the conv + BatchNorm outputs, computed here by hand
/// (f64) from the checkpoint's unfolded tensors and onnxruntime's inputs to those
/// layers: the stem from the preprocessed image (3x3 stride 2, TF SAME padding 0
/// before and 1 after), the head (1x1) from the reference `blocks.15` output. The
/// taps after are ReLU6 of them, and the pre-activation values do leave [0, 6] (else
/// the test would not tell the two apart).
#[test]
fn taps_before_relu6_are_conv_and_batchnorm_by_hand() {
    use neurodex::model::Tap;
    let refs = candle_core::safetensors::load(
        "tests/fixtures/efficientnet_lite0_reference.safetensors",
        &Device::Cpu,
    )
    .unwrap();
    let w = candle_core::safetensors::load("models/efficientnet-lite0.safetensors", &Device::Cpu)
        .unwrap();
    let mut net = Network::embedded_default().unwrap();
    let (stem, head) = (
        net.arch.resolve("stem").unwrap(),
        net.arch.resolve("head").unwrap(),
    );
    net.split_activations(&[stem, head]);
    let input = flat(&refs["chelsea.input"]);
    let taps = [
        Tap::pre(stem),
        Tap::post(stem),
        Tap::pre(head),
        Tap::post(head),
    ];
    let outs = net.forward_taps(&input, 1, &taps).unwrap();

    // Stem: 32 x 112 x 112.
    let ws = flat(&w["_conv_stem.weight"]);
    let bn0 = batch_norm(&w, "_bn0");
    let mut want = vec![0f64; 32 * 112 * 112];
    for o in 0..32 {
        for oy in 0..112 {
            for ox in 0..112 {
                let mut s = 0f64;
                for c in 0..3 {
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let (y, x) = (2 * oy + ky, 2 * ox + kx);
                            if y < 224 && x < 224 {
                                s += ws[((o * 3 + c) * 3 + ky) * 3 + kx] as f64
                                    * input[(c * 224 + y) * 224 + x] as f64;
                            }
                        }
                    }
                }
                want[(o * 112 + oy) * 112 + ox] = bn0(o, s);
            }
        }
    }
    check_pre_and_post("stem", &want, &outs[0].data, &outs[1].data);
    // Splitting the activation off changes nothing downstream.
    for (k, stage) in [(1, "stem"), (3, "head")] {
        let want = &refs[&format!("chelsea.{stage}")];
        let got = Tensor::from_vec(outs[k].data.clone(), want.dims(), &Device::Cpu).unwrap();
        let d = max_abs_diff(&got, want);
        assert!(d <= tolerance(want), "{stage} after the split: {d}");
    }

    // Head: 1280 x 7 x 7 from blocks.15's 320 x 7 x 7.
    let x = flat(&refs["chelsea.blocks.15"]);
    let wh = flat(&w["_conv_head.weight"]);
    let bn1 = batch_norm(&w, "_bn1");
    let want: Vec<f64> = (0..1280 * 49)
        .map(|i| {
            let (o, p) = (i / 49, i % 49);
            let s: f64 = (0..320)
                .map(|c| wh[o * 320 + c] as f64 * x[c * 49 + p] as f64)
                .sum();
            bn1(o, s)
        })
        .collect();
    check_pre_and_post("head", &want, &outs[2].data, &outs[3].data);
}

fn check_pre_and_post(name: &str, want: &[f64], pre: &[f32], post: &[f32]) {
    assert_eq!(want.len(), pre.len(), "{name}");
    let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
    let d = want
        .iter()
        .zip(pre)
        .fold(0f64, |m, (a, &b)| m.max((a - b as f64).abs()));
    eprintln!("{name} before ReLU6: max abs diff {d:.2e} (values up to {scale:.1})");
    assert!(d <= 1e-5 * scale, "{name}: before ReLU6 off by {d}");
    let outside = pre.iter().filter(|v| !(0.0..=6.0).contains(*v)).count();
    assert!(
        outside > pre.len() / 10,
        "{name}: only {outside} values outside [0, 6]"
    );
    for (i, (&a, &b)) in pre.iter().zip(post).enumerate() {
        assert_eq!(a.clamp(0.0, 6.0), b, "{name}[{i}]: after = ReLU6(before)");
    }
}

/// The peaks `index` stores come from `forward_peaks`, which takes them inside the
/// pass (from the channel-blocked maps, before an activation without a copy): they
/// equal the peaks of the maps `forward_taps` hands out, to the bit, for every layer
/// before and after its activation, one image or several, on every ISA.
#[test]
fn peaks_taken_in_the_pass_equal_the_peaks_of_the_maps() {
    use neurodex::model::{Tap, TapPeaks};
    let refs = candle_core::safetensors::load(
        "tests/fixtures/efficientnet_lite0_reference.safetensors",
        &Device::Cpu,
    )
    .unwrap();
    let mut net = Network::embedded_default().unwrap();
    let all = net.arch.layer_nodes(Some(&["all".to_string()])).unwrap();
    net.split_activations(&all);
    let mut taps: Vec<Tap> = Vec::new();
    for &t in &all {
        taps.push(Tap::pre(t));
        taps.push(Tap::post(t));
    }
    // One asked twice.
    taps.push(taps[3]);
    let one = flat(&refs["chelsea.input"]);
    // Three different images: the photo, dimmed, and mirrored.
    let mut three = one.clone();
    three.extend(one.iter().map(|v| v * 0.5));
    for c in 0..3 {
        for y in 0..224 {
            for x in 0..224 {
                three.push(one[(c * 224 + y) * 224 + 223 - x]);
            }
        }
    }
    neurodex::kernels::isa::on_every_isa(|isa| {
        for (input, n) in [(&one, 1), (&three, 3)] {
            let got = net.forward_peaks(input, n, &taps).unwrap();
            let maps = net.forward_taps(input, n, &taps).unwrap();
            assert_eq!(got.len(), taps.len());
            for (k, (g, m)) in got.iter().zip(&maps).enumerate() {
                let want = TapPeaks::of(m);
                let name = &net.arch.nodes[taps[k].node].name;
                let what = format!("{isa:?}, {n} images, {name} (pre: {})", taps[k].pre);
                assert_eq!(
                    (g.n, g.c, g.h, g.w),
                    (want.n, want.c, want.h, want.w),
                    "{what}"
                );
                assert_eq!(g.at, want.at, "{what}: positions");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&g.values), bits(&want.values), "{what}: values");
            }
        }
    });
}
