// qvmd's limit flags, end to end through a real qvmd (no VMs): --help names them with their
// defaults, a bad value is refused naming the flag, and each limit a start can reach without
// booting refuses it with RESOURCE_EXHAUSTED naming the numbers and the flag. The kernel bundle
// is a fake (the plan needs one; nothing boots), the domains StandaloneVMs made by qvmd.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminV1, domainClassFromWord } from "@qvm/protocol";
import { qvmdBundle, removeTestDaemonDirs, startTestDaemon, testDaemonDirs, type TestDaemon } from "../testing/test-daemon.js";
import { defaultLimits } from "../domain/admission.js";

/** The defaults depend on this host's RAM (admission.ts). */
const DEFAULT_MAX_RUNNING = defaultLimits().maxRunning;

/** A kernel bundle whose files exist: enough for a start to be planned. */
function fakeKernel(imagesDir: string): void {
  const dir = path.join(imagesDir, "kernels", "fake");
  mkdirSync(dir, { recursive: true });
  for (const f of ["vmlinuz", "initrd.img", "modules.img"]) writeFileSync(path.join(dir, f), "");
  const files = { vmlinuz: "vmlinuz", initrd: "initrd.img", modules: "modules.img" };
  writeFileSync(path.join(dir, "manifest.json"), JSON.stringify({ kind: "kernel", hash: "fake", kernelRelease: "0", packageVersion: "0", builtAt: new Date().toISOString(), files }));
  symlinkSync("fake", path.join(imagesDir, "kernels", "current"));
}

function qvmdRun(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [qvmdBundle(), ...args], { encoding: "utf8", timeout: 10_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("qvmd's limit flags", () => {
  it("--help names every limit with its default", () => {
    const r = qvmdRun(["--help"]);
    expect(r.status).toBe(0);
    for (const flag of ["--max-running N", "--max-guest-memory MIB", "--disk-reserve MIB", "--max-dispvms N", "--max-dispvms-per-source N", "--allow-nested-dispvms"]) {
      expect(r.stdout).toContain(flag);
    }
    expect(r.stdout).toMatch(new RegExp(`--max-running N\\s+domains running at once \\(${DEFAULT_MAX_RUNNING}\\)`));
  });

  it("--admin-group takes a group name, and refuses anything else", () => {
    expect(qvmdRun(["--help"]).stdout).toContain("--admin-group GROUP");
    const r = qvmdRun(["--foreground", "--admin-group", "../etc"]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("--admin-group must be a group name");
  });

  it.each([
    ["--max-running", "0", "from 1 to 100000"],
    ["--max-guest-memory", "64", "from 128 to"],
    ["--disk-reserve", "-1", "from 0 to"],
    ["--max-dispvms", "many", "from 0 to 100000"],
    ["--max-dispvms-per-source", "1.5", "from 0 to 100000"],
  ])("%s %s is refused naming the flag", (flag, value, range) => {
    const r = qvmdRun(["--foreground", `${flag}=${value}`]);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain(`${flag} must be a whole number ${range}`);
  });
});

describe("a real qvmd with tight limits", () => {
  const dirs = testDaemonDirs("limits");
  let d: TestDaemon;

  beforeAll(async () => {
    fakeKernel(dirs.imagesDir);
    d = await startTestDaemon(dirs, 15_000, ["--max-guest-memory", "512", "--max-dispvms", "0"]);
    const mk = (name: string, klass: string, properties: Record<string, string> = {}, template = "") =>
      d.client.createDomain({ name, class: domainClassFromWord(klass), template, label: "red", properties });
    await mk("tmpl", "TemplateVM");
    await mk("big", "StandaloneVM", { memory: "600" });
    await mk("dvm", "AppVM", { template_for_dispvms: "true" }, "tmpl");
  }, 60_000);

  afterAll(async () => {
    await d?.stop();
    removeTestDaemonDirs(dirs);
  });

  it("logs the limits it runs with", () => {
    expect(d.log()).toContain(`limits: ${DEFAULT_MAX_RUNNING} running domains, 512 MiB of guest memory, 2048 MiB kept free on the data disk, 0 disposables (4 per caller), nested disposables refused`);
  });

  it("--max-guest-memory: a start that would pass it fails naming the numbers and the flag", async () => {
    await expect(d.client.startDomain({ name: "big" })).rejects.toMatchObject({
      code: "RESOURCE_EXHAUSTED",
      message: "cannot start big: it needs 600 MiB of guest memory and running domains have 0 MiB of the 512 MiB allowed (qvmd --max-guest-memory MIB); stop a domain or lower big's memory",
    });
    expect((await d.client.getDomain({ name: "big" })).domain?.lastStopReason).toBe("");
  });

  it("--max-dispvms 0: no disposable is made", async () => {
    const call = d.client.exec();
    const failed = new Promise<Error>((resolve) => call.on("error", resolve));
    call.on("data", () => {});
    call.write({ msg: { $case: "start", value: adminV1.ExecStart.fromPartial({ dispvm: "dvm", argv: ["true"] }) } });
    expect(d.client.errorOf(await failed)).toMatchObject({ code: "RESOURCE_EXHAUSTED", message: "0 disposables already run, the limit is 0 (qvmd --max-dispvms N)" });
    expect((await d.client.listDomains({})).domains.map((x) => x.name).sort()).toEqual(["big", "dvm", "tmpl"]);
  });
});

describe("a real qvmd with a disk reserve larger than its disk", () => {
  it("--disk-reserve: a start fails naming the free space, the overlays and the flag", async () => {
    const dirs = testDaemonDirs("reserve");
    fakeKernel(dirs.imagesDir);
    const d = await startTestDaemon(dirs, 15_000, ["--disk-reserve", String(64 * 1024 * 1024)]);
    try {
      await d.client.createDomain({ name: "sa", class: domainClassFromWord("StandaloneVM"), template: "", label: "red", properties: {} });
      const free = Number(execFileSync("df", ["--output=avail", "-B1M", dirs.dataDir], { encoding: "utf8" }).trim().split("\n").at(-1));
      const err = await d.client.startDomain({ name: "sa" }).catch((e: Error) => e);
      expect(err).toMatchObject({ code: "RESOURCE_EXHAUSTED" });
      // sa's own root may grow to its full 10 GiB: its root-dirty overlay is made over it.
      const m = /the data directory has (\d+) MiB free, but running domains' overlays may still grow by 0 MiB, sa's by 10240 MiB, and 67108864 MiB are kept in reserve \(qvmd --disk-reserve MIB\)/.exec((err as Error).message);
      expect(m, (err as Error).message).not.toBeNull();
      expect(Math.abs(Number(m![1]) - free)).toBeLessThan(256);
    } finally {
      await d.stop();
      removeTestDaemonDirs(dirs);
    }
  });
});
