// The policy cache: parsed once, parsed again only when a file or directory it read changes.
import { mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { PolicyCache } from "./loader.js";

let root = "";
let dir = "";
const write = (rel: string, text: string) => {
  const p = path.join(dir, rel);
  mkdirSync(path.dirname(p), { recursive: true });
  writeFileSync(p, text);
};
const actions = (c: PolicyCache) => c.rules().map((r) => `${r.service}:${r.action}`);

beforeEach(() => {
  root = mkdtempSync(path.join(os.tmpdir(), "qvm-policy-cache-"));
  dir = path.join(root, "policy.d");
  mkdirSync(dir);
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

describe("PolicyCache", () => {
  it("parses an unchanged policy once, however many calls ask for it", () => {
    write("30-a.policy", "a * work vault allow\n");
    write("40-b.policy", "!include ../inc/x\n!include-dir ../incdir\n");
    write("../inc/x", "x * work vault allow\n");
    write("../incdir/10-y.policy", "y * work vault allow\n");
    const c = new PolicyCache(dir);
    for (let i = 0; i < 1000; i++) expect(actions(c)).toEqual(["a:allow", "x:allow", "y:allow"]);
    expect(c.parses).toBe(1);
  });

  // [what changes, the change, the rules after it]
  it.each<[string, () => void, string[]]>([
    ["a file is edited (same size, same second)", () => write("30-a.policy", "a * work vault deny\n\n"), ["a:deny", "x:allow", "y:allow"]],
    ["a file is replaced by rename", () => (write(".30-a.tmp", "a * work vault deny\n"), renameSync(path.join(dir, ".30-a.tmp"), path.join(dir, "30-a.policy"))), ["a:deny", "x:allow", "y:allow"]],
    ["a file is added", () => write("20-new.policy", "n * work vault deny\n"), ["n:deny", "a:allow", "x:allow", "y:allow"]],
    ["a file is removed", () => rmSync(path.join(dir, "30-a.policy")), ["x:allow", "y:allow"]],
    ["an included file is edited", () => write("../inc/x", "x * work vault deny\n"), ["a:allow", "x:deny", "y:allow"]],
    ["a file is added to an included directory", () => write("../incdir/20-z.policy", "z * work vault ask\n"), ["a:allow", "x:allow", "y:allow", "z:ask"]],
    ["a file in an included directory is edited", () => write("../incdir/10-y.policy", "y * work vault deny\n"), ["a:allow", "x:allow", "y:deny"]],
  ])("picks up the change when %s, and parses it once", (_what, change, after) => {
    write("30-a.policy", "a * work vault allow\n");
    write("40-b.policy", "!include ../inc/x\n!include-dir ../incdir\n");
    write("../inc/x", "x * work vault allow\n");
    write("../incdir/10-y.policy", "y * work vault allow\n");
    const c = new PolicyCache(dir);
    expect(actions(c)).toEqual(["a:allow", "x:allow", "y:allow"]);
    change();
    expect(actions(c)).toEqual(after);
    expect(actions(c)).toEqual(after);
    expect(c.parses).toBe(2);
  });

  it("picks up a symlinked file pointed elsewhere", () => {
    write("../one", "a * work vault allow\n");
    write("../two", "a * work vault deny\n");
    symlinkSync("../one", path.join(dir, "30-a.policy"));
    const c = new PolicyCache(dir);
    expect(actions(c)).toEqual(["a:allow"]);
    rmSync(path.join(dir, "30-a.policy"));
    symlinkSync("../two", path.join(dir, "30-a.policy"));
    expect(actions(c)).toEqual(["a:deny"]);
  });

  it("keeps failing closed while the policy is broken, naming file:line, without parsing it again; a fix is picked up", () => {
    write("30-a.policy", "a * work vault allow\n\na * work vault permit\n");
    const c = new PolicyCache(dir);
    for (let i = 0; i < 100; i++) expect(() => c.rules()).toThrow(/30-a\.policy:3: action must be allow, deny or ask/);
    expect(c.parses).toBe(1);
    write("30-a.policy", "a * work vault allow\n");
    expect(actions(c)).toEqual(["a:allow"]);
    expect(c.parses).toBe(2);
  });

  it("a missing include is an error until the file appears", () => {
    write("30-a.policy", "!include ../inc/later\n");
    const c = new PolicyCache(dir);
    expect(() => c.rules()).toThrow(/30-a\.policy:1: cannot read .*later: ENOENT/);
    expect(() => c.rules()).toThrow(/ENOENT/);
    write("../inc/later", "l * work vault allow\n");
    expect(actions(c)).toEqual(["l:allow"]);
    expect(c.parses).toBe(2);
  });

  it("a policy directory that goes away is an error, not the last good policy", () => {
    write("30-a.policy", "a * work vault allow\n");
    const c = new PolicyCache(dir);
    expect(actions(c)).toEqual(["a:allow"]);
    rmSync(dir, { recursive: true });
    expect(() => c.rules()).toThrow(/cannot read the policy directory/);
  });
});
