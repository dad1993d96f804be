// What qvmd lets run at once: a start is admitted only while the running domains stay within
// the limits (how many, how much guest memory) and the data disk keeps room for every running
// domain's overlays to grow to their full size plus a reserve. Disposables have caps of their own
// (in total and per calling domain), and by default a disposable cannot make another one, so a
// domain cannot multiply itself through `@dispvm` calls. Each refusal is RESOURCE_EXHAUSTED (or
// PERMISSION_DENIED) naming the numbers and the qvmd flag that changes the limit.
import os from "node:os";
import { QvmError } from "@qvm/protocol";
import { PROPERTIES } from "../model/properties.js";

/** The memory a domain gets when nothing sets it (the `memory` property's default). */
const DEFAULT_MEMORY_MIB = Number(PROPERTIES.memory!.default);

export interface ResourceLimits {
  /** Domains running (or starting) at once. `qvmd --max-running N`. */
  maxRunning: number;
  /** Sum of the running domains' `memory`, in MiB. `qvmd --max-guest-memory MIB`. */
  maxGuestMemoryMiB: number;
  /** Free space kept on the data directory's filesystem beyond what overlays may still take. `qvmd --disk-reserve MIB`. */
  diskReserveMiB: number;
  /** Disposables made for calls (`qvm run --dispvm`, qrexec `@dispvm`) alive at once. `qvmd --max-dispvms N`. */
  maxDispvms: number;
  /** The same, per calling domain (dom0 for the admin). `qvmd --max-dispvms-per-source N`. */
  maxDispvmsPerSource: number;
  /** Whether a DispVM may make disposables (`@dispvm` calls from a disposable). `qvmd --allow-nested-dispvms`. */
  nestedDispvms: boolean;
}

const MIB = 1024 * 1024;

/**
 * What one domain costs the host beyond its guest RAM, in MiB. Measured under TCG (the bench's
 * memory and scale sections, docs/memory.md): an idle 400 MiB domain's QEMU holds 177-187 MiB of
 * anonymous memory and page tables (128 of them the translation cache, tb-size 128), its
 * vhost-device-vsock 0.5 MiB, and qvmd's own memory did not measurably grow with 8 domains. KVM
 * has no translation cache, so this bounds it from above.
 */
export const VMM_OVERHEAD_MIB = 192;
/** Host memory kept for everything but domains (qvmd, the desktop, page cache): the bench's margin. */
export const HOST_RESERVE_MIB = 2048;

/**
 * Defaults set from what the host holds. Running domains: as many domains of the default size as
 * fit in the host's RAM less the reserve, each counted at its full guest RAM plus the VMM's
 * overhead (a guest may touch all its RAM; free page reporting only returns what it frees): 37
 * on a 24 GiB host, where 8 idle ones were measured at 392 MiB each and 577 MiB at worst. Guest
 * memory: what is left for guests when that many VMMs take their overhead, so a host full of
 * domains of any size still keeps the reserve. Disk reserve: 2 GiB, so the store, logs and a
 * template's commit still have room when every overlay is full. Disposables: 8 at once, 4 per
 * caller (the default policy lets any domain call `@dispvm`).
 */
export function defaultLimits(hostMemoryBytes: number = os.totalmem()): ResourceLimits {
  const hostMiB = Math.floor(hostMemoryBytes / MIB);
  // A small host keeps a quarter for itself rather than all of it.
  const usable = hostMiB - Math.min(HOST_RESERVE_MIB, Math.floor(hostMiB / 4));
  const maxRunning = Math.max(1, Math.floor(usable / (DEFAULT_MEMORY_MIB + VMM_OVERHEAD_MIB)));
  return {
    maxRunning,
    maxGuestMemoryMiB: Math.max(128, usable - maxRunning * VMM_OVERHEAD_MIB),
    diskReserveMiB: 2048,
    maxDispvms: 8,
    maxDispvmsPerSource: 4,
    nestedDispvms: false,
  };
}

/** What a start would add, and what already runs (or is being started). */
export interface AdmissionRequest {
  name: string;
  memoryMiB: number;
  /** How far the new domain's overlays may grow, in bytes. */
  growthBytes: number;
}

export interface RunningLoad {
  names: string[];
  memoryMiB: number;
  /** How far the running domains' overlays may still grow, in bytes. */
  growthBytes: number;
  /** Free bytes on the data directory's filesystem. */
  freeBytes: number;
}

const mib = (bytes: number) => Math.ceil(bytes / MIB);

/** Throws RESOURCE_EXHAUSTED when starting `req` on top of `load` would break a limit. */
export function checkAdmission(limits: ResourceLimits, req: AdmissionRequest, load: RunningLoad): void {
  const n = load.names.length;
  if (n + 1 > limits.maxRunning) {
    throw new QvmError(
      "RESOURCE_EXHAUSTED",
      `cannot start ${req.name}: ${n} domains already run or are starting (${load.names.join(", ")}), the limit is ${limits.maxRunning} (qvmd --max-running N); stop one first`,
    );
  }
  if (load.memoryMiB + req.memoryMiB > limits.maxGuestMemoryMiB) {
    throw new QvmError(
      "RESOURCE_EXHAUSTED",
      `cannot start ${req.name}: it needs ${req.memoryMiB} MiB of guest memory and running domains have ${load.memoryMiB} MiB of the ${limits.maxGuestMemoryMiB} MiB allowed (qvmd --max-guest-memory MIB); stop a domain or lower ${req.name}'s memory`,
    );
  }
  const need = load.growthBytes + req.growthBytes + limits.diskReserveMiB * MIB;
  if (load.freeBytes < need) {
    throw new QvmError(
      "RESOURCE_EXHAUSTED",
      `cannot start ${req.name}: the data directory has ${mib(load.freeBytes)} MiB free, but running domains' overlays may still grow by ${mib(load.growthBytes)} MiB, ` +
        `${req.name}'s by ${mib(req.growthBytes)} MiB, and ${limits.diskReserveMiB} MiB are kept in reserve (qvmd --disk-reserve MIB): ` +
        `${mib(need - load.freeBytes)} MiB short; free space on the disk or stop a domain`,
    );
  }
}

/** Refuses a new disposable for `source` (a domain, or dom0) when a cap is reached or a disposable asks. */
export function checkDispvmAdmission(limits: ResourceLimits, source: string, sourceIsDispvm: boolean, alive: ReadonlyMap<string, string>): void {
  checkDispvmCaller(limits, source, sourceIsDispvm, alive);
  checkDispvmTotal(limits, alive);
}

/**
 * The caller's part of the admission: no disposable makes one (unless allowed), and each caller
 * stays within its own cap. A preloaded disposable handed out passes only this part: it was
 * counted in the total when it was preloaded.
 */
export function checkDispvmCaller(limits: ResourceLimits, source: string, sourceIsDispvm: boolean, alive: ReadonlyMap<string, string>): void {
  if (sourceIsDispvm && !limits.nestedDispvms) {
    throw new QvmError("PERMISSION_DENIED", `${source} is a disposable, and disposables may not make disposables (qvmd --allow-nested-dispvms allows it)`);
  }
  const mine = [...alive.values()].filter((s) => s === source).length;
  if (mine >= limits.maxDispvmsPerSource) {
    throw new QvmError("RESOURCE_EXHAUSTED", `${source} already has ${mine} disposables, the limit per caller is ${limits.maxDispvmsPerSource} (qvmd --max-dispvms-per-source N)`);
  }
}

/** All disposables alive, preloaded ones included, stay within the total cap. */
export function checkDispvmTotal(limits: ResourceLimits, alive: ReadonlyMap<string, string>): void {
  if (alive.size >= limits.maxDispvms) {
    throw new QvmError("RESOURCE_EXHAUSTED", `${alive.size} disposables already run, the limit is ${limits.maxDispvms} (qvmd --max-dispvms N)`);
  }
}
