# What scripts/nix-check.sh hands to qvm's own parsers (nix/tests/check-exports.mjs), made by Nix
# from the Nix files with the stand-ins of stubs.nix: the kernel bundle's manifest.json (with and
# without vmlinux, as the builder writes one or the other) for images/src/store.ts's
# kernelManifestSchema, the bundle's initramfs module list for images/src/kernel.ts's
# INITRAMFS_MODULES, and the live ISO's domains file for the parser `qvm apply` uses.
{ lib }:
let
  t = import ./. {
    inherit lib;
    exports = true;
  };
in
t
