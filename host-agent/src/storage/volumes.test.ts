// VolumeStore against real files and the real qemu-img/qemu-io (no VMs): what each class gets,
// where per-start overlays live (DATA/volatile, not the runtime directory) and what they read
// through, how far they may grow, how a template's root changes are committed into a new file
// with the old one kept as a revision, private revisions, and what a crash or a restored store
// leaves: half-made volumes removed, every other domain-less directory kept aside.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readSync, closeSync, rmSync, statSync, writeFileSync } from "node:fs";
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
    const disks = await store.prepareStart("tmpl", "TemplateVM", { revisionsToKeep: 1 });
    expect(disks.map((d) => [d.serial, path.basename(d.path)])).toEqual([["root", "root-dirty.qcow2"], ["private", "private.qcow2"]]);
    expect(disks.map((d) => d.backingFiles)).toEqual([[store.files("tmpl").root], undefined]);
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
    await store.prepareStart("app", "AppVM", { templateRoot: tmplRoot, revisionsToKeep: 2 });
    guestWrite(priv, 8 << 20, 0x11);
    await store.prepareStart("app", "AppVM", { templateRoot: tmplRoot, revisionsToKeep: 2 });
    guestWrite(priv, 8 << 20, 0x22);
    await new Promise((r) => setTimeout(r, 5)); // revision names are millisecond times
    await store.prepareStart("app", "AppVM", { templateRoot: tmplRoot, revisionsToKeep: 2 });
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
    await expect(store.prepareStart("app", "AppVM", { templateRoot: path.join(base, "gone.img"), revisionsToKeep: 1 })).rejects.toMatchObject({
      code: "MISSING_DEPENDENCY",
      message: expect.stringContaining("qvm template build"),
    });
  });

  it("puts an AppVM's root overlay in DATA/volatile/NAME, over the template's root, wiped at every start", async () => {
    await store.create("app", "AppVM");
    const [root, priv] = await store.prepareStart("app", "AppVM", { templateRoot: image, revisionsToKeep: 0 });
    expect(root).toMatchObject({ serial: "root", path: path.join(base, "data/volatile/app/root.qcow2"), format: "qcow2", readonly: false, backingFiles: [image] });
    expect(priv).toEqual({ serial: "private", path: store.files("app").private, format: "qcow2", readonly: false });
    guestWrite(root!.path, 0, 0x77);
    writeFileSync(path.join(store.volatileDir("app"), "left-over"), "x");
    await store.prepareStart("app", "AppVM", { templateRoot: image, revisionsToKeep: 0 });
    expect(readdirSync(store.volatileDir("app"))).toEqual(["root.qcow2"]);
    expect(execFileSync("qemu-io", ["-f", "qcow2", "-c", "read -P 0 0 4k", root!.path], { encoding: "utf8" })).not.toMatch(/Pattern verification failed/);
    store.discardVolatile("app");
    expect(existsSync(store.volatileDir("app"))).toBe(false);
    expect(store.volatileNames()).toEqual([]);
  });

  it("gives a DispVM both overlays in its volatile directory, each naming what it reads through", async () => {
    await store.create("dvm", "AppVM");
    const disks = await store.prepareStart("disp1", "DispVM", { templateRoot: image, templatePrivate: store.files("dvm").private, revisionsToKeep: 1 });
    expect(disks.map((d) => [d.serial, d.path, d.backingFiles])).toEqual([
      ["root", path.join(store.volatileDir("disp1"), "root.qcow2"), [image]],
      ["private", path.join(store.volatileDir("disp1"), "private.qcow2"), [store.files("dvm").private]],
    ]);
    expect(store.exists("disp1")).toBe(false); // nothing in DATA/volumes
    expect(store.volatileNames()).toEqual(["disp1"]);
  });

  it("tells how far overlays may grow: virtual sizes before a start, virtual minus allocated while running", async () => {
    await store.create("app", "AppVM", { privateMiB: 32 });
    expect(await store.plannedGrowth("app", "AppVM", { templateRoot: image })).toBe(64 << 20);
    expect(await store.plannedGrowth("disp1", "DispVM", { templateRoot: image, templatePrivate: store.files("app").private })).toBe((64 + 32) << 20);
    expect(await store.plannedGrowth("app", "AppVM", { templateRoot: path.join(base, "gone.img") })).toBe(0);
    expect(await store.overlayGrowth("app")).toBe(0); // not running: no overlays
    await store.prepareStart("app", "AppVM", { templateRoot: image, revisionsToKeep: 0 });
    const before = await store.overlayGrowth("app");
    expect(before).toBeGreaterThan(63 << 20);
    expect(before).toBeLessThanOrEqual(64 << 20);
    execFileSync("qemu-io", ["-f", "qcow2", "-c", "write -P 1 0 16M", path.join(store.volatileDir("app"), "root.qcow2")], { stdio: "ignore" });
    const after = await store.overlayGrowth("app");
    expect(before - after).toBeGreaterThanOrEqual(16 << 20);
    expect(store.freeBytes()).toBeGreaterThan(0);
  });

  it("at start removes half-made volumes and keeps every other domain-less directory aside, untouched", async () => {
    await store.create("app", "AppVM");
    await store.create("lost", "AppVM");
    const lostPrivate = readFileSync(store.files("lost").private);
    mkdirSync(path.join(base, "data/volumes/half.partial-123"), { recursive: true });
    mkdirSync(path.join(base, "data/volumes/weird"), { recursive: true });
    const now = new Date("2026-11-30T12:34:56.789Z");
    const sweep = store.sweepOrphans((n) => n === "app", now);
    expect(sweep).toEqual({ removed: ["half.partial-123"], kept: [{ name: "lost", id: "lost-20261130T123456Z" }, { name: "weird", id: "weird-20261130T123456Z" }] });
    expect(readdirSync(path.join(base, "data/volumes")).sort()).toEqual([".orphans", "app"]);
    // The same name kept aside twice in one second gets its own id.
    mkdirSync(path.join(base, "data/volumes/weird"), { recursive: true });
    expect(store.sweepOrphans((n) => n === "app", now).kept).toEqual([{ name: "weird", id: "weird-20261130T123456Z.2" }]);
    expect(store.sweepOrphans((n) => n === "app", now)).toEqual({ removed: [], kept: [] }); // .orphans itself is never swept

    const list = store.listOrphans();
    expect(list.map((o) => [o.id, o.name, o.keptAt, o.hasPrivate, o.hasRoot])).toEqual([
      ["lost-20261130T123456Z", "lost", "2026-11-30T12:34:56Z", true, false],
      ["weird-20261130T123456Z", "weird", "2026-11-30T12:34:56Z", false, false],
      ["weird-20261130T123456Z.2", "weird", "2026-11-30T12:34:56Z", false, false],
    ]);
    expect(list[0]!.files).toEqual(["private.qcow2"]);
    expect(list[0]!.usageBytes).toBeGreaterThan(0);

    store.restoreOrphan("lost-20261130T123456Z", "found");
    expect(readFileSync(store.files("found").private).equals(lostPrivate)).toBe(true);
    expect(() => store.restoreOrphan("lost-20261130T123456Z", "again")).toThrow(expect.objectContaining({ code: "NOT_FOUND" }));
    store.purgeOrphan("weird-20261130T123456Z");
    expect(store.listOrphans().map((o) => o.id)).toEqual(["weird-20261130T123456Z.2"]);
    // Ids are names that are there, never paths.
    expect(() => store.purgeOrphan("../app")).toThrow(expect.objectContaining({ code: "NOT_FOUND", message: expect.stringContaining("weird-20261130T123456Z.2") }));
    expect(() => store.purgeOrphan(".")).toThrow(expect.objectContaining({ code: "NOT_FOUND" }));
    expect(store.exists("app")).toBe(true);
  });

  it("refuses to restore kept-aside volumes over a domain's directory", async () => {
    await store.create("app", "AppVM");
    await store.create("lost", "AppVM");
    store.sweepOrphans((n) => n === "app", new Date("2026-11-30T00:00:00Z"));
    expect(() => store.restoreOrphan("lost-20261130T000000Z", "app")).toThrow(expect.objectContaining({ code: "ALREADY_EXISTS" }));
    expect(store.listOrphans()).toHaveLength(1);
  });

  it("removing a domain's volumes removes its volatile directory too", async () => {
    await store.create("app", "AppVM");
    await store.prepareStart("app", "AppVM", { templateRoot: image, revisionsToKeep: 0 });
    store.remove("app");
    expect(existsSync(store.dir("app"))).toBe(false);
    expect(existsSync(store.volatileDir("app"))).toBe(false);
  });

  it("never shrinks a volume", async () => {
    await store.create("app", "AppVM", { privateMiB: 64 });
    await expect(store.resizePrivate("app", 32 * 1024 * 1024)).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringMatching(/only grow/) });
    await store.resizePrivate("app", 128 * 1024 * 1024);
    expect(existsSync(store.growFlag("app"))).toBe(true);
  });
});
