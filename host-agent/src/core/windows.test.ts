// Windows through the core's commands, with fake VMs whose agent keeps a window table: the
// program name comes from the request, never the guest; bounds; windows that end or whose
// domain stops close with an event naming why.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MAX_WINDOWS_PER_DOMAIN } from "@qvm/protocol/contracts";
import type { QvmEvent } from "../base/events.js";
import { DomainStore } from "../store/domain-store.js";
import { FakeVmFactory, fakeImages, fakeVolumes, fakeDriver } from "../testing/fake-vms.js";
import { composeQvmd } from "./compose.js";
import type { Qvmd } from "./qvmd.js";

let dir: string;
let vms: FakeVmFactory;
let qvmd: Qvmd;
let events: QvmEvent[];
const size = { width: 800, height: 600 };
const settle = () => new Promise((r) => setTimeout(r, 20));

beforeEach(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-windows-"));
  mkdirSync(path.join(dir, "data"), { recursive: true });
  vms = new FakeVmFactory();
  qvmd = composeQvmd({
    dataDir: path.join(dir, "data"),
    runtimeDir: path.join(dir, "run"),
    images: fakeImages(),
    drivers: [fakeDriver("qemu")],
    accel: () => "tcg",
    store: DomainStore.open(path.join(dir, "data")),
    volumes: fakeVolumes(path.join(dir, "volumes"), { freeBytes: 1e15, overlayBytes: 0 }),
    vms,
  });
  await qvmd.boot();
  await qvmd.create({ name: "tmpl", klass: "TemplateVM", label: "black" });
  await qvmd.setProperty("", "default_template", "tmpl");
  await qvmd.create({ name: "work", label: "blue" });
  events = [];
  qvmd.watchEvents((ev) => events.push(ev));
});

afterEach(async () => {
  await qvmd.close();
  rmSync(dir, { recursive: true, force: true });
});

const windowEvents = () => events.filter((e) => e.type.startsWith("window-")).map((e) => ({ type: e.type, domain: e.domain, ...e.fields }));

describe("windows", () => {
  it("opens a window as the domain's default user, starting the domain, named from the request", async () => {
    const w = await qvmd.openWindow({ domain: "work" }, ["/usr/bin/foot", "-e", "sh"], size, false);
    expect(w).toEqual({ domain: "work", windowId: 1, program: "foot", width: 800, height: 600 });
    expect(vms.vms.get("work")!.windows.get(1)).toMatchObject({ argv: ["/usr/bin/foot", "-e", "sh"], user: "user" });
    expect(qvmd.listWindows("")).toEqual([w]);
    expect(windowEvents()).toEqual([{ type: "window-open", domain: "work", window: "1", program: "foot", width: "800", height: "600" }]);
  });

  it("refuses a halted domain with noAutostart, a bad size, no program, and more than the bound", async () => {
    await expect(qvmd.openWindow({ domain: "work" }, ["foot"], size, true)).rejects.toMatchObject({ code: "FAILED_PRECONDITION" });
    await expect(qvmd.openWindow({ domain: "work" }, ["foot"], { width: 10, height: 10 }, false)).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringContaining("out of bounds") });
    await expect(qvmd.openWindow({ domain: "work" }, [], size, false)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    for (let i = 0; i < MAX_WINDOWS_PER_DOMAIN; i++) await qvmd.openWindow({ domain: "work" }, ["foot"], size, false);
    await expect(qvmd.openWindow({ domain: "work" }, ["foot"], size, false)).rejects.toMatchObject({ code: "RESOURCE_EXHAUSTED" });
  });

  it("resizes and closes through the agent", async () => {
    const w = await qvmd.openWindow({ domain: "work" }, ["foot"], size, false);
    await qvmd.resizeWindow("work", w.windowId, 640, 480);
    expect(vms.vms.get("work")!.windows.get(w.windowId)).toMatchObject({ width: 640, height: 480 });
    expect(qvmd.listWindows("work")[0]).toMatchObject({ width: 640, height: 480 });
    await qvmd.closeWindow("work", w.windowId);
    expect(qvmd.listWindows("work")).toEqual([]);
    expect(vms.vms.get("work")!.windows.size).toBe(0);
    await expect(qvmd.closeWindow("work", w.windowId)).rejects.toMatchObject({ code: "NOT_FOUND" });
    expect(windowEvents().at(-1)).toEqual({ type: "window-close", domain: "work", window: "1", reason: "closed" });
  });

  it("closes a window whose program ended, and every window of a domain that stops", async () => {
    const a = await qvmd.openWindow({ domain: "work" }, ["foot"], size, false);
    await qvmd.openWindow({ domain: "work" }, ["xeyes"], size, false);
    vms.vms.get("work")!.endWindow(a.windowId);
    await settle();
    expect(qvmd.listWindows("work").map((w) => w.program)).toEqual(["xeyes"]);
    expect(windowEvents()).toContainEqual({ type: "window-close", domain: "work", window: "1", reason: "the program ended" });
    await qvmd.kill("work");
    await settle();
    expect(qvmd.listWindows("")).toEqual([]);
    expect(windowEvents().at(-1)).toEqual({ type: "window-close", domain: "work", window: "2", reason: "the domain stopped" });
  });

  it("a window the guest lists but qvmd never opened is not shown (the guest cannot name a frame)", async () => {
    await qvmd.openWindow({ domain: "work" }, ["foot"], size, false);
    const vm = vms.vms.get("work")!;
    vm.windows.set(99, { windowId: 99, vsockPort: 20099, width: 100, height: 100, alive: true, argv: ["[dom0] evil"], user: "user" });
    vm.endWindow(12345); // any change notifies the watchers
    await settle();
    expect(qvmd.listWindows("work").map((w) => w.windowId)).toEqual([1]);
    // ...and it is closed in the guest: only a request of qvmd's opens a window.
    expect([...vm.windows.keys()]).toEqual([1]);
  });

  it("keeps the program names in qvmd's own record, outside the VMM's directory, and takes windows back by it", async () => {
    await qvmd.openWindow({ domain: "work" }, ["foot"], size, false);
    const record = path.join(dir, "run", "windows", "work.json");
    expect(JSON.parse(readFileSync(record, "utf8"))).toEqual({ 1: "foot" });
    expect(existsSync(path.join(dir, "run", "domains", "work", "windows.json"))).toBe(false);
    // What a restarted qvmd finds: a window it does not hold in memory but recorded.
    writeFileSync(record, JSON.stringify({ 1: "foot", 5: "gimp", 6: 42 }));
    const vm = vms.vms.get("work")!;
    vm.windows.set(5, { windowId: 5, vsockPort: 20005, width: 100, height: 100, alive: true, argv: ["[dom0] evil"], user: "user" });
    vm.windows.set(6, { windowId: 6, vsockPort: 20006, width: 100, height: 100, alive: true, argv: ["x"], user: "user" });
    vm.endWindow(12345);
    await settle();
    // 5 is named from the record, never the guest; 6's entry is not a name, so it is closed.
    expect(qvmd.listWindows("work").map((w) => [w.windowId, w.program])).toEqual([[1, "foot"], [5, "gimp"]]);
    expect([...vm.windows.keys()]).toEqual([1, 5]);
    expect(windowEvents()).toContainEqual({ type: "window-open", domain: "work", window: "5", program: "gimp", width: "100", height: "100" });
    await qvmd.kill("work");
    await settle();
    expect(existsSync(record)).toBe(false);
  });

  it("--dispvm: a new disposable shows the window and is destroyed with its last window", async () => {
    await qvmd.create({ name: "dvm", label: "red" });
    await qvmd.setProperty("dvm", "template_for_dispvms", "True");
    const a = await qvmd.openWindow({ dispvm: "dvm" }, ["foot"], size, false);
    expect(a.domain).toMatch(/^disp\d+$/);
    const names = () => qvmd.list().map((d) => d.name);
    expect(names()).toContain(a.domain);
    const b = await qvmd.openWindow({ domain: a.domain }, ["xeyes"], size, false);
    await qvmd.closeWindow(a.domain, a.windowId);
    await settle();
    expect(names()).toContain(a.domain);
    vms.vms.get(a.domain)!.endWindow(b.windowId);
    await settle();
    expect(names()).not.toContain(a.domain);
    // A refused request makes no disposable at all.
    await expect(qvmd.openWindow({ dispvm: "dvm" }, ["foot"], { width: 1, height: 1 }, false)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    expect(names().filter((n) => n.startsWith("disp"))).toEqual([]);
  });
});
