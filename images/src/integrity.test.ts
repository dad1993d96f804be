import { linkSync, mkdtempSync, openSync, rmSync, utimesSync, writeFileSync, writeSync, closeSync, copyFileSync, statSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ImageIntegrity, VERIFIED_CACHE_FILE } from "./integrity.js";
import { ImageStore } from "./store.js";

let dir: string;
let store: ImageStore;
let logs: string[];
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-integrity-"));
  store = new ImageStore(path.join(dir, "images"));
  logs = [];
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function makeKernel(): Promise<void> {
  await store.publish("kernels", "k1", async (d) => {
    writeFileSync(path.join(d, "vmlinuz"), "kernel image");
    writeFileSync(path.join(d, "initrd.img"), "initramfs");
    writeFileSync(path.join(d, "modules.img"), Buffer.alloc(64 * 1024, 7));
    return { kind: "kernel", hash: "k1", kernelRelease: "6.1", packageVersion: "1", builtAt: "2026-11-30T00:00:00Z", files: { vmlinuz: "vmlinuz", initrd: "initrd.img", modules: "modules.img" } };
  });
}

async function makeTemplate(name: string): Promise<void> {
  await store.publish(`templates/${name}`, "t1", async (d) => {
    writeFileSync(path.join(d, "root.img"), Buffer.alloc(128 * 1024, 1));
    return { kind: "template", name, hash: "t1", suite: "bookworm", builtAt: "2026-11-30T00:00:00Z", sizeBytes: 128 * 1024, files: { root: "root.img" } };
  });
}

/** Overwrites one byte in place, keeping size and (like a careless tool) the old mtime. */
function flipByte(file: string, offset: number, keepMtime = false): void {
  const before = statSync(file);
  const fd = openSync(file, "r+");
  writeSync(fd, Buffer.from([0xff]), 0, 1, offset);
  closeSync(fd);
  if (keepMtime) utimesSync(file, before.atime, before.mtime);
}

const integrity = () => new ImageIntegrity(store, (m) => logs.push(m));

describe("integrity of what boots", () => {
  it("records each file's sha256 in the manifest when an entry is made", async () => {
    await makeKernel();
    const k = store.kernel();
    expect(Object.keys(k.manifest.sha256 ?? {}).sort()).toEqual(["initrd", "modules", "vmlinuz"]);
    expect(k.manifest.sha256?.vmlinuz).toMatch(/^[0-9a-f]{64}$/);
  });

  it("passes an intact kernel bundle, hashing it only when a file changed since its last good check", async () => {
    await makeKernel();
    // Hashed when it was made: the first boot does not hash again.
    await integrity().checkKernel(store.kernel());
    expect(logs).toEqual([]);
    // Without the record of good checks, everything is hashed once more, then remembered.
    rmSync(path.join(store.root, VERIFIED_CACHE_FILE));
    await integrity().checkKernel(store.kernel());
    expect(logs.filter((l) => l.includes("checking"))).toHaveLength(3);
    logs = [];
    await integrity().checkKernel(store.kernel());
    expect(logs).toEqual([]);
  });

  it("refuses a kernel bundle whose file changed, naming the file and the fix", async () => {
    await makeKernel();
    await integrity().checkKernel(store.kernel());
    flipByte(store.kernel().modules, 100);
    await expect(integrity().checkKernel(store.kernel())).rejects.toMatchObject({
      code: "CORRUPT_STATE",
      message: expect.stringMatching(/modules\.img does not match its manifest.*qvm-images build kernel --force/),
    });
  });

  it("refuses a missing file", async () => {
    await makeKernel();
    rmSync(store.kernel().initrd);
    await expect(integrity().checkKernel(store.kernel())).rejects.toMatchObject({ code: "CORRUPT_STATE", message: expect.stringContaining("is missing") });
  });

  it("checks a domain's root while it is the template image's own file, and not once it is the domain's copy", async () => {
    await makeTemplate("debian-12");
    const image = store.template("debian-12");
    const linked = path.join(dir, "root-linked.img");
    const copied = path.join(dir, "root-copied.img");
    linkSync(image.root, linked);
    copyFileSync(image.root, copied);
    await integrity().checkTemplateRoot(linked);
    flipByte(image.root, 5);
    await expect(integrity().checkTemplateRoot(linked)).rejects.toMatchObject({
      code: "CORRUPT_STATE",
      message: expect.stringMatching(/template image debian-12: .*root\.img does not match its manifest.*qvm template build debian-12/),
    });
    flipByte(copied, 5);
    await integrity().checkTemplateRoot(copied);
  });

  it("verify hashes everything and tells ok, mismatch, missing and unrecorded apart", async () => {
    await makeKernel();
    await makeTemplate("debian-12");
    await makeTemplate("old");
    // An entry made before digests existed.
    const oldManifest = path.join(store.template("old").dir, "manifest.json");
    const m = JSON.parse(await import("node:fs").then((fs) => fs.readFileSync(oldManifest, "utf8"))) as Record<string, unknown>;
    delete m.sha256;
    writeFileSync(oldManifest, JSON.stringify(m));
    // A change that keeps size and mtime still shows in a full verify.
    flipByte(store.template("debian-12").root, 9, true);
    rmSync(store.kernel().vmlinuz);
    const reports = await integrity().verifyAll();
    const results = Object.fromEntries(reports.flatMap((r) => r.files.map((f) => [`${r.kind}:${r.name}:${f.key}`, f.result])));
    expect(results).toEqual({
      "kernel:k1:vmlinuz": "missing",
      "kernel:k1:initrd": "ok",
      "kernel:k1:modules": "ok",
      "template:debian-12:root": "mismatch",
      "template:old:root": "unrecorded",
    });
  });

  it("passes an entry without recorded digests, saying so", async () => {
    await makeKernel();
    const k = store.kernel();
    const { sha256: _dropped, ...manifest } = k.manifest;
    await integrity().checkKernel({ ...k, manifest });
    expect(logs.join("\n")).toContain("has no recorded digests");
  });
});
