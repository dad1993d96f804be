// How every failure becomes one line on stderr and an exit code. Failures are QvmErrors, the
// CLI's own (a wrong combination of arguments is INVALID_ARGUMENT) as well as qvmd's, and their
// code's row in the table (@qvm/protocol/contracts) gives the exit code: 1 failed, 2 usage. A
// program run with `qvm run -p` passes its own code through, or 128+N when killed by signal N, as
// shells report it. The contracts load no gRPC, so the CLI imports them at start-up.
import os from "node:os";
import { QVM_ERROR_CODES, QvmError, isQvmError } from "@qvm/protocol/contracts";

/** Ends a command with an exit code and no message (`qvm check`, a failed `qvm tags list TAG`, a program's own code): not a failure to report. */
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
  if (isQvmError(err)) return { exitCode: err.exitCode, message: oneLine(err.message) };
  if (isOclifError(err)) {
    // this.exit(n) inside oclif (e.g. after --help): no message.
    if (err.code === "EEXIT") return { exitCode: typeof err.oclif.exit === "number" ? err.oclif.exit : 0 };
    // Parse errors, unknown commands and flags: all usage errors.
    return outcomeOf(new QvmError("INVALID_ARGUMENT", `${oneLine(err.message)} (see --help)`));
  }
  const e = err instanceof Error ? err : new Error(String(err));
  return { exitCode: QVM_ERROR_CODES.INTERNAL.exit, message: `internal error: ${oneLine(e.message || String(err))}`, stack: e.stack };
}
