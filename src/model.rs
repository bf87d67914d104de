//! A network ready to run: an `Arch` whose layers are bound to weights (BatchNorm
//! folded into the preceding conv at load time), executed layer by layer on the
//! hand-written `kernels`. The forward pass returns only the taps asked for and stops
//! at the deepest one; buffers are freed as soon as no later layer reads them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};

use crate::arch::{self, Act, Arch, Op};
use crate::kernels::{self, Conv2d, ConvGeom, Linear};
use crate::preprocess::{self, Transform};
use crate::{Error, Result};

mod backward;
mod classes;
mod plan;
pub use backward::{InputGradient, Objective, Pick, Rule};
pub use classes::{imagenet_label, top_classes, Guess, Labels};

/// The embedded default weights (EfficientNet-Lite0, imported by `scripts/fetch-model.sh`).
static LITE0_WEIGHTS: &[u8] = include_bytes!("../models/efficientnet-lite0.safetensors");
pub const DEFAULT_MODEL: &str = "efficientnet-lite0";

/// One layer's output for a batch, `[n, c, h, w]` row-major.
#[derive(Clone, Debug)]
pub struct Activation {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl Activation {
    /// The `[c, h, w]` block of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        let len = self.c * self.h * self.w;
        &self.data[i * len..(i + 1) * len]
    }
}

enum Layer {
    Input,
    Conv(Box<Conv2d>),
    MaxPool {
        kernel: (usize, usize),
        stride: (usize, usize),
        pad: arch::Pad,
        ceil_mode: bool,
    },
    AdaptiveAvgPool(usize, usize),
    AvgPool {
        kernel: (usize, usize),
        stride: (usize, usize),
        pad: arch::Pad,
        count_include_pad: bool,
    },
    Add(Act),
    Concat,
    Unary(arch::Unary),
    Shuffle(usize),
    Slice(usize, usize),
    Mul,
    Binary(arch::Binary),
    ChannelMean,
    ChannelNorm {
        gamma: Vec<f32>,
        beta: Vec<f32>,
        eps: f32,
    },
    Softmax,
    Flatten,
    Linear(Linear),
}

/// A tapped output: node `node`'s output, before its activation when `pre` (for
/// nodes without one the two are the same).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tap {
    pub node: usize,
    pub pre: bool,
}

/// Every channel's peak over its map, per image, as `forward_peaks` finds them:
/// `values[i * c + ch]` and its cell `at[i * c + ch] = y * w + x`, NaN at 0 for a
/// map of only NaN (`kernels::channel_peaks`).
#[derive(Clone, Debug, PartialEq)]
pub struct TapPeaks {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub values: Vec<f32>,
    pub at: Vec<u32>,
}

impl TapPeaks {
    fn empty() -> TapPeaks {
        TapPeaks {
            n: 0,
            c: 0,
            h: 0,
            w: 0,
            values: Vec::new(),
            at: Vec::new(),
        }
    }

    /// The peaks of a computed map.
    pub fn of(a: &Activation) -> TapPeaks {
        let (values, at) = kernels::channel_peaks(&a.data, a.n, a.c, a.h * a.w);
        TapPeaks {
            n: a.n,
            c: a.c,
            h: a.h,
            w: a.w,
            values,
            at,
        }
    }
}

impl Tap {
    pub fn new(node: usize, pre: bool) -> Tap {
        Tap { node, pre }
    }
    pub fn post(node: usize) -> Tap {
        Tap { node, pre: false }
    }
    pub fn pre(node: usize) -> Tap {
        Tap { node, pre: true }
    }
}

pub struct Network {
    pub arch: Arch,
    /// The names of the output classes (`--labels`; ImageNet-1k's for 1000 outputs).
    pub labels: Labels,
    layers: Vec<Layer>,
    /// Per node, the activation taken out of its kernel by `split_activations` and
    /// applied as a pass of its own (`Act::None` where it stays fused or there is none).
    split: Vec<Act>,
    weights_id: String,
    /// Freed activation buffers kept for the next layer or call: fresh multi-MB
    /// allocations cost page faults comparable to a fast layer's work. One pool per
    /// forward pass running at the same time (one per thread in `forward_hw`).
    pools: Mutex<Vec<Vec<Vec<f32>>>>,
    /// The plans of recent passes (`plan`), reused by passes of the same shape.
    plans: Mutex<Vec<std::sync::Arc<plan::Plan>>>,
    /// Per conv node, its transpose for the way back (`backward`), made on first use.
    transposes: Vec<std::sync::OnceLock<kernels::ConvTranspose>>,
    /// Buffers the last backward pass let go of, for the next one.
    grad_pool: Mutex<Vec<Vec<f32>>>,
}

/// Upper bound on what the buffer pool keeps between calls (numbers; 256 MB).
const POOL_LIMIT: usize = 64 << 20;

/// An activation buffer during a forward pass: `len` numbers of `v` from `off`, which
/// puts pooled buffers' data on a 64-byte boundary (a channel-blocked pixel is then
/// one cache line; glibc's large allocations start 16 bytes past a page). The rest
/// of `v` stays initialised from earlier use, so that a pooled buffer can serve a
/// larger layer later without being zeroed again (that memset was 5% of
/// EfficientNet-Lite0's forward pass).
struct Buf {
    v: Vec<f32>,
    off: usize,
    len: usize,
}

impl Buf {
    fn from_vec(v: Vec<f32>) -> Buf {
        Buf {
            len: v.len(),
            off: 0,
            v,
        }
    }

    /// The numbers as an exact-length vector.
    fn into_vec(mut self) -> Vec<f32> {
        self.v.truncate(self.off + self.len);
        self.v.drain(..self.off);
        self.v
    }
}

impl std::ops::Deref for Buf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.v[self.off..][..self.len]
    }
}

impl std::ops::DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.v[self.off..][..self.len]
    }
}

/// A buffer of `len` numbers (contents unspecified) starting on a 64-byte boundary,
/// from the pool when one is large enough: the smallest whose initialised part
/// covers it, else the roomiest, grown. Pooled vectors keep their whole initialised
/// length.
fn take_buffer(pool: &mut Vec<Vec<f32>>, len: usize) -> Buf {
    const ALIGN: usize = 64 / std::mem::size_of::<f32>();
    let need = len + ALIGN - 1;
    let fits = (0..pool.len())
        .filter(|&i| pool[i].len() >= need)
        .min_by_key(|&i| pool[i].len());
    let best = fits.or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()));
    let mut v = best.map(|i| pool.swap_remove(i)).unwrap_or_default();
    if v.len() < need {
        v.resize(need, 0.0);
    }
    let off = v.as_ptr().align_offset(64).min(ALIGN - 1);
    Buf { v, off, len }
}

/// The description `--model` names: a built-in architecture, or an ONNX file's graph.
pub fn describe(model: &str) -> Result<Arch> {
    if is_onnx(model) {
        return crate::import::onnx::describe(Path::new(model));
    }
    arch::by_name(model)
}

/// Whether `--model` names an ONNX file rather than a built-in architecture.
pub fn is_onnx(model: &str) -> bool {
    Path::new(model)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

/// Whether node `i`'s output has been through a ReLU or ReLU6 (its own activation,
/// or a max pool's or a flatten's input): mostly zeros deep in a network, which a 1x1
/// conv reading it can skip ([`Conv2d::set_sparse_input`]).
fn comes_out_of_a_relu(arch: &Arch, i: usize) -> bool {
    let node = &arch.nodes[i];
    match &node.op {
        Op::Conv { act, .. } | Op::Add { act } | Op::Linear { act, .. } => *act != Act::None,
        Op::MaxPool { .. } | Op::Flatten => node
            .inputs
            .first()
            .is_some_and(|&j| comes_out_of_a_relu(arch, j)),
        _ => false,
    }
}

/// The kernels' geometry of a described conv layer; `None` for other layers.
pub fn conv_geom(op: &Op) -> Option<ConvGeom> {
    match op {
        Op::Conv {
            in_ch,
            out_ch,
            kernel,
            stride,
            pad,
            dilation,
            groups,
            ..
        } => Some(ConvGeom {
            in_ch: *in_ch,
            out_ch: *out_ch,
            kernel: *kernel,
            stride: *stride,
            pad: *pad,
            dilation: *dilation,
            groups: *groups,
        }),
        _ => None,
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Network {
    /// `--model NAME [--weights FILE]`: the file when given, else the embedded default
    /// weights of that architecture (only efficientnet-lite0 ships with weights).
    pub fn open(model: &str, weights: Option<&Path>) -> Result<Network> {
        if is_onnx(model) {
            return Network::open_onnx(Path::new(model), weights);
        }
        let arch = arch::by_name(model)?;
        match weights {
            Some(path) => Network::load(arch, path),
            None if model == DEFAULT_MODEL => Network::embedded_default(),
            None => Err(Error::Weights {
                model: model.to_string(),
                reason: "no weights are embedded for this architecture; pass --weights FILE \
                         (a torchvision .pth or a safetensors file; `neurodex import` converts)"
                    .into(),
            }),
        }
    }

    pub fn embedded_default() -> Result<Network> {
        let tensors = candle_core::safetensors::load_buffer(LITE0_WEIGHTS, &Device::Cpu)?;
        let mut net = Network::from_tensors(arch::by_name(DEFAULT_MODEL)?, &tensors)?;
        net.weights_id = sha256_hex(LITE0_WEIGHTS);
        Ok(net)
    }

    /// An ONNX model: its graph as the description, its initializers as the weights
    /// (a separate weights file is refused: they are in the model).
    fn open_onnx(path: &Path, weights: Option<&Path>) -> Result<Network> {
        if let Some(w) = weights {
            return Err(Error::Weights {
                model: path.display().to_string(),
                reason: format!(
                    "an ONNX model carries its weights; drop --weights {}",
                    w.display()
                ),
            });
        }
        let imported = crate::import::onnx::load(path)?;
        let mut net = Network::from_tensors(imported.arch, &imported.tensors)?;
        net.weights_id = imported.sha256;
        Ok(net)
    }

    /// Loads a safetensors or PyTorch checkpoint (legacy or zip) for `arch`.
    pub fn load(arch: Arch, path: &Path) -> Result<Network> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        // Safetensors go through the importer's checks too (repeated names).
        let tensors: HashMap<String, Tensor> = match crate::import::detect(&bytes) {
            Some(crate::import::Format::Safetensors) => {
                crate::import::check_safetensors(&bytes).map_err(|reason| Error::Checkpoint {
                    path: path.to_path_buf(),
                    reason,
                })?;
                candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| {
                    Error::Checkpoint {
                        path: path.to_path_buf(),
                        reason: format!("bad safetensors: {e}"),
                    }
                })?
            }
            _ => crate::import::read_checkpoint(path)?.into_iter().collect(),
        };
        let model = arch.name.clone();
        let mut net = Network::from_tensors(arch, &tensors).map_err(|e| match e {
            Error::Weights { reason, .. } => Error::Weights {
                model: format!("{model} ({})", path.display()),
                reason,
            },
            e => e,
        })?;
        net.weights_id = sha256_hex(&bytes);
        Ok(net)
    }

    /// Binds `arch` to named tensors, checking every name and shape first.
    pub fn from_tensors(arch: Arch, tensors: &HashMap<String, Tensor>) -> Result<Network> {
        let bad = |reason: String| Error::Weights {
            model: arch.name.clone(),
            reason,
        };
        let mut missing = Vec::new();
        for (name, shape) in arch.parameters() {
            match tensors.get(&name) {
                None => missing.push(name),
                Some(t) if t.dims() != shape.as_slice() => {
                    return Err(bad(format!(
                        "tensor {name} has shape {:?}, expected {:?}",
                        t.dims(),
                        shape
                    )))
                }
                Some(_) => {}
            }
        }
        if !missing.is_empty() {
            let n = missing.len();
            missing.truncate(5);
            return Err(bad(format!(
                "{n} expected tensors are missing, e.g. {} (is this the right architecture?)",
                missing.join(", ")
            )));
        }
        let get = |name: &str| -> Result<Vec<f32>> {
            Ok(tensors[name]
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?)
        };
        let mut layers = Vec::with_capacity(arch.nodes.len());
        for node in &arch.nodes {
            layers.push(match &node.op {
                Op::Input => Layer::Input,
                Op::Conv {
                    weight,
                    bn,
                    bn_eps,
                    out_ch,
                    bias,
                    act,
                    ..
                } => {
                    let mut w = get(&format!("{weight}.weight"))?;
                    let mut b = if *bias {
                        get(&format!("{weight}.bias"))?
                    } else {
                        vec![0.0; *out_ch]
                    };
                    if let Some(bn) = bn {
                        fold_batch_norm(
                            &mut w,
                            &mut b,
                            &get(&format!("{bn}.weight"))?,
                            &get(&format!("{bn}.bias"))?,
                            &get(&format!("{bn}.running_mean"))?,
                            &get(&format!("{bn}.running_var"))?,
                            *bn_eps,
                        );
                    }
                    let geom = conv_geom(&node.op).expect("a conv");
                    let has_bias = *bias || bn.is_some();
                    Layer::Conv(Box::new(Conv2d::new(geom, w, has_bias.then_some(b), *act)))
                }
                Op::MaxPool {
                    kernel,
                    stride,
                    pad,
                    ceil_mode,
                } => Layer::MaxPool {
                    kernel: *kernel,
                    stride: *stride,
                    pad: *pad,
                    ceil_mode: *ceil_mode,
                },
                Op::AdaptiveAvgPool { out } => Layer::AdaptiveAvgPool(out.0, out.1),
                Op::AvgPool {
                    kernel,
                    stride,
                    pad,
                    count_include_pad,
                } => Layer::AvgPool {
                    kernel: *kernel,
                    stride: *stride,
                    pad: *pad,
                    count_include_pad: *count_include_pad,
                },
                Op::Add { act } => Layer::Add(*act),
                Op::Concat => Layer::Concat,
                Op::Unary { f } => Layer::Unary(*f),
                Op::Shuffle { groups } => Layer::Shuffle(*groups),
                Op::Slice { from, to } => Layer::Slice(*from, *to),
                Op::Mul => Layer::Mul,
                Op::Binary { f } => Layer::Binary(*f),
                Op::ChannelMean => Layer::ChannelMean,
                Op::LayerNorm { weight, eps, .. } => Layer::ChannelNorm {
                    gamma: get(&format!("{weight}.weight"))?,
                    beta: get(&format!("{weight}.bias"))?,
                    eps: *eps,
                },
                Op::Softmax => Layer::Softmax,
                Op::Flatten => Layer::Flatten,
                Op::Linear { weight, act, .. } => Layer::Linear(Linear::new(
                    get(&format!("{weight}.weight"))?,
                    Some(get(&format!("{weight}.bias"))?),
                    *act,
                )),
            });
        }
        for (node, layer) in arch.nodes.iter().zip(layers.iter_mut()) {
            if let (Layer::Conv(conv), Some(&from)) = (layer, node.inputs.first()) {
                conv.set_sparse_input(comes_out_of_a_relu(&arch, from));
            }
        }
        Ok(Network {
            labels: Labels::for_outputs(arch.classes),
            split: vec![Act::None; layers.len()],
            transposes: (0..layers.len()).map(|_| Default::default()).collect(),
            grad_pool: Mutex::new(Vec::new()),
            arch,
            layers,
            weights_id: String::new(),
            pools: Mutex::new(Vec::new()),
            plans: Mutex::new(Vec::new()),
        })
    }

    /// sha256 of the weights file (or of the embedded weights).
    pub fn weights_id(&self) -> &str {
        &self.weights_id
    }

    /// For a node whose output reaches the network's final fully connected layer
    /// through global average pooling and flattening only (EfficientNet's and
    /// ResNet's last conv), that layer's weights read per channel: `w[c][u]` is the
    /// weight from channel `u` to output `c`. `None` for every other node.
    pub fn classifier_columns(&self, node: usize) -> Option<Vec<Vec<f32>>> {
        let nodes = &self.arch.nodes;
        let readers = |i: usize| -> Vec<usize> {
            (i + 1..nodes.len())
                .filter(|&j| nodes[j].inputs.contains(&i))
                .collect()
        };
        let channels = match self.arch.nodes.get(node)?.op {
            Op::Conv { out_ch, .. } => out_ch,
            _ => return None,
        };
        let mut at = node;
        loop {
            let r = readers(at);
            let [next] = r[..] else { return None };
            match (&nodes[next].op, &self.layers[next]) {
                (Op::AdaptiveAvgPool { out: (1, 1) }, _) | (Op::Flatten, _) => at = next,
                (_, Layer::Linear(lin)) => {
                    let last = next == nodes.len() - 1;
                    if !last || lin.in_features() != channels {
                        return None;
                    }
                    return Some(
                        (0..lin.out_features())
                            .map(|c| (0..channels).map(|u| lin.weight(c, u)).collect())
                            .collect(),
                    );
                }
                _ => return None,
            }
        }
    }

    /// Conv weights of node `i` after BatchNorm folding, `[out, in/groups, kh, kw]`,
    /// with the geometry; `None` for other layers.
    pub fn conv_weights(&self, i: usize) -> Option<(&ConvGeom, &[f32])> {
        match self.layers.get(i)? {
            Layer::Conv(c) => Some((c.geom(), c.weight())),
            _ => None,
        }
    }

    /// Lets `nodes` be tapped before their activation (`Tap::pre`): each one's
    /// activation leaves its kernel and runs as a separate pass over its output
    /// (a copy of the output per tap, a few percent of the layer's time).
    pub fn split_activations(&mut self, nodes: &[usize]) {
        // Fusions depend on where activations are.
        self.plans
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        for &i in nodes {
            let act = match self.layers.get_mut(i) {
                Some(Layer::Conv(c)) => c.take_act(),
                Some(Layer::Linear(l)) => l.take_act(),
                Some(Layer::Add(a)) => std::mem::replace(a, Act::None),
                _ => Act::None,
            };
            if act != Act::None {
                self.split[i] = act;
            }
        }
    }

    /// Whether node `i` can be tapped before its activation: it has none, or it
    /// was split by `split_activations`.
    pub fn has_pre(&self, i: usize) -> bool {
        self.arch
            .nodes
            .get(i)
            .is_some_and(|n| n.op.act() == Act::None)
            || self.split.get(i).is_some_and(|&a| a != Act::None)
    }

    /// Forward on `n` images of the recipe's size, CHW each, concatenated.
    pub fn forward_raw(&self, input: &[f32], n: usize, taps: &[usize]) -> Result<Vec<Activation>> {
        let s = self.arch.recipe.size as usize;
        self.forward_hw(input, n, s, s, taps)
    }

    /// Like `forward_raw` with taps before or after the activation.
    pub fn forward_taps(&self, input: &[f32], n: usize, taps: &[Tap]) -> Result<Vec<Activation>> {
        let s = self.arch.recipe.size as usize;
        self.forward_taps_hw(input, n, s, s, taps)
    }

    /// The peak of every channel of each tap, per image: what `forward_taps` followed
    /// by a maximum over each map gives, without handing the maps out. Images go one
    /// per thread as in `forward_taps_hw`, and each tap's peaks are taken on that
    /// thread as the tap is computed, from the layout it is computed in (before the
    /// activation, no copy is kept), where the whole maps would be unblocked to NCHW,
    /// gathered into one batch and read again.
    pub fn forward_peaks(&self, input: &[f32], n: usize, taps: &[Tap]) -> Result<Vec<TapPeaks>> {
        let s = self.arch.recipe.size as usize;
        let taps = self.normalise_taps(taps)?;
        let outs = self.forward_split(input, n, s, s, &taps, &vec![true; taps.len()])?;
        Ok(outs
            .into_iter()
            .map(|o| match o {
                TapOut::Peaks(p) => p,
                TapOut::Map(m) => TapPeaks::of(&m),
            })
            .collect())
    }

    /// Decoded images prepared by the network's recipe (in parallel) and run through
    /// it as one batch: the taps' outputs, and where each image's input came from
    /// (to map units back onto it).
    pub fn run_images(
        &self,
        images: &[&image::RgbImage],
        taps: &[Tap],
    ) -> Result<(Vec<Activation>, Vec<Transform>)> {
        use rayon::prelude::*;
        let prepared: Vec<(Vec<f32>, Transform)> = images
            .par_iter()
            .map(|img| preprocess::prepare(img, &self.arch.recipe))
            .collect();
        let mut input = Vec::with_capacity(prepared.iter().map(|p| p.0.len()).sum());
        let mut transforms = Vec::with_capacity(prepared.len());
        for (x, t) in prepared {
            input.extend_from_slice(&x);
            transforms.push(t);
        }
        Ok((self.forward_taps(&input, images.len(), taps)?, transforms))
    }

    /// Forward on `n` images of `h` x `w`; returns the outputs of nodes `taps`, in
    /// that order, computing nothing past the deepest of them.
    ///
    /// A batch goes through the network one image per thread, each image all the
    /// way on its own thread with single-threaded kernels: its activations stay in
    /// that core's cache between layers (those of a whole batch do not: Lite0 b16
    /// 97 img/s), and no layer waits for the other threads to finish theirs (two
    /// images per layer, split over the threads: 112 img/s). The fully connected
    /// layers that end the network then run on the whole batch, so that their
    /// weights are read once per batch (AlexNet b16: 124-132 img/s with the whole
    /// network batch by batch, 135-142 this way), and so do the layers before them
    /// from the first that is much faster on a batch (Winograd layers with large
    /// filters: ResNet-18 b16 from 58 to 94 img/s with layer3 and layer4 batched).
    pub fn forward_hw(
        &self,
        input: &[f32],
        n: usize,
        h: usize,
        w: usize,
        taps: &[usize],
    ) -> Result<Vec<Activation>> {
        let taps: Vec<Tap> = taps.iter().map(|&t| Tap::post(t)).collect();
        self.forward_taps_hw(input, n, h, w, &taps)
    }

    /// Like `forward_hw` with taps before or after the activation. A tap before
    /// the activation of a node that has one needs `split_activations` first.
    pub fn forward_taps_hw(
        &self,
        input: &[f32],
        n: usize,
        h: usize,
        w: usize,
        taps: &[Tap],
    ) -> Result<Vec<Activation>> {
        let taps = self.normalise_taps(taps)?;
        self.forward_split(input, n, h, w, &taps, &vec![false; taps.len()])
            .map(maps)
    }

    /// A batch of `n` images through the network, for normalised `taps`: each tap's
    /// map, or only its peaks where `peaks[k]` (taken in the pass, as `forward_peaks`
    /// says). Images go one per thread, each all the way on its own thread with
    /// single-threaded kernels, up to the first node computed on the whole batch
    /// (`batched_from`); that tail then runs on the batch, from the maps it reads, and
    /// its taps are handed out as maps (their peaks taken from them).
    fn forward_split(
        &self,
        input: &[f32],
        n: usize,
        h: usize,
        w: usize,
        taps: &[Tap],
        peaks: &[bool],
    ) -> Result<Vec<TapOut>> {
        use rayon::prelude::*;
        let per_image = 3 * h * w;
        if taps.is_empty() || n == 0 || input.len() != n * per_image {
            // Nothing to split (or an input of the wrong size, which this refuses).
            return self.forward_chunk(input, n, h, w, taps, peaks);
        }
        let cut = self.batched_from(n, h, w);
        let last = taps.iter().map(|t| t.node).max().unwrap_or(0);
        // The taps before the tail as asked, then the maps the tail reads.
        let before: Vec<usize> = (0..taps.len()).filter(|&k| taps[k].node < cut).collect();
        let feeds = self.tail_feeds(cut, last);
        let mut early: Vec<Tap> = before.iter().map(|&k| taps[k]).collect();
        let mut mask: Vec<bool> = before.iter().map(|&k| peaks[k]).collect();
        early.extend_from_slice(&feeds);
        mask.resize(early.len(), false);
        let one = |image: &[f32]| self.forward_chunk(image, 1, h, w, &early, &mask);
        let mut parts: Vec<Vec<TapOut>> = if n == 1 {
            // One image: its kernels split each layer over the pool.
            vec![kernels::keep_pool_awake(|| one(input))?]
        } else if rayon::current_num_threads() <= 1 {
            input.chunks(per_image).map(one).collect::<Result<_>>()?
        } else {
            input
                .par_chunks(per_image)
                .with_max_len(1)
                .map(|image| kernels::serial(|| one(image)))
                .collect::<Result<_>>()?
        };
        // Each early output, image after image.
        let mut joined: Vec<TapOut> = (0..early.len())
            .map(|k| {
                let mut it = parts
                    .iter_mut()
                    .map(|p| std::mem::replace(&mut p[k], TapOut::Peaks(TapPeaks::empty())));
                let mut all = it.next().expect("n > 0 images");
                for o in it {
                    if let Some(spent) = all.append(o) {
                        self.recycle(spent);
                    }
                }
                all.set_n(n);
                all
            })
            .collect();
        let mut tail: Vec<TapOut> = Vec::new();
        if last >= cut {
            let mut bufs: Vec<Option<Buf>> = (0..=last).map(|_| None).collect();
            let pre: Vec<Option<Buf>> = (0..=last).map(|_| None).collect();
            for (tap, out) in feeds.iter().zip(joined.drain(before.len()..)) {
                bufs[tap.node] = Some(Buf::from_vec(out.map().data));
            }
            let late: Vec<Tap> = taps.iter().copied().filter(|t| t.node >= cut).collect();
            tail = self.run_pass(bufs, pre, cut, n, h, w, &late, &vec![false; late.len()])?;
        }
        // Back in the order asked.
        let (mut early_outs, mut tail) = (joined.into_iter(), tail.into_iter());
        Ok(taps
            .iter()
            .map(|t| {
                if t.node < cut {
                    early_outs.next().expect("one per early tap")
                } else {
                    tail.next().expect("one per tail tap")
                }
            })
            .collect())
    }

    /// Whether each image's values at `taps` are the same whatever else is in its batch
    /// of up to `batch` images: whether, for every batch size, every tap is computed
    /// image by image. Where some are computed on the whole batch (Winograd layers
    /// with large filters, fully connected layers), the kernels chosen and how they
    /// sum depend on the batch's size.
    pub fn batch_invariant(&self, taps: &[Tap], batch: usize) -> bool {
        let s = self.arch.recipe.size as usize;
        let last = taps.iter().map(|t| t.node).max().unwrap_or(0);
        (1..=batch.max(1)).all(|n| last < self.batched_from(n, s, s))
    }

    /// The outputs before `cut` that nodes `cut..=last` read (none when `last < cut`):
    /// what a batch computed image by image hands to its batched tail.
    fn tail_feeds(&self, cut: usize, last: usize) -> Vec<Tap> {
        let mut feeds: Vec<Tap> = self
            .arch
            .nodes
            .get(cut..=last)
            .unwrap_or_default()
            .iter()
            .flat_map(|node| {
                node.inputs
                    .iter()
                    .filter(|&&i| i < cut)
                    .map(|&i| Tap::post(i))
            })
            .collect();
        feeds.sort_unstable();
        feeds.dedup();
        feeds
    }

    /// The taps as a pass computes them: before an activation that is absent is after
    /// it; before one fused into its layer is an error.
    fn normalise_taps(&self, taps: &[Tap]) -> Result<Vec<Tap>> {
        let mut norm = Vec::with_capacity(taps.len());
        for &t in taps {
            let node = self
                .arch
                .nodes
                .get(t.node)
                .ok_or_else(|| Error::Shape(format!("no node {}", t.node)))?;
            let split = self.split[t.node] != Act::None;
            if t.pre && !split && node.op.act() != Act::None {
                return Err(Error::FusedActivation {
                    layer: node.name.clone(),
                });
            }
            norm.push(Tap {
                node: t.node,
                pre: t.pre && split,
            });
        }
        Ok(norm)
    }

    /// Where a batch of `n` images of `h` x `w` stops going image by image: at the
    /// first conv layer that runs much faster on the whole batch (Winograd layers
    /// with large filters, ResNet-18's layer3 on), else at the fully connected tail.
    pub fn batched_from(&self, n: usize, h: usize, w: usize) -> usize {
        let tail = self.batched_tail();
        let shapes = self.arch.shapes_for(h, w);
        (1..tail)
            .find(|&i| match &self.layers[i] {
                Layer::Conv(c) => {
                    let [_, ih, iw] = shapes[self.arch.nodes[i].inputs[0]];
                    c.prefers_batch(n, ih, iw)
                }
                _ => false,
            })
            .unwrap_or(tail)
    }

    /// First node of the run of fully connected layers (with flattening and
    /// elementwise nodes between) that ends the network; past the end without one.
    fn batched_tail(&self) -> usize {
        let mut cut = self.layers.len();
        while cut > 1
            && matches!(
                self.layers[cut - 1],
                Layer::Linear(_) | Layer::Flatten | Layer::Add(_)
            )
        {
            cut -= 1;
        }
        // Start at a fully connected layer, not at the flattening before it.
        while cut < self.layers.len() && !matches!(self.layers[cut], Layer::Linear(_)) {
            cut += 1;
        }
        cut
    }

    /// Whether node `i`'s output is channel-blocked (`kernels::blocked`) in a
    /// forward pass that computes the whole network.
    pub fn runs_blocked(&self, i: usize) -> bool {
        let last = self.layers.len() - 1;
        i <= last && self.blocked_layout(1, last)[i]
    }

    /// Per node up to `last`, whether its output is channel-blocked when the pass
    /// computes nodes `start..` (earlier outputs are given NCHW): depthwise convs
    /// that can run so, the 1x1 convs that read a blocked output, sums of blocked
    /// outputs, and stems read only by blocked depthwise convs. In
    /// EfficientNet-Lite0 that is everything from the stem to the head; in ResNet
    /// and AlexNet nothing.
    fn blocked_layout(&self, start: usize, last: usize) -> Vec<bool> {
        let depthwise_blocked = |j: usize| matches!(&self.layers[j], Layer::Conv(c) if c.runs_blocked() && c.geom().is_depthwise());
        let mut blocked = vec![false; last + 1];
        for i in start..=last {
            blocked[i] = match &self.layers[i] {
                // A stem reads the image; it writes blocked output where only
                // blocked depthwise layers read it.
                Layer::Conv(conv) if conv.runs_blocked() && !conv.reads_blocked() => {
                    let mut readers = (i + 1..self.layers.len())
                        .filter(|&j| self.arch.nodes[j].inputs.contains(&i))
                        .peekable();
                    readers.peek().is_some() && readers.all(depthwise_blocked)
                }
                Layer::Conv(conv) if conv.runs_blocked() => {
                    conv.geom().is_depthwise() || blocked[self.arch.nodes[i].inputs[0]]
                }
                Layer::Add(_) => self.arch.nodes[i].inputs.iter().all(|&j| blocked[j]),
                _ => false,
            };
        }
        blocked
    }

    fn recycle(&self, buf: Vec<f32>) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        let Some(pool) = pools.first_mut() else {
            return;
        };
        let kept: usize = pool.iter().map(|b| b.capacity()).sum();
        if kept + buf.capacity() <= POOL_LIMIT {
            pool.push(buf);
        }
    }

    /// A pass over `n` images from the input to the deepest tap, handing out each tap's
    /// map, or only its peaks where `peaks[k]`, taken as it is computed.
    #[allow(clippy::too_many_arguments)]
    fn forward_chunk(
        &self,
        input: &[f32],
        n: usize,
        h: usize,
        w: usize,
        taps: &[Tap],
        peaks: &[bool],
    ) -> Result<Vec<TapOut>> {
        match self.chunk_bufs(input, n, h, w, taps)? {
            None => Ok(vec![]),
            Some((bufs, pre)) => self.run_pass(bufs, pre, 1, n, h, w, taps, peaks),
        }
    }

    /// The slots of a pass from the input on (the input in the first), or `None`
    /// when there are no taps.
    #[allow(clippy::type_complexity)]
    fn chunk_bufs(
        &self,
        input: &[f32],
        n: usize,
        h: usize,
        w: usize,
        taps: &[Tap],
    ) -> Result<Option<(Vec<Option<Buf>>, Vec<Option<Buf>>)>> {
        if input.len() != n * 3 * h * w {
            return Err(Error::Shape(format!(
                "input has {} numbers, expected {n} x 3 x {h} x {w}",
                input.len()
            )));
        }
        let Some(last) = taps.iter().map(|t| t.node).max() else {
            return Ok(None);
        };
        if last >= self.layers.len() {
            return Err(Error::Shape(format!("no node {last}")));
        }
        let mut bufs: Vec<Option<Buf>> = (0..=last).map(|_| None).collect();
        let pre: Vec<Option<Buf>> = (0..=last).map(|_| None).collect();
        let first = {
            let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
            let mut pool = pools.pop().unwrap_or_default();
            let mut first = take_buffer(&mut pool, input.len());
            pools.push(pool);
            first.copy_from_slice(input);
            first
        };
        bufs[0] = Some(first);
        Ok(Some((bufs, pre)))
    }

    /// Computes nodes `start..` up to the deepest tap on `n` images of `h` x `w`,
    /// from `bufs`: one slot per node up to that tap, filled (each with `n` images)
    /// for every node before `start` that a later node or a tap reads, and `pre`
    /// likewise for the taps before an activation. Taps before an activation must
    /// name split nodes (`forward_taps_hw` sees to it). Follows the pass's `Plan`. Hands out the
    /// taps' maps, or only their peaks (`peaks`).
    #[allow(clippy::too_many_arguments)]
    fn run_pass(
        &self,
        bufs: Vec<Option<Buf>>,
        pre: Vec<Option<Buf>>,
        start: usize,
        n: usize,
        h: usize,
        w: usize,
        taps: &[Tap],
        peaks: &[bool],
    ) -> Result<Vec<TapOut>> {
        if taps.is_empty() {
            return Ok(vec![]);
        }
        let plan = self.plan(start, h, w, taps)?;
        let pool = self
            .pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        let peak_taps = peaks.contains(&true).then(|| {
            let mut p = PeakTaps {
                pre: vec![Vec::new(); plan.last + 1],
                post: vec![Vec::new(); plan.last + 1],
                out: vec![None; taps.len()],
            };
            for (k, t) in taps.iter().enumerate().filter(|&(k, _)| peaks[k]) {
                let by_node = if t.pre { &mut p.pre } else { &mut p.post };
                by_node[t.node].push(k);
            }
            p
        });
        let mut pass = Pass {
            net: self,
            plan: &plan,
            n,
            uses: plan.uses.clone(),
            bufs,
            pre,
            pool,
            ahead: None,
            peaks: peak_taps,
        };
        for i in start..=plan.last {
            pass.step(i)?;
        }
        let mut taken = pass.peaks.take().map(|p| p.out);
        let outs = taps
            .iter()
            .enumerate()
            .map(|(k, &t)| {
                if !peaks[k] {
                    return TapOut::Map(pass.output(t));
                }
                // Taps no step computed (the input itself) from their maps.
                match taken.as_mut().and_then(|o| o[k].take()) {
                    Some(p) => TapOut::Peaks(p),
                    None => TapOut::Peaks(TapPeaks::of(&pass.output(t))),
                }
            })
            .collect();
        let pool = pass.finish();
        self.pools
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(pool);
        Ok(outs)
    }

    /// Class probabilities (softmax of the last layer) for `n` prepared images.
    pub fn classify(&self, input: &[f32], n: usize) -> Result<Vec<Vec<f32>>> {
        let last = self.arch.resolve("logits")?;
        let logits = self.forward_raw(input, n, &[last])?.pop().expect("one tap");
        Ok(logits.data.chunks(logits.c).map(classes::softmax).collect())
    }
}

/// One forward pass in progress: the outputs computed so far, how many more times
/// each will be read, and the buffers free for the next layers.
struct Pass<'a> {
    net: &'a Network,
    plan: &'a plan::Plan,
    n: usize,
    uses: Vec<usize>,
    bufs: Vec<Option<Buf>>,
    pre: Vec<Option<Buf>>,
    pool: Vec<Vec<f32>>,
    /// The output of the next node, computed with this one (a conv and its sum).
    ahead: Option<Buf>,
    /// Where only the taps' peaks are wanted: taken as each tap is computed.
    peaks: Option<PeakTaps>,
}

/// What a pass hands out for one tap: its map, or only its peaks.
enum TapOut {
    Map(Activation),
    Peaks(TapPeaks),
}

impl TapOut {
    /// Another image's output for the same tap appended (`n` set by `set_n`); returns
    /// the spent map's buffer, for the pool.
    fn append(&mut self, o: TapOut) -> Option<Vec<f32>> {
        match (self, o) {
            (TapOut::Map(a), TapOut::Map(b)) => {
                a.data.extend_from_slice(&b.data);
                Some(b.data)
            }
            (TapOut::Peaks(a), TapOut::Peaks(b)) => {
                a.values.extend_from_slice(&b.values);
                a.at.extend_from_slice(&b.at);
                None
            }
            _ => unreachable!("one tap, one kind of output"),
        }
    }

    fn set_n(&mut self, n: usize) {
        match self {
            TapOut::Map(a) => a.n = n,
            TapOut::Peaks(p) => p.n = n,
        }
    }

    fn map(self) -> Activation {
        match self {
            TapOut::Map(m) => m,
            TapOut::Peaks(_) => unreachable!("a pass asked for a map"),
        }
    }
}

/// Every tap's map, from a pass that was asked for maps only.
fn maps(outs: Vec<TapOut>) -> Vec<Activation> {
    outs.into_iter().map(TapOut::map).collect()
}

/// The taps of a pass that hands out peaks: per node, the taps (their places in the
/// caller's list) before and after its activation, and the peaks taken so far.
struct PeakTaps {
    pre: Vec<Vec<usize>>,
    post: Vec<Vec<usize>>,
    out: Vec<Option<TapPeaks>>,
}

impl Pass<'_> {
    /// Computes node `i`, applies its split activation (keeping the value before it
    /// where a tap wants that), and frees the inputs it was the last reader of.
    fn step(&mut self, i: usize) -> Result<()> {
        let node = &self.net.arch.nodes[i];
        let mut out = match self.ahead.take() {
            Some(sum) => sum,
            None => self.compute(i)?,
        };
        debug_assert!(
            self.ahead.is_some() || out.len() == self.plan.len_of(i, self.n),
            "{}",
            node.name
        );
        let act = self.net.split[i];
        if act != Act::None {
            if self.plan.want_pre[i] {
                if self.peaks.is_some() {
                    // The peaks before the activation need no copy of the map.
                    self.take_peaks(i, true, &out);
                } else {
                    let mut copy = take_buffer(&mut self.pool, out.len());
                    copy.copy_from_slice(&out);
                    self.pre[i] = Some(copy);
                }
            }
            kernels::apply_act(&mut out, act);
        }
        for &j in &node.inputs {
            self.uses[j] = self.uses[j].saturating_sub(1);
            if self.uses[j] == 0 {
                let freed = self.bufs[j].take().map(|b| b.v);
                self.pool.extend(freed.filter(|v| v.capacity() > 0));
            }
        }
        if self.peaks.as_ref().is_some_and(|p| !p.post[i].is_empty()) {
            self.take_peaks(i, false, &out);
            // Each such tap was one read of the output.
            let reads = self.peaks.as_ref().map_or(0, |p| p.post[i].len());
            self.uses[i] = self.uses[i].saturating_sub(reads);
            if self.uses[i] == 0 {
                self.pool.push(out.v);
                return Ok(());
            }
        }
        self.bufs[i] = Some(out);
        Ok(())
    }

    /// The peaks of node `i`'s map `x` (before its activation: `pre`) for the taps
    /// that want them.
    fn take_peaks(&mut self, i: usize, pre: bool, x: &[f32]) {
        let Some(p) = self.peaks.as_mut() else {
            return;
        };
        let slots = if pre { &p.pre[i] } else { &p.post[i] };
        if slots.is_empty() {
            return;
        }
        let [c, h, w] = self.plan.shapes[i];
        let n = self.n;
        let (values, at) = if self.plan.blocked[i] {
            kernels::blocked_channel_peaks(x, n, c, h * w)
        } else {
            kernels::channel_peaks(x, n, c, h * w)
        };
        let t = TapPeaks {
            n,
            c,
            h,
            w,
            values,
            at,
        };
        for &k in slots {
            p.out[k] = Some(t.clone());
        }
    }

    /// Node `i`'s output from its inputs, read in the layout the plan says (converted
    /// where an input was written in the other).
    fn compute(&mut self, i: usize) -> Result<Buf> {
        let (net, plan, n) = (self.net, self.plan, self.n);
        let node = &net.arch.nodes[i];
        let src = node.inputs[0];
        let [c, ih, iw] = plan.shapes[src];
        let mut converted: Vec<Option<Buf>> = node
            .inputs
            .iter()
            .map(|&j| {
                (plan.blocked[j] != plan.reads_blocked[i]).then(|| {
                    let x = self.bufs[j].as_deref().expect("input computed");
                    relayout(&mut self.pool, x, n, plan.shapes[j], plan.reads_blocked[i])
                })
            })
            .collect();
        let x = converted[0]
            .as_deref()
            .or(self.bufs[src].as_deref())
            .expect("input computed");
        let out = match &net.layers[i] {
            Layer::Input => unreachable!("input is node 0"),
            Layer::Conv(conv) => match plan.fused_add[i] {
                // The sum is taken as the conv's output is stored; this node's own
                // output is never made, the sum node takes `ahead`.
                Some(other) => {
                    let Layer::Add(then) = net.layers[i + 1] else {
                        unreachable!("planned")
                    };
                    let y = self.bufs[other]
                        .as_deref()
                        .expect("computed before the conv");
                    let len = plan.len_of(i + 1, n);
                    if y.len() != len {
                        return Err(summed_shapes(&net.arch.nodes[i + 1].name));
                    }
                    let mut sum = take_buffer(&mut self.pool, len);
                    if plan.blocked[i] {
                        conv.forward_blocked_into(x, n, ih, iw, &mut sum, Some(y), then);
                    } else {
                        conv.forward_add_into(x, n, ih, iw, &mut sum, Some(y), then);
                    }
                    self.ahead = Some(sum);
                    Buf::from_vec(Vec::new())
                }
                None => {
                    let mut out = take_buffer(&mut self.pool, plan.len_of(i, n));
                    if plan.blocked[i] {
                        conv.forward_blocked_into(x, n, ih, iw, &mut out, None, Act::None);
                    } else {
                        conv.forward_into(x, n, ih, iw, &mut out);
                    }
                    out
                }
            },
            Layer::MaxPool {
                kernel,
                stride,
                pad,
                ceil_mode,
            } => Buf::from_vec(
                kernels::max_pool2d(x, n, c, ih, iw, *kernel, *stride, *pad, *ceil_mode).0,
            ),
            Layer::AvgPool {
                kernel,
                stride,
                pad,
                count_include_pad,
            } => Buf::from_vec(
                kernels::avg_pool2d(x, n, c, ih, iw, *kernel, *stride, *pad, *count_include_pad).0,
            ),
            Layer::AdaptiveAvgPool(oh, ow) => {
                Buf::from_vec(kernels::adaptive_avg_pool2d(x, n, c, ih, iw, *oh, *ow))
            }
            Layer::Add(act) => {
                let mut acc = self.own_input(i, &mut converted[0]);
                for (k, &other) in node.inputs.iter().enumerate().skip(1) {
                    let y = converted[k]
                        .as_deref()
                        .or(self.bufs[other].as_deref())
                        .expect("input computed");
                    if y.len() != acc.len() {
                        return Err(summed_shapes(&node.name));
                    }
                    kernels::add_act(&mut acc, y, Act::None);
                }
                kernels::apply_act(&mut acc, *act);
                acc
            }
            Layer::Concat => {
                // Image by image, each input's channels in turn (NCHW: the plan keeps
                // concatenations out of the blocked layout and converts their inputs).
                let mut out = take_buffer(&mut self.pool, plan.len_of(i, n));
                let mut at = 0;
                for img in 0..n {
                    for (k, &j) in node.inputs.iter().enumerate() {
                        let y = converted[k]
                            .as_deref()
                            .or(self.bufs[j].as_deref())
                            .expect("input computed");
                        let per = y.len() / n;
                        out[at..at + per].copy_from_slice(&y[img * per..(img + 1) * per]);
                        at += per;
                    }
                }
                if at != out.len() {
                    return Err(Error::Shape(format!(
                        "{}: concatenated sizes differ",
                        node.name
                    )));
                }
                out
            }
            Layer::Shuffle(groups) => {
                // Output channel j is input channel (j % g) * (C / g) + j / g.
                let (g, hw) = (*groups, ih * iw);
                let per = c / g;
                let mut out = take_buffer(&mut self.pool, x.len());
                for (img, o) in out.chunks_mut(c * hw).enumerate() {
                    let xi = &x[img * c * hw..(img + 1) * c * hw];
                    for (j, plane) in o.chunks_mut(hw).enumerate() {
                        let from = (j % g) * per + j / g;
                        plane.copy_from_slice(&xi[from * hw..(from + 1) * hw]);
                    }
                }
                out
            }
            Layer::Slice(from, to) => {
                let hw = ih * iw;
                let mut out = take_buffer(&mut self.pool, plan.len_of(i, n));
                for (img, o) in out.chunks_mut((to - from) * hw).enumerate() {
                    o.copy_from_slice(&x[(img * c + from) * hw..(img * c + to) * hw]);
                }
                out
            }
            Layer::Unary(f) => {
                let mut out = self.own_input(i, &mut converted[0]);
                out.iter_mut().for_each(|v| *v = f.apply(*v));
                out
            }
            Layer::Mul => {
                // The map input (the larger) is written; a gate [C, 1, 1] scales each
                // channel of each image.
                let big = if plan.shapes[node.inputs[1]][1] * plan.shapes[node.inputs[1]][2]
                    > plan.shapes[src][1] * plan.shapes[src][2]
                {
                    1
                } else {
                    0
                };
                let small = 1 - big;
                let mut out = if big == 0 {
                    self.own_input(i, &mut converted[0])
                } else {
                    let y = converted[1]
                        .as_deref()
                        .or(self.bufs[node.inputs[1]].as_deref())
                        .expect("input computed");
                    let mut copy = take_buffer(&mut self.pool, y.len());
                    copy.copy_from_slice(y);
                    copy
                };
                let g = converted[small]
                    .as_deref()
                    .or(self.bufs[node.inputs[small]].as_deref())
                    .expect("input computed");
                if g.len() == out.len() {
                    out.iter_mut().zip(g).for_each(|(v, s)| *v *= s);
                } else {
                    let [c, h, w] = plan.shapes[i];
                    if g.len() != n * c {
                        return Err(Error::Shape(format!("{}: gate shape differs", node.name)));
                    }
                    for (k, plane) in out.chunks_mut(h * w).enumerate() {
                        let s = g[k];
                        plane.iter_mut().for_each(|v| *v *= s);
                    }
                }
                out
            }
            Layer::Binary(f) => {
                let y = converted[1]
                    .as_deref()
                    .or(self.bufs[node.inputs[1]].as_deref())
                    .expect("input computed");
                let (sa, sb, so) = (
                    plan.shapes[src],
                    plan.shapes[node.inputs[1]],
                    plan.shapes[i],
                );
                let mut out = take_buffer(&mut self.pool, plan.len_of(i, n));
                broadcast(*f, x, sa, y, sb, &mut out, so);
                out
            }
            Layer::ChannelMean => {
                let hw = ih * iw;
                let mut out = take_buffer(&mut self.pool, n * hw);
                for (o, xi) in out.chunks_mut(hw).zip(x.chunks(c * hw)) {
                    o.fill(0.0);
                    for plane in xi.chunks(hw) {
                        o.iter_mut().zip(plane).for_each(|(a, v)| *a += v);
                    }
                    o.iter_mut().for_each(|a| *a /= c as f32);
                }
                out
            }
            Layer::ChannelNorm { gamma, beta, eps } => {
                let mut out = self.own_input(i, &mut converted[0]);
                layer_norm(&mut out, c, ih * iw, gamma, beta, *eps);
                out
            }
            Layer::Softmax => {
                let mut out = self.own_input(i, &mut converted[0]);
                softmax_channels(&mut out, c, ih * iw);
                out
            }
            Layer::Flatten => self.own_input(i, &mut converted[0]),
            Layer::Linear(lin) => Buf::from_vec(lin.forward(x, n)),
        };
        self.pool
            .extend(converted.into_iter().flatten().map(|b| b.v));
        Ok(out)
    }

    /// Node `i`'s first input as a buffer of its own to write into: the converted
    /// copy, the input itself when `i` is its last reader, else a copy.
    fn own_input(&mut self, i: usize, converted: &mut Option<Buf>) -> Buf {
        let src = self.net.arch.nodes[i].inputs[0];
        if let Some(c) = converted.take() {
            return c;
        }
        if self.uses[src] == 1 {
            return self.bufs[src].take().expect("input computed");
        }
        let x = self.bufs[src].as_deref().expect("input computed");
        let mut copy = take_buffer(&mut self.pool, x.len());
        copy.copy_from_slice(x);
        copy
    }

    /// A tap's output, in NCHW.
    fn output(
        &mut self,
        Tap {
            node: t,
            pre: before,
        }: Tap,
    ) -> Activation {
        let [c, h, w] = self.plan.shapes[t];
        let n = self.n;
        let blocked = self.plan.blocked[t];
        let data = if before {
            let buf = self.pre[t].as_ref().expect("tap computed");
            if blocked {
                tap_nchw(&mut self.pool, buf, n, [c, h, w])
            } else {
                buf.to_vec()
            }
        } else {
            self.uses[t] -= 1;
            let buf = self.bufs[t].as_ref().expect("tap computed");
            if blocked {
                tap_nchw(&mut self.pool, buf, n, [c, h, w])
            } else if self.uses[t] == 0 {
                self.bufs[t].take().expect("tap computed").into_vec()
            } else {
                buf.to_vec()
            }
        };
        Activation { n, c, h, w, data }
    }

    /// Every buffer back in the pool, keeping the largest within the limit for the
    /// next call.
    fn finish(self) -> Vec<Vec<f32>> {
        let mut pool = self.pool;
        pool.extend(self.bufs.into_iter().flatten().map(|b| b.v));
        pool.extend(self.pre.into_iter().flatten().map(|b| b.v));
        pool.sort_by_key(|b| std::cmp::Reverse(b.capacity()));
        let mut kept = 0;
        pool.retain(|b| {
            kept += b.capacity();
            kept <= POOL_LIMIT
        });
        pool
    }
}

fn summed_shapes(node: &str) -> Error {
    Error::Shape(format!("{node}: summed shapes differ"))
}

/// A blocked tap as the NCHW numbers handed to the caller, in a pooled vector used
/// from its start: an aligned `Buf` would have to move them all down to become an
/// exact-length `Vec` (12% of an index run went to that memmove).
fn tap_nchw(pool: &mut Vec<Vec<f32>>, x: &[f32], n: usize, [c, h, w]: [usize; 3]) -> Vec<f32> {
    let len = n * c * h * w;
    let best = (0..pool.len())
        .filter(|&i| pool[i].len() >= len)
        .min_by_key(|&i| pool[i].len());
    let mut v = best.map(|i| pool.swap_remove(i)).unwrap_or_default();
    v.resize(len, 0.0);
    kernels::blocked::from_blocked(x, n, c, h * w, &mut v);
    v
}

/// `n` images of `[c, h, w]` moved into (`to_blocked`) or out of the channel-blocked
/// layout, in a buffer from `pool`.
fn relayout(
    pool: &mut Vec<Vec<f32>>,
    x: &[f32],
    n: usize,
    [c, h, w]: [usize; 3],
    to_blocked: bool,
) -> Buf {
    use kernels::blocked;
    if to_blocked {
        let mut out = take_buffer(pool, n * blocked::image_len(c, h * w));
        blocked::to_blocked(x, n, c, h * w, &mut out);
        out
    } else {
        let mut out = take_buffer(pool, n * c * h * w);
        blocked::from_blocked(x, n, c, h * w, &mut out);
        out
    }
}

/// Folds an inference-mode BatchNorm into the conv before it:
/// y = gamma * (conv(x) + b - mean) / sqrt(var + eps) + beta.
fn fold_batch_norm(
    w: &mut [f32],
    b: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f32,
) {
    let per_out = w.len() / b.len();
    for o in 0..b.len() {
        let scale = gamma[o] as f64 / (var[o] as f64 + eps as f64).sqrt();
        for v in &mut w[o * per_out..(o + 1) * per_out] {
            *v = (*v as f64 * scale) as f32;
        }
        b[o] = ((b[o] as f64 - mean[o] as f64) * scale + beta[o] as f64) as f32;
    }
}

/// `f(a, b)` with numpy broadcasting over `[c, h, w]` per image (an axis of size 1
/// stretches to the other's), into `out` of shape `so`.
fn broadcast(
    f: arch::Binary,
    a: &[f32],
    sa: [usize; 3],
    b: &[f32],
    sb: [usize; 3],
    out: &mut [f32],
    so: [usize; 3],
) {
    let (la, lb, lo) = (
        sa.iter().product::<usize>(),
        sb.iter().product::<usize>(),
        so.iter().product::<usize>(),
    );
    // Index of an output position in an input: its coordinate, or 0 on a stretched axis.
    let at = |s: [usize; 3], ch: usize, y: usize, x: usize| {
        let (ch, y, x) = (ch % s[0], y % s[1], x % s[2]);
        (ch * s[1] + y) * s[2] + x
    };
    for (img, o) in out.chunks_mut(lo).enumerate() {
        let (ai, bi) = (&a[img * la..(img + 1) * la], &b[img * lb..(img + 1) * lb]);
        if sa == so && sb == so {
            o.iter_mut()
                .zip(ai.iter().zip(bi))
                .for_each(|(v, (&p, &q))| *v = f.apply(p, q));
            continue;
        }
        for ch in 0..so[0] {
            for y in 0..so[1] {
                for x in 0..so[2] {
                    let v = f.apply(ai[at(sa, ch, y, x)], bi[at(sb, ch, y, x)]);
                    o[(ch * so[1] + y) * so[2] + x] = v;
                }
            }
        }
    }
}

/// Layer normalisation over the `c` channels of each of `hw` pixels per image, in
/// place, then the per-channel affine terms. Mean and variance in f64: over 768
/// channels f32 sums drift by more than the comparison tolerance.
fn layer_norm(x: &mut [f32], c: usize, hw: usize, gamma: &[f32], beta: &[f32], eps: f32) {
    let mut mean = vec![0.0f64; hw];
    let mut var = vec![0.0f64; hw];
    for img in x.chunks_mut(c * hw) {
        mean.fill(0.0);
        var.fill(0.0);
        for plane in img.chunks(hw) {
            mean.iter_mut()
                .zip(plane)
                .for_each(|(m, &v)| *m += v as f64);
        }
        mean.iter_mut().for_each(|m| *m /= c as f64);
        for plane in img.chunks(hw) {
            for ((s, &m), &v) in var.iter_mut().zip(&mean).zip(plane) {
                let d = v as f64 - m;
                *s += d * d;
            }
        }
        let inv: Vec<f32> = var
            .iter()
            .map(|&s| (1.0 / (s / c as f64 + eps as f64).sqrt()) as f32)
            .collect();
        for (k, plane) in img.chunks_mut(hw).enumerate() {
            let (g, b) = (gamma[k], beta[k]);
            for ((v, &m), &r) in plane.iter_mut().zip(&mean).zip(&inv) {
                *v = (*v - m as f32) * r * g + b;
            }
        }
    }
}

/// Softmax over the `c` channels of each of `hw` pixels per image, in place.
fn softmax_channels(x: &mut [f32], c: usize, hw: usize) {
    for img in x.chunks_mut(c * hw) {
        for p in 0..hw {
            let top = (0..c)
                .map(|k| img[k * hw + p])
                .fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0f64;
            for k in 0..c {
                let e = (img[k * hw + p] - top).exp();
                img[k * hw + p] = e;
                sum += e as f64;
            }
            for k in 0..c {
                img[k * hw + p] = (img[k * hw + p] as f64 / sum) as f32;
            }
        }
    }
}
