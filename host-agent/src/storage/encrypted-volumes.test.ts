// Encrypted private volumes (encrypted=True) against real files and the real qemu-img/qemu-io:
// made under a passphrase, unlocked only by it, never holding the guest's data in clear, and the
// volume operations (revisions, revert, resize, clone) done through the key.
import { execFileSync, spawnSync } from "node:child_process";
import { closeSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isQvmError } from "@qvm/protocol";
import { checkKey, imageInfo, listSnapshots } from "./qemu-img.js";
import { secretFd } from "./secret-fd.js";
import { VolumeKey, keyFileSchema, parseKeyFile } from "./volume-key.js";
import { KEY_FILE, VolumeStore } from "./volumes.js";

const WEAK = { scrypt: { logN: 10, r: 8, p: 1 }, weakKdfForTests: true };

let base: string;
let store: VolumeStore;
let image: string;

beforeEach(() => {
  base = mkdtempSync(path.join(os.tmpdir(), "qvm-encvol-"));
  store = new VolumeStore(path.join(base, "data"), WEAK);
  image = path.join(base, "template-root.img");
  execFileSync("truncate", ["-s", "64M", image]);
});
afterEach(() => rmSync(base, { recursive: true, force: true }));

/** qemu-io on the encrypted image under `key`, as a guest's writes and reads would reach it; its output. */
function qemuIo(file: string, key: VolumeKey, command: string): string {
  const fd = secretFd(key.base64());
  try {
    const r = spawnSync(
      "qemu-io",
      ["--object", `secret,id=k,file=/proc/self/fd/3`, "--image-opts", `driver=qcow2,file.filename=${file},encrypt.key-secret=k`, "-c", command],
      { stdio: ["ignore", "pipe", "pipe", fd], encoding: "utf8" },
    );
    return r.stdout + r.stderr;
  } finally {
    closeSync(fd);
  }
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => undefined,
    (e: unknown) => e,
  );
}

describe("encrypted private volumes", () => {
  it("are LUKS qcow2 files with a key file beside them, and hold no written data in clear", async () => {
    await store.create("vault", "AppVM", { passphrase: "correct horse" });
    const f = store.files("vault");
    expect(store.isEncrypted("vault")).toBe(true);
    expect(keyFileSchema.parse(JSON.parse(readFileSync(f.key, "utf8")))).toMatchObject({ kdf: "scrypt", logN: 10 });
    expect((await imageInfo(f.private, "qcow2")).encrypted).toBe(true);
    const key = await store.unlock("vault", "correct horse");
    qemuIo(f.private, key, `write -P 0x61 1M 64k`);
    expect(qemuIo(f.private, key, "read -P 0x61 1M 64k")).toMatch(/read 65536\/65536/);
    // 64 KiB of 'a' in the guest's view; none of it in the file.
    expect(readFileSync(f.private).includes(Buffer.alloc(4096, 0x61))).toBe(false);
    key.wipe();
    expect(() => key.base64()).toThrow(/wiped/);
  });

  it("a wrong passphrase is PERMISSION_DENIED and none at all PASSPHRASE_REQUIRED; nothing changes", async () => {
    await store.create("vault", "AppVM", { passphrase: "right" });
    const before = readFileSync(store.files("vault").private);
    const wrong = await rejection(store.unlock("vault", "wrong"));
    expect(isQvmError(wrong, "PERMISSION_DENIED") && wrong.message).toMatch(/wrong passphrase for vault/);
    const none = await rejection(store.prepareStart("vault", "AppVM", { templateRoot: image, revisionsToKeep: 1 }));
    expect(isQvmError(none, "PASSPHRASE_REQUIRED") && none.message).toMatch(/vault is encrypted.*qvm start vault/);
    expect(readFileSync(store.files("vault").private).equals(before)).toBe(true);
  });

  it("a start takes the revision through the key and gives both disks keys: the private's and a fresh one for the volatile root", async () => {
    await store.create("vault", "AppVM", { passphrase: "pw" });
    const key = await store.unlock("vault", "pw");
    const disks = await store.prepareStart("vault", "AppVM", { templateRoot: image, revisionsToKeep: 1, key });
    const [root, priv] = disks;
    expect(priv!.key).toBe(key);
    expect(root!.key).toBeInstanceOf(VolumeKey);
    expect(root!.key).not.toBe(key);
    expect((await imageInfo(root!.path, "qcow2")).encrypted).toBe(true);
    expect((await listSnapshots(store.files("vault").private)).map((s) => s.name)).toEqual([expect.stringMatching(/^rev-/)]);
    // The keys never print.
    expect(JSON.stringify(disks)).not.toMatch(/[A-Za-z0-9+/]{43}=/);
    expect(JSON.stringify(disks)).toContain("[volume key]");
  });

  it("revert and resize of a halted encrypted domain need the key", async () => {
    await store.create("vault", "AppVM", { passphrase: "pw", privateMiB: 64 });
    const key = await store.unlock("vault", "pw");
    await store.prepareStart("vault", "AppVM", { templateRoot: image, revisionsToKeep: 1, key });
    qemuIo(store.files("vault").private, key, "write -P 0x62 0 4k");
    expect(isQvmError(await rejection(store.revertPrivate("vault")), "PASSPHRASE_REQUIRED")).toBe(true);
    await store.revertPrivate("vault", undefined, key);
    expect(qemuIo(store.files("vault").private, key, "read -P 0x62 0 4k")).toMatch(/Pattern verification failed/);
    expect(isQvmError(await rejection(store.resizePrivate("vault", 128 * 1024 ** 2)), "PASSPHRASE_REQUIRED")).toBe(true);
    await store.resizePrivate("vault", 128 * 1024 ** 2, key);
    expect((await imageInfo(store.files("vault").private, "qcow2")).virtualSize).toBe(128 * 1024 ** 2);
  });

  it("a clone is the same ciphertext with the same key file: the same passphrase opens it", async () => {
    await store.create("vault", "AppVM", { passphrase: "pw" });
    await store.clone("vault", "vault2");
    expect(existsSync(path.join(store.dir("vault2"), KEY_FILE))).toBe(true);
    (await store.unlock("vault2", "pw")).wipe();
    expect(isQvmError(await rejection(store.unlock("vault2", "other")), "PERMISSION_DENIED")).toBe(true);
  });

  it("a damaged key file is CORRUPT_STATE naming it, not a wrong passphrase", async () => {
    await store.create("vault", "AppVM", { passphrase: "pw" });
    writeFileSync(store.files("vault").key, '{"format":"qvm-volume-key","version":1,"kdf":"scrypt","logN":40,"r":8,"p":1,"salt":"x"}');
    const err = await rejection(store.unlock("vault", "pw"));
    expect(isQvmError(err, "CORRUPT_STATE") && err.message).toContain(KEY_FILE);
  });
});

describe("changing an encrypted volume's passphrase", () => {
  it("opens with the new one only, keeps the data, and refuses a wrong old one changing nothing", async () => {
    await store.create("vault", "AppVM", { passphrase: "old" });
    const key = await store.unlock("vault", "old");
    qemuIo(store.files("vault").private, key, "write -P 0x33 0 64k");
    key.wipe();
    const keyFile = readFileSync(store.files("vault").key, "utf8");
    expect(isQvmError(await rejection(store.changePassphrase("vault", "not it", "new")), "PERMISSION_DENIED")).toBe(true);
    expect(readFileSync(store.files("vault").key, "utf8")).toBe(keyFile);
    await store.changePassphrase("vault", "old", "new");
    expect(isQvmError(await rejection(store.unlock("vault", "old")), "PERMISSION_DENIED")).toBe(true);
    const back = await store.unlock("vault", "new");
    expect(qemuIo(store.files("vault").private, back, "read -P 0x33 0 64k")).toMatch(/read 65536\/65536/);
    back.wipe();
    // The old key itself (old passphrase, old salt) no longer opens any slot.
    const oldKey = await VolumeKey.derive("old", parseKeyFile(keyFile, "old", WEAK));
    expect(isQvmError(await rejection(checkKey(store.files("vault").private, oldKey)), "PERMISSION_DENIED")).toBe(true);
  });
});

describe("encrypted root overlays made ahead", () => {
  it("a start takes the spare (no new LUKS header), under its own key; a changed template root or a remove discards it", async () => {
    await store.create("vault", "AppVM", { passphrase: "pw" });
    await store.makeSpareOverlay("vault", image);
    const spares = () => readdirSync(path.join(store.dataDir, "volatile", ".spare"));
    expect(spares()).toHaveLength(1);
    const key = await store.unlock("vault", "pw");
    const t0 = performance.now();
    const [root] = await store.prepareStart("vault", "AppVM", { templateRoot: image, revisionsToKeep: 0, key });
    expect(performance.now() - t0).toBeLessThan(900); // no header made: creating one takes qemu-img 2 s here
    expect(spares()).toEqual([]);
    expect((await imageInfo(root!.path, "qcow2")).encrypted).toBe(true);
    expect(qemuIo(root!.path, root!.key as VolumeKey, "write -P 0x44 0 4k")).toMatch(/wrote 4096/);
    expect(store.volatileNames()).toEqual(["vault"]);

    // A template root of another size: the spare is not used (a fresh overlay is made).
    await store.makeSpareOverlay("vault", image);
    execFileSync("truncate", ["-s", "65M", image]);
    const [again] = await store.prepareStart("vault", "AppVM", { templateRoot: image, revisionsToKeep: 0, key });
    expect(spares()).toEqual([]);
    expect((await imageInfo(again!.path, "qcow2")).virtualSize).toBe(65 * 1024 ** 2);
    await store.makeSpareOverlay("vault", image);
    store.remove("vault");
    expect(spares()).toEqual([]);
    store.removeStaleSpareOverlays();
    expect(existsSync(path.join(store.dataDir, "volatile", ".spare"))).toBe(false);
  });
});
