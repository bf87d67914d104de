//! ONNX graphs into the architecture description the built-ins use (`arch::Arch`) and
//! the weights it names, so that receptive fields, taps, layouts and kernels apply to
//! an exported network unchanged.
//!
//! Nodes are read in the file's (topological) order. Convolutions, pooling, residual
//! sums, channel concatenations, splits and shuffles, elementwise functions and
//! products (squeeze-and-excitation gates), flattening and fully connected layers
//! become `arch::Op`s. A BatchNormalization right after a convolution is folded into
//! it (elsewhere it is a depthwise 1x1 scale and shift), a Relu or Clip(0, 6) after a
//! layer becomes that layer's activation, and a Pad of zeros becomes the padding of
//! the conv or pool that reads it. Initializers, `Constant`s and the shape arithmetic
//! torch exports (Shape, Gather, Unsqueeze, Concat, Add/Sub/Mul/Div feeding Reshape or
//! Slice) are evaluated here for the file's fixed input size. Tap names are the module
//! paths in the node names torch writes: `/layer4/layer4.1/relu_1/Relu` is in module
//! `layer4.1`, and every module path names the last layer inside it.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use onnx_rs::ast::{DataLocation, DataType, Node as NodeProto, TensorProto, ValueInfo};

use crate::arch::{Act, Arch, Binary, Node, Op, Pad, Unary};
use crate::{Error, Result};

mod fold;

/// Larger model files are refused before reading (weights over 4 GB are external data).
const MAX_FILE: u64 = 4 << 30;

/// An imported network: its description and the weights the description names.
pub struct Imported {
    pub arch: Arch,
    pub tensors: HashMap<String, Tensor>,
    /// sha256 of the file, hex: the weights' identity.
    pub sha256: String,
}

/// A value of the graph while converting: a layer's output, or a constant.
#[derive(Clone, Debug)]
enum Value {
    /// Output of arch node `node`, `[c, h, w]` per image (`[f, 1, 1]` after flattening).
    Layer { node: usize, shape: [usize; 3] },
    /// A layer's output with zeros around it (a Pad), for the convolution or average
    /// pool that reads it to take as its own padding.
    Padded {
        node: usize,
        shape: [usize; 3],
        pad: Pad,
    },
    /// A layer's output reshaped to [batch, groups, C / groups, H, W], and (`swapped`)
    /// those two axes transposed: the first steps of a channel shuffle.
    Grouped {
        node: usize,
        shape: [usize; 3],
        groups: usize,
        swapped: bool,
    },
    /// A layer's output seen channels-last, [N, H, W, C], after a Transpose
    /// [0, 2, 3, 1] (ConvNeXt's blocks): the data stays channels-first, and operators
    /// on the last axis (LayerNorm, MatMul, ReduceMean) act on the channels.
    Permuted { node: usize, shape: [usize; 3] },
    /// Made by a node neurodex cannot run (or from one): nodes reading it are left out,
    /// and the error names the first.
    Missing,
    /// A constant (initializer, `Constant`, or folded shape arithmetic).
    Const(Constant),
}

/// A map input of an operator: a layer's output and the layout the graph sees it in.
#[derive(Clone, Copy, Debug)]
struct Map {
    node: usize,
    shape: [usize; 3],
    nhwc: bool,
}

enum Operand {
    Map(Map),
    Const(Constant),
}

#[derive(Clone, Debug)]
struct Constant {
    dims: Vec<usize>,
    data: Data,
}

#[derive(Clone, Debug)]
enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl Constant {
    fn ints(&self) -> Vec<i64> {
        match &self.data {
            Data::I64(v) => v.clone(),
            Data::F32(v) => v.iter().map(|&x| x as i64).collect(),
        }
    }

    fn floats(&self) -> Vec<f32> {
        match &self.data {
            Data::F32(v) => v.clone(),
            Data::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    fn scalar(&self) -> Option<f32> {
        let f = self.floats();
        (f.len() == 1).then(|| f[0])
    }
}

/// Reads an ONNX file (and the external-data files beside it) into a network
/// description named `name` and its weights.
pub fn load(path: &Path) -> Result<Imported> {
    import(path, true)
}

/// The description alone (no weight tensors made), to name layers and fields.
pub fn describe(path: &Path) -> Result<Arch> {
    Ok(import(path, false)?.arch)
}

fn import(path: &Path, weights: bool) -> Result<Imported> {
    let bad = |reason: String| Error::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > MAX_FILE {
        return Err(bad(format!(
            "{} bytes is more than an ONNX file holds ({} at most; larger weights are external data)",
            meta.len(),
            MAX_FILE
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let model = onnx_rs::parse(&bytes).map_err(|e| bad(format!("not an ONNX model ({e})")))?;
    let Some(graph) = model.graph.as_ref() else {
        return Err(bad("not an ONNX model: it has no graph".into()));
    };
    if graph.node.is_empty() {
        return Err(bad("not an ONNX model: its graph has no nodes".into()));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut values: HashMap<String, Value> = HashMap::new();
    for t in &graph.initializer {
        let c = constant(t, dir).map_err(|e| bad(format!("initializer {}: {e}", t.name())))?;
        values.insert(t.name().to_string(), Value::Const(c));
    }
    // The image input: the first graph input that is not an initializer.
    let input = graph
        .input
        .iter()
        .find(|i| !values.contains_key(i.name))
        .ok_or_else(|| bad("the graph has no input".into()))?;
    let dims = input_dims(input).map_err(|e| bad(format!("input {}: {e}", input.name)))?;
    let (c, h, w) = (dims[1], dims[2], dims[3]);
    if c != 3 {
        return Err(bad(format!(
            "input {} has {c} channels; neurodex feeds RGB images (3)",
            input.name
        )));
    }
    // The model is named by its file, absolute, so that an index built with it finds
    // it again from any folder (heat maps, the gallery, serve).
    let name = std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .to_string_lossy()
        .into_owned();
    let opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map_or(13, |o| o.version);
    let mut b = Builder {
        opset,
        nodes: vec![Node::input()],
        paths: vec![vec![]],
        tensors: HashMap::new(),
        weights,
        values,
        readers: readers(&graph.node),
        batch: dims[0],
    };
    b.values.insert(
        input.name.to_string(),
        Value::Layer {
            node: 0,
            shape: [c, h, w],
        },
    );
    let fused = fusions(&graph.node, &b.values, dir);
    let mut unsupported: Vec<(String, String)> = Vec::new();
    for (idx, n) in graph.node.iter().enumerate() {
        match fused.get(&idx) {
            Some(Fused::Skip) => continue,
            Some(f) => {
                b.fused(n, f).map_err(|why| {
                    bad(format!("node {} ({}): {why}", n.name, n.op_type.as_str()))
                })?;
                continue;
            }
            None => {}
        }
        // Downstream of a node that cannot run: named only if its own operator is
        // outside the list too.
        if n.input
            .iter()
            .any(|i| matches!(b.values.get(*i), Some(Value::Missing)))
        {
            if !KNOWN.contains(&n.op_type.as_str()) {
                unsupported.push((n.op_type.as_str().to_string(), n.name.to_string()));
            }
            for out in &n.output {
                b.values.insert(out.to_string(), Value::Missing);
            }
            continue;
        }
        match b.node(n) {
            Ok(()) => {}
            Err(Unsupported::Op) => {
                unsupported.push((n.op_type.as_str().to_string(), n.name.to_string()));
                for out in &n.output {
                    b.values.insert(out.to_string(), Value::Missing);
                }
            }
            Err(Unsupported::Because(why)) => {
                return Err(bad(format!(
                    "node {} ({}): {why}",
                    n.name,
                    n.op_type.as_str()
                )))
            }
        }
    }
    let mut missing = None;
    if !unsupported.is_empty() {
        let mut by_op: Vec<(String, Vec<String>)> = Vec::new();
        for (op, node) in unsupported {
            match by_op.iter_mut().find(|(o, _)| *o == op) {
                Some((_, nodes)) => nodes.push(node),
                None => by_op.push((op, vec![node])),
            }
        }
        let list: Vec<String> = by_op
            .iter()
            .map(|(op, nodes)| {
                let shown: Vec<&str> = nodes.iter().take(3).map(String::as_str).collect();
                let more = if nodes.len() > 3 {
                    format!(" and {} more", nodes.len() - 3)
                } else {
                    String::new()
                };
                format!("{op} (nodes {}{more})", shown.join(", "))
            })
            .collect();
        let why = format!("operators neurodex cannot run yet: {}", list.join("; "));
        // The layers before them run; only asking for one past them is an error
        // (`Arch::resolve`).
        if b.nodes.len() <= 1 {
            return Err(bad(why));
        }
        missing = Some(why);
    }
    // A trailing Softmax turns the logits into probabilities; the classes are still
    // the Linear's outputs (`Arch::find("logits")` names it).
    let logits = match b.nodes.last() {
        Some(Node {
            op: Op::Softmax,
            inputs,
            ..
        }) => inputs.first().map(|&i| &b.nodes[i]),
        last => last,
    };
    let classes = match logits.map(|n| &n.op) {
        Some(Op::Linear { out_f, .. }) => *out_f,
        _ => 0,
    };
    let mut nodes = b.nodes;
    name_taps(&mut nodes, &b.paths);
    let default_layers = default_layers(&nodes);
    Ok(Imported {
        arch: Arch {
            name: name.clone(),
            description: format!("imported from ONNX ({} layers)", nodes.len() - 1),
            // torchvision's evaluation transform, the usual one for exported models
            // (`--preprocess` chooses another).
            recipe: crate::arch::recipes::preset("torchvision", h as u32)?,
            nodes,
            default_layers,
            classes,
            unsupported: missing,
        },
        tensors: b.tensors,
        sha256: if weights {
            use sha2::{Digest, Sha256};
            Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        } else {
            String::new()
        },
    })
}

/// The operators `Builder::node` converts.
const KNOWN: &[&str] = &[
    "Conv",
    "BatchNormalization",
    "Relu",
    "Clip",
    "MaxPool",
    "GlobalAveragePool",
    "AveragePool",
    "Add",
    "Flatten",
    "Reshape",
    "Gemm",
    "Dropout",
    "Identity",
    "Constant",
    "Shape",
    "Gather",
    "Unsqueeze",
    "Squeeze",
    "Cast",
    "ConstantOfShape",
    "Concat",
    "Pad",
    "Sigmoid",
    "HardSigmoid",
    "HardSwish",
    "Mul",
    "Sub",
    "Div",
    "Transpose",
    "Slice",
    "ReduceMean",
    "Pow",
    "Sqrt",
    "Erf",
    "LeakyRelu",
    "LayerNormalization",
    "MatMul",
    "Softmax",
    "Split",
];

/// Why a node could not be converted.
enum Unsupported {
    /// An operator outside the list: collected, and all named at the end.
    Op,
    /// A known operator used in a way neurodex cannot run.
    Because(String),
}

impl From<String> for Unsupported {
    fn from(s: String) -> Unsupported {
        Unsupported::Because(s)
    }
}

impl From<&str> for Unsupported {
    fn from(s: &str) -> Unsupported {
        Unsupported::Because(s.to_string())
    }
}

struct Builder {
    nodes: Vec<Node>,
    /// Each node's module paths (from the ONNX node names): its own, then those of the
    /// nodes folded into it (a BatchNorm, an activation).
    paths: Vec<Vec<String>>,
    tensors: HashMap<String, Tensor>,
    values: HashMap<String, Value>,
    /// How many nodes read each tensor (graph outputs count once).
    readers: HashMap<String, usize>,
    /// The batch size the file was exported with (shape arithmetic sees it).
    batch: usize,
    /// Whether to make the weight tensors (not for `describe`).
    weights: bool,
    /// The default ONNX domain's opset (Softmax's meaning changed at 13).
    opset: i64,
}

fn readers(nodes: &[NodeProto]) -> HashMap<String, usize> {
    let mut r = HashMap::new();
    for n in nodes {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            *r.entry(i.to_string()).or_insert(0) += 1;
        }
    }
    r
}

impl Builder {
    fn value(&self, name: &str) -> std::result::Result<&Value, String> {
        self.values
            .get(name)
            .ok_or_else(|| format!("reads {name:?}, which nothing before it makes"))
    }

    fn layer_input(
        &self,
        n: &NodeProto,
        k: usize,
    ) -> std::result::Result<(usize, [usize; 3]), String> {
        let name = n.input.get(k).ok_or_else(|| format!("has no input {k}"))?;
        match self.value(name)? {
            Value::Layer { node, shape } => Ok((*node, *shape)),
            Value::Const(_) => Err(format!("input {name} is a constant, not a layer's output")),
            Value::Missing => Err(format!("input {name} comes from a node that cannot run")),
            Value::Grouped { .. } => Err(format!(
                "input {name} is a layer's output regrouped for a channel shuffle, which \
                 only the shuffle's last Reshape can take"
            )),
            Value::Padded { .. } => Err(format!(
                "input {name} is padded (a Pad), which only a convolution or an average pool \
                 can take"
            )),
            Value::Permuted { .. } => Err(format!(
                "input {name} is channels-last (a Transpose), which only elementwise \
                 operators, LayerNormalization, ReduceMean, MatMul and Softmax read"
            )),
        }
    }

    /// Input `k` of an elementwise operator: a map in either layout, or a constant.
    fn operand(&self, n: &NodeProto, k: usize) -> std::result::Result<Operand, String> {
        let name = n.input.get(k).ok_or_else(|| format!("has no input {k}"))?;
        match self.value(name)? {
            // `layer_input` says why a padded or grouped map cannot be read here.
            Value::Padded { .. } | Value::Grouped { .. } | Value::Missing => {
                self.layer_input(n, k).map(|_| unreachable!("not a map"))
            }
            _ => self.operand_named(name),
        }
    }

    /// Input `k` as a map in either layout.
    fn map_input(&self, n: &NodeProto, k: usize) -> std::result::Result<Map, String> {
        match self.operand(n, k)? {
            Operand::Map(m) => Ok(m),
            Operand::Const(_) => Err(format!(
                "input {} is a constant, not a layer's output",
                n.input[k]
            )),
        }
    }

    /// A node of the graph whose output keeps the layout of its input map.
    fn push_map(
        &mut self,
        n: &NodeProto,
        op: Op,
        inputs: Vec<usize>,
        shape: [usize; 3],
        nhwc: bool,
    ) -> usize {
        let idx = self.push(n, op, inputs, shape);
        if nhwc {
            self.set(n, Value::Permuted { node: idx, shape });
        }
        idx
    }

    fn set_map(&mut self, n: &NodeProto, m: Map) {
        let (node, shape) = (m.node, m.shape);
        let v = if m.nhwc {
            Value::Permuted { node, shape }
        } else {
            Value::Layer { node, shape }
        };
        self.set(n, v);
    }

    /// Whether at most one graph node reads arch node `node`'s output (under any of
    /// the names it has: a Transpose or an Identity gives it another), so that what
    /// reads it can be folded into it.
    fn sole_reader(&self, node: usize) -> bool {
        let refers = |v: &Value| match v {
            Value::Layer { node: j, .. }
            | Value::Permuted { node: j, .. }
            | Value::Padded { node: j, .. }
            | Value::Grouped { node: j, .. } => *j == node,
            Value::Missing | Value::Const(_) => false,
        };
        let reads: usize = self
            .values
            .iter()
            .filter(|(_, v)| refers(v))
            .map(|(name, _)| self.readers.get(name).copied().unwrap_or(0))
            .sum();
        reads <= 1
    }

    fn constant(&self, n: &NodeProto, k: usize) -> std::result::Result<Option<Constant>, String> {
        match n.input.get(k).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(name) => match self.value(name)? {
                Value::Const(c) => Ok(Some(c.clone())),
                Value::Layer { .. }
                | Value::Permuted { .. }
                | Value::Missing
                | Value::Padded { .. }
                | Value::Grouped { .. } => Err(format!("input {name} must be a constant")),
            },
        }
    }

    fn push(&mut self, n: &NodeProto, op: Op, inputs: Vec<usize>, shape: [usize; 3]) -> usize {
        let idx = self.nodes.len();
        self.nodes.push(Node {
            name: String::new(),
            aliases: vec![],
            op,
            inputs,
            tap: true,
        });
        self.paths.push(vec![module_path(n.name)]);
        self.set(n, Value::Layer { node: idx, shape });
        idx
    }

    fn set(&mut self, n: &NodeProto, v: Value) {
        if let Some(out) = n.output.first() {
            self.values.insert(out.to_string(), v);
        }
    }

    fn tensor(
        &mut self,
        name: String,
        dims: &[usize],
        data: Vec<f32>,
    ) -> std::result::Result<(), String> {
        if !self.weights {
            return Ok(());
        }
        let t = Tensor::from_vec(data, dims, &Device::Cpu).map_err(|e| e.to_string())?;
        self.tensors.insert(name, t);
        Ok(())
    }

    /// Whether the output of `n` (a layer's) is read by one node only, so that what
    /// follows can be folded into it.
    fn single_reader(&self, tensor: &str) -> bool {
        self.readers.get(tensor).copied().unwrap_or(0) <= 1
    }

    fn node(&mut self, n: &NodeProto) -> std::result::Result<(), Unsupported> {
        let op = n.op_type.as_str();
        if fold::FOLDED.contains(&op)
            && n.input
                .iter()
                .all(|i| i.is_empty() || matches!(self.values.get(*i), Some(Value::Const(_))))
        {
            let inputs: Vec<Option<Constant>> = (0..n.input.len())
                .map(|k| self.constant(n, k))
                .collect::<std::result::Result<_, _>>()?;
            let c = fold::fold(n, &inputs)?;
            self.set(n, Value::Const(c));
            return Ok(());
        }
        match op {
            "Conv" => self.conv(n)?,
            "BatchNormalization" => self.batch_norm(n)?,
            "Relu" => match n.input.first().and_then(|i| self.values.get(*i)) {
                Some(Value::Permuted { .. }) => self.unary(n, Unary::LeakyRelu { alpha: 0.0 })?,
                _ => self.activation(n, Act::Relu)?,
            },
            "Clip" => {
                let (lo, hi) = clip_bounds(self, n)?;
                match (lo, hi) {
                    (0.0, 6.0) => self.activation(n, Act::Relu6)?,
                    (0.0, f32::INFINITY) => self.activation(n, Act::Relu)?,
                    _ => return Err(format!("Clip({lo}, {hi}) is not ReLU or ReLU6").into()),
                }
            }
            "MaxPool" => self.max_pool(n)?,
            "GlobalAveragePool" => {
                let (src, [c, _, _]) = self.layer_input(n, 0)?;
                self.push(n, Op::AdaptiveAvgPool { out: (1, 1) }, vec![src], [c, 1, 1]);
            }
            "AveragePool" => self.average_pool(n)?,
            "ReduceMean" => {
                // The mean over the map (x.mean([2, 3]), with or without kept axes) is
                // a global average pool; its [C, 1, 1] is also the flat [C]. The mean
                // over the channels (the last axis channels-last) is a channel mean.
                let m = self.map_input(n, 0)?;
                let axes = match self.constant(n, 1)? {
                    Some(a) => a.ints(),
                    None => attr_ints(n, "axes").unwrap_or_default(),
                };
                let channel_axis = if m.nhwc { [3, -1] } else { [1, -3] };
                if axes.len() == 1 && channel_axis.contains(&axes[0]) {
                    if attr_int(n, "keepdims").unwrap_or(1) == 0 {
                        return Err("ReduceMean over the channels without keepdims".into());
                    }
                    let [_, h, w] = m.shape;
                    self.push_map(n, Op::ChannelMean, vec![m.node], [1, h, w], m.nhwc);
                    return Ok(());
                }
                let (src, [c, _, _]) = self.layer_input(n, 0)?;
                let axes = match self.constant(n, 1)? {
                    Some(a) => a.ints(),
                    None => attr_ints(n, "axes").unwrap_or_default(),
                };
                let mut axes: Vec<i64> = axes
                    .iter()
                    .map(|&a| if a < 0 { a + 4 } else { a })
                    .collect();
                axes.sort_unstable();
                if axes != [2, 3] {
                    return Err(
                        format!("ReduceMean over axes {axes:?} (only the map, [2, 3])").into(),
                    );
                }
                self.push(n, Op::AdaptiveAvgPool { out: (1, 1) }, vec![src], [c, 1, 1]);
            }
            "Add" | "Sub" | "Mul" | "Div" if self.all_constant(n) => self.arithmetic(n)?,
            "Add" => self.elementwise(n, Binary::Add)?,
            "Sub" => self.elementwise(n, Binary::Sub)?,
            "Mul" => self.elementwise(n, Binary::Mul)?,
            "Div" => self.elementwise(n, Binary::Div)?,
            "Pow" => {
                let e = self.constant(n, 1)?.and_then(|c| c.scalar());
                match e {
                    Some(2.0) => self.unary(n, Unary::Square)?,
                    Some(0.5) => self.unary(n, Unary::Sqrt)?,
                    Some(1.0) => {
                        let m = self.map_input(n, 0)?;
                        self.set_map(n, m);
                    }
                    _ => {
                        return Err(
                            format!("Pow with exponent {e:?} (2, 0.5 and 1 are read)").into()
                        )
                    }
                }
            }
            "Sqrt" => self.unary(n, Unary::Sqrt)?,
            "Erf" => self.unary(n, Unary::Erf)?,
            "LeakyRelu" => {
                let alpha = n
                    .attribute
                    .iter()
                    .find(|a| a.name == "alpha")
                    .map_or(0.01, |a| a.f);
                self.unary(n, Unary::LeakyRelu { alpha })?
            }
            "LayerNormalization" => self.layer_norm(n)?,
            "MatMul" => self.matmul(n)?,
            "Softmax" => self.softmax(n)?,
            "Split" => self.split(n)?,
            "Transpose" => self.transpose(n)?,
            "Slice" => self.slice(n)?,
            "Flatten" => {
                let axis = attr_int(n, "axis").unwrap_or(1);
                if axis != 1 {
                    return Err(format!("Flatten axis {axis} (only 1 is supported)").into());
                }
                self.flatten(n)?
            }
            "Reshape" => self.reshape(n)?,
            "Gemm" => self.gemm(n)?,
            "Dropout" | "Identity" => {
                let v = self.value(n.input.first().copied().unwrap_or(""))?.clone();
                self.set(n, v);
            }
            "Constant" => {
                let t = n
                    .attribute
                    .iter()
                    .find(|a| a.name == "value")
                    .and_then(|a| a.t.as_ref())
                    .ok_or_else(|| "Constant without a tensor value".to_string())?;
                let c = constant(t, Path::new("."))?;
                self.set(n, Value::Const(c));
            }
            "Shape" => {
                let v = match self.value(n.input.first().copied().unwrap_or(""))? {
                    Value::Layer { shape, .. } if shape[1..] == [1, 1] && self.is_flat(n) => {
                        vec![self.batch as i64, shape[0] as i64]
                    }
                    Value::Layer { shape, .. } => vec![
                        self.batch as i64,
                        shape[0] as i64,
                        shape[1] as i64,
                        shape[2] as i64,
                    ],
                    Value::Permuted { shape, .. } => vec![
                        self.batch as i64,
                        shape[1] as i64,
                        shape[2] as i64,
                        shape[0] as i64,
                    ],
                    Value::Const(c) => c.dims.iter().map(|&d| d as i64).collect(),
                    Value::Missing | Value::Padded { .. } | Value::Grouped { .. } => {
                        return Err(Unsupported::Op)
                    }
                };
                self.set(n, ints(v));
            }
            "Gather" => {
                let data = self.constant(n, 0)?.ok_or("Gather without data")?;
                let idx = self.constant(n, 1)?.ok_or("Gather without indices")?;
                if data.dims.len() != 1 || attr_int(n, "axis").unwrap_or(0) != 0 {
                    return Err("Gather on a constant other than a 1-D shape"
                        .to_string()
                        .into());
                }
                let d = data.ints();
                let out: std::result::Result<Vec<i64>, String> = idx
                    .ints()
                    .iter()
                    .map(|&i| {
                        let j = if i < 0 { i + d.len() as i64 } else { i };
                        d.get(j as usize)
                            .copied()
                            .ok_or_else(|| format!("index {i} out of range"))
                    })
                    .collect();
                let out = out?;
                let dims = idx.dims.clone();
                self.set(
                    n,
                    Value::Const(Constant {
                        dims,
                        data: Data::I64(out),
                    }),
                );
            }
            "Unsqueeze" | "Squeeze" | "Cast" | "ConstantOfShape" => {
                return Err(
                    "on a layer's output (only shape arithmetic on constants is folded)"
                        .to_string()
                        .into(),
                )
            }
            "Concat" => {
                let layers = n
                    .input
                    .iter()
                    .any(|i| matches!(self.values.get(*i), Some(Value::Layer { .. })));
                if layers {
                    self.concat(n)?;
                } else {
                    let mut all = Vec::new();
                    for k in 0..n.input.len() {
                        all.extend(self.constant(n, k)?.ok_or("Concat of nothing")?.ints());
                    }
                    self.set(n, ints(all));
                }
            }
            "Pad" => self.pad(n)?,
            "Sigmoid" => self.unary(n, Unary::Sigmoid)?,
            "HardSigmoid" => {
                let attr = |name: &str, default: f32| {
                    n.attribute
                        .iter()
                        .find(|a| a.name == name)
                        .map_or(default, |a| a.f)
                };
                let f = Unary::HardSigmoid {
                    alpha: attr("alpha", 0.2),
                    beta: attr("beta", 0.5),
                };
                self.unary(n, f)?
            }
            "HardSwish" => self.unary(n, Unary::HardSwish)?,
            _ => return Err(Unsupported::Op),
        }
        Ok(())
    }

    /// A fused run of nodes (`fusions`), made at its last node `n`.
    fn fused(&mut self, n: &NodeProto, f: &Fused) -> std::result::Result<(), String> {
        let (x, op) = match f {
            Fused::Skip => return Ok(()),
            Fused::Gelu { x } | Fused::LayerNorm { x, .. } => (x, f),
        };
        let m = match self.value(x)? {
            Value::Missing => {
                for out in &n.output {
                    self.values.insert(out.to_string(), Value::Missing);
                }
                return Ok(());
            }
            _ => match self.operand_named(x)? {
                Operand::Map(m) => m,
                Operand::Const(_) => return Err(format!("input {x} is a constant")),
            },
        };
        match op {
            Fused::Gelu { .. } => {
                self.push_map(
                    n,
                    Op::Unary { f: Unary::Gelu },
                    vec![m.node],
                    m.shape,
                    m.nhwc,
                );
                Ok(())
            }
            Fused::LayerNorm {
                eps, gamma, beta, ..
            } => {
                if !m.nhwc && m.shape[1..] != [1, 1] {
                    return Err("a layer norm over the width of a channels-first map".into());
                }
                let c = m.shape[0];
                let get = |name: &Option<String>, default: f32| match name {
                    None => Ok(vec![default; c]),
                    Some(t) => match self.value(t)? {
                        Value::Const(k) if k.floats().len() == c => Ok(k.floats()),
                        Value::Const(k) if k.floats().len() == 1 => Ok(vec![k.floats()[0]; c]),
                        _ => Err(format!(
                            "layer norm term {t} is not one constant per channel"
                        )),
                    },
                };
                let (gamma, beta) = (get(gamma, 1.0)?, get(beta, 0.0)?);
                self.push_layer_norm(n, m, gamma, beta, *eps)
            }
            Fused::Skip => unreachable!(),
        }
    }

    /// Value `name` as an operand: a map in either layout, or a constant.
    fn operand_named(&self, name: &str) -> std::result::Result<Operand, String> {
        match self.value(name)? {
            Value::Layer { node, shape } => Ok(Operand::Map(Map {
                node: *node,
                shape: *shape,
                nhwc: false,
            })),
            Value::Permuted { node, shape } => Ok(Operand::Map(Map {
                node: *node,
                shape: *shape,
                nhwc: true,
            })),
            Value::Const(c) => Ok(Operand::Const(c.clone())),
            _ => Err(format!("input {name} cannot be read here")),
        }
    }

    /// Whether a Shape node reads an already flattened layer (shape [N, F]).
    fn is_flat(&self, n: &NodeProto) -> bool {
        match n.input.first().and_then(|i| self.values.get(*i)) {
            Some(Value::Layer { node, .. }) => {
                matches!(self.nodes[*node].op, Op::Flatten | Op::Linear { .. })
            }
            _ => false,
        }
    }

    /// Input `k` as a layer's output, with the zero padding a Pad before it added.
    fn padded_input(
        &self,
        n: &NodeProto,
        k: usize,
    ) -> std::result::Result<(usize, [usize; 3], Pad), String> {
        match n.input.get(k).and_then(|i| self.values.get(*i)) {
            Some(Value::Padded { node, shape, pad }) => Ok((*node, *shape, *pad)),
            _ => self
                .layer_input(n, k)
                .map(|(node, shape)| (node, shape, Pad::default())),
        }
    }

    fn conv(&mut self, n: &NodeProto) -> std::result::Result<(), String> {
        let (src, [c, h, w], extra) = self.padded_input(n, 0)?;
        let wt = self.constant(n, 1)?.ok_or("Conv without weights")?;
        let bias = self.constant(n, 2)?;
        if wt.dims.len() != 4 {
            return Err(format!(
                "Conv weights of rank {} (2-D convolutions only)",
                wt.dims.len()
            ));
        }
        let (out_ch, per_group, kh, kw) = (wt.dims[0], wt.dims[1], wt.dims[2], wt.dims[3]);
        let groups = attr_int(n, "group").unwrap_or(1).max(1) as usize;
        if out_ch == 0 || kh == 0 || kw == 0 || out_ch % groups != 0 {
            return Err(format!(
                "Conv weights of shape {:?} for {groups} groups",
                wt.dims
            ));
        }
        if per_group * groups != c {
            return Err(format!(
                "Conv reads {c} channels, but its weights take {per_group} x {groups} groups"
            ));
        }
        let stride = positive_pair(n, "strides")?;
        let dilation = positive_pair(n, "dilations")?;
        let pad = add_pads(pads(n, (h, w), (kh, kw), stride, dilation)?, extra);
        let prefix = format!("onnx{}", self.nodes.len());
        self.tensor(format!("{prefix}.weight"), &wt.dims, wt.floats())?;
        if let Some(b) = &bias {
            self.tensor(format!("{prefix}.bias"), &[out_ch], b.floats())?;
        }
        let geo = |len: usize, k: usize, s: usize, d: usize, before: usize, after: usize| {
            (len + before + after).saturating_sub(d * (k - 1) + 1) / s.max(1) + 1
        };
        let oh = geo(h, kh, stride.0, dilation.0, pad.top, pad.bottom);
        let ow = geo(w, kw, stride.1, dilation.1, pad.left, pad.right);
        let op = Op::Conv {
            weight: prefix,
            bn: None,
            bn_eps: 0.0,
            in_ch: c,
            out_ch,
            kernel: (kh, kw),
            stride,
            pad,
            dilation,
            groups,
            bias: bias.is_some(),
            act: Act::None,
        };
        self.push(n, op, vec![src], [out_ch, oh, ow]);
        Ok(())
    }

    /// Channel concatenation of layer outputs of one map size.
    fn concat(&mut self, n: &NodeProto) -> std::result::Result<(), String> {
        let axis = attr_int(n, "axis").unwrap_or(1);
        if axis != 1 && axis != -3 {
            return Err(format!("Concat on axis {axis} (only channels, 1)"));
        }
        let mut srcs = Vec::new();
        let mut shape = [0usize, 0, 0];
        for k in 0..n.input.len() {
            let (src, [c, h, w]) = self.layer_input(n, k)?;
            if k == 0 {
                shape = [0, h, w];
            } else if [h, w] != shape[1..] {
                return Err(format!(
                    "concatenates maps of sizes {:?} and {:?}",
                    &shape[1..],
                    [h, w]
                ));
            }
            shape[0] += c;
            srcs.push(src);
        }
        self.push(n, Op::Concat, srcs, shape);
        Ok(())
    }

    fn unary(&mut self, n: &NodeProto, f: Unary) -> std::result::Result<(), String> {
        let m = self.map_input(n, 0)?;
        self.push_map(n, Op::Unary { f }, vec![m.node], m.shape, m.nhwc);
        Ok(())
    }

    /// A Pad of zeros on no side is nothing (torch writes one before some pools).
    /// A Pad of zeros around the maps is left for the convolution or average pool
    /// that reads it; one that pads nothing is nothing.
    fn pad(&mut self, n: &NodeProto) -> std::result::Result<(), String> {
        let pads = match self.constant(n, 1)? {
            Some(c) => c.ints(),
            None => attr_ints(n, "pads").unwrap_or_default(),
        };
        if pads.iter().all(|&p| p == 0) {
            let v = self.value(n.input[0])?.clone();
            self.set(n, v);
            return Ok(());
        }
        let mode = n
            .attribute
            .iter()
            .find(|a| a.name == "mode")
            .map_or("constant".into(), |a| {
                String::from_utf8_lossy(a.s).into_owned()
            });
        let value = self.constant(n, 2)?.and_then(|c| c.scalar()).unwrap_or(0.0);
        let spatial = pads.len() == 8 && [pads[0], pads[1], pads[4], pads[5]] == [0; 4];
        if mode != "constant" || value != 0.0 || !spatial || pads.iter().any(|&p| p < 0) {
            return Err(format!(
                "Pad {pads:?} ({mode}, {value}): only zeros around the maps are read"
            ));
        }
        let (node, shape) = self.layer_input(n, 0)?;
        let pad = Pad {
            top: pads[2] as usize,
            left: pads[3] as usize,
            bottom: pads[6] as usize,
            right: pads[7] as usize,
        };
        self.set(n, Value::Padded { node, shape, pad });
        Ok(())
    }

    /// A BatchNormalization on anything but a convolution's sole output (DenseNet's
    /// pre-activation blocks) is a per-channel scale and shift: a depthwise 1x1
    /// convolution with those as weight and bias.
    fn scale_shift(
        &mut self,
        n: &NodeProto,
        src: usize,
        shape: [usize; 3],
    ) -> std::result::Result<(), String> {
        let c = shape[0];
        let eps = n
            .attribute
            .iter()
            .find(|a| a.name == "epsilon")
            .map_or(1e-5, |a| a.f) as f64;
        let mut p = Vec::new();
        for k in 1..=4 {
            let v = self
                .constant(n, k)?
                .ok_or("BatchNormalization without its parameters")?
                .floats();
            if v.len() != c {
                return Err(format!(
                    "BatchNormalization parameters for {} channels, not {c}",
                    v.len()
                ));
            }
            p.push(v);
        }
        let (gamma, beta, mean, var) = (&p[0], &p[1], &p[2], &p[3]);
        let scale: Vec<f32> = (0..c)
            .map(|k| (gamma[k] as f64 / (var[k] as f64 + eps).sqrt()) as f32)
            .collect();
        let shift: Vec<f32> = (0..c)
            .map(|k| (beta[k] as f64 - mean[k] as f64 * scale[k] as f64) as f32)
            .collect();
        let op = self.channel_affine(scale, shift)?;
        self.push(n, op, vec![src], shape);
        Ok(())
    }

    /// `x * scale + shift` per channel as a depthwise 1x1 convolution (its weights made
    /// here), which the kernels run and a following constant folds into.
    fn channel_affine(
        &mut self,
        scale: Vec<f32>,
        shift: Vec<f32>,
    ) -> std::result::Result<Op, String> {
        let c = scale.len();
        let prefix = format!("onnx{}", self.nodes.len());
        self.tensor(format!("{prefix}.weight"), &[c, 1, 1, 1], scale)?;
        self.tensor(format!("{prefix}.bias"), &[c], shift)?;
        Ok(Op::Conv {
            weight: prefix,
            bn: None,
            bn_eps: 0.0,
            in_ch: c,
            out_ch: c,
            kernel: (1, 1),
            stride: (1, 1),
            pad: Pad::default(),
            dilation: (1, 1),
            groups: c,
            bias: true,
            act: Act::None,
        })
    }

    fn batch_norm(&mut self, n: &NodeProto) -> std::result::Result<(), String> {
        let (src, shape) = self.layer_input(n, 0)?;
        let fold = self.single_reader(n.input[0])
            && matches!(
                &self.nodes[src].op,
                Op::Conv {
                    bn: None,
                    act: Act::None,
                    ..
                }
            );
        if !fold {
            return self.scale_shift(n, src, shape);
        }
        let eps = n
            .attribute
            .iter()
            .find(|a| a.name == "epsilon")
            .map_or(1e-5, |a| a.f);
        let prefix = format!("onnx{src}_bn");
        for (k, p) in ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .enumerate()
        {
            let c = self
                .constant(n, k + 1)?
                .ok_or("BatchNormalization without its parameters")?;
            self.tensor(format!("{prefix}.{p}"), &[shape[0]], c.floats())?;
        }
        if let Op::Conv { bn, bn_eps, .. } = &mut self.nodes[src].op {
            *bn = Some(prefix);
            *bn_eps = eps;
        }
        self.paths[src].push(module_path(n.name));
        self.set(n, Value::Layer { node: src, shape });
        Ok(())
    }

    /// An activation: folded into the layer before when that layer has none and
    /// nothing else reads it, else a layer of its own (a one-input sum).
    fn activation(&mut self, n: &NodeProto, act: Act) -> std::result::Result<(), String> {
        let (src, shape) = self.layer_input(n, 0)?;
        if self.single_reader(n.input[0]) {
            let slot = match &mut self.nodes[src].op {
                Op::Conv { act: a, .. } | Op::Add { act: a } | Op::Linear { act: a, .. } => Some(a),
                _ => None,
            };
            if let Some(a) = slot.filter(|a| **a == Act::None) {
                *a = act;
                self.paths[src].push(module_path(n.name));
                self.set(n, Value::Layer { node: src, shape });
                return Ok(());
            }
        }
        self.push(n, Op::Add { act }, vec![src], shape);
        Ok(())
    }

    fn max_pool(&mut self, n: &NodeProto) -> std::result::Result<(), String> {
        let (src, [c, h, w]) = self.layer_input(n, 0)?;
        let k = attr_ints(n, "kernel_shape").ok_or("MaxPool without kernel_shape")?;
        if k.len() != 2 {
            return Err("MaxPool other than 2-D".into());
        }
        if k.iter().any(|&x| x <= 0) {
            return Err(format!("MaxPool kernel {k:?}"));
        }
        let kernel = (k[0] as usize, k[1] as usize);
        let stride = positive_pair(n, "strides")?;
        if attr_ints(n, "dilations").is_some_and(|d| d.iter().any(|&x| x != 1)) {
            return Err("dilated MaxPool".into());
        }
        let pad = pads(n, (h, w), kernel, stride, (1, 1))?;
        let ceil_mode = attr_int(n, "ceil_mode").unwrap_or(0) != 0;
        let out = |len: usize, k: usize, s: usize, before: usize, after: usize| {
            let span = len + before + after - k;
            if ceil_mode {
                let o = span.div_ceil(s) + 1;
                // The last window must start inside the input or its left padding.
                if (o - 1) * s >= len + before {
                    o - 1
                } else {
                    o
                }
            } else {
                span / s + 1
            }
        };
        if h + pad.top + pad.bottom < kernel.0 || w + pad.left + pad.right < kernel.1 {
            return Err("MaxPool kernel larger than its input".into());
        }
        let shape = [
            c,
            out(h, kernel.0, stride.0, pad.top, pad.bottom),
            out(w, kernel.1, stride.1, pad.left, pad.right),
        ];
        let op = Op::MaxPool {
            kernel,
            stride,
            pad,
            ceil_mode,
        };
        self.push(n, op, vec![src], shape);
        Ok(())
    }

    /// An AveragePool whose windows tile the input exactly (no padding, kernel = stride,
    /// dividing the input) is an adaptive pool to the quotient.
    /// Average pooling; windows that tile the input exactly are an adaptive pool to
    /// the quotient. Zeros from a Pad before it count in the average.
    fn average_pool(&mut self, n: &NodeProto) -> std::result::Result<(), String> {
        let (src, [c, h, w], extra) = self.padded_input(n, 0)?;
        let k = attr_ints(n, "kernel_shape").ok_or("AveragePool without kernel_shape")?;
        if k.len() != 2 || k.iter().any(|&x| x <= 0) {
            return Err(format!("AveragePool kernel {k:?}"));
        }
        let s = attr_ints(n, "strides").unwrap_or_else(|| vec![1, 1]);
        let kernel = (k[0] as usize, k[1] as usize);
        let stride = (
            s[0].max(1) as usize,
            s.get(1).copied().unwrap_or(s[0]).max(1) as usize,
        );
        if attr_int(n, "ceil_mode").unwrap_or(0) != 0 {
            return Err("AveragePool with ceil_mode".into());
        }
        let own = pads(n, (h, w), kernel, stride, (1, 1))?;
        let include = attr_int(n, "count_include_pad").unwrap_or(0) != 0;
        let has = |p: Pad| p != Pad::default();
        if has(own) && has(extra) && !include {
            return Err("AveragePool padding its own and a Pad's cells differently".into());
        }
        let pad = add_pads(own, extra);
        let tiles = !has(pad) && kernel == stride && h % kernel.0 == 0 && w % kernel.1 == 0;
        if tiles {
            let out = (h / kernel.0, w / kernel.1);
            self.push(n, Op::AdaptiveAvgPool { out }, vec![src], [c, out.0, out.1]);
            return Ok(());
        }
        let ph = h + pad.top + pad.bottom;
        let pw = w + pad.left + pad.right;
        if ph < kernel.0 || pw < kernel.1 {
            return Err("AveragePool kernel larger than its input".into());
        }
        let shape = [
            c,
            (ph - kernel.0) / stride.0 + 1,
            (pw - kernel.1) / stride.1 + 1,
        ];
        let op = Op::AvgPool {
            kernel,
            stride,
            pad,
            count_include_pad: include || has(extra),
        };
        self.push(n, op, vec![src], shape);
        Ok(())
    }

    fn flatten(&mut self, n: &NodeProto) -> std::result::Result<(), String> {
        let (src, [c, h, w]) = self.layer_input(n, 0)?;
        if matches!(self.nodes[src].op, Op::Flatten | Op::Linear { .. }) {
            let v = self.value(n.input[0])?.clone();
            self.set(n, v);
            return Ok(());
        }
        let node = self.push(n, Op::Flatten, vec![src], [c * h * w, 1, 1]);
        // As for the built-ins: the same numbers as the layer before, not a view of its own.
        self.nodes[node].tap = false;
        Ok(())
    }

    /// A Reshape to [batch, rest] is a flattening; others are not supported yet.
    fn reshape(&mut self, n: &NodeProto) -> std::result::Result<(), String> {
        let target = self
            .constant(n, 1)?
            .ok_or("Reshape without a shape")?
            .ints();
        let batch = |d: i64| d == -1 || d == 0 || d == self.batch as i64;
        // A channel shuffle: [b, g, C/g, h, w], transposed, then back to [b, C, h, w].
        if let Some(Value::Grouped {
            node,
            shape,
            groups,
            swapped: true,
        }) = self.values.get(n.input[0]).cloned()
        {
            let [c, h, w] = shape;
            let back = target.len() == 4
                && batch(target[0])
                && (target[1] == c as i64 || target[1] == -1)
                && target[2..] == [h as i64, w as i64];
            if !back {
                return Err(format!("Reshape of a regrouped output to {target:?}"));
            }
            self.push(n, Op::Shuffle { groups }, vec![node], shape);
            return Ok(());
        }
        let (src, [c, h, w]) = self.layer_input(n, 0)?;
        if target.len() == 5 && batch(target[0]) && target[3..] == [h as i64, w as i64] {
            let (g, per) = (target[1], target[2]);
            if g > 0 && per > 0 && (g * per) as usize == c {
                let v = Value::Grouped {
                    node: src,
                    shape: [c, h, w],
                    groups: g as usize,
                    swapped: false,
                };
                self.set(n, v);
                return Ok(());
            }
        }
        let rest = (c * h * w) as i64;
        let flat = target.len() == 2
            && batch(target[0])
            && (target[1] == -1 || target[1] == rest)
            && !(target[0] == -1 && target[1] == -1);
        if !flat {
            return Err(format!(
                "Reshape to {target:?} (only flattening to [batch, {rest}])"
            ));
        }
        self.flatten(n)
    }

    /// The transpose of a channel shuffle ([b, g, C/g, h, w] -> [b, C/g, g, h, w]), or
    /// to channels-last and back (which moves no data here: the value is marked).
    fn transpose(&mut self, n: &NodeProto) -> std::result::Result<(), Unsupported> {
        let perm = attr_ints(n, "perm").unwrap_or_default();
        match self.values.get(n.input[0]).cloned() {
            Some(Value::Layer { node, shape }) if perm == [0, 2, 3, 1] => {
                self.set(n, Value::Permuted { node, shape });
                Ok(())
            }
            Some(Value::Permuted { node, shape }) if perm == [0, 3, 1, 2] => {
                self.set(n, Value::Layer { node, shape });
                Ok(())
            }
            // A map of one pixel, or flat: the same numbers in either order.
            Some(Value::Layer { node, shape }) if shape[1..] == [1, 1] && perm.len() == 2 => {
                self.set(n, Value::Layer { node, shape });
                Ok(())
            }
            Some(Value::Grouped {
                node,
                shape,
                groups,
                swapped: false,
            }) if perm == [0, 2, 1, 3, 4] => {
                let v = Value::Grouped {
                    node,
                    shape,
                    groups,
                    swapped: true,
                };
                self.set(n, v);
                Ok(())
            }
            _ => Err(Unsupported::Op),
        }
    }

    /// A Slice of channels (a split); the bounds are constants or folded arithmetic.
    fn slice(&mut self, n: &NodeProto) -> std::result::Result<(), String> {
        let (src, [c, h, w]) = self.layer_input(n, 0)?;
        let get = |k: usize| -> std::result::Result<Option<Vec<i64>>, String> {
            Ok(self.constant(n, k)?.map(|v| v.ints()))
        };
        let starts = get(1)?.ok_or("Slice without starts")?;
        let ends = get(2)?.ok_or("Slice without ends")?;
        let axes = get(3)?.unwrap_or_else(|| (0..starts.len() as i64).collect());
        let steps = get(4)?.unwrap_or_else(|| vec![1; starts.len()]);
        if axes.len() != 1 || !(axes[0] == 1 || axes[0] == -3) || steps != [1] {
            return Err(format!(
                "Slice on axes {axes:?} with steps {steps:?} (only channels)"
            ));
        }
        let clamp = |v: i64| {
            let v = if v < 0 { v + c as i64 } else { v };
            v.clamp(0, c as i64) as usize
        };
        let (from, to) = (clamp(starts[0]), clamp(ends[0]));
        if from >= to {
            return Err(format!("Slice of channels {from}..{to}: empty"));
        }
        self.push(n, Op::Slice { from, to }, vec![src], [to - from, h, w]);
        Ok(())
    }

    /// Add, Sub, Mul or Div of two maps (numpy broadcasting: a squeeze-and-excitation
    /// gate [C, 1, 1], a layer norm's [1, H, W] statistics), or of a map and a constant.
    fn elementwise(&mut self, n: &NodeProto, f: Binary) -> std::result::Result<(), String> {
        match (self.operand(n, 0)?, self.operand(n, 1)?) {
            (Operand::Map(a), Operand::Map(b)) => {
                if a.nhwc != b.nhwc {
                    return Err("combines a channels-first and a channels-last input".into());
                }
                let (sa, sb) = (a.shape, b.shape);
                if !(0..3).all(|d| sa[d] == sb[d] || sa[d] == 1 || sb[d] == 1) {
                    return Err(format!(
                        "{} of outputs of shapes {sa:?} and {sb:?}",
                        f.name()
                    ));
                }
                let out = [sa[0].max(sb[0]), sa[1].max(sb[1]), sa[2].max(sb[2])];
                let gate = |g: [usize; 3], m: [usize; 3]| g[0] == m[0] && g[1..] == [1, 1];
                let op = match f {
                    Binary::Add if sa == sb => Op::Add { act: Act::None },
                    Binary::Mul if sa == sb || gate(sb, sa) || gate(sa, sb) => Op::Mul,
                    _ => Op::Binary { f },
                };
                self.push_map(n, op, vec![a.node, b.node], out, a.nhwc);
                Ok(())
            }
            (Operand::Map(m), Operand::Const(c)) => self.with_constant(n, m, &c, f, true),
            (Operand::Const(c), Operand::Map(m)) => self.with_constant(n, m, &c, f, false),
            (Operand::Const(_), Operand::Const(_)) => self.arithmetic(n),
        }
    }

    /// A map and a constant that is a scalar or one value per channel: a scale and a
    /// shift per channel, folded into the layer of the same module that made the map
    /// where nothing else reads it (a bias after a MatMul), else a layer of its own.
    fn with_constant(
        &mut self,
        n: &NodeProto,
        m: Map,
        c: &Constant,
        f: Binary,
        map_first: bool,
    ) -> std::result::Result<(), String> {
        let channels = m.shape[0];
        let vals = c.floats();
        let mut dims: &[usize] = &c.dims;
        while dims.first() == Some(&1) && dims.len() > 1 {
            dims = &dims[1..];
        }
        let per_channel = if m.nhwc {
            dims == [channels]
        } else {
            dims == [channels, 1, 1] || (m.shape[1..] == [1, 1] && dims == [channels])
        };
        if vals.len() != 1 && !per_channel {
            return Err(format!(
                "{} of a {:?} output and a constant of shape {:?} (scalars and one value \
                 per channel are read)",
                f.name(),
                m.shape,
                c.dims
            ));
        }
        let v = |k: usize| if vals.len() == 1 { vals[0] } else { vals[k] };
        let (scale, shift): (Vec<f32>, Vec<f32>) = (0..vals.len())
            .map(|k| match (f, map_first) {
                (Binary::Add, _) => Ok((1.0, v(k))),
                (Binary::Sub, true) => Ok((1.0, -v(k))),
                (Binary::Sub, false) => Ok((-1.0, v(k))),
                (Binary::Mul, _) => Ok((v(k), 0.0)),
                (Binary::Div, true) => Ok((1.0 / v(k), 0.0)),
                (Binary::Div, false) => Err("a constant divided by a layer's output"),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?
            .into_iter()
            .unzip();
        if scale.iter().all(|&s| s == 1.0) && shift.iter().all(|&t| t == 0.0) {
            self.set_map(n, m);
            return Ok(());
        }
        let full = |v: &[f32]| -> Vec<f32> { (0..channels).map(|k| v[k % v.len()]).collect() };
        // Folded only inside one module (a Linear's bias after its MatMul, a layer
        // norm's terms): a tap names a module's output, which must stay what the
        // framework computes there (ConvNeXt's layer scale is the block's, not its
        // last Linear's).
        let same_module = self.paths[m.node].first() == Some(&module_path(n.name));
        if same_module && self.fold_affine(m.node, &full(&scale), &full(&shift))? {
            self.paths[m.node].push(module_path(n.name));
            self.set_map(n, m);
            return Ok(());
        }
        if scale.len() == 1 {
            let (mul, add) = (scale[0], shift[0]);
            self.push_map(
                n,
                Op::Unary {
                    f: Unary::Affine { mul, add },
                },
                vec![m.node],
                m.shape,
                m.nhwc,
            );
            return Ok(());
        }
        let op = self.channel_affine(full(&scale), full(&shift))?;
        self.push_map(n, op, vec![m.node], m.shape, m.nhwc);
        Ok(())
    }

    /// Folds `y * scale + shift` (per channel) into node `node` when nothing else reads
    /// it and it is linear in its output: a convolution or a fully connected layer
    /// without an activation, a layer norm, a scalar affine map. Whether it did.
    fn fold_affine(
        &mut self,
        node: usize,
        scale: &[f32],
        shift: &[f32],
    ) -> std::result::Result<bool, String> {
        if !self.sole_reader(node) {
            return Ok(false);
        }
        let per_row = |v: &mut Vec<f32>, s: &[f32]| {
            let row = v.len() / s.len();
            for (r, chunk) in v.chunks_mut(row).enumerate() {
                chunk.iter_mut().for_each(|x| *x *= s[r]);
            }
        };
        let affine = |v: &mut Vec<f32>| {
            for (k, x) in v.iter_mut().enumerate() {
                *x = *x * scale[k] + shift[k];
            }
        };
        match self.nodes[node].op.clone() {
            Op::Conv {
                weight,
                bn: Some(bn),
                act: Act::None,
                ..
            } => {
                let _ = weight;
                self.retensor(&format!("{bn}.weight"), |v| per_row(v, scale))?;
                self.retensor(&format!("{bn}.bias"), affine)?;
            }
            Op::Conv {
                weight,
                bn: None,
                act: Act::None,
                bias,
                out_ch,
                ..
            } => {
                if !bias {
                    self.tensor(format!("{weight}.bias"), &[out_ch], vec![0.0; out_ch])?;
                }
                self.retensor(&format!("{weight}.weight"), |v| per_row(v, scale))?;
                self.retensor(&format!("{weight}.bias"), affine)?;
                if let Op::Conv { bias, .. } = &mut self.nodes[node].op {
                    *bias = true;
                }
            }
            Op::Linear {
                weight,
                act: Act::None,
                ..
            } => {
                self.retensor(&format!("{weight}.weight"), |v| per_row(v, scale))?;
                self.retensor(&format!("{weight}.bias"), affine)?;
            }
            Op::LayerNorm { weight, .. } => {
                self.retensor(&format!("{weight}.weight"), |v| per_row(v, scale))?;
                self.retensor(&format!("{weight}.bias"), affine)?;
            }
            Op::Unary {
                f: Unary::Affine { mul, add },
            } if scale.windows(2).all(|w| w[0] == w[1])
                && shift.windows(2).all(|w| w[0] == w[1]) =>
            {
                let (s, t) = (scale[0], shift[0]);
                self.nodes[node].op = Op::Unary {
                    f: Unary::Affine {
                        mul: mul * s,
                        add: add * s + t,
                    },
                };
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Rewrites weight tensor `name` in place (nothing without weights).
    fn retensor(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Vec<f32>),
    ) -> std::result::Result<(), String> {
        if !self.weights {
            return Ok(());
        }
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| format!("no tensor {name} to fold into"))?;
        let dims = t.dims().to_vec();
        let mut v = t
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| e.to_string())?;
        f(&mut v);
        self.tensor(name.to_string(), &dims, v)
    }

    /// LayerNormalization over the last axis: the channels of a channels-last map, or
    /// the features of a flat one.
    fn layer_norm(&mut self, n: &NodeProto) -> std::result::Result<(), String> {
        let m = self.map_input(n, 0)?;
        let axis = attr_int(n, "axis").unwrap_or(-1);
        let flat = m.shape[1..] == [1, 1];
        if !(axis == -1 || axis == 3 && m.nhwc || axis == 1 && flat) || !(m.nhwc || flat) {
            return Err(format!(
                "LayerNormalization on axis {axis} of a {} map (only over the channels)",
                if m.nhwc {
                    "channels-last"
                } else {
                    "channels-first"
                }
            ));
        }
        let eps = n
            .attribute
            .iter()
            .find(|a| a.name == "epsilon")
            .map_or(1e-5, |a| a.f);
        let c = m.shape[0];
        let gamma = self.constant(n, 1)?.map_or(vec![1.0; c], |v| v.floats());
        let beta = self.constant(n, 2)?.map_or(vec![0.0; c], |v| v.floats());
        self.push_layer_norm(n, m, gamma, beta, eps)
    }

    fn push_layer_norm(
        &mut self,
        n: &NodeProto,
        m: Map,
        gamma: Vec<f32>,
        beta: Vec<f32>,
        eps: f32,
    ) -> std::result::Result<(), String> {
        let c = m.shape[0];
        if gamma.len() != c || beta.len() != c {
            return Err(format!(
                "layer norm terms for {} and {} channels, not {c}",
                gamma.len(),
                beta.len()
            ));
        }
        let prefix = format!("onnx{}", self.nodes.len());
        self.tensor(format!("{prefix}.weight"), &[c], gamma)?;
        self.tensor(format!("{prefix}.bias"), &[c], beta)?;
        let op = Op::LayerNorm {
            weight: prefix,
            channels: c,
            eps,
        };
        self.push_map(n, op, vec![m.node], m.shape, m.nhwc);
        Ok(())
    }

    /// A map times a constant matrix [C, K] on its last axis: a 1x1 convolution on a
    /// channels-last map (ConvNeXt's pointwise Linear layers), a fully connected layer
    /// on a flat one.
    fn matmul(&mut self, n: &NodeProto) -> std::result::Result<(), String> {
        let m = self.map_input(n, 0)?;
        let wt = self.constant(n, 1)?.ok_or("MatMul by a layer's output")?;
        let flat = m.shape[1..] == [1, 1] && !m.nhwc;
        if wt.dims.len() != 2 || wt.dims[0] != m.shape[0] || !(m.nhwc || flat) {
            return Err(format!(
                "MatMul of a {:?} {} output by a constant of shape {:?} (a [C, K] matrix on \
                 the channels is read)",
                m.shape,
                if m.nhwc {
                    "channels-last"
                } else {
                    "channels-first"
                },
                wt.dims
            ));
        }
        let (cin, k) = (wt.dims[0], wt.dims[1]);
        let raw = wt.floats();
        // Stored [K, C] as both a conv's [K, C, 1, 1] and a linear layer's [K, C].
        let mut weight = vec![0.0f32; k * cin];
        for i in 0..cin {
            for o in 0..k {
                weight[o * cin + i] = raw[i * k + o];
            }
        }
        let prefix = format!("onnx{}", self.nodes.len());
        if flat {
            self.tensor(format!("{prefix}.weight"), &[k, cin], weight)?;
            self.tensor(format!("{prefix}.bias"), &[k], vec![0.0; k])?;
            let op = Op::Linear {
                weight: prefix,
                in_f: cin,
                out_f: k,
                act: Act::None,
            };
            self.push(n, op, vec![m.node], [k, 1, 1]);
            return Ok(());
        }
        self.tensor(format!("{prefix}.weight"), &[k, cin, 1, 1], weight)?;
        let op = Op::Conv {
            weight: prefix,
            bn: None,
            bn_eps: 0.0,
            in_ch: cin,
            out_ch: k,
            kernel: (1, 1),
            stride: (1, 1),
            pad: Pad::default(),
            dilation: (1, 1),
            groups: 1,
            bias: false,
            act: Act::None,
        };
        let [_, h, w] = m.shape;
        self.push_map(n, op, vec![m.node], [k, h, w], true);
        Ok(())
    }

    /// Softmax over the channels (the class scores of a flat output).
    fn softmax(&mut self, n: &NodeProto) -> std::result::Result<(), String> {
        let m = self.map_input(n, 0)?;
        let flat = m.shape[1..] == [1, 1] && !m.nhwc;
        // Before opset 13 Softmax flattens from `axis` (default 1) on: over the channels
        // only when nothing follows them.
        if self.opset < 13 && !flat {
            return Err(format!(
                "Softmax at opset {} normalises over more than the channels of a map",
                self.opset
            ));
        }
        let axis = attr_int(n, "axis").unwrap_or(if self.opset < 13 { 1 } else { -1 });
        let channels = if m.nhwc {
            axis == -1 || axis == 3
        } else {
            axis == 1 || axis == -3 || flat && axis == -1
        };
        if !channels {
            return Err(format!("Softmax on axis {axis} (only over the channels)"));
        }
        self.push_map(n, Op::Softmax, vec![m.node], m.shape, m.nhwc);
        Ok(())
    }

    /// A Split of the channels into consecutive parts: one channel slice per output.
    fn split(&mut self, n: &NodeProto) -> std::result::Result<(), String> {
        let (src, [c, h, w]) = self.layer_input(n, 0)?;
        let axis = attr_int(n, "axis").unwrap_or(0);
        if axis != 1 && axis != -3 {
            return Err(format!("Split on axis {axis} (only channels)"));
        }
        let parts = n.output.len();
        let sizes: Vec<i64> = match self.constant(n, 1)? {
            Some(s) => s.ints(),
            None => attr_ints(n, "split").unwrap_or_else(|| {
                let per = c.div_ceil(parts.max(1));
                (0..parts)
                    .map(|k| (c.saturating_sub(k * per)).min(per) as i64)
                    .collect()
            }),
        };
        let total = sizes
            .iter()
            .try_fold(0i64, |a, &s| (s > 0 && s <= c as i64).then(|| a + s));
        if sizes.len() != parts || total != Some(c as i64) {
            return Err(format!("Split of {c} channels into {sizes:?}"));
        }
        let mut from = 0;
        for (k, &size) in sizes.iter().enumerate() {
            let to = from + size as usize;
            let idx = self.nodes.len();
            self.nodes.push(Node {
                name: String::new(),
                aliases: vec![],
                op: Op::Slice { from, to },
                inputs: vec![src],
                tap: true,
            });
            self.paths.push(vec![module_path(n.name)]);
            self.values.insert(
                n.output[k].to_string(),
                Value::Layer {
                    node: idx,
                    shape: [to - from, h, w],
                },
            );
            from = to;
        }
        Ok(())
    }

    fn all_constant(&self, n: &NodeProto) -> bool {
        n.input
            .iter()
            .all(|i| matches!(self.values.get(*i), Some(Value::Const(_))))
    }

    /// Arithmetic on constants (shape computations), elementwise with broadcasting
    /// of a scalar; integers divide as integers.
    fn arithmetic(&mut self, n: &NodeProto) -> std::result::Result<(), String> {
        let a = self.constant(n, 0)?.ok_or("no first operand")?;
        let b = self.constant(n, 1)?.ok_or("no second operand")?;
        let len = a.ints().len().max(b.ints().len());
        let at = |v: &Vec<i64>, k: usize| if v.len() == 1 { v[0] } else { v[k] };
        let atf = |v: &Vec<f32>, k: usize| if v.len() == 1 { v[0] } else { v[k] };
        let dims = if a.ints().len() >= b.ints().len() {
            a.dims.clone()
        } else {
            b.dims.clone()
        };
        let ok = |v: usize| v == 1 || v == len;
        if !ok(a.ints().len()) || !ok(b.ints().len()) {
            return Err("arithmetic on constants of other shapes".into());
        }
        let data = match (&a.data, &b.data) {
            (Data::I64(x), Data::I64(y)) => {
                let f = |p: i64, q: i64| match n.op_type.as_str() {
                    "Add" => Some(p + q),
                    "Sub" => Some(p - q),
                    "Mul" => Some(p * q),
                    _ => (q != 0).then(|| p.div_euclid(q)),
                };
                let v: Option<Vec<i64>> = (0..len).map(|k| f(at(x, k), at(y, k))).collect();
                Data::I64(v.ok_or("division by zero in shape arithmetic")?)
            }
            _ => {
                let (x, y) = (a.floats(), b.floats());
                let f = |p: f32, q: f32| match n.op_type.as_str() {
                    "Add" => p + q,
                    "Sub" => p - q,
                    "Mul" => p * q,
                    _ => p / q,
                };
                Data::F32((0..len).map(|k| f(atf(&x, k), atf(&y, k))).collect())
            }
        };
        self.set(n, Value::Const(Constant { dims, data }));
        Ok(())
    }

    fn gemm(&mut self, n: &NodeProto) -> std::result::Result<(), String> {
        let (src, [c, h, w]) = self.layer_input(n, 0)?;
        if h * w != 1 {
            return Err("Gemm on an unflattened input".into());
        }
        let wt = self.constant(n, 1)?.ok_or("Gemm without weights")?;
        let bias = self.constant(n, 2)?;
        let alpha = n
            .attribute
            .iter()
            .find(|a| a.name == "alpha")
            .map_or(1.0, |a| a.f);
        let beta = n
            .attribute
            .iter()
            .find(|a| a.name == "beta")
            .map_or(1.0, |a| a.f);
        if attr_int(n, "transA").unwrap_or(0) != 0 || wt.dims.len() != 2 {
            return Err("Gemm with a transposed input".into());
        }
        let trans_b = attr_int(n, "transB").unwrap_or(0) != 0;
        let (out_f, in_f) = if trans_b {
            (wt.dims[0], wt.dims[1])
        } else {
            (wt.dims[1], wt.dims[0])
        };
        if in_f != c {
            return Err(format!(
                "Gemm takes {in_f} inputs, the layer before gives {c}"
            ));
        }
        // Stored [out, in], scaled by alpha.
        let raw = wt.floats();
        let mut weight = vec![0.0f32; out_f * in_f];
        for o in 0..out_f {
            for i in 0..in_f {
                let v = if trans_b {
                    raw[o * in_f + i]
                } else {
                    raw[i * out_f + o]
                };
                weight[o * in_f + i] = alpha * v;
            }
        }
        let b = match &bias {
            Some(b) if b.floats().len() == out_f => b.floats().iter().map(|v| beta * v).collect(),
            Some(b) if b.floats().len() == 1 => vec![beta * b.floats()[0]; out_f],
            Some(_) => return Err("Gemm bias of another size than its outputs".into()),
            None => vec![0.0; out_f],
        };
        let prefix = format!("onnx{}", self.nodes.len());
        self.tensor(format!("{prefix}.weight"), &[out_f, in_f], weight)?;
        self.tensor(format!("{prefix}.bias"), &[out_f], b)?;
        let op = Op::Linear {
            weight: prefix,
            in_f,
            out_f,
            act: Act::None,
        };
        self.push(n, op, vec![src], [out_f, 1, 1]);
        Ok(())
    }
}

/// What the fusion pass decided for a graph node.
#[derive(Debug)]
enum Fused {
    /// Part of a run made at its last node.
    Skip,
    /// x * (1 + erf(x / sqrt 2)) / 2: torch's exact GELU, five nodes.
    Gelu { x: String },
    /// The opset-13 decomposition of layer normalisation over the last axis
    /// (ReduceMean, Sub, Pow 2, ReduceMean, Add eps, Sqrt, Div, then optionally Mul
    /// by the weight and Add the bias).
    LayerNorm {
        x: String,
        eps: f32,
        gamma: Option<String>,
        beta: Option<String>,
    },
}

/// Runs of nodes that are one operation exported in pieces (GELU, LayerNorm before
/// opset 17), found by their shape in the graph so that they run as one layer: eight
/// passes over a ConvNeXt block's widest map become one. Every inner value must be
/// read only inside the run; anything else is converted node by node.
fn fusions(
    nodes: &[NodeProto],
    values: &HashMap<String, Value>,
    dir: &Path,
) -> HashMap<usize, Fused> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut scalars: HashMap<&str, f32> = HashMap::new();
    let mut consts: std::collections::HashSet<&str> = values.keys().map(String::as_str).collect();
    for (k, n) in nodes.iter().enumerate() {
        for o in &n.output {
            producer.insert(o, k);
        }
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            readers.entry(i).or_default().push(k);
        }
        if n.op_type.as_str() == "Constant" {
            let t = n
                .attribute
                .iter()
                .find(|a| a.name == "value")
                .and_then(|a| a.t.as_ref());
            if let (Some(t), Some(o)) = (t, n.output.first()) {
                consts.insert(o);
                if let Some(v) = constant(t, dir).ok().and_then(|c| c.scalar()) {
                    scalars.insert(o, v);
                }
            }
        }
    }
    for (name, v) in values {
        if let Value::Const(c) = v {
            if let Some(x) = c.scalar() {
                scalars.insert(name.as_str(), x);
            }
        }
    }
    let op = |k: usize| nodes[k].op_type.as_str();
    let out = |k: usize| nodes[k].output.first().copied().unwrap_or("");
    // The only reader of node k's output, when there is exactly one.
    let sole = |k: usize| match readers.get(out(k)).map(Vec::as_slice) {
        Some([r]) => Some(*r),
        _ => None,
    };
    // For a two-input node: the input other than `this`, and whether it is a scalar `v`.
    let other = |k: usize, this: &str| -> Option<&str> {
        let i = &nodes[k].input;
        (i.len() == 2).then(|| if i[0] == this { i[1] } else { i[0] })
    };
    let is_scalar = |name: &str, v: f32| {
        scalars
            .get(name)
            .is_some_and(|&s| (s - v).abs() <= 1e-6 * v.abs().max(1.0))
    };
    let last_axis = |k: usize| {
        let axes = attr_ints(&nodes[k], "axes").unwrap_or_default();
        axes == [-1] && attr_int(&nodes[k], "keepdims").unwrap_or(1) == 1
    };
    let mut fused = HashMap::new();
    for (e, n) in nodes.iter().enumerate() {
        // GELU: Div(x, sqrt 2) -> Erf -> Add 1 -> Mul x -> Mul 0.5.
        if n.op_type.as_str() == "Erf" {
            let gelu = (|| {
                let d = *producer.get(n.input.first()?)?;
                let x = nodes[d].input.first()?.to_string();
                let by = other(d, &x)?;
                let scaled = (op(d) == "Div" && is_scalar(by, std::f32::consts::SQRT_2))
                    || (op(d) == "Mul" && is_scalar(by, std::f32::consts::FRAC_1_SQRT_2));
                if !scaled || sole(d)? != e {
                    return None;
                }
                let a = sole(e)?;
                if op(a) != "Add" || !is_scalar(other(a, out(e))?, 1.0) {
                    return None;
                }
                let m = sole(a)?;
                if op(m) != "Mul" || other(m, out(a))? != x {
                    return None;
                }
                let h = sole(m)?;
                if op(h) != "Mul" || !is_scalar(other(h, out(m))?, 0.5) {
                    return None;
                }
                Some((x, [d, e, a, m], h))
            })();
            if let Some((x, inner, last)) = gelu {
                for k in inner {
                    fused.insert(k, Fused::Skip);
                }
                fused.insert(last, Fused::Gelu { x });
            }
        }
        // LayerNorm: the mean and variance of x over its last axis.
        if n.op_type.as_str() == "ReduceMean" && last_axis(e) {
            let ln = (|| {
                let x = n.input.first()?.to_string();
                let sub = sole(e)?;
                if op(sub) != "Sub" || nodes[sub].input.first()? != &x {
                    return None;
                }
                let centred = readers.get(out(sub))?;
                let (pow, div) = match centred.as_slice() {
                    [p, q] if op(*p) == "Pow" => (*p, *q),
                    [q, p] if op(*p) == "Pow" => (*p, *q),
                    _ => return None,
                };
                if !is_scalar(nodes[pow].input.get(1)?, 2.0) || op(div) != "Div" {
                    return None;
                }
                let var = sole(pow)?;
                if op(var) != "ReduceMean" || !last_axis(var) {
                    return None;
                }
                let add = sole(var)?;
                let eps_name = other(add, out(var))?;
                let eps = *scalars.get(eps_name)?;
                let sqrt = sole(add)?;
                if op(add) != "Add" || op(sqrt) != "Sqrt" || sole(sqrt)? != div {
                    return None;
                }
                if nodes[div].input.first()? != &out(sub) {
                    return None;
                }
                let mut run = vec![e, sub, pow, var, add, sqrt];
                let (mut last, mut gamma, mut beta) = (div, None, None);
                if let Some(mul) = sole(div).filter(|&k| op(k) == "Mul") {
                    let g = other(mul, out(div))?;
                    if consts.contains(g) {
                        run.push(div);
                        last = mul;
                        gamma = Some(g.to_string());
                        if let Some(plus) = sole(mul).filter(|&k| op(k) == "Add") {
                            let b = other(plus, out(mul))?;
                            if consts.contains(b) {
                                run.push(mul);
                                last = plus;
                                beta = Some(b.to_string());
                            }
                        }
                    }
                }
                Some((x, eps, gamma, beta, run, last))
            })();
            if let Some((x, eps, gamma, beta, run, last)) = ln {
                for k in run {
                    fused.insert(k, Fused::Skip);
                }
                fused.insert(
                    last,
                    Fused::LayerNorm {
                        x,
                        eps,
                        gamma,
                        beta,
                    },
                );
            }
        }
    }
    fused
}

fn ints(v: Vec<i64>) -> Value {
    Value::Const(Constant {
        dims: vec![v.len()],
        data: Data::I64(v),
    })
}

fn attr_int(n: &NodeProto, name: &str) -> Option<i64> {
    n.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn attr_ints(n: &NodeProto, name: &str) -> Option<Vec<i64>> {
    n.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| a.ints.clone())
}

/// A two-element attribute of positive sizes (strides, dilations); (1, 1) when absent.
fn positive_pair(n: &NodeProto, name: &str) -> std::result::Result<(usize, usize), String> {
    match attr_ints(n, name) {
        None => Ok((1, 1)),
        Some(v) if v.len() == 2 && v.iter().all(|&x| (1..=4096).contains(&x)) => {
            Ok((v[0] as usize, v[1] as usize))
        }
        Some(v) => Err(format!("{name} {v:?} (two sizes from 1 are read)")),
    }
}

fn add_pads(a: Pad, b: Pad) -> Pad {
    Pad {
        top: a.top + b.top,
        left: a.left + b.left,
        bottom: a.bottom + b.bottom,
        right: a.right + b.right,
    }
}

/// Clip's bounds: attributes before opset 11, optional constant inputs since.
fn clip_bounds(b: &Builder, n: &NodeProto) -> std::result::Result<(f32, f32), String> {
    let attr = |name: &str| n.attribute.iter().find(|a| a.name == name).map(|a| a.f);
    let lo = match b.constant(n, 1)? {
        Some(c) => c.scalar().ok_or("Clip min is not a scalar")?,
        None => attr("min").unwrap_or(f32::NEG_INFINITY),
    };
    let hi = match b.constant(n, 2)? {
        Some(c) => c.scalar().ok_or("Clip max is not a scalar")?,
        None => attr("max").unwrap_or(f32::INFINITY),
    };
    Ok((lo, hi))
}

/// A conv's or pool's padding: explicit `pads` ([top, left, bottom, right]) or
/// `auto_pad` SAME_UPPER / SAME_LOWER / VALID.
fn pads(
    n: &NodeProto,
    (h, w): (usize, usize),
    (kh, kw): (usize, usize),
    stride: (usize, usize),
    dilation: (usize, usize),
) -> std::result::Result<Pad, String> {
    let auto = n
        .attribute
        .iter()
        .find(|a| a.name == "auto_pad")
        .map(|a| String::from_utf8_lossy(a.s).into_owned())
        .unwrap_or_default();
    match auto.as_str() {
        "" | "NOTSET" => {
            let p = attr_ints(n, "pads").unwrap_or_else(|| vec![0; 4]);
            if p.len() != 4 || p.iter().any(|&x| !(0..=4096).contains(&x)) {
                return Err(format!("pads {p:?}"));
            }
            Ok(Pad {
                top: p[0] as usize,
                left: p[1] as usize,
                bottom: p[2] as usize,
                right: p[3] as usize,
            })
        }
        "VALID" => Ok(Pad::default()),
        "SAME_UPPER" | "SAME_LOWER" => {
            // Total padding so that out = ceil(in / stride); the odd one after (UPPER)
            // or before (LOWER).
            let total = |len: usize, k: usize, s: usize, d: usize| {
                let out = len.div_ceil(s);
                ((out - 1) * s + d * (k - 1) + 1).saturating_sub(len)
            };
            let (th, tw) = (
                total(h, kh, stride.0, dilation.0),
                total(w, kw, stride.1, dilation.1),
            );
            let split = |t: usize| {
                if auto == "SAME_UPPER" {
                    (t / 2, t - t / 2)
                } else {
                    (t - t / 2, t / 2)
                }
            };
            let ((top, bottom), (left, right)) = (split(th), split(tw));
            Ok(Pad {
                top,
                left,
                bottom,
                right,
            })
        }
        other => Err(format!("auto_pad {other:?}")),
    }
}

/// The input's [N, C, H, W], which must be fixed but for the batch size.
fn input_dims(v: &ValueInfo) -> std::result::Result<[usize; 4], String> {
    use onnx_rs::ast::{Dimension, TypeValue};
    let shape = match v.r#type.as_ref().and_then(|t| t.value.as_ref()) {
        Some(TypeValue::Tensor(t)) => t.shape.as_ref().ok_or("has no shape")?,
        _ => return Err("is not a tensor".into()),
    };
    if shape.dim.len() != 4 {
        return Err(format!(
            "has {} dimensions; an image input has 4 (N, C, H, W)",
            shape.dim.len()
        ));
    }
    let mut out = [0usize; 4];
    for (k, d) in shape.dim.iter().enumerate() {
        out[k] = match d.value {
            Dimension::Value(v) if v > 0 => v as usize,
            _ if k == 0 => 1,
            _ => {
                return Err(format!(
                    "its {} is not fixed (a dynamic spatial size); export with a fixed input size",
                    ["batch", "channel count", "height", "width"][k]
                ))
            }
        };
    }
    Ok(out)
}

/// An initializer or `Constant` tensor: f32 or integer data (f64 read as f32), inline
/// or external.
fn constant(t: &TensorProto, dir: &Path) -> std::result::Result<Constant, String> {
    let dims: Vec<usize> = t
        .dims()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d}")))
        .collect::<std::result::Result<_, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("too many elements")?;
    let size = match t.data_type() {
        DataType::Float | DataType::Int32 => 4,
        DataType::Double | DataType::Int64 => 8,
        other => {
            return Err(format!(
                "data type {other:?} (f32, f64, int32 and int64 are read)"
            ))
        }
    };
    let external = if t.data_location() == DataLocation::External {
        Some(external_data(t, dir, count * size)?)
    } else {
        None
    };
    let raw: Option<&[u8]> = external.as_deref().or(t.as_raw());
    if let Some(raw) = raw {
        if raw.len() != count * size {
            return Err(format!(
                "{} bytes of data for {count} elements of {size} bytes",
                raw.len()
            ));
        }
    }
    let le = |b: &[u8]| -> [u8; 8] {
        let mut a = [0u8; 8];
        a[..b.len()].copy_from_slice(b);
        a
    };
    let data = match (t.data_type(), raw) {
        (DataType::Float, Some(r)) => Data::F32(
            r.chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect(),
        ),
        (DataType::Double, Some(r)) => Data::F32(
            r.chunks_exact(8)
                .map(|b| f64::from_le_bytes(le(b)) as f32)
                .collect(),
        ),
        (DataType::Int64, Some(r)) => Data::I64(
            r.chunks_exact(8)
                .map(|b| i64::from_le_bytes(le(b)))
                .collect(),
        ),
        (DataType::Int32, Some(r)) => Data::I64(
            r.chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
                .collect(),
        ),
        (DataType::Float, None) => Data::F32(t.as_f32().map(|v| v.to_vec()).unwrap_or_default()),
        (DataType::Double, None) => Data::F32(
            t.as_f64()
                .map(|v| v.iter().map(|&x| x as f32).collect())
                .unwrap_or_default(),
        ),
        (DataType::Int64, None) => Data::I64(t.as_i64().map(|v| v.to_vec()).unwrap_or_default()),
        (_, None) => Data::I64(
            t.as_i32()
                .map(|v| v.iter().map(|&x| x as i64).collect())
                .unwrap_or_default(),
        ),
        _ => unreachable!("sizes checked above"),
    };
    let len = match &data {
        Data::F32(v) => v.len(),
        Data::I64(v) => v.len(),
    };
    if len != count {
        return Err(format!("{len} values for shape {dims:?}"));
    }
    Ok(Constant { dims, data })
}

/// The bytes of an external-data tensor: `location` (a file beside the model, never
/// outside its folder), from `offset`, `length` bytes.
fn external_data(
    t: &TensorProto,
    dir: &Path,
    bytes: usize,
) -> std::result::Result<Vec<u8>, String> {
    use std::io::{Read, Seek, SeekFrom};
    let get = |k: &str| {
        t.external_data()
            .iter()
            .find(|e| e.key == k)
            .map(|e| e.value.to_string())
    };
    let location = get("location").ok_or("external data without a location")?;
    let rel = Path::new(&location);
    if rel.is_absolute()
        || rel
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(format!(
            "external data {location:?} outside the model's folder"
        ));
    }
    let offset: u64 = get("offset")
        .map_or(Ok(0), |v| v.parse())
        .map_err(|_| "bad offset")?;
    let path = dir.join(rel);
    let mut f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let size = f.metadata().map_err(|e| e.to_string())?.len();
    let length: u64 = match get("length") {
        Some(v) => v.parse().map_err(|_| "bad length")?,
        None => size.saturating_sub(offset),
    };
    // Exactly what the tensor needs, and within the file.
    if offset.saturating_add(length) > size || length != bytes as u64 {
        return Err(format!(
            "external data {location:?}: {length} bytes from {offset} do not fit the file or the tensor"
        ));
    }
    f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; length as usize];
    f.read_exact(&mut buf)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(buf)
}

/// The module path of a node torch named: `/layer4/layer4.1/relu_1/Relu` is in
/// `layer4.1.relu_1`. A scope is an attribute name, or the scope before it and an index
/// (a Sequential's child: `layer4` then `layer4.1`; `conv` then `conv.2`).
fn module_path(onnx_name: &str) -> String {
    let parts: Vec<&str> = onnx_name.split('/').filter(|p| !p.is_empty()).collect();
    let scopes = if parts.len() > 1 {
        &parts[..parts.len() - 1]
    } else {
        &parts[..]
    };
    let (mut path, mut last) = (String::new(), "");
    for s in scopes {
        if path.is_empty() {
            path = s.to_string();
        } else if let Some(index) = s.strip_prefix(last).filter(|r| r.starts_with('.')) {
            path.push_str(index);
        } else {
            path.push('.');
            path.push_str(s);
        }
        last = s;
    }
    path
}

/// Node names from module paths, and every enclosing module path as an alias of the
/// last node inside it (`layer4.1`, `layer4`). A module path names the module's output:
/// where several nodes share one, the last has it and the others are `path#1`, `#2`, ...
fn name_taps(nodes: &mut [Node], paths: &[Vec<String>]) {
    let base = |i: usize| match paths[i].first() {
        Some(p) if !p.is_empty() => p.clone(),
        _ => format!("node{i}"),
    };
    let mut total: HashMap<String, usize> = HashMap::new();
    for i in 1..nodes.len() {
        *total.entry(base(i)).or_insert(0) += 1;
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, node) in nodes.iter_mut().enumerate().skip(1) {
        let b = base(i);
        let k = seen.entry(b.clone()).or_insert(0);
        *k += 1;
        node.name = if *k == total[&b] {
            b
        } else {
            format!("{b}#{k}")
        };
    }
    let names: std::collections::HashSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let mut last_in: HashMap<String, usize> = HashMap::new();
    for (i, p) in paths
        .iter()
        .enumerate()
        .skip(1)
        .flat_map(|(i, ps)| ps.iter().map(move |p| (i, p)))
    {
        let mut prefix = p.as_str();
        loop {
            if !prefix.is_empty() {
                last_in.insert(prefix.to_string(), i);
            }
            match prefix.rfind('.') {
                Some(d) => prefix = &prefix[..d],
                None => break,
            }
        }
    }
    let mut aliases: Vec<(usize, String)> = last_in
        .into_iter()
        .filter(|(p, _)| !names.contains(p))
        .map(|(p, i)| (i, p))
        .collect();
    aliases.sort();
    for (i, p) in aliases {
        nodes[i].aliases.push(p);
    }
}

/// About six layers spread over the network, and the last: among the outputs of
/// top-level modules and their direct children (`layer2`, `layer2.0`, `features.5`)
/// where there are such, else among all taps.
fn default_layers(nodes: &[Node]) -> Vec<String> {
    let shallow = |n: &Node| {
        std::iter::once(&n.name)
            .chain(&n.aliases)
            .any(|a| a.matches('.').count() <= 1 && !a.contains('#'))
    };
    let all: Vec<usize> = (1..nodes.len()).filter(|&i| nodes[i].tap).collect();
    let blocks: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| shallow(&nodes[i]))
        .collect();
    let taps = if blocks.len() >= 4 { blocks } else { all };
    if taps.is_empty() {
        return vec![];
    }
    let mut pick: Vec<usize> = (1..=6).map(|k| taps[(k * taps.len()) / 7]).collect();
    pick.push(*taps.last().expect("not empty"));
    pick.sort_unstable();
    pick.dedup();
    pick.into_iter().map(|i| nodes[i].name.clone()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths_follow_torch_scopes() {
        assert_eq!(
            module_path("/layer4/layer4.1/relu_1/Relu"),
            "layer4.1.relu_1"
        );
        assert_eq!(module_path("/layer1/layer1.0/conv1/Conv"), "layer1.0.conv1");
        assert_eq!(module_path("/features/features.12/Conv"), "features.12");
        assert_eq!(
            module_path("/features/features.2/conv/conv.2/Conv"),
            "features.2.conv.2"
        );
        assert_eq!(
            module_path("/features/features.18/features.18.2/Clip"),
            "features.18.2"
        );
        assert_eq!(module_path("/fc/Gemm"), "fc");
        assert_eq!(module_path("Conv_0"), "Conv_0");
    }
}
