import { describe, expect, it } from "vitest";
import { requireExecutable } from "./host-tools.js";

describe("host tools", () => {
  it("names the package and the install step when a binary is missing", () => {
    const saved = process.env.PATH;
    process.env.PATH = "/nonexistent";
    try {
      expect(() => requireExecutable("qvm-no-such-vmm", "qemu-system-x86")).toThrow(
        expect.objectContaining({ code: "MISSING_DEPENDENCY", message: expect.stringMatching(/qemu-system-x86.*install-system-deps\.sh/) }),
      );
    } finally {
      process.env.PATH = saved;
    }
  });
  it("rejects an override that is not executable", () => {
    expect(() => requireExecutable("qemu-system-x86_64", "qemu-system-x86", "/etc/passwd")).toThrow(/not an executable/);
  });
  it("finds a binary on PATH", () => {
    expect(requireExecutable("sh", "dash")).toMatch(/\/sh$/);
  });
});
