// The policy directory as `qvm apply` writes it: whole files by rename (no temporary file left
// behind), the previous bytes put back on request, only declared-form names, nothing else touched.
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { PolicyDir, policyDirOf } from "./policy-dir.js";

let root = "";
let dir = "";
beforeEach(() => {
  root = mkdtempSync(path.join(os.tmpdir(), "qvm-apply-policy-"));
  dir = policyDirOf(root);
  mkdirSync(dir);
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

describe("PolicyDir", () => {
  it("lists the *.policy files as qvmd reads them, skipping dot files and other names", () => {
    for (const f of ["30-user.policy", "90-default.policy", ".30-user.policy.tmp", "README", "x.policy.bak"]) writeFileSync(path.join(dir, f), "");
    expect(new PolicyDir(dir).list().sort()).toEqual(["30-user.policy", "90-default.policy"]);
  });

  it("writes a file whole, mode 0644, leaves no temporary file, and returns what was there", () => {
    const p = new PolicyDir(dir);
    expect(p.write("30-user.policy", "a * work vault allow\n")).toBeUndefined();
    const previous = p.write("30-user.policy", "b * work vault deny\n");
    expect(previous?.toString()).toBe("a * work vault allow\n");
    expect(readFileSync(path.join(dir, "30-user.policy"), "utf8")).toBe("b * work vault deny\n");
    expect(statSync(path.join(dir, "30-user.policy")).mode & 0o777 & ~0o022).toBe(0o644 & ~0o022);
    expect(readdirSync(dir)).toEqual(["30-user.policy"]);
  });

  it("restores the previous bytes exactly, or removes a file it had just created", () => {
    const p = new PolicyDir(dir);
    const old = Buffer.from([0x61, 0xff, 0x0a]); // not UTF-8: kept byte for byte
    writeFileSync(path.join(dir, "30-user.policy"), old);
    p.restore("30-user.policy", p.write("30-user.policy", "new\n"));
    expect(readFileSync(path.join(dir, "30-user.policy"))).toEqual(old);
    p.restore("40-new.policy", p.write("40-new.policy", "x\n"));
    expect(readdirSync(dir)).toEqual(["30-user.policy"]);
  });

  it.each(["../30-x.policy", "30-x/y.policy", ".30-x.policy", "user.policy", "30-X.policy", "30-x.policy/"])("refuses the name %j", (name) => {
    const p = new PolicyDir(dir);
    expect(() => p.write(name, "")).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    expect(readdirSync(dir)).toEqual([]);
    expect(readdirSync(root)).toEqual(["policy.d"]);
  });

  it("refuses to read a declared name that is not a regular file", () => {
    mkdirSync(path.join(dir, "30-user.policy"));
    expect(() => new PolicyDir(dir).read("30-user.policy")).toThrow(expect.objectContaining({ code: "FAILED_PRECONDITION" }));
  });

  it("says what to do when the directory cannot be read", () => {
    expect(() => new PolicyDir(path.join(root, "missing")).list()).toThrow(/cannot read the policy directory .*missing: ENOENT/);
  });
});
