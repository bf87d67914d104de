#!/usr/bin/env bash
# Throughput and memory of `neurodex index`.
#
# Usage: scripts/bench-index.sh IMAGES_DIR [N=200] [BATCH=16]
#   IMAGES_DIR  a folder of photos, e.g. from /work/shared/tools/fetch-bench-images.sh
#   N           images in the throughput sample (the first N image files, sorted)
# Env: FULL=0 skips the full-directory memory run
#      REPEAT=3 alternating runs of each measurement; the best of each is compared
# Env: NEURODEX_BIN=path to a built binary (default: builds target/release/neurodex)
#      THREADS=n (default: all cores)
#
# Prints, on the same N images and batch size:
#   forward-only  the network alone on pre-decoded inputs (examples/forward_only.rs)
#   pipeline      the whole `index` (walk, decode, forward, peaks, SQLite), and its
#                 overhead over forward-only
# then the peak RSS of indexing all of IMAGES_DIR.
set -euo pipefail
SRC=${1:?usage: bench-index.sh IMAGES_DIR [N] [BATCH]}
N=${2:-200}
BATCH=${3:-16}
THREADS_ARG=()
[ -n "${THREADS:-}" ] && THREADS_ARG=(--threads "$THREADS")
if [ -z "${NEURODEX_BIN:-}" ]; then
  cargo build --release --quiet
  NEURODEX_BIN=target/release/neurodex
fi
BIN=$(realpath "$NEURODEX_BIN")
cargo build --release --quiet --example forward_only
FORWARD=$(realpath target/release/examples/forward_only)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

mkdir "$WORK/sample"
i=0
while IFS= read -r -d '' f; do
  i=$((i + 1))
  ext=${f##*.}
  cp "$f" "$WORK/sample/$(printf '%05d' "$i").${ext,,}"
  [ "$i" -ge "$N" ] && break
done < <(find "$SRC" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' -o -iname '*.gif' -o -iname '*.bmp' \) -print0 | sort -z)
echo "sample: $i images from $SRC, batch $BATCH, $(nproc) cores"

# Alternate the two, REPEAT times, and keep each one's best: the machine may be shared.
best_f=0; best_p=0
for r in $(seq "${REPEAT:-3}"); do
  out=$("$FORWARD" "$WORK/sample" "$N" "$BATCH" default ${THREADS:-})
  f=$(echo "$out" | sed -n 's/^forward-only.*= \([0-9.]*\) images\/s.*/\1/p')
  rm -f "$WORK"/sample.db*
  "$BIN" index "$WORK/sample" --db "$WORK/sample.db" --batch "$BATCH" "${THREADS_ARG[@]}" 2> "$WORK/pipe.log" || true
  p=$(sed -n 's/^indexed .*(\([0-9.]*\) images\/s).*/\1/p' "$WORK/pipe.log")
  echo "run $r: forward-only $f images/s, pipeline $p images/s ($(grep '^time:' "$WORK/pipe.log"))"
  best_f=$(awk -v a="$best_f" -v b="$f" 'BEGIN { print (b > a ? b : a) }')
  best_p=$(awk -v a="$best_p" -v b="$p" 'BEGIN { print (b > a ? b : a) }')
done
echo "$out" | grep '^decode'
echo "best forward-only: $best_f images/s; best pipeline: $best_p images/s"
awk -v f="$best_f" -v p="$best_p" 'BEGIN { printf "pipeline overhead over forward-only: %.1f%%\n", (f / p - 1) * 100 }'

[ "${FULL:-1}" = 1 ] || exit 0
total=$(find "$SRC" -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' -o -iname '*.gif' -o -iname '*.bmp' \) | wc -l)
echo "full run: $total image files under $SRC"
/usr/bin/time -v "$BIN" index "$SRC" --db "$WORK/full.db" --batch "$BATCH" "${THREADS_ARG[@]}" 2> "$WORK/full.log" || true
grep -E '^indexed|^failed' "$WORK/full.log" || true
grep -E 'Maximum resident set size|Elapsed \(wall' "$WORK/full.log" | sed 's/^\s*//'
