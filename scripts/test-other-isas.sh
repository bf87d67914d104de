#!/usr/bin/env bash
# The kernel tests on instruction sets this machine may lack, under emulation:
#   an AVX2-only x86-64 (qemu-x86_64 -cpu Haswell: the AVX-512 cases print SKIPPED)
#   aarch64 with NEON (cross-built, qemu-aarch64), with --arm
# Needs Debian's qemu-user (and for --arm gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and
# `rustup target add aarch64-unknown-linux-gnu`; the aarch64 build of all dependencies takes
# 10-25 minutes on 2 cores, into target/arm).
#
#   scripts/test-other-isas.sh [--arm] [TEST FILTER, default: kernels]
set -euo pipefail
cd "$(dirname "$0")/.."
arm=0
if [[ ${1:-} == --arm ]]; then arm=1; shift; fi
filter=${1:-kernels}
# The library's unit-test binary, as cargo reports it.
bin=$(cargo test --lib --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["lib"]:
        print(m["executable"])')
echo "== x86-64 without AVX-512 (qemu-x86_64 -cpu Haswell): $bin"
qemu-x86_64 -cpu Haswell "$bin" "$filter"
if ((arm)); then
    echo "== aarch64 with NEON (qemu-aarch64)"
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
    export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
    cargo test --release --lib --target aarch64-unknown-linux-gnu --target-dir target/arm "$filter"
fi
