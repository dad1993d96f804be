// The receiver against crafted hostile streams: every case checks the error code and that
// nothing appeared outside root (the sandbox's sibling sentinel folder stays empty).
import fs from "node:fs/promises";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { encodeHeader, KIND_FILE } from "./format.js";
import { dir, END, expectCode, file, link, sandbox, streamOf, type Sandbox } from "./test-helpers.js";
import { DEFAULT_MAX_COPY_BYTES, unpackStream } from "./unpack.js";

let sb: Sandbox;
beforeEach(async () => {
  sb = await sandbox();
});
afterEach(async () => {
  await sb.cleanup();
});

/** Unpacks, expects the code, and checks containment. */
async function refused(parts: Buffer[], code: string, opts = {}) {
  const err = await expectCode(unpackStream(streamOf(parts), sb.root, opts), code);
  await sb.assertContained();
  return err;
}

describe("unpackStream refuses bad names", () => {
  const cases: [string, Buffer[]][] = [
    ["../evil", [file("../evil", "x"), END]],
    ["/etc/passwd", [file("/etc/passwd", "x"), END]],
    ["a/../../x", [dir("a"), file("a/../../x", "x"), END]],
    ["a//b", [dir("a"), file("a//b", "x"), END]],
    ["trailing slash", [dir("a/"), END]],
    [".", [dir("."), END]],
    ["..", [dir(".."), END]],
    ["empty name", [file("", "x"), END]],
    ["NUL in name", [file("a\0b", "x"), END]],
    ["component > 255 bytes", [file("x".repeat(256), "x"), END]],
    ["invalid UTF-8", [file(Buffer.from([0x61, 0xff, 0x62]), "x"), END]],
    ["more than 64 components", [file(Array(65).fill("a").join("/"), "x"), END]],
  ];
  for (const [label, parts] of cases) {
    it(label, async () => {
      await refused(parts, "BAD_NAME");
    });
  }

  // The audit's hostile names (finding 12) and their kin, through a real stream: refused before
  // anything is created, the message quoted so no raw control or bidi character is echoed.
  const hostileNames: [string, string][] = [
    ["OSC title and clear screen", "\x1b]0;owned\x07\x1b[2J.txt"],
    ["a newline", "two\nlines.txt"],
    ["a right-to-left override", "invoice\u202Efdp.exe"],
    ["a zero-width space", "pay\u200Bpal.txt"],
    ["a C1 CSI", "x\u009b2J.txt"],
    ["DEL", "x\x7f.txt"],
    ["a byte-order mark", "\uFEFFx.txt"],
    ["a line separator", "x\u2028y.txt"],
  ];
  it.each(hostileNames)("a name with %s, as a file, a directory or deeper", async (_what, name) => {
    for (const parts of [[file(name, "x"), END], [dir(name), END], [dir("ok"), file(`ok/${name}`, "x"), END]]) {
      const err = await refused(parts, "BAD_NAME");
      expect(err.message).not.toMatch(/[\x00-\x1f\x7f-\x9f\u200b\u2028\u202e\ufeff]/);
      expect((await fs.readdir(sb.root)).filter((n) => n !== "ok")).toEqual([]);
      await fs.rm(path.join(sb.root, "ok"), { recursive: true, force: true });
    }
  });

  it("a symlink whose target holds an escape or bidi character", async () => {
    await refused([dir("top"), link("top/l", "a\x1b[2J"), END], "BAD_SYMLINK");
    await refused([dir("top2"), link("top2/l", "x\u202Etxt"), END], "BAD_SYMLINK");
  });

  it("quotes and clips the name in the message", async () => {
    const err = await refused([file(`\x1b[31m${"x".repeat(300)}/..`, "x"), END], "BAD_NAME");
    expect(err.message).toContain("\\u001b[31m");
    expect(err.message).not.toContain("\x1b");
    expect(err.message.length).toBeLessThan(400);
  });

  it("a name longer than 4096 bytes is a header error (length field checked before reading)", async () => {
    await refused([file(Array(20).fill("y".repeat(250)).join("/"), "x"), END], "BAD_HEADER");
  });

  it("accepts a 4096-byte name (the kernel may still refuse the full path)", async () => {
    const comps = Array.from({ length: 17 }, (_, i) => String.fromCharCode(97 + i).repeat(240));
    const dirs = comps.slice(0, -1).map((_, i) => dir(comps.slice(0, i + 1).join("/")));
    const name = comps.join("/");
    expect(Buffer.byteLength(name)).toBe(4096);
    // The full path exceeds PATH_MAX, so the kernel refuses it; that must still be a FilecopyError.
    const err = await expectCode(unpackStream(streamOf([...dirs, file(name, "x"), END]), sb.root), "IO");
    expect(err.message).toMatch(/ENAMETOOLONG/);
    await sb.assertContained();
  });
});

describe("unpackStream refuses writes outside the sent tree", () => {
  it("a child without its parent directory", async () => {
    const err = await refused([file("a/b", "x"), END], "BAD_NAME");
    expect(err.message).toMatch(/parent "a" of "a\/b" was not sent as a directory/);
  });

  it("a child whose parent already exists on disk but was not sent", async () => {
    await fs.mkdir(path.join(sb.root, "a"));
    await refused([file("a/b", "x"), END], "BAD_NAME");
    expect(await fs.readdir(path.join(sb.root, "a"))).toEqual([]);
  });

  it("a child under a symlink entry", async () => {
    await refused([dir("top"), dir("top/sub"), link("top/link", "sub"), file("top/link/x", "x"), END], "BAD_NAME");
    expect(await fs.readdir(path.join(sb.root, "top/sub"))).toEqual([]);
  });

  it("a child under a file entry", async () => {
    await refused([file("f", "x"), file("f/x", "x"), END], "BAD_NAME");
  });

  it("a top-level symlink (it cannot point inside itself)", async () => {
    await refused([link("link", "sub"), END], "SYMLINK_ESCAPE");
  });

  it("symlink ../../outside", async () => {
    await refused([dir("top"), link("top/l", "../../outside"), END], "SYMLINK_ESCAPE");
  });

  it("symlink escaping from deep inside", async () => {
    await refused([dir("top"), dir("top/a"), link("top/a/l", "../../sentinel"), END], "SYMLINK_ESCAPE");
  });

  it("absolute symlink", async () => {
    await refused([dir("top"), link("top/l", "/etc/passwd"), END], "SYMLINK_ESCAPE");
  });

  it("'..' through another symlink (lexically inside, really outside)", async () => {
    // top/a/b/l1 → ../.. is top; then l1/../../x would lexically be top/a/x but the kernel
    // resolves l1 first: top/.. is root, root/.. is the sandbox.
    const parts = [dir("top"), dir("top/a"), dir("top/a/b"), link("top/a/b/l1", "../.."), link("top/a/b/l2", "l1/../../x"), END];
    await refused(parts, "SYMLINK_ESCAPE");
  });

  it("bad link targets", async () => {
    await refused([dir("top"), link("top/l", "a\0b"), END], "BAD_SYMLINK");
    await refused([dir("top"), encodeHeader({ kind: 3, mode: 0, mtimeMs: 0, name: "top/l2", size: 0 }), END], "BAD_SYMLINK");
    await refused([dir("top"), encodeHeader({ kind: 3, mode: 0, mtimeMs: 0, name: "top/l3", size: 4097 }), END], "BAD_SYMLINK");
  });
});

describe("unpackStream never replaces existing things", () => {
  it("an existing file is left unchanged", async () => {
    await fs.writeFile(path.join(sb.root, "f"), "original", { mode: 0o600 });
    await refused([file("f", "evil", 0o777), END], "EXISTS");
    expect(await fs.readFile(path.join(sb.root, "f"), "utf8")).toBe("original");
    expect((await fs.stat(path.join(sb.root, "f"))).mode & 0o777).toBe(0o600);
  });

  it("an existing symlink at a file's name is not followed", async () => {
    await fs.symlink(path.join(sb.sentinel, "x"), path.join(sb.root, "f"));
    await refused([file("f", "evil"), END], "EXISTS");
  });

  it("an existing symlink at a directory's name is not merged into", async () => {
    await fs.symlink(sb.sentinel, path.join(sb.root, "d"));
    await refused([dir("d"), file("d/x", "evil"), END], "EXISTS");
  });

  it("a directory over an existing file", async () => {
    await fs.writeFile(path.join(sb.root, "d"), "original");
    await refused([dir("d"), END], "EXISTS");
  });

  it("the same file twice", async () => {
    await refused([file("f", "one"), file("f", "two"), END], "EXISTS");
    expect(await fs.readFile(path.join(sb.root, "f"), "utf8")).toBe("one");
  });

  it("merges into an existing real directory", async () => {
    await fs.mkdir(path.join(sb.root, "d"));
    await fs.writeFile(path.join(sb.root, "d/old"), "old");
    await unpackStream(streamOf([dir("d", 0o750), file("d/new", "new"), END]), sb.root);
    expect((await fs.readdir(path.join(sb.root, "d"))).sort()).toEqual(["new", "old"]);
    expect((await fs.stat(path.join(sb.root, "d"))).mode & 0o777).toBe(0o750);
  });
});

describe("unpackStream framing and limits", () => {
  // Sent mode → the mode on disk: at most 0o755 (directories, executables) or 0o644 (other
  // files); never setuid, setgid, sticky, group or world write.
  const modes: [string, number, number][] = [
    ["world-writable file", 0o777, 0o755],
    ["world-writable non-executable file", 0o666, 0o644],
    ["group-writable file", 0o664, 0o644],
    ["setuid root-style executable", 0o4755, 0o755],
    ["setgid and sticky", 0o3777, 0o755],
    ["every bit", 0o7777, 0o755],
    ["plain file", 0o644, 0o644],
    ["executable", 0o755, 0o755],
    ["private file", 0o600, 0o600],
    ["owner-only executable", 0o700, 0o700],
    ["read-only", 0o444, 0o444],
    ["no bits", 0o000, 0o000],
    ["bits above the mode", 0xffff_f000 | 0o644, 0o644],
  ];
  it.each(modes)("a %s (%o) lands as %o, file and directory alike", async (_what, sent, want) => {
    await unpackStream(streamOf([dir("d", sent | 0o700), file("f", "x", sent), END]), sb.root);
    expect((await fs.stat(path.join(sb.root, "f"))).mode & 0o7777).toBe(want);
    expect((await fs.stat(path.join(sb.root, "d"))).mode & 0o7777).toBe((sent | 0o700) & 0o755);
    await sb.assertContained();
  });

  it("also clears the receiver's umask bits", async () => {
    await unpackStream(streamOf([dir("d", 0o755), file("d/f", "x", 0o755), END]), sb.root, { umask: 0o077 });
    expect((await fs.stat(path.join(sb.root, "d"))).mode & 0o7777).toBe(0o700);
    expect((await fs.stat(path.join(sb.root, "d/f"))).mode & 0o7777).toBe(0o700);
  });

  it("unknown kind", async () => {
    await refused([Buffer.from([7, 0, 0, 0, 0]), END], "BAD_HEADER");
  });

  it("size above MAX_SAFE_INTEGER", async () => {
    await refused([encodeHeader({ kind: KIND_FILE, mode: 0o644, mtimeMs: 0, name: "f", size: 2n ** 60n }), END], "BAD_HEADER");
  });

  it("a directory with a size", async () => {
    await refused([encodeHeader({ kind: 1, mode: 0o755, mtimeMs: 0, name: "d", size: 1 }), Buffer.from([0]), END], "BAD_HEADER");
  });

  it("bytes after the end marker", async () => {
    await refused([file("f", "x"), END, Buffer.from("junk")], "BAD_HEADER");
  });

  it("truncated data", async () => {
    const whole = file("f", "0123456789");
    const err = await refused([whole.subarray(0, whole.length - 3)], "TRUNCATED");
    expect(err.message).toMatch(/3 of 10 bytes missing/);
  });

  it("truncated header", async () => {
    await refused([file("f", "x"), dir("d").subarray(0, 7)], "TRUNCATED");
    await refused([dir("abc").subarray(0, 17)], "TRUNCATED");
  });

  it("missing end marker", async () => {
    await refused([file("f", "x")], "TRUNCATED");
  });

  it("empty stream", async () => {
    await refused([], "TRUNCATED");
  });

  it("maxFiles exceeded", async () => {
    await refused([file("a"), file("b"), file("c"), END], "TOO_LARGE", { maxFiles: 2 });
    expect((await fs.readdir(sb.root)).sort()).toEqual(["a", "b"]);
  });

  it("maxBytes exceeded, before the file is created", async () => {
    const err = await refused([file("a", "1234"), file("b", "5678"), END], "TOO_LARGE", { maxBytes: 6 });
    expect(err.message).toMatch(/larger than 6 bytes, the most this domain accepts in one copy \(at "b"\)/);
    expect(await fs.readdir(sb.root)).toEqual(["a"]);
  });

  it.each([
    ["exactly the cap", [4, 2], 6, "OK"],
    ["one byte over, across files", [4, 3], 6, "TOO_LARGE"],
    ["one file over on its own", [7], 6, "TOO_LARGE"],
    ["empty files under a zero cap", [0, 0], 0, "OK"],
  ])("maxBytes: %s", async (_what, sizes, maxBytes, want) => {
    const parts = [...sizes.map((n, i) => file(`f${i}`, "x".repeat(n))), END];
    const p = unpackStream(streamOf(parts), sb.root, { maxBytes });
    if (want === "OK") await p;
    else await expectCode(p, want);
    await sb.assertContained();
  });

  it(`by default refuses a copy larger than DEFAULT_MAX_COPY_BYTES (${DEFAULT_MAX_COPY_BYTES / 1024 ** 3} GiB), from the header, before any data`, async () => {
    expect(DEFAULT_MAX_COPY_BYTES).toBe(8 * 1024 ** 3);
    // Headers only: the size is checked before the file is created or its data read.
    const big = encodeHeader({ kind: KIND_FILE, mode: 0o644, mtimeMs: 0, name: "big", size: DEFAULT_MAX_COPY_BYTES + 1 });
    const err = await refused([big], "TOO_LARGE");
    expect(err.message).toMatch(/larger than 8 GiB/);
    expect(await fs.readdir(sb.root)).toEqual([]);
  });

  it("refuses a root that is a symlink", async () => {
    const alias = path.join(sb.base, "alias");
    await fs.symlink(sb.sentinel, alias);
    await expectCode(unpackStream(streamOf([file("f", "x"), END]), alias), "BAD_ROOT");
    expect(await fs.readdir(sb.sentinel)).toEqual([]);
    await fs.unlink(alias);
  });

  it("creates a missing root with mkdir -p", async () => {
    const deep = path.join(sb.root, "QubesIncoming", "work");
    const stats = await unpackStream(streamOf([file("f", "hello"), END]), deep);
    expect(stats).toEqual({ files: 1, bytes: 5 });
    expect(await fs.readFile(path.join(deep, "f"), "utf8")).toBe("hello");
  });

  it("parses a stream delivered one byte at a time", async () => {
    const stats = await unpackStream(streamOf([dir("d"), file("d/f", "abc"), link("d/l", "f"), END], 1), sb.root);
    expect(stats).toEqual({ files: 3, bytes: 3 });
    expect(await fs.readlink(path.join(sb.root, "d/l"))).toBe("f");
    expect(await fs.readFile(path.join(sb.root, "d/l"), "utf8")).toBe("abc");
  });
});
