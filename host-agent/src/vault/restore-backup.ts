// `qvm backup verify` and `qvm backup restore`. A restore checks the whole backup first (every
// chunk, and the chain's) and writes nothing when anything is wrong. Then it makes every domain's
// volumes in a `NAME.partial-PID` directory (removed at qvmd start, and by a re-run), renames them
// all into place and stores all records in one store write: an interrupted restore (SIGKILL)
// leaves either nothing of a domain, or volume directories marked `.restoring` without a record,
// which a re-run of the same restore removes and makes again (and qvmd's start keeps aside as
// orphans: nothing is ever lost).
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { QvmError } from "@qvm/protocol";
import { openVault, type OpenedVault } from "../backup/index.js";
import type { DomainRecord } from "../model/domain.js";
import { MAX_NAME_LENGTH, validateDomainName } from "../model/names.js";
import { assignIdentity } from "../model/net-identity.js";
import { KEY_FILE, syncTree, type VolumeStore } from "../storage/volumes.js";
import { fsyncDir, writeFileAtomic } from "@qvm/images";
import { parseKeyFile, writeKeyFile } from "../storage/volume-key.js";
import { encryptedQcow2Problem } from "../storage/qcow2-header.js";
import { INDEX_ENTRY, backupIndexSchema, policyEntry, volumeEntry, type BackedUpDomain, type BackupIndex } from "./contents.js";
import type { VaultProgress } from "./backup-domains.js";
import { removeStaleScratch, writeQcow2, writeRawSparse } from "./volume-io.js";

/** In a restored volume directory until its domain is stored: the backup id it came from. */
const RESTORING_MARKER = ".restoring";
/** Properties that name another domain, rewritten when that one is restored under a new name. */
const DOMAIN_REFERENCES = ["template", "netvm", "default_dispvm"] as const;

export interface OpenBackupOptions {
  file: string;
  /** Earlier backups of an incremental chain, in any order. */
  chain?: readonly string[];
  passphrase: string;
  onProgress?: (p: VaultProgress) => void;
  /** Stops (between blocks; before anything is in place) when aborted: the client went away. */
  signal?: AbortSignal;
  weakKdfForTests?: boolean;
}

export interface BackupContents {
  file: string;
  backupId: string;
  parentId: string | null;
  createdAt: string;
  domains: Array<{ name: string; class: string; volumes: string[]; wasRunning: boolean; revision: string }>;
  policyFiles: string[];
  /** Chunks and plaintext bytes checked (this file and the chain's chunks it refers to). */
  chunksChecked: number;
  bytesChecked: number;
}

function describe(vault: OpenedVault, index: BackupIndex, file: string, checked: { chunksChecked: number; bytesChecked: number }): BackupContents {
  return {
    file,
    backupId: vault.info.backupId,
    parentId: vault.info.parentId,
    createdAt: vault.info.createdAt,
    domains: index.domains.map((d) => ({
      name: d.record.name,
      class: d.record.class,
      volumes: Object.keys(d.volumes),
      wasRunning: d.wasRunning,
      revision: d.volumes.private?.revision ?? "",
    })),
    policyFiles: index.policyFiles,
    ...checked,
  };
}

async function readIndex(vault: OpenedVault): Promise<BackupIndex> {
  let parsed: unknown;
  try {
    parsed = JSON.parse((await vault.readFile(INDEX_ENTRY)).toString("utf8"));
  } catch (err) {
    throw new QvmError("CORRUPT_STATE", `${vault.fileName} is a vault but not a qvm backup (no readable ${INDEX_ENTRY}): ${(err as Error).message}`, { cause: err });
  }
  const r = backupIndexSchema.safeParse(parsed);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new QvmError("CORRUPT_STATE", `${vault.fileName}: ${INDEX_ENTRY} is invalid at ${issue?.path.join(".")}: ${issue?.message}`);
  }
  const names = r.data.domains.map((d) => d.record.name);
  if (new Set(names).size !== names.length) throw new QvmError("CORRUPT_STATE", `${vault.fileName}: a domain is listed twice`);
  for (const d of r.data.domains) {
    // An encrypted domain comes with its ciphertext and key parameters, and only it does.
    if (d.volumes.private && (d.record.props.encrypted === true) !== (d.volumes.private.key !== undefined)) {
      throw new QvmError("CORRUPT_STATE", `${vault.fileName}: ${d.record.name} is ${d.record.props.encrypted === true ? "" : "not "}encrypted, but its private volume is listed ${d.volumes.private.key ? "with" : "without"} key parameters`);
    }
    for (const v of ["private", "root"] as const) {
      const want = d.volumes[v];
      if (!want) continue;
      const e = vault.entries().find((x) => x.name === volumeEntry(d.record.name, v));
      if (!e || e.kind !== "volume" || e.size !== want.size) throw new QvmError("CORRUPT_STATE", `${vault.fileName}: the ${d.record.name}:${v} volume listed is not in the backup as listed`);
    }
  }
  return r.data;
}

/** Opens the backup (and its chain), checks every chunk, and reads what it holds. The caller closes it. */
async function openChecked(o: OpenBackupOptions): Promise<{ vault: OpenedVault; index: BackupIndex; contents: BackupContents }> {
  if (!path.isAbsolute(o.file)) throw new QvmError("INVALID_ARGUMENT", `the backup file must be an absolute path, not ${JSON.stringify(o.file)}`);
  for (const c of o.chain ?? []) if (!path.isAbsolute(c)) throw new QvmError("INVALID_ARGUMENT", `a chain file must be an absolute path, not ${JSON.stringify(c)}`);
  if (!existsSync(o.file)) throw new QvmError("NOT_FOUND", `no backup file ${o.file}`);
  const vault = await openVault(o.file, o.passphrase, { chain: o.chain?.length ? [...o.chain] : undefined, weakKdfForTests: o.weakKdfForTests });
  try {
    if (vault.info.parentId !== null && vault.ancestors.length === 0) {
      throw new QvmError("NOT_FOUND", `${o.file} is incremental on backup ${vault.info.parentId}: give that file (and the ones it is incremental on) with --chain FILE`);
    }
    const report = await vault.verify({
      onProgress: (p) => {
        o.signal?.throwIfAborted();
        o.onProgress?.({ phase: "verify", item: "", ...p });
      },
    });
    const index = await readIndex(vault);
    return { vault, index, contents: describe(vault, index, o.file, report) };
  } catch (err) {
    await vault.close();
    throw err;
  }
}

/** `qvm backup verify`: every chunk read and checked; returns what the backup holds. */
export async function verifyBackup(o: OpenBackupOptions): Promise<BackupContents> {
  const { vault, contents } = await openChecked(o);
  await vault.close();
  return contents;
}

export interface RestoreBackupOptions extends OpenBackupOptions {
  dataDir: string;
  store: {
    get(name: string): DomainRecord | undefined;
    list(): DomainRecord[];
    createAll(records: readonly DomainRecord[]): void;
  };
  volumes: VolumeStore;
  policyDir: string;
  /** Domains to restore; empty: all of them (TemplateVMs and StandaloneVMs without a root in the backup are left out then). */
  names: readonly string[];
  /** A domain whose name is taken is restored as NAME-1 (NAME-2 …) instead of refusing. */
  renameConflicts: boolean;
  onNote?: (message: string) => void;
  /** Runs `fn` holding these domains' locks (qvmd's per-domain mutex); none in unit tests. */
  withLocks?: <T>(names: string[], fn: () => Promise<T>) => Promise<T>;
  /** Test hook: called after all volumes are made, before any is renamed into place. */
  beforeCommit?: () => void;
}

export interface RestoreBackupResult {
  backupId: string;
  createdAt: string;
  /** Each restored domain: its name now and the name it had in the backup. */
  domains: Array<{ name: string; from: string; class: string }>;
  policyFiles: { restored: string[]; unchanged: string[]; kept: string[] };
  notes: string[];
}

export async function restoreBackup(o: RestoreBackupOptions): Promise<RestoreBackupResult> {
  const { vault, index, contents } = await openChecked(o);
  const locked = o.withLocks ?? ((_names: string[], fn: () => Promise<RestoreBackupResult>) => fn());
  try {
    // Under the locks of the backup's domain names: no create, clone or restore of one of them
    // runs in between the check for conflicts and the commit.
    return await locked(index.domains.map((d) => d.record.name), () => restoreLocked(o, vault, index, contents));
  } finally {
    await vault.close();
  }
}

async function restoreLocked(o: RestoreBackupOptions, vault: OpenedVault, index: BackupIndex, contents: BackupContents): Promise<RestoreBackupResult> {
  const notes: string[] = [];
  const note = (m: string): void => {
    notes.push(m);
    o.onNote?.(m);
  };
  removeStaleScratch(o.dataDir);
  const chosen = choose(index, o.names, note);
  const rename = planNames(chosen, o, vault.info.backupId);
  // Names chosen by --rename-conflicts are locked too, then checked again: a create of one of
  // them may have run between the plan and the lock (the backup's own names were locked first).
  const renamed = [...rename].filter(([from, to]) => from !== to).map(([, to]) => to);
  const named = { o, vault, index, contents, chosen, rename, note, notes };
  if (renamed.length === 0 || !o.withLocks) return restoreNamed(named);
  return o.withLocks(renamed, async () => {
    for (const n of renamed) {
      if (o.store.get(n) || existsSync(o.volumes.dir(n))) throw new QvmError("ALREADY_EXISTS", `${n}, the name chosen for a renamed domain, was taken meanwhile: run the restore again`);
    }
    return restoreNamed(named);
  });
}

interface NamedRestore {
  o: RestoreBackupOptions;
  vault: OpenedVault;
  index: BackupIndex;
  contents: BackupContents;
  chosen: BackedUpDomain[];
  rename: Map<string, string>;
  note: (m: string) => void;
  notes: string[];
}

async function restoreNamed({ o, vault, index, contents, chosen, rename, note, notes }: NamedRestore): Promise<RestoreBackupResult> {
  const records = chosen.map((d) => rewrite(d, rename, o, note));
  checkTemplates(records, rename, o);

  // Volumes, each domain in a scratch directory; nothing is in place until all are made.
  const total = chosen.reduce((n, d) => n + (d.volumes.private?.size ?? 0) + (d.volumes.root?.size ?? 0), 0);
  let before = 0;
  const partials: Array<{ partial: string; final: string }> = [];
  try {
    for (const d of chosen) {
      if (d.record.class === "DispVM") continue;
      const name = rename.get(d.record.name)!;
      const final = o.volumes.dir(name);
      const partial = `${final}.partial-${process.pid}`;
      rmSync(partial, { recursive: true, force: true });
      mkdirSync(partial, { recursive: true, mode: 0o700 });
      partials.push({ partial, final });
      writeFileSync(path.join(partial, RESTORING_MARKER), vault.info.backupId);
      for (const v of ["private", "root"] as const) {
        const info = d.volumes[v];
        if (!info) continue;
        const item = `${name}:${v}`;
        const entry = volumeEntry(d.record.name, v);
        const blocks = vault.readBlocks(entry, {
          onProgress: (p) => {
            o.signal?.throwIfAborted();
            o.onProgress?.({ phase: "write", item, bytesDone: before + p.bytesDone, bytesTotal: total });
          },
        });
        const file = path.join(partial, v === "private" ? "private.qcow2" : "root.img");
        if (v === "private" && info.key) {
          // An encrypted volume: its qcow2 file as it was, and the key file its passphrase needs.
          writeKeyFile(path.join(partial, KEY_FILE), parseKeyFile(JSON.stringify(info.key), `${item}'s key parameters in ${o.file}`, { weakKdfForTests: o.weakKdfForTests }));
          await writeRawSparse(file, info.size, blocks);
          // Written byte for byte: before anything opens it as root, it must open nothing else.
          const problem = encryptedQcow2Problem(file);
          if (problem) throw new QvmError("CORRUPT_STATE", `${o.file}: ${item}'s encrypted volume is refused: ${problem}; nothing was restored`);
        } else if (v === "private") await writeQcow2(o.dataDir, file, info.size, blocks);
        else await writeRawSparse(file, info.size, blocks);
        before += info.size;
      }
    }
    o.beforeCommit?.();
  } catch (err) {
    for (const p of partials) rmSync(p.partial, { recursive: true, force: true });
    throw err;
  }
  // On disk before the store names them: a power cut must not leave a stored domain without data.
  for (const p of partials) syncTree(p.partial);
  for (const p of partials) renameSync(p.partial, p.final);
  if (partials.length) fsyncDir(path.dirname(partials[0]!.final));
  try {
    const all = o.store.list();
    for (const r of records) {
      assignIdentity(r, all); // keeps its qid when no domain here has it
      all.push(r);
    }
    o.store.createAll(records);
  } catch (err) {
    for (const p of partials) rmSync(p.final, { recursive: true, force: true });
    throw err;
  }
  for (const p of partials) rmSync(path.join(p.final, RESTORING_MARKER), { force: true });
  const policyFiles = await restorePolicy(vault, index, o.policyDir, note);
  return {
    backupId: contents.backupId,
    createdAt: contents.createdAt,
    domains: records.map((r, i) => ({ name: r.name, from: chosen[i]!.record.name, class: r.class })),
    policyFiles,
    notes,
  };
}

/** The domains to restore, templates first (so that what needs them finds them). */
function choose(index: BackupIndex, names: readonly string[], note: (m: string) => void): BackedUpDomain[] {
  const byName = new Map(index.domains.map((d) => [d.record.name, d]));
  let chosen: BackedUpDomain[];
  if (names.length > 0) {
    if (new Set(names).size !== names.length) throw new QvmError("INVALID_ARGUMENT", "a domain is named twice");
    chosen = names.map((n) => {
      const d = byName.get(n);
      if (!d) throw new QvmError("NOT_FOUND", `the backup holds no domain "${n}"; it holds: ${[...byName.keys()].join(", ") || "none"}`);
      if (needsRoot(d) && !d.volumes.root) {
        throw new QvmError("FAILED_PRECONDITION", `the backup holds no root volume of ${d.record.class} ${n} (it was made without --include-root): leave ${n} out, or back it up again with --include-root`);
      }
      return d;
    });
  } else {
    chosen = index.domains.filter((d) => {
      if (!needsRoot(d) || d.volumes.root) return true;
      note(`${d.record.name} left out: the backup holds its record and private volume but not its root (made without --include-root)`);
      return false;
    });
  }
  const rank = (d: BackedUpDomain): number => (d.record.class === "TemplateVM" ? 0 : d.record.class === "DispVM" ? 2 : 1);
  return chosen.sort((a, b) => rank(a) - rank(b));
}

function needsRoot(d: BackedUpDomain): boolean {
  return d.record.class === "TemplateVM" || d.record.class === "StandaloneVM";
}

/** Old name → new name for every chosen domain; conflicts refused, or renamed with renameConflicts. */
function planNames(chosen: readonly BackedUpDomain[], o: RestoreBackupOptions, backupId: string): Map<string, string> {
  const taken = (name: string): boolean => {
    if (o.store.get(name)) return true;
    const dir = o.volumes.dir(name);
    if (!existsSync(dir)) return false;
    // Left by an interrupted run of a restore from this same backup: ours to make again.
    const marker = path.join(dir, RESTORING_MARKER);
    if (existsSync(marker) && readFileSync(marker, "utf8") === backupId) {
      rmSync(dir, { recursive: true, force: true });
      return false;
    }
    return true;
  };
  const out = new Map<string, string>();
  const used = new Set<string>();
  for (const d of chosen) {
    const name = d.record.name;
    let next = name;
    if (taken(name)) {
      if (!o.renameConflicts) {
        const why = o.store.get(name) ? `a domain named ${name} exists` : `${o.volumes.dir(name)} exists without a domain (see \`qvm volume orphans\`)`;
        throw new QvmError("ALREADY_EXISTS", `${why}: restore with --rename-conflicts (it becomes ${name}-1), or name the other domains to leave it out`);
      }
      for (let i = 1; ; i++) {
        const suffix = `-${i}`;
        next = `${name.slice(0, MAX_NAME_LENGTH - suffix.length)}${suffix}`;
        if (!used.has(next) && !chosen.some((c) => c.record.name === next) && !taken(next)) break;
      }
      validateDomainName(next);
    }
    used.add(next);
    out.set(name, next);
  }
  return out;
}

/** The record as it will be stored: renamed, its references to renamed domains followed, host-bound parts dropped. */
function rewrite(d: BackedUpDomain, rename: Map<string, string>, o: RestoreBackupOptions, note: (m: string) => void): DomainRecord {
  const r = structuredClone(d.record);
  const name = rename.get(r.name)!;
  if (name !== r.name) note(`${r.name} restored as ${name}: a domain named ${r.name} exists`);
  r.name = name;
  delete r.vmmUid;
  for (const prop of DOMAIN_REFERENCES) {
    const v = r.props[prop];
    if (typeof v !== "string" || v === "") continue;
    const mapped = rename.get(v);
    if (mapped !== undefined) r.props[prop] = mapped;
    else if (prop !== "template" && !o.store.get(v)) {
      delete r.props[prop];
      note(`${name}: its ${prop} ${v} is neither on this host nor restored; reset to the default (\`qvm prefs ${name} ${prop} VM\` to set one)`);
    }
  }
  const hostBound = [r.pci?.length ? "PCI devices" : "", r.usb?.length ? "USB assignments" : "", r.usbPlugs?.length ? "emulated USB devices" : ""].filter(Boolean);
  if (hostBound.length) note(`${name}: its ${hostBound.join(", ")} belong to the host it was backed up on and were not restored; attach them again`);
  delete r.pci;
  delete r.usb;
  delete r.usbPlugs;
  return r;
}

function checkTemplates(records: readonly DomainRecord[], rename: Map<string, string>, o: RestoreBackupOptions): void {
  const restored = new Set(rename.values());
  for (const r of records) {
    if (r.class !== "AppVM" && r.class !== "DispVM") continue;
    const t = String(r.props.template ?? "");
    if (!t) continue; // the global default_template applies
    if (!restored.has(t) && !o.store.get(t)) {
      throw new QvmError(
        "FAILED_PRECONDITION",
        `${r.name} needs its template ${t}, which is neither on this host nor being restored: restore ${t} too (if the backup has it with its root), or make it here first (\`qvm template build\` / \`qvm template import\`)`,
      );
    }
  }
}

/** Policy files: written when absent, left alone when equal; a different one here is kept, the backup's copy set beside it (not read). */
async function restorePolicy(vault: OpenedVault, index: BackupIndex, dir: string, note: (m: string) => void): Promise<RestoreBackupResult["policyFiles"]> {
  const out: RestoreBackupResult["policyFiles"] = { restored: [], unchanged: [], kept: [] };
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  for (const f of index.policyFiles) {
    const bytes = await vault.readFile(policyEntry(f));
    const dest = path.join(dir, f);
    if (existsSync(dest)) {
      if (readFileSync(dest).equals(bytes)) {
        out.unchanged.push(f);
        continue;
      }
      const beside = `${dest}.restored`;
      writeFileAtomic(beside, bytes);
      out.kept.push(f);
      note(`policy ${f} differs from the backup's: kept as it is, the backup's copy is ${beside} (not read by qvmd; merge it by hand)`);
      continue;
    }
    writeFileAtomic(dest, bytes);
    out.restored.push(f);
  }
  return out;
}

