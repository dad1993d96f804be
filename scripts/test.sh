#!/usr/bin/env bash
# The whole test suite: setup, type check, architecture lint, unit and integration tests, then
# end-to-end tests that boot real domains under QEMU (images are built first and cached in
# .qvm/images).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QVM_IMAGES_DIR=${QVM_IMAGES_DIR:-$PWD/.qvm/images}
# Test machines have no usable KVM: the tests accept TCG, which gives no hardware isolation.
export QVM_ALLOW_TCG=1
echo "[test] QVM_ALLOW_TCG=1: domains may run under TCG software emulation (no hardware isolation)" >&2
echo "[test] type check" >&2
npm run -s typecheck
echo "[test] lint: package surfaces, host-agent layering, import cycles" >&2
npm run -s lint
echo "[test] Nix: parse nix/, evaluate the module and its domains file offline" >&2
bash scripts/nix-check.sh
mkdir -p .qvm/reports
echo "[test] unit and integration tests" >&2
npx vitest run --project unit --reporter=default --reporter=json --outputFile.json=.qvm/reports/unit.json "$@"
echo "[test] end-to-end tests with real VMs" >&2
npx vitest run --project e2e --reporter=default --reporter=json --outputFile.json=.qvm/reports/e2e.json "$@"
# One plain closing line for the whole suite.
node -e '
  const r = ["unit", "e2e"].map((p) => require(`./.qvm/reports/${p}.json`));
  const sum = (k) => r.reduce((n, x) => n + x[k], 0);
  console.log(`${sum("numPassedTests")} passed, ${sum("numFailedTests")} failed`);
'
