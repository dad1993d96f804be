// The sysfs reader and the watch, on fake /sys/bus/usb/devices trees in temporary directories:
// a stick with its interface and driver, root hubs and interfaces left out, hubs listed as such,
// missing files, oversized strings, too many devices or interfaces, names that are no bus id.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { MAX_USB_DEVICES, MAX_USB_INTERFACES } from "@qvm/protocol/contracts";
import { MAX_USB_WATCHERS, UsbMonitor } from "./monitor.js";
import { MAX_USB_ATTR_BYTES, listUsbDevices, readAttr, type UsbDevice } from "./sysfs.js";
import { STICK_ATTRS, addDevice, removeDevice } from "./testing.js";

const base = mkdtempSync(path.join(os.tmpdir(), "qvm-usb-sysfs-"));
let n = 0;
let root = "";
beforeEach(() => {
  root = path.join(base, `t${n++}`, "sys/bus/usb/devices");
  mkdirSync(root, { recursive: true });
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

const STICK: UsbDevice = {
  busid: "2-1",
  vendorId: "0781",
  productId: "5581",
  manufacturer: "SanDisk",
  product: "Ultra",
  serial: "4C530001230512116543",
  deviceClass: 0,
  interfaces: [{ class: 8, subclass: 6, protocol: 0x50 }],
  driver: "usb",
};

describe("listUsbDevices", () => {
  it("reads a USB stick: ids, strings, class, interfaces and driver", () => {
    addDevice(root, "2-1", { attrs: STICK_ATTRS, driver: "usb", interfaces: [{ name: "1.0", class: "08", subclass: "06", protocol: "50" }] });
    expect(listUsbDevices(root)).toEqual([STICK]);
  });

  it("follows the links sysfs lists devices by", () => {
    const real = path.join(root, "../../../devices/pci0000:00/usb2/2-1");
    addDevice(path.dirname(real), "2-1", { attrs: STICK_ATTRS, driver: "usb" });
    symlinkSync(real, path.join(root, "2-1"));
    expect(listUsbDevices(root)).toEqual([{ ...STICK, interfaces: [] }]);
  });

  it("leaves out a device attached from another domain (under vhci_hcd): it is not this domain's to offer", () => {
    const real = path.join(root, "../../../devices/platform/vhci_hcd.0/usb2/2-1");
    addDevice(path.dirname(real), "2-1", { attrs: STICK_ATTRS, driver: "usb" });
    symlinkSync(real, path.join(root, "2-1"));
    expect(listUsbDevices(root)).toEqual([]);
  });

  it("leaves out root hubs, interfaces and names that are no bus id; lists a hub as one (class 9)", () => {
    addDevice(root, "usb1", { attrs: { ...STICK_ATTRS, bDeviceClass: "09" }, driver: "usb" });
    addDevice(root, "1-0:1.0", { attrs: { bInterfaceClass: "09" } });
    addDevice(root, "1-1", { attrs: { idVendor: "05e3", idProduct: "0608", bDeviceClass: "09" }, driver: "usb", interfaces: [{ name: "1.0", class: "09" }] });
    addDevice(root, "1-1.4", { attrs: { idVendor: "046d", idProduct: "c52b", bDeviceClass: "00" }, driver: "usb", interfaces: [{ name: "1.0", class: "03", subclass: "01", protocol: "01" }] });
    for (const junk of ["foo", "0-1", "1-0", "1-1.", "1-1..2", ".hidden", "1-1:", "1-1:1.0x", "1-1:x", "1-01", "1-1.4.5.6.7.8.9.10", "1234-1", "1-1 ", "1-1\n"]) {
      addDevice(root, junk, { attrs: STICK_ATTRS, driver: "usb" });
    }
    const list = listUsbDevices(root);
    expect(list.map((d) => d.busid)).toEqual(["1-1", "1-1.4"]);
    expect(list[0]).toMatchObject({ deviceClass: 9, interfaces: [{ class: 9, subclass: 0, protocol: 0 }] });
    expect(list[1]).toMatchObject({ vendorId: "046d", interfaces: [{ class: 3, subclass: 1, protocol: 1 }] });
  });

  it("gives missing files as empty strings and 0, and no driver as an empty name", () => {
    addDevice(root, "3-2", { attrs: { idVendor: "1234" } });
    expect(listUsbDevices(root)).toEqual([
      { busid: "3-2", vendorId: "1234", productId: "", manufacturer: "", product: "", serial: "", deviceClass: 0, interfaces: [], driver: "" },
    ]);
    // Not hex: 0, as for a missing file.
    addDevice(root, "3-3", { attrs: { bDeviceClass: "zz" }, interfaces: [{ name: "1.0", class: "not hex" }] });
    expect(listUsbDevices(root)[1]).toMatchObject({ deviceClass: 0, interfaces: [{ class: 0, subclass: 0, protocol: 0 }] });
  });

  it("reads at most MAX_USB_ATTR_BYTES of a file, dropping a character the cap cut", () => {
    addDevice(root, "2-1", { attrs: { ...STICK_ATTRS, product: "x".repeat(5000), manufacturer: `a${"é".repeat(200)}`, serial: "s".repeat(MAX_USB_ATTR_BYTES - 1) } });
    const [d] = listUsbDevices(root);
    expect(d!.product).toBe("x".repeat(MAX_USB_ATTR_BYTES));
    expect(d!.manufacturer).toBe(`a${"é".repeat((MAX_USB_ATTR_BYTES - 2) / 2)}`);
    // 255 bytes and its newline: the newline is cut, the text is whole.
    expect(d!.serial).toBe("s".repeat(MAX_USB_ATTR_BYTES - 1));
    // The vendor id is read with a smaller cap still.
    addDevice(root, "2-2", { attrs: { idVendor: "0".repeat(100) } });
    expect(listUsbDevices(root)[1]!.vendorId).toBe("0".repeat(16));
  });

  it("lists at most MAX_USB_DEVICES devices, in bus id order, and MAX_USB_INTERFACES interfaces each", () => {
    for (let i = MAX_USB_DEVICES + 10; i >= 1; i--) addDevice(root, `1-${i}`, { attrs: { idVendor: "abcd" } });
    const interfaces = Array.from({ length: MAX_USB_INTERFACES + 8 }, (_, i) => ({ name: `1.${i}`, class: (i % 256).toString(16).padStart(2, "0") }));
    addDevice(root, "1-1", { attrs: { idVendor: "abcd" }, interfaces });
    const list = listUsbDevices(root);
    expect(list.map((d) => d.busid)).toEqual(Array.from({ length: MAX_USB_DEVICES }, (_, i) => `1-${i + 1}`));
    expect(list[0]!.interfaces.map((i) => i.class)).toEqual(Array.from({ length: MAX_USB_INTERFACES }, (_, i) => i));
  });

  it("orders bus ids by their numbers", () => {
    for (const b of ["2-1", "1-10", "1-2.3", "1-2", "10-1", "1-2.10", "1-2.9"]) addDevice(root, b);
    expect(listUsbDevices(root).map((d) => d.busid)).toEqual(["1-2", "1-2.3", "1-2.9", "1-2.10", "1-10", "2-1", "10-1"]);
  });

  it("is empty for a domain without USB (no directory, or an empty one), and skips an entry that is no directory", () => {
    expect(listUsbDevices(path.join(root, "missing"))).toEqual([]);
    expect(listUsbDevices(root)).toEqual([]);
    writeFileSync(path.join(root, "4-1"), "not a directory\n");
    expect(listUsbDevices(root)).toEqual([]);
  });

  it("readAttr: the newline sysfs adds is dropped, other spaces kept; an unreadable file is empty", () => {
    addDevice(root, "2-1", { attrs: { product: " Ultra  " } });
    expect(readAttr(path.join(root, "2-1"), "product")).toBe(" Ultra  ");
    mkdirSync(path.join(root, "2-1", "dir"));
    expect(readAttr(path.join(root, "2-1"), "dir")).toBe("");
    expect(readAttr(path.join(root, "2-1"), "nothing")).toBe("");
  });
});

describe("UsbMonitor", () => {
  const until = async (cond: () => boolean, ms = 2000) => {
    for (const end = Date.now() + ms; !cond() && Date.now() < end; ) await new Promise((r) => setTimeout(r, 5));
  };
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it("sends the list at once, then only when it changed", async () => {
    const usb = new UsbMonitor({ root, pollMs: 10 });
    const lists: string[][] = [];
    const stop = usb.watch((d) => lists.push(d.map((x) => x.busid)));
    expect(lists).toEqual([[]]);
    await sleep(80);
    expect(lists).toEqual([[]]);
    addDevice(root, "2-1", { attrs: STICK_ATTRS, driver: "usb" });
    await until(() => lists.length === 2);
    expect(lists).toEqual([[], ["2-1"]]);
    // A change in a device (its driver: exported to usbip-host) is a change of the list.
    removeDevice(root, "2-1");
    addDevice(root, "2-1", { attrs: STICK_ATTRS, driver: "usbip-host" });
    await until(() => lists.length === 3);
    removeDevice(root, "2-1");
    await until(() => lists.length === 4);
    await sleep(50);
    expect(lists).toEqual([[], ["2-1"], ["2-1"], []]);
    stop();
    addDevice(root, "2-2");
    await sleep(50);
    expect(lists.length).toBe(4);
    expect(usb.watching).toBe(0);
  });

  it("a late watcher gets the current list, and each watcher only what is new to it", async () => {
    const usb = new UsbMonitor({ root, pollMs: 10 });
    const a: string[][] = [];
    const stopA = usb.watch((d) => a.push(d.map((x) => x.busid)));
    addDevice(root, "2-1");
    const b: string[][] = [];
    const stopB = usb.watch((d) => b.push(d.map((x) => x.busid)));
    expect(b).toEqual([["2-1"]]);
    await until(() => a.length === 2);
    await sleep(50);
    expect(a).toEqual([[], ["2-1"]]);
    expect(b).toEqual([["2-1"]]);
    stopA();
    stopB();
  });

  it(`allows at most ${MAX_USB_WATCHERS} watchers at once`, () => {
    const usb = new UsbMonitor({ root, pollMs: 10 });
    const stops = Array.from({ length: MAX_USB_WATCHERS }, () => usb.watch(() => {}));
    expect(() => usb.watch(() => {})).toThrow(expect.objectContaining({ code: "RESOURCE_EXHAUSTED" }));
    stops[0]!();
    const again = usb.watch(() => {});
    for (const s of [...stops.slice(1), again]) s();
    expect(usb.watching).toBe(0);
  });
});
