# A NixOS root filesystem for a qvm domain, with what qvm's own Debian template installs
# (images/src/template.ts, installGuestFiles and customize), packed as a template archive qvm can
# import. `nix build .#guest-template` gives result/nixos-guest.qvm-template; on the qvm host:
#
#   sudo qvm template import result/nixos-guest.qvm-template     (TemplateVM "nixos-guest")
#
# Nobody has built it with nixpkgs or booted it under qvm yet: everything below is checked only by
# evaluation against stand-ins (nix/tests, scripts/nix-check.sh).
#
# The contract with qvm's side (docs/design.md, "Image store": templates built elsewhere):
#   - Boot. qvm boots every domain with its own kernel bundle (a Debian kernel from qvm-images, or
#     a nixpkgs one from nix/kernel-bundle.nix, with the initramfs of images/initramfs/init), not
#     with this system's NixOS kernel: the initramfs mounts the root volume (a
#     virtio disk with serial "root"; ext4), mounts the bundle's modules volume at /lib/modules
#     and the private volume at /rw (binding /rw/home onto /home), then hands over to qvm.init
#     (default /sbin/init), which it first checks with `[ -x /newroot$init ] || [ -L /newroot$init ]`.
#     NixOS' init, /nix/var/nix/profiles/system/init, cannot pass that check from the initramfs:
#     the profile's generation link is absolute (/nix/store/…) and resolves against the initramfs'
#     own root. So the image carries /sbin/init, a link to it (make-disk-image's `contents`), and
#     the manifest names `init = "/sbin/init"`: a `nixos-rebuild` inside the TemplateVM is still
#     what its next boot runs. The image also carries an empty /home, for the initramfs' bind.
#     UNTESTED: NixOS' stage 2 normally follows NixOS' own stage 1.
#   - Kernel modules. The bundle's modules are at /lib/modules/$(uname -r). nixpkgs' kmod searches
#     /run/booted-system/kernel-modules/lib/modules, /run/current-system/kernel-modules/lib/modules
#     and then /lib/modules (its `modulesdirs`, pkgs/os-specific/linux/kmod/default.nix, read), and
#     the system has no kernel-modules link at all with boot.kernel.enable = false. That kmod falls
#     through to /lib/modules when the others have nothing for the running kernel is how nixpkgs
#     PR #17738 describes its search, NOT checked on a booted guest; udev's module loading goes
#     through the same libkmod. The activation script also points the kernel's module loader
#     (/proc/sys/kernel/modprobe; the Debian kernel's default /sbin/modprobe does not exist here)
#     at kmod. /etc/modules-load.d/qvm-nftables.conf and /etc/modprobe.d/qvm-domain.conf are the
#     Debian template's, but `install M /bin/true` names coreutils' true (NixOS has no /bin/true).
#     With the kernel disabled NixOS writes no modules-load.d of its own; that
#     systemd-modules-load.service still runs (NixOS keeps it among systemd's upstream units and
#     their sysinit.target.wants) is believed, not verified.
#   - Paths. The host and the scripts use fixed paths: qvmd runs /usr/lib/qvm/qrexec-run,
#     /usr/lib/qvm/usb-attach and usb-release; the agent runs /usr/lib/qvm/qvm-net-services; the
#     services run `node /usr/lib/qvm/qvm-qrexec.cjs` and /usr/lib/qvm/usb-import. NixOS has no
#     /usr/lib, so an activation script (which runs in stage 2 before systemd, hence before the
#     agent, which starts ahead of sysinit.target and so ahead of systemd-tmpfiles) links
#     /usr/lib/qvm to guestFiles' lib/qvm. Programs the agent starts for `qvm run` and qrexec get
#     the agent's fixed PATH (/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin,
#     guest-agent/src/exec-session.ts), in which NixOS has nothing: the same script links
#     /usr/local/sbin to /run/wrappers/bin (sudo, ping) and /usr/local/bin to
#     /run/current-system/sw/bin (everything in environment.systemPackages), NixOS' own order.
#   - The agent: its shipped unit (guest-agent/systemd/qvm-agent.service) with the programs from
#     the store; the loader and bundle side by side with the V8 code cache made at build time by
#     the guest's own Node (as makeAgentCodeCache; a failure only warns); QVM_PTY_HELPER and
#     QVM_EXEC_DATA_HELPER name the static helpers, built from guest-agent/native/*.c with
#     pkgsStatic (musl) and template.ts's flags (-O2 -static -s, -lutil for qvm-pty; nixpkgs'
#     hardening flags off, so the command line is template.ts's); `ip`, `nft`, `conntrack` and
#     socat on its PATH.
#   - In /usr/lib/qvm (guestFiles): the agent's bundle and loader, the qrexec tools' bundle,
#     qrexec-run, the USB scripts, qvm-net-services, and links to qvm-pty and qvm-exec-data. In
#     /etc: the qrexec services (qubes-rpc/*; /usr/local/etc/qubes-rpc is made for local ones),
#     their rpc-config, the updates proxy's tinyproxy files, the modprobe and modules-load files.
#     The qrexec tools (qrexec-client-vm, qvm-copy, …) are in guestFiles' bin, on the system's
#     PATH, not in /usr/bin. The other shipped units (the updates proxy and its forwarder) come
#     through systemd.packages, with their /usr/bin programs replaced by store paths; none is
#     enabled, as in Debian. MASKED_UNITS are masked (plus NixOS' autovt@tty1). The only
#     interpreter changed in the scripts is usb-import's /bin/bash (NixOS has /bin/sh only).
#   - Packages: debianPackages below maps template.ts's DEBIAN_12_PACKAGES to nixpkgs (the net
#     domain's: nftables, conntrack-tools, tinyproxy, curl, iputils, iproute2, socat; no dnsmasq,
#     the Debian template has none). usbip's tools are left out: the USB scripts drive usbip-host
#     and vhci-hcd through sysfs, and nixpkgs' usbip is built per NixOS kernel.
#   - Networking is the agent's, as in Debian: no DHCP client, no NixOS firewall (the agent owns
#     the nft ruleset), no resolvconf (the agent writes /etc/resolv.conf). For a network card
#     passed through to sys-net: linux-firmware (hardware.enableRedistributableFirmware) and
#     NetworkManager with nmtui, kept off every link the agent owns (see networking.networkmanager
#     below). The firmware is found through firmware_class.path, which NixOS' activation sets;
#     the kernel of the bundle must read the firmware's compression (nixpkgs picks zstd for
#     kernels from 5.19 on).
#   - Unverified, all of it for want of nixpkgs here: the build (the helpers under pkgsStatic: the
#     same sources and flags compile and run with Debian's musl-gcc 1.2.3; the code cache in the
#     build sandbox; make-disk-image copying `contents` whose source is a dangling link, with
#     rsync -a); the boot (stage 2 without stage 1, activation before the agent); kmod's
#     fall-through to /lib/modules; systemd-modules-load; masking through systemd.units with
#     mkForce over NixOS' own unit definitions; /etc/resolv.conf left to the agent once
#     resolvconf is off.
#   - Not provided: the GUI packages of debian-12-gui; the updates client (`qvm-net-services
#     updates-client on` writes apt's proxy configuration, which nix in a NixOS TemplateVM does
#     not read, so a nixos-rebuild there has no network through sys-net).
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
  # The package's copy of guest-agent/ (its bundles built, the scripts and units as in the tree).
  guestAgent = "${qvm}/lib/qvm/guest-agent";
  # The agent's shipped unit (guest-agent/systemd/qvm-agent.service), read from the generated
  # data as nix/module.nix reads qvmd's: only the program's path differs.
  shipped = (builtins.fromJSON (builtins.readFile ./generated/qvm-data.json)).guestAgentUnit;
  words = s: lib.filter (w: w != "") (lib.splitString " " s);
  # The files of a directory of the checkout, as the package has them.
  names = dir: builtins.attrNames (builtins.readDir dir);

  # --- images/src/template.ts's lists, as they are there (nix/tests checks they still are) -----
  # QREXEC_TOOLS: the in-domain qrexec tools, wrappers around the qvm-qrexec bundle.
  qrexecTools = [
    "qrexec-client-vm"
    "qvm-copy"
    "qvm-move"
    "qvm-copy-to-vm"
    "qvm-move-to-vm"
    "qvm-open-in-vm"
    "qvm-open-in-dvm"
  ];
  # NFT_MODULES: what the agent's rulesets use, loaded at boot by systemd-modules-load.
  nftModules = [
    "nf_tables"
    "nft_ct"
    "nft_reject_ipv4"
    "nft_masq"
    "nft_chain_nat"
  ];
  # UNUSED_MODULES: never loaded in a domain (`install M true`).
  unusedModules = [
    "kvm"
    "kvm_amd"
    "kvm_intel"
    "irqbypass"
    "ccp"
    "crct10dif_pclmul"
    "crc32_pclmul"
    "ghash_clmulni_intel"
    "sha1_ssse3"
    "sha256_ssse3"
    "sha512_ssse3"
    "aesni_intel"
    "crypto_simd"
    "cryptd"
    "pcspkr"
    "efi_pstore"
    "powernow_k8"
    "acpi_cpufreq"
    "qemu_fw_cfg"
  ];
  # MASKED_UNITS (several are Debian's only: masking a unit that does not exist is harmless),
  # then NixOS' own name for the getty on tty1 (getty.target wants autovt@tty1.service).
  maskedUnits = [
    "apt-daily.timer"
    "apt-daily-upgrade.timer"
    "dpkg-db-backup.timer"
    "e2scrub_all.timer"
    "fstrim.timer"
    "e2scrub_reap.service"
    "systemd-timesyncd.service"
    "getty-static.service"
  ]
  ++ map (n: "getty@tty${toString n}.service") (lib.range 1 6)
  ++ [
    "tinyproxy.service"
    "nftables.service"
    "logrotate.timer"
    "modprobe@efi_pstore.service"
    "modprobe@dm_mod.service"
    "modprobe@loop.service"
    "systemd-pstore.service"
    "sys-kernel-debug.mount"
    "sys-kernel-tracing.mount"
  ]
  ++ [ "autovt@tty1.service" ];

  # DEBIAN_12_PACKAGES → what gives the same here; [ ] where NixOS itself provides it.
  debianPackages = with pkgs; {
    systemd-sysv = [ ]; # NixOS' systemd is init
    udev = [ ]; # part of NixOS' systemd
    nodejs = [ nodejs ];
    socat = [ socat ];
    util-linux = [ util-linux ];
    iproute2 = [ iproute2 ];
    procps = [ procps ];
    kmod = [ kmod ];
    ca-certificates = [ ]; # security.pki, on by default
    sudo = [ ]; # security.sudo, on by default (setuid wrapper in /run/wrappers/bin)
    bash = [ ]; # NixOS' shell (bashInteractive) and /bin/sh
    less = [ less ];
    coreutils = [ coreutils ];
    nftables = [ nftables ];
    conntrack = [ conntrack-tools ];
    tinyproxy = [ tinyproxy ];
    curl = [ curl ];
    iputils-ping = [ iputils ];
    usbip = [ ]; # the USB scripts use sysfs only; nixpkgs' usbip is per NixOS kernel
  };

  # --- the static helpers (images/src/template.ts, customize) -----------------------------------
  # `gcc -O2 -static -s -o NAME SOURCE LIBS` there; here the same line with pkgsStatic's (musl)
  # compiler, and without nixpkgs' hardening flags, which Debian's gcc does not add.
  helperFlags = [
    "-O2"
    "-static"
    "-s"
  ];
  helperSources = {
    qvm-pty = {
      source = "qvm-pty.c";
      libs = [ "-lutil" ];
    };
    qvm-exec-data = {
      source = "qvm-exec-data.c";
      libs = [ ];
    };
  };
  helpers = lib.mapAttrs (
    name: h:
    let
      command = lib.concatStringsSep " " ([ "$CC" ] ++ helperFlags ++ [ "-o" name h.source ] ++ h.libs);
    in
    pkgs.pkgsStatic.stdenv.mkDerivation {
      inherit name;
      src = ../guest-agent/native;
      hardeningDisable = [ "all" ];
      dontConfigure = true;
      buildPhase = ''
        runHook preBuild
        ${command}
        runHook postBuild
      '';
      installPhase = ''
        runHook preInstall
        install -D -m 0755 ${name} "$out/bin/${name}"
        runHook postInstall
      '';
      passthru = { inherit command; };
    }
  ) helperSources;

  # --- the guest's files: what installGuestFiles writes, as one store path ----------------------
  # lib/qvm/NAME (linked at /usr/lib/qvm) and etc/NAME (in /etc through environment.etc), each
  # from guest-agent/FROM of the package.
  libFiles = {
    "qvm-agent.cjs" = {
      from = "dist/qvm-agent.cjs";
      mode = "0644";
    };
    "qvm-agent-loader.cjs" = {
      from = "loader/qvm-agent-loader.cjs";
      mode = "0644";
    };
    "qvm-qrexec.cjs" = {
      from = "dist/qvm-qrexec.cjs";
      mode = "0644";
    };
    "qrexec-run" = {
      from = "rpc/qrexec-run";
      mode = "0755";
    };
    # NET_SERVICES_FILES
    "qvm-net-services" = {
      from = "net-services/qvm-net-services";
      mode = "0755";
    };
  }
  // lib.genAttrs (names ../guest-agent/usb) (n: {
    from = "usb/${n}";
    mode = "0755";
  });
  rpcServices = lib.filter (n: n != "qrexec-run") (names ../guest-agent/rpc);
  etcFiles =
    lib.listToAttrs (
      map (
        n:
        lib.nameValuePair "qubes-rpc/${n}" {
          from = "rpc/${n}";
          mode = "0755";
        }
      ) rpcServices
    )
    // lib.listToAttrs (
      map (
        n:
        lib.nameValuePair "qubes/rpc-config/${n}" {
          from = "rpc-config/${n}";
          mode = "0644";
        }
      ) (names ../guest-agent/rpc-config)
    )
    // {
      # NET_SERVICES_FILES
      "tinyproxy/qvm-updates-proxy.conf" = {
        from = "net-services/tinyproxy-updates.conf";
        mode = "0644";
      };
      "tinyproxy/qvm-updates-proxy.filter" = {
        from = "net-services/tinyproxy-updates.filter";
        mode = "0644";
      };
    };
  # The shipped units other than the agent's (which systemd.services.qvm-agent below defines),
  # and the programs in /usr they name, replaced by the store's ($out: guestFiles).
  extraUnits = lib.filter (n: n != "qvm-agent.service") (names ../guest-agent/systemd);
  unitPrograms = {
    "/usr/bin/tinyproxy" = "${pkgs.tinyproxy}/bin/tinyproxy";
    "/usr/bin/qrexec-client-vm" = "$out/bin/qrexec-client-vm";
  };
  bash = "${pkgs.bash}/bin/bash";
  install =
    dir: files:
    lib.concatStrings (
      lib.mapAttrsToList (name: f: ''
        install -D -m ${f.mode} "$guestAgent/${f.from}" "$out/${dir}/${name}"
      '') files
    );

  guestFiles =
    pkgs.runCommand "qvm-guest-files"
      {
        inherit guestAgent;
        passthru = {
          inherit
            helpers
            libFiles
            etcFiles
            extraUnits
            unitPrograms
            qrexecTools
            debianPackages
            ;
        };
      }
      ''
        set -euo pipefail
        ${install "lib/qvm" libFiles}
        ${install "etc" etcFiles}
        ln -s ${helpers.qvm-pty}/bin/qvm-pty "$out/lib/qvm/qvm-pty"
        ln -s ${helpers.qvm-exec-data}/bin/qvm-exec-data "$out/lib/qvm/qvm-exec-data"

        # The scripts as they are, but for an interpreter NixOS lacks: it has /bin/sh, not /bin/bash.
        for f in "$out"/lib/qvm/* "$out"/etc/qubes-rpc/*; do
          if [ -L "$f" ] || [ "$(head -c 2 "$f")" != "#!" ]; then continue; fi
          sed -i '1s|^#!/bin/bash$|#!${bash}|' "$f"
          case $(head -n 1 "$f") in
            '#!/bin/sh' | '#!${bash}') ;;
            *) echo "$f: $(head -n 1 "$f"): not an interpreter this system has" >&2; exit 1 ;;
          esac
        done

        # QREXEC_TOOLS, on the system's PATH.
        mkdir -p "$out/bin"
        for tool in ${lib.escapeShellArgs qrexecTools}; do
          printf '#!%s\nexec %s %s %s "$@"\n' /bin/sh ${pkgs.nodejs}/bin/node "$out/lib/qvm/qvm-qrexec.cjs" "$tool" >"$out/bin/$tool"
          chmod 0755 "$out/bin/$tool"
        done

        # The other units, for systemd.packages; nothing may still run a program from /usr.
        mkdir -p "$out/lib/systemd/system"
        for unit in ${lib.escapeShellArgs extraUnits}; do
          sed ${
            lib.concatStringsSep " " (
              lib.mapAttrsToList (from: to: ''-e "s|${from}|${to}|g"'') unitPrograms
            )
          } "$guestAgent/systemd/$unit" >"$out/lib/systemd/system/$unit"
        done
        if grep -n '^Exec[A-Za-z]*=[-@:+!]*/usr/' "$out"/lib/systemd/system/*; then
          echo "a unit above still runs a program from /usr" >&2
          exit 1
        fi

        # The agent's V8 code cache, made by the guest's Node (images/src/template.ts,
        # makeAgentCodeCache): the loader writes it beside the bundle. Without it the agent starts
        # all the same, only slower.
        sock=$TMPDIR/qvm-agent-cache.sock
        if ! QVM_AGENT_WRITE_CACHE=1 QVM_AGENT_NO_VSOCK=1 QVM_AGENT_SOCKET="$sock" \
          timeout 120 ${pkgs.nodejs}/bin/node "$out/lib/qvm/qvm-agent-loader.cjs"; then
          echo "warning: no code cache for the agent (it will start more slowly)" >&2
          rm -f "$out/lib/qvm/qvm-agent.cjs.v8cache"
        fi
        rm -f "$sock"
      '';

  # /sbin/init in the image: a link the initramfs' check accepts (see the header).
  initLink = pkgs.runCommand "qvm-guest-init-link" { } ''
    ln -s /nix/var/nix/profiles/system/init "$out"
  '';
  # /home in the image, for the initramfs to copy to /rw/home and bind (NixOS makes /home/user
  # at activation, by then on the private volume).
  emptyDir = pkgs.runCommand "qvm-guest-empty-dir" { } ''
    mkdir "$out"
  '';

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
    contents = [
      {
        source = initLink;
        target = "/sbin/init";
      }
      {
        source = emptyDir;
        target = "/home";
        mode = "755";
      }
    ];
  };

  # The manifest's fields known before the build (the root's sizes and checksum are computed in
  # it). name is the TemplateVM's name: a domain name (qvm's rule, nix/generated/qvm-data.json).
  manifest = {
    format = "qvm-template/1";
    name = "nixos-guest";
    suite = "nixos";
    init = "/sbin/init";
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
    # What it runs by name: the vsock bridge (socat), the network's `ip`, `nft` and `conntrack`,
    # and qvm-net-services (systemctl, which NixOS adds to every unit, and cmp).
    path = with pkgs; [
      socat
      iproute2
      nftables
      conntrack-tools
      util-linux
      kmod
      diffutils
      procps
    ];
    environment = {
      # The loader (beside the bundle, with its code cache) would find it by itself; said anyway.
      QVM_AGENT_BUNDLE = "${guestFiles}/lib/qvm/qvm-agent.cjs";
      # guest-agent/src/exec-session.ts: /usr/lib/qvm/… unless these say otherwise.
      QVM_PTY_HELPER = "${helpers.qvm-pty}/bin/qvm-pty";
      QVM_EXEC_DATA_HELPER = "${helpers.qvm-exec-data}/bin/qvm-exec-data";
    };
    serviceConfig = removeAttrs shipped.Service [ "ExecStart" ] // {
      ExecStart = "${pkgs.nodejs}/bin/node ${guestFiles}/lib/qvm/qvm-agent-loader.cjs";
    };
  };

  # The updates proxy and its forwarder (not enabled: qvm-net-services starts them).
  systemd.packages = [ guestFiles ];
  # Masked: a link to /dev/null (NixOS' rendering of a unit with enable = false). mkForce over
  # NixOS' own definitions (timesyncd, logrotate, …).
  systemd.units = lib.genAttrs maskedUnits (_: {
    enable = lib.mkForce false;
  });

  environment.etc =
    lib.mapAttrs (name: _: { source = "${guestFiles}/etc/${name}"; }) etcFiles
    // {
      "modprobe.d/qvm-domain.conf".text =
        "# Written by qvm (nix/guest-template.nix, as images/src/template.ts's UNUSED_MODULES): modules a domain never needs.\n"
        + lib.concatMapStrings (m: "blacklist ${m}\ninstall ${m} ${pkgs.coreutils}/bin/true\n") unusedModules;
      "modules-load.d/qvm-nftables.conf".text =
        "# Written by qvm (nix/guest-template.nix, as images/src/template.ts): the modules of the agent's nft rules.\n"
        + lib.concatMapStrings (m: "${m}\n") nftModules;
    };

  environment.systemPackages = [
    guestFiles
    pkgs.diffutils
  ]
  ++ lib.concatLists (builtins.attrValues debianPackages);

  # Before systemd starts (so before the agent): qvm's fixed paths (see the header).
  system.activationScripts.qvm-guest = {
    deps = [ "specialfs" ];
    text = ''
      qvmGuestLink() {
        if [ -e "$2" ] && [ ! -L "$2" ]; then
          echo "qvm: $2 is not a link; left as it is (qvm expects a link to $1)" >&2
        else
          ln -sfn "$1" "$2"
        fi
      }
      mkdir -p /usr/lib /usr/local/etc/qubes-rpc
      qvmGuestLink ${guestFiles}/lib/qvm /usr/lib/qvm
      qvmGuestLink /run/wrappers/bin /usr/local/sbin
      qvmGuestLink /run/current-system/sw/bin /usr/local/bin
      if [ -w /proc/sys/kernel/modprobe ]; then
        echo ${pkgs.kmod}/bin/modprobe >/proc/sys/kernel/modprobe
      fi
    '';
  };

  # The network is the agent's (docs/network.md), as in the Debian template: no DHCP client, no
  # firewall of NixOS' (the agent loads the whole nft ruleset), /etc/resolv.conf written by the
  # agent alone.
  networking.useDHCP = false;
  networking.dhcpcd.enable = false;
  networking.firewall.enable = false;
  networking.resolvconf.enable = false;

  # A network card passed through to sys-net (`qvm pci attach`, nix/live-iso.nix): its firmware,
  # and NetworkManager to bring it up, with nmtui as the way to pick a Wi-Fi network from sys-net's
  # terminal (the web shell opens one). The template is the same for every domain: in one without
  # such a card NetworkManager finds nothing to manage and stays idle (a few MiB of memory).
  #
  # NetworkManager must not fight the agent, which owns every link qvm makes (docs/network.md,
  # guest-agent/src/net): the client link eth0, a net domain's uplink ("uplink", through passt or
  # a tap) and its client slots vif0…vif11. All of them are virtio-net devices the agent finds by
  # MAC and renames, so they are left unmanaged by driver (which holds through the renames, under
  # whatever temporary name), and by their final names as well. With dns = "none" and resolvconf
  # off (above; NixOS then writes rc-manager=unmanaged) NetworkManager never writes
  # /etc/resolv.conf, which stays the agent's. It does not touch nftables, forwarding or the
  # hostname NixOS sets. What it manages (a passed-through card) gets the default route; the
  # agent's ruleset masquerades whatever leaves by a link that is not vif*, so clients reach
  # out through it. Not done for it by qvm (docs/network.md): the DNAT of clients' DNS
  # (10.139.1.1/.2) to the card's resolvers, which qvm makes for a passt or tap uplink only.
  # UNVERIFIED: no machine here has an IOMMU, and nothing here was built.
  hardware.enableRedistributableFirmware = true;
  networking.networkmanager = {
    enable = true;
    unmanaged = [
      "driver:virtio_net"
      "interface-name:eth0"
      "interface-name:uplink"
      "interface-name:vif*"
    ];
    dns = "none";
  };
  # Nothing in a domain waits for the network to be online, and in most domains NetworkManager has
  # no device to wait for.
  systemd.services.NetworkManager-wait-online.enable = lib.mkForce false;

  # As in the Debian template: the domain's user, with passwordless sudo; isolation is between
  # domains, not inside one. Root logs in without a password on the serial console, which only
  # the host can reach.
  users.users.user = {
    isNormalUser = true;
    # networkmanager: nmtui as the user, through NixOS' polkit rule for that group.
    extraGroups = [
      "wheel"
      "networkmanager"
    ];
  };
  users.users.root.initialHashedPassword = "";
  security.sudo.wheelNeedsPassword = false;
  # qvm-updates-proxy.service runs tinyproxy as tinyproxy (Debian's package makes the user).
  users.users.tinyproxy = {
    isSystemUser = true;
    group = "tinyproxy";
  };
  users.groups.tinyproxy = { };

  networking.hostName = "qvm";
  system.stateVersion = lib.trivial.release;

  system.build.qvmRootImage = rootImage;
  system.build.qvmTemplate = templateArchive;
  system.build.qvmGuestFiles = guestFiles;
}
