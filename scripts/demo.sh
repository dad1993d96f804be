#!/usr/bin/env bash
# qvm's main job on a fresh machine: set up, build the kernel bundle and the debian-12 template
# (cached), start qvmd (unless one already runs), create a domain, start it, run a program in it,
# print its output, shut it down.
# Usage: scripts/demo.sh [COMMAND...]   (default command: uname -a)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QVM_DATA_DIR=${QVM_DATA_DIR:-/var/lib/qvm}
export QVM_RUNTIME_DIR=${QVM_RUNTIME_DIR:-/run/qvm}
# The demo runs on machines without KVM too: it accepts TCG, which gives no hardware isolation.
export QVM_ALLOW_TCG=${QVM_ALLOW_TCG:-1}
echo "[demo] QVM_ALLOW_TCG=$QVM_ALLOW_TCG: without KVM the domain runs under TCG software emulation (no hardware isolation)" >&2
./qvm-images build

say() { printf '\n\033[1m$ %s\033[0m\n' "$*" >&2; }
if ! ./qvm ls >/dev/null 2>&1; then
  mkdir -p "$QVM_DATA_DIR"
  echo "[demo] starting qvmd (log: $QVM_DATA_DIR/qvmd.log)" >&2
  ./qvm daemon --data-dir "$QVM_DATA_DIR" --runtime-dir "$QVM_RUNTIME_DIR" 2>>"$QVM_DATA_DIR/qvmd.log" &
  daemon=$!
  # Stopping qvmd leaves domains running; the demo shuts its own domain down first.
  trap 'kill -TERM $daemon 2>/dev/null; wait $daemon 2>/dev/null || true' EXIT
  for _ in $(seq 100); do ./qvm ls >/dev/null 2>&1 && break; sleep 0.1; done
fi

if ! ./qvm check demo -q 2>/dev/null; then
  say qvm create --template debian-12 --label red demo
  ./qvm create --template debian-12 --label red demo
fi
say qvm start --skip-if-running demo
./qvm start --skip-if-running demo
say qvm ls
./qvm ls
if [ $# -eq 0 ]; then set -- uname -a; fi
say qvm run --pass-io demo -- "$@"
status=0
./qvm run --pass-io demo -- "$@" || status=$?
say qvm shutdown --wait demo
./qvm shutdown --wait demo
exit $status
