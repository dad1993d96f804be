// The manifest: the vault's table of contents, sealed at the end of the file. Its zod schema
// (strict: unknown fields are refused, every count and length is capped), its encoding (JSON,
// raw-deflated) and the consistency checks a schema cannot express, which also build the index a
// reader works from (which entry and block each chunk holds). Everything here treats the manifest
// as hostile even though it is authenticated: a faulty or malicious writer with the passphrase
// must not be able to make a reader overflow, loop or restore something the manifest did not say.
import { z } from "zod";
import { BLOCK_ID_SIZE, TAG_SIZE } from "./vault-crypto.js";
import { BACKUP_ID_SIZE, FRAME_HEADER_SIZE, FRAME_KIND, HEADER_SIZE, maxChunkPayload, type FrameKind } from "./vault-format.js";

/** Cap on the manifest, both as stored (sealed) and once inflated: a 1 TiB volume of non-zero 4 MiB blocks needs about 30 MiB. */
export const MAX_MANIFEST_BYTES = 64 * 1024 * 1024;
export const MAX_ENTRIES = 10_000;
export const MAX_ENTRY_NAME_LENGTH = 255;
/** Metadata entries are read whole into memory (readFile), so they are capped. */
export const MAX_FILE_ENTRY_BYTES = 64 * 1024 * 1024;
/** Volumes: 1 PiB keeps every offset an exact JavaScript number. */
export const MAX_VOLUME_BYTES = 2 ** 50;
/** How many earlier backups a chain may have (each one is an open file while reading). */
export const MAX_CHAIN_DEPTH = 1000;
export const MANIFEST_FORMAT = "qvm-vault";
export const MANIFEST_VERSION = 1;

/**
 * Entry names: segments separated by "/", each starting with a letter, digit or "_" (so never "."
 * or "..", never hidden), then letters, digits and . _ + @ = : -. A restorer may map them to
 * paths, so nothing that escapes a directory is representable.
 */
const NAME_SEGMENT = "[A-Za-z0-9_][A-Za-z0-9._+@=:-]*";
export const ENTRY_NAME_PATTERN = new RegExp(`^${NAME_SEGMENT}(?:/${NAME_SEGMENT})*$`);

export function entryNameProblem(name: string): string | undefined {
  if (name.length === 0 || name.length > MAX_ENTRY_NAME_LENGTH) return `must be 1 to ${MAX_ENTRY_NAME_LENGTH} characters long`;
  if (!ENTRY_NAME_PATTERN.test(name)) return "may contain only letters, digits and . _ + @ = : - in segments separated by /, each starting with a letter, digit or _";
  return undefined;
}

const hex = (bytes: number) => z.string().regex(new RegExp(`^[0-9a-f]{${bytes * 2}}$`));
const index = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const length = z.number().int().min(1).max(2 ** 31);

export const blockSchema = z.discriminatedUnion("type", [
  /** A chunk of this file. */
  z.strictObject({ type: z.literal("data"), chunk: index, length, id: hex(BLOCK_ID_SIZE) }),
  /** A chunk of an earlier backup of the chain (the one that stores it, not the one in between). */
  z.strictObject({ type: z.literal("ref"), backup: hex(BACKUP_ID_SIZE), chunk: index, length, id: hex(BLOCK_ID_SIZE) }),
  /** All zero: nothing stored. */
  z.strictObject({ type: z.literal("zero"), length }),
]);

export const entrySchema = z.strictObject({
  name: z.string().max(MAX_ENTRY_NAME_LENGTH).refine((n) => entryNameProblem(n) === undefined, { message: "invalid entry name" }),
  kind: z.enum(["file", "volume"]),
  size: z.number().int().min(0).max(MAX_VOLUME_BYTES),
  // The size fixes the block count; this bound only stops a crafted array before it is walked.
  blocks: z.array(blockSchema).max(MAX_MANIFEST_BYTES / 16),
});

export const manifestSchema = z.strictObject({
  format: z.literal(MANIFEST_FORMAT),
  version: z.literal(MANIFEST_VERSION),
  backupId: hex(BACKUP_ID_SIZE),
  createdAt: z.iso.datetime(),
  blockSize: z.number().int(),
  chunkCount: index,
  /** File offset of each data chunk's frame, by chunk index. */
  chunkOffsets: z.array(index).max(MAX_MANIFEST_BYTES / 2),
  parent: z.strictObject({ backupId: hex(BACKUP_ID_SIZE), manifestSha256: hex(32) }).nullable(),
  entries: z.array(entrySchema).max(MAX_ENTRIES),
});

export type VaultBlock = z.infer<typeof blockSchema>;
export type VaultEntry = z.infer<typeof entrySchema>;
export type VaultManifest = z.infer<typeof manifestSchema>;
export type EntryKind = VaultEntry["kind"];

export function frameKindOf(kind: EntryKind): FrameKind {
  return kind === "file" ? FRAME_KIND.file : FRAME_KIND.volume;
}

export function blockCount(size: number, blockSize: number): number {
  return Math.ceil(size / blockSize);
}

/** The plaintext length of block `b` of an entry of `size` bytes: full blocks, then the rest. */
export function blockLength(size: number, blockSize: number, b: number): number {
  return Math.min(blockSize, size - b * blockSize);
}

/** What a data chunk of this file holds, as the manifest says; the first block that uses it names it in messages. */
export interface ChunkInfo {
  kind: FrameKind;
  length: number;
  id: string;
  entry: string;
  block: number;
}

export interface ManifestIndex {
  /** By chunk index. */
  chunks: ChunkInfo[];
  entries: Map<string, VaultEntry>;
  /** Backup ids that ref blocks point into. */
  referencedBackups: Set<string>;
}

/** What the reader knows before the manifest is opened, which the manifest must agree with. */
export interface ManifestContext {
  backupId: string;
  parentId: string | null;
  blockSize: number;
  chunkCount: number;
  manifestOffset: number;
}

/**
 * Checks what the schema cannot: agreement with the header and trailer, the frame layout, the
 * block layout of each entry and what every chunk holds. Returns the index, or a sentence saying
 * what is inconsistent.
 */
export function indexManifest(m: VaultManifest, ctx: ManifestContext): ManifestIndex | string {
  if (m.backupId !== ctx.backupId) return `it names backup ${m.backupId}, the header ${ctx.backupId}`;
  if (m.blockSize !== ctx.blockSize) return `its block size ${m.blockSize} differs from the header's ${ctx.blockSize}`;
  if (m.chunkCount !== ctx.chunkCount) return `it counts ${m.chunkCount} chunks, the trailer ${ctx.chunkCount}`;
  if ((m.parent?.backupId ?? null) !== ctx.parentId) return `its parent ${m.parent?.backupId ?? "none"} differs from the header's ${ctx.parentId ?? "none"}`;
  if (m.chunkOffsets.length !== m.chunkCount) return `it lists ${m.chunkOffsets.length} chunk offsets for ${m.chunkCount} chunks`;
  // Frames are contiguous from the end of the header to the manifest, each between an empty
  // sealed block and a stored full one.
  const minFrame = FRAME_HEADER_SIZE + TAG_SIZE;
  const maxFrame = FRAME_HEADER_SIZE + maxChunkPayload(m.blockSize);
  const bounds = [...m.chunkOffsets, ctx.manifestOffset];
  if (bounds[0] !== HEADER_SIZE) return `its first frame is at offset ${bounds[0]}, not ${HEADER_SIZE}`;
  for (let c = 0; c < m.chunkCount; c++) {
    const size = bounds[c + 1]! - bounds[c]!;
    if (size < minFrame || size > maxFrame) return `chunk ${c}'s frame would be ${size} bytes long`;
  }

  const entries = new Map<string, VaultEntry>();
  const chunks: (ChunkInfo | undefined)[] = new Array<ChunkInfo | undefined>(m.chunkCount);
  const referencedBackups = new Set<string>();
  for (const e of m.entries) {
    if (entries.has(e.name)) return `entry "${e.name}" appears twice`;
    entries.set(e.name, e);
    if (e.kind === "file" && e.size > MAX_FILE_ENTRY_BYTES) return `metadata entry "${e.name}" is ${e.size} bytes, more than ${MAX_FILE_ENTRY_BYTES}`;
    const n = blockCount(e.size, m.blockSize);
    if (e.blocks.length !== n) return `entry "${e.name}" of ${e.size} bytes lists ${e.blocks.length} blocks, not ${n}`;
    const kind = frameKindOf(e.kind);
    for (let b = 0; b < n; b++) {
      const block = e.blocks[b]!;
      const where = `block ${b} of entry "${e.name}"`;
      if (block.length !== blockLength(e.size, m.blockSize, b)) return `${where} is ${block.length} bytes, not ${blockLength(e.size, m.blockSize, b)}`;
      if (block.type === "zero") continue;
      if (block.type === "ref") {
        if (m.parent === null) return `${where} refers to backup ${block.backup}, but this backup has no parent`;
        if (block.backup === m.backupId) return `${where} refers to its own backup as an earlier one`;
        referencedBackups.add(block.backup);
        continue;
      }
      if (block.chunk >= m.chunkCount) return `${where} names chunk ${block.chunk} of ${m.chunkCount}`;
      const seen = chunks[block.chunk];
      if (seen === undefined) chunks[block.chunk] = { kind, length: block.length, id: block.id, entry: e.name, block: b };
      else if (seen.kind !== kind || seen.length !== block.length || seen.id !== block.id) {
        return `${where} and block ${seen.block} of entry "${seen.entry}" share chunk ${block.chunk} but differ`;
      }
    }
  }
  const orphan = chunks.findIndex((c) => c === undefined);
  if (orphan >= 0) return `chunk ${orphan} belongs to no entry`;
  return { chunks: chunks as ChunkInfo[], entries, referencedBackups };
}

/** The manifest as stored before deflate and sealing: JSON in UTF-8. */
export function encodeManifestJson(m: VaultManifest): Buffer {
  return Buffer.from(JSON.stringify(m), "utf8");
}

/** The manifest, or why these bytes are not a valid one (JSON or schema). */
export function parseManifestJson(bytes: Buffer): VaultManifest | string {
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString("utf8"));
  } catch (err) {
    return `it is not JSON (${(err as Error).message})`;
  }
  const parsed = manifestSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return `${issue.path.join(".") || "(top)"}: ${issue.message}`;
  }
  return parsed.data;
}
