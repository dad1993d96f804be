// What qvmd refuses before it attaches (or detaches) a USB device, step 1 of docs/usb.md's flow:
// a bad bus id, an unknown domain, one that is not running (or whose devices are not followed
// yet), and an input device the qubes.InputKeyboard/InputMouse/InputTablet policy denies.
import { QvmError } from "@qvm/protocol";
import { isUsbBusId, quoteGuestText, usbDeviceName } from "@qvm/protocol/contracts";
import { inputAllowed } from "./input-policy.js";
import { INPUT_SERVICES } from "./kinds.js";
import type { Present, UsbState } from "./usb-state.js";

/** Checks both domains exist and the bus id is one; returns the device's name (backend:busid). */
export function checkNames(s: UsbState, target: string, backend: string, busid: string): string {
  s.deps.registry.get(target);
  s.deps.registry.get(backend);
  if (!isUsbBusId(busid)) throw new QvmError("INVALID_ARGUMENT", `${quoteGuestText(busid, 40)} is not a USB bus id: name the device as \`qvm usb list\` shows it (sys-usb:2-1)`);
  return usbDeviceName(backend, busid);
}

export function checkRunning(s: UsbState, domain: string, then: string): void {
  const state = s.deps.runner.state(domain);
  if (state === "Running" && s.live.has(domain)) return;
  if (state === "Paused") throw new QvmError("FAILED_PRECONDITION", `${domain} is paused: unpause it first (\`qvm unpause ${domain}\`)${then}`);
  if (state === "Halting") throw new QvmError("FAILED_PRECONDITION", `${domain} is shutting down: start it again once it has stopped${then}`);
  if (state === "Running" || state === "Transient") throw new QvmError("FAILED_PRECONDITION", `${domain} is still starting: try again once it runs`);
  throw new QvmError("FAILED_PRECONDITION", `${domain} is not running: start it first (\`qvm start ${domain}\`)${then}`);
}

/** Refuses an input device the policy does not let go from `backend` to `target`. */
export function checkInput(s: UsbState, name: string, device: Present, backend: string, target: string): void {
  const inputs = device.kinds.filter((k) => INPUT_SERVICES[k]);
  if (!inputs.length) return;
  const rules = s.deps.rules();
  const system = s.deps.facts();
  for (const kind of inputs) {
    const service = INPUT_SERVICES[kind]!;
    const d = inputAllowed(rules, system, service, backend, target);
    if (d.allowed) continue;
    s.deps.log(`usb: attaching ${name} (a ${kind}) to ${target} was refused: ${service}: ${d.reason}${d.where ? ` (${d.where})` : ""}`);
    throw new QvmError(
      "PERMISSION_DENIED",
      `${name} is a ${kind}, and the ${service} policy does not allow input from ${backend} to ${target}${d.where ? ` (${d.where})` : ""}: to allow it, add \`${service} * ${backend} ${target} allow\` to the policy's 30-user.policy`,
    );
  }
}
