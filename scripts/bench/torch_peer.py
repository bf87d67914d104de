"""The PyTorch side of scripts/bench.sh (optional: run by a python whose `import torch`
works, e.g. Debian's /usr/bin/python3 with python3-torch).

Runs neurodex's architecture description (`bench_forward arch MODEL`, JSON) with
torch.nn.functional on the same safetensors weights, BatchNorm folded into the convs
like the other two runtimes, on 2 threads, then answers the driver (see common.py).

usage: torch_peer.py ARCH.json WEIGHTS.safetensors
"""
import json
import sys

import torch
import torch.nn.functional as F

from common import folded_conv, load_safetensors, serve


def build(arch, w):
    """A list of steps (node index, function of the outputs so far)."""
    steps = []

    def act(a):
        return {"none": lambda t: t, "relu": F.relu, "relu6": F.relu6}[a]

    for i, node in enumerate(arch["nodes"]):
        op, src = node["op"], node["inputs"]
        kind = op["kind"]
        if kind == "input":
            continue
        if kind == "conv":
            weight, bias = (torch.from_numpy(a.copy()) for a in folded_conv(op, w))
            p = op["pad"]
            sym = p["top"] == p["bottom"] and p["left"] == p["right"]
            # torch pads both sides alike; TF-style "SAME" pads need an explicit F.pad.
            pre = (lambda t: t) if sym else (lambda t, p=p: F.pad(t, (p["left"], p["right"], p["top"], p["bottom"])))
            pad = (p["top"], p["left"]) if sym else 0
            f = (lambda o, s=src[0], W=weight, B=bias, pre=pre, pad=pad, op=op, a=act(op["act"]):
                 a(F.conv2d(pre(o[s]), W, B, tuple(op["stride"]), pad, tuple(op["dilation"]), op["groups"])))
        elif kind == "max_pool":
            p = op["pad"]
            if p["top"] != p["bottom"] or p["left"] != p["right"]:
                raise SystemExit("asymmetric max-pool padding not supported by this peer")
            f = (lambda o, s=src[0], op=op, pad=(p["top"], p["left"]):
                 F.max_pool2d(o[s], tuple(op["kernel"]), tuple(op["stride"]), pad, ceil_mode=op["ceil_mode"]))
        elif kind == "adaptive_avg_pool":
            f = lambda o, s=src[0], out=tuple(op["out"]): F.adaptive_avg_pool2d(o[s], out)
        elif kind == "add":
            def f(o, src=src, a=act(op["act"])):
                acc = o[src[0]]
                for j in src[1:]:
                    acc = acc + o[j]
                return a(acc)
        elif kind == "flatten":
            f = lambda o, s=src[0]: torch.flatten(o[s], 1)
        elif kind == "linear":
            W = torch.from_numpy(w[op["weight"] + ".weight"].copy())
            B = torch.from_numpy(w[op["weight"] + ".bias"].copy())
            f = lambda o, s=src[0], W=W, B=B, a=act(op["act"]): a(F.linear(o[s], W, B))
        else:
            raise SystemExit(f"unknown op {kind}")
        steps.append((i, f))
    return steps


def main():
    torch.set_num_threads(2)
    arch = json.load(open(sys.argv[1]))
    steps = build(arch, load_safetensors(sys.argv[2]))

    def forward(x):
        with torch.inference_mode():
            outs = {0: torch.from_numpy(x)}
            for i, f in steps:
                outs[i] = f(outs)
            return outs[steps[-1][0]].numpy()

    def gradient(x, node, unit):
        """Autograd's input gradient of unit `unit`'s maximum at node `node`."""
        xi = torch.from_numpy(x).requires_grad_(True)
        outs = {0: xi}
        for i, f in steps:
            if i > node:
                break
            outs[i] = f(outs)
        y = outs[node]
        y = y[:, unit].amax(dim=(1, 2)) if y.dim() == 4 else y[:, unit]
        y.sum().backward()
        return xi.grad.numpy()

    serve(forward, arch["recipe"]["size"], gradient)


if __name__ == "__main__":
    main()
