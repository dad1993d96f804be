// Incremental backups: a chain of three where each writes only the blocks that changed, restores
// of the newest that give the exact bytes through references into both earlier files, and every
// broken link named (a missing file, a re-made parent, a damaged referenced chunk, a chunk of the
// parent spliced into the child).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { isQvmError } from "@qvm/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { isVaultError, openVault, verifyVault, type OpenedVault, type VaultSummary } from "./index.js";
import { BLOCK, flip, frameSpans, MemorySink, noise, PASSPHRASE, readAll, TEST_KDF, writeVault, type TestEntry } from "./test-helpers.js";
import { createVault } from "./vault-writer.js";

const weak = { weakKdfForTests: true };

function withBlock(data: Buffer, block: number, replacement: Buffer): Buffer {
  const copy = Buffer.from(data);
  replacement.copy(copy, block * BLOCK);
  return copy;
}

// Generation 1: a 16-block private volume, a root volume with a zero tail, a metadata file.
const private1 = noise("private", 16 * BLOCK + 100);
const root1 = Buffer.concat([noise("root", 6 * BLOCK), Buffer.alloc(2 * BLOCK)]);
const gen1: TestEntry[] = [
  { kind: "file", name: "qvm.json", data: Buffer.from('{"gen":1}') },
  { kind: "volume", name: "work/private", data: private1 },
  { kind: "volume", name: "work/root", data: root1 },
];
// Generation 2: one private block and the metadata changed.
const private2 = withBlock(private1, 3, noise("changed-3", BLOCK));
const gen2: TestEntry[] = [
  { kind: "file", name: "qvm.json", data: Buffer.from('{"gen":2}') },
  { kind: "volume", name: "work/private", data: private2 },
  { kind: "volume", name: "work/root", data: root1 },
];
// Generation 3: another private block, a root block, and a new volume whose first block is one
// of generation 1's private blocks (so it refers two backups back) and whose second is new.
const private3 = withBlock(private2, 10, noise("changed-10", BLOCK));
const root3 = withBlock(root1, 0, noise("root-changed-0", BLOCK));
const extra3 = Buffer.concat([private1.subarray(5 * BLOCK, 6 * BLOCK), noise("extra", BLOCK)]);
const gen3: TestEntry[] = [
  { kind: "file", name: "qvm.json", data: Buffer.from('{"gen":2}') },
  { kind: "volume", name: "work/private", data: private3 },
  { kind: "volume", name: "work/root", data: root3 },
  { kind: "volume", name: "new/vol", data: extra3 },
];

/** Deterministic "randomness" for a re-made backup that takes the same backup id and salt. */
function seeded(seed: string): (n: number) => Buffer {
  let i = 0;
  return (n) => noise(`${seed}:${i++}`, n);
}

describe("incremental vault chain", () => {
  let dir: string;
  const file = (name: string) => path.join(dir, name);
  const summaries: VaultSummary[] = [];

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "qvm-vault-chain-"));
    const v1 = await writeVault(gen1, { randomBytes: seeded("v1") });
    writeFileSync(file("v1"), v1.bytes);
    const p1 = await openVault(file("v1"), PASSPHRASE, weak);
    const v2 = await writeVault(gen2, { parent: p1 });
    writeFileSync(file("v2"), v2.bytes);
    const p2 = await openVault(file("v2"), PASSPHRASE, { ...weak, chain: [file("v1")] });
    const v3 = await writeVault(gen3, { parent: p2 });
    writeFileSync(file("v3"), v3.bytes);
    await p1.close();
    await p2.close();
    summaries.push(v1.summary, v2.summary, v3.summary);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("writes only the blocks that changed", () => {
    const [s1, s2, s3] = summaries as [VaultSummary, VaultSummary, VaultSummary];
    expect(s1).toMatchObject({ chunksWritten: 1 + 17 + 6, zeroBlocks: 2, blocksReferenced: 0 });
    // Private block 3 and the new metadata; everything else refers to v1.
    expect(s2).toMatchObject({ chunksWritten: 2, blocksReferenced: 16 + 6, zeroBlocks: 2, parentId: s1.backupId });
    // Private block 10, root block 0, new/vol block 1; qvm.json (v2's), new/vol block 0 (v1's) are references.
    expect(s3).toMatchObject({ chunksWritten: 3, blocksReferenced: 1 + 16 + 5 + 1, parentId: s2.backupId });
    const frame = 40 + BLOCK + 16;
    expect(s2.bytesWritten).toBeLessThan(128 + 2 * frame + 4096 + 64); // two frames and a small manifest
    expect(s3.bytesWritten).toBeLessThan(128 + 3 * frame + 4096 + 64);
    expect(s2.bytesWritten * 8).toBeLessThan(s1.bytesWritten);
  });

  it("shares the key of the chain but not the backup id", async () => {
    const heads = ["v1", "v2", "v3"].map((n) => readFileSync(file(n)).subarray(0, 128));
    expect(new Set(heads.map((h) => h.subarray(16, 48).toString("hex"))).size).toBe(1); // salt
    expect(new Set(heads.map((h) => h.subarray(48, 64).toString("hex"))).size).toBe(3); // backup id
    expect(heads[2]!.subarray(64, 80).toString("hex")).toBe(summaries[1]!.backupId); // v3's parent is v2
  });

  it("restores the newest generation byte for byte through both earlier files", async () => {
    // The chain as a list, in any order.
    const v3 = await openVault(file("v3"), PASSPHRASE, { ...weak, chain: [file("v1"), file("v2")] });
    try {
      expect(v3.ancestors.map((a) => a.info.backupId)).toEqual([summaries[1]!.backupId, summaries[0]!.backupId]);
      const report = await v3.verify();
      expect(report.chain).toEqual(summaries.map((s) => s.backupId).reverse());
      expect(await v3.readFile("qvm.json")).toEqual(Buffer.from('{"gen":2}'));
      expect((await readAll(v3, "work/private")).equals(private3)).toBe(true);
      expect((await readAll(v3, "work/root")).equals(root3)).toBe(true);
      expect((await readAll(v3, "new/vol")).equals(extra3)).toBe(true);
      // References name the backup that stores the block, not the one in between.
      const blocks = v3.manifest.entries.find((e) => e.name === "work/private")!.blocks;
      expect(blocks[0]).toMatchObject({ type: "ref", backup: summaries[0]!.backupId });
      expect(blocks[3]).toMatchObject({ type: "ref", backup: summaries[1]!.backupId });
      expect(blocks[10]).toMatchObject({ type: "data" });
      expect(v3.manifest.entries.find((e) => e.name === "new/vol")!.blocks[0]).toMatchObject({ type: "ref", backup: summaries[0]!.backupId });
    } finally {
      await v3.close();
    }
    // The chain as a resolver; the middle generation restores too.
    const byId = new Map(summaries.map((s, i) => [s.backupId, file(`v${i + 1}`)]));
    const v2 = await openVault(file("v2"), PASSPHRASE, { ...weak, chain: (id) => byId.get(id) });
    expect((await readAll(v2, "work/private")).equals(private2)).toBe(true);
    await v2.close();
  });

  it("lists an incremental backup alone, but will not verify or read references without its chain", async () => {
    const v3 = await openVault(file("v3"), PASSPHRASE, weak);
    try {
      expect(v3.entries().map((e) => e.name)).toEqual(["qvm.json", "work/private", "work/root", "new/vol"]);
      await expect(v3.verify()).rejects.toSatisfy((e) => isVaultError(e, "parent-missing") && isQvmError(e, "NOT_FOUND"));
      await expect(v3.readFile("qvm.json")).rejects.toThrow(/open it with the chain option/);
    } finally {
      await v3.close();
    }
    const err = await verifyVault(file("v3"), PASSPHRASE, { ...weak, chain: [file("v1")] }).catch((e: unknown) => e);
    expect(isVaultError(err, "parent-missing")).toBe(true);
    expect((err as Error).message).toContain(`incremental on backup ${summaries[1]!.backupId}, which was not given`);
  });

  it("refuses a re-made parent with the same id and key (its manifest hash differs)", async () => {
    const remade = await writeVault([{ kind: "file", name: "qvm.json", data: Buffer.from("other") }], { randomBytes: seeded("v1") });
    writeFileSync(file("v1-remade"), remade.bytes);
    expect(remade.summary.backupId).toBe(summaries[0]!.backupId);
    const err = await verifyVault(file("v3"), PASSPHRASE, { ...weak, chain: [file("v2"), file("v1-remade")] }).catch((e: unknown) => e);
    expect(isVaultError(err, "parent-mismatch")).toBe(true);
    expect((err as Error).message).toMatch(/v1-remade, given as an earlier backup of [0-9a-f]+, is not the one it was made on: its manifest's SHA-256/);
    // A full backup of other content given as the parent: a different backup id.
    const other = await writeVault(gen1);
    writeFileSync(file("other"), other.bytes);
    const err2 = await verifyVault(file("v2"), PASSPHRASE, { ...weak, chain: () => file("other") }).catch((e: unknown) => e);
    expect(isVaultError(err2, "parent-mismatch")).toBe(true);
  });

  it("finds damage in a referenced chunk of an ancestor, and names that file", async () => {
    const v1 = readFileSync(file("v1"));
    const chunk5 = frameSpans(v1)[1 + 5]!; // qvm.json is chunk 0, private block b is chunk 1+b
    writeFileSync(file("v1-damaged"), flip(v1, chunk5.offset + 500));
    const err = await verifyVault(file("v3"), PASSPHRASE, { ...weak, chain: [file("v2"), file("v1-damaged")] }).catch((e: unknown) => e);
    expect(isVaultError(err, "chunk-corrupt")).toBe(true);
    expect((err as Error).message).toMatch(/v1-damaged: chunk 6 \(block 5 of "work\/private".*fails authentication/);
  });

  it("a chunk of the parent spliced into the child is foreign, though both share the key", async () => {
    const v1 = readFileSync(file("v1"));
    const v2 = readFileSync(file("v2"));
    const [theirs, ours] = [frameSpans(v1)[4]!, frameSpans(v2)[1]!]; // both full incompressible private blocks
    expect(theirs.length).toBe(ours.length);
    const spliced = Buffer.concat([v2.subarray(0, ours.offset), v1.subarray(theirs.offset, theirs.offset + theirs.length), v2.subarray(ours.offset + ours.length)]);
    const err = await verifyVault(spliced, PASSPHRASE, { ...weak, chain: [file("v1")] }).catch((e: unknown) => e);
    expect(isVaultError(err, "chunk-foreign")).toBe(true);
    expect((err as Error).message).toMatch(new RegExp(`in the place of chunk 1 \\(block 3 of "work/private"\\), is chunk 4 of backup ${summaries[0]!.backupId}`));
  });

  it("inherits key and block size from the parent and refuses to be told otherwise", async () => {
    const p1: OpenedVault = await openVault(file("v1"), PASSPHRASE, weak);
    try {
      for (const extra of [{ passphrase: PASSPHRASE }, { scrypt: TEST_KDF }, { blockSize: 2 * BLOCK }]) {
        await expect(createVault({ output: new MemorySink(), parent: p1, ...extra })).rejects.toSatisfy((e) => isQvmError(e, "INVALID_ARGUMENT"));
      }
    } finally {
      await p1.close();
    }
  });
});
