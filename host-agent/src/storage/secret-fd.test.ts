// Secrets handed to a child as a descriptor: readable through /proc/self/fd, never left by name
// in /dev/shm, the caller's buffer zeroed once written.
import { closeSync, readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { secretFd, secretObject } from "./secret-fd.js";

describe("secretFd", () => {
  it("gives an unlinked memory file with the secret, and zeroes the caller's copy", () => {
    const before = readdirSync("/dev/shm").filter((f) => f.startsWith(`qvm-secret-${process.pid}-`));
    const secret = Buffer.from("a secret of 44 characters in base64 form ====");
    const fd = secretFd(secret);
    try {
      expect(readFileSync(`/proc/self/fd/${fd}`, "utf8")).toBe("a secret of 44 characters in base64 form ====");
      expect(readdirSync("/dev/shm").filter((f) => f.startsWith(`qvm-secret-${process.pid}-`))).toEqual(before);
      expect(secret.every((b) => b === 0)).toBe(true);
    } finally {
      closeSync(fd);
    }
  });

  it("names it for QEMU by descriptor only", () => {
    expect(secretObject("k", 5)).toBe("secret,id=k,file=/proc/self/fd/5");
  });
});
