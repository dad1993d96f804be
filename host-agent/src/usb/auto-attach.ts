// Persistent assignments attached by qvmd itself: when the frontend starts (its assignments whose
// backend runs and reports the device), and when a backend reports an assigned device, while both
// run. Nobody waits for these: refusals and failures are logged, not thrown.
import { usbDeviceName } from "@qvm/protocol/contracts";
import { attach } from "./attach.js";
import { key, type UsbState } from "./usb-state.js";

/** Attaches `target`'s assignments whose backend runs and has the device; the others are logged (and attached when their backend reports them). */
export function attachAssigned(s: UsbState, target: string): void {
  const rec = s.deps.registry.store.get(target);
  for (const u of rec?.usb ?? []) {
    const name = usbDeviceName(u.backend, u.busid);
    if (!s.live.has(u.backend)) s.deps.log(`usb: ${target}: ${name} not attached: ${u.backend} is not running (it is attached once ${u.backend} runs and reports it)`);
    else if (!s.backends.get(u.backend)?.has(u.busid)) s.deps.log(`usb: ${target}: ${name} not attached: ${u.backend} does not report it now (it is attached once it does)`);
    else autoAttach(s, target, u.backend, u.busid);
  }
}

/** An assignment attached by qvmd itself: refusals and failures are logged. */
export function autoAttach(s: UsbState, target: string, backend: string, busid: string): void {
  const name = usbDeviceName(backend, busid);
  if (s.closing || s.attachments.has(key(backend, busid)) || s.releasing.has(key(backend, busid)) || !s.live.has(target) || s.deps.runner.state(target) !== "Running") return;
  attach(s, target, backend, busid, false).then(
    () => s.deps.log(`usb: ${target}: assigned ${name} attached`),
    (err: Error) => s.deps.log(`usb: ${target}: assigned ${name} not attached: ${err.message}`),
  );
}
