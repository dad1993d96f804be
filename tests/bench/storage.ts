// Storage figures: creating an AppVM (its private volume; the root is its template's) next to a
// plain copy of the template's root, and the disk space of 10 AppVMs next to one template root.
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { defaultImagesDir, repoRoot } from "@qvm/images";
import { adminV1, domainClassFromWord, domainInWords, type DomainInWords } from "@qvm/protocol";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs } from "@qvm/host-agent/testing";
import type { Figure } from "./admin.js";

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const duBytes = (p: string) => Number(execFileSync("du", ["-s", "-B1", p], { encoding: "utf8" }).split("\t")[0]);

export async function storageFigures(log: (m: string) => void, n = 10): Promise<Record<string, Figure>> {
  const dirs = testDaemonDirs("bench-storage", defaultImagesDir());
  const d = await startTestDaemon(dirs);
  const scratch = mkdtempSync(path.join(os.tmpdir(), "qvm-bench-copy-"));
  try {
    const templates = (await d.client.listDomains({})).domains.filter((x) => x.class === adminV1.DomainClass.DOMAIN_CLASS_TEMPLATE_VM);
    if (!templates.length) throw new Error("no template image: run ./qvm-images build");
    const template = templates[0]!.name;
    const root = (await d.client.listVolumes({ domain: template })).volumes.find((v) => v.name === "root")!.path;
    log(`creating ${n} AppVMs of ${template} and copying its root ${n} times`);
    const create: number[] = [];
    const copy: number[] = [];
    for (let i = 0; i < n; i++) {
      let t0 = performance.now();
      await d.client.createDomain({ name: `app${i}`, class: domainClassFromWord("AppVM"), template, label: "blue", properties: {} });
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

/**
 * Disposable time-to-output: `qvm run --dispvm -- echo hi` (create, boot, run, destroy) next to
 * starting an existing AppVM and running the same command in it (`qvm start` + `qvm run`); then
 * the same command handed a preloaded disposable (`preload-dispvm-max 1`, waited for until it is
 * paused) next to that cold disposable of this run.
 */
export async function disposableFigure(log: (m: string) => void): Promise<Record<string, Figure>> {
  const dirs = testDaemonDirs("bench-dispvm", defaultImagesDir());
  const d = await startTestDaemon(dirs);
  const cli = path.join(repoRoot(), "cli/dist/qvm.js");
  const env = { ...process.env, QVM_RUNTIME_DIR: dirs.runtimeDir, NO_COLOR: "1" };
  const qvm = (...args: string[]) => execFileSync(process.execPath, [cli, ...args], { env, encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
  const disposables = async () => (await d.client.listDomains({})).domains.map(domainInWords).filter((x) => x.class === "DispVM");
  /** Polls until `test` holds of the disposables; throws after `ms`. */
  const until = async (what: string, test: (ds: DomainInWords[]) => boolean, ms: number) => {
    for (const end = Date.now() + ms; !test(await disposables()); await new Promise((r) => setTimeout(r, 250))) {
      if (Date.now() > end) throw new Error(`no ${what} within ${ms / 1000} s`);
    }
  };
  let preloading = false;
  try {
    const template = (await d.client.listDomains({})).domains.find((x) => x.class === adminV1.DomainClass.DOMAIN_CLASS_TEMPLATE_VM)!.name;
    qvm("create", "--template", template, "--label", "red", "--prop", "template_for_dispvms=true", "dvm");
    qvm("create", "--template", template, "--label", "blue", "app");
    log("timing a disposable's time to output and an AppVM's start + run");
    let t0 = performance.now();
    const out = qvm("run", "--dispvm=dvm", "--pass-io", "--", "echo", "hi");
    const disp = performance.now() - t0;
    if (out.trim() !== "hi") throw new Error(`disposable printed ${JSON.stringify(out)}`);
    t0 = performance.now();
    qvm("start", "app");
    qvm("run", "--pass-io", "app", "--", "echo", "hi");
    const app = performance.now() - t0;
    qvm("kill", "app");

    log("preloading a disposable of dvm and timing `qvm run --dispvm` handed it");
    qvm("features", "dvm", "preload-dispvm-max", "1");
    preloading = true;
    await until("paused preloaded disposable", (ds) => ds.some((x) => x.isPreload && x.state === "Paused"), 300_000);
    const [ready] = (await disposables()).filter((x) => x.isPreload);
    t0 = performance.now();
    const warm = qvm("run", "--dispvm=dvm", "--pass-io", "--", "sh", "-c", "echo hi; hostname");
    const preloaded = performance.now() - t0;
    if (warm !== `hi\n${ready!.name}\n`) throw new Error(`the preloaded disposable ${ready!.name} printed ${JSON.stringify(warm)}`);
    return {
      dispvm: { qvm: disp, baseline: app, unit: "ms", qvmLabel: "`qvm run --dispvm` echo hi", baselineLabel: "`qvm start` + `qvm run` of an AppVM" },
      "dispvm preloaded": {
        qvm: preloaded,
        baseline: disp,
        unit: "ms",
        qvmLabel: "`qvm run --dispvm` echo hi, a preloaded disposable ready",
        baselineLabel: "the same with none preloaded (a cold disposable)",
        target: 0.25,
        note: "preload-dispvm-max 1: the disposable was booted and paused beforehand; the figure is its unpause, the Exec, and its destruction",
      },
    };
  } finally {
    // The refill after the hand-out boots in the background: gone before qvmd stops, or its VM would outlive it.
    if (preloading) {
      qvm("features", "dvm", "preload-dispvm-max", "0");
      await until("end of the preloaded disposables", (ds) => ds.length === 0, 300_000).catch((err: Error) => log(err.message));
    }
    await d.stop();
    removeTestDaemonDirs(dirs);
  }
}
