// The life of a USB attachment once usb-attach runs: the Exec's handle is the attachment, so
// when it ends, for whatever reason (a detach, the backend or the frontend stopping, the device
// pulled out), the attachment is forgotten, the backend is told to take the device back
// (usb-release, best effort) and device-detach is published with the reason. Every wait is
// bounded (UsbTimeouts): a guest that does not answer cannot keep an attachment half ended.
import { QvmError } from "@qvm/protocol";
import { usbDeviceName } from "@qvm/protocol/contracts";
import type { GuestAgent } from "../domain/vm-factory.js";
import { unassign } from "./assignments.js";
import { checkNames } from "./attach-checks.js";
import { STDERR_GRACE_MS, USB_ATTACH, USB_RELEASE, describeExit, lastLine, tail } from "./guest-tools.js";
import { USB_DEVCLASS, key, within, type Attachment, type UsbState } from "./usb-state.js";

/** Watches an attachment's Exec: when it ends, the attachment ends. */
export function follow(s: UsbState, a: Attachment): void {
  a.proc!.exit.then(
    (exit) => finish(s, a, `${USB_ATTACH} in ${a.target} ${describeExit(exit)}`),
    async (err: Error) => {
      // A broken stream is most often the frontend stopping: its end, noticed a moment later, names the reason.
      await within(s, goneOf(s, a.target), s.t.killMs);
      await finish(s, a, `the connection to ${a.target}'s agent ended: ${err.message}`);
    },
  );
}

/** Settles when `domain`'s VM is gone (its watcher released); at once when it is not live. */
function goneOf(s: UsbState, domain: string): Promise<void> {
  if (!s.live.has(domain)) return Promise.resolve();
  let w = s.goneWaiters.get(domain);
  if (!w) {
    let resolve!: () => void;
    const promise = new Promise<void>((r) => (resolve = r));
    s.goneWaiters.set(domain, (w = { promise, resolve }));
  }
  return w.promise;
}

/**
 * The attachment is over: forgotten, the backend told to take the device back (if it runs),
 * device-detach published. Once per attachment, whoever notices first.
 */
export async function finish(s: UsbState, a: Attachment, why: string): Promise<void> {
  if (a.finishing) return a.done;
  a.finishing = true;
  a.state = "detaching";
  a.markEnding();
  const name = usbDeviceName(a.backend, a.busid);
  const reason = a.endReason ?? why;
  try {
    if (!s.closing) await release(s, a.backend, a.busid);
  } finally {
    if (s.attachments.get(key(a.backend, a.busid)) === a) s.attachments.delete(key(a.backend, a.busid));
    if (!s.closing) {
      s.deps.log(`usb: ${name} detached from ${a.target}: ${reason}`);
      s.deps.events.publish("device-detach", a.target, { devclass: USB_DEVCLASS, device: name, reason });
    }
    a.markDone();
  }
}

/** Detaches the device from `target` on both sides; also drops its assignment to `target`. */
export async function detach(s: UsbState, target: string, backend: string, busid: string): Promise<void> {
  const name = checkNames(s, target, backend, busid);
  const a = s.attachments.get(key(backend, busid));
  const assigned = s.deps.registry.get(target).usb?.some((u) => u.backend === backend && u.busid === busid) === true;
  if (a?.target === target) {
    if (a.state === "attaching") throw new QvmError("FAILED_PRECONDITION", `${name} is being attached to ${target}: wait for that to finish, then detach it`);
    a.endReason ??= "detached on request";
    await stop(s, a);
  } else if (!assigned) {
    throw new QvmError("NOT_FOUND", `${name} is not attached to ${target}${a ? ` (it is attached to ${a.target})` : ""}; see \`qvm usb list\``);
  }
  if (assigned) unassign(s, target, backend, busid);
}

/**
 * Ends an attachment and waits until it is over: SIGTERM to usb-attach, after termMs a kill and
 * the stream cancelled, after killMs it is forgotten anyway.
 */
export function stop(s: UsbState, a: Attachment): Promise<void> {
  a.stopping ??= (async () => {
    if (a.finishing) return;
    await signal(s, a, "SIGTERM");
    if (await within(s, a.ending, s.t.termMs)) return;
    await kill(s, a);
    if (await within(s, a.ending, s.t.killMs)) return;
    await finish(s, a, `${USB_ATTACH} in ${a.target} did not end when told to; forgotten`);
  })();
  return a.stopping.then(() => a.done);
}

/** SIGKILL, then the Exec stream cancelled (the agent kills what is left). */
export async function kill(s: UsbState, a: Attachment): Promise<void> {
  await signal(s, a, "SIGKILL");
  a.proc?.cancel();
}

async function signal(s: UsbState, a: Attachment, sig: "SIGTERM" | "SIGKILL"): Promise<void> {
  const id = a.proc?.id;
  if (id === undefined || s.deps.runner.state(a.target) !== "Running") return;
  let agent: GuestAgent;
  try {
    agent = s.deps.runner.running(a.target).agent;
  } catch {
    return;
  }
  const sent = agent.signal(id, sig).catch((err: Error) => s.deps.log(`usb: cannot send ${sig} to ${USB_ATTACH} in ${a.target}: ${err.message}`));
  await within(s, sent, s.t.signalMs);
}

/** usb-release in the backend, as root, bounded; best effort (logged). */
export async function release(s: UsbState, backend: string, busid: string): Promise<void> {
  if (!s.live.has(backend)) return;
  if (s.deps.runner.state(backend) !== "Running") {
    s.deps.log(`usb: ${usbDeviceName(backend, busid)} not released in ${backend}: it is ${s.deps.runner.state(backend).toLowerCase()}`);
    return;
  }
  let proc;
  try {
    proc = s.deps.runner.running(backend).agent.exec({ command: [USB_RELEASE, busid], user: "root" });
  } catch (err) {
    s.deps.log(`usb: cannot release ${usbDeviceName(backend, busid)} in ${backend}: ${(err as Error).message}`);
    return;
  }
  proc.stdin.end();
  proc.stdout.resume();
  const stderr = tail(proc.stderr);
  const exit = proc.exit.then(
    (e) => (e.code === 0 ? "" : `${USB_RELEASE} ${describeExit(e)}`),
    (err: Error) => err.message,
  );
  if (!(await within(s, exit, s.t.releaseMs))) {
    proc.cancel();
    s.deps.log(`usb: ${USB_RELEASE} ${busid} in ${backend} did not end within ${Math.round(s.t.releaseMs / 1000)} s; cancelled`);
    return;
  }
  const problem = await exit;
  if (!problem) return;
  await within(s, stderr.ended, STDERR_GRACE_MS);
  const said = lastLine(stderr.text());
  s.deps.log(`usb: releasing ${usbDeviceName(backend, busid)} in ${backend}: ${problem}${said ? `: ${said}` : ""}`);
}

/**
 * qvmd is exiting: every attachment ends with it (its Exec stream is cancelled, so the frontend's
 * usb-attach is killed) and each backend is told to take its device back, within closeMs.
 * Call before the runner lets go of the domains.
 */
export async function closeAll(s: UsbState): Promise<void> {
  const all = [...s.attachments.values()];
  s.closing = true;
  for (const a of all) a.proc?.cancel();
  await within(s, Promise.all(all.map((a) => release(s, a.backend, a.busid))), s.t.closeMs);
  s.attachments.clear();
}
