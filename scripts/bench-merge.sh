#!/usr/bin/env bash
# What merging costs next to indexing: DIR indexed whole, then as N shards one after the
# other (each with the whole machine, as N cluster nodes would have), then the shards
# merged (best of REPEAT=3 merges), and the merged index checked against the whole one.
#
# Usage: scripts/bench-merge.sh DIR [N=8]
# Prints the seconds of each step, the merge's cost per image, its share of the
# shards' indexing time, the database sizes, and one line
#   MERGE shards=<N> images=<n> index_s=<sum of shards> merge_s=<best> us_per_image=<...>
set -euo pipefail
DIR=$(realpath "${1:?usage: bench-merge.sh DIR [N]}")
N=${2:-8}
REPEAT=${REPEAT:-3}
cd "$(dirname "$0")/.."
cargo build --release --quiet
BIN=$(realpath target/release/neurodex)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
now() { date +%s.%N; }
calc() { awk "BEGIN { print $* }"; }
secs() { calc "$2 - $1"; }
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores," \
     "$(grep -o 'avx512f\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')"
t0=$(now); "$BIN" index "$DIR" --db "$WORK/whole.db" -q || [ $? = 1 ]; t1=$(now)
whole_s=$(secs "$t0" "$t1")
printf 'whole index     %8.2f s\n' "$whole_s"
index_s=0
shards=()
for ((i = 0; i < N; i++)); do
    t0=$(now); "$BIN" index "$DIR" --db "$WORK/s$i.db" --shard "$i/$N" -q || [ $? = 1 ]; t1=$(now)
    s=$(secs "$t0" "$t1"); index_s=$(calc "$index_s + $s")
    printf 'shard %d/%d       %8.2f s\n' "$i" "$N" "$s"
    shards+=("$WORK/s$i.db")
done
best=
for ((r = 0; r < REPEAT; r++)); do
    rm -f "$WORK"/merged.db*
    t0=$(now); "$BIN" merge --db "$WORK/merged.db" "${shards[@]}" -q || [ $? = 1 ]; t1=$(now)
    s=$(secs "$t0" "$t1")
    printf 'merge %d shards  %8.2f s\n' "$N" "$s"
    if [ -z "$best" ] || [ "$(calc "$s < $best")" = 1 ]; then best=$s; fi
done
images=$("$BIN" stats --db "$WORK/merged.db" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["images_ok"])')
python3 - "$WORK/whole.db" "$WORK/merged.db" <<'PY'
# The merged index against the whole one, by path: top-K lists and statistics.
import sqlite3, struct, sys
def load(p):
    c = sqlite3.connect(p)
    path = dict(c.execute("SELECT id, path FROM image"))
    tops = {}
    for l, u, h in c.execute("SELECT layer_id, unit, hits FROM top_k"):
        tops[l, u] = [(h[i:i + 4], path[struct.unpack("<q", h[i + 4:i + 12])[0]], h[i + 12:i + 16])
                      for i in range(0, len(h), 16)]
    stats = {(r[0], r[1]): r[2:] for r in c.execute(
        "SELECT layer_id, unit, count, nan, min, max, positive, hist, sum, sum_sq FROM unit_stats")}
    return tops, stats
(ta, sa), (tb, sb) = load(sys.argv[1]), load(sys.argv[2])
bad = sum(ta[k] != tb.get(k) for k in ta)
exact = sum(sa[k][:6] != sb[k][:6] for k in sa)
rel = max(abs(sa[k][i] - sb[k][i]) / max(abs(sa[k][i]), 1e-300) for k in sa for i in (6, 7))
print(f"check           {len(ta)} units: {bad} top-K lists differ, {exact} statistics differ "
      f"beyond their sums; largest relative difference of a sum {rel:.1e}")
PY
size() { du -b "$1" | cut -f1; }
printf 'databases       whole %.1f MB, shards %.1f MB, merged %.1f MB\n' \
    "$(calc "$(size "$WORK/whole.db") / 1e6")" \
    "$(calc "$(cat "${shards[@]}" | wc -c) / 1e6")" \
    "$(calc "$(size "$WORK/merged.db") / 1e6")"
us=$(calc "$best * 1e6 / $images")
share=$(calc "100 * $best / $index_s")
printf 'merge: %.0f us per image, %.1f%% of the shards'"'"' indexing time\n' "$us" "$share"
printf 'MERGE shards=%d images=%d index_s=%.2f merge_s=%.3f us_per_image=%.0f\n' \
    "$N" "$images" "$index_s" "$best" "$us"
