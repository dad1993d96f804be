// `qvm usb plug` in qvmd's domain layer, with the real registry, boot planner and runner over fake
// VMs whose VMM has a fake USB side: plugs stored with the domain (and surviving a reopen of the
// store), what a start makes of them (the controller and a device per plug, the image checked
// first), a plug into a running domain taken at once when it was started with the controller
// (live) and kept for the next start when not, unplug of live and stored devices, every refusal
// naming its fix, and no half state after a failure (the record and the VMM agree).
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync, linkSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { QvmError } from "@qvm/protocol";
import { MAX_USB_PLUGS } from "@qvm/protocol/contracts";
import { EventBus } from "../base/events.js";
import { KeyedMutex } from "../base/keyed-mutex.js";
import { DomainStore } from "../store/domain-store.js";
import { FakeVmFactory, fakeImages, fakeVolumes, fakeDriver } from "../testing/fake-vms.js";
import type { UsbCapability, UsbDeviceSpec } from "../vmm/driver.js";
import { DriverTable } from "../vmm/drivers.js";
import { BootPlanner, type BootPlan } from "./boot-plan.js";
import { DomainPaths } from "./paths.js";
import { DomainRegistry } from "./registry.js";
import { volumeRunStorage } from "./run-storage.js";
import { DomainRunner } from "./runner.js";
import { UsbPlugs } from "./usb-plugs.js";
import type { RunningVm } from "./vm-factory.js";

/** A VMM's USB side as the QEMU driver's behaves: a controller only when started with devices. */
class FakeUsb implements UsbCapability {
  readonly have = new Map<string, UsbDeviceSpec>();
  /** The next add or remove fails with this. */
  failNext: QvmError | undefined;
  readonly calls: string[] = [];
  constructor(readonly controller: boolean) {}
  devices(): string[] {
    return [...this.have.keys()];
  }
  async add(d: UsbDeviceSpec): Promise<void> {
    this.calls.push(`add ${d.id}`);
    this.fail();
    if (!this.controller) throw new QvmError("FAILED_PRECONDITION", "no controller");
    this.have.set(d.id, d);
  }
  async remove(id: string): Promise<void> {
    this.calls.push(`remove ${id}`);
    this.fail();
    if (!this.have.delete(id)) throw new QvmError("NOT_FOUND", `no ${id}`);
  }
  private fail(): void {
    const err = this.failNext;
    this.failNext = undefined;
    if (err) throw err;
  }
}

/** Fake VMs that remember each start's plan and have a FakeUsb set up as the plan says. */
class UsbVms extends FakeVmFactory {
  readonly plans = new Map<string, BootPlan>();
  readonly usb = new Map<string, FakeUsb>();
  override async start(plan: BootPlan): Promise<RunningVm> {
    this.plans.set(plan.name, plan);
    const vm = await super.start(plan);
    const usbDevices = plan.devices.filter((d): d is UsbDeviceSpec => d.kind === "usb");
    const usb = new FakeUsb(usbDevices.length > 0);
    for (const d of usbDevices) usb.have.set(d.id, d);
    this.usb.set(plan.name, usb);
    Object.assign(vm, { capabilities: { usb } });
    return vm;
  }
}

let dir: string;
let vms: UsbVms;
let registry: DomainRegistry;
let runner: DomainRunner;
let plugs: UsbPlugs;
let logs: string[];

function compose(): void {
  const events = new EventBus();
  const locks = new KeyedMutex();
  const paths = new DomainPaths(path.join(dir, "data"), path.join(dir, "run"));
  const volumes = fakeVolumes(path.join(dir, "volumes"));
  registry = new DomainRegistry(DomainStore.open(path.join(dir, "data")), events, (n) => runner?.isRunning(n) ?? false);
  const planner = new BootPlanner({ registry, volumes, images: fakeImages(), drivers: new DriverTable([fakeDriver("qemu")]), paths, isRunning: (n) => runner?.isRunning(n) ?? false });
  runner = new DomainRunner({ registry, planner, vms, storage: volumeRunStorage(volumes, registry, () => {}), attachers: [], events, locks, paths, log: () => {} });
  plugs = new UsbPlugs({ registry, runner, locks, log: (m) => logs.push(m) });
}

function image(name: string, content = "x".repeat(4096)): string {
  const f = path.join(dir, "images", name);
  writeFileSync(f, content);
  return f;
}

const codeOf = async (p: Promise<unknown>) => p.then(() => "ok", (e: QvmError) => e.code);

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-usb-plugs-"));
  mkdirSync(path.join(dir, "data"), { recursive: true });
  mkdirSync(path.join(dir, "images"));
  vms = new UsbVms();
  logs = [];
  compose();
  for (const name of ["sys-usb", "work"]) registry.add({ name, class: "StandaloneVM", props: { label: "red" }, features: {}, tags: [], createdAt: "" });
});

afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("plugs of a halted domain", () => {
  it("stores each with the next free id, persisted, and lists them not live", async () => {
    const stick = image("stick.img");
    expect(await plugs.plug("sys-usb", { kind: "disk", path: stick })).toEqual({ id: "usb1", kind: "disk", path: stick, readOnly: false, live: false });
    expect(await plugs.plug("sys-usb", { kind: "keyboard" })).toEqual({ id: "usb2", kind: "keyboard", path: "", readOnly: false, live: false });
    expect(await plugs.plug("sys-usb", { kind: "disk", path: image("ro.img"), readOnly: true })).toMatchObject({ id: "usb3", readOnly: true });
    await plugs.unplug("sys-usb", "usb2");
    expect((await plugs.plug("sys-usb", { kind: "tablet" })).id).toBe("usb2");
    // Another qvmd reading the same store sees them.
    compose();
    expect(plugs.list("sys-usb").map((p) => [p.id, p.kind, p.live])).toEqual([
      ["usb1", "disk", false],
      ["usb3", "disk", false],
      ["usb2", "tablet", false],
    ]);
    expect(plugs.list("work")).toEqual([]);
  });

  it("boots a domain with plugs with a device per plug on the port of its number; one without, with none", async () => {
    const stick = image("boot.img");
    await plugs.plug("sys-usb", { kind: "disk", path: stick, readOnly: true });
    await plugs.plug("sys-usb", { kind: "tablet" });
    await runner.start("sys-usb");
    await runner.start("work");
    expect(vms.plans.get("sys-usb")!.devices).toEqual([
      { id: "usb1", kind: "usb", address: "1", device: "disk", image: stick, readonly: true },
      { id: "usb2", kind: "usb", address: "2", device: "tablet" },
    ]);
    expect(vms.plans.get("work")!.devices).toEqual([]);
    expect(plugs.list("sys-usb").map((p) => p.live)).toEqual([true, true]);
  });

  it("refuses a start whose stick's image went away, before the VM starts, naming the unplug", async () => {
    const stick = image("gone.img");
    await plugs.plug("sys-usb", { kind: "disk", path: stick });
    rmSync(stick);
    await expect(runner.start("sys-usb")).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringContaining("`qvm usb unplug sys-usb usb1`") });
    expect(vms.started).toEqual([]);
    symlinkSync(image("elsewhere.img"), stick);
    await expect(runner.start("sys-usb")).rejects.toThrow(/is a symbolic link now/);
  });

  it("a clone does not take its source's plugs (an image goes to one domain)", async () => {
    await plugs.plug("sys-usb", { kind: "disk", path: image("clone.img") });
    const clone = registry.prepareClone("sys-usb", "sys-usb2");
    expect(clone.usbPlugs).toBeUndefined();
  });
});

describe("refusals, each naming its fix", () => {
  it("an unknown domain, an unknown kind, a keyboard with an image or read-only", async () => {
    await expect(plugs.plug("nope", { kind: "keyboard" })).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect(() => plugs.list("nope")).toThrow(expect.objectContaining({ code: "NOT_FOUND" }));
    await expect(plugs.plug("sys-usb", { kind: "mouse" as never })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringContaining("disk, keyboard, tablet") });
    await expect(plugs.plug("sys-usb", { kind: "keyboard", path: image("k.img") })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringContaining("qvm usb plug sys-usb --keyboard") });
    await expect(plugs.plug("sys-usb", { kind: "tablet", readOnly: true })).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
  });

  it("a stick without an image, a relative or unusual path, a missing file, a symbolic link, a directory, an empty file", async () => {
    const target = image("t.img");
    const link = path.join(dir, "images", "link.img");
    symlinkSync(target, link);
    const empty = image("empty.img", "");
    const cases: [string | undefined, string, RegExp][] = [
      [undefined, "INVALID_ARGUMENT", /--disk IMAGE/],
      ["t.img", "INVALID_ARGUMENT", /not an absolute path/],
      [`${dir}/images/../images/t.img`, "INVALID_ARGUMENT", /realpath/],
      [path.join(dir, "images/absent.img"), "NOT_FOUND", /does not exist/],
      [link, "INVALID_ARGUMENT", /symbolic link.*realpath/],
      [path.join(dir, "images"), "INVALID_ARGUMENT", /not a regular file/],
      [empty, "INVALID_ARGUMENT", /is empty/],
    ];
    for (const [p, code, message] of cases) {
      await expect(plugs.plug("sys-usb", { kind: "disk", path: p }), String(p)).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
    }
    expect(registry.get("sys-usb").usbPlugs).toBeUndefined();
  });

  it("the same image twice, in this domain or another, by its path or another path to it", async () => {
    const stick = image("twice.img");
    await plugs.plug("sys-usb", { kind: "disk", path: stick });
    for (const [domain, p] of [["sys-usb", stick], ["work", stick]] as const) {
      await expect(plugs.plug(domain, { kind: "disk", path: p, readOnly: true })).rejects.toMatchObject({
        code: "ALREADY_EXISTS",
        message: expect.stringContaining("is already plugged into sys-usb as usb1: an image goes to one domain at a time; unplug it there first (`qvm usb unplug sys-usb usb1`)"),
      });
    }
    const hardLink = path.join(dir, "images", "hard.img");
    linkSync(stick, hardLink);
    await expect(plugs.plug("work", { kind: "disk", path: hardLink })).rejects.toMatchObject({ code: "ALREADY_EXISTS", message: expect.stringContaining(`(as ${stick})`) });
    expect(registry.get("work").usbPlugs).toBeUndefined();
  });

  it("more than MAX_USB_PLUGS, and an unplug of an id the domain does not have", async () => {
    for (let i = 0; i < MAX_USB_PLUGS; i++) await plugs.plug("sys-usb", { kind: "keyboard" });
    await expect(plugs.plug("sys-usb", { kind: "tablet" })).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED", message: expect.stringContaining("unplug one first") });
    await expect(plugs.unplug("sys-usb", "usb9")).rejects.toMatchObject({ code: "NOT_FOUND", message: expect.stringContaining("its USB devices: usb1, usb2") });
    await expect(plugs.unplug("work", "usb1")).rejects.toMatchObject({ code: "NOT_FOUND", message: expect.stringContaining("it has none") });
    await expect(plugs.unplug("nope", "usb1")).rejects.toMatchObject({ code: "NOT_FOUND" });
  });
});

describe("plugs of a running domain", () => {
  it("started with the controller: a device is added at once (live), and unplugged from the VMM", async () => {
    await plugs.plug("sys-usb", { kind: "keyboard" });
    await runner.start("sys-usb");
    const usb = vms.usb.get("sys-usb")!;
    const stick = image("live.img");
    expect(await plugs.plug("sys-usb", { kind: "disk", path: stick, readOnly: true })).toEqual({ id: "usb2", kind: "disk", path: stick, readOnly: true, live: true });
    expect(usb.have.get("usb2")).toEqual({ id: "usb2", kind: "usb", address: "2", device: "disk", image: stick, readonly: true });
    expect(plugs.list("sys-usb").map((p) => [p.id, p.live])).toEqual([["usb1", true], ["usb2", true]]);
    await plugs.unplug("sys-usb", "usb1");
    expect(usb.devices()).toEqual(["usb2"]);
    expect(registry.get("sys-usb").usbPlugs?.map((p) => p.id)).toEqual(["usb2"]);
    await plugs.unplug("sys-usb", "usb2");
    expect(usb.devices()).toEqual([]);
    expect(registry.get("sys-usb").usbPlugs).toBeUndefined();
  });

  it("started without it: stored for the next start (not live), and arrives then", async () => {
    await runner.start("sys-usb");
    const view = await plugs.plug("sys-usb", { kind: "tablet" });
    expect(view).toEqual({ id: "usb1", kind: "tablet", path: "", readOnly: false, live: false });
    expect(vms.usb.get("sys-usb")!.calls).toEqual([]);
    expect(plugs.list("sys-usb")[0]!.live).toBe(false);
    // A stored one is just removed, and plugged again it waits again.
    await plugs.unplug("sys-usb", "usb1");
    await plugs.plug("sys-usb", { kind: "tablet" });
    await runner.shutdown("sys-usb", { wait: true, force: false });
    await runner.start("sys-usb");
    expect(vms.plans.get("sys-usb")!.devices).toEqual([{ id: "usb1", kind: "usb", address: "1", device: "tablet" }]);
    expect(plugs.list("sys-usb")[0]!.live).toBe(true);
  });

  it("a paused domain is refused until unpaused (a frozen VMM answers nothing)", async () => {
    await plugs.plug("sys-usb", { kind: "keyboard" });
    await runner.start("sys-usb");
    await runner.pause("sys-usb");
    await expect(plugs.plug("sys-usb", { kind: "tablet" })).rejects.toMatchObject({ code: "FAILED_PRECONDITION", message: expect.stringContaining("qvm unpause sys-usb") });
    await expect(plugs.unplug("sys-usb", "usb1")).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    expect(registry.get("sys-usb").usbPlugs).toHaveLength(1);
    await runner.unpause("sys-usb");
    expect((await plugs.plug("sys-usb", { kind: "tablet" })).live).toBe(true);
  });

  it("leaves no half state: a VMM that refuses leaves no record, a record that cannot be written leaves no device", async () => {
    await plugs.plug("sys-usb", { kind: "keyboard" });
    await runner.start("sys-usb");
    const usb = vms.usb.get("sys-usb")!;
    usb.failNext = new QvmError("VMM_FAILED", "QMP error: boom");
    expect(await codeOf(plugs.plug("sys-usb", { kind: "disk", path: image("half.img") }))).toBe("VMM_FAILED");
    expect(registry.get("sys-usb").usbPlugs?.map((p) => p.id)).toEqual(["usb1"]);
    expect(usb.devices()).toEqual(["usb1"]);
    // The store cannot write (a full data disk).
    const update = registry.store.update.bind(registry.store);
    registry.store.update = () => {
      throw new QvmError("INTERNAL", "cannot write qvm.json: disk full");
    };
    try {
      expect(await codeOf(plugs.plug("sys-usb", { kind: "tablet" }))).toBe("INTERNAL");
      expect(usb.calls.slice(-2)).toEqual(["add usb2", "remove usb2"]);
      expect(usb.devices()).toEqual(["usb1"]);
    } finally {
      registry.store.update = update;
    }
    // An unplug the VMM refuses keeps the plug, in the record and the VMM.
    usb.failNext = new QvmError("VMM_FAILED", "QMP error: busy");
    expect(await codeOf(plugs.unplug("sys-usb", "usb1"))).toBe("VMM_FAILED");
    expect(registry.get("sys-usb").usbPlugs?.map((p) => p.id)).toEqual(["usb1"]);
    expect(usb.devices()).toEqual(["usb1"]);
  });

  it("after the VM stops, every plug is listed as not live", async () => {
    await plugs.plug("sys-usb", { kind: "keyboard" });
    await runner.start("sys-usb");
    await runner.kill("sys-usb");
    expect(plugs.list("sys-usb").map((p) => p.live)).toEqual([false]);
  });
});
