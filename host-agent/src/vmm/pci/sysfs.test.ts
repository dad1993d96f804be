// The host's PCI devices read from a fake sysfs tree (these machines have no IOMMU, so no real
// device can be listed with a group or passed through): listing with names, drivers and groups,
// and each reason a device cannot go to a domain.
import { afterEach, describe, expect, it } from "vitest";
import { FakeSysfs, LAPTOP_PCI, SAMPLE_PCI_IDS } from "../../testing/fake-sysfs.js";
import { PciHost } from "./sysfs.js";

let fake: FakeSysfs | undefined;
afterEach(() => fake?.remove());

const none = () => undefined;

describe("listing", () => {
  it("reads every device: class, ids, names from pci.ids, driver, IOMMU group", () => {
    fake = new FakeSysfs(LAPTOP_PCI, { pciIds: SAMPLE_PCI_IDS });
    const list = fake.host().list();
    expect(list.map((d) => d.bdf)).toEqual([...LAPTOP_PCI.map((d) => d.bdf)].sort());
    expect(list.find((d) => d.bdf === "0000:00:1f.6")).toEqual({
      bdf: "0000:00:1f.6",
      classCode: 0x020000,
      className: "Ethernet controller",
      vendorId: "8086",
      deviceId: "15bd",
      vendorName: "Intel Corporation",
      deviceName: "Ethernet Connection (6) I219-LM",
      driver: "e1000e",
      iommuGroup: 9,
    });
    expect(list.find((d) => d.bdf === "0000:00:14.2")).toMatchObject({ className: "Memory controller", driver: "", vendorName: "Intel Corporation", deviceName: "" });
    expect(list.find((d) => d.bdf === "0000:03:00.0")).toMatchObject({ className: "Ethernet controller", vendorName: "Realtek Semiconductor Co., Ltd." });
    expect(fake.host().iommuEnabled()).toBe(true);
  });

  it("names classes from its own table without pci.ids, and knows no vendor names", () => {
    fake = new FakeSysfs();
    const wifi = fake.host().device("0000:02:00.0");
    expect(wifi).toMatchObject({ className: "Network controller", vendorName: "", deviceName: "", driver: "iwlwifi", iommuGroup: 8 });
    expect(fake.host().device("0000:00:14.0")).toMatchObject({ className: "USB controller" });
    expect(fake.host().device("0000:00:99.0")).toBeUndefined();
    expect(fake.host().device("../../etc")).toBeUndefined();
  });

  it("shows a host without an IOMMU: no groups", () => {
    fake = new FakeSysfs(LAPTOP_PCI.map(({ group: _, ...d }) => d));
    const host = fake.host();
    expect(host.iommuEnabled()).toBe(false);
    expect(host.list().every((d) => d.iommuGroup === -1)).toBe(true);
  });

  it("lists nothing where there is no sysfs", () => {
    expect(new PciHost({ root: "/nonexistent" }).list()).toEqual([]);
  });

  it("sees which uid holds a group's device node", () => {
    fake = new FakeSysfs();
    fake.bind("0000:02:00.0", "vfio-pci"); // as if a domain's VMM had it
    fake.host().chown(fake.host().groupNode(8), 900000001, 900000001);
    expect(fake.host().groupHolder(8)).toBe(900000001);
    expect(fake.host().groupHolder(3)).toBeUndefined();
  });
});

describe("what may be passed to a domain", () => {
  it("takes a device alone in its group, or with driverless devices and bridges", () => {
    fake = new FakeSysfs();
    const host = fake.host();
    expect(host.checkAssignable("0000:02:00.0", "sys-net", none).bdf).toBe("0000:02:00.0");
    expect(host.checkAssignable("0000:00:14.0", "sys-usb", none).className).toBe("USB controller");
    expect(host.checkAssignable("0000:03:00.0", "sys-net", none).driver).toBe("r8169");
  });

  it("refuses without an IOMMU, naming the kernel options", () => {
    fake = new FakeSysfs(LAPTOP_PCI.map(({ group: _, ...d }) => d));
    expect(() => fake!.host().checkAssignable("0000:02:00.0", "sys-net", none)).toThrow(
      expect.objectContaining({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/no IOMMU enabled .*intel_iommu=on .*amd_iommu=on/) }),
    );
  });

  it("refuses an unknown device and a bridge", () => {
    fake = new FakeSysfs();
    expect(() => fake!.host().checkAssignable("0000:05:00.0", "sys-net", none)).toThrow(expect.objectContaining({ code: "NOT_FOUND", message: expect.stringContaining("qvm pci ls") }));
    expect(() => fake!.host().checkAssignable("0000:00:1c.0", "sys-net", none)).toThrow(expect.objectContaining({ code: "FAILED_PRECONDITION", message: expect.stringMatching(/is a PCI bridge: only endpoint devices/) }));
    expect(() => fake!.host().checkAssignable("0000:00:00.0", "sys-net", none)).toThrow(/is a Host bridge/);
  });

  it("refuses a group whose other devices keep host drivers, naming them and the ways out", () => {
    fake = new FakeSysfs();
    expect(() => fake!.host().checkAssignable("0000:00:1f.6", "sys-net", none)).toThrow(
      expect.objectContaining({
        code: "FAILED_PRECONDITION",
        message:
          "IOMMU group 9 of 0000:00:1f.6 is not viable: it also holds 0000:00:1f.3 (Audio device, host driver snd_hda_intel), 0000:00:1f.4 (SMBus, host driver i801_smbus); a group's devices can reach each other, so assign them to sys-net together (`qvm pci attach --persistent sys-net 0000:00:1f.6 0000:00:1f.3 0000:00:1f.4`), unbind them from their drivers, or put the card in a slot with a group of its own",
      }),
    );
    // Once the rest of the group goes to the same domain, or leaves its host driver, it is viable.
    const mine = (bdf: string) => (bdf === "0000:00:1f.3" || bdf === "0000:00:1f.4" ? "sys-net" : undefined);
    expect(fake.host().checkAssignable("0000:00:1f.6", "sys-net", mine).bdf).toBe("0000:00:1f.6");
  });

  it("refuses a group another domain has part of", () => {
    fake = new FakeSysfs();
    const usb = (bdf: string) => (bdf === "0000:00:14.2" ? "sys-usb" : undefined);
    expect(() => fake!.host().checkAssignable("0000:00:14.0", "work", usb)).toThrow(
      expect.objectContaining({ message: "0000:00:14.0 shares IOMMU group 3 with 0000:00:14.2, which is assigned to sys-usb: a group's devices can reach each other, so the whole group goes to one domain" }),
    );
  });
});
