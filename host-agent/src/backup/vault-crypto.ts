// The vault's cryptography, and nothing else: the passphrase → master key derivation (scrypt),
// the subkeys (HKDF-SHA256), the AEAD that seals every chunk and the manifest (AES-256-GCM) and
// the keyed block ids that incremental backups deduplicate on (HMAC-SHA256). Node's built-in
// crypto only. docs/backup-format.md, "Keys", states the same byte for byte.
//
// Key hierarchy (why each key exists):
//   master      = scrypt(passphrase, salt, 32)          the one slow step; salt and parameters in
//                                                       the header. Shared by a whole incremental
//                                                       chain (a child copies its parent's salt).
//   chunk-id    = HKDF(master, "", "qvm-vault/1 chunk-id")      chain-wide, so equal blocks get
//                                                       equal ids across the chain (dedup).
//   key-check   = HKDF(master, "", "qvm-vault/1 key-check", 8)  stored in the header: tells a
//                                                       wrong passphrase from a damaged file.
//   encryption  = HKDF(master, backupId, "qvm-vault/1 chunk-encryption")  per backup,
//   manifest    = HKDF(master, backupId, "qvm-vault/1 manifest")          per backup.
// The per-backup keys are what makes a counter nonce safe (see nonceFor) even though every backup
// of a chain has the same master key, and what makes a chunk spliced in from another backup of
// the chain fail to open.
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, scrypt } from "node:crypto";

/** scrypt cost parameters, as stored in the header: N = 2^logN. */
export interface ScryptParams {
  logN: number;
  r: number;
  p: number;
}

// Defaults: N=2^17, r=8 uses 128 MiB and 0.4 to 1.3 s of one core (measured on the 2-core
// development VM, docs/backup-format.md, "Costs"): negligible next to a backup, and each
// passphrase guess costs an offline attacker the same.
export const DEFAULT_SCRYPT_LOG_N = 17;
export const DEFAULT_SCRYPT_R = 8;
export const DEFAULT_SCRYPT_P = 1;
export const DEFAULT_SCRYPT: Readonly<ScryptParams> = Object.freeze({ logN: DEFAULT_SCRYPT_LOG_N, r: DEFAULT_SCRYPT_R, p: DEFAULT_SCRYPT_P });

// The accepted ranges, on write and (above all) on read, where the header is hostile: below
// 2^14 the derivation is too cheap to slow down guessing, above these a crafted header could make
// the reader spend many GiB or minutes before it can say anything.
export const MIN_SCRYPT_LOG_N = 14;
export const MAX_SCRYPT_LOG_N = 22;
export const MAX_SCRYPT_R = 32;
export const MAX_SCRYPT_P = 16;
/** scrypt needs 128·N·r bytes; the ranges above alone would allow 16 GiB, so this caps it too. */
export const MAX_SCRYPT_MEMORY_BYTES = 2 * 1024 ** 3;
/** Only with `weakKdfForTests`: unit tests derive keys hundreds of times and need N=2^10 (3 ms). */
export const WEAK_KDF_MIN_LOG_N = 10;

export const MASTER_KEY_SIZE = 32;
export const SUBKEY_SIZE = 32;
export const KEY_CHECK_SIZE = 8;
export const NONCE_SIZE = 12;
export const TAG_SIZE = 16;
export const BLOCK_ID_SIZE = 32;
/** The AEAD: AES-256-GCM (docs/backup-format.md says why not ChaCha20-Poly1305). */
export const CIPHER = "aes-256-gcm";

const INFO_CHUNK_ID = "qvm-vault/1 chunk-id";
const INFO_KEY_CHECK = "qvm-vault/1 key-check";
const INFO_ENCRYPTION = "qvm-vault/1 chunk-encryption";
const INFO_MANIFEST = "qvm-vault/1 manifest";

/** Why these parameters are refused, or undefined when they are acceptable. */
export function scryptParamsProblem(params: ScryptParams, options: { weakKdfForTests?: boolean } = {}): string | undefined {
  const { logN, r, p } = params;
  const minLogN = options.weakKdfForTests === true ? WEAK_KDF_MIN_LOG_N : MIN_SCRYPT_LOG_N;
  if (!Number.isInteger(logN) || logN < minLogN || logN > MAX_SCRYPT_LOG_N) return `scrypt N=2^${logN} is outside 2^${minLogN}…2^${MAX_SCRYPT_LOG_N}`;
  if (!Number.isInteger(r) || r < 1 || r > MAX_SCRYPT_R) return `scrypt r=${r} is outside 1…${MAX_SCRYPT_R}`;
  if (!Number.isInteger(p) || p < 1 || p > MAX_SCRYPT_P) return `scrypt p=${p} is outside 1…${MAX_SCRYPT_P}`;
  if (scryptMemory(params) > MAX_SCRYPT_MEMORY_BYTES) return `scrypt N=2^${logN} r=${r} needs ${scryptMemory(params) / 1024 ** 2} MiB, more than ${MAX_SCRYPT_MEMORY_BYTES / 1024 ** 2} MiB`;
  return undefined;
}

function scryptMemory({ logN, r }: ScryptParams): number {
  return 128 * 2 ** logN * r;
}

/**
 * The passphrase as bytes: a string is NFC-normalized UTF-8, so the same passphrase typed on
 * two systems that compose accents differently gives the same key.
 */
export function passphraseBytes(passphrase: string | Uint8Array): Buffer {
  return typeof passphrase === "string" ? Buffer.from(passphrase.normalize("NFC"), "utf8") : Buffer.from(passphrase);
}

/** The one slow step. Runs on libuv's thread pool, so the event loop stays free. */
export function deriveMasterKey(passphrase: string | Uint8Array, salt: Uint8Array, params: ScryptParams): Promise<Buffer> {
  // maxmem: Node refuses when 128·N·r exceeds it (default 32 MiB, below our default's 128 MiB);
  // the slack covers scrypt's other, much smaller buffers (128·r·p).
  const maxmem = scryptMemory(params) + 64 * 1024 ** 2;
  return new Promise((resolve, reject) => {
    scrypt(passphraseBytes(passphrase), salt, MASTER_KEY_SIZE, { N: 2 ** params.logN, r: params.r, p: params.p, maxmem }, (err, key) =>
      err ? reject(err) : resolve(key),
    );
  });
}

function hkdf(master: Uint8Array, salt: Uint8Array, info: string, length: number): Buffer {
  return Buffer.from(hkdfSync("sha256", master, salt, info, length));
}

/** Keys shared by every backup of a chain (they depend on the master key alone). */
export interface ChainKeys {
  master: Buffer;
  chunkId: Buffer;
  keyCheck: Buffer;
}

/** Keys of one backup: they also depend on its random backup id. */
export interface BackupKeys {
  encryption: Buffer;
  manifest: Buffer;
}

export function chainKeys(master: Buffer): ChainKeys {
  return {
    master,
    chunkId: hkdf(master, Buffer.alloc(0), INFO_CHUNK_ID, SUBKEY_SIZE),
    keyCheck: hkdf(master, Buffer.alloc(0), INFO_KEY_CHECK, KEY_CHECK_SIZE),
  };
}

export function backupKeys(master: Buffer, backupId: Uint8Array): BackupKeys {
  return {
    encryption: hkdf(master, backupId, INFO_ENCRYPTION, SUBKEY_SIZE),
    manifest: hkdf(master, backupId, INFO_MANIFEST, SUBKEY_SIZE),
  };
}

/**
 * The nonce of frame `index`: 4 zero bytes, then the index as a big-endian u64. A counter, not
 * random: each (key, nonce) pair is used once because the chunk key is unique to one backup (HKDF
 * over its 128-bit random backup id) and, within the backup, indices are never repeated; the
 * manifest has a key of its own and is sealed once. Unlike random 96-bit nonces, a counter has
 * no birthday bound on the number of chunks.
 */
export function nonceFor(index: number): Buffer {
  const nonce = Buffer.alloc(NONCE_SIZE);
  nonce.writeBigUInt64BE(BigInt(index), NONCE_SIZE - 8);
  return nonce;
}

/** Encrypts and authenticates: returns ciphertext ‖ 16-byte tag. */
export function seal(key: Buffer, index: number, associatedData: Uint8Array, plaintext: Uint8Array): Buffer {
  const cipher = createCipheriv(CIPHER, key, nonceFor(index), { authTagLength: TAG_SIZE });
  cipher.setAAD(associatedData);
  return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
}

/** The plaintext, or undefined when the payload or its associated data is not authentic. */
export function unseal(key: Buffer, index: number, associatedData: Uint8Array, payload: Buffer): Buffer | undefined {
  if (payload.length < TAG_SIZE) return undefined;
  const decipher = createDecipheriv(CIPHER, key, nonceFor(index), { authTagLength: TAG_SIZE });
  decipher.setAAD(associatedData);
  decipher.setAuthTag(payload.subarray(payload.length - TAG_SIZE));
  const body = decipher.update(payload.subarray(0, payload.length - TAG_SIZE));
  try {
    return Buffer.concat([body, decipher.final()]);
  } catch {
    return undefined; // "Unsupported state or unable to authenticate data": the only failure here
  }
}

/**
 * The keyed id of a plaintext block: HMAC-SHA256 with the chain's chunk-id key. Keyed so that the
 * ids (inside the encrypted manifest anyway) reveal nothing about content to anyone without the
 * passphrase, e.g. whether a block equals a known file's.
 */
export function blockId(chunkIdKey: Buffer, plaintext: Uint8Array): Buffer {
  return createHmac("sha256", chunkIdKey).update(plaintext).digest();
}
