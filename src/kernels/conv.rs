//! 2-D convolution with bias and activation fused: geometry, weights, and the GEMM
//! paths (1x1 layers straight on the input, others through im2col tiles small enough
//! to stay in cache). Depthwise layers go to `depthwise`.

use gemm::Parallelism;
use rayon::prelude::*;

use super::depthwise::{fill_phased_dispatch, Layout};
use super::vector::{dispatch, Kernel, V16};
use super::{bias_act, bias_add_act, blocked, depthwise, direct, winograd, Act, Pad};

/// Shape of a convolution layer (torch semantics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub in_ch: usize,
    pub out_ch: usize,
    /// (height, width)
    pub kernel: (usize, usize),
    /// (vertical, horizontal)
    pub stride: (usize, usize),
    pub pad: Pad,
    /// (vertical, horizontal)
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl ConvGeom {
    /// Output size for an `h` x `w` input; 0 on an axis where the (dilated) kernel
    /// does not fit in the padded input.
    pub fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        let axis = |len: usize, before: usize, after: usize, k: usize, s: usize, d: usize| {
            let span = d * (k.max(1) - 1) + 1;
            match (len + before + after).checked_sub(span) {
                Some(room) => room / s.max(1) + 1,
                None => 0,
            }
        };
        let p = self.pad;
        (
            axis(
                h,
                p.top,
                p.bottom,
                self.kernel.0,
                self.stride.0,
                self.dilation.0,
            ),
            axis(
                w,
                p.left,
                p.right,
                self.kernel.1,
                self.stride.1,
                self.dilation.1,
            ),
        )
    }

    /// Weights per output channel: `in_ch / groups * kh * kw`.
    pub fn weights_per_output(&self) -> usize {
        self.in_ch / self.groups * self.kernel.0 * self.kernel.1
    }

    /// One filter per channel, each seeing only its own channel.
    pub fn is_depthwise(&self) -> bool {
        self.groups == self.in_ch && self.out_ch == self.in_ch
    }

    /// 1x1, stride 1, no padding: the input plane is already the GEMM operand.
    fn is_pointwise(&self) -> bool {
        self.kernel == (1, 1) && self.stride == (1, 1) && self.pad == Pad::default()
    }
}

/// How a conv layer runs: the one place that choice is made ([`Conv2d::path`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvPath {
    /// On channel-blocked activations (`blocked`): 1x1 stride-1 layers, depthwise
    /// 3x3/5x5/7x7 ones and stems. The network keeps such layers' activations
    /// blocked between them; [`Conv2d::forward_blocked_into`] runs them.
    Blocked,
    /// Depthwise on NCHW planes: 16 channels per vector (`depthwise16`), or along
    /// each plane's rows on the portable ISA (`depthwise`).
    Depthwise,
    /// A stem on at most 4 input channels convolved directly (`direct`).
    Direct,
    /// Winograd F(m x m, 3 x 3) with output tiles of side `m` (`winograd`).
    Winograd(usize),
    /// GEMM on the input itself (1x1) or on im2col tiles.
    Gemm,
}

impl ConvPath {
    /// The path's name.
    pub fn name(self) -> &'static str {
        match self {
            ConvPath::Blocked => "blocked",
            ConvPath::Depthwise => "depthwise",
            ConvPath::Direct => "direct",
            ConvPath::Winograd(2) => "winograd-f2",
            ConvPath::Winograd(_) => "winograd-f4",
            ConvPath::Gemm => "gemm",
        }
    }
}

/// A convolution layer ready to run: geometry, weights, bias, activation.
#[derive(Clone, Debug)]
pub struct Conv2d {
    geom: ConvGeom,
    /// `[out_ch, in_ch/groups, kh, kw]`, which is also the GEMM's left operand per group.
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    act: Act,
    /// Winograd-transformed filters for F(2x2) and F(4x4), made on first use.
    wino: [std::sync::OnceLock<Vec<f32>>; 2],
    /// Weights regrouped for `direct`, made on first use.
    direct: std::sync::OnceLock<Vec<f32>>,
    /// Weights packed for the channel-blocked kernels, made on first use.
    blocked_pw: std::sync::OnceLock<blocked::Pointwise>,
    blocked_by_output: std::sync::OnceLock<blocked::ByOutput>,
    /// Whether the input is expected to be mostly zeros (it comes out of a ReLU):
    /// kernels that can then skip input channels that are zero over a whole tile.
    sparse_input: bool,
}

impl Conv2d {
    /// `weight`: `[out_ch, in_ch/groups, kh, kw]` row-major; `bias`: `[out_ch]`
    /// (BatchNorm already folded in by the caller).
    ///
    /// # Panics
    /// If the geometry is inconsistent (zero sizes, channels not divisible by
    /// `groups`) or the weight/bias lengths do not match it. Callers loading
    /// user files check shapes first and report errors.
    pub fn new(geom: ConvGeom, weight: Vec<f32>, bias: Option<Vec<f32>>, act: Act) -> Conv2d {
        let g = &geom;
        assert!(
            g.groups > 0 && g.in_ch.is_multiple_of(g.groups) && g.out_ch.is_multiple_of(g.groups),
            "conv: {} in / {} out channels not divisible into {} groups",
            g.in_ch,
            g.out_ch,
            g.groups
        );
        assert!(
            g.kernel.0 > 0 && g.kernel.1 > 0 && g.stride.0 > 0 && g.stride.1 > 0,
            "conv: zero kernel or stride in {g:?}"
        );
        assert!(
            g.dilation.0 > 0 && g.dilation.1 > 0,
            "conv: zero dilation in {g:?}"
        );
        assert_eq!(
            weight.len(),
            g.out_ch * g.weights_per_output(),
            "conv: weight length does not match {g:?}"
        );
        if let Some(b) = &bias {
            assert_eq!(b.len(), g.out_ch, "conv: bias length does not match out_ch");
        }
        Conv2d {
            geom,
            weight,
            bias,
            act,
            wino: Default::default(),
            direct: Default::default(),
            blocked_pw: Default::default(),
            blocked_by_output: Default::default(),
            sparse_input: false,
        }
    }

    /// Tells the layer its input comes out of a ReLU (or ReLU6), so that it is
    /// mostly zeros deep in a network (70-78% at Lite0's last blocks): the blocked
    /// 1x1 kernel then skips each input channel that is zero over all pixels of a
    /// tile. Speed only: the sums are the same, in the same order.
    pub fn set_sparse_input(&mut self, sparse: bool) {
        self.sparse_input = sparse;
    }

    pub(crate) fn sparse_input(&self) -> bool {
        self.sparse_input
    }

    pub fn geom(&self) -> &ConvGeom {
        &self.geom
    }

    /// The weights as given to `new`: `[out_ch, in_ch/groups, kh, kw]`.
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref()
    }

    pub fn act(&self) -> Act {
        self.act
    }

    /// Takes the activation out of the layer and returns it: the layer then writes
    /// its output before the activation, for a caller that needs both. (Packed
    /// weights do not depend on the activation; only the epilogues read it.)
    pub fn take_act(&mut self) -> Act {
        std::mem::replace(&mut self.act, Act::None)
    }

    /// Bias of output channel `o` (0 without bias).
    #[inline]
    pub(crate) fn bias_of(&self, o: usize) -> f32 {
        self.bias.as_ref().map_or(0.0, |b| b[o])
    }

    /// How `n` images of `h` x `w` run through this layer in a network, given whether
    /// a residual sum follows: [`ConvPath::Blocked`] where it [`Conv2d::runs_blocked`],
    /// else the NCHW path.
    pub fn path(&self, n: usize, h: usize, w: usize, residual: bool) -> ConvPath {
        if self.runs_blocked() {
            ConvPath::Blocked
        } else {
            self.nchw_path(n, h, w, residual)
        }
    }

    /// The path of a call on NCHW input (`forward_add_into`), never `Blocked` (the
    /// direct kernel fuses no residual sum).
    fn nchw_path(&self, n: usize, h: usize, w: usize, residual: bool) -> ConvPath {
        let g = &self.geom;
        let (oh, ow) = g.out_hw(h, w);
        let special = special_paths_enabled();
        if g.is_depthwise() {
            ConvPath::Depthwise
        } else if special && !residual && direct::suits(g) {
            ConvPath::Direct
        } else if special && winograd::suits(g) && winograd::pays(g, n, oh, ow) {
            ConvPath::Winograd(winograd::tile_for(oh, ow))
        } else {
            ConvPath::Gemm
        }
    }

    /// Whether this layer runs much faster on a batch of `n` than image by image:
    /// Winograd layers whose transformed filters are too large to stream per image.
    pub fn prefers_batch(&self, n: usize, h: usize, w: usize) -> bool {
        let wino = |n| matches!(self.nchw_path(n, h, w, false), ConvPath::Winograd(_));
        !wino(1) && wino(n)
    }

    /// Whether this layer runs on channel-blocked activations in a network
    /// ([`ConvPath::Blocked`]): 1x1, depthwise and stem layers that `blocked` takes.
    pub fn runs_blocked(&self) -> bool {
        special_paths_enabled() && blocked::suits(self)
    }

    /// Whether [`Conv2d::forward_blocked_into`] reads blocked input (all but stems,
    /// which read the NCHW image).
    pub fn reads_blocked(&self) -> bool {
        !blocked::is_stem(self)
    }

    /// Like [`Conv2d::forward_add_into`] with channel-blocked output (see
    /// `kernels::blocked`) and input (NCHW for stems, see
    /// [`Conv2d::reads_blocked`]); only for layers where [`Conv2d::runs_blocked`].
    ///
    /// # Panics
    /// If a buffer has the wrong length or the layer does not run blocked.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_blocked_into(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        out: &mut [f32],
        residual: Option<&[f32]>,
        then: Act,
    ) {
        assert!(
            blocked::suits(self),
            "conv: layer {:?} does not run blocked",
            self.geom
        );
        if blocked::is_stem(self) || self.geom.is_depthwise() {
            let pk = self
                .blocked_by_output
                .get_or_init(|| blocked::pack_by_output(self));
            if blocked::is_stem(self) {
                blocked::stem(self, pk, x, n, h, w, out);
            } else {
                blocked::depthwise(self, pk, x, n, h, w, out);
            }
            if let Some(r) = residual {
                super::add_act(out, r, then);
            }
        } else {
            let pk = self
                .blocked_pw
                .get_or_init(|| blocked::pack_pointwise(self));
            blocked::pointwise(self, pk, x, n, h * w, out, residual.map(|r| (r, then)));
        }
    }

    /// Whether the epilogue pass does anything.
    fn has_epilogue(&self) -> bool {
        self.bias.is_some() || self.act != Act::None
    }

    /// `x`: `[n, in_ch, h, w]` -> `[n, out_ch, oh, ow]`, bias and activation applied.
    ///
    /// # Panics
    /// If `x.len() != n * in_ch * h * w`.
    pub fn forward(&self, x: &[f32], n: usize, h: usize, w: usize) -> Vec<f32> {
        let (oh, ow) = self.geom.out_hw(h, w);
        let mut out = super::alloc_output(n * self.geom.out_ch * oh * ow);
        self.forward_into(x, n, h, w, &mut out);
        out
    }

    /// Like [`Conv2d::forward`] into a caller's buffer of `n * out_ch * oh * ow`
    /// (every element is overwritten). Reusing buffers avoids the page faults of
    /// fresh large allocations, which cost as much as a fast layer.
    ///
    /// # Panics
    /// If `x` or `out` has the wrong length.
    pub fn forward_into(&self, x: &[f32], n: usize, h: usize, w: usize, out: &mut [f32]) {
        self.forward_add_into(x, n, h, w, out, None, Act::None)
    }

    /// Like [`Conv2d::forward_into`], then a residual connection: `out = then(out +
    /// residual)`. For a layer without activation of its own on the GEMM path, the
    /// sum is taken as each output tile is finished, in cache, instead of in a pass
    /// of its own over the whole output (ResNet-18: 5 ms per batch of 16).
    ///
    /// # Panics
    /// If a buffer has the wrong length.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_add_into(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        out: &mut [f32],
        residual: Option<&[f32]>,
        then: Act,
    ) {
        let g = &self.geom;
        assert_eq!(
            x.len(),
            n * g.in_ch * h * w,
            "conv: input has {} numbers, expected {n} x {} x {h} x {w}",
            x.len(),
            g.in_ch
        );
        let (oh, ow) = g.out_hw(h, w);
        assert_eq!(
            out.len(),
            n * g.out_ch * oh * ow,
            "conv: output buffer length does not match {n} x {} x {oh} x {ow}",
            g.out_ch
        );
        if let Some(r) = residual {
            assert_eq!(r.len(), out.len(), "conv: residual differs from the output");
        }
        if out.is_empty() {
            return;
        }
        let fused = residual.filter(|_| !g.is_depthwise() && self.act == Act::None);
        match self.nchw_path(n, h, w, residual.is_some()) {
            ConvPath::Depthwise => depthwise::forward(self, x, n, h, w, oh, ow, out),
            ConvPath::Blocked => unreachable!("nchw_path is never Blocked"),
            ConvPath::Direct => {
                let packed = self.direct.get_or_init(|| direct::pack(g, &self.weight));
                direct::forward(self, packed, x, n, h, w, oh, ow, out);
            }
            ConvPath::Winograd(m) => {
                let u = self.wino[usize::from(m == 4)].get_or_init(|| {
                    winograd::transform_filters(m, &self.weight, g.in_ch, g.out_ch)
                });
                let job = winograd::Job {
                    geom: g,
                    m,
                    u,
                    bias: self.bias.as_deref(),
                    act: self.act,
                    residual: fused.map(|r| (r, then)),
                };
                winograd::forward(&job, x, n, h, w, oh, ow, out);
            }
            ConvPath::Gemm => self.forward_gemm(x, n, (h, w, oh, ow), out, fused, then),
        }
        if let (Some(r), None) = (residual, fused) {
            super::add_act(out, r, then);
        }
    }

    /// The GEMM path over a batch: one image per task, or one image's GEMM split
    /// over the threads.
    fn forward_gemm(
        &self,
        x: &[f32],
        n: usize,
        (h, w, oh, ow): (usize, usize, usize, usize),
        out: &mut [f32],
        fused: Option<&[f32]>,
        then: Act,
    ) {
        let g = &self.geom;
        let in_img = g.in_ch * h * w;
        let out_img = g.out_ch * oh * ow;
        let threads = super::threads();
        let res = |i: usize| fused.map(|r| (&r[i * out_img..][..out_img], then));
        if n >= threads || threads == 1 {
            // One image per task, each GEMM single-threaded: no synchronisation inside.
            out.par_chunks_mut(out_img)
                .zip(x.par_chunks(in_img))
                .enumerate()
                .with_max_len(1)
                .for_each_init(Default::default, |scratch, (i, (o, xi))| {
                    self.gemm_image(xi, h, w, oh, ow, o, res(i), scratch, Parallelism::None)
                });
        } else {
            let mut scratch = Default::default();
            for (i, (o, xi)) in out.chunks_mut(out_img).zip(x.chunks(in_img)).enumerate() {
                let par = Parallelism::Rayon(threads);
                self.gemm_image(xi, h, w, oh, ow, o, res(i), &mut scratch, par);
            }
        }
    }

    /// One image through GEMM, group by group and column tile by column tile.
    #[allow(clippy::too_many_arguments)]
    fn gemm_image(
        &self,
        x: &[f32],
        h: usize,
        w: usize,
        oh: usize,
        ow: usize,
        out: &mut [f32],
        residual: Option<(&[f32], Act)>,
        (col, padded): &mut (Vec<f32>, Vec<f32>),
        par: Parallelism,
    ) {
        let g = &self.geom;
        let icg = g.in_ch / g.groups;
        let ocg = g.out_ch / g.groups;
        let k = g.weights_per_output();
        let p = oh * ow;
        let pointwise = g.is_pointwise();
        let tile = tile_cols(if pointwise { 0 } else { k }, ocg, p);
        let (kh, kw) = g.kernel;
        let (sy, sx) = g.stride;
        let (dy, dx) = g.dilation;
        // Padded, column-phase-split copy of each input plane (see `depthwise`): every
        // im2col segment is then one contiguous in-bounds copy.
        let layout = Layout {
            h,
            w,
            pad_top: g.pad.top,
            pad_left: g.pad.left,
            sy: 1,
            sx,
            rows: (oh - 1) * sy + (kh - 1) * dy + 1,
            len: (ow - 1) + (kw - 1) * dx / sx + 1,
            ow,
        };
        let plane = sx * layout.rows * layout.len;
        for gi in 0..g.groups {
            let xg = &x[gi * icg * h * w..][..icg * h * w];
            let wg = &self.weight[gi * ocg * k..][..ocg * k];
            if !pointwise {
                padded.resize(icg * plane, 0.0);
                for (c, dst) in padded.chunks_exact_mut(plane).enumerate() {
                    fill_phased_dispatch(&xg[c * h * w..][..h * w], &layout, dst);
                }
            }
            let mut p0 = 0;
            while p0 < p {
                let t = tile.min(p - p0);
                let (rhs, rhs_rs) = if pointwise {
                    (xg[p0..].as_ptr(), p)
                } else {
                    im2col(padded, &layout, g, oh, p0, t, col);
                    (col.as_ptr(), t)
                };
                let dst = &mut out[gi * ocg * p + p0..];
                assert!(dst.len() >= (ocg - 1) * p + t);
                // SAFETY: dst holds ocg rows of stride p with t columns each (checked
                // above); wg is ocg x k row-major; rhs is k rows of stride rhs_rs with
                // t columns (the input plane or the filled im2col tile).
                unsafe {
                    super::gemm_rows(
                        (ocg, t, k),
                        dst.as_mut_ptr(),
                        p,
                        wg.as_ptr(),
                        k,
                        rhs,
                        rhs_rs,
                        par,
                    );
                }
                if let Some((res, then)) = residual {
                    let res = &res[gi * ocg * p + p0..];
                    for r in 0..ocg {
                        let (d, y) = (&mut dst[r * p..][..t], &res[r * p..][..t]);
                        bias_add_act(d, y, self.bias_of(gi * ocg + r), then);
                    }
                } else if self.has_epilogue() {
                    for r in 0..ocg {
                        bias_act(&mut dst[r * p..][..t], self.bias_of(gi * ocg + r), self.act);
                    }
                }
                p0 += t;
            }
        }
    }
}

/// Winograd and direct convolution, unless `NEURODEX_GEMM_ONLY=1` sends every
/// non-depthwise layer through im2col + GEMM (to compare the paths).
fn special_paths_enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("NEURODEX_GEMM_ONLY").map_or(true, |v| v != "1"))
}

/// Output columns per tile: enough for GEMM to run at speed, few enough that the
/// im2col tile (`k` rows, 0 when there is none) and the output tile (`m` rows) stay
/// in L2 for the epilogue.
fn tile_cols(k: usize, m: usize, p: usize) -> usize {
    const TILE_FLOATS: usize = 192 * 1024;
    // A multiple of 64 rows of the (transposed) GEMM: the AVX-512 micro-kernel's
    // height, so no tile ends in a slow narrow remainder.
    let t = (TILE_FLOATS / (k + m).max(1)).max(128) / 64 * 64;
    t.min(p)
}

/// Fills `col` (k rows x t columns) with the input values that output pixels
/// `p0..p0+t` multiply with each weight, reading the padded phase-split planes
/// `padded` (one per input channel of the group, laid out as `l` says).
fn im2col(
    padded: &[f32],
    l: &Layout,
    g: &ConvGeom,
    oh: usize,
    p0: usize,
    t: usize,
    col: &mut Vec<f32>,
) {
    let ow = l.ow;
    debug_assert!(p0 + t <= oh * ow);
    // Runs of output pixels within one output row, the same for every weight:
    // (column in the tile, offset of the run's first input from a tap's base, length).
    let mut runs = Vec::with_capacity(t / ow + 2);
    let (mut j, mut pix) = (0, p0);
    while j < t {
        let (oy, ox0) = (pix / ow, pix % ow);
        let len = (ow - ox0).min(t - j);
        runs.push((j, oy * g.stride.0 * l.len + ox0, len));
        j += len;
        pix += len;
    }
    col.resize(g.weights_per_output() * t, 0.0);
    dispatch(Im2col {
        padded,
        l,
        g,
        runs: &runs,
        t,
        col,
    })
}

/// The copies of `im2col`, each run moved by 16-float vectors with a partial one at
/// its end: the runs are short (a row of output pixels at most) and one `memcpy`
/// call per run cost as much as the copy.
struct Im2col<'a> {
    padded: &'a [f32],
    l: &'a Layout,
    g: &'a ConvGeom,
    runs: &'a [(usize, usize, usize)],
    t: usize,
    col: &'a mut [f32],
}

impl Kernel for Im2col<'_> {
    type Out = ();
    #[inline(always)]
    fn run<V: V16>(self) {
        let Im2col {
            padded,
            l,
            g,
            runs,
            t,
            col,
        } = self;
        let icg = g.in_ch / g.groups;
        let (kh, kw) = g.kernel;
        let sx = l.sx;
        let (dy, dx) = g.dilation;
        let plane = sx * l.rows * l.len;
        for c in 0..icg {
            let src = &padded[c * plane..][..plane];
            for ky in 0..kh {
                for kx in 0..kw {
                    let row = &mut col[((c * kh + ky) * kw + kx) * t..][..t];
                    let shift = kx * dx;
                    // Phase block and first slot this tap reads.
                    let base = (shift % sx) * l.rows * l.len + shift / sx + ky * dy * l.len;
                    for &(j, off, len) in runs {
                        let (from, to) = (&src[base + off..][..len], &mut row[j..j + len]);
                        for o in (0..len).step_by(16) {
                            let n = (len - o).min(16);
                            // SAFETY: lanes below n lie inside `from` and `to`.
                            unsafe {
                                V::load_lanes(from.as_ptr().add(o), 0, n).store_lanes(
                                    to.as_mut_ptr().add(o),
                                    0,
                                    n,
                                )
                            };
                        }
                    }
                }
            }
        }
    }
}
