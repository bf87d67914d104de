//! The gradient of one unit's value with respect to the network input, back through
//! every layer: the plain gradient (what the Deep Visualization Toolbox calls
//! backprop), guided backprop (Springenberg et al. 2015) and the deconvnet (Zeiler &
//! Fergus 2014). The three differ only at rectifiers: the gradient passes where the
//! unit was active, the deconvnet where the signal coming back is positive, guided
//! backprop where both are. Max pooling sends the signal to the cell that won in
//! every flavour (the deconvnet's switches).
//!
//! The forward pass keeps the outputs the way back reads (a rectifier's output for
//! its mask, a pooling's input and output, a product's factors); convolutions go
//! back as convolutions on the forward's kernels (`kernels::ConvTranspose`), fully
//! connected layers as one GEMM per block.

use rayon::prelude::*;

use super::{Layer, Network, Tap};
use crate::arch::{self, Act, Unary};
use crate::kernels::{self, ConvTranspose};
use crate::{Error, Result};

/// How the signal passes a rectifier on the way back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// The true gradient: where the rectifier's input was in its linear range.
    Gradient,
    /// Guided backprop: where the gradient passes and is positive.
    Guided,
    /// The deconvnet: where the signal coming back is positive, whatever the input.
    Deconv,
}

impl Rule {
    pub const ALL: [Rule; 3] = [Rule::Gradient, Rule::Guided, Rule::Deconv];

    /// The name the command line and the database use (`backprop` is the toolbox's
    /// name for the plain gradient).
    pub fn name(self) -> &'static str {
        match self {
            Rule::Gradient => "backprop",
            Rule::Guided => "guided",
            Rule::Deconv => "deconv",
        }
    }

    pub fn from_name(s: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// Which value of a unit's map is the scalar differentiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pick {
    /// The value at row `y`, column `x` (a unit's recorded peak).
    At { y: usize, x: usize },
    /// The map's maximum (the first cell holding it, row by row).
    Max,
    /// The map's mean (a class logit's, or feature visualisation's objective).
    Mean,
}

/// One image's scalar: unit (channel) `unit` of the tapped layer, picked by `pick`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Objective {
    pub unit: usize,
    pub pick: Pick,
}

/// What [`Network::input_gradient`] returns.
#[derive(Clone, Debug)]
pub struct InputGradient {
    /// `[n, 3, h, w]`, the gradient (or the guided or deconvnet signal) with respect
    /// to each image's input.
    pub data: Vec<f32>,
    pub n: usize,
    pub h: usize,
    pub w: usize,
    /// Each image's scalar as the forward pass computed it.
    pub values: Vec<f32>,
    /// Each image's cell `(y, x)` the scalar was taken at (`Pick::Mean`: the map's
    /// maximum, for reference).
    pub at: Vec<(usize, usize)>,
}

impl InputGradient {
    /// Image `i`'s `[3, h, w]` block.
    pub fn image(&self, i: usize) -> &[f32] {
        let len = 3 * self.h * self.w;
        &self.data[i * len..(i + 1) * len]
    }
}

impl Network {
    /// The input gradient of each image's `objectives[i]` on `tap` (before the
    /// activation where `tap.pre`: a unit's ranking value, whose gradient does not
    /// vanish where the activation saturates), for `n` images of `h` x `w` (CHW each,
    /// concatenated), passing rectifiers by `rule`. Images are independent: image i's
    /// gradient is that of its own objective.
    pub fn input_gradient(
        &self,
        input: &[f32],
        (n, h, w): (usize, usize, usize),
        tap: Tap,
        objectives: &[Objective],
        rule: Rule,
    ) -> Result<InputGradient> {
        // One image: each layer, forward and back, split over a pool kept awake. (At
        // batch 16 that was slower and erratic: Lite0 22.6 -> 15-19 images/s.)
        if n == 1 && !kernels::pool_kept_awake() {
            return kernels::keep_pool_awake(|| {
                self.input_gradient(input, (n, h, w), tap, objectives, rule)
            });
        }
        let nodes = &self.arch.nodes;
        let target = tap.node;
        if target == 0 || target >= nodes.len() {
            return Err(Error::Shape(format!("no layer {target} to differentiate")));
        }
        if input.len() != n * 3 * h * w || objectives.len() != n {
            return Err(Error::Shape(format!(
                "gradient: {} numbers and {} objectives for {n} images of 3 x {h} x {w}",
                input.len(),
                objectives.len()
            )));
        }
        let shapes = self.arch.shapes_for(h, w);
        let [c, th, tw] = shapes[target];
        for o in objectives {
            let inside = match o.pick {
                Pick::At { y, x } => y < th && x < tw,
                _ => true,
            };
            if o.unit >= c || !inside {
                return Err(Error::Shape(format!(
                    "{}: no unit {} {:?} in its {c} x {th} x {tw} output",
                    nodes[target].name, o.unit, o.pick
                )));
            }
        }
        // The nodes the way back goes through, and the outputs it reads.
        let mut needed = vec![false; target + 1];
        needed[target] = true;
        for i in (1..=target).rev() {
            if needed[i] {
                for &j in &nodes[i].inputs {
                    needed[j] = true;
                }
            }
        }
        // Of those, the outputs the way back reads: a rectifier's (its mask), a max
        // pool's and a softmax's; and the inputs of functions, products, quotients,
        // max pools and norms. A conv without activation (a projection) keeps nothing.
        let mut read = vec![false; target + 1];
        for i in (1..=target).filter(|&i| needed[i]) {
            let layer = &self.layers[i];
            if self.act_of(i) != Act::None
                || matches!(layer, Layer::MaxPool { .. } | Layer::Softmax)
            {
                read[i] = true;
            }
            if matches!(
                layer,
                Layer::Unary(_)
                    | Layer::Mul
                    | Layer::Binary(_)
                    | Layer::MaxPool { .. }
                    | Layer::ChannelNorm { .. }
            ) {
                for &j in &nodes[i].inputs {
                    read[j] = true;
                }
            }
        }
        let keep: Vec<usize> = (1..=target).filter(|&i| read[i]).collect();
        let mut taps: Vec<Tap> = keep.iter().map(|&i| Tap::post(i)).collect();
        taps.push(tap);
        let mut maps = self.forward_taps_hw(input, n, h, w, &taps)?;
        let seed_map = maps.pop().expect("the target's tap").data;
        let mut outs: Vec<Option<Vec<f32>>> = vec![None; target + 1];
        for (i, a) in keep.iter().zip(maps) {
            outs[*i] = Some(a.data);
        }
        let pre = self.normalise_taps(&[tap])?[0].pre || self.act_of(target) == Act::None;

        // The seed: one image's objective each.
        let hw = th * tw;
        let mut seed = vec![0f32; n * c * hw];
        let mut values = Vec::with_capacity(n);
        let mut at = Vec::with_capacity(n);
        for (i, o) in objectives.iter().enumerate() {
            let base = (i * c + o.unit) * hw;
            let plane = &seed_map[base..base + hw];
            let top = first_max(plane);
            match o.pick {
                Pick::At { y, x } => {
                    seed[base + y * tw + x] = 1.0;
                    values.push(plane[y * tw + x]);
                    at.push((y, x));
                }
                Pick::Max => {
                    seed[base + top] = 1.0;
                    values.push(plane[top]);
                    at.push((top / tw, top % tw));
                }
                Pick::Mean => {
                    seed[base..base + hw].fill(1.0 / hw as f32);
                    values.push((plane.iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32);
                    at.push((top / tw, top % tw));
                }
            }
        }

        let mut grads: Vec<Option<Vec<f32>>> = vec![None; target + 1];
        grads[target] = Some(seed);
        // Buffers the way back lets go of, for the next layers' gradients: fresh
        // multi-MB allocations cost page faults comparable to a layer's work.
        let mut pool = Pool(std::mem::take(
            &mut *self.grad_pool.lock().unwrap_or_else(|e| e.into_inner()),
        ));
        let mut scratch = Default::default();
        for i in (1..=target).rev() {
            let Some(mut g) = grads[i].take() else {
                continue;
            };
            let node = &nodes[i];
            let act = self.act_of(i);
            if act != Act::None && !(i == target && pre) {
                let y = outs[i].as_deref().expect("kept for the way back");
                rectify(&mut g, y, act, rule);
            }
            let src = node.inputs[0];
            let [ic, ih, iw] = shapes[src];
            let x = |j: usize| -> &[f32] {
                if j == 0 {
                    input
                } else {
                    outs[j].as_deref().expect("kept for the way back")
                }
            };
            match &self.layers[i] {
                Layer::Input => unreachable!("node 0 is the input"),
                Layer::Conv(conv) => {
                    let t = self.transposes[i].get_or_init(|| ConvTranspose::of(conv));
                    let mut dx = pool.take(n * ic * ih * iw);
                    t.input_grad_into(&g, n, ih, iw, &mut dx, &mut scratch);
                    accumulate(&mut grads, src, dx, &mut pool);
                    pool.give(g);
                }
                Layer::MaxPool {
                    kernel,
                    stride,
                    pad,
                    ..
                } => {
                    let [_, oh, ow] = shapes[i];
                    let y = outs[i].as_deref().expect("kept");
                    let dx = kernels::max_pool2d_backward(
                        x(src),
                        y,
                        &g,
                        (n, ic, ih, iw),
                        *kernel,
                        *stride,
                        *pad,
                        (oh, ow),
                    );
                    accumulate(&mut grads, src, dx, &mut pool);
                }
                Layer::AvgPool {
                    kernel,
                    stride,
                    pad,
                    count_include_pad,
                } => {
                    let [_, oh, ow] = shapes[i];
                    let dx = kernels::avg_pool2d_backward(
                        &g,
                        (n, ic, ih, iw),
                        *kernel,
                        *stride,
                        *pad,
                        *count_include_pad,
                        (oh, ow),
                    );
                    accumulate(&mut grads, src, dx, &mut pool);
                }
                Layer::AdaptiveAvgPool(oh, ow) => {
                    let dx = kernels::adaptive_avg_pool2d_backward(&g, (n, ic, ih, iw), (*oh, *ow));
                    accumulate(&mut grads, src, dx, &mut pool);
                }
                Layer::Add(_) => {
                    for &j in &node.inputs[1..] {
                        let mut copy = pool.take(g.len());
                        copy.copy_from_slice(&g);
                        accumulate(&mut grads, j, copy, &mut pool);
                    }
                    accumulate(&mut grads, src, g, &mut pool);
                }
                Layer::Flatten => accumulate(&mut grads, src, g, &mut pool),
                Layer::Concat => {
                    // Image by image, each input's channels in turn.
                    let parts: Vec<usize> = node
                        .inputs
                        .iter()
                        .map(|&j| shapes[j].iter().product())
                        .collect();
                    let mut dxs: Vec<Vec<f32>> =
                        parts.iter().map(|&p| Vec::with_capacity(n * p)).collect();
                    let mut at = 0;
                    for _ in 0..n {
                        for (d, &p) in dxs.iter_mut().zip(&parts) {
                            d.extend_from_slice(&g[at..at + p]);
                            at += p;
                        }
                    }
                    for (&j, d) in node.inputs.iter().zip(dxs) {
                        accumulate(&mut grads, j, d, &mut pool);
                    }
                }
                Layer::Shuffle(groups) => {
                    let (hw, per) = (ih * iw, ic / groups);
                    let mut dx = vec![0f32; g.len()];
                    for (d, gi) in dx.chunks_mut(ic * hw).zip(g.chunks(ic * hw)) {
                        for (j, plane) in gi.chunks(hw).enumerate() {
                            let from = (j % groups) * per + j / groups;
                            d[from * hw..(from + 1) * hw].copy_from_slice(plane);
                        }
                    }
                    accumulate(&mut grads, src, dx, &mut pool);
                }
                Layer::Slice(from, to) => {
                    let hw = ih * iw;
                    let mut dx = vec![0f32; n * ic * hw];
                    for (d, gi) in dx.chunks_mut(ic * hw).zip(g.chunks((to - from) * hw)) {
                        d[from * hw..to * hw].copy_from_slice(gi);
                    }
                    accumulate(&mut grads, src, dx, &mut pool);
                }
                Layer::Unary(f) => {
                    let xs = x(src);
                    if *f == (Unary::LeakyRelu { alpha: 0.0 }) {
                        // A plain ReLU (as ONNX graphs leave some): a rectifier.
                        g.par_iter_mut()
                            .zip(xs.par_iter())
                            .for_each(|(d, &v)| *d = pass(*d, v > 0.0, rule));
                    } else {
                        g.par_iter_mut()
                            .zip(xs.par_iter())
                            .for_each(|(d, &v)| *d *= derivative(*f, v));
                    }
                    accumulate(&mut grads, src, g, &mut pool);
                }
                Layer::Mul => {
                    let (a, b) = (node.inputs[0], node.inputs[1]);
                    let (xa, xb) = (x(a), x(b));
                    if xa.len() == xb.len() {
                        let da: Vec<f32> = g.iter().zip(xb).map(|(d, v)| d * v).collect();
                        let db: Vec<f32> = g.iter().zip(xa).map(|(d, v)| d * v).collect();
                        accumulate(&mut grads, a, da, &mut pool);
                        accumulate(&mut grads, b, db, &mut pool);
                    } else {
                        // A map and a per-channel gate, as the forward pass tells them apart.
                        let (map, gate) =
                            if shapes[b][1] * shapes[b][2] > shapes[a][1] * shapes[a][2] {
                                (b, a)
                            } else {
                                (a, b)
                            };
                        let [_, mh, mw] = shapes[map];
                        let (xm, xg) = (x(map), x(gate));
                        let plane = mh * mw;
                        let mut dm = vec![0f32; g.len()];
                        let mut dg = vec![0f32; xg.len()];
                        for (k, ((d, gp), xp)) in dm
                            .chunks_mut(plane)
                            .zip(g.chunks(plane))
                            .zip(xm.chunks(plane))
                            .enumerate()
                        {
                            let s = xg[k];
                            d.iter_mut().zip(gp).for_each(|(o, &v)| *o = v * s);
                            dg[k] = gp
                                .iter()
                                .zip(xp)
                                .map(|(&p, &q)| p as f64 * q as f64)
                                .sum::<f64>() as f32;
                        }
                        accumulate(&mut grads, map, dm, &mut pool);
                        accumulate(&mut grads, gate, dg, &mut pool);
                    }
                }
                Layer::Binary(f) => {
                    let (a, b) = (node.inputs[0], node.inputs[1]);
                    let (da, db) =
                        broadcast_backward(*f, x(a), shapes[a], x(b), shapes[b], &g, shapes[i]);
                    accumulate(&mut grads, a, da, &mut pool);
                    accumulate(&mut grads, b, db, &mut pool);
                }
                Layer::ChannelMean => {
                    let hw = ih * iw;
                    let mut dx = vec![0f32; n * ic * hw];
                    for (d, gi) in dx.chunks_mut(ic * hw).zip(g.chunks(hw)) {
                        for plane in d.chunks_mut(hw) {
                            plane
                                .iter_mut()
                                .zip(gi)
                                .for_each(|(o, &v)| *o = v / ic as f32);
                        }
                    }
                    accumulate(&mut grads, src, dx, &mut pool);
                }
                Layer::ChannelNorm { gamma, eps, .. } => {
                    let dx = layer_norm_backward(x(src), &g, ic, ih * iw, gamma, *eps);
                    accumulate(&mut grads, src, dx, &mut pool);
                }
                Layer::Softmax => {
                    let y = outs[i].as_deref().expect("kept");
                    let hw = ih * iw;
                    for (gi, yi) in g.chunks_mut(ic * hw).zip(y.chunks(ic * hw)) {
                        for p in 0..hw {
                            let dot: f64 = (0..ic)
                                .map(|k| gi[k * hw + p] as f64 * yi[k * hw + p] as f64)
                                .sum();
                            for k in 0..ic {
                                let at = k * hw + p;
                                gi[at] = yi[at] * (gi[at] - dot as f32);
                            }
                        }
                    }
                    accumulate(&mut grads, src, g, &mut pool);
                }
                Layer::Linear(lin) => {
                    accumulate(&mut grads, src, lin.backward_input(&g, n), &mut pool)
                }
            }
            // Outputs no later step reads are let go as the way back passes them.
            if i != target {
                if let Some(o) = outs[i].take() {
                    pool.give(o);
                }
            }
        }
        let data = grads[0].take().unwrap_or_else(|| vec![0.0; input.len()]);
        // The buffers stay for the next call (a visualisation makes hundreds), the
        // largest first, within the forward pool's limit.
        let mut keep = pool.0;
        keep.extend(outs.into_iter().flatten());
        keep.sort_by_key(|b| std::cmp::Reverse(b.capacity()));
        let mut kept = 0;
        keep.retain(|b| {
            kept += b.capacity();
            kept <= super::POOL_LIMIT
        });
        *self.grad_pool.lock().unwrap_or_else(|e| e.into_inner()) = keep;
        Ok(InputGradient {
            data,
            n,
            h,
            w,
            values,
            at,
        })
    }

    /// The activation node `i` applies, fused in its kernel or split from it.
    fn act_of(&self, i: usize) -> Act {
        match self.split[i] {
            Act::None => self.arch.nodes[i].op.act(),
            a => a,
        }
    }
}

/// Index of the first largest value (0 for a plane of only NaN).
fn first_max(plane: &[f32]) -> usize {
    let mut best = 0;
    for (k, &v) in plane.iter().enumerate() {
        if v > plane[best] || plane[best].is_nan() && !v.is_nan() {
            best = k;
        }
    }
    best
}

/// `g` is the signal at a layer's output `y`; passes it back through the layer's
/// activation `act` by `rule`.
fn rectify(g: &mut [f32], y: &[f32], act: Act, rule: Rule) {
    let hi = match act {
        Act::None => return,
        Act::Relu => f32::INFINITY,
        Act::Relu6 => 6.0,
    };
    g.par_chunks_mut(CHUNK)
        .zip(y.par_chunks(CHUNK))
        .for_each(|(d, y)| {
            d.iter_mut()
                .zip(y)
                .for_each(|(d, &v)| *d = pass(*d, v > 0.0 && v < hi, rule))
        });
}

/// The signal `d` past a rectifier that was `active` (in its linear range).
#[inline]
fn pass(d: f32, active: bool, rule: Rule) -> f32 {
    let through = match rule {
        Rule::Gradient => active,
        Rule::Guided => active && d > 0.0,
        Rule::Deconv => d > 0.0,
    };
    if through {
        d
    } else {
        0.0
    }
}

/// d f(x) / dx, as torch's backward computes it at the kinks.
fn derivative(f: Unary, x: f32) -> f32 {
    match f {
        Unary::Sigmoid => {
            let s = 1.0 / (1.0 + (-x).exp());
            s * (1.0 - s)
        }
        Unary::HardSigmoid { alpha, beta } => {
            let v = alpha * x + beta;
            if v > 0.0 && v < 1.0 {
                alpha
            } else {
                0.0
            }
        }
        Unary::HardSwish => {
            if x < -3.0 {
                0.0
            } else if x <= 3.0 {
                x / 3.0 + 0.5
            } else {
                1.0
            }
        }
        Unary::Affine { mul, .. } => mul,
        Unary::LeakyRelu { alpha } => {
            if x > 0.0 {
                1.0
            } else {
                alpha
            }
        }
        Unary::Sqrt => 0.5 / x.sqrt(),
        Unary::Square => 2.0 * x,
        Unary::Erf => std::f32::consts::FRAC_2_SQRT_PI * (-x * x).exp(),
        Unary::Gelu => {
            let cdf = 0.5 * (1.0 + libm::erff(x / std::f32::consts::SQRT_2));
            let pdf = (-0.5 * x * x).exp() / (2.0 * std::f32::consts::PI).sqrt();
            cdf + x * pdf
        }
    }
}

/// Adds `dx` into node `j`'s gradient.
fn accumulate(grads: &mut [Option<Vec<f32>>], j: usize, dx: Vec<f32>, pool: &mut Pool) {
    match &mut grads[j] {
        Some(acc) => {
            acc.par_chunks_mut(CHUNK)
                .zip(dx.par_chunks(CHUNK))
                .for_each(|(a, d)| a.iter_mut().zip(d).for_each(|(a, &v)| *a += v));
            pool.give(dx);
        }
        slot => *slot = Some(dx),
    }
}

/// Elements per task of the elementwise passes: enough work to be worth a thread.
const CHUNK: usize = 1 << 14;

/// Freed buffers, handed out again zeroed.
#[derive(Default)]
struct Pool(Vec<Vec<f32>>);

impl Pool {
    /// A zeroed buffer of `len`, reusing the smallest freed one that holds it.
    fn take(&mut self, len: usize) -> Vec<f32> {
        let fit = (0..self.0.len())
            .filter(|&k| self.0[k].capacity() >= len)
            .min_by_key(|&k| self.0[k].capacity());
        let mut v = fit.map_or_else(Vec::new, |k| self.0.swap_remove(k));
        v.clear();
        v.resize(len, 0.0);
        v
    }

    fn give(&mut self, v: Vec<f32>) {
        if v.capacity() > 0 {
            self.0.push(v);
        }
    }
}

/// The gradients of `f(a, b)` broadcast over `[c, h, w]` per image (see the forward's
/// `broadcast`) with respect to `a` and `b`, summed over the axes each was stretched on.
fn broadcast_backward(
    f: arch::Binary,
    a: &[f32],
    sa: [usize; 3],
    b: &[f32],
    sb: [usize; 3],
    g: &[f32],
    so: [usize; 3],
) -> (Vec<f32>, Vec<f32>) {
    let (la, lb, lo) = (
        sa.iter().product::<usize>(),
        sb.iter().product::<usize>(),
        so.iter().product::<usize>(),
    );
    let at = |s: [usize; 3], ch: usize, y: usize, x: usize| {
        ((ch % s[0]) * s[1] + y % s[1]) * s[2] + x % s[2]
    };
    let mut da = vec![0f32; a.len()];
    let mut db = vec![0f32; b.len()];
    for (img, gi) in g.chunks(lo).enumerate() {
        let (ai, bi) = (&a[img * la..][..la], &b[img * lb..][..lb]);
        let (dai, dbi) = (&mut da[img * la..][..la], &mut db[img * lb..][..lb]);
        for ch in 0..so[0] {
            for y in 0..so[1] {
                for x in 0..so[2] {
                    let d = gi[(ch * so[1] + y) * so[2] + x];
                    let (ka, kb) = (at(sa, ch, y, x), at(sb, ch, y, x));
                    let (p, q) = (ai[ka], bi[kb]);
                    let (ga, gb) = match f {
                        arch::Binary::Add => (1.0, 1.0),
                        arch::Binary::Sub => (1.0, -1.0),
                        arch::Binary::Mul => (q, p),
                        arch::Binary::Div => (1.0 / q, -p / (q * q)),
                    };
                    dai[ka] += d * ga;
                    dbi[kb] += d * gb;
                }
            }
        }
    }
    (da, db)
}

/// The input gradient of the forward's layer normalisation over `c` channels at each
/// of `hw` pixels (statistics recomputed from the input `x`, in f64 as there).
fn layer_norm_backward(
    x: &[f32],
    g: &[f32],
    c: usize,
    hw: usize,
    gamma: &[f32],
    eps: f32,
) -> Vec<f32> {
    let mut dx = vec![0f32; x.len()];
    for ((d, xi), gi) in dx
        .chunks_mut(c * hw)
        .zip(x.chunks(c * hw))
        .zip(g.chunks(c * hw))
    {
        for p in 0..hw {
            let v = |k: usize| xi[k * hw + p] as f64;
            let mean = (0..c).map(v).sum::<f64>() / c as f64;
            let var = (0..c).map(|k| (v(k) - mean).powi(2)).sum::<f64>() / c as f64;
            let r = 1.0 / (var + eps as f64).sqrt();
            let xhat = |k: usize| (v(k) - mean) * r;
            let dxhat = |k: usize| gi[k * hw + p] as f64 * gamma[k] as f64;
            let m1 = (0..c).map(dxhat).sum::<f64>() / c as f64;
            let m2 = (0..c).map(|k| dxhat(k) * xhat(k)).sum::<f64>() / c as f64;
            for k in 0..c {
                d[k * hw + p] = (r * (dxhat(k) - m1 - xhat(k) * m2)) as f32;
            }
        }
    }
    dx
}
