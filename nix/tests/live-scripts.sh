#!/usr/bin/env bash
# Runs the live ISO's boot scripts (nix/live-iso.nix: qvm-live-kernel, qvm-live-template,
# qvm-live-setup) here, as NixOS would run them, against a temporary data directory, a fake sysfs
# and a fake `qvm` that records its calls: the store paths in them are replaced by those
# stand-ins. Checks what they do with the image store and which qvm commands they run, not qvm
# itself. Called by scripts/nix-check.sh with the JSON nix/tests/exports.nix prints.
#
#   bash nix/tests/live-scripts.sh EXPORTS.json
set -euo pipefail

exports=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0
ok() { printf '[nix-check] ok   %s\n' "$1" >&2; }
fail() {
  printf '[nix-check] FAIL %s: %s\n' "$1" "$2" >&2
  failed=1
}
field() { node -e 'const v = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).liveScripts[process.argv[2]]; process.stdout.write(String(v))' "$exports" "$1"; }

qvm_path=$(field qvm)
bundle_path=$(field bundle)
archive_path=$(field archive)
data_dir=$(field dataDir)
hash=$(field hash)

# The fake qvm: every call on a line of $tmp/calls; `ls` answers at once; `pci ls --json` prints
# $FAKE_PCI_JSON; `start` of $FAKE_START_FAIL fails once.
mkdir -p "$tmp/bin"
cat >"$tmp/bin/qvm" <<'EOF'
#!/usr/bin/env bash
[ "$1" = ls ] && exit 0
echo "$*" >>"$FAKE_CALLS"
case "$*" in
  "pci ls sys-net --json") printf '%s\n' "${FAKE_PCI_JSON:-[]}" ;;
  "start --skip-if-running $FAKE_START_FAIL")
    if [ ! -e "$FAKE_CALLS.failed" ]; then : >"$FAKE_CALLS.failed"; exit 1; fi ;;
esac
exit 0
EOF
chmod +x "$tmp/bin/qvm"

# A script from the exports with the store paths and the data directory replaced.
script() {
  field "$1" | sed -e "s|$qvm_path|$tmp/bin/qvm|g" -e "s|$bundle_path|$tmp/bundle|g" \
    -e "s|$archive_path|$tmp/archive.tar|g" -e "s|$data_dir|$tmp/data|g" >"$tmp/$1.sh"
  printf '%s\n' "$tmp/$1.sh"
}
kernel_sh=$(script kernel)
template_sh=$(script template)
setup_sh=$(script setup)
export FAKE_CALLS=$tmp/calls

# --- qvm-live-kernel ---------------------------------------------------------------------------
kernels=$tmp/data/images/kernels
mkdir -p "$tmp/bundle"
echo '{}' >"$tmp/bundle/manifest.json"
name="the live ISO's kernel script: a fresh data directory gets kernels/<hash> -> the bundle and current -> <hash>"
if bash "$kernel_sh" >/dev/null && [ "$(readlink "$kernels/$hash")" = "$tmp/bundle" ] && [ "$(readlink "$kernels/current")" = "$hash" ] &&
  [ -e "$kernels/current/manifest.json" ] && [ "$(stat -c %a "$tmp/data")" = 700 ]; then ok "$name"; else fail "$name" "$(ls -la "$kernels")"; fi

name="the live ISO's kernel script: again, nothing changes"
before=$(ls -la --time-style=+%s.%N "$kernels")
if bash "$kernel_sh" >/dev/null && [ "$(ls -la --time-style=+%s.%N "$kernels")" = "$before" ]; then ok "$name"; else fail "$name" "$(ls -la "$kernels")"; fi

name="the live ISO's kernel script: an older ISO's dangling link goes, and current moves to this bundle"
ln -s /nix/store/00000000000000000000000000000000-gone "$kernels/old111"
ln -sfn old111 "$kernels/current"
if bash "$kernel_sh" >/dev/null && [ ! -L "$kernels/old111" ] && [ "$(readlink "$kernels/current")" = "$hash" ]; then ok "$name"; else fail "$name" "$(ls -la "$kernels")"; fi

name="the live ISO's kernel script: a bundle built on the data partition stays current"
mkdir -p "$kernels/deb222"
echo '{}' >"$kernels/deb222/manifest.json"
ln -sfn deb222 "$kernels/current"
if out=$(bash "$kernel_sh") && [ "$(readlink "$kernels/current")" = deb222 ] && [[ $out == *"keeping the current kernel bundle deb222"* ]] &&
  [ "$(readlink "$kernels/$hash")" = "$tmp/bundle" ]; then ok "$name"; else fail "$name" "$(ls -la "$kernels")"; fi

# --- qvm-live-template -------------------------------------------------------------------------
sha=0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
mkdir -p "$tmp/arc"
printf '{"root":{"sha256":"%s"}}\n' "$sha" >"$tmp/arc/qvm-template.json"
tar -cf "$tmp/archive.tar" -C "$tmp/arc" qvm-template.json
tdir=$tmp/data/images/templates/nixos-guest
name="the live ISO's template script: no image yet: qvm template import ARCHIVE"
: >"$FAKE_CALLS"
if bash "$template_sh" && [ "$(cat "$FAKE_CALLS")" = "template import $tmp/archive.tar" ]; then ok "$name"; else fail "$name" "$(cat "$FAKE_CALLS")"; fi
name="the live ISO's template script: this archive's image is current: nothing"
mkdir -p "$tdir"
ln -sfn "${sha:0:24}" "$tdir/current"
: >"$FAKE_CALLS"
if bash "$template_sh" >/dev/null && [ ! -s "$FAKE_CALLS" ]; then ok "$name"; else fail "$name" "$(cat "$FAKE_CALLS")"; fi
name="the live ISO's template script: another image is current: import --replace"
ln -sfn 999999999999999999999999 "$tdir/current"
: >"$FAKE_CALLS"
if bash "$template_sh" && [ "$(cat "$FAKE_CALLS")" = "template import --replace $tmp/archive.tar" ]; then ok "$name"; else fail "$name" "$(cat "$FAKE_CALLS")"; fi

# --- qvm-live-setup ----------------------------------------------------------------------------
# A fake sysfs: DEVICE BDF CLASS DRIVER GROUP.
device() {
  local sys=$1 bdf=$2 class=$3 driver=$4 group=$5
  mkdir -p "$sys/devices/$bdf" "$sys/bus/pci/devices" "$sys/kernel/iommu_groups/$group/devices" "$sys/bus/pci/drivers/$driver"
  echo "$class" >"$sys/devices/$bdf/class"
  ln -s "$sys/devices/$bdf" "$sys/bus/pci/devices/$bdf"
  ln -s "$sys/kernel/iommu_groups/$group" "$sys/devices/$bdf/iommu_group"
  ln -s "$sys/devices/$bdf" "$sys/kernel/iommu_groups/$group/devices/$bdf"
  [ "$driver" = none ] || ln -s "$sys/bus/pci/drivers/$driver" "$sys/devices/$bdf/driver"
}
expect_calls() {
  local name=$1 expected=$2
  if [ "$(cat "$FAKE_CALLS")" = "$expected" ]; then ok "$name"; else fail "$name" "$(tr '\n' ';' <"$FAKE_CALLS")"; fi
}

nosys=$tmp/sys-none
device "$nosys" 0000:00:19.0 0x020000 e1000e 1
rm -rf "${nosys:?}/kernel/iommu_groups"/* # a NIC, and no IOMMU groups
: >"$FAKE_CALLS"
QVM_LIVE_SYSFS=$nosys bash "$setup_sh" >/dev/null
expect_calls "the live ISO's setup script: no IOMMU: sys-net keeps passt; sys-net and sys-firewall start, nothing else" \
  "pci ls sys-net --json
prefs sys-net uplink passt
prefs --global default_netvm sys-firewall
start --skip-if-running sys-net
start --skip-if-running sys-firewall"

sys=$tmp/sys-iommu
device "$sys" 0000:00:19.0 0x020000 e1000e 5      # wired, alone in its group
device "$sys" 0000:00:1c.0 0x060400 pcieport 7    # a root port ...
device "$sys" 0000:03:00.0 0x028000 iwlwifi 7     # ... and the Wi-Fi card behind it
device "$sys" 0000:04:00.0 0x020000 r8169 9       # a NIC sharing its group with ...
device "$sys" 0000:04:00.1 0x040300 snd_hda_intel 9 # ... a device the host drives
device "$sys" 0000:00:02.0 0x030000 i915 2        # not a NIC
: >"$FAKE_CALLS"
out=$(QVM_LIVE_SYSFS=$sys bash "$setup_sh")
expect_calls "the live ISO's setup script: IOMMU: the NICs of viable groups go to sys-net (qvm pci attach --persistent), its uplink reset" \
  "pci ls sys-net --json
pci attach --persistent sys-net 0000:00:19.0 0000:03:00.0
prefs -D sys-net uplink
prefs --global default_netvm sys-firewall
start --skip-if-running sys-net
start --skip-if-running sys-firewall"
name="the live ISO's setup script: a NIC in a group with a host-driven device stays with the host, and says so"
if [[ $out == *"0000:04:00.0 shares IOMMU group 9"* ]]; then ok "$name"; else fail "$name" "$out"; fi

: >"$FAKE_CALLS"
FAKE_PCI_JSON='[{"bdf":"0000:99:00.0","assignedTo":"sys-net","present":false},{"bdf":"0000:00:19.0","assignedTo":"sys-net","present":true}]' \
  FAKE_START_FAIL=sys-net QVM_LIVE_SYSFS=$sys bash "$setup_sh" >/dev/null
expect_calls "the live ISO's setup script: an assignment of a card not here is detached; sys-net failing with the cards falls back to passt" \
  "pci ls sys-net --json
pci detach sys-net 0000:99:00.0
pci attach --persistent sys-net 0000:00:19.0 0000:03:00.0
prefs -D sys-net uplink
prefs --global default_netvm sys-firewall
start --skip-if-running sys-net
pci detach sys-net 0000:00:19.0 0000:03:00.0
prefs sys-net uplink passt
start --skip-if-running sys-net
start --skip-if-running sys-firewall"

exit "$failed"
