#!/usr/bin/env bash
# Checks of the Nix side that run without nixpkgs (which the test machines cannot download):
#   1. every .nix file of the repository parses (nix-instantiate --parse);
#   2. nix/tests/default.nix, evaluated with nixpkgs' lib alone (the vendored copy in
#      ../shared/vendor/nixpkgs-lib): the module's options and assertions, its qvmd unit against
#      the shipped one, the domains file it writes against nix/tests/domains-expected.json, the
#      package's lock and source, the live ISO (its declared domains, the units that put the
#      kernel bundle and the template in place, the NIC set-up), the kernel bundle
#      (nix/kernel-bundle.nix), the guest template and the flake's outputs, with NixOS and pkgs
#      stubbed (nix/tests/stubs.nix);
#   3. what Nix makes there, checked with qvm's own parsers (nix/tests/check-exports.mjs): the
#      kernel bundle's manifest.json (images/src/store.ts), its module list (images/src/kernel.ts)
#      and the live ISO's domains file (the schema `qvm apply` parses with);
#   4. the live ISO's boot scripts (kernel bundle and template into the image store, sys-net's
#      NICs), run against a temporary data directory, a fake sysfs and a fake qvm
#      (nix/tests/live-scripts.sh).
# Building qvm, the ISO or the template, and NixOS' own evaluation of the module, need nixpkgs:
# `nix flake check` does those where it can be downloaded.
#
# A check whose tool is missing says what it skipped and passes, except under CI=true, where
# both nix-instantiate (Debian's nix-bin, from scripts/install-system-deps.sh) and the vendored
# lib must be there. Evaluation only: nothing is built, and no Nix store or state of the machine
# is read or written.
#
#   bash scripts/nix-check.sh
#   QVM_NIXPKGS_LIB=DIR bash scripts/nix-check.sh   another copy of nixpkgs' lib/
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[nix-check] %s\n' "$*" >&2; }
ci() { [[ ${CI:-} == true ]]; }
skip() {
  if ci; then
    log "FAILED: $* (CI=true: required)"
    exit 1
  fi
  log "skipped: $*"
}

if ! command -v nix-instantiate >/dev/null; then
  skip "no nix-instantiate (apt-get install nix-bin): the Nix files were not checked"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Nix 2.8 wants writable state and log directories even to evaluate: temporary ones, never the
# machine's. The dummy store is one nothing can be read from or written to.
export NIX_STATE_DIR=$tmp/state NIX_LOG_DIR=$tmp/log NIX_CONF_DIR=$tmp/etc HOME=$tmp/home
mkdir -p "$NIX_CONF_DIR" "$HOME"
printf 'build-users-group =\nexperimental-features =\n' >"$NIX_CONF_DIR/nix.conf"
nix_eval() { nix-instantiate --readonly-mode --store dummy:// "$@"; }

failed=0
mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.nix' | LC_ALL=C sort)
for f in "${files[@]}"; do
  [[ -f $f ]] || continue
  if ! out=$(nix_eval --parse "$f" 2>&1 >/dev/null); then
    log "FAIL parse $f: $out"
    failed=1
  fi
done
log "parsed ${#files[@]} .nix files"

lib=${QVM_NIXPKGS_LIB:-../shared/vendor/nixpkgs-lib/lib}
if [[ ! -f $lib/default.nix ]]; then
  skip "no nixpkgs lib at $lib (the vendored copy, ../shared/vendor/nixpkgs-lib): the module, the domains file and the flake were not evaluated"
  exit "$failed"
fi
lib=$(cd "$lib" && pwd)

if ! results=$(nix_eval --eval --strict --json --arg lib "import $lib" nix/tests 2>"$tmp/err"); then
  log "FAIL evaluating nix/tests/default.nix:"
  cat "$tmp/err" >&2
  exit 1
fi
# One line per check, from the JSON list of { name, ok, detail }.
# shellcheck disable=SC2016 # JavaScript, not shell
node -e '
  let bad = 0;
  for (const c of JSON.parse(process.argv[1])) {
    console.error(`[nix-check] ${c.ok ? "ok  " : "FAIL"} ${c.name}${c.ok ? "" : `: ${c.detail}`}`);
    if (!c.ok) bad++;
  }
  process.exit(bad ? 1 : 0);
' "$results" || failed=1

# 3. What Nix makes for qvm's own parsers (nix/tests/exports.nix): the kernel bundle's
#    manifest.json against images/src/store.ts's schema and its modules against kernel.ts's list,
#    the live ISO's domains file against the parser of `qvm apply`, through the same bundling of
#    qvm's TypeScript as scripts/gen-nix-data.mjs (needs node_modules and the generated protocol
#    code: `npm ci && npm run build`).
if ! exported=$(nix_eval --eval --strict --json --arg lib "import $lib" nix/tests/exports.nix 2>"$tmp/err"); then
  log "FAIL evaluating nix/tests/exports.nix:"
  cat "$tmp/err" >&2
  failed=1
else
  rc=0
  node nix/tests/check-exports.mjs "$exported" || rc=$?
  if ((rc == 2)); then
    skip "qvm's parsers could not be loaded (npm ci, npm run build): the kernel manifest and the live ISO's domains were not checked against them"
  elif ((rc != 0)); then
    failed=1
  fi
  # 4. The live ISO's boot scripts, run against a temporary data directory, a fake sysfs and a
  #    fake qvm (nix/tests/live-scripts.sh).
  printf '%s\n' "$exported" >"$tmp/exports.json"
  bash nix/tests/live-scripts.sh "$tmp/exports.json" || failed=1
fi

if ((failed)); then log "FAILED"; else log "all passed"; fi
exit "$failed"
