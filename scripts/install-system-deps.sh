#!/usr/bin/env bash
# Installs the Debian packages qvm needs on the host, and vhost-device-vsock from Debian sid.
# Idempotent: a second run with everything present only checks and exits.
# The sid package is fetched through a private apt configuration under $QVM_APT_DIR so the
# machine's own apt sources are never edited. Its mirror is the one this machine's apt already
# uses: the first Debian archive in apt's sources (see debian_mirror), or $QVM_SID_MIRROR.
#
#   bash scripts/install-system-deps.sh                     install what is missing
#   bash scripts/install-system-deps.sh --print-sid-mirror  print the mirror sid would come from
#
# QVM_APT_ETC=DIR reads DIR/sources.list and DIR/sources.list.d/ instead of apt's own (tests).
set -euo pipefail

# passt gives a domain its network; dnsmasq-base is only the binary (the `dnsmasq` package would
# start a system DNS service), which the tests' private internet runs; nftables and conntrack
# filter a domain's traffic and drop its tracked connections when the rules change.
# sway, wayvnc, foot and fonts-dejavu-core run a stand-in for a domain's window on the host in the
# browser tests of the web shell's windows (tests/e2e/gui-windows.test.ts, no VM); with
# wl-clipboard (wl-copy, wl-paste) they run the agent's windows and their clipboard on the host
# (guest-agent/src/gui/real-sway.test.ts).
# nix-bin gives scripts/nix-check.sh its nix-instantiate (to parse and evaluate nix/ offline); with
# --no-install-recommends it brings no nix-daemon and no /nix setup.
PACKAGES=(qemu-system-x86 qemu-utils busybox-static mmdebstrap e2fsprogs protobuf-compiler bsdutils
  socat kmod cpio xz-utils zstd gcc libc6-dev ca-certificates chromium passt dnsmasq-base nftables
  conntrack tinyproxy-bin shellcheck sway wayvnc foot fonts-dejavu-core wl-clipboard nix-bin)
QVM_APT_DIR=${QVM_APT_DIR:-/var/cache/qvm/apt-sid}

log() { printf '[setup] %s\n' "$*" >&2; }

# The files apt reads its sources from, in its order: the main list, then the parts directory's
# *.list and *.sources files by name.
apt_source_files() {
  local list parts
  if [[ -n ${QVM_APT_ETC:-} ]]; then
    list=$QVM_APT_ETC/sources.list
    parts=$QVM_APT_ETC/sources.list.d
  else
    eval "$(apt-config shell list Dir::Etc::SourceList/f parts Dir::Etc::SourceParts/d 2>/dev/null)" || true
    list=${list:-/etc/apt/sources.list}
    parts=${parts:-/etc/apt/sources.list.d}
  fi
  [[ -f $list ]] && printf '%s\n' "$list"
  if [[ -d $parts ]]; then
    find "$parts" -maxdepth 1 -type f \( -name '*.list' -o -name '*.sources' \) -print | LC_ALL=C sort
  fi
  return 0
}

# The first Debian archive URI in apt's sources: a `deb` entry (one-line format, or deb822 with
# Types/URIs/Suites, not Enabled: no) whose suite is a Debian release or alias, with or without
# -updates/-backports (so neither a security archive nor a third-party one, nor a cdrom).
debian_mirror() {
  local files=()
  mapfile -t files < <(apt_source_files)
  ((${#files[@]})) || return 0
  awk '
    function debian_suite(s) {
      sub(/\/$/, "", s)
      return s ~ /^(sid|unstable|testing|stable|oldstable|oldoldstable|experimental|hamm|slink|potato|woody|sarge|etch|lenny|squeeze|wheezy|jessie|stretch|buster|bullseye|bookworm|trixie|forky|duke)(-updates|-backports|-backports-sloppy|-proposed-updates)?$/
    }
    function consider(uri, suite) {
      if (done || uri ~ /^cdrom:/ || !debian_suite(suite)) return
      sub(/\/+$/, "", uri)
      print uri
      done = 1
      exit
    }
    # One deb822 stanza, once it is complete.
    function stanza(   n, u, s, i, j, uris, suites) {
      if (types ~ /(^|[ \t])deb([ \t]|$)/ && tolower(enabled) != "no") {
        n = split(f["uris"], uris, /[ \t]+/)
        for (i = 1; i <= n; i++) {
          if (uris[i] == "") continue
          s = split(f["suites"], suites, /[ \t]+/)
          for (j = 1; j <= s; j++) if (suites[j] != "") consider(uris[i], suites[j])
        }
      }
      delete f
      types = ""; enabled = ""; key = ""
    }
    FNR == 1 { if (deb822) stanza(); deb822 = (FILENAME ~ /\.sources$/) }
    deb822 {
      if ($0 ~ /^#/) next
      if ($0 ~ /^[ \t]*$/) { stanza(); next }
      if ($0 ~ /^[ \t]/) { if (key != "") f[key] = f[key] " " $0; next }
      i = index($0, ":")
      if (!i) next
      key = tolower(substr($0, 1, i - 1))
      f[key] = substr($0, i + 1)
      if (key == "types") types = f[key]
      if (key == "enabled") { enabled = f[key]; gsub(/[ \t]/, "", enabled) }
      next
    }
    {
      sub(/#.*/, "")
      gsub(/\[[^]]*\]/, "")
      if ($1 == "deb" && NF >= 3) consider($2, $3)
    }
    END { if (!done && deb822) stanza() }
  ' "${files[@]}"
}

sid_mirror() {
  if [[ -n ${QVM_SID_MIRROR:-} ]]; then
    printf '%s\n' "$QVM_SID_MIRROR"
    return
  fi
  local m
  m=$(debian_mirror)
  if [[ -z $m ]]; then
    log "no Debian archive in apt's sources ($(apt_source_files | tr '\n' ' ')): set QVM_SID_MIRROR to the URL of a Debian mirror (the one apt would use for 'deb URL sid main')"
    return 1
  fi
  printf '%s\n' "$m"
}

if [[ ${1:-} == --print-sid-mirror ]]; then
  sid_mirror
  exit
elif (($#)); then
  echo "usage: $0 [--print-sid-mirror]" >&2
  exit 2
fi

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
  SID_MIRROR=$(sid_mirror)
  log "installing vhost-device-vsock from Debian sid at $SID_MIRROR (private apt list in $QVM_APT_DIR)"
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
