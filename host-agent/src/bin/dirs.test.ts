// The data and runtime directories qvmd trusts: its own, not writable by others, every parent
// root's or its own and not writable by others (sticky /tmp excepted), no link of another user on
// the way. Temporary directories; those owned by another uid (65534, nobody) are made as root,
// as the test command runs here and in CI. Then a real qvmd refusing such a directory.
import { chmodSync, chownSync, lchownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs } from "../testing/test-daemon.js";
import { checkOwnDirectory } from "./dirs.js";

const NOBODY = 65534;
// The test command runs as root, as qvmd does: these tests need it and always run.
const me = process.getuid?.() ?? 0;

let base: string;
beforeEach(() => {
  base = mkdtempSync(path.join(os.tmpdir(), "qvm-dirs-"));
});
afterEach(() => rmSync(base, { recursive: true, force: true }));

function dir(rel: string, mode = 0o700): string {
  const d = path.join(base, rel);
  mkdirSync(d, { recursive: true });
  chmodSync(d, mode);
  return d;
}

const refusal = (re: RegExp) => expect.objectContaining({ code: "FAILED_PRECONDITION", message: expect.stringMatching(re) });

describe("checkOwnDirectory", () => {
  it("accepts qvmd's own directory, 0700 or 0755, under /tmp (root's and sticky)", () => {
    expect(() => checkOwnDirectory(dir("data"), "data directory")).not.toThrow();
    expect(() => checkOwnDirectory(dir("run", 0o755), "runtime directory")).not.toThrow();
  });

  it("refuses a directory writable by group or others, naming it and the chmod", () => {
    const d = dir("data", 0o775);
    expect(() => checkOwnDirectory(d, "data directory")).toThrow(refusal(new RegExp(`data directory ${d}: ${d} is writable by group or others \\(mode 0775\\); fix: chmod go-w ${d}`)));
    chmodSync(d, 0o1777);
    expect(() => checkOwnDirectory(d, "data directory")).toThrow(refusal(/chmod go-w/));
  });

  it("refuses a parent writable by others unless it is sticky", () => {
    const parent = dir("shared", 0o777);
    const d = dir("shared/run", 0o755);
    expect(() => checkOwnDirectory(d, "runtime directory")).toThrow(refusal(new RegExp(`its parent ${parent} is writable by group or others \\(mode 0777\\).*chmod go-w ${parent}`)));
    chmodSync(parent, 0o1777);
    expect(() => checkOwnDirectory(d, "runtime directory")).not.toThrow();
  });

  it("refuses what is not a directory", () => {
    writeFileSync(path.join(base, "file"), "");
    expect(() => checkOwnDirectory(path.join(base, "file"), "data directory")).toThrow(refusal(/is not a directory/));
  });

  it("refuses a directory another uid owns, naming the chown", () => {
    const d = dir("victim", 0o700);
    chownSync(d, NOBODY, NOBODY);
    expect(() => checkOwnDirectory(d, "runtime directory")).toThrow(refusal(new RegExp(`${d} is owned by uid ${NOBODY}, not by qvmd's user \\(uid ${me}\\).*fix: chown ${me} ${d}`)));
  });

  it("refuses a directory whose parent another uid owns (it could swap it)", () => {
    const parent = dir("theirs", 0o755);
    const d = dir("theirs/data", 0o700);
    chownSync(parent, NOBODY, NOBODY);
    expect(() => checkOwnDirectory(d, "data directory")).toThrow(refusal(new RegExp(`its parent ${parent} is owned by uid ${NOBODY}.*fix: chown ${me} ${parent}`)));
  });

  it("follows a link only when root or qvmd's user made it", () => {
    const real = dir("real", 0o700);
    const link = path.join(base, "link");
    symlinkSync(real, link);
    expect(() => checkOwnDirectory(link, "data directory")).not.toThrow();
    lchownSync(link, NOBODY, NOBODY);
    expect(() => checkOwnDirectory(link, "data directory")).toThrow(refusal(new RegExp(`${link} is a symbolic link owned by uid ${NOBODY}`)));
  });
});

describe("qvmd with a directory it must not trust", () => {
  it("refuses to start, naming the directory and the fix, and touches nothing in it", async () => {
    const dirs = testDaemonDirs("dirs");
    try {
      mkdirSync(dirs.dataDir, { mode: 0o700 });
      chownSync(dirs.dataDir, NOBODY, NOBODY);
      await expect(startTestDaemon(dirs, 5000)).rejects.toThrow(new RegExp(`qvmd refuses the data directory ${dirs.dataDir}: .*owned by uid ${NOBODY}.*chown ${me} ${dirs.dataDir}`));
      const { readdirSync } = await import("node:fs");
      expect(readdirSync(dirs.dataDir)).toEqual([]);
      // A runtime directory others may write is refused the same way.
      chownSync(dirs.dataDir, me, me);
      mkdirSync(dirs.runtimeDir, { recursive: true }); // the refused qvmd made it
      chmodSync(dirs.runtimeDir, 0o777);
      await expect(startTestDaemon(dirs, 5000)).rejects.toThrow(new RegExp(`qvmd refuses the runtime directory ${dirs.runtimeDir}: .*mode 0777.*chmod go-w ${dirs.runtimeDir}`));
    } finally {
      removeTestDaemonDirs(dirs);
    }
  });
});
