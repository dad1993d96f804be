// How the network code runs `ip`, `nft` and `conntrack`: one injectable function, so tests can
// record the commands and answer them. The real one uses execFile-style spawning (no shell: every
// value is one argv element), a timeout, bounded output, and stdin for nft scripts.
import { spawn } from "node:child_process";
import { QvmError } from "@qvm/protocol/contracts";

export interface CommandResult {
  /** The exit code; 127 when the program does not exist, 124 when it timed out. */
  code: number;
  stdout: string;
  stderr: string;
}

export interface CommandOptions {
  /** Written to the command's stdin (then closed). */
  input?: string;
}

export type CommandRunner = (command: string, args: readonly string[], options?: CommandOptions) => Promise<CommandResult>;

const TIMEOUT_MS = 30_000;
const MAX_OUTPUT = 1024 * 1024;
// The agent may start with a short PATH; ip, nft and conntrack live in sbin.
const PATH = [process.env.PATH, "/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"].filter(Boolean).join(":");

export const runCommand: CommandRunner = (command, args, options = {}) =>
  new Promise((resolve) => {
    const child = spawn(command, args, { env: { ...process.env, PATH, LC_ALL: "C" }, stdio: ["pipe", "pipe", "pipe"] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let size = 0;
    const collect = (into: Buffer[]) => (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_OUTPUT) into.push(chunk);
    };
    child.stdout.on("data", collect(out));
    child.stderr.on("data", collect(err));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, TIMEOUT_MS);
    const done = (code: number, extra = "") => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out).toString("utf8"), stderr: Buffer.concat(err).toString("utf8") + extra });
    };
    child.on("error", (e: NodeJS.ErrnoException) => done(e.code === "ENOENT" ? 127 : 126, `${command}: ${e.message}`));
    child.on("close", (code) => done(timedOut ? 124 : (code ?? 128), timedOut ? `${command}: timed out after ${TIMEOUT_MS / 1000} s` : ""));
    // A command that exits without reading stdin makes the write fail with EPIPE: its exit code says what happened.
    child.stdin.on("error", () => {});
    child.stdin.end(options.input ?? "");
  });

/** The command line as a person would type it, for error messages. */
export function commandLine(command: string, args: readonly string[]): string {
  return [command, ...args].join(" ");
}

/** Runs a command that must succeed; a failure is QvmError INTERNAL naming the command and its error. */
export async function runChecked(run: CommandRunner, command: string, args: readonly string[], options?: CommandOptions): Promise<string> {
  const r = await run(command, args, options);
  if (r.code !== 0) {
    const why = r.stderr.trim().split("\n").slice(0, 5).join("; ") || `exit code ${r.code}`;
    throw new QvmError("INTERNAL", `${commandLine(command, args)} failed: ${why}`);
  }
  return r.stdout;
}
