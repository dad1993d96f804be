// The VMM's jail: each domain's QEMU and vhost-device-vsock run under an unprivileged uid of their
// own, with no new privileges and no capabilities, in a private mount view that holds only that
// domain's files (its runtime and log directories, its disks and their backing files, the kernel
// bundle) plus the read-only system directories the binaries need. Anchors: Firecracker's
// jailer, libvirt's per-VM qemu user.
//
// The jail is util-linux (unshare, setpriv) and coreutils (chroot) around a short sh script, so
// the process keeps one pid from unshare to the VMM (each step execs the next): qvmd records and
// watches that pid, and a restarted qvmd re-attaches to it, as without the jail.

import { existsSync, realpathSync } from "node:fs";
import { QvmError } from "@qvm/protocol";
import { findExecutable, INSTALL_HINT } from "../host-tools.js";

/** One path the VMM may see: the host's `from` (default: the same path) shown at `path`. */
export interface JailBind {
  path: string;
  /**
   * The host file or directory shown at `path`, when it differs: a restored cloud-hypervisor VM
   * opens its snapshot's paths, which each restore maps to its own domain's files.
   */
  from?: string;
  /** ro: read-only; rw: read-write; dev: a device node (read-write, nothing else). */
  mode: "ro" | "rw" | "dev";
}

export interface JailSpec {
  uid: number;
  gid: number;
  /** Supplementary groups (the kvm group for /dev/kvm); empty for none. */
  groups: number[];
  /** An empty directory the view's root (a tmpfs) is mounted on, in the private mount namespace. */
  rootDir: string;
  /** cgroup.procs files the jailed process joins before it drops privileges. */
  cgroupProcs: string[];
  binds: JailBind[];
}

/** System paths every jail shows read-only: the binaries, their libraries and QEMU's data files. */
export const SYSTEM_BINDS: JailBind[] = [
  { path: "/usr", mode: "ro" },
  { path: "/etc/ld.so.cache", mode: "ro" },
  { path: "/dev/null", mode: "dev" },
  { path: "/dev/zero", mode: "dev" },
  { path: "/dev/urandom", mode: "dev" },
];

/**
 * On NixOS every program and library lives in /nix/store (there is no /usr/bin/unshare, and
 * /usr holds nothing): the store is shown read-only too, and the jail's own tools are found
 * through PATH and named by their real paths, which the view keeps.
 */
export const NIX_STORE = "/nix/store";

export interface JailTools {
  unshare: string;
  sh: string;
  /** Run inside the view: a path the view shows (under /usr or /nix/store). */
  setpriv: string;
}

/** The jail's tools on this host, or undefined when one is missing (no jail possible). */
export function jailTools(find: (name: string) => string | undefined = findExecutable): JailTools | undefined {
  const unshare = find("unshare");
  const sh = find("sh") ?? (existsSync("/bin/sh") ? "/bin/sh" : undefined);
  const setpriv = find("setpriv");
  if (!unshare || !sh || !setpriv) return undefined;
  return { unshare, sh, setpriv: realpathOr(setpriv) };
}

function realpathOr(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}

/**
 * The system binds of a host: /nix/store as well where the jail's own tools come from it (NixOS).
 * A Debian host that merely has a Nix store keeps it out of its VMMs' view.
 */
export function systemBinds(nixHost: boolean): JailBind[] {
  return nixHost ? [...SYSTEM_BINDS, { path: NIX_STORE, mode: "ro" }] : SYSTEM_BINDS;
}

function isNixHost(tools: JailTools): boolean {
  return tools.setpriv.startsWith(`${NIX_STORE}/`) && existsSync(NIX_STORE);
}

// Arguments: ROOT UID GID GROUPS(comma list or "-") CGROUP_PROCS(colon list or "-") SETPRIV NBINDS
// then NBINDS triples MODE FROM PATH (FROM: the host's path, PATH: where the view shows it), then the command. Every path is an argument, never part of the
// script's text, so no path can inject shell syntax.
const SCRIPT = String.raw`set -eu
root=$1 uid=$2 gid=$3 groups=$4 cgroups=$5 setpriv=$6 n=$7
shift 7
if [ "$cgroups" != - ]; then
  old_ifs=$IFS; IFS=:
  for f in $cgroups; do echo $$ > "$f"; done
  IFS=$old_ifs
fi
mount -t tmpfs -o mode=0755,nosuid,nodev,size=1m qvm-jail "$root"
mkdir -p "$root/proc" "$root/tmp" "$root/dev"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
i=0
while [ "$i" -lt "$n" ]; do
  mode=$1 from=$2 path=$3
  shift 3
  i=$((i + 1))
  if [ -d "$from" ]; then mkdir -p "$root$path"; else mkdir -p "$root$(dirname "$path")"; : > "$root$path"; fi
  mount --bind "$from" "$root$path"
  case $mode in
    ro) mount -o remount,bind,ro,nosuid,nodev "$root$path" ;;
    rw) mount -o remount,bind,nosuid,nodev,noexec "$root$path" ;;
    dev) mount -o remount,bind,nosuid,noexec "$root$path" ;;
  esac
done
for d in bin sbin lib lib64; do [ -e "$root/$d" ] || ln -s "usr/$d" "$root/$d"; done
mount -o remount,ro "$root"
if [ "$groups" = - ]; then g=--clear-groups; else g=--groups=$groups; fi
exec chroot "$root" "$setpriv" --reuid="$uid" --regid="$gid" "$g" --no-new-privs --inh-caps=-all --bounding-set=-all -- "$@"
`;

/**
 * The argv that runs `command` jailed. It must be started by root (it mounts and changes uid);
 * the command's own argv names paths as the host sees them: the view keeps them.
 */
export function jailArgv(spec: JailSpec, command: string[], tools: JailTools | null = jailTools() ?? null, system?: JailBind[]): string[] {
  if (!tools) throw new QvmError("MISSING_DEPENDENCY", `the VMM jail needs unshare, setpriv (util-linux) and sh on PATH: ${INSTALL_HINT}`);
  const binds = [...(system ?? systemBinds(isNixHost(tools))), ...spec.binds];
  return [
    tools.unshare, "--mount", "--propagation", "private", "--",
    tools.sh, "-c", SCRIPT, "qvm-jail",
    spec.rootDir,
    String(spec.uid),
    String(spec.gid),
    spec.groups.length ? spec.groups.join(",") : "-",
    spec.cgroupProcs.length ? spec.cgroupProcs.join(":") : "-",
    tools.setpriv,
    String(binds.length),
    ...binds.flatMap((b) => [b.mode, b.from ?? b.path, b.path]),
    ...command,
  ];
}
