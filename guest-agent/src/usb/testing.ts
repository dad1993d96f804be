// Test support: a fake /sys/bus/usb/devices tree in a directory. Devices are directories named by
// their bus id holding attribute files (each written with the newline sysfs adds) and a `driver`
// link; interfaces are directories "BUSID:C.I" beside them, as in sysfs. Only tests import it.
// (In sysfs the entries are links to the devices' own directories; the reader follows them.)
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import path from "node:path";

export interface FakeInterface {
  name: string; // "1.0"
  class: string; // hex, as sysfs: "08"
  subclass?: string;
  protocol?: string;
}

export interface FakeDevice {
  /** Attribute files: name → content without the newline. Omitted ones are absent. */
  attrs?: Record<string, string>;
  /** The driver bound to the device: a `driver` link ending in this name. */
  driver?: string;
  interfaces?: FakeInterface[];
}

/** A USB stick as sysfs shows it. */
export const STICK_ATTRS: Record<string, string> = {
  idVendor: "0781",
  idProduct: "5581",
  manufacturer: "SanDisk",
  product: "Ultra",
  serial: "4C530001230512116543",
  bDeviceClass: "00",
  busnum: "2",
  devnum: "3",
  speed: "480",
};

export function addDevice(root: string, busid: string, dev: FakeDevice = {}): void {
  const dir = path.join(root, busid);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  for (const [name, value] of Object.entries(dev.attrs ?? {})) writeFileSync(path.join(dir, name), `${value}\n`);
  // Relative, so that under ROOT/sys/bus/usb/devices it leads to ROOT/sys/bus/usb/drivers/NAME.
  if (dev.driver) symlinkSync(`../../drivers/${dev.driver}`, path.join(dir, "driver"));
  for (const i of dev.interfaces ?? []) {
    const idir = path.join(root, `${busid}:${i.name}`);
    mkdirSync(idir, { recursive: true });
    writeFileSync(path.join(idir, "bInterfaceClass"), `${i.class}\n`);
    writeFileSync(path.join(idir, "bInterfaceSubClass"), `${i.subclass ?? "00"}\n`);
    writeFileSync(path.join(idir, "bInterfaceProtocol"), `${i.protocol ?? "00"}\n`);
  }
}

export function removeDevice(root: string, busid: string): void {
  rmSync(path.join(root, busid), { recursive: true, force: true });
}
