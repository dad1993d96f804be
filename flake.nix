# qvm for Nix users: the package, the NixOS module (services.qvmd), a live ISO, a guest template,
# a kernel bundle and a development shell. The files are in nix/; what each one is, and what could not be
# checked where it was written, is said at the top of each.
#
# No flake.lock is committed yet: the machines this was written on cannot reach nixpkgs. The
# first `nix build` or `nix flake lock` writes one; commit it, so every builder gets the same
# nixpkgs.
#
# Offline checks of the Nix files (parse, the module's options and the domains file it writes,
# evaluated with nixpkgs' lib alone): scripts/nix-check.sh.
{
  description = "qvm: Qubes-style compartmentalization for Linux, every security domain a lightweight VM";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      # qvm's VMM drivers and its kernel bundle are x86-64 only.
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      inherit (nixpkgs) lib;

      nixos = modules: lib.nixosSystem { inherit system modules; };
    in
    {
      packages.${system} = {
        qvm = pkgs.callPackage ./nix/package.nix { };
        default = self.packages.${system}.qvm;
        live-iso = self.nixosConfigurations.live-iso.config.system.build.isoImage;
        # The template archive (nixos-guest.qvm-template) for `qvm template import`; its
        # rootImage is the raw ext4 image.
        guest-template = self.nixosConfigurations.guest-template.config.system.build.qvmTemplate;
        # qvm's kernel bundle (vmlinuz, initrd.img, modules.img, manifest.json) from nixpkgs'
        # default kernel, in the image store's layout (nix/kernel-bundle.nix). The live ISO
        # builds its own from the ISO's kernel.
        kernel-bundle = pkgs.callPackage ./nix/kernel-bundle.nix { };
      };

      # An attribute set that imports the file, rather than the file's function: a configuration
      # that also imports ./nix/module.nix (as nix/live-iso.nix does) then gets it once.
      nixosModules.qvmd = {
        imports = [ ./nix/module.nix ];
      };
      nixosModules.default = self.nixosModules.qvmd;

      nixosConfigurations = {
        # The ISO carries the guest template built here, and imports it at boot.
        live-iso = nixos [
          ./nix/live-iso.nix
          { qvm.live.templateArchive = self.packages.${system}.guest-template; }
        ];
        guest-template = nixos [ ./nix/guest-template.nix ];
      };

      devShells.${system}.default = pkgs.mkShell {
        # What scripts/install-system-deps.sh installs on Debian for building and for the unit
        # tests; `npm ci` then fills node_modules from package-lock.json, as scripts/setup.sh does.
        packages = with pkgs; [
          nodejs
          protobuf
          gcc
          qemu_kvm
          vhost-device-vsock
          passt
          e2fsprogs
          socat
          cpio
          xz
          zstd
          shellcheck
          nix
        ];
      };

      checks.${system} = {
        inherit (self.packages.${system}) qvm;
        # The same evaluation scripts/nix-check.sh runs with the vendored lib, here with nixpkgs'.
        nix-tests =
          let
            results = import ./nix/tests { inherit lib; };
            failed = lib.filter (c: !c.ok) results;
          in
          assert lib.assertMsg (failed == [ ]) "nix/tests failed: ${builtins.toJSON failed}";
          pkgs.writeText "qvm-nix-tests.json" (builtins.toJSON results);
        # The module in a real NixOS evaluation: the domains file it writes must be the expected one.
        module-domains =
          let
            config =
              (nixos [
                self.nixosModules.qvmd
                ./nix/tests/domains.nix
                {
                  boot.isContainer = true;
                  system.stateVersion = lib.trivial.release;
                }
              ]).config;
            expected = lib.importJSON ./nix/tests/domains-expected.json;
          in
          assert lib.assertMsg (
            config.services.qvmd.declaredFile == expected
          ) "services.qvmd.declaredFile differs from nix/tests/domains-expected.json";
          config.system.build.toplevel;
      };
    };
}
