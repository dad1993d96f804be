// The vault's key derivation and AEAD on their own: which scrypt parameters are accepted, that
// every subkey is distinct and per-backup where it must be, and that the associated data (backup
// id, chunk index, kind) and the nonce are bound: change any and the chunk does not open.
import { describe, expect, it } from "vitest";
import {
  backupKeys,
  blockId,
  chainKeys,
  DEFAULT_SCRYPT,
  deriveMasterKey,
  nonceFor,
  passphraseBytes,
  scryptParamsProblem,
  seal,
  TAG_SIZE,
  unseal,
} from "./vault-crypto.js";
import { TEST_KDF } from "./test-helpers.js";

describe("scrypt parameters", () => {
  it("accepts the defaults and the documented ranges, and refuses the rest", () => {
    expect(DEFAULT_SCRYPT).toEqual({ logN: 17, r: 8, p: 1 });
    for (const ok of [DEFAULT_SCRYPT, { logN: 14, r: 1, p: 1 }, { logN: 22, r: 4, p: 16 }, { logN: 20, r: 16, p: 1 }]) expect(scryptParamsProblem(ok)).toBeUndefined();
    const refused: [object, RegExp][] = [
      [{ logN: 13, r: 8, p: 1 }, /N=2\^13 is outside 2\^14…2\^22/],
      [{ logN: 23, r: 8, p: 1 }, /outside/],
      [{ logN: 17.5, r: 8, p: 1 }, /outside/],
      [{ logN: 17, r: 0, p: 1 }, /r=0 is outside 1…32/],
      [{ logN: 17, r: 33, p: 1 }, /r=33/],
      [{ logN: 17, r: 8, p: 0 }, /p=0 is outside 1…16/],
      [{ logN: 17, r: 8, p: 17 }, /p=17/],
      [{ logN: 22, r: 8, p: 1 }, /needs 4096 MiB, more than 2048 MiB/],
    ];
    for (const [params, why] of refused) expect(scryptParamsProblem(params as typeof DEFAULT_SCRYPT)).toMatch(why);
    expect(scryptParamsProblem(TEST_KDF)).toMatch(/outside/);
    expect(scryptParamsProblem(TEST_KDF, { weakKdfForTests: true })).toBeUndefined();
  });

  it("normalizes a passphrase to NFC, so composed and decomposed accents give one key", async () => {
    const composed = "caf\u00e9";
    const decomposed = "cafe\u0301";
    expect(passphraseBytes(composed)).toEqual(passphraseBytes(decomposed));
    const salt = Buffer.alloc(32, 7);
    expect(await deriveMasterKey(composed, salt, TEST_KDF)).toEqual(await deriveMasterKey(decomposed, salt, TEST_KDF));
    expect(await deriveMasterKey("cafe", salt, TEST_KDF)).not.toEqual(await deriveMasterKey(composed, salt, TEST_KDF));
  });
});

describe("subkeys", () => {
  const master = Buffer.alloc(32, 1);
  const idA = Buffer.alloc(16, 0xa);
  const idB = Buffer.alloc(16, 0xb);

  it("are all different; chain keys are shared by a chain, backup keys are not", () => {
    const c = chainKeys(master);
    const a = backupKeys(master, idA);
    const b = backupKeys(master, idB);
    const all = [c.chunkId, a.encryption, a.manifest, b.encryption, b.manifest].map((k) => k.toString("hex"));
    expect(new Set(all).size).toBe(all.length);
    expect(c.keyCheck).toHaveLength(8);
    expect(chainKeys(Buffer.from(master))).toEqual(c);
    expect(chainKeys(Buffer.alloc(32, 2)).keyCheck).not.toEqual(c.keyCheck);
  });

  it("block ids are keyed: equal blocks match within a chain, not across keys", () => {
    const data = Buffer.from("a block");
    expect(blockId(chainKeys(master).chunkId, data)).toEqual(blockId(chainKeys(master).chunkId, Buffer.from(data)));
    expect(blockId(chainKeys(Buffer.alloc(32, 2)).chunkId, data)).not.toEqual(blockId(chainKeys(master).chunkId, data));
  });
});

describe("AEAD", () => {
  const key = Buffer.alloc(32, 3);
  const ad = Buffer.from("frame header bytes");
  const plain = Buffer.from("some plaintext");

  it("the nonce is four zero bytes and the index as a big-endian u64", () => {
    expect(nonceFor(0).toString("hex")).toBe("000000000000000000000000");
    expect(nonceFor(0x0102030405).toString("hex")).toBe("000000000000000102030405");
    expect(nonceFor(Number.MAX_SAFE_INTEGER).toString("hex")).toBe("00000000001fffffffffffff");
  });

  it("opens what it sealed, and nothing that differs in key, index, associated data or a bit", () => {
    const sealed = seal(key, 5, ad, plain);
    expect(sealed).toHaveLength(plain.length + TAG_SIZE);
    expect(unseal(key, 5, ad, sealed)).toEqual(plain);
    expect(unseal(Buffer.alloc(32, 4), 5, ad, sealed)).toBeUndefined();
    expect(unseal(key, 6, ad, sealed)).toBeUndefined(); // another position
    expect(unseal(key, 5, Buffer.from("frame header bytez"), sealed)).toBeUndefined();
    for (let i = 0; i < sealed.length; i++) {
      const bad = Buffer.from(sealed);
      bad[i] = bad[i]! ^ 0x80;
      expect(unseal(key, 5, ad, bad), `byte ${i}`).toBeUndefined();
    }
    expect(unseal(key, 5, ad, sealed.subarray(0, TAG_SIZE - 1))).toBeUndefined();
  });
});
