#!/usr/bin/env bash
# Imported ONNX networks: neurodex against onnxruntime on the same file, 2 threads each,
# images/s of the whole forward pass at the file's input size (median of REPS passes),
# the two alternated ROUNDS times and the best of each kept (the machine may be shared).
#
#   scripts/bench-onnx.sh [ZOO_DIR] [MODEL ...]
#   ZOO_DIR  the ONNX zoo (scripts/make-onnx-zoo.py; default ~/.cache/neurodex/onnx-zoo-2)
# Env: BATCH=16 REPS=5 ROUNDS=2; PY=/usr/bin/python3 (with onnxruntime and numpy)
# Prints one line per model: RATIO <model> b<batch> neurodex=<img/s> onnxruntime=<img/s> ratio=<neurodex/ort>
set -euo pipefail
cd "$(dirname "$0")/.."
zoo=${1:-$HOME/.cache/neurodex/onnx-zoo-2}
shift || true
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
    models=(resnet18 resnet50 vgg16_bn alexnet mobilenet_v2 densenet121 googlenet squeezenet1_1
            mobilenet_v3_large efficientnet_b0 regnet_y_400mf inception_v3 shufflenet_v2_x1_0
            convnext_tiny)
fi
batch=${BATCH:-16} reps=${REPS:-5} rounds=${ROUNDS:-2}
py=${PY:-/usr/bin/python3}
export RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2
cargo build --release --quiet --example bench_onnx
bin=target/release/examples/bench_onnx
ort() {
    "$py" - "$1" "$batch" "$reps" <<'PY'
import sys, time
import numpy as np, onnxruntime as ort
path, batch, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
o = ort.SessionOptions(); o.intra_op_num_threads = 2; o.inter_op_num_threads = 1
s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
i = s.get_inputs()[0]
side = i.shape[2]
x = ((np.arange(batch * 3 * side * side) % 251) / 125.5 - 1.0).astype(np.float32).reshape(batch, 3, side, side)
# The file may fix the batch size it was exported with: run it in slices of that.
fixed = i.shape[0] if isinstance(i.shape[0], int) else batch
run = lambda: [s.run(None, {i.name: x[k:k + fixed]}) for k in range(0, batch, fixed)]
run()
t = []
for _ in range(reps):
    a = time.perf_counter(); run(); t.append(time.perf_counter() - a)
t.sort()
print(f"{batch / t[len(t) // 2]:.2f}")
PY
}
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(grep -o 'avx512f\|avx2' /proc/cpuinfo | sort -u | xargs); batch $batch, 2 threads"
for m in "${models[@]}"; do
    f=$zoo/$m-op13.onnx
    [ -f "$f" ] || { echo "$m: no $f (scripts/make-onnx-zoo.py)"; continue; }
    best_n=0 best_o=0
    for _ in $(seq "$rounds"); do
        n=$("$bin" "$f" "$batch" "$reps")
        o=$(ort "$f")
        best_n=$(awk -v a="$best_n" -v b="$n" 'BEGIN { print (b > a) ? b : a }')
        best_o=$(awk -v a="$best_o" -v b="$o" 'BEGIN { print (b > a) ? b : a }')
    done
    awk -v m="$m" -v b="$batch" -v n="$best_n" -v o="$best_o" \
        'BEGIN { printf "RATIO %s b%s neurodex=%.2f onnxruntime=%.2f ratio=%.2f\n", m, b, n, o, n / o }'
done
