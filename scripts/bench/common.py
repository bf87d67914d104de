"""What the peers of scripts/bench.sh share: reading safetensors, the fixed test input,
the conv parameters with BatchNorm folded in, output sizes, and the line protocol the
driver (drive.py) speaks to every runtime.

Needs numpy only, so it runs both in the onnxruntime venv and under Debian's python3
(PyTorch).

Protocol (one command per stdin line, one answer per stdout line):
  logits PATH      write the logits of the fixed 1-image input to PATH (f32 LE); answer "ok"
  time B K R       one untimed forward (warms caches after another runtime ran), then R timed
                   runs of K forwards of a batch of B; answer R images/s figures
  grad B K R N U   the same for forward + backward: the input gradient of the maximum of
                   unit U of node N (index into the description's nodes), summed over the batch
  quit
The peer prints "ready" once the network is built.
"""
import json
import struct
import sys
import time

import numpy as np


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


def input_batch(n, size):
    """Deterministic input in [-1, 1): the formula of examples/bench_forward.rs."""
    k = np.arange(n * 3 * size * size)
    return ((k % 251).astype(np.float32) / np.float32(125.5) - np.float32(1.0)).reshape(n, 3, size, size)


def out_len(length, k, s, before, after, d, ceil):
    """Output side of a conv or pool along one axis (torch semantics)."""
    span = d * (k - 1) + 1
    num = length + before + after - span
    out = (-(-num // s) if ceil else num // s) + 1
    if ceil and (out - 1) * s >= length + before:
        out -= 1
    return out


def folded_conv(op, w):
    """Weight and bias of a described conv with its BatchNorm folded in (in float64, as
    neurodex folds at load time), as float32."""
    weight = w[op["weight"] + ".weight"].astype(np.float64)
    bias = w[op["weight"] + ".bias"].astype(np.float64) if op["bias"] else np.zeros(op["out_ch"])
    if op["bn"]:
        bn = op["bn"]
        scale = w[bn + ".weight"] / np.sqrt(w[bn + ".running_var"].astype(np.float64) + op["bn_eps"])
        weight = weight * scale[:, None, None, None]
        bias = (bias - w[bn + ".running_mean"]) * scale + w[bn + ".bias"]
    return weight.astype(np.float32), bias.astype(np.float32)


def shapes(arch):
    """(C, H, W) per node at the recipe's size."""
    size = arch["recipe"]["size"]
    out = []
    for node in arch["nodes"]:
        op = node["op"]
        kind = op["kind"]
        if kind == "input":
            out.append((3, size, size))
            continue
        c, h, wd = out[node["inputs"][0]]
        if kind in ("conv", "max_pool"):
            p, k, s = op["pad"], op["kernel"], op["stride"]
            d = op.get("dilation", (1, 1))
            ceil = op.get("ceil_mode", False)
            out.append((op.get("out_ch", c),
                        out_len(h, k[0], s[0], p["top"], p["bottom"], d[0], ceil),
                        out_len(wd, k[1], s[1], p["left"], p["right"], d[1], ceil)))
        elif kind == "adaptive_avg_pool":
            out.append((c, *op["out"]))
        elif kind == "add":
            out.append((c, h, wd))
        elif kind == "flatten":
            out.append((c * h * wd, 1, 1))
        elif kind == "linear":
            out.append((op["out_f"], 1, 1))
        else:
            raise SystemExit(f"unknown op {kind}")
    return out


def serve(forward, size, gradient=None):
    """Answer the driver's commands on stdin; `forward(x)` runs the network on a batch
    (numpy [B,3,S,S] float32) and returns the logits as numpy; `gradient(x, node, unit)`,
    where the runtime has one, returns the input gradient of that unit's maximum."""
    inputs = {}
    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        if cmd[0] == "logits":
            np.asarray(forward(input_batch(1, size)), dtype="<f4").reshape(-1).tofile(cmd[1])
            print("ok", flush=True)
        elif cmd[0] in ("time", "grad") and (cmd[0] == "time" or gradient):
            b, k, r = (int(v) for v in cmd[1:4])
            x = inputs.setdefault(b, input_batch(b, size))
            if cmd[0] == "time":
                run = forward
            else:
                node, unit = int(cmd[4]), int(cmd[5])
                run = lambda x: gradient(x, node, unit)  # noqa: E731
            run(x)
            rates = []
            for _ in range(r):
                t = time.perf_counter()
                for _ in range(k):
                    run(x)
                rates.append(b * k / (time.perf_counter() - t))
            print(" ".join(f"{v:.3f}" for v in rates), flush=True)
        else:
            print(f"error: unknown command {cmd[0]}", flush=True)
