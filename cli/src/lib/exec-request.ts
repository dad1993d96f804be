// The ExecStart message for `qvm run`, from its parsed command line.
import type { adminV1 } from "@qvm/protocol";
import type { RunCommandSpec } from "./run-args.js";

export interface RunOptions {
  vm: string;
  command: RunCommandSpec;
  user?: string | undefined;
  env?: Record<string, string>;
  cwd?: string | undefined;
  pty: boolean;
  window?: { rows: number; cols: number } | undefined;
  noAutostart: boolean;
  /** Template for a new disposable ("@default": the global default_dispvm); vm is then "". */
  dispvm?: string | undefined;
  /** Run this qrexec service (SERVICE or SERVICE+ARG) instead of a command. */
  service?: string | undefined;
}

export function execStart(o: RunOptions): adminV1.ExecStart {
  const service = o.service !== undefined;
  return {
    domain: o.vm,
    argv: o.command.kind === "argv" && !service ? o.command.argv : [],
    shellCommand: o.command.kind === "shell" && !service ? o.command.command : "",
    env: o.env ?? {},
    cwd: o.cwd ?? "",
    user: o.user ?? "",
    pty: o.pty,
    window: o.pty ? (o.window ?? { rows: 24, cols: 80 }) : undefined,
    noAutostart: o.noAutostart,
    dispvm: o.dispvm ?? "",
    service: o.service ?? "",
  };
}

/** Whether `qvm run` uses a pty: --pty/--no-pty decide; by default, with --pass-io on a terminal. */
export function wantPty(opts: { passIo: boolean; pty: boolean | undefined; stdinIsTTY: boolean }): boolean {
  if (!opts.passIo) return false;
  return opts.pty ?? opts.stdinIsTTY;
}
