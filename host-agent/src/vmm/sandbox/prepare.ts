// Prepares one domain's jail before its VMM starts: qvmd gives the domain's uid the files the VMM
// writes (runtime and log directories, writable disks), checks it can read the rest (read-only
// disks, backing files, the kernel), makes the cgroups, and returns how to wrap each VMM command.
// Everything the VMM needs exists with the right owner before it starts.
import { chownSync, mkdirSync, readdirSync, rmdirSync, statSync } from "node:fs";
import path from "node:path";
import { QvmError } from "@qvm/protocol";
import type { Accel, VmSpec } from "../driver.js";
import { makeDomainCgroups, removeDomainCgroups, type CgroupHost, type CgroupLimits } from "./cgroups.js";
import { jailArgv, jailTools, type JailBind } from "./jail.js";

/**
 * Under TCG the translation cache is bounded: QEMU 7.2 lets it grow to 1 GiB by default, and one
 * boot fills whatever it is given (it is never shrunk). Measured (bench scale section, one boot
 * and a fixed workload each, docs/memory.md): QEMU's anonymous memory 65 / 105 / 180 / 312 / 526
 * MiB at tb-size 32 / 64 / 128 / 256 / 512, with 76 / 16 / 4 / 1 / 0 full cache flushes. 32
 * doubles the boot's CPU time; 64 saves 75 MiB a domain but cost 4% and 12% more CPU over boot
 * and workload in two runs; 128 is within noise of 256 and 512. Under TCG the CPU, not memory, is what
 * runs out first (an idle domain takes ~6% of a core), so the cache stays at 128.
 */
export const TCG_TB_SIZE_MIB = 128;
/**
 * What the VMM processes take beyond guest RAM. Measured under TCG with tb-size 128, an idle 400
 * MiB domain (bench memory section): QEMU's anonymous memory and page tables 177-187 MiB (the
 * translation cache and QEMU itself; guest RAM is the shared memfd, counted separately),
 * vhost-device-vsock 0.5 MiB; after a busy minute QEMU held 174 MiB. The disks' page cache is
 * charged too and is reclaimed at the limit. KVM has no translation cache; its figure is an
 * estimate until it is measured where KVM runs.
 */
const VMM_OVERHEAD_MIB: Record<Accel, number> = { tcg: TCG_TB_SIZE_MIB + 128, kvm: 128 };
/** Head room over the measured overhead, so a busy VMM is not killed for a spike. */
const MEMORY_MARGIN_MIB = 128;
/** QEMU's threads (vCPUs, I/O, RCU, workers) and vhost-device-vsock's, with room. */
const VMM_PIDS_MAX = 256;

export function vmmLimits(spec: VmSpec, accel: Accel): CgroupLimits {
  return { memoryBytes: (spec.memoryMiB + VMM_OVERHEAD_MIB[accel] + MEMORY_MARGIN_MIB) * 1024 * 1024, pids: VMM_PIDS_MAX };
}

export interface PreparedJail {
  /** Wraps a VMM command (binary first) so it runs jailed. */
  wrap(command: string[]): string[];
  cgroupDirs: string[];
  rootDir: string;
}

/** The jail's root mount point: RUNTIME/jails/NAME, beside (not inside) RUNTIME/domains/NAME. */
export function jailRootOf(runtimeDir: string, name: string): string {
  return path.join(path.dirname(path.dirname(runtimeDir)), "jails", name);
}

function chownTree(dir: string, uid: number, gid: number): void {
  chownSync(dir, uid, gid);
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) chownTree(p, uid, gid);
    else chownSync(p, uid, gid);
  }
}

function checkReadable(file: string, uid: number, gid: number, what: string): void {
  const st = statSync(file);
  const readable = st.uid === uid ? st.mode & 0o400 : st.gid === gid ? st.mode & 0o040 : st.mode & 0o004;
  if (!readable) throw new QvmError("FAILED_PRECONDITION", `${what} ${file} is not readable by the domain's VMM user ${uid}; make it world-readable (chmod o+r)`);
}

/**
 * `devices`: the device nodes of what is passed through (VFIO's container and group nodes,
 * already given to the VMM's uid), shown in the view as /dev/kvm is.
 * `view`: host path → the path the VMM sees it at, for the domain's own files (runtime and log
 * directories, kernel, disks); unlisted paths are seen where they are (cloud-hypervisor/view.ts).
 */
export function prepareJail(spec: VmSpec, accel: Accel, cgroups: CgroupHost | undefined, devices: readonly JailBind[] = [], view?: ReadonlyMap<string, string>): PreparedJail {
  const user = spec.user!;
  const { uid, gid } = user;
  mkdirSync(spec.runtimeDir, { recursive: true, mode: 0o700 });
  mkdirSync(spec.logDir, { recursive: true, mode: 0o700 });
  chownTree(spec.runtimeDir, uid, gid);
  chownTree(spec.logDir, uid, gid);
  const binds: JailBind[] = [
    { path: spec.runtimeDir, mode: "rw" },
    { path: spec.logDir, mode: "rw" },
    { path: spec.kernel.image, mode: "ro" },
    { path: spec.kernel.initrd, mode: "ro" },
  ];
  checkReadable(spec.kernel.image, uid, gid, "the kernel");
  checkReadable(spec.kernel.initrd, uid, gid, "the initramfs");
  const seen = new Set(binds.map((b) => b.path));
  for (const d of spec.disks) {
    if (d.readonly) checkReadable(d.path, uid, gid, `disk ${d.serial}`);
    else chownSync(d.path, uid, gid);
    for (const b of d.backingFiles ?? []) {
      checkReadable(b, uid, gid, `the backing file of disk ${d.serial}`);
      if (!seen.has(b)) binds.push({ path: b, mode: "ro" });
      seen.add(b);
    }
    if (!seen.has(d.path)) binds.push({ path: d.path, mode: d.readonly ? "ro" : "rw" });
    seen.add(d.path);
  }
  const groups: number[] = [];
  if (accel === "kvm") {
    binds.push({ path: "/dev/kvm", mode: "dev" });
    groups.push(statSync("/dev/kvm").gid);
  }
  binds.push(...devices);
  const rootDir = jailRootOf(spec.runtimeDir, spec.name);
  mkdirSync(rootDir, { recursive: true, mode: 0o700 });
  const cg = cgroups ? makeDomainCgroups(cgroups, spec.name, vmmLimits(spec, accel)) : { dirs: [], procs: [] };
  const shown = view ? binds.map((b) => (view.has(b.path) ? { ...b, from: b.path, path: view.get(b.path)! } : b)) : binds;
  return {
    wrap: (command) => jailArgv({ uid, gid, groups, rootDir, cgroupProcs: cg.procs, binds: shown }, command),
    cgroupDirs: cg.dirs,
    rootDir,
  };
}

/** After the VMM is gone: its cgroups and the jail's mount point. */
export function releaseJail(rootDir: string, cgroupDirs: readonly string[]): void {
  removeDomainCgroups(cgroupDirs);
  try {
    rmdirSync(rootDir);
  } catch {
    // already gone
  }
}

/** True when this process may set up jails (it mounts and changes uid). */
export function canJail(): boolean {
  return process.getuid?.() === 0 && jailTools() !== undefined;
}
