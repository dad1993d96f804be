import os from "node:os";
import { describe, expect, it } from "vitest";
import { EXEC_SIGNALS, EXIT_SIGNALS, isExecSignal, isExitSignal } from "./signals.js";

describe("signal lists", () => {
  it("names Linux's signals 1 to 31 in number order for exit reports", () => {
    const numbers = EXIT_SIGNALS.map((s) => (os.constants.signals as Record<string, number | undefined>)[s]);
    expect(numbers).toEqual(Array.from({ length: 31 }, (_, i) => i + 1));
  });

  it("lets a caller send only signals an exit may also report, and no fault signal", () => {
    for (const s of EXEC_SIGNALS) expect(isExitSignal(s), s).toBe(true);
    for (const s of ["SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT"]) expect(isExecSignal(s), s).toBe(false);
  });

  it("refuses anything that is not a name on the list", () => {
    for (const bad of ["sigterm", "TERM", "15", "", "SIGRTMIN", 15, undefined]) {
      expect(isExecSignal(bad)).toBe(false);
      expect(isExitSignal(bad)).toBe(false);
    }
  });
});
