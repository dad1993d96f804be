// Sender side (qvm-copy / qvm-move): serializes paths into the stream described in format.ts.
// Entries go parents first with directory listings sorted by bytes, so the same tree always
// gives the same bytes. Symlinks are sent as symlinks and never followed.
import { constants as C } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { encodeHeader, END_MARKER, KIND_DIR, KIND_FILE, KIND_SYMLINK, type EntryKind } from "./format.js";
import { validateLinkTarget, validateName } from "./names.js";
import { quoteText } from "./text.js";
import type { CopyStats } from "./unpack.js";

export interface PackOptions {
  /** Called as each entry starts, e.g. for progress output. */
  onEntry?: (name: string, kind: EntryKind, size: number) => void;
}

// Reads of 256 KiB: under emulation each await costs more than the bytes it moves (the stream
// splits them into 64 KiB frames).
const CHUNK_BYTES = 256 * 1024;
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** Writes one buffer, waiting for 'drain' when the stream asks us to. */
function write(out: NodeJS.WritableStream, buf: Uint8Array): Promise<void> {
  if (out.write(buf)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const settle = (err?: Error) => {
      out.removeListener("drain", onDrain);
      out.removeListener("error", onError);
      out.removeListener("close", onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => settle();
    const onError = (e: Error) => settle(e);
    const onClose = () => settle(new Error("file-copy output closed while sending"));
    out.on("drain", onDrain);
    out.on("error", onError);
    out.on("close", onClose);
  });
}

/** The receiver's name rules, checked early so the user sees which local path is the problem. */
function checkName(fsPath: string, name: string): void {
  try {
    validateName(Buffer.from(name, "utf8"));
  } catch (e) {
    // Quoted: a local file may have a hostile name too (downloaded, or received unchecked).
    throw new Error(`cannot copy ${quoteText(fsPath)}: ${(e as Error).message}`);
  }
}

/**
 * Sends each path (file, directory tree or symlink) under its basename, then the end marker.
 * `out` is left open: the caller ends it (the receiver reads to EOF) or aborts it on error, so
 * that a half-sent stream is never mistaken for a complete one.
 */
export async function packPaths(paths: string[], out: NodeJS.WritableStream, opts: PackOptions = {}): Promise<CopyStats> {
  const tops = new Map<string, string>();
  for (const p of paths) {
    const top = path.basename(p);
    if (top === "" || top === "." || top === "..") throw new Error(`cannot copy ${JSON.stringify(p)}: name the file or directory itself`);
    checkName(p, top);
    const other = tops.get(top);
    if (other !== undefined) throw new Error(`cannot copy both ${other} and ${p}: both would be named ${JSON.stringify(top)}`);
    tops.set(top, p);
  }
  const stats: CopyStats = { files: 0, bytes: 0 };
  const ctx = { out, stats, opts };
  for (const [top, p] of tops) await packEntry(ctx, p, top);
  await write(out, END_MARKER);
  return stats;
}

interface Ctx {
  out: NodeJS.WritableStream;
  stats: CopyStats;
  opts: PackOptions;
}

// Milliseconds, floored exactly from nanoseconds; times before 1970 do not fit the u64 field.
const mtimeMsOf = (st: { mtimeNs: bigint }) => (st.mtimeNs < 0n ? 0 : Number(st.mtimeNs / 1_000_000n));
const permsOf = (st: { mode: bigint }) => Number(st.mode & 0o777n);

async function header(ctx: Ctx, kind: EntryKind, st: { mode: bigint; mtimeNs: bigint }, name: string, size: number): Promise<void> {
  ctx.opts.onEntry?.(name, kind, size);
  ctx.stats.files++;
  await write(ctx.out, encodeHeader({ kind, mode: permsOf(st), mtimeMs: mtimeMsOf(st), name, size }));
}

async function packEntry(ctx: Ctx, fsPath: string, name: string): Promise<void> {
  checkName(fsPath, name);
  const st = await fs.lstat(fsPath, { bigint: true });
  if (st.isDirectory()) {
    await header(ctx, KIND_DIR, st, name, 0);
    const children = (await fs.readdir(fsPath, { encoding: "buffer" })).sort(Buffer.compare);
    for (const raw of children) {
      let child: string;
      try {
        child = utf8.decode(raw);
      } catch {
        throw new Error(`cannot copy ${path.join(fsPath, raw.toString("utf8"))}: name is not valid UTF-8`);
      }
      await packEntry(ctx, path.join(fsPath, child), `${name}/${child}`);
    }
  } else if (st.isSymbolicLink()) {
    const target = await fs.readlink(fsPath, { encoding: "buffer" });
    try {
      validateLinkTarget(name, target);
    } catch (e) {
      throw new Error(`cannot copy symlink ${fsPath}: ${(e as Error).message}`);
    }
    await header(ctx, KIND_SYMLINK, st, name, target.length);
    await write(ctx.out, target);
  } else if (st.isFile()) {
    await packFile(ctx, fsPath, name);
  } else {
    throw new Error(`cannot copy special file ${fsPath}`);
  }
}

async function packFile(ctx: Ctx, fsPath: string, name: string): Promise<void> {
  // O_NONBLOCK: if the file was swapped for a fifo since lstat, open must not hang on it.
  const fh = await fs.open(fsPath, C.O_RDONLY | C.O_NOFOLLOW | C.O_NONBLOCK);
  try {
    // The header comes from the open file, so size and mode match the data we send.
    const st = await fh.stat({ bigint: true });
    if (!st.isFile()) throw new Error(`cannot copy special file ${fsPath}`);
    const size = Number(st.size);
    await header(ctx, KIND_FILE, st, name, size);
    for (let pos = 0; pos < size; ) {
      // A fresh buffer each time: the stream may still hold the previous one.
      const buf = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, size - pos));
      const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
      // The header already promised `size` bytes; the caller must abort the stream.
      if (bytesRead === 0) throw new Error(`cannot copy ${fsPath}: it shrank while being copied`);
      await write(ctx.out, buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
    ctx.stats.bytes += size;
  } finally {
    await fh.close();
  }
}
