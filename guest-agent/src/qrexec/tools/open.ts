// qubes.OpenURL and qubes.OpenInVM: what a caller may send, and how the receiving side reads it
// without ever holding more than a bounded amount in memory.
//   qubes.OpenURL:  one line, the URL. Only http, https and ftp, as Qubes' qubes.OpenURL allows:
//                   file://, smb://, ssh:// or a custom handler's scheme would let the caller
//                   open local files or start programs in the target.
//   qubes.OpenInVM: a line with the file's name, then its contents, streamed to a private temp
//                   file with a size cap.
import { constants as C } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";

export const OPEN_URL_SCHEMES: readonly string[] = ["http", "https", "ftp"];
/** The longest URL qubes.OpenURL takes (bytes, without the newline). */
export const MAX_URL_BYTES = 8192;
/** The longest file-name line qubes.OpenInVM takes (bytes); the name is shortened further. */
export const MAX_OPEN_NAME_BYTES = 4096;
/** The largest file qubes.OpenInVM takes: 1 GiB (it lands in the target's temp directory). */
export const MAX_OPEN_FILE_BYTES = 1024 ** 3;

/** An error for the caller: its message goes to the service's stderr, which the caller sees. */
export class OpenError extends Error {
  override name = "OpenError";
}

const SCHEME_RE = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//;

/** Whether qvm-open-in-vm takes `arg` as a URL (scheme://…) rather than a file name. */
export function looksLikeUrl(arg: string): boolean {
  return SCHEME_RE.test(arg);
}

/** Why `url` may not be opened through qubes.OpenURL, or undefined when it may. */
export function urlProblem(url: string): string | undefined {
  if (Buffer.byteLength(url, "utf8") > MAX_URL_BYTES) return `the URL is longer than ${MAX_URL_BYTES} bytes`;
  const m = SCHEME_RE.exec(url);
  if (!m) return "not a URL (scheme://…)";
  const scheme = m[1]!.toLowerCase();
  if (!OPEN_URL_SCHEMES.includes(scheme)) return `${scheme}: URLs are not opened in another domain (only ${OPEN_URL_SCHEMES.join(", ")})`;
  if (url.length === m[0].length) return "the URL has nothing after its scheme";
  // Printable ASCII only: a space, a control or a raw non-ASCII character would be a second
  // argument, an escape sequence, or a look-alike host; percent-encoded they are fine.
  if (!/^[\x21-\x7e]+$/.test(url)) return "the URL holds spaces, control or non-ASCII characters (percent-encode them)";
  return undefined;
}

/** A byte source read chunk by chunk (process.stdin, or a stream in tests). */
type Source = AsyncIterator<unknown>;

function bytesOf(v: unknown): Buffer {
  if (!(v instanceof Uint8Array)) throw new TypeError("the service's input must be a byte stream (no encoding set)");
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

/**
 * Reads up to the first newline, holding at most `max` bytes of it; throws when the line is
 * longer. Returns the line (without the newline) and what was read after it. At EOF without a
 * newline, everything read is the line.
 */
export async function readLine(src: Source, max: number, what: string): Promise<{ line: Buffer; rest: Buffer }> {
  let buf = Buffer.alloc(0);
  for (;;) {
    const nl = buf.indexOf(0x0a);
    if (nl >= 0 && nl <= max) return { line: buf.subarray(0, nl), rest: buf.subarray(nl + 1) };
    if (buf.length > max) throw new OpenError(`${what} is longer than ${max} bytes`);
    const r = await src.next();
    if (r.done) return { line: buf, rest: Buffer.alloc(0) };
    buf = Buffer.concat([buf, bytesOf(r.value)]);
  }
}

/** qubes.OpenURL's input: one line holding an allowed URL. Nothing after the line is read. */
export async function receiveUrl(input: AsyncIterable<unknown>): Promise<string> {
  const { line } = await readLine(input[Symbol.asyncIterator](), MAX_URL_BYTES, "the URL");
  let url: string;
  try {
    url = new TextDecoder("utf-8", { fatal: true }).decode(line).replace(/\r$/, "");
  } catch {
    throw new OpenError("the URL is not valid UTF-8");
  }
  const problem = urlProblem(url);
  if (problem) throw new OpenError(problem);
  return url;
}

/** The local name for a file whose (hostile) name line is `raw`: a safe, short basename. */
export function safeFileName(raw: Buffer): string {
  return (
    raw
      .toString("utf8")
      .replace(/[^A-Za-z0-9 ._+-]/g, "_")
      .replace(/^\.+/, "_")
      .slice(0, 200) || "file"
  );
}

/**
 * qubes.OpenInVM's input: a name line, then the contents, streamed into a new private directory
 * under `tmpDir`. Refuses (and removes the partial file) past `maxBytes`. Returns the file's path.
 */
export async function receiveFile(input: AsyncIterable<unknown>, tmpDir = os.tmpdir(), maxBytes = MAX_OPEN_FILE_BYTES): Promise<string> {
  const src = input[Symbol.asyncIterator]();
  const { line, rest } = await readLine(src, MAX_OPEN_NAME_BYTES, "the file name");
  const dir = await fs.mkdtemp(path.join(tmpDir, "qvm-open-"));
  const file = path.join(dir, safeFileName(line));
  const fh = await fs.open(file, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, 0o600);
  let total = 0;
  try {
    let chunk: Buffer | undefined = rest;
    while (chunk !== undefined) {
      total += chunk.length;
      if (total > maxBytes) throw new OpenError(`the file is larger than ${maxBytes} bytes, the most qubes.OpenInVM takes`);
      // Awaiting each write before reading on is the back-pressure: memory stays one chunk.
      for (let off = 0; off < chunk.length; ) {
        const { bytesWritten } = await fh.write(chunk, off);
        if (bytesWritten === 0) throw new OpenError(`writing ${file} made no progress`);
        off += bytesWritten;
      }
      const r: IteratorResult<unknown> = await src.next();
      chunk = r.done ? undefined : bytesOf(r.value);
    }
    await fh.close();
  } catch (err) {
    await fh.close().catch(() => {});
    await fs.rm(dir, { recursive: true, force: true });
    throw err;
  }
  return file;
}
