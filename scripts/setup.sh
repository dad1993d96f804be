#!/usr/bin/env bash
# Everything a fresh Debian/Ubuntu machine needs before qvm runs: Debian packages (and
# vhost-device-vsock from sid, via a private apt list), npm packages, generated code and bundles.
# Idempotent and quiet when there is nothing to do.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-system-deps.sh

if [[ ! -d node_modules/@grpc/grpc-js || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "[setup] installing npm packages" >&2
  # Exactly what package-lock.json says, and it is never rewritten: the lock lists every optional
  # platform package (esbuild's, rollup's, unrs-resolver's) with its version and integrity, so a
  # fresh clone installs the same tree and `git status` stays clean. A lock out of step with a
  # package.json fails here: run `npm install` and commit the lock.
  npm ci --no-audit --no-fund --loglevel=error
fi

echo "[setup] generating protocol code and bundling" >&2
npm run -s build

# `qvm` on PATH; the wrapper follows the link back to this checkout.
if [[ $(readlink -f /usr/local/bin/qvm 2>/dev/null) != "$PWD/qvm" ]]; then
  echo "[setup] linking /usr/local/bin/qvm to $PWD/qvm" >&2
  if [[ $(id -u) -eq 0 ]]; then ln -sf "$PWD/qvm" /usr/local/bin/qvm; else sudo ln -sf "$PWD/qvm" /usr/local/bin/qvm; fi
fi
