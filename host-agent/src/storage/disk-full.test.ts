// A full disk while a domain's volumes are made: a clear error and no half-made domain. The data
// directory is a 1 MiB tmpfs (needs root to mount, as CI runs; skipped, saying so, elsewhere).
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs } from "../daemon/test-daemon.js";

function canMountTmpfs(): boolean {
  const probe = mkdtempSync(path.join(os.tmpdir(), "qvm-tmpfs-probe-"));
  try {
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", probe], { stdio: "ignore" });
    execFileSync("umount", [probe]);
    return true;
  } catch {
    return false;
  } finally {
    rmSync(probe, { recursive: true, force: true });
  }
}

describe("a full disk", () => {
  it.skipIf(!canMountTmpfs())("creating a domain fails with an error that says the disk is full, and leaves nothing", async () => {
    const dirs = testDaemonDirs("diskfull");
    mkdirSync(dirs.dataDir, { recursive: true });
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dirs.dataDir]);
    try {
      const d = await startTestDaemon(dirs);
      try {
        await expect(d.client.createDomain({ name: "big", klass: "TemplateVM", template: "", label: "black", properties: {} })).rejects.toMatchObject({
          code: "FAILED_PRECONDITION",
          message: expect.stringMatching(/the disk is full .*free space and try again/),
        });
        expect((await d.client.listDomains()).domains).toEqual([]);
        const volumes = path.join(dirs.dataDir, "volumes");
        expect(existsSync(volumes) ? readdirSync(volumes) : []).toEqual([]);
      } finally {
        await d.stop();
      }
    } finally {
      execFileSync("umount", [dirs.dataDir]);
      removeTestDaemonDirs(dirs);
    }
  });
});
