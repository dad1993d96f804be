// Layered fixtures for end-to-end tests: temporary data and runtime directories -> a booted
// domain -> leak checks. Everything is real: QEMU, vhost-device-vsock, the guest agent.
import { mkdtempSync, rmSync, readdirSync, readFileSync, existsSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { ImageStore, repoRoot } from "@qvm/images";
import { DomainVm, QemuDriver, type DomainVmOptions } from "@qvm/host-agent";

export function imageStore(): ImageStore {
  return new ImageStore(process.env.QVM_IMAGES_DIR ?? path.join(repoRoot(), ".qvm/images"));
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
    driver: new QemuDriver(),
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

/** Pids of every process whose command line mentions `marker` (a test's private directory). */
export function processesMentioning(marker: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      if (/\) Z /.test(stat)) continue;
      if (readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(marker)) pids.push(Number(entry));
    } catch {
      // exited meanwhile
    }
  }
  return pids;
}

export function leftovers(dirs: TestDirs): { processes: number[]; runtimeDirExists: boolean } {
  return { processes: processesMentioning(dirs.base), runtimeDirExists: existsSync(dirs.runtimeDir) };
}

export async function collect(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
