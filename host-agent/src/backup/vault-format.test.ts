// The binary layout, field by field as docs/backup-format.md states it, and the manifest's
// schema and consistency checks: what another tool may rely on, and what a reader refuses.
import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  decodeFrameHeader,
  decodeHeader,
  decodeTrailer,
  encodeFrameHeader,
  encodeHeader,
  encodeTrailer,
  FRAME_KIND,
  HEADER_SIZE,
  type VaultHeader,
} from "./vault-format.js";
import { entryNameProblem, indexManifest, MAX_ENTRIES, parseManifestJson, type VaultManifest } from "./vault-manifest.js";
import { isVaultError } from "./vault-errors.js";

const header: Omit<VaultHeader, "bytes"> = {
  scrypt: { logN: 17, r: 8, p: 1 },
  salt: Buffer.alloc(32, 0x55),
  backupId: Buffer.alloc(16, 0xb1),
  parentId: Buffer.alloc(16, 0xa1),
  blockSize: 4 * 1024 * 1024,
  keyCheck: Buffer.alloc(8, 0xcc),
};

describe("header", () => {
  it("is laid out byte for byte as documented", () => {
    const b = encodeHeader(header);
    expect(b).toHaveLength(HEADER_SIZE);
    expect(b.subarray(0, 8).toString("latin1")).toBe("QVMVAULT");
    expect(b.readUInt16BE(8)).toBe(1); // version
    expect(b.readUInt16BE(10)).toBe(0); // flags
    expect([b[12], b[13], b[14], b[15]]).toEqual([1, 17, 8, 1]); // scrypt, log2 N, r, p
    expect(b.subarray(16, 48)).toEqual(header.salt);
    expect(b.subarray(48, 64)).toEqual(header.backupId);
    expect(b.subarray(64, 80)).toEqual(header.parentId);
    expect(b.readUInt32BE(80)).toBe(4 * 1024 * 1024);
    expect([b[84], b[85], b.readUInt16BE(86)]).toEqual([1, 1, 0]); // AES-256-GCM, raw deflate, reserved
    expect(b.subarray(88, 96)).toEqual(header.keyCheck);
    expect(decodeHeader(b, "x")).toEqual({ ...header, bytes: b });
    expect(decodeHeader(encodeHeader({ ...header, parentId: null }), "x").parentId).toBeNull();
  });

  it("names what is wrong with a bad one", () => {
    const b = encodeHeader(header);
    const problem = (bytes: Buffer) => {
      try {
        decodeHeader(bytes, "x");
      } catch (err) {
        if (isVaultError(err)) return err.problem;
        throw err;
      }
      return "ok";
    };
    expect(problem(Buffer.alloc(0))).toBe("truncated");
    expect(problem(b.subarray(0, 5))).toBe("truncated");
    expect(problem(b.subarray(0, 127))).toBe("truncated");
    expect(problem(Buffer.from("PK\x03\x04 a zip file"))).toBe("not-a-vault");
    expect(problem(Buffer.from(b).fill(0x20, 96, 128))).toBe("header-corrupt");
    // A block size that is not a power of two, written with a valid checksum: refused as unsupported.
    expect(problem(encodeHeader({ ...header, blockSize: 5000 }))).toBe("unsupported-version");
    expect(problem(encodeHeader({ ...header, blockSize: 32 * 1024 * 1024 }))).toBe("unsupported-version");
    expect(problem(encodeHeader({ ...header, backupId: Buffer.alloc(16) }))).toBe("unsupported-version");
  });
});

describe("frame header and trailer", () => {
  it("frame header: magic, kind, flags, index, backup id, length, check", () => {
    const f = { kind: FRAME_KIND.volume, flags: 1, index: 2 ** 40 + 3, backupId: Buffer.alloc(16, 9), payloadLength: 4112 };
    const b = encodeFrameHeader(f);
    expect(b).toHaveLength(40);
    expect(b.subarray(0, 4).toString("latin1")).toBe("QVFR");
    expect([b[4], b[5], b.readUInt16BE(6)]).toEqual([2, 1, 0]);
    expect(b.readBigUInt64BE(8)).toBe(BigInt(2 ** 40 + 3));
    expect(b.subarray(16, 32)).toEqual(f.backupId);
    expect(b.readUInt32BE(32)).toBe(4112);
    expect(decodeFrameHeader(b)).toEqual({ ...f, bytes: b });
    for (let i = 0; i < 40; i++) {
      const bad = Buffer.from(b);
      bad[i] = bad[i]! ^ 4;
      expect(typeof decodeFrameHeader(bad), `byte ${i}`).toBe("string");
    }
    expect(decodeFrameHeader(encodeFrameHeader({ ...f, flags: 2 }))).toMatch(/unknown flags/);
    expect(decodeFrameHeader(encodeFrameHeader({ ...f, kind: 7 as 1 }))).toMatch(/kind 7/);
  });

  it("trailer: magic, manifest offset and length, chunk count, backup id, check", () => {
    const t = { manifestOffset: 1000, manifestLength: 300, chunkCount: 12, backupId: Buffer.alloc(16, 8) };
    const b = encodeTrailer(t);
    expect(b).toHaveLength(64);
    expect(b.subarray(0, 8).toString("latin1")).toBe("QVMVTRLR");
    expect([b.readBigUInt64BE(8), b.readBigUInt64BE(16), b.readBigUInt64BE(24)]).toEqual([1000n, 300n, 12n]);
    expect(decodeTrailer(b)).toEqual(t);
    expect(decodeTrailer(Buffer.from(b).fill(1, 50, 51))).toBeUndefined();
    const huge = Buffer.from(b);
    huge.writeBigUInt64BE(2n ** 60n, 8); // beyond exact JavaScript numbers, even with a good check
    expect(decodeTrailer(encodeTrailerBytes(huge))).toBeUndefined();
  });
});

function encodeTrailerBytes(b: Buffer): Buffer {
  const out = Buffer.from(b);
  createHash("sha256").update(out.subarray(0, 48)).digest().copy(out, 48, 0, 16);
  return out;
}

describe("manifest", () => {
  const id = (c: string) => c.repeat(64);
  const good = (): VaultManifest => ({
    format: "qvm-vault",
    version: 1,
    backupId: "b1".repeat(16),
    createdAt: "2026-01-02T03:04:05.000Z",
    blockSize: 4096,
    chunkCount: 3,
    chunkOffsets: [128, 128 + 140, 128 + 280],
    parent: null,
    entries: [
      { name: "qvm.json", kind: "file", size: 10, blocks: [{ type: "data", chunk: 0, length: 10, id: id("a") }] },
      {
        name: "work/private",
        kind: "volume",
        size: 4096 * 3 + 5,
        blocks: [
          { type: "data", chunk: 1, length: 4096, id: id("b") },
          { type: "zero", length: 4096 },
          { type: "data", chunk: 1, length: 4096, id: id("b") }, // the same block again: the same chunk
          { type: "data", chunk: 2, length: 5, id: id("c") },
        ],
      },
    ],
  });
  const ctx = { backupId: "b1".repeat(16), parentId: null, blockSize: 4096, chunkCount: 3, manifestOffset: 128 + 420 };

  it("parses strictly", () => {
    expect(parseManifestJson(Buffer.from(JSON.stringify(good())))).toEqual(good());
    expect(parseManifestJson(Buffer.from("{"))).toMatch(/not JSON/);
    expect(parseManifestJson(Buffer.from(JSON.stringify({ ...good(), extra: 1 })))).toMatch(/Unrecognized key/);
    expect(parseManifestJson(Buffer.from(JSON.stringify({ ...good(), version: 2 })))).toMatch(/^version/);
    const many = { ...good(), entries: Array.from({ length: MAX_ENTRIES + 1 }, (_, i) => ({ name: `e${i}`, kind: "file", size: 0, blocks: [] })) };
    expect(parseManifestJson(Buffer.from(JSON.stringify(many)))).toMatch(/^entries/);
    const badName = good();
    badName.entries[0]!.name = "../../etc/shadow";
    expect(parseManifestJson(Buffer.from(JSON.stringify(badName)))).toMatch(/invalid entry name/);
  });

  it("entry names are path-like and cannot escape a directory", () => {
    for (const ok of ["qvm.json", "work/private", "vm-1/volume:root", "_x/a.b+c@d=e"]) expect(entryNameProblem(ok), ok).toBeUndefined();
    for (const bad of ["", ".", "..", "../x", "a/../b", "/a", "a/", "a//b", ".a", "a b", "é", "a\\b", "x".repeat(256)]) expect(entryNameProblem(bad), bad).toBeDefined();
  });

  it("checks what the schema cannot", () => {
    expect(indexManifest(good(), ctx)).toMatchObject({
      chunks: [
        { entry: "qvm.json", block: 0 },
        { entry: "work/private", block: 0 },
        { entry: "work/private", block: 3 },
      ],
    });
    const broken: [string, (m: VaultManifest) => void, RegExp][] = [
      ["other backup", (m) => (m.backupId = "c1".repeat(16)), /names backup/],
      ["chunk count", (m) => (m.chunkCount = 4), /counts 4 chunks/],
      ["offsets", (m) => (m.chunkOffsets = [128, 268]), /lists 2 chunk offsets for 3 chunks/],
      ["first offset", (m) => (m.chunkOffsets = [200, 300, 400]), /first frame is at offset 200/],
      ["frame size", (m) => (m.chunkOffsets = [128, 129, 408]), /chunk 0's frame would be 1 bytes/],
      ["block count", (m) => m.entries[1]!.blocks.pop(), /lists 3 blocks, not 4/],
      ["block length", (m) => (m.entries[1]!.blocks[1]!.length = 100), /block 1 of entry "work\/private" is 100 bytes/],
      ["chunk range", (m) => ((m.entries[0]!.blocks[0] as { chunk: number }).chunk = 3), /names chunk 3 of 3/],
      ["shared chunk", (m) => ((m.entries[1]!.blocks[2] as { id: string }).id = id("c")), /share chunk 1 but differ/],
      ["ref without parent", (m) => (m.entries[0]!.blocks[0] = { type: "ref", backup: "a1".repeat(16), chunk: 0, length: 10, id: id("a") }), /has no parent/],
      ["duplicate", (m) => (m.entries[1]!.name = "qvm.json"), /appears twice/],
      ["huge file entry", (m) => (m.entries[0]!.size = 2 ** 30), /metadata entry/],
    ];
    for (const [what, edit, why] of broken) {
      const m = good();
      edit(m);
      expect(indexManifest(m, ctx), what).toMatch(why);
    }
    const orphan = good();
    orphan.entries[1]!.blocks[3] = { type: "data", chunk: 1, length: 5, id: id("b") };
    expect(indexManifest(orphan, ctx)).toMatch(/share chunk 1 but differ/);
    orphan.entries[1]!.blocks[3] = { type: "zero", length: 5 };
    expect(indexManifest(orphan, ctx)).toMatch(/chunk 2 belongs to no entry/);
  });
});
