// What the USB modules share (usb-devices.ts is their facade): the service's dependencies, its
// time bounds, and the state the device lists, attachments and assignments are read from. One
// object passed to each of them, so every module sees the same maps and the same `closing` flag.
import type { Clock } from "../base/clock.js";
import type { EventBus } from "../base/events.js";
import type { ExecExit } from "../agent/exec-process.js";
import type { GuestUsbDevice } from "../agent/replies.js";
import type { DomainRegistry } from "../domain/registry.js";
import type { DomainRunner } from "../domain/runner.js";
import type { SystemFacts } from "../qrexec/policy/evaluate.js";
import type { PolicyRule } from "../qrexec/policy/parser.js";
import type { QrexecGrants } from "../qrexec/grants.js";
import type { UsbKind } from "./kinds.js";

/** The devclass of USB devices in events. */
export const USB_DEVCLASS = "usb";

export interface UsbTimeouts {
  /** How long usb-attach has to report the device attached (USB/IP under emulation is slow). */
  attachMs: number;
  /** After SIGTERM, how long a detach waits before killing usb-attach. */
  termMs: number;
  /** After the kill, how long before the attachment is forgotten anyway. */
  killMs: number;
  /** How long usb-release may run in the backend. */
  releaseMs: number;
  /** How long a Signal call to an agent may take. */
  signalMs: number;
  /** How long after a device list stream broke it is opened again (WATCH_RETRIES times in a row at most). */
  watchRetryMs: number;
  /** How long qvmd's exit waits for the backends to take their devices back. */
  closeMs: number;
  /**
   * At most one device list per domain is taken in this long (the agent sends one a second at
   * most; a domain that sends more has only its latest taken), so a hostile backend cannot flood
   * the event feed with device-added/removed. 0: every list at once.
   */
  listIntervalMs: number;
}

export const DEFAULT_USB_TIMEOUTS: UsbTimeouts = { attachMs: 60_000, termMs: 5_000, killMs: 3_000, releaseMs: 15_000, signalMs: 3_000, watchRetryMs: 5_000, closeMs: 5_000, listIntervalMs: 1_000 };

export interface UsbDevicesDeps {
  registry: Pick<DomainRegistry, "get" | "list" | "store">;
  runner: Pick<DomainRunner, "running" | "state">;
  events: EventBus;
  grants: QrexecGrants;
  /** The policy's rules (throws POLICY_INVALID when broken) and the domains' facts, read at each attach. */
  rules: () => readonly PolicyRule[];
  facts: () => SystemFacts;
  clock: Clock;
  log: (msg: string) => void;
  timeouts?: Partial<UsbTimeouts>;
}

/** A device a backend reports, as qvmd keeps it. */
export interface Present {
  dev: GuestUsbDevice;
  kinds: UsbKind[];
  description: string;
}

/** usb-attach running in the frontend: the Exec that is the attachment. */
export interface ProcHandle {
  readonly id: number | undefined;
  readonly stdout: NodeJS.ReadableStream;
  readonly stderr: NodeJS.ReadableStream;
  readonly exit: Promise<ExecExit>;
  cancel(): void;
}

export interface Attachment {
  target: string;
  backend: string;
  busid: string;
  device: Present;
  state: "attaching" | "attached" | "detaching";
  proc?: ProcHandle;
  /** Why it ends, when something decided it (a detach, a domain stopping); else the Exec's end says. */
  endReason?: string;
  /** Settles once it is forgotten, released and announced. */
  done: Promise<void>;
  markDone: () => void;
  /** Settles when its end begins (finish() was called). */
  ending: Promise<void>;
  markEnding: () => void;
  finishing: boolean;
  stopping?: Promise<void>;
}

export function newAttachment(target: string, backend: string, busid: string, device: Present): Attachment {
  let markDone!: () => void;
  let markEnding!: () => void;
  const done = new Promise<void>((r) => (markDone = r));
  const ending = new Promise<void>((r) => (markEnding = r));
  return { target, backend, busid, device, state: "attaching", done, markDone, ending, markEnding, finishing: false };
}

export const key = (backend: string, busid: string) => `${backend}:${busid}`;

export interface UsbState {
  readonly deps: UsbDevicesDeps;
  readonly t: UsbTimeouts;
  /** Each running domain's devices, once its agent reported them. */
  readonly backends: Map<string, Map<string, Present>>;
  readonly attachments: Map<string, Attachment>;
  /** Domains whose watcher is attached (running, as far as USB goes). */
  readonly live: Set<string>;
  /** The last "left out" note logged per backend, so a bad list is logged once, not every second. */
  readonly dropNotes: Map<string, string>;
  readonly goneWaiters: Map<string, { promise: Promise<void>; resolve: () => void }>;
  /** Devices being released after a qvmd restart: not attached until that is done. */
  readonly releasing: Set<string>;
  /** qvmd is exiting (close()): nothing is attached, released one by one or announced any more. */
  closing: boolean;
}

export function newUsbState(deps: UsbDevicesDeps): UsbState {
  return {
    deps,
    t: { ...DEFAULT_USB_TIMEOUTS, ...deps.timeouts },
    backends: new Map(),
    attachments: new Map(),
    live: new Set(),
    dropNotes: new Map(),
    goneWaiters: new Map(),
    releasing: new Set(),
    closing: false,
  };
}

/** Whether `p` settled within `ms`. */
export async function within(s: UsbState, p: Promise<unknown>, ms: number): Promise<boolean> {
  let settled = false;
  const watched = p.then(
    () => (settled = true),
    () => (settled = true),
  );
  await Promise.race([watched, s.deps.clock.sleep(ms)]);
  return settled;
}
