#!/usr/bin/env bash
# Installs the Debian packages qvm needs on the host, and vhost-device-vsock from Debian sid.
# Idempotent: a second run with everything present only checks and exits.
# The sid package is fetched through a private apt configuration under $QVM_APT_DIR so the
# machine's own apt sources are never edited (see docs/platform.md).
set -euo pipefail

PACKAGES=(qemu-system-x86 qemu-utils busybox-static mmdebstrap e2fsprogs protobuf-compiler bsdutils
  socat kmod cpio xz-utils zstd gcc libc6-dev ca-certificates chromium)
QVM_APT_DIR=${QVM_APT_DIR:-/var/cache/qvm/apt-sid}
SID_MIRROR=${QVM_SID_MIRROR:-http://deb.debian.org/debian}

log() { printf '[setup] %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo
else
  SUDO=
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v vhost-device-vsock >/dev/null 2>&1; then
  log "installing vhost-device-vsock from Debian sid (private apt list in $QVM_APT_DIR)"
  $SUDO mkdir -p "$QVM_APT_DIR/lists/partial" "$QVM_APT_DIR/archives/partial"
  echo "deb $SID_MIRROR sid main" | $SUDO tee "$QVM_APT_DIR/sid.list" >/dev/null
  apt_opts=(-o "Dir::Etc::SourceList=$QVM_APT_DIR/sid.list" -o "Dir::Etc::SourceParts=-"
    -o "Dir::State::Lists=$QVM_APT_DIR/lists" -o "Dir::Cache::Archives=$QVM_APT_DIR/archives"
    -o "APT::Get::List-Cleanup=0")
  $SUDO apt-get "${apt_opts[@]}" update -qq
  (cd "$QVM_APT_DIR" && $SUDO apt-get "${apt_opts[@]}" download vhost-device-vsock)
  # Installed with dpkg so apt never resolves anything else against sid.
  $SUDO dpkg -i "$QVM_APT_DIR"/vhost-device-vsock_*.deb >/dev/null
fi
log "system packages present"
