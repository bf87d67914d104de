//! The neurodex side of `scripts/bench.sh`: whole-network forward speed, and the
//! files the onnxruntime side needs to build the same network.
//!
//!   bench_forward arch MODEL                      architecture description as JSON
//!   bench_forward weights MODEL OUT.safetensors   seeded random weights (torch names)
//!   bench_forward logits MODEL WEIGHTS OUT.bin    logits (f32 LE) of the fixed test input
//!   bench_forward time MODEL WEIGHTS BATCH RUNS   images/s: median best worst

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use candle_core::{Device, Tensor};
use neurodex::arch;
use neurodex::model::Network;

/// Deterministic input in [-1, 1): the same formula as scripts/bench/peer.py.
fn input(n: usize, size: usize) -> Vec<f32> {
    (0..n * 3 * size * size)
        .map(|k| ((k % 251) as f32 / 125.5) - 1.0)
        .collect()
}

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match a(0) {
        "arch" => println!("{}", serde_json::to_string(&arch::by_name(a(1))?)?),
        "weights" => {
            let spec = arch::by_name(a(1))?;
            let mut tensors = HashMap::new();
            for (i, (name, shape)) in spec.parameters().into_iter().enumerate() {
                let len: usize = shape.iter().product();
                let fan_in = if shape.len() > 1 { len / shape[0] } else { 1 };
                let mut v = random(len, i as u64 + 1);
                if name.ends_with("running_var") {
                    v.iter_mut().for_each(|x| *x = 1.0 + 0.2 * x.abs());
                } else if name.ends_with(".weight") && shape.len() > 1 {
                    let scale = (3.0 / fan_in as f32).sqrt();
                    v.iter_mut().for_each(|x| *x *= scale);
                } else if name.ends_with(".weight") {
                    v.iter_mut().for_each(|x| *x = 1.0 + 0.1 * *x);
                } else {
                    v.iter_mut().for_each(|x| *x *= 0.1);
                }
                tensors.insert(name, Tensor::from_vec(v, shape, &Device::Cpu)?);
            }
            candle_core::safetensors::save(&tensors, a(2))?;
        }
        "logits" => {
            let net = Network::load(arch::by_name(a(1))?, Path::new(a(2)))?;
            let s = net.arch.recipe.size as usize;
            let last = net.arch.nodes.len() - 1;
            let out = net.forward_raw(&input(1, s), 1, &[last])?.pop().unwrap();
            let bytes: Vec<u8> = out.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            std::fs::write(a(3), bytes)?;
        }
        "time" => {
            let net = Network::load(arch::by_name(a(1))?, Path::new(a(2)))?;
            let (batch, runs): (usize, usize) = (a(3).parse()?, a(4).parse()?);
            let s = net.arch.recipe.size as usize;
            let x = input(batch, s);
            let last = net.arch.nodes.len() - 1;
            net.forward_raw(&x, batch, &[last])?; // warm-up
            let mut rates: Vec<f64> = (0..runs)
                .map(|_| {
                    let t = Instant::now();
                    net.forward_raw(&x, batch, &[last]).unwrap();
                    batch as f64 / t.elapsed().as_secs_f64()
                })
                .collect();
            rates.sort_by(f64::total_cmp);
            println!(
                "{:.2} {:.2} {:.2}",
                rates[rates.len() / 2],
                rates[rates.len() - 1],
                rates[0]
            );
        }
        _ => {
            anyhow::bail!("usage: bench_forward arch|weights|logits|time ... (see the file's doc)")
        }
    }
    Ok(())
}
