// A full disk while a domain's volumes are made: a clear error and no half-made domain. The data
// directory is a 1 MiB tmpfs (mounting it needs root, as the test command runs here and in CI).
import { domainClassFromWord } from "@qvm/protocol";
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs } from "../testing/test-daemon.js";

describe("a full disk", () => {
  it("creating a domain fails with an error that says the disk is full, and leaves nothing", async () => {
    const dirs = testDaemonDirs("diskfull");
    mkdirSync(dirs.dataDir, { recursive: true });
    execFileSync("mount", ["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", dirs.dataDir]); // qvmd refuses a data dir others may write
    try {
      const d = await startTestDaemon(dirs);
      try {
        await expect(d.client.createDomain({ name: "big", class: domainClassFromWord("TemplateVM"), template: "", label: "black", properties: {} })).rejects.toMatchObject({
          code: "RESOURCE_EXHAUSTED",
          message: expect.stringMatching(/the disk is full .*free space and try again/),
        });
        expect((await d.client.listDomains({})).domains).toEqual([]);
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
