// The PCI calls of the admin API against a real qvmd process reading a fake host's sysfs
// (QVM_SYSFS_ROOT; these machines have no IOMMU, so no real device could be listed with a group
// or assigned): ListPciDevices, AttachPciDevice (persistent only, all or nothing, every refusal
// typed), DetachPciDevice, the assignment kept across a restart and announced with
// device-assign / device-unassign. Nothing here starts a domain: binding is tested in vmm/pci.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { adminV1, eventTypeWord } from "@qvm/protocol";
import { FakeSysfs, LAPTOP_PCI, SAMPLE_PCI_IDS } from "../testing/fake-sysfs.js";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs, type TestDaemon } from "../testing/test-daemon.js";

let d: TestDaemon;
let sysfs: FakeSysfs;
const start = (dirs = testDaemonDirs("pci-api")) => startTestDaemon(dirs, 15_000, [], { env: { QVM_SYSFS_ROOT: sysfs.root } });

beforeAll(async () => {
  sysfs = new FakeSysfs(LAPTOP_PCI, { pciIds: SAMPLE_PCI_IDS });
  d = await start();
  for (const name of ["sys-net", "sys-usb"]) {
    await d.client.createDomain({ name, class: adminV1.DomainClass.DOMAIN_CLASS_STANDALONE_VM, template: "", label: "red", properties: {} });
  }
});
afterAll(async () => {
  expect(await d.stop()).toBe(0);
  removeTestDaemonDirs(d.dirs);
  sysfs.remove();
});

const attach = (domain: string, devices: string[], persistent = true) => d.client.attachPciDevice({ domain, devices, persistent });
const assigned = async (domain = "") => (await d.client.listPciDevices({ domain })).devices.map((x) => [x.bdf, x.assignedTo]);

/** The device events `during` causes, as [type, domain, device]. */
async function deviceEvents(during: () => Promise<unknown>): Promise<string[][]> {
  const stream = d.client.watchEvents({ domain: "" });
  const seen: adminV1.Event[] = [];
  stream.on("data", (e: adminV1.Event) => seen.push(e));
  stream.on("error", () => {});
  await new Promise((r) => setTimeout(r, 100));
  await during().catch(() => {});
  await new Promise((r) => setTimeout(r, 200));
  stream.cancel();
  return seen.filter((e) => eventTypeWord(e.type).startsWith("device-")).map((e) => [eventTypeWord(e.type), e.domain, e.fields.device ?? "", e.fields.devclass ?? ""]);
}

describe("the PCI admin calls", () => {
  it("lists the host's devices as qvmd reads them from sysfs", async () => {
    const r = await d.client.listPciDevices({ domain: "" });
    expect(r.iommu).toBe(true);
    expect(r.devices.map((x) => x.bdf)).toEqual([...LAPTOP_PCI.map((x) => x.bdf)].sort());
    expect(r.devices.find((x) => x.bdf === "0000:00:1f.6")).toEqual({
      bdf: "0000:00:1f.6",
      classCode: 0x020000,
      className: "Ethernet controller",
      vendorId: "8086",
      deviceId: "15bd",
      vendorName: "Intel Corporation",
      deviceName: "Ethernet Connection (6) I219-LM",
      driver: "e1000e",
      iommuGroup: 9,
      assignedTo: "",
      present: true,
    });
  });

  it("assigns in any accepted name, announces it, and keeps it across a restart", async () => {
    const events = await deviceEvents(async () => expect(await attach("sys-net", ["dom0:02_00.0"])).toEqual({ devices: ["0000:02:00.0"], nextStart: false }));
    expect(events).toEqual([["device-assign", "sys-net", "0000:02:00.0", "pci"]]);
    expect(await attach("sys-usb", ["00:14.0", "0000:00:14.2"])).toEqual({ devices: ["0000:00:14.0", "0000:00:14.2"], nextStart: false });
    expect(await assigned("sys-usb")).toEqual([
      ["0000:00:14.0", "sys-usb"],
      ["0000:00:14.2", "sys-usb"],
    ]);
    expect(await d.stop()).toBe(0);
    d = await start(d.dirs);
    expect(await assigned("sys-net")).toEqual([["0000:02:00.0", "sys-net"]]);
  });

  it("refuses a live attach, a malformed or unknown device, another domain's, and a group that is not viable; nothing changes", async () => {
    const before = await assigned();
    const cases: Array<[string, string[], boolean, string, RegExp]> = [
      ["sys-usb", ["0000:03:00.0"], false, "FAILED_PRECONDITION", /microvm has no hot-plug.*qvm pci attach --persistent sys-usb 0000:03:00.0`; it arrives at sys-usb.s next start$/],
      ["sys-usb", ["eth0"], true, "INVALID_ARGUMENT", /"eth0" is not a PCI device: name it by its BDF/],
      ["sys-usb", [], true, "INVALID_ARGUMENT", /at least one PCI device/],
      ["sys-usb", ["0000:05:00.0"], true, "NOT_FOUND", /this host has no PCI device 0000:05:00.0/],
      ["sys-usb", ["0000:02:00.0"], true, "FAILED_PRECONDITION", /^0000:02:00.0 is assigned to sys-net: .*qvm pci detach sys-net 0000:02:00.0/],
      ["sys-usb", ["0000:00:1f.6"], true, "FAILED_PRECONDITION", /^IOMMU group 9 of 0000:00:1f.6 is not viable/],
      ["../x", ["0000:00:1f.6"], true, "INVALID_ARGUMENT", /must start with a letter/],
      ["nope", ["0000:00:1f.6"], true, "NOT_FOUND", /no domain named "nope"/],
    ];
    const events = await deviceEvents(async () => {
      for (const [domain, devices, persistent, code, message] of cases) {
        await expect(attach(domain, devices, persistent), `${domain} ${devices.join(" ")}`).rejects.toMatchObject({ name: "QvmError", code, message: expect.stringMatching(message) });
      }
      await expect(d.client.detachPciDevice({ domain: "sys-usb", devices: ["0000:02:00.0"] })).rejects.toMatchObject({ code: "NOT_FOUND", message: expect.stringContaining("is not assigned to sys-usb") });
    });
    expect(events).toEqual([]);
    expect(await assigned()).toEqual(before);
  });

  it("detaches, announcing it, and the device is free for another domain", async () => {
    const events = await deviceEvents(async () => expect(await d.client.detachPciDevice({ domain: "sys-net", devices: ["0000:02:00.0"] })).toEqual({ devices: ["0000:02:00.0"], nextStart: false }));
    expect(events).toEqual([["device-unassign", "sys-net", "0000:02:00.0", "pci"]]);
    expect(await attach("sys-usb", ["0000:02:00.0"])).toMatchObject({ devices: ["0000:02:00.0"] });
    expect(await assigned("sys-net")).toEqual([]);
  });
});
