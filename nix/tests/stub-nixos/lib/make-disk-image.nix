# Stand-in for nixpkgs' nixos/lib/make-disk-image.nix in the offline checks: a derivation-shaped
# value that keeps the arguments it was given, for the checks to read.
args: {
  type = "derivation";
  name = "stub-disk-image";
  outPath = "/nix/store/00000000000000000000000000000000-stub-disk-image";
  args = removeAttrs args [
    "config"
    "lib"
    "pkgs"
  ];
}
