// Storage figures: creating an AppVM (its private volume; the root is its template's) next to a
// plain copy of the template's root, and the disk space of 10 AppVMs next to one template root.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { defaultImagesDir } from "@qvm/images";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs } from "@qvm/host-agent";
import type { Figure } from "./admin.js";

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const duBytes = (p: string) => Number(execFileSync("du", ["-s", "-B1", p], { encoding: "utf8" }).split("\t")[0]);

export async function storageFigures(log: (m: string) => void, n = 10): Promise<Record<string, Figure>> {
  const dirs = testDaemonDirs("bench-storage", defaultImagesDir());
  const d = await startTestDaemon(dirs);
  const scratch = mkdtempSync(path.join(os.tmpdir(), "qvm-bench-copy-"));
  try {
    const templates = (await d.client.listDomains()).domains.filter((x) => x.klass === "TemplateVM");
    if (!templates.length) throw new Error("no template image: run ./qvm-images build");
    const template = templates[0]!.name;
    const root = (await d.client.listVolumes(template)).volumes.find((v) => v.name === "root")!.path;
    log(`creating ${n} AppVMs of ${template} and copying its root ${n} times`);
    const create: number[] = [];
    const copy: number[] = [];
    for (let i = 0; i < n; i++) {
      let t0 = performance.now();
      await d.client.createDomain({ name: `app${i}`, klass: "AppVM", template, label: "blue", properties: {} });
      create.push(performance.now() - t0);
      t0 = performance.now();
      execFileSync("cp", ["--sparse=always", root, path.join(scratch, "root.img")]);
      copy.push(performance.now() - t0);
      rmSync(path.join(scratch, "root.img"));
    }
    let apps = 0;
    for (let i = 0; i < n; i++) apps += duBytes(path.join(dirs.dataDir, "volumes", `app${i}`));
    const MiB = 1024 * 1024;
    return {
      "create": { qvm: median(create), baseline: median(copy), unit: "ms", qvmLabel: "create an AppVM", baselineLabel: "cp --sparse of the template root" },
      "disk 10": { qvm: apps / MiB, baseline: duBytes(root) / MiB, unit: "MiB", qvmLabel: `${n} AppVMs on disk`, baselineLabel: "one template root on disk" },
    };
  } finally {
    rmSync(scratch, { recursive: true, force: true });
    await d.stop();
    removeTestDaemonDirs(dirs);
  }
}
