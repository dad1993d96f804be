# The Nix side's checks that need nothing but nixpkgs' lib: scripts/nix-check.sh evaluates this
# with the vendored lib (../shared/vendor/nixpkgs-lib), the flake's checks with nixpkgs' own.
# Each check is { name; ok; detail; }: detail says what differed. NixOS and pkgs are stand-ins
# (stubs.nix), so these check this repository's Nix, not how nixpkgs builds or boots it.
{ lib }:
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
  live = evalNixos [ ../live-iso.nix ];
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
        && lib.hasSuffix "/loader/qvm-agent-loader.cjs" agent.serviceConfig.ExecStart
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
    (check "the guest template's archive: its init passes qvm's rule (images/src/store.ts) and is NixOS' system profile"
      (
        lib.hasInfix initPatternTs storeTs
        && builtins.match initPattern archiveManifest.init != null
        && !(builtins.elem ".." (lib.splitString "/" archiveManifest.init))
        && builtins.stringLength archiveManifest.init <= 255
        && archiveManifest.init == "/nix/var/nix/profiles/system/init"
      )
      "init ${show archiveManifest.init}, or store.ts's rule is no longer ${initPatternTs}"
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
          [ "nixosModules" "qvmd" ]
          [ "devShells" "x86_64-linux" "default" ]
        ]
        && outputs.packages.x86_64-linux.live-iso.name == "stub-iso-image"
        && outputs.packages.x86_64-linux.guest-template.name == "qvm-template-nixos-guest"
        && outputs.packages.x86_64-linux.guest-template.rootImage.name == "stub-disk-image"
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
declaredChecks ++ unitChecks ++ packageChecks ++ imageChecks ++ flakeChecks ++ schemaChecks ++ dataChecks
