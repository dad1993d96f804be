#!/usr/bin/env bash
# Benchmarks: boot, exec round trip and stdout throughput, each next to its raw baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QVM_IMAGES_DIR=${QVM_IMAGES_DIR:-$PWD/.qvm/images}
# Benchmarks run where there is no KVM too; TCG gives no hardware isolation.
export QVM_ALLOW_TCG=${QVM_ALLOW_TCG:-1}
echo "[bench] QVM_ALLOW_TCG=$QVM_ALLOW_TCG: domains may run under TCG software emulation (no hardware isolation)" >&2
./qvm-images build
exec node tests/dist/bench.js
