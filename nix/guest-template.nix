# SKELETON, not a working template: a NixOS root filesystem for a qvm domain, with the guest
# agent's unit, packed as a template archive qvm can import. `nix build .#guest-template` gives
# result/nixos-guest.qvm-template; on the qvm host:
#
#   sudo qvm template import result/nixos-guest.qvm-template     (TemplateVM "nixos-guest")
#
# Nobody has built it with nixpkgs or booted it under qvm yet.
#
# The contract with qvm's side (docs/design.md, "Image store": templates built elsewhere), and
# where this skeleton stops short of it:
#   - qvm boots every domain with its own kernel bundle (a Debian kernel and the initramfs of
#     images/initramfs/init), not with a NixOS kernel: the initramfs mounts the root volume (a
#     virtio disk with serial "root"; ext4), mounts the bundle's modules volume at /lib/modules
#     and the private volume at /rw (binding /rw/home onto /home), then hands over to qvm.init
#     (default /sbin/init). NixOS has no /sbin/init: the archive's manifest names
#     `init = "/nix/var/nix/profiles/system/init"` (the system profile nixos-install, which
#     make-disk-image runs, sets in the image; so a `nixos-rebuild` inside the TemplateVM is what
#     its next boot runs), which qvm turns into the TemplateVM's kernelopts `qvm.init=…`.
#     UNTESTED: NixOS' stage 2 normally follows NixOS' own stage 1.
#   - NixOS' kmod looks for modules of the NixOS kernel, not in the bundle's /lib/modules: the
#     modules the agent needs (vsock, nft) may not load. UNRESOLVED.
#   - The Debian template (images/src/template.ts, installGuestFiles) also installs the qrexec
#     services (/etc/qubes-rpc), qrexec-run, the qrexec tools in /usr/bin, the static helpers
#     qvm-pty and qvm-exec-data and the net services under /usr/lib/qvm, the USB scripts, masked
#     units and modprobe settings. None of that is here yet: `qvm run` needs qvm-pty, so an
#     imported nixos-guest boots (at best) with the agent but without qrexec or `qvm run`.
#   - The archive: format "qvm-template/1" (images/src/template-archive.ts, docs/cli.md `qvm
#     template`): an uncompressed tar of exactly qvm-template.json, then root.img.zst (the raw
#     ext4 image, zstd-compressed), checked strictly by the import. system.build.qvmTemplate
#     packs it (below); its `rootImage` is the raw image (nixos.img), `manifest` the fields fixed
#     here. The members are ustar, so root.img.zst must stay under 8 GiB (tar refuses more).
#     builtAt is SOURCE_DATE_EPOCH (1980-01-01 in a Nix build unless set), so the same image
#     gives the same archive.
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

  # The root volume: a bare ext4 filesystem (no partition table), as the Debian template's
  # root.img; make-disk-image's raw format leaves it at nixos.img.
  rootImage = import "${modulesPath}/../lib/make-disk-image.nix" {
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

  # The manifest's fields known before the build (the root's sizes and checksum are computed in
  # it). name is the TemplateVM's name: a domain name (qvm's rule, nix/generated/qvm-data.json).
  manifest = {
    format = "qvm-template/1";
    name = "nixos-guest";
    suite = "nixos";
    init = "/nix/var/nix/profiles/system/init";
  };

  # The archive, laid out as `qvm template export` writes one. The script takes everything from
  # its environment (rawImage, manifestFields, archive, out), so it runs outside Nix as well.
  templateArchive =
    pkgs.runCommand "qvm-template-${manifest.name}"
      {
        nativeBuildInputs = [
          pkgs.zstd
          pkgs.jq
          pkgs.gnutar
        ];
        rawImage = "${rootImage}/nixos.img";
        manifestFields = builtins.toJSON manifest;
        archive = "${manifest.name}.qvm-template";
        passthru = { inherit rootImage manifest; };
      }
      ''
        set -euo pipefail
        epoch=''${SOURCE_DATE_EPOCH:-315532800}
        work=$(mktemp -d)

        sizeBytes=$(stat -L -c %s "$rawImage")
        if (( sizeBytes % 512 != 0 )); then
          echo "$rawImage is $sizeBytes bytes, not a multiple of 512: qvm would refuse it" >&2
          exit 1
        fi
        zstd -q -T0 -c -- "$rawImage" >"$work/root.img.zst"
        compressedBytes=$(stat -c %s "$work/root.img.zst")
        sha256=$(sha256sum "$work/root.img.zst" | cut -d " " -f 1)
        builtAt=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

        jq -n --argjson fields "$manifestFields" --arg builtAt "$builtAt" \
          --argjson compressedBytes "$compressedBytes" --arg sha256 "$sha256" --argjson sizeBytes "$sizeBytes" \
          '$fields + { builtAt: $builtAt, root: { file: "root.img.zst", compressedBytes: $compressedBytes, sha256: $sha256, sizeBytes: $sizeBytes } }' \
          >"$work/qvm-template.json"

        # The manifest first, then the root: ustar headers owned by 0:0 with the build's time,
        # nothing of the build machine's users or clock.
        mkdir -p "$out"
        tar --create --format=ustar --owner=0 --group=0 --numeric-owner --mode=0644 --mtime="@$epoch" --sort=none --no-recursion --file="$out/$archive" -C "$work" qvm-template.json root.img.zst
        members=$(tar --list --file="$out/$archive")
        if [[ $members != $'qvm-template.json\nroot.img.zst' ]]; then
          echo "$out/$archive holds $members" >&2
          exit 1
        fi
        rm -r "$work"
      '';
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

  system.build.qvmRootImage = rootImage;
  system.build.qvmTemplate = templateArchive;
}
