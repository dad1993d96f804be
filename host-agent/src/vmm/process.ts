// Small process helpers for VMMs that must outlive qvmd: detached spawning with output to a log
// file, liveness checks that guard against pid reuse, and kill-and-wait.
import { spawn } from "node:child_process";
import { openSync, closeSync, readFileSync } from "node:fs";

export interface SpawnedProcess {
  pid: number;
  /** Settles when the child exits (only for children of this process). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** An open descriptor of this process that a child gets at `at` (3 or more). */
export interface InheritedFd {
  at: number;
  fd: number;
}

/**
 * The stdio array that gives a child `inherit` at their places after stdin, stdout and stderr;
 * places between them are left closed ("ignore" above 2 opens nothing).
 */
export function childStdio(log: number, inherit: readonly InheritedFd[]): ("ignore" | number)[] {
  const stdio: ("ignore" | number)[] = ["ignore", log, log];
  for (const { at, fd } of inherit) {
    if (!Number.isInteger(at) || at < 3 || at > 1023) throw new RangeError(`a child's descriptor ${at} is not in 3..1023`);
    if (stdio[at] !== undefined && stdio[at] !== "ignore") throw new RangeError(`a child's descriptor ${at} is given twice`);
    while (stdio.length <= at) stdio.push("ignore");
    stdio[at] = fd;
  }
  return stdio;
}

/**
 * Starts a process in its own session, so it survives qvmd's exit, writing output to logPath.
 * `inherit`: descriptors of this process the child gets at given numbers (a disk image qvmd
 * opened for a jailed VMM); the caller still owns and closes them.
 */
export function spawnDetached(file: string, args: string[], logPath: string, opts: { cwd?: string; inherit?: readonly InheritedFd[]; env?: NodeJS.ProcessEnv } = {}): Promise<SpawnedProcess> {
  const fd = openSync(logPath, "a", 0o600);
  try {
    const child = spawn(file, args, { detached: true, stdio: childStdio(fd, opts.inherit ?? []), cwd: opts.cwd, env: opts.env });
    return new Promise((resolve, reject) => {
      child.once("error", reject);
      child.once("spawn", () => {
        child.unref();
        const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) =>
          child.once("exit", (code, signal) => res({ code, signal })),
        );
        resolve({ pid: child.pid!, exited });
      });
    });
  } finally {
    closeSync(fd);
  }
}

/** The process's start time in clock ticks since boot (/proc/PID/stat field 22), or undefined. */
export function processStartTime(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name, which may itself hold spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const t = Number(fields[19]);
    return Number.isInteger(t) ? t : undefined;
  } catch {
    return undefined;
  }
}

/**
 * True if pid is alive, one of its arguments is `marker` or a path below it (a directory: the
 * check is for "marker/", so domain "work2" never passes for "work"), and, when known, it started
 * at `startTime` (guards against pid reuse).
 */
export function processAlive(pid: number, marker?: string, startTime?: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
  if (!marker) return true;
  try {
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // A zombie still answers kill(0); it is dead for our purposes.
    if (/\) Z /.test(stat)) return false;
    if (startTime !== undefined && processStartTime(pid) !== startTime) return false;
    const dir = marker.endsWith("/") ? marker : `${marker}/`;
    return cmdline.split("\0").some((arg) => arg === marker || arg.includes(dir));
  } catch {
    return false;
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Waits until the process is gone (polling), up to timeoutMs. Returns whether it is gone. */
export async function waitGone(pid: number, marker: string | undefined, timeoutMs: number, startTime?: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!processAlive(pid, marker, startTime)) return true;
    await sleep(50);
  }
  return !processAlive(pid, marker, startTime);
}

export async function killAndWait(pid: number, marker: string | undefined, graceMs = 2000, startTime?: number): Promise<void> {
  if (!processAlive(pid, marker, startTime)) return;
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return;
  }
  if (await waitGone(pid, marker, graceMs, startTime)) return;
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    return;
  }
  await waitGone(pid, marker, 5000, startTime);
}

/** The end of a VMM's log for an error message (at most `max` characters), or why there is none. */
export function logTail(file: string, max = 300): string {
  try {
    const text = readFileSync(file, "utf8").trim();
    return text.length > max ? `…${text.slice(-max)}` : text || "(no output)";
  } catch {
    return "(no log)";
  }
}
