"""A plain Python indexer doing the work of `neurodex index`, the peer of
`scripts/bench.sh --index`.

Walks DIR (image extensions, names sorted, as neurodex's crawl does), and in worker
processes reads each file, hashes it (sha256), decodes it with PIL (upright per its EXIF
orientation, converted to RGB) and prepares it by the recipe of neurodex's layer description:
for EfficientNet-Lite0 (tf-lite) the centre crop of 87.5% of the short side (offsets and side
rounded half to even) resized to 224 x 224 by PIL's bicubic filter; for torchvision's recipe
Resize(short side) then CenterCrop. The main process normalises each batch ((x - 127) / 128, or
mean/std), runs it through onnxruntime (the graph of ort_peer.py, whose outputs are the tapped
layers before their activation, as neurodex ranks them), takes every channel's max and
argmax per image with numpy, and a writer thread stores them in SQLite, one transaction per
batch: the image rows, then one row (image, layer, unit, value, y, x) per unit
(`--store blob` writes one (f32, u16 y, u16 x) blob per image and layer instead, as neurodex
does). The workers decode up to two batches ahead of the network. onnxruntime's idle threads
sleep instead of spinning (`--spin` restores its default), which leaves the cores to the workers.

usage: peer_index.py ARCH.json WEIGHTS.safetensors DIR DB [--batch 16] [--workers 2]
                     [--threads 2] [--layers L1,L2] [--limit N] [--store rows|blob] [--spin]
       peer_index.py --list DIR [--limit N]    the files it would index, relative to DIR,
                                               each followed by a NUL byte
Prints `indexed N images in T s (R images/s)`, timed from the first file read to the last
commit (building the graph and starting the workers is not in it), and the failures.
DB is replaced if it exists.
"""
import argparse
import collections
import hashlib
import io
import json
import os
import queue
import sqlite3
import sys
import threading
import time
from multiprocessing import get_context

import numpy as np
from PIL import Image, ImageOps

# neurodex's crawl::IMAGE_EXTENSIONS, matched without regard to case.
EXTENSIONS = {"." + e for e in (
    "jpg jpeg jpe jfif png apng gif bmp dib ppm pgm pbm pnm pam webp tif tiff tga ico qoi hdr exr ff "
    "dds avif").split()}

SCHEMA = """
-- path: relative to DIR
CREATE TABLE image (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE, size INTEGER, sha256 TEXT,
                    width INTEGER, height INTEGER, status TEXT NOT NULL, error TEXT);
CREATE TABLE layer (id INTEGER PRIMARY KEY, name TEXT NOT NULL, channels INTEGER,
                    height INTEGER, width INTEGER);
CREATE TABLE peak (image_id INTEGER NOT NULL, layer_id INTEGER NOT NULL, unit INTEGER NOT NULL,
                   value REAL NOT NULL, y INTEGER NOT NULL, x INTEGER NOT NULL);
CREATE TABLE peaks (image_id INTEGER NOT NULL, layer_id INTEGER NOT NULL, data BLOB NOT NULL,
                    PRIMARY KEY (image_id, layer_id)) WITHOUT ROWID;
"""

RECIPE = {}  # set in each worker by init()


def init(recipe):
    RECIPE.update(recipe)


def walk(root):
    out = []
    for d, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for f in sorted(files):
            if os.path.splitext(f)[1].lower() in EXTENSIONS:
                out.append(os.path.join(d, f))
    # os.walk visits a folder's files before its subfolders; neurodex's walk sorts files and
    # folders together by name.
    return sorted(out, key=lambda p: os.path.relpath(p, root).split(os.sep))


def prepare(im, r):
    """The network input's pixels (size x size x 3 u8) for an RGB PIL image by recipe `r`."""
    size = r["size"]
    flt = Image.BICUBIC if r["filter"] == "bicubic" else Image.BILINEAR
    w, h = im.size
    if r.get("resize"):
        short = r["resize"]
        ow, oh = (short, short * h // w) if w <= h else (short * w // h, short)
        ow, oh = max(ow, size), max(oh, size)
        im = im.resize((ow, oh), flt)
        left, top = round((ow - size) / 2), round((oh - size) / 2)
        return np.asarray(im.crop((left, top, left + size, top + size)))
    side = r["crop_fraction"] * min(w, h)
    x0, y0 = round((w - side) / 2), round((h - side) / 2)
    s = max(round(side), 1)
    return np.asarray(im.resize((size, size), flt, box=(x0, y0, x0 + s, y0 + s)))


def load(path):
    """(path, size, sha256, (w, h), pixels bytes) or (path, size, sha256, None, reason)."""
    try:
        data = open(path, "rb").read()
    except OSError as e:
        return path, None, None, None, str(e)
    sha = hashlib.sha256(data).hexdigest()
    if not data:
        return path, 0, sha, None, "empty file (0 bytes)"
    try:
        im = Image.open(io.BytesIO(data))
        im = ImageOps.exif_transpose(im).convert("RGB")
        px = prepare(im, RECIPE)
    except Exception as e:  # a bad file fails that file, not the run
        return path, len(data), sha, None, f"{type(e).__name__}: {e}"
    return path, len(data), sha, im.size, px.tobytes()


def normalise(pixels, r):
    """[B, S, S, 3] u8 -> [B, 3, S, S] f32 by the recipe, in f32 as neurodex computes it."""
    x = pixels.astype(np.float32)
    norm = r["norm"]
    if norm["kind"] == "affine":
        x = (x - np.float32(norm["sub"])) / np.float32(norm["div"])
    else:
        mean, std = np.asarray(norm["mean"], np.float32), np.asarray(norm["std"], np.float32)
        x = (x / np.float32(255.0) - mean) / std
    if r.get("bgr"):
        x = x[..., ::-1]
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def writer(db, root, layers, store, q, errors):
    """Commits each batch from `q` in one transaction until it receives None."""
    try:
        conn = sqlite3.connect(db)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        next_id = 1
        while (item := q.get()) is not None:
            images, peaks = item
            rows, ok = [], []
            for k, (path, size, sha, wh, err) in enumerate(images, next_id):
                rel = os.path.relpath(path, root)
                if err is None:
                    rows.append((k, rel, size, sha, wh[0], wh[1], "ok", None))
                    ok.append(k)
                else:
                    rows.append((k, rel, size, sha, None, None, "failed", err))
            next_id += len(images)
            ids = np.array(ok, dtype=np.int64)
            with conn:  # one transaction
                conn.executemany("INSERT INTO image VALUES (?,?,?,?,?,?,?,?)", rows)
                for lid, (vals, at) in enumerate(peaks):
                    b, c = vals.shape
                    w = layers[lid][3]
                    y, x = np.divmod(at, w)
                    if store == "rows":
                        conn.executemany(
                            "INSERT INTO peak VALUES (?,?,?,?,?,?)",
                            zip(np.repeat(ids, c).tolist(), [lid] * (b * c), np.tile(np.arange(c), b).tolist(),
                                vals.ravel().tolist(), y.ravel().tolist(), x.ravel().tolist()))
                    else:
                        rec = np.empty((b, c), dtype=[("v", "<f4"), ("y", "<u2"), ("x", "<u2")])
                        rec["v"], rec["y"], rec["x"] = vals, y, x
                        conn.executemany("INSERT INTO peaks VALUES (?,?,?)",
                                         [(int(i), lid, rec[j].tobytes()) for j, i in enumerate(ids)])
        conn.close()
    except Exception as e:  # said by the main thread
        errors.append(e)
        while q.get() is not None:
            pass


def main():
    if sys.argv[1:2] == ["--list"]:
        ap = argparse.ArgumentParser()
        ap.add_argument("--list", required=True, metavar="DIR")
        ap.add_argument("--limit", type=int)
        a = ap.parse_args()
        for p in walk(a.list)[: a.limit]:
            sys.stdout.write(os.path.relpath(p, a.list) + "\0")
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("arch")
    ap.add_argument("weights")
    ap.add_argument("dir")
    ap.add_argument("db")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads")
    ap.add_argument("--layers", help="comma-separated node names (default: the arch's default layers)")
    ap.add_argument("--limit", type=int, help="only the first N image files")
    ap.add_argument("--store", choices=("rows", "blob"), default="rows")
    ap.add_argument("--spin", action="store_true", help="let idle onnxruntime threads spin (its default)")
    a = ap.parse_args()

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import onnxruntime as ort
    from common import load_safetensors, shapes
    from ort_peer import build

    arch = json.load(open(a.arch))
    recipe = arch["recipe"]
    taps = a.layers.split(",") if a.layers else arch["default_layers"]
    index = {n["name"]: i for i, n in enumerate(arch["nodes"])}
    dims = shapes(arch)
    layers = [(t, *dims[index[t]]) for t in taps]
    model = build(arch, load_safetensors(a.weights), taps)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = a.threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not a.spin:
        # Idle onnxruntime threads that spin take the cores from the decoding workers:
        # without it the peer indexes a fifth to a quarter faster here.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in model.graph.output]

    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(a.db + suffix):
            os.remove(a.db + suffix)
    conn = sqlite3.connect(a.db)
    conn.executescript(SCHEMA)
    conn.executemany("INSERT INTO layer VALUES (?,?,?,?,?)", [(i, *l) for i, l in enumerate(layers)])
    conn.commit()
    conn.close()

    files = walk(a.dir)
    if a.limit is not None:
        files = files[: a.limit]
    q, errors = queue.Queue(maxsize=2), []
    wt = threading.Thread(target=writer, args=(a.db, a.dir, layers, a.store, q, errors))
    wt.start()
    pool = get_context("fork").Pool(a.workers, initializer=init, initargs=(recipe,))
    pool.map(int, range(a.workers))  # the workers are up before the clock starts

    start = time.perf_counter()
    b = max(a.batch, 1)
    # Files in chunks of one batch, decoded up to two chunks ahead; a batch holds `b` decoded
    # images, failures ride along with the batch they were met in.
    chunks = collections.deque(files[i : i + b] for i in range(0, len(files), b))
    pending = collections.deque()
    ok, failed, held = 0, [], []

    def run(images):
        """One batch: the network, the peaks, and the batch handed to the writer."""
        nonlocal ok
        good = [im for im in images if isinstance(im[4], bytes)]
        peaks = []
        if good:
            px = np.frombuffer(b"".join(im[4] for im in good), np.uint8)
            x = normalise(px.reshape(len(good), recipe["size"], recipe["size"], 3), recipe)
            for out in sess.run(outputs, {"input": x}):
                flat = out.reshape(out.shape[0], out.shape[1], -1)
                peaks.append((flat.max(axis=2), flat.argmax(axis=2)))
        q.put(([(p, s, h, wh, None if isinstance(e, bytes) else e) for p, s, h, wh, e in images], peaks))
        ok += len(good)

    while chunks or pending:
        while chunks and len(pending) < 3:
            pending.append(pool.map_async(load, chunks.popleft()))
        for im in pending.popleft().get():
            held.append(im)
            if isinstance(im[4], str):
                failed.append(im)
        # Exactly b decoded images per batch, as neurodex's batches hold.
        while sum(isinstance(im[4], bytes) for im in held) >= b:
            n = 0
            for cut, im in enumerate(held, 1):
                n += isinstance(im[4], bytes)
                if n == b:
                    break
            run(held[:cut])
            held = held[cut:]
    if held:
        run(held)
    q.put(None)
    wt.join()
    secs = time.perf_counter() - start
    pool.close()
    pool.join()
    if errors:
        raise errors[0]
    for p, _, _, _, e in failed:
        print(f"{p}: {e}", file=sys.stderr)
    print(f"indexed {ok} images in {secs:.1f} s ({ok / secs:.1f} images/s); {len(failed)} failed "
          f"(batch {b}, {a.workers} decode workers, {a.threads} onnxruntime threads, {len(taps)} layers, "
          f"{a.store})")


if __name__ == "__main__":
    main()
