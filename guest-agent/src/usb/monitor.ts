// Watches the domain's USB devices for WatchUsbDevices: each watcher gets the list at once, then
// again whenever it changes. sysfs has no change notification a poll could wait on, so one timer
// (only while someone watches) reads the list every USB_POLL_MS; a domain whose list never changes
// (one without USB) sends it once.
import { QvmError } from "@qvm/protocol/contracts";
import { USB_SYSFS_DEVICES, listUsbDevices, type UsbDevice } from "./sysfs.js";

/** How often the list is read while someone watches. */
export const USB_POLL_MS = 2000;
/** WatchUsbDevices streams at once (qvmd holds one; a restarted qvmd's old one may linger). */
export const MAX_USB_WATCHERS = 4;

export interface UsbMonitorOptions {
  /** The sysfs devices directory (a fake tree in tests). */
  root?: string;
  pollMs?: number;
}

interface Watcher {
  cb: (devices: UsbDevice[]) => void;
  /** The last list sent to it, as JSON. */
  last: string;
}

export class UsbMonitor {
  private readonly root: string;
  private readonly pollMs: number;
  private readonly watchers = new Set<Watcher>();
  private timer: NodeJS.Timeout | undefined;

  constructor(opts: UsbMonitorOptions = {}) {
    this.root = opts.root ?? USB_SYSFS_DEVICES;
    this.pollMs = opts.pollMs ?? USB_POLL_MS;
  }

  list(): UsbDevice[] {
    return listUsbDevices(this.root);
  }

  /** Calls `cb` with the list now and after every change; returns the unsubscribe function. */
  watch(cb: (devices: UsbDevice[]) => void): () => void {
    if (this.watchers.size >= MAX_USB_WATCHERS) throw new QvmError("RESOURCE_EXHAUSTED", `at most ${MAX_USB_WATCHERS} WatchUsbDevices streams at once`);
    const devices = this.list();
    const watcher: Watcher = { cb, last: JSON.stringify(devices) };
    this.watchers.add(watcher);
    this.timer ??= setInterval(() => this.poll(), this.pollMs);
    cb(devices);
    return () => {
      this.watchers.delete(watcher);
      if (this.watchers.size === 0 && this.timer) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    };
  }

  /** The number of watchers (tests). */
  get watching(): number {
    return this.watchers.size;
  }

  private poll(): void {
    const devices = this.list();
    const json = JSON.stringify(devices);
    for (const w of [...this.watchers]) {
      if (w.last === json) continue;
      w.last = json;
      w.cb(devices);
    }
  }
}
