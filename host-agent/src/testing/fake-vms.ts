// Fakes behind the core's seams, for unit tests of the core and the runner without VMs: a VM
// factory whose VMs run "programs" that echo, and the volume store and image store as far as
// starting needs them. Nothing here touches QEMU, disks or the network.
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { PassThrough } from "node:stream";
import type { ImageStore } from "@qvm/images";
import { QvmError, type agentV1 } from "@qvm/protocol";
import type { ExecOptions } from "../agent/agent-client.js";
import type { ExecProcess } from "../agent/exec-process.js";
import { DomainAttachments } from "../domain/attachments.js";
import type { BootPlan } from "../domain/boot-plan.js";
import type { GuestAgent, RunningVm, VmFactory } from "../domain/vm-factory.js";
import type { VolumeStore } from "../storage/volumes.js";
import { systemClock, type Clock } from "../base/clock.js";
import type { VmExit, VmInfo } from "../vmm/driver.js";

/** A program in a fake guest: prints its argv joined by spaces and exits 0, or `exitCode`. */
function fakeProcess(opts: ExecOptions, exitCode: number): ExecProcess {
  const stdin = new PassThrough();
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  stdin.resume();
  const argv = Array.isArray(opts.command) ? opts.command : ["sh", "-c", opts.command];
  stdout.end(`${argv.join(" ")}\n`);
  stderr.end();
  const proc = {
    stdin,
    stdout,
    stderr,
    started: Promise.resolve({ execId: 1, pid: 4242 }),
    exit: Promise.resolve({ code: exitCode, signal: null }),
    id: 1,
    resize: () => {},
    cancel: () => {},
    /** What the host asked for, for assertions. */
    options: opts,
  };
  return proc as unknown as ExecProcess;
}

/** How a fake guest behaves when asked to power off. */
export type FakeGuest = "powers-off" | "hangs";

export class FakeVm implements RunningVm {
  readonly exited: Promise<VmExit>;
  readonly attachments: DomainAttachments;
  readonly execs: ExecOptions[] = [];
  /** Every network configuration sent to this VM's agent, oldest first. */
  readonly networks: agentV1.SetNetworkRequest[] = [];
  exitCode = 0;
  guest: FakeGuest = "powers-off";
  paused = false;
  detached = false;
  gone = false;
  private resolve!: (e: VmExit) => void;
  readonly agent: GuestAgent = {
    exec: (opts) => {
      this.execs.push(opts);
      return fakeProcess(opts, this.exitCode);
    },
    signal: async () => {},
    setNetwork: async (config) => {
      this.networks.push(config);
      return { failures: {} };
    },
    // Windows: a table the test can end windows in (`endWindow`), watched like the real agent's.
    openWindow: async (req) => {
      const windowId = this.nextWindow++;
      this.windows.set(windowId, { windowId, vsockPort: 20000 + windowId, width: req.width, height: req.height, alive: true, argv: req.argv, user: req.user });
      this.notifyWindows();
      return { windowId, vsockPort: 20000 + windowId };
    },
    resizeWindow: async (req) => {
      const w = this.windows.get(req.windowId);
      if (!w) throw new QvmError("NOT_FOUND", `no window ${req.windowId}`);
      Object.assign(w, { width: req.width, height: req.height });
      this.notifyWindows();
    },
    closeWindow: async (id) => {
      this.windows.delete(id);
      this.notifyWindows();
    },
    listWindows: async () => [...this.windows.values()].map(({ windowId, vsockPort, width, height, alive }) => ({ windowId, vsockPort, width, height, alive })),
    watchWindows: (onList) => {
      const watcher = () => onList([...this.windows.values()].map(({ windowId, vsockPort, width, height, alive }) => ({ windowId, vsockPort, width, height, alive })));
      this.windowWatchers.add(watcher);
      watcher();
      return () => this.windowWatchers.delete(watcher);
    },
    // Each window's clipboard, as the real agent's wl-paste/wl-copy would see it.
    getWindowClipboard: async (id, maxBytes) => {
      if (!this.windows.get(id)?.alive) throw new QvmError("NOT_FOUND", `no window ${id}`);
      const data = this.clipboards.get(id) ?? Buffer.alloc(0);
      return data.length > maxBytes ? { data: Buffer.alloc(0), oversized: true } : { data, oversized: false };
    },
    setWindowClipboard: async (id, data) => {
      if (!this.windows.get(id)?.alive) throw new QvmError("NOT_FOUND", `no window ${id}`);
      this.clipboards.set(id, Buffer.from(data));
    },
  };
  /** The fake guest's window clipboards, by window id. */
  readonly clipboards = new Map<number, Buffer>();
  /** The fake guest's windows, with what it was asked to run. */
  readonly windows = new Map<number, { windowId: number; vsockPort: number; width: number; height: number; alive: boolean; argv: string[]; user: string }>();
  private nextWindow = 1;
  private readonly windowWatchers = new Set<() => void>();

  /** The program in window `id` ended by itself. */
  endWindow(id: number): void {
    const w = this.windows.get(id);
    if (w) w.alive = false;
    this.notifyWindows();
  }

  private notifyWindows(): void {
    for (const w of this.windowWatchers) w();
  }

  constructor(
    readonly name: string,
    readonly pid: number,
    private readonly clock: Clock = systemClock,
    /** Where its hybrid vsock socket would be: "" for a path that does not exist. */
    private readonly vsockDir = "",
  ) {
    this.attachments = new DomainAttachments(name, () => {});
    this.exited = new Promise((r) => (this.resolve = r));
    void this.exited.then(() => this.attachments.releaseAll());
  }

  /** The VMM dies or the guest powers off. */
  end(reason: string, clean: boolean): void {
    if (this.gone) return;
    this.gone = true;
    this.resolve({ reason, clean });
  }

  async info(): Promise<VmInfo> {
    return { vmm: "fake", accel: "tcg", state: this.gone ? "stopped" : this.paused ? "paused" : "running", pid: this.pid, vsockPath: this.vsockDir ? path.join(this.vsockDir, `${this.name}.vsock`) : `/nonexistent/${this.name}.vsock`, consoleSocket: "", consoleLogPath: "" };
  }
  async resizeDisk(): Promise<void> {}
  /** As DomainVm: a guest that hangs is killed after timeoutMs (on the clock) when `kill`, else it still runs. */
  async shutdown(timeoutMs: number, { kill }: { kill: boolean }): Promise<VmExit> {
    if (this.guest === "powers-off") this.end("the guest powered off", true);
    else {
      await this.clock.sleep(timeoutMs);
      if (!kill) throw new QvmError("FAILED_PRECONDITION", `${this.name} did not power off within ${timeoutMs / 1000} s; it still runs`);
      this.end("killed on request", true);
    }
    return this.exited;
  }
  async kill(): Promise<VmExit> {
    this.end("killed on request", true);
    return this.exited;
  }
  async pause(): Promise<void> {
    this.paused = true;
  }
  async resume(): Promise<void> {
    this.paused = false;
  }
  async detach(): Promise<void> {
    this.detached = true;
    await this.attachments.releaseQvmdHeld();
  }
}

export class FakeVmFactory implements VmFactory {
  readonly vms = new Map<string, FakeVm>();
  /** Left running by an earlier qvmd: what reattach finds. */
  readonly leftRunning = new Map<string, FakeVm>();
  readonly started: string[] = [];
  failNext = "";
  /** While set, starts wait for it: a test can look at the Transient state. */
  gate: Promise<void> | undefined;
  /** Set: VMs' vsock sockets live here, so the qrexec listener can be reached (`<dir>/NAME.vsock_50`). */
  vsockDir = "";
  private pid = 1000;

  constructor(private readonly clock: Clock = systemClock) {}

  async start(plan: BootPlan): Promise<RunningVm> {
    this.started.push(plan.name);
    // As a VMM does: the serial console's log in the domain's log directory.
    mkdirSync(plan.logDir, { recursive: true });
    writeFileSync(path.join(plan.logDir, "console.log"), "");
    if (this.gate) await this.gate;
    if (this.failNext) {
      const msg = this.failNext;
      this.failNext = "";
      throw new QvmError("AGENT_TIMEOUT", msg);
    }
    const vm = new FakeVm(plan.name, ++this.pid, this.clock, this.vsockDir);
    this.vms.set(plan.name, vm);
    return vm;
  }

  async reattach(name: string): Promise<RunningVm | undefined> {
    const vm = this.leftRunning.get(name);
    if (vm) this.vms.set(name, vm);
    return vm;
  }
}

/** The data disk as fake volumes report it; tests change it to drive the start admission. */
export interface FakeDisk {
  freeBytes: number;
  /** How far each start's overlays may grow, and how far a running domain's still may. */
  overlayBytes: number;
}

/**
 * The volume store as the core uses it, without qemu-img: a domain's volumes are empty files in
 * `dir/NAME/` (the boot plan checks that a template's root exists), and starts prepare no disks.
 * A start leaves a marker in `dir/.volatile/NAME` until the domain's volatile overlays are discarded.
 */
export function fakeVolumes(dir: string, disk: FakeDisk = { freeBytes: 1e15, overlayBytes: 0 }): VolumeStore {
  const volatile = (name: string) => path.join(dir, ".volatile", name);
  const files = (name: string) => ({ root: path.join(dir, name, "root.img"), private: path.join(dir, name, "private.qcow2"), rootDirty: path.join(dir, name, "root-dirty.qcow2") });
  const make = (name: string) => {
    mkdirSync(path.join(dir, name), { recursive: true });
    for (const f of [files(name).root, files(name).private]) writeFileSync(f, "");
  };
  const fake: Partial<Record<keyof VolumeStore, unknown>> = {
    create: async (name: string) => make(name),
    clone: async (_src: string, name: string) => make(name),
    remove: (name: string) => {
      rmSync(path.join(dir, name), { recursive: true, force: true });
      rmSync(volatile(name), { recursive: true, force: true });
    },
    exists: (name: string) => existsSync(path.join(dir, name)),
    files,
    sweepOrphans: () => ({ removed: [], kept: [] }),
    listOrphans: () => [],
    prepareStart: async (name: string) => {
      mkdirSync(volatile(name), { recursive: true });
      return [];
    },
    discardVolatile: (name: string) => rmSync(volatile(name), { recursive: true, force: true }),
    volatileNames: () => (existsSync(path.join(dir, ".volatile")) ? readdirSync(path.join(dir, ".volatile")) : []),
    volatileDir: volatile,
    freeBytes: () => disk.freeBytes,
    overlayGrowth: async () => disk.overlayBytes,
    plannedGrowth: async () => disk.overlayBytes,
    commitRoot: async () => false,
    checkGrow: async () => {},
    growFlag: (name: string) => `/nonexistent/${name}.grow`,
  };
  return fake as unknown as VolumeStore;
}

export function fakeImages(): ImageStore {
  const fake = {
    root: "/nonexistent/images",
    kernel: () => ({ vmlinuz: "/fake/vmlinuz", initrd: "/fake/initrd", modules: "/fake/modules.img" }),
    listTemplates: () => [],
    template: (name: string) => {
      throw new QvmError("NOT_FOUND", `no template image ${name}`);
    },
  };
  return fake as unknown as ImageStore;
}
