#!/usr/bin/env bash
# Runs two neurodex binaries over the same demo photos and compares what they write:
# the index's answers (top-9 of several units at shallow and deep layers, units,
# image, stats as JSON), the grids in every mode, feature maps, filters, classes and
# the gallery's pages and pictures. A refactor must leave all of them byte for byte
# the same (wall times aside).
#
#   scripts/compare-builds.sh OLD_BINARY NEW_BINARY [PHOTOS_DIR]
set -euo pipefail
old=$1 new=$2
photos=${3:-datasets/demo}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
one_image=$(find "$photos" -type f \( -name '*.jpg' -o -name '*.jpeg' -o -name '*.png' \) | sort | sed -n 1p)
units=("stem 3" "blocks.2 7" "blocks.7 11" "blocks.4 20" "blocks.10 0" "blocks.14 42" "head 100")

for side in old new; do
    bin=${!side}
    d=$work/$side
    mkdir -p "$d"
    "$bin" index "$photos" --db "$d/demo.db" -q >"$d/index.log" 2>&1
    for u in "${units[@]}"; do
        set -- $u
        "$bin" top --db "$d/demo.db" --layer "$1" --unit "$2" -k 9 --json >"$d/top-$1-$2.json"
        for mode in crop region box heat; do
            "$bin" top --db "$d/demo.db" --layer "$1" --unit "$2" -o "$d/top-$1-$2-$mode.png" \
                --mode "$mode" >/dev/null 2>>"$d/warnings.log"
        done
        "$bin" top --db "$d/demo.db" --layer "$1" --unit "$2" -o "$d/top-$1-$2-default.jpg" \
            >/dev/null 2>>"$d/warnings.log"
    done
    "$bin" units --db "$d/demo.db" --layer blocks.10 --sort sparsity --json >"$d/units.json"
    "$bin" image --db "$d/demo.db" "$(basename "$one_image")" --json >"$d/image.json" 2>/dev/null || true
    "$bin" stats --db "$d/demo.db" --json | grep -v '"seconds"\|_at"' >"$d/stats.json"
    "$bin" maps "$one_image" --layer blocks.4 -o "$d/maps.png" 2>/dev/null
    "$bin" maps "$one_image" --layer blocks.4 --unit 5 -o "$d/map-5.png" 2>/dev/null
    "$bin" filters --layer stem -o "$d/filters.png" 2>/dev/null
    "$bin" classify "$one_image" --json >"$d/classify.json"
    "$bin" gallery --db "$d/demo.db" -o "$d/gallery" --layers blocks.2,head -k 4 >/dev/null 2>&1
    # Messages name the output folder, which differs.
    sed -i "s#$d#OUT#g" "$d/warnings.log" "$d/stats.json"
    rm -f "$d/demo.db" "$d"/demo.db-* "$d/demo.db.lock" "$d/index.log"
done

if diff -r "$work/old" "$work/new" >"$work/diff.txt"; then
    n=$(find "$work/new" -type f | wc -l)
    echo "same: $n files from each binary are identical"
else
    head -40 "$work/diff.txt"
    echo "DIFFERENT (above)"
    exit 1
fi
