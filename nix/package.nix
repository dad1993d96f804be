# qvm built from this checkout: `npm run build` (protocol code from the .proto files, then the
# esbuild bundles and the C helpers of scripts/build.mjs) on dependencies taken from
# package-lock.json through nixpkgs' importNpmLock, so the lock stays the one source of versions
# and hashes and there is no npmDepsHash to keep.
#
# For whoever builds it first (it has never been built: the machines this was written on cannot
# download nixpkgs):
#   - package-lock.json has no `resolved` URLs (`grep resolved package-lock.json` finds only the
#     workspace links), which importNpmLock needs; nix/lib/npm-lock.nix derives them from each
#     package's name and version. A package that does not live on registry.npmjs.org (a git or
#     tarball dependency, an alias to another registry) would need its URL in the lock: regenerate
#     it with `npm install --package-lock-only` and a registry config that records URLs.
#   - npm workspaces are not something importNpmLock knows: the workspace links are left out of
#     the lock it is given and npm makes them again. If `npm install` in npmConfigHook complains
#     about the workspaces, this is the first place to look; nixpkgs PR #522939 adds workspace
#     support to importNpmLock.
#   - If importNpmLock is not usable, fetchNpmDeps with an npmDepsHash is the fallback: it needs
#     the same `resolved` URLs, so give it `npmLock.fromLock` written out as the lock.
{
  lib,
  buildNpmPackage,
  importNpmLock,
  nodejs,
  protobuf,
  makeWrapper,
}:
let
  root = ../.;
  npmLock = import ./lib/npm-lock.nix { inherit lib; };
  packageJson = lib.importJSON ../package.json;

  # The checkout less what is built or generated in place, and less the Nix files, so that
  # editing nix/ does not rebuild qvm.
  src = lib.cleanSourceWith {
    name = "qvm-source";
    src = lib.cleanSource root;
    filter =
      path: type:
      let
        rel = lib.removePrefix "${toString root}/" (toString path);
      in
      !(builtins.elem (baseNameOf path) [
        "node_modules"
        "dist"
        ".qvm"
        "bench-results"
      ])
      && !(builtins.elem rel [
        "nix"
        "flake.nix"
        "flake.lock"
        "protocol/src/gen"
      ]);
  };
in
buildNpmPackage {
  pname = "qvm";
  # The root package.json has no version; scripts/build.mjs falls back to the same.
  version = packageJson.version or "0.1.0";
  inherit src nodejs;

  npmDeps = importNpmLock {
    npmRoot = src;
    packageLock = npmLock.fromLock (lib.importJSON ../package-lock.json);
  };
  npmConfigHook = importNpmLock.npmConfigHook;

  # protoc for `npm run gen` (ts-proto is an npm package); gcc comes with stdenv.
  nativeBuildInputs = [
    protobuf
    makeWrapper
  ];
  npmBuildScript = "build";

  # Not npm's own install: qvm is not an npm package but a tree whose programs find each other by
  # their place in it (cli/dist next to host-agent/dist, images/initramfs beside images/dist).
  dontNpmInstall = true;
  installPhase = ''
    runHook preInstall
    # npmConfigHook swapped in manifests that name store paths; keep the checkout's own.
    mv .package.json.orig package.json
    mv .package-lock.json.orig package-lock.json
    # Every program is a self-contained bundle: no node_modules at run time. The tests' bundles
    # (tests/dist) load playwright from node_modules and are not shipped.
    rm -rf node_modules */node_modules tests
    mkdir -p $out/lib/qvm $out/bin
    cp -r . $out/lib/qvm
    makeWrapper ${lib.getExe nodejs} $out/bin/qvm --add-flags $out/lib/qvm/cli/dist/qvm.js
    makeWrapper ${lib.getExe nodejs} $out/bin/qvmd --add-flags $out/lib/qvm/host-agent/dist/qvmd.js
    makeWrapper ${lib.getExe nodejs} $out/bin/qvm-images --add-flags $out/lib/qvm/images/dist/qvm-images.js
    runHook postInstall
  '';

  meta = {
    description = "Qubes-style compartmentalization for Linux: every security domain is a lightweight VM";
    mainProgram = "qvm";
    platforms = [ "x86_64-linux" ];
  };
}
