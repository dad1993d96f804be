// The vault end to end in memory and on disk (no VMs): what goes in comes out byte for byte,
// zero blocks and repeated blocks cost nothing, progress is reported, the writer refuses misuse,
// and the default (slow) key parameters work.
import { closeSync, createWriteStream, fstatSync, mkdtempSync, openSync, rmSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { isQvmError } from "@qvm/protocol";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createVault, DEFAULT_SCRYPT, openVault, verifyVault, type ReadProgress, type WriteProgress } from "./index.js";
import { BLOCK, FIXED_NOW, MemorySink, noise, PASSPHRASE, piecewise, readAll, TEST_KDF, text, writeVault, type TestEntry } from "./test-helpers.js";
import { FRAME_HEADER_SIZE, HEADER_SIZE, TRAILER_SIZE } from "./vault-format.js";
import { TAG_SIZE } from "./vault-crypto.js";

const weak = { weakKdfForTests: true };

/** A volume with every kind of block: data, all-zero, compressible, repeated, and a short tail. */
function mixedVolume(): Buffer {
  return Buffer.concat([
    noise("a", BLOCK), // block 0: stored as is (deflate does not help)
    Buffer.alloc(2 * BLOCK), // blocks 1-2: zero
    text("b", BLOCK), // block 3: deflated
    noise("a", BLOCK), // block 4: same as block 0, reused
    noise("c", 1234), // block 5: short tail
  ]);
}

const ENTRIES: TestEntry[] = [
  { kind: "file", name: "qvm.json", data: Buffer.from(JSON.stringify({ domains: { work: { label: "red" } } })) },
  { kind: "volume", name: "work/private", data: mixedVolume() },
  { kind: "volume", name: "work/empty", data: Buffer.alloc(0) },
  { kind: "volume", name: "sparse/root", data: Buffer.alloc(64 * BLOCK) },
  { kind: "file", name: "firewall/work.json", data: Buffer.concat([text("fw", BLOCK), text("fw", BLOCK), text("fw", BLOCK), Buffer.from("a 17-byte tail...")]) },
];

describe("vault round trip", () => {
  it("gives back every entry byte for byte, zero and repeated blocks included", async () => {
    const { bytes, summary } = await writeVault(ENTRIES);
    const vault = await openVault(bytes, PASSPHRASE, weak);
    try {
      expect(vault.manifest.entries.map((e) => e.name)).toEqual(ENTRIES.map((e) => e.name));
      for (const e of ENTRIES) {
        const back = e.kind === "file" ? await vault.readFile(e.name) : await readAll(vault, e.name);
        expect(back.equals(e.data), e.name).toBe(true);
      }
      expect(vault.info).toMatchObject({ backupId: summary.backupId, parentId: null, createdAt: FIXED_NOW().toISOString(), blockSize: BLOCK, fileSize: bytes.length, scrypt: TEST_KDF });
      expect(vault.entries().find((e) => e.name === "work/private")).toEqual({
        name: "work/private",
        kind: "volume",
        size: 5 * BLOCK + 1234,
        blocks: 6,
        storedBlocks: 4,
        referencedBlocks: 0,
        zeroBlocks: 2,
      });
      const report = await vault.verify();
      expect(report).toMatchObject({ backupId: summary.backupId, chain: [summary.backupId], entries: 5, chunksChecked: summary.chunksWritten });
    } finally {
      await vault.close();
    }
  });

  it("stores nothing for zero blocks and each distinct block once", async () => {
    const { bytes, summary } = await writeVault(ENTRIES);
    // Stored: qvm.json 1, work/private 3 (block 4 reuses block 0), firewall 2 (its 3 full blocks are equal: 1, then the tail).
    expect(summary).toMatchObject({ entries: 5, zeroBlocks: 66, blocksReused: 3, blocksReferenced: 0 });
    expect(summary.chunksWritten).toBe(1 + 3 + 2);
    expect(summary.bytesWritten).toBe(bytes.length);
    // A 1 MiB volume of zeros (256 blocks) costs only its manifest lines, which deflate to almost nothing.
    const { bytes: sparseOnly, summary: sparse } = await writeVault([{ kind: "volume", name: "big", data: Buffer.alloc(256 * BLOCK) }]);
    expect(sparse).toMatchObject({ chunksWritten: 0, zeroBlocks: 256 });
    expect(sparseOnly.length).toBeLessThan(HEADER_SIZE + FRAME_HEADER_SIZE + TAG_SIZE + 300 + TRAILER_SIZE);
  });

  it("reads zero blocks as holes through readBlocks, with offsets", async () => {
    const { bytes } = await writeVault(ENTRIES);
    const vault = await openVault(bytes, PASSPHRASE, weak);
    const blocks = [];
    for await (const b of vault.readBlocks("work/private")) blocks.push({ offset: b.offset, length: b.length, zero: b.data === null });
    expect(blocks).toEqual([
      { offset: 0, length: BLOCK, zero: false },
      { offset: BLOCK, length: BLOCK, zero: true },
      { offset: 2 * BLOCK, length: BLOCK, zero: true },
      { offset: 3 * BLOCK, length: BLOCK, zero: false },
      { offset: 4 * BLOCK, length: BLOCK, zero: false },
      { offset: 5 * BLOCK, length: 1234, zero: false },
    ]);
    await vault.close();
  });

  it("reports progress while writing and reading", async () => {
    const writes: WriteProgress[] = [];
    const total = ENTRIES.reduce((n, e) => n + e.data.length, 0);
    const { bytes } = await writeVault(ENTRIES, { totalBytes: total, onProgress: (p) => writes.push(p) });
    expect(writes.at(-1)).toMatchObject({ bytesDone: total, bytesTotal: total, entry: "firewall/work.json", entryBytesDone: 3 * BLOCK + 17, entryBytesTotal: 3 * BLOCK + 17 });
    expect(writes.every((p, i) => i === 0 || p.bytesDone > writes[i - 1]!.bytesDone)).toBe(true);
    expect(writes.every((p, i) => i === 0 || p.bytesWritten >= writes[i - 1]!.bytesWritten)).toBe(true);

    const vault = await openVault(bytes, PASSPHRASE, weak);
    const verifies: ReadProgress[] = [];
    const report = await vault.verify({ onProgress: (p) => verifies.push(p) });
    expect(verifies.at(-1)).toEqual({ bytesDone: report.bytesChecked, bytesTotal: report.bytesChecked });
    const reads: ReadProgress[] = [];
    await vault.writeVolumeTo("work/private", new MemorySink(), { onProgress: (p) => reads.push(p) });
    expect(reads.map((p) => p.bytesDone)).toEqual([1, 2, 3, 4, 5].map((b) => b * BLOCK).concat(5 * BLOCK + 1234));
    expect(reads.every((p) => p.bytesTotal === 5 * BLOCK + 1234)).toBe(true);
    await vault.close();
  });

  it("waits for a slow output (backpressure) and writes the same bytes", async () => {
    const slow = new MemorySink(1);
    const writer = await createVault({ output: slow, passphrase: PASSPHRASE, scrypt: TEST_KDF, weakKdfForTests: true, blockSize: BLOCK, now: FIXED_NOW });
    const data = noise("slow", 20 * BLOCK);
    await writer.addVolume("v", data.length, piecewise(data, 3000));
    await writer.finish();
    const vault = await openVault(slow.bytes(), PASSPHRASE, weak);
    expect((await readAll(vault, "v")).equals(data)).toBe(true);
    await vault.close();
  });

  describe("on disk", () => {
    let dir: string;
    beforeEach(() => (dir = mkdtempSync(path.join(os.tmpdir(), "qvm-vault-"))));
    afterEach(() => rmSync(dir, { recursive: true, force: true }));

    it("reads a vault file by path and by descriptor", async () => {
      const file = path.join(dir, "b.qvmb");
      const writer = await createVault({ output: createWriteStream(file), passphrase: PASSPHRASE, scrypt: TEST_KDF, weakKdfForTests: true, blockSize: BLOCK });
      const data = mixedVolume();
      await writer.addVolume("v", data.length, Readable.from([data]));
      const summary = await writer.finish();
      expect(statSync(file).size).toBe(summary.bytesWritten);
      expect((await verifyVault(file, PASSPHRASE, weak)).chunksChecked).toBe(summary.chunksWritten);
      const fd = openSync(file, "r");
      try {
        const vault = await openVault(fd, PASSPHRASE, weak);
        expect((await readAll(vault, "v")).equals(data)).toBe(true);
        await vault.close(); // does not close the caller's descriptor
        expect(fstatSync(fd).size).toBe(summary.bytesWritten); // still open
      } finally {
        closeSync(fd);
      }
    });

    it("says which file is missing", async () => {
      await expect(openVault(path.join(dir, "nope"), PASSPHRASE, weak)).rejects.toSatisfy((e) => isQvmError(e, "NOT_FOUND"));
    });
  });

  it("works with the default key parameters (N=2^17, r=8, p=1)", async () => {
    const sink = new MemorySink();
    const writer = await createVault({ output: sink, passphrase: PASSPHRASE, blockSize: BLOCK });
    await writer.addFile("f", Buffer.from("hello"));
    await writer.finish();
    const vault = await openVault(sink.bytes(), PASSPHRASE);
    expect(vault.info.scrypt).toEqual(DEFAULT_SCRYPT);
    expect((await vault.readFile("f")).toString()).toBe("hello");
    await vault.close();
  });
});

describe("vault writer refuses misuse", () => {
  const start = () => createVault({ output: new MemorySink(), passphrase: PASSPHRASE, scrypt: TEST_KDF, weakKdfForTests: true, blockSize: BLOCK });

  it("refuses weak or absurd parameters, an empty passphrase and odd block sizes", async () => {
    const bad = [
      { passphrase: PASSPHRASE, scrypt: TEST_KDF }, // weak without the test flag
      { passphrase: PASSPHRASE, scrypt: { logN: 23, r: 8, p: 1 } },
      { passphrase: PASSPHRASE, scrypt: { logN: 22, r: 8, p: 1 } }, // 4 GiB
      { passphrase: "", scrypt: TEST_KDF, weakKdfForTests: true },
      { passphrase: PASSPHRASE, scrypt: TEST_KDF, weakKdfForTests: true, blockSize: 5000 },
      { passphrase: PASSPHRASE, scrypt: TEST_KDF, weakKdfForTests: true, blockSize: 2048 },
    ];
    for (const opts of bad) await expect(createVault({ output: new MemorySink(), ...opts }), JSON.stringify(opts)).rejects.toSatisfy((e) => isQvmError(e, "INVALID_ARGUMENT"));
  });

  it("refuses bad and duplicate names without spoiling the backup", async () => {
    const w = await start();
    for (const name of ["", "../etc/passwd", "/abs", "a//b", ".hidden", "a/./b", "x".repeat(256), "sp ace", "a\nb"]) {
      await expect(w.addFile(name, Buffer.from("x")), name).rejects.toSatisfy((e) => isQvmError(e, "INVALID_ARGUMENT"));
    }
    await w.addFile("ok", Buffer.from("x"));
    await expect(w.addFile("ok", Buffer.from("y"))).rejects.toThrow(/already added/);
    await w.finish();
  });

  it("a stream shorter or longer than announced fails the backup, and later calls say so", async () => {
    for (const [announced, given] of [
      [10_000, 9_999],
      [10_000, 10_001],
    ] as const) {
      const w = await start();
      await expect(w.addVolume("v", announced, piecewise(noise("x", given)))).rejects.toThrow(/announced/);
      await expect(w.addFile("f", Buffer.from("x"))).rejects.toSatisfy((e) => isQvmError(e, "FAILED_PRECONDITION"));
      await expect(w.finish()).rejects.toThrow(/failed or was aborted/);
    }
  });

  it("takes one entry at a time", async () => {
    const w = await start();
    const first = w.addVolume("a", BLOCK, piecewise(noise("a", BLOCK)));
    await expect(w.addFile("b", Buffer.from("x"))).rejects.toThrow(/one entry at a time/);
    await first;
    await w.finish();
    await expect(w.addFile("c", Buffer.from("x"))).rejects.toThrow(/finished/);
  });

  it("reports a failing output as a QvmError, not a crash", async () => {
    const out = createWriteStream(path.join(os.tmpdir(), "qvm-vault-no-such-dir", "x"));
    const attempt = (async () => {
      const w = await createVault({ output: out, passphrase: PASSPHRASE, scrypt: TEST_KDF, weakKdfForTests: true, blockSize: BLOCK });
      await w.addVolume("v", 64 * BLOCK, piecewise(noise("v", 64 * BLOCK)));
      return w.finish();
    })();
    await expect(attempt).rejects.toSatisfy((e) => isQvmError(e, "STORAGE_FAILED") && /ENOENT/.test(e.message));
  });
});

describe("compression", () => {
  it("stores a block whose start does not compress as is, deflates one that does, and gives both back", async () => {
    const big = 1024 * 1024;
    const random = noise("r", big);
    const words = text("w", big);
    const { bytes } = await writeVault([{ kind: "volume", name: "v", data: Buffer.concat([random, words]) }], { blockSize: big });
    // The random block costs its size (stored as is), the text block a fraction of it.
    expect(bytes.length).toBeGreaterThan(big);
    expect(bytes.length).toBeLessThan(big + big / 4);
    const vault = await openVault(bytes, PASSPHRASE, weak);
    try {
      expect((await readAll(vault, "v")).equals(Buffer.concat([random, words]))).toBe(true);
    } finally {
      await vault.close();
    }
  });
});
