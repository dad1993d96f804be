// Test support: a fake domain for windows. Its processes are objects the test ends; by default
// sway makes its sockets, wayvnc its socket and socat says it listens, as the real ones do.
// Runtime directories are real, under a temporary directory. Each window's clipboard is a buffer
// that wl-copy sets and wl-paste reads, with their answers when nothing is copied. Only tests
// import it.
import { mkdirSync, readdirSync, rmSync, writeFileSync, existsSync } from "node:fs";
import path from "node:path";
import type { GuestUser } from "../users.js";
import type { Launch } from "./commands.js";
import type { Containment } from "./containment.js";
import { WINDOW_PROGRAMS, type CaptureResult, type FeedResult, type GuiSystem, type ProcessExit, type WindowProcess } from "./system.js";

export const TEST_USER: GuestUser = { name: "user", uid: 1000, gid: 1000, home: "/home/user", shell: "/bin/bash" };
const ROOT: GuestUser = { name: "root", uid: 0, gid: 0, home: "/root", shell: "/bin/bash" };

export type Role = "sway" | "program" | "wayvnc" | "socat" | "swaymsg" | "other";

/** The program a command runs: what follows setpriv's "--". */
export function roleOf(cmd: Launch): Role {
  const argv = [cmd.file, ...cmd.args];
  const prog = argv[argv.indexOf("--") + 1] ?? "";
  return (["sway", "wayvnc", "socat", "swaymsg"] as const).find((r) => r === prog) ?? "program";
}

let nextPid = 50_000;

export class FakeProcess implements WindowProcess {
  readonly pid = nextPid++;
  readonly exited: Promise<ProcessExit>;
  /** Where the window started it. */
  containment: Containment | undefined;
  private done = false;
  private tail = "";
  private readonly listeners: Array<(t: string) => void> = [];
  private resolve!: (e: ProcessExit) => void;

  constructor(
    readonly role: Role,
    readonly cmd: Launch,
  ) {
    this.exited = new Promise((r) => (this.resolve = r));
  }

  hasExited(): boolean {
    return this.done;
  }
  stderrTail(): string {
    return this.tail;
  }
  onStderr(cb: (t: string) => void): void {
    this.listeners.push(cb);
  }
  writeStderr(t: string): void {
    this.tail += t;
    for (const l of this.listeners) l(t);
  }
  exit(code: number | null = 0, signal: string | null = null): void {
    if (this.done) return;
    this.done = true;
    this.resolve({ code, signal });
  }
}

export interface FakeGui extends GuiSystem {
  readonly processes: FakeProcess[];
  readonly commands: Launch[];
  /** Programs reported missing. */
  missing: string[];
  /** Roles that start but never get ready (no sockets, no "listening"). */
  silent: Set<Role>;
  /** Called for each process started, after the default behaviour; may end it at once. */
  onSpawn: (p: FakeProcess) => void;
  /** What a short command (swaymsg) answers; may end processes. */
  onRun: (cmd: Launch) => { code: number | null; output: string };
  initCalls: number;
  live(): FakeProcess[];
  /** Each window's selection, by its runtime directory (absent: nothing is copied). */
  readonly clipboards: Map<string, Buffer>;
  /** The wl-paste and wl-copy runs, with their containment and what wl-copy was given. */
  readonly clipboardRuns: Array<{ cmd: Launch; containment: Containment; input?: Buffer; maxBytes?: number; timeoutMs: number }>;
  /** What a wl-paste run answers; by default the window's selection, as wl-paste 2.1 does. */
  onCapture: (cmd: Launch, opts: { maxBytes: number; timeoutMs: number }) => Promise<CaptureResult>;
  /** What a wl-copy run answers; by default it replaces (or, with --clear, clears) the selection. */
  onFeed: (cmd: Launch, input: Buffer, timeoutMs: number) => Promise<FeedResult>;
}

/** A run that the fake system killed at its time-out, after waiting for it. */
export async function timedOut(timeoutMs: number): Promise<CaptureResult & FeedResult> {
  await new Promise((r) => setTimeout(r, timeoutMs));
  return { exit: undefined, stdout: Buffer.alloc(0), overflow: false, timedOut: true, stderr: "" };
}

export function fakeGui(runtimeRoot: string): FakeGui {
  const processes: FakeProcess[] = [];
  // Each window's containment kills the processes started in it.
  const members = new WeakMap<Containment, FakeProcess[]>();
  const contain = (): Containment => {
    const c: Containment = {
      describe: "fake",
      detached: true,
      wrap: (argv) => argv,
      killAll: () => members.get(c)?.forEach((p) => p.exit(null, "SIGKILL")),
      empty: () => true,
      release() {},
    };
    members.set(c, []);
    return c;
  };
  const gui: FakeGui = {
    processes,
    commands: [],
    missing: [],
    silent: new Set(),
    onSpawn: () => {},
    onRun: () => ({ code: 0, output: "" }),
    initCalls: 0,
    live: () => processes.filter((p) => !p.hasExited()),
    clipboards: new Map(),
    clipboardRuns: [],
    async onCapture(cmd, { maxBytes }) {
      const sel = gui.clipboards.get(cmd.env.XDG_RUNTIME_DIR ?? "");
      if (!sel) return { exit: { code: 1, signal: null }, stdout: Buffer.alloc(0), overflow: false, timedOut: false, stderr: "No selection\n" };
      const overflow = sel.length > maxBytes;
      return { exit: overflow ? undefined : { code: 0, signal: null }, stdout: sel.subarray(0, maxBytes + 1), overflow, timedOut: false, stderr: "" };
    },
    async onFeed(cmd, input) {
      const dir = cmd.env.XDG_RUNTIME_DIR ?? "";
      if (cmd.args.includes("--clear")) gui.clipboards.delete(dir);
      else gui.clipboards.set(dir, Buffer.from(input));
      return { exit: { code: 0, signal: null }, timedOut: false };
    },
    missingPrograms: (programs = WINDOW_PROGRAMS) => gui.missing.filter((p) => programs.includes(p)),
    lookupUser: (name) => (name === "user" ? TEST_USER : name === "root" ? ROOT : undefined),
    async init() {
      gui.initCalls++;
      mkdirSync(runtimeRoot, { recursive: true });
    },
    contain,
    makeRuntimeDir(dir, _user, files) {
      mkdirSync(dir, { mode: 0o700 });
      for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text, { flag: "wx" });
    },
    async removeRuntimeDir(dir) {
      rmSync(dir, { recursive: true, force: true });
    },
    listDir: (dir) => (existsSync(dir) ? readdirSync(dir) : []),
    exists: (f) => existsSync(f),
    spawn(cmd, c) {
      const p = new FakeProcess(roleOf(cmd), cmd);
      processes.push(p);
      p.containment = c;
      members.get(c)?.push(p);
      const dir = cmd.env.XDG_RUNTIME_DIR ?? "";
      if (gui.silent.has(p.role)) {
        // starts, says nothing
      } else if (p.role === "sway") {
        writeFileSync(path.join(dir, "wayland-1.lock"), "");
        writeFileSync(path.join(dir, "wayland-1"), "");
        writeFileSync(cmd.env.SWAYSOCK ?? "", "");
      } else if (p.role === "wayvnc") {
        writeFileSync(path.join(dir, "vnc.sock"), "");
      } else if (p.role === "socat") {
        p.writeStderr("2026/11/30 10:00:00 socat[1] N listening on AF=40 cid:4294967295 port:20000\n");
      }
      gui.onSpawn(p);
      return p;
    },
    async run(cmd) {
      gui.commands.push(cmd);
      return gui.onRun(cmd);
    },
    capture(cmd, containment, opts) {
      gui.clipboardRuns.push({ cmd, containment, ...opts });
      return gui.onCapture(cmd, opts);
    },
    feed(cmd, containment, input, timeoutMs) {
      const data = Buffer.from(input);
      gui.clipboardRuns.push({ cmd, containment, input: data, timeoutMs });
      return gui.onFeed(cmd, data, timeoutMs);
    },
  };
  return gui;
}
