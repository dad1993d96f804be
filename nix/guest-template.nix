# SKELETON, not a working template: a NixOS root filesystem for a qvm domain, with the guest
# agent's unit. It evaluates into an ext4 image (`nix build .#guest-template`), but nobody has
# booted it under qvm.
#
# The contract with qvm's side (docs/design.md, "Image store": templates built elsewhere), and
# where this skeleton stops short of it:
#   - qvm boots every domain with its own kernel bundle (a Debian kernel and the initramfs of
#     images/initramfs/init), not with a NixOS kernel: the initramfs mounts the root volume (a
#     virtio disk with serial "root"; ext4), mounts the bundle's modules volume at /lib/modules
#     and the private volume at /rw (binding /rw/home onto /home), then hands over to qvm.init
#     (default /sbin/init). NixOS has no /sbin/init: the template's archive manifest names
#     `init = "/nix/var/nix/profiles/system/init"`, which qvm turns into the TemplateVM's
#     kernelopts `qvm.init=…`. UNTESTED: NixOS' stage 2 normally follows NixOS' own stage 1.
#   - NixOS' kmod looks for modules of the NixOS kernel, not in the bundle's /lib/modules: the
#     modules the agent needs (vsock, nft) may not load. UNRESOLVED.
#   - The Debian template (images/src/template.ts, installGuestFiles) also installs the qrexec
#     services (/etc/qubes-rpc), qrexec-run, the qrexec tools in /usr/bin, the static helpers
#     qvm-pty and qvm-exec-data and the net services under /usr/lib/qvm, the USB scripts, masked
#     units and modprobe settings. None of that is here yet: `qvm run` needs qvm-pty.
#   - Registration: `qvm template import FILE` takes a "qvm-template/1" archive (docs/cli.md:
#     a tar of qvm-template.json and root.img.zst, checked strictly). This skeleton builds the
#     raw image only; packing it into that archive is left to do.
{
  config,
  lib,
  pkgs,
  modulesPath,
  ...
}:
let
  qvm = pkgs.callPackage ./package.nix { };
  guestAgent = "${qvm}/lib/qvm/guest-agent";
  # The agent's shipped unit (guest-agent/systemd/qvm-agent.service), read from the generated
  # data as nix/module.nix reads qvmd's: only the program's path differs.
  shipped = (builtins.fromJSON (builtins.readFile ./generated/qvm-data.json)).guestAgentUnit;
  words = s: lib.filter (w: w != "") (lib.splitString " " s);
in
{
  # No bootloader, kernel or initrd of NixOS' own: qvm's kernel bundle boots the domain.
  boot.loader.grub.enable = false;
  boot.initrd.enable = false;
  boot.kernel.enable = false;
  # Mounted by qvm's initramfs before init runs; systemd only takes it over.
  fileSystems."/" = {
    device = "/dev/disk/by-label/qvm-root";
    fsType = "ext4";
  };

  systemd.services.qvm-agent = {
    description = shipped.Unit.Description;
    unitConfig.DefaultDependencies = shipped.Unit.DefaultDependencies;
    before = words shipped.Unit.Before;
    conflicts = words shipped.Unit.Conflicts;
    wantedBy = words shipped.Install.WantedBy;
    # The loader looks for the bundle beside itself unless told; here they are in the store.
    environment.QVM_AGENT_BUNDLE = "${guestAgent}/dist/qvm-agent.cjs";
    serviceConfig = removeAttrs shipped.Service [ "ExecStart" ] // {
      ExecStart = "${pkgs.nodejs}/bin/node ${guestAgent}/loader/qvm-agent-loader.cjs";
    };
  };

  # As in the Debian template: the domain's user, with passwordless sudo; isolation is between
  # domains, not inside one.
  users.users.user = {
    isNormalUser = true;
    extraGroups = [ "wheel" ];
  };
  security.sudo.wheelNeedsPassword = false;

  networking.hostName = "qvm";
  system.stateVersion = lib.trivial.release;

  # The root volume: a bare ext4 filesystem (no partition table), as the Debian template's root.img.
  system.build.qvmRootImage = import "${modulesPath}/../lib/make-disk-image.nix" {
    inherit config lib pkgs;
    partitionTableType = "none";
    format = "raw";
    fsType = "ext4";
    label = "qvm-root";
    installBootLoader = false;
    copyChannel = false;
    diskSize = "auto";
    additionalSpace = "1024M";
  };
}
