// Test-only helpers: a hostile-stream encoder, sandboxes with a sentinel, and tree walking.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { expect } from "vitest";
import { FilecopyError } from "./errors.js";
import { decodePrefix, decodeSize, encodeHeader, END_MARKER, KIND_DIR, KIND_END, KIND_FILE, KIND_SYMLINK, PREFIX_BYTES, SIZE_BYTES, type EntryKind } from "./format.js";

export const END = END_MARKER;
export const dir = (name: string | Uint8Array, mode = 0o755, mtimeMs = 1_600_000_000_000) => encodeHeader({ kind: KIND_DIR, mode, mtimeMs, name, size: 0 });
export const file = (name: string | Uint8Array, data: string | Uint8Array = "", mode = 0o644, mtimeMs = 1_600_000_000_000) => {
  const d = Buffer.from(data);
  return Buffer.concat([encodeHeader({ kind: KIND_FILE, mode, mtimeMs, name, size: d.length }), d]);
};
export const link = (name: string | Uint8Array, target: string) => {
  const t = Buffer.from(target);
  return Buffer.concat([encodeHeader({ kind: KIND_SYMLINK, mode: 0o777, mtimeMs: 0, name, size: t.length }), t]);
};

/** A readable over the given bytes, split into chunks of `chunk` bytes to exercise the parser. */
export function streamOf(bytes: Uint8Array[] | Uint8Array, chunk = 0): Readable {
  const all = Buffer.concat(Array.isArray(bytes) ? bytes : [bytes]);
  if (chunk <= 0) return Readable.from([all]);
  const parts: Buffer[] = [];
  for (let i = 0; i < all.length; i += chunk) parts.push(all.subarray(i, i + chunk));
  return Readable.from(parts);
}

export interface Sandbox {
  base: string;
  root: string;
  sentinel: string;
  /** Asserts the base holds only root and an empty sentinel folder. */
  assertContained(): Promise<void>;
  cleanup(): Promise<void>;
}

export async function sandbox(): Promise<Sandbox> {
  const base = await fs.mkdtemp(path.join(os.tmpdir(), "qvm-filecopy-"));
  const root = path.join(base, "root");
  const sentinel = path.join(base, "sentinel");
  await fs.mkdir(root);
  await fs.mkdir(sentinel);
  return {
    base,
    root,
    sentinel,
    async assertContained() {
      expect((await fs.readdir(base)).sort()).toEqual(["root", "sentinel"]);
      expect(await fs.readdir(sentinel)).toEqual([]);
    },
    cleanup: () => fs.rm(base, { recursive: true, force: true }),
  };
}

export async function expectCode(p: Promise<unknown>, code: string): Promise<FilecopyError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(FilecopyError);
  expect((err as FilecopyError).code).toBe(code);
  return err as FilecopyError;
}

export interface ParsedEntry {
  kind: EntryKind;
  mode: number;
  mtimeMs: number;
  name: string;
  size: number;
}

/** Lists the entries of a complete, well-formed stream (for checking what the sender wrote). */
export function parseEntries(buf: Buffer): ParsedEntry[] {
  const out: ParsedEntry[] = [];
  let o = 0;
  while (buf[o] !== KIND_END) {
    const p = decodePrefix(buf.subarray(o, o + PREFIX_BYTES));
    o += PREFIX_BYTES;
    const name = buf.subarray(o, o + p.nameLen);
    o += p.nameLen;
    const kind = p.kind;
    const size = decodeSize(buf.subarray(o, o + SIZE_BYTES), kind, name);
    o += SIZE_BYTES + size;
    out.push({ kind, mode: p.mode, mtimeMs: p.mtimeMs, name: name.toString("utf8"), size });
  }
  expect(o + 1).toBe(buf.length);
  return out;
}

/** Relative paths under `top` (parents first, sorted), for comparing trees. */
export async function walk(top: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for (const n of (await fs.readdir(path.join(top, rel))).sort()) {
    const r = rel ? `${rel}/${n}` : n;
    out.push(r);
    if ((await fs.lstat(path.join(top, r))).isDirectory()) out.push(...(await walk(top, r)));
  }
  return out;
}
