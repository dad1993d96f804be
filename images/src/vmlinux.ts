// The uncompressed kernel inside a bzImage. A bzImage decompresses itself in the guest before the
// kernel starts, which under TCG costs seconds of every boot (measured: 5.1 s to a shell from
// vmlinuz, 1.8 s from the same kernel's vmlinux). QEMU's microvm boots an ELF vmlinux directly
// through its PVH entry point (the Xen ELF note XEN_ELFNOTE_PHYS32_ENTRY, which Debian's kernels
// carry), as Firecracker and cloud-hypervisor do, so the bundle keeps both.
import { readFileSync, writeFileSync } from "node:fs";
import { QvmError } from "@qvm/protocol";
import { execa } from "execa";

/** x86 boot protocol (Documentation/arch/x86/boot.rst): where the compressed payload lies. */
export function bzImagePayload(image: Buffer): Buffer {
  if (image.length < 0x250 || image.toString("latin1", 0x202, 0x206) !== "HdrS") {
    throw new QvmError("IMAGE_BUILD_FAILED", "the kernel image is not a bzImage (no HdrS header)");
  }
  const setupSects = image[0x1f1] || 4;
  const start = (setupSects + 1) * 512 + image.readUInt32LE(0x248);
  const length = image.readUInt32LE(0x24c);
  if (!length || start + length > image.length) throw new QvmError("IMAGE_BUILD_FAILED", "the bzImage's payload lies outside the file");
  return image.subarray(start, start + length);
}

// The kernel's build appends the uncompressed size (4 bytes) after an xz or zstd stream, which
// both tools would take for a truncated next stream: xz is told to read one stream, and zstd gets
// the payload without those 4 bytes. gzip streams carry their size themselves.
const DECOMPRESSORS: Array<{ magic: Buffer; command: string[]; trailer: number }> = [
  { magic: Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), command: ["xz", "-dc", "--single-stream"], trailer: 0 },
  { magic: Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), command: ["zstd", "-dcq"], trailer: 4 },
  { magic: Buffer.from([0x1f, 0x8b]), command: ["gzip", "-dc"], trailer: 0 },
];

const PT_NOTE = 4;
const XEN_ELFNOTE_PHYS32_ENTRY = 18;

/** True when `elf` is a 64-bit little-endian ELF with a PVH entry note. */
export function hasPvhEntry(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > elf.length || elf.readUInt32LE(ph) !== PT_NOTE) continue;
    const off = Number(elf.readBigUInt64LE(ph + 8));
    const end = Math.min(elf.length, off + Number(elf.readBigUInt64LE(ph + 32)));
    for (let n = off; n + 12 <= end; ) {
      const namesz = elf.readUInt32LE(n);
      const descsz = elf.readUInt32LE(n + 4);
      const type = elf.readUInt32LE(n + 8);
      const name = elf.toString("latin1", n + 12, n + 12 + Math.max(0, namesz - 1));
      if (name === "Xen" && type === XEN_ELFNOTE_PHYS32_ENTRY) return true;
      n += 12 + align4(namesz) + align4(descsz);
    }
  }
  return false;
}

const align4 = (n: number) => (n + 3) & ~3;

/**
 * Writes the uncompressed kernel of bzImage `vmlinuz` to `out`. Returns false (and writes
 * nothing) when it has no PVH entry, so the bundle then boots vmlinuz as before.
 */
export async function extractVmlinux(vmlinuz: string, out: string): Promise<boolean> {
  const payload = bzImagePayload(readFileSync(vmlinuz));
  const codec = DECOMPRESSORS.find((d) => payload.subarray(0, d.magic.length).equals(d.magic));
  if (!codec) return false;
  const [cmd, ...args] = codec.command as [string, ...string[]];
  const r = await execa(cmd, args, { input: payload.subarray(0, payload.length - codec.trailer), encoding: "buffer", maxBuffer: 1 << 30, reject: false });
  if (r.exitCode !== 0) throw new QvmError("IMAGE_BUILD_FAILED", `${cmd} could not decompress the kernel: ${Buffer.from(r.stderr).toString().trim()}`);
  const elf = Buffer.from(r.stdout);
  if (!hasPvhEntry(elf)) return false;
  writeFileSync(out, elf);
  return true;
}
