//! Feature visualisation by optimisation, the way Lucid does it (Olah, Mordvintsev &
//! Schubert 2017): an image that excites one unit, found by gradient ascent on the
//! unit's mean activation. The image is parametrised as a scaled Fourier spectrum
//! (low frequencies favoured by 1/frequency, so that the ascent does not fill it with
//! high-frequency patterns) in a decorrelated colour space, squashed by a sigmoid;
//! each step sees it through a random jitter, scale and rotation (transformation
//! robustness), and Adam moves the spectrum. Several units (one image each) go in one
//! batch; a seed fixes every random draw.

use std::f32::consts::PI;
use std::sync::Arc;

use image::{Rgb, RgbImage};
use rayon::prelude::*;
use rustfft::num_complex::Complex32;
use rustfft::{Fft, FftPlanner};

use crate::arch::Norm;
use crate::model::{Network, Objective, Pick, Rule, Tap};
use crate::{Error, Result};

/// How to optimise.
#[derive(Clone, Debug)]
pub struct Settings {
    pub steps: usize,
    /// Side of the image, in pixels (also the network input's side).
    pub size: usize,
    pub seed: u64,
    /// Adam's learning rate (Lucid's 0.05).
    pub rate: f32,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            steps: 512,
            size: 224,
            seed: 0,
            rate: 0.05,
        }
    }
}

/// How many units to optimise together at `size` px: 16 at 224 px, fewer for larger
/// images (a batch's memory grows with its pixels), at least 1.
pub fn batch_for(size: usize) -> usize {
    (16 * 224 * 224 / (size * size).max(1)).clamp(1, 16)
}

/// One unit's visualisation.
#[derive(Clone, Debug)]
pub struct Visualisation {
    pub unit: usize,
    pub image: RgbImage,
    /// The unit's mean activation on the image as it is (no transformation).
    pub value: f32,
}

/// Lucid's colour correlation of ImageNet (the square root of its covariance, by SVD):
/// the spectrum is optimised in the decorrelated space, then mapped back to RGB.
const COLOR_SQRT: [[f32; 3]; 3] = [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]];

/// Padding around the image that the jitter and rotation may bring in (grey), and
/// the transformations Lucid's `standard_transforms` draw from.
const JITTER: f32 = 8.0 + 4.0;
const SCALES: [f32; 11] = [
    0.9, 0.92, 0.94, 0.96, 0.98, 1.0, 1.02, 1.04, 1.06, 1.08, 1.1,
];
const MAX_DEGREES: i32 = 10;

/// Visualisations of `units` of `tap` (before the activation where `tap.pre`, which
/// needs the network split there), optimised together in one batch. `step` is called
/// after each step with its number and each image's objective.
pub fn visualize(
    net: &Network,
    tap: Tap,
    units: &[usize],
    settings: &Settings,
    mut step: impl FnMut(usize, &[f32]),
) -> Result<Vec<Visualisation>> {
    let (b, s) = (units.len(), settings.size);
    if b == 0 || !(16..=1024).contains(&s) {
        return Err(Error::Shape(format!(
            "visualize: {b} units at {s} px (at least one unit, 16 to 1024 px)"
        )));
    }
    let hw = s * s;
    let mut rng = Rng(settings.seed);
    let fourier = Fourier::new(s, 1.0);
    // The spectrum of each image's three decorrelated channels, re and im parts apart.
    let mut params: Vec<f32> = (0..b * 3 * hw * 2).map(|_| 0.01 * rng.normal()).collect();
    let mut adam = Adam::new(params.len(), settings.rate);
    let colour = normalised_colour();
    let objectives: Vec<Objective> = units
        .iter()
        .map(|&unit| Objective {
            unit,
            pick: Pick::Mean,
        })
        .collect();
    let recipe = &net.arch.recipe;
    for i in 0..settings.steps {
        let rgb = fourier.images(&params, b, &colour);
        let warps: Vec<Warp> = (0..b).map(|_| Warp::draw(&mut rng, s)).collect();
        let seen: Vec<f32> = (0..b)
            .into_par_iter()
            .flat_map_iter(|k| warps[k].apply(&rgb[k * 3 * hw..(k + 1) * 3 * hw], s))
            .collect();
        let input = normalise(&seen, hw, recipe);
        let g = net.input_gradient(&input, (b, s, s), tap, &objectives, Rule::Gradient)?;
        step(i, &g.values);
        // Back from the network input to the spectrum.
        let g_seen = normalise_backward(&g.data, hw, recipe);
        let g_rgb: Vec<f32> = (0..b)
            .into_par_iter()
            .flat_map_iter(|k| warps[k].adjoint(&g_seen[k * 3 * hw..(k + 1) * 3 * hw], s))
            .collect();
        let grad = fourier.backward(&g_rgb, &rgb, b, &colour);
        adam.ascend(&mut params, &grad);
    }
    let rgb = fourier.images(&params, b, &colour);
    let input = normalise(&rgb, hw, recipe);
    let values = net
        .input_gradient(&input, (b, s, s), tap, &objectives, Rule::Gradient)?
        .values;
    Ok(units
        .iter()
        .enumerate()
        .map(|(k, &unit)| Visualisation {
            unit,
            image: to_image(&rgb[k * 3 * hw..(k + 1) * 3 * hw], s),
            value: values[k],
        })
        .collect())
}

/// `COLOR_SQRT` over its largest column norm, as Lucid normalises it.
fn normalised_colour() -> [[f32; 3]; 3] {
    let norm = (0..3)
        .map(|j| (0..3).map(|i| COLOR_SQRT[i][j].powi(2)).sum::<f32>().sqrt())
        .fold(0f32, f32::max);
    COLOR_SQRT.map(|row| row.map(|v| v / norm))
}

/// The spectrum parametrisation: image = sigmoid(colour · Re(ifft2(scale · S)) / 4).
struct Fourier {
    side: usize,
    /// Per frequency, 1 / max(|f|, 1/side) times the side: low frequencies dominate.
    scale: Vec<f32>,
    forward: Arc<dyn Fft<f32>>,
    inverse: Arc<dyn Fft<f32>>,
}

impl Fourier {
    fn new(side: usize, decay: f32) -> Fourier {
        let freq = |k: usize| {
            let k = if k <= (side - 1) / 2 {
                k as f32
            } else {
                k as f32 - side as f32
            };
            k / side as f32
        };
        let scale = (0..side * side)
            .map(|k| {
                let (fy, fx) = (freq(k / side), freq(k % side));
                let f = (fy * fy + fx * fx).sqrt().max(1.0 / side as f32);
                side as f32 / f.powf(decay)
            })
            .collect();
        let mut planner = FftPlanner::new();
        Fourier {
            side,
            scale,
            forward: planner.plan_fft_forward(side),
            inverse: planner.plan_fft_inverse(side),
        }
    }

    /// A 2-D transform of `plane` (side x side) in place: rows, then columns.
    fn fft2(&self, plane: &mut [Complex32], inverse: bool) {
        let s = self.side;
        let f = if inverse {
            &self.inverse
        } else {
            &self.forward
        };
        f.process(plane);
        let mut col = vec![Complex32::new(0.0, 0.0); s];
        for x in 0..s {
            for y in 0..s {
                col[y] = plane[y * s + x];
            }
            f.process(&mut col);
            for y in 0..s {
                plane[y * s + x] = col[y];
            }
        }
    }

    /// Each decorrelated channel of each image, in space: Re(ifft2(scale * S)) / (4 n).
    fn spatial(&self, params: &[f32], b: usize) -> Vec<f32> {
        let hw = self.side * self.side;
        let mut out = vec![0f32; b * 3 * hw];
        out.par_chunks_mut(hw)
            .zip(params.par_chunks(2 * hw))
            .for_each(|(o, p)| {
                let mut plane: Vec<Complex32> = p
                    .chunks_exact(2)
                    .zip(&self.scale)
                    .map(|(c, &s)| Complex32::new(c[0] * s, c[1] * s))
                    .collect();
                self.fft2(&mut plane, true);
                let n = 4.0 * hw as f32;
                o.iter_mut().zip(&plane).for_each(|(v, c)| *v = c.re / n);
            });
        out
    }

    /// The images, `[b, 3, side, side]` RGB in 0..1.
    fn images(&self, params: &[f32], b: usize, colour: &[[f32; 3]; 3]) -> Vec<f32> {
        let hw = self.side * self.side;
        let mut x = self.spatial(params, b);
        x.par_chunks_mut(3 * hw).for_each(|img| {
            for p in 0..hw {
                let d = [img[p], img[hw + p], img[2 * hw + p]];
                for (c, row) in colour.iter().enumerate() {
                    let y = row[0] * d[0] + row[1] * d[1] + row[2] * d[2];
                    img[c * hw + p] = 1.0 / (1.0 + (-y).exp());
                }
            }
        });
        x
    }

    /// The gradient with respect to the parameters from that with respect to the
    /// images `rgb`.
    fn backward(&self, g_rgb: &[f32], rgb: &[f32], b: usize, colour: &[[f32; 3]; 3]) -> Vec<f32> {
        let hw = self.side * self.side;
        let mut g = vec![0f32; b * 3 * hw];
        g.par_chunks_mut(3 * hw)
            .zip(g_rgb.par_chunks(3 * hw).zip(rgb.par_chunks(3 * hw)))
            .for_each(|(out, (gi, ri))| {
                for p in 0..hw {
                    // Through the sigmoid, then the colour matrix's transpose.
                    let gy: [f32; 3] = std::array::from_fn(|c| {
                        gi[c * hw + p] * ri[c * hw + p] * (1.0 - ri[c * hw + p])
                    });
                    for d in 0..3 {
                        out[d * hw + p] = (0..3).map(|c| colour[c][d] * gy[c]).sum();
                    }
                }
            });
        // x = Re(ifft2(T)) / (4n) gives dL/dT = fft2(dL/dx) / (4n), as re + i im.
        let mut grad = vec![0f32; b * 3 * hw * 2];
        grad.par_chunks_mut(2 * hw)
            .zip(g.par_chunks(hw))
            .for_each(|(out, gp)| {
                let mut plane: Vec<Complex32> =
                    gp.iter().map(|&v| Complex32::new(v, 0.0)).collect();
                self.fft2(&mut plane, false);
                let n = 4.0 * hw as f32;
                for ((o, c), &s) in out.chunks_exact_mut(2).zip(&plane).zip(&self.scale) {
                    o[0] = c.re * s / n;
                    o[1] = c.im * s / n;
                }
            });
        grad
    }
}

/// One step's transformation of an image: a rotation by `angle` and scaling by `scale`
/// about the centre, then a shift, sampled bilinearly into an image of the same side
/// with grey (0.5) where it reaches past the image.
struct Warp {
    /// Inverse map: source = m · (out - c) + c + shift.
    m: [[f32; 2]; 2],
    shift: [f32; 2],
}

impl Warp {
    fn draw(rng: &mut Rng, _side: usize) -> Warp {
        let scale = SCALES[rng.below(SCALES.len())];
        let angle =
            (rng.below((2 * MAX_DEGREES + 1) as usize) as i32 - MAX_DEGREES) as f32 * PI / 180.0;
        let shift = [
            (rng.uniform() - 0.5) * JITTER,
            (rng.uniform() - 0.5) * JITTER,
        ];
        let (c, s) = (angle.cos() / scale, angle.sin() / scale);
        Warp {
            m: [[c, s], [-s, c]],
            shift,
        }
    }

    /// For output pixel (y, x): the four source cells and their weights (cells off
    /// the image have no index).
    fn taps(&self, y: usize, x: usize, side: usize) -> [(Option<usize>, f32); 4] {
        let c = (side as f32 - 1.0) / 2.0;
        let (dy, dx) = (y as f32 - c, x as f32 - c);
        let sy = self.m[0][0] * dy + self.m[0][1] * dx + c + self.shift[0];
        let sx = self.m[1][0] * dy + self.m[1][1] * dx + c + self.shift[1];
        let (y0, x0) = (sy.floor(), sx.floor());
        let (fy, fx) = (sy - y0, sx - x0);
        let at = |yy: f32, xx: f32| {
            (yy >= 0.0 && xx >= 0.0 && yy < side as f32 && xx < side as f32)
                .then(|| yy as usize * side + xx as usize)
        };
        [
            (at(y0, x0), (1.0 - fy) * (1.0 - fx)),
            (at(y0, x0 + 1.0), (1.0 - fy) * fx),
            (at(y0 + 1.0, x0), fy * (1.0 - fx)),
            (at(y0 + 1.0, x0 + 1.0), fy * fx),
        ]
    }

    /// `img` (`[3, side, side]`) as this step sees it.
    fn apply(&self, img: &[f32], side: usize) -> Vec<f32> {
        let hw = side * side;
        let mut out = vec![0f32; 3 * hw];
        for y in 0..side {
            for x in 0..side {
                let taps = self.taps(y, x, side);
                for c in 0..3 {
                    out[c * hw + y * side + x] = taps
                        .iter()
                        .map(|&(k, w)| w * k.map_or(0.5, |k| img[c * hw + k]))
                        .sum();
                }
            }
        }
        out
    }

    /// The gradient with respect to the image from that with respect to `apply`'s
    /// output.
    fn adjoint(&self, g: &[f32], side: usize) -> Vec<f32> {
        let hw = side * side;
        let mut out = vec![0f32; 3 * hw];
        for y in 0..side {
            for x in 0..side {
                for (k, w) in self.taps(y, x, side) {
                    if let Some(k) = k {
                        for c in 0..3 {
                            out[c * hw + k] += w * g[c * hw + y * side + x];
                        }
                    }
                }
            }
        }
        out
    }
}

/// RGB in 0..1 (`[b, 3, hw]`) as the network's input, by its recipe (channels, and
/// the recipe's per-channel terms, in the network's order).
fn normalise(rgb: &[f32], hw: usize, recipe: &crate::arch::Recipe) -> Vec<f32> {
    let mut out = vec![0f32; rgb.len()];
    for (o, x) in out.chunks_mut(3 * hw).zip(rgb.chunks(3 * hw)) {
        for ch in 0..3 {
            let to = if recipe.bgr { 2 - ch } else { ch };
            let dst = &mut o[to * hw..(to + 1) * hw];
            for (d, &v) in dst.iter_mut().zip(&x[ch * hw..(ch + 1) * hw]) {
                *d = match recipe.norm {
                    Norm::Affine { sub, div } => (v * 255.0 - sub) / div,
                    Norm::MeanStd { mean, std } => (v - mean[to]) / std[to],
                };
            }
        }
    }
    out
}

/// The gradient with respect to the RGB image from that with respect to the input.
fn normalise_backward(g: &[f32], hw: usize, recipe: &crate::arch::Recipe) -> Vec<f32> {
    let mut out = vec![0f32; g.len()];
    for (o, x) in out.chunks_mut(3 * hw).zip(g.chunks(3 * hw)) {
        for ch in 0..3 {
            let from = if recipe.bgr { 2 - ch } else { ch };
            let slope = match recipe.norm {
                Norm::Affine { div, .. } => 255.0 / div,
                Norm::MeanStd { std, .. } => 1.0 / std[from],
            };
            let dst = &mut o[ch * hw..(ch + 1) * hw];
            for (d, &v) in dst.iter_mut().zip(&x[from * hw..(from + 1) * hw]) {
                *d = v * slope;
            }
        }
    }
    out
}

/// `[3, s, s]` in 0..1 as a picture.
fn to_image(rgb: &[f32], s: usize) -> RgbImage {
    let hw = s * s;
    RgbImage::from_fn(s as u32, s as u32, |x, y| {
        let at = y as usize * s + x as usize;
        Rgb(std::array::from_fn(|c| {
            (rgb[c * hw + at] * 255.0).round().clamp(0.0, 255.0) as u8
        }))
    })
}

/// Adam (Kingma & Ba 2015), ascending.
struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
    rate: f32,
}

impl Adam {
    fn new(n: usize, rate: f32) -> Adam {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
            t: 0,
            rate,
        }
    }

    fn ascend(&mut self, params: &mut [f32], grad: &[f32]) {
        const B1: f32 = 0.9;
        const B2: f32 = 0.999;
        const EPS: f32 = 1e-8;
        self.t += 1;
        let (c1, c2) = (1.0 - B1.powi(self.t), 1.0 - B2.powi(self.t));
        let rate = self.rate;
        params
            .par_iter_mut()
            .zip(self.m.par_iter_mut().zip(self.v.par_iter_mut()))
            .zip(grad.par_iter())
            .for_each(|((p, (m, v)), &g)| {
                *m = B1 * *m + (1.0 - B1) * g;
                *v = B2 * *v + (1.0 - B2) * g * g;
                *p += rate * (*m / c1) / ((*v / c2).sqrt() + EPS);
            });
    }
}

/// splitmix64: every draw from the seed, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f32 {
        let u = (self.uniform() as f64).max(1e-12);
        let v = self.uniform() as f64;
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parametrisation's gradient equals central differences (f64 sums of f32
    /// images, so a loose step), for a random linear function of the images.
    #[test]
    fn the_spectrum_gradient_equals_finite_differences() {
        let (b, s) = (2, 16);
        let hw = s * s;
        let fourier = Fourier::new(s, 1.0);
        let colour = normalised_colour();
        let mut rng = Rng(5);
        let params: Vec<f32> = (0..b * 3 * hw * 2).map(|_| 0.5 * rng.normal()).collect();
        let w: Vec<f32> = (0..b * 3 * hw).map(|_| rng.normal()).collect();
        let loss = |p: &[f32]| -> f64 {
            let img = fourier.images(p, b, &colour);
            img.iter().zip(&w).map(|(&a, &b)| a as f64 * b as f64).sum()
        };
        let rgb = fourier.images(&params, b, &colour);
        let grad = fourier.backward(&w, &rgb, b, &colour);
        let top = grad.iter().fold(0f32, |m, v| m.max(v.abs()));
        for k in [0, 1, 7, 2 * hw + 31, 3 * hw * 2 + 100, grad.len() - 1] {
            let e = 1e-2;
            let (mut up, mut down) = (params.clone(), params.clone());
            up[k] += e;
            down[k] -= e;
            let fd = (loss(&up) - loss(&down)) / (2.0 * e as f64);
            assert!(
                (fd - grad[k] as f64).abs() <= 2e-3 * top as f64,
                "parameter {k}: backward {} vs finite differences {fd}",
                grad[k]
            );
        }
    }

    /// The warp's adjoint is the transpose of its linear part: <A x, y> = <x, A^T y>.
    #[test]
    fn the_warp_adjoint_is_its_transpose() {
        let s = 20;
        let mut rng = Rng(9);
        for _ in 0..5 {
            let warp = Warp::draw(&mut rng, s);
            let x: Vec<f32> = (0..3 * s * s).map(|_| rng.normal()).collect();
            let y: Vec<f32> = (0..3 * s * s).map(|_| rng.normal()).collect();
            let zero = warp.apply(&vec![0.0; x.len()], s);
            let ax: Vec<f32> = warp
                .apply(&x, s)
                .iter()
                .zip(&zero)
                .map(|(a, b)| a - b)
                .collect();
            let dot = |a: &[f32], b: &[f32]| {
                a.iter()
                    .zip(b)
                    .map(|(&p, &q)| p as f64 * q as f64)
                    .sum::<f64>()
            };
            let (l, r) = (dot(&ax, &y), dot(&x, &warp.adjoint(&y, s)));
            assert!((l - r).abs() <= 1e-4 * l.abs().max(1.0), "{l} vs {r}");
        }
    }

    /// A flat-coloured photo prepared by `preprocess` gives the input `normalise`
    /// gives for its colour, for every recipe (BGR ones included).
    #[test]
    fn normalising_is_what_preprocessing_does() {
        let rgb = [200u8, 100, 50];
        let img = RgbImage::from_pixel(40, 30, Rgb(rgb));
        for name in crate::arch::recipes::NAMES {
            let recipe = crate::arch::recipes::preset(name, 16).unwrap();
            let want = crate::preprocess::prepare(&img, &recipe).0;
            let x: Vec<f32> = rgb
                .iter()
                .flat_map(|&c| std::iter::repeat_n(c as f32 / 255.0, 256))
                .collect();
            let got = normalise(&x, 256, &recipe);
            for c in 0..3 {
                let (a, b) = (got[c * 256], want[c * 256]);
                assert!((a - b).abs() < 1e-4, "{name} channel {c}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn normalising_and_its_gradient_agree_for_every_recipe() {
        for model in ["efficientnet-lite0", "resnet18"] {
            let mut recipe = crate::arch::by_name(model).unwrap().recipe;
            for bgr in [false, true] {
                recipe.bgr = bgr;
                let hw = 4;
                let x: Vec<f32> = (0..3 * hw).map(|k| k as f32 / 12.0).collect();
                let base = normalise(&x, hw, &recipe);
                let g: Vec<f32> = (0..3 * hw).map(|k| (k % 5) as f32 - 2.0).collect();
                let back = normalise_backward(&g, hw, &recipe);
                // d <normalise(x), g> / dx_k by a finite step.
                for k in 0..3 * hw {
                    let mut up = x.clone();
                    up[k] += 1e-2;
                    let fd: f32 = normalise(&up, hw, &recipe)
                        .iter()
                        .zip(&base)
                        .zip(&g)
                        .map(|((a, b), g)| (a - b) * g)
                        .sum::<f32>()
                        / 1e-2;
                    assert!(
                        (fd - back[k]).abs() <= 1e-2 * back[k].abs().max(1.0),
                        "{model} {bgr} {k}"
                    );
                }
            }
        }
    }
}
