#!/usr/bin/env bash
# neurodex vs onnxruntime (and PyTorch when present): whole-network forward at 224 px,
# 2 threads each, same weights, run side by side in one invocation.
#
# For efficientnet-lite0, resnet18 and alexnet at batch 1 and 16: images/s of each runtime
# (median, best and worst of several interleaved runs), then
#   RATIO <model> b<batch> neurodex=<img/s> onnxruntime=<img/s> ratio=<neurodex/onnxruntime>
# and a summary table with the targets. Lite0 uses models/efficientnet-lite0.safetensors;
# resnet18 and alexnet seeded random weights written once (target/bench/) and read by all.
# The ONNX graph and the PyTorch network are built from neurodex's own layer description
# (scripts/bench/), and their logits are checked against neurodex's before timing.
#
#   scripts/bench.sh                       15 runs per case
#   scripts/bench.sh --quick               5 runs per case (under 3 minutes once built)
#   scripts/bench.sh --layers MODEL [B]    per-layer times, neurodex vs onnxruntime (batch B, default 16)
#   scripts/bench.sh [--quick] --models efficientnet-lite0,resnet18   only those models
#   scripts/bench.sh --concepts [IMAGES]   concept scoring: one concept over all 1,760 units of a
#                                          synthetic IMAGES-image index (default 50,000; written
#                                          once to target/bench/), and the database size
#   scripts/bench.sh --onnx [MODEL ...]    the ONNX zoo's imported networks against onnxruntime
#                                          on the same files (scripts/bench-onnx.sh)
#
# onnxruntime comes from PyPI into target/bench-venv. PyTorch is Debian's python3-torch:
# TORCH_PYTHON (default /usr/bin/python3) is used if `import torch` works there.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=15
mode=speed
models=efficientnet-lite0,resnet18,alexnet
usage() { sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while (($#)); do
    case $1 in
        --quick) runs=5 ;;
        --models) models=${2:?--models needs a list}; shift ;;
        --concepts) shift; RAYON_NUM_THREADS=2 exec cargo run --release --quiet --example bench_concepts -- "$@" ;;
        --onnx) shift; exec scripts/bench-onnx.sh "${NEURODEX_ONNX_ZOO:-$HOME/.cache/neurodex/onnx-zoo-2}" "$@" ;;
        --layers) mode=layers; layers_model=${2:?--layers needs a model name}; layers_batch=${3:-16}; break ;;
        *) usage ;;
    esac
    shift
done
export RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 MKL_NUM_THREADS=2

cargo build --release --quiet --example bench_forward
B=target/release/examples/bench_forward
venv=target/bench-venv
if ! "$venv/bin/python" -c "import onnxruntime, onnx, numpy" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet onnxruntime onnx numpy
fi
py=$PWD/$venv/bin/python
torch_py=${TORCH_PYTHON:-/usr/bin/python3}
if ! "$torch_py" -c "import torch, numpy" 2>/dev/null; then
    echo "note: no PyTorch column ($torch_py cannot import torch and numpy)"
    torch_py=
fi
mkdir -p target/bench

# Prints MODEL:ARCH.json:WEIGHTS, writing the files it needs.
prepare() {
    local model=$1 weights=target/bench/$1.safetensors
    if [[ $model == efficientnet-lite0 ]]; then
        weights=models/efficientnet-lite0.safetensors
    elif [[ ! -f $weights ]]; then
        $B weights "$model" "$weights"
    fi
    $B arch "$model" > "target/bench/$model.json"
    echo "$model:target/bench/$model.json:$weights"
}

if [[ $mode == layers ]]; then
    IFS=: read -r model arch weights < <(prepare "$layers_model")
    exec "$py" scripts/bench/drive.py layers "$layers_batch" 5 "$B layers $model $weights" \
        "$py scripts/bench/ort_peer.py $arch $weights"
fi

cases=()
for model in ${models//,/ }; do
    cases+=("$(prepare "$model")")
done
"$py" scripts/bench/drive.py speed "$runs" "$B serve" "$py scripts/bench/ort_peer.py" \
    "${torch_py:+$torch_py scripts/bench/torch_peer.py}" "${cases[@]}"
