// Opening, verifying and reading a vault. Every byte of the file is hostile until authenticated,
// and every failure is a VaultError that names the problem and where it is.
//
// openVault reads three things (header, trailer, manifest) and checks the passphrase; it does not
// walk the file. verify() then reads every chunk of this file and every chunk of the earlier
// backups that this one refers to, and checks each: its frame header, its AEAD tag, its length
// and its keyed block id against the authenticated manifest. Restoring is "verify, then extract"
// (nothing written until verify() has returned); the read methods check every chunk again as
// they go, so a file changed between the two cannot slip anything through.
import { timingSafeEqual } from "node:crypto";
import { Readable, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { promisify } from "node:util";
import { inflateRaw } from "node:zlib";
import { QvmError } from "@qvm/protocol";
import {
  backupKeys,
  blockId,
  chainKeys,
  deriveMasterKey,
  TAG_SIZE,
  unseal,
  type BackupKeys,
  type ChainKeys,
  type ScryptParams,
} from "./vault-crypto.js";
import { VaultError } from "./vault-errors.js";
import { openVaultFile, type VaultFile, type VaultSource } from "./vault-file.js";
import {
  chunkAd,
  decodeFrameHeader,
  decodeHeader,
  decodeTrailer,
  FLAG_DEFLATE,
  FRAME_HEADER_SIZE,
  FRAME_KIND,
  HEADER_SIZE,
  manifestAd,
  manifestFrameSha256,
  TRAILER_SIZE,
  type VaultHeader,
  type VaultTrailer,
} from "./vault-format.js";
import { diagnoseLayout } from "./vault-layout.js";
import {
  indexManifest,
  MAX_CHAIN_DEPTH,
  MAX_FILE_ENTRY_BYTES,
  MAX_MANIFEST_BYTES,
  parseManifestJson,
  type ChunkInfo,
  type EntryKind,
  type ManifestIndex,
  type VaultEntry,
  type VaultManifest,
} from "./vault-manifest.js";

const inflateRawAsync = promisify(inflateRaw);
/** Blocks readBlocks prepares beyond the one it hands out (4 MiB each by default). */
const READ_AHEAD = 4;

/**
 * The earlier backups of an incremental chain: a list of files (in any order; their headers say
 * which is which) or a function from a backup id (32 hex digits) to its file.
 */
export type VaultChain = readonly VaultSource[] | ((backupId: string) => VaultSource | undefined | Promise<VaultSource | undefined>);

export interface OpenVaultOptions {
  /** Needed to verify or read an incremental backup; without it only the manifest can be listed. */
  chain?: VaultChain;
  /** Accept scrypt N down to 2^10. For unit tests only: such a key is cheap to guess. */
  weakKdfForTests?: boolean;
}

export interface ReadProgress {
  bytesDone: number;
  bytesTotal: number;
}

export interface ReadOptions {
  onProgress?: (progress: ReadProgress) => void;
}

export interface VaultInfo {
  backupId: string;
  parentId: string | null;
  createdAt: string;
  blockSize: number;
  scrypt: ScryptParams;
  chunkCount: number;
  fileSize: number;
  /** SHA-256 of the stored manifest frame: what a backup made on this one records. */
  manifestSha256: string;
}

export interface EntryInfo {
  name: string;
  kind: EntryKind;
  size: number;
  blocks: number;
  /** Blocks whose data is in this file, in an earlier backup of the chain, or all zero. */
  storedBlocks: number;
  referencedBlocks: number;
  zeroBlocks: number;
}

export interface VerifyReport {
  backupId: string;
  /** The backups whose chunks were checked: this one first, then its ancestors, nearest first. */
  chain: string[];
  entries: number;
  chunksChecked: number;
  /** Plaintext bytes of the chunks checked. */
  bytesChecked: number;
}

/** One block of an entry as read back: `data` null means all zero (a restorer may leave a hole). */
export interface ReadBlock {
  offset: number;
  length: number;
  data: Buffer | null;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

/** What the writer of an incremental backup needs from its parent; never part of the package surface. */
export interface VaultInternals {
  header: VaultHeader;
  chain: ChainKeys;
  manifestSha256: Buffer;
}
const internals = new WeakMap<OpenedVault, VaultInternals>();

export function vaultInternals(vault: OpenedVault): VaultInternals {
  const v = internals.get(vault);
  if (v === undefined) throw new QvmError("INVALID_ARGUMENT", "not an opened backup");
  return v;
}

/**
 * Opens a vault: header, trailer and manifest are read and authenticated, the passphrase checked,
 * and (with `chain`) every earlier backup of an incremental chain opened and linked. Close it.
 */
export async function openVault(source: VaultSource, passphrase: string | Uint8Array, options: OpenVaultOptions = {}): Promise<OpenedVault> {
  const vault = await openOne(source, { passphrase }, options);
  try {
    if (vault.info.parentId !== null && options.chain !== undefined) await vault.linkChain(options.chain, options);
    return vault;
  } catch (err) {
    await vault.close();
    throw err;
  }
}

/** Opens and verifies everything (see OpenedVault.verify), then closes. */
export async function verifyVault(source: VaultSource, passphrase: string | Uint8Array, options: OpenVaultOptions & ReadOptions = {}): Promise<VerifyReport> {
  const vault = await openVault(source, passphrase, options);
  try {
    return await vault.verify(options);
  } finally {
    await vault.close();
  }
}

type KeySource = { passphrase: string | Uint8Array } | { master: Buffer; child: OpenedVault; expectedSha256: string };

async function openOne(source: VaultSource, keys: KeySource, options: OpenVaultOptions): Promise<OpenedVault> {
  const file = await openVaultFile(source);
  try {
    const header = decodeHeader(await file.read(0, Math.min(file.size, HEADER_SIZE)), file.name, options);
    if ("child" in keys) checkParentHeader(file, header, keys.child);
    // The structure first: it needs no key, and a damaged file should say so before a slow
    // key derivation (and regardless of the passphrase).
    const trailer = await locateManifest(file, header);
    const chain = chainKeys("master" in keys ? keys.master : await deriveMasterKey(keys.passphrase, header.salt, header.scrypt));
    if (!timingSafeEqual(chain.keyCheck, header.keyCheck)) {
      if ("child" in keys) throw parentMismatch(file, keys.child, "its key check does not match the chain's key");
      throw new VaultError("wrong-passphrase", "the passphrase does not open this backup (the header's key check does not match)", { file: file.name });
    }
    const keysOfBackup = backupKeys(chain.master, header.backupId);
    const { manifest, sha256 } = await readManifest(file, header, trailer, keysOfBackup);
    if ("child" in keys && hex(sha256) !== keys.expectedSha256) {
      throw parentMismatch(file, keys.child, `its manifest's SHA-256 is ${hex(sha256)}, but backup ${keys.child.info.backupId} was made on one with ${keys.expectedSha256}`);
    }
    const index = indexManifest(manifest, {
      backupId: hex(header.backupId),
      parentId: header.parentId === null ? null : hex(header.parentId),
      blockSize: header.blockSize,
      chunkCount: trailer.chunkCount,
      manifestOffset: trailer.manifestOffset,
    });
    if (typeof index === "string") throw new VaultError("manifest-invalid", `the manifest is inconsistent: ${index}`, { file: file.name, offset: trailer.manifestOffset });
    const vault = new OpenedVault(file, header, trailer, manifest, index, keysOfBackup, sha256);
    internals.set(vault, { header, chain, manifestSha256: sha256 });
    return vault;
  } catch (err) {
    await file.close();
    throw err;
  }
}

function parentMismatch(file: VaultFile, child: OpenedVault, why: string): VaultError {
  return new VaultError("parent-mismatch", `${file.name}, given as an earlier backup of ${child.info.backupId}, is not the one it was made on: ${why}`, { file: file.name });
}

/** An ancestor must be the very backup the child names, made with the same key. */
function checkParentHeader(file: VaultFile, header: VaultHeader, child: OpenedVault): void {
  const childHeader = vaultInternals(child).header;
  if (childHeader.parentId === null || !header.backupId.equals(childHeader.parentId)) {
    throw parentMismatch(file, child, `it is backup ${hex(header.backupId)}, not ${childHeader.parentId === null ? "(none)" : hex(childHeader.parentId)}`);
  }
  const same = header.salt.equals(childHeader.salt) && header.scrypt.logN === childHeader.scrypt.logN && header.scrypt.r === childHeader.scrypt.r && header.scrypt.p === childHeader.scrypt.p;
  if (!same) throw parentMismatch(file, child, "its salt or scrypt parameters differ, so it was not made with this chain's key");
}

/**
 * The trailer, once it is intact and fits the file. Otherwise the file is walked to name what is
 * wrong (truncated, a chunk missing, the trailer damaged …).
 */
async function locateManifest(file: VaultFile, header: VaultHeader): Promise<VaultTrailer> {
  const trailer = file.size >= HEADER_SIZE + TRAILER_SIZE ? decodeTrailer(await file.read(file.size - TRAILER_SIZE, TRAILER_SIZE)) : undefined;
  if (trailer !== undefined && trailer.manifestLength > FRAME_HEADER_SIZE + MAX_MANIFEST_BYTES + TAG_SIZE) {
    // Named before anything is read: the length is what a crafted trailer would abuse.
    throw new VaultError(
      "manifest-too-large",
      `the trailer says the manifest is ${trailer.manifestLength} bytes, more than the ${MAX_MANIFEST_BYTES} allowed`,
      { file: file.name, offset: file.size - TRAILER_SIZE },
    );
  }
  const fits =
    trailer !== undefined &&
    trailer.backupId.equals(header.backupId) &&
    trailer.manifestOffset >= HEADER_SIZE &&
    trailer.manifestLength >= FRAME_HEADER_SIZE + TAG_SIZE &&
    trailer.manifestOffset + trailer.manifestLength + TRAILER_SIZE === file.size;
  if (fits) return trailer;
  const problem = await diagnoseLayout(file, header);
  throw problem ?? new VaultError("trailer-corrupt", "the trailer does not describe this file", { file: file.name, offset: file.size - TRAILER_SIZE });
}

async function readManifest(file: VaultFile, header: VaultHeader, trailer: VaultTrailer, keys: BackupKeys): Promise<{ manifest: VaultManifest; sha256: Buffer }> {
  const where = { file: file.name, offset: trailer.manifestOffset };
  const frame = await file.read(trailer.manifestOffset, trailer.manifestLength);
  const fh = decodeFrameHeader(frame.subarray(0, FRAME_HEADER_SIZE));
  const why =
    typeof fh === "string"
      ? fh
      : fh.kind !== FRAME_KIND.manifest
        ? `it is a frame of kind ${fh.kind}, not the manifest`
        : !fh.backupId.equals(header.backupId)
          ? `it belongs to backup ${hex(fh.backupId)}`
          : fh.index !== trailer.chunkCount || FRAME_HEADER_SIZE + fh.payloadLength !== trailer.manifestLength
            ? "it disagrees with the trailer"
            : undefined;
  if (typeof fh === "string" || why !== undefined) {
    throw (await diagnoseLayout(file, header, { manifestOffset: trailer.manifestOffset })) ?? new VaultError("manifest-corrupt", `the manifest's frame header at offset ${trailer.manifestOffset} is damaged: ${why}`, where);
  }
  const frameHeader = frame.subarray(0, FRAME_HEADER_SIZE);
  const body = unseal(keys.manifest, trailer.chunkCount, manifestAd(frameHeader, header), frame.subarray(FRAME_HEADER_SIZE));
  if (body === undefined) {
    throw new VaultError("manifest-corrupt", `the manifest at offset ${trailer.manifestOffset} (${trailer.manifestLength} bytes) fails authentication: it or the header was altered`, where);
  }
  let json = body;
  if ((fh.flags & FLAG_DEFLATE) !== 0) {
    try {
      json = await inflateRawAsync(body, { maxOutputLength: MAX_MANIFEST_BYTES });
    } catch (err) {
      const tooLarge = (err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE";
      throw tooLarge
        ? new VaultError("manifest-too-large", `the manifest inflates to more than ${MAX_MANIFEST_BYTES} bytes`, where)
        : new VaultError("manifest-invalid", `the manifest is authentic but does not inflate (${(err as Error).message})`, where);
    }
  }
  const manifest = parseManifestJson(json);
  if (typeof manifest === "string") throw new VaultError("manifest-invalid", `the manifest is authentic but invalid: ${manifest}`, where);
  return { manifest, sha256: manifestFrameSha256(frame) };
}

export class OpenedVault {
  readonly info: VaultInfo;
  private chainLinks: readonly OpenedVault[] = [];
  private closed = false;
  /** Only the vault the caller opened closes the chain's files. */
  private ownsAncestors = false;

  /** @internal Use openVault. */
  constructor(
    private readonly file: VaultFile,
    private readonly header: VaultHeader,
    private readonly trailer: VaultTrailer,
    readonly manifest: VaultManifest,
    private readonly index: ManifestIndex,
    private readonly keys: BackupKeys,
    manifestSha256: Buffer,
  ) {
    this.info = {
      backupId: manifest.backupId,
      parentId: manifest.parent?.backupId ?? null,
      createdAt: manifest.createdAt,
      blockSize: manifest.blockSize,
      scrypt: { ...header.scrypt },
      chunkCount: manifest.chunkCount,
      fileSize: file.size,
      manifestSha256: hex(manifestSha256),
    };
  }

  /** Earlier backups of the chain, nearest first; empty for a full backup or when no chain was given. */
  get ancestors(): readonly OpenedVault[] {
    return this.chainLinks;
  }

  get fileName(): string {
    return this.file.name;
  }

  entries(): EntryInfo[] {
    return this.manifest.entries.map((e) => ({
      name: e.name,
      kind: e.kind,
      size: e.size,
      blocks: e.blocks.length,
      storedBlocks: e.blocks.filter((b) => b.type === "data").length,
      referencedBlocks: e.blocks.filter((b) => b.type === "ref").length,
      zeroBlocks: e.blocks.filter((b) => b.type === "zero").length,
    }));
  }

  entry(name: string): VaultEntry {
    const e = this.index.entries.get(name);
    if (e === undefined) throw new QvmError("NOT_FOUND", `backup ${this.file.name} has no entry "${name}"; its entries are listed by entries()`);
    return e;
  }

  /**
   * Reads and checks every chunk of this file, then every chunk of an earlier backup that this
   * one refers to. Throws the first problem found; returns only when all of it can be restored.
   */
  async verify(options: ReadOptions = {}): Promise<VerifyReport> {
    this.requireChain();
    const refs = this.referencedChunks();
    let bytesTotal = this.index.chunks.reduce((n, c) => n + c.length, 0);
    for (const [anc, chunks] of refs) for (const c of chunks) bytesTotal += anc.index.chunks[c]!.length;
    let bytesDone = 0;
    let chunksChecked = 0;
    const step = (length: number): void => {
      bytesDone += length;
      chunksChecked++;
      options.onProgress?.({ bytesDone, bytesTotal });
    };
    for (let c = 0; c < this.index.chunks.length; c++) step((await this.readChunk(c)).length);
    for (const [anc, chunks] of refs) for (const c of chunks) step((await anc.readChunk(c)).length);
    return { backupId: this.info.backupId, chain: [this.info.backupId, ...this.ancestors.map((a) => a.info.backupId)], entries: this.manifest.entries.length, chunksChecked, bytesChecked: bytesDone };
  }

  /** A metadata entry's bytes (checked). */
  async readFile(name: string, options: ReadOptions = {}): Promise<Buffer> {
    const e = this.entry(name);
    if (e.kind !== "file" || e.size > MAX_FILE_ENTRY_BYTES) throw new QvmError("INVALID_ARGUMENT", `entry "${name}" is a volume: read it with streamVolume or readBlocks`);
    const parts: Buffer[] = [];
    for await (const b of this.readBlocks(name, options)) parts.push(b.data ?? Buffer.alloc(b.length));
    return Buffer.concat(parts, e.size);
  }

  /**
   * An entry's blocks in order, each checked; zero blocks come as `data: null`. Up to
   * READ_AHEAD blocks after the one being handed out are read, opened and inflated meanwhile
   * (inflate runs on the thread pool), and handed out in order: the first bad block is still
   * the error, and nothing after it is yielded.
   */
  async *readBlocks(name: string, options: ReadOptions = {}): AsyncGenerator<ReadBlock> {
    const e = this.entry(name);
    if (e.blocks.some((b) => b.type === "ref")) this.requireChain();
    const read = async (b: number): Promise<Buffer | null> => {
      const block = e.blocks[b]!;
      if (block.type === "data") return this.readChunk(block.chunk);
      if (block.type === "ref") return this.ancestor(block.backup).readChunk(block.chunk);
      return null;
    };
    const ahead: Array<Promise<Buffer | null>> = [];
    let queued = 0;
    let bytesDone = 0;
    for (let b = 0; b < e.blocks.length; b++) {
      while (queued < e.blocks.length && queued <= b + READ_AHEAD) {
        const p = read(queued++);
        p.catch(() => {}); // awaited in order below; a consumer that stops early leaves it settled
        ahead.push(p);
      }
      const block = e.blocks[b]!;
      const data = await ahead.shift()!;
      bytesDone += block.length;
      yield { offset: b * this.info.blockSize, length: block.length, data };
      options.onProgress?.({ bytesDone, bytesTotal: e.size });
    }
  }

  /** An entry's plaintext as a stream (zero blocks as zeros). Verify first to write nothing from a damaged backup. */
  streamVolume(name: string, options: ReadOptions = {}): Readable {
    this.entry(name); // a wrong name fails here, not in the stream
    const blocks = this.readBlocks(name, options);
    return Readable.from(
      (async function* () {
        for await (const b of blocks) yield b.data ?? Buffer.alloc(b.length);
      })(),
      { objectMode: false },
    );
  }

  async writeVolumeTo(name: string, out: Writable, options: ReadOptions = {}): Promise<void> {
    await pipeline(this.streamVolume(name, options), out);
  }

  /** Closes this file and, for the vault the caller opened, those of its chain. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.file.close();
    if (this.ownsAncestors) for (const a of this.ancestors) await a.close();
  }

  /** @internal Opens and links the earlier backups, nearest first, checking each link. */
  async linkChain(chain: VaultChain, options: OpenVaultOptions): Promise<void> {
    const resolve = typeof chain === "function" ? chain : await chainIndex(chain, options);
    const master = vaultInternals(this).chain.master;
    const opened: OpenedVault[] = [];
    this.chainLinks = opened;
    this.ownsAncestors = true;
    const seen = new Set([this.info.backupId]);
    let child: OpenedVault = this;
    while (child.manifest.parent !== null) {
      const { backupId, manifestSha256 } = child.manifest.parent;
      if (seen.has(backupId) || opened.length >= MAX_CHAIN_DEPTH) {
        throw new VaultError("parent-mismatch", `the chain of ${this.info.backupId} loops or is longer than ${MAX_CHAIN_DEPTH} backups at ${backupId}`, { file: child.file.name });
      }
      seen.add(backupId);
      const source = await resolve(backupId);
      if (source === undefined) {
        throw new VaultError("parent-missing", `backup ${child.info.backupId} is incremental on backup ${backupId}, which was not given`, { file: child.file.name });
      }
      const parent = await openOne(source, { master, child, expectedSha256: manifestSha256 }, options);
      opened.push(parent);
      child = parent;
    }
    // Each backup's references must point into its own ancestors, at a chunk holding that block.
    for (let i = 0; i < opened.length; i++) opened[i]!.chainLinks = opened.slice(i + 1);
    for (const v of [this, ...opened]) v.checkReferences();
  }

  private checkReferences(): void {
    for (const e of this.manifest.entries) {
      e.blocks.forEach((block, b) => {
        if (block.type !== "ref") return;
        const target = this.ancestors.find((a) => a.info.backupId === block.backup);
        const info = target?.index.chunks[block.chunk];
        const why =
          target === undefined
            ? `backup ${block.backup} is not in its chain`
            : info === undefined
              ? `backup ${block.backup} has no chunk ${block.chunk}`
              : info.id !== block.id || info.length !== block.length || info.kind !== (e.kind === "file" ? FRAME_KIND.file : FRAME_KIND.volume)
                ? `chunk ${block.chunk} of backup ${block.backup} holds other data`
                : undefined;
        if (why !== undefined) {
          throw new VaultError("manifest-invalid", `block ${b} of "${e.name}" refers to an earlier backup's chunk, but ${why}`, { file: this.file.name, entry: e.name, block: b });
        }
      });
    }
  }

  private requireChain(): void {
    // A backup made on a parent but reusing nothing from it reads on its own.
    if (this.index.referencedBackups.size > 0 && this.ancestors.length === 0) {
      throw new VaultError("parent-missing", `backup ${this.info.backupId} is incremental on backup ${this.info.parentId}; open it with the chain option`, { file: this.file.name });
    }
  }

  private ancestor(backupId: string): OpenedVault {
    const a = this.ancestors.find((x) => x.info.backupId === backupId);
    if (a === undefined) throw new VaultError("parent-missing", `backup ${backupId}, which this one refers to, is not open`, { file: this.file.name });
    return a;
  }

  /** For each ancestor, the distinct chunks this backup's ref blocks read from it, in file order. */
  private referencedChunks(): [OpenedVault, number[]][] {
    const byBackup = new Map<string, Set<number>>();
    for (const e of this.manifest.entries) {
      for (const b of e.blocks) if (b.type === "ref") byBackup.set(b.backup, (byBackup.get(b.backup) ?? new Set()).add(b.chunk));
    }
    return [...byBackup].map(([id, set]) => [this.ancestor(id), [...set].sort((x, y) => x - y)]);
  }

  private locate(chunk: number): { entry: string; block: number } | undefined {
    const info = this.index.chunks[chunk];
    return info === undefined ? undefined : { entry: info.entry, block: info.block };
  }

  /** Chunk `c` of this file, read and checked against the manifest. */
  private async readChunk(c: number): Promise<Buffer> {
    const info: ChunkInfo = this.index.chunks[c]!;
    const offset = this.manifest.chunkOffsets[c]!;
    const end = c + 1 < this.manifest.chunkCount ? this.manifest.chunkOffsets[c + 1]! : this.trailer.manifestOffset;
    const where = { file: this.file.name, offset, chunk: c, entry: info.entry, block: info.block };
    const name = `chunk ${c} (block ${info.block} of "${info.entry}", bytes ${info.block * this.info.blockSize}…${info.block * this.info.blockSize + info.length - 1})`;
    const frame = await this.file.read(offset, end - offset);
    const fh = decodeFrameHeader(frame.subarray(0, FRAME_HEADER_SIZE));
    const why =
      typeof fh === "string"
        ? fh
        : !fh.backupId.equals(this.header.backupId) || fh.index !== c
          ? `it holds chunk ${fh.index} of backup ${hex(fh.backupId)}`
          : fh.kind !== info.kind || FRAME_HEADER_SIZE + fh.payloadLength !== end - offset
            ? "its kind or length disagrees with the manifest"
            : undefined;
    if (why !== undefined || typeof fh === "string") {
      // Walk the file to name it (moved, repeated, missing, foreign); else it is this header.
      const named = await diagnoseLayout(this.file, this.header, { locate: (k) => this.locate(k), manifestOffset: this.trailer.manifestOffset });
      throw named ?? new VaultError("chunk-corrupt", `the frame header of ${name} at offset ${offset} is damaged: ${why}`, where);
    }
    const body = unseal(this.keys.encryption, c, chunkAd(frame.subarray(0, FRAME_HEADER_SIZE)), frame.subarray(FRAME_HEADER_SIZE));
    if (body === undefined) throw new VaultError("chunk-corrupt", `${name} at offset ${offset} fails authentication: its bytes were damaged or altered`, where);
    let plain = body;
    if ((fh.flags & FLAG_DEFLATE) !== 0) {
      try {
        plain = await inflateRawAsync(body, { maxOutputLength: this.info.blockSize });
      } catch (err) {
        throw new VaultError("chunk-corrupt", `${name} at offset ${offset} is authentic but does not inflate (${(err as Error).message})`, where);
      }
    }
    if (plain.length !== info.length || hex(blockId(vaultInternals(this).chain.chunkId, plain)) !== info.id) {
      throw new VaultError("chunk-corrupt", `${name} at offset ${offset} is authentic but its content is not the block the manifest lists`, where);
    }
    return plain;
  }
}

/** A resolver over a list of files: each one's header says which backup it is. */
async function chainIndex(sources: readonly VaultSource[], options: OpenVaultOptions): Promise<(id: string) => VaultSource | undefined> {
  const byId = new Map<string, VaultSource>();
  for (const source of sources) {
    const file = await openVaultFile(source);
    try {
      const header = decodeHeader(await file.read(0, Math.min(file.size, HEADER_SIZE)), file.name, options);
      byId.set(hex(header.backupId), source);
    } finally {
      await file.close();
    }
  }
  return (id) => byId.get(id);
}
