#!/usr/bin/env bash
# qvm's main job on a fresh machine: set up, build the kernel bundle and template (cached), boot a
# domain, run a program in it through the guest agent, print its output, shut it down.
# Usage: scripts/demo.sh [-- COMMAND...]   (default command: uname -a)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QVM_DATA_DIR=${QVM_DATA_DIR:-/var/lib/qvm}
export QVM_RUNTIME_DIR=${QVM_RUNTIME_DIR:-/run/qvm}
./qvm-images build
exec node host-agent/dist/qvm-demo.js "$@"
