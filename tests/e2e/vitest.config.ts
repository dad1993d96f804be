// The e2e project of the root vitest.config.ts: real domains, one file at a time (VMs are heavy on
// 2 cores). QVM_VMM=cloud-hypervisor leaves out the files that need QEMU, or every file that boots
// a domain on a host without CH and KVM (e2e-vmm.ts says why; vmm-guard.test.ts reports it).
import { readdirSync } from "node:fs";
import { defineProject } from "vitest/config";
import { excludedFiles } from "./e2e-vmm.js";

const excluded = Object.keys(excludedFiles(readdirSync(__dirname).filter((f) => f.endsWith(".test.ts"))));

export default defineProject({
  test: {
    name: "e2e",
    // Paths are this directory's.
    include: ["**/*.test.ts"],
    exclude: excluded,
    globalSetup: ["global-setup.ts"],
    pool: "forks",
    poolOptions: { forks: { singleFork: true } },
    testTimeout: 300_000,
    hookTimeout: 600_000,
  },
});
