#!/usr/bin/env bash
# neurodex vs onnxruntime, whole-network forward at 224 px, 2 threads each, same weights.
# For each model and batch: the median (best/worst) images/s of both, then
#   RATIO <model> b<batch> neurodex=<img/s> onnxruntime=<img/s> ratio=<neurodex/onnxruntime>
# EfficientNet-Lite0 uses the embedded weights; resnet18 and alexnet seeded random weights
# written once by the neurodex side and read by both. The ONNX graph is built from
# neurodex's own layer description (scripts/bench/peer.py), and the two runtimes' logits are
# compared on a fixed input before timing.
#
#   scripts/bench.sh            7 timed runs per case
#   scripts/bench.sh --quick    3 runs per case (under 3 minutes once built)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=7
[[ "${1:-}" == "--quick" ]] && runs=3
export RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2

cargo build --release --quiet --example bench_forward
B=target/release/examples/bench_forward
venv=target/bench-venv
if [[ ! -x $venv/bin/python ]] || ! $venv/bin/python -c "import onnxruntime, onnx, numpy" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet onnxruntime onnx numpy
fi
mkdir -p target/bench

for model in efficientnet-lite0 resnet18 alexnet; do
    weights=target/bench/$model.safetensors
    if [[ $model == efficientnet-lite0 ]]; then
        weights=models/efficientnet-lite0.safetensors
    elif [[ ! -f $weights ]]; then
        $B weights "$model" "$weights"
    fi
    $B arch "$model" > "target/bench/$model.json"
    $B logits "$model" "$weights" "target/bench/$model.logits"
    peer=$("$venv/bin/python" scripts/bench/peer.py "target/bench/$model.json" "$weights" \
        "target/bench/$model.logits" 1,16 "$runs")
    for batch in 1 16; do
        read -r nd_med nd_best nd_worst < <($B time "$model" "$weights" "$batch" "$runs")
        read -r _ ort_med ort_best ort_worst < <(grep "^$batch " <<< "$peer")
        echo "$model b$batch: neurodex median $nd_med (best $nd_best, worst $nd_worst) img/s;" \
            "onnxruntime median $ort_med (best $ort_best, worst $ort_worst) img/s"
        ratio=$(python3 -c "print(f'{$nd_med / $ort_med:.2f}')")
        echo "RATIO $model b$batch neurodex=$nd_med onnxruntime=$ort_med ratio=$ratio"
    done
done
