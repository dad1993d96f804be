// Every way a vault can be damaged or tampered with is detected, and named: a wrong passphrase,
// a flipped byte in each region, a truncation at every offset, chunks moved, repeated, cut out or
// spliced in from another backup, an absurd manifest length, bytes appended. Where Qubes'
// qvm-backup lets a missing chunk pass, these must all fail with the right VaultError.
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { isQvmError } from "@qvm/protocol";
import { isVaultError, openVault, verifyVault, type VaultError, type VaultProblem } from "./index.js";
import { BLOCK, flip, frameSpans, MemorySink, noise, PASSPHRASE, readAll, resealManifest, TEST_KDF, text, writeVault, type TestEntry } from "./test-helpers.js";
import { decodeFrameHeader, decodeHeader, decodeTrailer, encodeFrameHeader, encodeHeader, encodeTrailer, FRAME_HEADER_SIZE, HEADER_SIZE, TRAILER_SIZE } from "./vault-format.js";
import { MAX_MANIFEST_BYTES } from "./vault-manifest.js";

const weak = { weakKdfForTests: true };

// Four incompressible full blocks (so frames 0-3 have equal lengths and can be swapped), a
// compressible block and a short tail, plus a metadata entry.
const ENTRIES: TestEntry[] = [
  { kind: "volume", name: "work/private", data: Buffer.concat([noise("p", 4 * BLOCK), text("t", BLOCK), noise("tail", 999)]) },
  { kind: "file", name: "qvm.json", data: Buffer.from('{"domains":{}}') },
];

/** Opens and verifies; returns the error (a VaultError is expected). */
async function failure(bytes: Buffer, passphrase = PASSPHRASE): Promise<VaultError> {
  try {
    await verifyVault(bytes, passphrase, weak);
  } catch (err) {
    if (isVaultError(err)) return err;
    throw err;
  }
  throw new Error("the damaged vault verified");
}

async function expectProblem(bytes: Buffer, problem: VaultProblem, message?: RegExp): Promise<VaultError> {
  const err = await failure(bytes);
  expect(err.problem, err.message).toBe(problem);
  if (message !== undefined) expect(err.message).toMatch(message);
  return err;
}

function spliceFrame(bytes: Buffer, at: { offset: number; length: number }, replacement: Buffer): Buffer {
  return Buffer.concat([bytes.subarray(0, at.offset), replacement, bytes.subarray(at.offset + at.length)]);
}

describe("vault damage", async () => {
  const { bytes } = await writeVault(ENTRIES);
  const spans = frameSpans(bytes);
  const chunks = spans.slice(0, -1);
  const manifest = spans.at(-1)!;
  const trailerAt = bytes.length - TRAILER_SIZE;

  it("the intact vault verifies, and its frames are laid out as expected", async () => {
    await expect(verifyVault(bytes, PASSPHRASE, weak)).resolves.toMatchObject({ chunksChecked: 7 });
    expect(chunks.slice(0, 4).every((c) => c.length === chunks[0]!.length)).toBe(true);
    expect(manifest.offset + manifest.length).toBe(trailerAt);
  });

  it("a wrong passphrase is named as such, not as damage", async () => {
    const err = await failure(bytes, "Correct horse battery staple");
    expect(err.problem).toBe("wrong-passphrase");
    expect(isQvmError(err, "PERMISSION_DENIED")).toBe(true);
    expect(err.message).toMatch(/passphrase does not open this backup.*Try again/);
  });

  it("a flipped byte anywhere in the header is header damage, never a wrong passphrase", async () => {
    for (let i = 0; i < HEADER_SIZE; i++) {
      const err = await failure(flip(bytes, i));
      expect(err.problem, `byte ${i}: ${err.message}`).toBe("header-corrupt");
      expect(err.where.offset).toBe(0);
    }
  });

  it("a flipped byte in a chunk names the chunk, its entry, block and offset", async () => {
    for (const [c, span] of chunks.entries()) {
      // Every byte of the frame header, and a spread of payload bytes (tag included).
      const offsets = [...Array.from({ length: FRAME_HEADER_SIZE }, (_, i) => span.offset + i)];
      for (let i = FRAME_HEADER_SIZE; i < span.length; i += 397) offsets.push(span.offset + i);
      offsets.push(span.offset + span.length - 1);
      for (const at of offsets) {
        const err = await failure(flip(bytes, at));
        expect(err.problem, `chunk ${c}, byte ${at}: ${err.message}`).toBe("chunk-corrupt");
        expect(err.where).toMatchObject({ chunk: c, offset: span.offset });
        expect(err.where.entry).toBe(c === 6 ? "qvm.json" : "work/private");
      }
    }
    const err = await failure(flip(bytes, chunks[2]!.offset + 100));
    expect(err.message).toMatch(/chunk 2 \(block 2 of "work\/private", bytes 8192…12287\) at offset \d+ fails authentication.*another copy/);
  });

  it("a flipped byte in the manifest or the trailer names that part", async () => {
    for (let at = manifest.offset; at < manifest.offset + manifest.length; at += at < manifest.offset + FRAME_HEADER_SIZE ? 1 : 13) {
      const err = await failure(flip(bytes, at));
      expect(err.problem, `byte ${at}: ${err.message}`).toBe("manifest-corrupt");
    }
    for (let at = trailerAt; at < bytes.length; at++) {
      const err = await failure(flip(bytes, at));
      expect(err.problem, `byte ${at}: ${err.message}`).toBe("trailer-corrupt");
      expect(err.where.offset).toBe(trailerAt);
    }
  });

  it("a file cut at any offset is truncated, and says where", async () => {
    for (let size = 0; size < bytes.length; size++) {
      const err = await failure(bytes.subarray(0, size));
      expect(err.problem, `cut at ${size}: ${err.message}`).toBe("truncated");
    }
    const err = await failure(bytes.subarray(0, chunks[3]!.offset + 50));
    expect(err.message).toMatch(/ends at offset \d+, inside chunk 3, whose frame at offset \d+ runs to \d+.*copy it again/);
  });

  it("chunks swapped, repeated or cut out are named", async () => {
    const [c1, c2] = [chunks[1]!, chunks[2]!];
    const frame = (s: { offset: number; length: number }) => bytes.subarray(s.offset, s.offset + s.length);
    const swapped = Buffer.concat([bytes.subarray(0, c1.offset), frame(c2), frame(c1), bytes.subarray(c2.offset + c2.length)]);
    const moved = await expectProblem(swapped, "chunk-reordered", /out of order: offset \d+ holds chunk 2 .* where chunk 1 .* belongs/);
    expect(moved.where).toMatchObject({ chunk: 1, offset: c1.offset, entry: "work/private", block: 1 });

    await expectProblem(spliceFrame(bytes, c2, frame(c1)), "chunk-duplicated", /chunk 1 .*appears again at offset \d+ \(first at offset \d+\), in the place of chunk 2/);
    await expectProblem(spliceFrame(bytes, c2, Buffer.alloc(0)), "chunk-missing", /chunk 2 is missing: offset \d+, where it belongs, holds chunk 3/);
    // The last chunk cut out: the walk reaches the manifest one chunk early.
    await expectProblem(spliceFrame(bytes, chunks.at(-1)!, Buffer.alloc(0)), "chunk-missing", /chunk 6 is missing: the manifest counts 7 chunks/);
    // A duplicate inserted (the file grows): the same chunk twice.
    await expectProblem(spliceFrame(bytes, { offset: c2.offset, length: 0 }, frame(c1)), "chunk-duplicated");
  });

  it("a chunk spliced in from another backup with the same passphrase is foreign", async () => {
    const { bytes: other } = await writeVault(ENTRIES); // same content and passphrase, new salt and id
    const theirs = frameSpans(other)[2]!;
    const foreign = other.subarray(theirs.offset, theirs.offset + theirs.length);
    const err = await expectProblem(spliceFrame(bytes, chunks[2]!, foreign), "chunk-foreign", /is chunk 2 of backup [0-9a-f]{32}, not of this backup [0-9a-f]{32}/);
    expect(err.where).toMatchObject({ chunk: 2, entry: "work/private", block: 2 });

    // Relabelled as ours (backup id, index and header check rewritten): the key still tells.
    const fh = decodeFrameHeader(foreign.subarray(0, FRAME_HEADER_SIZE));
    if (typeof fh === "string") throw new Error(fh);
    const ours = decodeHeader(bytes.subarray(0, HEADER_SIZE), "x", weak).backupId;
    const relabelled = Buffer.concat([encodeFrameHeader({ ...fh, backupId: ours }), foreign.subarray(FRAME_HEADER_SIZE)]);
    await expectProblem(spliceFrame(bytes, chunks[2]!, relabelled), "chunk-corrupt", /fails authentication/);
  });

  it("a trailer claiming a huge manifest is refused before anything is read", async () => {
    const t = decodeTrailer(bytes.subarray(trailerAt))!;
    const crafted = Buffer.concat([bytes.subarray(0, trailerAt), encodeTrailer({ ...t, manifestLength: 2 ** 40 })]);
    const err = await expectProblem(crafted, "manifest-too-large", new RegExp(`more than the ${MAX_MANIFEST_BYTES} allowed`));
    expect(err.where.offset).toBe(trailerAt);
    // Just over the cap: refused too.
    const justOver = Buffer.concat([bytes.subarray(0, trailerAt), encodeTrailer({ ...t, manifestLength: FRAME_HEADER_SIZE + MAX_MANIFEST_BYTES + 17 })]);
    await expectProblem(justOver, "manifest-too-large");
  });

  it("bytes appended after the trailer are named", async () => {
    await expectProblem(Buffer.concat([bytes, Buffer.from("junk")]), "trailing-data", /4 bytes follow the trailer/);
  });

  it("other files and other versions are told apart from damage", async () => {
    await expectProblem(Buffer.from("#!/bin/sh\necho this is not a backup\n".repeat(10)), "not-a-vault");
    const h = decodeHeader(bytes.subarray(0, HEADER_SIZE), "x", weak);
    // A well-formed header (its checksum holds) of version 2.
    const v2 = encodeHeader(h);
    v2.writeUInt16BE(2, 8);
    const rehashed = encodeHeaderBytes(v2);
    const err = await expectProblem(Buffer.concat([rehashed, bytes.subarray(HEADER_SIZE)]), "unsupported-version", /version 2; this qvm reads version 1/);
    expect(isQvmError(err, "FAILED_PRECONDITION")).toBe(true);
    // A well-formed header asking for an absurd key derivation is refused before deriving anything.
    const greedy = encodeHeader({ ...h, scrypt: { logN: 22, r: 32, p: 16 } });
    await expectProblem(Buffer.concat([greedy, bytes.subarray(HEADER_SIZE)]), "unsupported-version", /scrypt N=2\^22 r=32 needs 16384 MiB/);
  });

  it("a restore that skips verify still fails on the damaged chunk, not after writing it", async () => {
    const damaged = flip(bytes, chunks[3]!.offset + 200);
    const vault = await openVault(damaged, PASSPHRASE, weak);
    try {
      const out = new MemorySink();
      await expect(vault.writeVolumeTo("work/private", out)).rejects.toSatisfy((e) => isVaultError(e, "chunk-corrupt"));
      expect(out.bytes().length).toBeLessThanOrEqual(3 * BLOCK); // blocks 0-2 at most, never block 3
      await expect(readAll(vault, "work/private")).rejects.toThrow(/chunk 3/);
      // The metadata entry does not depend on the damaged chunk.
      expect((await vault.readFile("qvm.json")).toString()).toBe('{"domains":{}}');
    } finally {
      await vault.close();
    }
  });

  it("an authentic manifest (written with the passphrase) is still hostile input", async () => {
    type Entry = { name: string; blocks: { chunk?: number }[] };
    const entries = (m: Record<string, unknown>) => m.entries as Entry[];
    const edits: [string, (m: Record<string, unknown>) => unknown, RegExp][] = [
      ["escaping name", (m) => (entries(m)[1]!.name = "../../etc/shadow", m), /invalid entry name/],
      ["chunk out of range", (m) => (entries(m)[0]!.blocks[0]!.chunk = 99, m), /names chunk 99 of 7/],
      ["chunk count", (m) => ({ ...m, chunkCount: 8 }), /counts 8 chunks, the trailer 7/],
      ["unknown field", (m) => ({ ...m, extra: true }), /Unrecognized key/],
      ["not JSON", () => Buffer.from("not json"), /not JSON/],
    ];
    for (const [what, edit, why] of edits) {
      const err = await failure(await resealManifest(bytes, edit));
      expect(err.problem, what).toBe("manifest-invalid");
      expect(err.message, what).toMatch(why);
    }
    // A deflate bomb: 65 MiB of zeros deflate to 64 KiB, and the reader stops at the cap.
    const bomb = await resealManifest(bytes, () => Buffer.alloc(MAX_MANIFEST_BYTES + 1024 * 1024), { deflate: true });
    expect(bomb.length).toBeLessThan(bytes.length + 128 * 1024);
    await expectProblem(bomb, "manifest-too-large", /inflates to more than/);
  });

  it("keys are checked with the same cheap parameters the test wrote", () => {
    expect(decodeHeader(bytes.subarray(0, HEADER_SIZE), "x", weak).scrypt).toEqual(TEST_KDF);
    expect(() => decodeHeader(bytes.subarray(0, HEADER_SIZE), "x")).toThrow(/scrypt N=2\^10 is outside 2\^14…2\^22/);
  });
});

/** Recomputes a header's checksum after a test edited its fields. */
function encodeHeaderBytes(edited: Buffer): Buffer {
  const out = Buffer.from(edited);
  createHash("sha256").update(out.subarray(0, 96)).digest().copy(out, 96);
  return out;
}
