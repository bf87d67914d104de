#!/usr/bin/env python3
"""Writes the small checkpoints under tests/fixtures/import/ and, next to them, the answer
that torch itself gives for each tensor (expected.json), which tests/import.rs checks exactly.

Needs PyTorch (Debian: apt install python3-torch; run with /usr/bin/python3). Run once from the
repository root; the outputs are committed, so tests do not need torch.
"""
import collections
import json
import os
import pickle
import struct

import torch

OUT = os.path.join("tests", "fixtures", "import")


def state_dict():
    sd = collections.OrderedDict()
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4) * 0.5 - 1.0
    # Two views of one storage: a transpose (stride (1, 4)) and a slice at offset 5.
    sd["conv.weight"] = base.t()
    sd["conv.bias"] = base[1:, 1:3]
    sd["perm.weight"] = (torch.arange(24, dtype=torch.float32) / 7).reshape(2, 3, 2, 2).permute(0, 2, 3, 1)
    sd["half.bias"] = torch.tensor([0.5, -1.25, 65504.0, 1e-4, -0.0], dtype=torch.float16)
    sd["double.scale"] = torch.tensor([[0.1, 1.0 / 3.0], [1e-30, -2.5e10]], dtype=torch.float64)
    sd["bf16.weight"] = torch.tensor([1.5, -2.0, 3.140625], dtype=torch.bfloat16)
    sd["empty.weight"] = torch.zeros(0, 3)
    sd["scalar"] = torch.tensor(4.25)
    sd["bn.num_batches_tracked"] = torch.tensor(12345678901, dtype=torch.int64)
    return sd


def expected(sd):
    out = collections.OrderedDict()
    for name, t in sd.items():
        floating = t.is_floating_point()
        conv = t.float() if floating else t.long()
        out[name] = {
            "dtype": "f32" if floating else "i64",
            "shape": list(t.shape),
            # torch's own conversion to f32, row-major; Python floats print f32 values exactly.
            "values": conv.contiguous().flatten().tolist(),
        }
    return out


def safetensors_bytes(tensors):
    """A hand-written safetensors file (no safetensors package needed): header, then data."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.contiguous().numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
        kind = {torch.float32: "F32", torch.float16: "F16", torch.float64: "F64", torch.int64: "I64", torch.bfloat16: "BF16"}[t.dtype]
        header[name] = {"dtype": kind, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def main():
    os.makedirs(OUT, exist_ok=True)
    sd = state_dict()
    torch.save(sd, os.path.join(OUT, "tiny-legacy.pth"), _use_new_zipfile_serialization=False)
    torch.save(sd, os.path.join(OUT, "tiny-zip.pth"))

    # A training checkpoint: DataParallel names, nn.Parameter values, the state dict nested.
    wrapped = collections.OrderedDict()
    for name, t in sd.items():
        wrapped["module." + name] = torch.nn.Parameter(t, requires_grad=False) if t.is_floating_point() else t
    torch.save({"epoch": 3, "state_dict": wrapped, "best": 0.5}, os.path.join(OUT, "wrapped-legacy.pth"),
               _use_new_zipfile_serialization=False)
    torch.save({"epoch": 3, "model": wrapped}, os.path.join(OUT, "wrapped-zip.pth"))

    with open(os.path.join(OUT, "tiny.safetensors"), "wb") as f:
        f.write(safetensors_bytes(collections.OrderedDict((k, v) for k, v in sd.items() if v.numel() > 0)))

    # Valid torch files that are not state dicts.
    torch.save({"epoch": 3, "lr": 0.1}, os.path.join(OUT, "no-tensors.pth"))
    with open(os.path.join(OUT, "plain.pickle"), "wb") as f:
        pickle.dump([1, 2, 3], f, protocol=2)

    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"torch": torch.__version__, "tensors": expected(sd)}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
