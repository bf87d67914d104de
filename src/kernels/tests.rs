//! Every kernel against a plainly written f64 reference over many random shapes.

// The references spell out every dimension on purpose.
#![allow(clippy::too_many_arguments)]

use super::isa::on_every_isa;
use super::*;
use rayon::prelude::*;

/// Small deterministic generator (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in lo..=hi.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    /// Uniform in [-1, 1).
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn vec(&mut self, len: usize) -> Vec<f32> {
        (0..len).map(|_| self.f()).collect()
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.range(0, xs.len() - 1)]
    }
}

fn act_ref(v: f64, act: Act) -> f64 {
    match act {
        Act::None => v,
        Act::Relu => v.max(0.0),
        Act::Relu6 => v.clamp(0.0, 6.0),
    }
}

/// Asserts `got` matches `want` within 1e-4 relative to the magnitude of the terms
/// that were summed (`scale`, one per element).
fn assert_close(got: &[f32], want: &[f64], scale: &[f64], what: &str) {
    // Which instruction set computed it, when a test forces one.
    let what = &format!("{what} [{}]", super::isa::isa().name());
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let tol = 1e-4 * s.max(1.0);
        assert!(
            (g as f64 - w).abs() <= tol,
            "{what}: element {i}: got {g}, want {w} (tol {tol})"
        );
    }
}

/// Convolution by definition: six nested loops per output element, in f64.
/// Returns the result and, per element, the sum of |terms| for the tolerance.
fn conv_ref(
    g: &ConvGeom,
    wt: &[f32],
    bias: Option<&[f32]>,
    act: Act,
    x: &[f32],
    n: usize,
    h: usize,
    w: usize,
) -> (Vec<f64>, Vec<f64>) {
    let (oh, ow) = g.out_hw(h, w);
    let icg = g.in_ch / g.groups;
    let ocg = g.out_ch / g.groups;
    let (kh, kw) = g.kernel;
    let mut out = Vec::new();
    let mut scale = Vec::new();
    for b in 0..n {
        for o in 0..g.out_ch {
            let grp = o / ocg;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias.map_or(0.0, |b| b[o] as f64);
                    let mut mag = s.abs();
                    for ci in 0..icg {
                        let c = grp * icg + ci;
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * g.stride.0 + ky * g.dilation.0) as isize
                                    - g.pad.top as isize;
                                let ix = (ox * g.stride.1 + kx * g.dilation.1) as isize
                                    - g.pad.left as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let xv = x[((b * g.in_ch + c) * h + iy as usize) * w + ix as usize]
                                    as f64;
                                let wv = wt[((o * icg + ci) * kh + ky) * kw + kx] as f64;
                                s += xv * wv;
                                mag += (xv * wv).abs();
                            }
                        }
                    }
                    out.push(act_ref(s, act));
                    scale.push(mag);
                }
            }
        }
    }
    (out, scale)
}

fn check_conv(rng: &mut Rng, g: ConvGeom, n: usize, h: usize, w: usize, act: Act, with_bias: bool) {
    let wt = rng.vec(g.out_ch * g.weights_per_output());
    // Scale some weights up so Relu6 clamps at 6 as well as at 0.
    let wt: Vec<f32> = wt.iter().map(|v| v * 3.0).collect();
    let bias = with_bias.then(|| rng.vec(g.out_ch));
    let x = rng.vec(n * g.in_ch * h * w);
    let conv = Conv2d::new(g.clone(), wt.clone(), bias.clone(), act);
    let got = conv.forward(&x, n, h, w);
    let (want, scale) = conv_ref(&g, &wt, bias.as_deref(), act, &x, n, h, w);
    assert_close(
        &got,
        &want,
        &scale,
        &format!("conv {g:?} n={n} {h}x{w} {act:?} bias={with_bias}"),
    );
}

fn geom(
    in_ch: usize,
    out_ch: usize,
    k: (usize, usize),
    s: (usize, usize),
    pad: Pad,
    d: (usize, usize),
    groups: usize,
) -> ConvGeom {
    ConvGeom {
        in_ch,
        out_ch,
        kernel: k,
        stride: s,
        pad,
        dilation: d,
        groups,
    }
}

#[test]
fn out_hw_follows_the_floor_formula() {
    // 224 + 3 + 3 - 7 = 223; 223 / 2 + 1 = 112 (ResNet stem).
    let g = geom(3, 64, (7, 7), (2, 2), Pad::same(3), (1, 1), 1);
    assert_eq!(g.out_hw(224, 224), (112, 112));
    // TF SAME stride 2 k3: pads (0, 1): 225 - 3 = 222; 111 + 1 = 112.
    let g = geom(3, 32, (3, 3), (2, 2), Pad::asym(0, 1), (1, 1), 1);
    assert_eq!(g.out_hw(224, 224), (112, 112));
    // Dilation 2, k3 spans 5: 7 - 5 = 2 -> 3.
    let g = geom(1, 1, (3, 3), (1, 1), Pad::default(), (2, 2), 1);
    assert_eq!(g.out_hw(7, 7), (3, 3));
    // Kernel wider than the padded input: empty.
    let g = geom(1, 1, (5, 5), (1, 1), Pad::same(1), (1, 1), 1);
    assert_eq!(g.out_hw(2, 2), (0, 0));
}

#[test]
fn conv_hand_computed_example() {
    // 1 channel 3x3 input 1..9, 2x2 kernel of ones, stride 1, no pad: sums of 2x2 windows.
    let g = geom(1, 1, (2, 2), (1, 1), Pad::default(), (1, 1), 1);
    let conv = Conv2d::new(g, vec![1.0; 4], Some(vec![0.5]), Act::None);
    let x: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    assert_eq!(conv.forward(&x, 1, 3, 3), vec![12.5, 16.5, 24.5, 28.5]);
}

#[test]
fn conv_matches_reference_on_fixed_edge_cases() {
    let mut rng = Rng(7);
    let p = |t, l, b, r| Pad {
        top: t,
        left: l,
        bottom: b,
        right: r,
    };
    let cases = [
        // 1x1 pointwise, odd sizes, batch 3.
        (
            geom(5, 7, (1, 1), (1, 1), Pad::default(), (1, 1), 1),
            3,
            7,
            5,
        ),
        // 1x1 with stride 2 (ResNet downsample) and with padding.
        (
            geom(4, 6, (1, 1), (2, 2), Pad::default(), (1, 1), 1),
            1,
            13,
            13,
        ),
        (geom(4, 6, (1, 1), (1, 1), Pad::same(1), (1, 1), 1), 1, 5, 4),
        // TF SAME stride 2 asymmetric pads, 3x3 and 5x5, depthwise.
        (
            geom(8, 8, (3, 3), (2, 2), p(0, 0, 1, 1), (1, 1), 8),
            3,
            13,
            13,
        ),
        (
            geom(8, 8, (5, 5), (2, 2), p(1, 1, 2, 2), (1, 1), 8),
            1,
            14,
            9,
        ),
        // Kernel larger than the input, saved by padding.
        (geom(3, 4, (7, 7), (1, 1), Pad::same(3), (1, 1), 1), 1, 3, 2),
        (geom(3, 3, (7, 7), (1, 1), Pad::same(3), (1, 1), 3), 2, 3, 2),
        // Dilation 3 with stride 3, grouped.
        (
            geom(6, 4, (3, 3), (3, 3), Pad::same(2), (3, 3), 2),
            1,
            17,
            11,
        ),
        // AlexNet-like stem: 11x11 stride 4 pad 2.
        (
            geom(3, 8, (11, 11), (4, 4), Pad::same(2), (1, 1), 1),
            2,
            31,
            27,
        ),
        // Depthwise with channel multiplier (groups = in_ch < out_ch): grouped path.
        (geom(3, 6, (3, 3), (1, 1), Pad::same(1), (1, 1), 3), 1, 6, 7),
        // Stride larger than the kernel.
        (
            geom(2, 3, (2, 2), (4, 3), p(1, 0, 0, 2), (1, 1), 1),
            1,
            9,
            10,
        ),
    ];
    for (g, n, h, w) in cases {
        for act in [Act::None, Act::Relu, Act::Relu6] {
            check_conv(&mut rng, g.clone(), n, h, w, act, true);
        }
        check_conv(&mut rng, g, n, h, w, Act::None, false);
    }
}

#[test]
fn conv_matches_reference_on_random_shapes() {
    let mut rng = Rng(0x5eed);
    for _ in 0..300 {
        let kind = rng.range(0, 3);
        let k = (rng.range(1, 5), rng.range(1, 5));
        let s = (rng.range(1, 4), rng.range(1, 4));
        let d = (rng.range(1, 3), rng.range(1, 3));
        let pad = Pad {
            top: rng.range(0, 3),
            left: rng.range(0, 3),
            bottom: rng.range(0, 3),
            right: rng.range(0, 3),
        };
        let (in_ch, out_ch, groups) = match kind {
            0 => (rng.range(1, 9), rng.range(1, 9), 1),
            1 => {
                let g = 2;
                (g * rng.range(1, 4), g * rng.range(1, 4), g)
            }
            2 => {
                let c = rng.range(1, 12);
                (c, c, c)
            }
            _ => (rng.range(1, 6), rng.range(1, 9), 1),
        };
        let k = if kind == 3 { (1, 1) } else { k };
        let g = geom(in_ch, out_ch, k, s, pad, d, groups);
        let h = rng.range(1, 15);
        let w = rng.range(1, 15);
        let n = rng.pick(&[1, 1, 3]);
        let act = rng.pick(&[Act::None, Act::Relu, Act::Relu6]);
        let bias = rng.range(0, 3) > 0;
        check_conv(&mut rng, g, n, h, w, act, bias);
    }
}

#[test]
fn conv_matches_reference_on_shapes_spanning_several_tiles() {
    // Big enough that im2col is split into column tiles and the batch spread over threads.
    let mut rng = Rng(42);
    check_conv(
        &mut rng,
        geom(64, 16, (3, 3), (1, 1), Pad::same(1), (1, 1), 1),
        3,
        37,
        29,
        Act::Relu,
        true,
    );
    check_conv(
        &mut rng,
        geom(3, 8, (7, 7), (2, 2), Pad::same(3), (1, 1), 1),
        1,
        61,
        67,
        Act::None,
        true,
    );
    check_conv(
        &mut rng,
        geom(24, 24, (5, 5), (1, 1), Pad::same(2), (1, 1), 24),
        1,
        56,
        56,
        Act::Relu6,
        true,
    );
    check_conv(
        &mut rng,
        geom(40, 48, (1, 1), (1, 1), Pad::default(), (1, 1), 1),
        3,
        28,
        28,
        Act::Relu6,
        true,
    );
}

#[test]
fn winograd_layers_match_reference() {
    on_every_isa(|_| {
        // 3x3 stride-1 layers with >= 16 channels go through Winograd F(2x2) or F(4x4)
        // (F(4x4) where the planes are big enough): odd sizes that end in partial tiles,
        // planes wider than one 16-tile step, asymmetric and zero padding, batches.
        let mut rng = Rng(2015);
        for (cin, cout, pad, h, w, n, act) in [
            (16, 16, Pad::same(1), 7, 7, 1, Act::Relu),
            (16, 24, Pad::same(1), 13, 13, 3, Act::None),
            (24, 16, Pad::same(1), 56, 40, 1, Act::Relu6),
            (17, 33, Pad::asym(0, 1), 9, 70, 2, Act::Relu),
            (32, 16, Pad::default(), 5, 4, 2, Act::None),
            (16, 16, Pad::same(2), 1, 1, 1, Act::None),
            (20, 18, Pad::same(1), 36, 36, 2, Act::Relu),
        ] {
            let g = geom(cin, cout, (3, 3), (1, 1), pad, (1, 1), 1);
            check_conv(&mut rng, g, n, h, w, act, true);
        }
    });
}

#[test]
fn winograd_f2_and_f4_match_reference_whichever_the_layer_would_pick() {
    on_every_isa(|_| {
        // Both tile sizes on the same layers, called directly; batches big enough to be
        // cut into several chunks, run serially and on two threads.
        let mut rng = Rng(1984);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for (cin, cout, pad, h, w, n) in [
            (16, 16, Pad::same(1), 40, 40, 5),
            (35, 17, Pad::asym(1, 0), 11, 23, 2),
            (48, 64, Pad::same(1), 7, 7, 9),
        ] {
            let g = geom(cin, cout, (3, 3), (1, 1), pad, (1, 1), 1);
            let wt = rng.vec(cout * cin * 9);
            let bias = rng.vec(cout);
            let x = rng.vec(n * cin * h * w);
            let (oh, ow) = g.out_hw(h, w);
            let (want, scale) = conv_ref(&g, &wt, Some(&bias), Act::Relu, &x, n, h, w);
            for m in [2, 4] {
                let u = super::winograd::transform_filters(m, &wt, cin, cout);
                let job = super::winograd::Job {
                    geom: &g,
                    m,
                    u: &u,
                    bias: Some(&bias),
                    act: Act::Relu,
                    residual: None,
                };
                let mut serial = vec![f32::NAN; n * cout * oh * ow];
                super::serial(|| super::winograd::forward(&job, &x, n, h, w, oh, ow, &mut serial));
                assert_close(
                    &serial,
                    &want,
                    &scale,
                    &format!("F({m}) {g:?} n={n} {h}x{w}"),
                );
                let mut par = vec![f32::NAN; serial.len()];
                pool.install(|| super::winograd::forward(&job, &x, n, h, w, oh, ow, &mut par));
                assert_close(&par, &want, &scale, &format!("F({m}) on 2 threads, {g:?}"));
            }
        }
    });
}

#[test]
fn stems_on_few_input_channels_match_reference() {
    on_every_isa(|_| {
        // Layers with <= 4 input channels are convolved directly: the
        // three stems' geometries, output channels over several 24-channel groups and
        // not a multiple of any register block's 8, 6 or 2, dilation,
        // asymmetric padding, rows wider than one 32-pixel block, one image split
        // over threads and a batch.
        let mut rng = Rng(3);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        for (cin, cout, k, s, pad, d, h, w, n) in [
            (3, 32, (3, 3), (2, 2), Pad::asym(0, 1), (1, 1), 37, 41, 1),
            (3, 20, (7, 7), (2, 2), Pad::same(3), (1, 1), 45, 70, 2),
            (3, 16, (11, 11), (4, 4), Pad::same(2), (1, 1), 39, 39, 3),
            (3, 64, (11, 11), (4, 4), Pad::same(2), (1, 1), 47, 43, 2),
            (2, 53, (5, 5), (2, 2), Pad::same(2), (1, 1), 21, 36, 1),
            (1, 8, (3, 5), (1, 2), Pad::same(2), (2, 1), 12, 40, 1),
            (4, 9, (2, 2), (1, 1), Pad::default(), (1, 1), 5, 67, 2),
        ] {
            let g = geom(cin, cout, k, s, pad, d, 1);
            for act in [Act::None, Act::Relu6] {
                check_conv(&mut rng, g.clone(), n, h, w, act, true);
                pool.install(|| check_conv(&mut rng, g.clone(), n, h, w, act, true));
            }
        }
    });
}

#[test]
fn depthwise_spans_channel_groups() {
    on_every_isa(|_| {
        // Depthwise layers are computed 16 channels at a time (but on the portable ISA): cover whole
        // groups plus a remainder, one image split over threads and several images.
        let mut rng = Rng(77);
        for (c, k, s, pad, h, w, n) in [
            (40, (5, 5), (1, 1), Pad::same(2), 7, 7, 1),
            (40, (5, 5), (1, 1), Pad::same(2), 7, 7, 3),
            (35, (3, 3), (2, 2), Pad::asym(0, 1), 14, 14, 1),
            (48, (3, 3), (1, 1), Pad::same(1), 16, 16, 2),
            (17, (5, 5), (2, 2), Pad::asym(1, 2), 31, 29, 1),
        ] {
            for act in [Act::None, Act::Relu6] {
                check_conv(
                    &mut rng,
                    geom(c, c, k, s, pad, (1, 1), c),
                    n,
                    h,
                    w,
                    act,
                    true,
                );
            }
        }
    });
}

#[test]
fn residual_sum_fused_into_the_conv_equals_conv_then_add() {
    on_every_isa(|_| {
        let mut rng = Rng(99);
        for (g, act, then, h, w, n) in [
            // Fused on the GEMM path (no activation of the conv's own): 3x3 and 1x1.
            (
                geom(8, 16, (3, 3), (1, 1), Pad::same(1), (1, 1), 1),
                Act::None,
                Act::Relu,
                9,
                11,
                3,
            ),
            (
                geom(24, 40, (1, 1), (1, 1), Pad::default(), (1, 1), 1),
                Act::None,
                Act::None,
                14,
                14,
                1,
            ),
            // Winograd (3x3 stride 1, >= 16 channels), F(2x2) and F(4x4).
            (
                geom(16, 32, (3, 3), (1, 1), Pad::same(1), (1, 1), 1),
                Act::None,
                Act::Relu,
                7,
                9,
                2,
            ),
            (
                geom(16, 16, (3, 3), (1, 1), Pad::same(1), (1, 1), 1),
                Act::None,
                Act::Relu6,
                30,
                23,
                1,
            ),
            (
                geom(16, 32, (1, 1), (2, 2), Pad::default(), (1, 1), 1),
                Act::None,
                Act::Relu6,
                15,
                15,
                2,
            ),
            // A pass of its own: the conv has an activation, or is depthwise.
            (
                geom(8, 8, (3, 3), (1, 1), Pad::same(1), (1, 1), 1),
                Act::Relu,
                Act::Relu,
                7,
                7,
                2,
            ),
            (
                geom(16, 16, (3, 3), (1, 1), Pad::same(1), (1, 1), 16),
                Act::None,
                Act::Relu,
                7,
                7,
                2,
            ),
        ] {
            let weight = rng.vec(g.out_ch * g.weights_per_output());
            let bias = Some(rng.vec(g.out_ch));
            let conv = Conv2d::new(g.clone(), weight, bias, act);
            let x = rng.vec(n * g.in_ch * h * w);
            let (oh, ow) = g.out_hw(h, w);
            let y = rng.vec(n * g.out_ch * oh * ow);
            let mut want = conv.forward(&x, n, h, w);
            super::add_act(&mut want, &y, then);
            let mut got = vec![f32::NAN; want.len()];
            conv.forward_add_into(&x, n, h, w, &mut got, Some(&y), then);
            assert_eq!(got, want, "{g:?} {act:?} then {then:?}");
        }
    });
}

fn max_pool_ref(
    x: &[f32],
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: (usize, usize),
    s: (usize, usize),
    pad: Pad,
    oh: usize,
    ow: usize,
) -> Vec<f64> {
    let mut out = Vec::new();
    for p in 0..n * c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut m = f64::NEG_INFINITY;
                for ky in 0..k.0 {
                    for kx in 0..k.1 {
                        let iy = (oy * s.0 + ky) as isize - pad.top as isize;
                        let ix = (ox * s.1 + kx) as isize - pad.left as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            m = m.max(x[(p * h + iy as usize) * w + ix as usize] as f64);
                        }
                    }
                }
                out.push(m);
            }
        }
    }
    out
}

#[test]
fn max_pool_output_sizes_follow_torch() {
    let x = vec![0.0; 112 * 112];
    // ResNet: k3 s2 p1 on 112 -> 56.
    assert_eq!(
        max_pool2d(&x, 1, 1, 112, 112, (3, 3), (2, 2), Pad::same(1), false).1,
        56
    );
    let x = vec![0.0; 55 * 55];
    // AlexNet: k3 s2 on 55 -> 27; ceil mode gives the same here (52/2 exact).
    assert_eq!(
        max_pool2d(&x, 1, 1, 55, 55, (3, 3), (2, 2), Pad::default(), false).1,
        27
    );
    assert_eq!(
        max_pool2d(&x, 1, 1, 55, 55, (3, 3), (2, 2), Pad::default(), true).1,
        27
    );
    // 6 wide, k2 s2: floor 3; ceil also 3. 7 wide: floor 3, ceil 4.
    let x = vec![0.0; 7];
    assert_eq!(
        max_pool2d(&x, 1, 1, 1, 7, (1, 2), (1, 2), Pad::default(), false).2,
        3
    );
    assert_eq!(
        max_pool2d(&x, 1, 1, 1, 7, (1, 2), (1, 2), Pad::default(), true).2,
        4
    );
    // torch drops a ceil-mode window that would start in the right padding:
    // w 5, k 2, s 2, pad 1: (5+2-2)/2 = 2.5 -> 4 by ceil, but window 3 starts at 6-1 = 5 >= 5+1? no:
    // (4-1)*2 = 6 >= 5 + 1 -> drop to 3.
    let x = vec![0.0; 5];
    assert_eq!(
        max_pool2d(
            &x,
            1,
            1,
            1,
            5,
            (1, 2),
            (1, 2),
            Pad {
                top: 0,
                left: 1,
                bottom: 0,
                right: 1
            },
            true
        )
        .2,
        3
    );
}

#[test]
fn max_pool_matches_reference() {
    let mut rng = Rng(99);
    for _ in 0..200 {
        let k = (rng.range(1, 4), rng.range(1, 4));
        let s = (rng.range(1, 3), rng.range(1, 3));
        let pad = Pad {
            top: rng.range(0, k.0 / 2),
            left: rng.range(0, k.1 / 2),
            bottom: rng.range(0, k.0 / 2),
            right: rng.range(0, k.1 / 2),
        };
        let (n, c, h, w) = (
            rng.range(1, 3),
            rng.range(1, 4),
            rng.range(1, 12),
            rng.range(1, 12),
        );
        let ceil = rng.range(0, 1) == 1;
        // All-negative inputs: padding must not win with 0.
        let x: Vec<f32> = rng.vec(n * c * h * w).iter().map(|v| v - 2.0).collect();
        let (got, oh, ow) = max_pool2d(&x, n, c, h, w, k, s, pad, ceil);
        let want = max_pool_ref(&x, n, c, h, w, k, s, pad, oh, ow);
        assert_close(
            &got,
            &want,
            &vec![1.0; want.len()],
            &format!("max_pool k{k:?} s{s:?} {pad:?} ceil={ceil} {h}x{w}"),
        );
    }
}

#[test]
fn adaptive_avg_pool_matches_reference_down_and_up() {
    let mut rng = Rng(3);
    for (h, w, oh, ow) in [
        (7, 7, 1, 1),
        (13, 13, 6, 6),
        (5, 7, 3, 2),
        (2, 3, 6, 6),
        (1, 1, 4, 3),
        (6, 6, 6, 6),
        (10, 3, 4, 5),
    ] {
        let (n, c) = (2, 3);
        let x = rng.vec(n * c * h * w);
        let got = adaptive_avg_pool2d(&x, n, c, h, w, oh, ow);
        let mut want = Vec::new();
        for p in 0..n * c {
            for i in 0..oh {
                for j in 0..ow {
                    let (y0, y1) = ((i * h) as f64 / oh as f64, ((i + 1) * h) as f64 / oh as f64);
                    let (x0, x1) = ((j * w) as f64 / ow as f64, ((j + 1) * w) as f64 / ow as f64);
                    let (y0, y1, x0, x1) = (
                        y0.floor() as usize,
                        y1.ceil() as usize,
                        x0.floor() as usize,
                        x1.ceil() as usize,
                    );
                    let mut s = 0.0;
                    for y in y0..y1 {
                        for xx in x0..x1 {
                            s += x[(p * h + y) * w + xx] as f64;
                        }
                    }
                    want.push(s / ((y1 - y0) * (x1 - x0)) as f64);
                }
            }
        }
        assert_close(
            &got,
            &want,
            &vec![1.0; want.len()],
            &format!("adaptive {h}x{w} -> {oh}x{ow}"),
        );
    }
    // Hand-computed: 1x4 row [1, 2, 3, 4] to 1x2 -> [1.5, 3.5]; to 1x3 -> [1.5, 2.5, 3.5].
    assert_eq!(
        adaptive_avg_pool2d(&[1.0, 2.0, 3.0, 4.0], 1, 1, 1, 4, 1, 2),
        vec![1.5, 3.5]
    );
    assert_eq!(
        adaptive_avg_pool2d(&[1.0, 2.0, 3.0, 4.0], 1, 1, 1, 4, 1, 3),
        vec![1.5, 2.5, 3.5]
    );
}

#[test]
fn linear_matches_reference() {
    on_every_isa(|_| {
        let mut rng = Rng(11);
        // Batches up to 4 take the streaming kernel, larger ones the blocked one
        // (blocks of 1024 inputs x 64 outputs, groups of 6 images by 4 or 1 vectors of
        // outputs; partial vectors and blocks) or, on the portable type, GEMM.
        for (n, inf, outf) in [
            (1, 1, 1),
            (1, 1280, 1000),
            (3, 17, 5),
            (16, 64, 33),
            (7, 100, 70),
            (70, 20, 9),
            (16, 2100, 130),
            (13, 1030, 64),
        ] {
            for act in [Act::None, Act::Relu, Act::Relu6] {
                let wt: Vec<f32> = rng.vec(outf * inf).iter().map(|v| v * 4.0).collect();
                let b = rng.vec(outf);
                let x = rng.vec(n * inf);
                let lin = Linear::new(wt.clone(), Some(b.clone()), act);
                assert_eq!((lin.in_features(), lin.out_features()), (inf, outf));
                let got = lin.forward(&x, n);
                let mut want = Vec::new();
                let mut scale = Vec::new();
                for i in 0..n {
                    for o in 0..outf {
                        let terms =
                            (0..inf).map(|k| x[i * inf + k] as f64 * wt[o * inf + k] as f64);
                        want.push(act_ref(b[o] as f64 + terms.clone().sum::<f64>(), act));
                        scale.push(terms.map(f64::abs).sum::<f64>());
                    }
                }
                assert_close(
                    &got,
                    &want,
                    &scale,
                    &format!("linear {n}x{inf}->{outf} {act:?}"),
                );
            }
        }
        let lin = Linear::with_shape(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], None, Act::None, 3, 2);
        assert_eq!(lin.forward(&[1.0, 0.0, -1.0], 1), vec![-2.0, -2.0]);
    });
}

#[test]
fn activations_and_residual_add() {
    let mut x = vec![-1.0, 0.5, 7.0];
    apply_act(&mut x, Act::Relu6);
    assert_eq!(x, vec![0.0, 0.5, 6.0]);
    let mut x = vec![-1.0, 0.5, 7.0];
    apply_act(&mut x, Act::Relu);
    assert_eq!(x, vec![0.0, 0.5, 7.0]);
    let mut acc = vec![1.0, -3.0, 5.0];
    add_act(&mut acc, &[2.0, 1.0, 2.0], Act::Relu6);
    assert_eq!(acc, vec![3.0, 0.0, 6.0]);
    let mut acc = vec![1.0, -3.0];
    add_act(&mut acc, &[2.0, 1.0], Act::None);
    assert_eq!(acc, vec![3.0, -2.0]);
}

#[test]
fn channel_peaks_hand_cases() {
    let nan = f32::NAN;
    let planes: Vec<Vec<f32>> = vec![
        vec![1.0, 3.0, 2.0, 3.0],    // tie -> first index 1
        vec![nan, nan, nan, nan],    // all NaN -> NaN at 0
        vec![-5.0, -2.0, nan, -3.0], // all negative with a NaN -> -2 at 1
        vec![nan, -7.0, nan, -7.5],  // NaN first -> -7 at 1
        vec![f32::NEG_INFINITY; 4],  // -inf plane -> -inf at 0
    ];
    let x: Vec<f32> = planes.concat();
    let (v, i) = channel_peaks(&x, 1, 5, 4);
    assert_eq!(v[0], 3.0);
    assert!(v[1].is_nan());
    assert_eq!(&v[2..], &[-2.0, -7.0, f32::NEG_INFINITY]);
    assert_eq!(i, vec![1, 0, 1, 1, 0]);
}

#[test]
fn channel_peaks_match_reference_on_random_planes() {
    let mut rng = Rng(5);
    for (n, c, hw) in [
        (1, 1, 1),
        (2, 3, 7 * 5),
        (3, 16, 56 * 56),
        (1, 40, 33),
        (2, 5, 1000),
    ] {
        let mut x: Vec<f32> = rng.vec(n * c * hw).iter().map(|v| v - 0.5).collect();
        // Sprinkle NaNs, repeated maxima and one all-NaN plane.
        for _ in 0..(x.len() / 10) {
            let i = rng.range(0, x.len() - 1);
            x[i] = f32::NAN;
        }
        for _ in 0..(x.len() / 20) {
            let i = rng.range(0, x.len() - 1);
            x[i] = 0.5;
        }
        if n * c > 1 {
            x[hw..2 * hw].fill(f32::NAN);
        }
        let (v, i) = channel_peaks(&x, n, c, hw);
        for p in 0..n * c {
            let plane = &x[p * hw..(p + 1) * hw];
            let mut best: Option<(f32, usize)> = None;
            for (j, &val) in plane.iter().enumerate() {
                if !val.is_nan() && best.is_none_or(|(b, _)| val > b) {
                    best = Some((val, j));
                }
            }
            match best {
                Some((bv, bj)) => {
                    assert_eq!((v[p], i[p] as usize), (bv, bj), "plane {p} of {n}x{c}x{hw}")
                }
                None => assert!(v[p].is_nan() && i[p] == 0, "all-NaN plane {p}"),
            }
        }
    }
}

/// Peaks found in the channel-blocked layout are those of the same maps unblocked,
/// and those of a plain scan (the first strictly greater value, NaN skipped), on
/// every ISA: random planes, padded channel counts, ties, signed zeros, planes of
/// NaN and of -inf.
#[test]
fn blocked_channel_peaks_match_the_unblocked_ones() {
    on_every_isa(|isa| {
        let mut rng = Rng(23);
        for (n, c, hw) in [
            (1, 1, 1),
            (2, 3, 35),
            (1, 16, 56 * 56),
            (3, 40, 49),
            (2, 33, 12),
        ] {
            let mut x: Vec<f32> = rng.vec(n * c * hw).iter().map(|v| v - 0.5).collect();
            for _ in 0..(x.len() / 10) {
                let i = rng.range(0, x.len() - 1);
                x[i] = [f32::NAN, 0.5, 0.0, -0.0][i % 4];
            }
            if n * c > 2 {
                x[hw..2 * hw].fill(f32::NAN);
                x[2 * hw..3 * hw].fill(f32::NEG_INFINITY);
                x[2 * hw] = f32::NAN;
            }
            let mut b = vec![0f32; n * blocked::image_len(c, hw)];
            blocked::to_blocked(&x, n, c, hw, &mut b);
            let (bv, bi) = blocked_channel_peaks(&b, n, c, hw);
            let (v, i) = channel_peaks(&x, n, c, hw);
            for p in 0..n * c {
                let plane = &x[p * hw..(p + 1) * hw];
                let mut want: Option<(f32, usize)> = None;
                for (j, &val) in plane.iter().enumerate() {
                    if !val.is_nan() && want.is_none_or(|(b, _)| val > b) {
                        want = Some((val, j));
                    }
                }
                let (wv, wi) = want.unwrap_or((f32::NAN, 0));
                let what = format!("{isa:?}: plane {p} of {n}x{c}x{hw}");
                assert_eq!(bv[p].to_bits(), wv.to_bits(), "{what}: blocked value");
                assert_eq!(bi[p] as usize, wi, "{what}: blocked position");
                assert_eq!(v[p].to_bits(), wv.to_bits(), "{what}: value");
                assert_eq!(i[p] as usize, wi, "{what}: position");
            }
        }
    });
}

#[test]
fn single_thread_pool_gives_the_same_results() {
    // Batch smaller than the pool takes the threaded-GEMM path; batch >= 1 thread the per-image path.
    let mut rng = Rng(17);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        check_conv(
            &mut rng,
            geom(16, 8, (3, 3), (2, 2), Pad::same(1), (1, 1), 1),
            1,
            20,
            20,
            Act::Relu,
            true,
        );
        check_conv(
            &mut rng,
            geom(8, 8, (3, 3), (1, 1), Pad::same(1), (1, 1), 8),
            2,
            20,
            20,
            Act::Relu6,
            true,
        );
    });
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    pool.install(|| {
        check_conv(
            &mut rng,
            geom(16, 8, (3, 3), (2, 2), Pad::same(1), (1, 1), 1),
            1,
            20,
            20,
            Act::Relu,
            true,
        );
        check_conv(
            &mut rng,
            geom(16, 8, (3, 3), (2, 2), Pad::same(1), (1, 1), 1),
            4,
            20,
            20,
            Act::Relu,
            true,
        );
    });
}

#[test]
fn kernels_with_the_pool_kept_awake_match_the_reference_and_the_helpers_stop() {
    // A single image's layers split over a 3-thread pool whose other threads spin
    // for jobs: the results as without; the call returns (helpers told to stop)
    // after f returns, after f panics, and when called from inside the pool.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(3)
        .build()
        .unwrap();
    let mut rng = Rng(77);
    pool.install(|| {
        let r = super::keep_pool_awake(|| {
            assert_eq!(super::threads(), 3);
            for (g, h, w) in [
                (
                    geom(40, 56, (1, 1), (1, 1), Pad::default(), (1, 1), 1),
                    14,
                    14,
                ),
                (
                    geom(32, 32, (3, 3), (1, 1), Pad::same(1), (1, 1), 32),
                    17,
                    9,
                ),
                (geom(3, 16, (3, 3), (2, 2), Pad::same(1), (1, 1), 1), 33, 31),
            ] {
                check_conv(&mut rng, g, 1, h, w, Act::Relu6, true);
            }
            7
        });
        assert_eq!(r, 7);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            super::keep_pool_awake(|| panic!("inside"))
        }));
        assert!(caught.is_err());
        // Nested inside a parallel loop, and once more after the panic; inside a call,
        // a call just runs its closure, and the mark is gone after each.
        (0..3).into_par_iter().for_each(|k| {
            assert_eq!(super::keep_pool_awake(|| k * 2), k * 2);
        });
        assert!(!super::pool_kept_awake());
        let inner = super::keep_pool_awake(|| {
            assert!(super::pool_kept_awake());
            super::keep_pool_awake(super::pool_kept_awake)
        });
        assert!(inner && !super::pool_kept_awake());
    });
    // Called from outside any pool (the global one's threads then spin).
    assert_eq!(super::keep_pool_awake(|| 5), 5);
}

#[test]
fn serial_kernels_match_the_reference_inside_a_busy_pool() {
    // One image per task on a 2-thread pool, as Network::forward_hw runs a batch: the
    // GEMM paths then run single-threaded (1x1 and im2col layers, one image and two).
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    pool.install(|| {
        (0..4u64).into_par_iter().for_each(|seed| {
            super::serial(|| {
                let mut rng = Rng(40 + seed);
                assert_eq!(super::threads(), 1);
                check_conv(
                    &mut rng,
                    geom(16, 24, (1, 1), (1, 1), Pad::default(), (1, 1), 1),
                    1,
                    9,
                    11,
                    Act::Relu6,
                    true,
                );
                check_conv(
                    &mut rng,
                    geom(8, 12, (3, 3), (2, 2), Pad::same(1), (1, 1), 1),
                    1,
                    15,
                    13,
                    Act::Relu,
                    true,
                );
            });
            assert_eq!(super::threads(), 2);
        });
    });
}

#[test]
fn max_pool_propagates_nan_and_ignores_padding() {
    // 1x4 row, k 1x2 s 1x2 pad left 1: windows [pad, 0], [1, 2], [3, pad].
    let x = [-3.0, f32::NAN, -1.0, -2.0];
    let pad = Pad {
        top: 0,
        left: 1,
        bottom: 0,
        right: 1,
    };
    let (y, oh, ow) = max_pool2d(&x, 1, 1, 1, 4, (1, 2), (1, 2), pad, false);
    assert_eq!((oh, ow), (1, 3));
    assert_eq!(y[0], -3.0);
    assert!(y[1].is_nan());
    assert_eq!(y[2], -2.0);
}

#[test]
fn every_instruction_set_variant_matches_the_reference() {
    // The hand-vectorised loops are compiled for AVX-512, AVX2+FMA and baseline
    // x86-64; force each one this machine can run (others tests may run meanwhile
    // on the forced variant too, which must be just as correct).
    on_every_isa(|isa| {
        let mut rng = Rng(1234);
        for (g, n, h, w) in [
            (
                geom(8, 8, (3, 3), (1, 1), Pad::same(1), (1, 1), 8),
                2,
                13,
                11,
            ),
            (
                geom(6, 6, (5, 5), (2, 2), Pad::asym(1, 2), (1, 1), 6),
                1,
                15,
                16,
            ),
            (geom(4, 4, (2, 3), (1, 2), Pad::same(1), (2, 1), 4), 1, 9, 8),
            (
                geom(5, 7, (3, 3), (2, 2), Pad::asym(0, 1), (1, 1), 1),
                2,
                11,
                12,
            ),
            (
                geom(5, 7, (1, 1), (1, 1), Pad::default(), (1, 1), 1),
                1,
                6,
                6,
            ),
        ] {
            for act in [Act::None, Act::Relu6] {
                check_conv(&mut rng, g.clone(), n, h, w, act, true);
            }
        }
        let x: Vec<f32> = rng.vec(3 * 100).iter().map(|v| v - 3.0).collect();
        let (v, i) = channel_peaks(&x, 1, 3, 100);
        for p in 0..3 {
            let plane = &x[p * 100..(p + 1) * 100];
            let best = plane.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!((v[p], plane[i[p] as usize]), (best, best), "{isa:?}");
        }
        let lin = Linear::with_shape(x[..5 * 21].to_vec(), None, Act::None, 21, 5);
        let y = lin.forward(&x[..3 * 21], 3);
        for (i, &v) in y.iter().enumerate() {
            let (b, o) = (i / 5, i % 5);
            let want: f64 = (0..21)
                .map(|k| x[b * 21 + k] as f64 * x[o * 21 + k] as f64)
                .sum();
            assert!((v as f64 - want).abs() < 1e-3, "{isa:?} linear {i}");
        }
        let (y, _, _) = max_pool2d(&x, 1, 3, 10, 10, (3, 3), (2, 2), Pad::same(1), false);
        assert_eq!(y[0], plane_max(&x, 10, 0..2, 0..2), "{isa:?}");
    });
}

fn plane_max(x: &[f32], w: usize, ys: std::ops::Range<usize>, xs: std::ops::Range<usize>) -> f32 {
    let mut m = f32::NEG_INFINITY;
    for y in ys {
        for xx in xs.clone() {
            m = m.max(x[y * w + xx]);
        }
    }
    m
}

/// Runs `conv` on channel-blocked activations: NCHW `x` in, NCHW out, through
/// `blocked::to_blocked` / `from_blocked`; `residual` (NCHW) summed as in
/// `forward_add_into`.
fn blocked_forward(
    conv: &Conv2d,
    x: &[f32],
    n: usize,
    h: usize,
    w: usize,
    residual: Option<(&[f32], Act)>,
) -> Vec<f32> {
    let g = conv.geom();
    let (oh, ow) = g.out_hw(h, w);
    let xb = if conv.reads_blocked() {
        let mut xb = vec![f32::NAN; n * blocked::image_len(g.in_ch, h * w)];
        blocked::to_blocked(x, n, g.in_ch, h * w, &mut xb);
        xb
    } else {
        x.to_vec()
    };
    let out_len = n * blocked::image_len(g.out_ch, oh * ow);
    let rb = residual.map(|(r, then)| {
        let mut rb = vec![f32::NAN; out_len];
        blocked::to_blocked(r, n, g.out_ch, oh * ow, &mut rb);
        (rb, then)
    });
    let mut ob = vec![f32::NAN; out_len];
    conv.forward_blocked_into(
        &xb,
        n,
        h,
        w,
        &mut ob,
        rb.as_ref().map(|(r, _)| r.as_slice()),
        rb.as_ref().map_or(Act::None, |(_, t)| *t),
    );
    // Padded lanes of the output hold zeros, so that later layers may read them.
    let cb = g.out_ch.div_ceil(blocked::LANES);
    for (i, v) in ob.iter().enumerate() {
        let lane = i % blocked::LANES;
        let block = i / (blocked::LANES * oh * ow) % cb;
        if block * blocked::LANES + lane >= g.out_ch {
            assert_eq!(*v, 0.0, "padded lane {lane} of block {block} at {i}");
        }
    }
    let mut out = vec![f32::NAN; n * g.out_ch * oh * ow];
    blocked::from_blocked(&ob, n, g.out_ch, oh * ow, &mut out);
    out
}

#[test]
fn blocked_layout_round_trips_with_zero_padding() {
    on_every_isa(|_| {
        let mut rng = Rng(5);
        for _ in 0..40 {
            let (n, c, hw) = (rng.range(1, 3), rng.range(1, 50), rng.range(1, 70));
            let x = rng.vec(n * c * hw);
            let mut b = vec![f32::NAN; n * blocked::image_len(c, hw)];
            blocked::to_blocked(&x, n, c, hw, &mut b);
            let cp = c.div_ceil(16) * 16;
            for img in 0..n {
                for ch in 0..cp {
                    for p in 0..hw {
                        let got = b[((img * cp / 16 + ch / 16) * hw + p) * 16 + ch % 16];
                        let want = if ch < c {
                            x[(img * c + ch) * hw + p]
                        } else {
                            0.0
                        };
                        assert_eq!(
                            got, want,
                            "n={n} c={c} hw={hw} image {img} channel {ch} pixel {p}"
                        );
                    }
                }
            }
            let mut back = vec![f32::NAN; x.len()];
            blocked::from_blocked(&b, n, c, hw, &mut back);
            assert_eq!(back, x, "n={n} c={c} hw={hw}");
        }
    });
}

#[test]
fn blocked_pointwise_matches_reference() {
    on_every_isa(|_| {
        let mut rng = Rng(31);
        // Channel counts around the 16-lane blocks and the 4-block output groups, pixel
        // counts around the 6-pixel tiles; one image split over threads and several.
        let mut cases = vec![(24, 144, 7, 7, 1), (1152, 192, 7, 7, 2), (40, 240, 5, 3, 3)];
        for _ in 0..30 {
            cases.push((
                rng.range(1, 90),
                rng.range(1, 90),
                rng.range(1, 13),
                rng.range(1, 13),
                rng.range(1, 3),
            ));
        }
        for (ci, co, h, w, n) in cases {
            let g = geom(ci, co, (1, 1), (1, 1), Pad::default(), (1, 1), 1);
            let act = rng.pick(&[Act::None, Act::Relu, Act::Relu6]);
            let wt: Vec<f32> = rng.vec(co * ci).iter().map(|v| v * 3.0).collect();
            let bias = Some(rng.vec(co));
            let conv = Conv2d::new(g.clone(), wt.clone(), bias.clone(), act);
            let x = rng.vec(n * ci * h * w);
            let (want, scale) = conv_ref(&g, &wt, bias.as_deref(), act, &x, n, h, w);
            let what = format!("blocked 1x1 {ci}->{co} n={n} {h}x{w} {act:?}");
            assert_close(
                &blocked_forward(&conv, &x, n, h, w, None),
                &want,
                &scale,
                &what,
            );
            let single = rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap();
            let serial = single.install(|| blocked_forward(&conv, &x, n, h, w, None));
            assert_close(&serial, &want, &scale, &format!("{what}, one thread"));
            // The residual sum as the output is stored: then(act(conv) + y).
            let y = rng.vec(want.len());
            let then = rng.pick(&[Act::None, Act::Relu]);
            let with_res: Vec<f64> = want
                .iter()
                .zip(&y)
                .map(|(&v, &y)| act_ref(v + y as f64, then))
                .collect();
            let got = blocked_forward(&conv, &x, n, h, w, Some((&y, then)));
            assert_close(
                &got,
                &with_res,
                &scale,
                &format!("{what} + residual, then {then:?}"),
            );
        }
    });
}

#[test]
fn blocked_pointwise_skipping_zero_channels_gives_the_dense_sums() {
    // Inputs as a ReLU leaves them: whole channels zero, channels zero over some
    // pixels (runs longer and shorter than a pass), -0.0, one NaN; channel counts
    // over several 128-channel chunks with a partial last block, outputs of 4+
    // blocks (the skipping path) and fewer. Told its input is sparse, the layer
    // must give what it gives dense (the same sums in the same order: equal values)
    // and the reference.
    on_every_isa(|isa| {
        let mut rng = Rng(91);
        for (ci, co, h, w, n) in [
            (1152, 192, 7, 7, 1),
            (300, 80, 14, 14, 2),
            (672, 112, 14, 14, 1),
            (40, 70, 9, 23, 1),
            (144, 24, 12, 12, 1),
        ] {
            let g = geom(ci, co, (1, 1), (1, 1), Pad::default(), (1, 1), 1);
            let wt = rng.vec(co * ci);
            let bias = Some(rng.vec(co));
            let mut x = rng.vec(n * ci * h * w);
            let hw = h * w;
            for (i, v) in x.iter_mut().enumerate() {
                let (c, p) = (i / hw % ci, i % hw);
                let dead = c % 3 == 0 || (c % 5 == 1 && p < hw / 2) || (c % 7 == 2 && p > 60);
                if dead || *v < 0.0 {
                    *v = if c % 11 == 4 { -0.0 } else { 0.0 };
                }
            }
            let nan_at = x.len() / 2 + 3;
            if ci == 300 {
                x[nan_at] = f32::NAN;
            }
            let mut conv = Conv2d::new(g.clone(), wt.clone(), bias.clone(), Act::Relu6);
            let dense = blocked_forward(&conv, &x, n, h, w, None);
            conv.set_sparse_input(true);
            let sparse = blocked_forward(&conv, &x, n, h, w, None);
            let what = format!("{} 1x1 {ci}->{co} n={n} {h}x{w}", isa.name());
            for (i, (a, b)) in dense.iter().zip(&sparse).enumerate() {
                assert!(
                    a == b || (a.is_nan() && b.is_nan()),
                    "{what}: {a} dense vs {b} skipping at {i}"
                );
            }
            if ci == 300 {
                // The NaN's pixel, every output channel: kept, not skipped.
                let (img, p) = (nan_at / (ci * hw), nan_at % hw);
                assert!(
                    (0..co).all(|o| sparse[(img * co + o) * hw + p].is_nan()),
                    "{what}: NaN"
                );
                continue;
            }
            let (want, scale) = conv_ref(&g, &wt, bias.as_deref(), Act::Relu6, &x, n, h, w);
            assert_close(&sparse, &want, &scale, &what);
        }
    });
}

#[test]
fn blocked_depthwise_matches_reference() {
    on_every_isa(|_| {
        let mut rng = Rng(47);
        let mut cases = vec![
            (672, 5, 2, Pad::asym(1, 2), 14, 14, 1),
            (1152, 3, 1, Pad::same(1), 7, 7, 2),
            (32, 3, 1, Pad::same(1), 112, 112, 1),
        ];
        for _ in 0..40 {
            let k = rng.pick(&[3, 5, 7]);
            let pad = Pad {
                top: rng.range(0, k - 1),
                bottom: rng.range(0, k - 1),
                left: rng.range(0, k - 1),
                right: rng.range(0, k - 1),
            };
            cases.push((
                rng.range(1, 40),
                k,
                rng.range(1, 2),
                pad,
                rng.range(k, 20),
                rng.range(k, 20),
                rng.range(1, 3),
            ));
        }
        for (c, k, s, pad, h, w, n) in cases {
            let g = geom(c, c, (k, k), (s, s), pad, (1, 1), c);
            let act = rng.pick(&[Act::None, Act::Relu, Act::Relu6]);
            let wt: Vec<f32> = rng.vec(c * k * k).iter().map(|v| v * 3.0).collect();
            let bias = Some(rng.vec(c));
            let conv = Conv2d::new(g.clone(), wt.clone(), bias.clone(), act);
            let x = rng.vec(n * c * h * w);
            let (want, scale) = conv_ref(&g, &wt, bias.as_deref(), act, &x, n, h, w);
            let what =
                format!("blocked depthwise {c}ch {k}x{k}/s{s} {pad:?} n={n} {h}x{w} {act:?}");
            assert_close(
                &blocked_forward(&conv, &x, n, h, w, None),
                &want,
                &scale,
                &what,
            );
        }
    });
}

#[test]
fn blocked_stem_matches_reference() {
    on_every_isa(|_| {
        let mut rng = Rng(53);
        // Lite0's stem (TF "same" padding, one row and column after), ResNet's and
        // AlexNet's, then random ones.
        let mut cases = vec![
            (3, 32, 3, 2, Pad::asym(0, 1), 40, 38, 1),
            (3, 64, 7, 2, Pad::same(3), 23, 29, 2),
            (3, 64, 11, 4, Pad::same(2), 35, 35, 1),
        ];
        for _ in 0..30 {
            let k = rng.range(1, 5);
            let pad = Pad {
                top: rng.range(0, k - 1),
                bottom: rng.range(0, k - 1),
                left: rng.range(0, k - 1),
                right: rng.range(0, k - 1),
            };
            cases.push((
                rng.range(1, 4),
                rng.range(1, 50),
                k,
                rng.range(1, 4),
                pad,
                rng.range(k, 30),
                rng.range(k, 30),
                rng.range(1, 3),
            ));
        }
        for (ci, co, k, s, pad, h, w, n) in cases {
            let g = geom(ci, co, (k, k), (s, s), pad, (1, 1), 1);
            let act = rng.pick(&[Act::None, Act::Relu, Act::Relu6]);
            let wt: Vec<f32> = rng.vec(co * ci * k * k).iter().map(|v| v * 3.0).collect();
            let bias = Some(rng.vec(co));
            let conv = Conv2d::new(g.clone(), wt.clone(), bias.clone(), act);
            assert!(!conv.reads_blocked(), "a stem reads NCHW");
            let x = rng.vec(n * ci * h * w);
            let (want, scale) = conv_ref(&g, &wt, bias.as_deref(), act, &x, n, h, w);
            let what =
                format!("blocked stem {ci}->{co} {k}x{k}/s{s} {pad:?} n={n} {h}x{w} {act:?}");
            assert_close(
                &blocked_forward(&conv, &x, n, h, w, None),
                &want,
                &scale,
                &what,
            );
        }
    });
}
