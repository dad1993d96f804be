# services.qvmd: qvm's host daemon on NixOS, and the domains it should have.
#
# The unit is the shipped one (host-agent/systemd/qvmd.service.in, which scripts/install-service.sh
# installs on Debian): its directives are read from nix/generated/qvm-data.json, so the hardening
# is the same by construction and a change there reaches NixOS with the next
# `node scripts/gen-nix-data.mjs`. Only what Nix decides is replaced: the program and the
# directories. Domains declared in `services.qvmd.domains` are written as the file `qvm apply`
# takes and applied by qvm-apply.service once qvmd answers; their option types come from the
# schema qvm itself parses that file with (nix/lib/json-schema.nix).
{
  config,
  lib,
  pkgs,
  utils,
  ...
}:
let
  inherit (lib)
    mkEnableOption
    mkIf
    mkOption
    optional
    optionalAttrs
    types
    ;

  cfg = config.services.qvmd;
  data = builtins.fromJSON (builtins.readFile ./generated/qvm-data.json);
  jsonSchema = import ./lib/json-schema.nix { inherit lib; };
  fileSchema = data.domainSchema;
  shipped = data.qvmdUnit;

  # What a property means and what an unset one falls back to, from qvmd's property table.
  propertyDoc =
    name:
    let
      p = data.properties.${name};
      fallback = lib.concatStringsSep ", else " (
        optional p.fromTemplate "the template's"
        ++ optional (p ? global) "the global property ${p.global}"
        ++ optional (p ? default) (builtins.toJSON p.default)
      );
    in
    "${p.doc}." + lib.optionalString (fallback != "") " Unset: ${fallback}.";

  fieldDocs = {
    class = "The domain's class: ${lib.concatStringsSep ", " data.domainClasses}. Unset: AppVM, as `qvm create`.";
    label = "The color of the domain's trusted frame: ${lib.concatStringsSep ", " (builtins.attrNames data.labels)}.";
    template = "AppVM: the TemplateVM it runs from (unset: the global default_template). DispVM: the AppVM it is a disposable of. TemplateVM, StandaloneVM: the TemplateVM whose root it starts as a copy of, when it is created.";
    properties = "Other properties, as `qvm prefs` sets them.";
    features = "Features (`qvm features`), name to text. Unset: the file says nothing about them.";
    tags = "Tags (`qvm tags`). Unset: the file says nothing about them.";
    firewall = "The whole firewall rule list, in order, each as for `qvm firewall VM add` (\"accept example.com tcp 443\"); the first rule that matches decides, then drop, so an empty list drops everything. Unset: the file says nothing about it.";
  };
  describe = name: fieldDocs.${name} or (if data.properties ? ${name} then propertyDoc name else null);

  # Without a schema (qvm-data.json made before `qvm apply` had one) domains are passed through
  # unchecked, and qvm apply is the only judge.
  domainsType =
    if fileSchema == null then
      types.attrsOf (types.attrsOf types.anything)
    else
      jsonSchema.typeOf describe fileSchema.properties.domains;
  policyType =
    if fileSchema == null then
      types.attrsOf types.lines
    else
      jsonSchema.typeOf describe fileSchema.properties.policy;

  # The file qvm apply reads. Unset fields are left out rather than written as null: absent and
  # "set to nothing" differ for features, tags and the firewall.
  declaredFile =
    let
      domain = d: lib.filterAttrs (n: v: !(n == "properties" && v == { })) (jsonSchema.dropNulls d);
    in
    {
      version = if fileSchema == null then 1 else fileSchema.properties.version.const;
    }
    // optionalAttrs (cfg.domains != { }) { domains = lib.mapAttrs (_: domain) cfg.domains; }
    // optionalAttrs (cfg.policy != { }) { inherit (cfg) policy; };
  declaredJSON = pkgs.writeText "qvm-declared.json" (builtins.toJSON declaredFile);
  applies = cfg.domains != { } || cfg.policy != { };

  # A path under /var/lib or /run is systemd's to create and keep (StateDirectory,
  # RuntimeDirectory, with the shipped modes); anything else is made by tmpfiles.
  underDir = base: dir: if lib.hasPrefix "${base}/" dir then lib.removePrefix "${base}/" dir else null;
  stateDirectory = underDir "/var/lib" cfg.dataDir;
  runtimeDirectory = underDir "/run" cfg.runtimeDir;

  # What qvmd runs: the VMMs and vhost-device-vsock, qemu-img and qemu-io for volumes, passt for
  # a net domain's uplink, ip for taps, mke2fs for private volumes. nftables is not here: the
  # firewall runs inside net domains (their template has it), and qvmd never calls nft.
  hostTools =
    [
      pkgs.qemu_kvm
      pkgs.qemu-utils
      pkgs.vhost-device-vsock
      pkgs.passt
      pkgs.iproute2
      pkgs.util-linux
      pkgs.bash
      pkgs.e2fsprogs
    ]
    ++ optional cfg.cloudHypervisor pkgs.cloud-hypervisor;

  # Directives whose values are this checkout's paths in the shipped unit.
  replacedDirectives = [
    "ExecStart"
    "ReadWritePaths"
    "StateDirectory"
    "RuntimeDirectory"
  ];

  splitWords = s: lib.filter (w: w != "") (lib.splitString " " s);

  # qvmd is Type=simple: started is not yet listening. qvm apply waits until it answers.
  waitForQvmd = pkgs.writeShellScript "qvm-wait-for-qvmd" ''
    for _ in $(seq 1 120); do
      ${cfg.package}/bin/qvm ls >/dev/null 2>&1 && exit 0
      sleep 0.5
    done
    echo "qvmd did not answer on ${cfg.runtimeDir}/qvmd.sock within 60 s: see journalctl -u qvmd" >&2
    exit 1
  '';

  # The schema's rule for domain names, which the domains' type cannot check (nix/lib/json-schema.nix).
  domainNamePattern = if fileSchema == null then data.domainName.pattern else fileSchema.properties.domains.propertyNames.pattern;

  domainClass = d: if d.class or null == null then "AppVM" else d.class;
  setProperties = d: jsonSchema.dropNulls (if d.properties or null == null then { } else d.properties);
in
{
  options.services.qvmd = {
    enable = mkEnableOption "qvmd, the qvm host daemon that runs each security domain as a VM";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage ./nix/package.nix { }";
      description = "The qvm package (qvm, qvmd and the web shell).";
    };

    dataDir = mkOption {
      type = types.path;
      default = data.defaultDataDir;
      description = "Domains, volumes, policy, images and logs (qvmd --data-dir).";
    };

    runtimeDir = mkOption {
      type = types.path;
      default = data.defaultRuntimeDir;
      description = "The admin socket and each running domain's sockets (qvmd --runtime-dir). Kept across restarts of qvmd, which re-attaches to running domains.";
    };

    group = mkOption {
      type = types.str;
      default = data.adminGroup;
      description = "Members of this group may use the admin socket, that is, `qvm`. Add users with `users.users.NAME.extraGroups`.";
    };

    allowTcg = mkOption {
      type = types.bool;
      default = false;
      description = "Start domains under QEMU's TCG emulation when there is no KVM (qvmd --allow-tcg). TCG gives no hardware isolation: a guest that exploits a QEMU bug reaches the host.";
    };

    cloudHypervisor = mkEnableOption "cloud-hypervisor as a second VMM (a domain picks it with the property vmm = \"cloud-hypervisor\"; it needs KVM)";

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "--max-running"
        "8"
      ];
      description = "More qvmd arguments (`qvmd --help`): limits, --images-dir, --ask-timeout, …";
    };

    domains = mkOption {
      type = domainsType;
      default = { };
      example = lib.literalExpression ''
        {
          work = { label = "blue"; template = "debian-12"; memory = 800; properties.autostart = true; };
          vault = { label = "black"; template = "debian-12"; netvm = ""; };
        }
      '';
      description = "Domains qvmd should have, applied by `qvm apply` at every boot and after each change. Domains created by other means are left alone, and a domain removed from here is reported, never deleted.";
    };

    policy = mkOption {
      type = policyType;
      default = { };
      example = {
        "30-user.policy" = "qubes.Filecopy * work vault ask\n";
      };
      description = "qrexec policy files written by `qvm apply` into DATA/policy.d, file name to text (Qubes 4.2's policy language; see the README). A file removed from here stays: qvm apply deletes nothing.";
    };

    declaredFile = mkOption {
      type = types.attrs;
      readOnly = true;
      internal = true;
      description = "The file `qvm apply` is given, as Nix data (for tests and `nix eval`).";
    };
  };

  config = mkIf cfg.enable {
    services.qvmd.declaredFile = declaredFile;

    assertions =
      [
      ]
      ++ lib.concatLists (
        lib.mapAttrsToList (
          name: d:
          [
            {
              assertion = builtins.match domainNamePattern name != null;
              message = "services.qvmd.domains.${name}: a domain name is a letter, then letters, digits, \"_\", \".\" or \"-\", at most ${toString data.domainName.maxLength} characters (${domainNamePattern}).";
            }
            {
              assertion = !(builtins.elem (lib.toLower name) data.domainName.reserved);
              message = "services.qvmd.domains.${name}: \"${name}\" is a reserved name (${lib.concatStringsSep ", " data.domainName.reserved}).";
            }
            {
              assertion = cfg.cloudHypervisor || (d.properties.vmm or null) != "cloud-hypervisor";
              message = "services.qvmd.domains.${name} runs on cloud-hypervisor: set services.qvmd.cloudHypervisor = true.";
            }
          ]
          # Which class may set which property, from qvmd's table (template_for_dispvms: AppVMs).
          ++ lib.mapAttrsToList (
            field: _:
            let
              classes = data.properties.${field}.classes or data.domainClasses;
            in
            {
              assertion = builtins.elem (domainClass d) classes;
              message = "services.qvmd.domains.${name}.properties.${field}: only ${lib.concatStringsSep ", " classes} may set it, and this is a ${domainClass d}.";
            }
          ) (setProperties d)
        ) cfg.domains
      );

    # The VMM jail (host-agent/src/vmm/sandbox/jail.ts) finds unshare, setpriv and sh through the
    # unit's PATH (hostTools has util-linux) and shows /nix/store read-only, so VMMs are jailed
    # here as on Debian. Not yet run on NixOS.

    users.groups.${cfg.group} = { };

    environment.systemPackages = [ cfg.package ] ++ hostTools;
    # Clients find the admin socket through QVM_RUNTIME_DIR when it is not the default.
    environment.variables = optionalAttrs (cfg.runtimeDir != data.defaultRuntimeDir) {
      QVM_RUNTIME_DIR = cfg.runtimeDir;
    };

    systemd.tmpfiles.rules =
      optional (stateDirectory == null) "d ${cfg.dataDir} ${shipped.Service.StateDirectoryMode} root root -"
      ++ optional (runtimeDirectory == null) "d ${cfg.runtimeDir} ${shipped.Service.RuntimeDirectoryMode} root root -";

    systemd.services.qvmd = {
      description = shipped.Unit.Description;
      documentation = [ "file://${cfg.package}/lib/qvm/README.md" ];
      wantedBy = splitWords shipped.Install.WantedBy;
      after = splitWords shipped.Unit.After;
      wants = splitWords shipped.Unit.Wants;
      path = hostTools;
      # passt is looked for at fixed FHS paths unless named here (host-agent/src/network/passt.ts).
      environment.QVM_PASST = "${pkgs.passt}/bin/passt";
      # Safe to restart on a switch: VMMs outlive qvmd (KillMode=process) and it re-attaches.
      serviceConfig =
        removeAttrs shipped.Service replacedDirectives
        // {
          ExecStart = utils.escapeSystemdExecArgs (
            [
              "${cfg.package}/bin/qvmd"
              "--foreground"
              "--data-dir"
              cfg.dataDir
              "--runtime-dir"
              cfg.runtimeDir
              "--admin-group"
              cfg.group
            ]
            ++ optional cfg.allowTcg "--allow-tcg"
            ++ cfg.extraArgs
          );
          ReadWritePaths = [
            cfg.dataDir
            cfg.runtimeDir
          ];
        }
        // optionalAttrs (stateDirectory != null) { StateDirectory = stateDirectory; }
        // optionalAttrs (runtimeDirectory != null) { RuntimeDirectory = runtimeDirectory; };
    };

    systemd.services.qvm-apply = mkIf applies {
      description = "Apply the domains declared in services.qvmd.domains (qvm apply)";
      wantedBy = [ "multi-user.target" ];
      after = [ "qvmd.service" ];
      requires = [ "qvmd.service" ];
      # A changed declaration is applied at the next switch, not only at boot.
      restartTriggers = [ declaredJSON ];
      environment.QVM_RUNTIME_DIR = cfg.runtimeDir;
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStartPre = waitForQvmd;
        ExecStart = utils.escapeSystemdExecArgs [
          "${cfg.package}/bin/qvm"
          "apply"
          declaredJSON
        ];
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        RestrictAddressFamilies = "AF_UNIX";
        IPAddressDeny = "any";
        CapabilityBoundingSet = "";
        SystemCallArchitectures = "native";
      }
      # A client of the admin socket: a member of the admin group, not root, unless it writes
      # policy files, which qvm apply puts into qvmd's data directory itself (root's, mode 0700).
      // (
        if cfg.policy == { } then
          {
            DynamicUser = true;
            SupplementaryGroups = [ cfg.group ];
          }
        else
          { ReadWritePaths = [ cfg.dataDir ]; }
      );
    };
  };
}
