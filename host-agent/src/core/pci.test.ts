// `qvm pci` in the core, against a fake host (FakeSysfs: these machines have no IOMMU) and fake
// VMs: listing with assignments, Qubes' attach/detach with every refusal, the assignment stored
// with the domain and announced, and what a start makes of it (a DeviceSpec, or a refusal
// before anything starts).
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { QvmEvent } from "../base/events.js";
import type { BootPlan } from "../domain/boot-plan.js";
import type { RunningVm } from "../domain/vm-factory.js";
import { DomainStore } from "../store/domain-store.js";
import { FakeSysfs, LAPTOP_PCI, SAMPLE_PCI_IDS } from "../testing/fake-sysfs.js";
import { FakeVmFactory, fakeImages, fakeVolumes, fakeDriver } from "../testing/fake-vms.js";
import { composeQvmd } from "./compose.js";
import type { Qvmd } from "./qvmd.js";

/** The fake VMs, remembering each start's plan. */
class PlanRecordingVms extends FakeVmFactory {
  readonly plans = new Map<string, BootPlan>();
  override async start(plan: BootPlan): Promise<RunningVm> {
    this.plans.set(plan.name, plan);
    return super.start(plan);
  }
}

let dir: string;
let sysfs: FakeSysfs;
let vms: PlanRecordingVms;
let qvmd: Qvmd;
let store: DomainStore;
let events: QvmEvent[];

async function compose(host: FakeSysfs): Promise<void> {
  vms = new PlanRecordingVms();
  store = DomainStore.open(path.join(dir, "data"));
  qvmd = composeQvmd({
    dataDir: path.join(dir, "data"),
    runtimeDir: path.join(dir, "run"),
    images: fakeImages(),
    drivers: [fakeDriver("qemu")],
    accel: () => "kvm",
    store,
    volumes: fakeVolumes(path.join(dir, "volumes")),
    vms,
    pci: host.host(),
    vmmUids: { base: 900000000, count: 100 },
  });
  await qvmd.boot();
  events = [];
  qvmd.watchEvents((ev) => events.push(ev));
}

beforeEach(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-core-pci-"));
  mkdirSync(path.join(dir, "data"), { recursive: true });
  sysfs = new FakeSysfs(LAPTOP_PCI, { pciIds: SAMPLE_PCI_IDS });
  await compose(sysfs);
  await qvmd.create({ name: "tmpl", klass: "TemplateVM", label: "black" });
  await qvmd.setProperty("", "default_template", "tmpl");
  for (const name of ["sys-net", "sys-usb", "work"]) await qvmd.create({ name, label: "red" });
  events = [];
});

afterEach(async () => {
  await qvmd.close();
  sysfs.remove();
  rmSync(dir, { recursive: true, force: true });
});

const assignEvents = () => events.filter((e) => e.type === "device-assign" || e.type === "device-unassign").map((e) => [e.type, e.domain, e.fields]);

describe("qvm pci in the core", () => {
  it("lists the host's devices with the domain each is assigned to, and only a domain's when asked", async () => {
    await qvmd.attachPci("sys-net", ["0000:02:00.0"], true);
    const { devices, iommu } = qvmd.pciDevices();
    expect(iommu).toBe(true);
    expect(devices).toHaveLength(LAPTOP_PCI.length);
    expect(devices.find((d) => d.bdf === "0000:02:00.0")).toEqual({
      bdf: "0000:02:00.0",
      classCode: 0x028000,
      className: "Network controller",
      vendorId: "8086",
      deviceId: "2723",
      vendorName: "Intel Corporation",
      deviceName: "Wi-Fi 6 AX200",
      driver: "iwlwifi",
      iommuGroup: 8,
      assignedTo: "sys-net",
      present: true,
    });
    expect(qvmd.pciDevices("sys-net").devices.map((d) => d.bdf)).toEqual(["0000:02:00.0"]);
    expect(qvmd.pciDevices("work").devices).toEqual([]);
    expect(() => qvmd.pciDevices("nope")).toThrow(expect.objectContaining({ code: "NOT_FOUND" }));
  });

  it("assigns for the next start: stored with the domain before device-assign, across a restart", async () => {
    expect(await qvmd.attachPci("sys-net", ["0000:02:00.0"], true)).toEqual({ devices: ["0000:02:00.0"], nextStart: false });
    expect(store.get("sys-net")!.pci).toEqual([{ bdf: "0000:02:00.0" }]);
    expect(assignEvents()).toEqual([["device-assign", "sys-net", { devclass: "pci", device: "0000:02:00.0" }]]);
    await qvmd.close();
    await compose(sysfs);
    expect(qvmd.pciDevices("sys-net").devices.map((d) => d.bdf)).toEqual(["0000:02:00.0"]);
  });

  it("says a running domain gets the device at its next start, and keeps a detached one until it stops", async () => {
    await qvmd.start("work");
    expect(await qvmd.attachPci("work", ["0000:03:00.0"], true)).toEqual({ devices: ["0000:03:00.0"], nextStart: true });
    expect(await qvmd.detachPci("work", ["0000:03:00.0"])).toEqual({ devices: ["0000:03:00.0"], nextStart: true });
    await expect(qvmd.attachPci("work", ["0000:03:00.0"], false)).rejects.toThrow(/it arrives at work's next start, so restart it \(`qvm shutdown --wait work && qvm start work`\)$/);
    expect(assignEvents().map(([t]) => t)).toEqual(["device-assign", "device-unassign"]);
    expect(store.get("work")!.pci).toBeUndefined();
  });

  it("refuses, in Qubes' terms, each thing that cannot be assigned, and stores nothing", async () => {
    await qvmd.attachPci("sys-usb", ["0000:00:14.0", "0000:00:14.2"], true);
    await qvmd.detachPci("sys-usb", ["0000:00:14.0"]);
    events = [];
    const cases: Array<[string, string[], boolean, string, RegExp]> = [
      ["sys-net", ["0000:02:00.0"], false, "FAILED_PRECONDITION", /^a PCI device cannot be attached live \(microvm has no hot-plug\): assign it with `qvm pci attach --persistent sys-net 0000:02:00.0`; it arrives at sys-net's next start$/],
      ["sys-net", ["0000:07:00.0"], true, "NOT_FOUND", /^this host has no PCI device 0000:07:00.0; see `qvm pci ls`$/],
      [
        "sys-net",
        ["0000:00:1f.6"],
        true,
        "FAILED_PRECONDITION",
        /^IOMMU group 9 of 0000:00:1f.6 is not viable: it also holds 0000:00:1f.3 \(Audio device, host driver snd_hda_intel\), 0000:00:1f.4 \(SMBus, host driver i801_smbus\); .* together \(`qvm pci attach --persistent sys-net 0000:00:1f.6 0000:00:1f.3 0000:00:1f.4`\)/,
      ],
      ["sys-net", ["0000:00:1f.6", "0000:00:1f.3"], true, "FAILED_PRECONDITION", /^IOMMU group 9 of 0000:00:1f.6 is not viable: it also holds 0000:00:1f.4 \(SMBus/],
      ["work", ["0000:00:14.2"], true, "FAILED_PRECONDITION", /^0000:00:14.2 is assigned to sys-usb: a device goes to one domain; detach it there first \(`qvm pci detach sys-usb 0000:00:14.2`\)$/],
      ["work", ["0000:00:14.0"], true, "FAILED_PRECONDITION", /^0000:00:14.0 shares IOMMU group 3 with 0000:00:14.2, which is assigned to sys-usb/],
      ["sys-usb", ["0000:00:14.2"], true, "ALREADY_EXISTS", /^0000:00:14.2 is already assigned to sys-usb$/],
      ["sys-net", ["0000:02:00.0", "0000:00:1c.0"], true, "FAILED_PRECONDITION", /is a PCI bridge/],
      ["nope", ["0000:02:00.0"], true, "NOT_FOUND", /no domain named "nope"/],
    ];
    for (const [domain, bdfs, persistent, code, message] of cases) {
      await expect(qvmd.attachPci(domain, bdfs, persistent), `${domain} ${bdfs.join(" ")}`).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
    }
    await expect(qvmd.detachPci("sys-usb", ["0000:00:14.2", "0000:02:00.0"])).rejects.toMatchObject({ code: "NOT_FOUND", message: "0000:02:00.0 is not assigned to sys-usb; see `qvm pci ls sys-usb`" });
    expect(events).toEqual([]);
    expect(["sys-net", "work", "sys-usb"].map((n) => store.get(n)!.pci)).toEqual([undefined, undefined, [{ bdf: "0000:00:14.2" }]]);
  });

  it("assigns a group's devices together, one event each", async () => {
    expect(await qvmd.attachPci("sys-net", ["0000:00:1f.6", "0000:00:1f.3", "0000:00:1f.4", "0000:00:1f.6"], true)).toEqual({ devices: ["0000:00:1f.6", "0000:00:1f.3", "0000:00:1f.4"], nextStart: false });
    expect(assignEvents().map(([t, , f]) => [t, (f as Record<string, string>).device])).toEqual([
      ["device-assign", "0000:00:1f.6"],
      ["device-assign", "0000:00:1f.3"],
      ["device-assign", "0000:00:1f.4"],
    ]);
    await qvmd.start("sys-net");
    expect(vms.plans.get("sys-net")!.devices.map((d) => d.address)).toEqual(["0000:00:1f.6", "0000:00:1f.3", "0000:00:1f.4"]);
  });

  it("refuses on a host without an IOMMU, naming intel_iommu=on and amd_iommu=on, and says so in the listing", async () => {
    const bare = new FakeSysfs(LAPTOP_PCI.map(({ group: _, ...d }) => d));
    try {
      await qvmd.close();
      await compose(bare);
      expect(qvmd.pciDevices().iommu).toBe(false);
      await expect(qvmd.attachPci("sys-net", ["0000:02:00.0"], true)).rejects.toMatchObject({
        code: "FAILED_PRECONDITION",
        message: expect.stringMatching(/^this host has no IOMMU enabled .*DMA.*intel_iommu=on \(Intel\) or amd_iommu=on \(AMD\)/),
      });
    } finally {
      bare.remove();
    }
  });

  it("a start plans each assigned device for the VMM driver", async () => {
    await qvmd.attachPci("sys-usb", ["0000:00:14.0"], true);
    await qvmd.attachPci("sys-usb", ["0000:00:14.2"], true);
    await qvmd.start("sys-usb");
    expect(vms.plans.get("sys-usb")!.devices).toEqual([
      { id: "pci0", kind: "pci", address: "0000:00:14.0" },
      { id: "pci1", kind: "pci", address: "0000:00:14.2" },
    ]);
    await qvmd.start("work");
    expect(vms.plans.get("work")!.devices).toEqual([]);
  });

  it("refuses a start whose device is gone or whose group stopped being viable, naming the domain and the way out", async () => {
    await qvmd.attachPci("sys-net", ["0000:02:00.0"], true);
    await qvmd.attachPci("work", ["0000:03:00.0"], true);
    // The device's group gains a device with a host driver (another card, another kernel).
    sysfs.bind("0000:00:1d.0", "pcieport");
    store.update("sys-net", (r) => {
      r.pci = [{ bdf: "0000:09:00.0" }];
    });
    await expect(qvmd.start("sys-net")).rejects.toMatchObject({
      code: "NOT_FOUND",
      message: "sys-net cannot start with its PCI device 0000:09:00.0: this host has no PCI device 0000:09:00.0; see `qvm pci ls`; or detach it (`qvm pci detach sys-net 0000:09:00.0`)",
    });
    expect(vms.started).toEqual([]);
    expect(qvmd.pciDevices("sys-net").devices).toEqual([expect.objectContaining({ bdf: "0000:09:00.0", present: false, className: "" })]);
  });

  it("refuses a start while another running domain's VMM still holds the device", async () => {
    await qvmd.attachPci("work", ["0000:02:00.0"], true);
    await qvmd.start("work");
    const uid = store.get("work")!.vmmUid!;
    // work's VMM holds the group (as the driver left it), and the device is moved to sys-net.
    sysfs.bind("0000:02:00.0", "vfio-pci");
    sysfs.host().chown(sysfs.host().groupNode(8), uid, uid);
    await qvmd.detachPci("work", ["0000:02:00.0"]);
    await qvmd.attachPci("sys-net", ["0000:02:00.0"], true);
    await expect(qvmd.start("sys-net")).rejects.toMatchObject({
      code: "FAILED_PRECONDITION",
      message: "sys-net cannot start: its PCI device 0000:02:00.0 is still held by work, which runs (the device was detached from it); it goes back to the host when that domain stops",
    });
  });

  it("a clone gets neither its source's PCI devices nor its VMM uid; a removed domain frees its devices", async () => {
    await qvmd.attachPci("sys-net", ["0000:02:00.0"], true);
    await qvmd.start("sys-net");
    await qvmd.shutdown("sys-net", { wait: true, force: false });
    expect(store.get("sys-net")!.vmmUid).toBeDefined();
    await qvmd.clone("sys-net", "sys-net2");
    expect(store.get("sys-net2")!.pci).toBeUndefined();
    expect(store.get("sys-net2")!.vmmUid).toBeUndefined();
    await qvmd.remove("sys-net");
    expect(await qvmd.attachPci("sys-net2", ["0000:02:00.0"], true)).toMatchObject({ devices: ["0000:02:00.0"] });
  });
});
