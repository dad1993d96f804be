import { describe, expect, it } from "vitest";
import { runChecked, runCommand } from "./commands.js";

describe("runCommand", () => {
  it("passes stdin, collects stdout and stderr and the exit code", async () => {
    expect(await runCommand("sh", ["-c", "cat; echo oops >&2; exit 3"], { input: "table ip x {}\n" })).toEqual({
      code: 3,
      stdout: "table ip x {}\n",
      stderr: "oops\n",
    });
  });

  it("passes each argument as one argv element, with no shell", async () => {
    expect((await runCommand("printf", ["%s|", "a b", "$(id)", ";"])).stdout).toBe("a b|$(id)|;|");
  });

  it("answers 127 for a program that does not exist", async () => {
    expect(await runCommand("qvm-no-such-program", [])).toMatchObject({ code: 127, stderr: expect.stringContaining("ENOENT") });
  });

  it("finds programs in sbin", async () => {
    expect((await runCommand("ip", ["-V"])).code).toBe(0);
  });
});

describe("runChecked", () => {
  it("returns stdout, or throws INTERNAL naming the command and its error", async () => {
    expect(await runChecked(runCommand, "echo", ["hi"])).toBe("hi\n");
    await expect(runChecked(runCommand, "sh", ["-c", "echo 'RTNETLINK answers: File exists' >&2; exit 2"])).rejects.toMatchObject({
      code: "INTERNAL",
      message: "sh -c echo 'RTNETLINK answers: File exists' >&2; exit 2 failed: RTNETLINK answers: File exists",
    });
    await expect(runChecked(runCommand, "false", [])).rejects.toThrow("false failed: exit code 1");
  });
});
