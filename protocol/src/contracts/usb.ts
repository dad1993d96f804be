// How qvm names and bounds USB devices (docs/usb.md; `qvm usb`, the admin API, the agent's
// reports). A device is named by its backend domain and its sysfs bus id, written as Qubes does:
// `sys-usb:2-1` (BACKEND:BUSID). Everything a backend reports about a device is the device's (or
// the domain's) word: these bounds are what the host accepts. Dependency-free.
import { QvmError } from "./errors.js";

/** A sysfs USB bus id: bus-port[.port…], as Qubes accepts it (`^[0-9]+-[0-9]+(_[0-9]+)*$`, "." for "_"). */
export const USB_BUSID_PATTERN = /^[1-9][0-9]{0,2}-[1-9][0-9]{0,2}(\.[1-9][0-9]{0,2}){0,6}$/;
/** Devices one backend may report; more are left out (and logged). */
export const MAX_USB_DEVICES = 64;
/** Interfaces one device may report; more are left out. */
export const MAX_USB_INTERFACES = 32;
/** A device's strings (manufacturer, product, serial) as shown: clipped to this many code points. */
export const MAX_USB_STRING = 64;
/** Emulated devices one domain may have plugged (`qvm usb plug`). */
export const MAX_USB_PLUGS = 8;
/** What an emulated device can be. */
export const USB_PLUG_KINDS = ["disk", "keyboard", "tablet"] as const;
export type UsbPlugKind = (typeof USB_PLUG_KINDS)[number];

/** The qrexec service that carries one device (argument: its bus id), as Qubes names it. */
export const USB_SERVICE = "qubes.USB";

export function isUsbBusId(text: string): boolean {
  return USB_BUSID_PATTERN.test(text);
}

/** "sys-usb:2-1" → { backend, busid }; INVALID_ARGUMENT naming the form otherwise. */
export function parseUsbDeviceName(text: string): { backend: string; busid: string } {
  const i = text.lastIndexOf(":");
  const backend = i > 0 ? text.slice(0, i) : "";
  const busid = i > 0 ? text.slice(i + 1) : "";
  if (!backend || !isUsbBusId(busid)) {
    const shown = JSON.stringify(text.length > 40 ? `${text.slice(0, 40)}…` : text);
    throw new QvmError("INVALID_ARGUMENT", `${shown} is not a USB device: name it as \`qvm usb\` lists it, BACKEND:BUSID (sys-usb:2-1)`);
  }
  return { backend, busid };
}

export function usbDeviceName(backend: string, busid: string): string {
  return `${backend}:${busid}`;
}
