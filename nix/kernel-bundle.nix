# qvm's kernel bundle, built by Nix from a nixpkgs kernel instead of Debian's: the entry
# images/src/kernel.ts publishes into the image store, file for file:
#
#   vmlinuz        the kernel's bzImage
#   vmlinux        the uncompressed ELF kernel, only when it has a PVH entry point (see below)
#   initrd.img     gzip'd newc cpio: a static busybox, images/initramfs/init as /init, the modules
#                  of INITRAMFS_MODULES (images/src/kernel.ts) decompressed (busybox's insmod
#                  reads no .ko.xz/.ko.zst) in dependency order, and lib/modules/load-order
#                  listing them as paths under /lib/modules, as the init reads it
#   modules.img    ext4 (label qvm-modules) holding the kernel's lib/modules/<release> with its
#                  depmod index; the initramfs mounts it read-only at the guest's /lib/modules
#   manifest.json  images/src/store.ts's kernelManifestSchema: kind, hash, kernelRelease,
#                  packageVersion, builtAt, files { vmlinuz, vmlinux?, initrd, modules }
#
# The store finds a bundle as DATA/images/kernels/<hash>/manifest.json through the link
# DATA/images/kernels/current -> <hash> (store.ts: nothing else is read or required; the
# directory's name is not compared with the manifest's hash, but they are kept equal here).
# `hash` below is 24 hex digits of the sha256 of this bundle's inputs, as inputsHash() makes
# qvm's own (a different input set: the nixpkgs kernel's store path instead of Debian's package
# version), so two different bundles never share a name. nix/live-iso.nix links the bundle into
# the store at boot.
#
# The kernel: any nixpkgs kernel with CONFIG_MODULES. Each module of INITRAMFS_MODULES must be
# either built in or a module; `modprobe --show-depends` against the depmod'ed tree resolves
# both (and aliases), and the build fails naming one it cannot resolve, except crc32c_generic,
# which newer kernels no longer have under that name (ext4's checksums then come from whatever
# the kernel's crc32c is; the Debian builder would refuse such a kernel, this one only warns).
# modprobe also brings each module's softdeps (ext4's crc32c, e.g. crc32c-intel) and may order
# independent dependencies differently from images/src/modules.ts; both orders satisfy the
# dependencies. Tried here with Debian's 6.1 kernel (its bzImage, vmlinux and modules tree, from a
# qvm-images bundle) in place of a nixpkgs kernel: the initramfs got the same modules as
# kernel.ts's plus crc32c-intel, the stripped vmlinux kept its PVH note (vmlinux.ts's
# hasPvhEntry), and QEMU microvm (TCG, qvm's machine options and kernel arguments) booted the
# debian-12 template with that initramfs and modules.img to systemd, modules volume mounted and
# systemd-modules-load.service finished.
# nixpkgs' default kernels build virtio_{mmio,pci,blk,net,console} and vmw_vsock_virtio_transport
# as modules (believed from nixpkgs' common-config, NOT checked here: nothing can be built here).
#
# vmlinux: nixpkgs keeps the unstripped ELF in the kernel's dev output ($dev/vmlinux) and the
# .config under $dev/lib/modules/<release>/build. It is copied (debug sections stripped, ELF notes
# kept) only when the config has CONFIG_PVH=y, the entry QEMU's microvm boots an ELF kernel by
# (images/src/vmlinux.ts reads XEN_ELFNOTE_PHYS32_ENTRY; here the config is trusted instead of
# reading the note). Without it domains boot vmlinuz, as with a Debian kernel lacking PVH.
#
# UNVERIFIED (no nixpkgs on the machines this was written on): the build itself; that the
# modules resolve on the kernel nixpkgs ships today; the guest booting with it. The manifest's
# shape is checked against store.ts's parser by scripts/nix-check.sh (nix/tests/exports.nix).
{
  lib,
  runCommand,
  linuxPackages,
  pkgsStatic,
  kmod,
  e2fsprogs,
  cpio,
  gzip,
  xz,
  zstd,
  binutils-unwrapped,
  kernel ? linuxPackages.kernel,
  # The kernel image's name in the kernel's output on x86-64 (stdenv's linux-kernel.target).
  kernelFile ? "bzImage",
}:
let
  # images/src/kernel.ts INITRAMFS_MODULES, in its order (nix/tests checks they are still equal).
  initramfsModules = [
    "virtio_mmio"
    "virtio_pci"
    "virtio_blk"
    "virtio_net"
    "virtio_console"
    "vmw_vsock_virtio_transport"
    "crc32c_generic"
    "ext4"
  ];
  # Modules whose absence only warns (see the header).
  optionalModules = [ "crc32c_generic" ];

  busybox = pkgsStatic.busybox;
  init = ../images/initramfs/init;
  release = kernel.modDirVersion;

  # What the bundle is made of, hashed into its name as kernel.ts hashes kernelInputs().
  # Store paths without their string context: only their names are hashed.
  inputs = {
    format = "nix-1";
    kernel = builtins.unsafeDiscardStringContext (toString kernel);
    busybox = builtins.unsafeDiscardStringContext (toString busybox);
    init = builtins.hashFile "sha256" init;
    modules = initramfsModules;
  };
  hash = builtins.substring 0 24 (builtins.hashString "sha256" (builtins.toJSON inputs));

  # Nix builds at SOURCE_DATE_EPOCH 1980-01-01 (as the template archive's builtAt).
  manifest = {
    kind = "kernel";
    inherit hash;
    kernelRelease = release;
    packageVersion = "nixpkgs linux ${kernel.version}";
    builtAt = "1980-01-01T00:00:00Z";
    files = {
      vmlinuz = "vmlinuz";
      initrd = "initrd.img";
      modules = "modules.img";
    };
  };
  manifestWithVmlinux = manifest // {
    files = manifest.files // {
      vmlinux = "vmlinux";
    };
  };
in
runCommand "qvm-kernel-bundle-${release}"
  {
    nativeBuildInputs = [
      kmod
      e2fsprogs
      cpio
      gzip
      xz
      zstd
      binutils-unwrapped
    ];
    inherit release kernelFile;
    kernelOut = kernel;
    kernelDev = kernel.dev or "";
    busyboxBin = "${busybox}/bin/busybox";
    initScript = init;
    modules = initramfsModules;
    optional = optionalModules;
    manifestJson = builtins.toJSON manifest;
    manifestVmlinuxJson = builtins.toJSON manifestWithVmlinux;
    passthru = {
      inherit
        hash
        manifest
        manifestWithVmlinux
        inputs
        initramfsModules
        kernel
        busybox
        ;
    };
  }
  ''
    set -euo pipefail
    work=$(mktemp -d)
    mkdir -p "$out"

    # The kernel's modules in a writable tree with depmod's index (modprobe and the guest's kmod
    # need modules.dep; depmod writes it whether or not the kernel's install did).
    tree=$work/tree
    mkdir -p "$tree/lib/modules"
    cp -r --no-preserve=mode,ownership "$kernelOut/lib/modules/$release" "$tree/lib/modules/$release"
    depmod -b "$tree" "$release"

    install -m 0644 "$kernelOut/$kernelFile" "$out/vmlinuz"

    config=$kernelDev/lib/modules/$release/build/.config
    hasVmlinux=
    if [ -n "$kernelDev" ] && [ -e "$kernelDev/vmlinux" ] && [ -e "$config" ] && grep -qx 'CONFIG_PVH=y' "$config"; then
      strip --strip-debug -o "$out/vmlinux" "$kernelDev/vmlinux"
      hasVmlinux=1
    else
      echo "the kernel has no PVH entry point (or no dev output): domains boot the compressed vmlinuz" >&2
    fi

    # The initramfs, laid out as kernel.ts's buildInitramfs lays it out.
    stage=$work/initramfs
    mkdir -p "$stage"/{bin,lib/modules,dev,proc,sys,newroot}
    install -m 0755 "$busyboxBin" "$stage/bin/busybox"
    install -m 0755 "$initScript" "$stage/init"
    modroot=$tree/lib/modules/$release
    : >"$work/order"
    for m in $modules; do
      if ! deps=$(modprobe -d "$tree" -S "$release" --show-depends "$m" 2>"$work/err"); then
        case " $optional " in
          *" $m "*) echo "warning: kernel $release has no module $m (optional): $(cat "$work/err")" >&2; continue ;;
        esac
        echo "kernel $release lacks module $m (neither built in nor a module): $(cat "$work/err")" >&2
        exit 1
      fi
      # "insmod PATH [ARGS]" per module to load, dependencies first; "builtin NAME" for none.
      printf '%s\n' "$deps" | while read -r verb path _; do
        [ "$verb" = insmod ] || continue
        rel=''${path#"$modroot"/}
        grep -qxF "$rel" "$work/order" || printf '%s\n' "$rel" >>"$work/order"
      done
    done
    : >"$stage/lib/modules/load-order"
    while read -r rel; do
      dest=$stage/lib/modules/$rel
      mkdir -p "$(dirname "$dest")"
      case $rel in
        *.ko.xz) xz -dc "$modroot/$rel" >"''${dest%.xz}"; rel=''${rel%.xz} ;;
        *.ko.zst) zstd -dcq "$modroot/$rel" >"''${dest%.zst}"; rel=''${rel%.zst} ;;
        *.ko.gz) gzip -dc "$modroot/$rel" >"''${dest%.gz}"; rel=''${rel%.gz} ;;
        *) cp "$modroot/$rel" "$dest" ;;
      esac
      printf '%s\n' "$rel" >>"$stage/lib/modules/load-order"
    done <"$work/order"
    epoch=''${SOURCE_DATE_EPOCH:-315532800}
    find "$stage" "$tree" -exec touch -h -d "@$epoch" {} +
    (cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet --reproducible -R 0:0 | gzip -6 -n >"$out/initrd.img")

    # The modules volume: kernel.ts's size rule (a quarter more than the tree, plus 32 MiB). A
    # fixed UUID and hash seed and the build's time, meant to make the image reproducible (it is
    # not: two runs of this script with Debian's e2fsprogs 1.47 gave different images, while the
    # initramfs came out byte-identical; harmless, the store names bundles by inputs). The
    # files keep the build user's uid (mke2fs -d copies it; only the root directory is made
    # 0:0); the volume is mounted read-only in the guest, so that uid can change nothing.
    bytes=$(du -sb "$tree/lib/modules" | cut -f 1)
    size=$(( bytes * 5 / 4 / 1048576 + 32 ))
    E2FSPROGS_FAKE_TIME=$epoch mke2fs -q -t ext4 -L qvm-modules -m 0 \
      -U 6d6f6475-6c65-7300-0000-716d766d6f64 -E root_owner=0:0,hash_seed=6d6f6475-6c65-7300-0000-716d766d6f64 \
      -d "$tree/lib/modules" "$out/modules.img" "''${size}M"

    if [ -n "$hasVmlinux" ]; then
      printf '%s\n' "$manifestVmlinuxJson" >"$out/manifest.json"
    else
      printf '%s\n' "$manifestJson" >"$out/manifest.json"
    fi
    rm -rf "$work"
  ''
