// The domain's windows: checks requests against the bounds, hands out window ids and vsock
// ports, keeps ended windows listed (not alive) until the host closes them, and tells watchers
// (WatchWindows) the whole list after every change.
import {
  MAX_WINDOWS_PER_DOMAIN,
  QvmError,
  WINDOW_VSOCK_PORT_BASE,
  WINDOW_VSOCK_PORT_COUNT,
  windowSizeProblem,
} from "@qvm/protocol/contracts";
import { MAX_ARGV_ITEMS } from "../limits.js";
import { CLIPBOARD_PROGRAMS, checkClipboardData, checkMaxBytes, type ClipboardContent } from "./clipboard.js";
import { vsockListen, type ListenAddress } from "./commands.js";
import { GUI_RUNTIME_ROOT, type GuiSystem } from "./system.js";
import { DEFAULT_TIMINGS, Window, type WindowTimings } from "./window.js";

/** Ended windows kept listed until closed; beyond this the oldest is forgotten. */
export const MAX_ENDED_WINDOWS = MAX_WINDOWS_PER_DOMAIN;
/** WatchWindows streams at once (qvmd holds one; a restarted qvmd's old one may linger). */
export const MAX_WINDOW_WATCHERS = 4;

export interface OpenWindowArgs {
  argv: string[];
  width: number;
  height: number;
  user: string;
}

export interface WindowSummary {
  windowId: number;
  vsockPort: number;
  width: number;
  height: number;
  alive: boolean;
}

export interface WindowManagerOptions {
  runtimeRoot?: string;
  listen?: ListenAddress;
  timings?: Partial<WindowTimings>;
  log?: (m: string) => void;
}

const checkSize = (width: number, height: number) => {
  const problem = windowSizeProblem(width, height);
  if (problem) throw new QvmError("INVALID_ARGUMENT", problem);
};

export class WindowManager {
  /** By id, in the order opened (ids only grow). Windows still opening are here but not listed. */
  private readonly windows = new Map<number, Window>();
  private readonly watchers = new Set<(windows: WindowSummary[]) => void>();
  private nextId = 1;
  private nextPort = 0;
  private initialized: Promise<void> | undefined;
  private readonly runtimeRoot: string;
  private readonly listen: ListenAddress;
  private readonly timings: WindowTimings;
  private readonly log: (m: string) => void;

  constructor(
    private readonly system: GuiSystem,
    opts: WindowManagerOptions = {},
  ) {
    this.runtimeRoot = opts.runtimeRoot ?? GUI_RUNTIME_ROOT;
    this.listen = opts.listen ?? vsockListen;
    this.timings = { ...DEFAULT_TIMINGS, ...opts.timings };
    this.log = opts.log ?? (() => {});
  }

  async open(req: OpenWindowArgs): Promise<{ windowId: number; vsockPort: number }> {
    const argv = [...req.argv];
    if (argv.length === 0 || !argv[0]) throw new QvmError("INVALID_ARGUMENT", "argv must name a program");
    if (argv.length > MAX_ARGV_ITEMS) throw new QvmError("INVALID_ARGUMENT", `argv has more than ${MAX_ARGV_ITEMS} items`);
    if (argv.some((a) => a.includes("\0"))) throw new QvmError("INVALID_ARGUMENT", "argv contains a NUL character");
    checkSize(req.width, req.height);
    if (!req.user) throw new QvmError("INVALID_ARGUMENT", "a window needs a user (the domain's default_user)");
    const user = this.system.lookupUser(req.user);
    if (!user) throw new QvmError("INVALID_ARGUMENT", `no such user in the domain: ${req.user}`);
    if (user.uid === 0) throw new QvmError("INVALID_ARGUMENT", "windows cannot run as root (sway refuses to): use an unprivileged user");
    const missing = this.system.missingPrograms();
    if (missing.length) {
      throw new QvmError("MISSING_DEPENDENCY", `this domain cannot show windows: ${missing.join(", ")} missing (use a template built with them, such as debian-12-gui)`);
    }
    const live = [...this.windows.values()].filter((w) => w.alive).length;
    if (live >= MAX_WINDOWS_PER_DOMAIN) throw new QvmError("RESOURCE_EXHAUSTED", `the domain has ${MAX_WINDOWS_PER_DOMAIN} windows open already`);

    const id = this.nextId++;
    const window = new Window(
      { id, port: this.allocatePort(), argv, width: req.width, height: req.height, user },
      this.system,
      this.runtimeRoot,
      this.listen,
      this.timings,
      (w) => this.ended(w),
      this.log,
    );
    // Listed only once open; here already so that its slot and port are taken.
    this.windows.set(id, window);
    try {
      await this.init();
      await window.open();
    } catch (err) {
      this.windows.delete(id);
      throw err;
    }
    this.log(`window ${id} opened on vsock port ${window.port} (${window.width}x${window.height}, ${window.paths.runtimeDir})`);
    this.publish();
    return { windowId: id, vsockPort: window.port };
  }

  async resize(windowId: number, width: number, height: number): Promise<void> {
    checkSize(width, height);
    await this.get(windowId).resize(width, height);
    this.publish();
  }

  /** Closes a live window (see Window.close) or forgets an ended one. */
  async close(windowId: number): Promise<void> {
    const w = this.get(windowId);
    await w.close();
    if (this.windows.get(windowId) === w) {
      this.windows.delete(windowId);
      this.publish();
    }
  }

  /** The window's selection as text: at most maxBytes (1..MAX_CLIPBOARD_BYTES), else `oversized`. */
  async getClipboard(windowId: number, maxBytes: number): Promise<ClipboardContent> {
    checkMaxBytes(maxBytes);
    const w = this.get(windowId);
    this.checkClipboardPrograms();
    return w.readClipboard(maxBytes);
  }

  /** Replaces the window's selection with `data` (at most MAX_CLIPBOARD_BYTES); resolves once it is offered. */
  async setClipboard(windowId: number, data: Uint8Array): Promise<void> {
    checkClipboardData(data);
    const w = this.get(windowId);
    this.checkClipboardPrograms();
    await w.writeClipboard(data);
  }

  list(): WindowSummary[] {
    return [...this.windows.values()]
      .filter((w) => w.state !== "opening")
      .map((w) => ({ windowId: w.id, vsockPort: w.port, width: w.width, height: w.height, alive: w.alive }));
  }

  /** Calls `cb` with the list now and after every change, until the returned function is called. */
  watch(cb: (windows: WindowSummary[]) => void): () => void {
    if (this.watchers.size >= MAX_WINDOW_WATCHERS) throw new QvmError("RESOURCE_EXHAUSTED", `at most ${MAX_WINDOW_WATCHERS} WatchWindows streams at once`);
    this.watchers.add(cb);
    cb(this.list());
    return () => void this.watchers.delete(cb);
  }

  /** The agent is exiting: every window's processes get SIGKILL now. */
  killAll(): void {
    for (const w of this.windows.values()) w.killNow();
  }

  private get(windowId: number): Window {
    const w = this.windows.get(windowId);
    if (!w || w.state === "opening") throw new QvmError("NOT_FOUND", `no window ${windowId} in this domain`);
    return w;
  }

  private checkClipboardPrograms(): void {
    const missing = this.system.missingPrograms(CLIPBOARD_PROGRAMS);
    if (missing.length) {
      throw new QvmError("MISSING_DEPENDENCY", `this domain has no clipboard for its windows: ${missing.join(", ")} missing (Debian's wl-clipboard; debian-12-gui has it)`);
    }
  }

  private init(): Promise<void> {
    this.initialized ??= this.system.init().catch((err: unknown) => {
      this.initialized = undefined;
      throw new QvmError("INTERNAL", `cannot prepare windows: ${(err as Error).message}`);
    });
    return this.initialized;
  }

  /** Round-robin over the range, skipping ports of listed windows: a port is reused as late as possible. */
  private allocatePort(): number {
    const used = new Set([...this.windows.values()].map((w) => w.port));
    for (let i = 0; i < WINDOW_VSOCK_PORT_COUNT; i++) {
      const n = (this.nextPort + i) % WINDOW_VSOCK_PORT_COUNT;
      if (!used.has(WINDOW_VSOCK_PORT_BASE + n)) {
        this.nextPort = (n + 1) % WINDOW_VSOCK_PORT_COUNT;
        return WINDOW_VSOCK_PORT_BASE + n;
      }
    }
    // Unreachable: at most MAX_WINDOWS_PER_DOMAIN + MAX_ENDED_WINDOWS + 1 windows are held.
    throw new QvmError("RESOURCE_EXHAUSTED", "no free window port");
  }

  private ended(w: Window): void {
    const ended = [...this.windows.values()].filter((x) => x.state === "ended");
    for (const old of ended.slice(0, Math.max(0, ended.length - MAX_ENDED_WINDOWS))) {
      if (old !== w) this.windows.delete(old.id);
    }
    this.publish();
  }

  private publish(): void {
    const list = this.list();
    for (const cb of this.watchers) cb(list);
  }
}
