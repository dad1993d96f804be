// Receiver side (qubes.Filecopy): unpacks an attacker-controlled stream under `root`.
//
// Safety rests on one invariant: every path we create is root + a validated name whose parent
// was created (or found as a real directory) by this same stream. So nothing is written through
// a symlink or into a folder the sender did not send, and nothing existing is ever replaced.
//
// On error, what was already unpacked stays (like Qubes); directories received so far keep
// their temporary 0o700 mode, and a file being written is left partial. The caller reports it.
import { constants as C } from "node:fs";
import fs from "node:fs/promises";
import path from "node:path";
import { FilecopyError, quoteName } from "./errors.js";
import { checkKind, decodePrefix, decodeSize, KIND_DIR, KIND_END, KIND_FILE, PREFIX_BYTES, SIZE_BYTES } from "./format.js";
import { validateLinkTarget, validateName } from "./names.js";
import { ByteReader } from "./reader.js";

export { FilecopyError } from "./errors.js";

/** The most file-content bytes one copy may bring, unless the caller sets maxBytes: 8 GiB. */
export const DEFAULT_MAX_COPY_BYTES = 8 * 1024 ** 3;

/**
 * The permission bits a received entry may keep: no setuid, setgid or sticky bit, and no group or
 * world write (so 0o755 for directories and executables, 0o644 for other files, at most).
 */
export const RECEIVED_MODE_MASK = 0o755;

export interface UnpackOptions {
  /** Most entries (of any kind) accepted; default 1,000,000. */
  maxFiles?: number;
  /** Most file-content bytes accepted in the whole copy; default DEFAULT_MAX_COPY_BYTES. */
  maxBytes?: number;
  /** Bits cleared from every received mode on top of RECEIVED_MODE_MASK (the receiver's umask); default 0o022. */
  umask?: number;
}

const GIB = 1024 ** 3;
const showBytes = (n: number) => (n % GIB === 0 ? `${n / GIB} GiB` : `${n} bytes`);

/** `files` counts entries of every kind; `bytes` counts file contents. */
export interface CopyStats {
  files: number;
  bytes: number;
}

interface DirFixup {
  mode: number;
  mtimeMs: number;
}

const errno = (e: unknown): string | undefined => (e as NodeJS.ErrnoException | null)?.code;

/** Turns a filesystem failure into a FilecopyError that names the entry. */
function ioError(e: unknown, op: string, name: string): FilecopyError {
  if (e instanceof FilecopyError) return e;
  return new FilecopyError("IO", `${op} ${quoteName(name)} failed: ${errno(e) ?? String(e)}`, { cause: e });
}

function exists(name: string, what: string): FilecopyError {
  return new FilecopyError("EXISTS", `${quoteName(name)} already exists${what}; refusing to replace it`);
}

// Kernels store ns; ms/1000 as a double can land a few hundred ns below the intended ms, which
// then reads back as the previous ms. Aiming half a microsecond in keeps round trips exact.
const toSeconds = (ms: number) => (ms + 0.0005) / 1000;

/**
 * Makes `root` with mkdir -p semantics if missing, then refuses it unless it is a real
 * directory: a symlinked root would let a local process redirect the whole copy.
 */
async function prepareRoot(root: string): Promise<void> {
  const st = await fs.lstat(root).catch((e) => {
    if (errno(e) === "ENOENT") return undefined;
    throw ioError(e, "lstat", root);
  });
  if (!st) await fs.mkdir(root, { recursive: true, mode: 0o700 }).catch((e) => { throw ioError(e, "mkdir", root); });
  const now = st ?? (await fs.lstat(root).catch((e) => { throw ioError(e, "lstat", root); }));
  if (now.isSymbolicLink()) throw new FilecopyError("BAD_ROOT", `destination ${quoteName(root)} is a symlink`);
  if (!now.isDirectory()) throw new FilecopyError("BAD_ROOT", `destination ${quoteName(root)} is not a directory`);
}

export async function unpackStream(input: NodeJS.ReadableStream, root: string, opts: UnpackOptions = {}): Promise<CopyStats> {
  const maxFiles = opts.maxFiles ?? 1_000_000;
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_COPY_BYTES;
  const modeMask = RECEIVED_MODE_MASK & ~(opts.umask ?? 0o022);
  await prepareRoot(root);
  const reader = ByteReader.from(input);
  const stats: CopyStats = { files: 0, bytes: 0 };
  // Names sent as directories that are real directories on disk (the only valid parents),
  // with the final mode and times to apply children-first once everything is in place. Memory
  // is bounded by maxFiles × 4 KiB of names.
  const dirs = new Map<string, DirFixup>();

  for (;;) {
    if (await reader.atEof()) throw new FilecopyError("TRUNCATED", "stream ended without the end marker");
    const kindByte = await reader.readExact(1, "entry header");
    if (kindByte[0] === KIND_END) break;
    checkKind(kindByte[0]!); // before reading on, so garbage is a header error, not truncation
    const prefix = decodePrefix(Buffer.concat([kindByte, await reader.readExact(PREFIX_BYTES - 1, "entry header")]));
    const kind = prefix.kind;
    const rawName = await reader.readExact(prefix.nameLen, "entry name");
    const name = validateName(rawName);
    const size = decodeSize(await reader.readExact(SIZE_BYTES, `header of ${quoteName(name)}`), kind, rawName);

    if (++stats.files > maxFiles) throw new FilecopyError("TOO_LARGE", `more than ${maxFiles} entries (at ${quoteName(name)})`);
    const parts = name.split("/");
    const parent = parts.slice(0, -1).join("/");
    if (parts.length > 1 && !dirs.has(parent))
      throw new FilecopyError("BAD_NAME", `parent ${quoteName(parent)} of ${quoteName(name)} was not sent as a directory`);
    const dest = path.join(root, ...parts);
    const mode = prefix.mode & modeMask; // never setuid, setgid, sticky, group or world write

    if (kind === KIND_DIR) {
      await receiveDir(dest, name);
      if (!dirs.has(name)) dirs.set(name, { mode, mtimeMs: prefix.mtimeMs });
    } else if (kind === KIND_FILE) {
      if (stats.bytes + size > maxBytes)
        throw new FilecopyError("TOO_LARGE", `the copy is larger than ${showBytes(maxBytes)}, the most this domain accepts in one copy (at ${quoteName(name)}); copy fewer files at a time`);
      await receiveFile(reader, dest, name, size, mode, prefix.mtimeMs);
      stats.bytes += size;
    } else {
      const target = validateLinkTarget(name, await reader.readExact(size, `link target of ${quoteName(name)}`));
      await fs.symlink(target, dest).catch((e) => {
        throw errno(e) === "EEXIST" ? exists(name, "") : ioError(e, "symlink", name);
      });
    }
  }
  if (!(await reader.atEof())) throw new FilecopyError("BAD_HEADER", "bytes after the end marker");

  // Reverse order of receipt puts children before parents: a parent made read-only or
  // unsearchable last cannot block fixing its children, and their changes do not bump its mtime.
  for (const [name, f] of [...dirs].reverse()) {
    const dest = path.join(root, ...name.split("/"));
    await fs.chmod(dest, f.mode).catch((e) => { throw ioError(e, "chmod", name); });
    const t = toSeconds(f.mtimeMs);
    await fs.utimes(dest, t, t).catch((e) => { throw ioError(e, "utimes", name); });
  }
  return stats;
}

async function receiveDir(dest: string, name: string): Promise<void> {
  try {
    await fs.mkdir(dest, { mode: 0o700 });
    return;
  } catch (e) {
    if (errno(e) !== "EEXIST") throw ioError(e, "mkdir", name);
  }
  // Merging into a folder from an earlier copy is fine, but only a real directory.
  const st = await fs.lstat(dest).catch((e) => { throw ioError(e, "lstat", name); });
  if (!st.isDirectory()) throw exists(name, st.isSymbolicLink() ? " as a symlink" : " and is not a directory");
  // Tightened like a fresh one (and made writable for us) until the final mode is applied.
  await fs.chmod(dest, 0o700).catch((e) => { throw ioError(e, "chmod", name); });
}

async function receiveFile(reader: ByteReader, dest: string, name: string, size: number, mode: number, mtimeMs: number): Promise<void> {
  // O_EXCL never replaces anything; O_NOFOLLOW also refuses a dangling symlink in the way.
  const flags = C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW;
  const fh = await fs.open(dest, flags, 0o600).catch((e) => {
    throw errno(e) === "EEXIST" || errno(e) === "ELOOP" ? exists(name, "") : ioError(e, "create", name);
  });
  try {
    // Awaiting each write before pulling the next chunk is the back-pressure.
    for await (const chunk of reader.chunks(size, `contents of ${quoteName(name)}`)) {
      for (let off = 0; off < chunk.length; ) {
        const { bytesWritten } = await fh.write(chunk, off, chunk.length - off).catch((e) => { throw ioError(e, "write", name); });
        if (bytesWritten === 0) throw new FilecopyError("IO", `write ${quoteName(name)} made no progress`);
        off += bytesWritten;
      }
    }
    // Through the descriptor, so the mode and times land on the file we wrote; chmod rather
    // than the open mode, which the process umask would alter (the mask is already applied).
    await fh.chmod(mode).catch((e) => { throw ioError(e, "chmod", name); });
    const t = toSeconds(mtimeMs);
    await fh.utimes(t, t).catch((e) => { throw ioError(e, "utimes", name); });
  } catch (e) {
    await fh.close().catch(() => {});
    throw e;
  }
  // Checked on success: some filesystems only report a failed write at close.
  await fh.close().catch((e) => { throw ioError(e, "close", name); });
}
