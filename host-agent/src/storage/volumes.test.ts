// VolumeStore against real files and the real qemu-img/qemu-io (no VMs): what each class gets,
// how a template's root changes are committed into a new file with the old one kept as a
// revision, private revisions, and what a crash leaves to clean up.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, openSync, readSync, closeSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { VolumeStore } from "./volumes.js";

let base: string;
let store: VolumeStore;
let image: string;

beforeEach(() => {
  base = mkdtempSync(path.join(os.tmpdir(), "qvm-volumes-"));
  store = new VolumeStore(path.join(base, "data"));
  image = path.join(base, "image-root.img");
  execFileSync("truncate", ["-s", "64M", image]);
});
afterEach(() => rmSync(base, { recursive: true, force: true }));

/** Writes `byte` over 4 KiB at `offset` of a qcow2 image through qemu-io, as a guest would. */
function guestWrite(file: string, offset: number, byte: number): void {
  execFileSync("qemu-io", ["-f", "qcow2", "-c", `write -P ${byte} ${offset} 4k`, file], { stdio: "ignore" });
}

function byteAt(file: string, offset: number): number {
  const fd = openSync(file, "r");
  const b = Buffer.alloc(1);
  readSync(fd, b, 0, 1, offset);
  closeSync(fd);
  return b[0]!;
}

describe("VolumeStore", () => {
  it("an AppVM gets only a private volume; a TemplateVM's root is the image, hard-linked, never copied", async () => {
    await store.create("app", "AppVM");
    await store.create("tmpl", "TemplateVM", { rootFrom: image });
    expect(existsSync(store.files("app").private)).toBe(true);
    expect(existsSync(store.files("app").root)).toBe(false);
    expect(statSync(store.files("tmpl").root).ino).toBe(statSync(image).ino);
    await store.create("disp", "DispVM");
    expect(store.exists("disp")).toBe(false); // nothing persistent
  });

  it("commits a template's changes into a new root file and keeps the old one as a revision", async () => {
    await store.create("tmpl", "TemplateVM", { rootFrom: image });
    const run = path.join(base, "run");
    const disks = await store.prepareStart("tmpl", "TemplateVM", run, { revisionsToKeep: 1 });
    expect(disks.map((d) => [d.serial, path.basename(d.path)])).toEqual([["root", "root-dirty.qcow2"], ["private", "private.qcow2"]]);
    guestWrite(store.files("tmpl").rootDirty, 1 << 20, 0x5a);
    const oldInode = statSync(store.files("tmpl").root).ino;
    expect(await store.commitRoot("tmpl", 1)).toBe(true);
    const root = store.files("tmpl").root;
    expect(byteAt(root, 1 << 20)).toBe(0x5a);
    expect(statSync(root).ino).not.toBe(oldInode); // a new file: running AppVMs keep the old one
    expect(byteAt(image, 1 << 20)).toBe(0); // the image itself is untouched
    expect(existsSync(store.files("tmpl").rootDirty)).toBe(false);
    // The previous root is a revision, and reverting brings it back.
    expect(store.revertRoot("tmpl")).toMatch(/^rev-\d+$/);
    expect(byteAt(root, 1 << 20)).toBe(0);
    expect(await store.commitRoot("tmpl", 1)).toBe(false); // nothing dirty
  });

  it("takes a private revision before each start, keeps revisions_to_keep of them, and reverts to one", async () => {
    await store.create("app", "AppVM");
    const priv = store.files("app").private;
    const tmplRoot = image;
    const run = path.join(base, "run");
    await store.prepareStart("app", "AppVM", run, { templateRoot: tmplRoot, revisionsToKeep: 2 });
    guestWrite(priv, 8 << 20, 0x11);
    await store.prepareStart("app", "AppVM", run, { templateRoot: tmplRoot, revisionsToKeep: 2 });
    guestWrite(priv, 8 << 20, 0x22);
    await new Promise((r) => setTimeout(r, 5)); // revision names are millisecond times
    await store.prepareStart("app", "AppVM", run, { templateRoot: tmplRoot, revisionsToKeep: 2 });
    const [v] = await store.list("app", "AppVM", tmplRoot);
    expect(v!.revisions).toHaveLength(2);
    guestWrite(priv, 8 << 20, 0x33);
    await store.revertPrivate("app"); // the newest: taken when the 0x22 content was there
    const out = execFileSync("qemu-io", ["-f", "qcow2", "-c", `read -P 0x22 ${8 << 20} 4k`, priv], { encoding: "utf8" });
    expect(out).not.toMatch(/Pattern verification failed/);
    await expect(store.revertPrivate("app", "rev-0")).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("an AppVM whose template lost its root cannot start, and says how to rebuild it", async () => {
    await store.create("app", "AppVM");
    await expect(store.prepareStart("app", "AppVM", path.join(base, "run"), { templateRoot: path.join(base, "gone.img"), revisionsToKeep: 1 })).rejects.toMatchObject({
      code: "MISSING_DEPENDENCY",
      message: expect.stringContaining("qvm template build"),
    });
  });

  it("lists partial and domain-less volume directories as orphans", async () => {
    await store.create("app", "AppVM");
    mkdirSync(path.join(base, "data/volumes/half.partial-123"), { recursive: true });
    mkdirSync(path.join(base, "data/volumes/removed"), { recursive: true });
    writeFileSync(path.join(base, "data/volumes/removed/private.qcow2"), "");
    expect(store.orphans((n) => n === "app").sort()).toEqual(["half.partial-123", "removed"]);
  });

  it("never shrinks a volume", async () => {
    await store.create("app", "AppVM", { privateMiB: 64 });
    await expect(store.resizePrivate("app", 32 * 1024 * 1024)).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(/only grow/) });
    await store.resizePrivate("app", 128 * 1024 * 1024);
    expect(existsSync(store.growFlag("app"))).toBe(true);
  });
});
