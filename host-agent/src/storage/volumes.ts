// The four volumes of a domain (Qubes' storage model: root, private, volatile, kernel), as files:
//
//   DATA/volumes/NAME/private.qcow2   private: persistent ext4, /rw in the guest, /home on it.
//                                      Revisions are qcow2 internal snapshots taken before each
//                                      start: cheap on any filesystem, reverted in place.
//   DATA/volumes/NAME/root.img        root of a TemplateVM or StandaloneVM (sparse raw). Never
//                                      written in place: the domain runs on root-dirty.qcow2 over
//                                      it, which is flattened into a new root.img when it stops
//                                      (rename: AppVMs that run keep the old inode open).
//   DATA/volatile/NAME/root.qcow2     an AppVM's root: a snapshot of its template's root.img
//                                      taken at start, discarded at stop. It is also the volatile
//                                      volume: every change to / lives there and nothing survives.
//                                      A DispVM has its private.qcow2 snapshot here too. On the
//                                      data disk, not the RAM-backed runtime directory: what a
//                                      guest writes to / costs disk, which the start admission
//                                      counts (overlayGrowth), not host memory.
//   kernel                            the read-only kernel bundle (images/).
//   DATA/volumes/NAME/private.key.json an encrypted domain's (encrypted=True): the scrypt salt and
//                                      parameters its key is derived with (volume-key.ts). Its
//                                      private.qcow2 is LUKS-encrypted, revisions included, and
//                                      its volatile root overlay is encrypted under a random key
//                                      made at each start and forgotten at stop.
//
// So creating an AppVM writes only a small private volume; its root costs nothing until it runs.
//
// Volume directories without a domain in the store are never deleted automatically: a crash's
// `NAME.partial-PID` is, anything else is moved to DATA/volumes/.orphans/NAME-TIME, where `qvm
// volume orphans` lists, restores or purges it (a store restored from an older generation must
// not cost a domain its data).
import { closeSync, existsSync, fsyncSync, linkSync, lstatSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, statSync, statfsSync, writeFileSync } from "node:fs";
import { fsyncDir } from "@qvm/images";
import path from "node:path";
import { execa } from "execa";
import { QvmError } from "@qvm/protocol";
import type { DomainClass } from "../model/domain.js";
import type { DiskSpec } from "../vmm/driver.js";
import * as img from "./qemu-img.js";
import type { ScryptParams } from "../backup/vault-crypto.js";
import { newKeyFile, readKeyFile, VolumeKey, writeKeyFile } from "./volume-key.js";

export const DEFAULT_PRIVATE_MIB = 2048;
export const DEFAULT_ROOT_MIB = 10 * 1024;
export const DEFAULT_REVISIONS_TO_KEEP = 1;
/** Names of the private volume's revisions (internal snapshots): rev-TIME. */
export const REVISION_PREFIX = "rev-";
/** Where volume directories without a domain are kept, inside DATA/volumes (not a valid domain name). */
export const ORPHANS_DIR = ".orphans";
const ORPHAN_ID = /^(.+)-(\d{8}T\d{6}Z)(?:\.(\d+))?$/;

export interface VolumeFlags {
  snapOnStart: boolean;
  saveOnStop: boolean;
  rw: boolean;
}

/** Per class, as Qubes' appvm.py / templatevm.py / standalonevm.py define them. */
export function volumeFlags(klass: DomainClass): Record<"root" | "private" | "volatile" | "kernel", VolumeFlags> {
  const persistentRoot = klass === "TemplateVM" || klass === "StandaloneVM";
  return {
    root: { snapOnStart: !persistentRoot, saveOnStop: persistentRoot, rw: true },
    private: { snapOnStart: klass === "DispVM", saveOnStop: klass !== "DispVM", rw: true },
    volatile: { snapOnStart: false, saveOnStop: false, rw: true },
    kernel: { snapOnStart: false, saveOnStop: false, rw: false },
  };
}

export interface VolumeView {
  domain: string;
  name: string;
  path: string;
  sizeBytes: number;
  usageBytes: number;
  flags: VolumeFlags;
  revisions: string[];
}

/** A volume directory kept aside because no domain in the store owned it. */
export interface OrphanVolumes {
  /** Its name under DATA/volumes/.orphans: NAME-TIME (TIME in UTC, 20261130T120000Z). */
  id: string;
  /** The domain name it was found under. */
  name: string;
  /** When it was kept aside (ISO time); "" if the id does not say. */
  keptAt: string;
  path: string;
  /** The files in it, sorted. */
  files: string[];
  /** Bytes it takes on the host. */
  usageBytes: number;
  /** A root.img of its own: a TemplateVM's or StandaloneVM's volumes; without it, an AppVM's private only. */
  hasRoot: boolean;
  /** A private.qcow2: without it this is not a domain's volume directory. */
  hasPrivate: boolean;
}

/** What the sweep at qvmd start did with volume directories no domain owns. */
export interface OrphanSweep {
  /** `NAME.partial-PID` directories of a crashed create or clone, removed. */
  removed: string[];
  /** Everything else, moved to .orphans: the name it had and its id there. */
  kept: Array<{ name: string; id: string }>;
}

/** How encrypted volumes' keys are derived; only unit tests change it (cheap scrypt). */
export interface VolumeKeyOptions {
  scrypt?: ScryptParams;
  weakKdfForTests?: boolean;
}

/** An encrypted root overlay made ahead for a domain's next start (see makeSpareOverlay). */
interface SpareOverlay {
  file: string;
  backing: string;
  backingSize: number;
  key: VolumeKey;
}

export class VolumeStore {
  private readonly spares = new Map<string, SpareOverlay>();

  constructor(
    readonly dataDir: string,
    private readonly keyOptions: VolumeKeyOptions = {},
  ) {}

  dir(name: string): string {
    return path.join(this.dataDir, "volumes", name);
  }

  files(name: string) {
    const d = this.dir(name);
    return { private: path.join(d, "private.qcow2"), root: path.join(d, "root.img"), rootDirty: path.join(d, "root-dirty.qcow2"), key: path.join(d, KEY_FILE) };
  }

  /** Whether the domain's private volume is encrypted (it has a key file). */
  isEncrypted(name: string): boolean {
    return existsSync(this.files(name).key);
  }

  /**
   * Whether a domain needs its passphrase: encrypted by its record, or by its volume (a key
   * file). A record whose key file is gone then fails at unlock, CORRUPT_STATE naming the file.
   */
  needsPassphrase(rec: { name: string; props: Record<string, unknown> }): boolean {
    return rec.props.encrypted === true || this.isEncrypted(rec.name);
  }

  /**
   * The key of an encrypted private volume, from its passphrase: derived (scrypt) and checked
   * against the volume's LUKS header. A wrong passphrase is PERMISSION_DENIED; nothing changes.
   */
  async unlock(name: string, passphrase: string): Promise<VolumeKey> {
    if (!passphrase) throw passphraseRequired(name);
    const key = await VolumeKey.derive(passphrase, readKeyFile(this.files(name).key, this.keyOptions));
    try {
      await img.checkKey(this.files(name).private, key);
      return key;
    } catch (err) {
      key.wipe();
      if ((err as QvmError).code === "PERMISSION_DENIED") throw new QvmError("PERMISSION_DENIED", `wrong passphrase for ${name}: its private volume did not unlock; try again`);
      throw err;
    }
  }

  /**
   * A new passphrase for a halted encrypted domain: a key slot for the new key is added, the key
   * file then names the new salt (one atomic write), and the old key's slots are removed. A crash
   * before the key file's write leaves the old passphrase working, after it the new one.
   * Backups made before keep the old passphrase.
   */
  async changePassphrase(name: string, oldPassphrase: string, newPassphrase: string): Promise<{ oldSlotsRemoved: boolean }> {
    const f = this.files(name);
    if (!this.isEncrypted(name)) throw new QvmError("FAILED_PRECONDITION", `${name} is not encrypted: it has no passphrase to change`);
    const oldKey = await this.unlock(name, oldPassphrase);
    const params = newKeyFile(this.keyOptions.scrypt);
    let newKey: VolumeKey | undefined;
    try {
      newKey = await VolumeKey.derive(newPassphrase, params);
      await img.addKeySlot(f.private, oldKey, newKey);
      writeKeyFile(f.key, params);
      // From here the new passphrase is the one: a failure to remove the old slots is reported,
      // not thrown (the old key alone, with the old key file's salt, still opens the volume).
      const removed = await img.removeKeySlots(f.private, newKey, oldKey).then(
        () => true,
        () => false,
      );
      return { oldSlotsRemoved: removed };
    } finally {
      oldKey.wipe();
      newKey?.wipe();
    }
  }

  /** Refuses an operation on an encrypted private volume that came without its key. */
  private requireKey(name: string, key: VolumeKey | undefined): VolumeKey | undefined {
    const encrypted = this.isEncrypted(name);
    if (encrypted && !key) throw passphraseRequired(name);
    return encrypted ? key : undefined;
  }

  exists(name: string): boolean {
    return existsSync(this.dir(name));
  }

  /** A domain's volatile directory: its per-start overlays, wiped at start and when it stops. */
  volatileDir(name: string): string {
    return path.join(this.dataDir, "volatile", name);
  }

  /** Removes what the domain's last run left in its volatile directory. */
  discardVolatile(name: string): void {
    rmSync(this.volatileDir(name), { recursive: true, force: true });
  }

  /** Names with a volatile directory (not validated: they come from the disk). */
  volatileNames(): string[] {
    const dir = path.join(this.dataDir, "volatile");
    return existsSync(dir) ? readdirSync(dir).filter((n) => n !== SPARE_DIR) : [];
  }

  /** Free bytes on the data directory's filesystem, as an unprivileged writer sees them. */
  freeBytes(): number {
    const st = statfsSync(this.dataDir);
    return st.bavail * st.bsize;
  }

  /**
   * How much the writable overlays of a running domain may still grow on the data disk: each
   * one's virtual size minus what it has allocated (the volatile overlays, a template's or
   * standalone's root-dirty.qcow2). The private volume is not an overlay and is not counted.
   */
  async overlayGrowth(name: string): Promise<number> {
    const files: string[] = [];
    const vdir = this.volatileDir(name);
    if (existsSync(vdir)) files.push(...readdirSync(vdir).filter((f) => f.endsWith(".qcow2")).map((f) => path.join(vdir, f)));
    if (existsSync(this.files(name).rootDirty)) files.push(this.files(name).rootDirty);
    let total = 0;
    for (const f of files) {
      const info = await img.imageInfo(f, "qcow2").catch(() => undefined); // gone meanwhile: nothing to grow
      if (info) total += Math.max(0, info.virtualSize - info.actualSize);
    }
    return total;
  }

  /**
   * The most the overlays a start makes may grow to: the virtual sizes of what they are made
   * over (an AppVM's template root; a DispVM's template root and private; a TemplateVM's or
   * StandaloneVM's own root). A missing file counts 0: preparing the start reports it.
   */
  async plannedGrowth(name: string, klass: DomainClass, opts: { templateRoot?: string; templatePrivate?: string }): Promise<number> {
    const rawSize = (f?: string) => (f && existsSync(f) ? statSync(f).size : 0);
    if (klass === "AppVM") return rawSize(opts.templateRoot);
    if (klass === "DispVM") {
      const priv = opts.templatePrivate && existsSync(opts.templatePrivate) ? (await img.imageInfo(opts.templatePrivate, "qcow2")).virtualSize : 0;
      return rawSize(opts.templateRoot) + priv;
    }
    return rawSize(this.files(name).root);
  }

  /**
   * Makes a domain's volumes in a scratch directory renamed into place at the end, so a failure
   * (a full disk) leaves no half-made domain. `rootFrom` is the raw root a TemplateVM or
   * StandaloneVM starts from: hard-linked when possible (it is never written in place), else copied.
   */
  async create(name: string, klass: DomainClass, opts: { rootFrom?: string; privateMiB?: number; passphrase?: string } = {}): Promise<void> {
    if (klass === "DispVM") return; // nothing persistent: every start snapshots its template's volumes
    const final = this.dir(name);
    if (existsSync(final)) throw new QvmError("ALREADY_EXISTS", `${final} already exists; remove it if no domain "${name}" exists`);
    const partial = `${final}.partial-${process.pid}`;
    rmSync(partial, { recursive: true, force: true });
    mkdirSync(partial, { recursive: true, mode: 0o700 });
    try {
      const f = { private: path.join(partial, "private.qcow2"), root: path.join(partial, "root.img") };
      const scratch = path.join(partial, "private.raw");
      if (opts.passphrase !== undefined) {
        // Encrypted: the key file first (without it the volume could never be opened again).
        const params = newKeyFile(this.keyOptions.scrypt);
        writeKeyFile(path.join(partial, KEY_FILE), params);
        const key = await VolumeKey.derive(opts.passphrase, params);
        try {
          await img.createEncryptedExt4Qcow2(f.private, opts.privateMiB ?? DEFAULT_PRIVATE_MIB, "qvm-private", scratch, key);
        } finally {
          key.wipe();
        }
      } else {
        await img.createExt4Qcow2(f.private, opts.privateMiB ?? DEFAULT_PRIVATE_MIB, "qvm-private", scratch);
      }
      rmSync(scratch, { force: true });
      if (klass !== "AppVM") {
        // Without a source, as in Qubes, the root starts empty (sparse): install into it from elsewhere.
        if (opts.rootFrom) await linkOrCopy(opts.rootFrom, f.root);
        else await execa("truncate", ["-s", `${DEFAULT_ROOT_MIB}M`, f.root]);
      }
      syncTree(partial);
      renameSync(partial, final);
      fsyncDir(path.dirname(final));
    } catch (err) {
      rmSync(partial, { recursive: true, force: true });
      throw err;
    }
  }

  async clone(source: string, name: string): Promise<void> {
    const final = this.dir(name);
    const partial = `${final}.partial-${process.pid}`;
    rmSync(partial, { recursive: true, force: true });
    mkdirSync(partial, { recursive: true, mode: 0o700 });
    try {
      const src = this.files(source);
      if (existsSync(src.key)) {
        // Encrypted: copied as ciphertext, revisions and all (qvmd has no key to re-encode it);
        // the clone opens with the same passphrase.
        await copySparse(src.private, path.join(partial, "private.qcow2"));
        await copySparse(src.key, path.join(partial, KEY_FILE));
      } else {
        await img.copyQcow2(src.private, path.join(partial, "private.qcow2")); // revisions are not copied
      }
      if (existsSync(src.root)) await linkOrCopy(src.root, path.join(partial, "root.img"));
      syncTree(partial);
      renameSync(partial, final);
      fsyncDir(path.dirname(final));
    } catch (err) {
      rmSync(partial, { recursive: true, force: true });
      throw err;
    }
  }

  remove(name: string): void {
    rmSync(this.dir(name), { recursive: true, force: true });
    this.discardVolatile(name);
    this.discardSpareOverlay(name);
  }

  // ---- volumes without a domain ------------------------------------------------------------

  private orphansRoot(): string {
    return path.join(this.dataDir, "volumes", ORPHANS_DIR);
  }

  /**
   * At qvmd start: a crash between making a domain's volumes and storing it leaves a
   * `NAME.partial-PID` directory, removed here; any other directory no domain owns (a crash
   * during remove, or a store restored from an older generation or a backup) is moved to
   * .orphans/NAME-TIME and kept until a person restores or purges it. Nothing else is deleted.
   */
  sweepOrphans(known: (name: string) => boolean, now: Date = new Date()): OrphanSweep {
    const dir = path.join(this.dataDir, "volumes");
    const out: OrphanSweep = { removed: [], kept: [] };
    if (!existsSync(dir)) return out;
    for (const entry of readdirSync(dir).sort()) {
      if (entry === ORPHANS_DIR) continue;
      if (/\.partial-\d+$/.test(entry)) {
        rmSync(path.join(dir, entry), { recursive: true, force: true });
        out.removed.push(entry);
      } else if (!known(entry)) {
        mkdirSync(this.orphansRoot(), { recursive: true, mode: 0o700 });
        const id = this.freeOrphanId(entry, now);
        renameSync(path.join(dir, entry), path.join(this.orphansRoot(), id));
        out.kept.push({ name: entry, id });
      }
    }
    return out;
  }

  private freeOrphanId(name: string, now: Date): string {
    const time = now.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
    const base = `${name}-${time}`;
    let id = base;
    for (let i = 2; existsSync(path.join(this.orphansRoot(), id)); i++) id = `${base}.${i}`;
    return id;
  }

  /** The volume directories kept aside, oldest first. */
  listOrphans(): OrphanVolumes[] {
    const root = this.orphansRoot();
    if (!existsSync(root)) return [];
    return readdirSync(root)
      .map((id) => this.describeOrphan(id))
      .sort((a, b) => a.keptAt.localeCompare(b.keptAt) || a.id.localeCompare(b.id));
  }

  /** One kept-aside directory by its id, or NOT_FOUND listing the ids there are. */
  orphan(id: string): OrphanVolumes {
    const root = this.orphansRoot();
    const ids = existsSync(root) ? readdirSync(root) : [];
    // Only a name that is there: no path of the caller's choosing is ever built from it.
    if (!ids.includes(id)) {
      throw new QvmError("NOT_FOUND", ids.length ? `no kept-aside volumes "${id}"; there are: ${ids.sort().join(", ")}` : `no kept-aside volumes "${id}": ${root} is empty`);
    }
    return this.describeOrphan(id);
  }

  private describeOrphan(id: string): OrphanVolumes {
    const p = path.join(this.orphansRoot(), id);
    const m = ORPHAN_ID.exec(id);
    const st = lstatSync(p);
    const files = st.isDirectory() ? readdirSync(p).sort() : [];
    let usageBytes = st.isDirectory() ? 0 : st.blocks * 512;
    for (const f of files) usageBytes += lstatSync(path.join(p, f)).blocks * 512;
    const t = m?.[2];
    const keptAt = t ? `${t.slice(0, 4)}-${t.slice(4, 6)}-${t.slice(6, 8)}T${t.slice(9, 11)}:${t.slice(11, 13)}:${t.slice(13, 15)}Z` : "";
    return { id, name: m?.[1] ?? id, keptAt, path: p, files, usageBytes, hasRoot: files.includes("root.img"), hasPrivate: files.includes("private.qcow2") };
  }

  /** Moves kept-aside volumes back as domain `name`'s; the caller stores the domain (or calls unrestore). */
  restoreOrphan(id: string, name: string): void {
    const o = this.orphan(id);
    if (existsSync(this.dir(name))) throw new QvmError("ALREADY_EXISTS", `${this.dir(name)} already exists: restore ${id} under another name`);
    renameSync(o.path, this.dir(name));
  }

  /** Undoes restoreOrphan when the domain could not be stored. */
  unrestoreOrphan(id: string, name: string): void {
    mkdirSync(this.orphansRoot(), { recursive: true, mode: 0o700 });
    renameSync(this.dir(name), path.join(this.orphansRoot(), id));
  }

  /** Deletes kept-aside volumes for good. */
  purgeOrphan(id: string): OrphanVolumes {
    const o = this.orphan(id);
    rmSync(o.path, { recursive: true, force: true });
    return o;
  }

  /**
   * The disks for a start: the volatile directory wiped, revisions taken, then the root chosen
   * by class. `templateRoot` is the template's root.img for an AppVM. Each overlay names the
   * files it reads through (backingFiles), for the VMM sandbox's read-only view.
   */
  /**
   * `key`: an encrypted domain's (unlock); its AppVM root overlay then gets a key of its own,
   * random, on the returned disk, which the caller forgets when the domain stops.
   */
  async prepareStart(name: string, klass: DomainClass, opts: { templateRoot?: string; templatePrivate?: string; revisionsToKeep: number; key?: VolumeKey }): Promise<DiskSpec[]> {
    const volatile = this.volatileDir(name);
    this.discardVolatile(name);
    if (klass === "DispVM") return this.prepareDisposable(volatile, opts.templateRoot, opts.templatePrivate);
    const f = this.files(name);
    if (!existsSync(f.private)) throw new QvmError("CORRUPT_STATE", `${f.private} is missing: the private volume of ${name} is gone`);
    const key = this.requireKey(name, opts.key);
    await this.takeRevision(f.private, opts.revisionsToKeep, key);
    let root: DiskSpec;
    if (klass === "AppVM") {
      if (!opts.templateRoot || !existsSync(opts.templateRoot)) {
        throw new QvmError("MISSING_DEPENDENCY", `the template's root volume ${opts.templateRoot ?? ""} is missing: build it with \`qvm-images build\` (qvm template build)`);
      }
      mkdirSync(volatile, { recursive: true, mode: 0o700 });
      const overlay = path.join(volatile, "root.qcow2");
      // What an encrypted domain writes to / (logs, caches, /tmp) is not left in clear either.
      let volatileKey = key ? this.takeSpareOverlay(name, opts.templateRoot, overlay) : undefined;
      if (key && !volatileKey) {
        const fresh = VolumeKey.random();
        await img.createEncryptedOverlay(opts.templateRoot, overlay, fresh).catch((err: unknown) => {
          fresh.wipe();
          throw err;
        });
        volatileKey = fresh;
      } else if (!key) await img.createOverlay(opts.templateRoot, overlay);
      root = { serial: "root", path: overlay, format: "qcow2", readonly: false, backingFiles: [opts.templateRoot], ...(volatileKey ? { key: volatileKey } : {}) };
    } else {
      if (!existsSync(f.root)) throw new QvmError("CORRUPT_STATE", `${f.root} is missing: the root volume of ${name} is gone`);
      await this.commitRoot(name); // a crash may have left changes of the last run
      await img.createOverlay(f.root, f.rootDirty);
      root = { serial: "root", path: f.rootDirty, format: "qcow2", readonly: false, backingFiles: [f.root] };
    }
    return [root, { serial: "private", path: f.private, format: "qcow2", readonly: false, ...(key ? { key } : {}) }];
  }

  // ---- encrypted root overlays made ahead ----------------------------------------------------
  //
  // Making a LUKS header costs qemu-img about 2 s (it times PBKDF2 on this CPU, however short
  // the iteration time asked), which an encrypted AppVM's start would pay for its root overlay.
  // So when such a domain stops, its next overlay is made: empty, under a new random key that
  // qvmd keeps in memory only, in DATA/volatile/.spare. A start takes it if it is over the same
  // template root of the same size (an empty overlay reads its backing file through, so a
  // template root replaced meanwhile is fine); otherwise, or after a qvmd restart (the key is
  // gone, the file is removed at start), it makes one as before. The key protects a file with
  // no data yet; the guest's writes start when the domain runs, under that key alone.

  private spareDir(): string {
    return path.join(this.dataDir, "volatile", SPARE_DIR);
  }

  /** Makes `name`'s next encrypted root overlay over `templateRoot` (replacing an older spare). */
  async makeSpareOverlay(name: string, templateRoot: string): Promise<void> {
    mkdirSync(this.spareDir(), { recursive: true, mode: 0o700 });
    const file = path.join(this.spareDir(), `${name}.${process.pid}-${++spareSerial}.qcow2`);
    const part = `${file}.part`;
    const key = VolumeKey.random();
    try {
      const backingSize = statSync(templateRoot).size;
      await img.createEncryptedOverlay(templateRoot, part, key);
      // Removed (or no longer encrypted) while it was made: not wanted any more.
      if (!this.isEncrypted(name)) throw new QvmError("NOT_FOUND", `${name} is gone`);
      renameSync(part, file); // its final name only once whole
      this.discardSpareOverlay(name);
      this.spares.set(name, { file, backing: templateRoot, backingSize, key });
    } catch (err) {
      key.wipe();
      rmSync(part, { force: true });
      throw err;
    }
  }

  /** The spare overlay moved to `dest` and its key, when it fits this start; else nothing. */
  private takeSpareOverlay(name: string, templateRoot: string, dest: string): VolumeKey | undefined {
    const spare = this.spares.get(name);
    if (!spare) return undefined;
    this.spares.delete(name);
    const fits = spare.backing === templateRoot && existsSync(spare.file) && existsSync(templateRoot) && statSync(templateRoot).size === spare.backingSize;
    if (!fits) {
      spare.key.wipe();
      rmSync(spare.file, { force: true });
      return undefined;
    }
    renameSync(spare.file, dest);
    return spare.key;
  }

  /** Forgets `name`'s spare overlay (removed, renamed, or its template changed). */
  discardSpareOverlay(name: string): void {
    const spare = this.spares.get(name);
    if (!spare) return;
    this.spares.delete(name);
    spare.key.wipe();
    rmSync(spare.file, { force: true });
  }

  /** At qvmd start: spares of an earlier qvmd, whose keys died with it. */
  removeStaleSpareOverlays(): void {
    rmSync(this.spareDir(), { recursive: true, force: true });
  }

  /**
   * A disposable's volumes: snapshots of its template's (an AppVM's) root and private, in its
   * volatile directory, gone when it stops. Nothing of a disposable outlives it.
   */
  private async prepareDisposable(volatile: string, templateRoot?: string, templatePrivate?: string): Promise<DiskSpec[]> {
    for (const f of [templateRoot, templatePrivate]) {
      if (!f || !existsSync(f)) throw new QvmError("MISSING_DEPENDENCY", `a volume of the disposable's template is missing (${f ?? "?"}): build templates with \`qvm-images build\``);
    }
    mkdirSync(volatile, { recursive: true, mode: 0o700 });
    const root = path.join(volatile, "root.qcow2");
    const priv = path.join(volatile, "private.qcow2");
    await img.createOverlay(templateRoot!, root);
    await img.createOverlay(templatePrivate!, priv, "qcow2");
    return [
      { serial: "root", path: root, format: "qcow2", readonly: false, backingFiles: [templateRoot!] },
      { serial: "private", path: priv, format: "qcow2", readonly: false, backingFiles: [templatePrivate!] },
    ];
  }

  /**
   * After a TemplateVM or StandaloneVM stopped: its root changes become the new root.img. The old
   * file is kept as a revision (root.img.rev-N) when revisions_to_keep allows, else unlinked;
   * AppVMs that run keep using it through their open file until they stop.
   */
  async commitRoot(name: string, revisionsToKeep = DEFAULT_REVISIONS_TO_KEEP): Promise<boolean> {
    const f = this.files(name);
    if (!existsSync(f.rootDirty)) return false;
    const next = `${f.root}.new`;
    rmSync(next, { force: true });
    await img.flattenToRaw(f.rootDirty, next);
    await execa("sync", ["-f", next]).catch(() => {});
    if (revisionsToKeep > 0) {
      linkSync(f.root, `${f.root}.${REVISION_PREFIX}${Date.now()}`);
      const revs = this.rootRevisions(name);
      for (const old of revs.slice(0, Math.max(0, revs.length - revisionsToKeep))) rmSync(path.join(this.dir(name), `root.img.${old}`), { force: true });
    }
    renameSync(next, f.root);
    rmSync(f.rootDirty, { force: true });
    return true;
  }

  private rootRevisions(name: string): string[] {
    return readdirSync(this.dir(name))
      .filter((n) => n.startsWith(`root.img.${REVISION_PREFIX}`))
      .map((n) => n.slice("root.img.".length))
      .sort();
  }

  private async takeRevision(file: string, keep: number, key?: VolumeKey): Promise<void> {
    if (keep <= 0) return;
    await img.createSnapshot(file, `${REVISION_PREFIX}${Date.now()}`, key);
    const revs = (await img.listSnapshots(file)).map((s) => s.name).filter((n) => n.startsWith(REVISION_PREFIX)).sort();
    for (const old of revs.slice(0, Math.max(0, revs.length - keep))) await img.deleteSnapshot(file, old, key);
  }

  /** Restores the private volume to a revision (the newest when none is named). The domain must be halted. */
  async revertPrivate(name: string, revision?: string, key?: VolumeKey): Promise<string> {
    const file = this.files(name).private;
    const revs = (await img.listSnapshots(file)).map((s) => s.name).sort();
    const target = revision ?? revs.at(-1);
    if (!target || !revs.includes(target)) {
      throw new QvmError("NOT_FOUND", revs.length ? `no revision "${revision}" of ${name}:private; revisions: ${revs.join(", ")}` : `${name}:private has no revisions yet (one is taken before each start)`);
    }
    await img.applySnapshot(file, target, this.requireKey(name, key));
    return target;
  }

  /** Checks a new size of the private volume: volumes only grow. */
  async checkGrow(name: string, sizeBytes: number): Promise<void> {
    const { virtualSize } = await img.imageInfo(this.files(name).private, "qcow2");
    if (sizeBytes < virtualSize) throw new QvmError("INVALID_ARGUMENT", `${name}:private is ${virtualSize} bytes; volumes only grow (shrinking loses data)`);
  }

  /** Grows the private volume of a halted domain; its filesystem grows at the next start. */
  async resizePrivate(name: string, sizeBytes: number, key?: VolumeKey): Promise<void> {
    await this.checkGrow(name, sizeBytes);
    await img.resizeImage(this.files(name).private, "qcow2", sizeBytes, this.requireKey(name, key));
    writeFileSync(this.growFlag(name), "");
  }

  /** Set while the private filesystem is smaller than its volume (grown while halted). */
  growFlag(name: string): string {
    return path.join(this.dir(name), "private.grow");
  }

  /** Restores a TemplateVM's or StandaloneVM's root to a kept revision (the newest when none is named). */
  revertRoot(name: string, revision?: string): string {
    const revs = this.rootRevisions(name);
    const target = revision ?? revs.at(-1);
    if (!target || !revs.includes(target)) {
      throw new QvmError("NOT_FOUND", revs.length ? `no revision "${revision}" of ${name}:root; revisions: ${revs.join(", ")}` : `${name}:root has no revisions yet (one is kept each time the domain stops)`);
    }
    renameSync(path.join(this.dir(name), `root.img.${target}`), this.files(name).root);
    return target;
  }

  async list(name: string, klass: DomainClass, templateRoot?: string): Promise<VolumeView[]> {
    const f = this.files(name);
    const flags = volumeFlags(klass);
    const out: VolumeView[] = [];
    if (klass === "DispVM") return out; // its volumes exist only while it runs
    const priv = await img.imageInfo(f.private, "qcow2");
    out.push({ domain: name, name: "private", path: f.private, sizeBytes: priv.virtualSize, usageBytes: priv.actualSize, flags: flags.private,
      revisions: priv.snapshots.map((s) => s.name).sort() });
    const rootFile = klass === "AppVM" ? templateRoot : f.root;
    if (rootFile && existsSync(rootFile)) {
      const st = statSync(rootFile);
      out.push({ domain: name, name: "root", path: rootFile, sizeBytes: st.size, usageBytes: klass === "AppVM" ? 0 : st.blocks * 512, flags: flags.root,
        revisions: klass === "AppVM" ? [] : this.rootRevisions(name) });
    }
    return out;
  }
}

/** Where encrypted root overlays made ahead wait, in DATA/volatile (not a valid domain name). */
const SPARE_DIR = ".spare";
let spareSerial = 0;

/** The name of an encrypted volume's key file in its domain's volume directory. */
export const KEY_FILE = "private.key.json";

function passphraseRequired(name: string): QvmError {
  return new QvmError("PASSPHRASE_REQUIRED", `${name} is encrypted: its passphrase is needed (\`qvm start ${name}\` asks for it, or give --passphrase-file)`);
}

async function linkOrCopy(src: string, dst: string): Promise<void> {
  try {
    linkSync(src, dst);
  } catch {
    await copySparse(src, dst);
  }
}

/** fsyncs every file of a new volume directory and the directory (cp and mke2fs leave data in the page cache). */
export function syncTree(dir: string): void {
  for (const f of readdirSync(dir)) {
    const fd = openSync(path.join(dir, f), "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  }
  fsyncDir(dir);
}

/** A copy of `src` at `dst`, reflinked where the filesystem can, holes kept. */
export async function copySparse(src: string, dst: string): Promise<void> {
  await execa("cp", ["--reflink=auto", "--sparse=always", src, dst]).catch((err: Error) => {
    throw new QvmError(/No space/.test(String((err as { stderr?: string }).stderr)) ? "RESOURCE_EXHAUSTED" : "STORAGE_FAILED", `cannot copy ${src} to ${dst}: ${(err as { stderr?: string }).stderr ?? err.message}`);
  });
}
