#!/usr/bin/env bash
# Benchmarks: boot, exec round trip and stdout throughput, each next to its raw baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QVM_IMAGES_DIR=${QVM_IMAGES_DIR:-$PWD/.qvm/images}
./qvm-images build
exec node tests/dist/bench.js
