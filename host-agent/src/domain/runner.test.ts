// The power-state machine of DomainRunner, table-tested with a fake VM factory and a fake clock:
// transitions, refusals, start/stop races, dependencies, that attachments never leak (stop,
// kill, a VMM crash, a qvmd exit and re-attach), volatile overlays discarded on every exit, and
// the start admission (running domains, guest memory, the data disk's room for overlays).
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { QvmError } from "@qvm/protocol";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EventBus, type QvmEvent } from "../base/events.js";
import { KeyedMutex } from "../base/keyed-mutex.js";
import { toDisposable } from "../base/disposables.js";
import type { Clock } from "../base/clock.js";
import { DomainStore } from "../store/domain-store.js";
import { VolumeKey } from "../storage/volume-key.js";
import { FakeVm, FakeVmFactory, fakeDriver } from "../testing/fake-vms.js";
import { defaultLimits, type ResourceLimits } from "./admission.js";
import type { Attacher } from "./attachments.js";
import type { BootPlan } from "./boot-plan.js";
import { DomainPaths } from "./paths.js";
import { DomainRegistry } from "./registry.js";
import type { PowerStateWord } from "@qvm/protocol/contracts";
import { DomainRunner } from "./runner.js";

class FakeClock implements Clock {
  t = Date.UTC(2026, 10, 30);
  now = () => this.t;
  sleep = async (ms: number) => void (this.t += ms);
}

/** An attacher of each holder kind that records what is attached now. */
function recordingAttachers(live: Set<string>, log: string[]): Attacher[] {
  return (["qvmd", "vmm"] as const).map((holder) => ({
    name: `${holder} thing`,
    holder,
    async attach({ name, reattached }) {
      const key = `${holder}:${name}`;
      live.add(key);
      log.push(`${reattached ? "reattach" : "attach"} ${key}`);
      return toDisposable(() => void live.delete(key));
    },
  }));
}

let dir: string;
let clock: FakeClock;
let factory: FakeVmFactory;
let events: QvmEvent[];
let registry: DomainRegistry;
let runner: DomainRunner;
let attached: Set<string>;
let attachLog: string[];
let commits: string[];
let discards: string[];
/** The fake data disk: free bytes, and how far each domain's overlays may grow. */
let disk: { freeBytes: number; growth: number };
let limits: ResourceLimits;

const GIB = 1024 ** 3;
let unlockedKeys: VolumeKey[] = [];
/** What the plan's driver says of this host (a missing VMM throws its install step). */
let hostCheck: () => Promise<void> = async () => {};
let integrityCheck: () => Promise<void> = async () => {};

function makeRunner(): DomainRunner {
  const bus = new EventBus(clock);
  bus.subscribe((ev) => events.push(ev));
  registry = new DomainRegistry(DomainStore.open(dir), bus, (n) => runner?.isRunning(n) ?? false);
  const plan = (rec: { name: string }): BootPlan => ({
    name: rec.name,
    vmm: "fake",
    driver: { ...fakeDriver("fake"), checkHost: () => hostCheck() },
    dependencies: String(registry.resolve(registry.get(rec.name), "netvm")) ? [String(registry.resolve(registry.get(rec.name), "netvm"))] : [],
    kernel: undefined as never,
    runtimeDir: path.join(dir, "run", rec.name),
    logDir: path.join(dir, "logs", rec.name),
    memoryMiB: Number(registry.resolve(registry.get(rec.name), "memory")),
    vcpus: 1,
    kernelArgs: [],
    agentTimeoutMs: 1000,
    nics: [],
    devices: [],
    channels: [],
    checkIntegrity: () => integrityCheck(),
    // "vault…" domains are encrypted: unlocked by "s3cret" only, and their disks carry the key.
    ...(rec.name.startsWith("vault")
      ? {
          unlock: async (passphrase: string) => {
            if (passphrase !== "s3cret") throw new QvmError("PERMISSION_DENIED", `wrong passphrase for ${rec.name}`);
            const key = VolumeKey.random();
            unlockedKeys.push(key);
            return key;
          },
        }
      : {}),
    prepareDisks: async (key?: VolumeKey) => (key ? [{ serial: "private", path: "/x", format: "qcow2" as const, readonly: false, key }] : []),
    overlayBytes: async () => disk.growth,
  });
  return new DomainRunner({
    registry,
    planner: { plan },
    vms: factory,
    storage: {
      commitRoot: async (n) => void commits.push(n),
      discardVolatile: (n) => void discards.push(n),
      overlayGrowth: async () => disk.growth,
      freeBytes: () => disk.freeBytes,
      checkGrow: async () => {},
      growPending: () => false,
      growDone: () => {},
      prepareNextStart: () => {},
    },
    attachers: recordingAttachers(attached, attachLog),
    events: bus,
    locks: new KeyedMutex(),
    paths: new DomainPaths(dir, path.join(dir, "run")),
    log: () => {},
    limits,
  });
}

function define(name: string, klass: "AppVM" | "StandaloneVM" = "StandaloneVM", props: Record<string, string | boolean> = {}): void {
  registry.add({ name, class: klass, props: { label: "red", ...props }, features: {}, tags: [], createdAt: "" });
}

const settle = () => new Promise((r) => setTimeout(r, 0));
const types = () => events.filter((e) => e.domain !== "" && !e.type.startsWith("domain-add")).map((e) => `${e.type} ${e.domain}`);

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-runner-"));
  clock = new FakeClock();
  factory = new FakeVmFactory(clock);
  events = [];
  attached = new Set();
  attachLog = [];
  commits = [];
  discards = [];
  disk = { freeBytes: 1000 * GIB, growth: 0 };
  limits = defaultLimits(64 * GIB);
  runner = makeRunner();
  define("work");
  define("net", "StandaloneVM", { provides_network: true });
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

type Step = "start" | "pause" | "unpause" | "shutdown" | "kill" | "crash";

async function run(step: Step, name = "work"): Promise<void> {
  switch (step) {
    case "start":
      return runner.start(name);
    case "pause":
      return runner.pause(name);
    case "unpause":
      return runner.unpause(name);
    case "shutdown":
      await runner.shutdown(name, { wait: true, force: false });
      return;
    case "kill":
      return runner.kill(name);
    case "crash":
      factory.vms.get(name)!.end("the VMM was killed by SIGKILL", false);
      await settle();
      return;
  }
}

describe("DomainRunner power states", () => {
  const transitions: Array<{ steps: Step[]; state: PowerStateWord; events: string[] }> = [
    { steps: ["start"], state: "Running", events: ["domain-pre-start work", "domain-start work"] },
    { steps: ["start", "pause"], state: "Paused", events: ["domain-pre-start work", "domain-start work", "domain-paused work"] },
    { steps: ["start", "pause", "unpause"], state: "Running", events: ["domain-pre-start work", "domain-start work", "domain-paused work", "domain-unpaused work"] },
    { steps: ["start", "shutdown"], state: "Halted", events: ["domain-pre-start work", "domain-start work", "domain-pre-shutdown work", "domain-shutdown work"] },
    { steps: ["start", "kill"], state: "Halted", events: ["domain-pre-start work", "domain-start work", "domain-shutdown work"] },
    { steps: ["start", "crash"], state: "Halted", events: ["domain-pre-start work", "domain-start work", "domain-shutdown work"] },
    { steps: ["start", "pause", "kill"], state: "Halted", events: ["domain-pre-start work", "domain-start work", "domain-paused work", "domain-shutdown work"] },
    { steps: ["start", "shutdown", "start"], state: "Running", events: ["domain-pre-start work", "domain-start work", "domain-pre-shutdown work", "domain-shutdown work", "domain-pre-start work", "domain-start work"] },
  ];
  it.each(transitions)("$steps -> $state", async ({ steps, state, events: expected }) => {
    for (const s of steps) await run(s);
    await settle();
    expect(runner.state("work")).toBe(state);
    expect(types()).toEqual(expected);
    expect(events.every((e) => e.time === new Date(clock.t).toISOString())).toBe(true);
  });

  const refusals: Array<{ steps: Step[]; then: Step; message: RegExp }> = [
    { steps: ["start"], then: "start", message: /work is already running/ },
    { steps: ["start", "pause"], then: "start", message: /work is already paused/ },
    { steps: [], then: "pause", message: /work is not running/ },
    { steps: [], then: "shutdown", message: /work is not running/ },
    { steps: [], then: "kill", message: /work is not running/ },
    { steps: ["start"], then: "unpause", message: /work is not paused/ },
    { steps: ["start", "pause"], then: "pause", message: /work is already paused/ },
    { steps: ["start", "kill"], then: "unpause", message: /work is not running/ },
  ];
  it.each(refusals)("$steps then $then is refused: $message", async ({ steps, then, message }) => {
    for (const s of steps) await run(s);
    const before = runner.state("work");
    await expect(run(then)).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(message) });
    expect(runner.state("work")).toBe(before);
  });

  it("is Transient while the VM starts, and a second start meanwhile is refused", async () => {
    let open!: () => void;
    factory.gate = new Promise((r) => (open = r));
    const first = runner.start("work");
    await settle();
    expect(runner.state("work")).toBe("Transient");
    expect(runner.isRunning("work")).toBe(true);
    const second = runner.start("work");
    open();
    await first;
    await expect(second).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: "work is already running" });
    expect(factory.started).toEqual(["work"]);
  });

  it("starts once for racing ensureRunning calls", async () => {
    const [a, b] = await Promise.all([runner.ensureRunning("work", false), runner.ensureRunning("work", false)]);
    expect(a).toBe(b);
    expect(factory.started).toEqual(["work"]);
  });

  it("ensureRunning with autostart off refuses a halted domain", async () => {
    await expect(runner.ensureRunning("work", true)).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringContaining("--no-autostart") });
    expect(factory.started).toEqual([]);
  });

  it("a VMM missing on this host refuses the start with its install step, before anything is made", async () => {
    hostCheck = async () => {
      throw new QvmError("MISSING_DEPENDENCY", "cloud-hypervisor not found: install the static binary");
    };
    try {
      await expect(runner.start("work")).rejects.toMatchObject({ code: "MISSING_DEPENDENCY", message: expect.stringContaining("install the static binary") });
    } finally {
      hostCheck = async () => {};
    }
    expect(runner.state("work")).toBe("Halted");
    expect(factory.started).toEqual([]);
    expect(types()).toEqual([]);
  });

  it("an image that changed behind qvm's back refuses the start, before anything is made", async () => {
    integrityCheck = async () => {
      throw new QvmError("CORRUPT_STATE", "kernel bundle abc: /x/modules.img does not match its manifest");
    };
    try {
      await expect(runner.start("work")).rejects.toMatchObject({ code: "CORRUPT_STATE", message: expect.stringContaining("does not match its manifest") });
    } finally {
      integrityCheck = async () => {};
    }
    expect(runner.state("work")).toBe("Halted");
    expect(factory.started).toEqual([]);
    expect(types()).toEqual([]);
  });

  it("a failed start leaves the domain Halted with the reason", async () => {
    factory.failNext = "the agent of work did not answer";
    await expect(runner.start("work")).rejects.toMatchObject({ code: "AGENT_TIMEOUT" });
    expect(runner.state("work")).toBe("Halted");
    expect(runner.lastStopReason("work")).toBe("the agent of work did not answer");
    expect(types()).toEqual(["domain-pre-start work", "domain-start-failed work"]);
  });

  it("a crash is Halted with the VMM's reason", async () => {
    await run("start");
    await run("crash");
    expect(runner.lastStopReason("work")).toBe("the VMM was killed by SIGKILL");
    expect(events.at(-1)?.fields).toEqual({ reason: "the VMM was killed by SIGKILL", clean: "false" });
  });

  it("a guest that does not power off stays Running without --force, and is killed with it", async () => {
    await run("start");
    factory.vms.get("work")!.guest = "hangs";
    const t0 = clock.t;
    await expect(runner.shutdown("work", { wait: true, force: false })).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringContaining("still runs") });
    expect(clock.t - t0).toBe(60_000); // shutdown_timeout's default, on the fake clock
    expect(runner.state("work")).toBe("Running");
    await runner.shutdown("work", { wait: true, force: true });
    expect(runner.state("work")).toBe("Halted");
  });

  it("pause is refused while shutting down", async () => {
    await run("start");
    const vm = factory.vms.get("work")!;
    let powerOff!: () => void;
    vm.shutdown = () =>
      new Promise((resolve) => {
        powerOff = () => {
          vm.end("the guest powered off", true);
          resolve(vm.exited);
        };
      });
    // Without --wait the call returns at once and the domain stays Halting until the guest is off.
    expect(await runner.shutdown("work", { wait: false, force: false })).toBe("");
    expect(runner.state("work")).toBe("Halting");
    await expect(runner.pause("work")).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: "work is shutting down" });
    await expect(runner.shutdown("work", { wait: true, force: false })).rejects.toMatchObject({ message: "work is already shutting down" });
    powerOff();
    await settle();
    expect(runner.state("work")).toBe("Halted");
  });

  it("commits the root of a stopped StandaloneVM, not of an AppVM", async () => {
    await run("start");
    await run("shutdown");
    await settle();
    expect(commits).toContain("work");
  });
});

describe("DomainRunner dependencies", () => {
  it("starts the netvm first, and refuses to stop it while a user runs", async () => {
    await registry.setProperty("work", "netvm", "net");
    await run("start");
    expect(factory.started).toEqual(["net", "work"]);
    expect(runner.state("net")).toBe("Running");
    await expect(run("shutdown", "net")).rejects.toMatchObject({ message: expect.stringContaining("There are other VMs connected to this VM: work") });
    await runner.shutdown("net", { wait: true, force: true });
    expect(runner.state("net")).toBe("Halted");
  });

  it("a dependency that cannot start stops the start, naming it", async () => {
    await registry.setProperty("work", "netvm", "net");
    factory.failNext = "net's agent is silent";
    await expect(run("start")).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringContaining("work needs net running") });
    expect(runner.state("work")).toBe("Halted");
  });
});

describe("DomainRunner attachments never leak", () => {
  const endings: Step[] = ["shutdown", "kill", "crash"];
  it.each(endings)("everything attached at start is released after %s", async (ending) => {
    await run("start");
    expect([...attached].sort()).toEqual(["qvmd:work", "vmm:work"]);
    expect(runner.attachmentsOf("work").sort()).toEqual(["qvmd:qvmd thing", "vmm:vmm thing"]);
    await run(ending);
    await settle();
    expect([...attached]).toEqual([]);
    expect(runner.attachmentsOf("work")).toEqual([]);
  });

  it("a qvmd exit releases only what qvmd holds; re-attach rebuilds it and a later stop releases all", async () => {
    await run("start");
    const vm = factory.vms.get("work")!;
    await runner.detachAll();
    expect(vm.detached).toBe(true);
    expect(vm.gone).toBe(false);
    expect([...attached]).toEqual(["vmm:work"]);

    // The next qvmd: a new runner over the same store finds the VM left running.
    factory.leftRunning.set("work", vm);
    const { mkdirSync } = await import("node:fs");
    mkdirSync(path.join(dir, "run", "domains", "work"), { recursive: true });
    runner = makeRunner();
    await runner.reattachAll();
    expect(runner.state("work")).toBe("Running");
    expect(attachLog.filter((l) => l.startsWith("reattach"))).toEqual(["reattach qvmd:work", "reattach vmm:work"]);
    await run("kill");
    await settle();
    expect([...attached]).toEqual([]);
  });

  it("re-attach kills a VM whose domain no longer exists", async () => {
    const orphan = new FakeVm("gone", 77, clock);
    factory.leftRunning.set("gone", orphan);
    const { mkdirSync } = await import("node:fs");
    mkdirSync(path.join(dir, "run", "domains", "gone"), { recursive: true });
    await runner.reattachAll();
    expect(orphan.gone).toBe(true);
    expect(runner.runningNames()).toEqual([]);
  });
});

describe("DomainRunner volatile overlays", () => {
  const endings: Step[] = ["shutdown", "kill", "crash"];
  it.each(endings)("are discarded after %s, before domain-shutdown is announced", async (ending) => {
    await run("start");
    expect(discards).toEqual([]);
    await run(ending);
    // A shutdown --wait or a kill returns with them gone; the exit path makes sure for any end.
    if (ending !== "crash") expect(discards).toContain("work");
    await settle();
    expect(new Set(discards)).toEqual(new Set(["work"]));
    expect(types().at(-1)).toBe("domain-shutdown work");
  });

  it("are discarded when a start fails", async () => {
    factory.failNext = "no agent";
    await expect(run("start")).rejects.toMatchObject({ code: "AGENT_TIMEOUT" });
    expect(discards).toEqual(["work"]);
  });

  it("are not discarded when qvmd lets go of a running domain", async () => {
    await run("start");
    await runner.detachAll();
    await settle();
    expect(discards).toEqual([]);
  });
});

describe("DomainRunner admission", () => {
  function fresh(l: Partial<ResourceLimits>): void {
    limits = { ...defaultLimits(64 * GIB), ...l };
    runner = makeRunner();
  }

  it("refuses a start beyond --max-running, naming the limit and the flag, and admits it once one stops", async () => {
    fresh({ maxRunning: 1 });
    await run("start");
    await expect(run("start", "net")).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED", message: expect.stringMatching(/1 domains already run or are starting \(work\), the limit is 1 \(qvmd --max-running N\)/) });
    expect(runner.state("net")).toBe("Halted");
    expect(factory.started).toEqual(["work"]);
    await run("kill");
    await settle();
    await run("start", "net");
    expect(runner.state("net")).toBe("Running");
  });

  it("counts a start still in progress: two racing starts cannot both pass", async () => {
    fresh({ maxRunning: 1 });
    let open!: () => void;
    factory.gate = new Promise((r) => (open = r));
    const first = run("start");
    await settle();
    await expect(run("start", "net")).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED" });
    open();
    await first;
    expect(runner.runningNames()).toEqual(["work"]);
  });

  it("counts a domain admitted while its netvm starts", async () => {
    fresh({ maxRunning: 1 });
    await registry.setProperty("work", "netvm", "net");
    await expect(run("start")).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringContaining("--max-running") });
    expect(factory.started).toEqual([]);
    // Refused, work holds nothing any more: net alone fits.
    await run("start", "net");
    expect(runner.runningNames()).toEqual(["net"]);
  });

  it("refuses a start beyond --max-guest-memory with the numbers", async () => {
    fresh({ maxGuestMemoryMiB: 1000 });
    await registry.setProperty("work", "memory", "600");
    await run("start");
    await registry.setProperty("net", "memory", "500");
    await expect(run("start", "net")).rejects.toMatchObject({
      code: "RESOURCE_EXHAUSTED",
      message: expect.stringMatching(/net: it needs 500 MiB of guest memory and running domains have 600 MiB of the 1000 MiB allowed \(qvmd --max-guest-memory MIB\)/),
    });
    await registry.setProperty("net", "memory", "400");
    await run("start", "net");
  });

  it("refuses a start when the data disk cannot hold every running overlay grown full plus the reserve", async () => {
    fresh({ diskReserveMiB: 1024 });
    disk = { freeBytes: 3 * GIB, growth: 1 * GIB };
    define("third");
    await run("start"); // 0 + 1 GiB + 1 GiB reserve
    await run("start", "net"); // 1 GiB (work) + 1 GiB + 1 GiB reserve = 3 GiB
    await expect(run("start", "third")).rejects.toMatchObject({
      code: "RESOURCE_EXHAUSTED",
      message: expect.stringMatching(/3072 MiB free, but running domains' overlays may still grow by 2048 MiB, third's by 1024 MiB, and 1024 MiB are kept in reserve \(qvmd --disk-reserve MIB\): 1024 MiB short/),
    });
    disk.growth = 0.5 * GIB; // the running ones have written half of what they may
    await run("start", "third");
  });
});

describe("encrypted domains", () => {
  beforeEach(() => {
    unlockedKeys = [];
    define("vault", "AppVM");
  });

  it("start only with their passphrase: none is PASSPHRASE_REQUIRED, a wrong one PERMISSION_DENIED, and nothing starts", async () => {
    await expect(runner.start("vault")).rejects.toMatchObject({ code: "PASSPHRASE_REQUIRED", message: expect.stringMatching(/vault is encrypted.*qvm start vault/) });
    await expect(runner.start("vault", { passphrase: "nope" })).rejects.toMatchObject({ code: "PERMISSION_DENIED" });
    expect(runner.state("vault")).toBe("Halted");
    expect(factory.started).not.toContain("vault");
  });

  it("hold the key only while they run: wiped when the VM ends", async () => {
    await runner.start("vault", { passphrase: "s3cret" });
    const key = runner.volumeKey("vault");
    expect(key).toBe(unlockedKeys[0]);
    expect(key!.wiped).toBe(false);
    await runner.kill("vault");
    await settle();
    expect(runner.volumeKey("vault")).toBeUndefined();
    expect(unlockedKeys[0]!.wiped).toBe(true);
  });

  it("forget the key when the start fails after unlocking", async () => {
    limits = { ...limits, maxRunning: 0 };
    runner = makeRunner();
    await expect(runner.start("vault", { passphrase: "s3cret" })).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED" });
    expect(unlockedKeys[0]!.wiped).toBe(true);
  });

  it("are not started as a dependency without the passphrase", async () => {
    define("client", "AppVM");
    registry.setProperty("vault", "provides_network", "true");
    registry.setProperty("client", "netvm", "vault");
    await expect(runner.start("client")).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/needs vault running.*passphrase/) });
  });
});

