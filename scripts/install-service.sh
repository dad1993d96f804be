#!/usr/bin/env bash
# Installs qvmd as a systemd service running from this checkout, and the `qvm` group whose members
# may use the admin socket. Run after `npm run setup`; needs root and systemd.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "install-service: run as root" >&2; exit 1; }
getent group qvm >/dev/null || groupadd --system qvm
sed "s|@QVM_ROOT@|$root|g" "$root/host-agent/systemd/qvmd.service.in" > /etc/systemd/system/qvmd.service
systemctl daemon-reload
systemctl enable --now qvmd.service
echo "qvmd is running; add users to the qvm group to let them use \`qvm\`: usermod -aG qvm USER"
