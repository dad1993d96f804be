#!/usr/bin/env bash
# Installs qvmd as a systemd service running from this checkout, and the `qvm` group whose members
# may use the admin socket. Run after `npm run setup`; needs root and systemd.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "install-service: run as root" >&2; exit 1; }
# The service runs this checkout's code as root: nobody but root may be able to change it. The
# checkout and every directory above it must be root's and not writable by group or others.
check_root_owned() {
  local p=$1
  while :; do
    local owner mode
    owner=$(stat -c %u "$p") mode=$(stat -c %a "$p")
    if [ "$owner" != 0 ] || { (( 8#$mode & 8#022 )) && [ ! -k "$p" ]; }; then
      echo "install-service: $p is owned by uid $owner with mode $mode; root's code must not be writable by anyone else: install from a root-owned copy (e.g. git clone into /opt/qvm as root) or chown -R root: and chmod go-w it" >&2
      exit 1
    fi
    [ "$p" = / ] && break
    p=$(dirname "$p")
  done
}
check_root_owned "$root"
for f in host-agent/dist/qvmd.js host-agent/dist/qvm-peercred host-agent/dist/qvm-tap-open host-agent/dist/qvm-qmp-add-fd; do
  [ -e "$root/$f" ] && [ "$(stat -c %u "$root/$f")" != 0 ] && { echo "install-service: $root/$f is not root's; rebuild it as root" >&2; exit 1; }
done
getent group qvm >/dev/null || groupadd --system qvm
sed "s|@QVM_ROOT@|$root|g" "$root/host-agent/systemd/qvmd.service.in" > /etc/systemd/system/qvmd.service
systemctl daemon-reload
systemctl enable --now qvmd.service
echo "qvmd is running; add users to the qvm group to let them use \`qvm\`: usermod -aG qvm USER"
