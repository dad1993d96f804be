import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { execFileSync } from "node:child_process";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { bzImagePayload, extractVmlinux, hasPvhEntry } from "./vmlinux.js";

/** A 64-bit ELF with one PT_NOTE segment holding the given notes. */
function elfWithNotes(notes: Array<{ name: string; type: number; desc: Buffer }>): Buffer {
  const body = Buffer.concat(
    notes.map(({ name, type, desc }) => {
      const n = Buffer.from(`${name}\0`);
      const head = Buffer.alloc(12);
      head.writeUInt32LE(n.length, 0);
      head.writeUInt32LE(desc.length, 4);
      head.writeUInt32LE(type, 8);
      const pad = (b: Buffer) => Buffer.concat([b, Buffer.alloc((4 - (b.length % 4)) % 4)]);
      return Buffer.concat([head, pad(n), pad(desc)]);
    }),
  );
  const elf = Buffer.alloc(64 + 56);
  elf.writeUInt32BE(0x7f454c46, 0);
  elf[4] = 2;
  elf[5] = 1;
  elf.writeBigUInt64LE(64n, 0x20);
  elf.writeUInt16LE(56, 0x36);
  elf.writeUInt16LE(1, 0x38);
  elf.writeUInt32LE(4, 64);
  elf.writeBigUInt64LE(120n, 64 + 8);
  elf.writeBigUInt64LE(BigInt(body.length), 64 + 32);
  return Buffer.concat([elf, body]);
}

/** A bzImage-shaped file: the boot header pointing at `payload`. */
function bzImage(payload: Buffer): Buffer {
  const setup = Buffer.alloc(5 * 512);
  setup[0x1f1] = 4;
  setup.write("HdrS", 0x202, "latin1");
  setup.writeUInt32LE(16, 0x248);
  setup.writeUInt32LE(payload.length, 0x24c);
  return Buffer.concat([setup, Buffer.alloc(16, 0xcc), payload, Buffer.alloc(32, 0xee)]);
}

describe("vmlinux", () => {
  let dir = "";
  afterEach(() => dir && rmSync(dir, { recursive: true, force: true }));

  it("finds the PVH entry note and nothing else", () => {
    expect(hasPvhEntry(elfWithNotes([{ name: "Xen", type: 6, desc: Buffer.from("linux\0") }, { name: "Xen", type: 18, desc: Buffer.alloc(4) }]))).toBe(true);
    expect(hasPvhEntry(elfWithNotes([{ name: "Xen", type: 6, desc: Buffer.from("linux\0") }]))).toBe(false);
    expect(hasPvhEntry(elfWithNotes([{ name: "GNU", type: 18, desc: Buffer.alloc(4) }]))).toBe(false);
    expect(hasPvhEntry(Buffer.from("not an elf at all, but long enough to have a header........................"))).toBe(false);
  });

  it("reads the payload from the boot header and refuses what is not a bzImage", () => {
    const payload = Buffer.from("compressed kernel");
    expect(bzImagePayload(bzImage(payload)).equals(payload)).toBe(true);
    expect(() => bzImagePayload(Buffer.alloc(4096))).toThrow(/not a bzImage/);
    const short = bzImage(payload).subarray(0, 5 * 512 + 20);
    expect(() => bzImagePayload(short)).toThrow(/outside the file/);
  });

  it("extracts an xz payload with a PVH note and skips one without", async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), "vmlinux-"));
    const write = (name: string, elf: Buffer) => {
      const xz = Buffer.concat([execFileSync("xz", ["-c", "--check=crc32"], { input: elf }), Buffer.from([1, 2, 3, 4])]);
      writeFileSync(path.join(dir, name), bzImage(xz));
      return path.join(dir, name);
    };
    const pvh = elfWithNotes([{ name: "Xen", type: 18, desc: Buffer.alloc(4) }]);
    expect(await extractVmlinux(write("a", pvh), path.join(dir, "a.elf"))).toBe(true);
    expect(readFileSync(path.join(dir, "a.elf")).equals(pvh)).toBe(true);
    expect(await extractVmlinux(write("b", elfWithNotes([])), path.join(dir, "b.elf"))).toBe(false);
    expect(existsSync(path.join(dir, "b.elf"))).toBe(false);
  });
});
