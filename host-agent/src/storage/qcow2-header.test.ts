// The header check of restored encrypted volumes, against files qemu-img makes.
import { execFileSync } from "node:child_process";
import { mkdtempSync, openSync, rmSync, writeFileSync, writeSync, closeSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { encryptedQcow2Problem } from "./qcow2-header.js";
import { creatingLuks } from "./qemu-img.js";

const dir = mkdtempSync(path.join(os.tmpdir(), "qvm-qcow2-header-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const secret = path.join(dir, "secret");
writeFileSync(secret, "a-test-secret");
const obj = ["--object", `secret,id=s,file=${secret}`];

/** A qcow2 file made by qemu-img (retried as qvm retries LUKS headers: creatingLuks). */
async function make(name: string, opts: string[]): Promise<string> {
  const f = path.join(dir, name);
  await creatingLuks(async () => execFileSync("qemu-img", ["create", "-q", ...obj, "-f", "qcow2", ...opts, f, "16M"], { stdio: ["ignore", "ignore", "pipe"] }));
  return f;
}

describe("encryptedQcow2Problem", () => {
  const luks = "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=10";
  it("accepts a LUKS qcow2 v3 file as qemu-img makes it", async () => {
    expect(encryptedQcow2Problem(await make("ok.qcow2", ["-o", luks]))).toBeUndefined();
  });
  it("refuses plain qcow2, a backing file, an external data file, and not-qcow2", async () => {
    expect(encryptedQcow2Problem(await make("plain.qcow2", []))).toBe("it is not LUKS-encrypted");
    const base = path.join(dir, "base.raw");
    execFileSync("truncate", ["-s", "16M", base]);
    expect(encryptedQcow2Problem(await make("backed.qcow2", ["-o", luks, "-F", "raw", "-b", base]))).toBe("it names a backing file");
    expect(encryptedQcow2Problem(await make("external.qcow2", ["-o", `${luks},data_file=${path.join(dir, "data.raw")}`]))).toBe("it names an external data file");
    const junk = path.join(dir, "junk");
    const fd = openSync(junk, "w");
    writeSync(fd, Buffer.alloc(4096, 0x41));
    closeSync(fd);
    expect(encryptedQcow2Problem(junk)).toBe("it is not a qcow2 file");
  });
});
