#!/usr/bin/env bash
# Writes datasets/demo/labels/{face,category}.csv from datasets/demo/MANIFEST.tsv
# (its has_face and category columns), for `neurodex labels --csv`.
set -euo pipefail
cd "$(dirname "$0")/../datasets/demo"
mkdir -p labels
awk -F'\t' 'NR==1 {print "# Made from ../MANIFEST.tsv (has_face = 1) by scripts/demo-labels.sh; paths relative to datasets/demo\npath,label"}
            NR>1 && $4==1 {print $1",face"}' MANIFEST.tsv > labels/face.csv
awk -F'\t' 'NR==1 {print "# Made from ../MANIFEST.tsv (its category column) by scripts/demo-labels.sh; paths relative to datasets/demo\npath,label"}
            NR>1 {print $1","$2}' MANIFEST.tsv > labels/category.csv
wc -l labels/face.csv labels/category.csv
