// qvm's USB programs inside domains (installed with the guest tools) and how qvmd reads what they
// print: stderr is guest text, so only its escaped, clipped last line ever reaches a message.
import { escapeGuestText } from "@qvm/protocol/contracts";
import type { ExecExit } from "../agent/exec-process.js";

/** Runs in the frontend as root: attaches BACKEND's BUSID over qubes.USB, prints ATTACHED_LINE, stays while attached. */
export const USB_ATTACH = "/usr/lib/qvm/usb-attach";
/** Runs in the backend as root: gives BUSID back to its own drivers (ends an export). */
export const USB_RELEASE = "/usr/lib/qvm/usb-release";
/** usb-attach's one line on stdout once the device is attached. */
export const ATTACHED_LINE = /^qvm-usb: attached to port ([0-9]{1,3})$/;

/** How long an error waits for the rest of a process's stderr once it has ended. */
export const STDERR_GRACE_MS = 500;

/** Guest text (usb-attach's stderr, a device's name) in a message: escaped, clipped. */
function guestLine(text: string, max = 200): string {
  const points = [...text.trim()];
  return escapeGuestText(points.length > max ? `${points.slice(0, max).join("")}…` : points.join(""));
}

/** Keeps the last `max` bytes of a stream's text (its last line is what an error shows); `ended` settles at its end. */
export function tail(stream: NodeJS.ReadableStream, max = 4096): { text: () => string; ended: Promise<void> } {
  let text = "";
  stream.on("data", (c: Buffer | string) => {
    text = (text + c.toString()).slice(-max);
  });
  const ended = new Promise<void>((resolve) => {
    stream.on("end", resolve);
    stream.on("close", resolve);
    stream.on("error", () => resolve());
  });
  return { text: () => text, ended };
}

export function lastLine(text: string): string {
  const lines = text.split("\n").filter((l) => l.trim());
  return lines.length ? guestLine(lines[lines.length - 1]!) : "";
}

export function describeExit(exit: ExecExit): string {
  return exit.signal ? `was killed by ${exit.signal}` : `exited with ${exit.code}`;
}
