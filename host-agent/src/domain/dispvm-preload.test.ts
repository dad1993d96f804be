// Preloaded disposables with fake VMs and a real store: the pool fills to N one boot at a time
// (booted, then paused), hands each preload to one caller only, refills after a hand-out, drops
// the excess when N drops, backs off after failures instead of looping, replaces outdated or
// dead preloads, counts against the caps and the memory limit, and a new pool takes back what
// an earlier qvmd left paused.
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { Clock } from "../base/clock.js";
import { EventBus, type QvmEvent } from "../base/events.js";
import { KeyedMutex } from "../base/keyed-mutex.js";
import { DomainStore } from "../store/domain-store.js";
import type { VolumeStore } from "../storage/volumes.js";
import { FakeVmFactory, fakeImages, fakeVolumes, type FakeVm, fakeDriver } from "../testing/fake-vms.js";
import { DriverTable } from "../vmm/drivers.js";
import { defaultLimits, type ResourceLimits } from "./admission.js";
import { BootPlanner } from "./boot-plan.js";
import { DispVmPreloads } from "./dispvm-preload.js";
import { DispVms } from "./dispvms.js";
import { ProcessLauncher, type Launched } from "./launcher.js";
import { DomainPaths } from "./paths.js";
import { PRELOAD_COMPLETED, PRELOAD_IN_PROGRESS, PRELOAD_LIST, PRELOAD_MAX } from "./preload-marks.js";
import { DomainRegistry } from "./registry.js";
import { DomainRunner } from "./runner.js";

/** A clock whose sleeps end only when the test moves it on. */
class ManualClock implements Clock {
  t = Date.UTC(2026, 10, 30);
  private timers: Array<{ at: number; wake: () => void }> = [];
  now = () => this.t;
  sleep = (ms: number) => new Promise<void>((wake) => this.timers.push({ at: this.t + ms, wake }));
  advance(ms: number): void {
    this.t += ms;
    for (const tm of this.timers.filter((x) => x.at <= this.t)) tm.wake();
    this.timers = this.timers.filter((x) => x.at > this.t);
  }
}

let dir: string;
let base: string;
let clock: ManualClock;
let events: EventBus;
let seen: QvmEvent[];
let store: DomainStore;
let registry: DomainRegistry;
let runner: DomainRunner;
let volumes: VolumeStore;
let paths: DomainPaths;
let factory: FakeVmFactory;
let dispvms: DispVms;
let pool: DispVmPreloads;
let launcher: ProcessLauncher;
let logs: string[];
/** While set, every start fails with it. */
let failing: string;
let names: number;

function setup(limits: Partial<ResourceLimits> = {}, reuse = false): void {
  const all = { ...defaultLimits(64 * 1024 ** 3), ...limits };
  events = new EventBus(clock);
  events.subscribe((ev) => seen.push(ev));
  const locks = new KeyedMutex();
  // A new qvmd (reuse) on the same directories, or a fresh world.
  if (!reuse) base = mkdtempSync(path.join(dir, "qvmd-"));
  if (!reuse) store = DomainStore.open(path.join(base, "data"));
  registry = new DomainRegistry(store, events, (n) => runner?.isRunning(n) ?? false, clock);
  volumes = fakeVolumes(path.join(base, "volumes"));
  paths = new DomainPaths(path.join(base, "data"), path.join(base, "run"));
  const left = factory?.leftRunning;
  factory = new FakeVmFactory(clock);
  if (reuse && left) for (const [n, vm] of left) factory.leftRunning.set(n, vm);
  const start = factory.start.bind(factory);
  factory.start = async (...args: Parameters<FakeVmFactory["start"]>) => {
    if (failing) throw new Error(failing);
    return start(...args);
  };
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
  dispvms = new DispVms({ registry, volumes, runner, locks, random: () => ((names++ % 9000) + 0.5) / 9999, paths, limits: all });
  pool = new DispVmPreloads({ registry, runner, dispvms, events, clock, log: (m) => logs.push(m) });
  dispvms.usePool(pool);
  launcher = new ProcessLauncher({ registry, runner, dispvms, log: (m) => logs.push(m) });
  if (reuse) return;
  const add = (name: string, klass: "TemplateVM" | "AppVM", props: Record<string, string | boolean> = {}) => {
    registry.add({ name, class: klass, props: { label: "red", ...props }, features: {}, tags: [], createdAt: "" });
    void volumes.create(name, klass);
  };
  add("tmpl", "TemplateVM");
  add("work", "AppVM", { template: "tmpl" });
  add("dvm", "AppVM", { template: "tmpl", template_for_dispvms: true });
  add("dvm2", "AppVM", { template: "tmpl", template_for_dispvms: true });
}

const flush = () => new Promise((r) => setImmediate(r));
async function settled(): Promise<void> {
  for (let i = 0; i < 3; i++) {
    await flush();
    await pool.settled();
  }
}
const launch = (dispvm = "dvm", caller?: string) => launcher.launch({ target: { dispvm }, caller, command: ["true"] });
const preloaded = (dvm = "dvm") => pool.preloads(dvm);
const disposables = () => registry.list().filter((r) => r.class === "DispVM").map((r) => r.name);
const setMax = (dvm: string, n: number) => registry.setFeature(dvm, PRELOAD_MAX, String(n));
const pausedEvents = (name: string) => seen.filter((e) => e.type === "domain-paused" && e.domain === name).length;

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-preload-"));
  clock = new ManualClock();
  seen = [];
  logs = [];
  failing = "";
  names = 0;
  setup();
  pool.start();
});

afterEach(() => {
  pool.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("preloaded disposables", () => {
  it("none unless asked: N is 0 by default, and the global default applies to default_dispvm only", async () => {
    await settled();
    expect(disposables()).toEqual([]);
    registry.setProperty("", "preload_dispvm_max", "1");
    await settled();
    expect(disposables()).toEqual([]); // no default_dispvm yet
    registry.setProperty("", "default_dispvm", "dvm");
    await settled();
    expect(preloaded("dvm")).toHaveLength(1);
    expect(preloaded("dvm2")).toEqual([]);
    // The template's own feature wins over the global default.
    setMax("dvm", 0);
    await settled();
    expect(disposables()).toEqual([]);
  });

  it("fill to N in the background, one boot at a time, each booted then paused and recorded", async () => {
    let open!: () => void;
    factory.gate = new Promise((r) => (open = r));
    setMax("dvm", 2);
    await flush();
    await flush();
    expect(factory.started).toHaveLength(1);
    const first = factory.started[0]!;
    expect(runner.state(first)).toBe("Transient");
    expect(registry.get(first).features).toMatchObject({ [PRELOAD_IN_PROGRESS]: "1" });
    open();
    await settled();
    const names = preloaded();
    expect(names).toHaveLength(2);
    expect(factory.started).toEqual(names);
    for (const n of names) {
      expect(runner.state(n)).toBe("Paused");
      expect(registry.get(n).features).toEqual({ [PRELOAD_COMPLETED]: "1" });
      expect(pool.isPreload(n)).toBe(true);
    }
    expect(registry.get("dvm").features[PRELOAD_LIST]).toBe(names.join(" "));
  });

  it("each preload goes to one caller only, even when many ask at once; the rest get new disposables; the pool refills", async () => {
    setMax("dvm", 2);
    await settled();
    const ready = preloaded();
    const held: Launched[] = await Promise.all([launch("dvm", "work"), launch(), launch()]);
    const got = held.map((h) => h.domain);
    expect(new Set(got).size).toBe(3);
    expect(got.filter((n) => ready.includes(n)).sort()).toEqual([...ready].sort());
    for (const n of ready) {
      expect(runner.state(n)).toBe("Running");
      expect(pool.isPreload(n)).toBe(false);
      expect(registry.get(n).features[PRELOAD_IN_PROGRESS]).toBeUndefined();
    }
    await settled();
    const refilled = preloaded();
    expect(refilled).toHaveLength(2);
    expect(refilled.filter((n) => got.includes(n))).toEqual([]);
    await Promise.all(held.map((h) => h.release()));
    expect(disposables().sort()).toEqual([...refilled].sort());
  });

  it("a preload still booting when asked for goes to the caller as soon as it is up, without a pause", async () => {
    let open!: () => void;
    factory.gate = new Promise((r) => (open = r));
    setMax("dvm", 1);
    await flush();
    const booting = factory.started[0]!;
    const asked = launch();
    await flush();
    open();
    const l = await asked;
    expect(l.domain).toBe(booting);
    expect(pausedEvents(booting)).toBe(0);
    expect(runner.state(booting)).toBe("Running");
    await l.release();
  });

  it("a preloaded disposable cannot be used by name, and is no caller's until handed out", async () => {
    setMax("dvm", 1);
    await settled();
    const [p] = preloaded();
    await expect(launcher.launch({ target: { domain: p! }, caller: "work", command: ["true"] })).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: expect.stringContaining(`${p} is a preloaded disposable of dvm`),
    });
    expect(factory.vms.get(p!)!.execs).toEqual([]);
    expect(runner.state(p!)).toBe("Paused");
  });

  it("lowering N removes the excess, newest first; 0 removes them all", async () => {
    setMax("dvm", 3);
    await settled();
    const [a, b, c] = preloaded();
    setMax("dvm", 1);
    await settled();
    expect(preloaded()).toEqual([a]);
    expect(disposables()).toEqual([a]);
    expect(factory.vms.get(b!)!.gone && factory.vms.get(c!)!.gone).toBe(true);
    expect(registry.get("dvm").features[PRELOAD_LIST]).toBe(a);
    registry.removeFeature("dvm", PRELOAD_MAX);
    await settled();
    expect(disposables()).toEqual([]);
    expect(registry.get("dvm").features[PRELOAD_LIST]).toBeUndefined();
  });

  it("a preload dropped while it boots is destroyed once up, and that is no failure", async () => {
    let open!: () => void;
    factory.gate = new Promise((r) => (open = r));
    setMax("dvm", 1);
    await flush();
    const booting = factory.started[0]!;
    setMax("dvm", 0);
    await flush();
    open();
    await settled();
    expect(disposables()).toEqual([]);
    expect(factory.vms.get(booting)?.gone ?? true).toBe(true);
    expect(logs.join("\n")).not.toContain("cannot preload");
  });

  it("a failed preload is logged and retried after a doubling backoff, never in a loop", async () => {
    failing = "no agent";
    setMax("dvm", 1);
    await settled();
    const attempts = () => logs.filter((l) => l.startsWith("dvm: cannot preload")).length;
    expect(attempts()).toBe(1);
    expect(logs.at(-1)).toMatch(/^dvm: cannot preload a disposable \(disp\d+\), failure 1: no agent; trying again in 5 s$/);
    expect(disposables()).toEqual([]); // nothing left of the failed one
    clock.advance(4_999);
    await settled();
    expect(attempts()).toBe(1);
    clock.advance(1);
    await settled();
    expect(attempts()).toBe(2);
    expect(logs.at(-1)).toContain("failure 2: no agent; trying again in 10 s");
    // A hand-out meanwhile falls back to a new disposable (which fails the same way here).
    await expect(launch()).rejects.toThrow("no agent");
    await settled();
    expect(attempts()).toBe(2);
    failing = "";
    clock.advance(10_000);
    await settled();
    expect(preloaded()).toHaveLength(1);
    expect(logs.at(-1)).toMatch(/is preloaded/);
  });

  it("a paused preload that stops is replaced after a backoff", async () => {
    setMax("dvm", 1);
    await settled();
    const [p] = preloaded();
    (factory.vms.get(p!) as FakeVm).end("the VMM was killed by SIGKILL", false);
    await settled();
    expect(disposables()).toEqual([]);
    expect(logs.join("\n")).toContain(`${p}), failure 1: it stopped while preloaded`);
    clock.advance(5_000);
    await settled();
    expect(preloaded()).toHaveLength(1);
    expect(preloaded()[0]).not.toBe(p);
  });

  it("preloads made before a change to their template, or to its TemplateVM's root, are replaced", async () => {
    setMax("dvm", 1);
    await settled();
    const [p1] = preloaded();
    registry.setProperty("dvm", "memory", "600");
    await settled();
    const [p2] = preloaded();
    expect(p2).not.toBe(p1);
    expect(disposables()).toEqual([p2]);
    // A live property (read at use) keeps it.
    registry.setProperty("dvm", "netvm", "");
    await settled();
    expect(preloaded()).toEqual([p2]);
    // The TemplateVM stopped: it committed a new root.
    await runner.start("tmpl");
    await runner.kill("tmpl");
    await settled();
    expect(preloaded()).toHaveLength(1);
    expect(preloaded()[0]).not.toBe(p2);
  });

  it("preloads count against the disposable caps: the total, but no caller's own", async () => {
    pool.close();
    setup({ maxDispvms: 3, maxDispvmsPerSource: 1 });
    pool.start();
    setMax("dvm", 2);
    await settled();
    expect(preloaded()).toHaveLength(2);
    // dvm2's new disposable is the third; a fourth is refused, in total.
    const other = await launch("dvm2", "work");
    await expect(launch("dvm2")).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED", message: "3 disposables already run, the limit is 3 (qvmd --max-dispvms N)" });
    // A preload handed out adds nothing to the total, but counts for its caller from then on.
    const mine = await launch("dvm");
    expect(preloaded()).not.toContain(mine.domain);
    await expect(launch("dvm")).rejects.toMatchObject({ message: expect.stringContaining("dom0 already has 1 disposables") });
    await Promise.all([other.release(), mine.release()]);
  });

  it("running preloads count against the guest memory limit: a preload that does not fit is refused and retried later", async () => {
    pool.close();
    setup({ maxGuestMemoryMiB: 1000 }); // memory defaults to 400 MiB: two fit
    pool.start();
    setMax("dvm", 3);
    await settled();
    expect(preloaded()).toHaveLength(2);
    expect(logs.join("\n")).toMatch(/dvm: cannot preload a disposable \(disp\d+\), failure 1: cannot start disp\d+: it needs 400 MiB of guest memory/);
    await expect(runner.start("work")).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED" });
  });

  it("a new pool takes back paused, completed preloads; one in progress is left for the boot to destroy", async () => {
    setMax("dvm", 2);
    await settled();
    const [kept, interrupted] = preloaded();
    // A claim whose hand-out a crash interrupted: still marked in progress.
    registry.setFeature(interrupted!, PRELOAD_IN_PROGRESS, "1");
    pool.close();
    await runner.detachAll();
    for (const n of [kept!, interrupted!]) {
      factory.leftRunning.set(n, factory.vms.get(n)!);
      mkdirSync(path.join(base, "run", "domains", n), { recursive: true });
    }
    setup({}, true);
    await runner.reattachAll();
    const adopted = pool.adopt();
    expect([...adopted]).toEqual([kept]);
    expect(pool.isPreload(kept!)).toBe(true);
    expect(pool.isPreload(interrupted!)).toBe(false);
    expect(registry.get("dvm").features[PRELOAD_LIST]).toBe(kept);
    await dispvms.destroy(interrupted!); // what core/boot.ts does with it
    pool.start();
    await settled();
    expect(preloaded()).toHaveLength(2);
    expect(preloaded()[0]).toBe(kept);
    const l = await launch();
    expect(l.domain).toBe(kept);
    await l.release();
  });

  it("draining a template (its removal) destroys its preloads and preloads none until resumed", async () => {
    setMax("dvm", 2);
    await settled();
    const resume = await pool.drain("dvm");
    await settled();
    expect(disposables()).toEqual([]);
    registry.remove("dvm");
    resume();
    await settled();
    expect(disposables()).toEqual([]);
  });
});
