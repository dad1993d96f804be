// Persistent USB assignments: the `usb` field of a frontend's record, read, checked and written
// here, with device-assign/device-unassign. A device is assigned to one domain; where records
// disagree, the first domain by name has it. Attaching them again is auto-attach.ts.
import { QvmError } from "@qvm/protocol";
import { MAX_USB_DEVICES, usbDeviceName } from "@qvm/protocol/contracts";
import { USB_DEVCLASS, key, type UsbState } from "./usb-state.js";

/** Every assignment, "backend:busid" → the first domain (by name) that has it. */
export function assignments(s: UsbState): Map<string, string> {
  const m = new Map<string, string>();
  for (const r of s.deps.registry.list()) for (const u of r.usb ?? []) if (!m.has(key(u.backend, u.busid))) m.set(key(u.backend, u.busid), r.name);
  return m;
}

export function assigneeOf(s: UsbState, backend: string, busid: string): string | undefined {
  return assignments(s).get(key(backend, busid));
}

export function checkAssignable(s: UsbState, target: string): void {
  if ((s.deps.registry.get(target).usb ?? []).length >= MAX_USB_DEVICES) {
    throw new QvmError("RESOURCE_EXHAUSTED", `${target} has ${MAX_USB_DEVICES} USB devices assigned, the most a domain may have; detach one first`);
  }
}

export function assign(s: UsbState, target: string, backend: string, busid: string): void {
  checkAssignable(s, target);
  s.deps.registry.store.update(target, (r) => {
    r.usb = [...(r.usb ?? []).filter((u) => !(u.backend === backend && u.busid === busid)), { backend, busid }];
  });
  s.deps.events.publish("device-assign", target, { devclass: USB_DEVCLASS, device: usbDeviceName(backend, busid) });
}

export function unassign(s: UsbState, target: string, backend: string, busid: string): void {
  s.deps.registry.store.update(target, (r) => {
    const left = (r.usb ?? []).filter((u) => !(u.backend === backend && u.busid === busid));
    if (left.length) r.usb = left;
    else delete r.usb;
  });
  s.deps.events.publish("device-unassign", target, { devclass: USB_DEVCLASS, device: usbDeviceName(backend, busid) });
}
