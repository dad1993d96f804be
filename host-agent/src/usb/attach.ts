// Attaching a USB device to a running frontend, Qubes' flow without the policy file edit
// (docs/usb.md): after the checks (attach-checks.ts), qvmd grants the frontend one qubes.USB call
// to the backend with the bus id as argument, as root, held in memory and consumed by that call
// (qrexec/grants.ts), and runs usb-attach in the frontend, which makes that call and prints its
// attached line. Any failure stops the process and releases the device before the error is
// thrown: nothing is left half attached. From the line on, attachment-life.ts follows it.
import { QvmError } from "@qvm/protocol";
import { USB_SERVICE, quoteGuestText } from "@qvm/protocol/contracts";
import type { ExecExit } from "../agent/exec-process.js";
import { assign, assigneeOf, checkAssignable } from "./assignments.js";
import { checkInput, checkNames, checkRunning } from "./attach-checks.js";
import { follow, kill, release, stop } from "./attachment-life.js";
import { ATTACHED_LINE, STDERR_GRACE_MS, USB_ATTACH, describeExit, lastLine, tail } from "./guest-tools.js";
import { USB_DEVCLASS, key, newAttachment, within, type Attachment, type ProcHandle, type UsbState } from "./usb-state.js";
import { viewOf, type UsbDeviceView } from "./usb-view.js";

/** Attaches `backend`'s device `busid` to the running `target`; `persistent` also assigns it. */
export async function attach(s: UsbState, target: string, backend: string, busid: string, persistent: boolean): Promise<UsbDeviceView> {
  const name = checkNames(s, target, backend, busid);
  if (target === backend) {
    throw new QvmError("INVALID_ARGUMENT", `${name} is ${backend}'s own device: it cannot be attached to its backend; attach it to another domain`);
  }
  if (s.closing) throw new QvmError("FAILED_PRECONDITION", "qvmd is shutting down: no USB device is attached now");
  checkRunning(s, target, "");
  checkRunning(s, backend, ", then attach: a backend's devices are known while it runs");
  const k = key(backend, busid);
  const existing = s.attachments.get(k);
  const assignee = assigneeOf(s, backend, busid);
  if (existing?.state === "detaching") throw new QvmError("FAILED_PRECONDITION", `${name} is being detached from ${existing.target}: try again in a moment`);
  if (existing?.target === target) {
    if (persistent && assignee !== target && existing.state === "attached") {
      assign(s, target, backend, busid);
      return viewOf(s, backend, busid);
    }
    throw new QvmError("ALREADY_EXISTS", `${name} is already ${existing.state === "attaching" ? "being attached" : "attached"} to ${target}`);
  }
  if (existing) {
    throw new QvmError("FAILED_PRECONDITION", `${name} is attached to ${existing.target}: a device goes to one domain at a time; detach it there first (\`qvm usb detach ${existing.target} ${name}\`)`);
  }
  if (assignee && assignee !== target) {
    throw new QvmError("FAILED_PRECONDITION", `${name} is assigned to ${assignee} (persistent): a device goes to one domain; detach it there first (\`qvm usb detach ${assignee} ${name}\`)`);
  }
  const device = s.backends.get(backend)?.get(busid);
  if (!device) throw new QvmError("NOT_FOUND", `${backend} has no USB device ${busid}; see \`qvm usb list ${backend}\``);
  if (device.kinds.includes("hub")) throw new QvmError("FAILED_PRECONDITION", `${name} is a USB hub: attach the devices behind it one by one`);
  checkInput(s, name, device, backend, target);
  if (persistent && assignee !== target) checkAssignable(s, target);

  const a = newAttachment(target, backend, busid, device);
  s.attachments.set(k, a);
  let port: number;
  try {
    port = await connect(s, a, name);
  } catch (err) {
    if (s.attachments.get(k) === a) s.attachments.delete(k);
    a.markEnding();
    a.markDone();
    throw err;
  }
  // It may have ended already (the frontend stopped as the line came).
  if (s.attachments.get(k) !== a || a.finishing) throw new QvmError("FAILED_PRECONDITION", `${name} was attached to ${target}, and detached at once: ${a.endReason ?? "its attach process ended"}`);
  a.state = "attached";
  s.deps.log(`usb: ${name} attached to ${target} (port ${port})`);
  s.deps.events.publish("device-attach", target, { devclass: USB_DEVCLASS, device: name });
  follow(s, a);
  if (persistent && assignee !== target) {
    try {
      assign(s, target, backend, busid);
    } catch (err) {
      // Not half done: the attach goes too.
      a.endReason = `the assignment could not be stored: ${(err as Error).message}`;
      await stop(s, a);
      throw err;
    }
  }
  return viewOf(s, backend, busid);
}

/**
 * Runs usb-attach in the frontend under a one-shot grant for its qubes.USB call, and waits for
 * its attached line. On any failure the process is stopped and the backend told to take the
 * device back before the error is thrown: nothing is left half attached.
 */
async function connect(s: UsbState, a: Attachment, name: string): Promise<number> {
  const { target, backend, busid } = a;
  const agent = s.deps.runner.running(target).agent;
  const grant = s.deps.grants.grant({ source: target, target: backend, service: USB_SERVICE, argument: busid, why: `usb attach of ${name} to ${target}` });
  let failure: QvmError;
  try {
    const proc = agent.exec({ command: [USB_ATTACH, backend, busid], user: "root" });
    a.proc = proc;
    // stdin stays open, unused, for the attachment's life; the process ends when the stream does.
    const stderr = tail(proc.stderr);
    const outcome = await attachedLine(s, proc);
    if ("port" in outcome) return outcome.port;
    if (outcome.why === "exit") await within(s, stderr.ended, STDERR_GRACE_MS);
    const said = lastLine(stderr.text());
    const tell = said ? `: ${said}` : "";
    failure =
      outcome.why === "timeout"
        ? new QvmError("AGENT_TIMEOUT", `attaching ${name} to ${target} failed: ${USB_ATTACH} did not report it attached within ${Math.round(s.t.attachMs / 1000)} s${tell}`)
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
      await kill(s, a);
      await within(s, proc.exit, s.t.killMs);
    }
  } catch (err) {
    // The agent refused the Exec (closed, not running): nothing was started in the frontend.
    failure = err instanceof QvmError ? err : new QvmError("AGENT_UNAVAILABLE", `attaching ${name} to ${target} failed: ${(err as Error).message}`);
  } finally {
    grant.revoke();
  }
  await release(s, backend, busid);
  s.deps.log(`usb: ${failure.message}`);
  throw failure;
}

/** usb-attach's first stdout line (bounded), its end, or the time running out: whichever comes first. */
function attachedLine(
  s: UsbState,
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
    void s.deps.clock.sleep(s.t.attachMs).then(() => settle({ why: "timeout" }));
  });
}
