// The domain store: every domain record and the global properties, in one JSON file under the
// data directory. Crash-safe: each change is written to a temp file, fsynced and renamed over the
// old one, whose content is first kept as qvm.json.prev. A file that is corrupt or half-written
// (bad JSON, wrong schema, checksum mismatch) is reported, never replaced silently.
import { createHash } from "node:crypto";
import { existsSync, linkSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import path from "node:path";
import { z } from "zod";
import { QvmError } from "@qvm/protocol";
import { writeJsonAtomic } from "@qvm/images";
import { domainRecordSchema, type DomainRecord } from "../model/domain.js";
import type { DomainLookup, PropValue } from "../model/properties.js";

export const STORE_FILE = "qvm.json";
const STORE_VERSION = 1;

const bodySchema = z
  .object({
    version: z.literal(STORE_VERSION),
    globals: z.record(z.string(), z.union([z.string(), z.number(), z.boolean()])),
    domains: z.record(z.string(), domainRecordSchema),
  })
  .strict();
type StoreBody = z.infer<typeof bodySchema>;
const fileSchema = z.object({ checksum: z.string(), body: bodySchema }).strict();

function checksum(body: StoreBody): string {
  return createHash("sha256").update(JSON.stringify(body)).digest("hex");
}

export class DomainStore implements DomainLookup {
  private body: StoreBody;
  readonly file: string;

  private constructor(readonly dataDir: string, body: StoreBody) {
    this.file = path.join(dataDir, STORE_FILE);
    this.body = body;
  }

  /** Loads the store, creating an empty one only when no store file exists at all. */
  static open(dataDir: string): DomainStore {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    DomainStore.removeStaleTempFiles(dataDir);
    const file = path.join(dataDir, STORE_FILE);
    if (!existsSync(file)) {
      if (existsSync(`${file}.prev`)) {
        throw new QvmError("CORRUPT_STATE", `${file} is missing but ${file}.prev exists: restore it with \`cp ${file}.prev ${file}\``);
      }
      const store = new DomainStore(dataDir, { version: STORE_VERSION, globals: {}, domains: {} });
      store.persist();
      return store;
    }
    return new DomainStore(dataDir, DomainStore.read(file));
  }

  /**
   * Removes the temp files of writes that a crash interrupted: `.qvm.json.tmp-PID` (writeFileAtomic's
   * name) and `qvm.json.prev.tmp-PID` (persist's). Neither was ever the store: the rename that
   * would have made it one did not happen. A file whose PID is a live process other than this one
   * is left alone (a write may be under way there); one qvmd owns a data directory.
   */
  static removeStaleTempFiles(dataDir: string): string[] {
    const re = /^(?:\.qvm\.json|qvm\.json\.prev)\.tmp-(\d+)$/; // STORE_FILE's temp names
    const removed: string[] = [];
    for (const name of readdirSync(dataDir)) {
      const m = re.exec(name);
      if (!m) continue;
      const pid = Number(m[1]);
      if (pid !== process.pid && processExists(pid)) continue;
      rmSync(path.join(dataDir, name), { force: true });
      removed.push(name);
    }
    return removed;
  }

  private static read(file: string): StoreBody {
    const fix = `the previous generation is in ${file}.prev: inspect both, then \`cp ${file}.prev ${file}\``;
    let raw: unknown;
    try {
      raw = JSON.parse(readFileSync(file, "utf8"));
    } catch (err) {
      throw new QvmError("CORRUPT_STATE", `${file} is not valid JSON (corrupt or half-written); ${fix}`, { cause: err });
    }
    const parsed = fileSchema.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new QvmError("CORRUPT_STATE", `${file} does not match the store schema at ${issue?.path.join(".")}: ${issue?.message}; ${fix}`);
    }
    if (checksum(parsed.data.body) !== parsed.data.checksum) throw new QvmError("CORRUPT_STATE", `${file} fails its checksum; ${fix}`);
    for (const [name, d] of Object.entries(parsed.data.body.domains)) {
      if (d.name !== name) throw new QvmError("CORRUPT_STATE", `${file}: entry "${name}" names itself "${d.name}"; ${fix}`);
    }
    return parsed.data.body;
  }

  private persist(): void {
    if (existsSync(this.file)) {
      // Keep the current generation as .prev (a hard link, then an atomic rename over the old one).
      const tmp = `${this.file}.prev.tmp-${process.pid}`;
      rmSync(tmp, { force: true });
      linkSync(this.file, tmp);
      renameSync(tmp, `${this.file}.prev`);
    }
    writeJsonAtomic(this.file, { checksum: checksum(this.body), body: this.body });
  }

  /** Applies a change to a copy of the state and persists it; the state in memory changes only if the write succeeded. */
  private commit(change: (draft: StoreBody) => void): void {
    const draft = structuredClone(this.body);
    change(draft);
    const before = this.body;
    this.body = bodySchema.parse(draft);
    try {
      this.persist();
    } catch (err) {
      this.body = before;
      throw new QvmError("INTERNAL", `cannot write ${this.file}: ${(err as Error).message}`, { cause: err });
    }
  }

  get(name: string): DomainRecord | undefined {
    return Object.hasOwn(this.body.domains, name) ? this.body.domains[name] : undefined;
  }

  list(): DomainRecord[] {
    return Object.values(this.body.domains).sort((a, b) => a.name.localeCompare(b.name));
  }

  globals(): Record<string, PropValue> {
    return this.body.globals;
  }

  create(record: DomainRecord): void {
    if (this.get(record.name)) throw new QvmError("ALREADY_EXISTS", `domain "${record.name}" already exists`);
    this.commit((d) => {
      d.domains[record.name] = record;
    });
  }

  /** Stores several new domains in one write: all of them, or (on a failure) none. */
  createAll(records: readonly DomainRecord[]): void {
    for (const r of records) if (this.get(r.name)) throw new QvmError("ALREADY_EXISTS", `domain "${r.name}" already exists`);
    if (new Set(records.map((r) => r.name)).size !== records.length) throw new QvmError("INVALID_ARGUMENT", "a domain is stored twice");
    this.commit((d) => {
      for (const r of records) d.domains[r.name] = r;
    });
  }

  update(name: string, change: (record: DomainRecord) => void): DomainRecord {
    if (!this.get(name)) throw new QvmError("NOT_FOUND", `no domain named "${name}"`);
    this.commit((d) => change(d.domains[name]!));
    return this.get(name)!;
  }

  remove(name: string): void {
    if (!this.get(name)) throw new QvmError("NOT_FOUND", `no domain named "${name}"`);
    this.commit((d) => {
      delete d.domains[name];
    });
  }

  setGlobal(name: string, value: PropValue | undefined): void {
    this.commit((d) => {
      if (value === undefined) delete d.globals[name];
      else d.globals[name] = value;
    });
  }
}

/** Whether a process with this pid exists (EPERM: it does, as another user's). */
function processExists(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}
