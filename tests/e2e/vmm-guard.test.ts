// Says which VMM the e2e run uses and checks what it leaves out (vitest.config.ts leaves files out;
// e2e-vmm.ts decides): under QEMU nothing; under cloud-hypervisor the QEMU-only files, or, on a
// host that cannot run CH, every file that boots a domain, each with its reason.
import { readdirSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { e2eVmm, excludedFiles, QEMU_ONLY, vmmMissing } from "./e2e-vmm.js";

describe(`e2e VMM: ${e2eVmm()}`, () => {
  const files = readdirSync(__dirname).filter((f) => f.endsWith(".test.ts"));
  const excluded = excludedFiles(files);
  const missing = vmmMissing();

  it(`leaves out only what this host and VMM cannot run, naming why${missing ? ` (here: ${missing})` : ""}`, () => {
    if (e2eVmm() === "qemu") {
      expect(missing).toBeUndefined();
      expect(excluded).toEqual({});
      return;
    }
    for (const f of Object.keys(QEMU_ONLY)) expect(excluded[f]).toBeDefined();
    for (const [f, why] of Object.entries(excluded)) {
      expect(files).toContain(f);
      expect(why).toMatch(missing ? /QVM_VMM=|QEMU backend only/ : /QEMU backend only/);
    }
  });
});
