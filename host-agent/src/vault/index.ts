// Backups of domains ("the vault", issue 19): the chosen domains' records, the qrexec policy and
// their volumes into one encrypted file, and back. The file format is backup/ (docs/backup-format.md);
// this is what goes into it and how it comes out safely (docs/cli.md, "qvm backup").
export { backupDomains, type BackupDomainsOptions, type BackupDomainsResult, type VaultProgress } from "./backup-domains.js";
export { restoreBackup, verifyBackup, type BackupContents, type OpenBackupOptions, type RestoreBackupOptions, type RestoreBackupResult } from "./restore-backup.js";
