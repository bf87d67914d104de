//! Micro-benchmark of the CPU kernels on the layer shapes of the built-in networks.
//!
//! Every conv, pool, add and linear node of each network is run on random data of its
//! input shape, one node at a time; the table gives each conv's GFLOP/s and the sum
//! gives a kernel-only images/s to compare with other runtimes.
//!
//! ```text
//! cargo run --release --example bench_kernels -- [--batch 16] [--reps 5] [--models efficientnet-lite0,resnet18,alexnet] [--layers]
//! ```
//! Threads: rayon's default (RAYON_NUM_THREADS to change).

use std::time::Instant;

use neurodex::arch::{self, Act, Op};
use neurodex::kernels::{self, Conv2d, Linear};

struct Args {
    batch: usize,
    reps: usize,
    models: Vec<String>,
    layers: bool,
}

fn parse_args() -> Args {
    let mut a = Args {
        batch: 16,
        reps: 5,
        models: vec![
            "efficientnet-lite0".into(),
            "resnet18".into(),
            "alexnet".into(),
        ],
        layers: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--batch" => a.batch = it.next().and_then(|v| v.parse().ok()).expect("--batch N"),
            "--reps" => a.reps = it.next().and_then(|v| v.parse().ok()).expect("--reps N"),
            "--models" => {
                a.models = it
                    .next()
                    .expect("--models a,b")
                    .split(',')
                    .map(String::from)
                    .collect()
            }
            "--layers" => a.layers = true,
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Deterministic pseudo-random numbers in [-1, 1).
fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s >> 12;
            s ^= s << 25;
            s ^= s >> 27;
            (s.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Best of `reps` runs after one warm-up (the machine is shared: the minimum is the
/// least disturbed).
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[0]
}

/// GFLOP/s of one 1024 x 1024 x 1024 single-precision GEMM on all threads.
fn gemm_speed(reps: usize) -> f64 {
    let d = 1024;
    let a = random(d * d, 1);
    let b = random(d * d, 2);
    let mut c = vec![0f32; d * d];
    let t = time(reps, || {
        // SAFETY: three d x d row-major matrices.
        unsafe {
            gemm::gemm(
                d,
                d,
                d,
                c.as_mut_ptr(),
                1,
                d as isize,
                false,
                a.as_ptr(),
                1,
                d as isize,
                b.as_ptr(),
                1,
                d as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(rayon::current_num_threads()),
            )
        }
    });
    2.0 * (d * d * d) as f64 / t / 1e9
}

/// Adds a node's time and work to its kind's total.
fn tally(by_kind: &mut Vec<(String, f64, f64)>, kind: &str, t: f64, flops: f64) {
    match by_kind.iter_mut().find(|k| k.0 == kind) {
        Some(k) => {
            k.1 += t;
            k.2 += flops;
        }
        None => by_kind.push((kind.to_string(), t, flops)),
    }
}

fn main() {
    let args = parse_args();
    let n = args.batch;
    println!(
        "threads {}, batch {n}, best of {} runs",
        rayon::current_num_threads(),
        args.reps
    );
    // The machine may be shared: a plain GEMM's speed now is the yardstick.
    println!("plain 1024^3 GEMM: {:.1} GFLOP/s", gemm_speed(args.reps));
    for name in &args.models {
        let arch = arch::by_name(name).expect("known model");
        let shapes = arch.output_shapes();
        let (mut conv_s, mut other_s, mut flops) = (0.0, 0.0, 0.0);
        let mut by_kind: Vec<(String, f64, f64)> = Vec::new();
        if args.layers {
            println!("\n{name}: layer, input CxHxW, ms, GFLOP/s");
        }
        for (i, node) in arch.nodes.iter().enumerate() {
            let [c, h, w] = node.inputs.first().map(|&j| shapes[j]).unwrap_or([3, 0, 0]);
            let x = random(n * c * h * w, i as u64);
            match &node.op {
                Op::Conv {
                    out_ch,
                    kernel,
                    stride,
                    act,
                    ..
                } => {
                    let geom = neurodex::model::conv_geom(&node.op).expect("a conv");
                    let wt: Vec<f32> = random(out_ch * geom.weights_per_output(), 1000 + i as u64)
                        .iter()
                        .map(|v| v * 0.1)
                        .collect();
                    let (oh, ow) = geom.out_hw(h, w);
                    let f = 2.0 * (n * out_ch * oh * ow * geom.weights_per_output()) as f64;
                    let kind = if geom.is_depthwise() {
                        format!("depthwise {}x{}", kernel.0, kernel.1)
                    } else if *kernel == (1, 1) {
                        "1x1".to_string()
                    } else {
                        format!("{}x{}", kernel.0, kernel.1)
                    };
                    let conv = Conv2d::new(geom, wt, Some(random(*out_ch, 7)), *act);
                    let t = time(args.reps, || {
                        std::hint::black_box(conv.forward(&x, n, h, w));
                    });
                    conv_s += t;
                    flops += f;
                    tally(&mut by_kind, &kind, t, f);
                    if args.layers {
                        println!(
                            "  {:<24} {:<16} {:>7.2} {:>7.1}  {} s{}",
                            node.name,
                            format!("{c}x{h}x{w}"),
                            t * 1e3,
                            f / t / 1e9,
                            kind,
                            stride.0
                        );
                    }
                }
                Op::MaxPool {
                    kernel,
                    stride,
                    pad,
                    ceil_mode,
                } => {
                    let t = time(args.reps, || {
                        std::hint::black_box(kernels::max_pool2d(
                            &x, n, c, h, w, *kernel, *stride, *pad, *ceil_mode,
                        ));
                    });
                    other_s += t;
                    tally(&mut by_kind, "max_pool", t, 0.0);
                }
                Op::AdaptiveAvgPool { out } => {
                    let t = time(args.reps, || {
                        std::hint::black_box(kernels::adaptive_avg_pool2d(
                            &x, n, c, h, w, out.0, out.1,
                        ));
                    });
                    other_s += t;
                    tally(&mut by_kind, "avg_pool", t, 0.0);
                }
                Op::Add { act } => {
                    let y = random(x.len(), 3);
                    let mut acc = x.clone();
                    let t = time(args.reps, || {
                        kernels::add_act(&mut acc, &y, *act);
                        std::hint::black_box(&acc);
                    });
                    other_s += t;
                    tally(&mut by_kind, "add", t, 0.0);
                }
                Op::Linear {
                    in_f, out_f, act, ..
                } => {
                    let lin = Linear::new(random(in_f * out_f, 5), Some(random(*out_f, 6)), *act);
                    let x = random(n * in_f, 8);
                    let t = time(args.reps, || {
                        std::hint::black_box(lin.forward(&x, n));
                    });
                    other_s += t;
                    flops += 2.0 * (n * in_f * out_f) as f64;
                    tally(&mut by_kind, "linear", t, 2.0 * (n * in_f * out_f) as f64);
                }
                Op::Input
                | Op::Flatten
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
                | Op::Softmax => {}
            }
        }
        let total = conv_s + other_s;
        let yardstick = gemm_speed(args.reps);
        println!(
            "\n{name} batch {n}: {:.1} ms ({:.1} img/s), conv {:.1} ms, other {:.1} ms, \
             {:.1} GFLOP/s overall ({:.0}% of a plain GEMM's {yardstick:.0} GFLOP/s right after)",
            total * 1e3,
            n as f64 / total,
            conv_s * 1e3,
            other_s * 1e3,
            flops / total / 1e9,
            100.0 * flops / total / 1e9 / yardstick
        );
        for (kind, t, f) in &by_kind {
            println!(
                "  {kind:<14} {:>8.2} ms {:>7.1} GFLOP/s",
                t * 1e3,
                f / t / 1e9
            );
        }
    }

    println!("\nchannel_peaks (one read of the activations)");
    for (c, hw) in [(64usize, 56 * 56), (32, 112 * 112), (1280, 7 * 7)] {
        let x = random(n * c * hw, 9);
        let t = time(args.reps, || {
            std::hint::black_box(kernels::channel_peaks(&x, n, c, hw));
        });
        println!(
            "  [{n},{c},{hw}] {:.2} ms {:.1} GB/s",
            t * 1e3,
            (x.len() * 4) as f64 / t / 1e9
        );
    }
    let _ = Act::None;
}
