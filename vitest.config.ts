import { defineConfig } from "vitest/config";

// Tiers (DESIGN.md): unit and integration tests live beside the code as *.test.ts; end-to-end tests
// in tests/e2e boot real domains under QEMU and run one file at a time (VMs are heavy on 2 cores).
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: "unit",
          // Also the benchmark report's pure parts: tests/bench/*.test.ts and scripts/bench-table.mjs's test.
          include: ["{protocol,host-agent,guest-agent,images,cli,gui-proxy}/src/**/*.test.ts", "tests/bench/*.test.ts", "scripts/*.test.mjs"],
          testTimeout: 20_000,
        },
      },
      // End-to-end: tests/e2e/vitest.config.ts (which files a QVM_VMM run leaves out, and why).
      "tests/e2e/vitest.config.ts",
    ],
  },
});
