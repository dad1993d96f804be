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

export interface GuiSystem {
  /** The programs windows need that the domain lacks (a template without them: not debian-12-gui). */
  missingPrograms(): string[];
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
    missingPrograms: () => WINDOW_PROGRAMS.filter((p) => !BIN_DIRS.some((d) => existsSync(path.join(d, p)))),
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
    run: (cmd, timeoutMs) =>
      new Promise((resolve) => {
        execFile(cmd.file, cmd.args, { env: cmd.env, cwd: cmd.cwd, timeout: timeoutMs, killSignal: "SIGKILL", maxBuffer: 64 * 1024 }, (err, stdout, stderr) => {
          const code = err ? (typeof (err as { code?: unknown }).code === "number" ? ((err as { code: number }).code) : null) : 0;
          resolve({ code, output: `${stdout}${stderr}`.slice(-STDERR_TAIL) });
        });
      }),
  };
}
