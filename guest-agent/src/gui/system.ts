// What windows need from the domain: users, the runtime directories, containment, and starting
// processes. One interface so the tests can give a fake domain; systemGui() is the real one.
import { execFile, spawn } from "node:child_process";
import { chownSync, existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { lookupUser, type GuestUser } from "../users.js";
import type { Launch } from "./commands.js";
import { processGroups, sweepWindowCgroups, windowCgroup, windowCgroupParent, type Containment } from "./containment.js";

export interface ProcessExit {
  code: number | null;
  signal: string | null;
}

export interface WindowProcess {
  readonly pid: number | undefined;
  /** Resolves once the process has exited and been reaped (or could not be started: code 127). */
  readonly exited: Promise<ProcessExit>;
  hasExited(): boolean;
  /** The end of what it wrote to stderr (at most STDERR_TAIL characters). */
  stderrTail(): string;
  /** Called with each chunk of stderr. */
  onStderr(cb: (text: string) => void): void;
}

/** What a bounded command (capture) left: see GuiSystem.capture. */
export interface CaptureResult {
  /** How it ended; undefined when the agent killed it (time-out, or too much output). */
  exit: ProcessExit | undefined;
  /** What it wrote to stdout: at most maxBytes + 1 bytes. */
  stdout: Buffer;
  /** It wrote more than maxBytes: it was killed, and the rest was never read. */
  overflow: boolean;
  /** It was killed at the time-out. */
  timedOut: boolean;
  /** The end of its stderr (at most STDERR_TAIL characters). */
  stderr: string;
}

/** How a fed command (feed) ended: see GuiSystem.feed. */
export interface FeedResult {
  /** undefined when the agent killed it at the time-out. */
  exit: ProcessExit | undefined;
  timedOut: boolean;
}

export interface GuiSystem {
  /**
   * The programs of `programs` (default: what every window needs) that the domain lacks (a
   * template without them: not debian-12-gui).
   */
  missingPrograms(programs?: readonly string[]): string[];
  lookupUser(name: string): GuestUser | undefined;
  /** Once, before the first window: makes the runtime root and ends what an earlier agent left. */
  init(): Promise<void>;
  contain(windowId: number): Containment;
  /** Makes the window's runtime directory (mode 0700) with `files` in it, then gives it to the user. */
  makeRuntimeDir(dir: string, user: GuestUser, files: Record<string, string>): void;
  removeRuntimeDir(dir: string): Promise<void>;
  listDir(dir: string): string[];
  exists(file: string): boolean;
  spawn(cmd: Launch, containment: Containment): WindowProcess;
  /** A short command (swaymsg): its exit code and output, killed after `timeoutMs`. */
  run(cmd: Launch, timeoutMs: number): Promise<{ code: number | null; output: string }>;
  /**
   * A short command inside `containment`, leading a process group of its own, its stdout read
   * up to `maxBytes` + 1 bytes: beyond that, or after `timeoutMs`, its whole group is killed
   * and the call resolves without waiting for the pipes to close.
   */
  capture(cmd: Launch, containment: Containment, opts: { maxBytes: number; timeoutMs: number }): Promise<CaptureResult>;
  /**
   * Starts `cmd` inside `containment`, leading a process group of its own, with `input` on its
   * stdin and /dev/null as stdout and stderr (what it forks may outlive it: nothing waits on
   * its pipes); resolves when it exits, or kills its group after `timeoutMs`.
   */
  feed(cmd: Launch, containment: Containment, input: Uint8Array, timeoutMs: number): Promise<FeedResult>;
}

export const STDERR_TAIL = 4096;
/** Where windows' runtime directories are made (root's, 0755); each is `win-<id>`. */
export const GUI_RUNTIME_ROOT = "/run/qvm-gui";
export const WINDOW_PROGRAMS = ["sway", "swaymsg", "wayvnc", "socat", "setpriv"];
const BIN_DIRS = ["/usr/local/bin", "/usr/bin", "/bin"];

/** Starts `cmd` (through `containment`) with stdin and stdout closed and stderr read. */
export function spawnWindowProcess(cmd: Launch, containment: Containment): WindowProcess {
  const argv = containment.wrap([cmd.file, ...cmd.args]);
  let tail = "";
  let done = false;
  const listeners: Array<(t: string) => void> = [];
  const child = spawn(argv[0]!, argv.slice(1), { env: cmd.env, cwd: cmd.cwd, stdio: ["ignore", "ignore", "pipe"], detached: containment.detached });
  const exited = new Promise<ProcessExit>((resolve) => {
    child.once("error", () => {
      done = true;
      resolve({ code: 127, signal: null });
    });
    child.once("exit", (code, signal) => {
      done = true;
      resolve({ code, signal });
    });
  });
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (t: string) => {
    tail = (tail + t).slice(-STDERR_TAIL);
    for (const l of listeners) l(t);
  });
  child.stderr?.on("error", () => {});
  return {
    pid: child.pid,
    exited,
    hasExited: () => done,
    stderrTail: () => tail,
    onStderr: (cb) => listeners.push(cb),
  };
}

/** SIGKILLs the process group `pid` leads; only while that leader is unreaped (its number is still its own). */
function killGroup(pid: number | undefined): void {
  if (pid === undefined) return;
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // gone already
  }
}

export function captureOutput(cmd: Launch, containment: Containment, opts: { maxBytes: number; timeoutMs: number }): Promise<CaptureResult> {
  const argv = containment.wrap([cmd.file, ...cmd.args]);
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let stderr = "";
    let exited = false;
    let done = false;
    // A group of its own in either containment: a time-out must end what it forked (wl-paste's cat).
    const child = spawn(argv[0]!, argv.slice(1), { env: cmd.env, cwd: cmd.cwd, stdio: ["ignore", "pipe", "pipe"], detached: true });
    const finish = (exit: ProcessExit | undefined, why: "" | "overflow" | "timeout") => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (why && !exited) killGroup(child.pid);
      // Not waiting for the pipes: a process that left the group may hold them.
      child.stdout?.destroy();
      child.stderr?.destroy();
      resolve({ exit, stdout: Buffer.concat(chunks), overflow: why === "overflow", timedOut: why === "timeout", stderr });
    };
    const timer = setTimeout(() => finish(undefined, "timeout"), opts.timeoutMs);
    child.stdout?.on("data", (d: Buffer) => {
      const room = opts.maxBytes + 1 - size;
      if (room > 0) chunks.push(d.subarray(0, room));
      size += d.length;
      if (size > opts.maxBytes) finish(undefined, "overflow");
    });
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (t: string) => (stderr = (stderr + t).slice(-STDERR_TAIL)));
    for (const s of [child.stdout, child.stderr]) s?.on("error", () => {});
    child.once("exit", () => (exited = true));
    child.once("error", (err) => {
      exited = true;
      stderr = `${stderr}${err.message}`.slice(-STDERR_TAIL);
      finish({ code: 127, signal: null }, "");
    });
    // After the exit and the end of both pipes: everything it wrote has been read.
    child.once("close", (code, signal) => finish({ code, signal }, ""));
  });
}

export function feedInput(cmd: Launch, containment: Containment, input: Uint8Array, timeoutMs: number): Promise<FeedResult> {
  const argv = containment.wrap([cmd.file, ...cmd.args]);
  return new Promise((resolve) => {
    let done = false;
    const child = spawn(argv[0]!, argv.slice(1), { env: cmd.env, cwd: cmd.cwd, stdio: ["pipe", "ignore", "ignore"], detached: true });
    const finish = (r: FeedResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.stdin?.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => {
      killGroup(child.pid);
      finish({ exit: undefined, timedOut: true });
    }, timeoutMs);
    // EPIPE when it exits without reading everything: its exit says what happened.
    child.stdin?.on("error", () => {});
    child.stdin?.end(input);
    child.once("error", () => finish({ exit: { code: 127, signal: null }, timedOut: false }));
    // Its exit, not its pipes' end: what it forks keeps running.
    child.once("exit", (code, signal) => finish({ exit: { code, signal }, timedOut: false }));
  });
}

export function systemGui(opts: { runtimeRoot?: string; log?: (m: string) => void; cgroupParent?: string | null } = {}): GuiSystem {
  const root = opts.runtimeRoot ?? GUI_RUNTIME_ROOT;
  const log = opts.log ?? (() => {});
  // null: process groups only (tests); undefined: find the agent's cgroup.
  let parent: string | undefined = opts.cgroupParent === null ? undefined : opts.cgroupParent;
  const removeDir = (dir: string) =>
    // GNU rm does not follow symbolic links a user plants while it runs (it walks with openat);
    // the directory's contents are the user's.
    new Promise<void>((resolve) => execFile("rm", ["-rf", "--one-file-system", "--", dir], { timeout: 30_000 }, () => resolve()));
  return {
    missingPrograms: (programs = WINDOW_PROGRAMS) => programs.filter((p) => !BIN_DIRS.some((d) => existsSync(path.join(d, p)))),
    lookupUser: (name) => lookupUser(name),
    async init() {
      mkdirSync(root, { recursive: true, mode: 0o755 });
      for (const name of readdirSync(root)) if (/^win-\d+$/.test(name)) await removeDir(path.join(root, name));
      if (opts.cgroupParent === undefined) parent = windowCgroupParent();
      if (parent) {
        const swept = await sweepWindowCgroups(parent);
        if (swept.length) log(`ended windows an earlier agent left: ${swept.join(", ")}`);
      }
      log(`windows are kept in ${parent ? `cgroups under ${parent}` : "process groups (no writable cgroup v2)"}`);
    },
    contain: (windowId) => (parent ? windowCgroup(parent, windowId) : processGroups()),
    makeRuntimeDir(dir, user, files) {
      // Made by root in root's directory, filled, and only then given to the user: the user can
      // never have put a link where root writes.
      mkdirSync(dir, { mode: 0o700 });
      for (const [name, text] of Object.entries(files)) writeFileSync(path.join(dir, name), text, { mode: 0o644, flag: "wx" });
      chownSync(dir, user.uid, user.gid);
    },
    removeRuntimeDir: removeDir,
    listDir(dir) {
      try {
        return readdirSync(dir);
      } catch {
        return [];
      }
    },
    exists: (file) => existsSync(file),
    spawn: spawnWindowProcess,
    capture: captureOutput,
    feed: feedInput,
    run: (cmd, timeoutMs) =>
      new Promise((resolve) => {
        execFile(cmd.file, cmd.args, { env: cmd.env, cwd: cmd.cwd, timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 64 * 1024 }, (err, stdout, stderr) => {
          const code = err ? (typeof (err as { code?: unknown }).code === "number" ? ((err as { code: number }).code) : null) : 0;
          resolve({ code, output: `${stdout}${stderr}`.slice(-STDERR_TAIL) });
        });
      }),
  };
}
