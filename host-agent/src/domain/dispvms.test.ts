// Disposables cannot multiply: the launcher makes them for a caller, and they are capped per
// caller and in total; a disposable (made for a call or named) may not make one unless allowed;
// a destroyed disposable takes its overlays and logs with it. Fake VMs and volumes, real store.
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EventBus } from "../base/events.js";
import { KeyedMutex } from "../base/keyed-mutex.js";
import { DomainStore } from "../store/domain-store.js";
import { FakeVmFactory, fakeImages, fakeVolumes, fakeDriver } from "../testing/fake-vms.js";
import type { VolumeStore } from "../storage/volumes.js";
import { defaultLimits, type ResourceLimits } from "./admission.js";
import { BootPlanner } from "./boot-plan.js";
import { DispVms } from "./dispvms.js";
import { ProcessLauncher, type Launched } from "./launcher.js";
import { DomainPaths } from "./paths.js";
import { DomainRegistry } from "./registry.js";
import { DomainRunner } from "./runner.js";
import { DriverTable } from "../vmm/drivers.js";

let dir: string;
let registry: DomainRegistry;
let runner: DomainRunner;
let volumes: VolumeStore;
let paths: DomainPaths;
let factory: FakeVmFactory;
let launcher: ProcessLauncher;
let logs: string[];

function setup(limits: Partial<ResourceLimits> = {}): void {
  const base = mkdtempSync(path.join(dir, "qvmd-"));
  const all = { ...defaultLimits(64 * 1024 ** 3), ...limits };
  const events = new EventBus();
  const locks = new KeyedMutex();
  registry = new DomainRegistry(DomainStore.open(path.join(base, "data")), events, (n) => runner?.isRunning(n) ?? false);
  volumes = fakeVolumes(path.join(base, "volumes"));
  paths = new DomainPaths(path.join(base, "data"), path.join(base, "run"));
  factory = new FakeVmFactory();
  const planner = new BootPlanner({ registry, volumes, images: fakeImages(), drivers: new DriverTable([fakeDriver("qemu")]), paths, isRunning: (n) => runner?.isRunning(n) ?? false });
  runner = new DomainRunner({
    registry,
    planner,
    vms: factory,
    storage: { commitRoot: async () => {}, discardVolatile: (n) => volumes.discardVolatile(n), overlayGrowth: async () => 0, freeBytes: () => 1e15, checkGrow: async () => {}, growPending: () => false, growDone: () => {}, prepareNextStart: () => {} },
    attachers: [],
    events,
    locks,
    paths,
    log: (m) => logs.push(m),
    limits: all,
  });
  let n = 0;
  const dispvms = new DispVms({ registry, volumes, runner, locks, random: () => (n++ % 100) / 100, paths, limits: all });
  launcher = new ProcessLauncher({ registry, runner, dispvms, log: (m) => logs.push(m) });
  const add = (name: string, klass: "TemplateVM" | "AppVM" | "DispVM", props: Record<string, string | boolean> = {}) => {
    registry.add({ name, class: klass, props: { label: "red", ...props }, features: {}, tags: [], createdAt: "" });
    if (klass !== "DispVM") void volumes.create(name, klass);
  };
  add("tmpl", "TemplateVM");
  add("work", "AppVM", { template: "tmpl" });
  add("dvm", "AppVM", { template: "tmpl", template_for_dispvms: true });
  add("named", "DispVM", { template: "dvm" });
}

const launch = (caller?: string) => launcher.launch({ target: { dispvm: "dvm" }, caller, command: ["true"] });
const disposables = () => registry.list().filter((r) => r.autoCleanup).map((r) => r.name);

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-dispvms-"));
  logs = [];
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("disposables made for calls", () => {
  it("are capped per caller (dom0 for the admin), naming the flag; a released one makes room", async () => {
    setup({ maxDispvmsPerSource: 2 });
    const held: Launched[] = [await launch("work"), await launch("work")];
    await expect(launch("work")).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED", message: "work already has 2 disposables, the limit per caller is 2 (qvmd --max-dispvms-per-source N)" });
    // Another caller has its own count.
    held.push(await launch(), await launch());
    await expect(launch(undefined)).rejects.toMatchObject({ message: expect.stringContaining("dom0 already has 2 disposables") });
    await held[0]!.release();
    held[0] = await launch("work");
    expect(disposables()).toHaveLength(4);
    await Promise.all(held.map((h) => h.release()));
    expect(disposables()).toEqual([]);
  });

  it("are capped in total, naming the flag", async () => {
    setup({ maxDispvms: 3 });
    const held = [await launch("work"), await launch(), await launch("dvm")];
    await expect(launch("tmpl")).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED", message: "3 disposables already run, the limit is 3 (qvmd --max-dispvms N)" });
    await Promise.all(held.map((h) => h.release()));
  });

  it("--max-dispvms 0 turns them off", async () => {
    setup({ maxDispvms: 0 });
    await expect(launch()).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED" });
    expect(factory.started).toEqual([]);
  });

  it("a disposable may not make one, whether made for a call or named, unless allowed", async () => {
    setup();
    const first = await launch("work");
    await expect(launch(first.domain)).rejects.toMatchObject({
      code: "PERMISSION_DENIED",
      message: `${first.domain} is a disposable, and disposables may not make disposables (qvmd --allow-nested-dispvms allows it)`,
    });
    await expect(launch("named")).rejects.toMatchObject({ code: "PERMISSION_DENIED" });
    expect(disposables()).toEqual([first.domain]);
    await first.release();

    setup({ nestedDispvms: true });
    const outer = await launch("work");
    const inner = await launch(outer.domain);
    await inner.release();
    await outer.release();
  });

  it("one whose start fails no longer counts, and leaves nothing", async () => {
    setup({ maxDispvms: 1 });
    factory.failNext = "no agent";
    await expect(launch()).rejects.toMatchObject({ code: "AGENT_TIMEOUT" });
    expect(disposables()).toEqual([]);
    (await launch()).release();
  });

  it("a destroyed disposable takes its volatile overlays and its logs with it", async () => {
    setup();
    const l = await launch("work");
    expect(existsSync(path.join(paths.logDirOf(l.domain), "console.log"))).toBe(true);
    expect(volumes.volatileNames()).toEqual([l.domain]);
    await l.release();
    expect(existsSync(paths.logDirOf(l.domain))).toBe(false);
    expect(volumes.volatileNames()).toEqual([]);
    expect(registry.store.get(l.domain)).toBeUndefined();
  });
});
