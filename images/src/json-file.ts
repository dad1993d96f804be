// Crash-safe file and JSON writes (temp file, fsync, rename) and validated reads.
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import path from "node:path";
import type { z } from "zod";
import { QvmError } from "@qvm/protocol";

export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomic(file, `${JSON.stringify(value, null, 2)}\n`);
}

/** Writes `text` so that a crash leaves either the old file or the whole new one. */
export function writeFileAtomic(file: string, text: string, mode = 0o644): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`);
  const fd = openSync(tmp, "w", mode);
  try {
    writeSync(fd, text);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
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
