# Stand-ins for what nixpkgs would give the Nix files, so that nix/tests/default.nix can evaluate
# them with nixpkgs' lib alone (the vendored copy, or nixpkgs' own in the flake's checks):
#   - nixosOptions: declarations of the NixOS options the files set, typed as NixOS types them
#     where a mistake would matter (lists, packages, the systemd unit fields), free-form elsewhere;
#   - pkgs: derivation-shaped values with fake store paths; builders that keep their arguments
#     so the checks can read them;
#   - utils: NixOS' escaping helpers, as nixos/lib/utils.nix defines them.
# Nothing here builds or writes to a store.
{ lib }:
let
  inherit (lib) mkOption types;

  fakeStorePath = name: "/nix/store/00000000000000000000000000000000-${name}";
  package = name: {
    type = "derivation";
    inherit name;
    outPath = fakeStorePath name;
    meta.mainProgram = name;
  };
  # A builder's result: a package that remembers what it was called with.
  built = name: args: package name // { inherit args; };

  free = mkOption {
    type = types.lazyAttrsOf types.anything;
    default = { };
  };
  strings = mkOption {
    type = types.listOf types.str;
    default = [ ];
  };

  # nixos/lib/systemd-unit-options.nix: a directive's value, or a list of them (repeated lines).
  unitValue = types.oneOf [
    types.bool
    types.int
    types.str
    types.path
    types.package
  ];
  unitOptions = mkOption {
    type = types.attrsOf (types.either unitValue (types.listOf unitValue));
    default = { };
  };

  serviceModule = {
    options = {
      enable = mkOption {
        type = types.bool;
        default = true;
      };
      description = mkOption {
        type = types.str;
        default = "";
      };
      documentation = strings;
      wantedBy = strings;
      requiredBy = strings;
      after = strings;
      before = strings;
      wants = strings;
      requires = strings;
      bindsTo = strings;
      partOf = strings;
      conflicts = strings;
      path = mkOption {
        type = types.listOf (types.either types.package types.str);
        default = [ ];
      };
      environment = mkOption {
        type = types.attrsOf (
          types.nullOr (
            types.oneOf [
              types.str
              types.path
              types.package
            ]
          )
        );
        default = { };
      };
      restartTriggers = mkOption {
        type = types.listOf types.unspecified;
        default = [ ];
      };
      serviceConfig = unitOptions;
      unitConfig = unitOptions;
      script = mkOption {
        type = types.lines;
        default = "";
      };
      preStart = mkOption {
        type = types.lines;
        default = "";
      };
    };
  };
in
{
  inherit package fakeStorePath;

  nixosOptions = {
    options = {
      assertions = mkOption {
        type = types.listOf (
          types.submodule {
            options.assertion = mkOption { type = types.bool; };
            options.message = mkOption { type = types.str; };
          }
        );
        default = [ ];
      };
      warnings = strings;

      systemd.services = mkOption {
        type = types.attrsOf (types.submodule serviceModule);
        default = { };
      };
      systemd.tmpfiles.rules = strings;
      systemd.packages = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      # nixos/lib/systemd-unit-options.nix: a unit as text, or (enable = false) masked.
      systemd.units = mkOption {
        type = types.attrsOf (
          types.submodule {
            freeformType = types.attrsOf types.anything;
            options.enable = mkOption {
              type = types.bool;
              default = true;
            };
          }
        );
        default = { };
      };
      system.activationScripts = mkOption {
        type = types.attrsOf (
          types.either types.str (
            types.submodule {
              options.text = mkOption { type = types.lines; };
              options.deps = strings;
            }
          )
        );
        default = { };
      };

      users.groups = mkOption {
        type = types.attrsOf (
          types.submodule {
            options.gid = mkOption {
              type = types.nullOr types.int;
              default = null;
            };
            options.members = strings;
          }
        );
        default = { };
      };
      users.users = mkOption {
        type = types.attrsOf (
          types.submodule {
            freeformType = types.attrsOf types.anything;
            options.extraGroups = strings;
          }
        );
        default = { };
      };

      environment.systemPackages = mkOption {
        type = types.listOf types.package;
        default = [ ];
      };
      # nixos/modules/system/etc/etc.nix: a file's text or its source, linked into /etc.
      environment.etc = mkOption {
        type = types.attrsOf (
          types.submodule {
            freeformType = types.attrsOf types.anything;
            options.text = mkOption {
              type = types.nullOr types.lines;
              default = null;
            };
            options.source = mkOption {
              type = types.nullOr types.path;
              default = null;
            };
          }
        );
        default = { };
      };
      environment.variables = mkOption {
        type = types.attrsOf (types.either types.str (types.listOf types.str));
        default = { };
      };

      fileSystems = mkOption {
        type = types.attrsOf (
          types.submodule {
            freeformType = types.attrsOf types.anything;
            options.options = strings;
          }
        );
        default = { };
      };

      system.stateVersion = mkOption { type = types.str; };
      system.build = mkOption {
        type = types.lazyAttrsOf types.unspecified;
        default = { };
      };

      # Namespaces only the live ISO and the guest template touch, none of whose types the
      # checks rely on.
      boot = free;
      hardware = free;
      isoImage = free;
      networking = free;
      security = free;
      services.cage = free;
    };
    config.system.build.toplevel = package "stub-nixos-system";
  };

  pkgs = lib.fix (
    self:
    {
      inherit lib;
      callPackage =
        fn: args:
        let
          f = if builtins.isFunction fn then fn else import fn;
        in
        f (builtins.intersectAttrs (builtins.functionArgs f) self // args);

      writeText = name: text: package name // { inherit text; };
      # As nixpkgs' runCommand: passthru's attributes on the result; the rest of the environment
      # kept as args, the script as text.
      runCommand =
        name: env: text:
        package name // (env.passthru or { }) // { args = removeAttrs env [ "passthru" ]; inherit text; };
      writeShellScript = name: text: package name // { inherit text; };
      buildNpmPackage = args: built "${args.pname}-${args.version}" args;
      mkShell = built "stub-shell";
      # Only the static stdenv's builder, keeping its arguments.
      pkgsStatic.stdenv.mkDerivation = args: built args.name args // { static = true; };
      pkgsStatic.busybox = package "busybox-static";
      # A nixpkgs kernel as nix/kernel-bundle.nix reads it: its version, module directory and dev
      # output (vmlinux and the build's .config).
      linuxPackages.kernel = package "linux-6.12.1" // {
        version = "6.12.1";
        modDirVersion = "6.12.1";
        dev = package "linux-6.12.1-dev";
      };
      importNpmLock = {
        __functor = _: built "stub-npm-deps";
        npmConfigHook = package "npm-config-hook";
      };
    }
    // lib.genAttrs [
      "bash"
      "binutils-unwrapped"
      "chromium"
      "cloud-hypervisor"
      "conntrack-tools"
      "coreutils"
      "cpio"
      "curl"
      "diffutils"
      "e2fsprogs"
      "gcc"
      "gnutar"
      "gzip"
      "iproute2"
      "iputils"
      "jq"
      "kmod"
      "less"
      "makeWrapper"
      "nftables"
      "nix"
      "nodejs"
      "passt"
      "procps"
      "protobuf"
      "qemu-utils"
      "qemu_kvm"
      "shellcheck"
      "socat"
      "tinyproxy"
      "util-linux"
      "vhost-device-vsock"
      "xz"
      "zstd"
    ] package
  );

  utils = rec {
    escapeSystemdExecArg =
      arg:
      let
        s =
          if builtins.isPath arg then
            "${arg}"
          else if builtins.isString arg then
            arg
          else if builtins.isInt arg || builtins.isFloat arg || lib.isDerivation arg then
            toString arg
          else
            throw "escapeSystemdExecArg only allows strings, paths, numbers and derivations";
      in
      lib.replaceStrings [ "%" "$" ] [ "%%" "$$" ] (builtins.toJSON s);
    escapeSystemdExecArgs = lib.concatMapStringsSep " " escapeSystemdExecArg;
    escapeSystemdPath =
      s: lib.replaceStrings [ "/" "-" " " ] [ "-" "\\x2d" "\\x20" ] (lib.removePrefix "/" (toString s));
  };
}
