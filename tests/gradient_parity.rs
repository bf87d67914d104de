//! Input gradients of EfficientNet-Lite0 (the embedded weights) and ResNet-18 (the
//! closed-formula weights of `tests/common/formula.rs`) equal PyTorch's autograd on two
//! photos, plain and with guided-backprop and deconvnet backward hooks on the
//! rectifiers, for units from the stem to the logits, before and after activations.
//! `scripts/make-grad-refs.py` writes the references, computed in float64 (`.ci/run`
//! makes them; absent elsewhere, a SKIPPED line).
//!
//! The deconvnet's signal depends on no forward decision but max pooling's switches,
//! and must lie within 1e-4 of the reference's largest magnitude everywhere. The plain
//! and guided gradients jump where a rectifier's input crosses its kink, and float32
//! arithmetic puts inputs that lie within its rounding of a kink on either side (one
//! in blocks.14's depthwise layer is 9e-9 above zero; neurodex's float32 gives 0):
//! such a cell changes the gradient over its receptive field. So for those two, at
//! least 99% of the input cells must lie within 1e-4, and all within 2e-2. PyTorch's
//! own float32 autograd, against the same references, is off by up to 5e-3 of the
//! largest magnitude on 0.43% of the cells (Lite0's logit), as the script prints.

mod common;
#[path = "common/formula.rs"]
mod formula;

use std::path::Path;

use candle_core::Device;
use neurodex::arch;
use neurodex::model::{Network, Objective, Pick, Rule, Tap};

/// Of the reference's largest magnitude.
const TOLERANCE: f32 = 1e-4;

fn parity(dir: &Path, model: &str, mut net: Network) {
    let refs =
        candle_core::safetensors::load(dir.join(format!("{model}.safetensors")), &Device::Cpu)
            .unwrap();
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{model}.json"))).unwrap())
            .unwrap();
    let flat = |name: &str| -> Vec<f32> { refs[name].flatten_all().unwrap().to_vec1().unwrap() };
    let input = flat("input");
    let pre: Vec<usize> = listed
        .iter()
        .filter(|o| o["pre"].as_bool().unwrap())
        .map(|o| net.arch.resolve(o["node"].as_str().unwrap()).unwrap())
        .collect();
    net.split_activations(&pre);
    let mut worst = 0f32;
    for (k, o) in listed.iter().enumerate() {
        let node = o["node"].as_str().unwrap();
        let tap = Tap::new(net.arch.resolve(node).unwrap(), o["pre"].as_bool().unwrap());
        let unit = o["unit"].as_u64().unwrap() as usize;
        let objs: Vec<Objective> = o["at"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| Objective {
                unit,
                pick: Pick::At {
                    y: c[0].as_u64().unwrap() as usize,
                    x: c[1].as_u64().unwrap() as usize,
                },
            })
            .collect();
        for rule in Rule::ALL {
            let got = net
                .input_gradient(&input, (2, 224, 224), tap, &objs, rule)
                .unwrap();
            for (v, want) in got.values.iter().zip(o["values"].as_array().unwrap()) {
                let want = want.as_f64().unwrap() as f32;
                assert!(
                    (v - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "{model} {node}: value {v}, PyTorch {want}"
                );
            }
            let want = flat(&format!("obj{k}.{}", rule.name()));
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(
                scale > 0.0,
                "{model} {node} {}: reference all zero",
                rule.name()
            );
            let diff = got
                .data
                .iter()
                .zip(&want)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            let rel = diff / scale;
            let off = got
                .data
                .iter()
                .zip(&want)
                .filter(|(a, b)| (*a - *b).abs() > TOLERANCE * scale)
                .count() as f64
                / want.len() as f64;
            eprintln!(
                "{model} {node}{} unit {unit} {}: {rel:.1e} of the largest magnitude, {:.3}% of cells beyond {TOLERANCE:.0e}",
                if tap.pre { " (before activation)" } else { "" },
                rule.name(),
                off * 100.0
            );
            if rule == Rule::Deconv {
                // No forward decision but max pooling's switches: no jumps.
                assert!(
                    rel <= TOLERANCE,
                    "{model} {node} unit {unit} deconv: {rel:.2e} of its largest magnitude from PyTorch"
                );
            } else {
                assert!(
                    off <= 0.01 && rel <= 2e-2,
                    "{model} {node} unit {unit} {}: {:.3}% of cells beyond {TOLERANCE:.0e}, \
                     worst {rel:.2e} of the largest magnitude",
                    rule.name(),
                    off * 100.0
                );
            }
            worst = worst.max(rel);
        }
    }
    eprintln!("{model}: worst {worst:.1e}");
}

#[test]
fn lite0_matches_pytorch_autograd() {
    let Some(dir) = common::grad_refs() else {
        return;
    };
    parity(
        &dir,
        "efficientnet-lite0",
        Network::embedded_default().unwrap(),
    );
}

#[test]
fn resnet18_matches_pytorch_autograd() {
    let Some(dir) = common::grad_refs() else {
        return;
    };
    parity(
        &dir,
        "resnet18",
        formula::network(arch::by_name("resnet18").unwrap()),
    );
}
