import { describe, expect, it } from "vitest";
import { execStart, wantPty } from "./exec-request.js";
import { parseAssignments, protectRunHelp, splitRunArgv } from "./run-args.js";

describe("splitRunArgv (qvm run's command line)", () => {
  it("takes a single word without -- as a shell command", () => {
    expect(splitRunArgv(["work", "ls -l | wc -l"])).toEqual({ flags: [], vm: "work", command: { kind: "shell", command: "ls -l | wc -l" } });
    expect(splitRunArgv(["work", "ls"]).command).toEqual({ kind: "shell", command: "ls" });
  });

  it("takes several words as argv, exactly", () => {
    expect(splitRunArgv(["work", "ls", "-l", "a b"]).command).toEqual({ kind: "argv", argv: ["ls", "-l", "a b"] });
  });

  it("takes anything after -- as argv, even one word", () => {
    expect(splitRunArgv(["work", "--", "ls"]).command).toEqual({ kind: "argv", argv: ["ls"] });
    expect(splitRunArgv(["work", "--", "echo", "--", "-p"]).command).toEqual({ kind: "argv", argv: ["echo", "--", "-p"] });
  });

  it("gives qvm the flags before the VM name, and the command everything after it", () => {
    expect(splitRunArgv(["-p", "-u", "root", "--no-pty", "work", "ls", "-u", "-p"])).toEqual({
      flags: ["-p", "-u", "root", "--no-pty"],
      vm: "work",
      command: { kind: "argv", argv: ["ls", "-u", "-p"] },
    });
    expect(splitRunArgv(["--user=root", "-e", "A=1", "--cwd", "/tmp", "work", "pwd"]).flags).toEqual(["--user=root", "-e", "A=1", "--cwd", "/tmp"]);
  });

  it("does not take a flag's value for the VM name", () => {
    expect(splitRunArgv(["-u", "work", "vm", "id"]).vm).toBe("vm");
  });

  it("refuses a missing VM or command as a usage error", () => {
    expect(() => splitRunArgv([])).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    expect(() => splitRunArgv(["-p"])).toThrow(/missing VM name/);
    expect(() => splitRunArgv(["work"])).toThrow(/missing command/);
    expect(() => splitRunArgv(["work", "--"])).toThrow(/missing command/);
  });
});

describe("protectRunHelp", () => {
  it("keeps a help flag of the remote command away from oclif", () => {
    expect(protectRunHelp(["run", "-p", "work", "ls", "--help"])).toEqual(["run", "-p", "work", "--", "ls", "--help"]);
    expect(protectRunHelp(["run", "work", "git", "-h"])).toEqual(["run", "work", "--", "git", "-h"]);
  });
  it("leaves qvm's own help, explicit --, and other commands alone", () => {
    expect(protectRunHelp(["run", "--help"])).toEqual(["run", "--help"]);
    expect(protectRunHelp(["run", "-p", "--help", "work", "ls"])).toEqual(["run", "-p", "--help", "work", "ls"]);
    expect(protectRunHelp(["run", "work", "--", "ls", "--help"])).toEqual(["run", "work", "--", "ls", "--help"]);
    expect(protectRunHelp(["ls", "work", "--help"])).toEqual(["ls", "work", "--help"]);
  });
});

describe("execStart", () => {
  it("fills exactly one of argv and shellCommand", () => {
    const base = { vm: "work", pty: false, noAutostart: false };
    expect(execStart({ ...base, command: { kind: "argv", argv: ["ls", "-l"] } })).toMatchObject({ domain: "work", argv: ["ls", "-l"], shellCommand: "" });
    expect(execStart({ ...base, command: { kind: "shell", command: "ls | wc" } })).toMatchObject({ argv: [], shellCommand: "ls | wc" });
  });
  it("sends a window size only with a pty", () => {
    const base = { vm: "w", command: { kind: "shell" as const, command: "x" }, noAutostart: true, window: { rows: 50, cols: 132 } };
    expect(execStart({ ...base, pty: true }).window).toEqual({ rows: 50, cols: 132 });
    expect(execStart({ ...base, pty: false }).window).toBeUndefined();
    expect(execStart({ ...base, pty: true, user: "root", cwd: "/tmp", env: { A: "1" } })).toMatchObject({ user: "root", cwd: "/tmp", env: { A: "1" }, noAutostart: true });
  });
});

describe("wantPty", () => {
  it("uses a pty with --pass-io on a terminal, unless told otherwise", () => {
    expect(wantPty({ passIo: true, pty: undefined, stdinIsTTY: true })).toBe(true);
    expect(wantPty({ passIo: true, pty: undefined, stdinIsTTY: false })).toBe(false);
    expect(wantPty({ passIo: true, pty: false, stdinIsTTY: true })).toBe(false);
    expect(wantPty({ passIo: true, pty: true, stdinIsTTY: false })).toBe(true);
    expect(wantPty({ passIo: false, pty: undefined, stdinIsTTY: true })).toBe(false);
  });
});

describe("parseAssignments (--prop, --env)", () => {
  it("splits at the first =, keeping empty values", () => {
    expect(parseAssignments(["memory=800", "netvm=", "kernelopts=a=b"], "--prop")).toEqual({ memory: "800", netvm: "", kernelopts: "a=b" });
    expect(parseAssignments(undefined, "--prop")).toEqual({});
  });
  it("refuses a pair without a name", () => {
    expect(() => parseAssignments(["memory"], "--prop")).toThrow(/--prop must be NAME=VALUE/);
    expect(() => parseAssignments(["=1"], "--env")).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
  });
});

describe("qvm run --dispvm", () => {
  it("takes no VM name: the command follows qvm's flags", () => {
    expect(splitRunArgv(["--dispvm=default-dvm", "--pass-io", "--", "sh", "-c", "echo hi"])).toEqual({
      flags: ["--dispvm=default-dvm", "--pass-io"],
      vm: "",
      command: { kind: "argv", argv: ["sh", "-c", "echo hi"] },
    });
  });

  it("--dispvm alone means the global default_dispvm, and one word is a shell command", () => {
    expect(splitRunArgv(["-p", "--dispvm", "echo hi"])).toEqual({ flags: ["-p", "--dispvm=@default"], vm: "", command: { kind: "shell", command: "echo hi" } });
  });
});
