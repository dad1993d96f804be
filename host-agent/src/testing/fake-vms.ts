// Fakes behind the core's seams, for unit tests of the core and the runner without VMs: a VM
// factory whose VMs run "programs" that echo, and the volume store and image store as far as
// starting needs them. Nothing here touches QEMU, disks or the network.
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { PassThrough } from "node:stream";
import type { ImageStore } from "@qvm/images";
import { QvmError, type agentV1 } from "@qvm/protocol";
import type { ExecSignal, ExitSignal } from "@qvm/protocol/contracts";
import type { ExecOptions } from "../agent/agent-client.js";
import type { ExecExit, ExecProcess } from "../agent/exec-process.js";
import type { GuestUsbDevice } from "../agent/replies.js";
import { USB_ATTACH } from "../usb/usb-devices.js";
import { DomainAttachments } from "../domain/attachments.js";
import type { BootPlan } from "../domain/boot-plan.js";
import type { GuestAgent, RunningVm, VmFactory } from "../domain/vm-factory.js";
import type { VolumeStore } from "../storage/volumes.js";
import { VolumeKey } from "../storage/volume-key.js";
import { systemClock, type Clock } from "../base/clock.js";
import type { VmExit, VmInfo, VmmDriver } from "../vmm/driver.js";

/**
 * A process in a fake guest, shaped like ExecProcess: a program (FakeVm.programs) writes to its
 * stdout and stderr and ends it; a signal ends it by that signal unless the program handles it
 * (`onSignal`); cancelling the stream ends `exit` with an error, as a cancelled Exec does.
 */
export class FakeProcess {
  readonly stdin = new PassThrough();
  readonly stdout = new PassThrough();
  readonly stderr = new PassThrough();
  readonly started: Promise<{ execId: number; pid: number }>;
  readonly exit: Promise<ExecExit>;
  /** Signals it was sent, in order. */
  readonly signals: ExecSignal[] = [];
  ended = false;
  cancelled = false;
  /** Set by a program that handles signals itself; the default ends the process by the signal (SIGTERM, SIGKILL, SIGINT, SIGHUP). */
  onSignal: ((sig: ExecSignal) => void) | undefined;
  private settle!: (e: ExecExit) => void;
  private fail!: (err: Error) => void;

  constructor(
    /** What the host asked for, for assertions. */
    readonly options: ExecOptions,
    readonly id: number,
  ) {
    this.stdin.resume();
    this.started = Promise.resolve({ execId: id, pid: 4000 + id });
    this.exit = new Promise<ExecExit>((resolve, reject) => ((this.settle = resolve), (this.fail = reject)));
    this.exit.catch(() => {});
  }

  get argv(): string[] {
    return Array.isArray(this.options.command) ? this.options.command : ["sh", "-c", this.options.command];
  }

  /** Ends the process with an exit code or a signal. */
  end(code: number | null, signal: ExitSignal | null = null): void {
    if (this.ended) return;
    this.ended = true;
    this.stdout.end();
    this.stderr.end();
    this.stdin.destroy();
    this.settle({ code, signal });
  }

  signal(sig: ExecSignal): void {
    this.signals.push(sig);
    if (this.ended) return;
    if (this.onSignal) this.onSignal(sig);
    else if (sig === "SIGTERM" || sig === "SIGKILL" || sig === "SIGINT" || sig === "SIGHUP") this.end(null, sig);
  }

  resize(): void {}

  /** As a cancelled Exec stream: the guest kills it, and the host sees the stream fail. */
  cancel(): void {
    this.cancelled = true;
    if (this.ended) return;
    this.ended = true;
    this.stdout.end();
    this.stderr.end();
    this.stdin.destroy();
    this.fail(new QvmError("AGENT_UNAVAILABLE", "the Exec stream was cancelled"));
  }
}

/** A program of a fake guest: given its process, it writes, ends it, or keeps it running. */
export type FakeProgram = (proc: FakeProcess, vm: FakeVm) => void;

/** usb-attach (usb/usb-devices.ts) in a fake guest: says the device is attached, on the next port, and runs until signalled. */
export const fakeUsbAttach: FakeProgram = (proc, vm) => {
  proc.stdout.write(`qvm-usb: attached to port ${vm.nextUsbPort++}\n`);
};

/** A device as a fake backend's agent reports it (checked already, as AgentClient returns it). */
export function fakeUsbDevice(busid: string, more: Partial<GuestUsbDevice> = {}): GuestUsbDevice {
  return {
    busid,
    vendorId: "46f4",
    productId: "0001",
    manufacturer: "QEMU",
    product: "QEMU USB HARDDRIVE",
    serial: `1-0000:00:04.0-${busid}`,
    deviceClass: 0,
    interfaces: [{ class: 8, subclass: 6, protocol: 80 }],
    driver: "usb-storage",
    ...more,
  };
}

/** How a fake guest behaves when asked to power off. */
export type FakeGuest = "powers-off" | "hangs";

export class FakeVm implements RunningVm {
  readonly exited: Promise<VmExit>;
  /** Renewed when a later qvmd takes the VM back (renewAttachments), as DomainVm.attach makes a new one. */
  attachments: DomainAttachments;
  /** Earlier attachments, whose VMM-held part is released when the VM ends. */
  private readonly retired: DomainAttachments[] = [];
  readonly execs: ExecOptions[] = [];
  /** The processes running, by exec id (an ended one is forgotten, as the agent forgets it). */
  readonly procs = new Map<number, FakeProcess>();
  /**
   * Programs by argv[0]; any other prints its argv joined by spaces and exits with `exitCode`.
   * usb-attach is there from the start (fakeUsbAttach); a test may replace or delete it.
   */
  readonly programs = new Map<string, FakeProgram>([[USB_ATTACH, fakeUsbAttach]]);
  nextUsbPort = 1;
  private nextExec = 1;
  /** The USB devices its kernel has (a backend's); change them with setUsbDevices. */
  usbDevices: GuestUsbDevice[] = [];
  /** What the next USB lists leave out (a guest's garbage, as the host's checks count it). */
  usbDropped = { dropped: 0, droppedWhy: "" };
  private readonly usbWatchers = new Set<() => void>();
  private readonly usbWatchEnds = new Set<(err?: Error) => void>();
  /** Set: WatchUsbDevices fails at once with it (an agent without the RPC). */
  usbWatchError: Error | undefined;
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
      if (this.gone) throw new QvmError("AGENT_UNAVAILABLE", `cannot Exec: ${this.name}'s agent connection is closed`);
      this.execs.push(opts);
      const proc = new FakeProcess(opts, this.nextExec++);
      this.procs.set(proc.id, proc);
      const forget = () => void this.procs.delete(proc.id);
      proc.exit.then(forget, forget);
      const program = this.programs.get(proc.argv[0]!);
      if (program) program(proc, this);
      else {
        proc.stdout.write(`${proc.argv.join(" ")}\n`);
        proc.end(this.exitCode);
      }
      return proc as unknown as ExecProcess;
    },
    signal: async (execId, sig) => {
      const proc = this.procs.get(execId);
      if (!proc) throw new QvmError("NOT_FOUND", `no process ${execId}`);
      proc.signal(sig);
    },
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
    // USB: the device table, watched like the real agent's (the list at once, then each change).
    listUsbDevices: async () => ({ devices: [...this.usbDevices], ...this.usbDropped }),
    watchUsbDevices: (onList, onEnd) => {
      if (this.usbWatchError) {
        onEnd(this.usbWatchError);
        return () => {};
      }
      let ended = false;
      const watcher = () => onList({ devices: [...this.usbDevices], ...this.usbDropped });
      const end = (err?: Error) => {
        this.usbWatchers.delete(watcher);
        this.usbWatchEnds.delete(end);
        if (!ended) onEnd(err);
        ended = true;
      };
      this.usbWatchers.add(watcher);
      this.usbWatchEnds.add(end);
      watcher();
      return () => end();
    },
  };
  /** The fake guest's window clipboards, by window id. */
  readonly clipboards = new Map<number, Buffer>();
  /** The fake guest's windows, with what it was asked to run. */
  readonly windows = new Map<number, { windowId: number; vsockPort: number; width: number; height: number; alive: boolean; argv: string[]; user: string }>();
  private nextWindow = 1;
  private readonly windowWatchers = new Set<() => void>();

  /** Replaces the USB devices its kernel has; watchers get the new list. */
  setUsbDevices(devices: GuestUsbDevice[]): void {
    this.usbDevices = devices;
    for (const w of [...this.usbWatchers]) w();
  }

  /** Every WatchUsbDevices stream ends now, with `usbWatchError` (as when the agent restarts). */
  breakUsbWatches(): void {
    for (const end of [...this.usbWatchEnds]) end(this.usbWatchError);
  }

  /** How many WatchUsbDevices streams are open. */
  get usbWatchCount(): number {
    return this.usbWatchers.size;
  }

  /** Processes still running with `argv0`. */
  running(argv0: string): FakeProcess[] {
    return [...this.procs.values()].filter((p) => !p.ended && p.argv[0] === argv0);
  }

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
    void this.exited.then(async () => {
      for (const a of this.retired) await a.releaseAll();
      await this.attachments.releaseAll();
    });
  }

  /** A later qvmd takes it back: what that qvmd attaches goes to a new store (the old one's qvmd part was released at detach). */
  renewAttachments(): void {
    if (!this.attachments.qvmd.isDisposed) return;
    this.retired.push(this.attachments);
    this.attachments = new DomainAttachments(this.name, () => {});
    this.detached = false;
  }

  /** The VMM dies or the guest powers off: its processes' Exec streams break. */
  end(reason: string, clean: boolean): void {
    if (this.gone) return;
    this.gone = true;
    for (const p of this.procs.values()) p.cancel();
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
    if (vm) {
      vm.renewAttachments();
      this.vms.set(name, vm);
    }
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
  // An encrypted domain's fake key file holds its passphrase (a test double: the real one holds salt and parameters).
  const keyFile = (name: string) => path.join(dir, name, "private.key.json");
  const fake: Partial<Record<keyof VolumeStore, unknown>> = {
    create: async (name: string, _klass: string, opts: { passphrase?: string } = {}) => {
      make(name);
      if (opts.passphrase !== undefined) writeFileSync(keyFile(name), opts.passphrase);
    },
    isEncrypted: (name: string) => existsSync(keyFile(name)),
    needsPassphrase: (rec: { name: string; props: Record<string, unknown> }) => rec.props.encrypted === true || existsSync(keyFile(rec.name)),
    makeSpareOverlay: async () => {},
    discardSpareOverlay: () => {},
    removeStaleSpareOverlays: () => {},
    unlock: async (name: string, passphrase: string) => {
      if (!passphrase) throw new QvmError("PASSPHRASE_REQUIRED", `${name} is encrypted: its passphrase is needed`);
      if (readFileSync(keyFile(name), "utf8") !== passphrase) throw new QvmError("PERMISSION_DENIED", `wrong passphrase for ${name}`);
      return VolumeKey.random();
    },
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

/**
 * A driver-table entry for a fake VM factory (which starts the VMs itself): it has the host it
 * needs, and nothing else is called on it. `restore` marks a driver that restores snapshots.
 */
export function fakeDriver(kind: string, opts: { restore?: boolean } = {}): VmmDriver {
  return { kind, checkHost: async () => {}, ...(opts.restore ? { restore: async () => undefined as never } : {}) } as unknown as VmmDriver;
}

export function fakeImages(): ImageStore {
  const fake = {
    root: "/nonexistent/images",
    kernel: () => ({ vmlinuz: "/fake/vmlinuz", image: "/fake/vmlinuz", initrd: "/fake/initrd", modules: "/fake/modules.img" }),
    listTemplates: () => [],
    template: (name: string) => {
      throw new QvmError("NOT_FOUND", `no template image ${name}`);
    },
  };
  return fake as unknown as ImageStore;
}
