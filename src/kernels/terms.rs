//! The two terms a layer description shares with the kernels that run it: the
//! activation a kernel applies to its output, and per-side padding.

use serde::Serialize;

/// Activation applied after a layer (fused into it at run time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Act {
    None,
    Relu,
    Relu6,
}

impl Act {
    /// The activation as the index names it (`none`, `relu`, `relu6`).
    pub fn name(self) -> &'static str {
        match self {
            Act::None => "none",
            Act::Relu => "relu",
            Act::Relu6 => "relu6",
        }
    }

    pub fn from_name(s: &str) -> Option<Act> {
        [Act::None, Act::Relu, Act::Relu6]
            .into_iter()
            .find(|a| a.name() == s)
    }

    /// The activation of one value. Every activation here is a clamp, so it is
    /// monotone: the peak of the activated map is `apply` of the peak before it,
    /// at the same place.
    pub fn apply(self, v: f32) -> f32 {
        match self {
            Act::None => v,
            Act::Relu => v.max(0.0),
            Act::Relu6 => v.clamp(0.0, 6.0),
        }
    }

    /// Whether negative inputs all become 0, so that a unit whose peaks are all
    /// <= 0 before the activation never fires.
    pub fn zeroes_negatives(self) -> bool {
        self != Act::None
    }
}

/// Padding per side, in input pixels. TF "SAME" padding is asymmetric
/// (e.g. stride-2 k3 pads 0 on top/left and 1 on bottom/right).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Pad {
    pub top: usize,
    pub left: usize,
    pub bottom: usize,
    pub right: usize,
}

impl Pad {
    pub const fn same(p: usize) -> Pad {
        Pad {
            top: p,
            left: p,
            bottom: p,
            right: p,
        }
    }
    /// (before, after) on both axes.
    pub const fn asym(before: usize, after: usize) -> Pad {
        Pad {
            top: before,
            left: before,
            bottom: after,
            right: after,
        }
    }
}
