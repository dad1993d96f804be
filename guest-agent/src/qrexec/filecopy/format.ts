// Wire format of a qvm file-copy stream (qvm-copy / qvm-move → qubes.Filecopy).
//
//   stream  = entry* end
//   end     = u8 0                              (nothing may follow: trailing bytes → BAD_HEADER)
//   entry   = u8 kind                           1 directory, 2 regular file, 3 symlink
//             u32 mode                          permission bits; receiver keeps mode & 0o755 only
//             u64 mtime                         milliseconds since the epoch
//             u16 nameLen, nameLen bytes        UTF-8, "/"-separated, relative (see names.ts)
//             u64 size                          file: data length; symlink: target length; dir: 0
//             size bytes                        file contents or link target
//
// All integers are big-endian. Entries come parents first; names of children are "top/child/...".
// The receiver reads the stream to EOF, so the sender must end its side after the end marker.
import { FilecopyError, quoteName } from "./errors.js";

export const KIND_END = 0;
export const KIND_DIR = 1;
export const KIND_FILE = 2;
export const KIND_SYMLINK = 3;
export type EntryKind = typeof KIND_DIR | typeof KIND_FILE | typeof KIND_SYMLINK;

export const MAX_NAME_BYTES = 4096;
export const MAX_COMPONENT_BYTES = 255;
export const MAX_COMPONENTS = 64;
export const MAX_LINK_TARGET_BYTES = 4096;

/** kind + mode + mtime + nameLen: the part of a header before the name. */
export const PREFIX_BYTES = 1 + 4 + 8 + 2;
export const SIZE_BYTES = 8;
export const END_MARKER: Buffer = Buffer.from([KIND_END]);

export interface EntryHeader {
  kind: EntryKind;
  mode: number;
  mtimeMs: number;
  /** Raw name bytes: the receiver validates them before decoding (names.ts). */
  name: Buffer;
  size: number;
}

/**
 * Encodes a header without validating the name, so tests can craft hostile streams with it.
 * Only the field widths are checked (a value that does not fit would corrupt the framing).
 */
export function encodeHeader(h: { kind: number; mode: number; mtimeMs: number; name: string | Uint8Array; size: number | bigint }): Buffer {
  const name = typeof h.name === "string" ? Buffer.from(h.name, "utf8") : Buffer.from(h.name);
  if (name.length > 0xffff) throw new RangeError(`name of ${name.length} bytes does not fit a u16`);
  const buf = Buffer.alloc(PREFIX_BYTES + name.length + SIZE_BYTES);
  let o = buf.writeUInt8(h.kind, 0);
  o = buf.writeUInt32BE(h.mode >>> 0, o);
  o = buf.writeBigUInt64BE(BigInt(Math.max(0, Math.floor(h.mtimeMs))), o);
  o = buf.writeUInt16BE(name.length, o);
  o += name.copy(buf, o);
  buf.writeBigUInt64BE(BigInt(h.size), o);
  return buf;
}

export interface HeaderPrefix {
  kind: EntryKind;
  mode: number;
  mtimeMs: number;
  nameLen: number;
}

/** Checks an entry's kind byte (the end marker is handled before this). */
export function checkKind(kind: number): EntryKind {
  if (kind !== KIND_DIR && kind !== KIND_FILE && kind !== KIND_SYMLINK) throw new FilecopyError("BAD_HEADER", `unknown entry kind ${kind}`);
  return kind;
}

/** Decodes the fixed prefix of an entry header (not the end marker). */
export function decodePrefix(buf: Buffer): HeaderPrefix {
  const kind = checkKind(buf.readUInt8(0));
  const mode = buf.readUInt32BE(1);
  const mtime = buf.readBigUInt64BE(5);
  const nameLen = buf.readUInt16BE(13);
  if (mtime > BigInt(Number.MAX_SAFE_INTEGER)) throw new FilecopyError("BAD_HEADER", `mtime ${mtime} out of range`);
  // Checked before reading the name: an oversized length field is a framing error, not a name.
  if (nameLen > MAX_NAME_BYTES) throw new FilecopyError("BAD_HEADER", `name length ${nameLen} exceeds ${MAX_NAME_BYTES} bytes`);
  return { kind, mode, mtimeMs: Number(mtime), nameLen };
}

/** Decodes and checks the size field against what the entry kind allows. */
export function decodeSize(buf: Buffer, kind: EntryKind, name: Buffer): number {
  const size = buf.readBigUInt64BE(0);
  const where = `entry ${quoteName(name)}`;
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw new FilecopyError("BAD_HEADER", `${where}: size ${size} out of range`);
  if (kind === KIND_DIR && size !== 0n) throw new FilecopyError("BAD_HEADER", `${where}: directory with size ${size}`);
  // A target is buffered whole, so its length is bounded before reading it.
  if (kind === KIND_SYMLINK && (size === 0n || size > BigInt(MAX_LINK_TARGET_BYTES)))
    throw new FilecopyError("BAD_SYMLINK", `${where}: link target length ${size} not in 1..${MAX_LINK_TARGET_BYTES}`);
  return Number(size);
}
