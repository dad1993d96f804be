# A live qvm system on a USB stick or DVD: qvmd, and the web shell (`qvm shell`) full screen in a
# kiosk browser, nothing else on screen. Built with `nix build .#live-iso` (flake.nix); not built
# or booted by this repository's tests, which cannot download nixpkgs.
#
# What it can and cannot do yet:
#   - Domains need a kernel bundle and a template. `qvm-images build` makes them with Debian's
#     tools (dpkg, mmdebstrap, busybox-static), which this NixOS system does not have: build them
#     on a Debian host (`./qvm-images build`, or `npm run demo`) and copy its images directory to
#     `images/` on the data partition below.
#   - Without the data partition everything lives in RAM (the ISO's tmpfs) and is gone at power-off.
#   - See nix/module.nix's warning: VMMs run unjailed on NixOS for now.
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

  isoImage = {
    makeEfiBootable = true;
    makeUsbBootable = true;
    squashfsCompression = "zstd -Xcompression-level 6";
  };

  services.qvmd.enable = true;

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
}
