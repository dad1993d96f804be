// Reading what a process costs the host, for the memory and scale figures. A VMM's guest RAM is
// the memfd memory backend, shared with vhost-device-vsock: it is counted from the memfd's own
// allocated blocks (what the host really holds, whoever maps it), never from a process's RSS,
// and kept apart from the process's own anonymous memory (QEMU itself, TCG's translation cache).
import { readdirSync, readFileSync, readlinkSync, statSync } from "node:fs";

const MIB = 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface ProcessMemory {
  /** Private anonymous memory (smaps_rollup Anonymous): the process's own heap, stacks, caches. */
  anonMiB: number;
  /** Page tables: kernel memory the process costs. */
  pteMiB: number;
  /** File-backed resident pages (binary, libraries): page cache shared with every other VMM. */
  fileMiB: number;
}

function kib(text: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text);
  if (!m) throw new Error(`no ${field} in /proc`);
  return Number(m[1]) / 1024;
}

export function processMemory(pid: number): ProcessMemory {
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return { anonMiB: kib(rollup, "Anonymous"), pteMiB: kib(status, "VmPTE"), fileMiB: kib(status, "RssFile") };
}

/** What the process alone adds to the host: its anonymous memory and page tables. */
export const ownMiB = (m: ProcessMemory) => m.anonMiB + m.pteMiB;

/** Guest RAM the host holds for a VMM: the blocks its memfd memory backend has allocated. */
export function guestRamMiB(vmmPid: number): number {
  for (const fd of readdirSync(`/proc/${vmmPid}/fd`)) {
    const file = `/proc/${vmmPid}/fd/${fd}`;
    let target: string;
    try {
      target = readlinkSync(file);
    } catch {
      continue; // closed meanwhile
    }
    if (target.startsWith("/memfd:memory-backend")) return (statSync(file).blocks * 512) / MIB;
  }
  throw new Error(`process ${vmmPid} has no memfd memory backend open`);
}

/** MemAvailable of the host, in MiB. */
export function hostAvailableMiB(): number {
  return kib(readFileSync("/proc/meminfo", "utf8"), "MemAvailable");
}

/** CPU time (user + system) a process has used, in seconds. */
export function cpuSeconds(pid: number): number {
  // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

/**
 * Waits until `read` stops changing (within `stableMiB` over `rounds` polls `stepMs` apart), or
 * `maxMs` passed: an idle guest's VMM grows for a while after the agent answers (systemd's late
 * units, the translation cache filling). Returns the last reading and how long it took.
 */
export async function settle(read: () => number, opts: { stepMs?: number; stableMiB?: number; rounds?: number; maxMs?: number } = {}): Promise<{ value: number; ms: number }> {
  const { stepMs = 2000, stableMiB = 1, rounds = 3, maxMs = 90_000 } = opts;
  const t0 = performance.now();
  let last = read();
  let calm = 0;
  while (calm < rounds && performance.now() - t0 < maxMs) {
    await sleep(stepMs);
    const now = read();
    calm = Math.abs(now - last) <= stableMiB ? calm + 1 : 0;
    last = now;
  }
  return { value: last, ms: performance.now() - t0 };
}
