//! One thread's speed of the channel-blocked conv kernels against the NCHW paths, on
//! EfficientNet-Lite0's layer shapes and other networks' stems (the whole-network
//! comparison is `scripts/bench.sh`). Random weights and inputs; prints GFLOP/s for
//! 1x1 convs and stems, microseconds for depthwise convs.
//!
//! ```text
//! cargo run --release --example blocked_vs_nchw
//! ```

use std::time::Instant;

use neurodex::kernels::{self, blocked, Act, Conv2d, ConvGeom, Pad};

/// A small deterministic generator of values in [-1, 1).
struct Rng(u64);

impl Rng {
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 = self
                    .0
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }
}

fn geom(ci: usize, co: usize, k: usize, s: usize, pad: Pad, groups: usize) -> ConvGeom {
    ConvGeom {
        in_ch: ci,
        out_ch: co,
        kernel: (k, k),
        stride: (s, s),
        pad,
        dilation: (1, 1),
        groups,
    }
}

/// Best time per call in seconds (of 7 rounds of `reps` calls) of `conv` on one random
/// `hw` x `hw` image on this thread alone: the NCHW path, then the blocked one.
fn time_both_paths(rng: &mut Rng, conv: &Conv2d, hw: usize, reps: usize) -> (f64, f64) {
    let g = conv.geom();
    let (oh, ow) = g.out_hw(hw, hw);
    let x = rng.vec(g.in_ch * hw * hw);
    let xb = if conv.reads_blocked() {
        let mut xb = vec![0.0; blocked::image_len(g.in_ch, hw * hw)];
        blocked::to_blocked(&x, 1, g.in_ch, hw * hw, &mut xb);
        xb
    } else {
        x.clone()
    };
    let mut o = vec![0.0; g.out_ch * oh * ow];
    let mut ob = vec![0.0; blocked::image_len(g.out_ch, oh * ow)];
    let best = |f: &mut dyn FnMut()| {
        (0..7)
            .map(|_| {
                let t = Instant::now();
                (0..reps).for_each(|_| f());
                t.elapsed().as_secs_f64() / reps as f64
            })
            .fold(f64::INFINITY, f64::min)
    };
    kernels::serial(|| {
        let a = best(&mut || conv.forward_into(&x, 1, hw, hw, &mut o));
        let b = best(&mut || conv.forward_blocked_into(&xb, 1, hw, hw, &mut ob, None, Act::None));
        (a, b)
    })
}

fn main() {
    let mut rng = Rng(1);
    let gflops = |g: &ConvGeom, hw: usize, secs: f64| {
        let (oh, ow) = g.out_hw(hw, hw);
        2.0 * (g.out_ch * oh * ow * g.weights_per_output()) as f64 / secs / 1e9
    };
    for (ci, co, hw) in [
        (1152, 192, 7),
        (192, 1152, 7),
        (672, 112, 14),
        (112, 672, 14),
        (24, 144, 56),
        (144, 24, 56),
        (320, 1280, 7),
    ] {
        let g = geom(ci, co, 1, 1, Pad::default(), 1);
        let conv = Conv2d::new(g.clone(), rng.vec(ci * co), Some(rng.vec(co)), Act::Relu6);
        let (a, b) = time_both_paths(&mut rng, &conv, hw, 60);
        let (a, b) = (gflops(&g, hw, a), gflops(&g, hw, b));
        println!(
            "1x1 {ci}->{co} {hw}x{hw}: gemm {a:.1} GFLOP/s, blocked {b:.1} GFLOP/s ({:.2})",
            b / a
        );
    }
    for (co, k, s, pad, hw) in [(64, 11, 4, 2, 224), (64, 7, 2, 3, 224), (32, 3, 2, 1, 224)] {
        let g = geom(3, co, k, s, Pad::same(pad), 1);
        let conv = Conv2d::new(
            g.clone(),
            rng.vec(co * 3 * k * k),
            Some(rng.vec(co)),
            Act::Relu,
        );
        let (a, b) = time_both_paths(&mut rng, &conv, hw, 20);
        let (a, b) = (gflops(&g, hw, a), gflops(&g, hw, b));
        println!(
            "stem 3->{co} {k}x{k}/s{s} {hw}x{hw}: direct {a:.1} GFLOP/s, blocked {b:.1} GFLOP/s ({:.2})",
            b / a
        );
    }
    for (c, k, s, hw) in [
        (1152, 5, 1, 7),
        (672, 5, 1, 14),
        (672, 5, 2, 14),
        (480, 3, 1, 14),
        (144, 3, 1, 56),
        (32, 3, 1, 112),
    ] {
        let g = geom(c, c, k, s, Pad::same(k / 2), c);
        let conv = Conv2d::new(g, rng.vec(c * k * k), Some(rng.vec(c)), Act::Relu6);
        let (a, b) = time_both_paths(&mut rng, &conv, hw, 100);
        println!(
            "dw {c} {k}x{k}/s{s} {hw}x{hw}: nchw {:.1} us, blocked {:.1} us",
            a * 1e6,
            b * 1e6
        );
    }
}
