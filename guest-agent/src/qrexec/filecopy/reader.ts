// Pull-based reader over an async byte stream: exact-length reads for headers, bounded chunk
// iteration for file data. It never holds more than one input chunk beyond what was asked for,
// so a file's contents are never buffered whole.
import { FilecopyError } from "./errors.js";

export class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  private done = false;

  constructor(private readonly it: AsyncIterator<unknown>) {}

  static from(input: NodeJS.ReadableStream): ByteReader {
    return new ByteReader(input[Symbol.asyncIterator]());
  }

  /** Pulls one more chunk; false at EOF. */
  private async pull(): Promise<boolean> {
    if (this.done) return false;
    let r: IteratorResult<unknown>;
    try {
      r = await this.it.next();
    } catch (e) {
      throw new FilecopyError("IO", `reading the file-copy stream failed: ${(e as Error)?.message ?? String(e)}`, { cause: e });
    }
    if (r.done) {
      this.done = true;
      return false;
    }
    const v = r.value;
    // A stream with an encoding set would hand out lossy strings; refuse it rather than guess.
    if (!(v instanceof Uint8Array)) throw new TypeError("file-copy input must be a byte stream (no encoding set)");
    this.buf = this.buf.length === 0 ? Buffer.from(v.buffer, v.byteOffset, v.byteLength) : Buffer.concat([this.buf, v]);
    return true;
  }

  /** Reads exactly n bytes (n is small: headers and link targets); TRUNCATED at early EOF. */
  async readExact(n: number, what: string): Promise<Buffer> {
    while (this.buf.length < n) {
      if (!(await this.pull())) throw new FilecopyError("TRUNCATED", `stream ended inside ${what}`);
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Yields exactly n bytes as a series of chunks; TRUNCATED at early EOF. */
  async *chunks(n: number, what: string): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (this.buf.length === 0 && !(await this.pull())) throw new FilecopyError("TRUNCATED", `stream ended inside ${what} (${left} of ${n} bytes missing)`);
      const take = Math.min(left, this.buf.length);
      const out = this.buf.subarray(0, take);
      this.buf = this.buf.subarray(take);
      left -= take;
      yield out;
    }
  }

  /** True when nothing is left, reading to EOF to find out. */
  async atEof(): Promise<boolean> {
    while (this.buf.length === 0) {
      if (!(await this.pull())) return true;
    }
    return false;
  }
}
