// How every failure becomes one line on stderr and an exit code. The codes follow QvmError's
// table (protocol/src/errors.ts): 0 ok, 1 failed, 2 usage; a program run with `qvm run -p` passes
// its own code through, or 128+N when killed by signal N, as shells report it.
import os from "node:os";

/** A mistake on the command line that the parser cannot see (wrong combination of arguments). */
export class UsageError extends Error {
  override readonly name = "UsageError";
  readonly exitCode = 2;
}

/** A failure found by the CLI itself (not reported by qvmd): one line, exit 1. */
export class Failure extends Error {
  override readonly name = "Failure";
  readonly exitCode = 1;
}

/** Ends a command with an exit code and no message (`qvm check`, a failed `qvm tags list TAG`). */
export class SilentExit extends Error {
  override readonly name = "SilentExit";
  constructor(readonly exitCode: number) {
    super(`exit ${exitCode}`);
  }
}

/** The shell's code for a process killed by `signal` ("SIGKILL" -> 137); 1 if the name is unknown. */
export function signalExitCode(signal: string): number {
  const n = (os.constants.signals as Record<string, number | undefined>)[signal.toUpperCase()];
  return n ? 128 + n : 1;
}

/** The exit code for a process's exit status as qvmd reports it. */
export function processExitCode(exit: { code: number; signal: string }): number {
  if (exit.signal) return signalExitCode(exit.signal);
  return Number.isInteger(exit.code) && exit.code >= 0 && exit.code <= 255 ? exit.code : 255;
}

interface QvmErrorLike extends Error {
  code: string;
  exitCode: number;
}

/** QvmError, recognized without importing @qvm/protocol (which loads grpc-js) at start-up. */
export function isQvmErrorLike(err: unknown): err is QvmErrorLike {
  return err instanceof Error && err.name === "QvmError" && typeof (err as QvmErrorLike).exitCode === "number";
}

interface OclifErrorLike extends Error {
  code?: string;
  oclif: { exit?: number | false };
}

function isOclifError(err: unknown): err is OclifErrorLike {
  return err instanceof Error && typeof (err as OclifErrorLike).oclif === "object" && (err as OclifErrorLike).oclif !== null;
}

/**
 * One line: parser messages span several lines ("Missing 1 required arg:\nvm  The domain"), may
 * start with a header and end in a hint that do not fit the format, and may be colored.
 */
export function oneLine(message: string): string {
  const lines = message
    .replace(/\x1b\[[0-9;]*m/g, "")
    .split("\n")
    .map((l) => l.replace(/\s+/g, " ").trim())
    .filter((l) => l && !/^See more help with/.test(l) && !/^The following errors? occurred:?$/.test(l));
  let out = "";
  for (const l of lines) out += out ? `${out.endsWith(":") ? " " : "; "}${l}` : l;
  return out.replace(/:$/, "");
}

export interface Outcome {
  exitCode: number;
  /** The line for stderr (without the "qvm: " prefix); none for a plain exit. */
  message?: string;
  /** Only for unexpected errors, and only printed with QVM_DEBUG=1. */
  stack?: string;
}

/** What the CLI prints and returns for an error thrown by a command or by oclif. */
export function outcomeOf(err: unknown): Outcome {
  if (err instanceof SilentExit) return { exitCode: err.exitCode };
  if (isQvmErrorLike(err)) return { exitCode: err.exitCode, message: oneLine(err.message) };
  if (err instanceof UsageError || err instanceof Failure) return { exitCode: err.exitCode, message: oneLine(err.message) };
  if (isOclifError(err)) {
    // this.exit(n) inside oclif (e.g. after --help): no message.
    if (err.code === "EEXIT") return { exitCode: typeof err.oclif.exit === "number" ? err.oclif.exit : 0 };
    // Parse errors, unknown commands and flags: all usage errors.
    return { exitCode: 2, message: `${oneLine(err.message)} (see --help)` };
  }
  const e = err instanceof Error ? err : new Error(String(err));
  return { exitCode: 1, message: `internal error: ${oneLine(e.message || String(err))}`, stack: e.stack };
}
