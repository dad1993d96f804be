// Writing a vault as a stream: header, then one sealed frame per stored block as entries come
// in, then the sealed manifest and the trailer. Memory holds one block and the growing manifest,
// never the backup. Every block is
//   all zero                   → a "zero" block in the manifest, nothing in the file;
//   already stored (same keyed id, same kind) in this backup or an earlier one of its chain
//                              → a "data" block naming that chunk, or a "ref" to the earlier backup;
//   otherwise                  → deflated (level DEFAULT_COMPRESSION_LEVEL; kept as is when that
//                                does not make it smaller), sealed, appended as chunk n.
// The output stream is the caller's to choose (a file, a pipe to another host); the writer ends
// it in finish(). A backup that failed or was aborted has no trailer, so every reader calls it
// truncated: the caller should delete it.
import { once } from "node:events";
import { randomBytes as cryptoRandomBytes } from "node:crypto";
import type { Writable } from "node:stream";
import { finished } from "node:stream/promises";
import { promisify } from "node:util";
import { constants as zlibConstants, deflateRaw, deflateRawSync } from "node:zlib";
import { QvmError } from "@qvm/protocol";
import {
  backupKeys,
  blockId,
  chainKeys,
  DEFAULT_SCRYPT,
  deriveMasterKey,
  scryptParamsProblem,
  seal,
  TAG_SIZE,
  type BackupKeys,
  type ChainKeys,
  type ScryptParams,
} from "./vault-crypto.js";
import {
  BACKUP_ID_SIZE,
  chunkAd,
  DEFAULT_BLOCK_SIZE,
  encodeFrameHeader,
  encodeHeader,
  encodeTrailer,
  FLAG_DEFLATE,
  FRAME_HEADER_SIZE,
  FRAME_KIND,
  isValidBlockSize,
  manifestAd,
  manifestFrameSha256,
  MAX_BLOCK_SIZE,
  MIN_BLOCK_SIZE,
  SALT_SIZE,
  type FrameKind,
  type VaultHeader,
} from "./vault-format.js";
import {
  encodeManifestJson,
  entryNameProblem,
  frameKindOf,
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  MAX_ENTRIES,
  MAX_FILE_ENTRY_BYTES,
  MAX_MANIFEST_BYTES,
  MAX_VOLUME_BYTES,
  type EntryKind,
  type VaultBlock,
  type VaultEntry,
  type VaultManifest,
} from "./vault-manifest.js";
import { vaultInternals, type OpenedVault } from "./vault-reader.js";

const deflateRawAsync = promisify(deflateRaw);

/**
 * Deflating random or already-compressed data costs about 20 ms per MiB here, 15 times the rest
 * of a block's way (block id, seal, write), and gains nothing: a block of which SAMPLES pieces of
 * SAMPLE_BYTES, spread over it, each deflate to more than SAMPLE_MAX_RATIO of themselves is stored
 * as is. A block that shrinks only between the samples is stored larger than it could be, never
 * wrongly.
 */
const SAMPLES = 4;
/** Blocks prepared ahead of the one being written (each holds a block-sized copy). */
const IN_FLIGHT_BLOCKS = 4;

interface PreparedBlock {
  zero: boolean;
  plain: Buffer;
  /** The keyed block id (hex); "" for a zero block. */
  id: string;
  /** The deflated plaintext, when deflate was tried. */
  deflated: Buffer | undefined;
}
const SAMPLE_BYTES = 16 * 1024;
const SAMPLE_MAX_RATIO = 0.97;

function looksIncompressible(block: Buffer, level: number): boolean {
  if (block.length < 4 * SAMPLES * SAMPLE_BYTES) return false;
  const stride = Math.floor(block.length / SAMPLES);
  for (let i = 0; i < SAMPLES; i++) {
    const sample = block.subarray(i * stride, i * stride + SAMPLE_BYTES);
    if (deflateRawSync(sample, { level }).length <= SAMPLE_MAX_RATIO * SAMPLE_BYTES) return false;
  }
  return true;
}

/** Fastest deflate: backups are I/O-bound, and level 1 already takes most of what deflate can get from disk images. */
export const DEFAULT_COMPRESSION_LEVEL = zlibConstants.Z_BEST_SPEED;
/** The manifest is compressed once, and its block ids are most of it: worth the default level. */
const MANIFEST_COMPRESSION_LEVEL = zlibConstants.Z_DEFAULT_COMPRESSION;

export interface CreateVaultOptions {
  /** Where the vault goes. The writer ends it in finish() and destroys it on failure. */
  output: Writable;
  /** Required for a full backup; an incremental one inherits its parent's key instead. */
  passphrase?: string | Uint8Array;
  /**
   * An earlier backup, opened with the same passphrase (and with its own chain, so blocks of
   * older backups are found too): the new one reuses its salt, scrypt parameters and block size
   * and stores only blocks the chain does not have. Verify the parent first: what is referenced
   * is only as good as the parent's copy.
   */
  parent?: OpenedVault;
  /** scrypt cost for a full backup (default DEFAULT_SCRYPT). */
  scrypt?: ScryptParams;
  /** Plaintext bytes per block (default DEFAULT_BLOCK_SIZE; a power of two in 4 KiB…16 MiB). */
  blockSize?: number;
  compressionLevel?: number;
  /** Accept scrypt N down to 2^10. For unit tests only. */
  weakKdfForTests?: boolean;
  /** The total of the entries' sizes, when known, for progress estimates. */
  totalBytes?: number;
  onProgress?: (progress: WriteProgress) => void;
  now?: () => Date;
  randomBytes?: (size: number) => Buffer;
}

export interface WriteProgress {
  entry: string;
  entryBytesDone: number;
  entryBytesTotal: number;
  /** Plaintext bytes of all entries so far, and their total when `totalBytes` was given. */
  bytesDone: number;
  bytesTotal: number | undefined;
  /** Bytes written to the output so far. */
  bytesWritten: number;
}

export interface VaultSummary {
  backupId: string;
  parentId: string | null;
  entries: number;
  /** Blocks stored in this file (one chunk each). */
  chunksWritten: number;
  /** Blocks that name a chunk stored before: earlier in this file or in the chain. */
  blocksReused: number;
  /** Of those, the ones stored in an earlier backup of the chain ("ref" blocks). */
  blocksReferenced: number;
  /** All-zero blocks: nothing stored. */
  zeroBlocks: number;
  /** Plaintext bytes of all entries. */
  bytesIn: number;
  /** The vault's size. */
  bytesWritten: number;
  /** SHA-256 of the stored manifest frame: what a backup made on this one records. */
  manifestSha256: string;
}

/** Where a block with a given keyed id is stored: this backup (backup null) or an earlier one. */
interface StoredAt {
  backup: string | null;
  chunk: number;
}

const hex = (b: Uint8Array): string => Buffer.from(b).toString("hex");

/** Derives the key (or takes the parent's) and writes the header; add entries, then finish(). */
export async function createVault(options: CreateVaultOptions): Promise<VaultWriter> {
  // Listen before the first await: a file stream that fails to open reports it while the key is
  // being derived, and an 'error' without a listener would crash the process.
  const sink = new OutputSink(options.output);
  try {
    return await startVault(options, sink);
  } catch (err) {
    sink.destroy(); // as after any failure: no half-made vault is left open
    throw err;
  }
}

async function startVault(options: CreateVaultOptions, sink: OutputSink): Promise<VaultWriter> {
  const random = options.randomBytes ?? cryptoRandomBytes;
  let backupId = random(BACKUP_ID_SIZE);
  while (backupId.every((b) => b === 0)) backupId = random(BACKUP_ID_SIZE); // all zero means "no parent"
  let chain: ChainKeys;
  let header: Omit<VaultHeader, "bytes">;
  let parent: { header: VaultHeader; manifestSha256: Buffer } | null = null;
  if (options.parent !== undefined) {
    if (options.passphrase !== undefined || options.scrypt !== undefined) {
      throw new QvmError("INVALID_ARGUMENT", "an incremental backup inherits its parent's passphrase and scrypt parameters: give parent alone");
    }
    const p = vaultInternals(options.parent);
    if (options.blockSize !== undefined && options.blockSize !== p.header.blockSize) {
      throw new QvmError("INVALID_ARGUMENT", `an incremental backup keeps its parent's block size (${p.header.blockSize}), or no block would match`);
    }
    chain = p.chain;
    parent = p;
    header = { scrypt: p.header.scrypt, salt: p.header.salt, backupId, parentId: p.header.backupId, blockSize: p.header.blockSize, keyCheck: p.chain.keyCheck };
  } else {
    if (options.passphrase === undefined || options.passphrase.length === 0) throw new QvmError("INVALID_ARGUMENT", "a backup needs a non-empty passphrase");
    const scrypt = options.scrypt ?? DEFAULT_SCRYPT;
    const problem = scryptParamsProblem(scrypt, options);
    if (problem !== undefined) throw new QvmError("INVALID_ARGUMENT", `refusing backup key parameters: ${problem}`);
    const blockSize = options.blockSize ?? DEFAULT_BLOCK_SIZE;
    if (!isValidBlockSize(blockSize)) throw new QvmError("INVALID_ARGUMENT", `block size ${blockSize} is not a power of two in ${MIN_BLOCK_SIZE}…${MAX_BLOCK_SIZE}`);
    const salt = random(SALT_SIZE);
    chain = chainKeys(await deriveMasterKey(options.passphrase, salt, scrypt));
    header = { scrypt: { ...scrypt }, salt, backupId, parentId: null, blockSize, keyCheck: chain.keyCheck };
  }
  const writer = new VaultWriter(options, sink, { ...header, bytes: encodeHeader(header) }, chain, backupKeys(chain.master, backupId), parent);
  await writer.start();
  return writer;
}

export class VaultWriter {
  readonly backupId: string;
  private readonly blockSize: number;
  private readonly zero: Buffer;
  private readonly entries: VaultEntry[] = [];
  private readonly names = new Set<string>();
  private readonly chunkOffsets: number[] = [];
  /** kind:id → where that block is stored: this backup's chunks, then the chain's. */
  private readonly stored = new Map<string, StoredAt>();
  private failed: unknown;
  private busy = false;
  private done = false;
  private bytesDone = 0;
  private counts = { blocksReused: 0, blocksReferenced: 0, zeroBlocks: 0 };

  /** @internal Use createVault. */
  constructor(
    private readonly options: CreateVaultOptions,
    private readonly out: OutputSink,
    private readonly header: VaultHeader,
    private readonly chain: ChainKeys,
    private readonly keys: BackupKeys,
    private readonly parent: { header: VaultHeader; manifestSha256: Buffer } | null,
  ) {
    this.backupId = hex(header.backupId);
    this.blockSize = header.blockSize;
    this.zero = Buffer.alloc(this.blockSize);
    if (options.parent !== undefined) this.indexChain(options.parent);
  }

  /** @internal */
  async start(): Promise<void> {
    await this.run(() => this.out.write(this.header.bytes));
  }

  /** A small entry (metadata, configuration), given whole. */
  async addFile(name: string, bytes: Uint8Array): Promise<void> {
    if (bytes.length > MAX_FILE_ENTRY_BYTES) throw new QvmError("INVALID_ARGUMENT", `metadata entry "${name}" is ${bytes.length} bytes; the limit is ${MAX_FILE_ENTRY_BYTES}`);
    await this.addEntry(name, "file", bytes.length, [bytes]);
  }

  /** A volume: exactly `size` bytes from `data`, read block by block. */
  async addVolume(name: string, size: number, data: AsyncIterable<Uint8Array | string>): Promise<void> {
    await this.addEntry(name, "volume", size, data);
  }

  /** Seals the manifest, writes the trailer and ends the output. */
  async finish(): Promise<VaultSummary> {
    return this.run(async () => {
      const manifest: VaultManifest = {
        format: MANIFEST_FORMAT,
        version: MANIFEST_VERSION,
        backupId: this.backupId,
        createdAt: (this.options.now?.() ?? new Date()).toISOString(),
        blockSize: this.blockSize,
        chunkCount: this.chunkOffsets.length,
        chunkOffsets: this.chunkOffsets,
        parent: this.parent === null ? null : { backupId: hex(this.parent.header.backupId), manifestSha256: hex(this.parent.manifestSha256) },
        entries: this.entries,
      };
      const json = encodeManifestJson(manifest);
      if (json.length > MAX_MANIFEST_BYTES) {
        throw new QvmError("RESOURCE_EXHAUSTED", `the backup's manifest would be ${json.length} bytes, over the ${MAX_MANIFEST_BYTES} a reader accepts: use a larger block size or split the backup`);
      }
      const deflated = await deflateRawAsync(json, { level: MANIFEST_COMPRESSION_LEVEL });
      const [body, flags] = deflated.length < json.length ? [deflated, FLAG_DEFLATE] : [json, 0];
      const chunkCount = this.chunkOffsets.length;
      const frameHeader = encodeFrameHeader({ kind: FRAME_KIND.manifest, flags, index: chunkCount, backupId: this.idBytes(), payloadLength: body.length + TAG_SIZE });
      const payload = seal(this.keys.manifest, chunkCount, manifestAd(frameHeader, this.header), body);
      const manifestOffset = this.out.offset;
      await this.out.write(frameHeader);
      await this.out.write(payload);
      await this.out.write(encodeTrailer({ manifestOffset, manifestLength: FRAME_HEADER_SIZE + payload.length, chunkCount, backupId: this.idBytes() }));
      await this.out.end();
      this.done = true;
      return {
        backupId: this.backupId,
        parentId: this.parent === null ? null : hex(this.parent.header.backupId),
        entries: this.entries.length,
        chunksWritten: chunkCount,
        ...this.counts,
        bytesIn: this.bytesDone,
        bytesWritten: this.out.offset,
        manifestSha256: hex(manifestFrameSha256(Buffer.concat([frameHeader, payload]))),
      };
    });
  }

  /** Stops: the output is destroyed, the partial vault has no trailer. */
  abort(reason: unknown = new QvmError("FAILED_PRECONDITION", "the backup was aborted")): void {
    this.failed ??= reason;
    this.out.destroy();
  }

  private idBytes(): Buffer {
    return this.header.backupId;
  }

  /** Runs one operation at a time; the first failure destroys the output and poisons the writer. */
  private async run<T>(op: () => Promise<T>): Promise<T> {
    if (this.failed !== undefined) throw new QvmError("FAILED_PRECONDITION", "this backup writer failed or was aborted earlier; start a new backup", { cause: this.failed });
    if (this.done) throw new QvmError("FAILED_PRECONDITION", "this backup is finished; start a new one");
    if (this.busy) throw new QvmError("FAILED_PRECONDITION", "a backup writer takes one entry at a time: await each call");
    this.busy = true;
    try {
      return await op();
    } catch (err) {
      this.abort(err);
      throw err;
    } finally {
      this.busy = false;
    }
  }

  private async addEntry(name: string, kind: EntryKind, size: number, data: AsyncIterable<Uint8Array | string> | Iterable<Uint8Array>): Promise<void> {
    // Caller mistakes found before anything is written leave the writer usable.
    const nameProblem = entryNameProblem(name);
    if (nameProblem !== undefined) throw new QvmError("INVALID_ARGUMENT", `backup entry name "${name}" ${nameProblem}`);
    if (this.names.has(name)) throw new QvmError("INVALID_ARGUMENT", `backup entry "${name}" was already added`);
    if (this.entries.length >= MAX_ENTRIES) throw new QvmError("INVALID_ARGUMENT", `a backup holds at most ${MAX_ENTRIES} entries`);
    if (!Number.isSafeInteger(size) || size < 0 || size > MAX_VOLUME_BYTES) throw new QvmError("INVALID_ARGUMENT", `entry "${name}": size ${size} is not 0…${MAX_VOLUME_BYTES}`);
    await this.run(async () => {
      const entry: VaultEntry = { name, kind, size, blocks: [] };
      const frameKind = frameKindOf(kind);
      let block = Buffer.allocUnsafe(this.blockSize);
      let fill = 0;
      let seen = 0;
      let entryBytesDone = 0;
      // Blocks are prepared (zero check, id, deflate on the thread pool) up to IN_FLIGHT_BLOCKS
      // ahead and committed (dedup, seal, write) strictly in order, so deflate of the next
      // blocks overlaps the write of this one and uses more than one core.
      const inFlight: Promise<void>[] = [];
      let committed: Promise<void> = Promise.resolve();
      const commitInOrder = (prepared: Promise<PreparedBlock>, length: number): Promise<void> => {
        committed = committed.then(async () => {
          entry.blocks.push(await this.commitBlock(frameKind, await prepared));
          this.bytesDone += length;
          entryBytesDone += length;
          this.options.onProgress?.({
            entry: name,
            entryBytesDone,
            entryBytesTotal: size,
            bytesDone: this.bytesDone,
            bytesTotal: this.options.totalBytes,
            bytesWritten: this.out.offset,
          });
        });
        return committed;
      };
      const flush = async (length: number): Promise<void> => {
        const plain = block.subarray(0, length);
        block = Buffer.allocUnsafe(this.blockSize);
        const prepared = this.prepareBlock(frameKind, plain);
        // A failed preparation is reported by its commit, in order.
        prepared.catch(() => {});
        const done = commitInOrder(prepared, length);
        // Awaited below or by drain; after a failure the rest are only waited for.
        done.catch(() => {});
        inFlight.push(done);
        if (inFlight.length >= IN_FLIGHT_BLOCKS) await inFlight.shift();
      };
      const drain = async (): Promise<void> => {
        try {
          await committed;
        } finally {
          await Promise.allSettled(inFlight);
          inFlight.length = 0;
        }
      };
      for await (const piece of data) {
        if (typeof piece === "string") throw new QvmError("INVALID_ARGUMENT", `entry "${name}": the stream yields strings; give a byte stream (no setEncoding)`);
        seen += piece.length;
        if (seen > size) throw new QvmError("INVALID_ARGUMENT", `entry "${name}": the stream gave more than the ${size} bytes announced`);
        let at = 0;
        while (at < piece.length) {
          const n = Math.min(this.blockSize - fill, piece.length - at);
          block.set(piece.subarray(at, at + n), fill);
          fill += n;
          at += n;
          if (fill === this.blockSize) {
            await flush(fill);
            fill = 0;
          }
        }
      }
      if (seen !== size) {
        await drain();
        throw new QvmError("INVALID_ARGUMENT", `entry "${name}": the stream ended after ${seen} of the ${size} bytes announced`);
      }
      if (fill > 0) await flush(fill);
      await drain();
      this.names.add(name);
      this.entries.push(entry);
    });
  }

  /** A block's order-free work: the zero check, its id, and its deflate started on the thread pool. */
  private async prepareBlock(kind: FrameKind, plain: Buffer): Promise<PreparedBlock> {
    const length = plain.length;
    if (plain.equals(this.zero.subarray(0, length))) return { zero: true, plain, id: "", deflated: undefined };
    const id = hex(blockId(this.chain.chunkId, plain));
    // Already stored (in the chain or earlier in this backup): nothing to deflate.
    if (this.stored.has(`${kind}:${id}`)) return { zero: false, plain, id, deflated: undefined };
    const level = this.options.compressionLevel ?? DEFAULT_COMPRESSION_LEVEL;
    const deflated = looksIncompressible(plain, level) ? undefined : await deflateRawAsync(plain, { level });
    return { zero: false, plain, id, deflated };
  }

  /** One block, in order: zero, reused, or sealed and appended. */
  private async commitBlock(kind: FrameKind, prepared: PreparedBlock): Promise<VaultBlock> {
    const { plain, id } = prepared;
    const length = plain.length;
    if (prepared.zero) {
      this.counts.zeroBlocks++;
      return { type: "zero", length };
    }
    const key = `${kind}:${id}`;
    const at = this.stored.get(key);
    if (at !== undefined) {
      this.counts.blocksReused++;
      if (at.backup === null) return { type: "data", chunk: at.chunk, length, id };
      this.counts.blocksReferenced++;
      return { type: "ref", backup: at.backup, chunk: at.chunk, length, id };
    }
    // Stored as is when deflate does not help (encrypted or compressed data inside the volume),
    // so a frame never exceeds a block and its tag; a block whose samples do not shrink was not
    // deflated at all.
    const [body, flags] = prepared.deflated && prepared.deflated.length < length ? [prepared.deflated, FLAG_DEFLATE] : [plain, 0];
    const chunk = this.chunkOffsets.length;
    const frameHeader = encodeFrameHeader({ kind, flags, index: chunk, backupId: this.idBytes(), payloadLength: body.length + TAG_SIZE });
    const payload = seal(this.keys.encryption, chunk, chunkAd(frameHeader), body);
    this.chunkOffsets.push(this.out.offset);
    await this.out.write(frameHeader);
    await this.out.write(payload);
    this.stored.set(key, { backup: null, chunk });
    return { type: "data", chunk, length, id };
  }

  /** Every block the chain stores, nearest backup first (a nearer copy is as good and keeps chains short). */
  private indexChain(parent: OpenedVault): void {
    for (const v of [parent, ...parent.ancestors]) {
      for (const e of v.manifest.entries) {
        const kind = frameKindOf(e.kind);
        for (const b of e.blocks) {
          if (b.type === "zero") continue;
          const key = `${kind}:${b.id}`;
          if (this.stored.has(key)) continue;
          this.stored.set(key, b.type === "data" ? { backup: v.info.backupId, chunk: b.chunk } : { backup: b.backup, chunk: b.chunk });
        }
      }
    }
  }
}

/** The caller's output stream, with the offset written so far, its first error, and backpressure. */
class OutputSink {
  offset = 0;
  private error: Error | undefined;

  constructor(private readonly stream: Writable) {
    stream.on("error", (err) => (this.error ??= err));
  }

  /** Appends, waiting when the stream asks for it. */
  async write(bytes: Buffer): Promise<void> {
    if (this.error !== undefined || this.stream.destroyed) throw outputFailed(this.error);
    const more = this.stream.write(bytes);
    this.offset += bytes.length;
    if (more) return;
    // 'drain', or the stream's failure, whichever comes first (once() rejects on 'error').
    const ac = new AbortController();
    try {
      await Promise.race([
        once(this.stream, "drain", { signal: ac.signal }),
        once(this.stream, "close", { signal: ac.signal }).then(() => Promise.reject(outputFailed(this.error))),
      ]);
    } catch (err) {
      throw err instanceof QvmError ? err : outputFailed(err);
    } finally {
      ac.abort();
    }
  }

  async end(): Promise<void> {
    this.stream.end();
    // A duplex output's readable side is not ours to wait for.
    await finished(this.stream, { readable: false }).catch((err: unknown) => Promise.reject(outputFailed(err)));
  }

  destroy(): void {
    this.stream.destroy();
  }
}

function outputFailed(err: unknown): QvmError {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  const why = err instanceof Error ? err.message : "the output was closed";
  return new QvmError(code === "ENOSPC" ? "RESOURCE_EXHAUSTED" : "STORAGE_FAILED", `writing the backup failed: ${why}`, { cause: err });
}
