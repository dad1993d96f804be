// A domain's logs stay bounded: the serial console log (written by QEMU), the VMM's and
// vhost-device-vsock's output. A guest controls what reaches its console, so without a cap it
// could fill the data disk that holds every domain's volumes and the store. The writers append
// (O_APPEND), so qvmd can rotate in place: keep the newest part as NAME.1, truncate NAME, and the
// writer's next write lands at the new end. Checked every few seconds while qvmd watches the
// domain (a qvmd-held attachment, rebuilt at re-attach); between checks, and while no qvmd runs,
// a log may grow past the cap by what the guest writes meanwhile.
import { closeSync, ftruncateSync, openSync, readSync, statSync, writeFileSync } from "node:fs";
import path from "node:path";
import { toDisposable } from "../base/disposables.js";
import type { Attacher } from "./attachments.js";

/** Bytes a log may hold before it is rotated; its previous part (NAME.1) holds as much again. */
export const MAX_LOG_BYTES = 1024 * 1024;
export const LOG_CHECK_INTERVAL_MS = 2000;
export const DOMAIN_LOGS = ["console.log", "vmm.log", "vsock.log"] as const;

/** Rotates `file` when it is over `max`: its last `max` bytes become FILE.1, FILE is emptied. */
export function rotateIfLarge(file: string, max = MAX_LOG_BYTES): boolean {
  let size: number;
  try {
    size = statSync(file).size;
  } catch {
    return false;
  }
  if (size <= max) return false;
  const fd = openSync(file, "r+");
  try {
    const keep = Buffer.alloc(max);
    const n = readSync(fd, keep, 0, max, size - max);
    writeFileSync(`${file}.1`, keep.subarray(0, n), { mode: 0o600 });
    ftruncateSync(fd, 0);
  } finally {
    closeSync(fd);
  }
  return true;
}

export function logRotationAttacher(logDirOf: (name: string) => string, max = MAX_LOG_BYTES, intervalMs = LOG_CHECK_INTERVAL_MS): Attacher {
  return {
    name: "log rotation",
    holder: "qvmd",
    async attach({ name }) {
      const files = DOMAIN_LOGS.map((f) => path.join(logDirOf(name), f));
      const check = () => files.forEach((f) => rotateIfLarge(f, max));
      check();
      const timer = setInterval(check, intervalMs);
      timer.unref();
      return toDisposable(() => clearInterval(timer));
    },
  };
}
