#!/usr/bin/env python3
"""Captions in figures for concept grids: for each unit of a neurodex index of
datasets/demo, how many of its top-9 images carry a face or share a category or a
label, from datasets/demo/MANIFEST.tsv (the demo set's own annotations, not neurodex).

usage: concept-captions.py DB [LAYER ...]   prints the units with the purest top-9
"""
import collections
import csv
import sqlite3
import struct
import sys
from pathlib import Path

MANIFEST = Path(__file__).resolve().parent.parent / "datasets/demo/MANIFEST.tsv"


def top9(conn, layer_id, unit):
    (blob,) = conn.execute(
        "SELECT hits FROM top_k WHERE layer_id = ? AND unit = ?", (layer_id, unit)
    ).fetchone()
    ids = [struct.unpack_from("<q", blob, 16 * i + 4)[0] for i in range(len(blob) // 16)]
    paths = []
    for i in ids:
        (p, status) = conn.execute("SELECT path, status FROM image WHERE id = ?", (i,)).fetchone()
        if status == "ok":
            paths.append(p)
        if len(paths) == 9:
            break
    return paths


def main():
    db, layers = sys.argv[1], sys.argv[2:]
    meta = {r["file"]: r for r in csv.DictReader(open(MANIFEST), delimiter="\t")}
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = conn.execute("SELECT id, name, channels FROM layer ORDER BY id").fetchall()
    for lid, name, channels in rows:
        if layers and name not in layers:
            continue
        scored = []
        for u in range(channels):
            (mx,) = conn.execute(
                "SELECT max FROM unit_stats WHERE layer_id = ? AND unit = ?", (lid, u)
            ).fetchone()
            if mx is None or mx <= 0:
                continue
            paths = top9(conn, lid, u)
            tags = [meta.get(p, {}) for p in paths]
            faces = sum(t.get("has_face") == "1" for t in tags)
            cat, ncat = collections.Counter(t.get("category") for t in tags).most_common(1)[0]
            lab, nlab = collections.Counter(t.get("label") for t in tags).most_common(1)[0]
            scored.append((max(faces, nlab), faces, nlab, lab, ncat, cat, u))
        scored.sort(reverse=True)
        print(f"== {name}")
        for _, faces, nlab, lab, ncat, cat, u in scored[:6]:
            print(f"  unit {u}: {faces} of 9 with a face; {nlab} of 9 '{lab}'; {ncat} of 9 {cat}")


if __name__ == "__main__":
    main()
