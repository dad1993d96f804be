// Each running domain's USB devices as its agent reports them (checked, agent/replies.ts): a
// watcher per running domain (it may be a backend) that keeps its latest list, at most one per
// listIntervalMs so a hostile backend cannot flood the event feed, and turns each change into
// device-added/device-removed. A device that goes away is detached; one that comes is attached if
// assigned. When the domain stops, every attachment it took part in ends.
import { QvmError } from "@qvm/protocol";
import { usbDeviceName } from "@qvm/protocol/contracts";
import type { Disposable } from "../base/disposables.js";
import type { GuestUsbList } from "../agent/replies.js";
import type { Attacher } from "../domain/attachments.js";
import { assigneeOf } from "./assignments.js";
import { finish, release, stop } from "./attachment-life.js";
import { attachAssigned, autoAttach } from "./auto-attach.js";
import { usbKinds } from "./kinds.js";
import { USB_DEVCLASS, key, within, type Present, type UsbState } from "./usb-state.js";

/** Device list streams opened again in a row before qvmd gives up on a domain's list (until its next start). */
const WATCH_RETRIES = 3;

/**
 * Per running domain: follows its USB devices (it may be a backend), attaches its assignments
 * (it may be a frontend), and at its end ends what it took part in.
 */
export function deviceAttacher(s: UsbState): Attacher {
  return {
    name: "usb devices",
    holder: "qvmd",
    attach: async (ctx): Promise<Disposable> => {
      const { name, reattached } = ctx;
      const agent = s.deps.runner.running(name).agent;
      s.live.add(name);
      let first = true;
      let released = false;
      let retries = 0;
      let stopWatch = () => {};
      let pending: GuestUsbList | undefined;
      let cooling = false;
      const apply = (list: GuestUsbList) => {
        update(s, name, list, first && reattached);
        first = false;
      };
      // The latest list, at most one per listIntervalMs.
      const cool = () =>
        void s.deps.clock.sleep(s.t.listIntervalMs).then(() => {
          if (released || !pending) return void (cooling = false);
          const next = pending;
          pending = undefined;
          apply(next);
          cool();
        });
      const onList = (list: GuestUsbList) => {
        retries = 0;
        if (released) return;
        if (s.t.listIntervalMs <= 0) return apply(list);
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
            if (released || s.closing) return;
            // An agent without the RPC, or one that sent something that is not a list: trying again would not help.
            const broken = err instanceof QvmError && err.code === "AGENT_PROTOCOL";
            if (broken || retries >= WATCH_RETRIES) {
              s.deps.log(`${name}: USB device list: ${err ? err.message : "the stream ended"}; not followed any more (until ${name} starts again)`);
              return;
            }
            retries++;
            if (err) s.deps.log(`${name}: USB device list: ${err.message}; trying again in ${Math.round(s.t.watchRetryMs / 1000)} s`);
            void s.deps.clock.sleep(s.t.watchRetryMs).then(() => {
              if (!released && !s.closing) watch();
            });
          },
        );
      };
      watch();
      // After the attachers: the domain counts as running by then.
      queueMicrotask(() => attachAssigned(s, name));
      return {
        dispose: () => {
          released = true;
          gone(s, name, () => stopWatch());
        },
      };
    },
  };
}

/** A new list from `backend`: what went away is removed (and detached), what came is added (and attached if assigned). */
function update(s: UsbState, backend: string, list: GuestUsbList, afterRestart: boolean): void {
  if (!s.live.has(backend)) return;
  if (list.dropped) {
    const note = `${list.dropped} left out (${list.droppedWhy})`;
    if (s.dropNotes.get(backend) !== note) s.deps.log(`${backend}: USB device list: ${note}`);
    s.dropNotes.set(backend, note);
  } else s.dropNotes.delete(backend);
  const before = s.backends.get(backend) ?? new Map<string, Present>();
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
    removed(s, backend, busid);
  }
  for (const [busid, p] of now) {
    const b = before.get(busid);
    if (b && same(b, p)) continue;
    added.push(busid);
    s.deps.events.publish("device-added", backend, { devclass: USB_DEVCLASS, device: usbDeviceName(backend, busid), description: p.description });
  }
  s.backends.set(backend, now);
  // After a qvmd restart, a device still exported for nobody (its attachment ended with the old
  // qvmd) goes back to the backend first; then assignments are attached.
  const stale = afterRestart ? list.devices.filter((d) => d.driver === "usbip-host" && !s.attachments.has(key(backend, d.busid))).map((d) => d.busid) : [];
  void Promise.all(
    stale.map(async (busid) => {
      s.deps.log(`usb: ${usbDeviceName(backend, busid)} was left exported by an earlier qvmd; releasing it`);
      s.releasing.add(key(backend, busid));
      try {
        await release(s, backend, busid);
      } finally {
        s.releasing.delete(key(backend, busid));
      }
    }),
  ).then(() => {
    for (const busid of added) {
      const assignee = assigneeOf(s, backend, busid);
      if (assignee && assignee !== backend) autoAttach(s, assignee, backend, busid);
    }
  });
}

function removed(s: UsbState, backend: string, busid: string): void {
  const name = usbDeviceName(backend, busid);
  s.backends.get(backend)?.delete(busid);
  s.deps.events.publish("device-removed", backend, { devclass: USB_DEVCLASS, device: name });
  const a = s.attachments.get(key(backend, busid));
  if (a && a.state === "attached") {
    a.endReason ??= `the device was removed from ${backend}`;
    void stop(s, a);
  }
}

/** `name`'s VM is gone (or qvmd lets go of it): its list and every attachment it took part in end. */
function gone(s: UsbState, name: string, stopWatch: () => void): void {
  s.live.delete(name);
  stopWatch();
  s.goneWaiters.get(name)?.resolve();
  s.goneWaiters.delete(name);
  s.dropNotes.delete(name);
  if (s.closing) {
    s.backends.delete(name);
    return;
  }
  for (const a of [...s.attachments.values()]) {
    if (a.target !== name && a.backend !== name) continue;
    a.endReason ??= `${name} stopped`;
    // Being attached: its attach fails (and cleans up) once the Exec ends.
    if (a.state === "attaching") a.proc?.cancel();
    // The frontend's Exec ends with it; one from a stopped backend is stopped in the frontend.
    else if (a.target === name) {
      a.proc?.cancel();
      void within(s, a.ending, s.t.killMs).then((ok) => {
        if (!ok) void finish(s, a, `${name} stopped`);
      });
    } else void stop(s, a);
  }
  for (const busid of [...(s.backends.get(name)?.keys() ?? [])]) removed(s, name, busid);
  s.backends.delete(name);
}
