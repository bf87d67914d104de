#!/usr/bin/env python3
"""torchvision classification CNNs exported to ONNX, with onnxruntime's answers, for
neurodex's ONNX importer test (tests/onnx_zoo.rs).

Each model gets random weights and randomised BatchNorm statistics (seeded), is exported
at a fixed input size with torch.onnx.export, and run by onnxruntime on a seeded input.
Into OUT (default: ~/.cache/neurodex/onnx-zoo-2; bump the number when what is
stored changes) go, per model and opset:

  <model>-op<opset>.onnx           the exported graph and its weights
  <model>-op<opset>.ref.safetensors  "input", "logits" and "tap.<module path>" for three
                                    module paths: the output of the last ONNX node inside
                                    that module, as onnxruntime computes it (the metadata
                                    names that node's operator)
  torchvision-demo.safetensors     "pixels", u8 [N, 224, 224, 3]: torchvision.transforms'
                                    Resize(256) and CenterCrop(224) of each photo of
                                    datasets/demo opened by PIL (metadata "files": their
                                    paths under datasets/demo/images, in order), for
                                    tests/preprocess_torchvision.rs

"opmix" is no torchvision model: a small network written here to exercise operators the
torchvision CNNs do not (LeakyRelu, Split, Pad, scalar Sub/Div, a channel normalisation
written out, GELU on a permuted tensor, Softmax over channels, ReduceMean).

Nothing here is committed (vgg16_bn alone is 550 MB); CI makes it once and keeps it.
Run with Debian's torch and onnx (apt install python3-torch python3-torchvision
python3-onnx) and onnxruntime from PyPI:
    /usr/bin/python3 scripts/make-onnx-zoo.py [OUT] [MODEL ...]
"""

import json
import os
import struct
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision.models as tvm

# Model -> (input side, three module paths to compare besides the logits).
ZOO = {
    "resnet18": (224, ["layer1", "layer3.1", "layer4"]),
    "resnet50": (224, ["layer1.0", "layer2", "layer4.2"]),
    "vgg16_bn": (224, ["features.5", "features.22", "features.43"]),
    "alexnet": (224, ["features.2", "features.10", "classifier.5"]),
    "mobilenet_v2": (224, ["features.2", "features.10", "features.18"]),
    "mobilenet_v3_large": (224, ["features.2", "features.9", "features.16"]),
    "efficientnet_b0": (224, ["features.1", "features.4", "features.8"]),
    "densenet121": (224, ["features.denseblock1", "features.transition2", "features.norm5"]),
    "googlenet": (224, ["maxpool2", "inception4a", "inception5b"]),
    "inception_v3": (299, ["Conv2d_4a_3x3", "Mixed_5d", "Mixed_7c"]),
    "squeezenet1_1": (224, ["features.3", "features.7", "features.12"]),
    "shufflenet_v2_x1_0": (224, ["maxpool", "stage3", "conv5"]),
    "regnet_y_400mf": (224, ["stem", "trunk_output.block2", "trunk_output.block4"]),
    "convnext_tiny": (224, ["features.1", "features.4", "features.7"]),
}
# Every model at opset 13; these also at 17 (torch's newest here).
OPSET17 = ["resnet18", "mobilenet_v2", "convnext_tiny", "opmix"]
ZOO["opmix"] = (64, ["conv", "norm", "conv3"])


class ChannelNorm(torch.nn.Module):
    """Normalisation over channels written out, as people do by hand (not LayerNorm)."""

    def forward(self, x):
        m = x.mean(1, keepdim=True)
        v = ((x - m) ** 2).mean(1, keepdim=True)
        return (x - m) / torch.sqrt(v + 1e-5)


class OpMix(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.pad = torch.nn.ZeroPad2d((1, 2, 0, 1))
        self.conv = torch.nn.Conv2d(3, 16, 3, stride=2)
        self.act = torch.nn.LeakyReLU(0.1)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.norm = ChannelNorm()
        self.conv3 = torch.nn.Conv2d(16, 24, 1)
        self.head = torch.nn.Linear(24, 10)

    def forward(self, x):
        x = self.act(self.conv(self.pad(x)))
        a, b = torch.split(x, 8, dim=1)
        a = self.conv2(a) * torch.sigmoid(a)
        b = b / 2.0 - 0.5
        x = self.norm(torch.cat([a, b], 1))
        x = self.conv3(x)
        x = torch.nn.functional.gelu(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = x * torch.softmax(x, dim=1)
        return self.head(x.mean((2, 3)))


def torchvision_demo(out):
    """What torchvision.transforms makes of each demo photo, before ToTensor's /255."""
    path = os.path.join(out, "torchvision-demo.safetensors")
    if os.path.exists(path):
        return
    from PIL import Image
    import torchvision.transforms as T
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "datasets", "demo", "images")
    files = sorted(os.path.relpath(os.path.join(d, f), root)
                   for d, _, fs in os.walk(root) for f in fs
                   if f.lower().endswith((".jpg", ".jpeg", ".png")))
    t = T.Compose([T.Resize(256), T.CenterCrop(224)])
    pixels = np.stack([np.asarray(t(Image.open(os.path.join(root, f)).convert("RGB")))
                       for f in files])
    write_safetensors(path, {"pixels": pixels}, {"files": json.dumps(files)})
    print(f"torchvision-demo: {len(files)} photos")


def module_path(name):
    """The module path of an ONNX node torch named, as neurodex reads it
    (src/import/onnx.rs `module_path`): a scope is an attribute name, or the scope
    before it and an index (a Sequential's child: `layer1` then `layer1.1`)."""
    parts = [p for p in name.split("/") if p]
    scopes = parts[:-1] if len(parts) > 1 else parts
    path, last = "", ""
    for s in scopes:
        if not path:
            path = s
        elif s.startswith(last + "."):
            path += s[len(last):]
        else:
            path += "." + s
        last = s
    return path


def randomise(model, seed):
    """Random weights (torchvision's own initialisation, seeded), BatchNorm statistics
    and affine terms drawn so that folding them matters, LayerNorm affine terms and
    layer scales drawn so that they are not the identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_((torch.rand(c, generator=g) - 0.5) * 0.4)
            m.running_var.copy_(torch.rand(c, generator=g) * 1.0 + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) * 1.0 + 0.5)
            m.bias.data.copy_((torch.rand(c, generator=g) - 0.5) * 0.4)
        elif isinstance(m, torch.nn.LayerNorm):
            c = m.normalized_shape[0]
            m.weight.data.copy_(torch.rand(c, generator=g) * 1.0 + 0.5)
            m.bias.data.copy_((torch.rand(c, generator=g) - 0.5) * 0.4)
        # ConvNeXt's layer scale starts at 1e-6, which would hide every block's branch.
        if hasattr(m, "layer_scale") and isinstance(m.layer_scale, torch.nn.Parameter):
            m.layer_scale.data.copy_(torch.rand(m.layer_scale.shape, generator=g) * 0.5 + 0.25)


def write_safetensors(path, tensors, metadata):
    """safetensors by hand: u64 LE header length, JSON header, raw little-endian f32 data."""
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, array in tensors.items():
        u8 = array.dtype == np.uint8
        data = np.ascontiguousarray(array, dtype="u1" if u8 else "<f4").tobytes()
        header[name] = {"dtype": "U8" if u8 else "F32", "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(path + ".part", "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for b in blobs:
            f.write(b)
    os.replace(path + ".part", path)


def make(name, opset, out):
    side, taps = ZOO[name]
    stem = os.path.join(out, f"{name}-op{opset}")
    if os.path.exists(stem + ".ref.safetensors"):
        return
    torch.manual_seed(1)
    kwargs = {"aux_logits": False, "init_weights": True} if name in ("googlenet", "inception_v3") else {}
    model = OpMix() if name == "opmix" else getattr(tvm, name)(weights=None, **kwargs)
    randomise(model, 2)
    model.eval()
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.onnx.export(model, x, stem + ".onnx.part", opset_version=opset,
                          input_names=["input"], output_names=["logits"],
                          do_constant_folding=True)
    g = onnx.load(stem + ".onnx.part")
    # The tap tensors as extra outputs of a copy for onnxruntime (the file stays as exported).
    wanted, op = {}, {}
    for node in g.graph.node:
        p = module_path(node.name)
        for t in taps:
            if p == t or p.startswith(t + "."):
                wanted[t] = node.output[0]
                op[t] = node.op_type
    missing = [t for t in taps if t not in wanted]
    if missing:
        raise SystemExit(f"{name}: no nodes in modules {missing}")
    probe = onnx.ModelProto()
    probe.CopyFrom(g)
    for t in taps:
        probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(wanted[t]))
    sess = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    names = ["logits"] + [wanted[t] for t in taps]
    outs = sess.run(names, {"input": x.numpy()})
    refs = {"input": x.numpy(), "logits": outs[0]}
    for t, v in zip(taps, outs[1:]):
        refs[f"tap.{t}"] = v
    os.replace(stem + ".onnx.part", stem + ".onnx")
    # Which operator made each tap: a conv's output is before the activation after it.
    write_safetensors(stem + ".ref.safetensors", refs, {f"tap.{t}": op[t] for t in taps})
    print(f"{name} opset {opset}: {os.path.getsize(stem + '.onnx') / 1e6:.1f} MB, taps "
          + ", ".join(f"{t}={wanted[t]}" for t in taps))


def main():
    args = sys.argv[1:]
    out = args[0] if args else os.path.expanduser("~/.cache/neurodex/onnx-zoo-2")
    names = args[1:] or list(ZOO)
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    torchvision_demo(out)
    for name in names:
        make(name, 13, out)
        if name in OPSET17:
            make(name, 17, out)


if __name__ == "__main__":
    main()
