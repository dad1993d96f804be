// The encrypted backup file format ("vault"): a pure library, no daemon, no CLI. Write a backup
// with createVault (entries one at a time, streamed), check one with verifyVault, and read one
// back with openVault (verify, then extract). docs/backup-format.md specifies the bytes.
export {
  createVault,
  VaultWriter,
  DEFAULT_COMPRESSION_LEVEL,
  type CreateVaultOptions,
  type VaultSummary,
  type WriteProgress,
} from "./vault-writer.js";
export {
  openVault,
  verifyVault,
  OpenedVault,
  type EntryInfo,
  type OpenVaultOptions,
  type ReadBlock,
  type ReadOptions,
  type ReadProgress,
  type VaultChain,
  type VaultInfo,
  type VerifyReport,
} from "./vault-reader.js";
export type { VaultSource } from "./vault-file.js";
export { VaultError, isVaultError, VAULT_PROBLEMS, type VaultLocation, type VaultProblem } from "./vault-errors.js";
export {
  DEFAULT_SCRYPT,
  DEFAULT_SCRYPT_LOG_N,
  DEFAULT_SCRYPT_R,
  DEFAULT_SCRYPT_P,
  MIN_SCRYPT_LOG_N,
  MAX_SCRYPT_LOG_N,
  MAX_SCRYPT_R,
  MAX_SCRYPT_P,
  MAX_SCRYPT_MEMORY_BYTES,
  type ScryptParams,
} from "./vault-crypto.js";
export { DEFAULT_BLOCK_SIZE, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE, FORMAT_VERSION } from "./vault-format.js";
export {
  MAX_MANIFEST_BYTES,
  MAX_ENTRIES,
  MAX_ENTRY_NAME_LENGTH,
  MAX_FILE_ENTRY_BYTES,
  MAX_VOLUME_BYTES,
  MAX_CHAIN_DEPTH,
  type EntryKind,
  type VaultBlock,
  type VaultEntry,
  type VaultManifest,
} from "./vault-manifest.js";
