# package-lock.json as nixpkgs' importNpmLock can use it.
#
# Why this exists: qvm's lock has an `integrity` for every package but no `resolved` URL (npm
# leaves them out when the lock is written with `omit-lockfile-registry-resolved`, and
# scripts/setup.sh never rewrites the lock). importNpmLock fetches only packages that have a
# `resolved` URL, and looks up `resolved` for every root devDependency, so without them the
# build neither fetches nor evaluates. The registry's tarball URL follows from the name and
# version alone, and the hash stays the lock's own `integrity`, so nothing is trusted that the
# lock did not already pin.
#
# Workspace links (`"node_modules/@qvm/cli": { link = true; resolved = "cli"; }`) are dropped:
# importNpmLock strips `link` and would turn each into a copy of the workspace in the store. npm
# re-creates the links from the root package.json's `workspaces` without the network.
#
# Pure: needs only nixpkgs' lib, so scripts/nix-check.sh evaluates it against the real lock.
{ lib }:
let
  registry = "https://registry.npmjs.org";

  isLink = module: module.link or false;

  # "node_modules/a/node_modules/@s/b" installs "@s/b" (or an alias's real name, in `name`).
  packageName = key: module: module.name or (lib.last (lib.splitString "node_modules/" key));

  # What the registry serves: @scope/name/-/name-1.2.3.tgz.
  tarballUrl = name: version: "${registry}/${name}/-/${baseNameOf name}-${version}.tgz";

  withResolved =
    key: module:
    if module ? resolved || !(lib.hasPrefix "node_modules/" key) then
      module
    else
      module // { resolved = tarballUrl (packageName key module) module.version; };
in
{
  inherit tarballUrl;

  fromLock =
    lock:
    lock
    // {
      packages = lib.mapAttrs withResolved (lib.filterAttrs (_: m: !(isLink m)) lock.packages);
    };
}
