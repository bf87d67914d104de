"""The input side of peer_index.py alone, on one core: PIL decoding (file to upright RGB)
and the recipe's crop + resize, timed apart, as examples/decode_only.rs times neurodex's.

usage: pil_decode.py ARCH.json DIR N [REPEAT=3]
Prints the best of REPEAT rounds over the first N image files of DIR:
  decode: N images, D images/s per core (mean K kpx, M MP/s)
  resize: N images, R images/s per core
  decode+resize: N images, B images/s per core
"""
import io
import json
import os
import sys
import time

from PIL import Image, ImageOps

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_index import prepare, walk  # noqa: E402


def decode(path):
    with open(path, "rb") as f:
        data = f.read()
    return ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")


def main():
    arch, root, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    repeat = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    recipe = json.load(open(arch))["recipe"]
    files = []
    for p in walk(root)[:n]:
        try:
            decode(p)
            files.append(p)
        except Exception as e:
            print(f"{p}: {e} (left out)", file=sys.stderr)
    best_d = best_r = float("inf")
    for _ in range(max(repeat, 1)):
        t = time.perf_counter()
        images = [decode(p) for p in files]
        best_d = min(best_d, time.perf_counter() - t)
        t = time.perf_counter()
        for im in images:
            prepare(im, recipe)
        best_r = min(best_r, time.perf_counter() - t)
    k = len(files)
    px = sum(im.size[0] * im.size[1] for im in images)
    print(f"decode: {k} images, {k / best_d:.1f} images/s per core (mean {px / k / 1e3:.0f} kpx, "
          f"{px / best_d / 1e6:.1f} MP/s)")
    print(f"resize: {k} images, {k / best_r:.1f} images/s per core")
    print(f"decode+resize: {k} images, {k / (best_d + best_r):.1f} images/s per core")


if __name__ == "__main__":
    main()
