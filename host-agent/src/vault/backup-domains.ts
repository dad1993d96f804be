// `qvm backup create`: chosen domains' records, the policy files and the domains' volumes, into
// one vault (docs/backup-format.md). A running domain is read from a consistent state, never its
// live disk: its private volume's last revision (the internal snapshot taken before its start)
// and, for a TemplateVM or StandaloneVM, its root.img (never written while it runs: its changes
// go to root-dirty.qcow2 until it stops). A halted domain: its volumes as they are.
import { closeSync, createWriteStream, existsSync, fsyncSync, openSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import path from "node:path";
import { QvmError } from "@qvm/protocol";
import { fsyncDir } from "@qvm/images";
import { createVault, openVault, type OpenedVault, type ScryptParams } from "../backup/index.js";
import type { DomainRecord } from "../model/domain.js";
import { REVISION_PREFIX, type VolumeStore } from "../storage/volumes.js";
import { imageInfo, listSnapshots, type Snapshot } from "../storage/qemu-img.js";
import { readKeyFile, type VolumeKey } from "../storage/volume-key.js";
import { INDEX_ENTRY, INDEX_FORMAT, INDEX_VERSION, POLICY_FILE_NAME, SHIPPED_POLICY_FILE, policyEntry, volumeEntry, type BackedUpDomain, type BackupIndex } from "./contents.js";
import { openEncryptedRevision, openFileCopy, openQcow2, openRaw, removeStaleScratch, type RawVolume } from "./volume-io.js";


/** Where a backup or restore is, for a progress bar: bytes of volume data (plaintext) done of the total. */
export interface VaultProgress {
  phase: "verify" | "read" | "write";
  /** "work:private" while a volume is handled; "" otherwise. */
  item: string;
  bytesDone: number;
  bytesTotal: number;
}

export interface BackupDomainsOptions {
  /** qvmd's data directory: scratch files go to DATA/tmp, on the volumes' disk. */
  dataDir: string;
  store: { get(name: string): DomainRecord | undefined };
  volumes: VolumeStore;
  policyDir: string;
  names: readonly string[];
  /** Also the root volume of TemplateVMs and StandaloneVMs (AppVMs have none of their own). */
  includeRoot: boolean;
  /** The new vault's path; it must not exist. */
  output: string;
  passphrase: string;
  /** An earlier backup (and its own chain) this one is incremental on, opened with `passphrase`. */
  incrementalFrom?: { file: string; chain: readonly string[] };
  isRunning: (name: string) => boolean;
  /** A running encrypted domain's private volume key, which qvmd holds while it runs (none: unknown). */
  volumeKey?: (name: string) => VolumeKey | undefined;
  /** Runs `fn` holding the domain's lock (qvmd's per-domain mutex); none in unit tests. */
  withLock?: <T>(name: string, fn: () => Promise<T>) => Promise<T>;
  onProgress?: (p: VaultProgress) => void;
  /** Things the user should know ("work is running: backed up as of its last start …"). */
  onNote?: (message: string) => void;
  scrypt?: ScryptParams;
  /** Stops the backup (between reads) when aborted: the client went away. */
  signal?: AbortSignal;
  /** Cheap keys, for unit tests only. */
  weakKdfForTests?: boolean;
}

export interface BackupDomainsResult {
  file: string;
  backupId: string;
  parentId: string | null;
  domains: Array<{ name: string; class: string; volumes: string[]; revision: string }>;
  policyFiles: string[];
  /** Plaintext bytes of all entries, and the vault's size. */
  bytesIn: number;
  bytesWritten: number;
  notes: string[];
}

interface PlannedVolume {
  domain: string;
  volume: "private" | "root";
  /** Estimated size, for the progress total (a revision's exact size is known once it is read). */
  size: number;
  open: () => Promise<RawVolume>;
  /** Its entry in the index, whose size is set to what was read. */
  listed: { size: number };
}

/** fsync of the file and of its directory entry. */
function syncToDisk(file: string): void {
  const fd = openSync(file, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  fsyncDir(path.dirname(file));
}

/** The newest revision of a running domain's private volume: the state it started from. */
function lastRevision(name: string, snapshots: readonly Snapshot[]): string {
  const revision = snapshots.map((s) => s.name).filter((n) => n.startsWith(REVISION_PREFIX)).sort().at(-1);
  if (!revision) {
    throw new QvmError("FAILED_PRECONDITION", `${name} is running and its private volume keeps no revision (revisions_to_keep 0), so there is no consistent state to read: shut it down first (\`qvm shutdown --wait ${name}\`)`);
  }
  return revision;
}

/**
 * An encrypted domain's private volume: its qcow2 file as it is, ciphertext (qvmd needs no key
 * for a halted one). A running one's live file is not consistent: its last revision is copied,
 * still encrypted under the same key, through the key qvmd holds while it runs.
 */
function planEncryptedPrivate(o: BackupDomainsOptions, entry: BackedUpDomain, running: boolean, note: (m: string) => void, lock: <T>(name: string, fn: () => Promise<T>) => Promise<T>): PlannedVolume {
  const name = entry.record.name;
  const file = o.volumes.files(name).private;
  const key = readKeyFile(o.volumes.files(name).key, { weakKdfForTests: o.weakKdfForTests });
  const cantRead = (): QvmError =>
    new QvmError("FAILED_PRECONDITION", `${name} is encrypted and running, and qvmd does not hold its key (it was started before qvmd last restarted): shut it down to back it up (\`qvm shutdown --wait ${name}\`)`);
  if (running && !o.volumeKey?.(name)) throw cantRead();
  const priv: BackedUpDomain["volumes"]["private"] & object = { size: statSync(file).size, encoding: "qcow2-luks", key };
  entry.volumes.private = priv;
  // Under the domain's lock, the volume and its key file are read as one state (a start, revert,
  // resize or passphrase change would otherwise rewrite the file, or its key slots, meanwhile):
  // a halted one's file is copied out to scratch, a running one's revision re-encrypted there.
  const open = (): Promise<RawVolume> =>
    lock(name, async () => {
      const nowRunning = o.isRunning(name);
      entry.wasRunning = nowRunning;
      delete priv.revision;
      priv.key = readKeyFile(o.volumes.files(name).key, { weakKdfForTests: o.weakKdfForTests });
      if (!nowRunning) return openFileCopy(o.dataDir, file);
      const held = o.volumeKey?.(name)?.copy(); // the domain may stop meanwhile, wiping its own
      if (!held) throw cantRead();
      try {
        priv.revision = lastRevision(name, await listSnapshots(file));
        note(`${name} is running: backed up as of its last start (revision ${priv.revision}), still encrypted under its own passphrase`);
        return await openEncryptedRevision(o.dataDir, file, priv.revision, held);
      } finally {
        held.wipe();
      }
    });
  return { domain: name, volume: "private", size: priv.size, open, listed: priv };
}

export async function backupDomains(o: BackupDomainsOptions): Promise<BackupDomainsResult> {
  const lock = o.withLock ?? (<T>(_name: string, fn: () => Promise<T>) => fn());
  if (!path.isAbsolute(o.output)) throw new QvmError("INVALID_ARGUMENT", `the backup file must be an absolute path, not ${JSON.stringify(o.output)}`);
  if (o.names.length === 0) throw new QvmError("INVALID_ARGUMENT", "name at least one domain to back up");
  if (new Set(o.names).size !== o.names.length) throw new QvmError("INVALID_ARGUMENT", "a domain is named twice");
  if (existsSync(o.output)) throw new QvmError("ALREADY_EXISTS", `${o.output} exists: choose another file name or remove it`);
  removeStaleScratch(o.dataDir);
  const notes: string[] = [];
  const note = (m: string): void => {
    notes.push(m);
    o.onNote?.(m);
  };

  // Plan everything before the first byte is written: an unknown domain fails here.
  const domains: BackedUpDomain[] = [];
  const planned: PlannedVolume[] = [];
  for (const name of o.names) {
    const record = o.store.get(name);
    if (!record) throw new QvmError("NOT_FOUND", `no domain named "${name}"; \`qvm ls\` lists them`);
    if (record.autoCleanup) throw new QvmError("FAILED_PRECONDITION", `${name} is a disposable made for one command: nothing of it is meant to outlive it`);
    const running = o.isRunning(name);
    const entry: BackedUpDomain = { record: structuredClone(record), wasRunning: running, volumes: {} };
    delete entry.record.vmmUid; // this host's uid allocation, meaningless elsewhere
    if (record.class !== "DispVM" && o.volumes.isEncrypted(name)) {
      planned.push(planEncryptedPrivate(o, entry, running, note, lock));
    } else if (record.class !== "DispVM") {
      const file = o.volumes.files(name).private;
      const info = await imageInfo(file, "qcow2");
      if (running) lastRevision(name, info.snapshots); // fails early when there is none
      const priv: { size: number; revision?: string } = { size: info.virtualSize };
      entry.volumes.private = priv;
      // Under the domain's lock: it cannot start or stop (taking or dropping revisions) while its
      // state is chosen and copied out; the copy then belongs to the backup alone.
      const openPrivate = (): Promise<RawVolume> =>
        lock(name, async () => {
          const nowRunning = o.isRunning(name);
          entry.wasRunning = nowRunning;
          delete priv.revision;
          if (nowRunning) {
            priv.revision = lastRevision(name, await listSnapshots(file));
            note(`${name} is running: backed up as of its last start (revision ${priv.revision})`);
          }
          return openQcow2(o.dataDir, file, priv.revision);
        });
      planned.push({ domain: name, volume: "private", size: info.virtualSize, open: openPrivate, listed: priv });
      const root = o.volumes.files(name).root;
      if (o.includeRoot && (record.class === "TemplateVM" || record.class === "StandaloneVM") && existsSync(root)) {
        const size = statSync(root).size;
        entry.volumes.root = { size };
        planned.push({ domain: name, volume: "root", size, open: () => lock(name, () => openRaw(root)), listed: entry.volumes.root });
      }
    }
    domains.push(entry);
  }
  const policyFiles = existsSync(o.policyDir) ? readdirSync(o.policyDir).filter((f) => POLICY_FILE_NAME.test(f) && f !== SHIPPED_POLICY_FILE).sort() : [];
  const policyBytes = policyFiles.map((f) => readFileSync(path.join(o.policyDir, f)));

  let parent: OpenedVault | undefined;
  let fd: number | undefined;
  let created = false;
  try {
    if (o.incrementalFrom) {
      parent = await openVault(o.incrementalFrom.file, o.passphrase, { chain: [...o.incrementalFrom.chain], weakKdfForTests: o.weakKdfForTests });
      // What the new backup refers to is only as good as the parent's copy: check all of it first.
      await parent.verify({
        onProgress: (p) => {
          o.signal?.throwIfAborted();
          o.onProgress?.({ phase: "verify", item: "", ...p });
        },
      });
    }
    const volumeTotal = planned.reduce((n, v) => n + v.size, 0);
    fd = openSync(o.output, "wx", 0o600);
    created = true;
    const writer = await createVault({
      output: createWriteStream("", { fd }),
      ...(parent ? { parent } : { passphrase: o.passphrase, scrypt: o.scrypt }),
      weakKdfForTests: o.weakKdfForTests,
    });
    fd = undefined; // the writer's stream owns it now
    for (let i = 0; i < policyFiles.length; i++) await writer.addFile(policyEntry(policyFiles[i]!), policyBytes[i]!);
    let before = 0;
    for (const v of planned) {
      o.signal?.throwIfAborted();
      const item = `${v.domain}:${v.volume}`;
      o.onProgress?.({ phase: "read", item, bytesDone: before, bytesTotal: volumeTotal });
      const raw = await v.open();
      v.listed.size = raw.size; // what was read: a revision's size, a root replaced since planning
      try {
        let done = 0;
        const counted = async function* (): AsyncGenerator<Buffer> {
          for await (const chunk of raw.stream()) {
            o.signal?.throwIfAborted();
            done += chunk.length;
            o.onProgress?.({ phase: "write", item, bytesDone: before + done, bytesTotal: volumeTotal });
            yield chunk;
          }
        };
        await writer.addVolume(volumeEntry(v.domain, v.volume), raw.size, counted());
      } finally {
        raw.close();
      }
      before += v.size;
    }
    // The index last: it lists the sizes as read.
    const index: BackupIndex = { format: INDEX_FORMAT, version: INDEX_VERSION, createdAt: new Date().toISOString(), domains, policyFiles };
    await writer.addFile(INDEX_ENTRY, Buffer.from(JSON.stringify(index, null, 1)));
    const summary = await writer.finish();
    syncToDisk(o.output); // on a USB stick: "backed up" means it is there after unplugging
    return {
      file: o.output,
      backupId: summary.backupId,
      parentId: summary.parentId,
      domains: domains.map((d) => ({
        name: d.record.name,
        class: d.record.class,
        volumes: Object.keys(d.volumes),
        revision: d.volumes.private?.revision ?? "",
      })),
      policyFiles,
      bytesIn: summary.bytesIn,
      bytesWritten: summary.bytesWritten,
      notes,
    };
  } catch (err) {
    if (fd !== undefined) closeSync(fd);
    if (created) rmSync(o.output, { force: true }); // no half-made backup is left to be mistaken for one
    throw err;
  } finally {
    await parent?.close();
  }
}
