// Crash-safe file and JSON writes (temp file, fsync, rename, fsync of the directory) and
// validated reads.
import { closeSync, constants, fsyncSync, openSync, readFileSync, renameSync, rmSync, writeSync } from "node:fs";
import path from "node:path";
import type { z } from "zod";
import { QvmError } from "@qvm/protocol";

export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomic(file, `${JSON.stringify(value, null, 2)}\n`);
}

/** The temp file writeFileAtomic writes `file` through: `.NAME.tmp-PID` beside it (the domain store removes stale ones). */
function atomicTempName(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`);
}

/**
 * Writes `text` so that a crash, or a power cut once this returns, leaves either the old file or
 * the whole new one: the data is fsynced before the rename, and the directory after it (until
 * then the rename itself may be lost with the power, rolling back an acknowledged change).
 */
export function writeFileAtomic(file: string, text: string | Uint8Array, mode = 0o644): void {
  const tmp = atomicTempName(file);
  const fd = openSync(tmp, "w", mode);
  try {
    try {
      writeSync(fd, typeof text === "string" ? Buffer.from(text) : text);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
  fsyncDir(path.dirname(file));
}

/** fsyncs a directory, making the renames and creations in it durable. */
export function fsyncDir(dir: string): void {
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    fsyncSync(fd);
  } catch (err) {
    // Some filesystems cannot fsync a directory (EINVAL); there is nothing more to do there.
    if ((err as NodeJS.ErrnoException).code !== "EINVAL") throw err;
  } finally {
    closeSync(fd);
  }
}

export function readJson<T>(file: string, schema: z.ZodType<T>, fix = "rebuild with `./qvm-images build --force`"): T {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, "utf8"));
  } catch (err) {
    throw new QvmError("CORRUPT_STATE", `${file} is not valid JSON; ${fix}`, { cause: err });
  }
  const r = schema.safeParse(raw);
  if (!r.success) throw new QvmError("CORRUPT_STATE", `${file} does not match its schema (${r.error.issues[0]?.message}); ${fix}`);
  return r.data;
}
