// Backups of encrypted domains (encrypted=True) against real files and the real qemu-img/qemu-io:
// the private volume travels as its qcow2 ciphertext with its key parameters, comes back byte for
// byte under the same passphrase, and a running one is read from its last revision through the
// key qvmd holds while it runs (still encrypted), or refused when qvmd holds none.
import { execFileSync, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isQvmError } from "@qvm/protocol";
import type { DomainRecord } from "../model/domain.js";
import { DomainStore } from "../store/domain-store.js";
import { createSnapshot } from "../storage/qemu-img.js";
import { secretFd } from "../storage/secret-fd.js";
import type { VolumeKey } from "../storage/volume-key.js";
import { KEY_FILE, VolumeStore } from "../storage/volumes.js";
import { backupDomains, restoreBackup, type BackupDomainsOptions } from "./index.js";

const PASS = "vault passphrase";
const DOMAIN_PASS = "the domain's own passphrase";
const WEAK = { scrypt: { logN: 10, r: 8, p: 1 }, weakKdfForTests: true };

let base: string;
let data: string;
let store: DomainStore;
let volumes: VolumeStore;
const running = new Set<string>();
const held = new Map<string, VolumeKey>();

function record(name: string): DomainRecord {
  return { name, class: "AppVM", props: { label: "black", template: "tmpl", encrypted: true }, features: {}, tags: [], createdAt: "2026-01-01T00:00:00.000Z", qid: 9 };
}

/** qemu-io through the key (a guest's view); its output. */
function io(file: string, key: VolumeKey, command: string): string {
  const fd = secretFd(key.base64());
  try {
    const r = spawnSync("qemu-io", ["--object", "secret,id=k,file=/proc/self/fd/3", "--image-opts", `driver=qcow2,file.filename=${file},encrypt.key-secret=k`, "-c", command], {
      stdio: ["ignore", "pipe", "pipe", fd],
      encoding: "utf8",
    });
    return r.stdout + r.stderr;
  } finally {
    closeSync(fd);
  }
}

function backupOpts(output: string, extra: Partial<BackupDomainsOptions> = {}): BackupDomainsOptions {
  return {
    dataDir: data, store, volumes, policyDir: path.join(data, "policy.d"), names: ["vault"], includeRoot: false, output, passphrase: PASS,
    isRunning: (n) => running.has(n), volumeKey: (n) => held.get(n), scrypt: { logN: 10, r: 1, p: 1 }, weakKdfForTests: true, ...extra,
  };
}

async function restoreFresh(file: string): Promise<{ dir: string; store: DomainStore; volumes: VolumeStore }> {
  const dir = path.join(base, `restored-${Math.random().toString(36).slice(2)}`);
  const h = { dir, store: DomainStore.open(dir), volumes: new VolumeStore(dir, WEAK) };
  h.store.create({ name: "tmpl", class: "TemplateVM", props: { label: "black" }, features: {}, tags: [], createdAt: "2026-01-01T00:00:00.000Z" });
  await restoreBackup({ dataDir: dir, store: h.store, volumes: h.volumes, policyDir: path.join(dir, "policy.d"), file, passphrase: PASS, names: [], renameConflicts: false, weakKdfForTests: true });
  return h;
}

beforeEach(async () => {
  base = mkdtempSync(path.join(os.tmpdir(), "qvm-vault-enc-"));
  data = path.join(base, "data");
  store = DomainStore.open(data);
  volumes = new VolumeStore(data, WEAK);
  running.clear();
  held.clear();
  store.create({ name: "tmpl", class: "TemplateVM", props: { label: "black" }, features: {}, tags: [], createdAt: "2026-01-01T00:00:00.000Z" });
  await volumes.create("vault", "AppVM", { privateMiB: 16, passphrase: DOMAIN_PASS });
  store.create(record("vault"));
});
afterEach(() => rmSync(base, { recursive: true, force: true }));

describe("backups of encrypted domains", () => {
  it("carry a halted one's ciphertext and key parameters; the restore opens with the same passphrase", async () => {
    const key = await volumes.unlock("vault", DOMAIN_PASS);
    io(volumes.files("vault").private, key, "write -P 0x5a 2M 256k");
    key.wipe();
    const file = path.join(base, "b.vault");
    await backupDomains(backupOpts(file));

    const h = await restoreFresh(file);
    expect(h.store.get("vault")?.props.encrypted).toBe(true);
    expect(readFileSync(h.volumes.files("vault").private).equals(readFileSync(volumes.files("vault").private))).toBe(true);
    expect(readFileSync(path.join(h.volumes.dir("vault"), KEY_FILE), "utf8")).toBe(readFileSync(volumes.files("vault").key, "utf8"));
    expect(isQvmError(await h.volumes.unlock("vault", "wrong").catch((e: unknown) => e), "PERMISSION_DENIED")).toBe(true);
    const back = await h.volumes.unlock("vault", DOMAIN_PASS);
    expect(io(h.volumes.files("vault").private, back, "read -P 0x5a 2M 256k")).toMatch(/read 262144\/262144/);
    back.wipe();
  });

  it("read a running one from its last revision through the key qvmd holds, still encrypted", async () => {
    const key = await volumes.unlock("vault", DOMAIN_PASS);
    io(volumes.files("vault").private, key, "write -P 0x11 1M 64k");
    await createSnapshot(volumes.files("vault").private, "rev-1", key); // what a start takes
    io(volumes.files("vault").private, key, "write -P 0x22 1M 64k"); // after the start: not in the backup
    running.add("vault");
    held.set("vault", key);
    const notes: string[] = [];
    const file = path.join(base, "run.vault");
    await backupDomains(backupOpts(file, { onNote: (m) => notes.push(m) }));
    expect(notes.join("\n")).toMatch(/vault is running: backed up as of its last start \(revision rev-1\), still encrypted/);

    const h = await restoreFresh(file);
    const back = await h.volumes.unlock("vault", DOMAIN_PASS);
    expect(io(h.volumes.files("vault").private, back, "read -P 0x11 1M 64k")).toMatch(/read 65536\/65536/);
    back.wipe();
    key.wipe();
  });

  it("read the volume and its key file as one state, under the domain's lock (a passphrase changed after planning is the one restored)", async () => {
    const file = path.join(base, "changed.vault");
    const withLock = async <T>(_name: string, fn: () => Promise<T>): Promise<T> => {
      await volumes.changePassphrase("vault", DOMAIN_PASS, "changed meanwhile"); // before the lock is ours
      return fn();
    };
    await backupDomains(backupOpts(file, { withLock }));
    const h = await restoreFresh(file);
    expect(isQvmError(await h.volumes.unlock("vault", DOMAIN_PASS).catch((e: unknown) => e), "PERMISSION_DENIED")).toBe(true);
    (await h.volumes.unlock("vault", "changed meanwhile")).wipe();
  });

  it("restore nothing from an 'encrypted' volume whose header would open another file", async () => {
    // A crafted source: a plain qcow2 over a host file, with a key file beside it.
    const f = volumes.files("vault").private;
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", "/etc/hostname", f, "1M"]);
    const file = path.join(base, "crafted.vault");
    await backupDomains(backupOpts(file));
    const dir = path.join(base, "victim");
    const h = { store: DomainStore.open(dir), volumes: new VolumeStore(dir, WEAK) };
    h.store.create({ name: "tmpl", class: "TemplateVM", props: { label: "black" }, features: {}, tags: [], createdAt: "2026-01-01T00:00:00.000Z" });
    const err = await restoreBackup({ dataDir: dir, store: h.store, volumes: h.volumes, policyDir: path.join(dir, "policy.d"), file, passphrase: PASS, names: [], renameConflicts: false, weakKdfForTests: true }).catch((e: unknown) => e);
    expect(isQvmError(err, "CORRUPT_STATE") && err.message).toMatch(/vault:private's encrypted volume is refused: it names a backing file; nothing was restored/);
    expect(h.store.get("vault")).toBeUndefined();
    expect(existsSync(h.volumes.dir("vault"))).toBe(false);
  });

  it("refuse a running one whose key qvmd does not hold, before writing anything", async () => {
    running.add("vault");
    const file = path.join(base, "no.vault");
    const err = await backupDomains(backupOpts(file)).catch((e: unknown) => e);
    expect(isQvmError(err, "FAILED_PRECONDITION") && err.message).toMatch(/vault is encrypted and running, and qvmd does not hold its key.*qvm shutdown --wait vault/);
    expect(existsSync(file)).toBe(false);
  });
});
