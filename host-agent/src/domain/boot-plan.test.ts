// Which starts come from a snapshot (BootPlan.fromSnapshot): disposables on a driver that
// restores, jailed, with no links or devices; the key follows the template's volumes and the
// VM's shape. Fake volumes and images, real store and registry.
import { mkdtempSync, rmSync, utimesSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { EventBus } from "../base/events.js";
import { DomainStore } from "../store/domain-store.js";
import { fakeImages, fakeVolumes, fakeDriver } from "../testing/fake-vms.js";
import type { VolumeStore } from "../storage/volumes.js";
import { DriverTable } from "../vmm/drivers.js";
import { BootPlanner } from "./boot-plan.js";
import { DomainPaths } from "./paths.js";
import { DomainRegistry } from "./registry.js";
import { DEFAULT_VMM_UID_RANGE } from "./vmm-users.js";

let dir: string;
let registry: DomainRegistry;
let volumes: VolumeStore;

function planner(jailed = true) {
  const drivers = new DriverTable([fakeDriver("qemu"), fakeDriver("cloud-hypervisor", { restore: true })]);
  return new BootPlanner({ registry, volumes, images: fakeImages(), drivers, paths: new DomainPaths(path.join(dir, "data"), path.join(dir, "run")), isRunning: () => false, vmmUids: jailed ? DEFAULT_VMM_UID_RANGE : undefined });
}

beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-bootplan-"));
  registry = new DomainRegistry(DomainStore.open(path.join(dir, "data")), new EventBus(), () => false);
  volumes = fakeVolumes(path.join(dir, "volumes"));
  const add = (name: string, klass: "TemplateVM" | "AppVM" | "DispVM", props: Record<string, string | boolean> = {}) => {
    registry.add({ name, class: klass, props: { label: "red", ...props }, features: {}, tags: [], createdAt: "" });
    if (klass !== "DispVM") void volumes.create(name, klass);
  };
  add("tmpl", "TemplateVM");
  add("dvm", "AppVM", { template: "tmpl", template_for_dispvms: true, vmm: "cloud-hypervisor" });
  add("disp1", "DispVM", { template: "dvm", vmm: "cloud-hypervisor" });
  add("disp2", "DispVM", { template: "dvm", vmm: "cloud-hypervisor" });
  add("qdisp", "DispVM", { template: "dvm", vmm: "qemu" });
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("starts from a snapshot", () => {
  it("a jailed disposable on a driver that restores: one key per template and shape", () => {
    const a = planner().plan(registry.get("disp1")).fromSnapshot;
    const b = planner().plan(registry.get("disp2")).fromSnapshot;
    expect(a).toEqual({ template: "dvm", key: expect.stringMatching(/^[0-9a-f]{24}$/) });
    expect(b).toEqual(a);
    registry.setProperty("disp2", "memory", "2048");
    expect(planner().plan(registry.get("disp2")).fromSnapshot?.key).not.toBe(a!.key);
  });

  it("a new template private volume gives a new key", () => {
    const a = planner().plan(registry.get("disp1")).fromSnapshot!.key;
    utimesSync(volumes.files("dvm").private, new Date(), new Date(Date.now() + 5000));
    expect(planner().plan(registry.get("disp1")).fromSnapshot!.key).not.toBe(a);
  });

  it("not an AppVM, not a QEMU disposable, not without the jail", () => {
    expect(planner().plan(registry.get("dvm")).fromSnapshot).toBeUndefined();
    expect(planner().plan(registry.get("qdisp")).fromSnapshot).toBeUndefined();
    expect(planner(false).plan(registry.get("disp1")).fromSnapshot).toBeUndefined();
  });
});
