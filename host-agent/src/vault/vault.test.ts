// The backup engine against real files and the real qemu-img/qemu-io (no VMs): domains round-trip
// byte for byte as the guest sees them, a running domain is read from its last revision, a damaged
// backup restores nothing, conflicts are refused or renamed, a subset needs its template, an
// incremental backup restores with its chain, and what an interrupted restore leaves is made again.
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, closeSync, writeSync, statSync, cpSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { QvmError } from "@qvm/protocol";
import type { DomainRecord } from "../model/domain.js";
import { DomainStore } from "../store/domain-store.js";
import { VolumeStore } from "../storage/volumes.js";
import { createSnapshot } from "../storage/qemu-img.js";
import { backupDomains, restoreBackup, verifyBackup, type BackupDomainsOptions, type RestoreBackupOptions } from "./index.js";

const PASS = "correct horse battery staple";
const KDF = { logN: 10, r: 1, p: 1 };

let base: string;
let data: string;
let store: DomainStore;
let volumes: VolumeStore;
const running = new Set<string>();

function host(dir: string): { data: string; store: DomainStore; volumes: VolumeStore; policyDir: string } {
  return { data: dir, store: DomainStore.open(dir), volumes: new VolumeStore(dir), policyDir: path.join(dir, "policy.d") };
}

function record(name: string, klass: DomainRecord["class"], props: DomainRecord["props"] = {}): DomainRecord {
  return { name, class: klass, props: { label: "blue", ...props }, features: { "gui-x": "1" }, tags: ["t1"], createdAt: "2026-01-01T00:00:00.000Z", firewall: ["action=accept proto=tcp dstports=443-443", "action=drop"] };
}

function guestWrite(file: string, offset: number, byte: number, length = "64k"): void {
  execFileSync("qemu-io", ["-f", "qcow2", "-c", `write -P ${byte} ${offset} ${length}`, file], { stdio: "ignore" });
}

/** SHA-256 of what the guest sees of a volume (a qcow2's revision with `snapshot`). */
function guestView(file: string, format: "qcow2" | "raw", snapshot?: string): string {
  const out = path.join(base, `view-${Math.random().toString(36).slice(2)}`);
  execFileSync("qemu-img", ["convert", "-U", ...(snapshot ? ["-l", `snapshot.name=${snapshot}`] : []), "-f", format, "-O", "raw", file, out]);
  const h = createHash("sha256").update(readFileSync(out)).digest("hex");
  rmSync(out);
  return h;
}

function backupOpts(output: string, names: string[], extra: Partial<BackupDomainsOptions> = {}): BackupDomainsOptions {
  return { dataDir: data, store, volumes, policyDir: path.join(data, "policy.d"), names, includeRoot: true, output, passphrase: PASS, isRunning: (n) => running.has(n), scrypt: KDF, weakKdfForTests: true, ...extra };
}

function restoreOpts(h: ReturnType<typeof host>, file: string, extra: Partial<RestoreBackupOptions> = {}): RestoreBackupOptions {
  return { dataDir: h.data, store: h.store, volumes: h.volumes, policyDir: h.policyDir, file, passphrase: PASS, names: [], renameConflicts: false, weakKdfForTests: true, ...extra };
}

beforeEach(async () => {
  base = mkdtempSync(path.join(os.tmpdir(), "qvm-vault-"));
  data = path.join(base, "data");
  ({ store, volumes } = host(data));
  running.clear();
  const image = path.join(base, "image.img");
  const fd = openSync(image, "w");
  writeSync(fd, randomBytes(1 << 20), 0, 1 << 20, 8 << 20); // 1 MiB of incompressible data in a 32 MiB sparse root
  closeSync(fd);
  execFileSync("truncate", ["-s", "32M", image]);
  await volumes.create("tmpl", "TemplateVM", { rootFrom: image, privateMiB: 8 });
  store.create({ ...record("tmpl", "TemplateVM"), rootFrom: "image", qid: 3 });
  for (const [name, byte] of [["work", 0x11], ["bank", 0x22]] as const) {
    await volumes.create(name, "AppVM", { privateMiB: 8 });
    guestWrite(volumes.files(name).private, 4 << 20, byte, "1M");
    store.create({ ...record(name, "AppVM", { template: "tmpl", netvm: "sys-firewall" }), qid: name === "work" ? 7 : 8, vmmUid: 70000 });
  }
  mkdirSync(path.join(data, "policy.d"), { recursive: true });
  writeFileSync(path.join(data, "policy.d", "30-user.policy"), "qubes.Filecopy * work bank allow\n");
  writeFileSync(path.join(data, "policy.d", "90-default.policy"), "# shipped\n");
});
afterEach(() => rmSync(base, { recursive: true, force: true }));

async function expectCode(p: Promise<unknown>, code: string, message: RegExp): Promise<QvmError> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(err).toBeInstanceOf(QvmError);
  expect((err as QvmError).code).toBe(code);
  expect((err as QvmError).message).toMatch(message);
  return err as QvmError;
}

function volumeDirs(dir: string): string[] {
  const v = path.join(dir, "volumes");
  return existsSync(v) ? readdirSync(v).sort() : [];
}

describe("backupDomains / restoreBackup", { timeout: 60_000 }, () => {
  it("round-trips several domains byte for byte: records, policy, private and root volumes", async () => {
    const file = path.join(base, "all.vault");
    const progress: number[] = [];
    const res = await backupDomains(backupOpts(file, ["tmpl", "work", "bank"], { onProgress: (p) => progress.push(p.bytesDone) }));
    expect(res.domains.map((d) => [d.name, d.volumes])).toEqual([["tmpl", ["private", "root"]], ["work", ["private"]], ["bank", ["private"]]]);
    expect(res.policyFiles).toEqual(["30-user.policy"]); // the shipped file is rewritten at start, never backed up
    expect(progress.at(-1)).toBe((32 << 20) + 3 * (8 << 20));
    expect(readdirSync(path.join(data, "tmp"))).toEqual([]); // scratch files unlinked at once

    const other = host(path.join(base, "other"));
    other.store.create({ ...record("sys-firewall", "StandaloneVM"), qid: 2 }); // the netvm they name
    const r = await restoreBackup(restoreOpts(other, file));
    expect(r.domains.map((d) => d.name)).toEqual(["tmpl", "work", "bank"]);
    expect(r.notes).toEqual([]);
    expect(r.policyFiles.restored).toEqual(["30-user.policy"]);
    expect(readFileSync(path.join(other.policyDir, "30-user.policy"), "utf8")).toBe("qubes.Filecopy * work bank allow\n");
    for (const name of ["tmpl", "work", "bank"]) {
      const { vmmUid: _, ...want } = store.get(name)!;
      expect(other.store.get(name)).toEqual(want);
      expect(guestView(other.volumes.files(name).private, "qcow2")).toBe(guestView(volumes.files(name).private, "qcow2"));
    }
    expect(guestView(other.volumes.files("tmpl").root, "raw")).toBe(guestView(volumes.files("tmpl").root, "raw"));
    expect(statSync(other.volumes.files("tmpl").root).blocks * 512).toBeLessThanOrEqual(4 << 20); // restored sparse: only the one 4 MiB block with data
    expect(existsSync(path.join(other.volumes.dir("work"), ".restoring"))).toBe(false);
    expect((await verifyBackup({ file, passphrase: PASS, weakKdfForTests: true })).domains.map((d) => d.name)).toEqual(["tmpl", "work", "bank"]);
  });

  it("backs a running domain up from its last revision, not its live disk", async () => {
    const priv = volumes.files("work").private;
    const atStart = guestView(priv, "qcow2");
    await createSnapshot(priv, "rev-1700000000000");
    guestWrite(priv, 0, 0x77, "1M"); // written by the running guest after its start
    running.add("work");
    const notes: string[] = [];
    const file = path.join(base, "run.vault");
    const res = await backupDomains(backupOpts(file, ["work"], { onNote: (m) => notes.push(m) }));
    expect(notes).toEqual(["work is running: backed up as of its last start (revision rev-1700000000000)"]);
    expect(res.domains[0]!.revision).toBe("rev-1700000000000");
    const other = host(path.join(base, "other"));
    other.store.create(record("tmpl", "TemplateVM"));
    await restoreBackup(restoreOpts(other, file));
    expect(guestView(other.volumes.files("work").private, "qcow2")).toBe(atStart);
    expect(guestView(other.volumes.files("work").private, "qcow2")).not.toBe(guestView(priv, "qcow2"));
  });

  it("a running domain whose private volume keeps no revision is refused, naming the fix", async () => {
    running.add("work");
    await expectCode(backupDomains(backupOpts(path.join(base, "x.vault"), ["work"])), "FAILED_PRECONDITION", /no revision.*qvm shutdown --wait work/);
    expect(existsSync(path.join(base, "x.vault"))).toBe(false);
  });

  it("refuses a damaged backup and writes nothing", async () => {
    const file = path.join(base, "all.vault");
    await backupDomains(backupOpts(file, ["tmpl", "work", "bank"]));
    const bytes = readFileSync(file);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x40;
    writeFileSync(file, bytes);
    const other = host(path.join(base, "other"));
    await expectCode(restoreBackup(restoreOpts(other, file)), "CORRUPT_STATE", /chunk/);
    expect(other.store.list()).toEqual([]);
    expect(volumeDirs(other.data)).toEqual([]);
    expect(existsSync(other.policyDir)).toBe(false);
    await expectCode(verifyBackup({ file, passphrase: PASS, weakKdfForTests: true }), "CORRUPT_STATE", /chunk/);
    await expectCode(verifyBackup({ file, passphrase: "wrong", weakKdfForTests: true }), "PERMISSION_DENIED", /passphrase/);
  });

  it("refuses a conflicting name, or renames it (and what refers to it) with renameConflicts", async () => {
    const file = path.join(base, "all.vault");
    await backupDomains(backupOpts(file, ["tmpl", "work", "bank"]));
    await expectCode(restoreBackup(restoreOpts(host(data), file)), "ALREADY_EXISTS", /a domain named tmpl exists: restore with --rename-conflicts/);
    const h = host(data);
    const r = await restoreBackup(restoreOpts(h, file, { renameConflicts: true }));
    expect(r.domains.map((d) => [d.from, d.name])).toEqual([["tmpl", "tmpl-1"], ["work", "work-1"], ["bank", "bank-1"]]);
    expect(h.store.get("work-1")!.props.template).toBe("tmpl-1");
    expect(h.store.get("work-1")!.qid).not.toBe(7); // a new identity: 7 is work's here
    expect(guestView(h.volumes.files("bank-1").private, "qcow2")).toBe(guestView(volumes.files("bank").private, "qcow2"));
    expect(r.policyFiles.unchanged).toEqual(["30-user.policy"]);
  });

  it("locks the names --rename-conflicts chose, and refuses one taken between the plan and the lock", async () => {
    const file = path.join(base, "work.vault");
    await backupDomains(backupOpts(file, ["work"]));
    const locked: string[][] = [];
    const h = host(data);
    const r = await restoreBackup(restoreOpts(h, file, { renameConflicts: true, withLocks: (names, fn) => (locked.push([...names]), fn()) }));
    expect(r.domains.map((d) => d.name)).toEqual(["work-1"]);
    expect(locked).toEqual([["work"], ["work-1"]]);
    // A create of work-2 that wins the race for its lock: the restore stops and writes nothing.
    const before = volumeDirs(data);
    const racing = (names: string[], fn: () => Promise<unknown>) => {
      if (names.includes("work-2")) h.store.create({ ...record("work-2", "AppVM", { template: "tmpl" }), qid: 12 });
      return fn();
    };
    await expectCode(restoreBackup(restoreOpts(h, file, { renameConflicts: true, withLocks: racing as RestoreBackupOptions["withLocks"] })), "ALREADY_EXISTS", /work-2, the name chosen for a renamed domain, was taken meanwhile/);
    expect(volumeDirs(data)).toEqual(before);
  });

  it("restores a subset; an AppVM's template must be on the host or restored with it", async () => {
    const file = path.join(base, "all.vault");
    await backupDomains(backupOpts(file, ["tmpl", "work", "bank"]));
    const other = host(path.join(base, "other"));
    await expectCode(restoreBackup(restoreOpts(other, file, { names: ["bank"] })), "FAILED_PRECONDITION", /bank needs its template tmpl, which is neither on this host nor being restored/);
    expect(volumeDirs(other.data)).toEqual([]);
    const r = await restoreBackup(restoreOpts(other, file, { names: ["bank", "tmpl"] }));
    expect(r.domains.map((d) => d.name)).toEqual(["tmpl", "bank"]);
    expect(other.store.get("work")).toBeUndefined();
    expect(other.store.get("bank")!.props.netvm).toBeUndefined(); // no sys-firewall here: the default applies
    expect(r.notes).toEqual([expect.stringMatching(/bank: its netvm sys-firewall is neither on this host nor restored/)]);
    expect(volumeDirs(other.data)).toEqual(["bank", "tmpl"]);
  });

  it("a template backed up without its root is left out of a full restore and refused by name", async () => {
    const file = path.join(base, "noroot.vault");
    await backupDomains(backupOpts(file, ["tmpl", "work"], { includeRoot: false }));
    const other = host(path.join(base, "other"));
    await expectCode(restoreBackup(restoreOpts(other, file, { names: ["tmpl"] })), "FAILED_PRECONDITION", /no root volume of TemplateVM tmpl .*--include-root/);
    other.store.create(record("tmpl", "TemplateVM"));
    const notes: string[] = [];
    const r = await restoreBackup(restoreOpts(other, file, { onNote: (m) => notes.push(m) }));
    expect(r.domains.map((d) => d.name)).toEqual(["work"]);
    expect(notes[0]).toMatch(/tmpl left out/);
  });

  it("an incremental backup stores only what changed and restores with its chain", async () => {
    const full = path.join(base, "full.vault");
    const incr = path.join(base, "incr.vault");
    const a = await backupDomains(backupOpts(full, ["tmpl", "work"]));
    guestWrite(volumes.files("work").private, 6 << 20, 0x99, "64k");
    const b = await backupDomains(backupOpts(incr, ["tmpl", "work"], { incrementalFrom: { file: full, chain: [] } }));
    expect(b.parentId).toBe(a.backupId);
    expect(b.bytesWritten).toBeLessThan(a.bytesWritten / 4);
    const other = host(path.join(base, "other"));
    await expectCode(restoreBackup(restoreOpts(other, incr)), "NOT_FOUND", /--chain/);
    await restoreBackup(restoreOpts(other, incr, { chain: [full] }));
    expect(guestView(other.volumes.files("work").private, "qcow2")).toBe(guestView(volumes.files("work").private, "qcow2"));
  });

  it("stops when its client goes away: no backup file, nothing restored", async () => {
    const cancel = new AbortController();
    const file = path.join(base, "cancelled.vault");
    const gone = new QvmError("FAILED_PRECONDITION", "the client went away");
    const stop = (p: { phase: string }): void => {
      if (p.phase === "write") cancel.abort(gone);
    };
    await expectCode(backupDomains(backupOpts(file, ["tmpl", "work"], { signal: cancel.signal, onProgress: stop })), "FAILED_PRECONDITION", /went away/);
    expect(existsSync(file)).toBe(false);
    await backupDomains(backupOpts(file, ["tmpl", "work"]));
    const other = host(path.join(base, "other"));
    const again = new AbortController();
    await expectCode(restoreBackup(restoreOpts(other, file, { signal: again.signal, onProgress: (p) => p.phase === "write" && again.abort(gone) })), "FAILED_PRECONDITION", /went away/);
    expect(other.store.list()).toEqual([]);
    expect(volumeDirs(other.data)).toEqual([]);
  });

  it("an interrupted restore leaves no half domain, and running it again completes it", async () => {
    const file = path.join(base, "all.vault");
    const { backupId } = await backupDomains(backupOpts(file, ["tmpl", "work", "bank"]));
    const other = host(path.join(base, "other"));
    await expectCode(
      restoreBackup(restoreOpts(other, file, { beforeCommit: () => { throw new QvmError("INTERNAL", "injected: killed before the commit"); } })),
      "INTERNAL",
      /injected/,
    );
    expect(other.store.list()).toEqual([]);
    expect(volumeDirs(other.data)).toEqual([]);
    // What a SIGKILL after the renames and before the store write leaves: marked directories
    // without records, and a half-made scratch directory of another run.
    mkdirSync(path.join(other.data, "volumes", "work"), { recursive: true });
    cpSync(volumes.dir("bank"), path.join(other.data, "volumes", "work"), { recursive: true });
    writeFileSync(path.join(other.data, "volumes", "work", ".restoring"), backupId);
    mkdirSync(path.join(other.data, "volumes", `bank.partial-${process.pid}`));
    const r = await restoreBackup(restoreOpts(other, file));
    expect(r.domains.map((d) => d.name)).toEqual(["tmpl", "work", "bank"]);
    expect(volumeDirs(other.data)).toEqual(["bank", "tmpl", "work"]);
    expect(guestView(other.volumes.files("work").private, "qcow2")).toBe(guestView(volumes.files("work").private, "qcow2"));
    // A directory without the marker is someone's data: refused, never removed.
    const third = host(path.join(base, "third"));
    mkdirSync(third.volumes.dir("bank"), { recursive: true });
    await expectCode(restoreBackup(restoreOpts(third, file)), "ALREADY_EXISTS", /exists without a domain/);
    expect(existsSync(third.volumes.dir("bank"))).toBe(true);
  });
});
