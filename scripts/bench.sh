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
#   scripts/bench.sh --index DIR [N]       `neurodex index` (release build, 2 threads, batch 16,
#                                          the default model and layers) against a plain Python
#                                          indexer (scripts/bench/peer_index.py: PIL in 2 worker
#                                          processes, onnxruntime with the same taps on 2 threads,
#                                          numpy max/argmax, SQLite rows) on the first N image
#                                          files of DIR (default all): REPEAT=3 alternating runs
#                                          of each; whether the peer stored the same peaks
#                                          (scripts/bench/check_peer.py); the input side on one
#                                          core, JPEG decoding and resizing in images/s for
#                                          neurodex (examples/decode_only.rs) and PIL
#                                          (scripts/bench/pil_decode.py) and their share of each
#                                          index run's CPU time; last, from the best run of each
#                                          by wall clock of the whole command (start-up included,
#                                          about 1.5 s for the peer: take N in the thousands),
#                                            RATIO index neurodex=<img/s> peer=<img/s> ratio=<neurodex/peer>
#                                          Benchmark photos: /work/shared/tools/fetch-bench-images.sh
#                                          then make-imagenet-like.py (ImageNet-like JPEGs, q90).
#   scripts/bench.sh --backward [MODEL [NODE UNIT]]
#                                          forward + backward (the input gradient of a unit's
#                                          maximum: what saliency, top --mode and visualize run)
#                                          against PyTorch's autograd on the same network, batch 1
#                                          and 16 (default efficientnet-lite0, blocks.14 unit 40):
#                                            RATIO backward <model> b<batch> neurodex=.. pytorch=.. ratio=..
#   scripts/bench.sh --cpu avx2 [...]     any of the above with AVX-512 hidden from every process
#                                          (an LD_PRELOAD library, scripts/bench/cpuid_mask.c, makes
#                                          cpuid answer without it): neurodex, the gemm crate,
#                                          onnxruntime and PyTorch all on their AVX2 kernels, as
#                                          on an AVX2-only machine of the same clock and caches
#   scripts/bench.sh --merge DIR [N]       DIR indexed whole and as N shards (default 8), the
#                                          shards merged, the result checked against the whole
#                                          index; the merge's cost per image (scripts/bench-merge.sh)
#
# onnxruntime (and Pillow 12, for --index) comes from PyPI into target/bench-venv.
# PyTorch is Debian's python3-torch:
# TORCH_PYTHON (default /usr/bin/python3) is used if `import torch` works there.
set -euo pipefail
caller_dir=$PWD
cd "$(dirname "$0")/.."
runs=15
mode=speed
hide_avx512=
models=efficientnet-lite0,resnet18,alexnet
usage() { sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
while (($#)); do
    case $1 in
        --quick) runs=5 ;;
        --cpu) [[ ${2:-} == avx2 ]] || { echo "--cpu takes avx2" >&2; exit 2; }; hide_avx512=1; shift ;;
        --models) models=${2:?--models needs a list}; shift ;;
        --concepts) shift; RAYON_NUM_THREADS=2 exec cargo run --release --quiet --example bench_concepts -- "$@" ;;
        --merge) shift; [ $# -ge 1 ] || usage; d=$(cd "$caller_dir" && realpath "$1"); shift
                 exec scripts/bench-merge.sh "$d" "$@" ;;
        --onnx) shift; exec scripts/bench-onnx.sh "${NEURODEX_ONNX_ZOO:-$HOME/.cache/neurodex/onnx-zoo-2}" "$@" ;;
        --index) mode=index; index_dir=$(cd "$caller_dir" && realpath "${2:?--index needs a folder}")
                 index_n=${3:-}; break ;;
        --layers) mode=layers; layers_model=${2:?--layers needs a model name}; layers_batch=${3:-16}; break ;;
        --backward) mode=backward; back_model=${2:-efficientnet-lite0}; back_node=${3:-blocks.14}
                    back_unit=${4:-40}; break ;;
        *) usage ;;
    esac
    shift
done
export RAYON_NUM_THREADS=2 OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 MKL_NUM_THREADS=2

cargo build --release --quiet --example bench_forward
B=target/release/examples/bench_forward
venv=target/bench-venv
# Pillow 12, as scripts/reference/top9.sh: 13.0 no longer always runs its horizontal
# resampling pass first, and where it does not, its output differs from 12's (and neurodex's)
# by a grey level here and there (13 of the 168 demo photos at the Lite0 crop).
if ! "$venv/bin/python" -c "import onnxruntime, onnx, numpy, PIL; assert PIL.__version__.split('.')[0] == '12'" 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet onnxruntime onnx numpy "pillow>=12,<13"
fi
py=$PWD/$venv/bin/python
torch_py=${TORCH_PYTHON:-/usr/bin/python3}
if [[ $mode == index ]]; then
    torch_py=
elif ! "$torch_py" -c "import torch, numpy" 2>/dev/null; then
    echo "note: no PyTorch column ($torch_py cannot import torch and numpy)"
    torch_py=
fi
mkdir -p target/bench
if [[ -n $hide_avx512 ]]; then
    grep -qw cpuid_fault /proc/cpuinfo ||
        { echo "--cpu avx2 needs CPUID faulting (cpuid_fault in /proc/cpuinfo)" >&2; exit 2; }
    cc -O2 -shared -fPIC -o target/bench/cpuid_mask.so scripts/bench/cpuid_mask.c
    cargo build --release --quiet --bin neurodex --example decode_only
    # Every process from here on: the runtimes, Python, glibc's string functions.
    export LD_PRELOAD=$PWD/target/bench/cpuid_mask.so
    export GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD
    echo "AVX-512 hidden from every process (scripts/bench/cpuid_mask.c): $("$B" isa)"
fi

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

if [[ $mode == backward ]]; then
    [[ -n $torch_py ]] || { echo "--backward needs PyTorch (TORCH_PYTHON)" >&2; exit 2; }
    IFS=: read -r model arch weights < <(prepare "$back_model")
    node=$("$py" -c "import json, sys; a = json.load(open(sys.argv[1])); print(next(i for i, n in enumerate(a['nodes']) if sys.argv[2] in [n['name']] + n.get('aliases', [])))" "$arch" "$back_node")
    echo "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores; 2 threads each"
    exec "$py" scripts/bench/drive.py backward "$runs" "$B serve" "$torch_py scripts/bench/torch_peer.py" \
        "$model:$arch:$weights" "$node" "$back_unit"
fi

if [[ $mode == index ]]; then
    cargo build --release --quiet --bin neurodex --example decode_only
    IFS=: read -r _ arch weights < <(prepare efficientnet-lite0)
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    # The first N image files, in the order both indexers walk them, under their own
    # relative paths (ImageNet-like class folders stay folders).
    mkdir "$work/photos"
    "$py" scripts/bench/peer_index.py --list "$index_dir" ${index_n:+--limit "$index_n"} |
        (cd "$index_dir" && xargs -0 cp --parents -t "$work/photos")
    count=$(find "$work/photos" -type f | wc -l)
    echo "index: $count photos from $index_dir, batch 16, 2 threads each; $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
    rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.1f", n / s }'; }
    best() { awk -v a="$1" -v b="$2" 'BEGIN { print (b > a ? b : a) }'; }
    run_neurodex() {
        rm -f "$work"/nd.db*
        local t0 t1 rc=0
        t0=$(date +%s.%N)
        target/release/neurodex index "$work/photos" --db "$work/nd.db" --batch 16 2> "$work/nd.log" || rc=$?
        t1=$(date +%s.%N)
        # 1: the run finished but some inputs failed (named in the log).
        ((rc <= 1)) || { cat "$work/nd.log" >&2; exit 1; }
        local n self
        n=$(sed -n 's/^indexed \([0-9]*\) images.*/\1/p' "$work/nd.log")
        self=$(sed -n 's/^indexed .*(\([0-9.]*\) images\/s).*/\1/p' "$work/nd.log")
        nd_wall=$(rate "$n" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
        echo "  neurodex: $nd_wall images/s wall clock ($n images; its own figure $self images/s; $(grep '^time:' "$work/nd.log"))"
        best_nd=$(best "$best_nd" "$nd_wall"); best_nd_self=$(best "$best_nd_self" "$self")
    }
    run_peer() {
        local t0 t1 out
        t0=$(date +%s.%N)
        out=$("$py" scripts/bench/peer_index.py "$arch" "$weights" "$work/photos" "$work/peer.db" \
              --batch 16 --workers 2 --threads 2 2> "$work/peer.log") || { cat "$work/peer.log" >&2; exit 1; }
        t1=$(date +%s.%N)
        local n self
        n=$(echo "$out" | sed -n 's/^indexed \([0-9]*\) images.*/\1/p')
        self=$(echo "$out" | sed -n 's/^indexed .*(\([0-9.]*\) images\/s).*/\1/p')
        peer_wall=$(rate "$n" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
        echo "  peer:     $peer_wall images/s wall clock ($n images; its own figure $self images/s, from the first read to the last commit)"
        best_peer=$(best "$best_peer" "$peer_wall"); best_peer_self=$(best "$best_peer_self" "$self")
    }
    best_nd=0; best_nd_self=0; best_peer=0; best_peer_self=0
    for r in $(seq "${REPEAT:-3}"); do
        echo "run $r:"
        # Alternate who goes first: a burst of load from elsewhere then hits both alike.
        if ((r % 2)); then run_neurodex; run_peer; else run_peer; run_neurodex; fi
    done
    "$py" scripts/bench/check_peer.py "$work/nd.db" "$work/peer.db" | sed 's/^/  /'
    sample=$((count < 500 ? count : 500))
    echo "input side, one core, the first $sample photos (best of 3 rounds):"
    nd_in=$(target/release/examples/decode_only "$work/photos" "$sample" efficientnet-lite0 3)
    pil_in=$("$py" scripts/bench/pil_decode.py "$arch" "$work/photos" "$sample" 3)
    echo "$nd_in" | sed 's/^/  neurodex /'
    echo "$pil_in" | sed 's/^/  PIL      /'
    nd_dr=$(echo "$nd_in" | sed -n 's/^decode+resize: [0-9]* images, \([0-9.]*\) images.*/\1/p')
    pil_dr=$(echo "$pil_in" | sed -n 's/^decode+resize: [0-9]* images, \([0-9.]*\) images.*/\1/p')
    # An index run at R images/s on 2 cores spends 2/R core-seconds per image; decoding and
    # resizing one takes 1/D of them.
    awk -v r="$best_nd" -v d="$nd_dr" 'BEGIN { printf "  decode+resize: %.1f%% of the neurodex index run (%.1f images/s on 2 cores)\n", 100 * r / (2 * d), r }'
    awk -v r="$best_peer" -v d="$pil_dr" 'BEGIN { printf "  decode+resize: %.1f%% of the peer index run (%.1f images/s on 2 cores)\n", 100 * r / (2 * d), r }'
    echo "best own figures (excluding start-up): neurodex $best_nd_self, peer $best_peer_self images/s"
    awk -v a="$best_nd" -v b="$best_peer" 'BEGIN { printf "RATIO index neurodex=%.1f peer=%.1f ratio=%.2f\n", a, b, a / b }'
    exit 0
fi

cases=()
for model in ${models//,/ }; do
    cases+=("$(prepare "$model")")
done
"$py" scripts/bench/drive.py speed "$runs" "$B serve" "$py scripts/bench/ort_peer.py" \
    "${torch_py:+$torch_py scripts/bench/torch_peer.py}" "${cases[@]}"
