// Property: whatever bytes arrive, the receiver throws nothing but FilecopyError, creates nothing
// outside root, nothing with an unsafe character in its name (text.ts), and nothing with group or
// world write, setuid, setgid or sticky bits. Random bytes mostly die at the first kind byte, so half the cases are
// streams of plausible entries (hostile names, links, truncation, bit flips) that get further.
import fs from "node:fs/promises";
import path from "node:path";
import fc from "fast-check";
import { expect, it } from "vitest";
import { FilecopyError } from "./errors.js";
import { encodeHeader } from "./format.js";
import { END, sandbox, streamOf, walk } from "./test-helpers.js";
import { unsafeCharacter } from "./text.js";
import { unpackStream } from "./unpack.js";

// Mostly valid components, so that streams get past the name checks and reach the filesystem.
const component = fc.oneof(
  { weight: 5, arbitrary: fc.constantFrom("a", "b", "sub") },
  { weight: 1, arbitrary: fc.constantFrom(".", "..", "", "é", "a\0", "sentinel") },
  { weight: 1, arbitrary: fc.constantFrom("\x1b[2J", "a\nb", "x\u202Ey", "\u200B", "\u009b", "\x7f", "\uFEFF", "a\u00A0b") },
);
const name = fc.array(component, { minLength: 1, maxLength: 3 }).map((c) => c.join("/"));
const target = fc
  .tuple(fc.boolean(), fc.array(fc.constantFrom("..", "..", "a", "sub", "sentinel", "root", ".", ""), { minLength: 1, maxLength: 5 }))
  .map(([abs, c]) => (abs ? "/" : "") + c.join("/"));

const entry = fc.oneof(
  fc.record({ kind: fc.constant(1), mode: fc.nat(), name }).map((e) => encodeHeader({ ...e, mtimeMs: 0, size: 0 })),
  fc.record({ mode: fc.nat(), name, data: fc.uint8Array({ maxLength: 64 }) }).map((e) =>
    Buffer.concat([encodeHeader({ kind: 2, mode: e.mode, mtimeMs: 1e12, name: e.name, size: e.data.length }), e.data]),
  ),
  fc.record({ name, target }).map((e) => {
    const t = Buffer.from(e.target);
    return Buffer.concat([encodeHeader({ kind: 3, mode: 0, mtimeMs: 0, name: e.name, size: t.length }), t]);
  }),
);

const structured = fc
  .record({
    entries: fc.array(entry, { maxLength: 8 }),
    end: fc.boolean(),
    cut: fc.option(fc.nat()),
    flip: fc.option(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 }))),
  })
  .map(({ entries, end, cut, flip }) => {
    let b = Buffer.concat([...entries, end ? END : Buffer.alloc(0)]);
    if (cut !== null && b.length > 0) b = b.subarray(0, cut % b.length);
    if (flip !== null && b.length > 0) b[flip[0] % b.length]! ^= flip[1];
    return b;
  });

const input = fc.oneof(fc.uint8Array({ maxLength: 256 }).map((u) => Buffer.from(u)), structured);

it("never throws anything but FilecopyError and never writes outside root", async () => {
  await fc.assert(
    fc.asyncProperty(input, fc.integer({ min: 0, max: 7 }), async (bytes, chunk) => {
      const sb = await sandbox();
      try {
        await unpackStream(streamOf(bytes, chunk), sb.root, { maxFiles: 6 }).catch((e: unknown) => {
          if (!(e instanceof FilecopyError)) throw e;
        });
        await sb.assertContained();
        for (const rel of await walk(sb.root)) {
          expect(unsafeCharacter(rel), rel).toBeUndefined();
          const st = await fs.lstat(path.join(sb.root, rel));
          if (!st.isSymbolicLink()) expect(st.mode & 0o7022, `${rel} mode ${(st.mode & 0o7777).toString(8)}`).toBe(0);
        }
        // Every symlink left behind must really resolve inside root, if it resolves at all.
        for (const rel of await walk(sb.root)) {
          const p = path.join(sb.root, rel);
          if (!(await fs.lstat(p)).isSymbolicLink()) continue;
          const top = path.join(sb.root, rel.split("/")[0]!);
          const lexical = path.resolve(path.dirname(p), await fs.readlink(p));
          expect(lexical === top || lexical.startsWith(top + path.sep), `${rel} → ${lexical}`).toBe(true);
          const real = await fs.realpath(p).catch(() => undefined);
          if (real !== undefined) expect(real.startsWith(sb.root + path.sep), `${rel} → ${real}`).toBe(true);
        }
      } finally {
        await sb.cleanup();
      }
    }),
    { numRuns: 200 },
  );
});
