# The Nix side's checks that need nothing but nixpkgs' lib: scripts/nix-check.sh evaluates this
# with the vendored lib (../shared/vendor/nixpkgs-lib), the flake's checks with nixpkgs' own.
# Each check is { name; ok; detail; }: detail says what differed. NixOS and pkgs are stand-ins
# (stubs.nix), so these check this repository's Nix, not how nixpkgs builds or boots it.
{
  lib,
  # true: not the checks, but what nix/tests/check-exports.mjs checks with qvm's own parsers
  # (nix/tests/exports.nix).
  exports ? false,
}:
let
  stubs = import ./stubs.nix { inherit lib; };
  data = lib.importJSON ../generated/qvm-data.json;
  expected = lib.importJSON ./domains-expected.json;
  lock = lib.importJSON ../../package-lock.json;

  check = name: ok: detail: {
    inherit name ok;
    detail = if ok then "" else detail;
  };
  show = v: builtins.toJSON v;

  # NixOS as far as these files need it: the stubbed options, pkgs and utils, and modulesPath
  # pointing at stand-ins for the nixpkgs modules the live ISO and guest template import.
  evalNixos =
    modules:
    (lib.evalModules {
      # A string, as NixOS' own: a path would be copied to the store, which the checks never write.
      specialArgs.modulesPath = toString ./stub-nixos/modules;
      modules = [
        stubs.nixosOptions
        {
          _module.args = {
            inherit (stubs) pkgs utils;
          };
        }
      ] ++ modules;
    }).config;
  evalModule = modules: evalNixos ([ ../module.nix ] ++ modules);

  failedAssertions = config: map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);
  # Whether evaluating `v` completely fails (a type error, an unknown option).
  fails = v: !(builtins.tryEval (builtins.deepSeq v v)).success;
  withDomains = domains: evalModule [
    {
      services.qvmd = {
        enable = true;
        inherit domains;
      };
    }
  ];
  oneDomain = d: withDomains { work = { label = "blue"; } // d; };
  assertionsMention =
    text: config: lib.any (m: lib.hasInfix text m) (failedAssertions config);

  # --- the declared domains -------------------------------------------------------------------
  sample = evalModule [ ./domains.nix ];
  apply = sample.systemd.services.qvm-apply;
  declaredChecks = [
    (check "the sample declaration converts to domains-expected.json"
      (sample.services.qvmd.declaredFile == expected)
      "got ${show sample.services.qvmd.declaredFile}"
    )
    (check "qvm-apply.service runs `qvm apply` on a file holding that JSON"
      (
        let
          file = builtins.head apply.restartTriggers;
        in
        builtins.fromJSON file.text == expected && lib.hasInfix "${file}" apply.serviceConfig.ExecStart
      )
      "ExecStart ${apply.serviceConfig.ExecStart}"
    )
    (check "qvm-apply.service runs after qvmd; as root only to write the policy files, into the data directory"
      (
        apply.after == [ "qvmd.service" ]
        && apply.requires == [ "qvmd.service" ]
        && !(apply.serviceConfig ? DynamicUser)
        && apply.serviceConfig.ReadWritePaths == [ "/var/lib/qvm" ]
        && apply.serviceConfig.CapabilityBoundingSet == ""
      )
      (show apply)
    )
    (check "qvm-apply.service without policy files: a member of the admin group, not root"
      (
        let
          s = (withDomains { work = { label = "blue"; }; }).systemd.services.qvm-apply.serviceConfig;
        in
        s.DynamicUser && s.SupplementaryGroups == [ data.adminGroup ] && !(s ? ReadWritePaths)
      )
      "it runs as root"
    )
    (check "the sample declaration passes the module's assertions" (failedAssertions sample == [ ]) (
      show (failedAssertions sample)
    ))
    (check "nothing declared: no qvm-apply.service"
      (
        !((evalModule [ { services.qvmd.enable = true; } ]).systemd.services ? qvm-apply)
      )
      "qvm-apply.service is defined"
    )
    (check "a label that is not qvm's is refused" (fails (oneDomain { label = "pink"; }).services.qvmd.declaredFile) "accepted")
    (check "memory below the minimum is refused" (fails (oneDomain { memory = 64; }).services.qvmd.declaredFile) "accepted")
    (check "a field the file does not have is refused" (fails (oneDomain { colour = "red"; }).services.qvmd.declaredFile) "accepted")
    (check "a property the file does not have is refused" (fails (oneDomain { properties.qid = 3; }).services.qvmd.declaredFile) "accepted")
    (check "a domain name qvm refuses fails an assertion" (assertionsMention "a domain name is a letter" (withDomains { "1work" = { label = "red"; }; })) "no assertion")
    (check "a policy file name qvm refuses is refused"
      (fails
        (evalModule [
          {
            services.qvmd.enable = true;
            services.qvmd.policy."user.policy" = "";
          }
        ]).services.qvmd.declaredFile
      )
      "accepted"
    )
    (check "a reserved domain name fails an assertion" (assertionsMention "reserved name" (withDomains { dom0 = { label = "red"; }; })) "no assertion")
    (check "template_for_dispvms on a TemplateVM fails an assertion"
      (assertionsMention "only AppVM may set it" (oneDomain { class = "TemplateVM"; properties.template_for_dispvms = true; }))
      (show (failedAssertions (oneDomain { class = "TemplateVM"; properties.template_for_dispvms = true; })))
    )
    (check "a domain on cloud-hypervisor needs services.qvmd.cloudHypervisor"
      (assertionsMention "cloudHypervisor = true" (oneDomain { properties.vmm = "cloud-hypervisor"; }))
      "no assertion"
    )
  ];

  # --- qvmd's unit: the shipped one ------------------------------------------------------------
  shipped = data.qvmdUnit;
  qvmd = sample.systemd.services.qvmd;
  replaced = [
    "ExecStart"
    "ReadWritePaths"
    "StateDirectory"
    "RuntimeDirectory"
  ];
  # Every directive of the shipped unit, in NixOS' spelling of it.
  carried = lib.filterAttrs (k: v: qvmd.serviceConfig.${k} or null != v) (removeAttrs shipped.Service replaced);
  custom = evalModule [
    {
      services.qvmd = {
        enable = true;
        dataDir = "/srv/qvm";
        allowTcg = true;
        extraArgs = [
          "--max-running"
          "50%"
        ];
      };
    }
  ];
  unitChecks = [
    (check "qvmd.service has every directive of host-agent/systemd/qvmd.service.in with its value" (carried == { }) (
      "differs: ${show carried}"
    ))
    (check "the shipped unit's [Unit] and [Install] have only what the module carries over"
      (
        builtins.attrNames shipped.Unit == [
          "After"
          "Description"
          "Documentation"
          "Wants"
        ]
        && builtins.attrNames shipped.Install == [ "WantedBy" ]
      )
      "[Unit] ${show (builtins.attrNames shipped.Unit)}, [Install] ${show (builtins.attrNames shipped.Install)}: carry the new ones over in nix/module.nix"
    )
    (check "qvmd.service: its program, directories and ordering from the module"
      (
        qvmd.serviceConfig.ExecStart == ''"${stubs.fakeStorePath "qvm-0.1.0"}/bin/qvmd" "--foreground" "--data-dir" "/var/lib/qvm" "--runtime-dir" "/run/qvm" "--admin-group" "qvm"''
        && qvmd.serviceConfig.StateDirectory == "qvm"
        && qvmd.serviceConfig.RuntimeDirectory == "qvm"
        && qvmd.serviceConfig.ReadWritePaths == [
          "/var/lib/qvm"
          "/run/qvm"
        ]
        && qvmd.wantedBy == [ "multi-user.target" ]
        && qvmd.after == [ "local-fs.target" ]
        && qvmd.description == shipped.Unit.Description
      )
      (show qvmd)
    )
    (check "qvmd.service finds passt and the VMMs in the store"
      (
        qvmd.environment.QVM_PASST == "${stubs.fakeStorePath "passt"}/bin/passt"
        && builtins.elem (stubs.package "qemu_kvm") qvmd.path
        && builtins.elem (stubs.package "vhost-device-vsock") qvmd.path
        && !(builtins.elem (stubs.package "cloud-hypervisor") qvmd.path)
      )
      (show qvmd.path)
    )
    (check "a data directory outside /var/lib is made by tmpfiles; --allow-tcg and escaped extra arguments"
      (
        let
          s = custom.systemd.services.qvmd.serviceConfig;
        in
        !(s ? StateDirectory)
        && custom.systemd.tmpfiles.rules == [ "d /srv/qvm 0700 root root -" ]
        && lib.hasSuffix ''"--allow-tcg" "--max-running" "50%%"'' s.ExecStart
      )
      (show custom.systemd.services.qvmd.serviceConfig.ExecStart)
    )
    (check "the admin group exists, and qvmd is told its name (--admin-group)"
      (
        sample.users.groups ? ${data.adminGroup}
        && lib.hasInfix ''"--admin-group" "wheel"'' (evalModule [
          {
            services.qvmd.enable = true;
            services.qvmd.group = "wheel";
          }
        ]).systemd.services.qvmd.serviceConfig.ExecStart
      )
      "no group, or qvmd not told the group"
    )
    (check "the module does not warn: VMMs are jailed (the jail finds its tools through PATH)" (sample.warnings or [ ] == [ ]) (show (sample.warnings or [ ])))
  ];

  # --- the package: the lock importNpmLock is given --------------------------------------------
  qvmPackage = stubs.pkgs.callPackage ../package.nix { };
  givenLock = qvmPackage.args.npmDeps.args.packageLock.packages;
  isRegistryPackage = key: m: lib.hasPrefix "node_modules/" key && !(m.link or false);
  registryPackages = lib.filterAttrs isRegistryPackage lock.packages;
  badUrls = lib.filterAttrs (
    key: m:
    !(givenLock ? ${key})
    || givenLock.${key}.resolved
      != "https://registry.npmjs.org/${lib.last (lib.splitString "node_modules/" key)}/-/${baseNameOf (lib.last (lib.splitString "node_modules/" key))}-${m.version}.tgz"
  ) registryPackages;
  srcFilter = qvmPackage.args.src.filter;
  root = toString ../..;
  packageChecks = [
    (check "every registry package of package-lock.json gets its tarball URL" (
      badUrls == { } && registryPackages != { }
    ) "wrong or missing: ${show (builtins.attrNames badUrls)}")
    (check "workspace links are left out of the lock importNpmLock is given" (
      !(lib.any (m: m.link or false) (builtins.attrValues givenLock))
    ) "a link is still there")
    (check "the package's source leaves out node_modules, build output and the Nix files"
      (
        srcFilter "${root}/cli/src/main.ts" "regular"
        && !(srcFilter "${root}/node_modules" "directory")
        && !(srcFilter "${root}/host-agent/dist" "directory")
        && !(srcFilter "${root}/nix" "directory")
        && !(srcFilter "${root}/flake.nix" "regular")
      )
      "the source filter keeps or drops the wrong paths"
    )
  ];

  # --- the live ISO and the guest template -----------------------------------------------------
  # The template archive as flake.nix passes it; the kernel bundle from the ISO's own kernel (the
  # option's default), here nixpkgs' default kernel's stand-in.
  live = evalNixos [
    ../live-iso.nix
    {
      boot.kernelPackages = stubs.pkgs.linuxPackages;
      qvm.live.templateArchive = guest.system.build.qvmTemplate;
    }
  ];
  liveUnits = live.systemd.services;
  liveDomains = live.services.qvmd.declaredFile.domains;
  bundle = live.qvm.live.kernelBundle;
  kernelTs = builtins.readFile ../../images/src/kernel.ts;
  # INITRAMFS_MODULES' names, as kernel.ts lists them.
  kernelTsModules =
    let
      after = builtins.elemAt (builtins.split "INITRAMFS_MODULES = \\[" kernelTs) 2;
      block = builtins.head (builtins.split "]" after);
    in
    map builtins.head (lib.filter builtins.isList (builtins.split "\"([a-z0-9_]+)\"" block));
  initTs = builtins.readFile ../../images/initramfs/init;
  liveChecks = [
    (check "the live ISO declares sys-net (passt), sys-firewall and work on the Nix template; only the net domains autostart"
      (
        builtins.attrNames liveDomains == [
          "sys-firewall"
          "sys-net"
          "work"
        ]
        && lib.all (d: d.template == "nixos-guest") (builtins.attrValues liveDomains)
        && liveDomains.sys-net.netvm == ""
        && liveDomains.sys-net.properties == {
          provides_network = true;
          uplink = "passt";
          autostart = true;
        }
        && liveDomains.sys-firewall.netvm == "sys-net"
        && liveDomains.sys-firewall.properties.provides_network
        && liveDomains.sys-firewall.properties.autostart
        && liveDomains.work.netvm == "sys-firewall"
        && !(liveDomains.work ? properties)
        && failedAssertions live == [ ]
      )
      (show liveDomains)
    )
    (check "the live ISO: the kernel bundle is linked into the image store before qvmd, as kernels/<hash> and current"
      (
        let
          u = liveUnits.qvm-live-kernel;
          text = u.serviceConfig.ExecStart.text;
        in
        u.before == [ "qvmd.service" ]
        && u.wantedBy == [ "qvmd.service" ]
        && builtins.elem "var-lib-qvm.mount" u.after
        && lib.hasInfix "kernels=/var/lib/qvm/images/kernels" text
        && lib.hasInfix "hash=${bundle.hash}" text
        && lib.hasInfix "ln -s ${bundle} \"$kernels/$hash\"" text
        && lib.hasInfix "mv -T \"$kernels/current.tmp\" \"$kernels/current\"" text
        && bundle.kernel == stubs.pkgs.linuxPackages.kernel
      )
      (show liveUnits.qvm-live-kernel)
    )
    (check "the live ISO: the template is imported with `qvm template import` once qvmd answers, before qvm apply"
      (
        let
          u = liveUnits.qvm-live-template;
          text = u.serviceConfig.ExecStart.text;
          archive = guest.system.build.qvmTemplate;
        in
        u.after == [ "qvmd.service" ]
        && u.requires == [ "qvmd.service" ]
        && builtins.elem "qvm-live-template.service" liveUnits.qvm-apply.after
        && lib.hasInfix "template import ${archive}/nixos-guest.qvm-template" text
        && lib.hasInfix "template import --replace ${archive}/nixos-guest.qvm-template" text
        && lib.hasInfix "/var/lib/qvm/images/templates/nixos-guest" text
      )
      (show liveUnits.qvm-live-template)
    )
    (check "the live ISO: after qvm apply, NICs go to sys-net with `qvm pci attach --persistent` only with an IOMMU; sys-net and sys-firewall start, work does not"
      (
        let
          u = liveUnits.qvm-live-setup;
          text = u.serviceConfig.ExecStart.text;
        in
        u.after == [ "qvm-apply.service" ]
        && lib.hasInfix "kernel/iommu_groups" text
        && lib.hasInfix "0x02*" text
        && lib.hasInfix "pci attach --persistent sys-net $nics" text
        && lib.hasInfix "prefs -D sys-net uplink" text
        && lib.hasInfix "start --skip-if-running sys-net" text
        && lib.hasInfix "start --skip-if-running sys-firewall" text
        && !(lib.hasInfix "sys-work" text || lib.hasInfix " work" text)
        && builtins.elem "vfio-pci" live.boot.kernelModules
      )
      (show liveUnits.qvm-live-setup)
    )
    (check "the guest template: Wi-Fi firmware, NetworkManager (nmtui) off the agent's virtio links and /etc/resolv.conf"
      (
        guest.hardware.enableRedistributableFirmware
        && guest.networking.networkmanager.enable
        && builtins.elem "driver:virtio_net" guest.networking.networkmanager.unmanaged
        && lib.all (n: builtins.elem "interface-name:${n}" guest.networking.networkmanager.unmanaged) [
          "eth0"
          "uplink"
          "vif*"
        ]
        && guest.networking.networkmanager.dns == "none"
        && guest.networking.resolvconf.enable == false
        && builtins.elem "networkmanager" guest.users.users.user.extraGroups
        && !guest.systemd.services.NetworkManager-wait-online.enable
      )
      (show guest.networking.networkmanager)
    )
    (check "the kernel bundle: INITRAMFS_MODULES as images/src/kernel.ts has them, busybox static, images/initramfs/init as /init"
      (
        bundle.initramfsModules == kernelTsModules
        && bundle.busybox == stubs.pkgs.pkgsStatic.busybox
        && bundle.args.initScript == ../../images/initramfs/init
        && bundle.args.modules == kernelTsModules
      )
      "${show bundle.initramfsModules} vs kernel.ts ${show kernelTsModules}"
    )
    (check "the kernel bundle: the layout images/src/store.ts and the initramfs read (load-order under /lib/modules, the four files)"
      (
        lib.hasInfix "done < /lib/modules/load-order" initTs
        && lib.hasInfix ''insmod "/lib/modules/$module"'' initTs
        && lib.hasInfix ''"$stage/lib/modules/load-order"'' bundle.text
        && lib.all (f: lib.hasInfix ''"$out/${f}"'' bundle.text) [
          "vmlinuz"
          "vmlinux"
          "initrd.img"
          "modules.img"
          "manifest.json"
        ]
        && lib.hasInfix "<images>/kernels/<hash>/{vmlinuz,initrd.img,modules.img,manifest.json}" storeTs
        && bundle.manifest.files == {
          vmlinuz = "vmlinuz";
          initrd = "initrd.img";
          modules = "modules.img";
        }
        && bundle.manifestWithVmlinux.files.vmlinux == "vmlinux"
        && bundle.manifest.kernelRelease == "6.12.1"
        && builtins.stringLength bundle.hash == 24
      )
      (show bundle.manifest)
    )
  ];
  kiosk = live.users.users.qvm-kiosk;
  guest = evalNixos [ ../guest-template.nix ];
  agent = guest.systemd.services.qvm-agent;
  # The template archive (system.build.qvmTemplate) and qvm's side of its format: the checks read
  # the rules from qvm's sources, so a change there fails here rather than at import.
  archive = guest.system.build.qvmTemplate;
  archiveManifest = archive.manifest;
  storeTs = builtins.readFile ../../images/src/store.ts;
  archiveTs = builtins.readFile ../../images/src/template-archive.ts;
  # templateManifestSchema.init's pattern (images/src/store.ts) as it is written there, and in POSIX
  # ERE for builtins.match (which matches the whole string).
  initPatternTs = ''.regex(/^\/[A-Za-z0-9._+-]+(\/[A-Za-z0-9._+-]+)*$/'';
  initPattern = "/[A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*";
  suitePatternTs = ''suite: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/'';
  suitePattern = "[A-Za-z0-9][A-Za-z0-9._+-]{0,63}";
  # The builder's lines, continuation lines joined.
  scriptLines = map lib.trim (lib.splitString "\n" (lib.replaceStrings [ "\\\n" ] [ " " ] archive.text));
  tarCreate = lib.filter (lib.hasPrefix "tar --create") scriptLines;
  imageChecks = [
    (check "the live ISO: qvmd on, the web shell in cage as a member of the admin group"
      (
        live.services.qvmd.enable
        && live.services.cage.user == "qvm-kiosk"
        && builtins.elem data.adminGroup kiosk.extraGroups
        && lib.hasInfix "qvm shell --url-file" live.services.cage.program.text
        && failedAssertions live == [ ]
      )
      (show live.services.cage)
    )
    (check "the live ISO: the data partition is optional and qvmd waits for it"
      (
        builtins.elem "nofail" live.fileSystems."/var/lib/qvm".options
        && builtins.elem "var-lib-qvm.mount" live.systemd.services.qvmd.after
      )
      (show live.systemd.services.qvmd.after)
    )
    (check "the guest template: the agent's shipped unit, started from the store"
      (
        removeAttrs agent.serviceConfig [ "ExecStart" ] == removeAttrs data.guestAgentUnit.Service [ "ExecStart" ]
        && agent.serviceConfig.ExecStart == "${stubs.pkgs.nodejs}/bin/node ${guestFiles}/lib/qvm/qvm-agent-loader.cjs"
        && guestFiles.libFiles."qvm-agent-loader.cjs".from == "loader/qvm-agent-loader.cjs"
        && agent.wantedBy == [ "sysinit.target" ]
        && agent.unitConfig.DefaultDependencies == "no"
      )
      (show agent)
    )
    (check "the guest template: a bare ext4 root image" (
      guest.system.build.qvmRootImage.args.partitionTableType == "none"
    ) (show guest.system.build.qvmRootImage.args))
    (check "the guest template's archive: nixos-guest.qvm-template, of the raw image make-disk-image leaves"
      (
        archive.name == "qvm-template-nixos-guest"
        && archive.args.archive == "nixos-guest.qvm-template"
        && archive.rootImage == guest.system.build.qvmRootImage
        && archive.args.rawImage == "${archive.rootImage}/nixos.img"
        && guest.system.build.qvmRootImage.args.format == "raw"
        && lib.all (p: builtins.elem p archive.args.nativeBuildInputs) [ stubs.pkgs.zstd stubs.pkgs.jq stubs.pkgs.gnutar ]
      )
      (show { inherit (archive) name args; })
    )
    (check "the guest template's archive: one tar, ustar, of qvm-template.json then root.img.zst (qvm's names and order)"
      (
        lib.hasInfix ''MANIFEST_MEMBER = "qvm-template.json"'' archiveTs
        && lib.hasInfix ''ROOT_MEMBER = "root.img.zst"'' archiveTs
        && lib.hasInfix "const MEMBERS = [MANIFEST_MEMBER, ROOT_MEMBER]" archiveTs
        && builtins.length tarCreate == 1
        && lib.hasSuffix " qvm-template.json root.img.zst" (builtins.head tarCreate)
        && lib.all (o: lib.hasInfix " ${o} " (builtins.head tarCreate)) [
          "--format=ustar"
          "--owner=0"
          "--group=0"
          "--numeric-owner"
          "--sort=none"
          "--no-recursion"
        ]
        && lib.hasInfix ''--mtime="@$epoch"'' (builtins.head tarCreate)
      )
      (show tarCreate)
    )
    (check "the guest template's archive: the manifest's fields, and the builder adds builtAt and root's"
      (
        lib.hasInfix ''TEMPLATE_ARCHIVE_FORMAT = "qvm-template/1"'' archiveTs
        && archiveManifest.format == "qvm-template/1"
        && builtins.attrNames archiveManifest == [ "format" "init" "name" "suite" ]
        && builtins.fromJSON archive.args.manifestFields == archiveManifest
        && lib.all (f: lib.hasInfix f archive.text) [
          "builtAt: $builtAt"
          ''file: "root.img.zst"''
          "compressedBytes: $compressedBytes"
          "sha256: $sha256"
          "sizeBytes: $sizeBytes"
          "SOURCE_DATE_EPOCH"
        ]
      )
      (show archiveManifest)
    )
    (check "the guest template's archive: its init passes qvm's rule (images/src/store.ts) and is /sbin/init"
      (
        lib.hasInfix initPatternTs storeTs
        && builtins.match initPattern archiveManifest.init != null
        && !(builtins.elem ".." (lib.splitString "/" archiveManifest.init))
        && builtins.stringLength archiveManifest.init <= 255
        && archiveManifest.init == "/sbin/init"
      )
      "init ${show archiveManifest.init}, or store.ts's rule is no longer ${initPatternTs}"
    )
    (check "the guest template: /sbin/init is a link in the image to NixOS' system profile, which the initramfs' check accepts; /home is there to bind"
      (
        let
          contents = guest.system.build.qvmRootImage.args.contents;
          at = target: lib.filter (c: c.target == target) contents;
          init = at "/sbin/init";
          home = at "/home";
        in
        builtins.length init == 1
        && lib.hasInfix "ln -s /nix/var/nix/profiles/system/init \"$out\"" (builtins.head init).source.text
        && builtins.length home == 1
        && (builtins.head home).mode == "755"
        # The initramfs: /sbin/init by default, and a link passes its check (an absolute link's
        # target cannot be resolved from there: NixOS' profile links are absolute).
        && lib.hasInfix "\ninit=/sbin/init\n" initramfs
        && lib.hasInfix ''[ -x "/newroot$init" ] || [ -L "/newroot$init" ]'' initramfs
        && lib.hasInfix "mount --bind /newroot/rw/home /newroot/home" initramfs
      )
      (show guest.system.build.qvmRootImage.args.contents)
    )
    (check "the guest template's archive: its name is a domain name qvm accepts, its suite a suite"
      (
        builtins.match data.domainName.pattern archiveManifest.name != null
        && builtins.stringLength archiveManifest.name <= data.domainName.maxLength
        && !(builtins.elem (lib.toLower archiveManifest.name) data.domainName.reserved)
        && lib.hasInfix suitePatternTs archiveTs
        && builtins.match suitePattern archiveManifest.suite != null
      )
      "name ${show archiveManifest.name}, suite ${show archiveManifest.suite}"
    )
  ];

  # --- the guest template against the Debian template (images/src/template.ts) ----------------
  guestFiles = guest.system.build.qvmGuestFiles;
  pty = guestFiles.helpers.qvm-pty;
  execData = guestFiles.helpers.qvm-exec-data;
  templateTs = builtins.readFile ../../images/src/template.ts;
  initramfs = builtins.readFile ../../images/initramfs/init;
  execSessionTs = builtins.readFile ../../guest-agent/src/exec-session.ts;
  loaderJs = builtins.readFile ../../guest-agent/loader/qvm-agent-loader.cjs;
  activation = guest.system.activationScripts.qvm-guest;
  etc = guest.environment.etc;
  names = dir: builtins.attrNames (builtins.readDir dir);
  # The quoted strings of `const NAME = [ … ];` in template.ts; a marker that fails every
  # comparison when the declaration is no longer there.
  tsList =
    name:
    let
      parts = lib.splitString "const ${name} = [" templateTs;
    in
    if builtins.length parts != 2 then
      [ "(no const ${name} in images/src/template.ts)" ]
    else
      lib.concatLists (
        lib.filter builtins.isList (
          builtins.split "\"([^\"]*)\"" (builtins.head (lib.splitString "];" (builtins.elemAt parts 1)))
        )
      );
  gettyMap = "...[1, 2, 3, 4, 5, 6].map((n) => `getty@tty\${n}.service`)";
  maskedTs =
    tsList "MASKED_UNITS"
    ++ (
      if lib.hasInfix gettyMap templateTs then
        map (n: "getty@tty${toString n}.service") (lib.range 1 6)
      else
        [ "(MASKED_UNITS's gettys are no longer ${gettyMap})" ]
    );
  # NET_SERVICES_FILES: each file of guest-agent/net-services, its place and mode.
  netFiles = {
    "qvm-net-services" = {
      dest = "/usr/lib/qvm/qvm-net-services";
      mode = "755";
    };
    "tinyproxy-updates.conf" = {
      dest = "/etc/tinyproxy/qvm-updates-proxy.conf";
      mode = "644";
    };
    "tinyproxy-updates.filter" = {
      dest = "/etc/tinyproxy/qvm-updates-proxy.filter";
      mode = "644";
    };
  };
  netFileInstalled =
    name: f:
    let
      entry =
        if lib.hasPrefix "/usr/lib/qvm/" f.dest then
          guestFiles.libFiles.${lib.removePrefix "/usr/lib/qvm/" f.dest} or null
        else
          guestFiles.etcFiles.${lib.removePrefix "/etc/" f.dest} or null;
    in
    entry != null && entry.from == "net-services/${name}" && entry.mode == "0${f.mode}";
  # Paths in /usr/lib/qvm that qvm's other parts run: where they say it.
  usrLibQvm = {
    "host-agent/src/qrexec/service-command.ts" = ''export const QREXEC_RUN = "/usr/lib/qvm/qrexec-run";'';
    "host-agent/src/usb/guest-tools.ts" = ''export const USB_ATTACH = "/usr/lib/qvm/usb-attach";'';
    "guest-agent/src/network-rpc.ts" = ''export const NET_SERVICES = "/usr/lib/qvm/qvm-net-services";'';
    "guest-agent/usb/usb-attach" = "lib=$root/usr/lib/qvm";
  };
  usrLibQvmNames = [
    "qrexec-run"
    "usb-attach"
    "usb-release"
    "qvm-net-services"
    "usb-import"
    "qvm-qrexec.cjs"
    "qvm-pty"
    "qvm-exec-data"
  ];
  inLib = n: guestFiles.libFiles ? ${n} || lib.hasInfix ''"$out/lib/qvm/${n}"'' guestFiles.text;
  installLine = dir: n: f: ''install -D -m ${f.mode} "$guestAgent/${f.from}" "$out/${dir}/${n}"'';
  # The shipped units' programs in /usr (Exec*= lines, less their prefixes).
  unitUsrPrograms =
    unit:
    let
      lines = lib.splitString "\n" (builtins.readFile (../../guest-agent/systemd + "/${unit}"));
      execs = lib.filter (l: builtins.match "Exec[A-Za-z]*=.*" l != null) lines;
      program = l: builtins.head (lib.splitString " " (lib.elemAt (builtins.match "Exec[A-Za-z]*=[-@:+!]*(.*)" l) 0));
    in
    lib.filter (lib.hasPrefix "/usr/") (map program execs);
  shebang = f: builtins.head (lib.splitString "\n" (builtins.readFile f));
  scripts =
    map (n: ../../guest-agent/rpc + "/${n}") (names ../../guest-agent/rpc)
    ++ map (n: ../../guest-agent/usb + "/${n}") (names ../../guest-agent/usb)
    ++ [ ../../guest-agent/net-services/qvm-net-services ];
  modprobeText = etc."modprobe.d/qvm-domain.conf".text;
  modulesLoadLines = lib.filter (l: l != "" && !(lib.hasPrefix "#" l)) (
    lib.splitString "\n" etc."modules-load.d/qvm-nftables.conf".text
  );
  inSystem = p: builtins.elem p guest.environment.systemPackages;

  guestChecks = [
    (check "the guest template: qvm-pty and qvm-exec-data built static from guest-agent/native with template.ts's command line"
      (
        lib.hasInfix ''await run("gcc", ["-O2", "-static", "-s", "-o", binary, source, ...libs]);'' templateTs
        && lib.hasInfix ''[["qvm-pty", files.ptySource, ["-lutil"]], ["qvm-exec-data", files.execDataSource, []]]'' templateTs
        && lib.hasInfix ''ptySource: repoPath("guest-agent/native/qvm-pty.c")'' templateTs
        && lib.hasInfix ''execDataSource: repoPath("guest-agent/native/qvm-exec-data.c")'' templateTs
        && lib.hasInfix "\n$CC -O2 -static -s -o qvm-pty qvm-pty.c -lutil\n" pty.args.buildPhase
        && lib.hasInfix "\n$CC -O2 -static -s -o qvm-exec-data qvm-exec-data.c\n" execData.args.buildPhase
        && lib.all (h: h.static or false && toString h.args.src == toString ../../guest-agent/native && h.args.hardeningDisable == [ "all" ]) [ pty execData ]
        && builtins.pathExists ../../guest-agent/native/qvm-pty.c
        && builtins.pathExists ../../guest-agent/native/qvm-exec-data.c
        && lib.hasInfix ''install -D -m 0755 qvm-pty "$out/bin/qvm-pty"'' pty.args.installPhase
      )
      "buildPhase ${show pty.args.buildPhase} / ${show execData.args.buildPhase}, or template.ts compiles them otherwise now"
    )
    (check "the guest template: the agent's unit names the helpers and the bundle through the variables the agent and its loader read"
      (
        agent.environment.QVM_PTY_HELPER or null == "${pty}/bin/qvm-pty"
        && agent.environment.QVM_EXEC_DATA_HELPER or null == "${execData}/bin/qvm-exec-data"
        && agent.environment.QVM_AGENT_BUNDLE or null == "${guestFiles}/lib/qvm/qvm-agent.cjs"
        && lib.hasInfix ''process.env.QVM_PTY_HELPER ?? "/usr/lib/qvm/qvm-pty"'' execSessionTs
        && lib.hasInfix ''process.env.QVM_EXEC_DATA_HELPER ?? "/usr/lib/qvm/qvm-exec-data"'' execSessionTs
        && lib.hasInfix "process.env.QVM_AGENT_BUNDLE" loaderJs
        && guestFiles.libFiles."qvm-agent.cjs".from == "dist/qvm-agent.cjs"
      )
      (show agent.environment)
    )
    (check "the guest template: the agent finds ip, nft, conntrack and socat (and qvm-net-services cmp)"
      (lib.all (p: builtins.elem p agent.path) (with stubs.pkgs; [ iproute2 nftables conntrack-tools socat diffutils ]))
      (show agent.path)
    )
    (check "the guest template: /usr/lib/qvm is linked before systemd starts, and has what qvm runs there"
      (
        lib.hasInfix "\nqvmGuestLink ${guestFiles}/lib/qvm /usr/lib/qvm\n" activation.text
        && activation.deps == [ "specialfs" ]
        && lib.all (f: lib.hasInfix usrLibQvm.${f} (builtins.readFile (../.. + "/${f}"))) (builtins.attrNames usrLibQvm)
        && lib.hasInfix ''export const USB_RELEASE = "/usr/lib/qvm/usb-release";'' (builtins.readFile ../../host-agent/src/usb/guest-tools.ts)
        && lib.all inLib usrLibQvmNames
        && lib.all (n: guestFiles.libFiles ? ${n}) (names ../../guest-agent/usb)
        && lib.all (n: lib.hasInfix (installLine "lib/qvm" n guestFiles.libFiles.${n}) guestFiles.text) (builtins.attrNames guestFiles.libFiles)
        && lib.all (f: lib.hasPrefix "dist/" f.from || builtins.pathExists (../../guest-agent + "/${f.from}")) (builtins.attrValues guestFiles.libFiles ++ builtins.attrValues guestFiles.etcFiles)
        && lib.hasInfix ''agent: repoPath("guest-agent/dist/qvm-agent.cjs")'' templateTs
        && lib.hasInfix ''qrexecTools: repoPath("guest-agent/dist/qvm-qrexec.cjs")'' templateTs
        && lib.hasInfix ''ln -s ${pty}/bin/qvm-pty "$out/lib/qvm/qvm-pty"'' guestFiles.text
        && lib.hasInfix ''ln -s ${execData}/bin/qvm-exec-data "$out/lib/qvm/qvm-exec-data"'' guestFiles.text
      )
      "${activation.text} ${show (builtins.attrNames guestFiles.libFiles)}"
    )
    (check "the guest template: programs the agent starts (its fixed PATH) find NixOS' setuid wrappers and system programs"
      (
        lib.hasInfix ''DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:'' execSessionTs
        && lib.hasInfix "\nqvmGuestLink /run/wrappers/bin /usr/local/sbin\nqvmGuestLink /run/current-system/sw/bin /usr/local/bin\n" activation.text
        && inSystem guestFiles
        && inSystem stubs.pkgs.nodejs
        && inSystem stubs.pkgs.socat
      )
      activation.text
    )
    (check "the guest template: the scripts' interpreters: /bin/sh, or /bin/bash replaced by the store's"
      (
        lib.all (f: builtins.elem (shebang f) [ "#!/bin/sh" "#!/bin/bash" ]) scripts
        && lib.hasInfix "sed -i '1s|^#!/bin/bash$|#!${stubs.pkgs.bash}/bin/bash|'" guestFiles.text
      )
      (show (map shebang scripts))
    )
    (check "the guest template: the qrexec services and their configuration in /etc, qrexec-run in /usr/lib/qvm, as installGuestFiles"
      (
        lib.hasInfix ''name === "qrexec-run" ? path.join(lib, name) : path.join(rpcDir, name)'' templateTs
        && lib.all (n: etc."qubes-rpc/${n}".source == "${guestFiles}/etc/qubes-rpc/${n}") (lib.remove "qrexec-run" (names ../../guest-agent/rpc))
        && !(etc ? "qubes-rpc/qrexec-run")
        && lib.all (n: etc."qubes/rpc-config/${n}".source == "${guestFiles}/etc/qubes/rpc-config/${n}") (names ../../guest-agent/rpc-config)
        && lib.all (n: lib.hasInfix (installLine "etc" n guestFiles.etcFiles.${n}) guestFiles.text) (builtins.attrNames guestFiles.etcFiles)
        && lib.hasInfix "mkdir -p /usr/lib /usr/local/etc/qubes-rpc\n" activation.text
      )
      (show (builtins.attrNames etc))
    )
    (check "the guest template: the network services' files where NET_SERVICES_FILES puts them"
      (
        names ../../guest-agent/net-services == builtins.attrNames netFiles
        && lib.all (n: lib.hasInfix ''"${n}": { dest: "${netFiles.${n}.dest}", mode: 0o${netFiles.${n}.mode} }'' templateTs) (builtins.attrNames netFiles)
        && lib.all (n: netFileInstalled n netFiles.${n}) (builtins.attrNames netFiles)
        && lib.all (n: etc ? ${n}) (lib.filter (lib.hasPrefix "tinyproxy/") (builtins.attrNames guestFiles.etcFiles))
      )
      (show { inherit (guestFiles) libFiles etcFiles; })
    )
    (check "the guest template: the qrexec tools (QREXEC_TOOLS) run the qvm-qrexec bundle with the guest's Node, on the system's PATH"
      (
        guestFiles.qrexecTools == tsList "QREXEC_TOOLS"
        && lib.hasInfix ''exec node /usr/lib/qvm/qvm-qrexec.cjs ''${tool} "$@"'' templateTs
        && lib.hasInfix ''exec %s %s %s "$@"\n' /bin/sh ${stubs.pkgs.nodejs}/bin/node "$out/lib/qvm/qvm-qrexec.cjs" "$tool"'' guestFiles.text
        && lib.hasInfix "for tool in ${lib.escapeShellArgs (tsList "QREXEC_TOOLS")}; do" guestFiles.text
        && inSystem guestFiles
      )
      (show guestFiles.qrexecTools)
    )
    (check "the guest template: the other shipped units through systemd.packages, each program in /usr they run replaced"
      (
        guestFiles.extraUnits == lib.remove "qvm-agent.service" (names ../../guest-agent/systemd)
        && builtins.elem guestFiles guest.systemd.packages
        && lib.all (p: guestFiles.unitPrograms ? ${p}) (lib.concatMap unitUsrPrograms guestFiles.extraUnits)
        && lib.all (p: lib.hasInfix ''-e "s|${p}|${guestFiles.unitPrograms.${p}}|g"'' guestFiles.text) (builtins.attrNames guestFiles.unitPrograms)
        && lib.hasInfix "\nUser=tinyproxy\n" (builtins.readFile ../../guest-agent/systemd/qvm-updates-proxy.service)
        && guest.users.users ? tinyproxy
        && guest.users.groups ? tinyproxy
        && inSystem stubs.pkgs.tinyproxy
      )
      (show (lib.concatMap unitUsrPrograms guestFiles.extraUnits))
    )
    (check "the guest template: MASKED_UNITS are masked"
      (lib.all (u: (guest.systemd.units.${u}.enable or true) == false) maskedTs && builtins.length maskedTs >= 20)
      "not masked: ${show (lib.filter (u: (guest.systemd.units.${u}.enable or true) != false) maskedTs)}"
    )
    (check "the guest template: modprobe.d (UNUSED_MODULES) and modules-load.d (NFT_MODULES) as installGuestFiles writes them"
      (
        lib.hasInfix ''`blacklist ''${m}\ninstall ''${m} /bin/true\n`'' templateTs
        && lib.hasInfix "\${NFT_MODULES.join(\"\\n\")}\\n`" templateTs
        && lib.all (m: lib.hasInfix "\nblacklist ${m}\ninstall ${m} ${stubs.pkgs.coreutils}/bin/true\n" modprobeText) (tsList "UNUSED_MODULES")
        && builtins.length (lib.filter (lib.hasPrefix "blacklist ") (lib.splitString "\n" modprobeText)) == builtins.length (tsList "UNUSED_MODULES")
        && modulesLoadLines == tsList "NFT_MODULES"
      )
      "${modprobeText}${etc."modules-load.d/qvm-nftables.conf".text}"
    )
    (check "the guest template: kernel modules from /lib/modules (no NixOS kernel), the kernel's modprobe is kmod's"
      (
        guest.boot.kernel.enable == false
        && lib.hasInfix "mount -t ext4 -o ro \"$modules_dev\" /newroot/lib/modules" initramfs
        && lib.hasInfix "echo ${stubs.pkgs.kmod}/bin/modprobe >/proc/sys/kernel/modprobe" activation.text
      )
      activation.text
    )
    (check "the guest template: each of DEBIAN_12_PACKAGES has its counterpart, in the system's packages; the net domain's are there"
      (
        lib.sort lib.lessThan (builtins.attrNames guestFiles.debianPackages) == lib.sort lib.lessThan (tsList "DEBIAN_12_PACKAGES")
        && lib.all inSystem (lib.concatLists (builtins.attrValues guestFiles.debianPackages))
        && lib.all (d: guestFiles.debianPackages.${d} != [ ]) [ "nftables" "conntrack" "tinyproxy" "curl" "iputils-ping" "iproute2" "socat" "nodejs" ]
      )
      "DEBIAN_12_PACKAGES ${show (tsList "DEBIAN_12_PACKAGES")}, mapped ${show (builtins.attrNames guestFiles.debianPackages)}"
    )
    (check "the guest template: the agent's code cache made at build by the guest's Node, as makeAgentCodeCache"
      (
        lib.hasInfix ''"QVM_AGENT_WRITE_CACHE=1", "QVM_AGENT_NO_VSOCK=1", "QVM_AGENT_SOCKET='' templateTs
        && lib.hasInfix "QVM_AGENT_WRITE_CACHE=1 QVM_AGENT_NO_VSOCK=1 QVM_AGENT_SOCKET=" guestFiles.text
        && lib.hasInfix ''${stubs.pkgs.nodejs}/bin/node "$out/lib/qvm/qvm-agent-loader.cjs"'' guestFiles.text
        && lib.hasInfix "const cacheFile = `\${bundle}.v8cache`;" loaderJs
      )
      "the builder or template.ts changed"
    )
    (check "the guest template: the network is the agent's (no DHCP client, firewall or resolvconf of NixOS')"
      (
        guest.networking.useDHCP == false
        && guest.networking.dhcpcd.enable == false
        && guest.networking.firewall.enable == false
        && guest.networking.resolvconf.enable == false
      )
      (show guest.networking)
    )
  ];

  # --- the flake, with a stand-in nixpkgs ------------------------------------------------------
  flake = import ../../flake.nix;
  stubNixpkgs = {
    lib = lib // {
      nixosSystem = { system, modules }: { config = evalNixos modules; };
    };
    legacyPackages.x86_64-linux = stubs.pkgs;
  };
  outputs = flake.outputs {
    self = outputs;
    nixpkgs = stubNixpkgs;
  };
  flakeChecks = [
    (check "flake.nix has nixpkgs as its only input" (builtins.attrNames flake.inputs == [ "nixpkgs" ]) (
      show (builtins.attrNames flake.inputs)
    ))
    (check "flake.nix has the outputs the README names"
      (
        lib.all (p: lib.hasAttrByPath p outputs) [
          [ "packages" "x86_64-linux" "qvm" ]
          [ "packages" "x86_64-linux" "live-iso" ]
          [ "packages" "x86_64-linux" "guest-template" ]
          [ "packages" "x86_64-linux" "kernel-bundle" ]
          [ "nixosModules" "qvmd" ]
          [ "devShells" "x86_64-linux" "default" ]
        ]
        && outputs.packages.x86_64-linux.live-iso.name == "stub-iso-image"
        && outputs.packages.x86_64-linux.guest-template.name == "qvm-template-nixos-guest"
        && outputs.packages.x86_64-linux.guest-template.rootImage.name == "stub-disk-image"
        && outputs.packages.x86_64-linux.kernel-bundle.name == "qvm-kernel-bundle-6.12.1"
        && outputs.nixosConfigurations.live-iso.config.qvm.live.templateArchive
          == outputs.packages.x86_64-linux.guest-template
      )
      (show (builtins.attrNames outputs))
    )
    (check "the flake's module-domains check evaluates (its NixOS module and the expected file agree)" (
      outputs.checks.x86_64-linux.module-domains.name == "stub-nixos-system"
    ) "it did not")
  ];

  # --- the JSON Schema translation -------------------------------------------------------------
  jsonSchema = import ../lib/json-schema.nix { inherit lib; };
  typeFails = schema: fails (jsonSchema.typeOf (_: null) schema).description;
  schemaChecks = [
    (check "json-schema.nix refuses a pattern POSIX regular expressions read differently" (typeFails {
      type = "string";
      pattern = "^\\d+$";
    }) "accepted")
    (check "json-schema.nix refuses a schema it does not know" (typeFails { type = "null"; }) "accepted")
  ];

  # --- the generated data ----------------------------------------------------------------------
  dataChecks = [
    (check "qvm-data.json has the schema of `qvm apply`'s file" (data.domainSchema != null) (
      data.TODO_domainSchema or "domainSchema is null"
    ))
  ];
in
if exports then
  {
    kernelManifests = {
      plain = bundle.manifest;
      withVmlinux = bundle.manifestWithVmlinux;
    };
    inherit (bundle) initramfsModules;
    liveDeclared = live.services.qvmd.declaredFile;
    # The live ISO's boot scripts and the store paths in them, for nix/tests/live-scripts.sh.
    liveScripts = {
      kernel = liveUnits.qvm-live-kernel.serviceConfig.ExecStart.text;
      template = liveUnits.qvm-live-template.serviceConfig.ExecStart.text;
      setup = liveUnits.qvm-live-setup.serviceConfig.ExecStart.text;
      qvm = "${live.services.qvmd.package}/bin/qvm";
      bundle = "${bundle}";
      archive = "${guest.system.build.qvmTemplate}/nixos-guest.qvm-template";
      inherit (bundle) hash;
      inherit (live.services.qvmd) dataDir;
    };
  }
else
declaredChecks ++ liveChecks ++ unitChecks ++ packageChecks ++ imageChecks ++ guestChecks ++ flakeChecks ++ schemaChecks ++ dataChecks
