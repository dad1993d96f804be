// Validation of everything a guest agent sends. Functions here take untrusted guest data and
// return typed values, or throw QvmError AGENT_PROTOCOL.
import { z } from "zod";
import { QvmError, type agentV1 } from "@qvm/protocol";
import {
  MAX_USB_DEVICES,
  MAX_USB_INTERFACES,
  MAX_USB_STRING,
  MAX_WINDOWS_PER_DOMAIN,
  escapeGuestText,
  isExitSignal,
  isUsbBusId,
  isWindowHeight,
  isWindowVsockPort,
  isWindowWidth,
  quoteGuestText as quoteContract,
  type ExitSignal,
} from "@qvm/protocol/contracts";
import { MAX_GUEST_TEXT_IN_ERRORS, MAX_OUTPUT_CHUNK_BYTES, MAX_SHORT_STRING } from "./limits.js";

const printable = z.string().max(MAX_SHORT_STRING).regex(/^[\x20-\x7e]*$/, "non-printable characters");

const pingReply = z.object({ agentVersion: printable });
const infoReply = z.object({
  kernelRelease: printable.min(1),
  uptimeSeconds: z.number().finite().nonnegative(),
  agentVersion: printable,
  hostname: printable,
});

export type PingReply = z.infer<typeof pingReply>;
export type GuestInfo = z.infer<typeof infoReply>;

/** Guest text in an error message: the contract's quoting, clipped. */
export function quoteGuestText(text: string): string {
  return quoteContract(text, MAX_GUEST_TEXT_IN_ERRORS);
}

function parse<T>(schema: z.ZodType<T>, what: string, value: unknown): T {
  const r = schema.safeParse(value);
  if (!r.success) {
    throw new QvmError("AGENT_PROTOCOL", `invalid ${what} from the guest agent: ${r.error.issues[0]?.message ?? "malformed"}`);
  }
  return r.data;
}

/** At most one failure per client link a net domain can have, each clipped. */
const setNetworkReply = z.object({
  failures: z.record(z.string().max(64).regex(/^[0-9.]+$/, "a failure key that is not an IPv4 address"), z.string().max(4096).transform((t) => quoteGuestText(t))).refine((f) => Object.keys(f).length <= 64, "too many failures"),
});
export type SetNetworkReply = z.infer<typeof setNetworkReply>;
export const parseSetNetworkReply = (v: unknown): SetNetworkReply => parse(setNetworkReply, "SetNetwork reply", v);

// Windows (docs/gui.md): ids the guest gave, ports in the windows' range, sizes within bounds.
const windowId = z.number().int().min(1).max(2 ** 31 - 1);
const windowPort = z.number().refine(isWindowVsockPort, "a vsock port outside the windows' range");
const openWindowReply = z.object({ windowId, vsockPort: windowPort });
const windowInfo = z.object({
  windowId,
  vsockPort: windowPort,
  width: z.number().refine(isWindowWidth, "a window width out of bounds"),
  height: z.number().refine(isWindowHeight, "a window height out of bounds"),
  alive: z.boolean(),
});
/** The guest keeps at most MAX_WINDOWS_PER_DOMAIN live and as many ended windows. */
const listWindowsReply = z.object({
  windows: z
    .array(windowInfo)
    .max(2 * MAX_WINDOWS_PER_DOMAIN)
    .refine((ws) => new Set(ws.map((w) => w.windowId)).size === ws.length, "a window listed twice")
    .refine((ws) => new Set(ws.map((w) => w.vsockPort)).size === ws.length, "two windows on one port")
    .refine((ws) => ws.filter((w) => w.alive).length <= MAX_WINDOWS_PER_DOMAIN, "too many live windows"),
});
export type OpenWindowReply = z.infer<typeof openWindowReply>;
export type GuestWindow = z.infer<typeof windowInfo>;
export const parseOpenWindowReply = (v: unknown): OpenWindowReply => parse(openWindowReply, "OpenWindow reply", v);
/** A ListWindows reply, or one message of a WatchWindows stream. */
export const parseListWindowsReply = (v: unknown): { windows: GuestWindow[] } => parse(listWindowsReply, "window list", v);

/**
 * A window's clipboard, read with GetWindowClipboard (docs/gui.md). The data is opaque bytes,
 * never shown or logged; what is checked is its size: more than the `maxBytes` the host asked
 * for is refused as oversized, whatever the guest said, and an oversized answer carries no data.
 */
export interface WindowClipboardReply {
  data: Buffer;
  oversized: boolean;
}
const windowClipboardReply = z.object({ data: z.instanceof(Uint8Array), oversized: z.boolean() });
export function parseWindowClipboardReply(v: unknown, maxBytes: number): WindowClipboardReply {
  const r = parse(windowClipboardReply, "GetWindowClipboard reply", v);
  if (r.oversized || r.data.length > maxBytes) return { data: Buffer.alloc(0), oversized: true };
  return { data: Buffer.from(r.data), oversized: false };
}

export const parseGuestPing = (v: unknown): PingReply => parse(pingReply, "Ping reply", v);
export const parseGuestInfo = (v: unknown): GuestInfo => parse(infoReply, "GetInfo reply", v);

/** Bounds of ExecStarted.stdin_window (0 also: no window). One full frame must fit. */
export const MIN_STDIN_WINDOW = 64 * 1024;
export const MAX_STDIN_WINDOW = 16 * 1024 * 1024;

export type ExecEvent =
  | { kind: "started"; execId: number; pid: number; dataChannel: boolean; stdinWindow: number }
  | { kind: "stdout" | "stderr"; data: Buffer }
  | { kind: "exit"; code: number | null; signal: ExitSignal | null };

/** Validates one Exec stream message from the guest. Ordering is checked by the caller. */
export function parseGuestExecResponse(res: agentV1.ExecResponse): ExecEvent {
  const msg = res.msg;
  switch (msg?.$case) {
    case "started": {
      const { execId, pid, dataChannel, stdinWindow } = msg.value;
      // pid 0: the program could not be started; its exit (126/127) follows.
      if (!Number.isInteger(execId) || execId < 1 || !Number.isInteger(pid) || pid < 0 || pid > 0x3fffffff) {
        throw new QvmError("AGENT_PROTOCOL", "invalid Exec started message from the guest agent");
      }
      // A window under one frame would never let a full frame through; a huge one only turns the window off.
      const window = stdinWindow ?? 0;
      if (!Number.isInteger(window) || (window !== 0 && (window < MIN_STDIN_WINDOW || window > MAX_STDIN_WINDOW))) {
        throw new QvmError("AGENT_PROTOCOL", `invalid Exec stdin window from the guest agent (${window} bytes)`);
      }
      return { kind: "started", execId, pid, dataChannel: dataChannel === true, stdinWindow: window };
    }
    case "stdout":
    case "stderr":
      if (msg.value.length > MAX_OUTPUT_CHUNK_BYTES) {
        throw new QvmError("AGENT_PROTOCOL", `oversized ${msg.$case} chunk from the guest agent (${msg.value.length} bytes)`);
      }
      return { kind: msg.$case, data: msg.value };
    case "exit": {
      const { code, signal } = msg.value;
      if (signal) {
        if (!isExitSignal(signal)) throw new QvmError("AGENT_PROTOCOL", `unknown signal name from the guest agent: ${quoteGuestText(signal)}`);
        return { kind: "exit", code: null, signal };
      }
      if (!Number.isInteger(code) || code < 0 || code > 255) {
        throw new QvmError("AGENT_PROTOCOL", `exit code out of range from the guest agent: ${code}`);
      }
      return { kind: "exit", code, signal: null };
    }
    default:
      throw new QvmError("AGENT_PROTOCOL", "empty Exec message from the guest agent");
  }
}

// ---- USB devices (docs/usb.md) -----------------------------------------------------------------
// A backend's device list is the device's word and the backend's: bus ids must have sysfs' shape,
// ids are four hex digits, numbers are bytes, and strings are escaped and clipped before anyone
// shows them. A device that fails a check is left out (and counted), not the whole list: one bad
// entry must not hide the others. At most MAX_USB_DEVICES are kept, each bus id once (the first).

/** One interface of a device: bInterfaceClass, bInterfaceSubClass, bInterfaceProtocol. */
export interface GuestUsbInterface {
  class: number;
  subclass: number;
  protocol: number;
}

/** A USB device as a backend's agent reported it, checked. Strings are escaped and clipped. */
export interface GuestUsbDevice {
  busid: string;
  /** Four lower-case hex digits. */
  vendorId: string;
  productId: string;
  manufacturer: string;
  product: string;
  serial: string;
  deviceClass: number;
  /**
   * Distinct interfaces, HID and hub ones first, at most MAX_USB_INTERFACES: a device cannot push
   * an interface that decides how it is treated (a keyboard's) out of the list by reporting many.
   */
  interfaces: GuestUsbInterface[];
  /** The driver bound now ("usb", "usbip-host" while exported), "" when none or not a plain name. */
  driver: string;
}

export interface GuestUsbList {
  devices: GuestUsbDevice[];
  /** Entries left out (malformed, a bus id seen before, past MAX_USB_DEVICES). */
  dropped: number;
  /** Why the first one was left out ("" when none was). */
  droppedWhy: string;
}

const USB_ID = /^[0-9a-fA-F]{4}$/;
const USB_DRIVER = /^[a-z0-9_-]{1,32}$/;
const byte = z.number().int().min(0).max(255);
const usbInterface = z.object({ class: byte, subclass: byte, protocol: byte });
const usbDevice = z.object({
  busid: z.string().max(64).refine(isUsbBusId, "a bus id that is not sysfs' BUS-PORT[.PORT…]"),
  vendorId: z.string().regex(USB_ID, "a vendor id that is not four hex digits"),
  productId: z.string().regex(USB_ID, "a product id that is not four hex digits"),
  manufacturer: z.string(),
  product: z.string(),
  serial: z.string(),
  deviceClass: byte,
  interfaces: z.array(usbInterface),
  driver: z.string(),
});
const usbList = z.object({ devices: z.array(z.unknown()) });

/** A device's own text as qvm shows it: control and format characters escaped, clipped to MAX_USB_STRING code points (never inside an escape). */
export function usbText(raw: string): string {
  const pieces = [...raw.trim()].map((ch) => escapeGuestText(ch));
  let out = "";
  let n = 0;
  for (const p of pieces) {
    const len = [...p].length;
    if (n + len > MAX_USB_STRING) break;
    out += p;
    n += len;
  }
  return out;
}

/** HID (3) and hub (9) interfaces first: they decide how a device is treated. Stable otherwise. */
function interfaceRank(i: GuestUsbInterface): number {
  return i.class === 3 || i.class === 9 ? 0 : 1;
}

/** A ListUsbDevices reply, or one message of a WatchUsbDevices stream. */
export function parseUsbDeviceList(v: unknown): GuestUsbList {
  const { devices: raw } = parse(usbList, "USB device list", v);
  const devices: GuestUsbDevice[] = [];
  const seen = new Set<string>();
  let dropped = 0;
  let droppedWhy = "";
  const drop = (why: string) => {
    dropped++;
    droppedWhy ||= why;
  };
  for (const entry of raw) {
    const r = usbDevice.safeParse(entry);
    if (!r.success) {
      drop(r.error.issues[0]?.message ?? "malformed");
      continue;
    }
    const d = r.data;
    if (seen.has(d.busid)) {
      drop(`bus id ${d.busid} listed twice`);
      continue;
    }
    seen.add(d.busid);
    if (devices.length >= MAX_USB_DEVICES) {
      drop(`more than ${MAX_USB_DEVICES} devices`);
      continue;
    }
    const distinct = new Map<string, GuestUsbInterface>();
    for (const i of d.interfaces) distinct.set(`${i.class}/${i.subclass}/${i.protocol}`, { class: i.class, subclass: i.subclass, protocol: i.protocol });
    const interfaces = [...distinct.values()].sort((a, b) => interfaceRank(a) - interfaceRank(b)).slice(0, MAX_USB_INTERFACES);
    devices.push({
      busid: d.busid,
      vendorId: d.vendorId.toLowerCase(),
      productId: d.productId.toLowerCase(),
      manufacturer: usbText(d.manufacturer),
      product: usbText(d.product),
      serial: usbText(d.serial),
      deviceClass: d.deviceClass,
      interfaces,
      driver: USB_DRIVER.test(d.driver) ? d.driver : "",
    });
  }
  return { devices, dropped, droppedWhy };
}
