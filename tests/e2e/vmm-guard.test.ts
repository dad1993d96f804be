// Says which VMM the e2e run uses, and, when this host cannot run it, that the domain tests were
// left out and why (vitest.config.ts leaves them out; e2e-vmm.ts decides).
import { readdirSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { e2eVmm, excludedFiles, vmmMissing } from "./e2e-vmm.js";

describe(`e2e VMM: ${e2eVmm()}`, () => {
  const missing = vmmMissing();
  it.skipIf(missing !== undefined)(`this host runs ${e2eVmm()} domains`, () => {
    expect(vmmMissing()).toBeUndefined();
  });
  it.skipIf(missing === undefined)(`skipped domain tests: ${missing ?? ""}`, () => {});
  it("leaves out only files it can name a reason for", () => {
    const files = readdirSync(__dirname).filter((f) => f.endsWith(".test.ts"));
    for (const [f, why] of Object.entries(excludedFiles(files))) {
      expect(files).toContain(f);
      expect(why.length).toBeGreaterThan(10);
    }
  });
});
