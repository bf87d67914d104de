"""The onnxruntime side of scripts/bench.sh.

Builds an ONNX graph node by node from neurodex's own architecture description
(`bench_forward arch MODEL`, JSON) and the same safetensors weights, checks its logits
against neurodex's on a fixed input, then times it like `bench_forward time`.

usage: peer.py ARCH.json WEIGHTS.safetensors NEURODEX_LOGITS.bin BATCHES RUNS
prints one line per batch: "<batch> <median> <best> <worst>" (images/s); the logits
check goes to stderr.
"""
import json
import math
import struct
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def load_safetensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        start, end = meta["data_offsets"]
        dtype = {"F32": np.float32, "I64": np.int64}[meta["dtype"]]
        out[name] = np.frombuffer(raw[8 + n + start : 8 + n + end], dtype=dtype).reshape(meta["shape"])
    return out


def out_len(length, k, s, before, after, d, ceil):
    span = d * (k - 1) + 1
    num = length + before + after - span
    out = (-(-num // s) if ceil else num // s) + 1
    if ceil and (out - 1) * s >= length + before:
        out -= 1
    return out


def input_batch(n, size):
    k = np.arange(n * 3 * size * size)
    return ((k % 251).astype(np.float32) / np.float32(125.5) - np.float32(1.0)).reshape(n, 3, size, size)


def build(arch, w):
    nodes, inits = [], []
    size = arch["recipe"]["size"]
    shapes = {}
    names = {}

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name))
        return name

    def act(x, a, name):
        if a == "relu":
            nodes.append(helper.make_node("Relu", [x], [name + "_act"]))
            return name + "_act"
        if a == "relu6":
            lo, hi = const(name + "_lo", np.array(0.0)), const(name + "_hi", np.array(6.0))
            nodes.append(helper.make_node("Clip", [x, lo, hi], [name + "_act"]))
            return name + "_act"
        return x

    for i, node in enumerate(arch["nodes"]):
        op = node["op"]
        kind = op["kind"]
        tag = f"n{i}"
        if kind == "input":
            names[i], shapes[i] = "input", (3, size, size)
            continue
        x = names[node["inputs"][0]]
        c, h, wd = shapes[node["inputs"][0]]
        if kind == "conv":
            weight = w[op["weight"] + ".weight"].astype(np.float64)
            out_ch = op["out_ch"]
            bias = w[op["weight"] + ".bias"].astype(np.float64) if op["bias"] else np.zeros(out_ch)
            if op["bn"]:
                bn = op["bn"]
                scale = w[bn + ".weight"] / np.sqrt(w[bn + ".running_var"].astype(np.float64) + op["bn_eps"])
                weight = weight * scale[:, None, None, None]
                bias = (bias - w[bn + ".running_mean"]) * scale + w[bn + ".bias"]
            p = op["pad"]
            nodes.append(
                helper.make_node(
                    "Conv",
                    [x, const(tag + "_w", weight), const(tag + "_b", bias)],
                    [tag],
                    kernel_shape=list(op["kernel"]),
                    strides=list(op["stride"]),
                    pads=[p["top"], p["left"], p["bottom"], p["right"]],
                    dilations=list(op["dilation"]),
                    group=op["groups"],
                )
            )
            y = act(tag, op["act"], tag)
            k, s, d = op["kernel"], op["stride"], op["dilation"]
            shape = (out_ch, out_len(h, k[0], s[0], p["top"], p["bottom"], d[0], False),
                     out_len(wd, k[1], s[1], p["left"], p["right"], d[1], False))
        elif kind == "max_pool":
            p, k, s = op["pad"], op["kernel"], op["stride"]
            nodes.append(helper.make_node("MaxPool", [x], [tag], kernel_shape=list(k), strides=list(s),
                                          pads=[p["top"], p["left"], p["bottom"], p["right"]],
                                          ceil_mode=int(op["ceil_mode"])))
            y = tag
            shape = (c, out_len(h, k[0], s[0], p["top"], p["bottom"], 1, op["ceil_mode"]),
                     out_len(wd, k[1], s[1], p["left"], p["right"], 1, op["ceil_mode"]))
        elif kind == "adaptive_avg_pool":
            oh, ow = op["out"]
            if (oh, ow) == (1, 1):
                nodes.append(helper.make_node("GlobalAveragePool", [x], [tag]))
                y = tag
            elif (oh, ow) == (h, wd):
                y = x  # identity at this input size
            elif h % oh == 0 and wd % ow == 0:
                nodes.append(helper.make_node("AveragePool", [x], [tag], kernel_shape=[h // oh, wd // ow],
                                              strides=[h // oh, wd // ow]))
                y = tag
            else:
                raise SystemExit(f"adaptive pool {h}x{wd} -> {oh}x{ow} not supported by this peer")
            shape = (c, oh, ow)
        elif kind == "add":
            others = [names[j] for j in node["inputs"]]
            nodes.append(helper.make_node("Sum", others, [tag]))
            y = act(tag, op["act"], tag)
            shape = (c, h, wd)
        elif kind == "flatten":
            nodes.append(helper.make_node("Flatten", [x], [tag], axis=1))
            y = tag
            shape = (c * h * wd, 1, 1)
        elif kind == "linear":
            nodes.append(helper.make_node("Gemm", [x, const(tag + "_w", w[op["weight"] + ".weight"]),
                                                  const(tag + "_b", w[op["weight"] + ".bias"])], [tag], transB=1))
            y = act(tag, op["act"], tag)
            shape = (op["out_f"], 1, 1)
        else:
            raise SystemExit(f"unknown op {kind}")
        names[i], shapes[i] = y, shape
    last = names[len(arch["nodes"]) - 1]
    nodes.append(helper.make_node("Identity", [last], ["logits"]))
    graph = helper.make_graph(
        nodes, arch["name"],
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", arch["classes"]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def main():
    arch = json.load(open(sys.argv[1]))
    weights = load_safetensors(sys.argv[2])
    theirs = np.fromfile(sys.argv[3], dtype=np.float32)
    batches = [int(b) for b in sys.argv[4].split(",")]
    runs = int(sys.argv[5])
    model = build(arch, weights)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    size = arch["recipe"]["size"]
    ours = sess.run(None, {"input": input_batch(1, size)})[0].reshape(-1)
    diff = float(np.max(np.abs(ours - theirs)))
    scale = float(np.max(np.abs(ours)))
    print(f"check {arch['name']}: max |logits diff| neurodex vs onnxruntime = {diff:.2e} (logits up to {scale:.2f})",
          file=sys.stderr)
    if not diff <= 1e-3 * max(1.0, scale):
        raise SystemExit(f"{arch['name']}: neurodex and onnxruntime disagree ({diff})")
    for b in batches:
        x = input_batch(b, size)
        sess.run(None, {"input": x})
        rates = []
        for _ in range(runs):
            t = time.perf_counter()
            sess.run(None, {"input": x})
            rates.append(b / (time.perf_counter() - t))
        rates.sort()
        print(f"{b} {rates[len(rates) // 2]:.2f} {rates[-1]:.2f} {rates[0]:.2f}")


if __name__ == "__main__":
    main()
