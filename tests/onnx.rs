//! ONNX files made here (with onnx-rs's encoder, no Python): a small network against a
//! hand computation, and bad models, each refused with a clear error.

use std::path::{Path, PathBuf};

use neurodex::model::Network;
use onnx_rs::ast::*;

fn attr_ints<'a>(name: &'a str, v: Vec<i64>) -> Attribute<'a> {
    Attribute {
        name,
        r#type: AttributeType::Ints,
        ints: v,
        ..Default::default()
    }
}

fn attr_int<'a>(name: &'a str, v: i64) -> Attribute<'a> {
    Attribute {
        name,
        r#type: AttributeType::Int,
        i: v,
        ..Default::default()
    }
}

fn node<'a>(name: &'a str, op: &'a str, input: Vec<&'a str>, output: &'a str) -> Node<'a> {
    Node {
        name,
        op_type: OpType::from(op),
        input,
        output: vec![output],
        ..Default::default()
    }
}

fn image_input<'a>(h: Dimension<'a>, w: Dimension<'a>) -> ValueInfo<'a> {
    let dim = |value| TensorShapeDimension {
        value,
        denotation: "",
    };
    ValueInfo {
        name: "input",
        r#type: Some(TypeProto {
            value: Some(TypeValue::Tensor(TensorTypeProto {
                elem_type: DataType::Float,
                shape: Some(TensorShape {
                    dim: vec![
                        dim(Dimension::Param("N")),
                        dim(Dimension::Value(3)),
                        dim(h),
                        dim(w),
                    ],
                }),
            })),
            denotation: "",
        }),
        ..Default::default()
    }
}

/// conv 1x1 (3 -> 2, bias) -> relu -> global average pool -> flatten -> fc (2 -> 2).
const CONV_W: [f32; 6] = [0.5, -1.0, 0.25, -0.5, 0.75, 1.0];
const CONV_B: [f32; 2] = [0.1, -0.2];
const FC_W: [f32; 4] = [1.0, -2.0, 0.5, 3.0];
const FC_B: [f32; 2] = [0.0, 1.0];

fn tiny<'a>(input: ValueInfo<'a>, conv_in: i64, extra: Option<Node<'a>>) -> Model<'a> {
    let mut nodes = vec![
        Node {
            attribute: vec![attr_ints("kernel_shape", vec![1, 1])],
            ..node("/conv/Conv", "Conv", vec!["input", "conv.w", "conv.b"], "c")
        },
        node("/relu/Relu", "Relu", vec!["c"], "r"),
        node(
            "/pool/GlobalAveragePool",
            "GlobalAveragePool",
            vec!["r"],
            "p",
        ),
        Node {
            attribute: vec![attr_int("axis", 1)],
            ..node("/Flatten", "Flatten", vec!["p"], "f")
        },
        Node {
            attribute: vec![attr_int("transB", 1)],
            ..node("/fc/Gemm", "Gemm", vec!["f", "fc.w", "fc.b"], "logits")
        },
    ];
    nodes.extend(extra);
    let conv_w: Vec<f32> = (0..2 * conv_in as usize).map(|k| CONV_W[k % 6]).collect();
    Model {
        ir_version: 8,
        opset_import: vec![OperatorSetId {
            domain: "",
            version: 13,
        }],
        graph: Some(Graph {
            name: "tiny",
            node: nodes,
            initializer: vec![
                TensorProto::from_f32("conv.w", vec![2, conv_in, 1, 1], conv_w),
                TensorProto::from_f32("conv.b", vec![2], CONV_B.to_vec()),
                TensorProto::from_f32("fc.w", vec![2, 2], FC_W.to_vec()),
                TensorProto::from_f32("fc.b", vec![2], FC_B.to_vec()),
            ],
            input: vec![input],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The tiny network with a Softplus (outside the importer's list) feeding its node `k`.
fn softplus_before(k: usize) -> Model<'static> {
    let mut m = tiny(
        image_input(Dimension::Value(4), Dimension::Value(4)),
        3,
        None,
    );
    let g = m.graph.as_mut().unwrap();
    let from = g.node[k].input[0];
    g.node[k].input[0] = "soft";
    g.node
        .insert(k, node("/act/Softplus", "Softplus", vec![from], "soft"));
    m
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn open_err(path: &Path) -> String {
    match Network::open(path.to_str().unwrap(), None) {
        Ok(_) => panic!("{} was accepted", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_small_network_computes_what_the_hand_computation_gives() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(
        image_input(Dimension::Value(4), Dimension::Value(4)),
        3,
        None,
    );
    let path = write(tmp.path(), "tiny.onnx", &onnx_rs::encode(&model));
    let net = Network::open(path.to_str().unwrap(), None).unwrap();
    let x: Vec<f32> = (0..3 * 16)
        .map(|k| ((k * 7) % 11) as f32 / 5.0 - 1.0)
        .collect();
    // By hand: per pixel conv + bias, relu, mean over the 16 pixels, then fc.
    let mut pooled = [0f64; 2];
    for (o, p) in pooled.iter_mut().enumerate() {
        for px in 0..16 {
            let v: f32 = (0..3)
                .map(|c| CONV_W[o * 3 + c] * x[c * 16 + px])
                .sum::<f32>()
                + CONV_B[o];
            *p += v.max(0.0) as f64 / 16.0;
        }
    }
    let want: Vec<f64> = (0..2)
        .map(|o| {
            FC_W[o * 2] as f64 * pooled[0] + FC_W[o * 2 + 1] as f64 * pooled[1] + FC_B[o] as f64
        })
        .collect();
    let conv = net.arch.resolve("conv").unwrap();
    let fc = net.arch.resolve("fc").unwrap();
    let outs = net.forward_hw(&x, 1, 4, 4, &[conv, fc]).unwrap();
    assert_eq!((outs[0].c, outs[0].h, outs[0].w), (2, 4, 4));
    for o in 0..2 {
        assert!(
            (outs[1].data[o] as f64 - want[o]).abs() < 1e-5,
            "{:?} vs {want:?}",
            outs[1].data
        );
    }
    // The Relu folded into the conv: its module names the same layer.
    assert_eq!(net.arch.resolve("relu").unwrap(), conv);
    assert_eq!(net.arch.recipe.size, 4);
}

#[test]
fn bad_models_are_refused_with_the_file_and_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let good = onnx_rs::encode(&tiny(
        image_input(Dimension::Value(4), Dimension::Value(4)),
        3,
        None,
    ));

    let truncated = write(tmp.path(), "truncated.onnx", &good[..good.len() / 2]);
    let e = open_err(&truncated);
    assert!(
        e.contains("truncated.onnx") && e.contains("not an ONNX model"),
        "{e}"
    );

    let text = write(tmp.path(), "text.onnx", b"this is not a protobuf at all\n");
    let e = open_err(&text);
    assert!(
        e.contains("text.onnx") && e.contains("not an ONNX model"),
        "{e}"
    );

    // An operator outside the list at the start: nothing runs, so the file is refused.
    let first = softplus_before(0);
    let e = open_err(&write(
        tmp.path(),
        "softplus0.onnx",
        &onnx_rs::encode(&first),
    ));
    assert!(
        e.contains("softplus0.onnx") && e.contains("Softplus") && e.contains("/act/Softplus"),
        "{e}"
    );

    let dynamic = tiny(
        image_input(Dimension::Param("H"), Dimension::Param("W")),
        3,
        None,
    );
    let e = open_err(&write(
        tmp.path(),
        "dynamic.onnx",
        &onnx_rs::encode(&dynamic),
    ));
    assert!(e.contains("dynamic spatial size"), "{e}");

    // Conv weights for 4 input channels on an RGB input.
    let mismatched = tiny(
        image_input(Dimension::Value(4), Dimension::Value(4)),
        4,
        None,
    );
    let e = open_err(&write(
        tmp.path(),
        "mismatched.onnx",
        &onnx_rs::encode(&mismatched),
    ));
    assert!(e.contains("/conv/Conv") && e.contains("3 channels"), "{e}");

    // Hostile attributes: a stride of 0 and a kernel of 0 are refused, not divided by.
    let mut zero = tiny(
        image_input(Dimension::Value(4), Dimension::Value(4)),
        3,
        None,
    );
    zero.graph.as_mut().unwrap().node[0]
        .attribute
        .push(attr_ints("strides", vec![0, 0]));
    let e = open_err(&write(tmp.path(), "stride0.onnx", &onnx_rs::encode(&zero)));
    assert!(e.contains("strides [0, 0]"), "{e}");
    let mut empty = tiny(
        image_input(Dimension::Value(4), Dimension::Value(4)),
        3,
        None,
    );
    empty.graph.as_mut().unwrap().initializer[0] =
        TensorProto::from_f32("conv.w", vec![2, 3, 0, 1], vec![]);
    let e = open_err(&write(tmp.path(), "kernel0.onnx", &onnx_rs::encode(&empty)));
    assert!(e.contains("Conv weights of shape [2, 3, 0, 1]"), "{e}");

    // An ONNX model carries its weights.
    let ok = write(tmp.path(), "ok.onnx", &good);
    let e = Network::open(ok.to_str().unwrap(), Some(&ok))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("drop --weights"), "{e}");
}

/// `x` as numpy writes a C-ordered f32 array of `shape`.
fn npy(shape: &[usize], x: &[f32]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let mut h = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({},), }}",
        dims.join(", ")
    );
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    b.extend_from_slice(h.as_bytes());
    b.extend(x.iter().flat_map(|v| v.to_le_bytes()));
    b
}

#[test]
fn forward_writes_the_taps_and_the_output_for_an_exact_input() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(
        image_input(Dimension::Value(4), Dimension::Value(4)),
        3,
        None,
    );
    let path = write(tmp.path(), "tiny.onnx", &onnx_rs::encode(&model));
    // Two images; the second is the first negated.
    let one: Vec<f32> = (0..3 * 16)
        .map(|k| ((k * 5) % 13) as f32 / 6.0 - 1.0)
        .collect();
    let x: Vec<f32> = one.iter().copied().chain(one.iter().map(|v| -v)).collect();
    let input = write(tmp.path(), "x.npy", &npy(&[2, 3, 4, 4], &x));
    let out = tmp.path().join("out.safetensors");
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_neurodex"))
        .args(["forward", "--model"])
        .arg(&path)
        .arg("--input")
        .arg(&input)
        .args(["--taps", "conv", "--pre", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let t = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
    assert_eq!(t["conv"].dims(), &[2, 2, 4, 4]);
    assert_eq!(t["output"].dims(), &[2, 2, 1, 1]);
    let pre: Vec<f32> = t["conv:pre"].flatten_all().unwrap().to_vec1().unwrap();
    let post: Vec<f32> = t["conv"].flatten_all().unwrap().to_vec1().unwrap();
    // By hand: channel o, image i, pixel p.
    for i in 0..2 {
        for o in 0..2 {
            for p in 0..16 {
                let v: f32 = (0..3)
                    .map(|c| CONV_W[o * 3 + c] * x[i * 48 + c * 16 + p])
                    .sum::<f32>()
                    + CONV_B[o];
                let k = (i * 2 + o) * 16 + p;
                assert!((pre[k] - v).abs() < 1e-5, "pre {k}: {} vs {v}", pre[k]);
                assert!((post[k] - v.max(0.0)).abs() < 1e-5, "post {k}");
            }
        }
    }
}

/// An operator outside the list is no error while every requested layer lies before
/// it; asking for one past it names the operator and its node.
#[test]
fn an_operator_not_run_yet_only_matters_past_it() {
    let tmp = tempfile::tempdir().unwrap();
    // After the logits: every layer runs, the output does not.
    let after = tiny(
        image_input(Dimension::Value(4), Dimension::Value(4)),
        3,
        Some(node("/act/Softplus", "Softplus", vec!["logits"], "y")),
    );
    let path = write(tmp.path(), "after.onnx", &onnx_rs::encode(&after));
    let net = Network::open(path.to_str().unwrap(), None).unwrap();
    let (conv, fc) = (
        net.arch.resolve("conv").unwrap(),
        net.arch.resolve("fc").unwrap(),
    );
    let outs = net.forward_hw(&[0.5; 48], 1, 4, 4, &[conv, fc]).unwrap();
    assert_eq!(outs[1].data.len(), 2);
    let e = net.arch.resolve("logits").unwrap_err().to_string();
    assert!(e.contains("Softplus") && e.contains("/act/Softplus"), "{e}");

    // Between the conv and the pool: the conv runs, the classifier is past it.
    let mid = softplus_before(2);
    let path = write(tmp.path(), "mid.onnx", &onnx_rs::encode(&mid));
    let net = Network::open(path.to_str().unwrap(), None).unwrap();
    let conv = net.arch.resolve("conv").unwrap();
    let outs = net.forward_hw(&[0.5; 48], 1, 4, 4, &[conv]).unwrap();
    assert_eq!((outs[0].c, outs[0].h, outs[0].w), (2, 4, 4));
    for name in ["fc", "logits"] {
        let e = net.arch.resolve(name).unwrap_err().to_string();
        assert!(
            e.contains("Softplus") && e.contains("/act/Softplus"),
            "{name}: {e}"
        );
    }
}

/// A classifier that ends in Softmax: its logits are the Linear before it.
#[test]
fn a_trailing_softmax_leaves_the_logits_to_the_linear_layer() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny(
        image_input(Dimension::Value(4), Dimension::Value(4)),
        3,
        Some(Node {
            attribute: vec![attr_int("axis", 1)],
            ..node("/softmax/Softmax", "Softmax", vec!["logits"], "probs")
        }),
    );
    let path = write(tmp.path(), "softmax.onnx", &onnx_rs::encode(&model));
    let net = Network::open(path.to_str().unwrap(), None).unwrap();
    assert_eq!(net.arch.classes, 2);
    let fc = net.arch.resolve("fc").unwrap();
    assert_eq!(net.arch.resolve("logits").unwrap(), fc);
    // The Softmax layer itself computes probabilities.
    let last = net.arch.nodes.len() - 1;
    let outs = net.forward_hw(&[0.5; 48], 1, 4, 4, &[fc, last]).unwrap();
    let e: Vec<f64> = outs[0].data.iter().map(|&v| (v as f64).exp()).collect();
    for k in 0..2 {
        let want = e[k] / (e[0] + e[1]);
        assert!(
            (outs[1].data[k] as f64 - want).abs() < 1e-6,
            "{:?}",
            outs[1].data
        );
    }
}
