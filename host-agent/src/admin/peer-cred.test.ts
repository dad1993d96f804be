import { mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { adminGroupId, peerAllowed } from "./peer-cred.js";

describe("admin peer credentials", () => {
  const peer = (uid: number, gid: number, groups: number[] = []) => ({ pid: 1, uid, gid, groups });
  it("lets in root, qvmd's own user and members of group qvm, and no one else", () => {
    expect(peerAllowed(peer(0, 0), 1000, 990)).toBe(true);
    expect(peerAllowed(peer(1000, 1000), 1000, 990)).toBe(true);
    expect(peerAllowed(peer(1001, 990), 1000, 990)).toBe(true);
    expect(peerAllowed(peer(1001, 1001, [27, 990]), 1000, 990)).toBe(true);
    expect(peerAllowed(peer(1001, 1001, [27]), 1000, 990)).toBe(false);
    expect(peerAllowed(peer(65534, 65534), 0, undefined)).toBe(false);
  });

  it("finds the qvm group's gid in a group file", () => {
    const f = path.join(mkdtempSync(path.join(os.tmpdir(), "qvm-group-")), "group");
    writeFileSync(f, "root:x:0:\nqvmx:x:5:\nqvm:x:990:alice\n");
    expect(adminGroupId(f)).toBe(990);
    expect(adminGroupId(f, "qvmx")).toBe(5); // qvmd --admin-group qvmx
    expect(adminGroupId(f, "wheel")).toBeUndefined();
    writeFileSync(f, "root:x:0:\n");
    expect(adminGroupId(f)).toBeUndefined();
  });
});
