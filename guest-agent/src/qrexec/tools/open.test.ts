// qubes.OpenURL and qubes.OpenInVM's receiving side: which URLs pass, and that neither service
// holds more of its input in memory than a line (the URL, the file name) plus one chunk.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MAX_OPEN_NAME_BYTES, MAX_URL_BYTES, OpenError, looksLikeUrl, readLine, receiveFile, receiveUrl, safeFileName, urlProblem } from "./open.js";

describe("urlProblem: only http, https and ftp, printable ASCII, bounded", () => {
  it.each([
    ["http://example.org/", undefined],
    ["https://example.org/a?b=c#d", undefined],
    ["ftp://ftp.example.org/pub/file.txt", undefined],
    ["HTTPS://EXAMPLE.ORG/", undefined],
    ["https://example.org/%E2%80%AE%20x", undefined],
    ["https://[::1]:8080/", undefined],
    ["file:///etc/passwd", /file: URLs are not opened/],
    ["smb://server/share", /smb: URLs/],
    ["ssh://host", /ssh: URLs/],
    ["x-custom-handler://run?cmd=sh", /x-custom-handler: URLs/],
    ["vscode://file/etc/passwd", /vscode: URLs/],
    ["javascript://%0aalert(1)", /javascript: URLs/],
    ["data://text/html,x", /data: URLs/],
    ["ftps://host/", /ftps: URLs/],
    ["http:example.org", /not a URL/],
    ["mailto:a@example.org", /not a URL/],
    ["//example.org/", /not a URL/],
    ["http://", /nothing after its scheme/],
    ["https://example.org/a b", /spaces, control or non-ASCII/],
    ["https://example.org/\x1b]52;c;aGk=\x07", /spaces, control or non-ASCII/],
    ["https://example.org/\u202Egpj.exe", /spaces, control or non-ASCII/],
    ["https://exаmple.org/", /spaces, control or non-ASCII/], // a Cyrillic а
    ["https://example.org/\x7f", /spaces, control or non-ASCII/],
    [`https://example.org/${"a".repeat(MAX_URL_BYTES)}`, /longer than 8192 bytes/],
  ])("%j", (url, want) => {
    const got = urlProblem(url);
    if (want === undefined) expect(got).toBeUndefined();
    else expect(got).toMatch(want);
  });

  it("a URL of exactly the limit passes", () => {
    const url = `https://e.org/${"a".repeat(MAX_URL_BYTES - 14)}`;
    expect(Buffer.byteLength(url)).toBe(MAX_URL_BYTES);
    expect(urlProblem(url)).toBeUndefined();
  });

  it("looksLikeUrl decides URL or file for qvm-open-in-vm (the scheme is checked after)", () => {
    expect(looksLikeUrl("https://x")).toBe(true);
    expect(looksLikeUrl("file:///etc/passwd")).toBe(true);
    expect(looksLikeUrl("report.pdf")).toBe(false);
    expect(looksLikeUrl("./http://x")).toBe(false);
  });
});

/** An endless source that counts what was pulled from it. */
function endless(chunk: Buffer): { src: Readable; pulled: () => number } {
  let pulled = 0;
  const src = new Readable({
    read() {
      pulled += chunk.length;
      this.push(chunk);
    },
  });
  return { src, pulled: () => pulled };
}

describe("receiveUrl", () => {
  it.each([
    ["https://example.org/\n", "https://example.org/"],
    ["https://example.org/", "https://example.org/"],
    ["https://example.org/\r\n", "https://example.org/"],
    ["https://example.org/\nignored second line\n", "https://example.org/"],
  ])("%j → %j", async (input, want) => {
    expect(await receiveUrl(Readable.from([Buffer.from(input)]))).toBe(want);
  });

  it.each([
    ["file:///etc/passwd\n", /file: URLs are not opened/],
    ["\n", /not a URL/],
    ["", /not a URL/],
    ["https://a\xffb\n", /not valid UTF-8/],
    ["https://a\xc3\xa9b\n", /non-ASCII/],
  ])("refuses %j", async (input, want) => {
    await expect(receiveUrl(Readable.from([Buffer.from(input, "latin1")]))).rejects.toThrow(want);
  });

  it("stops reading an endless line just past the URL limit (no unbounded buffering)", async () => {
    const { src, pulled } = endless(Buffer.alloc(64 * 1024, 0x61));
    const err = await receiveUrl(src).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenError);
    expect((err as Error).message).toMatch(/longer than 8192 bytes/);
    expect(pulled()).toBeLessThanOrEqual(2 * 64 * 1024);
    src.destroy();
  });

  it("does not read past the URL's line", async () => {
    const { src, pulled } = endless(Buffer.alloc(64 * 1024, 0x61));
    src.unshift(Buffer.from("https://example.org/\n"));
    expect(await receiveUrl(src)).toBe("https://example.org/");
    expect(pulled()).toBeLessThanOrEqual(64 * 1024);
    src.destroy();
  });
});

describe("readLine", () => {
  it.each([
    [["abc\ndef"], 10, "abc", "def"],
    [["a", "b", "c\n", "d"], 10, "abc", ""],
    [["abc"], 3, "abc", ""],
    [["abc\n"], 3, "abc", ""],
  ])("%j (max %i) → %j", async (chunks, max, line, rest) => {
    const r = await readLine(Readable.from(chunks.map((c) => Buffer.from(c)))[Symbol.asyncIterator](), max, "x");
    expect(r.line.toString()).toBe(line);
    expect(r.rest.toString()).toBe(rest);
  });

  it("throws past max", async () => {
    await expect(readLine(Readable.from([Buffer.from("abcd\n")])[Symbol.asyncIterator](), 3, "the line")).rejects.toThrow("the line is longer than 3 bytes");
  });
});

describe("receiveFile", () => {
  let tmp = "";
  beforeEach(async () => {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), "qvm-open-test-"));
  });
  afterEach(async () => {
    await fs.rm(tmp, { recursive: true, force: true });
  });

  it("streams the contents to a private file named after the (sanitized) name line", async () => {
    const data = Buffer.alloc(3 * 1024 * 1024 + 5, 7);
    const chunks = [Buffer.from("report.pdf\nab"), Buffer.from("cd"), data];
    const file = await receiveFile(Readable.from(chunks), tmp, 10 * 1024 * 1024);
    expect(path.basename(file)).toBe("report.pdf");
    expect(path.dirname(path.dirname(file))).toBe(tmp);
    const got = await fs.readFile(file);
    expect(got.subarray(0, 4).toString()).toBe("abcd");
    expect(got.length).toBe(4 + data.length);
    expect((await fs.stat(file)).mode & 0o777).toBe(0o600);
    expect((await fs.stat(path.dirname(file))).mode & 0o777).toBe(0o700);
  });

  it.each([
    ["../../etc/passwd", "__.._etc_passwd"],
    ["..", "_"],
    ["a\x1b[2Jb\u202Ec.txt", "a__2Jb_c.txt"],
    ["", "file"],
    ["x".repeat(300), "x".repeat(200)],
  ])("names %j as %j", (raw, want) => {
    expect(safeFileName(Buffer.from(raw))).toBe(want);
  });

  it("refuses a file over the cap, removes what it wrote, and stops reading", async () => {
    const { src, pulled } = endless(Buffer.alloc(64 * 1024, 1));
    src.unshift(Buffer.from("big.bin\n"));
    const err = await receiveFile(src, tmp, 1024 * 1024).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenError);
    expect((err as Error).message).toMatch(/larger than 1048576 bytes/);
    expect(pulled()).toBeLessThanOrEqual(1024 * 1024 + 3 * 64 * 1024);
    expect(await fs.readdir(tmp)).toEqual([]);
    src.destroy();
  });

  it("accepts a file of exactly the cap", async () => {
    const file = await receiveFile(Readable.from([Buffer.from("f\n"), Buffer.alloc(1000)]), tmp, 1000);
    expect((await fs.stat(file)).size).toBe(1000);
  });

  it("refuses an endless name line", async () => {
    const { src } = endless(Buffer.alloc(1024, 0x61));
    await expect(receiveFile(src, tmp)).rejects.toThrow(`the file name is longer than ${MAX_OPEN_NAME_BYTES} bytes`);
    expect(await fs.readdir(tmp)).toEqual([]);
    src.destroy();
  });
});
