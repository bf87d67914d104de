//! The backward pass (`Network::input_gradient`) equals central finite differences of
//! the forward pass, on small random networks that together hold every operator
//! neurodex runs; the guided and deconvnet rules equal a hand computation.
//!
//! The networks are f32, so the finite differences are too: each check compares the
//! directional derivative along sparse random +-1 directions (and along the single
//! input cells with the largest gradients) with central differences
//! `(f(x + e v) - f(x - e v)) / 2e` at e = 1e-2, 5e-3 and 2.5e-3 combined by
//! Richardson's extrapolation, and passes when they agree within 2e-3 of the larger,
//! plus 2e-4 of the gradient's largest cell (for derivatives near zero) and 1e-4 of
//! 1 + |f| (the f32 forward's rounding seen through the quotient). A direction whose
//! two extrapolations disagree crossed a kink (a ReLU, a max pool's switch) and is not
//! counted; at most half may be.

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use neurodex::arch::{Act, Arch, Binary, Builder, Filter, Norm, Op, Pad, Recipe, Unary};
use neurodex::model::{Network, Objective, Pick, Rule, Tap};

#[path = "common/formula.rs"]
mod formula;

const N: usize = 2;

fn recipe(side: u32) -> Recipe {
    Recipe {
        size: side,
        crop_fraction: 1.0,
        resize: None,
        filter: Filter::Bilinear,
        norm: Norm::Affine { sub: 0.0, div: 1.0 },
        bgr: false,
    }
}

/// Binds `b`'s layers to formula weights (He-like scale, so values stay O(1)).
fn network(b: Builder, side: u32) -> Network {
    let arch: Arch = b.finish("grad-test", "gradient test", recipe(side), &[]);
    let tensors: HashMap<String, Tensor> = arch
        .parameters()
        .into_iter()
        .map(|(name, shape)| {
            let v = formula::formula(&name, &shape, 1.7);
            (
                name,
                Tensor::from_vec(v, shape.as_slice(), &Device::Cpu).unwrap(),
            )
        })
        .collect();
    Network::from_tensors(arch, &tensors).unwrap()
}

fn input(side: usize, seed: u64) -> Vec<f32> {
    formula::uniform(N * 3 * side * side, seed)
        .map(|v| v as f32)
        .collect()
}

/// The sum over images of each image's scalar, from the forward pass alone: the value
/// at `at[i]`, or the map's mean.
fn objective(
    net: &Network,
    x: &[f32],
    side: usize,
    tap: Tap,
    objs: &[Objective],
    at: &[(usize, usize)],
) -> f64 {
    let a = net
        .forward_taps_hw(x, N, side, side, &[tap])
        .unwrap()
        .remove(0);
    let hw = a.h * a.w;
    objs.iter()
        .enumerate()
        .map(|(i, o)| {
            let plane = &a.image(i)[o.unit * hw..(o.unit + 1) * hw];
            match o.pick {
                Pick::Mean => plane.iter().map(|&v| v as f64).sum::<f64>() / hw as f64,
                _ => plane[at[i].0 * a.w + at[i].1] as f64,
            }
        })
        .sum()
}

/// Checks the plain gradient of `objs` on `tap` against finite differences; returns
/// the worst relative error seen.
fn check(name: &str, net: &Network, side: usize, tap: Tap, objs: &[Objective]) -> f64 {
    let x = input(side, 7 + tap.node as u64);
    let g = net
        .input_gradient(&x, (N, side, side), tap, objs, Rule::Gradient)
        .unwrap();
    let scale = g.data.iter().fold(0f64, |m, &v| m.max(v.abs() as f64));
    assert!(scale > 0.0, "{name}: the gradient is all zero");
    let f = |x: &[f32]| objective(net, x, side, tap, objs, &g.at);
    // The f32 forward's rounding, seen through a difference quotient at e = 2.5e-3.
    let noise = 1e-4 * (1.0 + f(&x).abs());
    let along = |v: &[f32], e: f32| {
        let plus: Vec<f32> = x.iter().zip(v).map(|(a, b)| a + e * b).collect();
        let minus: Vec<f32> = x.iter().zip(v).map(|(a, b)| a - e * b).collect();
        (f(&plus) - f(&minus)) / (2.0 * e as f64)
    };
    // Eight random cells at +-1 each: sparse, so that few rectifiers lie on the way.
    let mut directions: Vec<Vec<f32>> = (0..6u64)
        .map(|d| {
            let mut v = vec![0f32; x.len()];
            let picks = formula::uniform(16, 1000 + d).collect::<Vec<_>>();
            for pair in picks.chunks(2) {
                let k = ((pair[0] + 1.0) / 2.0 * x.len() as f64) as usize % x.len();
                v[k] = if pair[1] < 0.0 { -1.0 } else { 1.0 };
            }
            v
        })
        .collect();
    // And the cells with the largest gradients, one at a time.
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| g.data[b].abs().total_cmp(&g.data[a].abs()));
    for &k in &order[..4] {
        let mut v = vec![0f32; x.len()];
        v[k] = 1.0;
        directions.push(v);
    }
    let (mut worst, mut kinks) = (0f64, 0);
    for v in &directions {
        let ad: f64 = g
            .data
            .iter()
            .zip(v)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum();
        // Richardson's extrapolation of central differences at e, e/2 and e/4 (their
        // error in e^2 cancels); two estimates that disagree crossed a kink.
        let d = [along(v, 1e-2), along(v, 5e-3), along(v, 2.5e-3)];
        let (r1, fd) = ((4.0 * d[1] - d[0]) / 3.0, (4.0 * d[2] - d[1]) / 3.0);
        let size = ad.abs().max(fd.abs());
        let tol = 2e-3 * size + 2e-4 * scale + noise;
        if (r1 - fd).abs() > tol {
            kinks += 1;
            continue;
        }
        let err = (fd - ad).abs() / (size + 0.1 * scale);
        worst = worst.max(err);
        assert!(
            (fd - ad).abs() <= tol,
            "{name}: directional derivative {ad} by the backward pass, {fd} by finite differences"
        );
    }
    assert!(
        kinks * 2 <= directions.len(),
        "{name}: {kinks} of {} directions crossed a kink",
        directions.len()
    );
    eprintln!("{name}: worst relative difference {worst:.2e} ({kinks} kinks skipped)");
    worst
}

fn conv(w: &str, cin: usize, cout: usize, k: usize, s: usize, pad: Pad) -> Op {
    Op::conv(w, cin, cout, k, s, pad).with_bias()
}

/// The unit whose map holds the largest value on the test input (a unit after a
/// ReLU may be off everywhere, and its gradient all zero).
fn alive(net: &Network, side: usize, tap: Tap) -> usize {
    let a = net
        .forward_taps_hw(&input(side, 7 + tap.node as u64), N, side, side, &[tap])
        .unwrap()
        .remove(0);
    let hw = a.h * a.w;
    (0..a.c)
        .max_by(|&p, &q| {
            let top = |u: usize| {
                a.data[u * hw..(u + 1) * hw]
                    .iter()
                    .fold(f32::MIN, |m, &v| m.max(v))
            };
            top(p).total_cmp(&top(q))
        })
        .unwrap()
}

fn max_of(unit: usize) -> Vec<Objective> {
    vec![
        Objective {
            unit,
            pick: Pick::Max
        };
        N
    ]
}

/// Convolutions of every geometry one after the other.
fn conv_net() -> Network {
    let mut b = Builder::new();
    b.then(
        "c1",
        conv("c1", 3, 6, 3, 1, Pad::same(1)).with_act(Act::Relu),
    );
    b.then(
        "c2",
        conv("c2", 6, 8, 3, 2, Pad::asym(0, 1))
            .with_bn("bn2", 1e-3)
            .with_act(Act::Relu6),
    );
    b.then(
        "dil",
        conv("dil", 8, 8, 3, 1, Pad::same(2)).with_dilation(2),
    );
    b.then("grp", conv("grp", 8, 12, 3, 1, Pad::same(1)).with_groups(4));
    b.then(
        "dw",
        conv("dw", 12, 12, 5, 2, Pad::asym(1, 2))
            .with_groups(12)
            .with_act(Act::Relu),
    );
    b.then("pw", conv("pw", 12, 5, 1, 1, Pad::default()));
    b.then("wide", conv("wide", 5, 4, 3, 3, Pad::same(2)));
    network(b, 15)
}

#[test]
fn convolutions_of_every_geometry() {
    // On every instruction set: the transposes run on the forward's kernels.
    neurodex::kernels::isa::on_every_isa(|isa| convolutions(conv_net(), isa.name()));
}

fn convolutions(mut net: Network, isa: &str) {
    let find = |n: &Network, s: &str| n.arch.resolve(s).unwrap();
    for layer in ["c1", "c2", "dil", "grp", "dw", "pw", "wide"] {
        let t = find(&net, layer);
        check(
            &format!("{isa} {layer}"),
            &net,
            15,
            Tap::post(t),
            &max_of(1),
        );
        let unit = alive(&net, 15, Tap::post(t));
        let mean = vec![
            Objective {
                unit,
                pick: Pick::Mean
            };
            N
        ];
        check(
            &format!("{isa} {layer} mean"),
            &net,
            15,
            Tap::post(t),
            &mean,
        );
    }
    // Before the activation: the ranking value, whose gradient is not cut by the clamp.
    let (c2, dw) = (find(&net, "c2"), find(&net, "dw"));
    net.split_activations(&[c2, dw]);
    check(
        &format!("{isa} c2 before relu6"),
        &net,
        15,
        Tap::pre(c2),
        &max_of(3),
    );
    check(
        &format!("{isa} dw before relu"),
        &net,
        15,
        Tap::pre(dw),
        &max_of(0),
    );
}

#[test]
fn pooling() {
    let pool = |kind: usize| match kind {
        0 => Op::MaxPool {
            kernel: (3, 3),
            stride: (2, 2),
            pad: Pad::same(1),
            ceil_mode: true,
        },
        1 => Op::AvgPool {
            kernel: (3, 3),
            stride: (2, 2),
            pad: Pad::same(1),
            count_include_pad: true,
        },
        _ => Op::AvgPool {
            kernel: (2, 3),
            stride: (1, 2),
            pad: Pad::same(1),
            count_include_pad: false,
        },
    };
    for kind in 0..3 {
        let mut b = Builder::new();
        b.then("c", conv("c", 3, 4, 3, 1, Pad::same(1)));
        let p = b.then("pool", pool(kind));
        b.then("down", Op::AdaptiveAvgPool { out: (2, 3) });
        let up = b.push("up", Op::AdaptiveAvgPool { out: (7, 5) }, &[p]);
        b.push("c2", conv("c2", 4, 3, 1, 1, Pad::default()), &[up]);
        let net = network(b, 11);
        for (layer, pick) in [
            ("pool", Pick::Max),
            ("down", Pick::At { y: 1, x: 2 }),
            ("c2", Pick::Mean),
        ] {
            let t = net.arch.resolve(layer).unwrap();
            check(
                &format!("pool kind {kind}: {layer}"),
                &net,
                11,
                Tap::post(t),
                &[Objective { unit: 2, pick }; N],
            );
        }
    }
}

#[test]
fn sums_concatenation_slices_and_shuffles() {
    let mut b = Builder::new();
    let a = b.then("a", conv("a", 3, 6, 3, 1, Pad::same(1)).with_act(Act::Relu));
    let c = b.then("b", conv("b", 6, 6, 3, 1, Pad::same(1)));
    let sum = b.push("sum", Op::Add { act: Act::Relu }, &[a, c]);
    let cat = b.push("cat", Op::Concat, &[sum, a, c]);
    let sh = b.then("shuffle", Op::Shuffle { groups: 3 });
    let sl = b.push("slice", Op::Slice { from: 4, to: 13 }, &[sh]);
    b.push("mix", conv("mix", 9, 4, 3, 2, Pad::same(1)), &[sl]);
    let _ = cat;
    let net = network(b, 9);
    for layer in ["sum", "cat", "shuffle", "slice", "mix"] {
        let t = net.arch.resolve(layer).unwrap();
        check(layer, &net, 9, Tap::post(t), &max_of(3));
    }
}

#[test]
fn elementwise_functions() {
    let fs = [
        Unary::Sigmoid,
        Unary::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        Unary::HardSwish,
        Unary::Affine {
            mul: -1.5,
            add: 0.25,
        },
        Unary::LeakyRelu { alpha: 0.1 },
        Unary::LeakyRelu { alpha: 0.0 },
        Unary::Square,
        Unary::Erf,
        Unary::Gelu,
    ];
    for f in fs {
        let mut b = Builder::new();
        b.then("c", conv("c", 3, 4, 3, 1, Pad::same(1)));
        b.then("f", Op::Unary { f });
        b.then("c2", conv("c2", 4, 4, 1, 1, Pad::default()));
        let net = network(b, 7);
        let t = net.arch.resolve("c2").unwrap();
        check(&format!("{f:?}"), &net, 7, Tap::post(t), &max_of(1));
    }
    // sqrt of a positive input: 1 + x^2.
    let mut b = Builder::new();
    b.then("c", conv("c", 3, 4, 3, 1, Pad::same(1)));
    b.then("sq", Op::Unary { f: Unary::Square });
    b.then(
        "shift",
        Op::Unary {
            f: Unary::Affine { mul: 1.0, add: 1.0 },
        },
    );
    b.then("sqrt", Op::Unary { f: Unary::Sqrt });
    let net = network(b, 7);
    let t = net.arch.resolve("sqrt").unwrap();
    check("Sqrt", &net, 7, Tap::post(t), &max_of(2));
}

#[test]
fn products_broadcasts_and_normalisations() {
    let mut b = Builder::new();
    let a = b.then("a", conv("a", 3, 6, 3, 1, Pad::same(1)));
    let c = b.push("b", conv("b", 3, 6, 3, 1, Pad::same(1)), &[0]);
    let prod = b.push("prod", Op::Mul, &[a, c]);
    // A squeeze-and-excitation gate: [6, 1, 1] times the map, given first.
    let pooled = b.then("squeeze", Op::AdaptiveAvgPool { out: (1, 1) });
    let gate = b.then("gate", Op::Unary { f: Unary::Sigmoid });
    let se = b.push("se", Op::Mul, &[gate, prod]);
    let _ = pooled;
    // Broadcast arithmetic: [6, h, w] against [1, h, w] and [6, 1, 1].
    let mean = b.push("mean", Op::ChannelMean, &[se]);
    let centred = b.push("centred", Op::Binary { f: Binary::Sub }, &[se, mean]);
    let sq = b.push("sq", Op::Binary { f: Binary::Mul }, &[centred, centred]);
    let spread = b.push("spread", Op::ChannelMean, &[sq]);
    let shift = b.then(
        "shift",
        Op::Unary {
            f: Unary::Affine { mul: 1.0, add: 0.5 },
        },
    );
    let scaled = b.push("scaled", Op::Binary { f: Binary::Div }, &[centred, shift]);
    let plus = b.push("plus", Op::Binary { f: Binary::Add }, &[scaled, gate]);
    let _ = spread;
    let norm = b.push(
        "norm",
        Op::LayerNorm {
            weight: "ln".into(),
            channels: 6,
            eps: 1e-5,
        },
        &[plus],
    );
    b.push("soft", Op::Softmax, &[norm]);
    let net = network(b, 6);
    for layer in ["prod", "se", "centred", "scaled", "plus", "norm", "soft"] {
        let t = net.arch.resolve(layer).unwrap();
        check(layer, &net, 6, Tap::post(t), &max_of(4));
    }
    let spread = net.arch.resolve("spread").unwrap();
    check("spread", &net, 6, Tap::post(spread), &max_of(0));
}

#[test]
fn fully_connected_layers() {
    let mut b = Builder::new();
    b.then("c", conv("c", 3, 4, 3, 2, Pad::same(1)).with_act(Act::Relu));
    b.then(
        "pool",
        Op::MaxPool {
            kernel: (2, 2),
            stride: (2, 2),
            pad: Pad::default(),
            ceil_mode: false,
        },
    );
    b.then("flat", Op::Flatten);
    b.then(
        "fc1",
        Op::Linear {
            weight: "fc1".into(),
            in_f: 4 * 2 * 2,
            out_f: 70,
            act: Act::Relu,
        },
    );
    b.then(
        "fc2",
        Op::Linear {
            weight: "fc2".into(),
            in_f: 70,
            out_f: 5,
            act: Act::None,
        },
    );
    let net = network(b, 8);
    let fc2 = net.arch.resolve("fc2").unwrap();
    let logit = |unit| {
        vec![
            Objective {
                unit,
                pick: Pick::At { y: 0, x: 0 }
            };
            N
        ]
    };
    for unit in 0..5 {
        check(
            &format!("logit {unit}"),
            &net,
            8,
            Tap::post(fc2),
            &logit(unit),
        );
    }
    // An input of another size flattens into another feature count: refused, not a panic.
    let x = input(12, 1);
    let err = net
        .input_gradient(&x, (N, 12, 12), Tap::post(fc2), &logit(0), Rule::Gradient)
        .unwrap_err()
        .to_string();
    assert!(err.contains("features"), "{err}");
    let fc1 = net.arch.resolve("fc1").unwrap();
    check(
        "fc1",
        &net,
        8,
        Tap::post(fc1),
        &max_of(alive(&net, 8, Tap::post(fc1))),
    );
}

#[test]
fn each_image_gets_its_own_objective() {
    let mut b = Builder::new();
    b.then("c", conv("c", 3, 4, 3, 1, Pad::same(1)).with_act(Act::Relu));
    b.then("c2", conv("c2", 4, 3, 3, 1, Pad::same(1)));
    let net = network(b, 8);
    let t = Tap::post(net.arch.resolve("c2").unwrap());
    let x = input(8, 3);
    let objs = [
        Objective {
            unit: 0,
            pick: Pick::Max,
        },
        Objective {
            unit: 2,
            pick: Pick::At { y: 3, x: 5 },
        },
    ];
    let both = net
        .input_gradient(&x, (2, 8, 8), t, &objs, Rule::Gradient)
        .unwrap();
    let per = 3 * 8 * 8;
    for (i, o) in objs.iter().enumerate() {
        let one = net
            .input_gradient(
                &x[i * per..(i + 1) * per],
                (1, 8, 8),
                t,
                &[*o],
                Rule::Gradient,
            )
            .unwrap();
        assert_eq!(one.values[0], both.values[i]);
        let diff = one
            .data
            .iter()
            .zip(both.image(i))
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(diff <= 1e-6, "image {i} differs by {diff} in a batch");
    }
    assert_eq!(both.at[1], (3, 5));
}

/// input (3 channels, one pixel) -> 1x1 conv to 2 channels with ReLU -> 1x1 conv to
/// 1 channel with weights (1, -1). The input makes unit 0 negative and unit 1
/// positive, so by hand: the gradient is -w1[1], guided backprop stops everything
/// (unit 0 is off, unit 1 gets a negative signal), and the deconvnet passes unit 0's
/// positive signal whatever its input: +w1[0].
#[test]
fn guided_and_deconvnet_rules_by_hand() {
    let mut b = Builder::new();
    b.then(
        "h",
        Op::conv("h", 3, 2, 1, 1, Pad::default()).with_act(Act::Relu),
    );
    b.then("out", Op::conv("out", 2, 1, 1, 1, Pad::default()));
    let arch = b.finish("hand", "hand", recipe(1), &[]);
    let w1 = [1.0f32, 2.0, -1.0, 0.5, -0.25, 1.0];
    let tensors: HashMap<String, Tensor> = [
        (
            "h.weight",
            Tensor::from_vec(w1.to_vec(), (2, 3, 1, 1), &Device::Cpu),
        ),
        (
            "out.weight",
            Tensor::from_vec(vec![1.0f32, -1.0], (1, 2, 1, 1), &Device::Cpu),
        ),
    ]
    .into_iter()
    .map(|(k, t)| (k.to_string(), t.unwrap()))
    .collect();
    let net = Network::from_tensors(arch, &tensors).unwrap();
    // z0 = -1 + 2*0 - 1*1 = -2 (off), z1 = 0.5*-1 + 0 + 1*1 = 0.5 (on).
    let x = [-1.0f32, 0.0, 1.0];
    let t = Tap::post(2);
    let obj = [Objective {
        unit: 0,
        pick: Pick::At { y: 0, x: 0 },
    }];
    let run = |rule| net.input_gradient(&x, (1, 1, 1), t, &obj, rule).unwrap();
    let grad = run(Rule::Gradient);
    assert_eq!(grad.values, [-0.5]);
    assert_eq!(grad.data, [-0.5, 0.25, -1.0]);
    assert_eq!(run(Rule::Guided).data, [0.0, 0.0, 0.0]);
    assert_eq!(run(Rule::Deconv).data, [1.0, 2.0, -1.0]);
    // ReLU6 counts as off above 6 too; guided backprop is gradient AND positive signal.
    assert_eq!(Rule::from_name("backprop"), Some(Rule::Gradient));
}
