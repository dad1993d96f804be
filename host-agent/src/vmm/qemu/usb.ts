// Emulated USB devices of a QEMU VM (`qvm usb plug`): the sticks' images opened by qvmd for the
// VMM at start, and devices added to and removed from a running VM that was started with the
// controller (qemu-args.ts says who gets one and why). A stick's image reaches QEMU only as an
// open descriptor: inherited at start (-add-fd), or, while it runs, through qvm-qmp-add-fd (QMP
// add-fd with SCM_RIGHTS on the VM's second monitor, which Node cannot send), then opened as
// /dev/fdset/N on qvmd's own monitor. What the VM has is kept in vmm.json (`usb`), so a qvmd
// restarted while it runs knows the controller and the devices.
import { execFile } from "node:child_process";
import { closeSync, constants, existsSync, fstatSync, openSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { MAX_USB_PLUGS, QvmError } from "@qvm/protocol/contracts";
import type { UsbCapability, UsbDeviceSpec } from "../driver.js";
import type { QmpClient, QmpEvent } from "./qmp.js";
import { usbBlockdev, usbDeviceProps, type UsbDiskFd } from "./qemu-args.js";

/** How long QEMU has to report a removed device (USB unplug is synchronous: this is a bound). */
const DEVICE_DELETED_TIMEOUT_MS = 5000;
/** How long qvm-qmp-add-fd may take (it has its own 10 s bound on QEMU's answer). */
const ADD_FD_TIMEOUT_MS = 15_000;
/** A bound on fd-set numbers, so a damaged vmm.json cannot name absurd ones. */
const MAX_FDSET = 1_000_000;

/** The `usb` part of vmm.json: absent for a VM started without a controller. */
export const usbStateSchema = z
  .object({
    controller: z.boolean(),
    devices: z
      .array(
        z
          .object({
            id: z.string().regex(/^usb[1-9][0-9]?$/),
            device: z.enum(["disk", "keyboard", "tablet"]),
            /** A stick's fd set (its image's descriptor in QEMU). */
            fdset: z.number().int().positive().max(MAX_FDSET).optional(),
          })
          .strict(),
      )
      .max(MAX_USB_PLUGS),
    /** The next fd set a stick added while running gets; never reused within one VMM's life. */
    nextFdset: z.number().int().positive().max(MAX_FDSET),
  })
  .strict();
export type UsbState = z.infer<typeof usbStateSchema>;

/** What a VM started with `sticks` and `devices` has in vmm.json. */
export function initialUsbState(devices: readonly UsbDeviceSpec[], sticks: readonly UsbDiskFd[]): UsbState | undefined {
  if (!devices.length) return undefined;
  const fdsets = new Map(sticks.map((s) => [s.id, s.fdset]));
  return {
    controller: true,
    devices: devices.map((d) => ({ id: d.id, device: d.device, ...(fdsets.has(d.id) ? { fdset: fdsets.get(d.id) } : {}) })),
    nextFdset: Math.max(0, ...sticks.map((s) => s.fdset)) + 1,
  };
}

/**
 * Refuses devices the VMM could not be given: ids QEMU would not take or that repeat, ports
 * beyond the controller's or taken twice, a stick without an absolute image path, a keyboard or
 * tablet with one.
 */
export function checkUsbDevices(domain: string, devices: readonly UsbDeviceSpec[]): void {
  const ids = new Set<string>();
  const ports = new Set<string>();
  for (const d of devices) {
    const port = Number(d.address);
    const why = !/^usb[1-9][0-9]?$/.test(d.id)
      ? "its id is not usb1, usb2, …"
      : ids.has(d.id)
        ? "its id is used twice"
        : !/^[1-9][0-9]?$/.test(d.address) || port > MAX_USB_PLUGS
          ? `its port ${JSON.stringify(d.address)} is not one of the controller's 1..${MAX_USB_PLUGS}`
          : ports.has(d.address)
            ? `its port ${d.address} is taken twice`
            : d.device === "disk"
              ? !d.image || !path.isAbsolute(d.image)
                ? "a stick needs an absolute image path"
                : undefined
              : d.image !== undefined || d.readonly !== undefined
                ? `a ${d.device} has no image`
                : undefined;
    if (why) throw new QvmError("INVALID_ARGUMENT", `${domain}'s USB device ${d.id}: ${why}`);
    ids.add(d.id);
    ports.add(d.address);
  }
  if (devices.length > MAX_USB_PLUGS) throw new QvmError("RESOURCE_EXHAUSTED", `${domain} has more than ${MAX_USB_PLUGS} USB devices`);
}

/**
 * Opens a stick's image for a VMM, as qvmd's user: read-only or read-write, refusing a symbolic
 * link (O_NOFOLLOW) and anything but a regular file (O_NONBLOCK, so a FIFO put in its place
 * cannot hang qvmd; QEMU sets its own flags when it dups the descriptor). The caller closes it.
 */
export function openUsbImage(domain: string, id: string, image: string, readonly: boolean): number {
  const { O_RDONLY, O_RDWR, O_NOFOLLOW, O_NONBLOCK, O_NOCTTY } = constants;
  const unplug = `\`qvm usb unplug ${domain} ${id}\``;
  let fd: number;
  try {
    fd = openSync(image, (readonly ? O_RDONLY : O_RDWR) | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new QvmError("NOT_FOUND", `${domain}'s USB stick ${id}: ${image} does not exist; put it back or unplug it (${unplug})`);
    if (code === "ELOOP") throw new QvmError("FAILED_PRECONDITION", `${domain}'s USB stick ${id}: ${image} is a symbolic link, which qvmd does not follow; unplug it (${unplug}) and plug the image itself`);
    if (code === "EROFS") throw new QvmError("FAILED_PRECONDITION", `${domain}'s USB stick ${id}: ${image} is on a read-only filesystem; unplug it (${unplug}) and plug it with --read-only`);
    throw new QvmError("FAILED_PRECONDITION", `${domain}'s USB stick ${id}: cannot open ${image}: ${(err as Error).message}`, { cause: err });
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw new QvmError("FAILED_PRECONDITION", `${domain}'s USB stick ${id}: ${image} is not a regular file; unplug it (${unplug})`);
  }
  return fd;
}

/** Opens every stick of a start; all or none (what was opened is closed when one fails). */
export function openUsbImages(domain: string, sticks: readonly UsbDiskFd[]): { at: number; fd: number }[] {
  const opened: { at: number; fd: number }[] = [];
  try {
    for (const s of sticks) opened.push({ at: s.fd, fd: openUsbImage(domain, s.id, s.image, s.readonly) });
  } catch (err) {
    closeAll(opened);
    throw err;
  }
  return opened;
}

export function closeAll(fds: readonly { fd: number }[]): void {
  for (const { fd } of fds) {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
  }
}

export interface QemuUsbOptions {
  name: string;
  qemuPid: number;
  /** What the VM has now; undefined: started without a controller. Changed in place, then saved. */
  state: UsbState | undefined;
  /** qvmd's own monitor. Connected before an image is handed over, see add. */
  qmp(): Promise<QmpClient>;
  /** The VM's second monitor, where qvm-qmp-add-fd hands over images. */
  qmpFdSocket: string;
  /** The qvm-qmp-add-fd binary, or undefined when it is missing. */
  addFdHelper(): string | undefined;
  /** Persists `state` beside the VMM (vmm.json). */
  save(): void;
  log: (msg: string) => void;
}

/** The USB capability of one QEMU VM. */
export class QemuUsb implements UsbCapability {
  constructor(private readonly o: QemuUsbOptions) {}

  get controller(): boolean {
    return this.o.state?.controller ?? false;
  }

  devices(): string[] {
    return (this.o.state?.devices ?? []).map((d) => d.id);
  }

  async add(dev: UsbDeviceSpec): Promise<void> {
    const { name } = this.o;
    const state = this.o.state;
    if (!state?.controller) {
      throw new QvmError("FAILED_PRECONDITION", `${name} was started without a USB controller (it had no USB devices then): the device arrives at its next start`);
    }
    if (state.devices.some((d) => d.id === dev.id)) throw new QvmError("ALREADY_EXISTS", `${name} already has a USB device ${dev.id}`);
    if (state.devices.length >= MAX_USB_PLUGS) throw new QvmError("RESOURCE_EXHAUSTED", `${name} already has ${MAX_USB_PLUGS} USB devices`);
    checkUsbDevices(name, [dev]);
    // qvmd's monitor first: QEMU closes the descriptors of an fd set nobody uses yet when the last
    // monitor connection goes away, which the helper's leaving would be if this one were not open.
    const qmp = await this.o.qmp();
    if (dev.device !== "disk") {
      await qmp.execute("device_add", usbDeviceProps(dev));
      this.remember({ id: dev.id, device: dev.device });
      return;
    }
    if (!dev.image) throw new QvmError("INVALID_ARGUMENT", `USB stick ${dev.id} has no image`);
    const readonly = dev.readonly ?? false;
    // A new set for every attempt: one a failed attempt left a descriptor in is never opened again.
    const fdset = state.nextFdset++;
    this.save();
    await this.handOver(fdset, dev.id, dev.image, readonly);
    try {
      await qmp.execute("blockdev-add", usbBlockdev(dev.id, fdset, readonly));
      try {
        await qmp.execute("device_add", usbDeviceProps(dev));
      } catch (err) {
        await qmp.execute("blockdev-del", { "node-name": `${dev.id}-img` }).catch((e: Error) => this.o.log(`${name}: cannot remove block node ${dev.id}-img: ${e.message}`));
        throw err;
      }
    } catch (err) {
      await qmp.execute("remove-fd", { "fdset-id": fdset }).catch((e: Error) => this.o.log(`${name}: cannot close fd set ${fdset}: ${e.message}`));
      throw err;
    }
    this.remember({ id: dev.id, device: "disk", fdset });
  }

  async remove(id: string): Promise<void> {
    const { name } = this.o;
    const state = this.o.state;
    const dev = state?.devices.find((d) => d.id === id);
    if (!state || !dev) throw new QvmError("NOT_FOUND", `${name} has no USB device ${id} now`);
    const qmp = await this.o.qmp();
    const deleted = waitDeviceDeleted(qmp, id, DEVICE_DELETED_TIMEOUT_MS);
    try {
      await qmp.execute("device_del", { id });
    } catch (err) {
      deleted.cancel();
      // Gone already (nothing else removes it, but a VMM is not to be argued with): forget it.
      if (!/not found/i.test((err as Error).message)) throw err;
    }
    await deleted.done;
    if (dev.fdset !== undefined) {
      await qmp.execute("blockdev-del", { "node-name": `${id}-img` }).catch((e: Error) => this.o.log(`${name}: cannot remove block node ${id}-img: ${e.message}`));
      await qmp.execute("remove-fd", { "fdset-id": dev.fdset }).catch((e: Error) => this.o.log(`${name}: cannot close fd set ${dev.fdset}: ${e.message}`));
    }
    state.devices = state.devices.filter((d) => d.id !== id);
    this.save();
  }

  private remember(dev: UsbState["devices"][number]): void {
    this.o.state!.devices.push(dev);
    this.save();
  }

  private save(): void {
    try {
      this.o.save();
    } catch (err) {
      this.o.log(`${this.o.name}: cannot record its USB devices beside the VMM: ${(err as Error).message}`);
    }
  }

  /** Runs qvm-qmp-add-fd: the image, opened as root, into fd set `fdset` of this VM's QEMU. */
  private async handOver(fdset: number, id: string, image: string, readonly: boolean): Promise<void> {
    const { name } = this.o;
    const helper = this.o.addFdHelper();
    if (!helper) {
      throw new QvmError("MISSING_DEPENDENCY", `qvm-qmp-add-fd is missing, so a USB stick cannot be plugged into a running domain: run \`npm run build\` (it needs gcc), or plug it while ${name} is halted`);
    }
    if (!existsSync(this.o.qmpFdSocket)) {
      throw new QvmError("FAILED_PRECONDITION", `${name}'s VMM has no descriptor monitor (it was started by an older qvmd): plug the stick while ${name} is halted`);
    }
    const args = [this.o.qmpFdSocket, String(this.o.qemuPid), String(fdset), readonly ? "ro" : "rw", image];
    const { out, why } = await new Promise<{ out: string; why?: string }>((resolve) =>
      execFile(helper, args, { timeout: ADD_FD_TIMEOUT_MS, maxBuffer: 1 << 20 }, (err, stdout, stderr) =>
        resolve({ out: stdout, why: err ? stderr.trim().replace(/^qvm-qmp-add-fd: /, "") || err.message : undefined }),
      ),
    );
    if (why !== undefined) throw new QvmError("FAILED_PRECONDITION", `cannot give ${name} the USB stick ${id}: ${why}`);
    let reply: unknown;
    try {
      reply = JSON.parse(out.trim());
    } catch {
      reply = undefined;
    }
    const got = (reply as { return?: { "fdset-id"?: unknown } } | undefined)?.return?.["fdset-id"];
    if (got !== fdset) throw new QvmError("VMM_FAILED", `QEMU of ${name} put the USB stick ${id} in fd set ${String(got)}, not ${fdset}`);
  }
}

/** Resolves when QEMU reports device `id` deleted, or after timeoutMs (then the caller goes on). */
function waitDeviceDeleted(qmp: QmpClient, id: string, timeoutMs: number): { done: Promise<void>; cancel(): void } {
  let finish!: () => void;
  const done = new Promise<void>((r) => (finish = r));
  const onEvent = (ev: QmpEvent) => {
    if (ev.event === "DEVICE_DELETED" && ev.data?.device === id) stop();
  };
  const timer = setTimeout(() => stop(), timeoutMs);
  const stop = () => {
    clearTimeout(timer);
    qmp.off("event", onEvent);
    qmp.off("close", stop);
    finish();
  };
  qmp.on("event", onEvent);
  qmp.on("close", stop);
  return { done, cancel: stop };
}
