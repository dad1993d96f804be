// Sender → receiver through a real stream: the unpacked tree must equal the source byte for byte,
// with modes, symlink targets and mtimes (to the millisecond) preserved.
import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { afterAll, beforeAll, expect, it } from "vitest";
import { packPaths } from "./pack.js";
import { walk } from "./test-helpers.js";
import { unpackStream } from "./unpack.js";

let base: string;
let src: string;
beforeAll(async () => {
  base = await fs.mkdtemp(path.join(os.tmpdir(), "qvm-filecopy-rt-"));
  src = path.join(base, "src");
  const t = path.join(src, "tree");
  const w = (rel: string, data: string | Buffer, mode = 0o644) => fs.writeFile(path.join(t, rel), data, { mode });
  await fs.mkdir(path.join(t, "a dir/nested/deep"), { recursive: true });
  await fs.mkdir(path.join(t, "empty-dir"));
  await fs.mkdir(path.join(t, "restricted"));
  await w("a dir/nested/deep/file.txt", "deep\n");
  await w("empty-file", "");
  await w("big.bin", randomBytes(5 * 1024 * 1024));
  await w("run.sh", "#!/bin/sh\n", 0o755);
  await w("secret", "s3cret", 0o600);
  await w("restricted/inside", "r");
  await w("héllo wörld ✓ 日本.txt", "unicode");
  await fs.symlink("a dir/nested", path.join(t, "link-to-dir"));
  await fs.symlink("../../big.bin", path.join(t, "a dir/nested/up"));
  await fs.writeFile(path.join(src, "single file.txt"), "top-level file");
  // Explicit modes (the umask altered the ones above) and distinctive millisecond mtimes,
  // set deepest first so a directory's time is not bumped by its children afterwards.
  await fs.chmod(path.join(t, "run.sh"), 0o755);
  await fs.chmod(path.join(t, "restricted"), 0o750);
  const all = [...(await walk(src))].reverse();
  let ms = 1_650_000_000_123;
  for (const rel of all) {
    const p = path.join(src, rel);
    if (!(await fs.lstat(p)).isSymbolicLink()) await fs.utimes(p, (ms + 0.0005) / 1000, (ms + 0.0005) / 1000);
    ms += 1_001;
  }
});
afterAll(async () => {
  await fs.rm(base, { recursive: true, force: true });
});

async function describeTree(top: string) {
  const out: Record<string, unknown> = {};
  for (const rel of await walk(top)) {
    const p = path.join(top, rel);
    const st = await fs.lstat(p, { bigint: true });
    const common = { mode: Number(st.mode & 0o7777n) };
    if (st.isSymbolicLink()) out[rel] = { link: await fs.readlink(p) };
    else if (st.isDirectory()) out[rel] = { ...common, dir: true, mtimeMs: st.mtimeNs / 1_000_000n };
    // A digest rather than the bytes: a failing diff of 5 MiB buffers would take minutes to print.
    else out[rel] = { ...common, sha256: createHash("sha256").update(await fs.readFile(p)).digest("hex"), size: st.size, mtimeMs: st.mtimeNs / 1_000_000n };
  }
  return out;
}

it("round-trips a tree with dirs, modes, symlinks, UTF-8 names and a 5 MiB file", async () => {
  const dest = path.join(base, "dest", "QubesIncoming", "work");
  // A small buffer between the two ends exercises back-pressure on both.
  const pipe = new PassThrough({ highWaterMark: 16 * 1024 });
  const [sent, received] = await Promise.all([
    packPaths([path.join(src, "tree"), path.join(src, "single file.txt")], pipe).then((s) => (pipe.end(), s)),
    unpackStream(pipe, dest),
  ]);
  expect(received).toEqual(sent);
  expect(sent.files).toBe(16);
  expect(sent.bytes).toBe(5 * 1024 * 1024 + 5 + 10 + 6 + 1 + 7 + 14);

  const want = await describeTree(src);
  const got = await describeTree(dest);
  expect(Object.keys(got)).toEqual(Object.keys(want));
  for (const k of Object.keys(want)) expect(got[k], k).toEqual(want[k]);
  expect((want["tree/restricted"] as { mode: number }).mode).toBe(0o750);
  expect((want["tree/secret"] as { mode: number }).mode).toBe(0o600);
  expect((await fs.readFile(path.join(dest, "tree/link-to-dir/up"))).equals(await fs.readFile(path.join(src, "tree/big.bin")))).toBe(true);
});
