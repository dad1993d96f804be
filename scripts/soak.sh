#!/usr/bin/env bash
# Soak: repeated start -> run -> stop cycles of real domains through qvmd, two at once, for
# QVM_SOAK_BOOTS boots (default 50); failures are kept with their logs in .qvm/soak/<time>/.
# Not part of the test command (scripts/test.sh): 50 boots under TCG take about 25 minutes.
#   QVM_SOAK_BOOTS=4 npm run soak      a short run
#   QVM_SOAK_PARALLEL=N                domains at once (default 2)
#   QVM_SOAK_COMMAND="..."             what each boot runs (default: cat /proc/uptime)
#   QVM_SOAK_KERNELOPTS="..."          the domains' kernelopts (default: the guest's journal on
#                                      its serial console, so a failed boot's journal is kept)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export QVM_IMAGES_DIR=${QVM_IMAGES_DIR:-$PWD/.qvm/images}
./qvm-images build
# Domains run under TCG on machines without KVM: the soak opts in (tests/soak/main.ts says so too).
export QVM_ALLOW_TCG=1
exec node tests/dist/soak.js
