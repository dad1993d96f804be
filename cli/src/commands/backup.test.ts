// `qvm backup` as users run it: the real ./qvm (the CLI bundle) against a real qvmd (no VMs).
// Relative files are resolved here, the passphrase comes from --passphrase-file (and without a
// terminal or file the error names the flag), progress goes to stderr as plain lines, results to
// stdout (or JSON), and errors are one line with the mapped exit code. Then the pure parts: the
// progress bar's estimate and the no-echo prompt.
import { existsSync, writeFileSync } from "node:fs";
import path from "node:path";
import { PassThrough } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { domainClassFromWord } from "@qvm/protocol";
import { removeTestDaemonDirs, startTestDaemon, testDaemonDirs, type TestDaemon } from "@qvm/host-agent/testing";
import { buildCli, runQvm } from "../test-support/run-qvm.js";
import { BackupProgressBar, formatDuration } from "../lib/backup-progress.js";
import { askPassphrase, passphraseFromFile } from "../lib/passphrase.js";

let d: TestDaemon;
let passFile: string;

beforeAll(async () => {
  buildCli();
  d = await startTestDaemon(testDaemonDirs("cli-backup"));
  await d.client.createDomain({ name: "tmpl", class: domainClassFromWord("TemplateVM"), template: "", label: "black", properties: {} });
  await d.client.createDomain({ name: "work", class: domainClassFromWord("AppVM"), template: "tmpl", label: "red", properties: {} });
  passFile = path.join(d.dirs.base, "pass");
  writeFileSync(passFile, "s3cret phrase\n");
}, 120_000);
afterAll(async () => {
  expect(await d?.stop()).toBe(0);
  if (d) removeTestDaemonDirs(d.dirs);
});
const qvm = (args: string[]) => runQvm(args, { runtimeDir: d.dirs.runtimeDir, cwd: d.dirs.base });


describe("qvm backup", { timeout: 60_000 }, () => {
  it("creates, verifies and restores with a passphrase file; a relative FILE is resolved here", async () => {
    const c = await qvm(["backup", "create", "work.vault", "work", "--passphrase-file", passFile]);
    expect(c.stderr).toMatch(/^qvm: writing work:private: \d+% /m);
    expect(c).toMatchObject({ code: 0, stdout: expect.stringMatching(/^backed up work and policy files 30-user.policy to .*\/work.vault\n/) });
    expect(existsSync(path.join(d.dirs.base, "work.vault"))).toBe(true);

    const v = await qvm(["backup", "verify", "work.vault", "--passphrase-file", passFile]);
    expect(v).toMatchObject({ code: 0, stdout: expect.stringMatching(/every chunk checked[\s\S]*work \(AppVM\): private/) });

    const refused = await qvm(["backup", "restore", "work.vault", "--passphrase-file", passFile]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/qvm: a domain named work exists: restore with --rename-conflicts/);

    const r = await qvm(["backup", "restore", "work.vault", "--rename-conflicts", "--json", "--passphrase-file", passFile]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.stdout).domains).toEqual([{ name: "work-1", class: "AppVM", volumes: [], revision: "", restoredFrom: "work" }]);
  });

  it("a wrong passphrase, no passphrase at all, or a bad action: one line that names the fix", async () => {
    const wrong = path.join(d.dirs.base, "wrong");
    writeFileSync(wrong, "not it\n");
    const w = await qvm(["backup", "verify", "work.vault", "--passphrase-file", wrong]);
    expect(w.code).toBe(1);
    expect(w.stderr).toMatch(/passphrase/);
    const none = await qvm(["backup", "verify", "work.vault"]);
    expect(none).toMatchObject({ code: 2, stderr: expect.stringMatching(/no terminal to ask the passphrase on: give it in a file with --passphrase-file FILE/) });
    const bad = await qvm(["backup", "frobnicate", "x.vault"]);
    expect(bad).toMatchObject({ code: 2, stderr: expect.stringMatching(/use create, verify or restore/) });
  });
});

describe("backup progress and passphrase", () => {
  it("draws a bar with an estimate on a terminal, once the rate means something", () => {
    let t = 0;
    let out = "";
    const bar = new BackupProgressBar({ isTTY: true, columns: 120, write: (s: string) => (out += s) }, () => t);
    bar.update({ phase: "write", item: "work:private", bytesDone: 0, bytesTotal: 400 << 20 });
    expect(out).toContain("0% 0/400M");
    expect(out).not.toContain("left");
    t = 4000;
    bar.update({ phase: "write", item: "work:private", bytesDone: 100 << 20, bytesTotal: 400 << 20 });
    expect(out).toMatch(/\[######\.+\] 25% 100M\/400M, about 12s left {2}writing work:private$/);
    expect(formatDuration(3_725_000)).toBe("1h02m");
  });

  it("writes plain lines elsewhere: per volume and per tenth, not per update", () => {
    let out = "";
    const bar = new BackupProgressBar({ write: (s: string) => (out += s) }, () => 0);
    for (let i = 0; i <= 100; i++) bar.update({ phase: "verify", item: "", bytesDone: i, bytesTotal: 100 });
    expect(out.split("\n").filter(Boolean)).toHaveLength(11);
    expect(out).not.toContain("\r");
  });

  it("reads the first line of a passphrase file and refuses an empty one", () => {
    expect(passphraseFromFile("f", () => "pass word\r\nsecond line\n")).toBe("pass word");
    expect(() => passphraseFromFile("f", () => "\n")).toThrow(/empty passphrase/);
  });

  it("asks twice without echo and refuses two different answers", async () => {
    const term = () => {
      const stdin = Object.assign(new PassThrough(), { isTTY: true, isRaw: false, setRawMode(m: boolean) { stdin.isRaw = m; } });
      let said = "";
      return { stdin, stderr: { write: (s: string) => (said += s) }, said: () => said };
    };
    const a = term();
    const p = askPassphrase(a, true);
    a.stdin.write("secrex\u007ft\r");
    await new Promise((r) => setImmediate(r));
    a.stdin.write("secret\n");
    expect(await p).toBe("secret");
    expect(a.said()).toBe("Backup passphrase: \nThe same passphrase again: \n"); // nothing typed is echoed
    expect(a.stdin.isRaw).toBe(false);
    const b = term();
    const q = askPassphrase(b, true);
    b.stdin.write("one\r");
    await new Promise((r) => setImmediate(r));
    b.stdin.write("two\r");
    await expect(q).rejects.toThrow(/the two passphrases differ/);
  });
});
