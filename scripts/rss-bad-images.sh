#!/usr/bin/env bash
# Peak memory of `neurodex index` over a folder of hostile and oversized images
# (examples/make_bad_images.rs: 16 99-megapixel 16-bit RGBA PNGs and broken files),
# for each thread count given (default: 2 and 8). Needs GNU time (/usr/bin/time).
#   scripts/rss-bad-images.sh [THREADS...]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bin neurodex --example make_bad_images
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
target/release/examples/make_bad_images "$work/bad" >/dev/null
grep -o 'avx512f\|avx2' /proc/cpuinfo | sort -u | tr '\n' ' '; echo "($(nproc) cores)"
for t in "${@:-2 8}"; do
    for n in $t; do
        rm -f "$work"/r.db*
        /usr/bin/time -f "threads $n: peak RSS %M KB, %e s" \
            target/release/neurodex index "$work/bad" --db "$work/r.db" -q --threads "$n" || true
    done
done
