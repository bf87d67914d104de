//! The closed-formula weights of `scripts/make-torchvision-refs.py`: every tensor of a
//! torchvision model (and its input) computed from its name, so that PyTorch and the
//! tests build the same network without a checkpoint.
#![allow(dead_code)]

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use neurodex::arch::Arch;
use neurodex::model::Network;

/// Weight gain per model, as in the script's `GAINS`.
pub fn gain(model: &str) -> f64 {
    match model {
        "alexnet" | "vgg16" => 2.45,
        _ => 2.0,
    }
}

/// n values in [-1, 1): splitmix64 of (k * golden + h * c1), the top 53 bits as a fraction.
pub fn uniform(n: usize, h: u64) -> impl Iterator<Item = f64> {
    let seed = h.wrapping_mul(0xBF58476D1CE4E5B9);
    (0..n as u64).map(move |k| {
        let mut x = k.wrapping_mul(0x9E3779B97F4A7C15).wrapping_add(seed);
        x ^= x >> 30;
        x = x.wrapping_mul(0xBF58476D1CE4E5B9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94D049BB133111EB);
        x ^= x >> 31;
        (x >> 11) as f64 * (2.0 / (1u64 << 53) as f64) - 1.0
    })
}

/// The script's `formula`: the value of tensor `name`, by its kind (from the name and rank).
pub fn formula(name: &str, shape: &[usize], gain: f64) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let h: u64 = name.bytes().map(u64::from).sum();
    let leaf = name.rsplit('.').next().unwrap();
    let u = uniform(n, h);
    let v: Vec<f64> = match leaf {
        "weight" if shape.len() >= 2 => {
            let fan_in: usize = shape[1..].iter().product();
            let scale = gain / (fan_in as f64).sqrt();
            u.map(|u| u * scale).collect()
        }
        "weight" => u.map(|u| 1.0 + 0.1 * u).collect(),
        "bias" | "running_mean" => u.map(|u| 0.1 * u).collect(),
        "running_var" => u.map(|u| 1.0 + 0.2 * u.abs()).collect(),
        _ => panic!("no formula for {name}"),
    };
    v.into_iter().map(|v| v as f32).collect()
}

pub fn formula_input(side: usize) -> Vec<f32> {
    (0..3 * side * side)
        .map(|k| (0.8 * (0.013 * k as f64).sin()) as f32)
        .collect()
}

pub fn network(arch: Arch) -> Network {
    let g = gain(&arch.name);
    let tensors: HashMap<String, Tensor> = arch
        .parameters()
        .into_iter()
        .map(|(name, shape)| {
            let t = Tensor::from_vec(formula(&name, &shape, g), shape.as_slice(), &Device::Cpu)
                .unwrap();
            (name, t)
        })
        .collect();
    Network::from_tensors(arch, &tensors).expect("formula weights fit the architecture")
}
