//! The built-in architectures, described as data (see `spec`), and queries over a
//! description: name lookup, expected parameters, output shapes.

pub mod efficientnet;
pub mod recipes;
pub mod spec;
pub mod torchvision;

pub use spec::*;

use crate::{Error, Result};

/// The built-in architectures, by the name `--model` takes: one table, so that the
/// list and the lookup cannot disagree.
type Build = fn() -> Arch;

const MODELS: [(&str, Build); 5] = [
    ("efficientnet-lite0", efficientnet::lite0),
    ("alexnet", torchvision::alexnet),
    ("vgg16", torchvision::vgg16),
    ("resnet18", torchvision::resnet18),
    ("resnet50", torchvision::resnet50),
];

/// Names accepted by `--model`.
pub fn names() -> Vec<&'static str> {
    MODELS.iter().map(|(name, _)| *name).collect()
}

pub fn by_name(name: &str) -> Result<Arch> {
    MODELS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, build)| build())
        .ok_or_else(|| Error::UnknownModel(name.to_string()))
}

impl Op {
    /// The activation this layer applies to its output (`Act::None` for layers
    /// that have none).
    pub fn act(&self) -> Act {
        match self {
            Op::Conv { act, .. } | Op::Add { act } | Op::Linear { act, .. } => *act,
            _ => Act::None,
        }
    }

    /// A bias-free, ungrouped, undilated conv with no activation; refine with `with_*`.
    pub fn conv(
        weight: &str,
        in_ch: usize,
        out_ch: usize,
        k: usize,
        stride: usize,
        pad: Pad,
    ) -> Op {
        Op::Conv {
            weight: weight.to_string(),
            bn: None,
            bn_eps: 1e-5,
            in_ch,
            out_ch,
            kernel: (k, k),
            stride: (stride, stride),
            pad,
            dilation: (1, 1),
            groups: 1,
            bias: false,
            act: Act::None,
        }
    }

    pub fn with_bias(mut self) -> Op {
        if let Op::Conv { bias, .. } = &mut self {
            *bias = true;
        }
        self
    }

    pub fn with_bn(mut self, prefix: &str, eps: f32) -> Op {
        if let Op::Conv { bn, bn_eps, .. } = &mut self {
            *bn = Some(prefix.to_string());
            *bn_eps = eps;
        }
        self
    }

    pub fn with_act(mut self, a: Act) -> Op {
        match &mut self {
            Op::Conv { act, .. } | Op::Linear { act, .. } | Op::Add { act } => *act = a,
            _ => {}
        }
        self
    }

    pub fn with_dilation(mut self, d: usize) -> Op {
        if let Op::Conv { dilation, .. } = &mut self {
            *dilation = (d, d);
        }
        self
    }

    pub fn with_groups(mut self, g: usize) -> Op {
        if let Op::Conv { groups, .. } = &mut self {
            *groups = g;
        }
        self
    }

    /// Short human description (`conv3x3/s2 32->64`).
    pub fn describe(&self) -> String {
        match self {
            Op::Input => "input".into(),
            Op::Conv {
                in_ch,
                out_ch,
                kernel,
                stride,
                groups,
                dilation,
                act,
                ..
            } => {
                let mut s = format!(
                    "conv{}x{}/s{} {}->{}",
                    kernel.0, kernel.1, stride.0, in_ch, out_ch
                );
                if *groups == *in_ch && *groups > 1 {
                    s.push_str(" depthwise");
                } else if *groups > 1 {
                    s.push_str(&format!(" groups={groups}"));
                }
                if dilation.0 > 1 {
                    s.push_str(&format!(" dil={}", dilation.0));
                }
                s + act_suffix(*act)
            }
            Op::MaxPool { kernel, stride, .. } => {
                format!("maxpool{}x{}/s{}", kernel.0, kernel.1, stride.0)
            }
            Op::AdaptiveAvgPool { out } => format!("avgpool->{}x{}", out.0, out.1),
            Op::AvgPool { kernel, stride, .. } => {
                format!("avgpool{}x{}/s{}", kernel.0, kernel.1, stride.0)
            }
            Op::Add { act } => format!("add{}", act_suffix(*act)),
            Op::Concat => "concat".into(),
            Op::Unary { f } => f.name().into(),
            Op::Shuffle { groups } => format!("shuffle/{groups}"),
            Op::Slice { from, to } => format!("channels {from}..{to}"),
            Op::Mul => "mul".into(),
            Op::Binary { f } => format!("{} (broadcast)", f.name()),
            Op::ChannelMean => "channel mean".into(),
            Op::LayerNorm { .. } => "layernorm (channels)".into(),
            Op::Softmax => "softmax".into(),
            Op::Flatten => "flatten".into(),
            Op::Linear {
                in_f, out_f, act, ..
            } => format!("linear {in_f}->{out_f}{}", act_suffix(*act)),
        }
    }
}

fn act_suffix(a: Act) -> &'static str {
    match a {
        Act::None => "",
        Act::Relu => " +relu",
        Act::Relu6 => " +relu6",
    }
}

/// Output side of a conv or pool along one axis (torch semantics).
pub(crate) fn out_len(
    len: usize,
    k: usize,
    s: usize,
    before: usize,
    after: usize,
    d: usize,
    ceil: bool,
) -> usize {
    let span = d * (k - 1) + 1;
    let padded = len + before + after;
    if padded < span {
        return 0;
    }
    let num = padded - span;
    let mut out = if ceil { num.div_ceil(s) } else { num / s } + 1;
    // torch: with ceil_mode the last window must start inside the input or left padding.
    if ceil && (out - 1) * s >= len + before {
        out -= 1;
    }
    out
}

/// Builds an `Arch` node by node; each `push` returns the new node's index.
pub struct Builder {
    nodes: Vec<Node>,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    pub fn new() -> Builder {
        Builder {
            nodes: vec![Node::input()],
        }
    }

    pub fn last(&self) -> usize {
        self.nodes.len() - 1
    }

    /// Appends a tap node reading `inputs`.
    pub fn push(&mut self, name: &str, op: Op, inputs: &[usize]) -> usize {
        self.nodes.push(Node {
            name: name.to_string(),
            aliases: vec![],
            op,
            inputs: inputs.to_vec(),
            tap: true,
        });
        self.last()
    }

    /// Appends a node reading the previous one.
    pub fn then(&mut self, name: &str, op: Op) -> usize {
        let prev = self.last();
        self.push(name, op, &[prev])
    }

    /// Adds alternative names for node `i`.
    pub fn alias(&mut self, i: usize, names: &[&str]) {
        self.nodes[i]
            .aliases
            .extend(names.iter().map(|s| s.to_string()));
    }

    pub fn hide(&mut self, i: usize) {
        self.nodes[i].tap = false;
    }

    pub fn finish(
        self,
        name: &str,
        description: &str,
        recipe: Recipe,
        default_layers: &[&str],
    ) -> Arch {
        let classes = match &self.nodes.last().expect("nodes").op {
            Op::Linear { out_f, .. } => *out_f,
            _ => 0,
        };
        let arch = Arch {
            name: name.to_string(),
            description: description.to_string(),
            recipe,
            nodes: self.nodes,
            default_layers: default_layers.iter().map(|s| s.to_string()).collect(),
            classes,
            unsupported: None,
        };
        for l in &arch.default_layers {
            assert!(
                arch.find(l).is_some(),
                "{name}: default layer {l} does not exist"
            );
        }
        arch
    }
}

impl Arch {
    /// Node index by name or alias; `logits` names the last node (the one before it
    /// when the graph ends in a Softmax: its input are the logits).
    pub fn find(&self, name: &str) -> Option<usize> {
        if name == "logits" {
            let last = self.nodes.len() - 1;
            return Some(
                match (&self.nodes[last].op, self.nodes[last].inputs.first()) {
                    (Op::Softmax, Some(&before)) => before,
                    _ => last,
                },
            );
        }
        self.nodes
            .iter()
            .position(|n| n.name == name || n.aliases.iter().any(|a| a == name))
    }

    pub fn resolve(&self, name: &str) -> Result<usize> {
        if let Some(why) = &self.unsupported {
            if name == "logits" || self.find(name).is_none() {
                return Err(Error::Shape(format!(
                    "{}: {name:?} is not among the layers before the graph's {why}",
                    self.name
                )));
            }
        }
        self.find(name)
            .filter(|&i| self.nodes[i].tap)
            .ok_or_else(|| Error::UnknownLayer {
                model: self.name.clone(),
                layer: name.to_string(),
            })
    }

    /// The tap name (or alias) closest to a misspelt `name`, when it is a small edit
    /// away (`blocks.99` -> `blocks.9`); ties go to the earlier layer.
    pub fn closest_tap(&self, name: &str) -> Option<&str> {
        let most = (name.chars().count() / 3).max(1);
        self.taps()
            .into_iter()
            .flat_map(|i| std::iter::once(&self.nodes[i].name).chain(&self.nodes[i].aliases))
            .map(|cand| (edit_distance(name, cand), cand.as_str()))
            .filter(|&(d, _)| d <= most)
            .min_by_key(|&(d, _)| d)
            .map(|(_, cand)| cand)
    }

    /// The nodes `--layers` names, in network order without repeats: `all` for every
    /// tap, `None` for the model's default spread; names trimmed (`a, b`).
    pub fn layer_nodes(&self, names: Option<&[String]>) -> Result<Vec<usize>> {
        let mut nodes: Vec<usize> = match names {
            Some([one]) if one.trim() == "all" => self.taps(),
            Some(names) => names
                .iter()
                .map(|n| self.resolve(n.trim()))
                .collect::<Result<_>>()?,
            None => self
                .default_layers
                .iter()
                .map(|n| self.resolve(n))
                .collect::<Result<_>>()?,
        };
        nodes.sort_unstable();
        nodes.dedup();
        Ok(nodes)
    }

    /// Indices of the nodes users may inspect, in network order.
    pub fn taps(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].tap)
            .collect()
    }

    /// Tensors the weights file must hold, with torch shapes (BatchNorm's
    /// `num_batches_tracked` counters are not used and not listed).
    pub fn parameters(&self) -> Vec<(String, Vec<usize>)> {
        let mut out = Vec::new();
        for node in &self.nodes {
            match &node.op {
                Op::Conv {
                    weight,
                    bn,
                    in_ch,
                    out_ch,
                    kernel,
                    groups,
                    bias,
                    ..
                } => {
                    out.push((
                        format!("{weight}.weight"),
                        vec![*out_ch, in_ch / groups, kernel.0, kernel.1],
                    ));
                    if *bias {
                        out.push((format!("{weight}.bias"), vec![*out_ch]));
                    }
                    if let Some(bn) = bn {
                        for p in ["weight", "bias", "running_mean", "running_var"] {
                            out.push((format!("{bn}.{p}"), vec![*out_ch]));
                        }
                    }
                }
                Op::Linear {
                    weight,
                    in_f,
                    out_f,
                    ..
                } => {
                    out.push((format!("{weight}.weight"), vec![*out_f, *in_f]));
                    out.push((format!("{weight}.bias"), vec![*out_f]));
                }
                Op::LayerNorm {
                    weight, channels, ..
                } => {
                    out.push((format!("{weight}.weight"), vec![*channels]));
                    out.push((format!("{weight}.bias"), vec![*channels]));
                }
                _ => {}
            }
        }
        out
    }

    /// (C, H, W) of every node at the recipe's input size; flat outputs are (F, 1, 1).
    pub fn output_shapes(&self) -> Vec<[usize; 3]> {
        let s = self.recipe.size as usize;
        self.shapes_for(s, s)
    }

    pub fn shapes_for(&self, h: usize, w: usize) -> Vec<[usize; 3]> {
        let mut shapes: Vec<[usize; 3]> = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let inp = node.inputs.first().map(|&i| shapes[i]).unwrap_or([3, h, w]);
            let [c, h, w] = inp;
            let shape = match &node.op {
                Op::Input => [3, h, w],
                Op::Conv {
                    out_ch,
                    kernel,
                    stride,
                    pad,
                    dilation,
                    ..
                } => [
                    *out_ch,
                    out_len(
                        h, kernel.0, stride.0, pad.top, pad.bottom, dilation.0, false,
                    ),
                    out_len(
                        w, kernel.1, stride.1, pad.left, pad.right, dilation.1, false,
                    ),
                ],
                Op::MaxPool {
                    kernel,
                    stride,
                    pad,
                    ceil_mode,
                } => [
                    c,
                    out_len(h, kernel.0, stride.0, pad.top, pad.bottom, 1, *ceil_mode),
                    out_len(w, kernel.1, stride.1, pad.left, pad.right, 1, *ceil_mode),
                ],
                Op::AdaptiveAvgPool { out } => [c, out.0, out.1],
                Op::AvgPool {
                    kernel,
                    stride,
                    pad,
                    ..
                } => [
                    c,
                    out_len(h, kernel.0, stride.0, pad.top, pad.bottom, 1, false),
                    out_len(w, kernel.1, stride.1, pad.left, pad.right, 1, false),
                ],
                Op::Add { .. } => inp,
                Op::Concat => [node.inputs.iter().map(|&i| shapes[i][0]).sum(), h, w],
                Op::Unary { .. } | Op::Shuffle { .. } => inp,
                Op::Slice { from, to } => [to - from, h, w],
                // A gate [C, 1, 1] takes the map's shape.
                Op::Mul => node
                    .inputs
                    .iter()
                    .map(|&i| shapes[i])
                    .max_by_key(|s| s[1] * s[2])
                    .unwrap_or(inp),
                Op::Binary { .. } => {
                    let [a, b] = [shapes[node.inputs[0]], shapes[node.inputs[1]]];
                    [a[0].max(b[0]), a[1].max(b[1]), a[2].max(b[2])]
                }
                Op::ChannelMean => [1, h, w],
                Op::LayerNorm { .. } | Op::Softmax => inp,
                Op::Flatten => [c * h * w, 1, 1],
                Op::Linear { out_f, .. } => [*out_f, 1, 1],
            };
            shapes.push(shape);
        }
        shapes
    }
}

/// Levenshtein distance over characters: insertions, deletions, substitutions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let sub = diag + usize::from(ca != cb);
            diag = row[j + 1];
            row[j + 1] = sub.min(row[j] + 1).min(diag + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_character_edits() {
        assert_eq!(edit_distance("blocks.99", "blocks.9"), 1);
        assert_eq!(edit_distance("stme", "stem"), 2);
        assert_eq!(edit_distance("", "head"), 4);
        assert_eq!(edit_distance("head", "head"), 0);
    }

    #[test]
    fn a_misspelt_layer_gets_the_nearest_tap_and_nonsense_gets_none() {
        let a = by_name("efficientnet-lite0").unwrap();
        assert_eq!(a.closest_tap("blocks.99"), Some("blocks.9"));
        assert_eq!(a.closest_tap("Head"), Some("head"));
        assert_eq!(a.closest_tap("blocks.13.dww"), Some("blocks.13.dw"));
        assert_eq!(a.closest_tap("classifier"), None);
    }

    #[test]
    fn out_len_matches_torch_formulas() {
        // AlexNet conv1: 224, k11 s4 p2 -> 55; maxpool k3 s2 -> 27.
        assert_eq!(out_len(224, 11, 4, 2, 2, 1, false), 55);
        assert_eq!(out_len(55, 3, 2, 0, 0, 1, false), 27);
        // ceil_mode: 6, k3 s2 -> floor 2, ceil 3 (last window starts at 4 < 6).
        assert_eq!(out_len(6, 3, 2, 0, 0, 1, false), 2);
        assert_eq!(out_len(6, 3, 2, 0, 0, 1, true), 3);
        // ceil_mode window that would start in the right padding is dropped: 5, k2 s2 p1.
        assert_eq!(out_len(5, 2, 2, 1, 1, 1, true), 3);
        // TF SAME stride 2 on 224: pads (0,1) -> 112.
        assert_eq!(out_len(224, 3, 2, 0, 1, 1, false), 112);
        // dilation 2, k3 -> span 5.
        assert_eq!(out_len(10, 3, 1, 0, 0, 2, false), 6);
        // kernel larger than the padded input gives an empty output.
        assert_eq!(out_len(2, 5, 1, 1, 1, 1, false), 0);
    }
}
