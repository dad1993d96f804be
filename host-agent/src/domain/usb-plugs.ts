// Emulated USB devices of a domain (`qvm usb plug`, docs/usb.md): a mass-storage stick from a
// disk image on the host, a keyboard or a tablet, so that a backend such as sys-usb has devices
// to offer without a host controller passed through. They are stored with the domain
// (`usbPlugs`, model/domain.ts) and reach its VMM two ways:
//
// - at start: the boot plan turns them into USB DeviceSpecs (boot-plan.ts, usbDevicesOf), and a
//   VM that has any gets the emulated xHCI controller with them. Only such a VM gets one (the
//   controller is a large device model, and pcie=on slows the boot): vmm/qemu/qemu-args.ts.
// - while it runs: a VM started with the controller takes a device at once (the driver's
//   VmCapabilities.usb: QMP device_add, a stick's image handed over as a descriptor), and the
//   plug says live. One started without it cannot get it until its next start (microvm has no
//   PCI hot-plug), so the plug is stored, says not live, and arrives then.
//
// A stick's image is opened by qvmd (root), never by the jailed VMM, which needs no permission
// on it. An image goes to one domain at a time, checked across every domain by path and by file
// identity. Every refusal names its fix; a failed plug or unplug leaves the record and the VMM
// as they were.
import { lstatSync, statSync, type Stats } from "node:fs";
import path from "node:path";
import { QvmError } from "@qvm/protocol";
import { MAX_USB_PLUGS, USB_PLUG_KINDS, type PowerStateWord, type UsbPlugKind } from "@qvm/protocol/contracts";
import type { KeyedMutex } from "../base/keyed-mutex.js";
import { isStorableImagePath, usbPlugId, usbPlugNumber, type UsbPlug } from "../model/domain.js";
import type { UsbCapability } from "../vmm/driver.js";
import { usbDeviceSpecOf } from "./boot-plan.js";
import type { DomainRegistry } from "./registry.js";
import type { RunningVm } from "./vm-factory.js";

/** One plug as the admin API shows it (UsbPlug in admin.proto). */
export interface UsbPlugView {
  id: string;
  kind: UsbPlugKind;
  /** disk: the image; "" for a keyboard or tablet. */
  path: string;
  readOnly: boolean;
  /** The running domain has it now; false: it arrives at the domain's next start. */
  live: boolean;
}

export interface UsbPlugRequest {
  kind: UsbPlugKind;
  /** disk: the image, an absolute path to a regular file (not a symbolic link). */
  path?: string;
  /** disk: write-protected. */
  readOnly?: boolean;
}

export interface UsbPlugsDeps {
  registry: DomainRegistry;
  /** The power-state machine (DomainRunner): each domain's state, and a running one's VMM. */
  runner: {
    state(name: string): PowerStateWord;
    running(name: string): Pick<RunningVm, "capabilities">;
  };
  /** The core's locks: a plug takes its domain's and USB_PLUGS_LOCK (images are checked across domains). */
  locks: KeyedMutex;
  log: (msg: string) => void;
}

/** Lock key of every plug and unplug: an image goes to one domain, checked across all of them. */
export const USB_PLUGS_LOCK = "@usb-plugs";

/**
 * `qvm usb plug`, `plugs`, `unplug`. Takes the domain's lock itself (and USB_PLUGS_LOCK), as
 * DispVms does: call it without holding them.
 */
export class UsbPlugs {
  constructor(private readonly deps: UsbPlugsDeps) {}

  plug(domain: string, req: UsbPlugRequest): Promise<UsbPlugView> {
    const { registry, locks } = this.deps;
    return locks.run([domain, USB_PLUGS_LOCK], async () => {
      const rec = registry.get(domain);
      const wanted = checkRequest(domain, req);
      const image = wanted.kind === "disk" ? { path: wanted.path, st: checkImage(wanted.path) } : undefined;
      const plugs = rec.usbPlugs ?? [];
      if (plugs.length >= MAX_USB_PLUGS) {
        throw new QvmError("RESOURCE_EXHAUSTED", `${domain} already has ${MAX_USB_PLUGS} USB devices, the most a domain may have: unplug one first (\`qvm usb unplug ${domain} ID\`; \`qvm usb plugs ${domain}\` lists them)`);
      }
      if (image) this.checkNotPlugged(image.path, image.st);
      const id = usbPlugId(firstFreeNumber(plugs));
      const plug = { id, ...wanted } as UsbPlug;
      const usb = this.usbNow(domain, "plug");
      const live = usb?.controller === true;
      if (live) await usb.add(usbDeviceSpecOf(plug));
      try {
        registry.store.update(domain, (r) => {
          r.usbPlugs = [...(r.usbPlugs ?? []), plug];
        });
      } catch (err) {
        // Not stored: the VMM must not keep what the record does not have.
        if (live) await usb.remove(id).catch((e: Error) => this.deps.log(`${domain}: cannot take back USB device ${id} after a failed plug: ${e.message}`));
        throw err;
      }
      return viewOf(plug, live);
    });
  }

  unplug(domain: string, id: string): Promise<void> {
    const { registry, locks } = this.deps;
    return locks.run([domain, USB_PLUGS_LOCK], async () => {
      const rec = registry.get(domain);
      const plugs = rec.usbPlugs ?? [];
      if (!plugs.some((p) => p.id === id)) {
        const have = plugs.length ? `its USB devices: ${plugs.map((p) => p.id).join(", ")}` : "it has none";
        throw new QvmError("NOT_FOUND", `${domain} has no USB device ${JSON.stringify(id.slice(0, 16))}; ${have} (\`qvm usb plugs ${domain}\`)`);
      }
      const usb = this.usbNow(domain, "unplug", id);
      if (usb?.devices().includes(id)) await usb.remove(id);
      registry.store.update(domain, (r) => {
        const left = (r.usbPlugs ?? []).filter((p) => p.id !== id);
        if (left.length) r.usbPlugs = left;
        else delete r.usbPlugs;
      });
    });
  }

  list(domain: string): UsbPlugView[] {
    const rec = this.deps.registry.get(domain);
    const live = new Set(this.vmUsb(domain)?.devices() ?? []);
    return (rec.usbPlugs ?? []).map((p) => viewOf(p, live.has(p.id)));
  }

  /** The running VM's USB side, or undefined when the domain does not run (or its driver has none). */
  private vmUsb(domain: string): UsbCapability | undefined {
    const state = this.deps.runner.state(domain);
    if (state === "Halted" || state === "Transient") return undefined;
    try {
      return this.deps.runner.running(domain).capabilities?.usb;
    } catch {
      return undefined;
    }
  }

  /**
   * The VM's USB side a plug or unplug works on now: undefined when the domain is halted (only
   * the record changes). A paused VM cannot be asked, nor one that is stopping or starting.
   * An unplug of a device the VM does not have only changes the record, whatever the state.
   */
  private usbNow(domain: string, what: "plug" | "unplug", id?: string): UsbCapability | undefined {
    const state = this.deps.runner.state(domain);
    if (state === "Halted") return undefined;
    const usb = this.vmUsb(domain);
    if (what === "unplug" && !usb?.devices().includes(id!)) return undefined;
    if (state === "Paused") throw new QvmError("FAILED_PRECONDITION", `${domain} is paused: unpause it first (\`qvm unpause ${domain}\`), then ${what}`);
    if (state === "Halting") throw new QvmError("FAILED_PRECONDITION", `${domain} is shutting down: ${what} once it has stopped`);
    if (state === "Transient") throw new QvmError("FAILED_PRECONDITION", `${domain} is starting: ${what} once it runs`);
    return usb;
  }

  /** Refuses an image another plug (of any domain) already has: by path, or the same file by another path. */
  private checkNotPlugged(image: string, st: Stats): void {
    for (const r of this.deps.registry.list()) {
      for (const p of r.usbPlugs ?? []) {
        if (p.kind !== "disk" || !(p.path === image || sameFile(p.path, st))) continue;
        const same = p.path === image ? "" : ` (as ${p.path})`;
        throw new QvmError(
          "ALREADY_EXISTS",
          `${image} is already plugged into ${r.name}${same} as ${p.id}: an image goes to one domain at a time; unplug it there first (\`qvm usb unplug ${r.name} ${p.id}\`)`,
        );
      }
    }
  }
}

/** A plug before it has an id. */
type NewPlug = { kind: "disk"; path: string; readOnly: boolean } | { kind: "keyboard" | "tablet" };

/** The request as it will be stored; INVALID_ARGUMENT naming what is wrong. */
function checkRequest(domain: string, req: UsbPlugRequest): NewPlug {
  const kind = String(req.kind ?? "");
  if (!(USB_PLUG_KINDS as readonly string[]).includes(kind)) {
    throw new QvmError("INVALID_ARGUMENT", `${JSON.stringify(kind.slice(0, 20))} is not a USB device qvm can emulate: ${USB_PLUG_KINDS.join(", ")}`);
  }
  const image = req.path ?? "";
  if (kind !== "disk") {
    if (image) throw new QvmError("INVALID_ARGUMENT", `a ${kind} has no image: plug it without one (\`qvm usb plug ${domain} --${kind}\`)`);
    if (req.readOnly) throw new QvmError("INVALID_ARGUMENT", `a ${kind} cannot be read-only: only a stick (--disk) can`);
    return { kind: kind === "keyboard" ? "keyboard" : "tablet" };
  }
  if (!image) throw new QvmError("INVALID_ARGUMENT", `a USB stick needs its disk image: \`qvm usb plug ${domain} --disk IMAGE\``);
  const shown = JSON.stringify(image.length > 80 ? `${image.slice(0, 80)}…` : image);
  if (!path.isAbsolute(image)) throw new QvmError("INVALID_ARGUMENT", `${shown} is not an absolute path: name the image from / (the qvm command does that for a relative one)`);
  if (!isStorableImagePath(image)) {
    throw new QvmError("INVALID_ARGUMENT", `${shown} is not a plain absolute path: give it without "." or ".." parts, repeated or trailing slashes and control characters (\`realpath\` prints one)`);
  }
  return { kind: "disk", path: image, readOnly: req.readOnly ?? false };
}

/** The image exists and is a regular file, not a symbolic link (qvmd opens it with O_NOFOLLOW). */
function checkImage(image: string): Stats {
  let st: Stats;
  try {
    st = lstatSync(image);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") throw new QvmError("NOT_FOUND", `${image} does not exist: make the disk image first (for example \`truncate -s 64M IMAGE\` and \`mkfs.ext4 IMAGE\`)`);
    throw new QvmError("FAILED_PRECONDITION", `cannot look at ${image}: ${(err as Error).message}`);
  }
  if (st.isSymbolicLink()) throw new QvmError("INVALID_ARGUMENT", `${image} is a symbolic link, which qvmd does not follow: plug the image itself (\`realpath ${image}\` names it)`);
  if (!st.isFile()) throw new QvmError("INVALID_ARGUMENT", `${image} is not a regular file: a USB stick is made from a disk image file`);
  if (st.size === 0) throw new QvmError("INVALID_ARGUMENT", `${image} is empty: a disk image has a size (\`truncate -s 64M ${image}\`, then a filesystem)`);
  return st;
}

/** Whether `other` is the file `st` describes (another path to it: a hard link, a symlinked directory). */
function sameFile(other: string, st: Stats): boolean {
  try {
    const o = statSync(other);
    return o.dev === st.dev && o.ino === st.ino;
  } catch {
    return false;
  }
}

/** The lowest plug number no plug of the domain has (ids are reused after an unplug). */
function firstFreeNumber(plugs: readonly UsbPlug[]): number {
  const taken = new Set(plugs.map((p) => usbPlugNumber(p.id)));
  let n = 1;
  while (taken.has(n)) n++;
  return n;
}

function viewOf(plug: UsbPlug, live: boolean): UsbPlugView {
  return plug.kind === "disk"
    ? { id: plug.id, kind: "disk", path: plug.path, readOnly: plug.readOnly, live }
    : { id: plug.id, kind: plug.kind, path: "", readOnly: false, live };
}
