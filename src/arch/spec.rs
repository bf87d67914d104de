//! Architectures as data: every layer states its kind, kernel, stride, padding,
//! dilation, groups, channels and activation. The forward pass (`model`) and the
//! receptive-field computation (`receptive`) both read only this description.

use serde::{Deserialize, Serialize};

// The kernels' own terms, which layers are described in.
pub use crate::kernels::{Act, Pad};

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Op {
    /// The network input, always node 0.
    Input,
    /// 2-D convolution. `weight` is the tensor-name prefix (`<weight>.weight`,
    /// `<weight>.bias` when `bias`); `bn` the prefix of a following BatchNorm
    /// (`.weight .bias .running_mean .running_var`), folded in at load time.
    Conv {
        weight: String,
        bn: Option<String>,
        bn_eps: f32,
        in_ch: usize,
        out_ch: usize,
        kernel: (usize, usize),
        stride: (usize, usize),
        pad: Pad,
        dilation: (usize, usize),
        groups: usize,
        bias: bool,
        act: Act,
    },
    /// Max pooling; padded cells never win (they count as -inf).
    MaxPool {
        kernel: (usize, usize),
        stride: (usize, usize),
        pad: Pad,
        ceil_mode: bool,
    },
    /// Average pooling (output size rounded down); padded cells count as zeros with
    /// `count_include_pad`, else they are left out of the average.
    AvgPool {
        kernel: (usize, usize),
        stride: (usize, usize),
        pad: Pad,
        count_include_pad: bool,
    },
    /// torch-style adaptive average pooling to a fixed output size ((1,1) = global).
    AdaptiveAvgPool { out: (usize, usize) },
    /// Elementwise sum of the inputs (residual connection), then `act`.
    Add { act: Act },
    /// The inputs' channels one after the other (inception branches, dense blocks);
    /// their maps have one size.
    Concat,
    /// A function of each value on its own.
    Unary { f: Unary },
    /// ShuffleNet's channel shuffle: channels seen as `groups` x (C / groups), transposed.
    Shuffle { groups: usize },
    /// Channels `from..to` of the input (a split).
    Slice { from: usize, to: usize },
    /// The product of two inputs: of one shape (SiLU's x * sigmoid(x)), or a map and a
    /// per-channel gate of shape [C, 1, 1] (squeeze-and-excitation).
    Mul,
    /// Elementwise `f` of two inputs, numpy-broadcast per axis (an axis of size 1
    /// stretches): a layer norm's `x - mean` and `(x - mean) / std`.
    Binary { f: Binary },
    /// The mean over channels at each pixel: [C, H, W] -> [1, H, W].
    ChannelMean,
    /// Layer normalisation over the channels at each pixel (ConvNeXt's LayerNorm on
    /// channels-last maps), then `<weight>.weight` [C] times it plus `<weight>.bias` [C].
    LayerNorm {
        weight: String,
        channels: usize,
        eps: f32,
    },
    /// Softmax over the channels at each pixel (over the features of a flat input).
    Softmax,
    /// [N,C,H,W] -> [N, C*H*W].
    Flatten,
    /// Fully connected layer: `<weight>.weight` [out,in], `<weight>.bias` [out].
    Linear {
        weight: String,
        in_f: usize,
        out_f: usize,
        act: Act,
    },
}

/// Functions of two values, for `Op::Binary`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Binary {
    Add,
    Sub,
    Mul,
    Div,
}

impl Binary {
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
            Binary::Div => "div",
        }
    }
}

/// Elementwise functions that are not clamps (those are `Act`s, fused into layers).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "f", rename_all = "snake_case")]
pub enum Unary {
    Sigmoid,
    /// max(0, min(1, alpha * x + beta)).
    HardSigmoid {
        alpha: f32,
        beta: f32,
    },
    /// x * max(0, min(1, x / 6 + 1 / 2)).
    HardSwish,
    /// x * mul + add: arithmetic with a scalar constant.
    Affine {
        mul: f32,
        add: f32,
    },
    /// x for x >= 0, alpha * x below.
    LeakyRelu {
        alpha: f32,
    },
    Sqrt,
    /// x * x (a Pow with exponent 2).
    Square,
    Erf,
    /// x * (1 + erf(x / sqrt 2)) / 2, exactly (not the tanh approximation).
    Gelu,
}

impl Unary {
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Unary::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Unary::HardSigmoid { alpha, beta } => (alpha * x + beta).clamp(0.0, 1.0),
            Unary::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
            Unary::Affine { mul, add } => x * mul + add,
            Unary::LeakyRelu { alpha } => {
                if x >= 0.0 {
                    x
                } else {
                    alpha * x
                }
            }
            Unary::Sqrt => x.sqrt(),
            Unary::Square => x * x,
            Unary::Erf => libm::erff(x),
            Unary::Gelu => 0.5 * x * (1.0 + libm::erff(x * std::f32::consts::FRAC_1_SQRT_2)),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Unary::Sigmoid => "sigmoid",
            Unary::HardSigmoid { .. } => "hardsigmoid",
            Unary::HardSwish => "hardswish",
            Unary::Affine { .. } => "affine",
            Unary::LeakyRelu { .. } => "leakyrelu",
            Unary::Sqrt => "sqrt",
            Unary::Square => "square",
            Unary::Erf => "erf",
            Unary::Gelu => "gelu",
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Node {
    /// Stable name users type (`blocks.4`, `features.10`, `layer3.1`).
    pub name: String,
    /// Other accepted names (`conv5` for AlexNet's `features.10`).
    pub aliases: Vec<String>,
    pub op: Op,
    /// Indices of earlier nodes this one reads.
    pub inputs: Vec<usize>,
    /// Whether users may ask for this node's output.
    pub tap: bool,
}

impl Node {
    /// Node 0 of every description: the network input, not a tap.
    pub fn input() -> Node {
        Node {
            name: "input".into(),
            aliases: vec![],
            op: Op::Input,
            inputs: vec![],
            tap: false,
        }
    }
}

/// How an image becomes the network input. Stored with an index as JSON (fields
/// added since are left out where unused, so that older indexes compare equal).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// Network input side (square).
    pub size: u32,
    /// Centre crop: this fraction of the short side is kept, then resized to `size`.
    pub crop_fraction: f64,
    /// torchvision's order instead: the short side resized to this first (the long
    /// side to `int(resize * long / short)`), then the centre `size` x `size` cut out,
    /// as `Resize(resize)` and `CenterCrop(size)` do on a PIL image; `crop_fraction`
    /// is then not used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<u32>,
    pub filter: Filter,
    /// x = (pixel/255 - mean[c]) / std[c] with pixel in 0..=255 scaled as below.
    pub norm: Norm,
    /// The channels in BGR order (Caffe's models); `norm`'s terms are then per BGR.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bgr: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    Bicubic,
    Bilinear,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Norm {
    /// x = (pixel - sub) / div, pixel in 0..=255 (EfficientNet-Lite: 127, 128).
    Affine { sub: f32, div: f32 },
    /// x = (pixel/255 - mean) / std (torchvision ImageNet models).
    MeanStd { mean: [f32; 3], std: [f32; 3] },
}

#[derive(Clone, Debug, Serialize)]
pub struct Arch {
    pub name: String,
    pub description: String,
    pub recipe: Recipe,
    pub nodes: Vec<Node>,
    /// Layers indexed when the user names none.
    pub default_layers: Vec<String>,
    /// Number of output classes of the final layer (ImageNet: 1000).
    pub classes: usize,
    /// For an imported graph with operators neurodex cannot run: the error naming
    /// them. The nodes before them are here and run; the output past them does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsupported: Option<String>,
}
