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
import { QvmError } from "@qvm/protocol";
import { MAX_USB_DEVICES, USB_SERVICE, escapeGuestText, isUsbBusId, quoteGuestText, usbDeviceName } from "@qvm/protocol/contracts";
import type { Clock } from "../base/clock.js";
import type { Disposable } from "../base/disposables.js";
import type { EventBus } from "../base/events.js";
import type { ExecExit } from "../agent/exec-process.js";
import type { GuestUsbDevice, GuestUsbList } from "../agent/replies.js";
import type { Attacher } from "../domain/attachments.js";
import type { DomainRegistry } from "../domain/registry.js";
import type { DomainRunner } from "../domain/runner.js";
import type { GuestAgent } from "../domain/vm-factory.js";
import type { SystemFacts } from "../qrexec/policy/evaluate.js";
import type { PolicyRule } from "../qrexec/policy/parser.js";
import type { QrexecGrants } from "../qrexec/grants.js";
import { inputAllowed } from "./input-policy.js";
import { INPUT_SERVICES, usbKinds, type UsbKind } from "./kinds.js";

/** Runs in the frontend as root: attaches BACKEND's BUSID over qubes.USB, prints ATTACHED_LINE, stays while attached. */
export const USB_ATTACH = "/usr/lib/qvm/usb-attach";
/** Runs in the backend as root: gives BUSID back to its own drivers (ends an export). */
export const USB_RELEASE = "/usr/lib/qvm/usb-release";
/** usb-attach's one line on stdout once the device is attached. */
export const ATTACHED_LINE = /^qvm-usb: attached to port ([0-9]{1,3})$/;
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
/** Device list streams opened again in a row before qvmd gives up on a domain's list (until its next start). */
const WATCH_RETRIES = 3;

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

interface Present {
  dev: GuestUsbDevice;
  kinds: UsbKind[];
  description: string;
}

interface ProcHandle {
  readonly id: number | undefined;
  readonly stdout: NodeJS.ReadableStream;
  readonly stderr: NodeJS.ReadableStream;
  readonly exit: Promise<ExecExit>;
  cancel(): void;
}

interface Attachment {
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

function newAttachment(target: string, backend: string, busid: string, device: Present): Attachment {
  let markDone!: () => void;
  let markEnding!: () => void;
  const done = new Promise<void>((r) => (markDone = r));
  const ending = new Promise<void>((r) => (markEnding = r));
  return { target, backend, busid, device, state: "attaching", done, markDone, ending, markEnding, finishing: false };
}

const key = (backend: string, busid: string) => `${backend}:${busid}`;

/** Guest text (usb-attach's stderr, a device's name) in a message: escaped, clipped. */
function guestLine(text: string, max = 200): string {
  const points = [...text.trim()];
  return escapeGuestText(points.length > max ? `${points.slice(0, max).join("")}…` : points.join(""));
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

/** Keeps the last `max` bytes of a stream's text (its last line is what an error shows); `ended` settles at its end. */
function tail(stream: NodeJS.ReadableStream, max = 4096): { text: () => string; ended: Promise<void> } {
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

/** How long an error waits for the rest of a process's stderr once it has ended. */
const STDERR_GRACE_MS = 500;

function lastLine(text: string): string {
  const lines = text.split("\n").filter((l) => l.trim());
  return lines.length ? guestLine(lines[lines.length - 1]!) : "";
}

function describeExit(exit: ExecExit): string {
  return exit.signal ? `was killed by ${exit.signal}` : `exited with ${exit.code}`;
}

export class UsbDevices {
  /** Each running domain's devices, once its agent reported them. */
  private readonly backends = new Map<string, Map<string, Present>>();
  private readonly attachments = new Map<string, Attachment>();
  /** Domains whose watcher is attached (running, as far as USB goes). */
  private readonly live = new Set<string>();
  /** The last "left out" note logged per backend, so a bad list is logged once, not every second. */
  private readonly dropNotes = new Map<string, string>();
  private readonly goneWaiters = new Map<string, { promise: Promise<void>; resolve: () => void }>();
  /** Devices being released after a qvmd restart: not attached until that is done. */
  private readonly releasing = new Set<string>();
  private readonly t: UsbTimeouts;
  private closing = false;

  constructor(private readonly deps: UsbDevicesDeps) {
    this.t = { ...DEFAULT_USB_TIMEOUTS, ...deps.timeouts };
  }

  // ---- listing -------------------------------------------------------------------------------

  /** The devices of every running backend (or of `backend`), then assignments not present; by backend, then bus id. */
  list(backend = ""): UsbDeviceView[] {
    if (backend) this.deps.registry.get(backend);
    const assigned = this.assignments();
    const rows: UsbDeviceView[] = [];
    const seen = new Set<string>();
    const add = (b: string, busid: string, p: Present | undefined, present: boolean) => {
      const k = key(b, busid);
      if (seen.has(k)) return;
      seen.add(k);
      const a = this.attachments.get(k);
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
    for (const [b, devices] of this.backends) for (const [busid, p] of devices) add(b, busid, p, true);
    // Attached, though the backend's list is gone (its watch ended): it is there all the same.
    for (const a of this.attachments.values()) add(a.backend, a.busid, a.device, true);
    for (const k of assigned.keys()) {
      const i = k.lastIndexOf(":");
      add(k.slice(0, i), k.slice(i + 1), undefined, false);
    }
    return rows.filter((r) => !backend || r.backend === backend).sort((x, y) => (x.backend < y.backend ? -1 : x.backend > y.backend ? 1 : compareBusids(x.busid, y.busid)));
  }

  /** Every assignment, "backend:busid" → the first domain (by name) that has it. */
  private assignments(): Map<string, string> {
    const m = new Map<string, string>();
    for (const r of this.deps.registry.list()) for (const u of r.usb ?? []) if (!m.has(key(u.backend, u.busid))) m.set(key(u.backend, u.busid), r.name);
    return m;
  }

  private assigneeOf(backend: string, busid: string): string | undefined {
    return this.assignments().get(key(backend, busid));
  }

  private view(backend: string, busid: string): UsbDeviceView {
    return this.list().find((r) => r.backend === backend && r.busid === busid)!;
  }

  // ---- attach --------------------------------------------------------------------------------

  /** Attaches `backend`'s device `busid` to the running `target`; `persistent` also assigns it. */
  async attach(target: string, backend: string, busid: string, persistent: boolean): Promise<UsbDeviceView> {
    const name = this.checkNames(target, backend, busid);
    if (target === backend) {
      throw new QvmError("INVALID_ARGUMENT", `${name} is ${backend}'s own device: it cannot be attached to its backend; attach it to another domain`);
    }
    if (this.closing) throw new QvmError("FAILED_PRECONDITION", "qvmd is shutting down: no USB device is attached now");
    this.checkRunning(target, "");
    this.checkRunning(backend, ", then attach: a backend's devices are known while it runs");
    const k = key(backend, busid);
    const existing = this.attachments.get(k);
    const assignee = this.assigneeOf(backend, busid);
    if (existing?.state === "detaching") throw new QvmError("FAILED_PRECONDITION", `${name} is being detached from ${existing.target}: try again in a moment`);
    if (existing?.target === target) {
      if (persistent && assignee !== target && existing.state === "attached") {
        this.assign(target, backend, busid);
        return this.view(backend, busid);
      }
      throw new QvmError("ALREADY_EXISTS", `${name} is already ${existing.state === "attaching" ? "being attached" : "attached"} to ${target}`);
    }
    if (existing) {
      throw new QvmError("FAILED_PRECONDITION", `${name} is attached to ${existing.target}: a device goes to one domain at a time; detach it there first (\`qvm usb detach ${existing.target} ${name}\`)`);
    }
    if (assignee && assignee !== target) {
      throw new QvmError("FAILED_PRECONDITION", `${name} is assigned to ${assignee} (persistent): a device goes to one domain; detach it there first (\`qvm usb detach ${assignee} ${name}\`)`);
    }
    const device = this.backends.get(backend)?.get(busid);
    if (!device) throw new QvmError("NOT_FOUND", `${backend} has no USB device ${busid}; see \`qvm usb list ${backend}\``);
    if (device.kinds.includes("hub")) throw new QvmError("FAILED_PRECONDITION", `${name} is a USB hub: attach the devices behind it one by one`);
    this.checkInput(name, device, backend, target);
    if (persistent && assignee !== target) this.checkAssignable(target);

    const a = newAttachment(target, backend, busid, device);
    this.attachments.set(k, a);
    let port: number;
    try {
      port = await this.connect(a, name);
    } catch (err) {
      if (this.attachments.get(k) === a) this.attachments.delete(k);
      a.markEnding();
      a.markDone();
      throw err;
    }
    // It may have ended already (the frontend stopped as the line came).
    if (this.attachments.get(k) !== a || a.finishing) throw new QvmError("FAILED_PRECONDITION", `${name} was attached to ${target}, and detached at once: ${a.endReason ?? "its attach process ended"}`);
    a.state = "attached";
    this.deps.log(`usb: ${name} attached to ${target} (port ${port})`);
    this.deps.events.publish("device-attach", target, { devclass: USB_DEVCLASS, device: name });
    this.follow(a);
    if (persistent && assignee !== target) {
      try {
        this.assign(target, backend, busid);
      } catch (err) {
        // Not half done: the attach goes too.
        a.endReason = `the assignment could not be stored: ${(err as Error).message}`;
        await this.stop(a);
        throw err;
      }
    }
    return this.view(backend, busid);
  }

  private checkNames(target: string, backend: string, busid: string): string {
    this.deps.registry.get(target);
    this.deps.registry.get(backend);
    if (!isUsbBusId(busid)) throw new QvmError("INVALID_ARGUMENT", `${quoteGuestText(busid, 40)} is not a USB bus id: name the device as \`qvm usb list\` shows it (sys-usb:2-1)`);
    return usbDeviceName(backend, busid);
  }

  private checkRunning(domain: string, then: string): void {
    const state = this.deps.runner.state(domain);
    if (state === "Running" && this.live.has(domain)) return;
    if (state === "Paused") throw new QvmError("FAILED_PRECONDITION", `${domain} is paused: unpause it first (\`qvm unpause ${domain}\`)${then}`);
    if (state === "Halting") throw new QvmError("FAILED_PRECONDITION", `${domain} is shutting down: start it again once it has stopped${then}`);
    if (state === "Running" || state === "Transient") throw new QvmError("FAILED_PRECONDITION", `${domain} is still starting: try again once it runs`);
    throw new QvmError("FAILED_PRECONDITION", `${domain} is not running: start it first (\`qvm start ${domain}\`)${then}`);
  }

  /** Refuses an input device the policy does not let go from `backend` to `target`. */
  private checkInput(name: string, device: Present, backend: string, target: string): void {
    const inputs = device.kinds.filter((k) => INPUT_SERVICES[k]);
    if (!inputs.length) return;
    const rules = this.deps.rules();
    const system = this.deps.facts();
    for (const kind of inputs) {
      const service = INPUT_SERVICES[kind]!;
      const d = inputAllowed(rules, system, service, backend, target);
      if (d.allowed) continue;
      this.deps.log(`usb: attaching ${name} (a ${kind}) to ${target} was refused: ${service}: ${d.reason}${d.where ? ` (${d.where})` : ""}`);
      throw new QvmError(
        "PERMISSION_DENIED",
        `${name} is a ${kind}, and the ${service} policy does not allow input from ${backend} to ${target}${d.where ? ` (${d.where})` : ""}: to allow it, add \`${service} * ${backend} ${target} allow\` to the policy's 30-user.policy`,
      );
    }
  }

  /**
   * Runs usb-attach in the frontend under a one-shot grant for its qubes.USB call, and waits for
   * its attached line. On any failure the process is stopped and the backend told to take the
   * device back before the error is thrown: nothing is left half attached.
   */
  private async connect(a: Attachment, name: string): Promise<number> {
    const { target, backend, busid } = a;
    const agent = this.deps.runner.running(target).agent;
    const grant = this.deps.grants.grant({ source: target, target: backend, service: USB_SERVICE, argument: busid, why: `usb attach of ${name} to ${target}` });
    let failure: QvmError;
    try {
      const proc = agent.exec({ command: [USB_ATTACH, backend, busid], user: "root" });
      a.proc = proc;
      // stdin stays open, unused, for the attachment's life; the process ends when the stream does.
      const stderr = tail(proc.stderr);
      const outcome = await this.attachedLine(proc);
      if ("port" in outcome) return outcome.port;
      if (outcome.why === "exit") await this.within(stderr.ended, STDERR_GRACE_MS);
      const said = lastLine(stderr.text());
      const tell = said ? `: ${said}` : "";
      failure =
        outcome.why === "timeout"
          ? new QvmError("AGENT_TIMEOUT", `attaching ${name} to ${target} failed: ${USB_ATTACH} did not report it attached within ${Math.round(this.t.attachMs / 1000)} s${tell}`)
          : outcome.why === "exit" && outcome.exit.code === 127
            ? new QvmError("MISSING_DEPENDENCY", `attaching ${name} to ${target} failed: ${target} has no ${USB_ATTACH} (qvm's USB tools): rebuild its template with this qvm${tell}`)
            : outcome.why === "exit"
              ? new QvmError("FAILED_PRECONDITION", `attaching ${name} to ${target} failed: ${USB_ATTACH} ${describeExit(outcome.exit)}${tell}`)
              : outcome.why === "line"
                ? new QvmError("AGENT_PROTOCOL", `attaching ${name} to ${target} failed: ${USB_ATTACH} printed ${quoteGuestText(outcome.line, 80)}, not the attached line${tell}`)
                : new QvmError(outcome.error instanceof QvmError ? outcome.error.code : "AGENT_UNAVAILABLE", `attaching ${name} to ${target} failed: ${outcome.error.message}`);
      if (a.endReason) failure = new QvmError("FAILED_PRECONDITION", `attaching ${name} to ${target} failed: ${a.endReason}`);
      if (outcome.why === "timeout" || outcome.why === "line") {
        // Still running: killed, and waited for (bounded) before the backend takes the device back.
        await this.kill(a);
        await this.within(proc.exit, this.t.killMs);
      }
    } catch (err) {
      // The agent refused the Exec (closed, not running): nothing was started in the frontend.
      failure = err instanceof QvmError ? err : new QvmError("AGENT_UNAVAILABLE", `attaching ${name} to ${target} failed: ${(err as Error).message}`);
    } finally {
      grant.revoke();
    }
    await this.release(backend, busid);
    this.deps.log(`usb: ${failure.message}`);
    throw failure;
  }

  /** usb-attach's first stdout line (bounded), its end, or the time running out: whichever comes first. */
  private attachedLine(
    proc: ProcHandle,
  ): Promise<{ port: number } | { why: "timeout" } | { why: "exit"; exit: ExecExit } | { why: "line"; line: string } | { why: "error"; error: Error }> {
    return new Promise((resolve) => {
      let settled = false;
      let buf = "";
      const settle = (v: Parameters<typeof resolve>[0]) => {
        if (settled) return;
        settled = true;
        resolve(v);
      };
      const onData = (c: Buffer | string) => {
        if (settled) return;
        buf += c.toString();
        const nl = buf.indexOf("\n");
        if (nl < 0) {
          if (buf.length > 256) settle({ why: "line", line: buf });
          return;
        }
        const line = buf.slice(0, nl).replace(/\r$/, "");
        const m = ATTACHED_LINE.exec(line);
        settle(m ? { port: Number(m[1]) } : { why: "line", line });
      };
      // Read to the end, whatever comes after the line: the process must never block on a full pipe.
      proc.stdout.on("data", onData);
      proc.stdout.on("error", () => {});
      proc.exit.then(
        (exit) => settle({ why: "exit", exit }),
        (error: Error) => settle({ why: "error", error }),
      );
      void this.deps.clock.sleep(this.t.attachMs).then(() => settle({ why: "timeout" }));
    });
  }

  /** Watches an attachment's Exec: when it ends, the attachment ends. */
  private follow(a: Attachment): void {
    a.proc!.exit.then(
      (exit) => this.finish(a, `${USB_ATTACH} in ${a.target} ${describeExit(exit)}`),
      async (err: Error) => {
        // A broken stream is most often the frontend stopping: its end, noticed a moment later, names the reason.
        await this.within(this.goneOf(a.target), this.t.killMs);
        await this.finish(a, `the connection to ${a.target}'s agent ended: ${err.message}`);
      },
    );
  }

  /** Settles when `domain`'s VM is gone (its watcher released); at once when it is not live. */
  private goneOf(domain: string): Promise<void> {
    if (!this.live.has(domain)) return Promise.resolve();
    let w = this.goneWaiters.get(domain);
    if (!w) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      this.goneWaiters.set(domain, (w = { promise, resolve }));
    }
    return w.promise;
  }

  /**
   * The attachment is over: forgotten, the backend told to take the device back (if it runs),
   * device-detach published. Once per attachment, whoever notices first.
   */
  private async finish(a: Attachment, why: string): Promise<void> {
    if (a.finishing) return a.done;
    a.finishing = true;
    a.state = "detaching";
    a.markEnding();
    const name = usbDeviceName(a.backend, a.busid);
    const reason = a.endReason ?? why;
    try {
      if (!this.closing) await this.release(a.backend, a.busid);
    } finally {
      if (this.attachments.get(key(a.backend, a.busid)) === a) this.attachments.delete(key(a.backend, a.busid));
      if (!this.closing) {
        this.deps.log(`usb: ${name} detached from ${a.target}: ${reason}`);
        this.deps.events.publish("device-detach", a.target, { devclass: USB_DEVCLASS, device: name, reason });
      }
      a.markDone();
    }
  }

  // ---- detach --------------------------------------------------------------------------------

  /** Detaches the device from `target` on both sides; also drops its assignment to `target`. */
  async detach(target: string, backend: string, busid: string): Promise<void> {
    const name = this.checkNames(target, backend, busid);
    const a = this.attachments.get(key(backend, busid));
    const assigned = this.deps.registry.get(target).usb?.some((u) => u.backend === backend && u.busid === busid) === true;
    if (a?.target === target) {
      if (a.state === "attaching") throw new QvmError("FAILED_PRECONDITION", `${name} is being attached to ${target}: wait for that to finish, then detach it`);
      a.endReason ??= "detached on request";
      await this.stop(a);
    } else if (!assigned) {
      throw new QvmError("NOT_FOUND", `${name} is not attached to ${target}${a ? ` (it is attached to ${a.target})` : ""}; see \`qvm usb list\``);
    }
    if (assigned) this.unassign(target, backend, busid);
  }

  /**
   * Ends an attachment and waits until it is over: SIGTERM to usb-attach, after termMs a kill and
   * the stream cancelled, after killMs it is forgotten anyway.
   */
  private stop(a: Attachment): Promise<void> {
    a.stopping ??= (async () => {
      if (a.finishing) return;
      await this.signal(a, "SIGTERM");
      if (await this.within(a.ending, this.t.termMs)) return;
      await this.kill(a);
      if (await this.within(a.ending, this.t.killMs)) return;
      await this.finish(a, `${USB_ATTACH} in ${a.target} did not end when told to; forgotten`);
    })();
    return a.stopping.then(() => a.done);
  }

  /** SIGKILL, then the Exec stream cancelled (the agent kills what is left). */
  private async kill(a: Attachment): Promise<void> {
    await this.signal(a, "SIGKILL");
    a.proc?.cancel();
  }

  private async signal(a: Attachment, sig: "SIGTERM" | "SIGKILL"): Promise<void> {
    const id = a.proc?.id;
    if (id === undefined || this.deps.runner.state(a.target) !== "Running") return;
    let agent: GuestAgent;
    try {
      agent = this.deps.runner.running(a.target).agent;
    } catch {
      return;
    }
    const sent = agent.signal(id, sig).catch((err: Error) => this.deps.log(`usb: cannot send ${sig} to ${USB_ATTACH} in ${a.target}: ${err.message}`));
    await this.within(sent, this.t.signalMs);
  }

  /** Whether `p` settled within `ms`. */
  private async within(p: Promise<unknown>, ms: number): Promise<boolean> {
    let settled = false;
    const watched = p.then(
      () => (settled = true),
      () => (settled = true),
    );
    await Promise.race([watched, this.deps.clock.sleep(ms)]);
    return settled;
  }

  /** usb-release in the backend, as root, bounded; best effort (logged). */
  private async release(backend: string, busid: string): Promise<void> {
    if (!this.live.has(backend)) return;
    if (this.deps.runner.state(backend) !== "Running") {
      this.deps.log(`usb: ${usbDeviceName(backend, busid)} not released in ${backend}: it is ${this.deps.runner.state(backend).toLowerCase()}`);
      return;
    }
    let proc;
    try {
      proc = this.deps.runner.running(backend).agent.exec({ command: [USB_RELEASE, busid], user: "root" });
    } catch (err) {
      this.deps.log(`usb: cannot release ${usbDeviceName(backend, busid)} in ${backend}: ${(err as Error).message}`);
      return;
    }
    proc.stdin.end();
    proc.stdout.resume();
    const stderr = tail(proc.stderr);
    const exit = proc.exit.then(
      (e) => (e.code === 0 ? "" : `${USB_RELEASE} ${describeExit(e)}`),
      (err: Error) => err.message,
    );
    if (!(await this.within(exit, this.t.releaseMs))) {
      proc.cancel();
      this.deps.log(`usb: ${USB_RELEASE} ${busid} in ${backend} did not end within ${Math.round(this.t.releaseMs / 1000)} s; cancelled`);
      return;
    }
    const problem = await exit;
    if (!problem) return;
    await this.within(stderr.ended, STDERR_GRACE_MS);
    const said = lastLine(stderr.text());
    this.deps.log(`usb: releasing ${usbDeviceName(backend, busid)} in ${backend}: ${problem}${said ? `: ${said}` : ""}`);
  }

  // ---- assignments ---------------------------------------------------------------------------

  private checkAssignable(target: string): void {
    if ((this.deps.registry.get(target).usb ?? []).length >= MAX_USB_DEVICES) {
      throw new QvmError("RESOURCE_EXHAUSTED", `${target} has ${MAX_USB_DEVICES} USB devices assigned, the most a domain may have; detach one first`);
    }
  }

  private assign(target: string, backend: string, busid: string): void {
    this.checkAssignable(target);
    this.deps.registry.store.update(target, (r) => {
      r.usb = [...(r.usb ?? []).filter((u) => !(u.backend === backend && u.busid === busid)), { backend, busid }];
    });
    this.deps.events.publish("device-assign", target, { devclass: USB_DEVCLASS, device: usbDeviceName(backend, busid) });
  }

  private unassign(target: string, backend: string, busid: string): void {
    this.deps.registry.store.update(target, (r) => {
      const left = (r.usb ?? []).filter((u) => !(u.backend === backend && u.busid === busid));
      if (left.length) r.usb = left;
      else delete r.usb;
    });
    this.deps.events.publish("device-unassign", target, { devclass: USB_DEVCLASS, device: usbDeviceName(backend, busid) });
  }

  /** Attaches `target`'s assignments whose backend runs and has the device; the others are logged (and attached when their backend reports them). */
  private attachAssigned(target: string): void {
    const rec = this.deps.registry.store.get(target);
    for (const u of rec?.usb ?? []) {
      const name = usbDeviceName(u.backend, u.busid);
      if (!this.live.has(u.backend)) this.deps.log(`usb: ${target}: ${name} not attached: ${u.backend} is not running (it is attached once ${u.backend} runs and reports it)`);
      else if (!this.backends.get(u.backend)?.has(u.busid)) this.deps.log(`usb: ${target}: ${name} not attached: ${u.backend} does not report it now (it is attached once it does)`);
      else this.autoAttach(target, u.backend, u.busid);
    }
  }

  /** An assignment attached by qvmd itself: refusals and failures are logged. */
  private autoAttach(target: string, backend: string, busid: string): void {
    const name = usbDeviceName(backend, busid);
    if (this.closing || this.attachments.has(key(backend, busid)) || this.releasing.has(key(backend, busid)) || !this.live.has(target) || this.deps.runner.state(target) !== "Running") return;
    this.attach(target, backend, busid, false).then(
      () => this.deps.log(`usb: ${target}: assigned ${name} attached`),
      (err: Error) => this.deps.log(`usb: ${target}: assigned ${name} not attached: ${err.message}`),
    );
  }

  // ---- following running domains -------------------------------------------------------------

  /**
   * Per running domain: follows its USB devices (it may be a backend), attaches its assignments
   * (it may be a frontend), and at its end ends what it took part in.
   */
  attacher(): Attacher {
    return {
      name: "usb devices",
      holder: "qvmd",
      attach: async (ctx): Promise<Disposable> => {
        const { name, reattached } = ctx;
        const agent = this.deps.runner.running(name).agent;
        this.live.add(name);
        let first = true;
        let released = false;
        let retries = 0;
        let stopWatch = () => {};
        let pending: GuestUsbList | undefined;
        let cooling = false;
        const apply = (list: GuestUsbList) => {
          this.update(name, list, first && reattached);
          first = false;
        };
        // The latest list, at most one per listIntervalMs.
        const cool = () =>
          void this.deps.clock.sleep(this.t.listIntervalMs).then(() => {
            if (released || !pending) return void (cooling = false);
            const next = pending;
            pending = undefined;
            apply(next);
            cool();
          });
        const onList = (list: GuestUsbList) => {
          retries = 0;
          if (released) return;
          if (this.t.listIntervalMs <= 0) return apply(list);
          if (cooling) return void (pending = list);
          cooling = true;
          apply(list);
          cool();
        };
        // A stream that breaks while the domain runs (its agent restarted) is opened again, a few times in a row at most.
        const watch = () => {
          stopWatch = agent.watchUsbDevices(
            onList,
            (err) => {
              if (released || this.closing) return;
              // An agent without the RPC, or one that sent something that is not a list: trying again would not help.
              const broken = err instanceof QvmError && err.code === "AGENT_PROTOCOL";
              if (broken || retries >= WATCH_RETRIES) {
                this.deps.log(`${name}: USB device list: ${err ? err.message : "the stream ended"}; not followed any more (until ${name} starts again)`);
                return;
              }
              retries++;
              if (err) this.deps.log(`${name}: USB device list: ${err.message}; trying again in ${Math.round(this.t.watchRetryMs / 1000)} s`);
              void this.deps.clock.sleep(this.t.watchRetryMs).then(() => {
                if (!released && !this.closing) watch();
              });
            },
          );
        };
        watch();
        // After the attachers: the domain counts as running by then.
        queueMicrotask(() => this.attachAssigned(name));
        return {
          dispose: () => {
            released = true;
            this.gone(name, () => stopWatch());
          },
        };
      },
    };
  }

  /** A new list from `backend`: what went away is removed (and detached), what came is added (and attached if assigned). */
  private update(backend: string, list: GuestUsbList, afterRestart: boolean): void {
    if (!this.live.has(backend)) return;
    if (list.dropped) {
      const note = `${list.dropped} left out (${list.droppedWhy})`;
      if (this.dropNotes.get(backend) !== note) this.deps.log(`${backend}: USB device list: ${note}`);
      this.dropNotes.set(backend, note);
    } else this.dropNotes.delete(backend);
    const before = this.backends.get(backend) ?? new Map<string, Present>();
    const now = new Map<string, Present>();
    for (const dev of list.devices) {
      const description = [dev.manufacturer, dev.product].filter(Boolean).join(" ");
      now.set(dev.busid, { dev, kinds: usbKinds(dev), description });
    }
    const same = (x: Present, y: Present) => x.dev.vendorId === y.dev.vendorId && x.dev.productId === y.dev.productId && x.dev.serial === y.dev.serial;
    const added: string[] = [];
    for (const [busid, p] of before) {
      const n = now.get(busid);
      if (n && same(p, n)) continue;
      this.removed(backend, busid);
    }
    for (const [busid, p] of now) {
      const b = before.get(busid);
      if (b && same(b, p)) continue;
      added.push(busid);
      this.deps.events.publish("device-added", backend, { devclass: USB_DEVCLASS, device: usbDeviceName(backend, busid), description: p.description });
    }
    this.backends.set(backend, now);
    // After a qvmd restart, a device still exported for nobody (its attachment ended with the old
    // qvmd) goes back to the backend first; then assignments are attached.
    const stale = afterRestart ? list.devices.filter((d) => d.driver === "usbip-host" && !this.attachments.has(key(backend, d.busid))).map((d) => d.busid) : [];
    void Promise.all(
      stale.map(async (busid) => {
        this.deps.log(`usb: ${usbDeviceName(backend, busid)} was left exported by an earlier qvmd; releasing it`);
        this.releasing.add(key(backend, busid));
        try {
          await this.release(backend, busid);
        } finally {
          this.releasing.delete(key(backend, busid));
        }
      }),
    ).then(() => {
      for (const busid of added) {
        const assignee = this.assigneeOf(backend, busid);
        if (assignee && assignee !== backend) this.autoAttach(assignee, backend, busid);
      }
    });
  }

  private removed(backend: string, busid: string): void {
    const name = usbDeviceName(backend, busid);
    this.backends.get(backend)?.delete(busid);
    this.deps.events.publish("device-removed", backend, { devclass: USB_DEVCLASS, device: name });
    const a = this.attachments.get(key(backend, busid));
    if (a && a.state === "attached") {
      a.endReason ??= `the device was removed from ${backend}`;
      void this.stop(a);
    }
  }

  /** `name`'s VM is gone (or qvmd lets go of it): its list and every attachment it took part in end. */
  private gone(name: string, stopWatch: () => void): void {
    this.live.delete(name);
    stopWatch();
    this.goneWaiters.get(name)?.resolve();
    this.goneWaiters.delete(name);
    this.dropNotes.delete(name);
    if (this.closing) {
      this.backends.delete(name);
      return;
    }
    for (const a of [...this.attachments.values()]) {
      if (a.target !== name && a.backend !== name) continue;
      a.endReason ??= `${name} stopped`;
      // Being attached: its attach fails (and cleans up) once the Exec ends.
      if (a.state === "attaching") a.proc?.cancel();
      // The frontend's Exec ends with it; one from a stopped backend is stopped in the frontend.
      else if (a.target === name) {
        a.proc?.cancel();
        void this.within(a.ending, this.t.killMs).then((ok) => {
          if (!ok) void this.finish(a, `${name} stopped`);
        });
      } else void this.stop(a);
    }
    for (const busid of [...(this.backends.get(name)?.keys() ?? [])]) this.removed(name, busid);
    this.backends.delete(name);
  }

  /**
   * qvmd is exiting: every attachment ends with it (its Exec stream is cancelled, so the frontend's
   * usb-attach is killed) and each backend is told to take its device back, within closeMs.
   * Call before the runner lets go of the domains.
   */
  async close(): Promise<void> {
    const all = [...this.attachments.values()];
    this.closing = true;
    for (const a of all) a.proc?.cancel();
    await this.within(Promise.all(all.map((a) => this.release(a.backend, a.busid))), this.t.closeMs);
    this.attachments.clear();
  }
}
