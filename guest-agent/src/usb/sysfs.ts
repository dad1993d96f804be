// The domain's USB devices as its kernel lists them in sysfs (/sys/bus/usb/devices), for
// ListUsbDevices and WatchUsbDevices. Devices are the entries named by a bus id ("2-1", "1-1.4");
// root hubs ("usb1") and interfaces ("2-1:1.0") are not devices, and anything else is ignored.
// Every read is bounded: at most MAX_USB_DEVICES devices, MAX_USB_INTERFACES interfaces each,
// MAX_USB_ATTR_BYTES of any file. What a device says about itself (its strings) is passed as
// sysfs has it: the host checks and clips it.
import { closeSync, openSync, readSync, readdirSync, readlinkSync, statSync } from "node:fs";
import path from "node:path";
import type { agentV1 } from "@qvm/protocol";
import { MAX_USB_DEVICES, MAX_USB_INTERFACES, isUsbBusId } from "@qvm/protocol/contracts";

export type UsbDevice = agentV1.UsbDeviceInfo;
export type UsbInterface = agentV1.UsbInterface;

/** Where the kernel lists USB devices. */
export const USB_SYSFS_DEVICES = "/sys/bus/usb/devices";
/** The most read of any one sysfs file (the USB string descriptors are at most 126 characters). */
export const MAX_USB_ATTR_BYTES = 256;

/** An interface entry of a device: "BUSID:CONFIG.INTERFACE". */
const INTERFACE_SUFFIX = /^:([0-9]{1,3})\.([0-9]{1,3})$/;

/**
 * One sysfs attribute: at most `cap` bytes, UTF-8 (a character the cap cut is dropped), without
 * its trailing newline; "" when the file is missing or unreadable.
 */
export function readAttr(dir: string, name: string, cap = MAX_USB_ATTR_BYTES): string {
  let fd: number;
  try {
    fd = openSync(path.join(dir, name), "r");
  } catch {
    return "";
  }
  const buf = Buffer.alloc(cap);
  let len = 0;
  try {
    while (len < cap) {
      const n = readSync(fd, buf, len, cap - len, null);
      if (n <= 0) break;
      len += n;
    }
  } catch {
    return "";
  } finally {
    closeSync(fd);
  }
  let text = buf.subarray(0, len).toString("utf8");
  if (len === cap) text = text.replace(/\uFFFD+$/, "");
  return text.endsWith("\n") ? text.slice(0, -1) : text;
}

/** A hex attribute (bDeviceClass "09", bInterfaceClass "08"); 0 when missing or not hex. */
export function readHex(dir: string, name: string): number {
  const text = readAttr(dir, name, 16).trim();
  return /^[0-9a-fA-F]{1,8}$/.test(text) ? parseInt(text, 16) : 0;
}

/** The name of the driver bound to a sysfs device (the basename of its `driver` link); "" if none. */
export function driverName(dir: string): string {
  try {
    const target = readlinkSync(path.join(dir, "driver"));
    return path.basename(target).slice(0, MAX_USB_ATTR_BYTES);
  } catch {
    return "";
  }
}

/** Orders bus ids and interface names by their numbers: 1-2 < 1-10 < 1-10.1 < 2-1. */
function compareNumbers(a: string, b: string): number {
  const na = a.split(/[^0-9]+/).filter(Boolean).map(Number);
  const nb = b.split(/[^0-9]+/).filter(Boolean).map(Number);
  for (let i = 0; i < Math.max(na.length, nb.length); i++) {
    const d = (na[i] ?? -1) - (nb[i] ?? -1);
    if (d !== 0) return d;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}

function isDirectory(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/**
 * A device attached to this domain from another one (USB/IP: it hangs off a vhci_hcd
 * controller) is not this domain's to offer: it is left out of the list.
 */
function imported(dir: string): boolean {
  try {
    return readlinkSync(dir).includes("/vhci_hcd.");
  } catch {
    return false;
  }
}

/**
 * The USB devices under `root` (a sysfs devices directory; a fake tree in tests), in bus id
 * order, at most MAX_USB_DEVICES. A missing root is a domain without USB: an empty list.
 */
export function listUsbDevices(root = USB_SYSFS_DEVICES): UsbDevice[] {
  let names: string[];
  try {
    names = readdirSync(root);
  } catch {
    return [];
  }
  const busids: string[] = [];
  const interfaces = new Map<string, string[]>();
  for (const name of names) {
    if (isUsbBusId(name)) {
      busids.push(name);
      continue;
    }
    const colon = name.indexOf(":");
    if (colon <= 0) continue;
    const busid = name.slice(0, colon);
    if (!isUsbBusId(busid) || !INTERFACE_SUFFIX.test(name.slice(colon))) continue;
    const list = interfaces.get(busid) ?? [];
    list.push(name);
    interfaces.set(busid, list);
  }
  busids.sort(compareNumbers);
  const devices: UsbDevice[] = [];
  for (const busid of busids) {
    if (devices.length >= MAX_USB_DEVICES) break;
    const dir = path.join(root, busid);
    if (!isDirectory(dir) || imported(dir)) continue;
    const ifaces = (interfaces.get(busid) ?? [])
      .sort(compareNumbers)
      .slice(0, MAX_USB_INTERFACES)
      .map((name) => {
        const idir = path.join(root, name);
        return { class: readHex(idir, "bInterfaceClass"), subclass: readHex(idir, "bInterfaceSubClass"), protocol: readHex(idir, "bInterfaceProtocol") };
      });
    devices.push({
      busid,
      vendorId: readAttr(dir, "idVendor", 16),
      productId: readAttr(dir, "idProduct", 16),
      manufacturer: readAttr(dir, "manufacturer"),
      product: readAttr(dir, "product"),
      serial: readAttr(dir, "serial"),
      deviceClass: readHex(dir, "bDeviceClass"),
      interfaces: ifaces,
      driver: driverName(dir),
    });
  }
  return devices;
}
