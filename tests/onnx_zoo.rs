//! Imported ONNX networks compute what onnxruntime computes.
//!
//! `scripts/make-onnx-zoo.py` exports torchvision's classification CNNs (random weights,
//! randomised BatchNorm statistics) and stores onnxruntime's logits and three module
//! outputs for a seeded input; `.ci/run` makes them (into `NEURODEX_ONNX_ZOO`, default
//! `~/.cache/neurodex/onnx-zoo-2`). Each must match within 1e-4 of its largest magnitude.
//! (Operators outside the importer's list: `tests/onnx.rs`.)

mod common;

use candle_core::{Device, Tensor};
use neurodex::model::{Network, Tap};

fn max_abs(t: &[f32]) -> f32 {
    t.iter().fold(0f32, |m, v| m.max(v.abs()))
}

/// Max |a - b| over max |b|, and the tensor sizes agree.
fn rel_diff(got: &[f32], want: &Tensor) -> f32 {
    let want: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(got.len(), want.len());
    let d = got
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    d / max_abs(&want).max(1e-6)
}

/// The operator that made each reference tap (the file's `__metadata__`).
fn tap_ops(path: &std::path::Path) -> serde_json::Map<String, serde_json::Value> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header["__metadata__"]
        .as_object()
        .cloned()
        .unwrap_or_default()
}

fn check(dir: &std::path::Path, stem: &str) -> Vec<String> {
    let model = dir.join(format!("{stem}.onnx"));
    let ref_path = dir.join(format!("{stem}.ref.safetensors"));
    let refs = candle_core::safetensors::load(&ref_path, &Device::Cpu).unwrap();
    let ops = tap_ops(&ref_path);
    let mut net =
        Network::open(model.to_str().unwrap(), None).unwrap_or_else(|e| panic!("{stem}: {e}"));
    let input = &refs["input"];
    let (n, _, h, w) = input.dims4().unwrap();
    let x: Vec<f32> = input.flatten_all().unwrap().to_vec1().unwrap();
    let mut names: Vec<String> = refs
        .keys()
        .filter_map(|k| k.strip_prefix("tap.").map(str::to_string))
        .collect();
    names.sort();
    let nodes: Vec<usize> = names
        .iter()
        .map(|t| {
            net.arch
                .resolve(t)
                .unwrap_or_else(|e| panic!("{stem}: {e}"))
        })
        .collect();
    // A reference made by a layer (not by the activation folded into it) is the value
    // before that activation.
    let pre: Vec<bool> = names
        .iter()
        .map(|t| !matches!(ops[&format!("tap.{t}")].as_str(), Some("Relu" | "Clip")))
        .collect();
    let split: Vec<usize> = (0..nodes.len())
        .filter(|&k| pre[k])
        .map(|k| nodes[k])
        .collect();
    net.split_activations(&split);
    let mut taps: Vec<Tap> = (0..nodes.len())
        .map(|k| Tap::new(nodes[k], pre[k]))
        .collect();
    taps.push(Tap::post(net.arch.nodes.len() - 1));
    let outs = net.forward_taps_hw(&x, n, h, w, &taps).unwrap();
    let mut report = Vec::new();
    let mut worst = Vec::new();
    for (name, out) in names.iter().zip(&outs) {
        let d = rel_diff(&out.data, &refs[&format!("tap.{name}")]);
        report.push(format!("{name} {d:.1e}"));
        if d > 1e-4 {
            worst.push(format!("{stem} {name}: {d:.2e} of its largest magnitude"));
        }
    }
    let d = rel_diff(&outs.last().unwrap().data, &refs["logits"]);
    report.push(format!("logits {d:.1e}"));
    if d > 1e-4 {
        worst.push(format!("{stem} logits: {d:.2e} of their largest magnitude"));
    }
    eprintln!("{stem}: {}", report.join(", "));
    worst
}

/// `model` at opset 13 (and 17 where the zoo has it) against onnxruntime.
fn matches_onnxruntime(model: &str) {
    let Some(dir) = common::onnx_zoo() else {
        return;
    };
    let mut failures = Vec::new();
    for opset in [13, 17] {
        let stem = format!("{model}-op{opset}");
        if dir.join(format!("{stem}.onnx")).exists() {
            failures.extend(check(&dir, &stem));
        } else if opset == 13 {
            failures.push(format!("{stem}.onnx is missing from {}", dir.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One test per zoo model, named after it.
macro_rules! zoo_tests {
    ($($model:ident),* $(,)?) => {
        $(
            #[test]
            fn $model() {
                matches_onnxruntime(stringify!($model));
            }
        )*
    };
}

mod imported_matches_onnxruntime {
    use super::matches_onnxruntime;
    zoo_tests!(
        resnet18,
        resnet50,
        vgg16_bn,
        alexnet,
        mobilenet_v2,
        densenet121,
        googlenet,
        squeezenet1_1,
        mobilenet_v3_large,
        efficientnet_b0,
        regnet_y_400mf,
        inception_v3,
        shufflenet_v2_x1_0,
        convnext_tiny,
        // Written by the zoo script for the operators the torchvision models lack.
        opmix,
    );
}

#[test]
fn the_imported_resnet18_has_the_built_in_receptive_fields() {
    let Some(dir) = common::onnx_zoo() else {
        return;
    };
    let path = dir.join("resnet18-op13.onnx");
    let imported = neurodex::model::describe(path.to_str().unwrap()).unwrap();
    let built_in = neurodex::arch::by_name("resnet18").unwrap();
    let (fi, fb) = (
        neurodex::receptive::fields(&imported),
        neurodex::receptive::fields(&built_in),
    );
    let mut compared = 0;
    for (b, node) in built_in.nodes.iter().enumerate().filter(|(_, n)| n.tap) {
        let i = imported
            .find(&node.name)
            .unwrap_or_else(|| panic!("imported resnet18 has no {}", node.name));
        assert_eq!(fi[i], fb[b], "{}", node.name);
        compared += 1;
    }
    // conv1 .. fc: every tap of the built-in description.
    assert!(compared >= 30, "{compared}");
}
