// The few qcow2 header fields that decide what else QEMU would open with a volume, read from the
// file itself (docs: QEMU's docs/interop/qcow2.txt). An encrypted volume restored from a backup
// is written byte for byte; before qemu-img or a VMM opens it as root, it must be a qcow2 v3
// file with LUKS encryption, no backing file and no external data file: a crafted header could
// otherwise make them open any host file or a network source.
import { closeSync, openSync, readSync } from "node:fs";

const MAGIC = 0x514649fb; // "QFI\xfb"
const CRYPT_LUKS = 2;
/** incompatible_features bit 2: the guest data lives in an external data file. */
const EXTERNAL_DATA_FILE = 1n << 2n;
const HEADER_BYTES = 104;

/** Why `file` is not a self-contained LUKS-encrypted qcow2 v3 volume, or undefined when it is. */
export function encryptedQcow2Problem(file: string): string | undefined {
  const b = Buffer.alloc(HEADER_BYTES);
  const fd = openSync(file, "r");
  let n: number;
  try {
    n = readSync(fd, b, 0, HEADER_BYTES, 0);
  } finally {
    closeSync(fd);
  }
  if (n < HEADER_BYTES) return "it is shorter than a qcow2 header";
  if (b.readUInt32BE(0) !== MAGIC) return "it is not a qcow2 file";
  if (b.readUInt32BE(4) !== 3) return `it is qcow2 version ${b.readUInt32BE(4)}, not 3`;
  if (b.readBigUInt64BE(8) !== 0n) return "it names a backing file";
  if (b.readUInt32BE(32) !== CRYPT_LUKS) return "it is not LUKS-encrypted";
  if ((b.readBigUInt64BE(72) & EXTERNAL_DATA_FILE) !== 0n) return "it names an external data file";
  return undefined;
}
