// What a USB device is, from the classes its interfaces report (the backend's word, checked in
// agent/replies.ts): what `qvm usb` shows and what decides whether an input policy applies.
// A HID interface that is neither a boot keyboard nor a boot mouse is taken for a pointer of the
// tablet kind (Qubes' third input class), so a HID device never passes as "other".
import type { GuestUsbInterface } from "../agent/replies.js";

export const USB_KINDS = ["storage", "keyboard", "mouse", "tablet", "hub", "other"] as const;
export type UsbKind = (typeof USB_KINDS)[number];

/** USB class codes (usb.org "Defined Class Codes"). */
const CLASS_HID = 3;
const CLASS_MASS_STORAGE = 8;
const CLASS_HUB = 9;
/** HID boot interface protocols. */
const HID_KEYBOARD = 1;
const HID_MOUSE = 2;

/** The kinds of a device, in USB_KINDS order; "other" only when nothing else applies. */
export function usbKinds(dev: { deviceClass: number; interfaces: readonly GuestUsbInterface[] }): UsbKind[] {
  const kinds = new Set<UsbKind>();
  if (dev.deviceClass === CLASS_HUB) kinds.add("hub");
  for (const i of dev.interfaces) {
    if (i.class === CLASS_MASS_STORAGE) kinds.add("storage");
    else if (i.class === CLASS_HUB) kinds.add("hub");
    else if (i.class === CLASS_HID) kinds.add(i.protocol === HID_KEYBOARD ? "keyboard" : i.protocol === HID_MOUSE ? "mouse" : "tablet");
  }
  if (!kinds.size) kinds.add("other");
  return USB_KINDS.filter((k) => kinds.has(k));
}

/** The qrexec policy service that decides whether a device of an input kind may go to a domain (Qubes' input proxy services). */
export const INPUT_SERVICES: Partial<Record<UsbKind, string>> = {
  keyboard: "qubes.InputKeyboard",
  mouse: "qubes.InputMouse",
  tablet: "qubes.InputTablet",
};
