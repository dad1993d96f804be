# A live qvm system on a USB stick or DVD: qvmd, and the web shell (`qvm shell`) full screen in a
# kiosk browser, nothing else on screen. Built with `nix build .#live-iso` (flake.nix); not built
# or booted by this repository's tests, which cannot download nixpkgs.
#
# Self-sufficient: everything a domain needs is in the ISO and is put in place at boot.
#   - The kernel bundle (nix/kernel-bundle.nix, from the ISO's own kernel, so the two share their
#     store paths) is linked into qvmd's image store before qvmd starts (qvm-live-kernel.service):
#     DATA/images/kernels/<hash> -> the bundle's store path, and `current` -> <hash> unless
#     `current` names a bundle that is not one of these links (one built on the data partition
#     with `qvm-images build kernel`, which is then kept). A link, not a copy: the bundle stays in
#     the squashfs and costs no RAM; the store reads it through the link, and the VMM jail binds
#     each file by its path (mount --bind follows the link) with /nix/store shown read-only anyway.
#     There is no `qvm` command that imports a kernel bundle, so this is the store's own layout
#     (images/src/store.ts), written by the script.
#   - The Nix guest template (nix/guest-template.nix, nixos-guest.qvm-template) is imported with
#     `qvm template import` once qvmd answers (qvm-live-template.service): the import checks the
#     archive strictly, writes the store entry under the hash it computes itself and registers the
#     TemplateVM, so no layout or hash of the store is duplicated here. It runs again only when
#     the template's current image is not this archive's (its hash is the root's sha256, first 24
#     digits, as the import names it); a different one is replaced (--replace, the old image is
#     kept), but an existing TemplateVM keeps its root (the import says so): on a data partition
#     carried over from an older ISO, `qvm remove nixos-guest` and reboot to take the new one.
#   - Domains (services.qvmd.domains, applied by qvm-apply.service after the template is there):
#     sys-net (uplink passt), sys-firewall and work, as `qvm setup-network` and Qubes have them.
#     qvmd starts autostart domains when it starts, which on a fresh data directory is before
#     they exist, so qvm-live-setup.service starts sys-net and sys-firewall once they are
#     declared (only those: work is ready, not started), and makes sys-firewall the global
#     default_netvm.
#   - sys-net's NIC: when the IOMMU is on (/sys/kernel/iommu_groups has groups) the same service
#     assigns the machine's network controllers (PCI class 0x02) to sys-net with
#     `qvm pci attach --persistent`, each only when its IOMMU group is viable by qvmd's rule
#     (host-agent/src/vmm/pci/sysfs.ts: every other device of the group is a bridge, has no
#     driver, or has vfio-pci/pci-stub/pcieport), and resets sys-net's uplink (`qvm prefs -D`:
#     none), since a passed-through card is sys-net's uplink (docs/network.md: qvm has no uplink
#     value for it yet). Inside sys-net NetworkManager drives the card (nmtui in its terminal
#     picks a Wi-Fi network; nix/guest-template.nix). Without an IOMMU, or without a viable
#     group, sys-net keeps passt and the host's NIC (NixOS' DHCP here). If sys-net then fails to
#     start with the cards, they are detached and it starts again on passt. NOT run on any
#     machine (no IOMMU where this was written); the DNS of sys-net's clients through a
#     passed-through card is not set up by qvm (docs/network.md).
#   - The data directory: an ext4 partition labelled qvm-data on the stick, when there is one;
#     without it everything lives in RAM (the ISO's tmpfs root) and is gone at power-off. qvmd's
#     admission check (host-agent/src/domain/admission.ts: statfs of the data directory against
#     the overlays' possible growth plus --disk-reserve) applies to either; on the tmpfs that
#     free space is RAM the domains' memory also needs, which no check adds up.
#   - See nix/module.nix's comment: VMMs are jailed on NixOS as on Debian, not yet run there.
{
  config,
  lib,
  pkgs,
  modulesPath,
  utils,
  ...
}:
let
  qvmd = config.services.qvmd;

  # The optional persistent partition: any ext4 filesystem with this label, e.g. made with
  # `mkfs.ext4 -L qvm-data /dev/sdX3` on the stick the ISO was written to.
  dataLabel = "qvm-data";

  kioskUser = "qvm-kiosk";

  live = config.qvm.live;
  bundle = live.kernelBundle;
  archive = live.templateArchive;
  templateName = archive.manifest.name;
  # The archive's file, as nix/guest-template.nix names it.
  archiveFile = "${archive}/${templateName}.qvm-template";
  # qvmd's image store: DATA/images unless extraArgs give --images-dir (not done here).
  imagesDir = "${qvmd.dataDir}/images";
  qvm = "${qvmd.package}/bin/qvm";

  # qvmd is Type=simple: started is not yet listening (as nix/module.nix's qvm-apply waits).
  waitForQvmd = ''
    for _ in $(seq 1 120); do
      ${qvm} ls >/dev/null 2>&1 && break
      sleep 0.5
    done
  '';

  # Before qvmd: the bundle into the image store (see the header). Idempotent.
  installKernel = pkgs.writeShellScript "qvm-live-kernel" ''
    set -eu
    kernels=${imagesDir}/kernels
    hash=${bundle.hash}
    [ -d ${qvmd.dataDir} ] || mkdir -m 0700 ${qvmd.dataDir}
    mkdir -p "$kernels"
    # Links this script made for an older ISO's bundle, which is no longer there.
    for e in "$kernels"/*; do
      if [ -L "$e" ] && [ "$(basename "$e")" != current ] && [ ! -e "$e" ]; then
        case $(readlink "$e") in /nix/store/*) rm -f "$e" ;; esac
      fi
    done
    if [ "$(readlink "$kernels/$hash" || true)" != ${bundle} ]; then
      rm -rf "''${kernels:?}/''${hash:?}"
      ln -s ${bundle} "$kernels/$hash"
    fi
    current=$(readlink "$kernels/current" || true)
    if [ -n "$current" ] && [ "$current" != "$hash" ] && [ -e "$kernels/$current/manifest.json" ] && [ ! -L "$kernels/$current" ]; then
      echo "qvm-live: keeping the current kernel bundle $current (built on this data partition); ours is $hash"
    elif [ "$current" != "$hash" ]; then
      ln -sfn "$hash" "$kernels/current.tmp"
      mv -T "$kernels/current.tmp" "$kernels/current"
      echo "qvm-live: kernel bundle $hash (${bundle.manifest.kernelRelease}) is current"
    fi
  '';

  # Once qvmd answers: the template, through qvm's own import (see the header). Idempotent.
  importTemplate = pkgs.writeShellScript "qvm-live-template" ''
    set -eu
    ${waitForQvmd}
    want=$(tar -xOf ${archiveFile} qvm-template.json | jq -r '.root.sha256[0:24]')
    dir=${imagesDir}/templates/${templateName}
    current=$(readlink "$dir/current" || true)
    if [ "$current" = "$want" ]; then
      echo "qvm-live: template image ${templateName} $want is current"
      exit 0
    fi
    if [ -n "$current" ]; then
      exec ${qvm} template import --replace ${archiveFile}
    fi
    exec ${qvm} template import ${archiveFile}
  '';

  # After qvm apply: sys-net's NICs when an IOMMU allows, then the net domains started.
  setup = pkgs.writeShellScript "qvm-live-setup" ''
    set -u
    ${waitForQvmd}
    # QVM_LIVE_SYSFS: another sysfs root, for nix/tests/live-scripts.sh only.
    sys=''${QVM_LIVE_SYSFS:-/sys}
    nics=
    if [ -n "$(ls -A "$sys"/kernel/iommu_groups 2>/dev/null)" ]; then
      for dev in "$sys"/bus/pci/devices/*; do
        [ -e "$dev/iommu_group" ] || continue
        case $(cat "$dev/class") in 0x02*) ;; *) continue ;; esac
        bdf=$(basename "$dev")
        group=$(readlink -f "$dev/iommu_group")
        viable=1
        for other in "$group"/devices/*; do
          if [ ! -e "$other" ] || [ "$(basename "$other")" = "$bdf" ]; then continue; fi
          class=$(cat "$other/class")
          case $class in 0x02*|0x0604*|0x0609*) continue ;; esac
          driver=$(basename "$(readlink "$other/driver" 2>/dev/null || echo none)")
          case $driver in none|vfio-pci|pci-stub|pcieport) ;; *) viable= ;; esac
        done
        if [ -n "$viable" ]; then
          nics="$nics $bdf"
        else
          echo "qvm-live: $bdf shares IOMMU group $(basename "$group") with devices the host drives: left to the host"
        fi
      done
    else
      echo "qvm-live: no IOMMU: sys-net reaches the network through passt"
    fi
    # Assignments for cards this machine does not have (a data partition from another machine).
    for bdf in $(${qvm} pci ls sys-net --json 2>/dev/null | jq -r '.[] | select(.assignedTo == "sys-net") | .bdf' 2>/dev/null); do
      case " $nics " in *" $bdf "*) ;; *) ${qvm} pci detach sys-net "$bdf" ;; esac
    done
    if [ -n "$nics" ]; then
      # shellcheck disable=SC2086
      if ${qvm} pci attach --persistent sys-net $nics; then
        ${qvm} prefs -D sys-net uplink
        echo "qvm-live: sys-net drives$nics (VFIO); pick a network with nmtui in its terminal"
      else
        nics=
      fi
    fi
    if [ -z "$nics" ]; then
      ${qvm} prefs sys-net uplink passt
    fi
    ${qvm} prefs --global default_netvm sys-firewall
    if ! ${qvm} start --skip-if-running sys-net && [ -n "$nics" ]; then
      echo "qvm-live: sys-net did not start with$nics: back to passt"
      # shellcheck disable=SC2086
      ${qvm} pci detach sys-net $nics
      ${qvm} prefs sys-net uplink passt
      ${qvm} start --skip-if-running sys-net
    fi
    ${qvm} start --skip-if-running sys-firewall
  '';

  # The cage session's one program: start the web shell as the kiosk user (a member of the qvm
  # group, so it may use the admin socket), then show it. The URL carries the shell's access token
  # and is readable by this user only; on the browser's command line it is visible to other local
  # users, and this system has none.
  kiosk = pkgs.writeShellScript "qvm-kiosk" ''
    url_file=''${XDG_RUNTIME_DIR:?}/qvm-shell.url
    rm -f "$url_file"
    ${qvmd.package}/bin/qvm shell --url-file "$url_file" &
    for _ in $(seq 1 100); do
      [ -s "$url_file" ] && break
      sleep 0.2
    done
    exec ${pkgs.chromium}/bin/chromium --kiosk --no-first-run --ozone-platform=wayland \
      --user-data-dir="''${XDG_RUNTIME_DIR}/chromium" "$(cat "$url_file")"
  '';

  # The boot steps below run once and count as done (active) afterwards.
  oneshot = script: {
    Type = "oneshot";
    RemainAfterExit = true;
    ExecStart = script;
  };
in
{
  imports = [
    # A bootable live image, not the installer (installation-cd-minimal.nix would add its tools
    # and an installer user).
    "${modulesPath}/installer/cd-dvd/iso-image.nix"
    # Drivers for whatever machine the stick is plugged into.
    "${modulesPath}/profiles/all-hardware.nix"
    ./module.nix
  ];

  options.qvm.live = {
    kernelBundle = lib.mkOption {
      type = lib.types.package;
      default = pkgs.callPackage ./kernel-bundle.nix { inherit (config.boot.kernelPackages) kernel; };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/kernel-bundle.nix { inherit (config.boot.kernelPackages) kernel; }";
      description = "The kernel bundle linked into qvmd's image store at boot (nix/kernel-bundle.nix).";
    };
    templateArchive = lib.mkOption {
      type = lib.types.package;
      # flake.nix passes its guest-template package; this default evaluates nix/guest-template.nix
      # as a NixOS system of its own (nixpkgs' pkgs.nixos; not evaluated by the offline checks).
      default = (pkgs.nixos ./guest-template.nix).config.system.build.qvmTemplate;
      defaultText = lib.literalExpression "(pkgs.nixos ./nix/guest-template.nix).config.system.build.qvmTemplate";
      description = "The template archive (system.build.qvmTemplate of nix/guest-template.nix) imported at boot.";
    };
  };

  config = {
    isoImage = {
      makeEfiBootable = true;
      makeUsbBootable = true;
      squashfsCompression = "zstd -Xcompression-level 6";
    };

    services.qvmd.enable = true;

    # sys-net, sys-firewall and work, all on the Nix template; sys-net's uplink is passt unless
    # qvm-live-setup gives it the machine's NIC (see the header). Only the net domains autostart.
    services.qvmd.domains = {
      sys-net = {
        label = "red";
        template = templateName;
        netvm = "";
        properties = {
          provides_network = true;
          uplink = "passt";
          autostart = true;
        };
      };
      sys-firewall = {
        label = "green";
        template = templateName;
        netvm = "sys-net";
        properties = {
          provides_network = true;
          autostart = true;
        };
      };
      work = {
        label = "blue";
        template = templateName;
        netvm = "sys-firewall";
      };
    };

    # vfio-pci for sys-net's NIC, and the IOMMU on where the firmware has one: Intel's is off by
    # default in many kernels' configs (AMD's is on when present). Both are what qvm pci asks for.
    boot.kernelModules = [ "vfio-pci" ];
    boot.kernelParams = [ "intel_iommu=on" ];

    systemd.services.qvm-live-kernel = {
      description = "Link the ISO's kernel bundle into qvmd's image store";
      wantedBy = [ "qvmd.service" ];
      before = [ "qvmd.service" ];
      after = [ "${utils.escapeSystemdPath qvmd.dataDir}.mount" ];
      serviceConfig = oneshot installKernel;
    };
    systemd.services.qvm-live-template = {
      description = "Import the ISO's Nix guest template (qvm template import)";
      wantedBy = [ "multi-user.target" ];
      after = [ "qvmd.service" ];
      requires = [ "qvmd.service" ];
      environment.QVM_RUNTIME_DIR = qvmd.runtimeDir;
      serviceConfig = oneshot importTemplate;
      path = [
        pkgs.gnutar
        pkgs.jq
      ];
    };
    # The domains need their template.
    systemd.services.qvm-apply = {
      after = [ "qvm-live-template.service" ];
      wants = [ "qvm-live-template.service" ];
    };
    systemd.services.qvm-live-setup = {
      description = "Give sys-net the machine's NIC when the IOMMU allows; start sys-net and sys-firewall";
      wantedBy = [ "multi-user.target" ];
      after = [ "qvm-apply.service" ];
      requires = [ "qvm-apply.service" ];
      environment.QVM_RUNTIME_DIR = qvmd.runtimeDir;
      serviceConfig = oneshot setup;
      path = [ pkgs.jq ];
    };

    fileSystems.${qvmd.dataDir} = {
      device = "/dev/disk/by-label/${dataLabel}";
      fsType = "ext4";
      # Optional: a machine without the partition boots as well, and keeps nothing.
      options = [
        "nofail"
        "x-systemd.device-timeout=5s"
      ];
    };
    # nofail keeps the mount out of local-fs.target's requirements, so order qvmd after it by name:
    # qvmd must not start on the tmpfs and then be covered by the partition.
    systemd.services.qvmd.after = [ "${utils.escapeSystemdPath qvmd.dataDir}.mount" ];

    users.users.${kioskUser} = {
      isNormalUser = true;
      description = "qvm web shell kiosk";
      extraGroups = [ qvmd.group ];
    };

    services.cage = {
      enable = true;
      user = kioskUser;
      program = kiosk;
    };
    # The page lists qvmd's domains: start it once qvmd is there.
    systemd.services."cage-tty1" = {
      after = [ "qvmd.service" ];
      wants = [ "qvmd.service" ];
    };

    # Wired networks come up with DHCP (NixOS' default); sys-net reaches them through passt.
    networking.hostName = "qvm-live";

    system.stateVersion = lib.trivial.release;
  };
}
