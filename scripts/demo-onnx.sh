#!/usr/bin/env bash
# The demo set end to end with imported ONNX networks: layers, index, stats, top (table and
# region grid), gallery and classify for each zoo model named (default mobilenet_v2 and
# resnet50), into OUT/<model>/. The zoo's weights are random, so the units are not
# meaningful; what this shows is every command working on an imported network.
#
#   scripts/demo-onnx.sh [OUT] [MODEL:LAYER ...]     OUT default target/demo-onnx
# Env: NEURODEX_ONNX_ZOO (default ~/.cache/neurodex/onnx-zoo-2, scripts/make-onnx-zoo.py)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/demo-onnx}
shift || true
specs=("$@")
[ ${#specs[@]} -gt 0 ] || specs=(mobilenet_v2:features.18 resnet50:layer4)
zoo=${NEURODEX_ONNX_ZOO:-$HOME/.cache/neurodex/onnx-zoo-2}
cargo build --release --quiet
b=target/release/neurodex
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(nproc) cores"
for spec in "${specs[@]}"; do
    m=${spec%%:*} layer=${spec#*:}
    model=$zoo/$m-op13.onnx dir=$out/$m
    rm -rf "$dir" && mkdir -p "$dir"
    echo "== $m ($model)"
    $b layers --model "$model" | tail -3
    $b index datasets/demo --model "$model" --db "$dir/index.db"
    $b stats --db "$dir/index.db" | head -6
    $b top --db "$dir/index.db" --layer "$layer" --unit 5 -o "$dir/top.png" --mode region
    $b gallery --db "$dir/index.db" -o "$dir/gallery"
    $b classify --model "$model" datasets/demo/images/people__astronaut.jpg --top 3
done
