"""Is peer_index.py a fair peer? Compares the per-unit peaks it stored with those `neurodex
index` stored for the same folder: for every image both indexed (matched by relative path)
and every layer, the largest difference of a unit's peak value relative to the layer's
largest peak magnitude on that image, and the share of units whose peak location agrees.

usage: check_peer.py NEURODEX.db PEER.db [IMAGES=all] [--max-rel 1e-3]
Prints one line per layer and `peer check: ok` (exit 0), or `peer check: FAILED` (exit 1) when
a value differs by more than --max-rel, a layer is missing, or the peer indexed other images.
Locations may differ where two cells of a map hold (nearly) the same value.
"""
import argparse
import sqlite3
import sys

import numpy as np

REC = np.dtype([("v", "<f4"), ("y", "<u2"), ("x", "<u2")])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("neurodex_db")
    ap.add_argument("peer_db")
    ap.add_argument("images", nargs="?", type=int)
    ap.add_argument("--max-rel", type=float, default=1e-3)
    a = ap.parse_args()
    nd = sqlite3.connect(f"file:{a.neurodex_db}?mode=ro", uri=True)
    peer = sqlite3.connect(f"file:{a.peer_db}?mode=ro", uri=True)
    nd_images = dict(nd.execute("SELECT path, id FROM image WHERE status = 'ok' ORDER BY id"))
    peer_images = dict(peer.execute("SELECT path, id FROM image WHERE status = 'ok' ORDER BY id"))
    bad = []
    if set(nd_images) != set(peer_images):
        only_nd, only_peer = set(nd_images) - set(peer_images), set(peer_images) - set(nd_images)
        bad.append(f"images indexed by one only: neurodex {len(only_nd)} {sorted(only_nd)[:3]}, "
                   f"peer {len(only_peer)} {sorted(only_peer)[:3]}")
    paths = sorted(set(nd_images) & set(peer_images))[: a.images]
    nd_layers = dict(nd.execute("SELECT name, id FROM layer"))
    blob_mode = peer.execute("SELECT count(*) FROM peaks").fetchone()[0] > 0
    for name, lid in peer.execute("SELECT name, id FROM layer ORDER BY id").fetchall():
        if name not in nd_layers:
            bad.append(f"layer {name} not in the neurodex index")
            continue
        # One query per layer and side (the peer's row table has no index to look up by).
        want_of = {i: np.frombuffer(d, REC) for i, d in nd.execute(
            "SELECT image_id, data FROM peaks WHERE layer_id = ?", (nd_layers[name],))}
        if blob_mode:
            got_of = {}
            for i, d in peer.execute("SELECT image_id, data FROM peaks WHERE layer_id = ?", (lid,)):
                g = np.frombuffer(d, REC)
                got_of[i] = (g["v"].astype(np.float64), g["y"], g["x"])
        else:
            rows = np.array(peer.execute(
                "SELECT image_id, unit, value, y, x FROM peak WHERE layer_id = ?", (lid,)).fetchall(),
                dtype=np.float64).reshape(-1, 5)
            rows = rows[np.lexsort((rows[:, 1], rows[:, 0]))]
            ids, starts = np.unique(rows[:, 0], return_index=True)
            got_of = {int(i): (r[:, 2], r[:, 3], r[:, 4])
                      for i, r in zip(ids, np.split(rows, starts[1:]))}
        worst, worst_at, same, units = 0.0, None, 0, 0
        for path in paths:
            want = want_of[nd_images[path]]
            gv, gy, gx = got_of.get(peer_images[path], (np.zeros(0),) * 3)
            if len(gv) != len(want):
                bad.append(f"{name} {path}: {len(gv)} units in the peer, {len(want)} in neurodex")
                continue
            scale = max(np.abs(want["v"]).max(), 1e-6)
            rel = np.abs(gv - want["v"]) / scale
            u = int(rel.argmax())
            if rel[u] > worst:
                worst, worst_at = float(rel[u]), (path, u, float(want["v"][u]), float(gv[u]))
            same += int(((gy == want["y"]) & (gx == want["x"])).sum())
            units += len(want)
        print(f"{name:>10}: {len(paths)} images x {units // max(len(paths), 1)} units, largest difference "
              f"{worst:.2e} of the layer's peak magnitude"
              + (f" ({worst_at[0]} unit {worst_at[1]}: neurodex {worst_at[2]:.6g}, peer {worst_at[3]:.6g})"
                 if worst_at else "")
              + f", same location {100 * same / max(units, 1):.2f}%")
        if worst > a.max_rel:
            bad.append(f"{name}: peak values differ by {worst:.2e} (> {a.max_rel:g})")
    for b in bad:
        print("  " + b)
    print("peer check: " + ("FAILED" if bad else "ok"))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
