// The volume key's pieces that need no qemu-img: its base64 (what QEMU is given) and the bounds
// on a key file read from disk or a backup.
import { randomBytes } from "node:crypto";
import { inspect } from "node:util";
import { describe, expect, it } from "vitest";
import { isQvmError } from "@qvm/protocol";
import { VolumeKey, base64Bytes, newKeyFile, parseKeyFile } from "./volume-key.js";

describe("base64Bytes", () => {
  it("is standard base64 for every length", () => {
    for (let n = 0; n <= 40; n++) {
      const b = randomBytes(n);
      expect(base64Bytes(b).toString("latin1")).toBe(b.toString("base64"));
    }
  });
});

describe("key files", () => {
  const salt = randomBytes(32).toString("base64");
  const file = (o: object) => JSON.stringify({ format: "qvm-volume-key", version: 1, kdf: "scrypt", logN: 17, r: 8, p: 1, salt, ...o });
  it("accept what qvm writes", () => {
    expect(parseKeyFile(JSON.stringify(newKeyFile()), "f")).toMatchObject({ logN: 17, r: 8, p: 1 });
  });
  it.each([{ logN: 22 }, { logN: 13 }, { r: 32 }, { p: 16 }, { salt: "short" }, { kdf: "argon2" }, { extra: 1 }])("refuse %j as CORRUPT_STATE (no scrypt is run with it)", (o) => {
    let err: unknown;
    try {
      parseKeyFile(file(o), "private.key.json");
    } catch (e) {
      err = e;
    }
    expect(isQvmError(err, "CORRUPT_STATE") && err.message).toMatch(/private\.key\.json/);
  });
});

describe("VolumeKey", () => {
  it("never shows its bytes, and refuses use once wiped", async () => {
    const k = await VolumeKey.derive("pw", newKeyFile({ logN: 10, r: 8, p: 1 }));
    const secret = k.base64().toString();
    expect(`${k} ${JSON.stringify({ k })} ${inspect(k)}`).not.toContain(secret);
    const c = k.copy();
    k.wipe();
    expect(() => k.base64()).toThrow(/wiped/);
    expect(c.base64().toString()).toBe(secret);
  });
});
