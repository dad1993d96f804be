// Hands a secret (a volume key) to qemu-img or QEMU without a command line or a file on disk:
// the bytes go into a file in /dev/shm (memory), which is opened and unlinked at once; the child
// inherits the descriptor and reads `/proc/self/fd/N` (QEMU's `-object secret,file=`). Node has
// no memfd_create; an unlinked shm file is the same kind of memory. A pipe would not do: QEMU
// re-opens the path, and opening a FIFO's /proc link blocks until there is a writer.
//
// The file exists by name, mode 0600 and still empty, only between its creation and its unlink
// (the secret is written after): a crash there leaves an empty `qvm-secret-*` file in memory.
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, fchownSync, openSync, unlinkSync, writeSync } from "node:fs";
import path from "node:path";
import { QvmError } from "@qvm/protocol";

/** Memory-backed on every Linux; without it no secret is handed over (a disk must never see one). */
function secretDir(): string {
  if (!existsSync("/dev/shm")) throw new QvmError("MISSING_DEPENDENCY", "/dev/shm (a memory file system) is missing: qvm hands encryption keys to QEMU through it; mount it (tmpfs)");
  return "/dev/shm";
}

/**
 * An open read-only descriptor of an unlinked memory file holding `secret`, which is zeroed once
 * written. `owner`: the uid and gid the child runs as (a jailed VMM re-opens the file through
 * /proc, which checks its owner). The caller closes it once the child has started.
 */
export function secretFd(secret: Uint8Array, owner?: { uid: number; gid: number }): number {
  const file = path.join(secretDir(), `qvm-secret-${process.pid}-${randomBytes(8).toString("hex")}`);
  const w = openSync(file, "wx", 0o600);
  let r: number | undefined;
  try {
    r = openSync(file, "r");
    unlinkSync(file);
    if (owner) fchownSync(w, owner.uid, owner.gid);
    writeSync(w, secret);
    secret.fill(0);
    return r;
  } catch (err) {
    if (r !== undefined) closeSync(r);
    try {
      unlinkSync(file);
    } catch {
      // already unlinked
    }
    throw err;
  } finally {
    closeSync(w);
  }
}

/** QEMU's option value for a secret the child finds at descriptor `fd`. */
export function secretObject(id: string, fd: number): string {
  return `secret,id=${id},file=/proc/self/fd/${fd}`;
}
