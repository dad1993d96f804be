// The vault's binary layout: the 128-byte header, the 40-byte frame header in front of every
// sealed chunk (and of the manifest), and the 64-byte trailer. Encoding and strict decoding only;
// no keys, no I/O. docs/backup-format.md is the byte-for-byte specification of the same.
//
//   file    = header · frame(chunk 0) · … · frame(chunk n-1) · frame(manifest) · trailer
//   frame   = frame header (40) · AES-256-GCM ciphertext · tag (16)
//
// All integers are big-endian. The header and frame headers carry a plain SHA-256 check of their
// own bytes: it is not security (the keys do that), it is what lets a reader say "this header is
// damaged" instead of "wrong passphrase", and "chunk 7's frame header is damaged" instead of a
// confusing failure further on.
import { createHash } from "node:crypto";
import { KEY_CHECK_SIZE, TAG_SIZE, type ScryptParams, scryptParamsProblem } from "./vault-crypto.js";
import { VaultError } from "./vault-errors.js";

export const FORMAT_VERSION = 1;
export const VAULT_MAGIC = Buffer.from("QVMVAULT", "latin1");
export const FRAME_MAGIC = Buffer.from("QVFR", "latin1");
export const TRAILER_MAGIC = Buffer.from("QVMVTRLR", "latin1");

export const HEADER_SIZE = 128;
export const FRAME_HEADER_SIZE = 40;
export const TRAILER_SIZE = 64;
export const SALT_SIZE = 32;
export const BACKUP_ID_SIZE = 16;

/** Plaintext bytes per block of an entry: the unit of compression, encryption and dedup. */
export const DEFAULT_BLOCK_SIZE = 4 * 1024 * 1024;
/** Block sizes are powers of two in this range (4 KiB keeps the manifest of a big volume small enough). */
export const MIN_BLOCK_SIZE = 4 * 1024;
export const MAX_BLOCK_SIZE = 16 * 1024 * 1024;

/** Identifiers stored in the header; only these exist in version 1. */
export const KDF_SCRYPT = 1;
export const CIPHER_AES_256_GCM = 1;
export const COMPRESSION_DEFLATE_RAW = 1;

/** A frame's kind, bound into its associated data: a chunk cannot be passed off as another kind. */
export const FRAME_KIND = { file: 1, volume: 2, manifest: 3 } as const;
export type FrameKind = (typeof FRAME_KIND)[keyof typeof FRAME_KIND];
/** Frame flag bit 0: the plaintext was compressed with raw deflate (RFC 1951) before sealing. */
export const FLAG_DEFLATE = 1;

// Header field offsets (docs/backup-format.md, "Header").
const H_MAGIC = 0;
const H_VERSION = 8;
const H_FLAGS = 10;
const H_KDF = 12;
const H_LOG_N = 13;
const H_R = 14;
const H_P = 15;
const H_SALT = 16;
const H_BACKUP_ID = 48;
const H_PARENT_ID = 64;
const H_BLOCK_SIZE = 80;
const H_CIPHER = 84;
const H_COMPRESSION = 85;
const H_RESERVED = 86;
const H_KEY_CHECK = 88;
const H_CHECKSUM = 96;

export interface VaultHeader {
  scrypt: ScryptParams;
  salt: Buffer;
  backupId: Buffer;
  /** The backup this one is incremental on, or null for a full backup. */
  parentId: Buffer | null;
  blockSize: number;
  keyCheck: Buffer;
  /** The 128 bytes as stored: their SHA-256 is bound into the manifest's associated data. */
  bytes: Buffer;
}

function sha256(...parts: Uint8Array[]): Buffer {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest();
}

export function encodeHeader(h: Omit<VaultHeader, "bytes">): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  VAULT_MAGIC.copy(b, H_MAGIC);
  b.writeUInt16BE(FORMAT_VERSION, H_VERSION);
  b.writeUInt16BE(0, H_FLAGS);
  b[H_KDF] = KDF_SCRYPT;
  b[H_LOG_N] = h.scrypt.logN;
  b[H_R] = h.scrypt.r;
  b[H_P] = h.scrypt.p;
  h.salt.copy(b, H_SALT);
  h.backupId.copy(b, H_BACKUP_ID);
  h.parentId?.copy(b, H_PARENT_ID); // all zero: no parent
  b.writeUInt32BE(h.blockSize, H_BLOCK_SIZE);
  b[H_CIPHER] = CIPHER_AES_256_GCM;
  b[H_COMPRESSION] = COMPRESSION_DEFLATE_RAW;
  h.keyCheck.copy(b, H_KEY_CHECK);
  sha256(b.subarray(0, H_CHECKSUM)).copy(b, H_CHECKSUM);
  return b;
}

/** True when the version-1 checksum holds once magic and version are put back: a damaged v1 header. */
function isDamagedV1Header(b: Buffer): boolean {
  if (b.length < HEADER_SIZE) return false;
  const copy = Buffer.from(b.subarray(0, HEADER_SIZE));
  VAULT_MAGIC.copy(copy, H_MAGIC);
  copy.writeUInt16BE(FORMAT_VERSION, H_VERSION);
  return sha256(copy.subarray(0, H_CHECKSUM)).equals(copy.subarray(H_CHECKSUM, HEADER_SIZE));
}

export function isValidBlockSize(n: number): boolean {
  return Number.isInteger(n) && n >= MIN_BLOCK_SIZE && n <= MAX_BLOCK_SIZE && (n & (n - 1)) === 0;
}

/**
 * Decodes the first bytes of a file (up to HEADER_SIZE of them; fewer when the file is shorter).
 * Throws a VaultError naming the problem: not a vault, a newer or unknown variant, damaged,
 * truncated. The checks run in the order that gives the truest name: the magic and version first
 * (a newer version may lay out the rest differently), but a v1 header whose checksum holds once
 * they are restored is called damaged, not foreign.
 */
export function decodeHeader(b: Buffer, file: string, options: { weakKdfForTests?: boolean } = {}): VaultHeader {
  const where = { file, offset: 0 };
  const magicPart = b.subarray(0, Math.min(b.length, VAULT_MAGIC.length));
  if (!magicPart.equals(VAULT_MAGIC.subarray(0, magicPart.length)) || b.length < VAULT_MAGIC.length) {
    if (magicPart.equals(VAULT_MAGIC.subarray(0, magicPart.length))) {
      throw new VaultError("truncated", `the file is only ${b.length} bytes long, less than a backup header (${HEADER_SIZE} bytes)`, where);
    }
    if (isDamagedV1Header(b)) throw new VaultError("header-corrupt", "the header's magic bytes (offset 0-7) are damaged", where);
    throw new VaultError("not-a-vault", "the file does not start with QVMVAULT, so it is not a qvm backup", where);
  }
  if (b.length >= H_VERSION + 2) {
    const version = b.readUInt16BE(H_VERSION);
    if (version !== FORMAT_VERSION) {
      if (isDamagedV1Header(b)) throw new VaultError("header-corrupt", "the header's version field (offset 8-9) is damaged", where);
      throw new VaultError("unsupported-version", `the file is backup format version ${version}; this qvm reads version ${FORMAT_VERSION}`, where);
    }
  }
  if (b.length < HEADER_SIZE) {
    throw new VaultError("truncated", `the file is only ${b.length} bytes long, less than a backup header (${HEADER_SIZE} bytes)`, where);
  }
  if (!sha256(b.subarray(0, H_CHECKSUM)).equals(b.subarray(H_CHECKSUM, HEADER_SIZE))) {
    throw new VaultError("header-corrupt", "the header (offset 0-127) does not match its checksum", where);
  }
  // From here the header is intact: anything refused was written so, by another tool or by hand.
  const unsupported = (what: string): VaultError => new VaultError("unsupported-version", what, where);
  if (b.readUInt16BE(H_FLAGS) !== 0 || b.readUInt16BE(H_RESERVED) !== 0) throw unsupported("the header sets flags this qvm does not know");
  if (b[H_KDF] !== KDF_SCRYPT) throw unsupported(`the header names key derivation ${b[H_KDF]}; this qvm knows only scrypt (1)`);
  if (b[H_CIPHER] !== CIPHER_AES_256_GCM) throw unsupported(`the header names cipher ${b[H_CIPHER]}; this qvm knows only AES-256-GCM (1)`);
  if (b[H_COMPRESSION] !== COMPRESSION_DEFLATE_RAW) throw unsupported(`the header names compression ${b[H_COMPRESSION]}; this qvm knows only raw deflate (1)`);
  const scrypt = { logN: b[H_LOG_N]!, r: b[H_R]!, p: b[H_P]! };
  const kdfProblem = scryptParamsProblem(scrypt, options);
  if (kdfProblem !== undefined) throw unsupported(`the header asks for ${kdfProblem}, which this qvm refuses`);
  const blockSize = b.readUInt32BE(H_BLOCK_SIZE);
  if (!isValidBlockSize(blockSize)) throw unsupported(`the header's block size ${blockSize} is not a power of two in ${MIN_BLOCK_SIZE}…${MAX_BLOCK_SIZE}`);
  const backupId = Buffer.from(b.subarray(H_BACKUP_ID, H_BACKUP_ID + BACKUP_ID_SIZE));
  if (isZero(backupId)) throw unsupported("the header's backup id is all zero");
  const parentId = Buffer.from(b.subarray(H_PARENT_ID, H_PARENT_ID + BACKUP_ID_SIZE));
  return {
    scrypt,
    salt: Buffer.from(b.subarray(H_SALT, H_SALT + SALT_SIZE)),
    backupId,
    parentId: isZero(parentId) ? null : parentId,
    blockSize,
    keyCheck: Buffer.from(b.subarray(H_KEY_CHECK, H_KEY_CHECK + KEY_CHECK_SIZE)),
    bytes: Buffer.from(b.subarray(0, HEADER_SIZE)),
  };
}

export function headerSha256(h: VaultHeader): Buffer {
  return sha256(h.bytes);
}

function isZero(b: Uint8Array): boolean {
  return b.every((x) => x === 0);
}

// ---- Frames -------------------------------------------------------------------------------

// Frame header field offsets (docs/backup-format.md, "Frames").
const F_MAGIC = 0;
const F_KIND = 4;
const F_FLAGS = 5;
const F_RESERVED = 6;
const F_INDEX = 8;
const F_BACKUP_ID = 16;
const F_LENGTH = 32;
const F_CHECK = 36;
/** The frame header bytes that are the chunk's associated data (all but the 4-byte check). */
export const FRAME_AD_SIZE = F_CHECK;

export interface FrameHeader {
  kind: FrameKind;
  flags: number;
  /** Chunk index (for the manifest frame: the number of data chunks). */
  index: number;
  backupId: Buffer;
  /** Bytes after the frame header: ciphertext and tag. */
  payloadLength: number;
  /** The 40 bytes as stored; the first FRAME_AD_SIZE are the associated data. */
  bytes: Buffer;
}

export function encodeFrameHeader(f: Omit<FrameHeader, "bytes">): Buffer {
  const b = Buffer.alloc(FRAME_HEADER_SIZE);
  FRAME_MAGIC.copy(b, F_MAGIC);
  b[F_KIND] = f.kind;
  b[F_FLAGS] = f.flags;
  b.writeBigUInt64BE(BigInt(f.index), F_INDEX);
  f.backupId.copy(b, F_BACKUP_ID);
  b.writeUInt32BE(f.payloadLength, F_LENGTH);
  sha256(b.subarray(0, F_CHECK)).copy(b, F_CHECK, 0, 4);
  return b;
}

/** The decoded frame header, or why these 40 bytes are not an intact one. */
export function decodeFrameHeader(b: Buffer): FrameHeader | string {
  if (b.length < FRAME_HEADER_SIZE) return "it is cut short";
  if (!b.subarray(F_MAGIC, F_MAGIC + 4).equals(FRAME_MAGIC)) return "it does not start with QVFR";
  if (!sha256(b.subarray(0, F_CHECK)).subarray(0, 4).equals(b.subarray(F_CHECK, F_CHECK + 4))) return "it does not match its checksum";
  const kind = b[F_KIND]!;
  if (kind !== FRAME_KIND.file && kind !== FRAME_KIND.volume && kind !== FRAME_KIND.manifest) return `its kind ${kind} is unknown`;
  const flags = b[F_FLAGS]!;
  if ((flags & ~FLAG_DEFLATE) !== 0 || b.readUInt16BE(F_RESERVED) !== 0) return `it sets unknown flags (${flags})`;
  const index = b.readBigUInt64BE(F_INDEX);
  if (index > BigInt(Number.MAX_SAFE_INTEGER)) return `its index ${index} is out of range`;
  const payloadLength = b.readUInt32BE(F_LENGTH);
  if (payloadLength < TAG_SIZE) return `its payload length ${payloadLength} is shorter than the tag`;
  return {
    kind,
    flags,
    index: Number(index),
    backupId: Buffer.from(b.subarray(F_BACKUP_ID, F_BACKUP_ID + BACKUP_ID_SIZE)),
    payloadLength,
    bytes: Buffer.from(b.subarray(0, FRAME_HEADER_SIZE)),
  };
}

/** The associated data of a data chunk: its frame header (kind, flags, index, backup id, length). */
export function chunkAd(frameHeader: Buffer): Buffer {
  return frameHeader.subarray(0, FRAME_AD_SIZE);
}

/** The manifest's associated data also binds the file header (its SHA-256), so no header byte can change unnoticed. */
export function manifestAd(frameHeader: Buffer, header: VaultHeader): Buffer {
  return Buffer.concat([frameHeader.subarray(0, FRAME_AD_SIZE), headerSha256(header)]);
}

/** The largest payload a data frame of this block size may declare: a stored block and its tag. */
export function maxChunkPayload(blockSize: number): number {
  return blockSize + TAG_SIZE;
}

// ---- Trailer ------------------------------------------------------------------------------

const T_MAGIC = 0;
const T_MANIFEST_OFFSET = 8;
const T_MANIFEST_LENGTH = 16;
const T_CHUNK_COUNT = 24;
const T_BACKUP_ID = 32;
const T_CHECKSUM = 48;

export interface VaultTrailer {
  /** Where the manifest frame starts, and its whole length (frame header included). */
  manifestOffset: number;
  manifestLength: number;
  chunkCount: number;
  backupId: Buffer;
}

export function encodeTrailer(t: VaultTrailer): Buffer {
  const b = Buffer.alloc(TRAILER_SIZE);
  TRAILER_MAGIC.copy(b, T_MAGIC);
  b.writeBigUInt64BE(BigInt(t.manifestOffset), T_MANIFEST_OFFSET);
  b.writeBigUInt64BE(BigInt(t.manifestLength), T_MANIFEST_LENGTH);
  b.writeBigUInt64BE(BigInt(t.chunkCount), T_CHUNK_COUNT);
  t.backupId.copy(b, T_BACKUP_ID);
  sha256(b.subarray(0, T_CHECKSUM)).copy(b, T_CHECKSUM, 0, TRAILER_SIZE - T_CHECKSUM);
  return b;
}

/** The trailer, or undefined when these bytes are not an intact one (wrong magic or checksum). */
export function decodeTrailer(b: Buffer): VaultTrailer | undefined {
  if (b.length !== TRAILER_SIZE || !b.subarray(T_MAGIC, T_MAGIC + 8).equals(TRAILER_MAGIC)) return undefined;
  if (!sha256(b.subarray(0, T_CHECKSUM)).subarray(0, TRAILER_SIZE - T_CHECKSUM).equals(b.subarray(T_CHECKSUM))) return undefined;
  const big = [T_MANIFEST_OFFSET, T_MANIFEST_LENGTH, T_CHUNK_COUNT].map((o) => b.readBigUInt64BE(o));
  if (big.some((v) => v > BigInt(Number.MAX_SAFE_INTEGER))) return undefined;
  const [manifestOffset, manifestLength, chunkCount] = big.map(Number) as [number, number, number];
  return { manifestOffset, manifestLength, chunkCount, backupId: Buffer.from(b.subarray(T_BACKUP_ID, T_BACKUP_ID + BACKUP_ID_SIZE)) };
}

/** The SHA-256 of a stored manifest frame (header and payload): what a child backup records of its parent. */
export function manifestFrameSha256(frame: Buffer): Buffer {
  return sha256(frame);
}
