# Stand-in for nixpkgs' nixos/modules/profiles/all-hardware.nix in the offline checks: drivers
# only, nothing the checks look at.
{ }
