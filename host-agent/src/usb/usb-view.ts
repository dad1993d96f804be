// The USB device list as ListUsbDevices shows it: every running backend's devices, the ones
// attached though their backend's list is gone, then assignments whose device is not there now.
import { assignments } from "./assignments.js";
import { key, type Present, type UsbState } from "./usb-state.js";
import type { UsbKind } from "./kinds.js";

/** A device as ListUsbDevices shows it. */
export interface UsbDeviceView {
  backend: string;
  busid: string;
  vendorId: string;
  productId: string;
  description: string;
  serial: string;
  kinds: UsbKind[];
  /** The domain it is attached to or, for an assignment not attached now, assigned to; "" for none. */
  attachedTo: string;
  /** Assigned to attachedTo: attached again at its next start. */
  persistent: boolean;
  /** False: an assignment whose backend or device is not there now. */
  present: boolean;
}

/** Sorts bus ids as numbers part by part: 1-2 before 1-10, 1-1 before 1-1.4. */
function compareBusids(a: string, b: string): number {
  const pa = a.split(/[-.]/).map(Number);
  const pb = b.split(/[-.]/).map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? -1) - (pb[i] ?? -1);
    if (d) return d;
  }
  return 0;
}

/** The devices of every running backend (or of `backend`), then assignments not present; by backend, then bus id. */
export function listDevices(s: UsbState, backend = ""): UsbDeviceView[] {
  if (backend) s.deps.registry.get(backend);
  const assigned = assignments(s);
  const rows: UsbDeviceView[] = [];
  const seen = new Set<string>();
  const add = (b: string, busid: string, p: Present | undefined, present: boolean) => {
    const k = key(b, busid);
    if (seen.has(k)) return;
    seen.add(k);
    const a = s.attachments.get(k);
    const assignee = assigned.get(k);
    const attachedTo = a?.target ?? assignee ?? "";
    rows.push({
      backend: b,
      busid,
      vendorId: p?.dev.vendorId ?? "",
      productId: p?.dev.productId ?? "",
      description: p?.description ?? "",
      serial: p?.dev.serial ?? "",
      kinds: p?.kinds ?? [],
      attachedTo,
      persistent: assignee !== undefined && assignee === attachedTo,
      present,
    });
  };
  for (const [b, devices] of s.backends) for (const [busid, p] of devices) add(b, busid, p, true);
  // Attached, though the backend's list is gone (its watch ended): it is there all the same.
  for (const a of s.attachments.values()) add(a.backend, a.busid, a.device, true);
  for (const k of assigned.keys()) {
    const i = k.lastIndexOf(":");
    add(k.slice(0, i), k.slice(i + 1), undefined, false);
  }
  return rows.filter((r) => !backend || r.backend === backend).sort((x, y) => (x.backend < y.backend ? -1 : x.backend > y.backend ? 1 : compareBusids(x.busid, y.busid)));
}

/** One device's row. */
export function viewOf(s: UsbState, backend: string, busid: string): UsbDeviceView {
  return listDevices(s).find((r) => r.backend === backend && r.busid === busid)!;
}
