// Lower-level helpers for end-to-end tests: a domain booted straight from DomainVm (no qvmd) on
// temporary directories, and the process and file checks behind every leak check. The layered
// fixtures around a real qvmd (withDaemon -> withDomain -> withService) are in qvmd-fixtures.ts.
// Everything is real: QEMU, vhost-device-vsock, the guest agent.
import { mkdtempSync, rmSync, readdirSync, readFileSync, readlinkSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ImageStore, repoRoot } from "@qvm/images";
import { CloudHypervisorDriver, DomainVm, QemuDriver, type DomainVmOptions } from "@qvm/host-agent";
import { e2eVmm } from "./e2e-vmm.js";

/** Where the e2e global setup built the kernel bundle and the templates. */
export function imagesDir(): string {
  return process.env.QVM_IMAGES_DIR ?? path.join(repoRoot(), ".qvm/images");
}

export function imageStore(): ImageStore {
  return new ImageStore(imagesDir());
}

export interface TestDirs {
  base: string;
  runtimeDir: string;
  logDir: string;
  cleanup(): void;
}

export function testDirs(name: string): TestDirs {
  const base = mkdtempSync(path.join(os.tmpdir(), `qvm-e2e-${name}-`));
  return {
    base,
    runtimeDir: path.join(base, "run", name),
    logDir: path.join(base, "logs", name),
    // QVM_KEEP_TEST_DIRS=1 keeps logs of every test for diagnosis.
    cleanup: () => {
      if (!process.env.QVM_KEEP_TEST_DIRS) rmSync(base, { recursive: true, force: true });
    },
  };
}

const booted = new Set<DomainVm>();

/** Kills every domain a test booted and left running (a failed assertion must not leak VMs). */
export async function killLeftoverDomains(): Promise<void> {
  await Promise.all([...booted].map((d) => d.kill().catch(() => {})));
  booted.clear();
}

export async function bootDomain(name: string, dirs: TestDirs, extra: Partial<DomainVmOptions> = {}): Promise<DomainVm> {
  const store = imageStore();
  const dom = await DomainVm.start({
    name,
    driver: e2eVmm() === "cloud-hypervisor" ? new CloudHypervisorDriver() : new QemuDriver(),
    kernel: store.kernel(),
    rootImage: store.template("debian-12").root,
    runtimeDir: dirs.runtimeDir,
    logDir: dirs.logDir,
    memoryMiB: 768,
    ...extra,
  });
  booted.add(dom);
  void dom.vm.exited.then(() => booted.delete(dom));
  return dom;
}

/** Whether `pid` runs: not gone and not a zombie its parent has yet to reap. */
export function alive(pid: number): boolean {
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/**
 * Pids of every live process whose command line mentions `marker` (a test's private directory),
 * or whose root is below it: a jailed cloud-hypervisor sees its files at fixed paths (/vm/run…),
 * so only its jail's root (RUNTIME/jails/NAME) names the test.
 */
export function processesMentioning(marker: string): number[] {
  const pids: number[] = [];
  const rootOf = (pid: string) => {
    try {
      return readlinkSync(`/proc/${pid}/root`);
    } catch {
      return "";
    }
  };
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      if (alive(Number(entry)) && (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(marker) || rootOf(entry).startsWith(marker))) pids.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

/** Live descendants of `pid` (children, their children, ...), read from /proc. */
export function descendantsOf(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      // Field 4 of stat is the parent pid; the command name before it may hold spaces and ")".
      const ppid = Number(readFileSync(`/proc/${entry}/stat`, "utf8").replace(/^.*\) /s, "").split(" ")[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(entry)]);
    } catch {
      // exited meanwhile
    }
  }
  const found: number[] = [];
  const walk = (p: number) => {
    for (const c of children.get(p) ?? []) {
      found.push(c);
      walk(c);
    }
  };
  walk(pid);
  return found.filter(alive);
}

/** "pid 123 (qemu-system-x86)", for messages naming what leaked. */
export function describeProcess(pid: number): string {
  try {
    return `pid ${pid} (${readFileSync(`/proc/${pid}/comm`, "utf8").trim()})`;
  } catch {
    return `pid ${pid}`;
  }
}

/** SIGKILLs `pids` and waits until none of them runs. */
export async function killProcesses(pids: number[], ms = 10_000): Promise<void> {
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  await pollUntil(() => !pids.some(alive), ms);
}

/** Every Unix socket file below `dir`, as paths relative to it. */
export function socketsUnder(dir: string): string[] {
  const found: string[] = [];
  const walk = (d: string) => {
    let entries;
    try {
      entries = readdirSync(d, { withFileTypes: true });
    } catch {
      return; // gone meanwhile
    }
    for (const e of entries) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isSocket()) found.push(path.relative(dir, p));
    }
  };
  walk(dir);
  return found;
}

/** Polls `test` every 100 ms; true once it holds, false if it still does not after `ms`. */
export async function pollUntil(test: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!test()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
  return true;
}

/** Polls `test` until it holds; throws naming `what` after `ms`. */
export async function waitFor(what: string, test: () => boolean, ms = 15_000): Promise<void> {
  if (!(await pollUntil(test, ms))) throw new Error(`timed out waiting for ${what}`);
}

export function leftovers(dirs: TestDirs): { processes: number[]; runtimeDirExists: boolean } {
  return { processes: processesMentioning(dirs.base), runtimeDirExists: existsSync(dirs.runtimeDir) };
}

export async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

/** The last lines of a test domain's serial log, for an assertion's message when a guest misbehaves. */
export function consoleTail(dirs: TestDirs, lines = 40): string {
  try {
    const text = readFileSync(path.join(dirs.logDir, "console.log"), "latin1");
    return `last ${lines} lines of the serial log:\n${text.split(/\r?\n/).slice(-lines).join("\n")}`;
  } catch (err) {
    return `no serial log (${String(err)})`;
  }
}
