// USB devices of service domains (docs/usb.md; Qubes' qvm-usb, usb-proxy core3ext.py). A domain
// with a USB controller (sys-usb) is a backend: its agent reports the devices its kernel has
// (checked, agent/replies.ts), and qvmd follows each running domain's list. Attaching a device to
// another running domain (the frontend) is Qubes' flow without the policy file edit:
//   1. qvmd refuses what cannot be: an unknown or halted domain, the backend itself, a device the
//      backend does not have, one attached or assigned elsewhere, a hub, and an input device the
//      qubes.InputKeyboard/InputMouse/InputTablet policy denies (input-policy.ts);
//   2. it grants the frontend one qubes.USB call to the backend with the bus id as argument, as
//      root, held in memory and consumed by that call (qrexec/grants.ts; the policy's own
//      `qubes.USB * @anyvm @anyvm deny` refuses any other);
//   3. it runs `/usr/lib/qvm/usb-attach BACKEND BUSID` in the frontend as root through its agent,
//      which makes that call (USB/IP inside it) and prints `qvm-usb: attached to port N` once the
//      device is there, then keeps running while it stays attached.
// The Exec's handle is the attachment: when it ends, for whatever reason (a detach, the backend or
// the frontend stopping, the device pulled out), the attachment is forgotten, the backend is told
// to take the device back (`/usr/lib/qvm/usb-release BUSID`, best effort) and device-detach is
// published with the reason. Every wait is bounded (UsbTimeouts).
//
// Persistent assignments (`usb` in the frontend's record) are attached again whenever the
// frontend starts, or the backend reports the device, while both run. Attachments themselves live
// in this process only: a qvmd restart ends them (their Exec streams end with qvmd, and at a
// clean exit qvmd tells the backends to take the devices back); after it, the assignments of
// running domains are attached again and a device a backend still exports for nobody is released.
//
// This file is the service's face (the one the rest of qvmd imports); the work is in its
// neighbours: device-lists.ts (each running domain's devices), attach-checks.ts and attach.ts
// (steps 1 to 3), attachment-life.ts (an attachment's end), assignments.ts and auto-attach.ts
// (persistent assignments), usb-view.ts (the list), over the state in usb-state.ts.
import type { Attacher } from "../domain/attachments.js";
import { attach } from "./attach.js";
import { closeAll, detach } from "./attachment-life.js";
import { deviceAttacher } from "./device-lists.js";
import { newUsbState, type UsbDevicesDeps, type UsbState } from "./usb-state.js";
import { listDevices, type UsbDeviceView } from "./usb-view.js";

export { ATTACHED_LINE, USB_ATTACH, USB_RELEASE } from "./guest-tools.js";
export { DEFAULT_USB_TIMEOUTS, USB_DEVCLASS, type UsbDevicesDeps, type UsbTimeouts } from "./usb-state.js";
export type { UsbDeviceView } from "./usb-view.js";

export class UsbDevices {
  private readonly s: UsbState;

  constructor(deps: UsbDevicesDeps) {
    this.s = newUsbState(deps);
  }

  /** The devices of every running backend (or of `backend`), then assignments not present; by backend, then bus id. */
  list(backend = ""): UsbDeviceView[] {
    return listDevices(this.s, backend);
  }

  /** Attaches `backend`'s device `busid` to the running `target`; `persistent` also assigns it. */
  attach(target: string, backend: string, busid: string, persistent: boolean): Promise<UsbDeviceView> {
    return attach(this.s, target, backend, busid, persistent);
  }

  /** Detaches the device from `target` on both sides; also drops its assignment to `target`. */
  detach(target: string, backend: string, busid: string): Promise<void> {
    return detach(this.s, target, backend, busid);
  }

  /**
   * Per running domain: follows its USB devices (it may be a backend), attaches its assignments
   * (it may be a frontend), and at its end ends what it took part in.
   */
  attacher(): Attacher {
    return deviceAttacher(this.s);
  }

  /**
   * qvmd is exiting: every attachment ends with it (its Exec stream is cancelled, so the frontend's
   * usb-attach is killed) and each backend is told to take its device back, within closeMs.
   * Call before the runner lets go of the domains.
   */
  close(): Promise<void> {
    return closeAll(this.s);
  }
}
