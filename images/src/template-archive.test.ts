// Template archives: the round trip (export from one store, import into another: same bytes,
// sparse again) and the refusals. Import runs as root on untrusted archives, so each hostile
// archive below is built by hand with tar-stream and must be refused, naming the archive and what
// is wrong, with nothing left in the store.
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, truncateSync, writeFileSync, writeSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { extract, pack, type Header } from "tar-stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ImageStore } from "./store.js";
import { exportTemplateArchive, importTemplateArchive, MAX_TEMPLATE_MANIFEST_BYTES, type TemplateArchiveManifest } from "./template-archive.js";

const MiB = 1024 * 1024;
const RAW_BYTES = 4 * MiB;

let dir: string;
let source: ImageStore;
let target: ImageStore;
beforeEach(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), "qvm-template-archive-"));
  source = new ImageStore(path.join(dir, "source"));
  target = new ImageStore(path.join(dir, "target"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

/** A raw image of RAW_BYTES, sparse: 1 MiB of random bytes, a hole, 512 KiB more, a hole to the end. */
function writeRawImage(file: string): void {
  const fd = openSync(file, "w");
  try {
    writeSync(fd, randomBytes(MiB), 0, MiB, 0);
    writeSync(fd, randomBytes(MiB / 2), 0, MiB / 2, 2 * MiB);
  } finally {
    closeSync(fd);
  }
  truncateSync(file, RAW_BYTES);
}

/** A template image in `store` laid out the way ImageStore (and so a build) leaves it. */
function fakeTemplate(store: ImageStore, name: string, hash = "0123456789abcdef01234567"): string {
  const entry = store.entryDir(`templates/${name}`, hash);
  mkdirSync(entry, { recursive: true });
  writeRawImage(path.join(entry, "root.img"));
  const manifest = { kind: "template", name, hash, suite: "bookworm", builtAt: "2026-12-01T10:00:00.000Z", sizeBytes: RAW_BYTES, files: { root: "root.img" } };
  writeFileSync(path.join(entry, "manifest.json"), JSON.stringify(manifest));
  symlinkSync(hash, path.join(store.root, "templates", name, "current"));
  return path.join(entry, "root.img");
}

const sha256 = (data: Buffer) => createHash("sha256").update(data).digest("hex");
const zstd = (data: Buffer) => execFileSync("zstd", ["-q", "-c"], { input: data, maxBuffer: 64 * MiB });

/** Bytes a filesystem has allocated for `file` (what du counts). */
const allocated = (file: string) => statSync(file).blocks * 512;

interface Member {
  header: Partial<Header> & { name: string };
  body?: Buffer;
}

function tarBytes(members: Member[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const p = pack();
    const chunks: Buffer[] = [];
    p.on("data", (c) => chunks.push(c as Buffer));
    p.on("end", () => resolve(Buffer.concat(chunks)));
    p.on("error", reject);
    for (const m of members) p.entry({ mode: 0o644, ...m.header }, m.body ?? Buffer.alloc(0));
    p.finalize();
  });
}

/** The parts of a valid archive of a small (64 KiB, partly zero) root image, to build hostile ones from. */
function validParts(raw = Buffer.concat([randomBytes(16 * 1024), Buffer.alloc(48 * 1024)])) {
  const root = zstd(raw);
  const manifest: TemplateArchiveManifest = {
    format: "qvm-template/1",
    name: "nix-minimal",
    suite: "nixos-25.05",
    builtAt: "2026-12-01T10:00:00Z",
    root: { file: "root.img.zst", compressedBytes: root.length, sha256: sha256(root), sizeBytes: raw.length },
  };
  const manifestMember = (m: unknown = manifest): Member => {
    const body = Buffer.from(JSON.stringify(m));
    return { header: { name: "qvm-template.json", size: body.length }, body };
  };
  const rootMember = (body = root, size = body.length): Member => ({ header: { name: "root.img.zst", size }, body });
  return { raw, root, manifest, manifestMember, rootMember };
}

async function writeArchive(members: Member[], name = "hostile.tar"): Promise<string> {
  const file = path.join(dir, name);
  writeFileSync(file, await tarBytes(members));
  return file;
}

function writeRaw(bytes: Buffer, name = "raw.tar"): string {
  const file = path.join(dir, name);
  writeFileSync(file, bytes);
  return file;
}

/** Everything under `root`, as relative paths: what a refused import must not have added. */
function tree(root: string): string[] {
  if (!existsSync(root)) return [];
  return readdirSync(root, { recursive: true, encoding: "utf8" }).sort();
}

async function expectRefused(file: string, message: string | RegExp): Promise<void> {
  await expect(importTemplateArchive(target, file)).rejects.toMatchObject({
    code: "INVALID_ARGUMENT",
    message: expect.stringMatching(typeof message === "string" ? new RegExp(`^template archive ${file}: .*${escapeRegExp(message)}`) : message),
  });
  // Nothing left behind: no partial directory, no template directory, no image.
  expect(tree(target.root).filter((p) => p !== "templates")).toEqual([]);
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

describe("template archives", () => {
  it("round-trips a template: same bytes, sparse again, registered under the new name", async () => {
    const root = fakeTemplate(source, "debian-12");
    const archive = path.join(dir, "out", "debian-12.tar");
    mkdirSync(path.dirname(archive));
    const lines: string[] = [];
    const progress = { step: <T>(title: string, work: () => Promise<T>) => (lines.push(title), work()), info: () => {} };

    const manifest = await exportTemplateArchive(source, "debian-12", archive, { progress });
    expect(manifest).toMatchObject({ format: "qvm-template/1", name: "debian-12", suite: "bookworm", builtAt: "2026-12-01T10:00:00.000Z", root: { file: "root.img.zst", sizeBytes: RAW_BYTES } });
    expect(lines).toEqual(["exporting root (4.0 MiB)", expect.stringMatching(/^writing .*debian-12\.tar \(.*\)$/)]);
    // Atomic: only the archive is left beside it, no temp files.
    expect(readdirSync(path.dirname(archive))).toEqual(["debian-12.tar"]);
    // The archive holds exactly the two members, in order, and the manifest describes the second.
    const members: { name: string; type: string; body: Buffer }[] = [];
    const x = extract();
    x.end(readFileSync(archive));
    for await (const e of x) {
      const chunks: Buffer[] = [];
      for await (const c of e) chunks.push(c as Buffer);
      members.push({ name: e.header.name, type: e.header.type, body: Buffer.concat(chunks) });
    }
    expect(members.map((m) => [m.name, m.type])).toEqual([["qvm-template.json", "file"], ["root.img.zst", "file"]]);
    expect(JSON.parse(members[0]!.body.toString())).toEqual(manifest);
    expect(manifest.root).toMatchObject({ compressedBytes: members[1]!.body.length, sha256: sha256(members[1]!.body) });
    expect(execFileSync("tar", ["-tf", archive], { encoding: "utf8" })).toBe("qvm-template.json\nroot.img.zst\n");

    const imported = await importTemplateArchive(target, archive, { name: "debian-12-copy", progress });
    expect(lines[2]).toMatch(/^importing root \(.* → 4\.0 MiB\)$/);
    expect(sha256(readFileSync(imported.root))).toBe(sha256(readFileSync(root)));
    expect(statSync(imported.root).size).toBe(RAW_BYTES);
    expect(allocated(imported.root)).toBeLessThan(2 * MiB); // 1.5 MiB of data in a 4 MiB image
    const current = target.template("debian-12-copy");
    expect(current.root).toBe(imported.root);
    expect(current.manifest).toEqual({
      kind: "template", name: "debian-12-copy", hash: manifest.root.sha256.slice(0, 24), suite: "bookworm",
      builtAt: "2026-12-01T10:00:00.000Z", sizeBytes: RAW_BYTES, files: { root: "root.img" },
      // The integrity check's digest: of the raw root, as it lies in the store.
      sha256: { root: sha256(readFileSync(root)) },
    });
    expect(tree(path.join(target.root, "templates", "debian-12-copy")).filter((p) => p.includes(".partial-"))).toEqual([]);
  });

  it("refuses a name that already has an image, unless --replace (the old entry stays)", async () => {
    const { manifestMember, rootMember, manifest } = validParts();
    const file = await writeArchive([manifestMember(), rootMember()], "nix.tar");
    fakeTemplate(target, "nix-minimal", "old0old0old0old0old0old0");
    await expect(importTemplateArchive(target, file)).rejects.toMatchObject({ code: "ALREADY_EXISTS", message: expect.stringContaining("--replace") });
    expect(target.template("nix-minimal").manifest.hash).toBe("old0old0old0old0old0old0");

    const t = await importTemplateArchive(target, file, { replace: true });
    expect(t.manifest).toMatchObject({ hash: manifest.root.sha256.slice(0, 24), suite: "nixos-25.05" });
    expect(target.template("nix-minimal").manifest.hash).toBe(manifest.root.sha256.slice(0, 24));
    expect(readdirSync(path.join(target.root, "templates", "nix-minimal")).sort()).toEqual(["current", manifest.root.sha256.slice(0, 24), "old0old0old0old0old0old0"].sort());
  });

  it("accepts an archive made by GNU tar in pax format (how a Nix build may make one)", async () => {
    const { manifest, root } = validParts();
    const src = path.join(dir, "nix-out");
    mkdirSync(src);
    writeFileSync(path.join(src, "qvm-template.json"), JSON.stringify(manifest));
    writeFileSync(path.join(src, "root.img.zst"), root);
    const file = path.join(dir, "nix.tar");
    execFileSync("tar", ["--format=posix", "-C", src, "-cf", file, "qvm-template.json", "root.img.zst"]);
    expect((await importTemplateArchive(target, file)).manifest.name).toBe("nix-minimal");
  });

  it("carries the template's init both ways (a NixOS root's)", async () => {
    const { manifestMember, rootMember, manifest } = validParts();
    const init = "/nix/var/nix/profiles/system/init";
    const t = await importTemplateArchive(target, await writeArchive([manifestMember({ ...manifest, init }), rootMember()]));
    expect(t.manifest.init).toBe(init);
    const again = await exportTemplateArchive(target, "nix-minimal", path.join(dir, "again.tar"));
    expect(again.init).toBe(init);
  });

  it("names the suite 'imported' when the manifest has none", async () => {
    const { manifestMember, rootMember, manifest } = validParts();
    const { suite: _, ...noSuite } = manifest;
    const t = await importTemplateArchive(target, await writeArchive([manifestMember(noSuite), rootMember()]));
    expect(t.manifest.suite).toBe("imported");
  });

  it("refuses an invalid --name before reading the archive", async () => {
    const { manifestMember, rootMember } = validParts();
    const file = await writeArchive([manifestMember(), rootMember()]);
    await expect(importTemplateArchive(target, file, { name: "../etc" })).rejects.toMatchObject({ code: "INVALID_ARGUMENT", message: expect.stringContaining("invalid domain name") });
  });

  describe("refuses hostile archives, leaving nothing behind", () => {
    const p = validParts();
    const cases: [string, () => Member[] | Buffer, string | RegExp][] = [
      ["an extra member", () => [p.manifestMember(), { header: { name: "notes.txt", size: 2 }, body: Buffer.from("hi") }, p.rootMember()], 'unexpected member "notes.txt" where root.img.zst belongs'],
      ["a symlink member", () => [{ header: { name: "qvm-template.json", type: "symlink", linkname: "/etc/shadow" } }, p.rootMember()], 'member "qvm-template.json" is a symlink, not a regular file (-> "/etc/shadow")'],
      ["a hard link member", () => [p.manifestMember(), { header: { name: "root.img.zst", type: "link", linkname: "qvm-template.json" } }], "is a link, not a regular file"],
      ["a device member", () => [p.manifestMember(), { header: { name: "root.img.zst", type: "block-device", devmajor: 8, devminor: 0 } }], "is a block-device, not a regular file"],
      ["a directory member", () => [{ header: { name: "qvm-template.json", type: "directory" } }], "is a directory, not a regular file"],
      ["a ../ name", () => [p.manifestMember(), { ...p.rootMember(), header: { ...p.rootMember().header, name: "../x" } }], 'unexpected member "../x" (a path with ..)'],
      ["an absolute name", () => [{ ...p.manifestMember(), header: { ...p.manifestMember().header, name: "/etc/cron.d/x" } }], 'unexpected member "/etc/cron.d/x" (an absolute path)'],
      ["a name in a directory", () => [p.manifestMember(), { ...p.rootMember(), header: { ...p.rootMember().header, name: "sub/root.img.zst" } }], '"sub/root.img.zst" (a path)'],
      ["members out of order", () => [p.rootMember(), p.manifestMember()], 'unexpected member "root.img.zst" where qvm-template.json belongs'],
      ["a duplicate manifest", () => [p.manifestMember(), p.manifestMember(), p.rootMember()], 'duplicate member "qvm-template.json"'],
      ["a member after root", () => [p.manifestMember(), p.rootMember(), { header: { name: "extra", size: 1 }, body: Buffer.from("x") }], 'unexpected member "extra" after root.img.zst'],
      ["a second root after root", () => [p.manifestMember(), p.rootMember(), p.rootMember()], 'unexpected member "root.img.zst" after root.img.zst'],
      ["no root", () => [p.manifestMember()], "ends early: root.img.zst is missing"],
      ["an empty archive", () => Buffer.alloc(0), "ends early: qvm-template.json is missing"],
      ["a manifest over its bound", () => [{ header: { name: "qvm-template.json", size: MAX_TEMPLATE_MANIFEST_BYTES + 1 }, body: Buffer.alloc(MAX_TEMPLATE_MANIFEST_BYTES + 1, 0x20) }, p.rootMember()], "over its 65536-byte limit"],
      ["a manifest that is not JSON", () => [{ header: { name: "qvm-template.json", size: 5 }, body: Buffer.from("{ hal") }, p.rootMember()], "qvm-template.json is not UTF-8 JSON"],
      ["a manifest that is not UTF-8", () => [{ header: { name: "qvm-template.json", size: 4 }, body: Buffer.from([0x22, 0xff, 0xfe, 0x22]) }, p.rootMember()], "qvm-template.json is not UTF-8 JSON"],
      ["a manifest with an unknown field", () => [p.manifestMember({ ...p.manifest, run: "curl x | sh" }), p.rootMember()], 'qvm-template.json is invalid: (manifest): Unrecognized key: "run"'],
      ["a manifest with an unknown root field", () => [p.manifestMember({ ...p.manifest, root: { ...p.manifest.root, mode: 0o4755 } }), p.rootMember()], 'root: Unrecognized key: "mode"'],
      ["a bad name", () => [p.manifestMember({ ...p.manifest, name: "../../etc" }), p.rootMember()], 'name: invalid domain name "../../etc"'],
      ["a reserved name", () => [p.manifestMember({ ...p.manifest, name: "dom0" }), p.rootMember()], 'name: "dom0" is a reserved name'],
      ["an init that would not stay one kernel argument", () => [p.manifestMember({ ...p.manifest, init: "/sbin/init quiet" }), p.rootMember()], "init: init must be an absolute path"],
      ["another format", () => [p.manifestMember({ ...p.manifest, format: "qvm-template/2" }), p.rootMember()], "format: "],
      ["a size that is not whole sectors", () => [p.manifestMember({ ...p.manifest, root: { ...p.manifest.root, sizeBytes: 1000 } }), p.rootMember()], "root.sizeBytes:"],
      ["a size over the bound", () => [p.manifestMember({ ...p.manifest, root: { ...p.manifest.root, sizeBytes: 2 ** 50 } }), p.rootMember()], "root.sizeBytes:"],
      ["a sha mismatch (one byte flipped)", () => {
        const flipped = Buffer.from(p.root);
        flipped[flipped.length >> 1]! ^= 0x01;
        return [p.manifestMember(), p.rootMember(flipped)];
      }, `root.img.zst has sha256 `],
      ["a wrong compressedBytes", () => [p.manifestMember({ ...p.manifest, root: { ...p.manifest.root, compressedBytes: p.root.length + 1 } }), p.rootMember()], `root.img.zst is ${p.root.length} bytes, the manifest says ${p.root.length + 1} (compressedBytes)`],
      ["a root larger than declared", () => {
        const big = zstd(Buffer.alloc(8 * MiB, 1));
        return [p.manifestMember({ ...p.manifest, root: { ...p.manifest.root, compressedBytes: big.length, sha256: sha256(big), sizeBytes: MiB } }), p.rootMember(big)];
      }, `root.img.zst decompresses to more than the ${MiB} bytes the manifest says (sizeBytes)`],
      ["a root smaller than declared", () => [p.manifestMember({ ...p.manifest, root: { ...p.manifest.root, sizeBytes: p.raw.length + 512 } }), p.rootMember()], `root.img.zst decompresses to ${p.raw.length} bytes, the manifest says ${p.raw.length + 512}`],
      ["a root that is not zstd", () => {
        const junk = randomBytes(4096);
        return [p.manifestMember({ ...p.manifest, root: { ...p.manifest.root, compressedBytes: junk.length, sha256: sha256(junk) } }), p.rootMember(junk)];
      }, "root.img.zst is not a valid zstd stream"],
    ];
    it.each(cases)("%s", async (_, build, message) => {
      const members = build();
      await expectRefused(Buffer.isBuffer(members) ? writeRaw(members) : await writeArchive(members), message);
    });

    it("a truncated archive", async () => {
      const whole = await tarBytes([p.manifestMember(), p.rootMember()]);
      await expectRefused(writeRaw(whole.subarray(0, 1024 + 512 + (p.root.length >> 1)), "truncated.tar"), "ends early (truncated)");
    });

    it("a compressed archive", async () => {
      await expectRefused(writeRaw(zstd(await tarBytes([p.manifestMember(), p.rootMember()])), "compressed.tar.zst"), "is not a tar archive, or is corrupt");
    });

    it("reports every manifest problem at once", async () => {
      const file = await writeArchive([p.manifestMember({ ...p.manifest, name: "-x", builtAt: "yesterday", root: { ...p.manifest.root, sha256: "ABC" } }), p.rootMember()]);
      await expect(importTemplateArchive(target, file)).rejects.toThrow(/name: invalid domain name.*; builtAt: .*; root\.sha256: sha256 must be 64 lowercase hex digits/);
    });

    it("keeps an existing template's directory when a --replace import fails", async () => {
      fakeTemplate(target, "nix-minimal", "old0old0old0old0old0old0");
      const flipped = Buffer.from(p.root);
      flipped[10]! ^= 0xff;
      const file = await writeArchive([p.manifestMember(), p.rootMember(flipped)]);
      await expect(importTemplateArchive(target, file, { replace: true })).rejects.toThrow("has sha256");
      expect(readdirSync(path.join(target.root, "templates", "nix-minimal")).sort()).toEqual(["current", "old0old0old0old0old0old0"]);
      expect(target.template("nix-minimal").manifest.hash).toBe("old0old0old0old0old0old0");
    });
  });
});
