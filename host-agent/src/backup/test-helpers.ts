// Shared by the vault's unit tests: cheap keys, deterministic data, in-memory outputs and a
// one-call writer. Not part of the component's surface.
import { createHash } from "node:crypto";
import { Readable, Writable } from "node:stream";
import { deflateRawSync, inflateRawSync } from "node:zlib";
import { backupKeys, deriveMasterKey, seal, TAG_SIZE, unseal, type ScryptParams } from "./vault-crypto.js";
import {
  decodeFrameHeader,
  decodeHeader,
  decodeTrailer,
  encodeFrameHeader,
  encodeTrailer,
  FLAG_DEFLATE,
  FRAME_HEADER_SIZE,
  HEADER_SIZE,
  manifestAd,
  TRAILER_SIZE,
  type FrameHeader,
} from "./vault-format.js";
import type { OpenedVault } from "./vault-reader.js";
import { createVault, type CreateVaultOptions, type VaultSummary } from "./vault-writer.js";

/** N=2^10, r=1: well under a millisecond per derivation instead of about a second. Needs weakKdfForTests on both sides. */
export const TEST_KDF: ScryptParams = { logN: 10, r: 1, p: 1 };
export const PASSPHRASE = "correct horse battery staple";
export const BLOCK = 4096;
export const FIXED_NOW = (): Date => new Date("2026-01-02T03:04:05.000Z");

/** Deterministic, incompressible bytes: SHA-256 in counter mode over a seed. */
export function noise(seed: string, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0, at = 0; at < length; i++) {
    const d = createHash("sha256").update(`${seed}:${i}`).digest();
    at += d.copy(out, at);
  }
  return out;
}

/** Deterministic text that deflate shrinks well. */
export function text(seed: string, length: number): Buffer {
  const line = Buffer.from(`${seed}: the quick brown fox jumps over the lazy dog\n`);
  const out = Buffer.alloc(length);
  for (let at = 0; at < length; at += line.length) line.copy(out, at, 0, Math.min(line.length, length - at));
  return out;
}

/** Collects what is written (a file stand-in); `delayMs` makes it slow, to exercise backpressure. */
export class MemorySink extends Writable {
  private readonly parts: Buffer[] = [];
  constructor(private readonly delayMs = 0) {
    super({ highWaterMark: 1024 });
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.parts.push(Buffer.from(chunk));
    if (this.delayMs > 0) setTimeout(cb, this.delayMs);
    else cb();
  }
  bytes(): Buffer {
    return Buffer.concat(this.parts);
  }
}

/** Feeds a buffer as a stream in pieces of awkward sizes, so blocks straddle pieces. */
export function piecewise(data: Buffer, pieceSize = 1000): Readable {
  const pieces: Buffer[] = [];
  for (let at = 0; at < data.length; at += pieceSize) pieces.push(data.subarray(at, at + pieceSize));
  return Readable.from(pieces, { objectMode: false });
}

export type TestEntry = { kind: "file"; name: string; data: Buffer } | { kind: "volume"; name: string; data: Buffer };

export type TestVaultOptions = Partial<Omit<CreateVaultOptions, "output">>;

/** Writes a vault of these entries in memory with test keys; returns its bytes and the summary. */
export async function writeVault(entries: TestEntry[], options: TestVaultOptions = {}): Promise<{ bytes: Buffer; summary: VaultSummary }> {
  const sink = new MemorySink();
  const incremental = options.parent !== undefined;
  const writer = await createVault({
    output: sink,
    blockSize: incremental ? undefined : BLOCK,
    weakKdfForTests: true,
    now: FIXED_NOW,
    ...(incremental ? {} : { passphrase: PASSPHRASE, scrypt: TEST_KDF }),
    ...options,
  });
  for (const e of entries) {
    if (e.kind === "file") await writer.addFile(e.name, e.data);
    else await writer.addVolume(e.name, e.data.length, piecewise(e.data));
  }
  const summary = await writer.finish();
  return { bytes: sink.bytes(), summary };
}

/** Reads a whole entry back through the stream interface. */
export async function readAll(vault: OpenedVault, name: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const p of vault.streamVolume(name)) parts.push(p as Buffer);
  return Buffer.concat(parts);
}

/** The frames of a vault as { offset, length } (chunks in order, the manifest last), walked from the header. */
export function frameSpans(bytes: Buffer): { offset: number; length: number }[] {
  const spans: { offset: number; length: number }[] = [];
  for (let at = HEADER_SIZE; at < bytes.length - TRAILER_SIZE; ) {
    const fh = decodeFrameHeader(bytes.subarray(at, at + FRAME_HEADER_SIZE));
    if (typeof fh === "string") throw new Error(`test vault: no frame at ${at}: ${fh}`);
    spans.push({ offset: at, length: FRAME_HEADER_SIZE + fh.payloadLength });
    at += FRAME_HEADER_SIZE + fh.payloadLength;
  }
  return spans;
}

export function flip(bytes: Buffer, offset: number): Buffer {
  const copy = Buffer.from(bytes);
  copy[offset] = copy[offset]! ^ 0x01;
  return copy;
}


/**
 * Rewrites a vault's manifest as someone holding the passphrase could: decrypts it, lets `edit`
 * change the JSON, seals it again and writes a matching trailer. For tests of a reader facing an
 * authentic but hostile manifest.
 */
export async function resealManifest(bytes: Buffer, edit: (manifest: Record<string, unknown>) => unknown, options: { deflate?: boolean } = {}): Promise<Buffer> {
  const header = decodeHeader(bytes.subarray(0, HEADER_SIZE), "test", { weakKdfForTests: true });
  const trailer = decodeTrailer(bytes.subarray(bytes.length - TRAILER_SIZE))!;
  const master = await deriveMasterKey(PASSPHRASE, header.salt, header.scrypt);
  const keys = backupKeys(master, header.backupId);
  const frame = bytes.subarray(trailer.manifestOffset, trailer.manifestOffset + trailer.manifestLength);
  const fh = decodeFrameHeader(frame.subarray(0, FRAME_HEADER_SIZE)) as FrameHeader;
  const body = unseal(keys.manifest, trailer.chunkCount, manifestAd(fh.bytes, header), frame.subarray(FRAME_HEADER_SIZE))!;
  const json = (fh.flags & FLAG_DEFLATE) !== 0 ? inflateRawSync(body) : body;
  const result = edit(JSON.parse(json.toString()) as Record<string, unknown>);
  const plain = Buffer.isBuffer(result) ? result : Buffer.from(JSON.stringify(result));
  const edited = options.deflate === true ? deflateRawSync(plain) : plain;
  const newHeader = encodeFrameHeader({ ...fh, flags: options.deflate === true ? FLAG_DEFLATE : 0, payloadLength: edited.length + TAG_SIZE });
  const payload = seal(keys.manifest, trailer.chunkCount, manifestAd(newHeader, header), edited);
  const newTrailer = encodeTrailer({ ...trailer, manifestLength: FRAME_HEADER_SIZE + payload.length });
  return Buffer.concat([bytes.subarray(0, trailer.manifestOffset), newHeader, payload, newTrailer]);
}
