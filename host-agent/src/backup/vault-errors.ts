// What can be wrong with a backup file, named. Every failure to read or verify a vault is a
// VaultError: a QvmError (so the CLI, the admin API and the web shell map it like any other) that
// also carries `problem`, one word from the closed list below, and `where` it was found, so a
// caller (and a test) can tell a wrong passphrase from a damaged chunk without parsing messages.
// The message says what is wrong, where (file, offset, chunk, entry and block) and what to do.
import { QvmError, type QvmErrorCode } from "@qvm/protocol";

/**
 * The closed list of problems, each with its QvmError code and the advice appended to every
 * message. Codes: a file that is not a vault is a usage error (INVALID_ARGUMENT), a vault from a
 * newer qvm cannot be read here (FAILED_PRECONDITION), a wrong passphrase is PERMISSION_DENIED,
 * a missing parent is NOT_FOUND, and everything damaged or inconsistent is CORRUPT_STATE
 * (gRPC DATA_LOSS).
 */
export const VAULT_PROBLEMS = {
  "not-a-vault": { code: "INVALID_ARGUMENT", advice: "Check that you gave the right file: a qvm backup starts with the bytes QVMVAULT." },
  "unsupported-version": { code: "FAILED_PRECONDITION", advice: "Read it with the qvm release that wrote it, or a newer one." },
  "header-corrupt": { code: "CORRUPT_STATE", advice: "The file's first 128 bytes are damaged, so nothing in it can be read: use another copy of this backup." },
  "wrong-passphrase": { code: "PERMISSION_DENIED", advice: "Try again with the passphrase this backup was made with; the file itself looks intact." },
  truncated: { code: "CORRUPT_STATE", advice: "The backup was not finished or the copy was cut short: copy it again from its source, or make a new backup." },
  "trailer-corrupt": { code: "CORRUPT_STATE", advice: "The last 64 bytes are damaged; the data before them may be intact. Use another copy of this backup." },
  "trailing-data": { code: "CORRUPT_STATE", advice: "Something was appended to the file after the backup ended: use another copy of this backup." },
  "manifest-corrupt": { code: "CORRUPT_STATE", advice: "The backup's table of contents is damaged, so nothing in it can be trusted: use another copy of this backup." },
  "manifest-too-large": { code: "CORRUPT_STATE", advice: "No backup qvm writes has a manifest this large: the file is damaged or was crafted. Use another copy." },
  "manifest-invalid": { code: "CORRUPT_STATE", advice: "The manifest is authentic but inconsistent, which qvm never writes: the backup was made by a faulty or hostile tool. Do not restore it." },
  "chunk-corrupt": { code: "CORRUPT_STATE", advice: "That part of the file is damaged or was altered: restore from another copy of this backup." },
  "chunk-missing": { code: "CORRUPT_STATE", advice: "Part of the file was cut out: restore from another copy of this backup." },
  "chunk-duplicated": { code: "CORRUPT_STATE", advice: "Part of the file was repeated: restore from another copy of this backup." },
  "chunk-reordered": { code: "CORRUPT_STATE", advice: "Parts of the file were moved: restore from another copy of this backup." },
  "chunk-foreign": { code: "CORRUPT_STATE", advice: "A piece of a different backup was spliced into this file: restore from another copy of this backup." },
  "parent-missing": { code: "NOT_FOUND", advice: "This backup is incremental: give the earlier backup files of its chain too." },
  "parent-mismatch": { code: "CORRUPT_STATE", advice: "Give the exact earlier backup files this backup was made on; a re-made or altered one cannot be used." },
} as const satisfies Record<string, { code: QvmErrorCode; advice: string }>;

export type VaultProblem = keyof typeof VAULT_PROBLEMS;

/** Where in a vault a problem was found; every field that is known is filled. */
export interface VaultLocation {
  /** The file as the caller named it: a path, "fd N" or "buffer". */
  file?: string;
  /** Byte offset in the file. */
  offset?: number;
  /** Chunk index (the frame's position in the file's sequence of data chunks). */
  chunk?: number;
  /** The entry (metadata file or volume) whose data the chunk holds. */
  entry?: string;
  /** The block number inside that entry (block b covers bytes b·blockSize … (b+1)·blockSize-1). */
  block?: number;
}

export class VaultError extends QvmError {
  constructor(
    readonly problem: VaultProblem,
    /** What is wrong and where, without the advice (which is appended from VAULT_PROBLEMS). */
    what: string,
    readonly where: VaultLocation = {},
    options?: { cause?: unknown },
  ) {
    const prefix = where.file === undefined ? "backup" : `backup ${where.file}`;
    super(VAULT_PROBLEMS[problem].code, `${prefix}: ${what}. ${VAULT_PROBLEMS[problem].advice}`, options);
  }
}

export function isVaultError(err: unknown, problem?: VaultProblem): err is VaultError {
  return err instanceof VaultError && (problem === undefined || err.problem === problem);
}
