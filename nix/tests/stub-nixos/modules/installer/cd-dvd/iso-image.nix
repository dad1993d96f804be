# Stand-in for nixpkgs' nixos/modules/installer/cd-dvd/iso-image.nix in the offline checks
# (nix/tests/default.nix): only what the live ISO's configuration reads of it.
{
  system.build.isoImage = {
    type = "derivation";
    name = "stub-iso-image";
    outPath = "/nix/store/00000000000000000000000000000000-stub-iso-image";
  };
}
