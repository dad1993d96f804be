import { describe, expect, it } from "vitest";
import { Errors } from "@oclif/core";
import { QVM_ERROR_CODES, QvmError, type QvmErrorCode } from "@qvm/protocol/contracts";
import { SilentExit, oneLine, outcomeOf, processExitCode, signalExitCode } from "./errors.js";

describe("outcomeOf: exit codes and the one line printed", () => {
  it("maps every QvmError code to its exit code (2 for INVALID_ARGUMENT, else 1), with the message", () => {
    for (const code of Object.keys(QVM_ERROR_CODES) as QvmErrorCode[]) {
      const o = outcomeOf(new QvmError(code, `it failed: ${code}`));
      expect(o).toEqual({ exitCode: code === "INVALID_ARGUMENT" ? 2 : 1, message: `it failed: ${code}` });
    }
  });

  it("keeps a multi-line QvmError message on one line", () => {
    expect(outcomeOf(new QvmError("VMM_FAILED", "QEMU died:\n  qemu: bad\n")).message).toBe("QEMU died: qemu: bad");
  });

  it("treats oclif's parse errors as usage errors (2)", () => {
    const o = outcomeOf(new Errors.CLIError("Missing 1 required arg:\nvm  The domain\nSee more help with --help", { exit: 2 }));
    expect(o).toEqual({ exitCode: 2, message: "Missing 1 required arg: vm The domain (see --help)" });
    expect(outcomeOf(new Errors.CLIError("command nope not found")).exitCode).toBe(2);
  });

  it("passes oclif's exit(n) through silently", () => {
    expect(outcomeOf(new Errors.ExitError(0))).toEqual({ exitCode: 0 });
    expect(outcomeOf(new Errors.ExitError(3))).toEqual({ exitCode: 3 });
  });

  it("maps the CLI's own errors, which are QvmErrors too, and a silent exit", () => {
    expect(outcomeOf(new QvmError("INVALID_ARGUMENT", "give a VM"))).toEqual({ exitCode: 2, message: "give a VM" });
    expect(outcomeOf(new QvmError("MISSING_DEPENDENCY", "not built"))).toEqual({ exitCode: 1, message: "not built" });
    expect(outcomeOf(new SilentExit(1))).toEqual({ exitCode: 1 });
  });

  it("knows QvmError whether it was imported alone or through the gRPC side of @qvm/protocol", async () => {
    const p = await import("@qvm/protocol");
    expect(p.QvmError).toBe(QvmError);
    expect(outcomeOf(new p.QvmError("NOT_FOUND", "no such domain"))).toEqual({ exitCode: 1, message: "no such domain" });
  });

  it("reports anything else as an internal error (1), keeping the stack for QVM_DEBUG", () => {
    const o = outcomeOf(new TypeError("x is undefined"));
    expect(o.exitCode).toBe(1);
    expect(o.message).toBe("internal error: x is undefined");
    expect(o.stack).toContain("TypeError");
    expect(outcomeOf("a string").message).toBe("internal error: a string");
  });
});

describe("oneLine", () => {
  it("drops oclif's header, hint and colors, and separates items", () => {
    expect(oneLine("The following errors occurred:\n  \x1b[2m--a cannot be used with --b\n  --b cannot be used with --a\x1b[22m\nSee more help with --help")).toBe(
      "--a cannot be used with --b; --b cannot be used with --a",
    );
  });
});

describe("exit codes of a process run with qvm run", () => {
  it("passes the exit code through", () => {
    expect(processExitCode({ code: 0, signal: "" })).toBe(0);
    expect(processExitCode({ code: 3, signal: "" })).toBe(3);
    expect(processExitCode({ code: 255, signal: "" })).toBe(255);
  });
  it("reports death by signal N as 128+N, as shells do", () => {
    expect(processExitCode({ code: 0, signal: "SIGKILL" })).toBe(137);
    expect(processExitCode({ code: -1, signal: "SIGTERM" })).toBe(143);
    expect(signalExitCode("SIGINT")).toBe(130);
    expect(signalExitCode("SIGHUP")).toBe(129);
    expect(signalExitCode("sigsegv")).toBe(139);
  });
  it("never returns a code the shell cannot represent", () => {
    expect(processExitCode({ code: 999, signal: "" })).toBe(255);
    expect(processExitCode({ code: -2, signal: "" })).toBe(255);
    expect(signalExitCode("SIGNOPE")).toBe(1);
  });
});
