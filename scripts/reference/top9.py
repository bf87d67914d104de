"""An independent reference for neurodex's top-9: onnxruntime on PIL-preprocessed photos.

usage: top9.py top9 ARCH.json WEIGHTS DB            overlap of the reference top-9 with DB's
       top9.py inputs ARCH.json DUMP_INPUT DIR      neurodex's network input vs PIL's
       top9.py decoded DUMP_INPUT DIR               neurodex's decoded pixels vs PIL's

(scripts/reference/top9.sh wraps these: it builds what they need.)

The reference:
- preprocessing with PIL as the recipe of ARCH.json says (neurodex's `preprocess::prepare`):
  EXIF orientation (ImageOps.exif_transpose), convert("RGB"), a centre square of
  crop_fraction * short side (offsets and side rounded half to even, as Python's round),
  resized to size x size with Image.resize(box=...), then the recipe's normalisation;
- the network: the ONNX graph scripts/bench/ort_peer.py builds from neurodex's own
  architecture description and the safetensors weights (BatchNorm folded, Clip(0, 6) for
  ReLU6), with every indexed layer also an output. A layer's tap is its node's own output
  BEFORE its activation: for `stem`/`head` the conv + BN result, for `blocks.N` the block
  output after the residual add (which has no activation);
- per image and unit the maximum over positions (and its first argmax), images ranked by
  value, highest first, ties to the earlier path; files with identical content (sha256)
  count once, the first in path order.

`top9` reads the DB's indexed images (status 'ok', in path order, from the run's root) and
each unit's stored top-K (`top_k.hits`: 16-byte records f32 value, i64 image id, u16 y,
u16 x, best first) and prints per layer the mean of |ref top-9 & neurodex top-9| / 9 over
units, how many units agree exactly (same images in the same order), and for the units
that disagree whether the swap is within the noise the input differences cause (the
reference's gap between its 9th value and the value of each image neurodex put in instead
is below the 99th percentile of |neurodex value - reference value| over all stored hits of
that layer). Units that are dead under their ReLU-type activation (reference max <= 0 on
every image) and, for a DB that ranks by the post-ReLU6 value, units whose 9th reference
value is >= 6 (ties at 6) are counted apart.
"""
import hashlib
import json
import os
import sqlite3
import subprocess
import sys

import numpy as np
from PIL import Image, ImageOps

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))

# neurodex's image file name extensions (src/crawl.rs).
EXTS = {"jpg", "jpeg", "jpe", "jfif", "png", "apng", "gif", "bmp", "dib", "ppm", "pgm", "pbm",
        "pnm", "tif", "tiff", "webp", "tga", "ico", "qoi", "exr", "hdr", "avif", "ff"}
HIT = np.dtype([("v", "<f4"), ("id", "<i8"), ("y", "<u2"), ("x", "<u2")])


def pil_pixels(path, recipe):
    """The resized u8 RGB (H, W, 3) PIL makes of `path` per the recipe."""
    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im).convert("RGB")
    return pil_resize(im, recipe)


def pil_resize(im, recipe):
    w, h = im.size
    side = recipe["crop_fraction"] * min(w, h)
    x0, y0 = round((w - side) / 2), round((h - side) / 2)
    side = max(round(side), 1)
    size = recipe["size"]
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[recipe["filter"].lower()]
    im = im.resize((size, size), resample, box=(x0, y0, x0 + side, y0 + side))
    return np.asarray(im, dtype=np.uint8)


def normalise(pixels, recipe):
    """u8 (H, W, 3) -> f32 (3, H, W) as the recipe says."""
    x = pixels.astype(np.float32).transpose(2, 0, 1)
    n = recipe["norm"]
    if n["kind"] == "affine":
        return (x - np.float32(n["sub"])) / np.float32(n["div"])
    mean = np.array(n["mean"], np.float32)[:, None, None]
    std = np.array(n["std"], np.float32)[:, None, None]
    return (x / np.float32(255.0) - mean) / std


def grey_scale(recipe):
    """Grey levels per unit of network input (to report input differences in levels)."""
    n = recipe["norm"]
    return float(n["div"]) if n["kind"] == "affine" else 255.0


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def image_files(root):
    out = []
    for d, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for f in files:
            if f.rsplit(".", 1)[-1].lower() in EXTS:
                out.append(os.path.relpath(os.path.join(d, f), root))
    return sorted(out)


# ---------------------------------------------------------------- the network

def reference_peaks(arch, weights, paths, layers, batch=16):
    """Per layer: (values [N, C] float32, y [N, C], x [N, C]) of the pre-activation taps."""
    import onnxruntime as ort
    from onnx import TensorProto, helper
    from common import load_safetensors
    from ort_peer import build

    model = build(arch, load_safetensors(weights))
    produced = {o for n in model.graph.node for o in n.output}
    taps = {}
    for name in layers:
        node = next((n for n in arch["nodes"] if n["name"] == name or name in n.get("aliases", [])), None)
        if node is None or node["name"] not in produced:
            raise SystemExit(f"layer {name}: no such node in the ONNX graph")
        taps[name] = node["name"]  # the node's output before its activation (`<name>/act`)
    for t in set(taps.values()):
        model.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(os.environ.get("REF_THREADS", "2"))
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    recipe = arch["recipe"]
    out = {name: [] for name in layers}
    for start in range(0, len(paths), batch):
        x = np.stack([normalise(pil_pixels(p, recipe), recipe) for p in paths[start:start + batch]])
        res = dict(zip(names, sess.run(None, {"input": x})))
        for name in layers:
            a = res[taps[name]]
            n, c, h, w = a.shape
            flat = a.reshape(n, c, h * w)
            arg = flat.argmax(axis=2)
            out[name].append((flat.max(axis=2), arg // w, arg % w))
    return {name: tuple(np.concatenate([b[k] for b in out[name]]) for k in range(3)) for name in layers}


def ranking(vals):
    """Rows of `vals` [N, C] ranked per column, highest first, ties to the lower row."""
    return np.argsort(-vals, axis=0, kind="stable")


# ---------------------------------------------------------------- top9

def top9(arch_path, weights, db_path, k=9):
    arch = json.load(open(arch_path))
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    root = db.execute("SELECT root FROM run").fetchone()[0]
    root = root.decode() if isinstance(root, bytes) else root
    model = db.execute("SELECT model FROM run").fetchone()[0]
    rows = db.execute("SELECT id, path FROM image WHERE status = 'ok'").fetchall()
    rows.sort(key=lambda r: r[1].encode())
    # One row per distinct content, the first in path order; every DB image id maps to its row.
    paths, row_of, first = [], {}, {}
    for image_id, rel in rows:
        digest = sha256(os.path.join(root, rel))
        if digest not in first:
            first[digest] = len(paths)
            paths.append(os.path.join(root, rel))
        row_of[image_id] = first[digest]
    layers = [r for r in db.execute("SELECT id, name FROM layer ORDER BY id")]
    print(f"{db_path}: model {model}, {len(rows)} images ok, {len(paths)} distinct; layers "
          + " ".join(n for _, n in layers))
    ref = reference_peaks(arch, weights, paths, [n for _, n in layers])
    acts = {n["name"]: (n["op"].get("act") or "none") for n in arch["nodes"]}
    for alias_node in arch["nodes"]:
        for a in alias_node.get("aliases", []):
            acts[a] = alias_node["op"].get("act") or "none"

    print()
    print("layer       units  mean-overlap  exact  order-only  differ: near-tie other  | apart: dead saturated"
          "  | |nd-ref| median p99  ranks-by   same-argmax")
    for layer_id, name in layers:
        vals, ys, xs = ref[name]
        n, c = vals.shape
        act = acts.get(name, "none")
        hits = {}
        for unit, blob in db.execute("SELECT unit, hits FROM top_k WHERE layer_id = ?", (layer_id,)):
            hits[unit] = np.frombuffer(blob, HIT)
        # What do the DB's values measure? Compare with the reference pre- and post-activation.
        pre, post, same_loc, pairs = [], [], 0, 0
        for unit, h in hits.items():
            for rec in h:
                r = row_of.get(int(rec["id"]))
                if r is None:
                    continue
                v = vals[r, unit]
                pre.append(abs(float(rec["v"]) - v))
                post.append(abs(float(rec["v"]) - min(max(v, 0.0), 6.0)))
                same_loc += int(rec["y"]) == ys[r, unit] and int(rec["x"]) == xs[r, unit]
                pairs += 1
        pre, post = np.array(pre), np.array(post)
        post_ranked = act == "relu6" and len(pre) and np.median(post) < np.median(pre)
        noise = post if post_ranked else pre
        tol = float(np.percentile(noise, 99)) if len(noise) else 0.0
        order = ranking(vals)
        overlaps, exact, order_only, near, other, dead, sat = [], 0, 0, 0, [], 0, 0
        for unit in range(c):
            r9 = order[:k, unit]
            nd = [row_of.get(int(i), -1) for i in hits.get(unit, np.zeros(0, HIT))["id"][:k]]
            if act in ("relu", "relu6") and vals[:, unit].max() <= 0:
                dead += 1
                continue
            if post_ranked and vals[r9[-1], unit] >= 6.0:
                sat += 1
                continue
            ov = len(set(r9.tolist()) & set(nd)) / k
            overlaps.append(ov)
            if list(r9) == nd:
                exact += 1
                continue
            if ov == 1.0:
                order_only += 1
                continue
            v9 = vals[r9[-1], unit]
            extra = [i for i in nd if i not in set(r9.tolist())]
            gaps = [v9 - vals[i, unit] if i >= 0 else np.inf for i in extra]
            if max(gaps) <= tol:
                near += 1
            else:
                other.append((max(gaps), unit, ov))
        mean = float(np.mean(overlaps)) if overlaps else float("nan")
        print(f"{name:<11} {c:>5}  {mean:>12.4f}  {exact:>5}  {order_only:>10}  {near:>15} {len(other):>5}  | "
              f"{dead:>10} {sat:>9}  | {np.median(noise) if len(noise) else 0:>13.4g} {tol:>8.4g}  "
              f"{'post-ReLU6' if post_ranked else 'value':<10} {same_loc / max(pairs, 1):>8.3f}")
        for gap, unit, ov in sorted(other, reverse=True)[:3]:
            print(f"    unit {unit}: overlap {ov:.3f}, an image neurodex ranks in is {gap:.4g} below the "
                  f"reference's 9th ({vals[order[k - 1, unit], unit]:.4g}); 10th {vals[order[k, unit], unit]:.4g}")
    print("\nmean-overlap: |ref top-9 & neurodex top-9| / 9 averaged over the units not counted apart; "
          "order-only: same 9 images, other order; near-tie: the images swapped in are within p99 of |nd-ref| "
          "of the reference's 9th value; same-argmax: stored hits whose (y, x) is the reference's argmax")


# ---------------------------------------------------------------- inputs

def run_dump(dump, model, paths, out, decoded=False):
    cmd = [dump, model, out] + (["decoded"] if decoded else [])
    p = subprocess.run(cmd, input="".join(p + "\n" for p in paths), capture_output=True, text=True, check=True)
    return p.stdout.splitlines()


def inputs(arch_path, dump, root):
    arch = json.load(open(arch_path))
    recipe = arch["recipe"]
    size = recipe["size"]
    rel = image_files(root)
    paths = [os.path.join(root, p) for p in rel]
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"neurodex-inputs-{os.getpid()}.f32")
    status = run_dump(dump, arch["name"], paths, out)
    nd = np.fromfile(out, "<f4").reshape(len(paths), 3, size, size)
    status_d = run_dump(dump, arch["name"], paths, out, decoded=True)
    raw = np.fromfile(out, np.uint8)
    os.remove(out)
    # neurodex's decoded pixels resized by PIL: what the resampler alone accounts for.
    resampled, off = {}, 0
    for i, st in enumerate(status_d):
        if st.startswith("ok"):
            w, h = (int(v) for v in st.split()[1:3])
            img = Image.fromarray(raw[off:off + w * h * 3].reshape(h, w, 3))
            off += w * h * 3
            resampled[i] = normalise(pil_resize(img, recipe), recipe)
    scale = grey_scale(recipe)
    total = {"all": [0, 0, 0.0, 0.0, 0]}  # values, differing, sum |d|, max |d|, images exact
    worst = []
    for i, (p, st) in enumerate(zip(paths, status)):
        if not st.startswith("ok"):
            print(f"  {rel[i]}: neurodex: {st}")
            continue
        try:
            mine = normalise(pil_pixels(p, recipe), recipe)
        except Exception as e:  # noqa: BLE001
            print(f"  {rel[i]}: PIL: {e}")
            continue
        d = np.abs(nd[i].astype(np.float64) - mine) * scale
        kind = "jpeg" if open(p, "rb").read(3) == b"\xff\xd8\xff" else "other"
        keys = ["all", kind]
        if i in resampled:
            keys.append("resize")
        for key in keys:
            if key == "resize":
                d = np.abs(nd[i].astype(np.float64) - resampled[i]) * scale
            t = total.setdefault(key, [0, 0, 0.0, 0.0, 0])
            t[0] += d.size
            t[1] += int((d > 1e-3).sum())
            t[2] += float(d.sum())
            t[3] = max(t[3], float(d.max()))
            t[4] += int(d.max() <= 1e-3)
        d = np.abs(nd[i].astype(np.float64) - mine) * scale
        worst.append((float(d.max()), float(d.mean()), rel[i]))
    print(f"network input, neurodex vs PIL, in grey levels (x{scale:g}), {len(paths)} files under {root}:")
    print("  (all/jpeg/other: PIL decodes and resizes; resize: PIL resizes neurodex's decoded pixels)")
    for key, (n, diff, s, mx, ex) in total.items():
        print(f"  {key:<6} values {n:>9}  differing {diff:>8} ({diff / max(n, 1):.4%})  mean |d| {s / max(n, 1):.4f}"
              f"  max |d| {mx:.1f}  images identical {ex}")
    worst.sort(reverse=True)
    for mx, mean, p in worst[:5]:
        print(f"  worst: {p}: max {mx:.1f} mean {mean:.4f}")


def decoded(dump, root):
    """The decoded, oriented RGB of neurodex's open_image vs PIL's, before any resizing."""
    rel = image_files(root)
    paths = [os.path.join(root, p) for p in rel]
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"neurodex-decoded-{os.getpid()}.rgb")
    status = run_dump(dump, "efficientnet-lite0", paths, out, decoded=True)
    raw = np.fromfile(out, np.uint8)
    os.remove(out)
    off = 0
    totals = {}
    for p, r, st in zip(paths, rel, status):
        if not st.startswith("ok"):
            print(f"  {r}: neurodex: {st}")
            continue
        w, h = (int(v) for v in st.split()[1:3])
        mine = raw[off:off + w * h * 3].reshape(h, w, 3)
        off += w * h * 3
        with Image.open(p) as im:
            fmt = im.format
            ref = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
        if ref.shape != mine.shape:
            print(f"  {r}: size {mine.shape} vs PIL {ref.shape}")
            continue
        d = np.abs(mine.astype(np.int16) - ref)
        t = totals.setdefault(fmt, [0, 0, 0, 0, 0, 0])
        t[0] += d.size
        t[1] += int((d > 0).sum())
        t[2] += int(d.sum())
        t[3] = max(t[3], int(d.max()))
        t[4] += int(d.max() == 0)
        t[5] += 1
    print(f"decoded pixels, neurodex vs PIL, {len(paths)} files under {root}:")
    for fmt, (n, diff, s, mx, ex, files) in sorted(totals.items()):
        print(f"  {fmt:<5} files {files:>4}  identical {ex:>4}  values {n:>10}  differing {diff:>9} "
              f"({diff / max(n, 1):.4%})  mean |d| {s / max(n, 1):.4f}  max |d| {mx}")


def main():
    a = sys.argv[1:]
    if len(a) == 4 and a[0] == "top9":
        top9(*a[1:])
    elif len(a) == 4 and a[0] == "inputs":
        inputs(*a[1:])
    elif len(a) == 3 and a[0] == "decoded":
        decoded(*a[1:])
    else:
        sys.exit(__doc__.split("\n\n")[1])


if __name__ == "__main__":
    main()
