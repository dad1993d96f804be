// The key of an encrypted private volume (`encrypted=True`, docs/security.md "Domains encrypted
// at rest"). The volume is a qcow2 file with QEMU's built-in LUKS encryption; the LUKS secret is
// not the passphrase itself but
//
//     key = scrypt(passphrase, salt, N, r, p, 32 bytes)
//     LUKS passphrase = base64(key), 44 ASCII characters (QEMU's LUKS wants its secret as UTF-8)
//
// with salt and parameters in `private.key.json` beside the volume (not secret). Why scrypt in
// front of LUKS: LUKS in QEMU stretches with PBKDF2 (not memory-hard) and pays its iteration
// time at every open, and a start opens the volume three times (revision, pruning, the VMM).
// Here the one slow, memory-hard step runs once per start in qvmd, and the LUKS key slot is made
// with a short iteration time: guessing the passphrase still costs scrypt per guess, guessing
// the 256-bit key is hopeless. With the passphrase, stock tools unlock it (docs/security.md).
//
// The key lives in qvmd's memory only: in a VolumeKey, which never prints or serializes its
// bytes, and is wiped when its domain stops.
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { inspect } from "node:util";
import { z } from "zod";
import { QvmError } from "@qvm/protocol";
import { writeJsonAtomic } from "@qvm/images";
import { DEFAULT_SCRYPT, deriveMasterKey, scryptParamsProblem, type ScryptParams } from "../backup/vault-crypto.js";

export const KEY_FILE_FORMAT = "qvm-volume-key";
export const KEY_FILE_VERSION = 1;
const SALT_BYTES = 32;
/** The most a key file may ask: N=2^20, r=8 is 1 GiB and a few seconds per unlock. */
const MAX_KEY_LOG_N = 20;
/** The LUKS key slot's PBKDF2 time: the passphrase was stretched by scrypt already. */
export const LUKS_ITER_TIME_MS = 10;

export const keyFileSchema = z
  .object({
    format: z.literal(KEY_FILE_FORMAT),
    version: z.literal(KEY_FILE_VERSION),
    kdf: z.literal("scrypt"),
    logN: z.number().int(),
    r: z.number().int(),
    p: z.number().int(),
    /** base64 of 32 random bytes. */
    salt: z.string().regex(/^[A-Za-z0-9+/]{43}=$/),
  })
  .strict();
export type KeyFile = z.infer<typeof keyFileSchema>;

/** Fresh parameters for a new volume: the vault's scrypt cost, a new salt. */
export function newKeyFile(scrypt: ScryptParams = DEFAULT_SCRYPT): KeyFile {
  return { format: KEY_FILE_FORMAT, version: KEY_FILE_VERSION, kdf: "scrypt", ...scrypt, salt: randomBytes(SALT_BYTES).toString("base64") };
}

/** The key file's parameters, checked (the file sits on the data disk: bounded before scrypt runs). */
export function parseKeyFile(text: string, where: string, options: { weakKdfForTests?: boolean } = {}): KeyFile {
  let parsed: KeyFile;
  try {
    parsed = keyFileSchema.parse(JSON.parse(text));
  } catch (err) {
    throw new QvmError("CORRUPT_STATE", `${where} is not a qvm volume key file (${(err as Error).message.slice(0, 160)}); restore it from a backup: without it the volume cannot be unlocked`);
  }
  // Only what qvm writes: the file is on the data disk or in a backup, and each unlock runs
  // scrypt with it (the vault's wider bounds would let it ask 2 GiB and minutes per try).
  const minLogN = options.weakKdfForTests === true ? 10 : DEFAULT_SCRYPT.logN - 3;
  const problem =
    scryptParamsProblem(parsed, options) ??
    (parsed.logN < minLogN || parsed.logN > MAX_KEY_LOG_N || parsed.r !== DEFAULT_SCRYPT.r || parsed.p !== DEFAULT_SCRYPT.p
      ? `scrypt N=2^${parsed.logN} r=${parsed.r} p=${parsed.p} is not what qvm makes (N=2^${minLogN}…2^${MAX_KEY_LOG_N}, r=${DEFAULT_SCRYPT.r}, p=${DEFAULT_SCRYPT.p})`
      : undefined);
  if (problem) throw new QvmError("CORRUPT_STATE", `${where}: ${problem}`);
  return parsed;
}

export function readKeyFile(file: string, options: { weakKdfForTests?: boolean } = {}): KeyFile {
  if (!existsSync(file)) throw new QvmError("CORRUPT_STATE", `${file} is missing: the encrypted volume beside it cannot be unlocked without it; restore it from a backup`);
  return parseKeyFile(readFileSync(file, "utf8"), file, options);
}

export function writeKeyFile(file: string, params: KeyFile): void {
  writeJsonAtomic(file, params);
}

/** A volume key in memory. Its bytes never print, log or serialize; `wipe` zeroes them. */
export class VolumeKey {
  #bytes: Buffer;

  private constructor(bytes: Buffer) {
    this.#bytes = bytes;
  }

  /** scrypt of the passphrase under the key file's salt and parameters (0.4 s to 2 s of one core). */
  static async derive(passphrase: string, params: KeyFile): Promise<VolumeKey> {
    if (passphrase === "") throw new QvmError("INVALID_ARGUMENT", "the passphrase is empty");
    const salt = Buffer.from(params.salt, "base64");
    return new VolumeKey(await deriveMasterKey(passphrase, salt, params));
  }

  /** A random key: the volatile overlay of an encrypted domain gets a new one at every start. */
  static random(): VolumeKey {
    return new VolumeKey(randomBytes(32));
  }

  /**
   * The LUKS passphrase QEMU is given (`-object secret,file=`): the key in base64, as text, in a
   * new buffer the caller zeroes once written (encoded here without a JS string, which could not
   * be wiped).
   */
  base64(): Buffer {
    if (this.#bytes.length === 0) throw new Error("a wiped volume key was used");
    return base64Bytes(this.#bytes);
  }

  /** An independent copy, for work that may outlive this key's owner (wipe it after). */
  copy(): VolumeKey {
    if (this.#bytes.length === 0) throw new Error("a wiped volume key was copied");
    return new VolumeKey(Buffer.from(this.#bytes));
  }

  get wiped(): boolean {
    return this.#bytes.length === 0;
  }

  wipe(): void {
    this.#bytes.fill(0);
    this.#bytes = Buffer.alloc(0);
  }

  toJSON(): string {
    return "[volume key]";
  }

  toString(): string {
    return "[volume key]";
  }

  [inspect.custom](): string {
    return "[volume key]";
  }
}

const BASE64_ALPHABET = Buffer.from("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/");

/** Standard base64 (with padding) of `bytes`, into a fresh buffer. */
export function base64Bytes(bytes: Uint8Array): Buffer {
  const out = Buffer.alloc(Math.ceil(bytes.length / 3) * 4);
  let o = 0;
  for (let i = 0; i < bytes.length; i += 3) {
    const n = (bytes[i]! << 16) | ((bytes[i + 1] ?? 0) << 8) | (bytes[i + 2] ?? 0);
    out[o++] = BASE64_ALPHABET[(n >> 18) & 63]!;
    out[o++] = BASE64_ALPHABET[(n >> 12) & 63]!;
    out[o++] = i + 1 < bytes.length ? BASE64_ALPHABET[(n >> 6) & 63]! : 0x3d;
    out[o++] = i + 2 < bytes.length ? BASE64_ALPHABET[n & 63]! : 0x3d;
  }
  return out;
}
