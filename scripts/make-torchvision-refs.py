#!/usr/bin/env python3
"""Reference activations of torchvision's AlexNet, VGG-16, ResNet-18 and ResNet-50 for
neurodex's parity tests (tests/torchvision.rs).

Every state_dict entry is set from a closed formula (no download, no randomness), so the
Rust test can rebuild the same weights; the input is a formula too. For each model this
writes into tests/fixtures/torchvision/:

  <model>.safetensors      taps of an eval-mode forward at a small input size, and the logits
  <model>_state_dict.txt   every state_dict name and shape, in torchvision's order
  <model>_shapes224.txt    output shape (C H W) of every node neurodex names, at 224x224

Run with Debian's torch (apt install python3-torch python3-torchvision):
    /usr/bin/python3 scripts/make-torchvision-refs.py
The formulas must stay in step with `tests/torchvision.rs`.
"""

import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torchvision.models as tvm

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "torchvision")

# Input side per model: small to keep the fixtures and the Rust test light, but large enough
# that every output is non-empty. AlexNet at 96 leaves pool5 at 2x2, which the adaptive
# average pool must upsample to 6x6; VGG at 72 meets an odd side (9) at pool4; ResNet at 80
# gives layer4 an odd input (5).
SIDES = {"alexnet": 96, "vgg16": 72, "resnet18": 80, "resnet50": 80}

# Gain on the 1/sqrt(fan_in) weight scale. Uniform [-1, 1) has mean square 1/3, so sqrt(6)
# is He initialisation; chosen per model so that activations stay O(1) through the depth.
GAINS = {"alexnet": 2.45, "vgg16": 2.45, "resnet18": 2.0, "resnet50": 2.0}

# A stored tap keeps at most this many numbers of its full tensor (a prefix of channels)
# plus its per-channel spatial mean, which covers every channel.
MAX_STORED = 2048


def name_hash(name):
    return sum(name.encode())


M64 = (1 << 64) - 1


def uniform(n, h):
    """n values in [-1, 1): splitmix64 of (k * golden + h * c1), top 53 bits as a fraction.

    Integer arithmetic, so numpy and Rust agree bit for bit; a hash (unlike sin(a*k + b),
    which makes every weight tensor rank 2) keeps the channels of a layer distinct.
    """
    out = np.empty(n, dtype=np.float64)
    seed = np.uint64((h * 0xBF58476D1CE4E5B9) & M64)
    with np.errstate(over="ignore"):
        for start in range(0, n, 1 << 24):
            k = np.arange(start, min(n, start + (1 << 24)), dtype=np.uint64)
            x = k * np.uint64(0x9E3779B97F4A7C15) + seed
            x ^= x >> np.uint64(30)
            x *= np.uint64(0xBF58476D1CE4E5B9)
            x ^= x >> np.uint64(27)
            x *= np.uint64(0x94D049BB133111EB)
            x ^= x >> np.uint64(31)
            out[start:start + len(k)] = (x >> np.uint64(11)).astype(np.float64) * (2.0 / 2**53) - 1.0
    return out


def formula(name, shape, gain):
    """The value of every state_dict entry: computed in float64, cast to float32."""
    n = int(np.prod(shape)) if len(shape) else 1
    u = uniform(n, name_hash(name))
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "weight" and len(shape) >= 2:  # conv or linear
        fan_in = int(np.prod(shape[1:]))
        v = u * (gain / math.sqrt(fan_in))
    elif leaf == "weight":  # BatchNorm
        v = 1.0 + 0.1 * u
    elif leaf == "bias":
        v = 0.1 * u
    elif leaf == "running_mean":
        v = 0.1 * u
    elif leaf == "running_var":
        v = 1.0 + 0.2 * np.abs(u)
    else:
        raise ValueError(f"no formula for {name}")
    return v.astype(np.float32).reshape(shape)


def model_input(side):
    n = 3 * side * side
    x = 0.8 * np.sin(0.013 * np.arange(n, dtype=np.float64))
    return torch.from_numpy(x.astype(np.float32).reshape(1, 3, side, side))


def taps_of(model_name, model):
    """neurodex node name -> (torchvision module path, apply ReLU to its output).

    A conv that neurodex fuses with its BatchNorm and ReLU is read at the BatchNorm (or the
    conv) and rectified here, because torchvision's ReLUs run in place and ResNet reuses
    one ReLU module several times.
    """
    taps = {}
    if model_name in ("alexnet", "vgg16"):
        for i, m in enumerate(model.features):
            if isinstance(m, torch.nn.Conv2d):
                taps[f"features.{i}"] = (f"features.{i}", True)
            elif isinstance(m, torch.nn.MaxPool2d):
                taps[f"features.{i}"] = (f"features.{i}", False)
        taps["avgpool"] = ("avgpool", False)
        linears = [i for i, m in enumerate(model.classifier) if isinstance(m, torch.nn.Linear)]
        for i in linears:
            taps[f"classifier.{i}"] = (f"classifier.{i}", i != linears[-1])
        return taps
    taps["conv1"] = ("bn1", True)
    taps["maxpool"] = ("maxpool", False)
    for stage in range(1, 5):
        for b, block in enumerate(getattr(model, f"layer{stage}")):
            p = f"layer{stage}.{b}"
            convs = [c for c in ("conv1", "conv2", "conv3") if hasattr(block, c)]
            for c in convs:
                taps[f"{p}.{c}"] = (f"{p}.bn{c[-1]}", c != convs[-1])
            if block.downsample is not None:
                taps[f"{p}.downsample"] = (f"{p}.downsample", False)
            taps[p] = (p, False)
    taps["avgpool"] = ("avgpool", False)
    taps["fc"] = ("fc", False)
    return taps


def run(model, taps, x):
    """Eval-mode forward recording every tap (flattened to [N, F, 1, 1] when 2-D)."""
    modules = dict(model.named_modules())
    seen = {}
    hooks = []
    for node, (path, relu) in taps.items():
        def hook(_m, _inp, out, node=node, relu=relu):
            y = out.detach().clone()
            if relu:
                y = torch.relu(y)
            if y.dim() == 2:
                y = y[:, :, None, None]
            seen[node] = y
        hooks.append(modules[path].register_forward_hook(hook))
    with torch.no_grad():
        logits = model(x)
    for h in hooks:
        h.remove()
    return seen, logits


def write_safetensors(path, tensors):
    """safetensors by hand: u64 LE header length, JSON header, raw little-endian f32 data."""
    header = {}
    blobs = []
    offset = 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)


# Taps whose values go into the fixture (the shapes file lists them all).
STORED = {
    "alexnet": ["features.0", "features.2", "features.3", "features.5", "features.6", "features.8",
                "features.10", "features.12", "avgpool", "classifier.1", "classifier.4"],
    "vgg16": ["features.0", "features.2", "features.4", "features.14", "features.16", "features.21",
              "features.28", "features.30", "avgpool", "classifier.0", "classifier.3"],
    "resnet18": ["conv1", "maxpool", "layer1.0.conv1", "layer1.0", "layer1.1", "layer2.0.conv1",
                 "layer2.0.downsample", "layer2.0", "layer3.1", "layer4.0", "layer4.1", "avgpool"],
    "resnet50": ["conv1", "maxpool", "layer1.0.conv1", "layer1.0.conv2", "layer1.0.conv3",
                 "layer1.0.downsample", "layer1.0", "layer2.0.conv2", "layer2.0", "layer3.5",
                 "layer4.0.downsample", "layer4.2", "avgpool"],
}


def make(model_name):
    model = getattr(tvm, model_name)(weights=None).eval()
    gain = GAINS[model_name]
    state = model.state_dict()
    lines = []
    new_state = {}
    for name, value in state.items():
        shape = tuple(value.shape)
        lines.append(f"{name} {'x'.join(map(str, shape)) or 'scalar'}")
        if name.endswith("num_batches_tracked"):
            new_state[name] = torch.zeros_like(value)  # unused at eval
        else:
            new_state[name] = torch.from_numpy(formula(name, shape, gain))
    model.load_state_dict(new_state)
    with open(os.path.join(OUT, f"{model_name}_state_dict.txt"), "w") as f:
        f.write(f"# torchvision {model_name} state_dict: name, shape (num_batches_tracked is unused at eval)\n")
        f.write("\n".join(lines) + "\n")

    taps = taps_of(model_name, model)

    # Shapes at the recipe's 224x224.
    seen, logits = run(model, taps, torch.zeros(1, 3, 224, 224))
    with open(os.path.join(OUT, f"{model_name}_shapes224.txt"), "w") as f:
        f.write(f"# torchvision {model_name} at 1x3x224x224: node, C H W (linear outputs as F 1 1)\n")
        for node in taps:
            c, h, w = seen[node].shape[1:]
            f.write(f"{node} {c} {h} {w}\n")

    side = SIDES[model_name]
    x = model_input(side)
    seen, logits = run(model, taps, x)
    out = {}
    report = []
    for node in STORED[model_name]:
        y = seen[node][0].numpy()
        c, h, w = y.shape
        assert h > 0 and w > 0, f"{model_name} {node}: empty output at {side}"
        keep = max(1, min(c, MAX_STORED // (h * w)))
        out[node] = y[:keep]
        out[node + ".mean"] = y.mean(axis=(1, 2))
        report.append(f"{node} {c}x{h}x{w} rms {float(np.sqrt((y.astype(np.float64) ** 2).mean())):.3g}")
    out["logits"] = logits[0].numpy()
    out["input"] = x[0].numpy()[:, :2, :]  # the first two rows, to pin the input formula
    path = os.path.join(OUT, f"{model_name}.safetensors")
    write_safetensors(path, out)
    lg = logits[0].numpy()
    print(f"{model_name} @ {side}: {os.path.getsize(path)} bytes, logits std {lg.std():.3g} "
          f"range [{lg.min():.3g}, {lg.max():.3g}]")
    for r in report:
        print("   ", r)


def main():
    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    for name in sys.argv[1:] or SIDES:
        make(name)


if __name__ == "__main__":
    main()
