// Reading a volume as the guest sees it, and writing one back. qemu-img cannot stream raw output
// (its raw driver seeks and wants a regular file: a FIFO or /dev/stdout is refused), so a qcow2
// volume (or one of its revisions) is first converted to a *sparse* raw file in DATA/tmp (same
// disk as the volume; holes cost nothing), which is opened and unlinked at once and then streamed
// from the open descriptor. A restored private volume takes the reverse path: a sparse raw file
// (zero blocks left as holes) converted into a qcow2 file.
import { createReadStream, fstatSync, mkdirSync, openSync, closeSync, readdirSync, rmSync } from "node:fs";
import { open } from "node:fs/promises";
import path from "node:path";
import { QvmError } from "@qvm/protocol";
import { z } from "zod";
import type { ReadBlock } from "../backup/index.js";
import { copyEncryptedRevision, exportRaw, mapRaw, rawToQcow2 } from "../storage/qemu-img.js";
import type { VolumeKey } from "../storage/volume-key.js";
import { copySparse } from "../storage/volumes.js";
import { processAlive } from "../vmm/process.js";

/** Bytes per read from a raw volume: the vault's default block size, so the writer gets whole blocks. */
const READ_CHUNK = 4 * 1024 * 1024;
/** Temporary files' name prefix in DATA/tmp; leftovers of a killed qvmd are removed by the next backup. */
const TMP_PREFIX = "vault-";

export function scratchDir(dataDir: string): string {
  const dir = path.join(dataDir, "tmp");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/** Removes what a killed backup or restore left in DATA/tmp (files of live processes are kept). */
export function removeStaleScratch(dataDir: string): void {
  const dir = scratchDir(dataDir);
  for (const name of readdirSync(dir)) {
    const m = new RegExp(`^${TMP_PREFIX}(\\d+)-`).exec(name);
    if (m && Number(m[1]) !== process.pid && !processAlive(Number(m[1]))) rmSync(path.join(dir, name), { force: true });
  }
}

let serial = 0;
function scratchFile(dataDir: string, what: string): string {
  return path.join(scratchDir(dataDir), `${TMP_PREFIX}${process.pid}-${++serial}-${what}`);
}

/** An open raw view of a volume: stream it once, then close (the scratch file is already unlinked). */
export interface RawVolume {
  size: number;
  stream(): AsyncIterable<Buffer>;
  close(): void;
}

/** A byte range of a raw file: data to read, or a hole (zeros, not read at all). */
interface Extent {
  start: number;
  length: number;
  data: boolean;
}

const extentsSchema = z.array(z.object({ start: z.number().int().nonnegative(), length: z.number().int().nonnegative(), data: z.boolean() }));

/**
 * Where a sparse raw file has data (`qemu-img map`: SEEK_DATA/SEEK_HOLE, which Node does not
 * offer): reading only those ranges makes a mostly empty 1 GiB volume cost what its data costs.
 */
async function dataExtents(file: string, size: number): Promise<Extent[]> {
  let extents: Extent[];
  try {
    extents = extentsSchema.parse(JSON.parse(await mapRaw(file)));
  } catch {
    return [{ start: 0, length: size, data: true }]; // unknown: read all of it
  }
  // qemu-img's raw driver rounds a file's size up to whole 512-byte sectors: keep to the file.
  return extents.filter((x) => x.start < size).map((x) => ({ ...x, length: Math.min(x.length, size - x.start) }));
}

function rawFromFd(fd: number, size: number, extents: readonly Extent[]): RawVolume {
  let closed = false;
  const zero = Buffer.alloc(READ_CHUNK);
  return {
    size,
    stream: async function* () {
      for (const x of extents) {
        if (x.length === 0) continue;
        if (!x.data) {
          for (let at = 0; at < x.length; at += READ_CHUNK) yield zero.subarray(0, Math.min(READ_CHUNK, x.length - at));
          continue;
        }
        yield* createReadStream("", { fd, autoClose: false, start: x.start, end: x.start + x.length - 1, highWaterMark: READ_CHUNK }) as AsyncIterable<Buffer>;
      }
    },
    close: () => {
      if (closed) return;
      closed = true;
      closeSync(fd);
    },
  };
}

/**
 * A qcow2 volume's content (its current state, or internal snapshot `snapshot`) as raw bytes.
 * `-U`: the image may be open in a running VMM; a snapshot is immutable, so reading it then is
 * consistent, which the live state is not (callers read live state only of halted domains).
 */
export async function openQcow2(dataDir: string, file: string, snapshot: string | undefined): Promise<RawVolume> {
  const tmp = scratchFile(dataDir, path.basename(file));
  try {
    await exportRaw(file, tmp, snapshot);
    return await openRaw(tmp); // its size is the revision's, which may differ from the current one
  } finally {
    rmSync(tmp, { force: true }); // unlinked at once: the open descriptor keeps the data until closed
  }
}

/**
 * A running encrypted domain's volume at revision `snapshot`, as the bytes of a new encrypted
 * qcow2 file under the same key (scratch in DATA/tmp, unlinked at once; never in clear).
 */
export async function openEncryptedRevision(dataDir: string, file: string, snapshot: string, key: VolumeKey): Promise<RawVolume> {
  const tmp = scratchFile(dataDir, path.basename(file));
  try {
    await copyEncryptedRevision(file, snapshot, tmp, key);
    return await openRaw(tmp);
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * A file's bytes as they are now (an encrypted volume's qcow2 file: ciphertext), from a copy in
 * DATA/tmp (reflinked where the filesystem can), unlinked at once: the original may change as
 * soon as the caller's lock is released, the copy does not.
 */
export async function openFileCopy(dataDir: string, file: string): Promise<RawVolume> {
  const tmp = scratchFile(dataDir, path.basename(file));
  try {
    await copySparse(file, tmp);
    return await openRaw(tmp);
  } finally {
    rmSync(tmp, { force: true });
  }
}

/** A raw volume file (a TemplateVM's root.img: never written in place, so consistent while it runs). */
export async function openRaw(file: string): Promise<RawVolume> {
  const fd = openSync(file, "r");
  const size = fstatSync(fd).size;
  try {
    return rawFromFd(fd, size, await dataExtents(file, size));
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/** Writes blocks into a new sparse raw file of `size` bytes (zero blocks stay holes). */
export async function writeRawSparse(file: string, size: number, blocks: AsyncIterable<ReadBlock>): Promise<void> {
  const fh = await open(file, "wx", 0o600);
  try {
    for await (const b of blocks) if (b.data !== null) await fh.write(b.data, 0, b.data.length, b.offset);
    await fh.truncate(size);
    await fh.sync();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOSPC") throw new QvmError("RESOURCE_EXHAUSTED", `cannot write ${file}: the disk is full; free space and restore again`, { cause: err });
    throw err;
  } finally {
    await fh.close();
  }
}

/** Writes blocks as a new qcow2 volume `file` (through a sparse raw scratch file, removed after). */
export async function writeQcow2(dataDir: string, file: string, size: number, blocks: AsyncIterable<ReadBlock>): Promise<void> {
  const tmp = scratchFile(dataDir, `${path.basename(file)}.raw`);
  try {
    await writeRawSparse(tmp, size, blocks);
    await rawToQcow2(tmp, file);
  } finally {
    rmSync(tmp, { force: true });
  }
}

