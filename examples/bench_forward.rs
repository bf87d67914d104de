//! The neurodex side of `scripts/bench.sh`: whole-network forward speed, per-layer
//! times, and the files the other runtimes need to build the same network.
//!
//!   bench_forward arch MODEL                        architecture description as JSON
//!   bench_forward weights MODEL OUT.safetensors     seeded random weights (torch names)
//!   bench_forward isa                               the instruction set the kernels run on
//!   bench_forward serve MODEL WEIGHTS               answer the driver on stdin (scripts/bench/common.py):
//!                                                   forward (`time`) and forward + backward (`grad`)
//!   bench_forward layers MODEL WEIGHTS BATCH REPS   per node: name, ms, MFLOP, description
//!
//! `layers` times each node alone (then a last line `#whole`, the median whole forward
//! in ms, the sum of the layers and the chunk size), on the activations a real forward feeds it and in
//! the same chunks of images, writing into a reused output buffer like the forward pass.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context};
use candle_core::{Device, Tensor};
use neurodex::arch::{self, spec::Op, Act};
use neurodex::kernels::{self, blocked, Conv2d, Linear};
use neurodex::model::{Network, Objective, Pick, Rule, Tap};

/// Deterministic input in [-1, 1): the same formula as scripts/bench/common.py.
fn input(n: usize, size: usize) -> Vec<f32> {
    (0..n * 3 * size * size)
        .map(|k| ((k % 251) as f32 / 125.5) - 1.0)
        .collect()
}

/// xorshift64 numbers in [-1, 1).
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

/// Random weights shaped like a trained net's: convs and linears scaled by fan-in so
/// activations neither vanish nor explode, BatchNorm near identity.
fn write_weights(model: &str, out: &str) -> anyhow::Result<()> {
    let spec = arch::by_name(model)?;
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
    candle_core::safetensors::save(&tensors, out).with_context(|| format!("writing {out}"))?;
    Ok(())
}

fn open(model: &str, weights: &str) -> anyhow::Result<Network> {
    Network::load(arch::by_name(model)?, Path::new(weights))
        .with_context(|| format!("loading {model} from {weights}"))
}

/// The driver's line protocol: `logits PATH`, `time B K R`, `quit`.
fn serve(net: &Network) -> anyhow::Result<()> {
    let s = net.arch.recipe.size as usize;
    let last = net.arch.nodes.len() - 1;
    let mut inputs: HashMap<usize, Vec<f32>> = HashMap::new();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let cmd: Vec<&str> = line.split_whitespace().collect();
        match cmd.as_slice() {
            [] | ["quit"] => break,
            ["logits", path] => {
                let logits = net.forward_raw(&input(1, s), 1, &[last])?.remove(0);
                let bytes: Vec<u8> = logits.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                std::fs::write(path, bytes).with_context(|| format!("writing {path}"))?;
                writeln!(out, "ok")?;
            }
            ["time", b, k, r] => {
                let (b, k, r): (usize, usize, usize) = (b.parse()?, k.parse()?, r.parse()?);
                let x = inputs.entry(b).or_insert_with(|| input(b, s));
                // Untimed: brings weights back into cache after another runtime ran.
                net.forward_raw(x, b, &[last])?;
                let mut rates = Vec::with_capacity(r);
                for _ in 0..r {
                    let t = Instant::now();
                    for _ in 0..k {
                        net.forward_raw(x, b, &[last])?;
                    }
                    rates.push(format!("{:.3}", (b * k) as f64 / t.elapsed().as_secs_f64()));
                }
                writeln!(out, "{}", rates.join(" "))?;
            }
            ["grad", b, k, r, node, unit] => {
                let (b, k, r): (usize, usize, usize) = (b.parse()?, k.parse()?, r.parse()?);
                let objs = vec![
                    Objective {
                        unit: unit.parse()?,
                        pick: Pick::Max
                    };
                    b
                ];
                let tap = Tap::post(node.parse()?);
                let x = inputs.entry(b).or_insert_with(|| input(b, s));
                let run = |x: &[f32]| net.input_gradient(x, (b, s, s), tap, &objs, Rule::Gradient);
                run(x)?;
                let mut rates = Vec::with_capacity(r);
                for _ in 0..r {
                    let t = Instant::now();
                    for _ in 0..k {
                        run(x)?;
                    }
                    rates.push(format!("{:.3}", (b * k) as f64 / t.elapsed().as_secs_f64()));
                }
                writeln!(out, "{}", rates.join(" "))?;
            }
            _ => writeln!(out, "error: unknown command {line}")?,
        }
        out.flush()?;
    }
    Ok(())
}

/// Multiply-adds x 2 per image of a node, from its description.
fn flops(op: &Op, out: [usize; 3]) -> f64 {
    let pixels = (out[0] * out[1] * out[2]) as f64;
    match op {
        Op::Conv {
            in_ch,
            groups,
            kernel,
            ..
        } => 2.0 * pixels * (in_ch / groups * kernel.0 * kernel.1) as f64,
        Op::Linear { in_f, out_f, .. } => 2.0 * (in_f * out_f) as f64,
        _ => 0.0,
    }
}

/// Times each node on its own, on the activations a real forward feeds it, in the
/// chunks `Network::forward_raw` uses (a few images at a time unless the fully connected
/// layers dominate); prints per node: name, ms per batch (median of `reps`), MFLOP, op.
fn layers(net: &Network, weights: &str, batch: usize, reps: usize) -> anyhow::Result<()> {
    let s = net.arch.recipe.size as usize;
    let shapes = net.arch.output_shapes();
    // Close to Network::forward_hw: the forward pass runs one image per thread,
    // approximated here by each layer on as many images as threads (the GEMM kernels
    // then run one image per thread; depthwise and elementwise kernels split the work
    // instead), and from `batched_from` on (the fully connected tail, and the layers
    // before it from the first that is much faster on a batch) the whole batch.
    let chunk = batch.min(rayon::current_num_threads().max(1));
    let chunks = batch.div_ceil(chunk);
    let all: Vec<usize> = (0..net.arch.nodes.len()).collect();
    let acts = net.forward_raw(&input(chunk, s), chunk, &all)?;
    let tensors = candle_core::safetensors::load(weights, &Device::Cpu)?;
    let param = |name: &str| -> anyhow::Result<Vec<f32>> {
        let t = tensors
            .get(name)
            .with_context(|| format!("{weights}: no {name}"))?;
        Ok(t.flatten_all()?.to_vec1::<f32>()?)
    };
    // From this node on the forward pass runs the whole batch at once.
    let cut = net.batched_from(batch, s, s);
    // A chunk's activations repeated up to the batch.
    let widen = |data: &[f32]| -> Vec<f32> {
        data.iter()
            .copied()
            .cycle()
            .take(batch * data.len() / chunk)
            .collect()
    };
    let mut total = 0.0;
    for (i, node) in net.arch.nodes.iter().enumerate().skip(1) {
        let x = &acts[node.inputs[0]];
        let (c, h, w) = (x.c, x.h, x.w);
        let (n, node_chunks, xd) = if i >= cut {
            (batch, 1, widen(&x.data))
        } else {
            (chunk, chunks, x.data.clone())
        };
        let mut run: Box<dyn FnMut()> = match &node.op {
            Op::Input => continue,
            Op::Conv { act, out_ch, .. } => {
                let (geom, weight) = net.conv_weights(i).context("conv without weights")?;
                let conv = Conv2d::new(
                    geom.clone(),
                    weight.to_vec(),
                    Some(vec![0.0; *out_ch]),
                    *act,
                );
                if net.runs_blocked(i) {
                    // On channel-blocked activations, as the forward pass runs it.
                    let [oc, oh, ow] = shapes[i];
                    let xb = if conv.reads_blocked() {
                        let mut xb = vec![0.0f32; n * blocked::image_len(c, h * w)];
                        blocked::to_blocked(&xd, n, c, h * w, &mut xb);
                        xb
                    } else {
                        xd
                    };
                    let mut out = vec![0.0f32; n * blocked::image_len(oc, oh * ow)];
                    Box::new(move || {
                        conv.forward_blocked_into(&xb, n, h, w, &mut out, None, Act::None)
                    })
                } else {
                    let mut out = vec![0.0f32; acts[i].data.len() / chunk * n];
                    Box::new(move || conv.forward_into(&xd, n, h, w, &mut out))
                }
            }
            Op::MaxPool {
                kernel,
                stride,
                pad,
                ceil_mode,
            } => {
                let (k, st, p, cm) = (*kernel, *stride, *pad, *ceil_mode);
                Box::new(move || {
                    kernels::max_pool2d(&xd, n, c, h, w, k, st, p, cm);
                })
            }
            Op::AdaptiveAvgPool { out } => {
                let (oh, ow) = *out;
                Box::new(move || {
                    kernels::adaptive_avg_pool2d(&xd, n, c, h, w, oh, ow);
                })
            }
            Op::Add { act } => {
                let others: Vec<Vec<f32>> = node.inputs[1..]
                    .iter()
                    .map(|&j| {
                        if i >= cut {
                            widen(&acts[j].data)
                        } else {
                            acts[j].data.clone()
                        }
                    })
                    .collect();
                let act = *act;
                // In place, as the forward pass does when the sum's first input is not
                // read again (the values drift over repeats; the traffic is the same).
                let mut acc = xd;
                Box::new(move || {
                    for y in &others {
                        kernels::add_act(&mut acc, y, Act::None);
                    }
                    kernels::apply_act(&mut acc, act);
                })
            }
            // Copies and the cheap passes only imported networks have: not timed.
            Op::Flatten
            | Op::Concat
            | Op::Unary { .. }
            | Op::Mul
            | Op::AvgPool { .. }
            | Op::Shuffle { .. }
            | Op::Slice { .. }
            // Only imported networks have these; the built-ins are timed here.
            | Op::Binary { .. }
            | Op::ChannelMean
            | Op::LayerNorm { .. }
            | Op::Softmax => Box::new(|| {}),
            Op::Linear { weight, act, .. } => {
                let lin = Linear::new(
                    param(&format!("{weight}.weight"))?,
                    Some(param(&format!("{weight}.bias"))?),
                    *act,
                );
                Box::new(move || {
                    lin.forward(&xd, n);
                })
            }
        };
        run(); // warm-up
        let mut times: Vec<f64> = (0..reps.max(1))
            .map(|_| {
                let t = Instant::now();
                (0..node_chunks).for_each(|_| run());
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let ms = times[times.len() / 2];
        total += ms;
        println!(
            "{}\t{:.3}\t{:.1}\t{}",
            node.name,
            ms,
            flops(&node.op, shapes[i]) * batch as f64 / 1e6,
            node.op.describe()
        );
    }
    // The whole forward pass on the same batch, for what lies between the layers.
    let x = input(batch, s);
    let last = net.arch.nodes.len() - 1;
    net.forward_raw(&x, batch, &[last])?;
    let mut whole: Vec<f64> = Vec::new();
    for _ in 0..reps.max(1) {
        let t = Instant::now();
        net.forward_raw(&x, batch, &[last])?;
        whole.push(t.elapsed().as_secs_f64() * 1e3);
    }
    whole.sort_by(f64::total_cmp);
    println!("#whole\t{:.3}\t{total:.3}\t{chunk}", whole[whole.len() / 2]);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["arch", model] => println!("{}", serde_json::to_string(&arch::by_name(model)?)?),
        ["weights", model, out] => write_weights(model, out)?,
        ["isa"] => println!(
            "neurodex's kernels on {} (the CPU's best: {})",
            neurodex::kernels::isa::isa().name(),
            neurodex::kernels::isa::detected().name()
        ),
        ["serve", model, weights] => serve(&open(model, weights)?)?,
        ["layers", model, weights, batch, reps] => layers(
            &open(model, weights)?,
            weights,
            batch.parse()?,
            reps.parse()?,
        )?,
        _ => bail!("usage: bench_forward arch|weights|isa|serve|layers ... (see the file's doc)"),
    }
    Ok(())
}
