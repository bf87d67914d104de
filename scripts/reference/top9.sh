#!/usr/bin/env bash
# neurodex's top-9 against an independent reference: onnxruntime on PIL-preprocessed photos
# (scripts/reference/top9.py says how the reference is made).
#
#   scripts/reference/top9.sh DB          per layer, overlap of DB's top-9 with the reference's
#   scripts/reference/top9.sh --inputs DIR    neurodex's network input vs PIL's for the images under DIR
#   scripts/reference/top9.sh --decoded DIR   neurodex's decoded pixels vs PIL's
#
# The model is efficientnet-lite0 (models/efficientnet-lite0.safetensors). onnxruntime,
# onnx, numpy and Pillow come from PyPI into target/ref-venv.
set -euo pipefail
cd "$(dirname "$0")/../.."
export RAYON_NUM_THREADS=${RAYON_NUM_THREADS:-2} OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
usage() { sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
(($# == 1 || $# == 2)) || usage
venv=target/ref-venv
if ! "$venv/bin/python" -c "import onnxruntime, onnx, numpy, PIL; assert PIL.__version__.startswith('12.')" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet onnxruntime onnx numpy "pillow>=12,<13"
fi
py=$venv/bin/python
cargo build --release --quiet --example bench_forward --example dump_input
mkdir -p target/reference
arch=target/reference/efficientnet-lite0.json
target/release/examples/bench_forward arch efficientnet-lite0 > "$arch"
case $1 in
    --inputs) exec "$py" scripts/reference/top9.py inputs "$arch" target/release/examples/dump_input "${2:?a directory}" ;;
    --decoded) exec "$py" scripts/reference/top9.py decoded target/release/examples/dump_input "${2:?a directory}" ;;
    -*) usage ;;
    *) (($# == 1)) || usage
       exec "$py" scripts/reference/top9.py top9 "$arch" models/efficientnet-lite0.safetensors "$1" ;;
esac
