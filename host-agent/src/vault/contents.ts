// What a qvm backup holds, as vault entries (docs/backup-format.md is the container; this is the
// content): one metadata entry `qvm-backup.json` (the index below: each domain's store record and
// which volumes came with it), the policy files under `policy/NAME`, and the volumes under
// `volumes/DOMAIN/private` and `volumes/DOMAIN/root` (raw: what the guest sees; an encrypted
// domain's private volume is its qcow2 file as it is, ciphertext, with the key file's parameters
// in the index: it stays encrypted end to end, under its own passphrase as well as the vault's).
// The index is parsed strictly: a vault is authenticated, but only as far as its passphrase is secret.
import { z } from "zod";
import { domainRecordSchema } from "../model/domain.js";
import { keyFileSchema } from "../storage/volume-key.js";

export const INDEX_ENTRY = "qvm-backup.json";
export const INDEX_FORMAT = "qvm-backup";
export const INDEX_VERSION = 1;

export const policyEntry = (file: string): string => `policy/${file}`;
export const volumeEntry = (domain: string, volume: "private" | "root"): string => `volumes/${domain}/${volume}`;

/** qvm's own policy file, rewritten at every qvmd start: never backed up. */
export const SHIPPED_POLICY_FILE = "90-default.policy";
/** Policy file names qvmd reads (loader.ts): `0-9 a-z _ . -`, ending in .policy. */
export const POLICY_FILE_NAME = /^[0-9a-z_][0-9a-z_.-]*\.policy$/;

const volumeInfoSchema = z
  .object({
    /** Bytes the guest sees. */
    size: z.number().int().nonnegative(),
    /** The private volume of a running domain: the revision (internal snapshot) it was read from. */
    revision: z.string().max(64).optional(),
    /**
     * "qcow2-luks": the entry is an encrypted domain's private.qcow2 file, byte for byte (size:
     * the file's), restored as is; `key` is its private.key.json. Absent: raw, what the guest sees.
     */
    encoding: z.literal("qcow2-luks").optional(),
    key: keyFileSchema.optional(),
  })
  .strict()
  .refine((v) => (v.encoding === undefined) === (v.key === undefined), { message: "an encrypted volume lists its key parameters, and only it" });

export const backedUpDomainSchema = z
  .object({
    record: domainRecordSchema,
    /** Whether it ran while backed up (then its private volume is its last revision). */
    wasRunning: z.boolean(),
    volumes: z.object({ private: volumeInfoSchema.optional(), root: volumeInfoSchema.optional() }).strict(),
  })
  .strict();
export type BackedUpDomain = z.infer<typeof backedUpDomainSchema>;

export const backupIndexSchema = z
  .object({
    format: z.literal(INDEX_FORMAT),
    version: z.literal(INDEX_VERSION),
    createdAt: z.string(),
    domains: z.array(backedUpDomainSchema).max(10_000),
    policyFiles: z.array(z.string().regex(POLICY_FILE_NAME)).max(1000),
  })
  .strict();
export type BackupIndex = z.infer<typeof backupIndexSchema>;
