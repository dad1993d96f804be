// Random access to a vault, whatever the caller holds: a path (opened and closed here), a file
// descriptor (the caller's: never closed here) or the bytes themselves (tests, small tools).
// Reading needs random access (the manifest is at the end), so pipes are refused.
import { fstat, read } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { promisify } from "node:util";
import { QvmError } from "@qvm/protocol";
import { VaultError } from "./vault-errors.js";

export type VaultSource = string | number | Uint8Array;

export interface VaultFile {
  /** How messages name it: the path, "fd N" or "buffer". */
  readonly name: string;
  readonly size: number;
  /** Exactly `length` bytes at `offset`; a short read (the file shrank under us) is "truncated". */
  read(offset: number, length: number): Promise<Buffer>;
  close(): Promise<void>;
}

const fstatAsync = promisify(fstat);
const readAsync = promisify(read);

export async function openVaultFile(source: VaultSource): Promise<VaultFile> {
  if (typeof source === "string") {
    let handle: FileHandle;
    try {
      handle = await open(source, "r");
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new QvmError(code === "ENOENT" ? "NOT_FOUND" : "INVALID_ARGUMENT", `cannot open backup ${source}: ${(err as Error).message}`, { cause: err });
    }
    try {
      const st = await handle.stat();
      requireRegular(st.isFile(), source);
      return new PositionalFile(source, st.size, async (buf, at, length, position) => (await handle.read(buf, at, length, position)).bytesRead, () => handle.close());
    } catch (err) {
      await handle.close();
      throw err;
    }
  }
  if (typeof source === "number") {
    const st = await fstatAsync(source);
    requireRegular(st.isFile(), `fd ${source}`);
    // The descriptor is the caller's: never closed here.
    return new PositionalFile(`fd ${source}`, st.size, async (buf, at, length, position) => (await readAsync(source, buf, at, length, position)).bytesRead, async () => {});
  }
  return new BufferFile(Buffer.from(source.buffer, source.byteOffset, source.byteLength));
}

function requireRegular(isFile: boolean, name: string): void {
  if (!isFile) throw new QvmError("INVALID_ARGUMENT", `backup ${name} is not a regular file; reading a backup needs random access (copy it to a file first)`);
}

function shortRead(name: string, offset: number, wanted: number, got: number): VaultError {
  return new VaultError("truncated", `the file ended at offset ${offset + got} while reading ${wanted} bytes at offset ${offset}; it shrank while being read`, { file: name, offset });
}

/** Reads up to `length` bytes into `buf` at `at`, from file offset `position`; 0 at the end. */
type ReadSome = (buf: Buffer, at: number, length: number, position: number) => Promise<number>;

/** A file read with positional reads: an opened path (closed by close()) or a caller's descriptor. */
class PositionalFile implements VaultFile {
  constructor(
    readonly name: string,
    readonly size: number,
    private readonly readSome: ReadSome,
    private readonly closeFile: () => Promise<void>,
  ) {}

  async read(offset: number, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const bytesRead = await this.readSome(buf, done, length - done, offset + done);
      if (bytesRead === 0) throw shortRead(this.name, offset, length, done);
      done += bytesRead;
    }
    return buf;
  }

  close(): Promise<void> {
    return this.closeFile();
  }
}

class BufferFile implements VaultFile {
  readonly name = "buffer";
  constructor(private readonly bytes: Buffer) {}

  get size(): number {
    return this.bytes.length;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (offset + length > this.bytes.length) throw shortRead(this.name, offset, length, Math.max(0, this.bytes.length - offset));
    return this.bytes.subarray(offset, offset + length);
  }

  async close(): Promise<void> {}
}
