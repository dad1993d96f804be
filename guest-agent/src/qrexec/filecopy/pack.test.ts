// The sender: special files, determinism and order, symlinks kept as symlinks, back-pressure.
import { execFileSync } from "node:child_process";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { afterEach, beforeEach, expect, it } from "vitest";
import { KIND_DIR, KIND_FILE, KIND_SYMLINK } from "./format.js";
import { packPaths } from "./pack.js";
import { parseEntries } from "./test-helpers.js";

let base: string;
beforeEach(async () => {
  base = await fs.mkdtemp(path.join(os.tmpdir(), "qvm-filecopy-pack-"));
});
afterEach(async () => {
  await fs.rm(base, { recursive: true, force: true });
});

/** Collects everything written, optionally slowly, recording the most ever buffered. */
function sink(opts: { highWaterMark?: number; delayMs?: number } = {}) {
  const chunks: Buffer[] = [];
  let maxBuffered = 0;
  const w = new Writable({
    highWaterMark: opts.highWaterMark ?? 16 * 1024,
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk);
      if (opts.delayMs) setTimeout(cb, opts.delayMs);
      else cb();
    },
  });
  const origWrite = w.write.bind(w) as (c: Buffer) => boolean;
  w.write = ((c: Buffer) => {
    const ok = origWrite(c);
    maxBuffered = Math.max(maxBuffered, w.writableLength);
    return ok;
  }) as typeof w.write;
  return { w, bytes: () => Buffer.concat(chunks), maxBuffered: () => maxBuffered };
}

it("refuses a fifo, naming it", async () => {
  const fifo = path.join(base, "pipe");
  execFileSync("mkfifo", [fifo]);
  await expect(packPaths([fifo], sink().w)).rejects.toThrow(`cannot copy special file ${fifo}`);
  await fs.mkdir(path.join(base, "d"));
  execFileSync("mkfifo", [path.join(base, "d", "inner")]);
  await expect(packPaths([path.join(base, "d")], sink().w)).rejects.toThrow(/cannot copy special file .*d\/inner/);
});

it("gives identical bytes for the same tree, parents first, children in byte order", async () => {
  const t = path.join(base, "t");
  for (const d of ["Z", "a", "é", "B"]) await fs.mkdir(path.join(t, d), { recursive: true });
  await fs.writeFile(path.join(t, "a", "f"), "x".repeat(200_000));
  await fs.symlink("../B", path.join(t, "a", "l"));
  const one = sink();
  const two = sink();
  await packPaths([t], one.w);
  await packPaths([t], two.w);
  expect(one.bytes().equals(two.bytes())).toBe(true);
  const entries = parseEntries(one.bytes());
  expect(entries.map((e) => e.name)).toEqual(["t", "t/B", "t/Z", "t/a", "t/a/f", "t/a/l", "t/é"]);
  expect(entries.map((e) => e.kind)).toEqual([KIND_DIR, KIND_DIR, KIND_DIR, KIND_DIR, KIND_FILE, KIND_SYMLINK, KIND_DIR]);
});

it("sends a symlink as a symlink without following it", async () => {
  const t = path.join(base, "t");
  await fs.mkdir(path.join(t, "sub"), { recursive: true });
  await fs.writeFile(path.join(t, "sub", "f"), "data");
  await fs.symlink("sub", path.join(t, "l"));
  const s = sink();
  expect(await packPaths([t], s.w)).toEqual({ files: 4, bytes: 4 });
  const l = parseEntries(s.bytes()).find((e) => e.name === "t/l");
  expect(l).toMatchObject({ kind: KIND_SYMLINK, size: 3 });
});

it("refuses symlinks the receiver would refuse, and duplicate top-level names", async () => {
  await fs.mkdir(path.join(base, "t"));
  await fs.symlink("/etc/passwd", path.join(base, "t", "abs"));
  await expect(packPaths([path.join(base, "t")], sink().w)).rejects.toThrow(/cannot copy symlink .*abs.*absolute/);
  await fs.mkdir(path.join(base, "x", "t"), { recursive: true });
  await expect(packPaths([path.join(base, "t"), path.join(base, "x", "t")], sink().w)).rejects.toThrow(/both would be named "t"/);
  await expect(packPaths(["/"], sink().w)).rejects.toThrow(/name the file or directory itself/);
});

it("waits for drain instead of buffering a large file", async () => {
  await fs.writeFile(path.join(base, "big"), Buffer.alloc(2 * 1024 * 1024, 7));
  const s = sink({ highWaterMark: 1024, delayMs: 1 });
  const stats = await packPaths([path.join(base, "big")], s.w);
  expect(stats).toEqual({ files: 1, bytes: 2 * 1024 * 1024 });
  // At most one chunk beyond the high-water mark is ever queued.
  expect(s.maxBuffered()).toBeLessThanOrEqual(1024 + 256 * 1024);
  expect(s.bytes().length).toBe(2 * 1024 * 1024 + 15 + 3 + 8 + 1);
});

it("refuses early, before sending anything, a name the receiver would refuse (control or bidi characters)", async () => {
  for (const name of ["a\x1b[2Jb", "two\nlines", "invoice\u202Efdp.exe", "zero\u200Bwidth"]) {
    await fs.writeFile(path.join(base, name), "x");
    const out = sink();
    const err = await packPaths([path.join(base, name)], out.w).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/^cannot copy ".*": bad entry name .*contains U\+/);
    expect((err as Error).message).not.toMatch(/[\x00-\x1f\u200b\u202e]/);
    expect(out.bytes().length).toBe(0);
  }
});
