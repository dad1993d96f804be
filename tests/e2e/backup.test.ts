// Backups with a real domain, as a user runs them (README, "Backups"): a file written inside a
// domain comes back byte for byte in a domain restored beside it; a damaged backup is named and
// restores nothing. Two boots in all. The format's own damage cases, chains and interruptions
// are unit tests (host-agent/src/backup, host-agent/src/vault).
import { copyFileSync, openSync, closeSync, readSync, writeFileSync, writeSync, statSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { withDaemon, withDomain, type E2eDaemon } from "./qvmd-fixtures.js";

let d: E2eDaemon;
let vault = "";
let pass = "";
const MARKER = `backup-marker-${Date.now()}`;

async function ok(...args: string[]): Promise<string> {
  const r = await d.qvm(args);
  expect(r.exitCode, `qvm ${args.join(" ")}: ${r.stderr}`).toBe(0);
  return r.stdout;
}

async function names(): Promise<string[]> {
  return (JSON.parse(await ok("ls", "--json")) as { name: string }[]).map((x) => x.name).sort();
}

beforeAll(async () => {
  d = await withDaemon("e2e-backup");
  vault = path.join(d.dirs.base, "work.vault");
  pass = path.join(d.dirs.base, "pass");
  writeFileSync(pass, "correct horse battery staple\n", { mode: 0o600 });
  await withDomain(d, "work", { label: "blue", start: true });
  // 3 MiB of data that compression cannot shrink, and a marker: both must come back exactly.
  await ok("run", "--pass-io", "work", "--", "sh", "-c", `echo ${MARKER} > ~/marker && head -c 3145728 /dev/urandom > ~/blob && sha256sum ~/blob | cut -d' ' -f1 > ~/blob.sha && sync`);
  await ok("shutdown", "--wait", "work");
});

afterAll(async () => {
  await d?.[Symbol.asyncDispose]();
});

describe("qvm backup with a real domain", () => {
  it("backs work up into one encrypted file that verify reads whole", async () => {
    await ok("backup", "create", vault, "work", "--passphrase-file", pass);
    expect(statSync(vault).size).toBeGreaterThan(3 * 1024 * 1024);
    // Nothing in the file is the plaintext marker.
    const bytes = Buffer.alloc(statSync(vault).size);
    const fd = openSync(vault, "r");
    readSync(fd, bytes, 0, bytes.length, 0);
    closeSync(fd);
    expect(bytes.includes(Buffer.from(MARKER))).toBe(false);
    const listed = JSON.parse(await ok("backup", "verify", vault, "--passphrase-file", pass, "--json")) as unknown;
    expect(JSON.stringify(listed)).toContain("work");
  });

  it("refuses a wrong passphrase and a damaged copy by name, and restores nothing from either", async () => {
    const before = await names();
    const wrong = path.join(d.dirs.base, "wrong");
    writeFileSync(wrong, "not it\n");
    let r = await d.qvm(["backup", "restore", vault, "--rename-conflicts", "--passphrase-file", wrong]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/passphrase/i);
    const damaged = path.join(d.dirs.base, "damaged.vault");
    copyFileSync(vault, damaged);
    const fd = openSync(damaged, "r+");
    writeSync(fd, Buffer.from([0x5a]), 0, 1, Math.floor(statSync(damaged).size / 2));
    closeSync(fd);
    r = await d.qvm(["backup", "restore", damaged, "--rename-conflicts", "--passphrase-file", pass]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/chunk|damaged|corrupt/i);
    expect(await names()).toEqual(before);
  });

  it("restores work beside itself as work-1, whose home has the marker and the data byte for byte", async () => {
    await ok("backup", "restore", vault, "--rename-conflicts", "--passphrase-file", pass);
    expect(await names()).toContain("work-1");
    const out = await ok("run", "--pass-io", "work-1", "--", "sh", "-c", "cat ~/marker; sha256sum ~/blob | cut -d' ' -f1; cat ~/blob.sha");
    const [marker, actual, recorded] = out.trim().split("\n");
    expect(marker).toBe(MARKER);
    expect(actual).toBe(recorded);
    await ok("kill", "work-1");
  });
});
