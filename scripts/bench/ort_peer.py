"""The onnxruntime side of scripts/bench.sh.

Builds an ONNX graph node by node from neurodex's own architecture description
(`bench_forward arch MODEL`, JSON) and the same safetensors weights (BatchNorm folded
into the convs, asymmetric pads explicit, Clip(0, 6) for ReLU6), on 2 intra-op threads
and 1 inter-op thread, then answers the driver (see common.py).

usage: ort_peer.py ARCH.json WEIGHTS.safetensors                serve the driver
       ort_peer.py ARCH.json WEIGHTS.safetensors profile B REPS per-node milliseconds
ONNX nodes carry neurodex's node names, so a profile lines up with `bench_forward layers`.
"""
import collections
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from common import folded_conv, input_batch, load_safetensors, serve, shapes


def build(arch, w, taps=None):
    """The ONNX model of `arch` with weights `w`. Its one output is the logits; given
    `taps` (node names), the outputs are instead those nodes' values before their
    activation (the conv output or residual sum, as `neurodex index` ranks them), named
    after the nodes, and what lies past the deepest tap is left out of the graph."""
    nodes, inits = [], []
    size = arch["recipe"]["size"]
    dims = shapes(arch)
    names = {}
    pre = {}  # node name -> its value before the activation

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name))
        return name

    def act(x, a, name):
        if a == "relu":
            nodes.append(helper.make_node("Relu", [x], [name + "/act"], name=name + "/act"))
            return name + "/act"
        if a == "relu6":
            lo, hi = const(name + "/lo", np.array(0.0)), const(name + "/hi", np.array(6.0))
            nodes.append(helper.make_node("Clip", [x, lo, hi], [name + "/act"], name=name + "/act"))
            return name + "/act"
        return x

    for i, node in enumerate(arch["nodes"]):
        op = node["op"]
        kind = op["kind"]
        tag = node["name"]
        if kind == "input":
            names[i] = "input"
            continue
        x = names[node["inputs"][0]]
        c, h, wd = dims[node["inputs"][0]]
        y = tag
        if kind == "conv":
            weight, bias = folded_conv(op, w)
            p = op["pad"]
            nodes.append(helper.make_node(
                "Conv", [x, const(tag + "/w", weight), const(tag + "/b", bias)], [tag], name=tag,
                kernel_shape=list(op["kernel"]), strides=list(op["stride"]),
                pads=[p["top"], p["left"], p["bottom"], p["right"]],
                dilations=list(op["dilation"]), group=op["groups"]))
            y = act(tag, op["act"], tag)
        elif kind == "max_pool":
            p = op["pad"]
            nodes.append(helper.make_node(
                "MaxPool", [x], [tag], name=tag, kernel_shape=list(op["kernel"]),
                strides=list(op["stride"]), pads=[p["top"], p["left"], p["bottom"], p["right"]],
                ceil_mode=int(op["ceil_mode"])))
        elif kind == "adaptive_avg_pool":
            oh, ow = op["out"]
            if (oh, ow) == (1, 1):
                nodes.append(helper.make_node("GlobalAveragePool", [x], [tag], name=tag))
            elif (oh, ow) == (h, wd):
                y = x  # identity at this input size
            elif h % oh == 0 and wd % ow == 0:
                nodes.append(helper.make_node("AveragePool", [x], [tag], name=tag,
                                              kernel_shape=[h // oh, wd // ow], strides=[h // oh, wd // ow]))
            else:
                raise SystemExit(f"adaptive pool {h}x{wd} -> {oh}x{ow} not supported by this peer")
        elif kind == "add":
            nodes.append(helper.make_node("Sum", [names[j] for j in node["inputs"]], [tag], name=tag))
            y = act(tag, op["act"], tag)
        elif kind == "flatten":
            nodes.append(helper.make_node("Flatten", [x], [tag], name=tag, axis=1))
        elif kind == "linear":
            nodes.append(helper.make_node(
                "Gemm", [x, const(tag + "/w", w[op["weight"] + ".weight"]),
                         const(tag + "/b", w[op["weight"] + ".bias"])], [tag], name=tag, transB=1))
            y = act(tag, op["act"], tag)
        else:
            raise SystemExit(f"unknown op {kind}")
        names[i] = y
        pre[tag] = tag if kind in ("conv", "add", "linear") else y
    if taps:
        outputs, index = [], {n["name"]: i for i, n in enumerate(arch["nodes"])}
        for t in taps:
            if t not in index:
                raise SystemExit(f"no node {t!r} in {arch['name']}")
            c, h, wd = dims[index[t]]
            outputs.append(helper.make_tensor_value_info(pre[t], TensorProto.FLOAT, ["N", c, h, wd]))
        nodes, inits = prune(nodes, inits, [pre[t] for t in taps])
    else:
        nodes.append(helper.make_node("Identity", [names[len(arch["nodes"]) - 1]], ["logits"]))
        outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", arch["classes"]])]
    graph = helper.make_graph(
        nodes, arch["name"],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def prune(nodes, inits, wanted):
    """Only the nodes (and initializers) that the tensors `wanted` depend on."""
    need, keep = set(wanted), []
    for node in reversed(nodes):
        if need.intersection(node.output):
            keep.append(node)
            need.update(node.input)
    return keep[::-1], [t for t in inits if t.name in need]


def session(model, profile=False):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # onnxruntime's default: idle workers spin a while before sleeping (switching that off
    # costs it a quarter at batch 1); the driver pauses between runtimes so they settle.
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(os.environ.get("TMPDIR", "/tmp"), "neurodex-ort")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def profile(arch, sess, batch, reps):
    """Milliseconds per neurodex node (activations fused by onnxruntime count with their
    conv), median over `reps` runs after one warm-up."""
    x = input_batch(batch, arch["recipe"]["size"])
    for _ in range(reps + 1):
        sess.run(None, {"input": x})
    events = json.load(open(sess.end_profiling()))
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")[1:]
    known = {n["name"] for n in arch["nodes"]}
    per = collections.defaultdict(lambda: [0.0] * len(runs))
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        r = next((k for k, (a, b) in enumerate(runs) if a <= e["ts"] <= b), None)
        if r is None:
            continue
        name = e["name"][: -len("_kernel_time")].removeprefix("fused ")
        # Fused nodes keep the original name ("fused <name>", "<name>/act", "<name>_...").
        while name and name not in known:
            name = name[:-1]
        per[name or e["name"]][r] += e["dur"] / 1000
    for name, totals in per.items():
        totals = sorted(totals)
        print(f"{name} {totals[len(totals) // 2]:.3f}")


def main():
    arch = json.load(open(sys.argv[1]))
    model = build(arch, load_safetensors(sys.argv[2]))
    if len(sys.argv) > 3 and sys.argv[3] == "profile":
        profile(arch, session(model, profile=True), int(sys.argv[4]), int(sys.argv[5]))
        return
    sess = session(model)
    serve(lambda x: sess.run(None, {"input": x})[0], arch["recipe"]["size"])


if __name__ == "__main__":
    main()
